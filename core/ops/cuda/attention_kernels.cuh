// attention_kernels.cuh — the device code of attention.cu (kernels and
// their helpers), kept apart from the launchers so that the same source can
// be compiled by nvcc (attention.cu) and, for debugging without a GPU, by a
// host emulation that defines the few CUDA built-ins it uses (threadIdx,
// __syncthreads, warp shuffles, qn_ld/qn_st). Include after
// cuda_common.cuh; see attention.cu for the layout and numerics notes.
#ifndef QN_CORE_OPS_CUDA_ATTENTION_KERNELS_CUH
#define QN_CORE_OPS_CUDA_ATTENTION_KERNELS_CUH

#include "core/ops/cuda/attention.h"

// The host emulation defines it empty (g++ warns about nvcc's pragma).
#ifndef QN_UNROLL
#define QN_UNROLL _Pragma("unroll")
#endif


namespace {

constexpr int WARPS = QN_CUDA_ATT_WARPS;
constexpr int RW = QN_CUDA_ATT_ROWS_PER_WARP;
constexpr int BQ = QN_CUDA_ATT_BQ;
constexpr int BK = QN_CUDA_ATT_BK;
constexpr int NTHREADS = WARPS * 32;
constexpr float NEG_INIT = -1e30f;
constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.6931471805599453f;
constexpr unsigned FULL = 0xffffffffu;

static_assert(BQ == WARPS * RW, "BQ must be WARPS * ROWS_PER_WARP");
static_assert(BK == 32, "a streamed tile has one entry per lane");

__device__ __forceinline__ float warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(FULL, x, o));
    return x;
}
__device__ __forceinline__ float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(FULL, x, o);
    return x;
}

// Copies rows [r0, r0 + nrows) of a strided global matrix (row stride ld
// elements, src already offset to the head's first column) into shared
// memory with row stride sstride; rows at or past rvalid are zero.
template <typename T>
__device__ void load_rows(float *dst, int sstride, const T *src, size_t ld, int r0, int nrows,
                          int rvalid, int hd) {
    for (int i = threadIdx.x; i < nrows * hd; i += blockDim.x) {
        int r = i / hd, d = i - r * hd;
        float x = 0.0f;
        if (r < rvalid) x = qn_ld(src + (size_t)(r0 + r) * ld + d);
        dst[r * sstride + d] = x;
    }
}

// The online-softmax update of the warp's RW rows with one tile: x[r] holds
// this lane's score (log2 units, -inf when masked) for row r and becomes its
// weight; m, l, acc are the running max, denominator and unnormalised output
// (dims lane + 32*i). Vs is the value tile, row j at Vs + j*vstride.
template <int NE>
__device__ __forceinline__ void softmax_pv(float (&x)[RW], float (&m)[RW], float (&l)[RW],
                                           float (&acc)[RW][NE], const float *Vs, int vstride,
                                           int nk, int hd, int lane) {
QN_UNROLL
    for (int r = 0; r < RW; r++) {
        float mnew = fmaxf(m[r], warp_max(x[r]));
        float corr = exp2f(m[r] - mnew);
        float p = exp2f(x[r] - mnew);
        l[r] = l[r] * corr + warp_sum(p);
        m[r] = mnew;
QN_UNROLL
        for (int i = 0; i < NE; i++) acc[r][i] *= corr;
        x[r] = p;
    }
    for (int j = 0; j < nk; j++) {
        float vv[NE];
QN_UNROLL
        for (int i = 0; i < NE; i++) {
            int d = lane + 32 * i;
            vv[i] = d < hd ? Vs[j * vstride + d] : 0.0f;
        }
QN_UNROLL
        for (int r = 0; r < RW; r++) {
            float pj = __shfl_sync(FULL, x[r], j);
QN_UNROLL
            for (int i = 0; i < NE; i++) acc[r][i] += pj * vv[i];
        }
    }
}

// Sequence bounds of sequence s, clamped to [0, T]; false if unusable.
__device__ __forceinline__ bool seq_bounds(const int32_t *cu, int s, int T, int *t0, int *len) {
    int a = cu[s], b = cu[s + 1];
    if (a < 0 || b < a || b > T) return false;
    *t0 = a;
    *len = b - a;
    return true;
}

// ------------------------------------------------------------------ forward

