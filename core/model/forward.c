/* forward.c — forward and backward of the decoder over a packed batch, CPU fp32.
 *
 * Per layer: x += o_proj(attn(rope(qk_norm(qkv(rmsnorm(x)))))); x += mlp(rmsnorm(x))
 * with a dense SwiGLU MLP or a MoE block (router, group-limited top-k,
 * routed experts, shared experts). The head computes, only at the requested
 * rows, log-prob of the target and entropy of softmax(logits / temperature),
 * chunked over the vocabulary (QN_VCHUNK columns, QN_RBLOCK rows at a time),
 * so no [T, V] buffer exists.
 *
 * Every activation that backward needs is kept in the workspace, which is
 * sized once for max_tokens/max_rows; forward and backward allocate nothing.
 * GEMMs go to OpenBLAS (single-threaded, one block per OpenMP thread: see
 * gemm()); attention, norms, RoPE and routing are loops parallelised with
 * OpenMP. The number of threads is OpenMP's (OMP_NUM_THREADS).
 *
 * Leaves out: KV cache / decoding (rollout), bf16 compute, MTP layers,
 * dropout, rope_scaling.
 */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/model/model.h"

#define QN_VCHUNK 2048
#define QN_RBLOCK 256
#define QN_QBLOCK 64
/* Elementwise loops below this many elements run on one thread: a parallel
 * region costs a barrier, which is expensive on a loaded machine. */
#define QN_PAR_MIN 65536

typedef struct layer_ws {
    float *x_in;          /* [T,H] residual stream entering the layer */
    float *h1, *rstd1;    /* [T,H], [T] */
    float *q_raw, *k_raw; /* [T,QD], [T,KD] after bias, before QK-norm (qk_norm only) */
    float *qn_rstd, *kn_rstd; /* [T*NH], [T*NKV] */
    float *q, *k, *v;     /* [T,QD], [T,KD], [T,KD] as used by attention */
    float *att, *lse;     /* [T,QD], [T*NH] */
    float *x_mid;         /* [T,H] after the attention residual */
    float *h2, *rstd2;    /* [T,H], [T] */
    float *g, *u;         /* dense: [T,NI] each; MoE shared experts: [T,SHI] */
    /* MoE */
    float *scores;        /* [T,E] sigmoid/softmax of router logits */
    int32_t *sel;         /* [T,K] chosen experts */
    float *wts;           /* [T,K] gate weights applied to expert outputs */
    int32_t *a_tok;       /* [T*K] token of each assignment, sorted by expert */
    int32_t *a_slot;      /* [T*K] slot k of each assignment */
    int64_t *e_off;       /* [E+1] */
    float *eg, *eu, *ey;  /* [T*K,MI], [T*K,MI], [T*K,H] */
} layer_ws;

struct qn_model_ws {
    int64_t max_tokens, max_rows;
    size_t bytes;
    char *arena;
    layer_ws *layers;
    int32_t *pos;              /* [T] */
    float *rope_cos, *rope_sin; /* [T, rot/2] */
    float *x_fin, *hf, *rstdf; /* [T,H], [T,H], [T] */
    float *row_lse, *row_ent;  /* [R] of the temperature-scaled distribution */
    float temperature;
    /* scratch */
    float *dx, *dh, *dtmp;     /* [T,H] */
    float *dq, *dk, *dv, *datt; /* [T,QD], [T,KD], [T,KD], [T,QD] */
    float *dg, *du;            /* [T*max(NI, K*MI, SHI)] */
    float *xg, *dxg, *dxe;     /* [T*K,H] gathered expert inputs, dY, grads of inputs */
    float *dscore;             /* [T,E] */
    float *dwts;               /* [T*K] */
    float *dkr;                /* [T,KD] */
    float *hrows, *dhrows;     /* [RBLOCK,H] */
    float *logits;             /* [RBLOCK,VCHUNK] */
    float *att_scratch;        /* [threads, 2, QBLOCK, max_tokens] */
    int n_threads;
};

/* ---------- arena ---------- */

typedef struct planner {
    char *base;
    size_t off;
} planner;

static void *take(planner *p, size_t bytes) {
    size_t off = (p->off + 63) & ~(size_t)63;
    p->off = off + bytes;
    return p->base ? p->base + off : NULL;
}
#define TAKEF(p, n) ((float *)take((p), (size_t)(n) * sizeof(float)))

