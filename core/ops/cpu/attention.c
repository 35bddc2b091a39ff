/* attention.c — causal GQA self-attention over a packed batch.
 *
 * Each (sequence, query head, block of BQ query rows) is one task: the
 * scores of the block against all earlier keys of its sequence are one
 * sgemm into a per-thread [BQ, L] buffer, softmaxed row by row, and
 * multiplied into V with a second sgemm. Only lse [T, NH] is kept for the
 * backward, which recomputes the scores block by block (flash-attention's
 * recomputation, with blocks over queries only: memory is BQ x the longest
 * sequence per thread, proportional to tokens, never [T, T]).
 *
 * Performance: when there are at least as many tasks as threads, tasks run
 * in an OpenMP loop, each product on its task's thread; otherwise tasks run
 * one after another and qn_sgemm splits each product over the threads. The backward's tasks are
 * (sequence, kv head) so that the dk/dv rows a task accumulates belong to it alone (no atomics, no
 * per-head dk copies). Left out: key blocking (the whole causal prefix of a block is scored at
 * once), sliding windows, attention sinks.
 */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "core/ops/cpu/ops.h"

enum { BQ = 64 };

static int max_seqlen(const int32_t *cu, int S) {
    int m = 0;
    for (int s = 0; s < S; s++) {
        int l = cu[s + 1] - cu[s];
        if (l > m) m = l;
    }
    return m;
}

static int thread_slots(void) {
    int n = omp_get_max_threads();
    return n > 0 ? n : 1;
}

size_t qn_attention_scratch_floats(const int32_t *cu_seqlens, int S, int T, int NH, int NKV,
                                   int HD) {
    (void)T, (void)NH, (void)NKV, (void)HD;
    int L = max_seqlen(cu_seqlens, S);
    int bq = L < BQ ? L : BQ;
    /* per thread: scores/probabilities and dP, each [bq, L] */
    return (size_t)thread_slots() * 2 * (size_t)bq * (size_t)L;
}

/* Runs f over ntasks: in an OpenMP loop when that fills the cores, else
 * one after another (qn_sgemm then threads each product). */
typedef void (*task_fn)(int task, int slot, void *ctx);
static void run_tasks(int ntasks, task_fn f, void *ctx) {
    int nt = thread_slots();
    if (nt > 1 && ntasks >= nt) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
        for (int i = 0; i < ntasks; i++)
            f(i, omp_get_thread_num(), ctx);
    } else {
        for (int i = 0; i < ntasks; i++)
            f(i, 0, ctx);
    }
}

typedef struct att_ctx {
    float *out, *lse;
    const float *q, *k, *v;
    const int32_t *cu;
    int S, NH, NKV, HD, L;
    float scale;
    float *scratch;
    /* backward */
    float *dq, *dk, *dv;
    const float *dout, *o;
    /* task index -> (seq, head, block) for the forward */
    int nblk_total;
} att_ctx;

/* Forward task list: for each sequence, for each head, its query blocks. */
static void fwd_task_decode(const att_ctx *c, int task, int *s_out, int *h_out, int *b_out) {
    int acc = 0;
    for (int s = 0; s < c->S; s++) {
        int len = c->cu[s + 1] - c->cu[s];
        int nb = (len + BQ - 1) / BQ;
        int n = nb * c->NH;
        if (task < acc + n) {
            int r = task - acc;
            *s_out = s;
            *h_out = r / nb;
            *b_out = r % nb;
            return;
        }
        acc += n;
    }
    *s_out = -1;
}

/* Scores of query rows [i0, i0+bq) of head h against keys [0, kend) of the
 * same sequence (rows relative to sequence start t0), scaled; masked
 * entries set to 0 after softmax. Returns P in sbuf [bq, kend]. */
static void block_probs(const att_ctx *c, int t0, int h, int i0, int bq, int kend, float *sbuf,
                        float *lse_out /* may be NULL: then use saved lse */) {
    int g = h / (c->NH / c->NKV);
    int ldq = c->NH * c->HD, ldk = c->NKV * c->HD;
    const float *Q = c->q + (size_t)(t0 + i0) * ldq + (size_t)h * c->HD;
    const float *Kp = c->k + (size_t)t0 * ldk + (size_t)g * c->HD;
    qn_sgemm(0, 1, bq, kend, c->HD, c->scale, Q, ldq, Kp, ldk, 0.0f, sbuf, kend);
    for (int r = 0; r < bq; r++) {
        float *row = sbuf + (size_t)r * kend;
        int nvalid = i0 + r + 1; /* keys 0 .. i0+r */
        float l;
        if (lse_out) {
            float m = -INFINITY;
            for (int j = 0; j < nvalid; j++)
                m = row[j] > m ? row[j] : m;
            double sum = 0.0;
            for (int j = 0; j < nvalid; j++) {
                float e = expf(row[j] - m);
                row[j] = e;
                sum += e;
            }
            l = m + (float)log(sum);
            float inv = (float)(1.0 / sum);
            for (int j = 0; j < nvalid; j++)
                row[j] *= inv;
            lse_out[(size_t)(t0 + i0 + r) * c->NH + h] = l;
        } else {
            l = c->lse[(size_t)(t0 + i0 + r) * c->NH + h];
            for (int j = 0; j < nvalid; j++)
                row[j] = expf(row[j] - l);
        }
        for (int j = nvalid; j < kend; j++)
            row[j] = 0.0f;
    }
}

