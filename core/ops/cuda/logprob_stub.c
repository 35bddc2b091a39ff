/* logprob_stub.c — the CUDA log-prob ops (logprob.h) in builds without CUDA
 * (QN_CUDA=OFF): they report no device. With CUDA the same functions come
 * from logprob.cu and this file compiles to nothing. */
#ifndef QN_HAVE_CUDA
#include "core/ops/cuda/logprob.h"

qn_status qn_cuda_logprob_forward(qn_cuda_ctx *c, qn_dtype dt, float *logp, float *entropy,
                                  float *lse, float *ez, const void *h, const int32_t *targets,
                                  const void *w, int N, int C, int V, float temperature,
                                  int chunk) {
    return qn_fail(QN_ERR_NO_DEVICE, "qn_cuda_logprob_forward: built without CUDA (QN_CUDA=OFF)");
}

qn_status qn_cuda_logprob_backward(qn_cuda_ctx *c, qn_dtype dt, void *dh, float *dw,
                                   const float *dlogp, const float *dentropy, const float *lse,
                                   const float *ez, const void *h, const int32_t *targets,
                                   const void *w, int N, int C, int V, float temperature, int chunk,
                                   int accumulate) {
    return qn_fail(QN_ERR_NO_DEVICE, "qn_cuda_logprob_backward: built without CUDA (QN_CUDA=OFF)");
}
#else
typedef int qn_logprob_stub_unused_; /* ISO C forbids an empty translation unit */
#endif
