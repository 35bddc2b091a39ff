/* loss_stub.c — the CUDA loss (loss.h) in builds without CUDA (QN_CUDA=OFF):
 * it reports no device. The host-side checks (loss_host.c) exist in every
 * build. With CUDA the function comes from loss.cu and this file compiles to
 * nothing. */
#ifndef QN_HAVE_CUDA
#include "core/ops/cuda/loss.h"

qn_status qn_cuda_loss_compute(qn_cuda_ctx *ctx, const qn_cuda_loss_cfg *c,
                               const qn_cuda_loss_batch *b, double norm_samples, double norm_tokens,
                               float *d_logp, float *d_entropy, qn_cuda_loss_out *out) {
    return qn_fail(QN_ERR_NO_DEVICE, "qn_cuda_loss_compute: built without CUDA (QN_CUDA=OFF)");
}
#else
typedef int qn_loss_stub_unused_; /* ISO C forbids an empty translation unit */
#endif
