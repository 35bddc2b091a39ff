// moe.cu — the MoE router (scores, group-limited top-k, gathered weights) and
// the routed experts (stable permutation, grouped SwiGLU GEMMs, weighted
// combine), forward and backward on the GPU (moe.h; CPU twin: core/ops/cpu/
// moe.c, whose arithmetic each kernel repeats step for step).
//
// Router: one CUDA block per token. Scores and choices live in shared
// memory; group scores (top-2 per group) and the group pick run serially in
// one thread each exactly as on the CPU (G and topk_group are small); the K
// expert picks are K block-wide argmax reductions with the tie rule of
// moe.h (larger value, then lower index). The routing weights are formed by
// thread 0 in k order (same float sum as the CPU).
//
// Permutation (no atomics, stable): one block per expert counts its slots
// (__syncthreads_count), one thread prefix-sums the counts into offsets, then
// one block per expert walks the slots in order and ranks its own with warp
// ballots, so slot order within an expert is (t, k) order.
//
// Router GEMMs: cuBLASLt when it takes the shape (qn_tg_gemm_auto).
// Experts: tiled_gemm's ROWS mode (per-expert weights, row ranges read from
// offsets on the device) for x W^T products, KSPLIT mode for the weight
// gradients (sum over an expert's rows). Speed-ups for later: cuBLASLt per
// expert after one offsets download, or a tensor-core grouped GEMM; fusing
// gather into the first GEMM and SwiGLU into its epilogue.
#include <math.h>

#include "core/ops/cuda/cuda_common.cuh"
#include "core/ops/cuda/moe.h"
#include "core/ops/cuda/reduce_det.cuh"
#include "core/ops/cuda/tiled_gemm.cuh"

static_assert(QN_TG_BM == 64, "moe_plan.c sizes the tile table for 64-row tiles");