// grid (q_tiles, NH, S). Heavy (late) query tiles are scheduled first.
template <typename T, int NE, int HDC>
__global__ void __launch_bounds__(NTHREADS)
    fwd_kernel(T *out, float *lse, const T *q, const T *k, const T *v, const int32_t *cu,
               int Ttot, int NH, int NKV, int hd_rt, int max_seqlen, float scale_log2) {
    const int hd = HDC ? HDC : hd_rt;
    const int qt = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, s = blockIdx.z;
    int t0, len;
    if (!seq_bounds(cu, s, Ttot, &t0, &len)) return;
    const size_t ldq = (size_t)NH * hd, ldk = (size_t)NKV * hd;
    if (len > max_seqlen) {
        // The grid does not cover this sequence: poison it (tile 0 blocks only).
        if (qt == 0)
            for (int i = threadIdx.x; i < len * hd; i += blockDim.x) {
                int r = i / hd, d = i - r * hd;
                qn_st(out + (size_t)(t0 + r) * ldq + (size_t)h * hd + d, NAN);
                if (d == 0) lse[(size_t)(t0 + r) * NH + h] = NAN;
            }
        return;
    }
    const int q0 = qt * BQ;
    if (q0 >= len) return;
    const int g = h / (NH / NKV);
    const int nq = min(BQ, len - q0);
    extern __shared__ float smem[];
    float *Qs = smem;                // [BQ][hd]
    float *Ks = Qs + BQ * hd;        // [BK][hd+1]
    float *Vs = Ks + BK * (hd + 1);  // [BK][hd]
    load_rows(Qs, hd, q + (size_t)t0 * ldq + (size_t)h * hd, ldq, q0, BQ, nq, hd);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float m[RW], l[RW], acc[RW][NE];
QN_UNROLL
    for (int r = 0; r < RW; r++) {
        m[r] = NEG_INIT;
        l[r] = 0.0f;
QN_UNROLL
        for (int i = 0; i < NE; i++) acc[r][i] = 0.0f;
    }
    const int kend = q0 + nq;  // causal: keys [0, last query of the tile]
    const T *kbase = k + (size_t)t0 * ldk + (size_t)g * hd;
    const T *vbase = v + (size_t)t0 * ldk + (size_t)g * hd;
    for (int k0 = 0; k0 < kend; k0 += BK) {
        const int nk = min(BK, kend - k0);
        __syncthreads();  // the previous tile is consumed
        load_rows(Ks, hd + 1, kbase, ldk, k0, BK, nk, hd);
        load_rows(Vs, hd, vbase, ldk, k0, BK, nk, hd);
        __syncthreads();
        float x[RW];
QN_UNROLL
        for (int r = 0; r < RW; r++) x[r] = 0.0f;
        const float *krow = Ks + lane * (hd + 1);
        const float *qrows = Qs + warp * RW * hd;
        for (int d = 0; d < hd; d++) {
            float kv = krow[d];
QN_UNROLL
            for (int r = 0; r < RW; r++) x[r] += qrows[r * hd + d] * kv;
        }
        const int kpos = k0 + lane;
QN_UNROLL
        for (int r = 0; r < RW; r++) {
            int qpos = q0 + warp * RW + r;
            x[r] = (lane < nk && kpos <= qpos && qpos < len) ? x[r] * scale_log2 : -INFINITY;
        }
        softmax_pv<NE>(x, m, l, acc, Vs, hd, nk, hd, lane);
    }
QN_UNROLL
    for (int r = 0; r < RW; r++) {
        int qpos = q0 + warp * RW + r;
        if (qpos >= len) continue;
        size_t t = (size_t)(t0 + qpos);
        float inv = 1.0f / l[r];
QN_UNROLL
        for (int i = 0; i < NE; i++) {
            int d = lane + 32 * i;
            if (d < hd) qn_st(out + t * ldq + (size_t)h * hd + d, acc[r][i] * inv);
        }
        if (lane == 0) lse[t * NH + h] = (m[r] + log2f(l[r])) * LN2;
    }
}

// ------------------------------------------------------------------ backward

// D[t, h] = sum_d dout[t, h, d] * out[t, h, d]; one warp per (t, h).
template <typename T>
__global__ void bwd_dot_kernel(float *D, const T *dout, const T *o, size_t rows, int hd) {
    size_t row = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const T *a = dout + row * hd, *b = o + row * hd;
    float s = 0.0f;
    for (int d = lane; d < hd; d += 32) s += qn_ld(a + d) * qn_ld(b + d);
    s = warp_sum(s);
    if (lane == 0) D[row] = s;
}

