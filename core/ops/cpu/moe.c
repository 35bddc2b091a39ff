/* moe.c — the MoE router (scores, group-limited top-k, gathered weights) and
 * the routed experts (dispatch, per-expert SwiGLU MLP, weighted combine),
 * forward and backward.
 *
 * Semantics follow HF Glm4MoeMoE / DeepseekV3MoE (sigmoid, bias for the
 * choice only, group score = sum of the two best biased scores, masked_fill
 * 0.0, gather from unbiased scores, + 1e-20 renorm, scaling) and
 * Qwen3MoeSparseMoeBlock (softmax over all experts, top-k, optional renorm).
 *
 * Performance: the router's products are sgemms; the per-token selection is
 * K passes of argmax over E (K <= 8, cheaper than sorting E). Experts:
 * slots (token, k) are counting-sorted by expert so each expert's rows are
 * contiguous, inputs are gathered once, and each expert is three sgemms over
 * its rows (gate, up, down). When experts get few rows each (many experts,
 * few tokens) the experts run in an OpenMP loop, each on one thread;
 * otherwise one after another with qn_sgemm threading each product.
 * Combine/scatter are parallel over tokens through the tok_slot map, so no
 * two threads write the same row. Left out: capacity limits/token dropping,
 * auxiliary losses, expert-bias updates (not trained here).
 */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "core/ops/cpu/ops.h"

enum { MAX_E = QN_ROUTER_MAX_E, MAX_K = QN_ROUTER_MAX_K, MAX_GROUPS = QN_ROUTER_MAX_E };

/* ------------------------------------------------------------------ router */

static void route_token(const qn_router_cfg *cfg, float *sc /* E: logits in, scores out */,
                        int32_t *idx, float *wt) {
    int E = cfg->E, K = cfg->K;
    if (cfg->score == QN_ROUTER_SOFTMAX) {
        float m = -INFINITY;
        for (int e = 0; e < E; e++)
            m = sc[e] > m ? sc[e] : m;
        double sum = 0.0;
        for (int e = 0; e < E; e++) {
            float v = expf(sc[e] - m);
            sc[e] = v;
            sum += v;
        }
        float inv = (float)(1.0 / sum);
        for (int e = 0; e < E; e++)
            sc[e] *= inv;
    } else {
        for (int e = 0; e < E; e++)
            sc[e] = 1.0f / (1.0f + expf(-sc[e]));
    }
    float choice[MAX_E];
    for (int e = 0; e < E; e++)
        choice[e] = sc[e] + (cfg->bias ? cfg->bias[e] : 0.0f);
    if (cfg->n_group > 1) {
        int G = cfg->n_group, gs = E / G;
        float gscore[MAX_GROUPS];
        for (int g = 0; g < G; g++) {
            float a = -INFINITY, b = -INFINITY; /* best, second best */
            for (int j = 0; j < gs; j++) {
                float v = choice[g * gs + j];
                if (v > a) {
                    b = a;
                    a = v;
                } else if (v > b) {
                    b = v;
                }
            }
            gscore[g] = a + b;
        }
        unsigned char keep[MAX_GROUPS];
        memset(keep, 0, (size_t)G);
        for (int r = 0; r < cfg->topk_group && r < G; r++) {
            int best = -1;
            for (int g = 0; g < G; g++)
                if (!keep[g] && (best < 0 || gscore[g] > gscore[best])) best = g;
            keep[best] = 1;
        }
        for (int g = 0; g < G; g++)
            if (!keep[g])
                for (int j = 0; j < gs; j++)
                    choice[g * gs + j] = 0.0f;
    }
    unsigned char used[MAX_E];
    memset(used, 0, (size_t)E);
    float sum = 0.0f;
    for (int r = 0; r < K; r++) {
        int best = -1;
        for (int e = 0; e < E; e++)
            if (!used[e] && (best < 0 || choice[e] > choice[best])) best = e;
        used[best] = 1;
        idx[r] = best;
        wt[r] = sc[best];
        sum += sc[best];
    }
    float mul = cfg->routed_scaling_factor;
    if (cfg->norm_topk_prob) {
        float den = sum + 1e-20f;
        for (int r = 0; r < K; r++)
            wt[r] = wt[r] / den * mul;
    } else {
        for (int r = 0; r < K; r++)
            wt[r] *= mul;
    }
}

