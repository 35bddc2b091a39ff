/* ops_moe.c — harness cases for core/ops/cuda/moe.h (router, permutation,
 * routed experts, forward and backward) against core/ops/cpu/moe.c.
 *
 * Router selection is compared EXACTLY (qn_h_compare_i32), so its inputs
 * are chosen to make both sides compute bit-identical choice values:
 *   router_select  logits given directly, on a 1/64 grid (distinct logits
 *                  are far apart, equal logits are exact ties), bias on a
 *                  1/8 grid; the CPU reference is qn_router_forward with
 *                  x = logits and w = identity (an exact product);
 *   router_fwd     x and w on a 1/16 grid with |v| <= 1: every product and
 *                  partial sum is exact in fp32 (and bf16 holds the inputs),
 *                  so the GEMM's summation order cannot change a logit.
 * Variants: sigmoid and softmax, with and without bias, group-limited
 * (DeepSeek-V3-like 8 groups / 4 kept), E = 1024 with K = 64, K == E,
 * E not a power of two, and "ties" cases whose logits come from a set of
 * four values, so that experts and groups tie everywhere (lower index wins).
 * The one expected difference: expf on the GPU and in glibc may differ by
 * an ulp, so two DISTINCT sigmoid/softmax values can in principle compare
 * the other way; a mismatch where the two choice values differ by less than
 * 1e-6 is counted and printed as a near-tie, never when they are equal.
 *
 * Permutation: offsets, slot_tok, tok_slot compared exactly with the CPU's
 * (qn_moe_forward with C = F = 1), including experts with no tokens and one
 * expert taking every slot. MoE forward/backward: outputs, saved
 * activations, dx, dweight and the three weight gradients, with
 * accumulate on and off and gradients skipped (NULL). A GLM-4.5-Air-like
 * layer (hidden 4096, 128 experts, top 8, moe_intermediate 1408, T = 4096,
 * bf16) runs with --perf; it needs about 15.5 GiB of arena (the default
 * 16 GiB; it says which QN_OPS_ARENA_MB to set otherwise) and checks the
 * first 64 tokens against the CPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/ops/cpu/ops.h"
#include "core/ops/cuda/moe.h"
#include "tests/gpu/ops/families.h"

static const qn_dtype k_dts[] = {QN_DTYPE_F32, QN_DTYPE_BF16};
#define N_DTS ((int)(sizeof k_dts / sizeof k_dts[0]))

/* n values k / den with k uniform in [-kmax, kmax]. */
static float *rand_grid(qn_harness *h, size_t n, int kmax, float den) {
    float *u = qn_h_rand(h, n, 0.0f, 1.0f);
    for (size_t i = 0; i < n; i++) {
        int k = (int)(u[i] * (float)(2 * kmax + 1)) - kmax;
        if (k > kmax) k = kmax;
        u[i] = (float)k / den;
    }
    return u;
}

/* idx[T, K]: K distinct experts per token (a partial shuffle), or, with
 * skew, drawn from the first few experts more often so some get none. */
static int32_t *rand_idx(qn_harness *h, int T, int K, int E, int skew) {
    int32_t *idx = qn_h_host(h, (size_t)T * K * sizeof *idx);
    int32_t *perm = qn_h_host(h, (size_t)E * sizeof *perm);
    float *u = qn_h_rand(h, (size_t)T * K, 0.0f, 1.0f);
    for (int t = 0; t < T; t++) {
        for (int e = 0; e < E; e++)
            perm[e] = e;
        int lim = skew && E > 2 * K ? 2 * K : E; /* skew: only the first 2K experts */
        for (int k = 0; k < K; k++) {
            int j = k + (int)(u[(size_t)t * K + k] * (float)(lim - k));
            if (j >= lim) j = lim - 1;
            int32_t tmp = perm[k];
            perm[k] = perm[j];
            perm[j] = tmp;
            idx[(size_t)t * K + k] = perm[k];
        }
    }
    return idx;
}

/* ------------------------------------------------------------------ router */

typedef struct {
    const char *name;
    int E, K, n_group, topk_group;
    qn_router_score score;
    int norm;
    float factor;
    int bias, ties;
} router_variant;

