/* ops_gemm.c — harness cases for core/ops/cuda/gemm.h against the CPU
 * (qn_sgemm, qn_matmul_forward/backward, core/quant/fp8.c).
 *
 * Cases (op names; --op gemm runs them all, --op fp8 the FP8 ones):
 *   gemm            f32 and bf16 storage, all four transpose combinations,
 *                   1-row / 1-column / odd and padded shapes, alpha/beta with
 *                   C read (beta != 0) and C never read (beta == 0 over a
 *                   NaN-filled C), K == 0
 *   gemm_bf16_f32c  bf16 A/B into an f32 C with beta = 1 (gradient
 *                   accumulation), checked at f32 tolerance
 *   gemm_tf32       the opt-in TF32 mode (looser tolerance)
 *   matmul_fwd      linear layer, with and without bias, IC == 0
 *   matmul_bwd      dinp (= and +=), dw += (f32), dbias += (f32), NULLs
 *   fp8_quant_act   the 1x128 activation quantiser: EXACT (bytes and
 *                   scales) against the host reference qn_fp8_quantize_act_ref
 *   fp8_requant     the GPU weight re-quantiser: EXACT, bit for bit, against
 *                   core/quant/fp8.c's qn_fp8_quantize (bytes and scales;
 *                   padding of the scale rows must stay untouched), plus the
 *                   non-finite counter
 *   fp8_gemm_layout_probe  crafted operands whose outputs spell out which
 *                   scale-array indices cuBLASLt reads (exact; on a mismatch
 *                   the message lists them against gemm.h's layout)
 *   fp8_gemm_ref    the plain reference kernel vs the CPU on the dequantised
 *                   operands (REDUCE tolerance: same inputs, fp32 sums)
 *   fp8_gemm        cuBLASLt block-scaled FP8 vs the same CPU reference
 *                   (same operands: REDUCE tolerance, at least 5e-3)
 *   fp8_matmul_fwd  quantise-then-GEMM in one call vs the CPU reference (same)
 *   fp8_vs_fp32     the same against the UNquantised fp32 product (shows the
 *                   quantisation error; FP8 tolerance class)
 *   gemm_perf_*     only with --perf: GLM-4.5-355B projection shapes (hidden
 *                   5120, 96 heads x 128, 8 KV heads, experts 1536) at M = 64
 *                   and 4096: bf16 cuBLASLt vs FP8 cuBLASLt (GEMM alone and
 *                   with the activation quantiser), TFLOP/s each; the FP8
 *                   output is checked against the bf16 one on the GPU.
 *                   Run: qn_test_ops --op gemm_perf --perf
 *
 * Leaves out: shapes beyond int range, concurrent calls from threads. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/ops/cpu/ops.h"
#include "core/ops/cuda/fp8_codec.h"
#include "core/ops/cuda/gemm.h"
#include "core/quant/fp8.h"
#include "tests/gpu/ops/families.h"

static const qn_dtype k_dts[] = {QN_DTYPE_F32, QN_DTYPE_BF16};
#define N_DTS ((int)(sizeof k_dts / sizeof k_dts[0]))

/* Bit-exact check of an e4m3 device buffer against reference bytes (after
 * qn_h_compare has checked guards and NaN): decoding is injective on
 * non-NaN bytes, so comparing the decoded floats bit for bit compares bytes. */
static void exact_fp8(qn_harness *h, const char *what, const void *dev, const uint8_t *ref,
                      size_t n) {
    float *ref_f = qn_h_host(h, n * sizeof *ref_f);
    for (size_t i = 0; i < n; i++)
        ref_f[i] = qn_fp8e4m3_to_f32(ref[i]);
    qn_h_compare(h, what, QN_DTYPE_F8_E4M3, ref_f, dev, n, 0.0);
    float *got = qn_h_fetch(h, QN_DTYPE_F8_E4M3, dev, n);
    if (!got) return;
    for (size_t i = 0; i < n; i++) {
        if (memcmp(&got[i], &ref_f[i], sizeof(float)) != 0) {
            qn_h_fail(h, "%s: byte %zu of %zu: expected 0x%02X (%g), got %g", what, i, n, ref[i],
                      (double)ref_f[i], (double)got[i]);
            return;
        }
    }
}

static void exact_f32(qn_harness *h, const char *what, const void *dev, const float *ref,
                      size_t n) {
    qn_h_compare(h, what, QN_DTYPE_F32, ref, dev, n, 0.0);
    float *got = qn_h_fetch(h, QN_DTYPE_F32, dev, n);
    if (!got) return;
    for (size_t i = 0; i < n; i++) {
        if (memcmp(&got[i], &ref[i], sizeof(float)) != 0) {
            qn_h_fail(h, "%s: element %zu of %zu: expected %a, got %a", what, i, n, (double)ref[i],
                      (double)got[i]);
            return;
        }
    }
}

/* ------------------------------------------------------------------ gemm */

typedef struct {
    qn_cuda_ctx *c;
    qn_cuda_gemm_desc d;
    float alpha, beta;
    const void *A, *B;
    void *C;
} gemm_args;

static qn_status gemm_launch(void *p) {
    gemm_args *a = p;
    return qn_cuda_gemm_ex(a->c, &a->d, a->alpha, a->A, a->B, a->beta, a->C);
}

/* One GEMM case: random A, B (and C when beta != 0) rounded to the storage
 * dtypes, qn_sgemm as reference. pad adds to every leading dimension. */
