/* ops_elementwise.c — harness cases for core/ops/cuda/elementwise.h against
 * the CPU ops (core/ops/cpu/ops.h) and trainer/optimizer.c's AdamW.
 *
 * Every op runs in f32 and bf16 over shapes that reach 1 row / 1 column,
 * tails that are not multiples of the block sizes (32-lane rows, 256-thread
 * grids, 128-column embedding blocks, groups of 8 tokens), aliasing
 * (in-place RMSNorm, dgate == dout), strided SwiGLU (fused gate_up layout and
 * gaps that must stay unwritten), partial and zero rotary dims, and large
 * shapes timed with --perf. Embedding backward, AdamW and the conversions
 * are expected to be exact (tolerance 0): same operations in the same order
 * as the CPU.
 *
 * Leaves out: out-of-range token/position inputs beyond one small case each. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/ops/cpu/ops.h"
#include "core/ops/cuda/elementwise.h"
#include "tests/gpu/ops/families.h"
#include "tests/gpu/ops/harness_host.h"
#include "trainer/optimizer.h"

static const qn_dtype k_dts[] = {QN_DTYPE_F32, QN_DTYPE_BF16};
#define N_DTS ((int)(sizeof k_dts / sizeof k_dts[0]))

/* ------------------------------------------------------------ embedding */

typedef struct {
    qn_cuda_ctx *c;
    qn_dtype dt;
    void *out, *wte;
    float *dwte;
    const int32_t *tok;
    int T, C, V;
} emb_args;

static qn_status emb_fwd_launch(void *p) {
    emb_args *a = p;
    return qn_cuda_embedding_forward(a->c, a->dt, a->out, a->tok, a->wte, a->T, a->C, a->V);
}
static qn_status emb_bwd_launch(void *p) {
    emb_args *a = p;
    return qn_cuda_embedding_backward(a->c, a->dt, a->dwte, a->out, a->tok, a->T, a->C, a->V);
}

static void test_embedding(qn_harness *h) {
    static const int shapes[][3] = {/* T, C, V */
                                    {1, 1, 1},      {7, 33, 5},         {300, 130, 3},
                                    {129, 257, 40}, {2048, 1024, 5000}, {4096, 2048, 64}};
    for (int di = 0; di < N_DTS; di++) {
        qn_dtype dt = k_dts[di];
        size_t esz = qn_dtype_size(dt);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int T = shapes[s][0], C = shapes[s][1], V = shapes[s][2];
            size_t TC = (size_t)T * C, VC = (size_t)V * C;
            if (qn_h_case(h, "embedding_fwd", "T=%d C=%d V=%d %s", T, C, V, qn_h_dtname(dt))) {
                float *wte = qn_h_rand_dt(h, dt, VC, -1, 1);
                int32_t *tok = qn_h_rand_ints(h, (size_t)T, V);
                float *ref = qn_h_host(h, TC * sizeof *ref);
                qn_embedding_forward(ref, tok, wte, T, C);
                emb_args a = {qn_h_ctx(h),
                              dt,
                              qn_h_out(h, dt, TC),
                              qn_h_in(h, dt, wte, VC),
                              NULL,
                              qn_h_in_raw(h, tok, (size_t)T * 4),
                              T,
                              C,
                              V};
                QN_H_TRY(h, emb_fwd_launch(&a));
                qn_h_compare(h, "out", dt, ref, a.out, TC, 0.0); /* a copy: exact */
                qn_h_perf(h, 2.0 * TC * esz, 0, emb_fwd_launch, &a);
            }
            if (qn_h_case(h, "embedding_bwd", "T=%d C=%d V=%d %s", T, C, V, qn_h_dtname(dt))) {
                float *dout = qn_h_rand_dt(h, dt, TC, -1, 1);
                float *dwte0 = qn_h_rand(h, VC, -1, 1);
                int32_t *tok = qn_h_rand_ints(h, (size_t)T, V);
                float *ref = qn_h_copy(h, dwte0, VC);
                qn_embedding_backward(ref, dout, tok, T, C);
                emb_args a = {qn_h_ctx(h),
                              dt,
                              qn_h_in(h, dt, dout, TC),
                              NULL,
                              qn_h_out_init(h, QN_DTYPE_F32, dwte0, VC),
                              qn_h_in_raw(h, tok, (size_t)T * 4),
                              T,
                              C,
                              V};
                QN_H_TRY(h, emb_bwd_launch(&a));
                /* same adds in the same order as the CPU loop: bit-exact */
                qn_h_compare(h, "dwte", QN_DTYPE_F32, ref, a.dwte, VC, 0.0);
                qn_h_perf(h, TC * esz + 2.0 * TC * 4, 0, emb_bwd_launch, &a);
            }
        }
        /* a token outside [0, V): its row must come out NaN, the others exact */
        if (qn_h_case(h, "embedding_fwd_badtok", "T=3 C=40 V=4 %s", qn_h_dtname(dt))) {
            int T = 3, C = 40, V = 4;
            float *wte = qn_h_rand_dt(h, dt, (size_t)V * C, -1, 1);
            int32_t tok[3] = {2, 4, 0};
            float *ref = qn_h_host(h, (size_t)T * C * sizeof *ref);
            for (int t = 0; t < T; t++)
                for (int i = 0; i < C; i++)
                    ref[t * C + i] = tok[t] < V ? wte[tok[t] * C + i] : NAN;
            void *out = qn_h_out(h, dt, (size_t)T * C);
            QN_H_TRY(h, qn_cuda_embedding_forward(qn_h_ctx(h), dt, out, qn_h_in_raw(h, tok, 12),
                                                  qn_h_in(h, dt, wte, (size_t)V * C), T, C, V));
            qn_h_compare(h, "out", dt, ref, out, (size_t)T * C, 0.0);
        }
    }
}

