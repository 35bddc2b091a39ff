/* gemm_plan.c — the host-side logic of gemm.h that needs no GPU: argument
 * checks (shared by gemm.cu and gemm_stub.c through gemm_internal.h), the
 * row-major to column-major mapping of a GEMM for cuBLASLt, and the FP8
 * scale-layout index helpers. Compiled in every build and unit-tested on the
 * CPU (tests/unit/test_cuda_gemm_plan.c).
 *
 * Leaves out: anything that talks to CUDA (gemm.cu). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/ops/cuda/fp8_codec.h"
#include "core/ops/cuda/gemm.h"
#include "core/ops/cuda/gemm_internal.h"

static int ab_dtype_ok(qn_dtype t) {
    return t == QN_DTYPE_F32 || t == QN_DTYPE_BF16;
}

static int64_t max1(int64_t v) {
    return v > 1 ? v : 1;
}

qn_status qn_cuda_gemm_check(const char *op, const qn_cuda_gemm_desc *d) {
    if (!op) op = "gemm";
    if (!d) return qn_fail(QN_ERR_INVALID, "%s: NULL descriptor", op);
    if (!ab_dtype_ok(d->ab_dtype))
        return qn_fail(QN_ERR_UNSUPPORTED, "%s: A/B dtype %s not supported (F32, BF16)", op,
                       qn_dtype_name(d->ab_dtype));
    if (!ab_dtype_ok(d->c_dtype))
        return qn_fail(QN_ERR_UNSUPPORTED, "%s: C dtype %s not supported (F32, BF16)", op,
                       qn_dtype_name(d->c_dtype));
    if (d->ab_dtype == QN_DTYPE_F32 && d->c_dtype != QN_DTYPE_F32)
        return qn_fail(QN_ERR_UNSUPPORTED, "%s: F32 A/B need an F32 C, not %s", op,
                       qn_dtype_name(d->c_dtype));
    if (d->allow_tf32 && d->ab_dtype != QN_DTYPE_F32)
        return qn_fail(QN_ERR_INVALID, "%s: allow_tf32 is for F32 A/B only", op);
    if (d->M < 0 || d->N < 0 || d->K < 0)
        return qn_fail(QN_ERR_INVALID, "%s: negative dims M=%d N=%d K=%d", op, d->M, d->N, d->K);
    /* row-major: the stored row length of each operand bounds its ld */
    const int64_t a_row = d->trans_a ? d->M : d->K;
    const int64_t b_row = d->trans_b ? d->K : d->N;
    if (d->lda < max1(a_row))
        return qn_fail(QN_ERR_INVALID, "%s: lda %d < %lld (A stored [%d, %d]%s)", op, d->lda,
                       (long long)max1(a_row), d->trans_a ? d->K : d->M, d->trans_a ? d->M : d->K,
                       d->trans_a ? ", transposed" : "");
    if (d->ldb < max1(b_row))
        return qn_fail(QN_ERR_INVALID, "%s: ldb %d < %lld (B stored [%d, %d]%s)", op, d->ldb,
                       (long long)max1(b_row), d->trans_b ? d->N : d->K, d->trans_b ? d->K : d->N,
                       d->trans_b ? ", transposed" : "");
    if (d->ldc < max1(d->N))
        return qn_fail(QN_ERR_INVALID, "%s: ldc %d < %lld (C is [%d, %d])", op, d->ldc,
                       (long long)max1(d->N), d->M, d->N);
    return QN_OK;
}

void qn_cuda_gemm_to_colmajor(const qn_cuda_gemm_desc *d, qn_cuda_gemm_colmajor *o) {
    o->m = d->N;
    o->n = d->M;
    o->k = d->K;
    /* A' = row-major B: [K, N] is column-major N x K; [N, K] (trans) is K x N */
    o->trans_a = d->trans_b ? 1 : 0;
    o->a_rows = d->trans_b ? d->K : d->N;
    o->a_cols = d->trans_b ? d->N : d->K;
    o->lda = d->ldb;
    /* B' = row-major A: [M, K] is column-major K x M; [K, M] (trans) is M x K */
    o->trans_b = d->trans_a ? 1 : 0;
    o->b_rows = d->trans_a ? d->M : d->K;
    o->b_cols = d->trans_a ? d->K : d->M;
    o->ldb = d->lda;
    o->c_rows = d->N;
    o->c_cols = d->M;
    o->ldc = d->ldc;
}