void qn_router_forward(const qn_router_cfg *cfg, int32_t *idx, float *weight, float *scores,
                       const float *x, const float *w, int T, int C) {
    if (T <= 0) return;
    qn_matmul_forward(scores, x, w, NULL, T, C, cfg->E);
#pragma omp parallel for schedule(static) if (T * cfg->E > 8192)
    for (int t = 0; t < T; t++)
        route_token(cfg, scores + (size_t)t * cfg->E, idx + (size_t)t * cfg->K,
                    weight + (size_t)t * cfg->K);
}

void qn_router_backward(const qn_router_cfg *cfg, float *dx, float *dw, const float *dweight,
                        const int32_t *idx, const float *scores, const float *x, const float *w,
                        int T, int C, int accumulate, float *scratch) {
    if (T <= 0) return;
    int E = cfg->E, K = cfg->K;
    float *dlog = scratch;
#pragma omp parallel for schedule(static) if (T * E > 8192)
    for (int t = 0; t < T; t++) {
        const float *s = scores + (size_t)t * E;
        const int32_t *id = idx + (size_t)t * K;
        const float *dwt = dweight + (size_t)t * K;
        float *dl = dlog + (size_t)t * E;
        float ds[MAX_K];
        float mul = cfg->routed_scaling_factor;
        if (cfg->norm_topk_prob) {
            /* w_k = mul s_k / S, S = sum_j s_j + 1e-20:
             * dL/ds_k = mul (g_k / S - sum_j g_j s_j / S^2) */
            double S = 1e-20, gs = 0.0;
            for (int k = 0; k < K; k++)
                S += s[id[k]];
            for (int k = 0; k < K; k++)
                gs += (double)dwt[k] * s[id[k]];
            for (int k = 0; k < K; k++)
                ds[k] = (float)(mul * (dwt[k] / S - gs / (S * S)));
        } else {
            for (int k = 0; k < K; k++)
                ds[k] = mul * dwt[k];
        }
        memset(dl, 0, (size_t)E * sizeof(float));
        if (cfg->score == QN_ROUTER_SOFTMAX) {
            /* dlogit_e = s_e (ds_e - sum_j ds_j s_j), ds nonzero on selected only */
            double dot = 0.0;
            for (int k = 0; k < K; k++)
                dot += (double)ds[k] * s[id[k]];
            for (int e = 0; e < E; e++)
                dl[e] = -s[e] * (float)dot;
            for (int k = 0; k < K; k++)
                dl[id[k]] += s[id[k]] * ds[k];
        } else {
            for (int k = 0; k < K; k++) {
                float v = s[id[k]];
                dl[id[k]] = ds[k] * v * (1.0f - v);
            }
        }
    }
    qn_matmul_backward(dx, dw, NULL, dlog, x, w, T, C, E, accumulate);
}

/* ----------------------------------------------------------------- experts */

size_t qn_moe_acts_floats(int T, int K, int C, int F) {
    size_t tk = (size_t)T * K;
    return tk * (2 * (size_t)C + 3 * (size_t)F);
}

size_t qn_moe_acts_ints(int T, int K, int E) {
    return (size_t)E + 1 + 2 * (size_t)T * K;
}

size_t qn_moe_scratch_floats(int T, int K, int C, int F) {
    size_t tk = (size_t)T * K;
    return tk * ((size_t)C + 2 * (size_t)F);
}

/* Experts run in parallel (one thread each, dynamic schedule) when there
 * are enough of them to keep every thread busy, or when rows per expert are
 * too few for splitting a product to pay; that is one parallel region per
 * call instead of several per expert. Few experts with many rows each (a
 * small test model) split every product instead. */