/* -------------------------------------------------------------- RMSNorm */

typedef struct {
    qn_cuda_ctx *c;
    qn_dtype dt;
    void *out, *inp, *w, *dout, *dinp;
    float *rstd, *dw;
    int N, D, acc;
} rms_args;

static qn_status rms_fwd_launch(void *p) {
    rms_args *a = p;
    return qn_cuda_rmsnorm_forward(a->c, a->dt, a->out, a->rstd, a->inp, a->w, 1e-6f, a->N, a->D);
}
static qn_status rms_bwd_launch(void *p) {
    rms_args *a = p;
    return qn_cuda_rmsnorm_backward(a->c, a->dt, a->dinp, a->dw, a->dout, a->inp, a->w, a->rstd,
                                    a->N, a->D, a->acc);
}

static void test_rmsnorm(qn_harness *h) {
    static const int shapes[][2] = {
        /* N, D */
        {1, 1},      {3, 31},      {17, 128},   {2, 10000},
        {333, 5120}, {1024, 4096}, {65536, 128} /* QK-norm: T*NH x HD */};
    const float eps = 1e-6f;
    for (int di = 0; di < N_DTS; di++) {
        qn_dtype dt = k_dts[di];
        size_t esz = qn_dtype_size(dt);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int N = shapes[s][0], D = shapes[s][1];
            size_t ND = (size_t)N * D;
            for (int inplace = 0; inplace < 2; inplace++) {
                if (inplace && s != 2 && s != 4) continue;
                if (!qn_h_case(h, "rmsnorm_fwd", "N=%d D=%d %s%s", N, D, qn_h_dtname(dt),
                               inplace ? " in-place" : ""))
                    continue;
                float *x = qn_h_rand_dt(h, dt, ND, -2, 2);
                float *w = qn_h_rand_dt(h, dt, (size_t)D, 0.5f, 1.5f);
                float *ref = qn_h_host(h, ND * sizeof *ref), *rref = qn_h_host(h, N * sizeof *rref);
                qn_rmsnorm_forward(ref, rref, x, w, eps, N, D);
                rms_args a = {.c = qn_h_ctx(h),
                              .dt = dt,
                              .w = qn_h_in(h, dt, w, (size_t)D),
                              .rstd = qn_h_out(h, QN_DTYPE_F32, (size_t)N),
                              .N = N,
                              .D = D};
                if (inplace) {
                    a.out = a.inp = qn_h_out_init(h, dt, x, ND);
                } else {
                    a.inp = qn_h_in(h, dt, x, ND);
                    a.out = qn_h_out(h, dt, ND);
                }
                QN_H_TRY(h, rms_fwd_launch(&a));
                qn_h_compare(h, "out", dt, ref, a.out, ND, qn_h_tol(dt, QN_H_TOL_NORM));
                qn_h_compare(h, "rstd", QN_DTYPE_F32, rref, a.rstd, (size_t)N,
                             qn_h_tol(QN_DTYPE_F32, QN_H_TOL_NORM));
                if (!inplace) qn_h_perf(h, 2.0 * ND * esz, 0, rms_fwd_launch, &a);
            }
            for (int acc = 0; acc < 2; acc++) {
                if (!qn_h_case(h, "rmsnorm_bwd", "N=%d D=%d %s%s", N, D, qn_h_dtname(dt),
                               acc ? " accumulate" : ""))
                    continue;
                float *x = qn_h_rand_dt(h, dt, ND, -2, 2);
                float *w = qn_h_rand_dt(h, dt, (size_t)D, 0.5f, 1.5f);
                float *dy = qn_h_rand_dt(h, dt, ND, -1, 1);
                float *dx0 = qn_h_rand_dt(h, dt, ND, -1, 1);
                float *dw0 = qn_h_rand(h, (size_t)D, -1, 1);
                float *y = qn_h_host(h, ND * sizeof *y), *rstd = qn_h_host(h, N * sizeof *rstd);
                qn_rmsnorm_forward(y, rstd, x, w, eps, N, D);
                float *dx_ref = qn_h_copy(h, dx0, ND), *dw_ref = qn_h_copy(h, dw0, (size_t)D);
                qn_rmsnorm_backward(dx_ref, dw_ref, dy, x, w, rstd, N, D, acc);
                rms_args a = {.c = qn_h_ctx(h),
                              .dt = dt,
                              .inp = qn_h_in(h, dt, x, ND),
                              .w = qn_h_in(h, dt, w, (size_t)D),
                              .dout = qn_h_in(h, dt, dy, ND),
                              .rstd = qn_h_in(h, QN_DTYPE_F32, rstd, (size_t)N),
                              .dw = qn_h_out_init(h, QN_DTYPE_F32, dw0, (size_t)D),
                              .N = N,
                              .D = D,
                              .acc = acc};
                a.dinp = acc ? qn_h_out_init(h, dt, dx0, ND) : qn_h_out(h, dt, ND);
                QN_H_TRY(h, rms_bwd_launch(&a));
                qn_h_compare(h, "dinp", dt, dx_ref, a.dinp, ND, qn_h_tol(dt, QN_H_TOL_GRAD));
                /* dw is fp32 from the same rounded inputs: only the summation order differs */
                qn_h_compare(h, "dw", QN_DTYPE_F32, dw_ref, a.dw, (size_t)D,
                             qn_h_tol(QN_DTYPE_F32, QN_H_TOL_GRAD));
                if (!acc) qn_h_perf(h, 4.0 * ND * esz, 0, rms_bwd_launch, &a);
            }
        }
        /* dinp aliasing dout, no dw */
        if (qn_h_case(h, "rmsnorm_bwd", "N=9 D=200 %s dinp==dout dw=NULL", qn_h_dtname(dt))) {
            int N = 9, D = 200;
            size_t ND = (size_t)N * D;
            float *x = qn_h_rand_dt(h, dt, ND, -2, 2),
                  *w = qn_h_rand_dt(h, dt, (size_t)D, 0.5f, 1.5f);
            float *dy = qn_h_rand_dt(h, dt, ND, -1, 1);
            float *y = qn_h_host(h, ND * sizeof *y), *rstd = qn_h_host(h, N * sizeof *rstd);
            qn_rmsnorm_forward(y, rstd, x, w, eps, N, D);
            float *ref = qn_h_copy(h, dy, ND);
            qn_rmsnorm_backward(ref, NULL, ref, x, w, rstd, N, D, 0);
            void *d = qn_h_out_init(h, dt, dy, ND);
            QN_H_TRY(h,
                     qn_cuda_rmsnorm_backward(qn_h_ctx(h), dt, d, NULL, d, qn_h_in(h, dt, x, ND),
                                              qn_h_in(h, dt, w, (size_t)D),
                                              qn_h_in(h, QN_DTYPE_F32, rstd, (size_t)N), N, D, 0));
            qn_h_compare(h, "dinp", dt, ref, d, ND, qn_h_tol(dt, QN_H_TOL_GRAD));
        }
    }
}