static const router_variant k_variants[] = {
    {"glm-air", 128, 8, 1, 1, QN_ROUTER_SIGMOID, 1, 1.0f, 1, 0},
    {"dsv3-groups", 64, 6, 8, 4, QN_ROUTER_SIGMOID, 1, 2.5f, 1, 0},
    {"sigmoid-nobias-nonorm", 40, 3, 1, 1, QN_ROUTER_SIGMOID, 0, 1.5f, 0, 0},
    {"qwen-softmax", 60, 4, 1, 1, QN_ROUTER_SOFTMAX, 0, 1.0f, 0, 0},
    {"softmax-norm-k=e", 16, 16, 1, 1, QN_ROUTER_SOFTMAX, 1, 1.0f, 0, 0},
    {"max-e-k", 1024, 64, 32, 8, QN_ROUTER_SIGMOID, 1, 1.0f, 1, 0},
    {"ties-sigmoid-groups", 32, 4, 8, 3, QN_ROUTER_SIGMOID, 1, 1.0f, 0, 1},
    {"ties-softmax", 24, 5, 1, 1, QN_ROUTER_SOFTMAX, 1, 1.0f, 0, 1},
    {"ties-bias-groups", 48, 8, 6, 2, QN_ROUTER_SIGMOID, 1, 2.0f, 1, 1},
};
#define N_VARIANTS ((int)(sizeof k_variants / sizeof k_variants[0]))

static qn_router_cfg make_cfg(const router_variant *v, const float *bias) {
    qn_router_cfg c = {.E = v->E,
                       .K = v->K,
                       .n_group = v->n_group,
                       .topk_group = v->topk_group,
                       .score = v->score,
                       .norm_topk_prob = v->norm,
                       .routed_scaling_factor = v->factor,
                       .bias = bias};
    return c;
}

/* Exact comparison of idx with the near-tie allowance described at the top:
 * choice = score + bias of the CPU. */
static void compare_idx(qn_harness *h, const int32_t *ref, const void *dev, const float *scores,
                        const float *bias, int T, int K, int E) {
    size_t n = (size_t)T * K;
    float *got = qn_h_fetch(h, QN_DTYPE_I32, dev, n);
    if (!got) return;
    int near = 0;
    for (size_t i = 0; i < n; i++) {
        int g = (int)got[i], r = ref[i];
        if (g == r) continue;
        size_t t = i / (size_t)K;
        if (g < 0 || g >= E) {
            qn_h_fail(h, "idx[%zu] = %d out of range", i, g);
            return;
        }
        float cg = scores[t * E + g] + (bias ? bias[g] : 0.0f);
        float cr = scores[t * E + r] + (bias ? bias[r] : 0.0f);
        if (cg != cr && fabsf(cg - cr) <= 1e-6f * fmaxf(fabsf(cg), fabsf(cr))) {
            near++;
            continue;
        }
        qn_h_fail(h, "idx: token %zu slot %zu: CPU picks %d (choice %.9g), GPU %d (choice %.9g)", t,
                  i % (size_t)K, r, cr, g, cg);
        return;
    }
    if (near) printf("  note: %d near-tie picks differ by an expf ulp\n", near);
}

typedef struct {
    qn_cuda_ctx *c;
    qn_dtype dt;
    qn_router_cfg cfg;
    int32_t *idx;
    float *wt, *sc, *dw, *dwt;
    void *x, *w, *dx;
    int T, C, acc;
} router_args;

static qn_status rsel_launch(void *p) {
    router_args *a = p;
    return qn_cuda_router_select(a->c, &a->cfg, a->idx, a->wt, a->sc, a->T);
}
static qn_status rfwd_launch(void *p) {
    router_args *a = p;
    return qn_cuda_router_forward(a->c, a->dt, &a->cfg, a->idx, a->wt, a->sc, a->x, a->w, a->T,
                                  a->C);
}
static qn_status rbwd_launch(void *p) {
    router_args *a = p;
    return qn_cuda_router_backward(a->c, a->dt, &a->cfg, a->dx, a->dw, a->dwt, a->idx, a->sc, a->x,
                                   a->w, a->T, a->C, a->acc);
}