static void plan(planner *pl, qn_model_ws *ws, const qn_model *m) {
    const qn_model_desc *d = &m->d;
    int64_t T = ws->max_tokens, R = ws->max_rows, H = d->hidden;
    int64_t QD = d->n_heads * d->head_dim, KD = d->n_kv_heads * d->head_dim;
    int64_t TK = T * (d->top_k > 0 ? d->top_k : 1), SHI = d->moe_intermediate * d->n_shared_experts;
    int64_t wmax = d->intermediate;
    if (d->router != QN_ROUTER_NONE) {
        if (d->moe_intermediate * d->top_k > wmax) wmax = d->moe_intermediate * d->top_k;
        if (SHI > wmax) wmax = SHI;
    }
    for (int64_t l = 0; l < d->n_layers; l++) {
        layer_ws *L = &ws->layers[l];
        int moe = qn_model_layer_is_moe(d, l);
        memset(L, 0, sizeof *L);
        L->x_in = TAKEF(pl, T * H);
        L->h1 = TAKEF(pl, T * H);
        L->rstd1 = TAKEF(pl, T);
        if (d->qk_norm) {
            L->q_raw = TAKEF(pl, T * QD);
            L->k_raw = TAKEF(pl, T * KD);
            L->qn_rstd = TAKEF(pl, T * d->n_heads);
            L->kn_rstd = TAKEF(pl, T * d->n_kv_heads);
        }
        L->q = TAKEF(pl, T * QD);
        L->k = TAKEF(pl, T * KD);
        L->v = TAKEF(pl, T * KD);
        L->att = TAKEF(pl, T * QD);
        L->lse = TAKEF(pl, T * d->n_heads);
        L->x_mid = TAKEF(pl, T * H);
        L->h2 = TAKEF(pl, T * H);
        L->rstd2 = TAKEF(pl, T);
        if (!moe) {
            L->g = TAKEF(pl, T * d->intermediate);
            L->u = TAKEF(pl, T * d->intermediate);
        } else {
            if (SHI > 0) {
                L->g = TAKEF(pl, T * SHI);
                L->u = TAKEF(pl, T * SHI);
            }
            L->scores = TAKEF(pl, T * d->n_experts);
            L->sel = take(pl, (size_t)TK * sizeof(int32_t));
            L->wts = TAKEF(pl, TK);
            L->a_tok = take(pl, (size_t)TK * sizeof(int32_t));
            L->a_slot = take(pl, (size_t)TK * sizeof(int32_t));
            L->e_off = take(pl, (size_t)(d->n_experts + 1) * sizeof(int64_t));
            L->eg = TAKEF(pl, TK * d->moe_intermediate);
            L->eu = TAKEF(pl, TK * d->moe_intermediate);
            L->ey = TAKEF(pl, TK * H);
        }
    }
    ws->pos = take(pl, (size_t)T * sizeof(int32_t));
    ws->rope_cos = TAKEF(pl, T * d->rot_dim / 2);
    ws->rope_sin = TAKEF(pl, T * d->rot_dim / 2);
    ws->x_fin = TAKEF(pl, T * H);
    ws->hf = TAKEF(pl, T * H);
    ws->rstdf = TAKEF(pl, T);
    ws->row_lse = TAKEF(pl, R);
    ws->row_ent = TAKEF(pl, R);
    ws->dx = TAKEF(pl, T * H);
    ws->dh = TAKEF(pl, T * H);
    ws->dtmp = TAKEF(pl, T * H);
    ws->dq = TAKEF(pl, T * QD);
    ws->dk = TAKEF(pl, T * KD);
    ws->dv = TAKEF(pl, T * KD);
    ws->datt = TAKEF(pl, T * QD);
    ws->dkr = TAKEF(pl, T * KD);
    ws->dg = TAKEF(pl, T * wmax);
    ws->du = TAKEF(pl, T * wmax);
    if (d->router != QN_ROUTER_NONE) {
        ws->xg = TAKEF(pl, TK * H);
        ws->dxg = TAKEF(pl, TK * H);
        ws->dxe = TAKEF(pl, TK * H);
        ws->dscore = TAKEF(pl, T * d->n_experts);
        ws->dwts = TAKEF(pl, TK);
    }
    ws->hrows = TAKEF(pl, (int64_t)QN_RBLOCK * H);
    ws->dhrows = TAKEF(pl, (int64_t)QN_RBLOCK * H);
    ws->logits = TAKEF(pl, (int64_t)QN_RBLOCK * QN_VCHUNK);
    ws->att_scratch = TAKEF(pl, (int64_t)ws->n_threads * 2 * QN_QBLOCK * T);
}

qn_status qn_model_ws_init(qn_model_ws **out, const qn_model *m, int64_t max_tokens,
                           int64_t max_rows) {
    *out = NULL;
    if (max_tokens < 1 || max_rows < 0 || max_rows > max_tokens)
        return qn_fail(QN_ERR_INVALID, "model workspace: bad sizes tokens=%lld rows=%lld",
                       (long long)max_tokens, (long long)max_rows);
    qn_model_ws *ws = calloc(1, sizeof *ws);
    if (!ws) return qn_fail(QN_ERR_NOMEM, "model workspace");
    ws->max_tokens = max_tokens;
    ws->max_rows = max_rows > 0 ? max_rows : 1;
    ws->n_threads = omp_get_max_threads();
    openblas_set_num_threads(1); /* see gemm() */
    ws->layers = calloc((size_t)m->d.n_layers, sizeof *ws->layers);
    if (!ws->layers) {
        free(ws);
        return qn_fail(QN_ERR_NOMEM, "model workspace");
    }
    planner pl = {NULL, 0};
    plan(&pl, ws, m);
    ws->bytes = pl.off + 64;
    ws->arena = aligned_alloc(64, (ws->bytes + 63) & ~(size_t)63);
    if (!ws->arena) {
        size_t b = ws->bytes;
        qn_model_ws_free(ws);
        return qn_fail(QN_ERR_NOMEM, "model workspace: cannot reserve %.1f MiB for %lld tokens",
                       (double)b / 1048576.0, (long long)max_tokens);
    }
    pl.base = ws->arena;
    pl.off = 0;
    plan(&pl, ws, m);
    *out = ws;
    return QN_OK;
}

void qn_model_ws_free(qn_model_ws *ws) {
    if (!ws) return;
    free(ws->arena);
    free(ws->layers);
    free(ws);
}

size_t qn_model_ws_bytes(const qn_model_ws *ws) { return ws ? ws->bytes : 0; }

/* ---------- GEMM helpers (row major) ---------- */

/* All parallelism is OpenMP: OpenBLAS runs single-threaded inside each
 * thread's block of a GEMM. Mixing OpenBLAS's own thread pool with OpenMP
 * regions made both pools spin against each other (60% of the time in
 * libgomp's wait loop on 2 cores). C's rows (or columns, when there are
 * few rows) are split between the threads. */
static void gemm(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M == 0 || N == 0) return;
    enum CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
    int nt = omp_get_max_threads();
    if (nt <= 1 || (double)M * (double)N * (double)K < 2e5 || omp_in_parallel()) {
        cblas_sgemm(CblasRowMajor, TA, TB, (int)M, (int)N, (int)K, 1.0f, A, (int)lda, B, (int)ldb,
                    beta, C, (int)ldc);
        return;
    }
    int split_m = M >= N || M >= 64 * (int64_t)nt;
#pragma omp parallel
    {
        int id = omp_get_thread_num(), n = omp_get_num_threads();
        int64_t D = split_m ? M : N;
        int64_t per = ((D + n - 1) / n + 7) & ~(int64_t)7;
        int64_t a = (int64_t)id * per, b = a + per < D ? a + per : D;
        if (a < b) {
            if (split_m) {
                const float *Ap = ta ? A + a : A + a * lda;
                cblas_sgemm(CblasRowMajor, TA, TB, (int)(b - a), (int)N, (int)K, 1.0f, Ap,
                            (int)lda, B, (int)ldb, beta, C + a * ldc, (int)ldc);
            } else {
                const float *Bp = tb ? B + a * ldb : B + a;
                cblas_sgemm(CblasRowMajor, TA, TB, (int)M, (int)(b - a), (int)K, 1.0f, A,
                            (int)lda, Bp, (int)ldb, beta, C + a, (int)ldc);
            }
        }
    }
}

