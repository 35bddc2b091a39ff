// elementwise.cu — embedding, RMSNorm, RoPE, SwiGLU (forward and backward),
// AdamW, sum of squares and dtype conversion on the GPU. See elementwise.h
// for the contracts; core/ops/cpu/*.c are the references.
//
// The kernels are deliberately plain: scalar loads through qn_ld/qn_st,
// grid-stride loops for elementwise work, one warp per row for row
// reductions, fixed-order two-pass reductions for column sums (no float
// atomics). Speed-ups left for later: 128-bit vector loads, fusing norm with
// the residual add, a multi-tensor AdamW launch.
#include <math.h>

#include "core/ops/cuda/cuda_common.cuh"
#include "core/ops/cuda/elementwise.h"

namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Grid for a grid-stride loop over n items.
inline unsigned grid_for(int64_t n) {
    return qn_cuda_blocks((size_t)n, kThreads, 65535u);
}

// ---------------------------------------------------------------- embedding

template <typename T>
__global__ void embedding_fwd_kernel(T *__restrict__ out, const int32_t *__restrict__ tokens,
                                     const T *__restrict__ wte, int T_, int C, int V) {
    int64_t n = (int64_t)T_ * C;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t t = i / C, col = i % C;
        int32_t tok = tokens[t];
        float v = (tok >= 0 && tok < V) ? qn_ld(wte + (int64_t)tok * C + col)
                                        : __int_as_float(0x7fc00000);
        qn_st(out + i, v);
    }
}

// Each thread owns one column `col` of the vocabulary rows with
// tok % kEmbParts == blockIdx.y, and adds the dout rows of its tokens in
// increasing t: the CPU's order, so fp32 sums are bit-identical. Tokens are
// taken kEmbGroup at a time so that their loads are in flight together;
// repeated rows inside a group chain through registers, in order.
constexpr int kEmbParts = 16;
constexpr int kEmbGroup = 8;
constexpr int kEmbThreads = 128;

template <typename T>
__global__ void embedding_bwd_kernel(float *__restrict__ dwte, const T *__restrict__ dout,
                                     const int32_t *__restrict__ tokens, int T_, int C, int V) {
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    int part = blockIdx.y;
    if (col >= C) return;
    int t = 0;
    while (t < T_) {
        int rows[kEmbGroup], ts[kEmbGroup], k = 0;
        while (k < kEmbGroup && t < T_) {
            int32_t tok = tokens[t];
            if (tok >= 0 && tok < V && tok % kEmbParts == part) {
                rows[k] = tok;
                ts[k] = t;
                k++;
            }
            t++;
        }
        float d[kEmbGroup], r[kEmbGroup];
#pragma unroll
        for (int j = 0; j < kEmbGroup; j++) {
            if (j < k) {
                d[j] = qn_ld(dout + (int64_t)ts[j] * C + col);
                r[j] = dwte[(int64_t)rows[j] * C + col];
            }
        }
#pragma unroll
        for (int j = 0; j < kEmbGroup; j++) {
            if (j < k) {
                float base = r[j];
#pragma unroll
                for (int i = 0; i < j; i++)
                    if (rows[i] == rows[j]) base = r[i]; // latest earlier sum of this row
                r[j] = base + d[j];
            }
        }
#pragma unroll
        for (int j = 0; j < kEmbGroup; j++) // in order: the last store of a row wins
            if (j < k) dwte[(int64_t)rows[j] * C + col] = r[j];
    }
}

// ---------------------------------------------------------------- RMSNorm

template <typename T>
__global__ void rmsnorm_fwd_kernel(T *out, float *__restrict__ rstd, const T *inp,
                                   const T *__restrict__ w, float eps, int N, int D) {
    int64_t row = (int64_t)blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= N) return;
    const T *x = inp + row * D;
    T *y = out + row * D;
    float ss = 0.f;
    for (int i = lane; i < D; i += 32) {
        float v = qn_ld(x + i);
        ss += v * v;
    }
    ss = warp_sum(ss);
    float r = 1.0f / sqrtf(ss / (float)D + eps);
    if (lane == 0) rstd[row] = r;
    // out may alias inp: each element is read then written by the same lane.
    for (int i = lane; i < D; i += 32)
        qn_st(y + i, qn_ld(x + i) * r * qn_ld(w + i));
}