static void test_router_select(qn_harness *h) {
    static const int Ts[] = {1, 37, 300};
    for (int vi = 0; vi < N_VARIANTS; vi++) {
        const router_variant *v = &k_variants[vi];
        for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
            int T = Ts[ti], E = v->E, K = v->K;
            if (!qn_h_case(h, "router_select", "%s T=%d E=%d K=%d", v->name, T, E, K)) continue;
            size_t TE = (size_t)T * E, TK = (size_t)T * K;
            float *logits = v->ties ? rand_grid(h, TE, 2, 2.0f) /* {-1, -.5, 0, .5, 1} */
                                    : rand_grid(h, TE, 256, 64.0f);
            float *bias = v->bias ? rand_grid(h, (size_t)E, 4, 8.0f) : NULL;
            float *eye = qn_h_host(h, (size_t)E * E * sizeof(float));
            for (int e = 0; e < E; e++)
                eye[(size_t)e * E + e] = 1.0f;
            int32_t *ridx = qn_h_host(h, TK * sizeof *ridx);
            float *rwt = qn_h_host(h, TK * sizeof(float)), *rsc = qn_h_host(h, TE * sizeof(float));
            qn_router_cfg cpu = make_cfg(v, bias);
            qn_router_forward(&cpu, ridx, rwt, rsc, logits, eye, T, E);
            router_args a = {.c = qn_h_ctx(h), .dt = QN_DTYPE_F32, .T = T};
            a.cfg = make_cfg(v, bias ? qn_h_in(h, QN_DTYPE_F32, bias, (size_t)E) : NULL);
            a.idx = qn_h_out(h, QN_DTYPE_I32, TK);
            a.wt = qn_h_out(h, QN_DTYPE_F32, TK);
            a.sc = qn_h_out_init(h, QN_DTYPE_F32, logits, TE);
            QN_H_TRY(h, rsel_launch(&a));
            compare_idx(h, ridx, a.idx, rsc, bias, T, K, E);
            qn_h_compare(h, "weight", QN_DTYPE_F32, rwt, a.wt, TK,
                         qn_h_tol(QN_DTYPE_F32, QN_H_TOL_NORM));
            qn_h_compare(h, "scores", QN_DTYPE_F32, rsc, a.sc, TE,
                         qn_h_tol(QN_DTYPE_F32, QN_H_TOL_NORM));
        }
    }
}

static void test_router_fwd_bwd(qn_harness *h) {
    static const int shapes[][2] = {{1, 64}, {50, 200}, {513, 96}}; /* T, C */
    const int vsel[] = {0, 1, 3, 4, 6};
    for (int di = 0; di < N_DTS; di++) {
        qn_dtype dt = k_dts[di];
        for (size_t vj = 0; vj < sizeof vsel / sizeof vsel[0]; vj++) {
            const router_variant *v = &k_variants[vsel[vj]];
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
                int T = shapes[s][0], C = shapes[s][1], E = v->E, K = v->K;
                size_t TC = (size_t)T * C, EC = (size_t)E * C, TE = (size_t)T * E;
                size_t TK = (size_t)T * K;
                if (qn_h_case(h, "router_fwd", "%s T=%d C=%d E=%d K=%d %s", v->name, T, C, E, K,
                              qn_h_dtname(dt))) {
                    float *x = rand_grid(h, TC, 16, 16.0f), *w = rand_grid(h, EC, 16, 16.0f);
                    float *bias = v->bias ? rand_grid(h, (size_t)E, 4, 8.0f) : NULL;
                    int32_t *ridx = qn_h_host(h, TK * sizeof *ridx);
                    float *rwt = qn_h_host(h, TK * sizeof(float));
                    float *rsc = qn_h_host(h, TE * sizeof(float));
                    qn_router_cfg cpu = make_cfg(v, bias);
                    qn_router_forward(&cpu, ridx, rwt, rsc, x, w, T, C);
                    router_args a = {.c = qn_h_ctx(h), .dt = dt, .T = T, .C = C};
                    a.cfg = make_cfg(v, bias ? qn_h_in(h, QN_DTYPE_F32, bias, (size_t)E) : NULL);
                    a.x = qn_h_in(h, dt, x, TC);
                    a.w = qn_h_in(h, dt, w, EC);
                    a.idx = qn_h_out(h, QN_DTYPE_I32, TK);
                    a.wt = qn_h_out(h, QN_DTYPE_F32, TK);
                    a.sc = qn_h_out(h, QN_DTYPE_F32, TE);
                    QN_H_TRY(h, rfwd_launch(&a));
                    compare_idx(h, ridx, a.idx, rsc, bias, T, K, E);
                    qn_h_compare(h, "weight", QN_DTYPE_F32, rwt, a.wt, TK,
                                 qn_h_tol(QN_DTYPE_F32, QN_H_TOL_NORM));
                    qn_h_compare(h, "scores", QN_DTYPE_F32, rsc, a.sc, TE,
                                 qn_h_tol(QN_DTYPE_F32, QN_H_TOL_NORM));
                    qn_h_perf(h, (double)(TC + EC) * qn_dtype_size(dt) + TE * 4.0, 2.0 * T * E * C,
                              rfwd_launch, &a);
                }
                for (int acc = 0; acc < 2; acc++) {
                    if (!qn_h_case(h, "router_bwd", "%s T=%d C=%d E=%d K=%d acc=%d %s", v->name, T,
                                   C, E, K, acc, qn_h_dtname(dt)))
                        continue;
                    float *x = qn_h_rand_dt(h, dt, TC, -1, 1), *w = qn_h_rand_dt(h, dt, EC, -1, 1);
                    float *bias = v->bias ? qn_h_rand(h, (size_t)E, -0.5f, 0.5f) : NULL;
                    int32_t *idx = qn_h_host(h, TK * sizeof *idx);
                    float *wt = qn_h_host(h, TK * sizeof(float));
                    float *sc = qn_h_host(h, TE * sizeof(float));
                    qn_router_cfg cpu = make_cfg(v, bias);
                    qn_router_forward(&cpu, idx, wt, sc, x, w, T, C);
                    float *dwt = qn_h_rand(h, TK, -1, 1);
                    float *dx0 = qn_h_rand_dt(h, dt, TC, -1, 1), *dw0 = qn_h_rand(h, EC, -1, 1);
                    float *rdx = qn_h_copy(h, dx0, TC), *rdw = qn_h_copy(h, dw0, EC);
                    float *scr = qn_h_host(h, TE * sizeof(float));
                    qn_router_backward(&cpu, rdx, rdw, dwt, idx, sc, x, w, T, C, acc, scr);
                    router_args a = {.c = qn_h_ctx(h), .dt = dt, .T = T, .C = C, .acc = acc};
                    a.cfg = make_cfg(v, NULL); /* the backward never reads the bias */
                    a.x = qn_h_in(h, dt, x, TC);
                    a.w = qn_h_in(h, dt, w, EC);
                    a.idx = qn_h_in_raw(h, idx, TK * sizeof *idx);
                    a.sc = qn_h_in(h, QN_DTYPE_F32, sc, TE);
                    a.dwt = qn_h_in(h, QN_DTYPE_F32, dwt, TK);
                    a.dx = acc ? qn_h_out_init(h, dt, dx0, TC) : qn_h_out(h, dt, TC);
                    a.dw = qn_h_out_init(h, QN_DTYPE_F32, dw0, EC);
                    QN_H_TRY(h, rbwd_launch(&a));
                    double tol = qn_h_tol(dt, QN_H_TOL_GRAD);
                    qn_h_compare(h, "dx", dt, rdx, a.dx, TC, tol);
                    qn_h_compare(h, "dw", QN_DTYPE_F32, rdw, a.dw, EC, tol);
                    qn_h_perf(h, (double)(2 * TC + EC) * qn_dtype_size(dt) + EC * 8.0,
                              4.0 * T * E * C, rbwd_launch, &a);
                }
            }
        }
    }
}