/* ----------------------------------------------------------------- RoPE */

typedef struct {
    qn_cuda_ctx *c;
    qn_dtype dt;
    void *x;
    const int32_t *pos;
    const float *cos_t, *sin_t;
    int P, T, NH, HD, R, bwd;
} rope_args;

static qn_status rope_launch(void *p) {
    rope_args *a = p;
    return (a->bwd ? qn_cuda_rope_backward : qn_cuda_rope_forward)(
        a->c, a->dt, a->x, a->pos, a->cos_t, a->sin_t, a->P, a->T, a->NH, a->HD, a->R);
}

static void test_rope(qn_harness *h) {
    static const int shapes[][5] = {
        /* T, NH, HD, R, P */
        {1, 1, 2, 2, 1},  {5, 3, 64, 32, 16},      {7, 2, 128, 128, 8},      {33, 4, 96, 0, 40},
        {3, 2, 10, 6, 3}, {40, 12, 128, 64, 1000}, {4096, 32, 128, 64, 4096}};
    for (int di = 0; di < N_DTS; di++) {
        qn_dtype dt = k_dts[di];
        size_t esz = qn_dtype_size(dt);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int T = shapes[s][0], NH = shapes[s][1], HD = shapes[s][2], R = shapes[s][3],
                P = shapes[s][4];
            size_t n = (size_t)T * NH * HD, tab = (size_t)P * (R / 2);
            for (int bwd = 0; bwd < 2; bwd++) {
                if (!qn_h_case(h, bwd ? "rope_bwd" : "rope_fwd", "T=%d NH=%d HD=%d R=%d P=%d %s", T,
                               NH, HD, R, P, qn_h_dtname(dt)))
                    continue;
                float *x = qn_h_rand_dt(h, dt, n, -2, 2);
                int32_t *pos = qn_h_rand_ints(h, (size_t)T, P);
                float *ct = qn_h_host(h, (tab ? tab : 1) * sizeof *ct);
                float *st = qn_h_host(h, (tab ? tab : 1) * sizeof *st);
                qn_rope_table(ct, st, P, R, s % 2 ? 1e6 : 1e4);
                float *ref = qn_h_copy(h, x, n);
                (bwd ? qn_rope_backward : qn_rope_forward)(ref, pos, ct, st, T, NH, HD, R);
                rope_args a = {qn_h_ctx(h),
                               dt,
                               qn_h_out_init(h, dt, x, n),
                               qn_h_in_raw(h, pos, (size_t)T * 4),
                               qn_h_in(h, QN_DTYPE_F32, ct, tab ? tab : 1),
                               qn_h_in(h, QN_DTYPE_F32, st, tab ? tab : 1),
                               P,
                               T,
                               NH,
                               HD,
                               R,
                               bwd};
                QN_H_TRY(h, rope_launch(&a));
                qn_h_compare(h, "x", dt, ref, a.x, n, qn_h_tol(dt, QN_H_TOL_ELEMENTWISE));
                qn_h_perf(h, 2.0 * T * NH * R * esz, 0, rope_launch, &a);
            }
        }
    }
}