static void gemm_case(qn_harness *h, const char *op, qn_dtype ab, qn_dtype cd, int ta, int tb,
                      int M, int N, int K, int pad, float alpha, float beta, int tf32, double tol) {
    if (!qn_h_case(h, op, "%c%c M=%d N=%d K=%d pad=%d alpha=%g beta=%g %s->%s", ta ? 'T' : 'N',
                   tb ? 'T' : 'N', M, N, K, pad, (double)alpha, (double)beta, qn_h_dtname(ab),
                   qn_h_dtname(cd)))
        return;
    qn_cuda_gemm_desc d = {.trans_a = ta,
                           .trans_b = tb,
                           .M = M,
                           .N = N,
                           .K = K,
                           .lda = (ta ? M : K) + pad,
                           .ldb = (tb ? K : N) + pad,
                           .ldc = N + pad,
                           .ab_dtype = ab,
                           .c_dtype = cd,
                           .allow_tf32 = tf32};
    if (d.lda < 1) d.lda = 1;
    if (d.ldb < 1) d.ldb = 1;
    if (d.ldc < 1) d.ldc = 1;
    const size_t na = (size_t)(ta ? K : M) * d.lda, nb = (size_t)(tb ? N : K) * d.ldb;
    const size_t nc = (size_t)M * d.ldc;
    float *A = qn_h_rand_dt(h, ab, na ? na : 1, -1, 1);
    float *B = qn_h_rand_dt(h, ab, nb ? nb : 1, -1, 1);
    float *C0 = qn_h_rand_dt(h, cd, nc ? nc : 1, -1, 1);
    float *ref = qn_h_copy(h, C0, nc ? nc : 1);
    if (K > 0) {
        qn_sgemm(ta, tb, M, N, K, alpha, A, d.lda, B, d.ldb, beta, ref, d.ldc);
    } else {
        for (int r = 0; r < M; r++)
            for (int c = 0; c < N; c++) {
                const size_t i = (size_t)r * d.ldc + c;
                ref[i] = beta == 0.0f ? 0.0f : beta * C0[i];
            }
    }
    /* beta == 0: C's rows start as NaN, which must never be read; the gaps of
     * padded rows keep their values (never written) */
    float *cinit = qn_h_copy(h, C0, nc ? nc : 1);
    if (beta == 0.0f)
        for (int r = 0; r < M; r++)
            for (int c = 0; c < N; c++)
                cinit[(size_t)r * d.ldc + c] = NAN;
    void *dC = qn_h_out_init(h, cd, cinit, nc ? nc : 1);
    gemm_args a = {
        qn_h_ctx(h), d, alpha, beta, qn_h_in(h, ab, A, na ? na : 1), qn_h_in(h, ab, B, nb ? nb : 1),
        dC};
    QN_H_TRY(h, gemm_launch(&a));
    qn_h_compare(h, "C", cd, ref, dC, nc ? nc : 1, tol);
    qn_h_perf(
        h, (double)(na * qn_dtype_size(ab) + nb * qn_dtype_size(ab) + 2 * nc * qn_dtype_size(cd)),
        2.0 * M * N * (double)K, gemm_launch, &a);
    qn_h_end(h);
}

static void test_gemm(qn_harness *h) {
    static const int shapes[][4] = {
        /* M, N, K, pad */
        {1, 1, 1, 0},     {1, 37, 65, 0},     {37, 1, 65, 0},  {17, 33, 129, 0},
        {64, 96, 200, 3}, {257, 130, 515, 0}, {2, 3, 4096, 1}, {512, 512, 512, 0},
    };
    for (int di = 0; di < N_DTS; di++) {
        qn_dtype dt = k_dts[di];
        const double tol = qn_h_tol(dt, QN_H_TOL_REDUCE);
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
                    gemm_case(h, "gemm", dt, dt, ta, tb, shapes[s][0], shapes[s][1], shapes[s][2],
                              shapes[s][3], 1.0f, 0.0f, 0, tol);
        /* alpha/beta with C read, and K == 0 (C = beta C) */
        gemm_case(h, "gemm", dt, dt, 0, 1, 70, 45, 33, 0, 0.7f, 0.5f, 0, tol);
        gemm_case(h, "gemm", dt, dt, 1, 0, 70, 45, 33, 2, -1.5f, 1.0f, 0, tol);
        gemm_case(h, "gemm", dt, dt, 0, 0, 9, 10, 0, 0, 1.0f, 0.5f, 0, tol);
        gemm_case(h, "gemm", dt, dt, 0, 0, 9, 10, 0, 0, 1.0f, 0.0f, 0, tol);
        /* perf-sized */
        gemm_case(h, "gemm", dt, dt, 0, 1, 4096, 4096, 4096, 0, 1.0f, 0.0f, 0, tol);
    }
    /* bf16 A/B accumulating into f32 C: the products are exact in fp32, so
     * f32 tolerance applies */
    const double tol32 = qn_h_tol(QN_DTYPE_F32, QN_H_TOL_REDUCE);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            gemm_case(h, "gemm_bf16_f32c", QN_DTYPE_BF16, QN_DTYPE_F32, ta, tb, 130, 67, 300, 0,
                      1.0f, 1.0f, 0, tol32);
    gemm_case(h, "gemm_bf16_f32c", QN_DTYPE_BF16, QN_DTYPE_F32, 1, 0, 1, 5, 1000, 0, 1.0f, 1.0f, 0,
              tol32);
    /* TF32: 10-bit mantissas, ~1e-3 relative per product */
    gemm_case(h, "gemm_tf32", QN_DTYPE_F32, QN_DTYPE_F32, 0, 1, 300, 200, 1000, 0, 1.0f, 0.0f, 1,
              5e-3);
    gemm_case(h, "gemm_tf32", QN_DTYPE_F32, QN_DTYPE_F32, 0, 1, 4096, 4096, 4096, 0, 1.0f, 0.0f, 1,
              5e-3);
}