/* C[M,N] (beta) += A[M,K] B[N,K]^T */
static void mm_nt(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                  int64_t ldb, float beta, float *C, int64_t ldc) {
    gemm(0, 1, M, N, K, A, lda, B, ldb, beta, C, ldc);
}
/* C[M,N] (beta) += A[M,K] B[K,N] */
static void mm_nn(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                  int64_t ldb, float beta, float *C, int64_t ldc) {
    gemm(0, 0, M, N, K, A, lda, B, ldb, beta, C, ldc);
}
/* C[M,N] += A[K,M]^T B[K,N] */
static void mm_tn_acc(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                      int64_t ldb, float *C, int64_t ldc) {
    if (K == 0) return;
    gemm(1, 0, M, N, K, A, lda, B, ldb, 1.0f, C, ldc);
}

/* y[T,O] = x[T,NI] W[O,NI]^T + b */
static void linear_fwd(int64_t T, int64_t NI, int64_t O, const float *x, const float *W,
                       const float *b, float *y) {
    mm_nt(T, O, NI, x, NI, W, NI, 0.0f, y, O);
    if (b) {
#pragma omp parallel for schedule(static) if (T * O >= QN_PAR_MIN)
        for (int64_t t = 0; t < T; t++)
            for (int64_t o = 0; o < O; o++) y[t * O + o] += b[o];
    }
}

/* dx (beta: 0 write, 1 add) = dy W; dW += dy^T x; db += colsum dy */
static void linear_bwd(int64_t T, int64_t NI, int64_t O, const float *x, const float *W,
                       const float *dy, float *dx, float beta, float *dW, float *db) {
    if (dx) mm_nn(T, NI, O, dy, O, W, NI, beta, dx, NI);
    mm_tn_acc(O, NI, T, dy, O, x, NI, dW, NI);
    if (db) {
        for (int64_t t = 0; t < T; t++)
            for (int64_t o = 0; o < O; o++) db[o] += dy[t * O + o];
    }
}

/* ---------- RMSNorm ---------- */

static void rmsnorm_fwd(int64_t N, int64_t C, const float *x, const float *w, double eps, float *y,
                        float *rstd) {
#pragma omp parallel for schedule(static) if (N * C >= QN_PAR_MIN)
    for (int64_t i = 0; i < N; i++) {
        const float *xi = x + i * C;
        float ss = 0.0f;
        for (int64_t c = 0; c < C; c++) ss += xi[c] * xi[c];
        float r = 1.0f / sqrtf(ss / (float)C + (float)eps);
        rstd[i] = r;
        for (int64_t c = 0; c < C; c++) y[i * C + c] = w[c] * (xi[c] * r);
    }
}

/* dx = (beta ? dx : 0) + grad; dw += sum dy * xhat. dw updates are serial
 * over rows to avoid races (C is small relative to the GEMMs). */
static void rmsnorm_bwd(int64_t N, int64_t C, const float *x, const float *w, const float *rstd,
                        const float *dy, float *dx, int add, float *dw) {
#pragma omp parallel for schedule(static) if (N * C >= QN_PAR_MIN)
    for (int64_t i = 0; i < N; i++) {
        const float *xi = x + i * C, *dyi = dy + i * C;
        float r = rstd[i], dot = 0.0f;
        for (int64_t c = 0; c < C; c++) dot += dyi[c] * w[c] * xi[c] * r;
        dot /= (float)C;
        for (int64_t c = 0; c < C; c++) {
            float g = r * (dyi[c] * w[c] - xi[c] * r * dot);
            dx[i * C + c] = add ? dx[i * C + c] + g : g;
        }
    }
    for (int64_t i = 0; i < N; i++) {
        const float *xi = x + i * C, *dyi = dy + i * C;
        for (int64_t c = 0; c < C; c++) dw[c] += dyi[c] * xi[c] * rstd[i];
    }
}

/* ---------- RoPE (rotate-half on the first rot dims of each head) ---------- */

static void rope_apply(int64_t T, int64_t nh, int64_t hd, int64_t rot, const float *cs,
                       const float *sn, float *x, int inverse) {
    int64_t half = rot / 2;
#pragma omp parallel for schedule(static) if (T * nh * half >= QN_PAR_MIN)
    for (int64_t t = 0; t < T; t++) {
        const float *c = cs + t * half, *s = sn + t * half;
        for (int64_t h = 0; h < nh; h++) {
            float *v = x + (t * nh + h) * hd;
            for (int64_t i = 0; i < half; i++) {
                float a = v[i], b = v[i + half], si = inverse ? -s[i] : s[i];
                v[i] = a * c[i] - b * si;
                v[i + half] = b * c[i] + a * si;
            }
        }
    }
}

/* ---------- attention (causal within each sequence, GQA) ---------- */

static void attn_fwd(const qn_model_desc *d, qn_model_ws *ws, const qn_batch *b, layer_ws *L) {
    int64_t NH = d->n_heads, NKV = d->n_kv_heads, HD = d->head_dim;
    int64_t QD = NH * HD, KD = NKV * HD, grp = NH / NKV;
    float scale = 1.0f / sqrtf((float)HD);
    /* work items: (sequence, head, query block) */
    int64_t n_items = 0;
    for (int64_t s = 0; s < b->n_seqs; s++) {
        int64_t len = b->cu_seqlens[s + 1] - b->cu_seqlens[s];
        n_items += NH * ((len + QN_QBLOCK - 1) / QN_QBLOCK);
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t it = 0; it < n_items; it++) {
        int64_t rem = it, s = 0, nb = 0;
        for (s = 0; s < b->n_seqs; s++) {
            int64_t len = b->cu_seqlens[s + 1] - b->cu_seqlens[s];
            nb = (len + QN_QBLOCK - 1) / QN_QBLOCK;
            if (rem < NH * nb) break;
            rem -= NH * nb;
        }
        int64_t h = rem / nb, blk = rem % nb, g = h / grp;
        int64_t base = b->cu_seqlens[s], len = b->cu_seqlens[s + 1] - base;
        int64_t i0 = blk * QN_QBLOCK, i1 = i0 + QN_QBLOCK < len ? i0 + QN_QBLOCK : len;
        float *S = ws->att_scratch + (int64_t)omp_get_thread_num() * 2 * QN_QBLOCK * ws->max_tokens;
        for (int64_t i = i0; i < i1; i++) {
            const float *qi = L->q + (base + i) * QD + h * HD;
            float *Si = S + (i - i0) * len;
            float mx = -INFINITY;
            for (int64_t j = 0; j <= i; j++) {
                const float *kj = L->k + (base + j) * KD + g * HD;
                float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                for (int64_t c = 0; c < HD; c++) acc += qi[c] * kj[c];
                Si[j] = acc * scale;
                if (Si[j] > mx) mx = Si[j];
            }
            float sum = 0.0f;
            for (int64_t j = 0; j <= i; j++) {
                Si[j] = expf(Si[j] - mx);
                sum += Si[j];
            }
            float inv = 1.0f / sum;
            float *oi = L->att + (base + i) * QD + h * HD;
            for (int64_t c = 0; c < HD; c++) oi[c] = 0.0f;
            for (int64_t j = 0; j <= i; j++) {
                const float *vj = L->v + (base + j) * KD + g * HD;
                float p = Si[j] * inv;
#pragma omp simd
                for (int64_t c = 0; c < HD; c++) oi[c] += p * vj[c];
            }
            L->lse[(base + i) * NH + h] = mx + logf(sum);
        }
    }
}

