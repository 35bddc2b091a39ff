/* packing.c — step / data-parallel / micro-batch planning (see packing.h).
 *
 * Karmarkar–Karp (largest differencing, k-way): start with one partial
 * partition per item (the item alone in part 0, the other parts empty), each
 * kept sorted by part sum, descending. Repeatedly take the two partial
 * partitions with the largest spread (max - min part sum) and merge them by
 * pairing A's heaviest part with B's lightest, and so on; the spread of the
 * result is what is left of the two differences. One partial partition
 * remains. Parts are item lists linked through next[] so a merge is O(k).
 * Leaves out: the complete (exponential) KK search. */
#include "trainer/packing.h"

#include <stdlib.h>
#include <string.h>

typedef struct kk_part {
    int64_t sum, head, tail;
} kk_part;

typedef struct kk_ctx {
    kk_part *parts; /* n states x k parts */
    int64_t k;
    int64_t *heap, heap_n; /* state ids, max-heap on spread */
} kk_ctx;

static int64_t kk_spread(const kk_ctx *c, int64_t s) {
    const kk_part *p = c->parts + s * c->k;
    return p[0].sum - p[c->k - 1].sum;
}

static int kk_before(const kk_ctx *c, int64_t a, int64_t b) { /* a pops before b */
    int64_t sa = kk_spread(c, a), sb = kk_spread(c, b);
    return sa != sb ? sa > sb : a < b;
}

static void kk_push(kk_ctx *c, int64_t s) {
    int64_t i = c->heap_n++;
    c->heap[i] = s;
    while (i > 0) {
        int64_t p = (i - 1) / 2;
        if (!kk_before(c, c->heap[i], c->heap[p])) break;
        int64_t t = c->heap[i];
        c->heap[i] = c->heap[p], c->heap[p] = t, i = p;
    }
}

static int64_t kk_pop(kk_ctx *c) {
    int64_t top = c->heap[0];
    c->heap[0] = c->heap[--c->heap_n];
    for (int64_t i = 0;;) {
        int64_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < c->heap_n && kk_before(c, c->heap[l], c->heap[m])) m = l;
        if (r < c->heap_n && kk_before(c, c->heap[r], c->heap[m])) m = r;
        if (m == i) break;
        int64_t t = c->heap[i];
        c->heap[i] = c->heap[m], c->heap[m] = t, i = m;
    }
    return top;
}

qn_status qn_pack_kk(const int64_t *w, int64_t n, int64_t k, int64_t *part) {
    if (k < 1) return qn_fail(QN_ERR_INVALID, "karmarkar-karp: %lld parts", (long long)k);
    if (n == 0) return QN_OK;
    kk_ctx c = {.k = k};
    c.parts = calloc((size_t)(n * k), sizeof *c.parts);
    c.heap = malloc((size_t)n * sizeof *c.heap);
    int64_t *next = malloc((size_t)n * sizeof *next);
    kk_part *tmp = malloc((size_t)k * sizeof *tmp);
    if (!c.parts || !c.heap || !next || !tmp) {
        free(c.parts), free(c.heap), free(next), free(tmp);
        return qn_fail(QN_ERR_NOMEM, "karmarkar-karp: %lld items x %lld parts", (long long)n,
                       (long long)k);
    }
    for (int64_t i = 0; i < n; i++) {
        kk_part *p = c.parts + i * k;
        p[0] = (kk_part){w[i], i, i};
        for (int64_t j = 1; j < k; j++) p[j] = (kk_part){0, -1, -1};
        next[i] = -1;
        kk_push(&c, i);
    }
    while (c.heap_n > 1) {
        int64_t a = kk_pop(&c), b = kk_pop(&c);
        kk_part *pa = c.parts + a * k, *pb = c.parts + b * k;
        for (int64_t j = 0; j < k; j++) {
            kk_part x = pa[j], y = pb[k - 1 - j];
            kk_part z = {x.sum + y.sum, x.head, x.tail};
            if (x.head < 0) {
                z.head = y.head, z.tail = y.tail;
            } else if (y.head >= 0) {
                next[x.tail] = y.head;
                z.tail = y.tail;
            }
            /* insertion into tmp, descending by sum (stable) */
            int64_t q = j;
            while (q > 0 && tmp[q - 1].sum < z.sum) tmp[q] = tmp[q - 1], q--;
            tmp[q] = z;
        }
        memcpy(pa, tmp, (size_t)k * sizeof *tmp);
        kk_push(&c, a);
    }
    const kk_part *fin = c.parts + c.heap[0] * k;
    for (int64_t j = 0; j < k; j++)
        for (int64_t it = fin[j].head; it >= 0; it = next[it]) part[it] = j;
    free(c.parts), free(c.heap), free(next), free(tmp);
    return QN_OK;
}

typedef struct wi {
    int64_t w, i;
} wi;