namespace {

enum { RT_THREADS = 256, MOE_THREADS = 256, MAX_E = QN_ROUTER_MAX_E, MAX_K = QN_ROUTER_MAX_K };

struct rcfg {
    int E, K, n_group, topk_group, softmax, norm;
    float mul;
    const float *bias;
};

rcfg to_rcfg(const qn_router_cfg *cfg) {
    rcfg r;
    r.E = cfg->E;
    r.K = cfg->K;
    r.n_group = cfg->n_group;
    r.topk_group = cfg->topk_group;
    r.softmax = cfg->score == QN_ROUTER_SOFTMAX;
    r.norm = cfg->norm_topk_prob;
    r.mul = cfg->routed_scaling_factor;
    r.bias = cfg->bias;
    return r;
}

qn_status moe_alloc(qn_cuda_ctx *c, size_t bytes, void **p, const char *op) {
    *p = qn_cuda_alloc(c, bytes > 0 ? bytes : 1);
    if (!*p)
        return qn_fail(QN_ERR_NOMEM,
                       "%s: %zu bytes of scratch do not fit in the device arena (%zu of %zu used)",
                       op, bytes, qn_cuda_arena_used(c), qn_cuda_arena_cap(c));
    return QN_OK;
}

// (v, i) beats (bv, bi): larger value, on equal values the lower index; an
// index < 0 is "nothing yet". Equal to the CPU's ascending scan with '>'.
__device__ __forceinline__ bool beats(float v, int i, float bv, int bi) {
    if (i < 0) return false;
    if (bi < 0) return true;
    return v > bv || (v == bv && i < bi);
}

__global__ void __launch_bounds__(RT_THREADS)
    router_select_kernel(rcfg cfg, float *scores, int32_t *idx, float *weight, int T) {
    __shared__ float sc[MAX_E], ch[MAX_E], gsc[MAX_E];
    __shared__ unsigned char keep[MAX_E], used[MAX_E];
    __shared__ float shf[RT_THREADS];
    __shared__ double shd[RT_THREADS];
    __shared__ int shi[RT_THREADS];
    const int tid = threadIdx.x, E = cfg.E;
    for (int t = blockIdx.x; t < T; t += gridDim.x) {
        float *row = scores + (size_t)t * E;
        for (int e = tid; e < E; e += RT_THREADS)
            sc[e] = row[e];
        __syncthreads();
        if (cfg.softmax) {
            float m = -INFINITY;
            for (int e = tid; e < E; e += RT_THREADS)
                m = fmaxf(m, sc[e]);
            m = qn_block_reduce(m, shf, qn_rd_max());
            double sum = 0.0;
            for (int e = tid; e < E; e += RT_THREADS) {
                float v = expf(sc[e] - m);
                sc[e] = v;
                sum += v;
            }
            sum = qn_block_reduce(sum, shd, qn_rd_sum());
            float inv = (float)(1.0 / sum);
            for (int e = tid; e < E; e += RT_THREADS)
                sc[e] *= inv;
        } else {
            for (int e = tid; e < E; e += RT_THREADS)
                sc[e] = 1.0f / (1.0f + expf(-sc[e]));
        }
        for (int e = tid; e < E; e += RT_THREADS) {
            ch[e] = sc[e] + (cfg.bias ? cfg.bias[e] : 0.0f);
            used[e] = 0;
        }
        __syncthreads();
        if (cfg.n_group > 1) {
            const int G = cfg.n_group, gs = E / G;
            for (int g = tid; g < G; g += RT_THREADS) {
                float a = -INFINITY, b = -INFINITY;  // best, second best
                for (int j = 0; j < gs; j++) {
                    float v = ch[g * gs + j];
                    if (v > a) {
                        b = a;
                        a = v;
                    } else if (v > b) {
                        b = v;
                    }
                }
                gsc[g] = a + b;
                keep[g] = 0;
            }
            __syncthreads();
            if (tid == 0) {
                for (int r = 0; r < cfg.topk_group && r < G; r++) {
                    int best = -1;
                    for (int g = 0; g < G; g++)
                        if (!keep[g] && (best < 0 || gsc[g] > gsc[best])) best = g;
                    keep[best] = 1;
                }
            }
            __syncthreads();
            for (int e = tid; e < E; e += RT_THREADS)
                if (!keep[e / gs]) ch[e] = 0.0f;
            __syncthreads();
        }
        for (int r = 0; r < cfg.K; r++) {
            float bv = 0.0f;
            int bi = -1;
            for (int e = tid; e < E; e += RT_THREADS)
                if (!used[e] && beats(ch[e], e, bv, bi)) {
                    bv = ch[e];
                    bi = e;
                }
            shf[tid] = bv;
            shi[tid] = bi;
            __syncthreads();
            for (int s = RT_THREADS / 2; s > 0; s >>= 1) {
                if (tid < s && beats(shf[tid + s], shi[tid + s], shf[tid], shi[tid])) {
                    shf[tid] = shf[tid + s];
                    shi[tid] = shi[tid + s];
                }
                __syncthreads();
            }
            if (tid == 0) {
                int best = shi[0];
                used[best] = 1;
                idx[(size_t)t * cfg.K + r] = best;
            }
            __syncthreads();
        }
        if (tid == 0) {
            int32_t *id = idx + (size_t)t * cfg.K;
            float *wt = weight + (size_t)t * cfg.K;
            float sum = 0.0f;
            for (int r = 0; r < cfg.K; r++) {
                wt[r] = sc[id[r]];
                sum += sc[id[r]];
            }
            if (cfg.norm) {
                float den = sum + 1e-20f;
                for (int r = 0; r < cfg.K; r++)
                    wt[r] = wt[r] / den * cfg.mul;
            } else {
                for (int r = 0; r < cfg.K; r++)
                    wt[r] *= cfg.mul;
            }
        }
        for (int e = tid; e < E; e += RT_THREADS)
            row[e] = sc[e];
        __syncthreads();
    }
}

// d logits of one token (moe.c's qn_router_backward), stored in dt for the
// two GEMMs that follow.
template <typename T>
__global__ void __launch_bounds__(RT_THREADS)
    router_dlogits_kernel(rcfg cfg, T *dlog, const float *dweight, const int32_t *idx,
                          const float *scores, int Tn) {
    __shared__ float dl[MAX_E];
    __shared__ float ds[MAX_K];
    __shared__ float dotf;
    const int tid = threadIdx.x, E = cfg.E, K = cfg.K;
    for (int t = blockIdx.x; t < Tn; t += gridDim.x) {
        const float *s = scores + (size_t)t * E;
        const int32_t *id = idx + (size_t)t * K;
        const float *dwt = dweight + (size_t)t * K;
        if (tid == 0) {
            float mul = cfg.mul;
            if (cfg.norm) {
                double S = 1e-20, gs = 0.0;
                for (int k = 0; k < K; k++)
                    S += s[id[k]];
                for (int k = 0; k < K; k++)
                    gs += (double)dwt[k] * s[id[k]];
                for (int k = 0; k < K; k++)
                    ds[k] = (float)(mul * (dwt[k] / S - gs / (S * S)));
            } else {
                for (int k = 0; k < K; k++)
                    ds[k] = mul * dwt[k];
            }
            double dot = 0.0;
            if (cfg.softmax)
                for (int k = 0; k < K; k++)
                    dot += (double)ds[k] * s[id[k]];
            dotf = (float)dot;
        }
        __syncthreads();
        for (int e = tid; e < E; e += RT_THREADS)
            dl[e] = cfg.softmax ? -s[e] * dotf : 0.0f;
        __syncthreads();
        if (tid == 0) {
            for (int k = 0; k < K; k++) {
                int e = id[k];
                if (e < 0 || e >= E) continue;
                float v = s[e];
                if (cfg.softmax) dl[e] += v * ds[k];
                else dl[e] = ds[k] * v * (1.0f - v);
            }
        }
        __syncthreads();
        for (int e = tid; e < E; e += RT_THREADS)
            qn_st(dlog + (size_t)t * E + e, dl[e]);
        __syncthreads();
    }
}

// ---- permutation ----

__global__ void __launch_bounds__(MOE_THREADS)
    moe_count_kernel(const int32_t *idx, int TK, int32_t *off) {
    const int e = blockIdx.x;
    int cnt = 0;
    for (int i0 = 0; i0 < TK; i0 += MOE_THREADS) {
        int i = i0 + threadIdx.x;
        cnt += __syncthreads_count(i < TK && idx[i] == e);
    }
    if (threadIdx.x == 0) {
        off[e + 1] = cnt;
        if (e == 0) off[0] = 0;
    }
}

__global__ void moe_scan_kernel(int32_t *off, int E) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    for (int e = 1; e <= E; e++)
        off[e] += off[e - 1];
}

