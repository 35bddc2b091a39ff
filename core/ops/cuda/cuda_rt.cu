// cuda_rt.cu — device discovery and the fp32 -> bf16 conversion kernel.
// See cuda_rt.h. Every runtime call is checked; a failure becomes a
// qn_status with the CUDA error string in the thread's error message.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>

#include "core/ops/cuda/cuda_rt.h"

#define QN_CUDA_TRY(call)                                                          \
    do {                                                                           \
        cudaError_t qn_e_ = (call);                                                \
        if (qn_e_ != cudaSuccess) {                                                \
            qn_status_trace(__FILE__, __LINE__, QN_ERR_CUDA);                      \
            return qn_fail(QN_ERR_CUDA, "%s:%d: %s: %s", __FILE__, __LINE__, #call, \
                           cudaGetErrorString(qn_e_));                             \
        }                                                                          \
    } while (0)

extern "C" int qn_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky "no driver" error
        return 0;
    }
    return n;
}

extern "C" qn_status qn_cuda_device_describe(int device, char *buf, size_t cap) {
    if (device < 0 || device >= qn_cuda_device_count())
        return qn_fail(QN_ERR_NO_DEVICE, "no CUDA device %d", device);
    cudaDeviceProp p;
    QN_CUDA_TRY(cudaGetDeviceProperties(&p, device));
    snprintf(buf, cap, "%s (sm_%d%d, %.0f GiB)", p.name, p.major, p.minor,
             (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return QN_OK;
}

__global__ static void f32_to_bf16_kernel(const float *in, __nv_bfloat16 *out, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __float2bfloat16_rn(in[i]);
}

extern "C" qn_status qn_cuda_f32_to_bf16(const float *in, uint16_t *out, size_t n) {
    if (qn_cuda_device_count() == 0) return qn_fail(QN_ERR_NO_DEVICE, "no CUDA device");
    if (n == 0) return QN_OK;
    float *d_in = NULL;
    __nv_bfloat16 *d_out = NULL;
    qn_status s = QN_OK;
    cudaError_t e = cudaMalloc(&d_in, n * sizeof(float));
    if (e == cudaSuccess) e = cudaMalloc(&d_out, n * sizeof(__nv_bfloat16));
    if (e == cudaSuccess) e = cudaMemcpy(d_in, in, n * sizeof(float), cudaMemcpyHostToDevice);
    if (e == cudaSuccess) {
        unsigned blocks = (unsigned)((n + 255) / 256);
        f32_to_bf16_kernel<<<blocks, 256>>>(d_in, d_out, n);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) e = cudaMemcpy(out, d_out, n * sizeof(uint16_t), cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) s = qn_fail(QN_ERR_CUDA, "qn_cuda_f32_to_bf16: %s", cudaGetErrorString(e));
    cudaFree(d_in);
    cudaFree(d_out);
    return s;
}