/* --------------------------------------------------------------- matmul */

typedef struct {
    qn_cuda_ctx *c;
    qn_dtype dt;
    void *out, *dinp;
    float *dw, *dbias;
    const void *inp, *w, *bias, *dout;
    int N, IC, OC, acc;
} mm_args;

static qn_status mm_fwd_launch(void *p) {
    mm_args *a = p;
    return qn_cuda_matmul_forward(a->c, a->dt, a->out, a->inp, a->w, a->bias, a->N, a->IC, a->OC);
}
static qn_status mm_bwd_launch(void *p) {
    mm_args *a = p;
    return qn_cuda_matmul_backward(a->c, a->dt, a->dinp, a->dw, a->dbias, a->dout, a->inp, a->w,
                                   a->N, a->IC, a->OC, a->acc);
}

static void test_matmul(qn_harness *h) {
    static const int shapes[][3] = {/* N, IC, OC */
                                    {1, 1, 1},       {5, 17, 33}, {64, 128, 256},
                                    {300, 257, 130}, {7, 0, 9},   {1024, 1024, 3072}};
    for (int di = 0; di < N_DTS; di++) {
        qn_dtype dt = k_dts[di];
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            const int N = shapes[s][0], IC = shapes[s][1], OC = shapes[s][2];
            const size_t ni = (size_t)N * IC, nw = (size_t)OC * IC, no = (size_t)N * OC;
            for (int with_bias = 0; with_bias < 2; with_bias++) {
                if (!qn_h_case(h, "matmul_fwd", "N=%d IC=%d OC=%d bias=%d %s", N, IC, OC, with_bias,
                               qn_h_dtname(dt)))
                    continue;
                float *inp = qn_h_rand_dt(h, dt, ni ? ni : 1, -1, 1);
                float *w = qn_h_rand_dt(h, dt, nw ? nw : 1, -1, 1);
                float *bias = qn_h_rand_dt(h, dt, (size_t)OC, -1, 1);
                float *ref = qn_h_host(h, no * sizeof *ref);
                qn_matmul_forward(ref, inp, w, with_bias ? bias : NULL, N, IC, OC);
                mm_args a = {.c = qn_h_ctx(h),
                             .dt = dt,
                             .out = qn_h_out(h, dt, no),
                             .inp = qn_h_in(h, dt, inp, ni ? ni : 1),
                             .w = qn_h_in(h, dt, w, nw ? nw : 1),
                             .bias = with_bias ? qn_h_in(h, dt, bias, (size_t)OC) : NULL,
                             .N = N,
                             .IC = IC,
                             .OC = OC};
                QN_H_TRY(h, mm_fwd_launch(&a));
                qn_h_compare(h, "out", dt, ref, a.out, no, qn_h_tol(dt, QN_H_TOL_REDUCE));
                qn_h_perf(h, (double)((ni + nw + no) * qn_dtype_size(dt)), 2.0 * N * IC * OC,
                          mm_fwd_launch, &a);
                qn_h_end(h);
            }
            if (IC == 0) continue;
            for (int acc = 0; acc < 2; acc++) {
                for (int skip = 0; skip < 2; skip++) { /* skip = 1: dinp and dbias NULL */
                    if (!qn_h_case(h, "matmul_bwd", "N=%d IC=%d OC=%d acc=%d%s %s", N, IC, OC, acc,
                                   skip ? " dinp=NULL dbias=NULL" : "", qn_h_dtname(dt)))
                        continue;
                    float *inp = qn_h_rand_dt(h, dt, ni, -1, 1);
                    float *w = qn_h_rand_dt(h, dt, nw, -1, 1);
                    float *dout = qn_h_rand_dt(h, dt, no, -1, 1);
                    float *dinp0 = qn_h_rand_dt(h, dt, ni, -1, 1);
                    float *dw0 = qn_h_rand(h, nw, -1, 1);
                    float *db0 = qn_h_rand(h, (size_t)OC, -1, 1);
                    float *dinp = qn_h_copy(h, dinp0, ni), *dw = qn_h_copy(h, dw0, nw);
                    float *db = qn_h_copy(h, db0, (size_t)OC);
                    qn_matmul_backward(skip ? NULL : dinp, dw, skip ? NULL : db, dout, inp, w, N,
                                       IC, OC, acc);
                    mm_args a = {.c = qn_h_ctx(h),
                                 .dt = dt,
                                 .dinp = skip  ? NULL
                                         : acc ? qn_h_out_init(h, dt, dinp0, ni)
                                               : qn_h_out(h, dt, ni),
                                 .dw = qn_h_out_init(h, QN_DTYPE_F32, dw0, nw),
                                 .dbias =
                                     skip ? NULL : qn_h_out_init(h, QN_DTYPE_F32, db0, (size_t)OC),
                                 .inp = qn_h_in(h, dt, inp, ni),
                                 .w = qn_h_in(h, dt, w, nw),
                                 .dout = qn_h_in(h, dt, dout, no),
                                 .N = N,
                                 .IC = IC,
                                 .OC = OC,
                                 .acc = acc};
                    QN_H_TRY(h, mm_bwd_launch(&a));
                    if (!skip)
                        qn_h_compare(h, "dinp", dt, dinp, a.dinp, ni, qn_h_tol(dt, QN_H_TOL_GRAD));
                    qn_h_compare(h, "dw", QN_DTYPE_F32, dw, a.dw, nw,
                                 qn_h_tol(QN_DTYPE_F32, QN_H_TOL_GRAD));
                    if (!skip)
                        qn_h_compare(h, "dbias", QN_DTYPE_F32, db, a.dbias, (size_t)OC,
                                     qn_h_tol(QN_DTYPE_F32, QN_H_TOL_GRAD));
                    /* the perf loop keeps adding into dw/dbias: run it after the checks */
                    qn_h_perf(h, (double)((ni * 2 + nw + no) * qn_dtype_size(dt) + nw * 8),
                              (skip ? 2.0 : 4.0) * N * IC * OC, mm_bwd_launch, &a);
                    qn_h_end(h);
                }
            }
        }
    }
}