static int experts_in_parallel(int T, int K, int E) {
    int nt = omp_get_max_threads();
    return nt > 1 && (E >= 4 * nt || (size_t)T * K < (size_t)E * 64);
}

typedef struct moe_ctx {
    qn_moe_acts *a;
    const float *wg, *wu, *wd;
    float *dwg, *dwu, *dwd;
    float *dys, *dg, *du;
    int C, F;
} moe_ctx;

static void expert_fwd(const moe_ctx *m, int e) {
    const qn_moe_acts *a = m->a;
    int r0 = a->offsets[e], n = a->offsets[e + 1] - r0;
    if (n <= 0) return;
    int C = m->C, F = m->F;
    const float *xs = a->xs + (size_t)r0 * C;
    float *g = a->gate + (size_t)r0 * F, *u = a->up + (size_t)r0 * F;
    float *act = a->act + (size_t)r0 * F, *ys = a->ys + (size_t)r0 * C;
    qn_sgemm(0, 1, n, F, C, 1.0f, xs, C, m->wg + (size_t)e * F * C, C, 0.0f, g, F);
    qn_sgemm(0, 1, n, F, C, 1.0f, xs, C, m->wu + (size_t)e * F * C, C, 0.0f, u, F);
    for (size_t i = 0; i < (size_t)n * F; i++) {
        float s = 1.0f / (1.0f + expf(-g[i]));
        act[i] = g[i] * s * u[i];
    }
    qn_sgemm(0, 1, n, C, F, 1.0f, act, F, m->wd + (size_t)e * C * F, F, 0.0f, ys, C);
}

static void expert_bwd(const moe_ctx *m, int e) {
    const qn_moe_acts *a = m->a;
    int r0 = a->offsets[e], n = a->offsets[e + 1] - r0;
    if (n <= 0) return;
    int C = m->C, F = m->F;
    const float *xs = a->xs + (size_t)r0 * C;
    const float *g = a->gate + (size_t)r0 * F, *u = a->up + (size_t)r0 * F;
    const float *act = a->act + (size_t)r0 * F;
    float *dys = m->dys + (size_t)r0 * C;
    float *dg = m->dg + (size_t)r0 * F, *du = m->du + (size_t)r0 * F;
    const float *wg = m->wg + (size_t)e * F * C, *wu = m->wu + (size_t)e * F * C;
    const float *wd = m->wd + (size_t)e * C * F;
    if (m->dwd) qn_sgemm(1, 0, C, F, n, 1.0f, dys, C, act, F, 1.0f, m->dwd + (size_t)e * C * F, F);
    /* d act = dys W_down, then through silu(g) * u */
    qn_sgemm(0, 0, n, F, C, 1.0f, dys, C, wd, F, 0.0f, dg, F);
    for (size_t i = 0; i < (size_t)n * F; i++) {
        float s = 1.0f / (1.0f + expf(-g[i]));
        float da = dg[i];
        dg[i] = da * u[i] * s * (1.0f + g[i] * (1.0f - s));
        du[i] = da * g[i] * s;
    }
    if (m->dwg) qn_sgemm(1, 0, F, C, n, 1.0f, dg, F, xs, C, 1.0f, m->dwg + (size_t)e * F * C, C);
    if (m->dwu) qn_sgemm(1, 0, F, C, n, 1.0f, du, F, xs, C, 1.0f, m->dwu + (size_t)e * F * C, C);
    /* d xs = dg W_gate + du W_up, written over dys (no longer needed) */
    qn_sgemm(0, 0, n, C, F, 1.0f, dg, F, wg, C, 0.0f, dys, C);
    qn_sgemm(0, 0, n, C, F, 1.0f, du, F, wu, C, 1.0f, dys, C);
}

static void run_experts(const moe_ctx *m, int E, int par, void (*f)(const moe_ctx *, int)) {
    if (par) {
#pragma omp parallel for schedule(dynamic, 1)
        for (int e = 0; e < E; e++)
            f(m, e);
    } else {
        for (int e = 0; e < E; e++)
            f(m, e);
    }
}