/* --------------------------------------------------------------- SwiGLU */

typedef struct {
    qn_cuda_ctx *c;
    qn_dtype dt;
    void *out, *gate, *up, *dout, *dgate, *dup;
    int N, F, ld;
} swiglu_args;

static qn_status swiglu_fwd_launch(void *p) {
    swiglu_args *a = p;
    return qn_cuda_swiglu_forward(a->c, a->dt, a->out, a->gate, a->up, a->N, a->F, a->ld);
}
static qn_status swiglu_bwd_launch(void *p) {
    swiglu_args *a = p;
    return qn_cuda_swiglu_backward(a->c, a->dt, a->dgate, a->dup, a->dout, a->gate, a->up, a->N,
                                   a->F, a->ld);
}

/* Layouts: 0 separate gate/up with row stride ld; 1 fused [N, 2F] (gate =
 * h, up = h + F, ld = 2F); 2 ld == F with dgate aliasing dout (backward). */
static void test_swiglu(qn_harness *h) {
    static const int shapes[][4] = {/* N, F, ld, layout */
                                    {1, 1, 1, 0},     {3, 7, 7, 0},         {257, 1000, 1003, 0},
                                    {5, 100, 200, 1}, {64, 1408, 2816, 1},  {1, 100000, 100000, 0},
                                    {33, 77, 77, 2},  {4096, 1408, 1408, 0}};
    for (int di = 0; di < N_DTS; di++) {
        qn_dtype dt = k_dts[di];
        size_t esz = qn_dtype_size(dt);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int N = shapes[s][0], F = shapes[s][1], ld = shapes[s][2], layout = shapes[s][3];
            size_t NF = (size_t)N * F, NL = (size_t)N * ld;
            const char *lname = layout == 1 ? " fused" : layout == 2 ? " dgate==dout" : "";
            if (layout != 2 && qn_h_case(h, "swiglu_fwd", "N=%d F=%d ld=%d %s%s", N, F, ld,
                                         qn_h_dtname(dt), lname)) {
                float *gate, *up;
                swiglu_args a = {.c = qn_h_ctx(h), .dt = dt, .N = N, .F = F, .ld = ld};
                if (layout == 1) {
                    float *hh = qn_h_rand_dt(h, dt, NL, -4, 4);
                    gate = hh, up = hh + F;
                    a.gate = qn_h_in(h, dt, hh, NL);
                    a.up = (char *)a.gate + (size_t)F * esz;
                } else {
                    gate = qn_h_rand_dt(h, dt, NL, -6, 6);
                    up = qn_h_rand_dt(h, dt, NL, -2, 2);
                    a.gate = qn_h_in(h, dt, gate, NL);
                    a.up = qn_h_in(h, dt, up, NL);
                }
                float *ref = qn_h_host(h, NF * sizeof *ref);
                qn_swiglu_forward(ref, gate, up, N, F, ld);
                a.out = qn_h_out(h, dt, NF);
                QN_H_TRY(h, swiglu_fwd_launch(&a));
                qn_h_compare(h, "out", dt, ref, a.out, NF, qn_h_tol(dt, QN_H_TOL_ELEMENTWISE));
                qn_h_perf(h, 3.0 * NF * esz, 0, swiglu_fwd_launch, &a);
            }
            if (!qn_h_case(h, "swiglu_bwd", "N=%d F=%d ld=%d %s%s", N, F, ld, qn_h_dtname(dt),
                           lname))
                continue;
            swiglu_args a = {.c = qn_h_ctx(h), .dt = dt, .N = N, .F = F, .ld = ld};
            float *dout = qn_h_rand_dt(h, dt, NF, -1, 1);
            if (layout == 1) {
                float *hh = qn_h_rand_dt(h, dt, NL, -4, 4);
                float *ref = qn_h_host(h, NL * sizeof *ref);
                qn_swiglu_backward(ref, ref + F, dout, hh, hh + F, N, F, ld);
                a.gate = qn_h_in(h, dt, hh, NL);
                a.up = (char *)a.gate + (size_t)F * esz;
                a.dout = qn_h_in(h, dt, dout, NF);
                a.dgate = qn_h_out(h, dt, NL);
                a.dup = (char *)a.dgate + (size_t)F * esz;
                QN_H_TRY(h, swiglu_bwd_launch(&a));
                qn_h_compare(h, "dgate|dup", dt, ref, a.dgate, NL, qn_h_tol(dt, QN_H_TOL_GRAD));
            } else {
                float *gate = qn_h_rand_dt(h, dt, NL, -6, 6), *up = qn_h_rand_dt(h, dt, NL, -2, 2);
                /* columns F..ld are never written: NaN in the reference and
                 * NaN poison in the device output must both survive */
                float *dg = qn_h_host(h, NL * sizeof *dg), *du = qn_h_host(h, NL * sizeof *du);
                for (size_t i = 0; i < NL; i++)
                    dg[i] = du[i] = NAN;
                qn_swiglu_backward(dg, du, dout, gate, up, N, F, ld);
                a.gate = qn_h_in(h, dt, gate, NL);
                a.up = qn_h_in(h, dt, up, NL);
                if (layout == 2) {
                    a.dout = a.dgate = qn_h_out_init(h, dt, dout, NF);
                } else {
                    a.dout = qn_h_in(h, dt, dout, NF);
                    a.dgate = qn_h_out(h, dt, NL);
                }
                a.dup = qn_h_out(h, dt, NL);
                QN_H_TRY(h, swiglu_bwd_launch(&a));
                qn_h_compare(h, "dgate", dt, dg, a.dgate, NL, qn_h_tol(dt, QN_H_TOL_GRAD));
                qn_h_compare(h, "dup", dt, du, a.dup, NL, qn_h_tol(dt, QN_H_TOL_GRAD));
            }
            if (layout != 2) qn_h_perf(h, 5.0 * NF * esz, 0, swiglu_bwd_launch, &a);
        }
    }
}