static int cmp_wi_desc(const void *a, const void *b) {
    const wi *x = a, *y = b;
    if (x->w != y->w) return x->w > y->w ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

qn_status qn_pack_ffd(const int64_t *w, int64_t n, int64_t cap, int64_t *bin, int64_t *n_bins) {
    *n_bins = 0;
    if (n == 0) return QN_OK;
    wi *o = malloc((size_t)n * sizeof *o);
    int64_t *load = malloc((size_t)n * sizeof *load);
    if (!o || !load) {
        free(o), free(load);
        return qn_fail(QN_ERR_NOMEM, "first-fit decreasing: %lld items", (long long)n);
    }
    for (int64_t i = 0; i < n; i++) o[i] = (wi){w[i], i};
    qsort(o, (size_t)n, sizeof *o, cmp_wi_desc);
    int64_t nb = 0;
    for (int64_t q = 0; q < n; q++) {
        int64_t b = 0;
        while (b < nb && load[b] + o[q].w > cap) b++;
        if (b == nb) load[nb++] = 0;
        load[b] += o[q].w;
        bin[o[q].i] = b;
    }
    *n_bins = nb;
    free(o), free(load);
    return QN_OK;
}

void qn_pack_plan_free(qn_pack_plan *p) {
    if (!p) return;
    free(p->n_micro), free(p->mb_start), free(p->mb_off), free(p->sample_idx), free(p->mb_tokens);
    memset(p, 0, sizeof *p);
}

static qn_status resolve_steps(const qn_pack_cfg *c, int64_t n, int64_t *gbs, int64_t *steps) {
    *gbs = c->global_batch_size, *steps = c->num_steps_per_rollout;
    if (*gbs < 0 || *steps < 0)
        return qn_fail(QN_ERR_RANGE, "--global-batch-size and --num-steps-per-rollout must be >= 0");
    if (n <= 0) return qn_fail(QN_ERR_INVALID, "packing: the rollout has no samples");
    if (*gbs == 0 && *steps == 0) *steps = 1; /* neither given: one step per rollout */
    if (*gbs == 0) {
        if (n % *steps)
            return qn_fail(QN_ERR_INVALID,
                           "--num-steps-per-rollout %lld does not divide the %lld samples of a "
                           "rollout", (long long)*steps, (long long)n);
        *gbs = n / *steps;
    } else if (*steps == 0) {
        if (n % *gbs)
            return qn_fail(QN_ERR_INVALID,
                           "--global-batch-size %lld does not divide the %lld samples of a rollout",
                           (long long)*gbs, (long long)n);
        *steps = n / *gbs;
    } else if (*gbs * *steps != n) {
        return qn_fail(QN_ERR_INVALID,
                       "--global-batch-size %lld x --num-steps-per-rollout %lld != %lld samples "
                       "per rollout", (long long)*gbs, (long long)*steps, (long long)n);
    }
    return QN_OK;
}

/* Appends one micro-batch holding the listed samples (sorted ascending). */
static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct plan_builder {
    qn_pack_plan *p;
    int64_t n_mb, n_idx, cap_mb;
    const int64_t *len;
} plan_builder;

static qn_status pb_add(plan_builder *b, const int64_t *samples, int64_t m) {
    qn_pack_plan *p = b->p;
    if (b->n_mb + 1 >= b->cap_mb) {
        int64_t nc = b->cap_mb * 2 + 16;
        int64_t *o = realloc(p->mb_off, (size_t)(nc + 1) * sizeof *o);
        if (!o) return qn_fail(QN_ERR_NOMEM, "packing plan");
        p->mb_off = o;
        int64_t *t = realloc(p->mb_tokens, (size_t)nc * sizeof *t);
        if (!t) return qn_fail(QN_ERR_NOMEM, "packing plan");
        p->mb_tokens = t;
        b->cap_mb = nc;
    }
    int64_t tok = 0;
    for (int64_t q = 0; q < m; q++) {
        p->sample_idx[b->n_idx + q] = samples[q];
        tok += b->len[samples[q]];
    }
    qsort(p->sample_idx + b->n_idx, (size_t)m, sizeof(int64_t), cmp_i64);
    p->mb_off[b->n_mb] = b->n_idx;
    p->mb_tokens[b->n_mb] = tok;
    b->n_idx += m;
    b->n_mb++;
    p->mb_off[b->n_mb] = b->n_idx;
    return QN_OK;
}

/* Lays out one rank's samples (ids[0..m)) as exactly M micro-batches. */
static qn_status pack_rank(plan_builder *b, const int64_t *ids, int64_t m, int64_t M,
                           int64_t cap, int64_t *w, int64_t *part, int64_t *buf) {
    for (int64_t q = 0; q < m; q++) w[q] = b->len[ids[q]];
    QN_CHECK(qn_pack_kk(w, m, M, part));
    bool ok = true;
    for (int64_t j = 0; j < M && ok; j++) {
        int64_t tok = 0, cnt = 0;
        for (int64_t q = 0; q < m; q++)
            if (part[q] == j) tok += w[q], cnt++;
        if (tok > cap && cnt > 1) ok = false;
    }
    if (!ok) { /* fall back to first-fit decreasing, which fits in <= M bins */
        int64_t nb;
        QN_CHECK(qn_pack_ffd(w, m, cap, part, &nb));
    }
    for (int64_t j = 0; j < M; j++) {
        int64_t cnt = 0;
        for (int64_t q = 0; q < m; q++)
            if (part[q] == j) buf[cnt++] = ids[q];
        QN_CHECK(pb_add(b, buf, cnt));
    }
    return QN_OK;
}

qn_status qn_pack_plan_build(const qn_pack_cfg *cfg, const int64_t *len, int64_t n,
                             qn_pack_plan *plan) {
    memset(plan, 0, sizeof *plan);
    int64_t gbs, steps;
    QN_CHECK(resolve_steps(cfg, n, &gbs, &steps));
    const int64_t dp = cfg->dp_size;
    if (dp < 1) return qn_fail(QN_ERR_RANGE, "packing: data-parallel size %lld", (long long)dp);
    if (cfg->dynamic && cfg->max_tokens_per_gpu < 1)
        return qn_fail(QN_ERR_RANGE, "--max-tokens-per-gpu must be >= 1 with "
                                     "--use-dynamic-batch-size");
    if (!cfg->dynamic && cfg->micro_batch_size < 1)
        return qn_fail(QN_ERR_RANGE, "--micro-batch-size must be >= 1");
    if (!cfg->dynamic && gbs % dp)
        return qn_fail(QN_ERR_INVALID,
                       "--global-batch-size %lld is not a multiple of the %lld data-parallel "
                       "ranks (static micro-batches need equal shares)", (long long)gbs,
                       (long long)dp);
    for (int64_t i = 0; i < n; i++)
        if (len[i] < 0)
            return qn_fail(QN_ERR_RANGE, "packing: sample %lld has length %lld", (long long)i,
                           (long long)len[i]);
    plan->n_steps = steps, plan->dp_size = dp, plan->global_batch_size = gbs;
    plan->n_micro = calloc((size_t)steps, sizeof(int64_t));
    plan->mb_start = calloc((size_t)steps + 1, sizeof(int64_t));
    plan->sample_idx = malloc((size_t)n * sizeof(int64_t));
    int64_t *scratch = malloc((size_t)(gbs * 5 + dp) * sizeof(int64_t)); /* rank_n: dp */
    plan_builder b = {.p = plan, .len = len};
    qn_status st = QN_OK;
    if (!plan->n_micro || !plan->mb_start || !plan->sample_idx || !scratch) {
        st = qn_fail(QN_ERR_NOMEM, "packing plan for %lld samples", (long long)n);
        goto done;
    }
    int64_t *rank_of = scratch, *ids = scratch + gbs, *w = scratch + 2 * gbs,
            *part = scratch + 3 * gbs, *buf = scratch + 4 * gbs, *rank_n = scratch + 5 * gbs;
    for (int64_t s = 0; s < steps; s++) {
        const int64_t base = s * gbs;
        plan->mb_start[s] = b.n_mb;
        if (!cfg->dynamic) {
            const int64_t per = gbs / dp, mbs = cfg->micro_batch_size;
            const int64_t M = (per + mbs - 1) / mbs;
            plan->n_micro[s] = M;
            for (int64_t r = 0; r < dp; r++)
                for (int64_t j = 0; j < M; j++) {
                    int64_t lo = j * mbs, hi = lo + mbs < per ? lo + mbs : per, cnt = 0;
                    for (int64_t q = lo; q < hi; q++) buf[cnt++] = base + r * per + q;
                    QN_CHECK_GOTO(pb_add(&b, buf, cnt), st, done);
                }
            continue;
        }
        const int64_t cap = cfg->max_tokens_per_gpu;
        QN_CHECK_GOTO(qn_pack_kk(len + base, gbs, dp, rank_of), st, done);
        /* ids grouped by rank, ascending sample index within a rank */
        int64_t M = 1, off = 0;
        for (int64_t r = 0; r < dp; r++) {
            int64_t m = 0;
            for (int64_t q = 0; q < gbs; q++)
                if (rank_of[q] == r) ids[off + m++] = base + q;
            rank_n[r] = m;
            for (int64_t q = 0; q < m; q++) w[q] = len[ids[off + q]];
            int64_t nb;
            QN_CHECK_GOTO(qn_pack_ffd(w, m, cap, part, &nb), st, done);
            if (nb > M) M = nb;
            off += m;
        }
        plan->n_micro[s] = M;
        off = 0;
        for (int64_t r = 0; r < dp; r++) {
            QN_CHECK_GOTO(pack_rank(&b, ids + off, rank_n[r], M, cap, w, part, buf), st, done);
            off += rank_n[r];
        }
    }
    plan->mb_start[steps] = b.n_mb;
    if (b.n_mb == 0 && !plan->mb_off) { /* cannot happen: n > 0 gives >= 1 micro-batch */
        st = qn_fail(QN_ERR_INTERNAL, "packing: empty plan");
    }
done:
    free(scratch);
    if (st != QN_OK) qn_pack_plan_free(plan);
    return st;
}