/* ------------------------------------------------------------- permutation */

/* The CPU's permutation, from qn_moe_forward on 1-wide experts. */
static void cpu_permute(qn_harness *h, qn_moe_acts *ra, const int32_t *idx, int T, int K, int E) {
    size_t TK = (size_t)T * K;
    ra->offsets = qn_h_host(h, (size_t)(E + 1) * sizeof(int32_t));
    ra->slot_tok = qn_h_host(h, TK * sizeof(int32_t));
    ra->tok_slot = qn_h_host(h, TK * sizeof(int32_t));
    float *fl = qn_h_host(h, qn_moe_acts_floats(T, K, 1, 1) * sizeof(float));
    ra->xs = fl;
    ra->gate = fl + TK;
    ra->up = fl + 2 * TK;
    ra->act = fl + 3 * TK;
    ra->ys = fl + 4 * TK;
    float *x = qn_h_host(h, (size_t)T * sizeof(float)), *wt = qn_h_host(h, TK * sizeof(float));
    float *wexp = qn_h_host(h, (size_t)E * sizeof(float)), *out = qn_h_host(h, (size_t)T * 4);
    qn_moe_forward(out, ra, x, idx, wt, wexp, wexp, wexp, T, 1, 1, E, K, 0);
}

static void test_permute(qn_harness *h) {
    static const int shapes[][4] = {/* T, K, E, skew */
                                    {1, 1, 1, 0},     {1, 8, 128, 0},  {37, 2, 8, 0},
                                    {300, 8, 128, 1}, {1000, 4, 4, 0}, {513, 6, 1024, 0},
                                    {4096, 8, 128, 0}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int T = shapes[s][0], K = shapes[s][1], E = shapes[s][2], skew = shapes[s][3];
        if (!qn_h_case(h, "moe_permute", "T=%d K=%d E=%d%s", T, K, E, skew ? " skewed" : ""))
            continue;
        size_t TK = (size_t)T * K;
        int32_t *idx = rand_idx(h, T, K, E, skew);
        qn_moe_acts ra;
        cpu_permute(h, &ra, idx, T, K, E);
        qn_cuda_moe_acts a = {0};
        a.offsets = qn_h_out(h, QN_DTYPE_I32, (size_t)E + 1);
        a.slot_tok = qn_h_out(h, QN_DTYPE_I32, TK);
        a.tok_slot = qn_h_out(h, QN_DTYPE_I32, TK);
        QN_H_TRY(h, qn_cuda_moe_permute(qn_h_ctx(h), &a, qn_h_in_raw(h, idx, TK * 4), T, K, E));
        qn_h_compare_i32(h, "offsets", ra.offsets, a.offsets, (size_t)E + 1);
        qn_h_compare_i32(h, "slot_tok", ra.slot_tok, a.slot_tok, TK);
        qn_h_compare_i32(h, "tok_slot", ra.tok_slot, a.tok_slot, TK);
    }
    /* every slot to one expert (stable order across all tokens) */
    if (qn_h_case(h, "moe_permute", "T=77 K=1 E=16 all-to-expert-9")) {
        int T = 77, K = 1, E = 16;
        int32_t *idx = qn_h_host(h, (size_t)T * sizeof *idx);
        for (int t = 0; t < T; t++)
            idx[t] = 9;
        qn_moe_acts ra;
        cpu_permute(h, &ra, idx, T, K, E);
        qn_cuda_moe_acts a = {0};
        a.offsets = qn_h_out(h, QN_DTYPE_I32, (size_t)E + 1);
        a.slot_tok = qn_h_out(h, QN_DTYPE_I32, (size_t)T);
        a.tok_slot = qn_h_out(h, QN_DTYPE_I32, (size_t)T);
        QN_H_TRY(h,
                 qn_cuda_moe_permute(qn_h_ctx(h), &a, qn_h_in_raw(h, idx, (size_t)T * 4), T, K, E));
        qn_h_compare_i32(h, "offsets", ra.offsets, a.offsets, (size_t)E + 1);
        qn_h_compare_i32(h, "slot_tok", ra.slot_tok, a.slot_tok, (size_t)T);
        qn_h_compare_i32(h, "tok_slot", ra.tok_slot, a.tok_slot, (size_t)T);
    }
}

