// reduce_det.cuh — deterministic block reductions for the log-prob, loss and
// MoE kernels: every thread contributes one value, the block combines them
// in a fixed tree (stride halving over shared memory), so the result depends
// only on the inputs and blockDim, never on scheduling. No atomics.
// blockDim.x must be a power of two and sh must hold blockDim.x elements.
#ifndef QN_CORE_OPS_CUDA_REDUCE_DET_CUH
#define QN_CORE_OPS_CUDA_REDUCE_DET_CUH

struct qn_rd_sum {
    template <typename T> __device__ T operator()(T a, T b) const { return a + b; }
};
// Max that ignores NaN like `a > b ? a : b` scans do on the CPU (fmax).
struct qn_rd_max {
    __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct qn_rd_min_i64 {
    __device__ long long operator()(long long a, long long b) const { return a < b ? a : b; }
};

// All threads of the block must call it; every thread gets the result.
template <typename T, typename Op>
__device__ __forceinline__ T qn_block_reduce(T v, T *sh, Op op) {
    const int tid = threadIdx.x;
    sh[tid] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (tid < s) sh[tid] = op(sh[tid], sh[tid + s]);
        __syncthreads();
    }
    T r = sh[0];
    __syncthreads();  // sh may be reused right after
    return r;
}

#endif  // QN_CORE_OPS_CUDA_REDUCE_DET_CUH
