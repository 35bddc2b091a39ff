/* gemm_internal.h — host-side argument checks of the gemm.h entry points,
 * shared by gemm.cu (CUDA builds) and gemm_stub.c (QN_CUDA=OFF), so that both
 * builds refuse the same bad arguments with the same status before anything
 * touches a device. Implemented in gemm_plan.c (plain C, always compiled).
 * Not a public API: include only from core/ops/cuda. */
#ifndef QN_CORE_OPS_CUDA_GEMM_INTERNAL_H
#define QN_CORE_OPS_CUDA_GEMM_INTERNAL_H

#include "core/ops/cuda/gemm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* qn_cuda_gemm_ex: descriptor, then the pointers the shapes need. */
qn_status qn_gemm_check_ex(const char *op, const qn_cuda_gemm_desc *d, const void *A, const void *B,
                           const void *C);
qn_status qn_gemm_check_matmul_fwd(qn_dtype dt, const void *out, const void *inp, const void *w,
                                   int N, int IC, int OC);
qn_status qn_gemm_check_matmul_bwd(qn_dtype dt, const void *dinp, const float *dw,
                                   const float *dbias, const void *dout, const void *inp,
                                   const void *w, int N, int IC, int OC);
qn_status qn_gemm_check_fp8_act(qn_dtype dt, const uint8_t *xq, const float *xs, const void *x,
                                int T, int K);
qn_status qn_gemm_check_fp8_requant(qn_dtype dt, const uint8_t *q, const float *scale, int scale_ld,
                                    const void *w, int N, int K);
/* qn_cuda_fp8_gemm (for_cublas = 1) and qn_cuda_fp8_gemm_ref (0). */
qn_status qn_gemm_check_fp8_gemm(const char *op, qn_dtype out_dt, const void *y, const uint8_t *xq,
                                 const float *xs, const qn_cuda_fp8_weight *w, int T,
                                 int for_cublas);
/* qn_cuda_fp8_matmul_forward: dt for x and y. */
qn_status qn_gemm_check_fp8_matmul(qn_dtype dt, const void *y, const void *x,
                                   const qn_cuda_fp8_weight *w, int T);

#ifdef __cplusplus
}
#endif
#endif