/* ------------------------------------------------------------------ FP8 */

/* x in [-1, 1) times a per-(row, 128-column group) magnitude between 2^-6
 * and 2^6, so that groups/tiles get very different scales. */
static float *rand_scaled(qn_harness *h, qn_dtype dt, int rows, int cols, int row_block) {
    const size_t n = (size_t)rows * cols;
    float *x = qn_h_rand(h, n, -1, 1);
    float *m = qn_h_rand(h, (size_t)(rows / row_block + 1) * (size_t)(cols / 128 + 1), -6, 6);
    const int gc = cols / 128 + 1;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            x[(size_t)r * cols + c] *= exp2f(floorf(m[(r / row_block) * gc + c / 128]));
    if (dt == QN_DTYPE_BF16)
        for (size_t i = 0; i < n; i++)
            x[i] = qn_bf16_to_f32(qn_f32_to_bf16(x[i]));
    return x;
}

typedef struct {
    qn_cuda_ctx *c;
    qn_dtype dt;
    uint8_t *xq;
    float *xs;
    const void *x;
    int T, K;
} qa_args;

static qn_status qa_launch(void *p) {
    qa_args *a = p;
    return qn_cuda_fp8_quantize_act(a->c, a->dt, a->xq, a->xs, a->x, a->T, a->K);
}

static void test_fp8_quant_act(qn_harness *h) {
    static const int shapes[][2] = {{1, 1},      {1, 128},   {3, 300},
                                    {129, 1000}, {64, 5120}, {4096, 5120}};
    for (int di = 0; di < N_DTS; di++) {
        qn_dtype dt = k_dts[di];
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            const int T = shapes[s][0], K = shapes[s][1];
            if (!qn_h_case(h, "fp8_quant_act", "T=%d K=%d %s (exact)", T, K, qn_h_dtname(dt)))
                continue;
            const size_t n = (size_t)T * K, ns = qn_cuda_fp8_act_scale_floats(T, K);
            float *x = rand_scaled(h, dt, T, K, 1);
            if (K >= 128)
                for (int k = 0; k < 128; k++)
                    x[k] = 0.0f; /* an all-zero group */
            uint8_t *q = qn_h_host(h, n);
            float *xs = qn_h_host(h, ns * sizeof *xs);
            qn_fp8_quantize_act_ref(x, T, K, q, xs, (size_t)qn_cuda_fp8_act_scale_ld(T, K));
            qa_args a = {qn_h_ctx(h),
                         dt,
                         qn_h_out(h, QN_DTYPE_F8_E4M3, n),
                         qn_h_out(h, QN_DTYPE_F32, ns),
                         qn_h_in(h, dt, x, n),
                         T,
                         K};
            QN_H_TRY(h, qa_launch(&a));
            exact_fp8(h, "xq", a.xq, q, n);
            exact_f32(h, "xs", a.xs, xs, ns);
            qn_h_perf(h, (double)(n * qn_dtype_size(dt) + n + ns * 4), 0, qa_launch, &a);
            qn_h_end(h);
        }
    }
}

typedef struct {
    qn_cuda_ctx *c;
    qn_dtype dt;
    uint8_t *q;
    float *s;
    int ld;
    const void *w;
    int N, K;
    int *bad;
} rq_args;

static qn_status rq_launch(void *p) {
    rq_args *a = p;
    return qn_cuda_fp8_requantize_weight(a->c, a->dt, a->q, a->s, a->ld, a->w, a->N, a->K, a->bad);
}