/* datt -> dq (written), dk, dv (written). One work item per (sequence, kv
 * head) so that dk/dv have a single writer. */
static void attn_bwd(const qn_model_desc *d, qn_model_ws *ws, const qn_batch *b, layer_ws *L) {
    int64_t NH = d->n_heads, NKV = d->n_kv_heads, HD = d->head_dim;
    int64_t QD = NH * HD, KD = NKV * HD, grp = NH / NKV;
    float scale = 1.0f / sqrtf((float)HD);
    int64_t n_items = b->n_seqs * NKV;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t it = 0; it < n_items; it++) {
        int64_t s = it / NKV, g = it % NKV;
        int64_t base = b->cu_seqlens[s], len = b->cu_seqlens[s + 1] - base;
        for (int64_t j = 0; j < len; j++) {
            memset(ws->dk + (base + j) * KD + g * HD, 0, (size_t)HD * sizeof(float));
            memset(ws->dv + (base + j) * KD + g * HD, 0, (size_t)HD * sizeof(float));
        }
        for (int64_t h = g * grp; h < (g + 1) * grp; h++) {
            for (int64_t i = 0; i < len; i++) {
                const float *qi = L->q + (base + i) * QD + h * HD;
                const float *oi = L->att + (base + i) * QD + h * HD;
                const float *doi = ws->datt + (base + i) * QD + h * HD;
                float *dqi = ws->dq + (base + i) * QD + h * HD;
                float lse = L->lse[(base + i) * NH + h];
                float D = 0.0f;
                for (int64_t c = 0; c < HD; c++) D += doi[c] * oi[c];
                for (int64_t c = 0; c < HD; c++) dqi[c] = 0.0f;
                for (int64_t j = 0; j <= i; j++) {
                    const float *kj = L->k + (base + j) * KD + g * HD;
                    const float *vj = L->v + (base + j) * KD + g * HD;
                    float sc = 0.0f, dp = 0.0f;
#pragma omp simd reduction(+ : sc, dp)
                    for (int64_t c = 0; c < HD; c++) {
                        sc += qi[c] * kj[c];
                        dp += doi[c] * vj[c];
                    }
                    float p = expf(sc * scale - lse);
                    float ds = p * (dp - D) * scale;
                    float *dkj = ws->dk + (base + j) * KD + g * HD;
                    float *dvj = ws->dv + (base + j) * KD + g * HD;
#pragma omp simd
                    for (int64_t c = 0; c < HD; c++) {
                        dqi[c] += ds * kj[c];
                        dkj[c] += ds * qi[c];
                        dvj[c] += p * doi[c];
                    }
                }
            }
        }
    }
}

/* ---------- SwiGLU ---------- */

static inline float silu(float x) { return x / (1.0f + expf(-x)); }

/* a = silu(g) * u, written into out (may alias nothing) */
static void swiglu_fwd(int64_t n, const float *g, const float *u, float *out) {
#pragma omp parallel for schedule(static) if (n >= QN_PAR_MIN)
    for (int64_t i = 0; i < n; i++) out[i] = silu(g[i]) * u[i];
}

/* da -> dg, du (written; da may alias dg) */
static void swiglu_bwd(int64_t n, const float *g, const float *u, float *da_dg, float *du) {
#pragma omp parallel for schedule(static) if (n >= QN_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float sg = 1.0f / (1.0f + expf(-g[i]));
        float da = da_dg[i];
        du[i] = da * g[i] * sg;
        da_dg[i] = da * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
    }
}

/* dense SwiGLU MLP: y = down(silu(gate x) * up x). g,u saved; act is scratch. */
static void mlp_fwd(int64_t T, int64_t H, int64_t NI, const float *x, const float *Wg,
                    const float *Wu, const float *Wd, float *g, float *u, float *act, float *y,
                    float beta) {
    linear_fwd(T, H, NI, x, Wg, NULL, g);
    linear_fwd(T, H, NI, x, Wu, NULL, u);
    swiglu_fwd(T * NI, g, u, act);
    mm_nt(T, H, NI, act, NI, Wd, NI, beta, y, H);
}

/* dy -> dx (+= when add), grads of the three weights. */
static void mlp_bwd(int64_t T, int64_t H, int64_t NI, const float *x, const float *Wg,
                    const float *Wu, const float *Wd, const float *g, const float *u,
                    const float *dy, float *dx, int add, float *dWg, float *dWu, float *dWd,
                    float *s_a, float *s_b) {
    /* s_a = act, used for dWd; then s_a = dact */
    swiglu_fwd(T * NI, g, u, s_a);
    mm_tn_acc(H, NI, T, dy, H, s_a, NI, dWd, NI);
    mm_nn(T, NI, H, dy, H, Wd, NI, 0.0f, s_a, NI);
    swiglu_bwd(T * NI, g, u, s_a, s_b); /* s_a = dg, s_b = du */
    linear_bwd(T, H, NI, x, Wg, s_a, dx, add ? 1.0f : 0.0f, dWg, NULL);
    linear_bwd(T, H, NI, x, Wu, s_b, dx, 1.0f, dWu, NULL);
}

