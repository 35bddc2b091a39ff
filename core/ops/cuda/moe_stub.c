/* moe_stub.c — the CUDA router and MoE ops (moe.h) in builds without CUDA
 * (QN_CUDA=OFF): they report no device. The host-side checks, sizes and
 * layout (moe_plan.c) exist in every build. With CUDA the functions come
 * from moe.cu and this file compiles to nothing. */
#ifndef QN_HAVE_CUDA
#include "core/ops/cuda/moe.h"

static qn_status no_cuda(const char *op) {
    return qn_fail(QN_ERR_NO_DEVICE, "%s: built without CUDA (QN_CUDA=OFF)", op);
}

qn_status qn_cuda_router_select(qn_cuda_ctx *c, const qn_router_cfg *cfg, int32_t *idx,
                                float *weight, float *scores, int T) {
    return no_cuda("qn_cuda_router_select");
}

qn_status qn_cuda_router_forward(qn_cuda_ctx *c, qn_dtype dt, const qn_router_cfg *cfg,
                                 int32_t *idx, float *weight, float *scores, const void *x,
                                 const void *w, int T, int C) {
    return no_cuda("qn_cuda_router_forward");
}

qn_status qn_cuda_router_backward(qn_cuda_ctx *c, qn_dtype dt, const qn_router_cfg *cfg, void *dx,
                                  float *dw, const float *dweight, const int32_t *idx,
                                  const float *scores, const void *x, const void *w, int T, int C,
                                  int accumulate) {
    return no_cuda("qn_cuda_router_backward");
}

qn_status qn_cuda_moe_permute(qn_cuda_ctx *c, qn_cuda_moe_acts *acts, const int32_t *idx, int T,
                              int K, int E) {
    return no_cuda("qn_cuda_moe_permute");
}

qn_status qn_cuda_moe_forward(qn_cuda_ctx *c, qn_dtype dt, void *out, qn_cuda_moe_acts *acts,
                              const void *x, const int32_t *idx, const float *weight,
                              const void *w_gate, const void *w_up, const void *w_down, int T,
                              int C, int F, int E, int K, int accumulate) {
    return no_cuda("qn_cuda_moe_forward");
}

qn_status qn_cuda_moe_backward(qn_cuda_ctx *c, qn_dtype dt, void *dx, float *dweight,
                               float *dw_gate, float *dw_up, float *dw_down, const void *dout,
                               const qn_cuda_moe_acts *acts, const float *weight,
                               const void *w_gate, const void *w_up, const void *w_down, int T,
                               int C, int F, int E, int K, int accumulate) {
    return no_cuda("qn_cuda_moe_backward");
}
#else
typedef int qn_moe_stub_unused_; /* ISO C forbids an empty translation unit */
#endif
