/* forward.c — forward and backward of the decoder over a packed batch, CPU fp32.
 *
 * Per layer: x += o_proj(attn(rope(qk_norm(qkv(rmsnorm(x)))))); x += mlp(rmsnorm(x))
 * with a dense SwiGLU MLP or a MoE block (router, group-limited top-k,
 * routed experts, shared experts). The head computes, only at the requested
 * rows, log-prob of the target and entropy of softmax(logits / temperature),
 * chunked over the vocabulary (QN_VCHUNK columns at a time), so no [T, V]
 * buffer exists.
 *
 * Every activation that backward needs is kept in the workspace, which is
 * sized once for max_tokens/max_rows; forward and backward allocate nothing.
 * The ops are core/ops/cpu's (finite-difference tested there): RMSNorm,
 * RoPE, attention, SwiGLU, the MoE router and experts, the log-prob/entropy
 * head and qn_sgemm for the linear layers. This file owns the layer order,
 * the residual stream, the activation arena and the HF parameter layout.
 * The number of threads is OpenMP's (OMP_NUM_THREADS).
 *
 * Leaves out: KV cache / decoding (rollout), bf16 compute, MTP layers,
 * dropout, rope_scaling.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/model/model.h"
#include "core/model/router_cfg.h"
#include "core/ops/cpu/ops.h"

#define QN_VCHUNK 2048
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
    qn_moe_acts acts;     /* what the expert backward needs (core/ops/cpu) */
} layer_ws;

struct qn_model_ws {
    int64_t max_tokens, max_rows;
    size_t bytes;
    char *arena;
    layer_ws *layers;
    int32_t *pos;              /* [T] */
    int32_t *cu32;             /* [max_tokens+1] cu_seqlens for core/ops/cpu */
    size_t att_scratch_floats;
    float *rope_cos, *rope_sin; /* [T, rot/2] */
    float *x_fin, *hf, *rstdf; /* [T,H], [T,H], [T] */
    float *row_lse;            /* [R] log-sum-exp of the temperature-scaled logits */
    float temperature;
    /* scratch */
    float *dx, *dh, *dtmp;     /* [T,H] */
    float *dq, *dk, *dv, *datt; /* [T,QD], [T,KD], [T,KD], [T,QD] */
    float *dg, *du;            /* [T*max(I, SHI)] */
    float *moe_scratch;        /* qn_moe_scratch_floats */
    float *dscore;             /* [T,E] */
    float *dwts;               /* [T*K] */
    float *dkr;                /* [T,KD] */
    float *hrows, *dhrows;     /* [R,H] final hidden states at the asked rows, their grads */
    float *row_ez, *row_tmp;   /* [R] sum p z (for the backward); unused entropies */
    float *head_scratch;       /* qn_logprob_scratch_floats(R, H, VCHUNK) */
    float *att_scratch;        /* qn_attention_scratch_floats for one max_tokens sequence */
};

/* ---------- arena ---------- */

