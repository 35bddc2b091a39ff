/* kv_cache.c — paged KV cache block manager (see kv_cache.h for the model:
 * block states, chain-hashed prefix index, plan-then-apply).
 *
 * Lists: FREE and CACHED blocks sit on two intrusive doubly linked lists so
 * that a prefix hit can take a CACHED block out of the middle of the LRU in
 * O(1). The prefix index is an open-addressing table with linear probing and
 * backward-shift deletion, sized to twice the number of blocks (it can never
 * hold more entries than blocks), so it never grows.
 *
 * Left out: swapping, sliding windows, multi-tier caches, thread safety. */
#include "rollout/kv_cache.h"
#include "core/bigmem.h"

#include <stdlib.h>
#include <string.h>

#define KV_ROOT_HASH 0x6a09e667f3bcc908ull /* chain hash "parent" of a sequence's block 0 */
#define KV_EMPTY (-1)

typedef struct kv_list {
    int32_t head, tail, count;
} kv_list;

struct qn_kv_cache {
    qn_kv_cache_params p;
    float *mem;           /* [N][L][2][B][H][D] or NULL */
    size_t slab_floats;   /* B * H * D */
    int32_t *ref;         /* [N] */
    uint8_t *state;       /* [N] qn_kv_block_state */
    uint8_t *hashed;      /* [N] full, committed: hash and parent_hash valid */
    uint8_t *indexed;     /* [N] the index entry for its hash */
    uint64_t *hash;       /* [N] chain hash */
    uint64_t *parent;     /* [N] chain hash of the previous block */
    int32_t *tokens;      /* [N][B] token ids written into the block */
    int32_t *prev, *next; /* [N] list links */
    kv_list free_list, lru;
    uint64_t *ix_key; /* [ix_cap] */
    int32_t *ix_val;  /* [ix_cap] block or KV_EMPTY */
    uint32_t ix_mask;
    uint8_t *seq_active;   /* [S] */
    int64_t *seq_computed; /* [S] */
    int32_t *seq_nblocks;  /* [S] */
    int32_t *seq_table;    /* [S][max_blocks_per_seq] */
    uint64_t *seq_root;    /* [S] chain hash "parent" of block 0, fixed at admission */
    int32_t n_active;
    qn_kv_stats st;
    uint64_t version;
    uint64_t root; /* root of new chains; a prefix flush moves it */
};

/* ---- hashing ---------------------------------------------------------------------------- */

static uint64_t kv_mix(uint64_t x) {
    /* splitmix64 finaliser: a strong 64-bit mixer, cheap per token */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static uint64_t kv_chain_hash(uint64_t parent, const int32_t *tok, int32_t n) {
    uint64_t h = kv_mix(parent ^ 0x243f6a8885a308d3ull);
    for (int32_t i = 0; i < n; i++)
        h = kv_mix(h ^ ((uint64_t)(uint32_t)tok[i] + 0x9e3779b97f4a7c15ull));
    return h;
}

/* ---- lists ---------------------------------------------------------------------------- */

static void list_push_tail(qn_kv_cache *c, kv_list *l, int32_t b) {
    c->prev[b] = l->tail;
    c->next[b] = KV_EMPTY;
    if (l->tail != KV_EMPTY)
        c->next[l->tail] = b;
    else
        l->head = b;
    l->tail = b;
    l->count++;
}

static void list_remove(qn_kv_cache *c, kv_list *l, int32_t b) {
    int32_t p = c->prev[b], n = c->next[b];
    if (p != KV_EMPTY)
        c->next[p] = n;
    else
        l->head = n;
    if (n != KV_EMPTY)
        c->prev[n] = p;
    else
        l->tail = p;
    c->prev[b] = c->next[b] = KV_EMPTY;
    l->count--;
}

/* ---- prefix index ---------------------------------------------------------------------- */

static int32_t ix_find_slot(const qn_kv_cache *c, uint64_t key) {
    uint32_t i = (uint32_t)kv_mix(key) & c->ix_mask;
    while (c->ix_val[i] != KV_EMPTY) {
        if (c->ix_key[i] == key) return (int32_t)i;
        i = (i + 1) & c->ix_mask;
    }
    return -1 - (int32_t)i; /* not found: -1 - first empty slot */
}

static void ix_insert_at(qn_kv_cache *c, int32_t empty_slot, uint64_t key, int32_t block) {
    c->ix_key[empty_slot] = key;
    c->ix_val[empty_slot] = block;
}

static void ix_remove(qn_kv_cache *c, uint64_t key) {
    int32_t s = ix_find_slot(c, key);
    if (s < 0) return;
    uint32_t i = (uint32_t)s;
    c->ix_val[i] = KV_EMPTY;
    /* backward-shift: move later entries of the cluster into the hole when their home slot
     * does not lie cyclically in (hole, j] */
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & c->ix_mask;
        if (c->ix_val[j] == KV_EMPTY) break;
        uint32_t home = (uint32_t)kv_mix(c->ix_key[j]) & c->ix_mask;
        int in_range = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (!in_range) {
            c->ix_key[i] = c->ix_key[j];
            c->ix_val[i] = c->ix_val[j];
            c->ix_val[j] = KV_EMPTY;
            i = j;
        }
    }
}