static void test_fp8_requant(qn_harness *h) {
    static const int shapes[][2] = {{1, 1},      {128, 128},  {300, 260},
                                    {1024, 640}, {256, 5120}, {12288, 5120}};
    for (int di = 0; di < N_DTS; di++) {
        qn_dtype dt = k_dts[di];
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            const int N = shapes[s][0], K = shapes[s][1];
            if (!qn_h_case(h, "fp8_requant", "N=%d K=%d %s (exact vs core/quant/fp8.c)", N, K,
                           qn_h_dtname(dt)))
                continue;
            const size_t n = (size_t)N * K;
            float *w = rand_scaled(h, dt, N, K, 128);
            if (N >= 128 && K >= 256)
                for (int r = 0; r < 128; r++)
                    for (int c = 128; c < 256; c++)
                        w[(size_t)r * K + c] = 0.0f; /* zero tile */
            qn_fp8_shape sh = {.rows = N, .cols = K, .block_rows = 128, .block_cols = 128};
            const int NB = (int)qn_fp8_scale_rows(&sh), KB = (int)qn_fp8_scale_cols(&sh);
            const int ld = (int)qn_cuda_fp8_weight_scale_ld(K);
            uint8_t *q = qn_h_host(h, n);
            float *sc = qn_h_host(h, (size_t)NB * KB * sizeof *sc);
            if (qn_fp8_quantize(&sh, w, q, sc, "w") != QN_OK) {
                qn_h_fail(h, "CPU quantiser: %s", qn_last_error());
                qn_h_end(h);
                continue;
            }
            /* reference in the padded layout; the padding holds 0 and must stay 0 */
            float *ref_s = qn_h_host(h, (size_t)NB * ld * sizeof *ref_s);
            for (int nb = 0; nb < NB; nb++)
                for (int kb = 0; kb < KB; kb++)
                    ref_s[qn_cuda_fp8_weight_scale_index(nb, kb, ld)] = sc[(size_t)nb * KB + kb];
            int32_t zero = 0;
            rq_args a = {
                qn_h_ctx(h),
                dt,
                qn_h_out(h, QN_DTYPE_F8_E4M3, n),
                qn_h_out_init(h, QN_DTYPE_F32, qn_h_host(h, (size_t)NB * ld * 4), (size_t)NB * ld),
                ld,
                qn_h_in(h, dt, w, n),
                N,
                K,
                qn_h_out_init(h, QN_DTYPE_I32, &(float){0.0f}, 1)};
            QN_H_TRY(h, rq_launch(&a));
            exact_fp8(h, "q", a.q, q, n);
            exact_f32(h, "scale", a.s, ref_s, (size_t)NB * ld);
            qn_h_compare_i32(h, "bad_count", &zero, a.bad, 1);
            qn_h_perf(h, (double)(n * qn_dtype_size(dt) * 2 + n), 0, rq_launch, &a);
            qn_h_end(h);
        }
    }
    if (qn_h_case(h, "fp8_requant", "N=130 K=200 f32 with 2 non-finite elements")) {
        const int N = 130, K = 200;
        float *w = qn_h_rand(h, (size_t)N * K, -1, 1);
        w[5] = NAN;
        w[129 * K + 199] = INFINITY;
        const int ld = (int)qn_cuda_fp8_weight_scale_ld(K);
        int32_t two = 2;
        rq_args a = {qn_h_ctx(h),
                     QN_DTYPE_F32,
                     qn_h_out(h, QN_DTYPE_F8_E4M3, (size_t)N * K),
                     qn_h_out(h, QN_DTYPE_F32, (size_t)2 * ld),
                     ld,
                     qn_h_in(h, QN_DTYPE_F32, w, (size_t)N * K),
                     N,
                     K,
                     qn_h_out_init(h, QN_DTYPE_I32, &(float){0.0f}, 1)};
        QN_H_TRY(h, rq_launch(&a));
        qn_h_compare_i32(h, "bad_count", &two, a.bad, 1);
        qn_h_end(h);
    }
}

/* Quantised operands made on the host: W by core's quantiser (scales
 * repacked with row stride ld), x by the activation reference; ref = the
 * fp32 product of the dequantised operands. */
typedef struct {
    uint8_t *wq, *xq;
    float *ws, *xs; /* ws: [NB, ld]; xs: [KB, T] */
    float *ref;     /* [T, N] */
    int ld;
} fp8_operands;

static int fp8_make(qn_harness *h, int T, int N, int K, int ld, const float *x, const float *w,
                    fp8_operands *o) {
    qn_fp8_shape sh = {.rows = N, .cols = K, .block_rows = 128, .block_cols = 128};
    const int NB = (int)qn_fp8_scale_rows(&sh), KB = (int)qn_fp8_scale_cols(&sh);
    o->ld = ld;
    o->wq = qn_h_host(h, (size_t)N * K);
    float *sc = qn_h_host(h, (size_t)NB * KB * sizeof *sc);
    if (qn_fp8_quantize(&sh, w, o->wq, sc, "w") != QN_OK) {
        qn_h_fail(h, "CPU quantiser: %s", qn_last_error());
        return 0;
    }
    o->ws = qn_h_host(h, (size_t)NB * ld * sizeof *o->ws);
    for (int nb = 0; nb < NB; nb++)
        for (int kb = 0; kb < KB; kb++)
            o->ws[qn_cuda_fp8_weight_scale_index(nb, kb, ld)] = sc[(size_t)nb * KB + kb];
    o->xq = qn_h_host(h, (size_t)T * K);
    o->xs = qn_h_host(h, qn_cuda_fp8_act_scale_floats(T, K) * sizeof *o->xs);
    qn_fp8_quantize_act_ref(x, T, K, o->xq, o->xs, (size_t)qn_cuda_fp8_act_scale_ld(T, K));
    float *wd = qn_h_host(h, (size_t)N * K * sizeof *wd);
    qn_fp8_dequantize(&sh, o->wq, sc, wd);
    float *xd = qn_h_host(h, (size_t)T * K * sizeof *xd);
    for (int t = 0; t < T; t++)
        for (int k = 0; k < K; k++)
            xd[(size_t)t * K + k] =
                qn_fp8e4m3_to_f32(o->xq[(size_t)t * K + k]) *
                o->xs[qn_cuda_fp8_act_scale_index(t, k / 128, qn_cuda_fp8_act_scale_ld(T, K))];
    o->ref = qn_h_host(h, (size_t)T * N * sizeof *o->ref);
    qn_sgemm(0, 1, T, N, K, 1.0f, xd, K, wd, K, 0.0f, o->ref, N);
    return 1;
}

