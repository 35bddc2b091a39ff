/* kv_cache.h — the paged KV cache of the rollout engine: a block manager
 * with prefix sharing, plus the float arena the blocks live in.
 *
 * Legend: L layers, H kv heads, D head dim, B block size (tokens per block),
 * N number of blocks.
 *
 * Memory. One float arena of N blocks; a block holds, for every layer, the
 * K rows and then the V rows of B token slots:
 *     arena[N][L][2][B][H][D]      (k_or_v: 0 = K, 1 = V)
 * so qn_kv_block_ptr(c, b, l, kv) is a contiguous [B][H][D] slab. Token
 * position p of a sequence lives in block table[p / B], slot p % B. KV bytes
 * per token = 2 * L * H * D * sizeof(float). The arena is optional
 * (alloc_memory = 0 gives a bookkeeping-only manager: a GPU engine keeps the
 * memory elsewhere and uses the same block ids).
 *
 * Blocks. Every block is in exactly one state:
 *   USED    ref > 0: in the block table of `ref` sequences;
 *   CACHED  ref == 0, full, computed and registered in the prefix index;
 *           evictable, kept in LRU order (least recently released first);
 *   FREE    ref == 0 and holding nothing useful.
 * A new block comes from FREE first and only then by evicting the LRU head
 * of CACHED (which drops its prefix-index entry).
 *
 * Prefix index (automatic prefix caching). A block that is full and whose
 * B tokens have all been committed (computed) gets a chain hash
 * h = H(parent_h, its B token ids), parent_h being the chain hash of the
 * previous block of the sequence (a fixed root value for block 0), so a hash
 * names the whole prefix up to the end of the block. The index maps h to one
 * block; a lookup also compares the block's stored token ids and parent hash,
 * so a false hit needs a 64-bit collision of the parent chain, not just of
 * h. If two sequences compute the same block independently, the first one
 * committed is indexed and the other is an ordinary block (freed, not cached,
 * at release). Only FULL blocks are ever shared, so a write never lands in a
 * block that another sequence reads: there is no copy-on-write at write
 * time.
 *
 * Sharing. Two ways, both by reference count:
 *   - ADMIT looks the prompt up in the prefix index and takes the longest
 *     chain of indexed blocks, but never the whole prompt: at least the last
 *     prompt token is left to compute, because its logits are needed (the
 *     same rule as vLLM). A partially filled last prompt block is never
 *     matched; its tokens are recomputed by the new sequence.
 *   - FORK (the n samples of a GRPO group: prefill the prompt once, then fork
 *     n - 1 children) shares every FULL computed block of the parent. The
 *     parent's partially filled, computed last block is COPIED into a fresh
 *     block of the child (copy-on-fork: one block of memory traffic instead
 *     of recomputing up to B - 1 tokens per child); apply() copies it in the
 *     arena when there is one and lists the copy in the plan either way.
 *     Blocks the parent reserved beyond its computed tokens are not shared.
 *
 * Plan, then apply. A batch step is a list of ops (ADMIT, FORK, RESERVE).
 * qn_kv_plan_batch() works out what the step needs (new blocks, evictions,
 * prefix hits, copies) from a const cache: it never mutates it. Only
 * qn_kv_apply() commits, and only a plan made against the current state
 * (the cache carries a version counter bumped by every mutation). Release
 * and commit are separate calls that cannot run out of blocks.
 *
 * Return codes of qn_kv_plan_batch and qn_kv_apply (an int, like llama.cpp's
 * decode): 0 (QN_OK) ok; QN_KV_NO_SPACE (1) not enough FREE + CACHED blocks
 * for the step (plan->need_blocks and plan->avail_blocks say by how much);
 * negative: a qn_status error (bad op, unknown sequence, a sequence longer
 * than max_blocks_per_seq, stale plan) with a message in qn_last_error().
 * In every non-zero case the cache is exactly as it was before the call.
 *
 * Not here: the attention kernels that read the blocks, the scheduler that
 * decides whom to preempt (the engine releases the youngest sequences and
 * re-plans), swapping to host memory, sliding windows, and eviction policies
 * other than LRU. Not thread-safe: one engine thread owns a cache. */