template <typename T>
__global__ void rmsnorm_bwd_dx_kernel(T *dinp, const T *dout, const T *__restrict__ inp,
                                      const T *__restrict__ w, const float *__restrict__ rstd,
                                      int N, int D, int accumulate) {
    int64_t row = (int64_t)blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= N) return;
    const T *x = inp + row * D, *dy = dout + row * D;
    T *dx = dinp + row * D;
    float r = rstd[row];
    float dot = 0.f;
    for (int i = lane; i < D; i += 32)
        dot += qn_ld(w + i) * qn_ld(dy + i) * qn_ld(x + i);
    dot = warp_sum(dot);
    float cc = dot * r * r * r / (float)D;
    // dinp may alias dout: the dot product above has read all of dout (warp
    // shuffles synchronise the warp), and each element is read before written.
    for (int i = lane; i < D; i += 32) {
        float g = r * qn_ld(w + i) * qn_ld(dy + i) - qn_ld(x + i) * cc;
        if (accumulate) g += qn_ld(dx + i);
        qn_st(dx + i, g);
    }
}

// dw partial sums: block (32 columns x 8 row lanes) over one chunk of rows;
// partial[chunk, col] = sum over the chunk's rows, in a fixed order.
constexpr int kDwRows = 8;

template <typename T>
__global__ void rmsnorm_bwd_dw_partial(float *__restrict__ partial, const T *__restrict__ dout,
                                       const T *__restrict__ inp, const float *__restrict__ rstd,
                                       int N, int D, int rows_per_chunk) {
    __shared__ float sh[kDwRows][32];
    int col = blockIdx.x * 32 + threadIdx.x;
    int64_t r0 = (int64_t)blockIdx.y * rows_per_chunk;
    int64_t r1 = r0 + rows_per_chunk < N ? r0 + rows_per_chunk : N;
    float acc = 0.f;
    if (col < D)
        for (int64_t n = r0 + threadIdx.y; n < r1; n += kDwRows)
            acc += qn_ld(dout + n * D + col) * qn_ld(inp + n * D + col) * rstd[n];
    sh[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && col < D) {
        float s = 0.f;
#pragma unroll
        for (int k = 0; k < kDwRows; k++)
            s += sh[k][threadIdx.x];
        partial[(int64_t)blockIdx.y * D + col] = s;
    }
}

__global__ void colsum_add_kernel(float *__restrict__ dw, const float *__restrict__ partial,
                                  int chunks, int D) {
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= D) return;
    float s = 0.f;
    for (int k = 0; k < chunks; k++)
        s += partial[(int64_t)k * D + col];
    dw[col] += s;
}

// ---------------------------------------------------------------- RoPE

template <typename T>
__global__ void rope_kernel(T *x, const int32_t *__restrict__ pos, const float *__restrict__ cos_t,
                            const float *__restrict__ sin_t, int P, int T_, int NH, int HD, int R,
                            float dir) {
    int h = R / 2;
    int64_t n = (int64_t)T_ * NH * h;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n;
         idx += (int64_t)gridDim.x * blockDim.x) {
        int i = (int)(idx % h);
        int64_t th = idx / h; // token * NH + head
        int64_t t = th / NH;
        T *v = x + th * HD;
        int32_t p = pos[t];
        if (p < 0 || p >= P) {
            qn_st(v + i, __int_as_float(0x7fc00000));
            qn_st(v + i + h, __int_as_float(0x7fc00000));
            continue;
        }
        float c = cos_t[(int64_t)p * h + i], s = dir * sin_t[(int64_t)p * h + i];
        float a = qn_ld(v + i), b = qn_ld(v + i + h);
        qn_st(v + i, a * c - b * s);
        qn_st(v + i + h, b * c + a * s);
    }
}