/* The indexed block for chain hash h whose tokens and parent match, or KV_EMPTY. */
static int32_t ix_lookup(const qn_kv_cache *c, uint64_t h, uint64_t parent, const int32_t *tok) {
    int32_t s = ix_find_slot(c, h);
    if (s < 0) return KV_EMPTY;
    int32_t b = c->ix_val[s];
    int32_t B = c->p.block_size;
    if (c->parent[b] != parent) return KV_EMPTY;
    if (memcmp(c->tokens + (size_t)b * B, tok, (size_t)B * sizeof(int32_t)) != 0) return KV_EMPTY;
    return b;
}

/* ---- init / free ---------------------------------------------------------------------- */

size_t qn_kv_bytes_per_token(const qn_kv_cache_params *p) {
    if (!p || p->n_layers < 1 || p->n_kv_heads < 1 || p->head_dim < 1) return 0;
    return (size_t)2 * (size_t)p->n_layers * (size_t)p->n_kv_heads * (size_t)p->head_dim *
           sizeof(float);
}

qn_status qn_kv_cache_init(qn_kv_cache **out, const qn_kv_cache_params *p) {
    if (!out) return qn_fail(QN_ERR_INVALID, "kv cache: out is NULL");
    *out = NULL;
    if (!p) return qn_fail(QN_ERR_INVALID, "kv cache: params is NULL");
    const struct {
        const char *name;
        int32_t v;
    } f[] = {{"n_layers", p->n_layers},
             {"n_kv_heads", p->n_kv_heads},
             {"head_dim", p->head_dim},
             {"block_size", p->block_size},
             {"n_blocks", p->n_blocks},
             {"max_seqs", p->max_seqs},
             {"max_blocks_per_seq", p->max_blocks_per_seq}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].v < 1)
            return qn_fail(QN_ERR_RANGE, "kv cache: %s = %d, must be >= 1", f[i].name, f[i].v);
    if (p->n_blocks > (1 << 29))
        return qn_fail(QN_ERR_RANGE, "kv cache: n_blocks = %d exceeds %d", p->n_blocks, 1 << 29);
    size_t slab = (size_t)p->block_size * (size_t)p->n_kv_heads * (size_t)p->head_dim;
    size_t per_block = slab * 2 * (size_t)p->n_layers;
    if (per_block / 2 / (size_t)p->n_layers != slab ||
        (size_t)p->n_blocks > SIZE_MAX / sizeof(float) / per_block)
        return qn_fail(QN_ERR_TOO_LARGE, "kv cache: arena of %d blocks overflows size_t",
                       p->n_blocks);
    if ((size_t)p->max_seqs * (size_t)p->max_blocks_per_seq > ((size_t)1 << 40))
        return qn_fail(QN_ERR_TOO_LARGE, "kv cache: max_seqs * max_blocks_per_seq too large");

    qn_kv_cache *c = calloc(1, sizeof *c);
    if (!c) return qn_fail(QN_ERR_NOMEM, "kv cache: out of memory");
    c->p = *p;
    c->slab_floats = slab;
    size_t N = (size_t)p->n_blocks, S = (size_t)p->max_seqs;
    uint32_t cap = 2;
    while (cap < 2 * (uint32_t)p->n_blocks)
        cap <<= 1;
    c->ix_mask = cap - 1;
    c->ref = calloc(N, sizeof *c->ref);
    c->state = calloc(N, 1);
    c->hashed = calloc(N, 1);
    c->indexed = calloc(N, 1);
    c->hash = calloc(N, sizeof *c->hash);
    c->parent = calloc(N, sizeof *c->parent);
    c->tokens = calloc(N * (size_t)p->block_size, sizeof *c->tokens);
    c->prev = malloc(N * sizeof *c->prev);
    c->next = malloc(N * sizeof *c->next);
    c->ix_key = calloc(cap, sizeof *c->ix_key);
    c->ix_val = malloc((size_t)cap * sizeof *c->ix_val);
    c->seq_active = calloc(S, 1);
    c->seq_computed = calloc(S, sizeof *c->seq_computed);
    c->seq_root = calloc(S, sizeof *c->seq_root);
    c->root = KV_ROOT_HASH;
    c->seq_nblocks = calloc(S, sizeof *c->seq_nblocks);
    c->seq_table = calloc(S * (size_t)p->max_blocks_per_seq, sizeof *c->seq_table);
    if (p->alloc_memory) c->mem = qn_big_alloc(N * per_block * sizeof(float));
    if (!c->ref || !c->state || !c->hashed || !c->indexed || !c->hash || !c->parent || !c->tokens ||
        !c->prev || !c->next || !c->ix_key || !c->ix_val || !c->seq_active || !c->seq_computed ||
        !c->seq_nblocks || !c->seq_table || (p->alloc_memory && !c->mem)) {
        qn_kv_cache_free(c);
        return qn_fail(QN_ERR_NOMEM, "kv cache: out of memory for %d blocks", p->n_blocks);
    }
    for (uint32_t i = 0; i < cap; i++)
        c->ix_val[i] = KV_EMPTY;
    c->free_list = (kv_list){KV_EMPTY, KV_EMPTY, 0};
    c->lru = (kv_list){KV_EMPTY, KV_EMPTY, 0};
    for (int32_t b = 0; b < p->n_blocks; b++) {
        c->state[b] = QN_KV_BLOCK_FREE;
        list_push_tail(c, &c->free_list, b);
    }
    c->st.blocks_total = p->n_blocks;
    *out = c;
    return QN_OK;
}