void qn_moe_forward(float *out, qn_moe_acts *acts, const float *x, const int32_t *idx,
                    const float *weight, const float *w_gate, const float *w_up,
                    const float *w_down, int T, int C, int F, int E, int K, int accumulate) {
    int TK = T * K;
    int32_t *off = acts->offsets;
    memset(off, 0, (size_t)(E + 1) * sizeof(int32_t));
    for (int i = 0; i < TK; i++)
        off[idx[i] + 1]++;
    for (int e = 0; e < E; e++)
        off[e + 1] += off[e];
    /* stable counting sort: within an expert, slots keep token order.
     * off[e] serves as expert e's fill cursor, then is shifted back. */
    for (int i = 0; i < TK; i++) {
        int e = idx[i];
        int slot = off[e]++;
        acts->tok_slot[i] = slot;
        acts->slot_tok[slot] = i / K;
    }
    for (int e = E; e > 0; e--)
        off[e] = off[e - 1];
    off[0] = 0;
#pragma omp parallel for schedule(static) if ((size_t)TK * C > 65536)
    for (int sl = 0; sl < TK; sl++)
        memcpy(acts->xs + (size_t)sl * C, x + (size_t)acts->slot_tok[sl] * C,
               (size_t)C * sizeof(float));
    moe_ctx m = {.a = acts, .wg = w_gate, .wu = w_up, .wd = w_down, .C = C, .F = F};
    run_experts(&m, E, experts_in_parallel(T, K, E), expert_fwd);
#pragma omp parallel for schedule(static) if ((size_t)T * C > 65536)
    for (int t = 0; t < T; t++) {
        float *o = out + (size_t)t * C;
        if (!accumulate) memset(o, 0, (size_t)C * sizeof(float));
        for (int k = 0; k < K; k++) {
            float wt = weight[(size_t)t * K + k];
            const float *y = acts->ys + (size_t)acts->tok_slot[(size_t)t * K + k] * C;
            for (int c = 0; c < C; c++)
                o[c] += wt * y[c];
        }
    }
}

void qn_moe_backward(float *dx, float *dweight, float *dw_gate, float *dw_up, float *dw_down,
                     const float *dout, const qn_moe_acts *acts, const float *weight,
                     const float *w_gate, const float *w_up, const float *w_down, int T, int C,
                     int F, int E, int K, int accumulate, float *scratch) {
    size_t TK = (size_t)T * K;
    float *dys = scratch, *dg = scratch + TK * C, *du = dg + TK * F;
#pragma omp parallel for schedule(static) if ((size_t)T * C > 65536)
    for (int t = 0; t < T; t++) {
        const float *d = dout + (size_t)t * C;
        for (int k = 0; k < K; k++) {
            size_t sl = (size_t)acts->tok_slot[(size_t)t * K + k];
            const float *y = acts->ys + sl * C;
            float *dy = dys + sl * C;
            float wt = weight[(size_t)t * K + k];
            double dot = 0.0;
            for (int c = 0; c < C; c++) {
                dot += (double)d[c] * y[c];
                dy[c] = wt * d[c];
            }
            dweight[(size_t)t * K + k] = (float)dot;
        }
    }
    moe_ctx m = {.a = (qn_moe_acts *)acts,
                 .wg = w_gate,
                 .wu = w_up,
                 .wd = w_down,
                 .dwg = dw_gate,
                 .dwu = dw_up,
                 .dwd = dw_down,
                 .dys = dys,
                 .dg = dg,
                 .du = du,
                 .C = C,
                 .F = F};
    run_experts(&m, E, experts_in_parallel(T, K, E), expert_bwd);
    if (!dx) return;
#pragma omp parallel for schedule(static) if ((size_t)T * C > 65536)
    for (int t = 0; t < T; t++) {
        float *o = dx + (size_t)t * C;
        if (!accumulate) memset(o, 0, (size_t)C * sizeof(float));
        for (int k = 0; k < K; k++) {
            const float *g = dys + (size_t)acts->tok_slot[(size_t)t * K + k] * C;
            for (int c = 0; c < C; c++)
                o[c] += g[c];
        }
    }
}