// ---------------------------------------------------------------- SwiGLU

template <typename T>
__global__ void swiglu_fwd_kernel(T *__restrict__ out, const T *gate, const T *up, int N, int F,
                                  int ld) {
    int64_t n = (int64_t)N * F;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / F, col = i % F, j = r * ld + col;
        float g = qn_ld(gate + j), u = qn_ld(up + j);
        float s = 1.0f / (1.0f + expf(-g));
        qn_st(out + i, g * s * u);
    }
}

template <typename T>
__global__ void swiglu_bwd_kernel(T *dgate, T *dup, const T *dout, const T *gate, const T *up,
                                  int N, int F, int ld) {
    int64_t n = (int64_t)N * F;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / F, col = i % F, j = r * ld + col;
        // every input is read before either output is written (dgate may alias dout)
        float dd = qn_ld(dout + i), g = qn_ld(gate + j), u = qn_ld(up + j);
        float s = 1.0f / (1.0f + expf(-g));
        qn_st(dgate + j, dd * u * s * (1.0f + g * (1.0f - s)));
        qn_st(dup + j, dd * g * s);
    }
}

// ---------------------------------------------------------------- AdamW

// The CPU step in double with explicit round-to-nearest intrinsics, so that
// nvcc does not contract products into FMAs and the results match.
template <typename G>
__global__ void adamw_kernel(float *__restrict__ params, const G *__restrict__ grad,
                             float *__restrict__ m, float *__restrict__ v,
                             __nv_bfloat16 *__restrict__ pbf16, int64_t n, double grad_scale,
                             double b1, double b2, double lr, double decay, double bc1,
                             double sqrt_bc2, double eps) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        double g = (double)(float)__dmul_rn((double)qn_ld(grad + i), grad_scale);
        double mm = __dadd_rn(__dmul_rn(b1, (double)m[i]), __dmul_rn(1.0 - b1, g));
        double vv = __dadd_rn(__dmul_rn(b2, (double)v[i]), __dmul_rn(__dmul_rn(1.0 - b2, g), g));
        float mf = (float)mm, vf = (float)vv;
        m[i] = mf;
        v[i] = vf;
        double w = (double)params[i];
        w = __dadd_rn(w, -__dmul_rn(decay, w));
        double num = __dmul_rn(lr, __ddiv_rn((double)mf, bc1));
        double den = __dadd_rn(__ddiv_rn(__dsqrt_rn((double)vf), sqrt_bc2), eps);
        w = __dadd_rn(w, -__ddiv_rn(num, den));
        float wf = (float)w;
        params[i] = wf;
        if (pbf16) pbf16[i] = __float2bfloat16_rn(wf);
    }
}

constexpr int kSumsqBlocks = 1024; // fixed: the reduction order depends on n only

template <typename T>
__global__ void sumsq_partial_kernel(double *__restrict__ partial, const T *__restrict__ x,
                                     int64_t n) {
    __shared__ double sh[kThreads];
    double acc = 0.0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        double d = (double)qn_ld(x + i);
        acc += d * d;
    }
    sh[threadIdx.x] = acc;
    __syncthreads();
    for (int s = kThreads / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = sh[0];
}

__global__ void sumsq_final_kernel(double *__restrict__ out, const double *__restrict__ partial,
                                   int nparts) {
    __shared__ double sh[kThreads];
    double acc = 0.0;
    for (int i = threadIdx.x; i < nparts; i += kThreads)
        acc += partial[i];
    sh[threadIdx.x] = acc;
    __syncthreads();
    for (int s = kThreads / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) *out = sh[0];
}

// ---------------------------------------------------------------- convert

template <typename D, typename S>
__global__ void convert_kernel(D *__restrict__ dst, const S *__restrict__ src, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        qn_st(dst + i, qn_ld(src + i));
}

} // namespace