void qn_kv_cache_free(qn_kv_cache *c) {
    if (!c) return;
    qn_big_free(c->mem, (size_t)c->p.n_blocks * c->slab_floats * 2 * (size_t)c->p.n_layers *
                            sizeof(float));
    free(c->ref);
    free(c->state);
    free(c->hashed);
    free(c->indexed);
    free(c->hash);
    free(c->parent);
    free(c->tokens);
    free(c->prev);
    free(c->next);
    free(c->ix_key);
    free(c->ix_val);
    free(c->seq_active);
    free(c->seq_computed);
    free(c->seq_root);
    free(c->seq_nblocks);
    free(c->seq_table);
    free(c);
}

const qn_kv_cache_params *qn_kv_cache_params_of(const qn_kv_cache *c) {
    return &c->p;
}

float *qn_kv_block_ptr(const qn_kv_cache *c, int32_t block, int32_t layer, int k_or_v) {
    if (!c || !c->mem || block < 0 || block >= c->p.n_blocks || layer < 0 ||
        layer >= c->p.n_layers || (k_or_v != 0 && k_or_v != 1))
        return NULL;
    size_t slab_index =
        ((size_t)block * (size_t)c->p.n_layers + (size_t)layer) * 2 + (size_t)k_or_v;
    return c->mem + slab_index * c->slab_floats;
}

qn_status qn_kv_copy_block_prefix(qn_kv_cache *c, int32_t src, int32_t dst, int32_t n_tokens) {
    if (src < 0 || src >= c->p.n_blocks || dst < 0 || dst >= c->p.n_blocks || n_tokens < 0 ||
        n_tokens > c->p.block_size)
        return qn_fail(QN_ERR_RANGE, "kv cache: copy %d -> %d of %d tokens out of range", src, dst,
                       n_tokens);
    if (!c->mem || src == dst) return QN_OK;
    size_t row = (size_t)c->p.n_kv_heads * (size_t)c->p.head_dim;
    for (int32_t l = 0; l < c->p.n_layers; l++)
        for (int kv = 0; kv < 2; kv++)
            memcpy(qn_kv_block_ptr(c, dst, l, kv), qn_kv_block_ptr(c, src, l, kv),
                   (size_t)n_tokens * row * sizeof(float));
    return QN_OK;
}

/* ---- plan ----------------------------------------------------------------------------- */

qn_status qn_kv_plan_init(qn_kv_plan *plan, const qn_kv_cache *c, int32_t max_ops) {
    if (!plan || !c) return qn_fail(QN_ERR_INVALID, "kv plan: NULL argument");
    memset(plan, 0, sizeof *plan);
    if (max_ops < 1) return qn_fail(QN_ERR_RANGE, "kv plan: max_ops = %d, must be >= 1", max_ops);
    plan->max_ops = max_ops;
    plan->n_blocks_ = c->p.n_blocks;
    plan->max_seqs_ = c->p.max_seqs;
    /* an ADMIT hits at most max_blocks_per_seq blocks */
    plan->hit_cap_ = (int64_t)max_ops * c->p.max_blocks_per_seq;
    plan->op_hit_tokens = calloc((size_t)max_ops, sizeof *plan->op_hit_tokens);
    plan->copies = calloc((size_t)max_ops, sizeof *plan->copies);
    plan->hit_blocks_ = malloc((size_t)plan->hit_cap_ * sizeof *plan->hit_blocks_);
    plan->hit_off_ = calloc((size_t)max_ops + 1, sizeof *plan->hit_off_);
    plan->mark_ = calloc((size_t)c->p.n_blocks, sizeof *plan->mark_);
    plan->sim_computed_ = calloc((size_t)c->p.max_seqs, sizeof *plan->sim_computed_);
    plan->sim_nblocks_ = calloc((size_t)c->p.max_seqs, sizeof *plan->sim_nblocks_);
    plan->sim_active_ = calloc((size_t)c->p.max_seqs, 1);
    plan->seq_mark_ = calloc((size_t)c->p.max_seqs, sizeof *plan->seq_mark_);
    plan->status = QN_ERR_INVALID;
    if (!plan->op_hit_tokens || !plan->copies || !plan->hit_blocks_ || !plan->hit_off_ ||
        !plan->mark_ || !plan->sim_computed_ || !plan->sim_nblocks_ || !plan->sim_active_ ||
        !plan->seq_mark_) {
        qn_kv_plan_free(plan);
        return qn_fail(QN_ERR_NOMEM, "kv plan: out of memory");
    }
    return QN_OK;
}

void qn_kv_plan_free(qn_kv_plan *plan) {
    if (!plan) return;
    free(plan->op_hit_tokens);
    free(plan->copies);
    free(plan->hit_blocks_);
    free(plan->hit_off_);
    free(plan->mark_);
    free(plan->sim_computed_);
    free(plan->sim_nblocks_);
    free(plan->sim_active_);
    free(plan->seq_mark_);
    memset(plan, 0, sizeof *plan);
}

/* Longest chain of indexed blocks matching tokens, leaving >= 1 token to compute. */
static int32_t kv_match_prefix(const qn_kv_cache *c, const int32_t *tokens, int32_t n,
                               int32_t *blocks_out) {
    int32_t B = c->p.block_size;
    int32_t max_hit = (n - 1) / B;
    if (max_hit > c->p.max_blocks_per_seq) max_hit = c->p.max_blocks_per_seq;
    uint64_t parent = c->root;
    int32_t hits = 0;
    for (; hits < max_hit; hits++) {
        const int32_t *tok = tokens + (size_t)hits * B;
        uint64_t h = kv_chain_hash(parent, tok, B);
        int32_t b = ix_lookup(c, h, parent, tok);
        if (b == KV_EMPTY) break;
        if (blocks_out) blocks_out[hits] = b;
        parent = h;
    }
    return hits;
}

