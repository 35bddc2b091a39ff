/* elementwise_stub.c — the ops of elementwise.h for builds without CUDA
 * (QN_CUDA=OFF): every call reports QN_ERR_NO_DEVICE, so callers link and
 * take their CPU path. With CUDA, elementwise.cu provides them and this file
 * compiles to nothing. */
#ifndef QN_HAVE_CUDA
#include "core/ops/cuda/elementwise.h"

#define QN_EW_NO_CUDA(op)                                                                          \
    qn_fail(QN_ERR_NO_DEVICE, "%s: this quench was built without CUDA (QN_CUDA=OFF)", op)

qn_status qn_cuda_embedding_forward(qn_cuda_ctx *c, qn_dtype dt, void *out, const int32_t *tokens,
                                    const void *wte, int T, int C, int V) {
    return QN_EW_NO_CUDA("qn_cuda_embedding_forward");
}
qn_status qn_cuda_embedding_backward(qn_cuda_ctx *c, qn_dtype dt, float *dwte, const void *dout,
                                     const int32_t *tokens, int T, int C, int V) {
    return QN_EW_NO_CUDA("qn_cuda_embedding_backward");
}
qn_status qn_cuda_rmsnorm_forward(qn_cuda_ctx *c, qn_dtype dt, void *out, float *rstd,
                                  const void *inp, const void *w, float eps, int N, int D) {
    return QN_EW_NO_CUDA("qn_cuda_rmsnorm_forward");
}
qn_status qn_cuda_rmsnorm_backward(qn_cuda_ctx *c, qn_dtype dt, void *dinp, float *dw,
                                   const void *dout, const void *inp, const void *w,
                                   const float *rstd, int N, int D, int accumulate) {
    return QN_EW_NO_CUDA("qn_cuda_rmsnorm_backward");
}
qn_status qn_cuda_rope_forward(qn_cuda_ctx *c, qn_dtype dt, void *x, const int32_t *pos,
                               const float *cos_t, const float *sin_t, int P, int T, int NH, int HD,
                               int R) {
    return QN_EW_NO_CUDA("qn_cuda_rope_forward");
}
qn_status qn_cuda_rope_backward(qn_cuda_ctx *c, qn_dtype dt, void *dx, const int32_t *pos,
                                const float *cos_t, const float *sin_t, int P, int T, int NH,
                                int HD, int R) {
    return QN_EW_NO_CUDA("qn_cuda_rope_backward");
}
qn_status qn_cuda_swiglu_forward(qn_cuda_ctx *c, qn_dtype dt, void *out, const void *gate,
                                 const void *up, int N, int F, int ld) {
    return QN_EW_NO_CUDA("qn_cuda_swiglu_forward");
}
qn_status qn_cuda_swiglu_backward(qn_cuda_ctx *c, qn_dtype dt, void *dgate, void *dup,
                                  const void *dout, const void *gate, const void *up, int N, int F,
                                  int ld) {
    return QN_EW_NO_CUDA("qn_cuda_swiglu_backward");
}
qn_status qn_cuda_adamw_step(qn_cuda_ctx *c, qn_dtype grad_dt, float *params, const void *grad,
                             float *m, float *v, void *params_bf16, int64_t n,
                             const qn_cuda_adamw_args *a) {
    return QN_EW_NO_CUDA("qn_cuda_adamw_step");
}
qn_status qn_cuda_sumsq(qn_cuda_ctx *c, qn_dtype dt, const void *x, int64_t n, double *out_dev) {
    return QN_EW_NO_CUDA("qn_cuda_sumsq");
}
qn_status qn_cuda_convert(qn_cuda_ctx *c, qn_dtype dst_dt, void *dst, qn_dtype src_dt,
                          const void *src, int64_t n) {
    return QN_EW_NO_CUDA("qn_cuda_convert");
}
#else
typedef int qn_elementwise_stub_unused_; /* ISO C forbids an empty translation unit */
#endif