/* ----------------------------------------------------------------- experts */

typedef struct {
    qn_cuda_ctx *c;
    qn_dtype dt;
    qn_cuda_moe_acts acts;
    void *out, *x, *wg, *wu, *wd, *dx, *dout;
    int32_t *idx;
    float *wt, *dwt, *dwg, *dwu, *dwd;
    int T, C, F, E, K, acc;
} moe_args;

static qn_status moe_fwd_launch(void *p) {
    moe_args *a = p;
    return qn_cuda_moe_forward(a->c, a->dt, a->out, &a->acts, a->x, a->idx, a->wt, a->wg, a->wu,
                               a->wd, a->T, a->C, a->F, a->E, a->K, a->acc);
}
static qn_status moe_bwd_launch(void *p) {
    moe_args *a = p;
    return qn_cuda_moe_backward(a->c, a->dt, a->dx, a->dwt, a->dwg, a->dwu, a->dwd, a->dout,
                                &a->acts, a->wt, a->wg, a->wu, a->wd, a->T, a->C, a->F, a->E, a->K,
                                a->acc);
}

/* CPU acts for T, K, C, F, E in case-owned host memory. */
static void cpu_acts(qn_harness *h, qn_moe_acts *ra, int T, int K, int C, int F, int E) {
    size_t TK = (size_t)T * K;
    int32_t *in = qn_h_host(h, qn_moe_acts_ints(T, K, E) * sizeof(int32_t));
    float *fl = qn_h_host(h, qn_moe_acts_floats(T, K, C, F) * sizeof(float));
    ra->offsets = in;
    ra->slot_tok = in + E + 1;
    ra->tok_slot = ra->slot_tok + TK;
    ra->xs = fl;
    ra->gate = ra->xs + TK * C;
    ra->up = ra->gate + TK * F;
    ra->act = ra->up + TK * F;
    ra->ys = ra->act + TK * F;
}

/* Device acts carved out of one arena block owned by the case. */
static int dev_acts(qn_harness *h, qn_cuda_moe_acts *a, qn_dtype dt, int T, int K, int C, int F,
                    int E) {
    size_t bytes = qn_cuda_moe_acts_bytes(dt, T, K, C, F, E);
    void *base = qn_cuda_alloc(qn_h_ctx(h), bytes);
    if (!base) {
        qn_h_fail(h, "acts: %zu bytes do not fit the arena", bytes);
        return 0;
    }
    if (qn_cuda_moe_acts_carve(dt, base, bytes, T, K, C, F, E, a) != QN_OK) {
        qn_h_fail(h, "carve: %s", qn_last_error());
        return 0;
    }
    return 1;
}