#ifndef QN_ROLLOUT_KV_CACHE_H
#define QN_ROLLOUT_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "quench/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define QN_KV_NO_SPACE 1

typedef struct qn_kv_cache qn_kv_cache;

typedef struct qn_kv_cache_params {
    int32_t n_layers;           /* L >= 1 */
    int32_t n_kv_heads;         /* H >= 1 */
    int32_t head_dim;           /* D >= 1 */
    int32_t block_size;         /* B >= 1 tokens per block (16 is typical) */
    int32_t n_blocks;           /* N >= 1 */
    int32_t max_seqs;           /* sequence ids are 0 .. max_seqs - 1 */
    int32_t max_blocks_per_seq; /* block-table capacity of one sequence */
    int alloc_memory;           /* 1: allocate the float arena; 0: bookkeeping only */
} qn_kv_cache_params;

typedef enum qn_kv_block_state {
    QN_KV_BLOCK_FREE = 0,
    QN_KV_BLOCK_CACHED = 1,
    QN_KV_BLOCK_USED = 2,
} qn_kv_block_state;

typedef struct qn_kv_stats {
    int32_t blocks_total;
    int32_t blocks_used;   /* ref > 0 */
    int32_t blocks_free;   /* FREE */
    int32_t blocks_cached; /* CACHED (evictable prefix blocks) */
    int32_t active_seqs;
    int64_t prefix_query_tokens; /* prompt tokens seen by ADMIT */
    int64_t prefix_hit_tokens;   /* of those, tokens served from the prefix index */
    int64_t fork_shared_tokens;  /* tokens children got from parents by FORK (shared + copied) */
    int64_t computed_tokens;     /* tokens committed (the prefill + decode work done) */
    int64_t evictions;           /* CACHED blocks evicted to make room */
    int64_t preemptions;         /* sequences released with preempted = 1 */
} qn_kv_stats;

typedef enum qn_kv_op_kind {
    /* Start sequence `seq` (inactive) with prompt tokens[0..n_tokens), n_tokens >= 1; its
     * computed length starts at the prefix hit. Reserves nothing by itself. */
    QN_KV_OP_ADMIT = 0,
    /* Start `seq` (inactive) as a copy of `parent` (active): same computed length, full
     * computed blocks shared, the partial computed block copied into a new block. */
    QN_KV_OP_FORK = 1,
    /* Make slots for positions [computed, computed + n_tokens) of `seq` (n_tokens >= 0),
     * allocating blocks as needed; already reserved slots count. */
    QN_KV_OP_RESERVE = 2,
} qn_kv_op_kind;

typedef struct qn_kv_op {
    qn_kv_op_kind kind;
    int32_t seq;
    int32_t parent;        /* FORK only */
    const int32_t *tokens; /* ADMIT only: the prompt (read during plan and apply) */
    int32_t n_tokens;      /* ADMIT: prompt length; RESERVE: tokens to make room for */
} qn_kv_op;

/* A block-prefix copy that a FORK needs: the first n_tokens slots of every layer's K and V
 * of block src go to block dst. */
typedef struct qn_kv_copy {
    int32_t src, dst, n_tokens;
} qn_kv_copy;

/* What a batch step needs. Caller-owned; qn_kv_plan_init sizes it for a cache and a maximum
 * number of ops per step; reuse it across steps (no allocation on the step path). After a
 * successful plan, op_hit_tokens[i] is the prefix hit (tokens) of ADMIT op i (0 for other
 * ops); after apply, copies[0..n_copies) are the FORK copies apply made. */