// dq for a tile of queries of head h: grid (q_tiles, NH, S).
template <typename T, int NE, int HDC>
__global__ void __launch_bounds__(NTHREADS)
    bwd_dq_kernel(T *dq, const T *dout, const T *q, const T *k, const T *v, const float *lse,
                  const float *D, const int32_t *cu, int Ttot, int NH, int NKV, int hd_rt,
                  int max_seqlen, float scale_log2, float scale) {
    const int hd = HDC ? HDC : hd_rt;
    const int qt = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, s = blockIdx.z;
    int t0, len;
    if (!seq_bounds(cu, s, Ttot, &t0, &len)) return;
    const size_t ldq = (size_t)NH * hd, ldk = (size_t)NKV * hd;
    if (len > max_seqlen) {
        if (qt == 0)
            for (int i = threadIdx.x; i < len * hd; i += blockDim.x)
                qn_st(dq + (size_t)(t0 + i / hd) * ldq + (size_t)h * hd + i % hd, NAN);
        return;
    }
    const int q0 = qt * BQ;
    if (q0 >= len) return;
    const int g = h / (NH / NKV);
    const int nq = min(BQ, len - q0);
    extern __shared__ float smem[];
    float *Qs = smem;                 // [BQ][hd]
    float *dOs = Qs + BQ * hd;        // [BQ][hd]
    float *Ks = dOs + BQ * hd;        // [BK][hd+1]
    float *Vs = Ks + BK * (hd + 1);   // [BK][hd+1]
    load_rows(Qs, hd, q + (size_t)t0 * ldq + (size_t)h * hd, ldq, q0, BQ, nq, hd);
    load_rows(dOs, hd, dout + (size_t)t0 * ldq + (size_t)h * hd, ldq, q0, BQ, nq, hd);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float lse2[RW], Dr[RW], acc[RW][NE];
QN_UNROLL
    for (int r = 0; r < RW; r++) {
        int qpos = q0 + warp * RW + r;
        size_t t = (size_t)(t0 + qpos);
        lse2[r] = qpos < len ? lse[t * NH + h] * LOG2E : 0.0f;
        Dr[r] = qpos < len ? D[t * NH + h] : 0.0f;
QN_UNROLL
        for (int i = 0; i < NE; i++) acc[r][i] = 0.0f;
    }
    const int kend = q0 + nq;
    const T *kbase = k + (size_t)t0 * ldk + (size_t)g * hd;
    const T *vbase = v + (size_t)t0 * ldk + (size_t)g * hd;
    for (int k0 = 0; k0 < kend; k0 += BK) {
        const int nk = min(BK, kend - k0);
        __syncthreads();
        load_rows(Ks, hd + 1, kbase, ldk, k0, BK, nk, hd);
        load_rows(Vs, hd + 1, vbase, ldk, k0, BK, nk, hd);
        __syncthreads();
        float x[RW], dp[RW];
QN_UNROLL
        for (int r = 0; r < RW; r++) x[r] = dp[r] = 0.0f;
        const float *krow = Ks + lane * (hd + 1), *vrow = Vs + lane * (hd + 1);
        const float *qrows = Qs + warp * RW * hd, *orows = dOs + warp * RW * hd;
        for (int d = 0; d < hd; d++) {
            float kv = krow[d], vv = vrow[d];
QN_UNROLL
            for (int r = 0; r < RW; r++) {
                x[r] += qrows[r * hd + d] * kv;
                dp[r] += orows[r * hd + d] * vv;
            }
        }
        const int kpos = k0 + lane;
        float ds[RW];
QN_UNROLL
        for (int r = 0; r < RW; r++) {
            int qpos = q0 + warp * RW + r;
            bool ok = lane < nk && kpos <= qpos && qpos < len;
            float p = ok ? exp2f(x[r] * scale_log2 - lse2[r]) : 0.0f;
            ds[r] = p * (dp[r] - Dr[r]);
        }
        for (int j = 0; j < nk; j++) {
            float kk[NE];
QN_UNROLL
            for (int i = 0; i < NE; i++) {
                int d = lane + 32 * i;
                kk[i] = d < hd ? Ks[j * (hd + 1) + d] : 0.0f;
            }
QN_UNROLL
            for (int r = 0; r < RW; r++) {
                float dsj = __shfl_sync(FULL, ds[r], j);
QN_UNROLL
                for (int i = 0; i < NE; i++) acc[r][i] += dsj * kk[i];
            }
        }
    }
QN_UNROLL
    for (int r = 0; r < RW; r++) {
        int qpos = q0 + warp * RW + r;
        if (qpos >= len) continue;
        size_t t = (size_t)(t0 + qpos);
QN_UNROLL
        for (int i = 0; i < NE; i++) {
            int d = lane + 32 * i;
            if (d < hd) qn_st(dq + t * ldq + (size_t)h * hd + d, acc[r][i] * scale);
        }
    }
}

