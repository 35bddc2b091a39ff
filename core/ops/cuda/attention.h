/* attention.h — causal attention on the GPU: the packed variable-length
 * forward and backward (CUDA twins of qn_attention_forward/_backward in
 * core/ops/cpu/ops.h, same letters and shapes), and paged-KV attention for
 * the rollout engine's decode and chunked prefill.
 *
 * Kernels (attention.cu; plain CUDA-core kernels with shared-memory tiles,
 * fp32 arithmetic, bf16 or f32 storage):
 *   forward   one block per (tile of QN_CUDA_ATT_BQ queries, head, sequence)
 *             streams the causal prefix in tiles of QN_CUDA_ATT_BK keys with
 *             an online softmax; never a [T, T] matrix.
 *   backward  flash-attention-2 recomputation from lse: a preprocess
 *             D = rowsum(dout * out), then one kernel for dq (query tiles
 *             against key tiles) and one for dk/dv (key tiles against query
 *             tiles, looping over the NH/NKV query heads of the kv head).
 *             Every output element has exactly one writer and a fixed
 *             summation order: no atomics, results are bitwise
 *             deterministic run to run.
 *   paged     flash-decoding: each (token, kv head, key split) block reads
 *             K/V through the block table for all query heads of the group
 *             and writes an unnormalised partial; a combine kernel merges
 *             the splits.
 *
 * Head dims: 64 and 128 have their own compiled paths; any other multiple
 * of 8 in [8, 256] takes a generic path (same kernels, runtime bounds).
 * Anything else is refused with QN_ERR_UNSUPPORTED before the device is
 * touched, as are dtypes other than F32/BF16. lse is always fp32.
 *
 * All functions are asynchronous on the context's stream and never call
 * cudaMalloc: the backward's D [T, NH] and the paged partials come from the
 * context arena (qn_cuda_alloc inside the call, released by mark/reset
 * before returning; QN_ERR_NOMEM naming the bytes when the arena is full).
 * Shapes are validated on the host (QN_ERR_INVALID / QN_ERR_UNSUPPORTED with
 * a message naming the argument) before anything is queued. Device-side
 * index data (cu_seqlens, positions, block tables) cannot be checked on the
 * host without a sync; the kernels clamp every index they follow and write
 * NaN into the affected outputs instead of reading out of bounds, so a bad
 * table shows up as NaN, never as a fault.
 *
 * Without CUDA (QN_CUDA=OFF) the same functions validate their arguments
 * and then return QN_ERR_NO_DEVICE (attention_stub.c). The host-side
 * planning below (attention_plan.c) is plain C in every build.
 *
 * Leaves out (speed, see docs/cuda.md): tensor cores (mma/wgmma), TMA,
 * sharing one K/V tile between the query heads of a group in the packed
 * kernels, vectorised 16-byte loads, persistent scheduling. */
#ifndef QN_CORE_OPS_CUDA_ATTENTION_H
#define QN_CORE_OPS_CUDA_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/ops/cuda/cuda_ctx.h"
#include "quench/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Tile constants shared by the planner and the kernels. */
enum {
    QN_CUDA_ATT_WARPS = 4,         /* warps per block */
    QN_CUDA_ATT_ROWS_PER_WARP = 4, /* rows (queries, keys or heads) a warp owns */
    QN_CUDA_ATT_BQ = 16,           /* rows per block = WARPS * ROWS_PER_WARP */
    QN_CUDA_ATT_BK = 32,           /* keys (or queries) per streamed tile = warp size */
    QN_CUDA_ATT_MAX_HD = 256,
    QN_CUDA_ATT_MAX_SPLITS = 64,   /* paged: key splits per token at most */
    QN_CUDA_ATT_MIN_SPLIT = 256    /* paged: keys per split at least (when splitting) */
};

/* ---------------------------------------------------------------- planning */

/* What a packed forward/backward call will launch; computed on the host from
 * the shapes alone. smem_* are dynamic shared-memory bytes per block. */
typedef struct qn_cuda_att_plan {
    int hd_path;            /* 64, 128, or 0 for the generic path */
    int q_tiles;            /* ceil(max_seqlen / BQ): grid.x of fwd and dq */
    int k_tiles;            /* ceil(max_seqlen / BQ): grid.x of dk/dv */
    size_t smem_fwd;
    size_t smem_dq;
    size_t smem_dkv;
    size_t bwd_scratch_bytes; /* D [T, NH] fp32, from the arena */
} qn_cuda_att_plan;

/* Validates a packed attention shape and fills *p. QN_ERR_UNSUPPORTED for a
 * dtype other than F32/BF16 or a head dim outside {8, 16, ..., 256};
 * QN_ERR_INVALID for S < 1, T < 0, NH/NKV < 1, NKV not dividing NH,
 * max_seqlen < 1 or > T (when T > 0), or grid limits exceeded (S or NH
 * above 65535). The message names the argument. */
qn_status qn_cuda_attention_plan(qn_dtype dt, int S, int T, int NH, int NKV, int HD,
                                 int max_seqlen, qn_cuda_att_plan *p);

/* Checks host cu_seqlens (cu[0] = 0, non-decreasing, cu[S] = T) and returns
 * the longest sequence in *max_seqlen: what callers pass to the CUDA calls,
 * whose cu_seqlens live on the device. */
qn_status qn_cuda_attention_seqlens(const int32_t *cu_seqlens /* S+1, host */, int S, int T,
                                    int *max_seqlen);