static int32_t ceil_div64(int64_t a, int32_t b) {
    return (int32_t)((a + b - 1) / b);
}

/* Fingerprint of an op list, so apply can refuse ops other than the planned ones. */
static uint64_t ops_fingerprint(const qn_kv_op *ops, int32_t n_ops) {
    uint64_t h = kv_mix((uint64_t)n_ops);
    for (int32_t i = 0; i < n_ops; i++) {
        h = kv_mix(h ^ (uint64_t)ops[i].kind ^ ((uint64_t)(uint32_t)ops[i].seq << 8));
        h = kv_mix(h ^ (uint64_t)(uint32_t)ops[i].parent ^
                   ((uint64_t)(uint32_t)ops[i].n_tokens << 32));
        h = kv_mix(h ^ (uint64_t)(uintptr_t)ops[i].tokens);
    }
    return h;
}

static int plan_fail(qn_kv_plan *plan, int s) {
    plan->status = s;
    return s;
}

int qn_kv_plan_batch(const qn_kv_cache *c, const qn_kv_op *ops, int32_t n_ops, qn_kv_plan *plan) {
    if (!c || !plan || (n_ops > 0 && !ops))
        return plan ? plan_fail(plan, qn_fail(QN_ERR_INVALID, "kv plan: NULL argument"))
                    : qn_fail(QN_ERR_INVALID, "kv plan: NULL plan");
    if (plan->n_blocks_ != c->p.n_blocks || plan->max_seqs_ != c->p.max_seqs)
        return plan_fail(plan, qn_fail(QN_ERR_INVALID, "kv plan: sized for another cache"));
    if (n_ops < 0 || n_ops > plan->max_ops)
        return plan_fail(
            plan, qn_fail(QN_ERR_RANGE, "kv plan: %d ops, plan holds %d", n_ops, plan->max_ops));
    const int32_t B = c->p.block_size, S = c->p.max_seqs, MB = c->p.max_blocks_per_seq;
    plan->n_ops = n_ops;
    plan->need_blocks = plan->evict_blocks = plan->revived_blocks = 0;
    plan->hit_tokens = 0;
    plan->n_copies = 0;
    plan->version_ = c->version;
    plan->ops_hash_ = ops_fingerprint(ops, n_ops);
    if (++plan->epoch_ == 0) { /* wrapped: old marks could alias the new epoch */
        memset(plan->mark_, 0, (size_t)plan->n_blocks_ * sizeof *plan->mark_);
        memset(plan->seq_mark_, 0, (size_t)plan->max_seqs_ * sizeof *plan->seq_mark_);
        plan->epoch_ = 1;
    }
    int status = QN_OK;
    int64_t hit_used = 0;
    plan->hit_off_[0] = 0;

    for (int32_t i = 0; i < n_ops; i++) {
        const qn_kv_op *op = &ops[i];
        plan->op_hit_tokens[i] = 0;
        int32_t s = op->seq;
        if (s < 0 || s >= S) {
            status = qn_fail(QN_ERR_RANGE, "kv plan: op %d: sequence %d outside [0, %d)", i, s, S);
            break;
        }
        /* bring s (and the fork parent) into the simulated state on first touch */
        int32_t ids[2] = {s, op->kind == QN_KV_OP_FORK ? op->parent : -1};
        if (op->kind == QN_KV_OP_FORK && (op->parent < 0 || op->parent >= S || op->parent == s)) {
            status = qn_fail(QN_ERR_RANGE, "kv plan: op %d: fork parent %d of sequence %d invalid",
                             i, op->parent, s);
            break;
        }
        for (int k = 0; k < 2; k++) {
            int32_t t = ids[k];
            if (t < 0) continue;
            if (plan->seq_mark_[t] != plan->epoch_) {
                plan->seq_mark_[t] = plan->epoch_;
                plan->sim_active_[t] = c->seq_active[t];
                plan->sim_computed_[t] = c->seq_computed[t];
                plan->sim_nblocks_[t] = c->seq_nblocks[t];
            }
        }
        switch (op->kind) {
        case QN_KV_OP_ADMIT: {
            if (plan->sim_active_[s]) {
                status =
                    qn_fail(QN_ERR_EXISTS, "kv plan: op %d: admit of active sequence %d", i, s);
                break;
            }
            if (op->n_tokens < 1 || !op->tokens) {
                status =
                    qn_fail(QN_ERR_RANGE, "kv plan: op %d: admit of sequence %d with %d tokens", i,
                            s, op->n_tokens);
                break;
            }
            int32_t *hb = plan->hit_blocks_ + hit_used;
            int32_t hits = kv_match_prefix(c, op->tokens, op->n_tokens, hb);
            for (int32_t h = 0; h < hits; h++) {
                int32_t b = hb[h];
                if (c->state[b] == QN_KV_BLOCK_CACHED && plan->mark_[b] != plan->epoch_) {
                    plan->mark_[b] = plan->epoch_;
                    plan->revived_blocks++;
                }
            }
            hit_used += hits;
            plan->op_hit_tokens[i] = hits * B;
            plan->hit_tokens += (int64_t)hits * B;
            plan->sim_active_[s] = 1;
            plan->sim_computed_[s] = (int64_t)hits * B;
            plan->sim_nblocks_[s] = hits;
            break;
        }
        case QN_KV_OP_FORK: {
            int32_t par = op->parent;
            if (plan->sim_active_[s]) {
                status =
                    qn_fail(QN_ERR_EXISTS, "kv plan: op %d: fork into active sequence %d", i, s);
                break;
            }
            if (!plan->sim_active_[par]) {
                status = qn_fail(QN_ERR_INVALID, "kv plan: op %d: fork from inactive sequence %d",
                                 i, par);
                break;
            }
            int64_t comp = plan->sim_computed_[par];
            int32_t nb = ceil_div64(comp, B);
            if (comp % B) plan->need_blocks++;
            plan->sim_active_[s] = 1;
            plan->sim_computed_[s] = comp;
            plan->sim_nblocks_[s] = nb;
            break;
        }
        case QN_KV_OP_RESERVE: {
            if (!plan->sim_active_[s]) {
                status = qn_fail(QN_ERR_INVALID, "kv plan: op %d: reserve for inactive sequence %d",
                                 i, s);
                break;
            }
            if (op->n_tokens < 0) {
                status =
                    qn_fail(QN_ERR_RANGE, "kv plan: op %d: reserve of %d tokens", i, op->n_tokens);
                break;
            }
            int64_t end = plan->sim_computed_[s] + op->n_tokens;
            int32_t want = ceil_div64(end, B);
            if (end > (int64_t)MB * B) {
                status = qn_fail(QN_ERR_RANGE,
                                 "kv plan: op %d: sequence %d would hold %lld tokens, more than "
                                 "max_blocks_per_seq %d x block_size %d",
                                 i, s, (long long)end, MB, B);
                break;
            }
            if (want > plan->sim_nblocks_[s]) {
                plan->need_blocks += want - plan->sim_nblocks_[s];
                plan->sim_nblocks_[s] = want;
            }
            break;
        }
        default:
            status = qn_fail(QN_ERR_INVALID, "kv plan: op %d: unknown kind %d", i, (int)op->kind);
            break;
        }
        if (status != QN_OK) break;
        plan->hit_off_[i + 1] = (int32_t)hit_used;
    }
    if (status != QN_OK) return plan_fail(plan, status);

    plan->avail_blocks = c->free_list.count + c->lru.count - plan->revived_blocks;
    int32_t from_free =
        plan->need_blocks < c->free_list.count ? plan->need_blocks : c->free_list.count;
    plan->evict_blocks = plan->need_blocks - from_free;
    if (plan->need_blocks > plan->avail_blocks) return plan_fail(plan, QN_KV_NO_SPACE);
    return plan_fail(plan, QN_OK);
}