typedef struct {
    qn_cuda_ctx *c;
    qn_dtype out_dt;
    void *y;
    const uint8_t *xq;
    const float *xs;
    const void *x;
    qn_cuda_fp8_weight w;
    int T;
} fg_args;

static qn_status fg_launch(void *p) {
    fg_args *a = p;
    return qn_cuda_fp8_gemm(a->c, a->out_dt, a->y, a->xq, a->xs, &a->w, a->T);
}
static qn_status fg_ref_launch(void *p) {
    fg_args *a = p;
    return qn_cuda_fp8_gemm_ref(a->c, a->out_dt, a->y, a->xq, a->xs, &a->w, a->T);
}
static qn_status fg_fused_launch(void *p) {
    fg_args *a = p;
    return qn_cuda_fp8_matmul_forward(a->c, a->out_dt, a->y, a->x, &a->w, a->T);
}

static void test_fp8_gemm(qn_harness *h) {
    static const int shapes[][3] = {/* T, N, K */
                                    {1, 128, 128},    {3, 208, 640},     {64, 1024, 1024},
                                    {129, 256, 5120}, {256, 3072, 5120}, {1000, 1536, 1536},
                                    {5, 100, 300} /* tails: reference kernel only */};
    static const qn_dtype outs[] = {QN_DTYPE_BF16, QN_DTYPE_F32};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int T = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        for (int oi = 0; oi < 2; oi++) {
            const qn_dtype od = outs[oi];
            /* kind 0: reference kernel, unpadded scale rows; 1: reference kernel,
             * padded; 2: cuBLASLt; 3: fused quantise + cuBLASLt; 4: fused vs the
             * unquantised fp32 product */
            for (int kind = 0; kind < 5; kind++) {
                static const char *names[] = {"fp8_gemm_ref", "fp8_gemm_ref", "fp8_gemm",
                                              "fp8_matmul_fwd", "fp8_vs_fp32"};
                const int ld =
                    kind == 0 ? (int)qn_cuda_fp8_blocks(K) : (int)qn_cuda_fp8_weight_scale_ld(K);
                if (kind == 0 && ld == qn_cuda_fp8_weight_scale_ld(K)) continue;
                if (kind >= 2 && (K % 128 != 0 || N % 16 != 0)) continue; /* cuBLASLt rules */
                if (!qn_h_case(h, names[kind], "T=%d N=%d K=%d scale_ld=%d ->%s", T, N, K, ld,
                               qn_h_dtname(od)))
                    continue;
                float *x = rand_scaled(h, od, T, K, 1);
                float *w = rand_scaled(h, QN_DTYPE_F32, N, K, 128);
                fp8_operands o;
                if (!fp8_make(h, T, N, K, ld, x, w, &o)) {
                    qn_h_end(h);
                    continue;
                }
                const size_t ny = (size_t)T * N;
                fg_args a = {
                    .c = qn_h_ctx(h),
                    .out_dt = od,
                    .y = qn_h_out(h, od, ny),
                    .xq = qn_h_in_raw(h, o.xq, (size_t)T * K),
                    .xs = qn_h_in(h, QN_DTYPE_F32, o.xs, qn_cuda_fp8_act_scale_floats(T, K)),
                    .x = qn_h_in(h, od, x, (size_t)T * K),
                    .w = {.q = qn_h_in_raw(h, o.wq, (size_t)N * K),
                          .scale =
                              qn_h_in(h, QN_DTYPE_F32, o.ws, (size_t)qn_cuda_fp8_blocks(N) * ld),
                          .N = N,
                          .K = K,
                          .scale_ld = ld},
                    .T = T};
                qn_status (*fn)(void *) = kind <= 1   ? fg_ref_launch
                                          : kind == 2 ? fg_launch
                                                      : fg_fused_launch;
                QN_H_TRY(h, fn(&a));
                const float *ref = o.ref;
                if (kind == 4) {
                    float *r32 = qn_h_host(h, ny * sizeof *r32);
                    qn_sgemm(0, 1, T, N, K, 1.0f, x, K, w, K, 0.0f, r32, N);
                    ref = r32;
                }
                /* kinds 2 and 3 multiply the very operands of the reference (exact e4m3
                 * values and scales): only cuBLASLt's accumulation differs, so the FP8 class
                 * (6e-2, meant for quantisation error) would let a misread scale of a few
                 * tokens or tiles pass; 5e-3 leaves room for Hopper's FP8 accumulator. */
                const double tol = kind <= 1 ? qn_h_tol(od, QN_H_TOL_REDUCE)
                                   : kind <= 3
                                       ? fmax(qn_h_tol(od, QN_H_TOL_REDUCE), 5e-3)
                                       : qn_h_tol(od, QN_H_TOL_FP8);
                qn_h_compare(h, "y", od, ref, a.y, ny, tol);
                if (kind >= 2)
                    qn_h_perf(h, (double)((size_t)N * K + (size_t)T * K + ny * qn_dtype_size(od)),
                              2.0 * T * N * (double)K, fn, &a);
                qn_h_end(h);
            }
        }
    }
}