__global__ void __launch_bounds__(MOE_THREADS)
    moe_assign_kernel(const int32_t *idx, int TK, int K, const int32_t *off, int32_t *tok_slot,
                      int32_t *slot_tok) {
    __shared__ int wsum[MOE_THREADS / 32];
    const int e = blockIdx.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int base = off[e];
    for (int i0 = 0; i0 < TK; i0 += MOE_THREADS) {
        int i = i0 + tid;
        bool f = i < TK && idx[i] == e;
        unsigned bal = __ballot_sync(0xffffffffu, f);
        if (lane == 0) wsum[warp] = __popc(bal);
        __syncthreads();
        int before = 0, total = 0;
        for (int w = 0; w < MOE_THREADS / 32; w++) {
            if (w < warp) before += wsum[w];
            total += wsum[w];
        }
        if (f) {
            int slot = base + before + __popc(bal & ((1u << lane) - 1u));
            tok_slot[i] = slot;
            slot_tok[slot] = i / K;
        }
        base += total;
        __syncthreads();
    }
}

// ---- elementwise pieces ----

template <typename T>
__global__ void moe_gather_kernel(T *xs, const T *x, const int32_t *slot_tok, const int32_t *off,
                                  int E, int C) {
    size_t n = (size_t)off[E] * C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t sl = i / C, cc = i % C;
        xs[i] = x[(size_t)slot_tok[sl] * C + cc];
    }
}

template <typename T>
__global__ void moe_swiglu_kernel(T *act, const T *gate, const T *up, const int32_t *off, int E,
                                  int F) {
    size_t n = (size_t)off[E] * F;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = qn_ld(gate + i), u = qn_ld(up + i);
        float s = 1.0f / (1.0f + expf(-g));
        qn_st(act + i, g * s * u);
    }
}