qn_status qn_gemm_check_ex(const char *op, const qn_cuda_gemm_desc *d, const void *A, const void *B,
                           const void *C) {
    QN_CHECK(qn_cuda_gemm_check(op, d));
    if (d->M == 0 || d->N == 0) return QN_OK;
    if (!C) return qn_fail(QN_ERR_INVALID, "%s: C is NULL", op);
    if (d->K > 0 && (!A || !B)) return qn_fail(QN_ERR_INVALID, "%s: A or B is NULL", op);
    return QN_OK;
}

static qn_status check_dt(const char *op, qn_dtype dt) {
    if (!ab_dtype_ok(dt))
        return qn_fail(QN_ERR_UNSUPPORTED, "%s: dtype %s not supported (F32, BF16)", op,
                       qn_dtype_name(dt));
    return QN_OK;
}

qn_status qn_gemm_check_matmul_fwd(qn_dtype dt, const void *out, const void *inp, const void *w,
                                   int N, int IC, int OC) {
    const char *op = "matmul_forward";
    QN_CHECK(check_dt(op, dt));
    if (N < 0 || IC < 0 || OC < 0)
        return qn_fail(QN_ERR_INVALID, "%s: negative dims N=%d IC=%d OC=%d", op, N, IC, OC);
    if (N == 0 || OC == 0) return QN_OK;
    if (!out) return qn_fail(QN_ERR_INVALID, "%s: out is NULL", op);
    if (IC > 0 && (!inp || !w)) return qn_fail(QN_ERR_INVALID, "%s: inp or w is NULL", op);
    if (out == inp) return qn_fail(QN_ERR_INVALID, "%s: out aliases inp", op);
    return QN_OK;
}

qn_status qn_gemm_check_matmul_bwd(qn_dtype dt, const void *dinp, const float *dw,
                                   const float *dbias, const void *dout, const void *inp,
                                   const void *w, int N, int IC, int OC) {
    const char *op = "matmul_backward";
    QN_CHECK(check_dt(op, dt));
    if (N < 0 || IC < 0 || OC < 0)
        return qn_fail(QN_ERR_INVALID, "%s: negative dims N=%d IC=%d OC=%d", op, N, IC, OC);
    if (N == 0 || IC == 0) return QN_OK;
    if (OC > 0 && (dinp || dw || dbias) && !dout)
        return qn_fail(QN_ERR_INVALID, "%s: dout is NULL", op);
    if (dinp && OC > 0 && !w) return qn_fail(QN_ERR_INVALID, "%s: dinp wanted but w is NULL", op);
    if (dw && OC > 0 && !inp) return qn_fail(QN_ERR_INVALID, "%s: dw wanted but inp is NULL", op);
    if (dinp && (dinp == dout || dinp == inp || dinp == w))
        return qn_fail(QN_ERR_INVALID, "%s: dinp aliases an input", op);
    return QN_OK;
}

int64_t qn_cuda_fp8_blocks(int64_t n) {
    return (n + QN_CUDA_FP8_BLOCK - 1) / QN_CUDA_FP8_BLOCK;
}

int64_t qn_cuda_fp8_weight_scale_ld(int64_t K) {
    return (qn_cuda_fp8_blocks(K) + 3) / 4 * 4;
}

int64_t qn_cuda_fp8_weight_scale_index(int64_t nb, int64_t kb, int64_t ld) {
    return nb * ld + kb;
}

int64_t qn_cuda_fp8_act_scale_ld(int64_t T, int64_t K) {
    (void)K;
    return T;
}

int64_t qn_cuda_fp8_act_scale_index(int64_t t, int64_t kb, int64_t act_ld) {
    return qn_fp8_act_scale_at(t, kb, act_ld);
}

size_t qn_cuda_fp8_act_scale_floats(int64_t T, int64_t K) {
    if (T <= 0 || K <= 0) return 0;
    /* one past the last group's index, whatever the layout */
    const int64_t ld = qn_cuda_fp8_act_scale_ld(T, K);
    return (size_t)qn_fp8_act_scale_at(T - 1, qn_cuda_fp8_blocks(K) - 1, ld) + 1;
}