static void test_moe(qn_harness *h) {
    static const int shapes[][6] = {/* T, C, F, E, K, skew */
                                    {1, 32, 48, 4, 2, 0},    {37, 64, 40, 8, 2, 0},
                                    {200, 96, 80, 16, 4, 1}, {300, 128, 72, 64, 8, 0},
                                    {129, 70, 130, 6, 6, 0}, {65, 33, 17, 128, 8, 1}};
    for (int di = 0; di < N_DTS; di++) {
        qn_dtype dt = k_dts[di];
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int T = shapes[s][0], C = shapes[s][1], F = shapes[s][2], E = shapes[s][3];
            int K = shapes[s][4], skew = shapes[s][5];
            size_t TC = (size_t)T * C, TK = (size_t)T * K, EFC = (size_t)E * F * C;
            float wr = 2.0f / sqrtf((float)C), wr2 = 2.0f / sqrtf((float)F);
            for (int acc = 0; acc < 2; acc++) {
                if (!qn_h_case(h, "moe_fwd", "T=%d C=%d F=%d E=%d K=%d acc=%d%s %s", T, C, F, E, K,
                               acc, skew ? " skewed" : "", qn_h_dtname(dt)))
                    continue;
                float *x = qn_h_rand_dt(h, dt, TC, -1, 1);
                float *wg = qn_h_rand_dt(h, dt, EFC, -wr, wr),
                      *wu = qn_h_rand_dt(h, dt, EFC, -wr, wr);
                float *wd = qn_h_rand_dt(h, dt, EFC, -wr2, wr2);
                int32_t *idx = rand_idx(h, T, K, E, skew);
                float *wt = qn_h_rand(h, TK, 0, 1);
                float *out0 = qn_h_rand_dt(h, dt, TC, -1, 1), *ref = qn_h_copy(h, out0, TC);
                qn_moe_acts ra;
                cpu_acts(h, &ra, T, K, C, F, E);
                qn_moe_forward(ref, &ra, x, idx, wt, wg, wu, wd, T, C, F, E, K, acc);
                moe_args a = {
                    .c = qn_h_ctx(h), .dt = dt, .T = T, .C = C, .F = F, .E = E, .K = K, .acc = acc};
                if (!dev_acts(h, &a.acts, dt, T, K, C, F, E)) continue;
                a.x = qn_h_in(h, dt, x, TC);
                a.wg = qn_h_in(h, dt, wg, EFC);
                a.wu = qn_h_in(h, dt, wu, EFC);
                a.wd = qn_h_in(h, dt, wd, EFC);
                a.idx = qn_h_in_raw(h, idx, TK * 4);
                a.wt = qn_h_in(h, QN_DTYPE_F32, wt, TK);
                a.out = acc ? qn_h_out_init(h, dt, out0, TC) : qn_h_out(h, dt, TC);
                QN_H_TRY(h, moe_fwd_launch(&a));
                qn_h_compare(h, "out", dt, ref, a.out, TC, qn_h_tol(dt, QN_H_TOL_REDUCE));
                qn_h_compare_i32(h, "offsets", ra.offsets, a.acts.offsets, (size_t)E + 1);
                qn_h_compare_i32(h, "tok_slot", ra.tok_slot, a.acts.tok_slot, TK);
                qn_h_compare(h, "xs", dt, ra.xs, a.acts.xs, TK * C, 0.0); /* a gather: exact */
                qn_h_compare(h, "act", dt, ra.act, a.acts.act, TK * F,
                             qn_h_tol(dt, QN_H_TOL_REDUCE));
                qn_h_compare(h, "ys", dt, ra.ys, a.acts.ys, TK * C, qn_h_tol(dt, QN_H_TOL_REDUCE));
                qn_h_perf(h, (double)(2 * TC + 3 * EFC) * qn_dtype_size(dt), 6.0 * TK * C * F,
                          moe_fwd_launch, &a);
            }
            for (int mode = 0; mode < 3; mode++) {
                /* 0: every gradient, dx written; 1: dx accumulated; 2: dx and
                 * dw_up skipped (NULL) */
                if (!qn_h_case(h, "moe_bwd", "T=%d C=%d F=%d E=%d K=%d mode=%d%s %s", T, C, F, E, K,
                               mode, skew ? " skewed" : "", qn_h_dtname(dt)))
                    continue;
                float *x = qn_h_rand_dt(h, dt, TC, -1, 1);
                float *wg = qn_h_rand_dt(h, dt, EFC, -wr, wr),
                      *wu = qn_h_rand_dt(h, dt, EFC, -wr, wr);
                float *wd = qn_h_rand_dt(h, dt, EFC, -wr2, wr2);
                int32_t *idx = rand_idx(h, T, K, E, skew);
                float *wt = qn_h_rand(h, TK, 0, 1);
                float *dout = qn_h_rand_dt(h, dt, TC, -1, 1);
                float *dx0 = qn_h_rand_dt(h, dt, TC, -1, 1), *rdx = qn_h_copy(h, dx0, TC);
                float *dg0 = qn_h_rand(h, EFC, -1, 1), *rdg = qn_h_copy(h, dg0, EFC);
                float *du0 = qn_h_rand(h, EFC, -1, 1), *rdu = qn_h_copy(h, du0, EFC);
                float *dd0 = qn_h_rand(h, EFC, -1, 1), *rdd = qn_h_copy(h, dd0, EFC);
                float *rdwt = qn_h_host(h, TK * sizeof(float));
                float *out = qn_h_host(h, TC * sizeof(float));
                qn_moe_acts ra;
                cpu_acts(h, &ra, T, K, C, F, E);
                qn_moe_forward(out, &ra, x, idx, wt, wg, wu, wd, T, C, F, E, K, 0);
                float *scr = qn_h_host(h, qn_moe_scratch_floats(T, K, C, F) * sizeof(float));
                qn_moe_backward(mode == 2 ? NULL : rdx, rdwt, rdg, mode == 2 ? NULL : rdu, rdd,
                                dout, &ra, wt, wg, wu, wd, T, C, F, E, K, mode == 1, scr);
                moe_args a = {.c = qn_h_ctx(h),
                              .dt = dt,
                              .T = T,
                              .C = C,
                              .F = F,
                              .E = E,
                              .K = K,
                              .acc = mode == 1};
                if (!dev_acts(h, &a.acts, dt, T, K, C, F, E)) continue;
                a.x = qn_h_in(h, dt, x, TC);
                a.wg = qn_h_in(h, dt, wg, EFC);
                a.wu = qn_h_in(h, dt, wu, EFC);
                a.wd = qn_h_in(h, dt, wd, EFC);
                a.idx = qn_h_in_raw(h, idx, TK * 4);
                a.wt = qn_h_in(h, QN_DTYPE_F32, wt, TK);
                a.out = qn_h_out(h, dt, TC);
                a.acc = 0;
                QN_H_TRY(h, moe_fwd_launch(&a)); /* the GPU's own saved activations */
                a.acc = mode == 1;
                a.dout = qn_h_in(h, dt, dout, TC);
                if (mode != 2)
                    a.dx = mode == 1 ? qn_h_out_init(h, dt, dx0, TC) : qn_h_out(h, dt, TC);
                a.dwt = qn_h_out(h, QN_DTYPE_F32, TK);
                a.dwg = qn_h_out_init(h, QN_DTYPE_F32, dg0, EFC);
                if (mode != 2) a.dwu = qn_h_out_init(h, QN_DTYPE_F32, du0, EFC);
                a.dwd = qn_h_out_init(h, QN_DTYPE_F32, dd0, EFC);
                QN_H_TRY(h, moe_bwd_launch(&a));
                double tol = qn_h_tol(dt, QN_H_TOL_GRAD);
                if (a.dx) qn_h_compare(h, "dx", dt, rdx, a.dx, TC, tol);
                qn_h_compare(h, "dweight", QN_DTYPE_F32, rdwt, a.dwt, TK, tol);
                qn_h_compare(h, "dw_gate", QN_DTYPE_F32, rdg, a.dwg, EFC, tol);
                if (a.dwu) qn_h_compare(h, "dw_up", QN_DTYPE_F32, rdu, a.dwu, EFC, tol);
                qn_h_compare(h, "dw_down", QN_DTYPE_F32, rdd, a.dwd, EFC, tol);
                qn_h_perf(h, (double)(3 * TC + 3 * EFC) * qn_dtype_size(dt) + 3 * EFC * 8.0,
                          12.0 * TK * C * F, moe_bwd_launch, &a);
            }
        }
    }
}