// ================================================================ host side

extern "C" qn_status qn_cuda_embedding_forward(qn_cuda_ctx *c, qn_dtype dt, void *out,
                                               const int32_t *tokens, const void *wte, int T, int C,
                                               int V) {
    const char *op = "qn_cuda_embedding_forward";
    QN_CUDA_CHECK_DTYPE(op, dt);
    QN_CUDA_REQUIRE(c && T >= 0 && C >= 0 && V >= 0, "%s: T=%d C=%d V=%d", op, T, C, V);
    if ((int64_t)T * C == 0) return QN_OK;
    QN_CUDA_REQUIRE(out && tokens && wte, "%s: NULL buffer", op);
    return qn_cuda_dispatch(op, dt, [&](auto tag) {
        using S = decltype(tag);
        embedding_fwd_kernel<S><<<grid_for((int64_t)T * C), kThreads, 0, qn_cuda_stream(c)>>>(
            (S *)out, tokens, (const S *)wte, T, C, V);
        QN_CUDA_LAUNCH_CHECK(op);
        return QN_OK;
    });
}

extern "C" qn_status qn_cuda_embedding_backward(qn_cuda_ctx *c, qn_dtype dt, float *dwte,
                                                const void *dout, const int32_t *tokens, int T,
                                                int C, int V) {
    const char *op = "qn_cuda_embedding_backward";
    QN_CUDA_CHECK_DTYPE(op, dt);
    QN_CUDA_REQUIRE(c && T >= 0 && C >= 0 && V >= 0, "%s: T=%d C=%d V=%d", op, T, C, V);
    if ((int64_t)T * C == 0 || V == 0) return QN_OK;
    QN_CUDA_REQUIRE(dwte && dout && tokens, "%s: NULL buffer", op);
    dim3 grid((unsigned)((C + kEmbThreads - 1) / kEmbThreads), kEmbParts);
    return qn_cuda_dispatch(op, dt, [&](auto tag) {
        using S = decltype(tag);
        embedding_bwd_kernel<S>
            <<<grid, kEmbThreads, 0, qn_cuda_stream(c)>>>(dwte, (const S *)dout, tokens, T, C, V);
        QN_CUDA_LAUNCH_CHECK(op);
        return QN_OK;
    });
}

extern "C" qn_status qn_cuda_rmsnorm_forward(qn_cuda_ctx *c, qn_dtype dt, void *out, float *rstd,
                                             const void *inp, const void *w, float eps, int N,
                                             int D) {
    const char *op = "qn_cuda_rmsnorm_forward";
    QN_CUDA_CHECK_DTYPE(op, dt);
    QN_CUDA_REQUIRE(c && N >= 0 && D > 0 && isfinite(eps) && eps >= 0, "%s: N=%d D=%d eps=%g", op,
                    N, D, (double)eps);
    if (N == 0) return QN_OK;
    QN_CUDA_REQUIRE(out && rstd && inp && w, "%s: NULL buffer", op);
    unsigned blocks = (unsigned)(((int64_t)N + kWarpsPerBlock - 1) / kWarpsPerBlock);
    return qn_cuda_dispatch(op, dt, [&](auto tag) {
        using S = decltype(tag);
        rmsnorm_fwd_kernel<S><<<blocks, kThreads, 0, qn_cuda_stream(c)>>>(
            (S *)out, rstd, (const S *)inp, (const S *)w, eps, N, D);
        QN_CUDA_LAUNCH_CHECK(op);
        return QN_OK;
    });
}

