/* cuda_rt.h — the C face of quench's CUDA runtime shims.
 *
 * Everything here is callable from C whether or not the binary was built
 * with CUDA: without QN_HAVE_CUDA the functions report no device. With CUDA
 * but no GPU (or no driver), qn_cuda_device_count() is 0 and the rest return
 * QN_ERR_NO_DEVICE, so GPU tests can skip with a clear message. */
#ifndef QN_CORE_OPS_CUDA_RT_H
#define QN_CORE_OPS_CUDA_RT_H

#include <stddef.h>
#include <stdint.h>

#include "quench/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable GPUs; 0 without a driver or device. Never fails. */
int qn_cuda_device_count(void);

/* "NVIDIA H200 (sm_90, 139 GiB)" into buf. */
qn_status qn_cuda_device_describe(int device, char *buf, size_t cap);

/* Converts n floats to bf16 (round to nearest even, NaN kept quiet) on the
 * GPU: host in, host out. A correctness probe for the device conversion that
 * the bf16 training path uses; must match qn_f32_to_bf16 bit for bit on
 * every non-NaN input (NaN stays NaN; the device picks its own payload). */
qn_status qn_cuda_f32_to_bf16(const float *in, uint16_t *out, size_t n);

#ifdef __cplusplus
}
#endif
#endif