// dk, dv for a tile of BQ keys of kv head g: grid (k_tiles, NKV, S). Loops
// over the group's query heads in order, then over query tiles from the
// tile's first key to the end of the sequence: one writer per element.
template <typename T, int NE, int HDC>
__global__ void __launch_bounds__(NTHREADS)
    bwd_dkv_kernel(T *dk, T *dv, const T *dout, const T *q, const T *k, const T *v,
                   const float *lse, const float *D, const int32_t *cu, int Ttot, int NH, int NKV,
                   int hd_rt, int max_seqlen, float scale_log2, float scale) {
    const int hd = HDC ? HDC : hd_rt;
    const int kt = blockIdx.x, g = blockIdx.y, s = blockIdx.z;
    int t0, len;
    if (!seq_bounds(cu, s, Ttot, &t0, &len)) return;
    const size_t ldq = (size_t)NH * hd, ldk = (size_t)NKV * hd;
    if (len > max_seqlen) {
        if (kt == 0)
            for (int i = threadIdx.x; i < len * hd; i += blockDim.x) {
                size_t at = (size_t)(t0 + i / hd) * ldk + (size_t)g * hd + i % hd;
                qn_st(dk + at, NAN);
                qn_st(dv + at, NAN);
            }
        return;
    }
    const int k0 = kt * BQ;
    if (k0 >= len) return;
    const int nkr = min(BQ, len - k0);
    const int G = NH / NKV;
    extern __shared__ float smem[];
    float *Ks = smem;                  // [BQ][hd]
    float *Vs = Ks + BQ * hd;          // [BQ][hd]
    float *Qs = Vs + BQ * hd;          // [BK][hd+1]
    float *dOs = Qs + BK * (hd + 1);   // [BK][hd+1]
    float *lse2s = dOs + BK * (hd + 1);  // [BK]
    float *Ds = lse2s + BK;            // [BK]
    load_rows(Ks, hd, k + (size_t)t0 * ldk + (size_t)g * hd, ldk, k0, BQ, nkr, hd);
    load_rows(Vs, hd, v + (size_t)t0 * ldk + (size_t)g * hd, ldk, k0, BQ, nkr, hd);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float dka[RW][NE], dva[RW][NE];
QN_UNROLL
    for (int r = 0; r < RW; r++)
QN_UNROLL
        for (int i = 0; i < NE; i++) dka[r][i] = dva[r][i] = 0.0f;
    const float *krows = Ks + warp * RW * hd, *vrows = Vs + warp * RW * hd;
    for (int h = g * G; h < (g + 1) * G; h++) {
        const T *qb = q + (size_t)t0 * ldq + (size_t)h * hd;
        const T *ob = dout + (size_t)t0 * ldq + (size_t)h * hd;
        for (int q0 = k0; q0 < len; q0 += BK) {
            const int nq = min(BK, len - q0);
            __syncthreads();
            load_rows(Qs, hd + 1, qb, ldq, q0, BK, nq, hd);
            load_rows(dOs, hd + 1, ob, ldq, q0, BK, nq, hd);
            if (threadIdx.x < BK) {
                int i = threadIdx.x;
                size_t t = (size_t)(t0 + q0 + i);
                lse2s[i] = i < nq ? lse[t * NH + h] * LOG2E : 0.0f;
                Ds[i] = i < nq ? D[t * NH + h] : 0.0f;
            }
            __syncthreads();
            float x[RW], dp[RW];
QN_UNROLL
            for (int r = 0; r < RW; r++) x[r] = dp[r] = 0.0f;
            const float *qrow = Qs + lane * (hd + 1), *orow = dOs + lane * (hd + 1);
            for (int d = 0; d < hd; d++) {
                float qv = qrow[d], ov = orow[d];
QN_UNROLL
                for (int r = 0; r < RW; r++) {
                    x[r] += qv * krows[r * hd + d];
                    dp[r] += ov * vrows[r * hd + d];
                }
            }
            const int qpos = q0 + lane;
            float p[RW], ds[RW];
QN_UNROLL
            for (int r = 0; r < RW; r++) {
                int kpos = k0 + warp * RW + r;
                bool ok = lane < nq && kpos <= qpos && kpos < len;
                p[r] = ok ? exp2f(x[r] * scale_log2 - lse2s[lane]) : 0.0f;
                ds[r] = p[r] * (dp[r] - Ds[lane]);
            }
            for (int j = 0; j < nq; j++) {
                float qq[NE], oo[NE];
QN_UNROLL
                for (int i = 0; i < NE; i++) {
                    int d = lane + 32 * i;
                    qq[i] = d < hd ? Qs[j * (hd + 1) + d] : 0.0f;
                    oo[i] = d < hd ? dOs[j * (hd + 1) + d] : 0.0f;
                }
QN_UNROLL
                for (int r = 0; r < RW; r++) {
                    float pj = __shfl_sync(FULL, p[r], j), dsj = __shfl_sync(FULL, ds[r], j);
QN_UNROLL
                    for (int i = 0; i < NE; i++) {
                        dva[r][i] += pj * oo[i];
                        dka[r][i] += dsj * qq[i];
                    }
                }
            }
        }
    }
QN_UNROLL
    for (int r = 0; r < RW; r++) {
        int kpos = k0 + warp * RW + r;
        if (kpos >= len) continue;
        size_t t = (size_t)(t0 + kpos);
QN_UNROLL
        for (int i = 0; i < NE; i++) {
            int d = lane + 32 * i;
            if (d < hd) {
                qn_st(dk + t * ldk + (size_t)g * hd + d, dka[r][i] * scale);
                qn_st(dv + t * ldk + (size_t)g * hd + d, dva[r][i]);
            }
        }
    }
}