/* ------------------------------------------------------------ packed causal */

/* out[t, h] and lse[t, h] exactly as qn_attention_forward defines them
 * (scale 1/sqrt(HD), natural log, GQA h -> h / (NH/NKV)), for a packed
 * batch. q, k, v, out in dt; lse fp32 [T, NH]; cu_seqlens is a DEVICE array
 * of S+1 int32 (as described in ops.h); max_seqlen (host) must be at least
 * the longest sequence (qn_cuda_attention_seqlens). A sequence longer than
 * max_seqlen gets NaN outputs; a malformed cu_seqlens entry (negative,
 * decreasing or past T) leaves that sequence's rows unwritten (the arrays
 * live on the device, so they are not checked on the host). out must not
 * alias q, k, v. */
qn_status qn_cuda_attention_forward(qn_cuda_ctx *c, qn_dtype dt, void *out /* T, NH*HD */,
                                    float *lse /* T, NH */, const void *q /* T, NH*HD */,
                                    const void *k /* T, NKV*HD */, const void *v /* T, NKV*HD */,
                                    const int32_t *cu_seqlens /* S+1, device */, int S, int T,
                                    int NH, int NKV, int HD, int max_seqlen);

/* dq, dk, dv written (=) in dt, as qn_attention_backward; needs the
 * forward's out and lse. Scratch: T*NH floats from the arena. dk/dv of kv
 * head g sum the contributions of query heads g*NH/NKV .. in that order. */
qn_status qn_cuda_attention_backward(qn_cuda_ctx *c, qn_dtype dt, void *dq /* T, NH*HD */,
                                     void *dk /* T, NKV*HD */, void *dv /* T, NKV*HD */,
                                     const void *dout /* T, NH*HD */, const void *q,
                                     const void *k, const void *v, const void *out,
                                     const float *lse /* T, NH */,
                                     const int32_t *cu_seqlens /* S+1, device */, int S, int T,
                                     int NH, int NKV, int HD, int max_seqlen);

/* ------------------------------------------------------------ paged KV */

/* A batch of query tokens attending to a paged KV cache with the engine's
 * layout (rollout/kv_cache.h, core/model/infer.h): block b, layer l,
 *     arena + b*L*2*B*NKV*HD + (2*l + kv)*B*NKV*HD + slot*NKV*HD
 * (kv 0 = K, 1 = V), all in dt. Token t belongs to table row seq[t] and sits
 * at position pos[t]; it attends to positions 0 .. pos[t] of that sequence,
 * position p living in block tables[seq[t]*max_blocks + p/B], slot p%B.
 * Decode is one token per sequence; a chunk of chunked prefill is several
 * tokens of one sequence with consecutive positions (their K/V already
 * written to the cache). All pointers are device pointers. */
typedef struct qn_cuda_paged_attn {
    void *out;                   /* [T, NH*HD] dt */
    float *lse;                  /* [T, NH] fp32, or NULL */
    const void *q;               /* [T, NH*HD] dt */
    const void *arena;           /* dt, n_blocks blocks of L*2*B*NKV*HD */
    const int32_t *pos;          /* [T] */
    const int32_t *seq;          /* [T] rows of tables */
    const int32_t *tables;       /* [n_seqs, max_blocks] block ids */
    int T, NH, NKV, HD;
    int n_layers, layer, block_size, n_blocks;
    int n_seqs, max_blocks;
    int max_context;             /* host: >= max over t of pos[t] + 1 (sizes the splits) */
} qn_cuda_paged_attn;

/* The paged call's launch plan: n_splits key splits of split_keys keys
 * (a multiple of QN_CUDA_ATT_BK) per (token, kv head, head pass), chosen so
 * that the grid has about 2 blocks per SM (sm_count; <= 0 assumes 132) but
 * no split is shorter than QN_CUDA_ATT_MIN_SPLIT keys, at most
 * QN_CUDA_ATT_MAX_SPLITS. head_passes = ceil((NH/NKV) / BQ) blocks share a
 * group's heads. scratch_bytes: the partials (T*NH*n_splits*(HD+2) fp32)
 * from the arena. */
typedef struct qn_cuda_paged_plan {
    int hd_path;
    int n_splits;
    int split_keys;
    int head_passes;
    size_t smem;
    size_t scratch_bytes;
} qn_cuda_paged_plan;

/* Validates a paged call's host fields (dtype and head dim as for the packed
 * plan; T >= 0, layer in [0, n_layers), block_size, n_blocks, n_seqs,
 * max_blocks >= 1, max_context in [1, max_blocks*block_size], arena size in
 * elements fits size_t) and fills *p. Pointers are not looked at. */
qn_status qn_cuda_paged_attention_plan(qn_dtype dt, const qn_cuda_paged_attn *a, int sm_count,
                                       qn_cuda_paged_plan *p);

/* Runs the paged attention a describes (a->out written =, a->lse when not
 * NULL). A token whose block ids are outside [0, n_blocks), whose seq row is
 * outside [0, n_seqs) or whose pos is negative or needs more than max_blocks
 * blocks or more than max_context keys gets NaN outputs. Scratch:
 * plan.scratch_bytes from the arena. */
qn_status qn_cuda_paged_attention_forward(qn_cuda_ctx *c, qn_dtype dt,
                                          const qn_cuda_paged_attn *a);

#ifdef __cplusplus
}
#endif
#endif /* QN_CORE_OPS_CUDA_ATTENTION_H */