/* ---- apply ---------------------------------------------------------------------------- */

static int32_t kv_alloc_block(qn_kv_cache *c) {
    int32_t b;
    if (c->free_list.count > 0) {
        b = c->free_list.head;
        list_remove(c, &c->free_list, b);
    } else {
        b = c->lru.head; /* the plan guaranteed one */
        list_remove(c, &c->lru, b);
        if (c->indexed[b]) ix_remove(c, c->hash[b]);
        c->st.evictions++;
    }
    c->indexed[b] = 0;
    c->hashed[b] = 0;
    c->state[b] = QN_KV_BLOCK_USED;
    c->ref[b] = 1;
    return b;
}

static void kv_ref_block(qn_kv_cache *c, int32_t b) {
    if (c->state[b] == QN_KV_BLOCK_CACHED) {
        list_remove(c, &c->lru, b);
        c->state[b] = QN_KV_BLOCK_USED;
    }
    c->ref[b]++;
}

int qn_kv_apply(qn_kv_cache *c, const qn_kv_op *ops, int32_t n_ops, qn_kv_plan *plan) {
    if (!c || !plan || (n_ops > 0 && !ops))
        return qn_fail(QN_ERR_INVALID, "kv apply: NULL argument");
    if (plan->status != QN_OK)
        return qn_fail(QN_ERR_INVALID, "kv apply: the plan did not succeed (status %d)",
                       plan->status);
    if (plan->version_ != c->version)
        return qn_fail(QN_ERR_INVALID,
                       "kv apply: stale plan (made for cache version %llu, "
                       "cache is at %llu)",
                       (unsigned long long)plan->version_, (unsigned long long)c->version);
    if (plan->n_ops != n_ops || plan->ops_hash_ != ops_fingerprint(ops, n_ops))
        return qn_fail(QN_ERR_INVALID, "kv apply: ops differ from the planned ones");
    const int32_t B = c->p.block_size, MB = c->p.max_blocks_per_seq;
    /* Phase 1: pin every prefix hit before anything is allocated, so no allocation of this
     * step can evict a block a later ADMIT of the same step was promised. No op before an
     * ADMIT can refer to its sequence (the plan would have failed), so doing the ADMITs first
     * does not change what the other ops see. */
    for (int32_t i = 0; i < n_ops; i++) {
        const qn_kv_op *op = &ops[i];
        if (op->kind != QN_KV_OP_ADMIT) continue;
        int32_t s = op->seq;
        int32_t hits = plan->hit_off_[i + 1] - plan->hit_off_[i];
        int32_t *tab = c->seq_table + (size_t)s * MB;
        for (int32_t h = 0; h < hits; h++) {
            int32_t b = plan->hit_blocks_[plan->hit_off_[i] + h];
            kv_ref_block(c, b);
            tab[h] = b;
        }
        c->seq_active[s] = 1;
        c->n_active++;
        c->seq_nblocks[s] = hits;
        c->seq_computed[s] = (int64_t)hits * B;
        c->seq_root[s] = c->root;
        c->st.prefix_query_tokens += op->n_tokens;
        c->st.prefix_hit_tokens += (int64_t)hits * B;
    }
    /* Phase 2: forks and reservations in order. */
    plan->n_copies = 0;
    for (int32_t i = 0; i < n_ops; i++) {
        const qn_kv_op *op = &ops[i];
        int32_t s = op->seq;
        int32_t *tab = c->seq_table + (size_t)s * MB;
        if (op->kind == QN_KV_OP_FORK) {
            int32_t par = op->parent;
            const int32_t *ptab = c->seq_table + (size_t)par * MB;
            int64_t comp = c->seq_computed[par];
            int32_t full = (int32_t)(comp / B), rem = (int32_t)(comp % B);
            for (int32_t k = 0; k < full; k++) {
                kv_ref_block(c, ptab[k]);
                tab[k] = ptab[k];
            }
            int32_t nb = full;
            if (rem) {
                int32_t src = ptab[full];
                int32_t dst = kv_alloc_block(c);
                memcpy(c->tokens + (size_t)dst * B, c->tokens + (size_t)src * B,
                       (size_t)rem * sizeof(int32_t));
                qn_kv_copy_block_prefix(c, src, dst, rem);
                plan->copies[plan->n_copies++] = (qn_kv_copy){src, dst, rem};
                tab[nb++] = dst;
            }
            c->seq_active[s] = 1;
            c->n_active++;
            c->seq_nblocks[s] = nb;
            c->seq_computed[s] = comp;
            c->seq_root[s] = c->seq_root[par];
            c->st.fork_shared_tokens += comp;
        } else if (op->kind == QN_KV_OP_RESERVE) {
            int32_t want = ceil_div64(c->seq_computed[s] + op->n_tokens, B);
            while (c->seq_nblocks[s] < want)
                tab[c->seq_nblocks[s]++] = kv_alloc_block(c);
        }
    }
    c->version++;
    return QN_OK;
}