// ------------------------------------------------------------------ paged

struct paged_args {
    float *part_o;   // [T, NH, n_splits, hd] unnormalised
    float *part_ml;  // [T, NH, n_splits, 2] running max (log2 units), denominator
    int T, NH, NKV, L, layer, B, n_blocks, n_seqs, max_blocks, max_context;
    int n_splits, split_keys, head_passes;
    float scale_log2;
};

// grid (T * n_splits, NKV * head_passes). Rows are up to BQ query heads of
// the group of kv head g for token t; keys are this split's share of
// positions [0, pos[t]], gathered through the block table.
template <typename T, int NE, int HDC>
__global__ void __launch_bounds__(NTHREADS)
    paged_split_kernel(paged_args a, const T *q, const T *arena, const int32_t *pos,
                       const int32_t *seq, const int32_t *tables, int hd_rt) {
    const int hd = HDC ? HDC : hd_rt;
    const int t = blockIdx.x / a.n_splits, split = blockIdx.x % a.n_splits;
    const int g = blockIdx.y / a.head_passes, pass = blockIdx.y % a.head_passes;
    const int G = a.NH / a.NKV;
    const int h0 = g * G + pass * BQ;          // first head of this block
    const int nh = min(BQ, (g + 1) * G - h0);  // heads in this block
    const size_t KD = (size_t)a.NKV * hd;
    const int p = pos[t], sq = seq[t];
    // A token the tables cannot serve gets NaN (through the combine).
    const bool bad = p < 0 || sq < 0 || sq >= a.n_seqs || p >= a.max_context ||
                     p / a.B >= a.max_blocks;
    const int ks = split * a.split_keys;
    const int ke = bad ? ks : min(ks + a.split_keys, p + 1);
    extern __shared__ float smem[];
    float *Qs = smem;                // [BQ][hd]
    float *Ks = Qs + BQ * hd;        // [BK][hd+1]
    float *Vs = Ks + BK * (hd + 1);  // [BK][hd]
    load_rows(Qs, hd, q + (size_t)t * a.NH * hd + (size_t)h0 * hd, (size_t)hd, 0, BQ, nh, hd);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float m[RW], l[RW], acc[RW][NE];
QN_UNROLL
    for (int r = 0; r < RW; r++) {
        m[r] = NEG_INIT;
        l[r] = 0.0f;
QN_UNROLL
        for (int i = 0; i < NE; i++) acc[r][i] = 0.0f;
    }
    const int32_t *table = tables + (size_t)(bad ? 0 : sq) * a.max_blocks;
    const size_t bstride = (size_t)a.L * 2 * a.B * KD;
    const size_t koff = (size_t)(2 * a.layer) * a.B * KD, voff = koff + (size_t)a.B * KD;
    bool badblk = false;
    for (int k0 = ks; k0 < ke; k0 += BK) {
        const int nk = min(BK, ke - k0);
        __syncthreads();
        for (int i = threadIdx.x; i < BK * hd; i += blockDim.x) {
            int r = i / hd, d = i - r * hd;
            float kx = 0.0f, vx = 0.0f;
            if (r < nk) {
                int kp = k0 + r;
                int blk = table[kp / a.B];
                if (blk < 0 || blk >= a.n_blocks) {
                    kx = vx = NAN;
                } else {
                    size_t at = (size_t)blk * bstride + (size_t)(kp % a.B) * KD +
                                (size_t)g * hd + d;
                    kx = qn_ld(arena + koff + at);
                    vx = qn_ld(arena + voff + at);
                }
            }
            Ks[r * (hd + 1) + d] = kx;
            Vs[r * hd + d] = vx;
        }
        __syncthreads();
        float x[RW];
QN_UNROLL
        for (int r = 0; r < RW; r++) x[r] = 0.0f;
        const float *krow = Ks + lane * (hd + 1);
        const float *qrows = Qs + warp * RW * hd;
        for (int d = 0; d < hd; d++) {
            float kv = krow[d];
QN_UNROLL
            for (int r = 0; r < RW; r++) x[r] += qrows[r * hd + d] * kv;
        }
QN_UNROLL
        for (int r = 0; r < RW; r++) {
            // A NaN key (bad block id) must poison, not vanish in the max.
            if (lane < nk && isnan(x[r])) badblk = true;
            x[r] = lane < nk ? x[r] * a.scale_log2 : -INFINITY;
        }
        softmax_pv<NE>(x, m, l, acc, Vs, hd, nk, hd, lane);
    }
    badblk = __any_sync(FULL, badblk);
QN_UNROLL
    for (int r = 0; r < RW; r++) {
        int hr = warp * RW + r;
        if (hr >= nh) continue;
        size_t idx = ((size_t)t * a.NH + (size_t)(h0 + hr)) * a.n_splits + split;
QN_UNROLL
        for (int i = 0; i < NE; i++) {
            int d = lane + 32 * i;
            if (d < hd) a.part_o[idx * hd + d] = acc[r][i];
        }
        if (lane == 0) {
            a.part_ml[idx * 2] = m[r];
            // split 0 always holds key 0 for a good token: NaN l marks a bad one
            a.part_ml[idx * 2 + 1] = (bad && split == 0) || badblk ? NAN : l[r];
        }
    }
}