qn_status qn_cuda_fp8_check_weight(const char *op, const qn_cuda_fp8_weight *w, int for_cublas) {
    if (!op) op = "fp8";
    if (!w) return qn_fail(QN_ERR_INVALID, "%s: NULL weight", op);
    if (w->N < 1 || w->K < 1)
        return qn_fail(QN_ERR_INVALID, "%s: weight [%d, %d] is empty", op, w->N, w->K);
    if (!w->q || !w->scale) return qn_fail(QN_ERR_INVALID, "%s: weight q or scale is NULL", op);
    if (w->scale_ld < qn_cuda_fp8_blocks(w->K))
        return qn_fail(QN_ERR_INVALID, "%s: scale_ld %d < ceil(K/128) = %lld (K = %d)", op,
                       w->scale_ld, (long long)qn_cuda_fp8_blocks(w->K), w->K);
    if (!for_cublas) return QN_OK;
    if (w->K % QN_CUDA_FP8_BLOCK != 0)
        return qn_fail(QN_ERR_UNSUPPORTED,
                       "%s: cuBLASLt block-scaled FP8 needs K %% 128 == 0 (K = %d); use the "
                       "reference kernel",
                       op, w->K);
    if (w->N % 16 != 0)
        return qn_fail(QN_ERR_UNSUPPORTED, "%s: cuBLASLt FP8 needs N %% 16 == 0 (N = %d)", op,
                       w->N);
    if (w->scale_ld != qn_cuda_fp8_weight_scale_ld(w->K))
        return qn_fail(QN_ERR_UNSUPPORTED,
                       "%s: cuBLASLt reads weight scales with row stride %lld for K = %d, got "
                       "scale_ld %d (re-pack the scales)",
                       op, (long long)qn_cuda_fp8_weight_scale_ld(w->K), w->K, w->scale_ld);
    return QN_OK;
}

qn_status qn_gemm_check_fp8_act(qn_dtype dt, const uint8_t *xq, const float *xs, const void *x,
                                int T, int K) {
    const char *op = "fp8_quantize_act";
    QN_CHECK(check_dt(op, dt));
    if (T < 0 || K < 0) return qn_fail(QN_ERR_INVALID, "%s: negative dims T=%d K=%d", op, T, K);
    if (T == 0 || K == 0) return QN_OK;
    if (!xq || !xs || !x) return qn_fail(QN_ERR_INVALID, "%s: NULL pointer", op);
    return QN_OK;
}

qn_status qn_gemm_check_fp8_requant(qn_dtype dt, const uint8_t *q, const float *scale, int scale_ld,
                                    const void *w, int N, int K) {
    const char *op = "fp8_requantize_weight";
    QN_CHECK(check_dt(op, dt));
    if (N < 1 || K < 1) return qn_fail(QN_ERR_INVALID, "%s: weight [%d, %d] is empty", op, N, K);
    if (!q || !scale || !w) return qn_fail(QN_ERR_INVALID, "%s: NULL pointer", op);
    if (scale_ld < qn_cuda_fp8_blocks(K))
        return qn_fail(QN_ERR_INVALID, "%s: scale_ld %d < ceil(K/128) = %lld", op, scale_ld,
                       (long long)qn_cuda_fp8_blocks(K));
    return QN_OK;
}

qn_status qn_gemm_check_fp8_gemm(const char *op, qn_dtype out_dt, const void *y, const uint8_t *xq,
                                 const float *xs, const qn_cuda_fp8_weight *w, int T,
                                 int for_cublas) {
    QN_CHECK(check_dt(op, out_dt));
    QN_CHECK(qn_cuda_fp8_check_weight(op, w, for_cublas));
    if (T < 0) return qn_fail(QN_ERR_INVALID, "%s: negative T=%d", op, T);
    if (T == 0) return QN_OK;
    if (!y || !xq || !xs) return qn_fail(QN_ERR_INVALID, "%s: NULL pointer", op);
    return QN_OK;
}

qn_status qn_gemm_check_fp8_matmul(qn_dtype dt, const void *y, const void *x,
                                   const qn_cuda_fp8_weight *w, int T) {
    const char *op = "fp8_matmul_forward";
    QN_CHECK(check_dt(op, dt));
    QN_CHECK(qn_cuda_fp8_check_weight(op, w, 1));
    if (T < 0) return qn_fail(QN_ERR_INVALID, "%s: negative T=%d", op, T);
    if (T == 0) return QN_OK;
    if (!y || !x) return qn_fail(QN_ERR_INVALID, "%s: NULL pointer", op);
    return QN_OK;
}

/* The plain form of qn_cuda_gemm_ex (same dtype for A, B and C); here because it
 * only fills the descriptor, in CUDA and non-CUDA builds alike. */
qn_status qn_cuda_gemm(qn_cuda_ctx *c, qn_dtype dt, int trans_a, int trans_b, int M, int N, int K,
                       float alpha, const void *A, int lda, const void *B, int ldb, float beta,
                       void *C, int ldc) {
    qn_cuda_gemm_desc d;
    memset(&d, 0, sizeof d);
    d.trans_a = trans_a;
    d.trans_b = trans_b;
    d.M = M;
    d.N = N;
    d.K = K;
    d.lda = lda;
    d.ldb = ldb;
    d.ldc = ldc;
    d.ab_dtype = dt;
    d.c_dtype = dt;
    return qn_cuda_gemm_ex(c, &d, alpha, A, B, beta, C);
}