typedef struct qn_kv_plan {
    int32_t max_ops;
    int32_t n_ops;
    int status;             /* result of the last qn_kv_plan_batch */
    int32_t need_blocks;    /* blocks the step takes from FREE or CACHED */
    int32_t avail_blocks;   /* FREE + CACHED that are not revived by this step's hits */
    int32_t evict_blocks;   /* how many of need_blocks will evict CACHED blocks */
    int32_t revived_blocks; /* CACHED blocks that this step's prefix hits take back */
    int64_t hit_tokens;     /* sum of op_hit_tokens */
    int32_t *op_hit_tokens; /* [max_ops] */
    qn_kv_copy *copies;     /* [max_ops] */
    int32_t n_copies;
    /* internal */
    uint64_t version_;
    uint64_t ops_hash_;
    int32_t *hit_blocks_; /* prefix hit block ids of all ADMIT ops, concatenated */
    int32_t *hit_off_;    /* [max_ops + 1] offsets into hit_blocks_ */
    int64_t hit_cap_;
    uint32_t *mark_; /* [n_blocks] epoch marks to count revived blocks once */
    uint32_t epoch_;
    int32_t n_blocks_, max_seqs_;
    int64_t *sim_computed_; /* [max_seqs] simulated per-sequence state, valid where */
    int32_t *sim_nblocks_;  /* seq_mark_ == epoch_ (the sequence was touched by this plan) */
    uint8_t *sim_active_;
    uint32_t *seq_mark_; /* [max_seqs] */
} qn_kv_plan;

/* Bytes of KV memory per token: 2 * L * H * D * sizeof(float). 0 for invalid params. */
size_t qn_kv_bytes_per_token(const qn_kv_cache_params *p);

/* Creates a cache: all blocks FREE, no sequence active. Validates params (every size >= 1,
 * arena size overflow) with a message naming the field. *out is NULL on failure. */
qn_status qn_kv_cache_init(qn_kv_cache **out, const qn_kv_cache_params *p);
void qn_kv_cache_free(qn_kv_cache *c); /* NULL ok */

const qn_kv_cache_params *qn_kv_cache_params_of(const qn_kv_cache *c);

/* The [B][H][D] slab of K (k_or_v = 0) or V (1) of `layer` in `block`; NULL when the cache
 * has no arena or an index is out of range. */
float *qn_kv_block_ptr(const qn_kv_cache *c, int32_t block, int32_t layer, int k_or_v);

/* Copies the first n_tokens slots of every layer's K and V from block src to dst (no-op
 * without an arena). QN_ERR_RANGE for bad ids or n_tokens outside [0, B]. */
qn_status qn_kv_copy_block_prefix(qn_kv_cache *c, int32_t src, int32_t dst, int32_t n_tokens);

/* Sizes a plan for cache c and up to max_ops ops per step. qn_kv_plan_free releases its
 * buffers (NULL ok; the struct itself is the caller's). */
qn_status qn_kv_plan_init(qn_kv_plan *plan, const qn_kv_cache *c, int32_t max_ops);
void qn_kv_plan_free(qn_kv_plan *plan);

/* Works out what ops[0..n_ops) need, in order, against the current state; never mutates c.
 * Returns 0, QN_KV_NO_SPACE or a negative qn_status (see the header comment); the result is
 * also kept in plan->status. Ops are checked in order against the state the earlier ops
 * would leave (ADMIT then RESERVE of the same sequence in one step is fine). */
int qn_kv_plan_batch(const qn_kv_cache *c, const qn_kv_op *ops, int32_t n_ops, qn_kv_plan *plan);

/* Commits a plan made by qn_kv_plan_batch with the same ops (same array contents; a
 * fingerprint of kind, seq, parent, n_tokens and the tokens pointer is checked) against the
 * current state: pins prefix hits, forks, allocates (evicting LRU CACHED blocks when FREE is
 * empty) and copies fork prefixes in the arena. Cannot run out of blocks once planned.
 * Returns QN_ERR_INVALID (cache unchanged) for a plan that did not succeed or is stale. */