/* GLM-4.5-Air-like MoE layer, bf16, with --perf only. The first 64 tokens
 * are checked against the CPU (rows are independent in the forward). */
static void test_moe_glm_air(qn_harness *h) {
    if (!qn_h_perf_mode(h)) return;
    const qn_dtype dt = QN_DTYPE_BF16;
    int T = 4096, C = 4096, F = 1408, E = 128, K = 8, TS = 64;
    if (!qn_h_case(h, "moe_glm_air", "T=%d C=%d F=%d E=%d K=%d bf16", T, C, F, E, K)) return;
    size_t TC = (size_t)T * C, TK = (size_t)T * K, EFC = (size_t)E * F * C;
    size_t need = 3 * EFC * 2 + 3 * EFC * 4 + qn_cuda_moe_acts_bytes(dt, T, K, C, F, E) +
                  qn_cuda_moe_bwd_scratch_bytes(dt, T, K, C, F, E) + 4 * TC * 2;
    if (qn_cuda_arena_cap(qn_h_ctx(h)) < need + ((size_t)1 << 30)) {
        qn_h_fail(h, "needs about %zu MiB of arena: run with QN_OPS_ARENA_MB=%zu",
                  (need >> 20) + 1024, (need >> 20) + 2048);
        return;
    }
    float wr = 2.0f / sqrtf((float)C), wr2 = 2.0f / sqrtf((float)F);
    float *x = qn_h_rand_dt(h, dt, TC, -1, 1);
    float *wg = qn_h_rand_dt(h, dt, EFC, -wr, wr), *wu = qn_h_rand_dt(h, dt, EFC, -wr, wr);
    float *wd = qn_h_rand_dt(h, dt, EFC, -wr2, wr2);
    int32_t *idx = rand_idx(h, T, K, E, 0);
    float *wt = qn_h_rand(h, TK, 0, 1);
    moe_args a = {.c = qn_h_ctx(h), .dt = dt, .T = T, .C = C, .F = F, .E = E, .K = K};
    if (!dev_acts(h, &a.acts, dt, T, K, C, F, E)) return;
    a.x = qn_h_in(h, dt, x, TC);
    a.wg = qn_h_in(h, dt, wg, EFC);
    a.wu = qn_h_in(h, dt, wu, EFC);
    a.wd = qn_h_in(h, dt, wd, EFC);
    a.idx = qn_h_in_raw(h, idx, TK * 4);
    a.wt = qn_h_in(h, QN_DTYPE_F32, wt, TK);
    a.out = qn_h_out(h, dt, TC);
    QN_H_TRY(h, moe_fwd_launch(&a));
    float *got = qn_h_fetch(h, dt, a.out, TC);
    if (got) {
        float *ref = qn_h_host(h, (size_t)TS * C * sizeof(float));
        qn_moe_acts ra;
        cpu_acts(h, &ra, TS, K, C, F, E);
        qn_moe_forward(ref, &ra, x, idx, wt, wg, wu, wd, TS, C, F, E, K, 0);
        double num = 0, den = 0;
        for (size_t i = 0; i < (size_t)TS * C; i++) {
            if (!isfinite(got[i])) {
                qn_h_fail(h, "out[%zu] is not finite", i);
                break;
            }
            num += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
            den += (double)ref[i] * ref[i];
        }
        double err = sqrt(num / (den > 1e-30 ? den : 1e-30));
        if (err > qn_h_tol(dt, QN_H_TOL_REDUCE))
            qn_h_fail(h, "out (first %d tokens): normalised error %.3g", TS, err);
    }
    qn_h_perf(h, (double)(2 * TC + 3 * EFC) * 2, 6.0 * TK * C * F, moe_fwd_launch, &a);
    a.dout = qn_h_in(h, dt, qn_h_rand_dt(h, dt, TC, -1, 1), TC);
    a.dx = qn_h_out(h, dt, TC);
    a.dwt = qn_h_out(h, QN_DTYPE_F32, TK);
    a.dwg = qn_h_out(h, QN_DTYPE_F32, EFC); /* NaN-filled: timed, not compared */
    a.dwu = qn_h_out(h, QN_DTYPE_F32, EFC);
    a.dwd = qn_h_out(h, QN_DTYPE_F32, EFC);
    QN_H_TRY(h, moe_bwd_launch(&a));
    float *dx = qn_h_fetch(h, dt, a.dx, TC);
    for (size_t i = 0; dx && i < TC; i++)
        if (!isfinite(dx[i])) {
            qn_h_fail(h, "dx[%zu] is not finite", i);
            break;
        }
    qn_h_perf(h, (double)(3 * TC + 3 * EFC) * 2 + 3 * EFC * 8.0, 12.0 * TK * C * F, moe_bwd_launch,
              &a);
}

void qn_ops_moe(qn_harness *h) {
    test_router_select(h);
    test_router_fwd_bwd(h);
    test_permute(h);
    test_moe(h);
    test_moe_glm_air(h);
}