/* ---------- MoE ---------- */

static void route(const qn_model_desc *d, const float *bias, int64_t T, layer_ws *L,
                  float *logits_scratch) {
    int64_t E = d->n_experts, K = d->top_k, G = d->n_group, per = E / G;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; t++) {
        float *s = L->scores + t * E;
        const float *rl = logits_scratch + t * E;
        if (d->router == QN_ROUTER_SIGMOID) {
            for (int64_t e = 0; e < E; e++) s[e] = 1.0f / (1.0f + expf(-rl[e]));
        } else {
            float mx = -INFINITY, sum = 0.0f;
            for (int64_t e = 0; e < E; e++) mx = rl[e] > mx ? rl[e] : mx;
            for (int64_t e = 0; e < E; e++) sum += (s[e] = expf(rl[e] - mx));
            for (int64_t e = 0; e < E; e++) s[e] /= sum;
        }
        /* choice scores (bias for selection only); VLA-free: small fixed cap */
        float choice[1024];
        int8_t gmask[1024];
        for (int64_t e = 0; e < E; e++) choice[e] = s[e] + (bias ? bias[e] : 0.0f);
        if (G > 1) {
            float gs[1024];
            for (int64_t gi = 0; gi < G; gi++) {
                float a = -INFINITY, b2 = -INFINITY;
                for (int64_t e = gi * per; e < (gi + 1) * per; e++) {
                    float c = choice[e];
                    if (c > a) {
                        b2 = a;
                        a = c;
                    } else if (c > b2) {
                        b2 = c;
                    }
                }
                gs[gi] = a + b2;
                gmask[gi] = 0;
            }
            for (int64_t k = 0; k < d->topk_group; k++) {
                int64_t best = -1;
                for (int64_t gi = 0; gi < G; gi++)
                    if (!gmask[gi] && (best < 0 || gs[gi] > gs[best])) best = gi;
                if (best < 0) break;
                gmask[best] = 1;
            }
            /* HF masks the other groups with 0.0 (not -inf) */
            for (int64_t e = 0; e < E; e++)
                if (!gmask[e / per]) choice[e] = 0.0f;
        }
        int8_t taken[1024];
        memset(taken, 0, (size_t)E);
        float wsum = 0.0f;
        for (int64_t k = 0; k < K; k++) {
            int64_t best = -1;
            for (int64_t e = 0; e < E; e++)
                if (!taken[e] && (best < 0 || choice[e] > choice[best])) best = e;
            if (best < 0) best = 0; /* unreachable: K <= E */
            taken[best] = 1;
            L->sel[t * K + k] = (int32_t)best;
            L->wts[t * K + k] = s[best];
            wsum += s[best];
        }
        float den = d->norm_topk_prob ? wsum + 1e-20f : 1.0f;
        for (int64_t k = 0; k < K; k++)
            L->wts[t * K + k] = L->wts[t * K + k] / den * (float)d->routed_scale;
    }
    /* assignments sorted by expert (counting sort, stable in token order) */
    for (int64_t e = 0; e <= E; e++) L->e_off[e] = 0;
    for (int64_t i = 0; i < T * K; i++) L->e_off[L->sel[i] + 1]++;
    for (int64_t e = 0; e < E; e++) L->e_off[e + 1] += L->e_off[e];
    int64_t fill[1024];
    for (int64_t e = 0; e < E; e++) fill[e] = L->e_off[e];
    for (int64_t i = 0; i < T * K; i++) {
        int64_t a = fill[L->sel[i]]++;
        L->a_tok[a] = (int32_t)(i / K);
        L->a_slot[a] = (int32_t)(i % K);
    }
}

static void moe_fwd(const qn_model_desc *d, qn_model_ws *ws, const qn_layer_params *p,
                    layer_ws *L, int64_t T, float *out) {
    int64_t H = d->hidden, E = d->n_experts, K = d->top_k, MI = d->moe_intermediate;
    int64_t SHI = MI * d->n_shared_experts;
    float *rl = ws->dscore; /* router logits, scratch */
    linear_fwd(T, H, E, L->h2, p->router, NULL, rl);
    route(d, p->score_bias, T, L, rl);
    /* inputs gathered in assignment order, then one thread per expert
     * (single-threaded GEMMs inside: see gemm()) */
#pragma omp parallel for schedule(static)
    for (int64_t a = 0; a < T * K; a++)
        memcpy(ws->xg + a * H, L->h2 + (int64_t)L->a_tok[a] * H, (size_t)H * sizeof(float));
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t e = 0; e < E; e++) {
        int64_t a0 = L->e_off[e], n = L->e_off[e + 1] - a0;
        if (n == 0) continue;
        const float *Wg = p->e_gate + e * MI * H, *Wu = p->e_up + e * MI * H;
        const float *Wd = p->e_down + e * H * MI;
        mlp_fwd(n, H, MI, ws->xg + a0 * H, Wg, Wu, Wd, L->eg + a0 * MI, L->eu + a0 * MI,
                ws->dg + a0 * MI, L->ey + a0 * H, 0.0f);
    }
    float *act = ws->dg;
    if (SHI > 0) {
        mlp_fwd(T, H, SHI, L->h2, p->s_gate, p->s_up, p->s_down, L->g, L->u, act, out, 0.0f);
    } else {
        memset(out, 0, (size_t)(T * H) * sizeof(float));
    }
    for (int64_t a = 0; a < T * K; a++) {
        int64_t t = L->a_tok[a];
        float w = L->wts[t * K + L->a_slot[a]];
        const float *y = L->ey + a * H;
        float *o = out + t * H;
        for (int64_t c = 0; c < H; c++) o[c] += w * y[c];
    }
}