template <typename T>
__global__ void moe_swiglu_bwd_kernel(T *dg, T *du, const float *dact, const T *gate, const T *up,
                                      const int32_t *off, int E, int F) {
    size_t n = (size_t)off[E] * F;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = qn_ld(gate + i), u = qn_ld(up + i), da = dact[i];
        float s = 1.0f / (1.0f + expf(-g));
        qn_st(dg + i, da * u * s * (1.0f + g * (1.0f - s)));
        qn_st(du + i, da * g * s);
    }
}

// out[t, c] (= or +=) sum_k weight[t,k] ys[tok_slot[t*K+k], c], k in order.
template <typename T>
__global__ void moe_combine_kernel(T *out, const T *ys, const float *weight,
                                   const int32_t *tok_slot, int Tn, int K, int C, int accumulate) {
    size_t n = (size_t)Tn * C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i / C, cc = i % C;
        float v = accumulate ? qn_ld(out + i) : 0.0f;
        for (int k = 0; k < K; k++) {
            int sl = tok_slot[t * K + k];
            if (sl < 0) continue;
            v += weight[t * K + k] * qn_ld(ys + (size_t)sl * C + cc);
        }
        qn_st(out + i, v);
    }
}

// dx[t, c] (= or +=) sum_k dxs[tok_slot[t*K+k], c].
template <typename T>
__global__ void moe_scatter_kernel(T *dx, const float *dxs, const int32_t *tok_slot, int Tn, int K,
                                   int C, int accumulate) {
    size_t n = (size_t)Tn * C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i / C, cc = i % C;
        float v = accumulate ? qn_ld(dx + i) : 0.0f;
        for (int k = 0; k < K; k++) {
            int sl = tok_slot[t * K + k];
            if (sl < 0) continue;
            v += dxs[(size_t)sl * C + cc];
        }
        qn_st(dx + i, v);
    }
}

// One block per slot (t, k): dweight = dout[t] . ys[slot] (double), and
// dys[slot] = weight * dout[t].
template <typename T>
__global__ void __launch_bounds__(MOE_THREADS)
    moe_dys_kernel(T *dys, float *dweight, const T *dout, const T *ys, const float *weight,
                   const int32_t *tok_slot, int TK, int K, int C) {
    __shared__ double shd[MOE_THREADS];
    for (int i = blockIdx.x; i < TK; i += gridDim.x) {
        int sl = tok_slot[i];
        if (sl < 0) {  // uniform over the block
            if (threadIdx.x == 0) dweight[i] = 0.0f;
            continue;
        }
        const T *d = dout + (size_t)(i / K) * C;
        const T *y = ys + (size_t)sl * C;
        T *dy = dys + (size_t)sl * C;
        float wt = weight[i];
        double dot = 0.0;
        for (int cc = threadIdx.x; cc < C; cc += MOE_THREADS) {
            float dv = qn_ld(d + cc);
            dot += (double)dv * qn_ld(y + cc);
            qn_st(dy + cc, wt * dv);
        }
        dot = qn_block_reduce(dot, shd, qn_rd_sum());
        if (threadIdx.x == 0) dweight[i] = (float)dot;
    }
}

// ---- GEMM helpers ----

qn_tg_args plain(qn_dtype dt_ab, qn_dtype dt_c, int ta, int tb, int M, int N, int K, const void *A,
                 size_t lda, const void *B, size_t ldb, float beta, void *C, size_t ldc) {
    qn_tg_args a = {};
    a.mode = QN_TG_PLAIN;
    a.ta = ta;
    a.tb = tb;
    a.M = M;
    a.N = N;
    a.K = K;
    a.alpha = 1.0f;
    a.beta = beta;
    a.dt_ab = dt_ab;
    a.dt_c = dt_c;
    a.A = A;
    a.lda = lda;
    a.B = B;
    a.ldb = ldb;
    a.C = C;
    a.ldc = ldc;
    return a;
}