extern "C" qn_status qn_cuda_rmsnorm_backward(qn_cuda_ctx *c, qn_dtype dt, void *dinp, float *dw,
                                              const void *dout, const void *inp, const void *w,
                                              const float *rstd, int N, int D, int accumulate) {
    const char *op = "qn_cuda_rmsnorm_backward";
    QN_CUDA_CHECK_DTYPE(op, dt);
    QN_CUDA_REQUIRE(c && N >= 0 && D > 0, "%s: N=%d D=%d", op, N, D);
    if (N == 0) return QN_OK;
    QN_CUDA_REQUIRE(dout && inp && rstd && (!dinp || w), "%s: NULL buffer", op);
    cudaStream_t st = qn_cuda_stream(c);
    return qn_cuda_dispatch(op, dt, [&](auto tag) {
        using S = decltype(tag);
        if (dw) { // first: dinp may alias dout
            // 256 rows per chunk, at most 1024 chunks (fixed by N: deterministic)
            int64_t rpc = 256;
            if (((int64_t)N + rpc - 1) / rpc > 1024) rpc = ((int64_t)N + 1023) / 1024;
            int rows_per_chunk = (int)rpc;
            int chunks = (int)(((int64_t)N + rpc - 1) / rpc);
            size_t mark = qn_cuda_mark(c);
            float *partial = (float *)qn_cuda_alloc(c, (size_t)chunks * D * sizeof(float));
            if (!partial)
                return qn_fail(QN_ERR_NOMEM,
                               "%s: %zu bytes of dw scratch: arena full (%zu of %zu used)", op,
                               (size_t)chunks * D * sizeof(float), qn_cuda_arena_used(c),
                               qn_cuda_arena_cap(c));
            dim3 grid((unsigned)((D + 31) / 32), (unsigned)chunks);
            rmsnorm_bwd_dw_partial<S><<<grid, dim3(32, kDwRows), 0, st>>>(
                partial, (const S *)dout, (const S *)inp, rstd, N, D, rows_per_chunk);
            cudaError_t e = cudaGetLastError();
            if (e == cudaSuccess) {
                colsum_add_kernel<<<(unsigned)((D + kThreads - 1) / kThreads), kThreads, 0, st>>>(
                    dw, partial, chunks, D);
                e = cudaGetLastError();
            }
            qn_cuda_reset(c, mark); // later work on the stream is ordered after the kernels
            if (e != cudaSuccess)
                return qn_fail(QN_ERR_CUDA, "%s (dw): %s", op, cudaGetErrorString(e));
        }
        if (dinp) {
            unsigned blocks = (unsigned)(((int64_t)N + kWarpsPerBlock - 1) / kWarpsPerBlock);
            rmsnorm_bwd_dx_kernel<S><<<blocks, kThreads, 0, st>>>(
                (S *)dinp, (const S *)dout, (const S *)inp, (const S *)w, rstd, N, D, accumulate);
            QN_CUDA_LAUNCH_CHECK(op);
        }
        return QN_OK;
    });
}

static qn_status rope_launch(const char *op, qn_cuda_ctx *c, qn_dtype dt, void *x,
                             const int32_t *pos, const float *cos_t, const float *sin_t, int P,
                             int T, int NH, int HD, int R, float dir) {
    QN_CUDA_CHECK_DTYPE(op, dt);
    QN_CUDA_REQUIRE(c && T >= 0 && NH >= 0 && HD > 0 && R >= 0 && R <= HD && R % 2 == 0 && P >= 0,
                    "%s: T=%d NH=%d HD=%d R=%d P=%d (need R even, 0 <= R <= HD)", op, T, NH, HD, R,
                    P);
    int64_t n = (int64_t)T * NH * (R / 2);
    if (n == 0) return QN_OK;
    QN_CUDA_REQUIRE(x && pos && cos_t && sin_t, "%s: NULL buffer", op);
    return qn_cuda_dispatch(op, dt, [&](auto tag) {
        using S = decltype(tag);
        rope_kernel<S><<<grid_for(n), kThreads, 0, qn_cuda_stream(c)>>>((S *)x, pos, cos_t, sin_t,
                                                                        P, T, NH, HD, R, dir);
        QN_CUDA_LAUNCH_CHECK(op);
        return QN_OK;
    });
}

