// cuda_runtime.h (kernel emulation, tests/gpu/kemu) — just enough of the CUDA
// runtime for core/ops/cuda/{tiled_gemm,logprob,loss,moe}.cu to compile as
// host C++ (after rewrite.py turns their <<<...>>> launches into emu_launch
// calls) and run on the CPU. Every CUDA thread of a block is a coroutine
// (emu.cc); barriers switch between them.
// Emulated: __syncthreads, __syncthreads_count, __ballot_sync (every thread
// of the block must reach it, as in the kernels emulated here), __shared__
// (a static: blocks run one at a time), __popc. Not emulated: atomics, warp
// shuffles, streams, events; host memory stands in for device memory.
#pragma once
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>

#define __global__ static
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

typedef void *cudaStream_t;
typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorMemoryAllocation = 2 };
static inline cudaError_t cudaGetLastError(void) { return cudaSuccess; }
static inline const char *cudaGetErrorString(cudaError_t e) { return "emulated"; }

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct qn_emu_uint3 {
    unsigned x, y, z;
};
extern qn_emu_uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

// What `kernel<<<grid, block, shmem, stream>>>(args);` becomes: fn (which
// calls the kernel) runs once per thread of every block, blocks in
// x-fastest order, one block at a time.
void emu_launch(dim3 grid, dim3 block, const std::function<void()> &fn);
void __syncthreads(void);
int __syncthreads_count(int pred);
unsigned __ballot_sync(unsigned mask, int pred);
static inline int __popc(unsigned v) { return __builtin_popcount(v); }