// Merges the splits of each (t, h): one warp per row.
template <typename T>
__global__ void paged_combine_kernel(T *out, float *lse, const float *part_o,
                                     const float *part_ml, int rows, int n_splits, int hd) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const float *ml = part_ml + (size_t)row * n_splits * 2;
    float M = NEG_INIT;
    bool nan = false;
    for (int s = 0; s < n_splits; s++) {
        if (isnan(ml[2 * s + 1])) nan = true;
        if (ml[2 * s + 1] > 0.0f) M = fmaxf(M, ml[2 * s]);
    }
    float L = 0.0f;
    for (int s = 0; s < n_splits; s++)
        if (ml[2 * s + 1] > 0.0f) L += ml[2 * s + 1] * exp2f(ml[2 * s] - M);
    if (nan || !(L > 0.0f)) L = NAN;
    const float inv = 1.0f / L;
    for (int d = lane; d < hd; d += 32) {
        float o = 0.0f;
        for (int s = 0; s < n_splits; s++)
            if (ml[2 * s + 1] > 0.0f)
                o += part_o[((size_t)row * n_splits + s) * hd + d] * exp2f(ml[2 * s] - M);
        qn_st(out + (size_t)row * hd + d, o * inv);
    }
    if (lse && lane == 0) lse[row] = (M + log2f(L)) * LN2;
}

}  // namespace

#endif  // QN_CORE_OPS_CUDA_ATTENTION_KERNELS_CUH