extern "C" qn_status qn_cuda_rope_forward(qn_cuda_ctx *c, qn_dtype dt, void *x, const int32_t *pos,
                                          const float *cos_t, const float *sin_t, int P, int T,
                                          int NH, int HD, int R) {
    return rope_launch("qn_cuda_rope_forward", c, dt, x, pos, cos_t, sin_t, P, T, NH, HD, R, 1.0f);
}

extern "C" qn_status qn_cuda_rope_backward(qn_cuda_ctx *c, qn_dtype dt, void *dx,
                                           const int32_t *pos, const float *cos_t,
                                           const float *sin_t, int P, int T, int NH, int HD,
                                           int R) {
    return rope_launch("qn_cuda_rope_backward", c, dt, dx, pos, cos_t, sin_t, P, T, NH, HD, R,
                       -1.0f);
}

extern "C" qn_status qn_cuda_swiglu_forward(qn_cuda_ctx *c, qn_dtype dt, void *out,
                                            const void *gate, const void *up, int N, int F,
                                            int ld) {
    const char *op = "qn_cuda_swiglu_forward";
    QN_CUDA_CHECK_DTYPE(op, dt);
    QN_CUDA_REQUIRE(c && N >= 0 && F >= 0 && ld >= F, "%s: N=%d F=%d ld=%d (need ld >= F)", op, N,
                    F, ld);
    int64_t n = (int64_t)N * F;
    if (n == 0) return QN_OK;
    QN_CUDA_REQUIRE(out && gate && up, "%s: NULL buffer", op);
    return qn_cuda_dispatch(op, dt, [&](auto tag) {
        using S = decltype(tag);
        swiglu_fwd_kernel<S><<<grid_for(n), kThreads, 0, qn_cuda_stream(c)>>>(
            (S *)out, (const S *)gate, (const S *)up, N, F, ld);
        QN_CUDA_LAUNCH_CHECK(op);
        return QN_OK;
    });
}

extern "C" qn_status qn_cuda_swiglu_backward(qn_cuda_ctx *c, qn_dtype dt, void *dgate, void *dup,
                                             const void *dout, const void *gate, const void *up,
                                             int N, int F, int ld) {
    const char *op = "qn_cuda_swiglu_backward";
    QN_CUDA_CHECK_DTYPE(op, dt);
    QN_CUDA_REQUIRE(c && N >= 0 && F >= 0 && ld >= F, "%s: N=%d F=%d ld=%d (need ld >= F)", op, N,
                    F, ld);
    int64_t n = (int64_t)N * F;
    if (n == 0) return QN_OK;
    QN_CUDA_REQUIRE(dgate && dup && dout && gate && up, "%s: NULL buffer", op);
    QN_CUDA_REQUIRE(ld == F || dgate != dout, "%s: dgate may alias dout only when ld == F", op);
    return qn_cuda_dispatch(op, dt, [&](auto tag) {
        using S = decltype(tag);
        swiglu_bwd_kernel<S><<<grid_for(n), kThreads, 0, qn_cuda_stream(c)>>>(
            (S *)dgate, (S *)dup, (const S *)dout, (const S *)gate, (const S *)up, N, F, ld);
        QN_CUDA_LAUNCH_CHECK(op);
        return QN_OK;
    });
}