typedef struct planner {
    char *base;
    size_t off;
    int bad; /* a size disagreed with core/ops/cpu's accounting */
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
    int64_t wmax = d->intermediate > SHI ? d->intermediate : SHI; /* dense / shared MLP width */
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
            int iT = (int)T, iK = (int)d->top_k, iH = (int)H, iF = (int)d->moe_intermediate;
            qn_moe_acts *A = &L->acts;
            A->offsets = take(pl, (size_t)(d->n_experts + 1) * sizeof(int32_t));
            A->slot_tok = take(pl, (size_t)TK * sizeof(int32_t));
            A->tok_slot = take(pl, (size_t)TK * sizeof(int32_t));
            A->xs = TAKEF(pl, (int64_t)TK * iH);
            A->gate = TAKEF(pl, (int64_t)TK * iF);
            A->up = TAKEF(pl, (int64_t)TK * iF);
            A->act = TAKEF(pl, (int64_t)TK * iF);
            A->ys = TAKEF(pl, (int64_t)TK * iH);
            /* the op's own size accounting must agree with the fields above */
            if (pl->base == NULL &&
                qn_moe_acts_floats(iT, iK, iH, iF) != (size_t)TK * (2 * (size_t)iH + 3 * (size_t)iF))
                pl->bad = 1;
        }
    }
    ws->pos = take(pl, (size_t)T * sizeof(int32_t));
    ws->cu32 = take(pl, (size_t)(T + 1) * sizeof(int32_t));
    ws->rope_cos = TAKEF(pl, T * d->rot_dim / 2);
    ws->rope_sin = TAKEF(pl, T * d->rot_dim / 2);
    ws->x_fin = TAKEF(pl, T * H);
    ws->hf = TAKEF(pl, T * H);
    ws->rstdf = TAKEF(pl, T);
    ws->row_lse = TAKEF(pl, R);
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
    if (d->router != QN_MODEL_ROUTER_NONE) {
        ws->moe_scratch = TAKEF(pl, qn_moe_scratch_floats((int)T, (int)d->top_k, (int)H,
                                                          (int)d->moe_intermediate));
        ws->dscore = TAKEF(pl, T * d->n_experts);
        ws->dwts = TAKEF(pl, TK);
    }
    ws->hrows = TAKEF(pl, R * H);
    ws->dhrows = TAKEF(pl, R * H);
    ws->row_ez = TAKEF(pl, R);
    ws->row_tmp = TAKEF(pl, R);
    ws->head_scratch = TAKEF(pl, qn_logprob_scratch_floats((int)R, (int)H, QN_VCHUNK));
    /* the most attention scratch a batch of T tokens can need: one sequence */
    int32_t cu1[2] = {0, (int32_t)T};
    ws->att_scratch_floats = qn_attention_scratch_floats(cu1, 1, (int)T, (int)d->n_heads,
                                                         (int)d->n_kv_heads, (int)d->head_dim);
    ws->att_scratch = TAKEF(pl, ws->att_scratch_floats);
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
    qn_blas_init(); /* see gemm() */
    ws->layers = calloc((size_t)m->d.n_layers, sizeof *ws->layers);
    if (!ws->layers) {
        free(ws);
        return qn_fail(QN_ERR_NOMEM, "model workspace");
    }
    planner pl = {NULL, 0, 0};
    plan(&pl, ws, m);
    if (pl.bad) {
        qn_model_ws_free(ws);
        return qn_fail(QN_ERR_INTERNAL, "model workspace: MoE activation sizes disagree with "
                       "core/ops/cpu (qn_moe_acts_floats)");
    }
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

/* GEMMs go through core/ops/cpu's qn_sgemm: OpenBLAS single-threaded, the
 * output split over OpenMP threads (two thread pools spinning against each
 * other cost more than half the time on 2 cores). */