/* ---- commit / release ----------------------------------------------------------------- */

qn_status qn_kv_commit(qn_kv_cache *c, int32_t seq, const int32_t *tokens, int32_t n) {
    if (!c || seq < 0 || seq >= c->p.max_seqs || !c->seq_active[seq])
        return qn_fail(QN_ERR_INVALID, "kv commit: sequence %d is not active", seq);
    const int32_t B = c->p.block_size, MB = c->p.max_blocks_per_seq;
    if (n < 0 || (n > 0 && !tokens))
        return qn_fail(QN_ERR_RANGE, "kv commit: sequence %d: %d tokens", seq, n);
    int64_t comp = c->seq_computed[seq];
    if (comp + n > (int64_t)c->seq_nblocks[seq] * B)
        return qn_fail(QN_ERR_RANGE,
                       "kv commit: sequence %d: positions [%lld, %lld) exceed its %d reserved "
                       "slots",
                       seq, (long long)comp, (long long)(comp + n), c->seq_nblocks[seq] * B);
    int32_t *tab = c->seq_table + (size_t)seq * MB;
    for (int64_t pos = comp; pos < comp + n; pos++) {
        int32_t b = tab[pos / B];
        if (c->ref[b] != 1) /* only shared blocks are full ones, which are never written */
            return qn_fail(QN_ERR_INTERNAL, "kv commit: sequence %d writes shared block %d", seq,
                           b);
    }
    for (int32_t i = 0; i < n; i++) {
        int64_t pos = comp + i;
        int32_t bi = (int32_t)(pos / B), off = (int32_t)(pos % B);
        int32_t b = tab[bi];
        c->tokens[(size_t)b * B + off] = tokens[i];
        if (off == B - 1) {
            uint64_t parent = bi == 0 ? c->seq_root[seq] : c->hash[tab[bi - 1]];
            uint64_t h = kv_chain_hash(parent, c->tokens + (size_t)b * B, B);
            c->hash[b] = h;
            c->parent[b] = parent;
            c->hashed[b] = 1;
            int32_t slot = ix_find_slot(c, h);
            if (slot < 0) {
                ix_insert_at(c, -1 - slot, h, b);
                c->indexed[b] = 1;
            }
        }
    }
    c->seq_computed[seq] = comp + n;
    c->st.computed_tokens += n;
    c->version++;
    return QN_OK;
}

qn_status qn_kv_release(qn_kv_cache *c, int32_t seq, int preempted) {
    if (!c || seq < 0 || seq >= c->p.max_seqs || !c->seq_active[seq])
        return qn_fail(QN_ERR_INVALID, "kv release: sequence %d is not active", seq);
    int32_t *tab = c->seq_table + (size_t)seq * c->p.max_blocks_per_seq;
    for (int32_t i = c->seq_nblocks[seq] - 1; i >= 0; i--) {
        int32_t b = tab[i];
        if (--c->ref[b] > 0) continue;
        if (c->indexed[b]) {
            c->state[b] = QN_KV_BLOCK_CACHED;
            list_push_tail(c, &c->lru, b);
        } else {
            c->state[b] = QN_KV_BLOCK_FREE;
            c->hashed[b] = 0;
            list_push_tail(c, &c->free_list, b);
        }
    }
    c->seq_active[seq] = 0;
    c->seq_nblocks[seq] = 0;
    c->seq_computed[seq] = 0;
    c->n_active--;
    if (preempted) c->st.preemptions++;
    c->version++;
    return QN_OK;
}