// Rows grouped by expert: C[rows of e] (dt_c) = A[rows of e] op(B_e) + beta C.
qn_status rows_gemm(qn_cuda_ctx *c, qn_dtype dt, qn_dtype dt_c, int TK, int N, int K,
                    const void *A, size_t lda, const void *B, int tb, size_t ldb, size_t stride_b,
                    float beta, void *C, size_t ldc, const int32_t *off, int E, int32_t *tiles,
                    const char *op) {
    qn_tg_args a = plain(dt, dt_c, 0, tb, TK, N, K, A, lda, B, ldb, beta, C, ldc);
    a.mode = QN_TG_ROWS;
    a.G = E;
    a.offsets = off;
    a.stride_b = stride_b;
    a.tiles = tiles;
    return qn_tg_gemm(c, &a, op);
}

// Weight gradient per expert: dW_e[M, N] (fp32) += A_e^T B_e over e's rows.
qn_status ksplit_gemm(qn_cuda_ctx *c, qn_dtype dt, int M, int N, const void *A, size_t lda,
                      const void *B, size_t ldb, float *C, size_t stride_c, const int32_t *off,
                      int E, const char *op) {
    qn_tg_args a = plain(dt, QN_DTYPE_F32, 1, 0, M, N, 0, A, lda, B, ldb, 1.0f, C, N);
    a.mode = QN_TG_KSPLIT;
    a.G = E;
    a.offsets = off;
    a.stride_c = stride_c;
    return qn_tg_gemm(c, &a, op);
}

unsigned grid_for(size_t n) { return qn_cuda_blocks(n, 256, 1u << 20); }

qn_status permute(qn_cuda_ctx *c, qn_cuda_moe_acts *acts, const int32_t *idx, int T, int K, int E,
                  const char *op) {
    int TK = T * K;
    cudaStream_t s = qn_cuda_stream(c);
    QN_CHECK(qn_cuda_memset(c, acts->tok_slot, 0xff, (size_t)TK * sizeof(int32_t)));
    moe_count_kernel<<<E, MOE_THREADS, 0, s>>>(idx, TK, acts->offsets);
    QN_CUDA_LAUNCH_CHECK(op);
    moe_scan_kernel<<<1, 1, 0, s>>>(acts->offsets, E);
    QN_CUDA_LAUNCH_CHECK(op);
    moe_assign_kernel<<<E, MOE_THREADS, 0, s>>>(idx, TK, K, acts->offsets, acts->tok_slot,
                                                 acts->slot_tok);
    QN_CUDA_LAUNCH_CHECK(op);
    return QN_OK;
}

template <typename T>
qn_status moe_fwd(qn_cuda_ctx *c, qn_dtype dt, T *out, qn_cuda_moe_acts *a, const T *x,
                  const int32_t *idx, const float *weight, const T *wg, const T *wu, const T *wd,
                  int Tn, int C, int F, int E, int K, int accumulate, const char *op) {
    const int TK = Tn * K;
    cudaStream_t s = qn_cuda_stream(c);
    void *tp = NULL;
    QN_CHECK(moe_alloc(c, qn_tg_tiles_ints(TK, E) * sizeof(int32_t), &tp, op));
    int32_t *tiles = (int32_t *)tp;
    QN_CHECK(permute(c, a, idx, Tn, K, E, op));
    moe_gather_kernel<T><<<grid_for((size_t)TK * C), 256, 0, s>>>((T *)a->xs, x, a->slot_tok,
                                                                  a->offsets, E, C);
    QN_CUDA_LAUNCH_CHECK(op);
    QN_CHECK(rows_gemm(c, dt, dt, TK, F, C, a->xs, C, wg, 1, C, (size_t)F * C, 0.0f, a->gate, F,
                       a->offsets, E, tiles, op));
    QN_CHECK(rows_gemm(c, dt, dt, TK, F, C, a->xs, C, wu, 1, C, (size_t)F * C, 0.0f, a->up, F,
                       a->offsets, E, tiles, op));
    moe_swiglu_kernel<T><<<grid_for((size_t)TK * F), 256, 0, s>>>(
        (T *)a->act, (const T *)a->gate, (const T *)a->up, a->offsets, E, F);
    QN_CUDA_LAUNCH_CHECK(op);
    QN_CHECK(rows_gemm(c, dt, dt, TK, C, F, a->act, F, wd, 1, F, (size_t)C * F, 0.0f, a->ys, C,
                       a->offsets, E, tiles, op));
    moe_combine_kernel<T><<<grid_for((size_t)Tn * C), 256, 0, s>>>(
        out, (const T *)a->ys, weight, a->tok_slot, Tn, K, C, accumulate);
    QN_CUDA_LAUNCH_CHECK(op);
    return QN_OK;
}

