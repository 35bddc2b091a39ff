/* gemm_stub.c — the GEMM entry points of gemm.h for builds without CUDA
 * (QN_CUDA=OFF): the same host-side argument checks as gemm.cu (so bad
 * arguments get the same status in every build), then QN_ERR_NO_DEVICE.
 * With CUDA, gemm.cu provides the functions and this file compiles to
 * nothing. */
#ifndef QN_HAVE_CUDA
#include <string.h>

#include "core/ops/cuda/gemm.h"
#include "core/ops/cuda/gemm_internal.h"

#define QN_NO_CUDA_MSG "this quench was built without CUDA (QN_CUDA=OFF)"

qn_status qn_cuda_gemm_ex(qn_cuda_ctx *c, const qn_cuda_gemm_desc *d, float alpha, const void *A,
                          const void *B, float beta, void *C) {
    QN_CHECK(qn_gemm_check_ex("gemm", d, A, B, C));
    return qn_fail(QN_ERR_NO_DEVICE, "gemm: " QN_NO_CUDA_MSG);
}

void qn_cuda_gemm_plan_stats_get(qn_cuda_gemm_plan_stats *out) {
    memset(out, 0, sizeof *out);
}

void qn_cuda_gemm_plan_clear(void) {}

qn_status qn_cuda_matmul_forward(qn_cuda_ctx *c, qn_dtype dt, void *out, const void *inp,
                                 const void *w, const void *bias, int N, int IC, int OC) {
    QN_CHECK(qn_gemm_check_matmul_fwd(dt, out, inp, w, N, IC, OC));
    return qn_fail(QN_ERR_NO_DEVICE, "matmul_forward: " QN_NO_CUDA_MSG);
}

qn_status qn_cuda_matmul_backward(qn_cuda_ctx *c, qn_dtype dt, void *dinp, float *dw, float *dbias,
                                  const void *dout, const void *inp, const void *w, int N, int IC,
                                  int OC, int accumulate) {
    QN_CHECK(qn_gemm_check_matmul_bwd(dt, dinp, dw, dbias, dout, inp, w, N, IC, OC));
    return qn_fail(QN_ERR_NO_DEVICE, "matmul_backward: " QN_NO_CUDA_MSG);
}

qn_status qn_cuda_fp8_quantize_act(qn_cuda_ctx *c, qn_dtype dt, uint8_t *xq, float *xs,
                                   const void *x, int T, int K) {
    QN_CHECK(qn_gemm_check_fp8_act(dt, xq, xs, x, T, K));
    return qn_fail(QN_ERR_NO_DEVICE, "fp8_quantize_act: " QN_NO_CUDA_MSG);
}

qn_status qn_cuda_fp8_requantize_weight(qn_cuda_ctx *c, qn_dtype dt, uint8_t *q, float *scale,
                                        int scale_ld, const void *w, int N, int K, int *bad_count) {
    QN_CHECK(qn_gemm_check_fp8_requant(dt, q, scale, scale_ld, w, N, K));
    return qn_fail(QN_ERR_NO_DEVICE, "fp8_requantize_weight: " QN_NO_CUDA_MSG);
}

qn_status qn_cuda_fp8_gemm(qn_cuda_ctx *c, qn_dtype out_dt, void *y, const uint8_t *xq,
                           const float *xs, const qn_cuda_fp8_weight *w, int T) {
    QN_CHECK(qn_gemm_check_fp8_gemm("fp8_gemm", out_dt, y, xq, xs, w, T, 1));
    return qn_fail(QN_ERR_NO_DEVICE, "fp8_gemm: " QN_NO_CUDA_MSG);
}

qn_status qn_cuda_fp8_gemm_ref(qn_cuda_ctx *c, qn_dtype out_dt, void *y, const uint8_t *xq,
                               const float *xs, const qn_cuda_fp8_weight *w, int T) {
    QN_CHECK(qn_gemm_check_fp8_gemm("fp8_gemm_ref", out_dt, y, xq, xs, w, T, 0));
    return qn_fail(QN_ERR_NO_DEVICE, "fp8_gemm_ref: " QN_NO_CUDA_MSG);
}

qn_status qn_cuda_fp8_matmul_forward(qn_cuda_ctx *c, qn_dtype dt, void *y, const void *x,
                                     const qn_cuda_fp8_weight *w, int T) {
    QN_CHECK(qn_gemm_check_fp8_matmul(dt, y, x, w, T));
    return qn_fail(QN_ERR_NO_DEVICE, "fp8_matmul_forward: " QN_NO_CUDA_MSG);
}
#else
typedef int qn_gemm_stub_unused_; /* ISO C forbids an empty translation unit */
#endif
