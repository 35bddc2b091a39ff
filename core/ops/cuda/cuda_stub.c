/* cuda_stub.c — the CUDA runtime shims for builds without CUDA (QN_CUDA=OFF):
 * no device, so callers and GPU tests take their no-GPU path. With CUDA the
 * same functions come from cuda_rt.cu and this file compiles to nothing. */
#ifndef QN_HAVE_CUDA
#include "core/ops/cuda/cuda_rt.h"

int qn_cuda_device_count(void) { return 0; }

qn_status qn_cuda_device_describe(int device, char *buf, size_t cap) {
    return qn_fail(QN_ERR_NO_DEVICE, "this quench was built without CUDA (QN_CUDA=OFF)");
}

qn_status qn_cuda_f32_to_bf16(const float *in, uint16_t *out, size_t n) {
    return qn_fail(QN_ERR_NO_DEVICE, "this quench was built without CUDA (QN_CUDA=OFF)");
}
#else
typedef int qn_cuda_stub_unused_; /* ISO C forbids an empty translation unit */
#endif