template <typename T>
qn_status moe_bwd(qn_cuda_ctx *c, qn_dtype dt, T *dx, float *dweight, float *dwg, float *dwu,
                  float *dwd, const T *dout, const qn_cuda_moe_acts *a, const float *weight,
                  const T *wg, const T *wu, const T *wd, int Tn, int C, int F, int E, int K,
                  int accumulate, const char *op) {
    const int TK = Tn * K;
    const size_t tkc = (size_t)TK * C, tkf = (size_t)TK * F;
    cudaStream_t s = qn_cuda_stream(c);
    void *p_dys, *p_dxs, *p_dact, *p_dg, *p_du, *p_tiles;
    QN_CHECK(moe_alloc(c, tkc * sizeof(T), &p_dys, op));
    QN_CHECK(moe_alloc(c, tkc * sizeof(float), &p_dxs, op));
    QN_CHECK(moe_alloc(c, tkf * sizeof(float), &p_dact, op));
    QN_CHECK(moe_alloc(c, tkf * sizeof(T), &p_dg, op));
    QN_CHECK(moe_alloc(c, tkf * sizeof(T), &p_du, op));
    QN_CHECK(moe_alloc(c, qn_tg_tiles_ints(TK, E) * sizeof(int32_t), &p_tiles, op));
    T *dys = (T *)p_dys, *dg = (T *)p_dg, *du = (T *)p_du;
    float *dxs = (float *)p_dxs, *dact = (float *)p_dact;
    int32_t *tiles = (int32_t *)p_tiles;
    const int32_t *off = a->offsets;

    unsigned g1 = TK < 65535 ? (unsigned)TK : 65535u;
    moe_dys_kernel<T><<<g1, MOE_THREADS, 0, s>>>(dys, dweight, dout, (const T *)a->ys, weight,
                                                  a->tok_slot, TK, K, C);
    QN_CUDA_LAUNCH_CHECK(op);
    if (dwd)  // dW_down[e] [C, F] += dys_e^T act_e
        QN_CHECK(ksplit_gemm(c, dt, C, F, dys, C, a->act, F, dwd, (size_t)C * F, off, E, op));
    // d act = dys W_down[e]  ([rows, C] x [C, F])
    QN_CHECK(rows_gemm(c, dt, QN_DTYPE_F32, TK, F, C, dys, C, wd, 0, F, (size_t)C * F, 0.0f, dact,
                       F, off, E, tiles, op));
    moe_swiglu_bwd_kernel<T><<<grid_for(tkf), 256, 0, s>>>(dg, du, dact, (const T *)a->gate,
                                                            (const T *)a->up, off, E, F);
    QN_CUDA_LAUNCH_CHECK(op);
    if (dwg)  // dW_gate[e] [F, C] += dg_e^T xs_e
        QN_CHECK(ksplit_gemm(c, dt, F, C, dg, F, a->xs, C, dwg, (size_t)F * C, off, E, op));
    if (dwu)
        QN_CHECK(ksplit_gemm(c, dt, F, C, du, F, a->xs, C, dwu, (size_t)F * C, off, E, op));
    if (!dx) return QN_OK;
    // d xs = dg W_gate[e] + du W_up[e]  ([rows, F] x [F, C])
    QN_CHECK(rows_gemm(c, dt, QN_DTYPE_F32, TK, C, F, dg, F, wg, 0, C, (size_t)F * C, 0.0f, dxs,
                       C, off, E, tiles, op));
    QN_CHECK(rows_gemm(c, dt, QN_DTYPE_F32, TK, C, F, du, F, wu, 0, C, (size_t)F * C, 1.0f, dxs,
                       C, off, E, tiles, op));
    moe_scatter_kernel<T><<<grid_for((size_t)Tn * C), 256, 0, s>>>(dx, dxs, a->tok_slot, Tn, K,
                                                                    C, accumulate);
    QN_CUDA_LAUNCH_CHECK(op);
    return QN_OK;
}

}  // namespace