/* ---------------------------------------------------------------- AdamW */

typedef struct {
    qn_cuda_ctx *c;
    qn_dtype dt;
    float *p, *m, *v;
    void *g, *pbf;
    int64_t n;
    qn_cuda_adamw_args args;
} adamw_args;

static qn_status adamw_launch(void *p) {
    adamw_args *a = p;
    return qn_cuda_adamw_step(a->c, a->dt, a->p, a->g, a->m, a->v, a->pbf, a->n, &a->args);
}

static void test_adamw(qn_harness *h) {
    static const int sizes[] = {1, 1000, 4097, (1 << 20) + 3};
    for (int di = 0; di < N_DTS; di++) {
        qn_dtype dt = k_dts[di];
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            /* variant: 0 first step, decayed, no clip; 1 step 7, clipped, not decayed */
            for (int var = 0; var < 2; var++) {
                int n = sizes[s];
                int64_t step0 = var ? 6 : 0; /* steps taken before this one */
                if (!qn_h_case(h, "adamw", "n=%d %s t=%lld%s", n, qn_h_dtname(dt),
                               (long long)step0 + 1, var ? " clip ndim=1" : " wd ndim=2"))
                    continue;
                qn_adamw_cfg cfg = {.lr = 3e-4,
                                    .min_lr = 0,
                                    .decay_style = QN_LR_CONSTANT,
                                    .weight_decay = 0.1,
                                    .beta1 = 0.9,
                                    .beta2 = 0.95,
                                    .eps = 1e-8,
                                    .clip_grad = var ? 0.5 : 0.0};
                qn_opt_tensor t = {.name = "w", .offset = 0, .size = n, .ndim = var ? 1 : 2};
                float *p0 = qn_h_rand(h, (size_t)n, -1, 1);
                float *g = qn_h_rand_dt(h, dt, (size_t)n, -0.1f, 0.1f);
                float *m0 = qn_h_rand(h, (size_t)n, -0.01f, 0.01f);
                float *v0 = qn_h_rand(h, (size_t)n, 0.0f, 1e-4f);
                if (!var) memset(m0, 0, n * sizeof *m0), memset(v0, 0, n * sizeof *v0);
                /* the reference: trainer/optimizer.c on copies */
                qn_adamw opt;
                float *p_ref = qn_h_copy(h, p0, (size_t)n), *g_ref = qn_h_copy(h, g, (size_t)n);
                double norm = qn_grad_norm(g, n), scale = 1.0;
                if (cfg.clip_grad > 0 && cfg.clip_grad / (norm + 1e-6) < 1.0)
                    scale = cfg.clip_grad / (norm + 1e-6);
                if (qn_adamw_init(&opt, &cfg, &t, 1, n) != QN_OK ||
                    qn_adamw_set_state(&opt, step0, m0, v0, n) != QN_OK ||
                    qn_adamw_step(&opt, p_ref, g_ref, NULL) != QN_OK) {
                    qn_h_fail(h, "CPU reference: %s", qn_last_error());
                    qn_adamw_free(&opt);
                    continue;
                }
                adamw_args a = {.c = qn_h_ctx(h),
                                .dt = dt,
                                .p = qn_h_out_init(h, QN_DTYPE_F32, p0, (size_t)n),
                                .m = qn_h_out_init(h, QN_DTYPE_F32, m0, (size_t)n),
                                .v = qn_h_out_init(h, QN_DTYPE_F32, v0, (size_t)n),
                                .g = qn_h_in(h, dt, g, (size_t)n),
                                .pbf = qn_h_out(h, QN_DTYPE_BF16, (size_t)n),
                                .n = n,
                                .args = {.lr = qn_lr_at(&cfg, step0),
                                         .weight_decay = var ? 0.0 : cfg.weight_decay,
                                         .beta1 = cfg.beta1,
                                         .beta2 = cfg.beta2,
                                         .eps = cfg.eps,
                                         .step = step0 + 1,
                                         .grad_scale = scale}};
                QN_H_TRY(h, adamw_launch(&a));
                /* the same double arithmetic as the CPU, no FMA: exact */
                qn_h_compare(h, "m", QN_DTYPE_F32, opt.m, a.m, (size_t)n, 0.0);
                qn_h_compare(h, "v", QN_DTYPE_F32, opt.v, a.v, (size_t)n, 0.0);
                qn_h_compare(h, "params", QN_DTYPE_F32, p_ref, a.p, (size_t)n, 0.0);
                float *pb_ref = qn_h_host(h, (size_t)n * sizeof *pb_ref);
                for (int i = 0; i < n; i++)
                    pb_ref[i] = qn_bf16_to_f32(qn_f32_to_bf16(p_ref[i]));
                qn_h_compare(h, "params_bf16", QN_DTYPE_BF16, pb_ref, a.pbf, (size_t)n, 0.0);
                /* the update itself (tiny next to the weights) to a tight relative tolerance,
                 * so that a wrong step is not hidden behind the weights' magnitude */
                float *got = qn_h_fetch(h, QN_DTYPE_F32, a.p, (size_t)n);
                if (got) {
                    float *d_ref = qn_h_host(h, (size_t)n * sizeof *d_ref);
                    float *d_got = qn_h_host(h, (size_t)n * sizeof *d_got);
                    for (int i = 0; i < n; i++)
                        d_ref[i] = p_ref[i] - p0[i], d_got[i] = got[i] - p0[i];
                    double e = qn_h_nerr(d_ref, d_got, (size_t)n);
                    if (!(e <= 1e-5)) qn_h_fail(h, "update: normalised error %.3g > 1e-5", e);
                }
                qn_adamw_free(&opt);
                qn_h_perf(h, (double)n * (24.0 + qn_dtype_size(dt) + 2.0), 0, adamw_launch, &a);
            }
        }
    }
}