int qn_kv_apply(qn_kv_cache *c, const qn_kv_op *ops, int32_t n_ops, qn_kv_plan *plan);

/* Records that the KV of tokens[0..n) has been written at positions [computed, computed+n)
 * of seq (they must be reserved). Each block this fills gets its chain hash and is entered
 * into the prefix index unless an equal block already is. QN_ERR_RANGE past the
 * reservation; QN_ERR_INVALID for an inactive seq; the cache is unchanged on error. */
qn_status qn_kv_commit(qn_kv_cache *c, int32_t seq, const int32_t *tokens, int32_t n);

/* Ends seq (finished, aborted, or preempted = 1 to count a preemption): its blocks are
 * dereferenced last block first; a block reaching ref 0 becomes CACHED (LRU tail) if it is
 * the prefix index's entry, FREE otherwise. Because the tail blocks are released first,
 * a prefix's later blocks are evicted before its earlier ones. A preempted sequence is later
 * re-admitted with its prompt plus the tokens it had generated; every full block of those
 * still CACHED is a prefix hit, so only the evicted part is recomputed. QN_ERR_INVALID for
 * an inactive or out-of-range seq (cache unchanged). */
qn_status qn_kv_release(qn_kv_cache *c, int32_t seq, int preempted);

/* Forgets every cached prefix (after a weight update their K/V belong to the old weights):
 * CACHED blocks become FREE, index entries are dropped, and new chains start from a new
 * root, so blocks that sequences still running commit later (whose K/V mix old and new
 * weights) are never matched by sequences admitted after the flush. Running sequences keep
 * their blocks. */
qn_status qn_kv_cache_flush_prefix(qn_kv_cache *c);

/* Prefix hit (in tokens, a multiple of B, < n) that an ADMIT of tokens[0..n) would get now:
 * the scheduler asks this first to size the prefill chunk it reserves for a new request.
 * Read-only. 0 for n < 1. */
int32_t qn_kv_prefix_match(const qn_kv_cache *c, const int32_t *tokens, int32_t n);

/* Read-only views, for the scheduler and for tests. */
void qn_kv_cache_stats(const qn_kv_cache *c, qn_kv_stats *out);
int qn_kv_seq_active(const qn_kv_cache *c, int32_t seq);
int64_t qn_kv_seq_computed(const qn_kv_cache *c, int32_t seq); /* -1 if inactive */
/* Block table of seq (NULL and 0 when inactive); valid until the next mutation. */
int32_t qn_kv_seq_blocks(const qn_kv_cache *c, int32_t seq, const int32_t **table);
int32_t qn_kv_block_ref(const qn_kv_cache *c, int32_t block);
/* The B token ids written into block (slots not yet committed hold stale values); NULL for
 * an id out of range. */
const int32_t *qn_kv_block_tokens(const qn_kv_cache *c, int32_t block);
qn_kv_block_state qn_kv_block_state_of(const qn_kv_cache *c, int32_t block);
/* Writes the CACHED blocks in eviction order (next to evict first) into out[0..cap) and
 * returns how many there are. */
int32_t qn_kv_cache_lru(const qn_kv_cache *c, int32_t *out, int32_t cap);

/* Internal consistency check (lists well formed and matching states, refs equal to table
 * occurrences, index entries point at full hashed blocks, counters agree): QN_OK or
 * QN_ERR_INTERNAL with a message naming the first broken rule. O(N + total table size). */
qn_status qn_kv_cache_check(const qn_kv_cache *c);

/* Serialises the whole manager state (every block's state, ref, hash, tokens, list order,
 * the prefix index, sequences, counters, version, and the arena when there is one) into buf
 * when cap is large enough; returns the size needed. Two equal snapshots mean equal state. */
size_t qn_kv_cache_snapshot(const qn_kv_cache *c, void *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif /* QN_ROLLOUT_KV_CACHE_H */