// ------------------------------------------------------------------ router

extern "C" qn_status qn_cuda_router_select(qn_cuda_ctx *c, const qn_router_cfg *cfg, int32_t *idx,
                                           float *weight, float *scores, int T) {
    const char *op = "qn_cuda_router_select";
    QN_CHECK(qn_cuda_router_check(cfg, T));
    if (T == 0) return QN_OK;
    QN_CUDA_REQUIRE(c && idx && weight && scores, "%s: NULL context, idx, weight or scores", op);
    unsigned grid = T < 65535 ? (unsigned)T : 65535u;
    router_select_kernel<<<grid, RT_THREADS, 0, qn_cuda_stream(c)>>>(to_rcfg(cfg), scores, idx,
                                                                     weight, T);
    QN_CUDA_LAUNCH_CHECK(op);
    return QN_OK;
}

extern "C" qn_status qn_cuda_router_forward(qn_cuda_ctx *c, qn_dtype dt, const qn_router_cfg *cfg,
                                            int32_t *idx, float *weight, float *scores,
                                            const void *x, const void *w, int T, int C) {
    const char *op = "qn_cuda_router_forward";
    QN_CUDA_CHECK_DTYPE(op, dt);
    QN_CHECK(qn_cuda_router_check(cfg, T));
    QN_CUDA_REQUIRE(C > 0, "%s: C = %d must be > 0", op, C);
    if (T == 0) return QN_OK;
    QN_CUDA_REQUIRE(c && x && w && scores, "%s: NULL context, x, w or scores", op);
    qn_tg_args a = plain(dt, QN_DTYPE_F32, 0, 1, T, cfg->E, C, x, C, w, C, 0.0f, scores, cfg->E);
    QN_CHECK(qn_tg_gemm_auto(c, &a, op));
    return qn_cuda_router_select(c, cfg, idx, weight, scores, T);
}

extern "C" qn_status qn_cuda_router_backward(qn_cuda_ctx *c, qn_dtype dt, const qn_router_cfg *cfg,
                                             void *dx, float *dw, const float *dweight,
                                             const int32_t *idx, const float *scores,
                                             const void *x, const void *w, int T, int C,
                                             int accumulate) {
    const char *op = "qn_cuda_router_backward";
    QN_CUDA_CHECK_DTYPE(op, dt);
    QN_CHECK(qn_cuda_router_check(cfg, T));
    QN_CUDA_REQUIRE(C > 0, "%s: C = %d must be > 0", op, C);
    if (T == 0 || (!dx && !dw)) return QN_OK;
    QN_CUDA_REQUIRE(c && dweight && idx && scores && x && w,
                    "%s: NULL context, dweight, idx, scores, x or w", op);
    const int E = cfg->E;
    size_t mark = qn_cuda_mark(c);
    qn_status st = qn_cuda_dispatch(op, dt, [&](auto tag) -> qn_status {
        using T_ = decltype(tag);
        void *p = NULL;
        QN_CHECK(moe_alloc(c, (size_t)T * E * sizeof(T_), &p, op));
        unsigned grid = T < 65535 ? (unsigned)T : 65535u;
        router_dlogits_kernel<T_><<<grid, RT_THREADS, 0, qn_cuda_stream(c)>>>(
            to_rcfg(cfg), (T_ *)p, dweight, idx, scores, T);
        QN_CUDA_LAUNCH_CHECK(op);
        if (dx) {  // dx = dlog w : [T, E] x [E, C]
            qn_tg_args a = plain(dt, dt, 0, 0, T, C, E, p, E, w, C, accumulate ? 1.0f : 0.0f, dx,
                                 C);
            QN_CHECK(qn_tg_gemm_auto(c, &a, op));
        }
        if (dw) {  // dw += dlog^T x : [E, T] x [T, C]
            qn_tg_args a = plain(dt, QN_DTYPE_F32, 1, 0, E, C, T, p, E, x, C, 1.0f, dw, C);
            QN_CHECK(qn_tg_gemm_auto(c, &a, op));
        }
        return QN_OK;
    });
    qn_cuda_reset(c, mark);
    return st;
}