/* ------------------------------------------------------- sumsq, convert */

typedef struct {
    qn_cuda_ctx *c;
    qn_dtype dt, dst_dt;
    void *x, *out;
    int64_t n;
} conv_args;

static qn_status sumsq_launch(void *p) {
    conv_args *a = p;
    return qn_cuda_sumsq(a->c, a->dt, a->x, a->n, a->out);
}
static qn_status convert_launch(void *p) {
    conv_args *a = p;
    return qn_cuda_convert(a->c, a->dst_dt, a->out, a->dt, a->x, a->n);
}

static void test_sumsq_convert(qn_harness *h) {
    static const int sizes[] = {1, 1000, 4097, (1 << 22) + 7};
    for (int di = 0; di < N_DTS; di++) {
        qn_dtype dt = k_dts[di];
        size_t esz = qn_dtype_size(dt);
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            int n = sizes[s];
            if (qn_h_case(h, "sumsq", "n=%d %s", n, qn_h_dtname(dt))) {
                float *x = qn_h_rand_dt(h, dt, (size_t)n, -3, 3);
                double ss = 0;
                for (int i = 0; i < n; i++)
                    ss += (double)x[i] * x[i];
                float ref = (float)ss;
                conv_args a = {qn_h_ctx(h),
                               dt,
                               dt,
                               qn_h_in(h, dt, x, (size_t)n),
                               qn_h_out(h, QN_DTYPE_F64, 1),
                               n};
                QN_H_TRY(h, sumsq_launch(&a));
                qn_h_compare(h, "sumsq", QN_DTYPE_F64, &ref, a.out, 1,
                             qn_h_tol(QN_DTYPE_F32, QN_H_TOL_ELEMENTWISE));
                qn_h_perf(h, (double)n * esz, 0, sumsq_launch, &a);
            }
        }
    }
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int n = sizes[s];
        for (int dir = 0; dir < 2; dir++) {
            qn_dtype from = dir ? QN_DTYPE_BF16 : QN_DTYPE_F32,
                     to = dir ? QN_DTYPE_F32 : QN_DTYPE_BF16;
            if (!qn_h_case(h, "convert", "n=%d %s->%s", n, qn_h_dtname(from), qn_h_dtname(to)))
                continue;
            float *x = qn_h_rand_dt(h, from, (size_t)n, -100, 100);
            /* a few values that round to even / overflow / are tiny */
            const float special[] = {1.00390625f, 1.01171875f, 3.3895313e38f, -1e-40f, 0.0f, -0.0f};
            for (size_t i = 0; i < sizeof special / sizeof special[0] && i < (size_t)n; i++)
                x[i] =
                    from == QN_DTYPE_BF16 ? qn_bf16_to_f32(qn_f32_to_bf16(special[i])) : special[i];
            float *ref = qn_h_host(h, (size_t)n * sizeof *ref);
            for (int i = 0; i < n; i++)
                ref[i] = qn_bf16_to_f32(qn_f32_to_bf16(x[i]));
            conv_args a = {qn_h_ctx(h),
                           from,
                           to,
                           qn_h_in(h, from, x, (size_t)n),
                           qn_h_out(h, to, (size_t)n),
                           n};
            QN_H_TRY(h, convert_launch(&a));
            qn_h_compare(h, "dst", to, ref, a.out, (size_t)n, 0.0); /* same RNE rounding: exact */
            qn_h_perf(h, (double)n * 6.0, 0, convert_launch, &a);
        }
    }
}

