// cuda_common.cuh — internal helpers for quench's .cu files (never included
// from C): error macros that turn CUDA/cuBLAS failures into qn_status with a
// message naming the op, bf16/f32 load-store helpers for kernels templated on
// the storage type, and a dtype dispatch helper.
//
// Conventions every .cu file follows:
//   - every runtime call goes through QN_CUDA_TRY (or is checked by hand);
//   - every kernel launch is followed by QN_CUDA_LAUNCH_CHECK("<op>"), which
//     returns qn_fail(QN_ERR_CUDA, "<op>: <cuda error string>") when
//     cudaGetLastError() reports a bad launch (a fault inside the kernel
//     shows up later, at qn_cuda_sync);
//   - kernels read and write storage through qn_ld / qn_st and compute in
//     fp32, so one template body serves f32 and bf16.
//
// Leaves out: fp8/f16 storage helpers (add them with the ops that need them).
#ifndef QN_CORE_OPS_CUDA_COMMON_CUH
#define QN_CORE_OPS_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/ops/cuda/cuda_ctx.h"
#include "quench/status.h"

// A CUDA runtime call that must succeed; otherwise returns QN_ERR_CUDA from
// the enclosing function with the call, where, and CUDA's error string. The
// failed call also set CUDA's per-thread "last error": it is cleared here, so
// that it is not reported a second time by a later launch check or
// qn_cuda_sync (a sticky fault stays: every later call reports it anyway).
#define QN_CUDA_TRY(call)                                                                          \
    do {                                                                                           \
        cudaError_t qn_cu_e_ = (call);                                                             \
        if (qn_cu_e_ != cudaSuccess) {                                                             \
            (void)cudaGetLastError();                                                              \
            qn_status_trace(__FILE__, __LINE__, QN_ERR_CUDA);                                      \
            return qn_fail(QN_ERR_CUDA, "%s:%d: %s: %s", __FILE__, __LINE__, #call,                \
                           cudaGetErrorString(qn_cu_e_));                                          \
        }                                                                                          \
    } while (0)

// After every <<<...>>> launch: a bad configuration (grid too large, too much
// shared memory, no kernel image for this GPU) is reported here, named by op.
#define QN_CUDA_LAUNCH_CHECK(op)                                                                   \
    do {                                                                                           \
        cudaError_t qn_cu_e_ = cudaGetLastError();                                                 \
        if (qn_cu_e_ != cudaSuccess) {                                                             \
            qn_status_trace(__FILE__, __LINE__, QN_ERR_CUDA);                                      \
            return qn_fail(QN_ERR_CUDA, "%s: %s", (op), cudaGetErrorString(qn_cu_e_));             \
        }                                                                                          \
    } while (0)

// A cuBLAS / cuBLASLt call that must succeed (cublasStatus_t).
#define QN_CUBLAS_TRY(call)                                                                        \
    do {                                                                                           \
        cublasStatus_t qn_cb_s_ = (call);                                                          \
        if (qn_cb_s_ != CUBLAS_STATUS_SUCCESS) {                                                   \
            qn_status_trace(__FILE__, __LINE__, QN_ERR_CUDA);                                      \
            return qn_fail(QN_ERR_CUDA, "%s:%d: %s: cuBLAS status %d (%s)", __FILE__, __LINE__,    \
                           #call, (int)qn_cb_s_, cublasLtGetStatusString(qn_cb_s_));               \
        }                                                                                          \
    } while (0)

// Storage dtypes the CUDA ops accept (f32, bf16); anything else is refused
// with the op's name before touching the device.
#define QN_CUDA_CHECK_DTYPE(op, dt)                                                                \
    do {                                                                                           \
        if ((dt) != QN_DTYPE_F32 && (dt) != QN_DTYPE_BF16)                                         \
            return qn_fail(QN_ERR_UNSUPPORTED, "%s: dtype %s not supported (f32, bf16)", (op),     \
                           qn_dtype_name(dt));                                                     \
    } while (0)

// A precondition on arguments (shapes, NULL pointers): QN_ERR_INVALID with a
// message; checked on the host before any launch.
#define QN_CUDA_REQUIRE(cond, ...)                                                                 \
    do {                                                                                           \
        if (!(cond)) return qn_fail(QN_ERR_INVALID, __VA_ARGS__);                                  \
    } while (0)

// ---- storage load/store: compute in fp32 whatever the storage ----

__device__ __forceinline__ float qn_ld(const float *p) {
    return *p;
}
__device__ __forceinline__ float qn_ld(const __nv_bfloat16 *p) {
    return __bfloat162float(*p);
}
__device__ __forceinline__ void qn_st(float *p, float v) {
    *p = v;
}
// Round to nearest even, like qn_f32_to_bf16 on the host.
__device__ __forceinline__ void qn_st(__nv_bfloat16 *p, float v) {
    *p = __float2bfloat16_rn(v);
}

// ---- dtype dispatch ----

// Calls f(T{}) with T = float or __nv_bfloat16 for the storage dtype dt and
// returns its qn_status; QN_ERR_UNSUPPORTED (naming op) for any other dtype.
// Typical use, with a templated host launcher launch_x<T>(...):
//   return qn_cuda_dispatch(op, dt, [&](auto tag) {
//       using T = decltype(tag);
//       return launch_x<T>(c, (T *)y, (const T *)x, n);
//   });
template <typename F> static inline qn_status qn_cuda_dispatch(const char *op, qn_dtype dt, F &&f) {
    switch (dt) {
    case QN_DTYPE_F32:
        return f(float{});
    case QN_DTYPE_BF16:
        return f(__nv_bfloat16{});
    default:
        return qn_fail(QN_ERR_UNSUPPORTED, "%s: dtype %s not supported (f32, bf16)", op,
                       qn_dtype_name(dt));
    }
}

// Blocks of `threads` needed for n items, clamped to a grid-stride-friendly
// maximum (kernels using this must loop with a grid stride).
static inline unsigned qn_cuda_blocks(size_t n, unsigned threads, unsigned max_blocks = 65535u) {
    size_t b = (n + threads - 1) / threads;
    if (b == 0) b = 1;
    if (b > max_blocks) b = max_blocks;
    return (unsigned)b;
}

// The context's stream as the CUDA type.
static inline cudaStream_t qn_cuda_stream(const qn_cuda_ctx *c) {
    return (cudaStream_t)qn_cuda_ctx_stream(c);
}

#endif // QN_CORE_OPS_CUDA_COMMON_CUH