/* Layout probes for cuBLASLt's FP8 scale tensors. Every data byte is 1.0
 * (e4m3 0x38) and K = 256 (two 128-column blocks), so y[t, n] = 128 *
 * sum_kb xs(t, kb) * ws(n / 128, kb). One side's scales are 1; the other's
 * array holds 2^i at index i, so each output names, bit by bit, the two
 * array indices cuBLASLt read for it: exact in f32 and bf16 (every sum has
 * two bits at most 7 apart). On a mismatch the case prints those indices
 * against the ones gemm.h's layout helpers predict: the first thing to look
 * at if fp8_gemm fails while fp8_gemm_ref passes. */
static void fp8_probe_decode(qn_harness *h, const char *what, float v, int row, int i0, int i1) {
    const float u = v / 128.0f;
    char got[128] = "";
    size_t len = 0;
    for (int b = 0; b < 24 && len + 8 < sizeof got; b++)
        if (isfinite(u) && u >= 1.0f && ((uint32_t)u >> b) & 1u)
            len += (size_t)snprintf(got + len, sizeof got - len, " %d", b);
    qn_h_fail(h, "%s %d: cuBLASLt read scale indices {%s } (y = %g), gemm.h's layout says {%d %d}",
              what, row, got, (double)v, i0, i1);
}

static void test_fp8_layout_probe(qn_harness *h) {
    static const qn_dtype outs[] = {QN_DTYPE_F32, QN_DTYPE_BF16};
    for (int oi = 0; oi < 2; oi++) {
        const qn_dtype od = outs[oi];
        for (int side = 0; side < 2; side++) { /* 0: activation scales, 1: weight scales */
            const int T = 4, N = 256, K = 256;
            if (!qn_h_case(h, "fp8_gemm_layout_probe", "%s scales T=%d N=%d K=%d ->%s",
                           side ? "weight" : "activation", T, N, K, qn_h_dtname(od)))
                continue;
            const int ld = (int)qn_cuda_fp8_weight_scale_ld(K);
            const int64_t xld = qn_cuda_fp8_act_scale_ld(T, K);
            const size_t nws = 2 * (size_t)ld, nxs = qn_cuda_fp8_act_scale_floats(T, K);
            uint8_t *ones = qn_h_host(h, (size_t)N * K);
            memset(ones, 0x38, (size_t)N * K); /* e4m3 1.0 */
            float *ws = qn_h_host(h, nws * sizeof *ws), *xs = qn_h_host(h, nxs * sizeof *xs);
            for (size_t i = 0; i < nws; i++)
                ws[i] = side ? ldexpf(1.0f, (int)i) : 1.0f;
            for (size_t i = 0; i < nxs; i++)
                xs[i] = side ? 1.0f : ldexpf(1.0f, (int)i);
            float *ref = qn_h_host(h, (size_t)T * N * sizeof *ref);
            for (int t = 0; t < T; t++)
                for (int n = 0; n < N; n++)
                    for (int kb = 0; kb < 2; kb++)
                        ref[t * N + n] += 128.0f * xs[qn_cuda_fp8_act_scale_index(t, kb, xld)] *
                                          ws[qn_cuda_fp8_weight_scale_index(n / 128, kb, ld)];
            fg_args a = {.c = qn_h_ctx(h),
                         .out_dt = od,
                         .y = qn_h_out(h, od, (size_t)T * N),
                         .xq = qn_h_in_raw(h, ones, (size_t)T * K),
                         .xs = qn_h_in(h, QN_DTYPE_F32, xs, nxs),
                         .w = {.q = qn_h_in_raw(h, ones, (size_t)N * K),
                               .scale = qn_h_in(h, QN_DTYPE_F32, ws, nws),
                               .N = N,
                               .K = K,
                               .scale_ld = ld},
                         .T = T};
            QN_H_TRY(h, fg_launch(&a));
            float *got = qn_h_fetch(h, od, a.y, (size_t)T * N);
            if (got) {
                /* activation side: one output per token; weight side: one per row tile */
                for (int t = 0; t < (side ? 1 : T); t++) {
                    for (int n = 0; n < (side ? N : 1); n += 128) {
                        const float v = got[t * N + n];
                        if (v == ref[t * N + n]) continue;
                        if (side)
                            fp8_probe_decode(h, "weight row tile", v, n / 128,
                                             (int)qn_cuda_fp8_weight_scale_index(n / 128, 0, ld),
                                             (int)qn_cuda_fp8_weight_scale_index(n / 128, 1, ld));
                        else
                            fp8_probe_decode(h, "token", v, t,
                                             (int)qn_cuda_fp8_act_scale_index(t, 0, xld),
                                             (int)qn_cuda_fp8_act_scale_index(t, 1, xld));
                    }
                }
            }
            qn_h_compare(h, "y", od, ref, a.y, (size_t)T * N, 0.0);
            qn_h_end(h);
        }
    }
}

/* ----------------------------------------------------------------- perf */

/* GLM-4.5-355B-A32B projections (/work/shared/fixtures glm45_config_rtpllm/
 * config.json): hidden 5120, 96 query heads and 8 KV heads of 128, MoE
 * intermediate 1536 (gate and up fused: 3072), dense intermediate 12288. */
static const struct {
    const char *name;
    int N, K;
} k_glm_shapes[] = {
    {"q_proj", 12288, 5120},        {"k_proj|v_proj", 1024, 5120}, {"o_proj", 5120, 12288},
    {"expert_gate_up", 3072, 5120}, {"expert_down", 5120, 1536},   {"dense_down", 5120, 12288},
};