static void fwd_task(int task, int slot, void *vctx) {
    att_ctx *c = vctx;
    int s, h, b;
    fwd_task_decode(c, task, &s, &h, &b);
    if (s < 0) return;
    int t0 = c->cu[s], len = c->cu[s + 1] - t0;
    int i0 = b * BQ, bq = len - i0 < BQ ? len - i0 : BQ;
    int kend = i0 + bq;
    int bqmax = c->L < BQ ? c->L : BQ;
    float *sbuf = c->scratch + (size_t)slot * 2 * bqmax * c->L;
    block_probs(c, t0, h, i0, bq, kend, sbuf, c->lse);
    int g = h / (c->NH / c->NKV);
    int ldo = c->NH * c->HD, ldv = c->NKV * c->HD;
    const float *Vp = c->v + (size_t)t0 * ldv + (size_t)g * c->HD;
    float *O = c->out + (size_t)(t0 + i0) * ldo + (size_t)h * c->HD;
    qn_sgemm(0, 0, bq, c->HD, kend, 1.0f, sbuf, kend, Vp, ldv, 0.0f, O, ldo);
}

void qn_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                          const int32_t *cu_seqlens, int S, int T, int NH, int NKV, int HD,
                          float *scratch) {
    if (T <= 0) return;
    att_ctx c = {.out = out,
                 .lse = lse,
                 .q = q,
                 .k = k,
                 .v = v,
                 .cu = cu_seqlens,
                 .S = S,
                 .NH = NH,
                 .NKV = NKV,
                 .HD = HD,
                 .L = max_seqlen(cu_seqlens, S),
                 .scale = (float)(1.0 / sqrt((double)HD)),
                 .scratch = scratch};
    int ntasks = 0;
    for (int s = 0; s < S; s++)
        ntasks += ((cu_seqlens[s + 1] - cu_seqlens[s] + BQ - 1) / BQ) * NH;
    run_tasks(ntasks, fwd_task, &c);
}

static void bwd_task(int task, int slot, void *vctx) {
    att_ctx *c = vctx;
    int s = task / c->NKV, g = task % c->NKV;
    int t0 = c->cu[s], len = c->cu[s + 1] - t0;
    int rep = c->NH / c->NKV, HD = c->HD;
    int ldq = c->NH * HD, ldk = c->NKV * HD;
    int bqmax = c->L < BQ ? c->L : BQ;
    float *P = c->scratch + (size_t)slot * 2 * bqmax * c->L;
    float *dP = P + (size_t)bqmax * c->L;
    float *dK = c->dk + (size_t)t0 * ldk + (size_t)g * HD;
    float *dV = c->dv + (size_t)t0 * ldk + (size_t)g * HD;
    const float *Kp = c->k + (size_t)t0 * ldk + (size_t)g * HD;
    const float *Vp = c->v + (size_t)t0 * ldk + (size_t)g * HD;
    for (int i = 0; i < len; i++) {
        memset(dK + (size_t)i * ldk, 0, (size_t)HD * sizeof(float));
        memset(dV + (size_t)i * ldk, 0, (size_t)HD * sizeof(float));
    }
    for (int h = g * rep; h < (g + 1) * rep; h++) {
        for (int i0 = 0; i0 < len; i0 += BQ) {
            int bq = len - i0 < BQ ? len - i0 : BQ;
            int kend = i0 + bq;
            const float *Q = c->q + (size_t)(t0 + i0) * ldq + (size_t)h * HD;
            const float *dO = c->dout + (size_t)(t0 + i0) * ldq + (size_t)h * HD;
            const float *O = c->o + (size_t)(t0 + i0) * ldq + (size_t)h * HD;
            float *dQ = c->dq + (size_t)(t0 + i0) * ldq + (size_t)h * HD;
            block_probs(c, t0, h, i0, bq, kend, P, NULL);
            /* dP = dO V^T */
            qn_sgemm(0, 1, bq, kend, HD, 1.0f, dO, ldq, Vp, ldk, 0.0f, dP, kend);
            /* dS = P (dP - rowsum(dO * O)); masked P entries are 0 */
            for (int r = 0; r < bq; r++) {
                const float *dor = dO + (size_t)r * ldq, * or = O + (size_t)r * ldq;
                double di = 0.0;
                for (int d = 0; d < HD; d++)
                    di += (double)dor[d] * or [d];
                float dif = (float)di;
                float *pr = P + (size_t)r * kend, *dpr = dP + (size_t)r * kend;
                int nvalid = i0 + r + 1;
                for (int j = 0; j < nvalid; j++)
                    dpr[j] = pr[j] * (dpr[j] - dif);
                for (int j = nvalid; j < kend; j++)
                    dpr[j] = 0.0f;
            }
            /* dV += P^T dO; dQ = scale dS K; dK += scale dS^T Q */
            qn_sgemm(1, 0, kend, HD, bq, 1.0f, P, kend, dO, ldq, 1.0f, dV, ldk);
            qn_sgemm(0, 0, bq, HD, kend, c->scale, dP, kend, Kp, ldk, 0.0f, dQ, ldq);
            qn_sgemm(1, 0, kend, HD, bq, c->scale, dP, kend, Q, ldq, 1.0f, dK, ldk);
        }
    }
}

void qn_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                           const float *k, const float *v, const float *out, const float *lse,
                           const int32_t *cu_seqlens, int S, int T, int NH, int NKV, int HD,
                           float *scratch) {
    if (T <= 0) return;
    att_ctx c = {.lse = (float *)lse,
                 .q = q,
                 .k = k,
                 .v = v,
                 .cu = cu_seqlens,
                 .S = S,
                 .NH = NH,
                 .NKV = NKV,
                 .HD = HD,
                 .L = max_seqlen(cu_seqlens, S),
                 .scale = (float)(1.0 / sqrt((double)HD)),
                 .scratch = scratch,
                 .dq = dq,
                 .dk = dk,
                 .dv = dv,
                 .dout = dout,
                 .o = out};
    run_tasks(S * NKV, bwd_task, &c);
}