/* dout [T,H] -> dh2 (written) and parameter grads */
static void moe_bwd(const qn_model_desc *d, qn_model_ws *ws, const qn_layer_params *p,
                    qn_layer_params *gp, layer_ws *L, int64_t T, const float *dout, float *dh2) {
    int64_t H = d->hidden, E = d->n_experts, K = d->top_k, MI = d->moe_intermediate;
    int64_t SHI = MI * d->n_shared_experts;
    if (SHI > 0) {
        mlp_bwd(T, H, SHI, L->h2, p->s_gate, p->s_up, p->s_down, L->g, L->u, dout, dh2, 0,
                gp->s_gate, gp->s_up, gp->s_down, ws->dg, ws->du);
    } else {
        memset(dh2, 0, (size_t)(T * H) * sizeof(float));
    }
    float *ds = ws->dscore;
    memset(ds, 0, (size_t)(T * E) * sizeof(float));
    /* dwts[t,k] = dout[t] . y_a ; stored temporarily in dscore rows via dw */
    float *dw = ws->dwts;
#pragma omp parallel for schedule(static)
    for (int64_t a = 0; a < T * K; a++) {
        int64_t t = L->a_tok[a];
        const float *y = L->ey + a * H, *g = dout + t * H;
        float acc = 0.0f;
        for (int64_t c = 0; c < H; c++) acc += g[c] * y[c];
        dw[t * K + L->a_slot[a]] = acc;
    }
    /* xg = gathered inputs, dxg = dY (weighted dout), in assignment order */
#pragma omp parallel for schedule(static)
    for (int64_t a = 0; a < T * K; a++) {
        int64_t t = L->a_tok[a];
        float w = L->wts[t * K + L->a_slot[a]];
        memcpy(ws->xg + a * H, L->h2 + t * H, (size_t)H * sizeof(float));
        for (int64_t c = 0; c < H; c++) ws->dxg[a * H + c] = w * dout[t * H + c];
    }
    /* one thread per expert; each writes its own weight grads and its own
     * slice of dxe (grads of the gathered inputs) */
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t e = 0; e < E; e++) {
        int64_t a0 = L->e_off[e], n = L->e_off[e + 1] - a0;
        if (n == 0) continue;
        const float *Wg = p->e_gate + e * MI * H, *Wu = p->e_up + e * MI * H;
        const float *Wd = p->e_down + e * H * MI;
        float *dWg = gp->e_gate + e * MI * H, *dWu = gp->e_up + e * MI * H;
        float *dWd = gp->e_down + e * H * MI;
        mlp_bwd(n, H, MI, ws->xg + a0 * H, Wg, Wu, Wd, L->eg + a0 * MI, L->eu + a0 * MI,
                ws->dxg + a0 * H, ws->dxe + a0 * H, 0, dWg, dWu, dWd, ws->dg + a0 * MI,
                ws->du + a0 * MI);
    }
    /* scatter back to tokens: token t's K assignments, in a fixed order */
    for (int64_t a = 0; a < T * K; a++) {
        int64_t t = L->a_tok[a];
        const float *src = ws->dxe + a * H;
        float *dst = dh2 + t * H;
        for (int64_t c = 0; c < H; c++) dst[c] += src[c];
    }
    /* routing weights -> scores -> router logits */
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; t++) {
        const float *s = L->scores + t * E;
        float *dst = ds + t * E;
        float c = (float)d->routed_scale;
        float usum = 0.0f, dotwu = 0.0f;
        for (int64_t k = 0; k < K; k++) {
            float u = s[L->sel[t * K + k]];
            usum += u;
            dotwu += dw[t * K + k] * u;
        }
        for (int64_t k = 0; k < K; k++) {
            float du;
            if (d->norm_topk_prob) {
                float S = usum + 1e-20f;
                du = c * (dw[t * K + k] / S - dotwu / (S * S));
            } else {
                du = c * dw[t * K + k];
            }
            dst[L->sel[t * K + k]] += du;
        }
        if (d->router == QN_ROUTER_SIGMOID) {
            for (int64_t e = 0; e < E; e++) dst[e] *= s[e] * (1.0f - s[e]);
        } else {
            float dot = 0.0f;
            for (int64_t e = 0; e < E; e++) dot += dst[e] * s[e];
            for (int64_t e = 0; e < E; e++) dst[e] = s[e] * (dst[e] - dot);
        }
    }
    linear_bwd(T, H, E, L->h2, p->router, ds, dh2, 1.0f, gp->router, NULL);
}

/* ---------- the head: log-prob and entropy, chunked over the vocabulary ---------- */

static void head_fwd(const qn_model *m, qn_model_ws *ws, const qn_batch *b, float temp,
                     float *logp, float *ent) {
    int64_t H = m->d.hidden, V = m->d.vocab;
    const float *W = m->gw.lm_head;
    float it = 1.0f / temp;
    for (int64_t r0 = 0; r0 < b->n_rows; r0 += QN_RBLOCK) {
        int64_t nr = b->n_rows - r0 < QN_RBLOCK ? b->n_rows - r0 : QN_RBLOCK;
        for (int64_t r = 0; r < nr; r++)
            memcpy(ws->hrows + r * H, ws->hf + b->rows[r0 + r] * H, (size_t)H * sizeof(float));
        double mx[QN_RBLOCK], se[QN_RBLOCK], sz[QN_RBLOCK], zt[QN_RBLOCK];
        for (int64_t r = 0; r < nr; r++) {
            mx[r] = -INFINITY;
            se[r] = sz[r] = zt[r] = 0.0;
        }
        for (int64_t v0 = 0; v0 < V; v0 += QN_VCHUNK) {
            int64_t nv = V - v0 < QN_VCHUNK ? V - v0 : QN_VCHUNK;
            mm_nt(nr, nv, H, ws->hrows, H, W + v0 * H, H, 0.0f, ws->logits, nv);
#pragma omp parallel for schedule(static)
            for (int64_t r = 0; r < nr; r++) {
                const float *z = ws->logits + r * nv;
                float cm = -INFINITY;
                for (int64_t j = 0; j < nv; j++) cm = z[j] * it > cm ? z[j] * it : cm;
                double nm = cm > mx[r] ? cm : mx[r];
                double f = exp(mx[r] - nm); /* rescale old sums */
                double s1 = 0.0, s2 = 0.0;
                for (int64_t j = 0; j < nv; j++) {
                    float zz = z[j] * it;
                    float e = expf(zz - (float)nm);
                    s1 += e;
                    s2 += (double)e * (double)zz;
                }
                se[r] = se[r] * f + s1;
                sz[r] = sz[r] * f + s2;
                mx[r] = nm;
                int32_t y = b->targets[r0 + r];
                if (y >= v0 && y < v0 + nv) zt[r] = z[y - v0] * it;
            }
        }
        for (int64_t r = 0; r < nr; r++) {
            double lse = mx[r] + log(se[r]);
            ws->row_lse[r0 + r] = (float)lse;
            double h = lse - sz[r] / se[r];
            ws->row_ent[r0 + r] = (float)h;
            logp[r0 + r] = (float)(zt[r] - lse);
            if (ent) ent[r0 + r] = (float)h;
        }
    }
}