static void gemm(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    qn_sgemm(ta, tb, (int)M, (int)N, (int)K, 1.0f, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
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

/* ---------- RMSNorm, RoPE: core/ops/cpu ---------- */

static void rmsnorm_fwd(int64_t N, int64_t C, const float *x, const float *w, double eps, float *y,
                        float *rstd) {
    qn_rmsnorm_forward(y, rstd, x, w, (float)eps, (int)N, (int)C);
}

/* dx = (add ? dx : 0) + grad; dw += */
static void rmsnorm_bwd(int64_t N, int64_t C, const float *x, const float *w, const float *rstd,
                        const float *dy, float *dx, int add, float *dw) {
    qn_rmsnorm_backward(dx, dw, dy, x, w, rstd, (int)N, (int)C, add);
}

/* rotate-half on the first rot dims of each head; inverse for backward */
static void rope_apply(qn_model_ws *ws, int64_t T, int64_t nh, int64_t hd, int64_t rot, float *x,
                       int inverse) {
    if (inverse)
        qn_rope_backward(x, ws->pos, ws->rope_cos, ws->rope_sin, (int)T, (int)nh, (int)hd,
                         (int)rot);
    else
        qn_rope_forward(x, ws->pos, ws->rope_cos, ws->rope_sin, (int)T, (int)nh, (int)hd,
                        (int)rot);
}

/* ---------- attention: core/ops/cpu ---------- */

static void attn_fwd(const qn_model_desc *d, qn_model_ws *ws, const qn_batch *b, layer_ws *L) {
    qn_attention_forward(L->att, L->lse, L->q, L->k, L->v, ws->cu32, (int)b->n_seqs,
                         (int)b->n_tokens, (int)d->n_heads, (int)d->n_kv_heads, (int)d->head_dim,
                         ws->att_scratch);
}

/* datt -> dq, dk, dv (written) */
static void attn_bwd(const qn_model_desc *d, qn_model_ws *ws, const qn_batch *b, layer_ws *L) {
    qn_attention_backward(ws->dq, ws->dk, ws->dv, ws->datt, L->q, L->k, L->v, L->att, L->lse,
                          ws->cu32, (int)b->n_seqs, (int)b->n_tokens, (int)d->n_heads,
                          (int)d->n_kv_heads, (int)d->head_dim, ws->att_scratch);
}

/* ---------- SwiGLU ---------- */

/* a = silu(g) * u over n elements (core/ops/cpu) */
static void swiglu_fwd(int64_t n, const float *g, const float *u, float *out) {
    qn_swiglu_forward(out, g, u, 1, (int)n, (int)n);
}

/* da -> dg, du (written; da_dg holds da on entry and dg on return) */
static void swiglu_bwd(int64_t n, const float *g, const float *u, float *da_dg, float *du) {
    qn_swiglu_backward(da_dg, du, da_dg, g, u, 1, (int)n, (int)n);
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

/* ---------- MoE: router and experts from core/ops/cpu ---------- */

qn_router_cfg qn_model_router_cfg(const qn_model_desc *d, const qn_layer_params *p) {
    qn_router_cfg rc = {.E = (int)d->n_experts,
                        .K = (int)d->top_k,
                        .n_group = (int)d->n_group,
                        .topk_group = (int)d->topk_group,
                        .score = d->router == QN_MODEL_ROUTER_SIGMOID ? QN_ROUTER_SIGMOID
                                                                      : QN_ROUTER_SOFTMAX,
                        .norm_topk_prob = d->norm_topk_prob,
                        .routed_scaling_factor = (float)d->routed_scale,
                        .bias = p->score_bias};
    return rc;
}

/* out (=) = shared experts + routed experts of h2 */
static void moe_fwd(const qn_model_desc *d, const qn_layer_params *p, layer_ws *L, int64_t T,
                    float *act_scratch, float *out) {
    int64_t H = d->hidden, MI = d->moe_intermediate, SHI = MI * d->n_shared_experts;
    qn_router_cfg rc = qn_model_router_cfg(d, p);
    qn_router_forward(&rc, L->sel, L->wts, L->scores, L->h2, p->router, (int)T, (int)H);
    if (SHI > 0)
        mlp_fwd(T, H, SHI, L->h2, p->s_gate, p->s_up, p->s_down, L->g, L->u, act_scratch, out,
                0.0f);
    qn_moe_forward(out, &L->acts, L->h2, L->sel, L->wts, p->e_gate, p->e_up, p->e_down, (int)T,
                   (int)H, (int)MI, (int)d->n_experts, (int)d->top_k, SHI > 0);
}

/* dout [T,H] -> dh2 (written) and parameter grads (router through the
 * gathered weights; the selection bias gets none) */
static void moe_bwd(const qn_model_desc *d, qn_model_ws *ws, const qn_layer_params *p,
                    qn_layer_params *gp, layer_ws *L, int64_t T, const float *dout, float *dh2) {
    int64_t H = d->hidden, MI = d->moe_intermediate, SHI = MI * d->n_shared_experts;
    if (SHI > 0)
        mlp_bwd(T, H, SHI, L->h2, p->s_gate, p->s_up, p->s_down, L->g, L->u, dout, dh2, 0,
                gp->s_gate, gp->s_up, gp->s_down, ws->dg, ws->du);
    qn_moe_backward(dh2, ws->dwts, gp->e_gate, gp->e_up, gp->e_down, dout, &L->acts, L->wts,
                    p->e_gate, p->e_up, p->e_down, (int)T, (int)H, (int)MI, (int)d->n_experts,
                    (int)d->top_k, SHI > 0, ws->moe_scratch);
    qn_router_cfg rc = qn_model_router_cfg(d, p);
    qn_router_backward(&rc, dh2, gp->router, ws->dwts, L->sel, L->scores, L->h2, p->router,
                       (int)T, (int)H, 1, ws->dscore);
}

/* ---------- the head: core/ops/cpu log-prob / entropy on gathered rows ---------- */

static void head_fwd(const qn_model *m, qn_model_ws *ws, const qn_batch *b, float temp,
                     float *logp, float *ent) {
    int64_t H = m->d.hidden;
    for (int64_t r = 0; r < b->n_rows; r++)
        memcpy(ws->hrows + r * H, ws->hf + b->rows[r] * H, (size_t)H * sizeof(float));
    qn_logprob_forward(logp, ent ? ent : ws->row_tmp, ws->row_lse, ws->row_ez, ws->hrows,
                       b->targets, m->gw.lm_head, (int)b->n_rows, (int)H, (int)m->d.vocab, temp,
                       QN_VCHUNK, ws->head_scratch);
}

/* dlogp, dent -> ws->dh (rows of the final normed hidden state; zero elsewhere) */
static void head_bwd(qn_model *m, qn_model_ws *ws, const qn_batch *b, const float *dlogp,
                     const float *dent) {
    int64_t T = b->n_tokens, H = m->d.hidden;
    memset(ws->dh, 0, (size_t)(T * H) * sizeof(float));
    qn_logprob_backward(ws->dhrows, m->gg.lm_head, dlogp, dent, ws->row_lse, ws->row_ez,
                        ws->hrows, b->targets, m->gw.lm_head, (int)b->n_rows, (int)H,
                        (int)m->d.vocab, ws->temperature, QN_VCHUNK, 0, ws->head_scratch);
    for (int64_t r = 0; r < b->n_rows; r++) {
        float *dst = ws->dh + b->rows[r] * H;
        const float *src = ws->dhrows + r * H;
        for (int64_t c = 0; c < H; c++) dst[c] += src[c];
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
    int64_t HD = d->head_dim, QD = NH * HD, KD = NKV * HD;
    ws->temperature = temperature;
    int64_t longest = 0;
    for (int64_t s = 0; s <= b->n_seqs; s++) ws->cu32[s] = (int32_t)b->cu_seqlens[s];
    for (int64_t s = 0; s < b->n_seqs; s++) {
        int64_t len = b->cu_seqlens[s + 1] - b->cu_seqlens[s];
        if (len > longest) longest = len;
        for (int64_t t = b->cu_seqlens[s]; t < b->cu_seqlens[s + 1]; t++)
            ws->pos[t] = (int32_t)(t - b->cu_seqlens[s]);
    }
    qn_rope_table(ws->rope_cos, ws->rope_sin, (int)longest, (int)d->rot_dim, d->rope_theta);
    if (qn_attention_scratch_floats(ws->cu32, (int)b->n_seqs, (int)T, (int)NH, (int)NKV,
                                    (int)HD) > ws->att_scratch_floats)
        return qn_fail(QN_ERR_INTERNAL, "model: attention scratch too small for this batch");
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
        rope_apply(ws, T, NH, HD, d->rot_dim, L->q, 0);
        rope_apply(ws, T, NKV, HD, d->rot_dim, L->k, 0);
        attn_fwd(d, ws, b, L);
        memcpy(L->x_mid, L->x_in, (size_t)(T * H) * sizeof(float));
        mm_nt(T, H, QD, L->att, QD, p->wo, QD, 1.0f, L->x_mid, H);
        if (p->bo)
            for (int64_t t = 0; t < T; t++)
                for (int64_t c = 0; c < H; c++) L->x_mid[t * H + c] += p->bo[c];
        rmsnorm_fwd(T, H, L->x_mid, p->post_norm, d->rms_eps, L->h2, L->rstd2);
        if (qn_model_layer_is_moe(d, l)) {
            moe_fwd(d, p, L, T, ws->dg, ws->dtmp);
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
        linear_bwd(T, QD, H, L->att, p->wo, ws->dx, ws->datt, 0.0f, gp->wo, gp->bo);
        attn_bwd(d, ws, b, L);
        rope_apply(ws, T, NH, HD, d->rot_dim, ws->dq, 1);
        rope_apply(ws, T, NKV, HD, d->rot_dim, ws->dk, 1);
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