// ------------------------------------------------------------------ experts

extern "C" qn_status qn_cuda_moe_permute(qn_cuda_ctx *c, qn_cuda_moe_acts *acts,
                                         const int32_t *idx, int T, int K, int E) {
    const char *op = "qn_cuda_moe_permute";
    QN_CHECK(qn_cuda_moe_check(QN_DTYPE_F32, T, 1, 1, E, K));
    QN_CUDA_REQUIRE(c && acts && acts->offsets && acts->tok_slot && acts->slot_tok,
                    "%s: NULL context or permutation arrays", op);
    if (T == 0) return qn_cuda_memset(c, acts->offsets, 0, (size_t)(E + 1) * sizeof(int32_t));
    QN_CUDA_REQUIRE(idx, "%s: NULL idx", op);
    return permute(c, acts, idx, T, K, E, op);
}

extern "C" qn_status qn_cuda_moe_forward(qn_cuda_ctx *c, qn_dtype dt, void *out,
                                         qn_cuda_moe_acts *acts, const void *x,
                                         const int32_t *idx, const float *weight,
                                         const void *w_gate, const void *w_up,
                                         const void *w_down, int T, int C, int F, int E, int K,
                                         int accumulate) {
    const char *op = "qn_cuda_moe_forward";
    QN_CHECK(qn_cuda_moe_check(dt, T, C, F, E, K));
    if (T == 0) return QN_OK;
    QN_CUDA_REQUIRE(c && out && acts && x && idx && weight && w_gate && w_up && w_down,
                    "%s: NULL argument", op);
    QN_CUDA_REQUIRE(acts->offsets && acts->slot_tok && acts->tok_slot && acts->xs && acts->gate &&
                        acts->up && acts->act && acts->ys,
                    "%s: activation block not laid out (qn_cuda_moe_acts_carve)", op);
    QN_CUDA_REQUIRE(out != x, "%s: out must not alias x", op);
    size_t mark = qn_cuda_mark(c);
    qn_status st = qn_cuda_dispatch(op, dt, [&](auto tag) {
        using T_ = decltype(tag);
        return moe_fwd<T_>(c, dt, (T_ *)out, acts, (const T_ *)x, idx, weight,
                           (const T_ *)w_gate, (const T_ *)w_up, (const T_ *)w_down, T, C, F, E,
                           K, accumulate, op);
    });
    qn_cuda_reset(c, mark);
    return st;
}

extern "C" qn_status qn_cuda_moe_backward(qn_cuda_ctx *c, qn_dtype dt, void *dx, float *dweight,
                                          float *dw_gate, float *dw_up, float *dw_down,
                                          const void *dout, const qn_cuda_moe_acts *acts,
                                          const float *weight, const void *w_gate,
                                          const void *w_up, const void *w_down, int T, int C,
                                          int F, int E, int K, int accumulate) {
    const char *op = "qn_cuda_moe_backward";
    QN_CHECK(qn_cuda_moe_check(dt, T, C, F, E, K));
    if (T == 0) return QN_OK;
    QN_CUDA_REQUIRE(c && dweight && dout && acts && weight && w_gate && w_up && w_down,
                    "%s: NULL argument", op);
    QN_CUDA_REQUIRE(acts->offsets && acts->slot_tok && acts->tok_slot && acts->xs && acts->gate &&
                        acts->up && acts->act && acts->ys,
                    "%s: activation block not laid out (qn_cuda_moe_acts_carve)", op);
    size_t mark = qn_cuda_mark(c);
    qn_status st = qn_cuda_dispatch(op, dt, [&](auto tag) {
        using T_ = decltype(tag);
        return moe_bwd<T_>(c, dt, (T_ *)dx, dweight, dw_gate, dw_up, dw_down, (const T_ *)dout,
                           acts, weight, (const T_ *)w_gate, (const T_ *)w_up,
                           (const T_ *)w_down, T, C, F, E, K, accumulate, op);
    });
    qn_cuda_reset(c, mark);
    return st;
}