/* dlogp, dent -> ws->dh (rows of the final normed hidden state; zero elsewhere) */
static void head_bwd(qn_model *m, qn_model_ws *ws, const qn_batch *b, const float *dlogp,
                     const float *dent) {
    int64_t T = b->n_tokens, H = m->d.hidden, V = m->d.vocab;
    const float *W = m->gw.lm_head;
    float *dW = m->gg.lm_head;
    float temp = ws->temperature, it = 1.0f / temp;
    memset(ws->dh, 0, (size_t)(T * H) * sizeof(float));
    for (int64_t r0 = 0; r0 < b->n_rows; r0 += QN_RBLOCK) {
        int64_t nr = b->n_rows - r0 < QN_RBLOCK ? b->n_rows - r0 : QN_RBLOCK;
        for (int64_t r = 0; r < nr; r++)
            memcpy(ws->hrows + r * H, ws->hf + b->rows[r0 + r] * H, (size_t)H * sizeof(float));
        memset(ws->dhrows, 0, (size_t)(nr * H) * sizeof(float));
        for (int64_t v0 = 0; v0 < V; v0 += QN_VCHUNK) {
            int64_t nv = V - v0 < QN_VCHUNK ? V - v0 : QN_VCHUNK;
            mm_nt(nr, nv, H, ws->hrows, H, W + v0 * H, H, 0.0f, ws->logits, nv);
#pragma omp parallel for schedule(static)
            for (int64_t r = 0; r < nr; r++) {
                float *z = ws->logits + r * nv;
                float lse = ws->row_lse[r0 + r], h = ws->row_ent[r0 + r];
                float gl = dlogp ? dlogp[r0 + r] : 0.0f, ge = dent ? dent[r0 + r] : 0.0f;
                int32_t y = b->targets[r0 + r];
                for (int64_t j = 0; j < nv; j++) {
                    float lp = z[j] * it - lse, p = expf(lp);
                    float g = -gl * p - ge * p * (lp + h);
                    if (v0 + j == y) g += gl;
                    z[j] = g * it;
                }
            }
            mm_nn(nr, H, nv, ws->logits, nv, W + v0 * H, H, 1.0f, ws->dhrows, H);
            mm_tn_acc(nv, H, nr, ws->logits, nv, ws->hrows, H, dW + v0 * H, H);
        }
        for (int64_t r = 0; r < nr; r++) {
            float *dst = ws->dh + b->rows[r0 + r] * H;
            for (int64_t c = 0; c < H; c++) dst[c] += ws->dhrows[r * H + c];
        }
    }
}

/* ---------- driver ---------- */

static qn_status check_batch(const qn_model *m, const qn_model_ws *ws, const qn_batch *b) {
    if (b->n_tokens < 1 || b->n_tokens > ws->max_tokens || b->n_rows > ws->max_rows ||
        b->n_seqs < 1)
        return qn_fail(QN_ERR_RANGE, "model: batch of %lld tokens / %lld rows exceeds the "
                       "workspace (%lld / %lld)", (long long)b->n_tokens, (long long)b->n_rows,
                       (long long)ws->max_tokens, (long long)ws->max_rows);
    if (b->cu_seqlens[0] != 0 || b->cu_seqlens[b->n_seqs] != b->n_tokens)
        return qn_fail(QN_ERR_INVALID, "model: cu_seqlens must go from 0 to n_tokens");
    for (int64_t s = 0; s < b->n_seqs; s++)
        if (b->cu_seqlens[s + 1] <= b->cu_seqlens[s])
            return qn_fail(QN_ERR_INVALID, "model: sequence %lld is empty or cu_seqlens "
                           "decreases", (long long)s);
    for (int64_t t = 0; t < b->n_tokens; t++)
        if (b->tokens[t] < 0 || b->tokens[t] >= m->d.vocab)
            return qn_fail(QN_ERR_RANGE, "model: token %d at %lld outside vocab [0, %lld)",
                           b->tokens[t], (long long)t, (long long)m->d.vocab);
    for (int64_t r = 0; r < b->n_rows; r++)
        if (b->rows[r] < 0 || b->rows[r] >= b->n_tokens || b->targets[r] < 0 ||
            b->targets[r] >= m->d.vocab)
            return qn_fail(QN_ERR_RANGE, "model: row %lld (position %lld, target %d) out of range",
                           (long long)r, (long long)b->rows[r], b->targets[r]);
    return QN_OK;
}