extern "C" qn_status qn_cuda_adamw_step(qn_cuda_ctx *c, qn_dtype grad_dt, float *params,
                                        const void *grad, float *m, float *v, void *params_bf16,
                                        int64_t n, const qn_cuda_adamw_args *a) {
    const char *op = "qn_cuda_adamw_step";
    QN_CUDA_CHECK_DTYPE(op, grad_dt);
    QN_CUDA_REQUIRE(c && a && n >= 0, "%s: bad arguments (n=%lld)", op, (long long)n);
    QN_CUDA_REQUIRE(
        a->step >= 1 && a->beta1 >= 0 && a->beta1 < 1 && a->beta2 >= 0 && a->beta2 < 1 &&
            a->eps > 0 && isfinite(a->lr) && isfinite(a->weight_decay) && isfinite(a->grad_scale),
        "%s: step=%lld beta1=%g beta2=%g eps=%g lr=%g wd=%g scale=%g", op, (long long)a->step,
        a->beta1, a->beta2, a->eps, a->lr, a->weight_decay, a->grad_scale);
    if (n == 0) return QN_OK;
    QN_CUDA_REQUIRE(params && grad && m && v, "%s: NULL buffer", op);
    // As in qn_adamw_step: bias corrections from the host's pow, in double.
    double bc1 = 1.0 - pow(a->beta1, (double)a->step);
    double sqrt_bc2 = sqrt(1.0 - pow(a->beta2, (double)a->step));
    double decay = a->lr * a->weight_decay;
    return qn_cuda_dispatch(op, grad_dt, [&](auto tag) {
        using S = decltype(tag);
        adamw_kernel<S><<<grid_for(n), kThreads, 0, qn_cuda_stream(c)>>>(
            params, (const S *)grad, m, v, (__nv_bfloat16 *)params_bf16, n, a->grad_scale, a->beta1,
            a->beta2, a->lr, decay, bc1, sqrt_bc2, a->eps);
        QN_CUDA_LAUNCH_CHECK(op);
        return QN_OK;
    });
}

extern "C" qn_status qn_cuda_sumsq(qn_cuda_ctx *c, qn_dtype dt, const void *x, int64_t n,
                                   double *out_dev) {
    const char *op = "qn_cuda_sumsq";
    QN_CUDA_CHECK_DTYPE(op, dt);
    QN_CUDA_REQUIRE(c && n >= 0 && out_dev && (n == 0 || x), "%s: bad arguments (n=%lld)", op,
                    (long long)n);
    cudaStream_t st = qn_cuda_stream(c);
    size_t mark = qn_cuda_mark(c);
    double *partial = (double *)qn_cuda_alloc(c, kSumsqBlocks * sizeof(double));
    if (!partial) return qn_fail(QN_ERR_NOMEM, "%s: 8 KiB of scratch: arena full", op);
    qn_status s = qn_cuda_dispatch(op, dt, [&](auto tag) {
        using S = decltype(tag);
        sumsq_partial_kernel<S><<<kSumsqBlocks, kThreads, 0, st>>>(partial, (const S *)x, n);
        QN_CUDA_LAUNCH_CHECK(op);
        sumsq_final_kernel<<<1, kThreads, 0, st>>>(out_dev, partial, kSumsqBlocks);
        QN_CUDA_LAUNCH_CHECK(op);
        return QN_OK;
    });
    qn_cuda_reset(c, mark);
    return s;
}

extern "C" qn_status qn_cuda_convert(qn_cuda_ctx *c, qn_dtype dst_dt, void *dst, qn_dtype src_dt,
                                     const void *src, int64_t n) {
    const char *op = "qn_cuda_convert";
    QN_CUDA_CHECK_DTYPE(op, dst_dt);
    QN_CUDA_CHECK_DTYPE(op, src_dt);
    QN_CUDA_REQUIRE(c && n >= 0, "%s: n=%lld", op, (long long)n);
    if (n == 0) return QN_OK;
    QN_CUDA_REQUIRE(dst && src, "%s: NULL buffer", op);
    if (dst_dt == src_dt) return qn_cuda_copy(c, dst, src, (size_t)n * qn_dtype_size(dst_dt));
    cudaStream_t st = qn_cuda_stream(c);
    if (dst_dt == QN_DTYPE_BF16)
        convert_kernel<__nv_bfloat16, float>
            <<<grid_for(n), kThreads, 0, st>>>((__nv_bfloat16 *)dst, (const float *)src, n);
    else
        convert_kernel<float, __nv_bfloat16>
            <<<grid_for(n), kThreads, 0, st>>>((float *)dst, (const __nv_bfloat16 *)src, n);
    QN_CUDA_LAUNCH_CHECK(op);
    return QN_OK;
}