qn_status qn_kv_cache_flush_prefix(qn_kv_cache *c) {
    if (!c) return qn_fail(QN_ERR_INVALID, "kv flush: no cache");
    c->root = kv_mix(c->root + 0x9e3779b97f4a7c15ull);
    for (int32_t b = 0; b < c->p.n_blocks; b++) {
        if (!c->indexed[b]) continue;
        ix_remove(c, c->hash[b]);
        c->indexed[b] = 0;
        if (c->state[b] == QN_KV_BLOCK_CACHED) {
            list_remove(c, &c->lru, b);
            c->state[b] = QN_KV_BLOCK_FREE;
            c->hashed[b] = 0;
            list_push_tail(c, &c->free_list, b);
        }
    }
    c->version++;
    return QN_OK;
}

/* ---- views ---------------------------------------------------------------------------- */

void qn_kv_cache_stats(const qn_kv_cache *c, qn_kv_stats *out) {
    *out = c->st;
    out->blocks_total = c->p.n_blocks;
    out->blocks_free = c->free_list.count;
    out->blocks_cached = c->lru.count;
    out->blocks_used = c->p.n_blocks - c->free_list.count - c->lru.count;
    out->active_seqs = c->n_active;
}

int qn_kv_seq_active(const qn_kv_cache *c, int32_t seq) {
    return seq >= 0 && seq < c->p.max_seqs && c->seq_active[seq];
}

int64_t qn_kv_seq_computed(const qn_kv_cache *c, int32_t seq) {
    return qn_kv_seq_active(c, seq) ? c->seq_computed[seq] : -1;
}

int32_t qn_kv_seq_blocks(const qn_kv_cache *c, int32_t seq, const int32_t **table) {
    if (!qn_kv_seq_active(c, seq)) {
        if (table) *table = NULL;
        return 0;
    }
    if (table) *table = c->seq_table + (size_t)seq * c->p.max_blocks_per_seq;
    return c->seq_nblocks[seq];
}

int32_t qn_kv_prefix_match(const qn_kv_cache *c, const int32_t *tokens, int32_t n) {
    if (!c || !tokens || n < 1) return 0;
    return kv_match_prefix(c, tokens, n, NULL) * c->p.block_size;
}

const int32_t *qn_kv_block_tokens(const qn_kv_cache *c, int32_t block) {
    if (block < 0 || block >= c->p.n_blocks) return NULL;
    return c->tokens + (size_t)block * c->p.block_size;
}

int32_t qn_kv_block_ref(const qn_kv_cache *c, int32_t block) {
    return (block >= 0 && block < c->p.n_blocks) ? c->ref[block] : -1;
}

qn_kv_block_state qn_kv_block_state_of(const qn_kv_cache *c, int32_t block) {
    return (block >= 0 && block < c->p.n_blocks) ? (qn_kv_block_state)c->state[block]
                                                 : QN_KV_BLOCK_FREE;
}

int32_t qn_kv_cache_lru(const qn_kv_cache *c, int32_t *out, int32_t cap) {
    int32_t k = 0;
    for (int32_t b = c->lru.head; b != KV_EMPTY; b = c->next[b]) {
        if (k < cap) out[k] = b;
        k++;
    }
    return k;
}

static qn_status check_list(const qn_kv_cache *c, const kv_list *l, qn_kv_block_state want,
                            const char *name) {
    int32_t k = 0, prev = KV_EMPTY;
    for (int32_t b = l->head; b != KV_EMPTY; b = c->next[b]) {
        if (b < 0 || b >= c->p.n_blocks || ++k > c->p.n_blocks)
            return qn_fail(QN_ERR_INTERNAL, "kv check: %s list broken at %d", name, b);
        if (c->prev[b] != prev)
            return qn_fail(QN_ERR_INTERNAL, "kv check: %s list back link of %d", name, b);
        if (c->state[b] != want || c->ref[b] != 0)
            return qn_fail(QN_ERR_INTERNAL, "kv check: block %d on %s list has state %d ref %d", b,
                           name, c->state[b], c->ref[b]);
        prev = b;
    }
    if (prev != l->tail || k != l->count)
        return qn_fail(QN_ERR_INTERNAL, "kv check: %s list count %d, walked %d", name, l->count, k);
    return QN_OK;
}