qn_status qn_model_forward(const qn_model *m, qn_model_ws *ws, const qn_batch *b,
                           float temperature, float *logp, float *ent) {
    QN_CHECK(check_batch(m, ws, b));
    if (!(temperature > 0.0f) || !isfinite(temperature))
        return qn_fail(QN_ERR_RANGE, "model: temperature %g must be > 0", (double)temperature);
    const qn_model_desc *d = &m->d;
    int64_t T = b->n_tokens, H = d->hidden, NH = d->n_heads, NKV = d->n_kv_heads;
    int64_t HD = d->head_dim, QD = NH * HD, KD = NKV * HD, half = d->rot_dim / 2;
    ws->temperature = temperature;
    for (int64_t s = 0; s < b->n_seqs; s++)
        for (int64_t t = b->cu_seqlens[s]; t < b->cu_seqlens[s + 1]; t++)
            ws->pos[t] = (int32_t)(t - b->cu_seqlens[s]);
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; t++) {
        for (int64_t i = 0; i < half; i++) {
            double inv = pow(d->rope_theta, -(double)(2 * i) / (double)d->rot_dim);
            double a = (double)ws->pos[t] * inv;
            ws->rope_cos[t * half + i] = (float)cos(a);
            ws->rope_sin[t * half + i] = (float)sin(a);
        }
    }
    float *x = ws->layers[0].x_in;
    for (int64_t t = 0; t < T; t++)
        memcpy(x + t * H, m->gw.embed + (int64_t)b->tokens[t] * H, (size_t)H * sizeof(float));
    for (int64_t l = 0; l < d->n_layers; l++) {
        layer_ws *L = &ws->layers[l];
        const qn_layer_params *p = &m->lw[l];
        float *xo = l + 1 < d->n_layers ? ws->layers[l + 1].x_in : ws->x_fin;
        rmsnorm_fwd(T, H, L->x_in, p->in_norm, d->rms_eps, L->h1, L->rstd1);
        float *qd = d->qk_norm ? L->q_raw : L->q, *kd = d->qk_norm ? L->k_raw : L->k;
        linear_fwd(T, H, QD, L->h1, p->wq, p->bq, qd);
        linear_fwd(T, H, KD, L->h1, p->wk, p->bk, kd);
        linear_fwd(T, H, KD, L->h1, p->wv, p->bv, L->v);
        if (d->qk_norm) {
            rmsnorm_fwd(T * NH, HD, L->q_raw, p->q_norm, d->rms_eps, L->q, L->qn_rstd);
            rmsnorm_fwd(T * NKV, HD, L->k_raw, p->k_norm, d->rms_eps, L->k, L->kn_rstd);
        }
        rope_apply(T, NH, HD, d->rot_dim, ws->rope_cos, ws->rope_sin, L->q, 0);
        rope_apply(T, NKV, HD, d->rot_dim, ws->rope_cos, ws->rope_sin, L->k, 0);
        attn_fwd(d, ws, b, L);
        memcpy(L->x_mid, L->x_in, (size_t)(T * H) * sizeof(float));
        mm_nt(T, H, QD, L->att, QD, p->wo, QD, 1.0f, L->x_mid, H);
        rmsnorm_fwd(T, H, L->x_mid, p->post_norm, d->rms_eps, L->h2, L->rstd2);
        if (qn_model_layer_is_moe(d, l)) {
            moe_fwd(d, ws, p, L, T, ws->dtmp);
            for (int64_t i = 0; i < T * H; i++) xo[i] = L->x_mid[i] + ws->dtmp[i];
        } else {
            memcpy(xo, L->x_mid, (size_t)(T * H) * sizeof(float));
            mlp_fwd(T, H, d->intermediate, L->h2, p->w_gate, p->w_up, p->w_down, L->g, L->u,
                    ws->dg, xo, 1.0f);
        }
    }
    rmsnorm_fwd(T, H, ws->x_fin, m->gw.final_norm, d->rms_eps, ws->hf, ws->rstdf);
    head_fwd(m, ws, b, temperature, logp, ent);
    return QN_OK;
}

qn_status qn_model_backward(qn_model *m, qn_model_ws *ws, const qn_batch *b, const float *dlogp,
                            const float *dent) {
    if (!m->g) return qn_fail(QN_ERR_INVALID, "model: backward without gradient storage");
    QN_CHECK(check_batch(m, ws, b));
    const qn_model_desc *d = &m->d;
    int64_t T = b->n_tokens, H = d->hidden, NH = d->n_heads, NKV = d->n_kv_heads;
    int64_t HD = d->head_dim, QD = NH * HD, KD = NKV * HD;
    head_bwd(m, ws, b, dlogp, dent);
    /* dx = d(residual stream) */
    rmsnorm_bwd(T, H, ws->x_fin, m->gw.final_norm, ws->rstdf, ws->dh, ws->dx, 0, m->gg.final_norm);
    for (int64_t l = d->n_layers - 1; l >= 0; l--) {
        layer_ws *L = &ws->layers[l];
        const qn_layer_params *p = &m->lw[l];
        qn_layer_params *gp = &m->lg[l];
        /* MLP: dx -> dh (grad of h2) */
        if (qn_model_layer_is_moe(d, l)) {
            moe_bwd(d, ws, p, gp, L, T, ws->dx, ws->dtmp);
        } else {
            mlp_bwd(T, H, d->intermediate, L->h2, p->w_gate, p->w_up, p->w_down, L->g, L->u,
                    ws->dx, ws->dtmp, 0, gp->w_gate, gp->w_up, gp->w_down, ws->dg, ws->du);
        }
        rmsnorm_bwd(T, H, L->x_mid, p->post_norm, L->rstd2, ws->dtmp, ws->dx, 1, gp->post_norm);
        /* attention: dx -> datt via o_proj */
        linear_bwd(T, QD, H, L->att, p->wo, ws->dx, ws->datt, 0.0f, gp->wo, NULL);
        attn_bwd(d, ws, b, L);
        rope_apply(T, NH, HD, d->rot_dim, ws->rope_cos, ws->rope_sin, ws->dq, 1);
        rope_apply(T, NKV, HD, d->rot_dim, ws->rope_cos, ws->rope_sin, ws->dk, 1);
        if (d->qk_norm) {
            /* datt is free now: reuse it for the grad of q_raw */
            rmsnorm_bwd(T * NH, HD, L->q_raw, p->q_norm, L->qn_rstd, ws->dq, ws->datt, 0,
                        gp->q_norm);
            memcpy(ws->dq, ws->datt, (size_t)(T * QD) * sizeof(float));
            rmsnorm_bwd(T * NKV, HD, L->k_raw, p->k_norm, L->kn_rstd, ws->dk, ws->dkr, 0,
                        gp->k_norm);
            memcpy(ws->dk, ws->dkr, (size_t)(T * KD) * sizeof(float));
        }
        linear_bwd(T, H, QD, L->h1, p->wq, ws->dq, ws->dtmp, 0.0f, gp->wq, gp->bq);
        linear_bwd(T, H, KD, L->h1, p->wk, ws->dk, ws->dtmp, 1.0f, gp->wk, gp->bk);
        linear_bwd(T, H, KD, L->h1, p->wv, ws->dv, ws->dtmp, 1.0f, gp->wv, gp->bv);
        rmsnorm_bwd(T, H, L->x_in, p->in_norm, L->rstd1, ws->dtmp, ws->dx, 1, gp->in_norm);
    }
    float *dE = m->gg.embed;
    for (int64_t t = 0; t < T; t++) {
        float *dst = dE + (int64_t)b->tokens[t] * H;
        for (int64_t c = 0; c < H; c++) dst[c] += ws->dx[t * H + c];
    }
    return QN_OK;
}