/* ------------------------------------------------ refusals (no GPU work) */

static void test_refusals(qn_harness *h) {
    if (!qn_h_case(h, "elementwise_refuse", "bad dtype/shape")) return;
    qn_cuda_ctx *c = qn_h_ctx(h);
    void *buf = qn_h_out(h, QN_DTYPE_F32, 64);
    int32_t *pos = buf;
    if (qn_cuda_rmsnorm_forward(c, QN_DTYPE_F16, buf, buf, buf, buf, 1e-6f, 1, 8) !=
        QN_ERR_UNSUPPORTED)
        qn_h_fail(h, "rmsnorm accepted f16");
    if (qn_cuda_rope_forward(c, QN_DTYPE_F32, buf, pos, buf, buf, 1, 1, 1, 8, 5) != QN_ERR_INVALID)
        qn_h_fail(h, "rope accepted odd R");
    if (qn_cuda_rope_forward(c, QN_DTYPE_F32, buf, pos, buf, buf, 1, 1, 1, 8, 10) != QN_ERR_INVALID)
        qn_h_fail(h, "rope accepted R > HD");
    if (qn_cuda_swiglu_forward(c, QN_DTYPE_BF16, buf, buf, buf, 2, 8, 4) != QN_ERR_INVALID)
        qn_h_fail(h, "swiglu accepted ld < F");
    if (qn_cuda_embedding_forward(c, QN_DTYPE_F32, NULL, pos, buf, 2, 2, 2) != QN_ERR_INVALID)
        qn_h_fail(h, "embedding accepted NULL out");
    qn_cuda_adamw_args bad = {
        .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .step = 0, .grad_scale = 1};
    if (qn_cuda_adamw_step(c, QN_DTYPE_F32, buf, buf, buf, buf, NULL, 4, &bad) != QN_ERR_INVALID)
        qn_h_fail(h, "adamw accepted step 0");
    qn_clear_error();
}

void qn_ops_elementwise(qn_harness *h) {
    test_refusals(h);
    test_sumsq_convert(h);
    test_embedding(h);
    test_rmsnorm(h);
    test_rope(h);
    test_swiglu(h);
    test_adamw(h);
}