static void test_gemm_perf(qn_harness *h) {
    if (!qn_h_perf_mode(h)) return; /* large shapes: only with --perf */
    static const int Ms[] = {64, 4096};
    for (size_t si = 0; si < sizeof k_glm_shapes / sizeof k_glm_shapes[0]; si++) {
        const int N = k_glm_shapes[si].N, K = k_glm_shapes[si].K;
        for (int mi = 0; mi < 2; mi++) {
            const int M = Ms[mi];
            const double flops = 2.0 * M * N * (double)K;
            const size_t nx = (size_t)M * K, nw = (size_t)N * K, ny = (size_t)M * N;
            /* bf16 cuBLASLt: y = x W^T */
            if (qn_h_case(h, "gemm_perf_bf16", "M=%d N=%d K=%d %s", M, N, K,
                          k_glm_shapes[si].name)) {
                float *x = qn_h_rand_dt(h, QN_DTYPE_BF16, nx, -1, 1);
                float *w = qn_h_rand_dt(h, QN_DTYPE_BF16, nw, -0.05f, 0.05f);
                gemm_args a = {.c = qn_h_ctx(h),
                               .d = {.trans_a = 0,
                                     .trans_b = 1,
                                     .M = M,
                                     .N = N,
                                     .K = K,
                                     .lda = K,
                                     .ldb = K,
                                     .ldc = N,
                                     .ab_dtype = QN_DTYPE_BF16,
                                     .c_dtype = QN_DTYPE_BF16},
                               .alpha = 1.0f,
                               .beta = 0.0f,
                               .A = qn_h_in(h, QN_DTYPE_BF16, x, nx),
                               .B = qn_h_in(h, QN_DTYPE_BF16, w, nw),
                               .C = qn_h_out(h, QN_DTYPE_BF16, ny)};
                QN_H_TRY(h, gemm_launch(&a));
                qn_h_perf(h, (double)(2 * (nx + nw + ny)), flops, gemm_launch, &a);
                qn_h_end(h);
            }
            /* FP8: weights and activations quantised on the GPU; the GEMM alone,
             * then quantiser + GEMM; both checked against bf16 cuBLASLt */
            for (int fused = 0; fused < 2; fused++) {
                if (!qn_h_case(h, fused ? "gemm_perf_fp8_fused" : "gemm_perf_fp8",
                               "M=%d N=%d K=%d %s", M, N, K, k_glm_shapes[si].name))
                    continue;
                qn_cuda_ctx *c = qn_h_ctx(h);
                float *x = qn_h_rand_dt(h, QN_DTYPE_BF16, nx, -1, 1);
                float *w = qn_h_rand_dt(h, QN_DTYPE_BF16, nw, -0.05f, 0.05f);
                const void *dx = qn_h_in(h, QN_DTYPE_BF16, x, nx);
                const void *dw = qn_h_in(h, QN_DTYPE_BF16, w, nw);
                const int ld = (int)qn_cuda_fp8_weight_scale_ld(K);
                const size_t nsw = (size_t)qn_cuda_fp8_blocks(N) * ld;
                const size_t nsx = qn_cuda_fp8_act_scale_floats(M, K);
                uint8_t *wq = qn_h_out(h, QN_DTYPE_F8_E4M3, nw);
                float *ws = qn_h_out_init(h, QN_DTYPE_F32, qn_h_host(h, nsw * 4), nsw);
                uint8_t *xq = qn_h_out(h, QN_DTYPE_F8_E4M3, nx);
                float *xs = qn_h_out(h, QN_DTYPE_F32, nsx);
                void *y_ref = qn_h_out(h, QN_DTYPE_BF16, ny);
                QN_H_TRY(
                    h, qn_cuda_fp8_requantize_weight(c, QN_DTYPE_BF16, wq, ws, ld, dw, N, K, NULL));
                QN_H_TRY(h, qn_cuda_fp8_quantize_act(c, QN_DTYPE_BF16, xq, xs, dx, M, K));
                QN_H_TRY(h, qn_cuda_gemm(c, QN_DTYPE_BF16, 0, 1, M, N, K, 1.0f, dx, K, dw, K, 0.0f,
                                         y_ref, N));
                float *ref = qn_h_fetch(h, QN_DTYPE_BF16, y_ref, ny);
                fg_args a = {.c = c,
                             .out_dt = QN_DTYPE_BF16,
                             .y = qn_h_out(h, QN_DTYPE_BF16, ny),
                             .xq = xq,
                             .xs = xs,
                             .x = dx,
                             .w = {.q = wq, .scale = ws, .N = N, .K = K, .scale_ld = ld},
                             .T = M};
                QN_H_TRY(h, (fused ? fg_fused_launch : fg_launch)(&a));
                if (ref)
                    qn_h_compare(h, "y vs bf16", QN_DTYPE_BF16, ref, a.y, ny,
                                 qn_h_tol(QN_DTYPE_BF16, QN_H_TOL_FP8));
                qn_h_perf(h, (double)(nw + nx + 2 * ny), flops, fused ? fg_fused_launch : fg_launch,
                          &a);
                qn_h_end(h);
            }
        }
    }
}

void qn_ops_gemm(qn_harness *h) {
    test_gemm(h);
    test_matmul(h);
    test_fp8_quant_act(h);
    test_fp8_requant(h);
    test_fp8_layout_probe(h);
    test_fp8_gemm(h);
    test_gemm_perf(h);
}