qn_status qn_kv_cache_check(const qn_kv_cache *c) {
    const int32_t N = c->p.n_blocks, B = c->p.block_size, MB = c->p.max_blocks_per_seq;
    QN_CHECK(check_list(c, &c->free_list, QN_KV_BLOCK_FREE, "free"));
    QN_CHECK(check_list(c, &c->lru, QN_KV_BLOCK_CACHED, "lru"));
    int32_t *count = calloc((size_t)N, sizeof *count);
    if (!count) return qn_fail(QN_ERR_NOMEM, "kv check: out of memory");
    qn_status s = QN_OK;
    int32_t active = 0;
    for (int32_t q = 0; q < c->p.max_seqs && s == QN_OK; q++) {
        if (!c->seq_active[q]) continue;
        active++;
        int32_t nb = c->seq_nblocks[q];
        if (nb < 0 || nb > MB || c->seq_computed[q] > (int64_t)nb * B || c->seq_computed[q] < 0)
            s = qn_fail(QN_ERR_INTERNAL, "kv check: sequence %d has %d blocks, %lld computed", q,
                        nb, (long long)c->seq_computed[q]);
        for (int32_t i = 0; i < nb && s == QN_OK; i++) {
            int32_t b = c->seq_table[(size_t)q * MB + i];
            if (b < 0 || b >= N)
                s = qn_fail(QN_ERR_INTERNAL, "kv check: bad block id %d", b);
            else
                count[b]++;
        }
        int32_t full = (int32_t)(c->seq_computed[q] / B);
        for (int32_t i = 0; i < full && s == QN_OK; i++)
            if (!c->hashed[c->seq_table[(size_t)q * MB + i]])
                s = qn_fail(QN_ERR_INTERNAL, "kv check: sequence %d block %d computed, no hash", q,
                            i);
    }
    if (s == QN_OK && active != c->n_active)
        s = qn_fail(QN_ERR_INTERNAL, "kv check: %d active sequences, counter says %d", active,
                    c->n_active);
    int32_t used = 0, indexed = 0;
    for (int32_t b = 0; b < N && s == QN_OK; b++) {
        if (c->ref[b] < 0)
            s = qn_fail(QN_ERR_INTERNAL, "kv check: block %d ref %d", b, c->ref[b]);
        else if (c->ref[b] != count[b])
            s = qn_fail(QN_ERR_INTERNAL, "kv check: block %d ref %d but in %d tables", b, c->ref[b],
                        count[b]);
        else if ((c->ref[b] > 0) != (c->state[b] == QN_KV_BLOCK_USED))
            s = qn_fail(QN_ERR_INTERNAL, "kv check: block %d ref %d state %d", b, c->ref[b],
                        c->state[b]);
        else if (c->state[b] == QN_KV_BLOCK_CACHED && !c->indexed[b])
            s = qn_fail(QN_ERR_INTERNAL, "kv check: cached block %d not indexed", b);
        else if (c->indexed[b] && !c->hashed[b])
            s = qn_fail(QN_ERR_INTERNAL, "kv check: indexed block %d has no hash", b);
        else if (c->indexed[b]) {
            int32_t slot = ix_find_slot(c, c->hash[b]);
            if (slot < 0 || c->ix_val[slot] != b)
                s = qn_fail(QN_ERR_INTERNAL, "kv check: indexed block %d missing from index", b);
        }
        used += c->state[b] == QN_KV_BLOCK_USED;
        indexed += c->indexed[b];
    }
    free(count);
    QN_CHECK(s);
    if (used + c->free_list.count + c->lru.count != N)
        return qn_fail(QN_ERR_INTERNAL, "kv check: used %d + free %d + cached %d != %d blocks",
                       used, c->free_list.count, c->lru.count, N);
    int32_t entries = 0;
    for (uint32_t i = 0; i <= c->ix_mask; i++)
        entries += c->ix_val[i] != KV_EMPTY;
    if (entries != indexed)
        return qn_fail(QN_ERR_INTERNAL, "kv check: index has %d entries, %d blocks indexed",
                       entries, indexed);
    return QN_OK;
}

/* ---- snapshot ------------------------------------------------------------------------- */

typedef struct snap {
    uint8_t *buf;
    size_t cap, len;
} snap;

static void snap_put(snap *s, const void *p, size_t n) {
    if (s->buf && s->len + n <= s->cap) memcpy(s->buf + s->len, p, n);
    s->len += n;
}

size_t qn_kv_cache_snapshot(const qn_kv_cache *c, void *buf, size_t cap) {
    snap s = {NULL, cap, 0};
    /* size first, then write only when it fits, so a short buffer is never half written */
    for (int pass = 0; pass < 2; pass++) {
        s.len = 0;
        size_t N = (size_t)c->p.n_blocks, S = (size_t)c->p.max_seqs;
        snap_put(&s, &c->p, sizeof c->p);
        snap_put(&s, c->ref, N * sizeof *c->ref);
        snap_put(&s, c->state, N);
        snap_put(&s, c->hashed, N);
        snap_put(&s, c->indexed, N);
        snap_put(&s, c->hash, N * sizeof *c->hash);
        snap_put(&s, c->parent, N * sizeof *c->parent);
        snap_put(&s, c->tokens, N * (size_t)c->p.block_size * sizeof *c->tokens);
        snap_put(&s, c->prev, N * sizeof *c->prev);
        snap_put(&s, c->next, N * sizeof *c->next);
        snap_put(&s, &c->free_list, sizeof c->free_list);
        snap_put(&s, &c->lru, sizeof c->lru);
        snap_put(&s, c->ix_key, ((size_t)c->ix_mask + 1) * sizeof *c->ix_key);
        snap_put(&s, c->ix_val, ((size_t)c->ix_mask + 1) * sizeof *c->ix_val);
        snap_put(&s, c->seq_active, S);
        snap_put(&s, c->seq_computed, S * sizeof *c->seq_computed);
        snap_put(&s, c->seq_nblocks, S * sizeof *c->seq_nblocks);
        snap_put(&s, c->seq_table, S * (size_t)c->p.max_blocks_per_seq * sizeof *c->seq_table);
        snap_put(&s, &c->n_active, sizeof c->n_active);
        snap_put(&s, &c->st, sizeof c->st);
        snap_put(&s, &c->version, sizeof c->version);
        snap_put(&s, c->seq_root, S * sizeof *c->seq_root);
        snap_put(&s, &c->root, sizeof c->root);
        if (c->mem)
            snap_put(&s, c->mem, N * c->slab_floats * 2 * (size_t)c->p.n_layers * sizeof(float));
        if (pass == 0) {
            if (!buf || s.len > cap) return s.len;
            s.buf = buf;
        }
    }
    return s.len;
}
