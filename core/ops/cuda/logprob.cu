// logprob.cu — chunked log-prob / entropy over the vocabulary on the GPU,
// forward and backward (logprob.h; CPU twin: core/ops/cpu/logprob.c).
//
// Forward, per row block and vocabulary chunk in order:
//   GEMM        Z[rows, vc] = h_blk W_c^T / temperature        (fp32 out)
//   fold        one CUDA block per row: chunk max, then the online
//               log-sum-exp update of (m, s, a) in double, as the CPU does
//               (expf(z - (float)m), s and a summed in double), and the
//               target's logit when it falls in this chunk
// then one finalize kernel per row block: lse = m + log s, ez = a / s,
// logp = z_target - lse, entropy = lse - ez.
// Backward, per row block, per chunk: recompute Z, turn it into d logits G
// (stored in dt), dh_acc += G W_c (fp32 accumulator), dW_c += G^T h_blk.
//
// The GEMMs go through lp_gemm: cuBLASLt (gemm.h) when it takes the shape,
// the tiled kernel otherwise or with QN_CUDA_TILED_GEMM=1 (tiled_gemm.cuh).
// The fold and d-logits kernels are memory-bound and small next to the
// 2 N V C flops of each product.
// Leaves out: fusing the fold into the GEMM epilogue (the [rows, chunk] block
// round-trips through memory), and the last-bit agreement with the CPU's
// sequential double sums (the GPU sums in a tree, still in double).
#include <math.h>

#include "core/ops/cuda/cuda_common.cuh"
#include "core/ops/cuda/logprob.h"
#include "core/ops/cuda/reduce_det.cuh"
#include "core/ops/cuda/tiled_gemm.cuh"

namespace {

enum { LP_THREADS = 256 };

// C[M,N] (fp32) = alpha op(A) op(B) + beta C with A, B in dt.
qn_status lp_gemm(qn_cuda_ctx *c, qn_dtype dt, int ta, int tb, int M, int N, int K, float alpha,
                  const void *A, size_t lda, const void *B, size_t ldb, float beta, float *C,
                  size_t ldc, const char *op) {
    qn_tg_args a = {};
    a.mode = QN_TG_PLAIN;
    a.ta = ta;
    a.tb = tb;
    a.M = M;
    a.N = N;
    a.K = K;
    a.alpha = alpha;
    a.beta = beta;
    a.dt_ab = dt;
    a.dt_c = QN_DTYPE_F32;
    a.A = A;
    a.lda = lda;
    a.B = B;
    a.ldb = ldb;
    a.C = C;
    a.ldc = ldc;
    return qn_tg_gemm_auto(c, &a, op);
}

qn_status lp_alloc(qn_cuda_ctx *c, size_t bytes, void **p, const char *op) {
    *p = qn_cuda_alloc(c, bytes);
    if (!*p)
        return qn_fail(QN_ERR_NOMEM,
                       "%s: %zu bytes of scratch do not fit in the device arena (%zu of %zu used)",
                       op, bytes, qn_cuda_arena_used(c), qn_cuda_arena_cap(c));
    return QN_OK;
}

const char *ptr_add(const void *p, size_t elems, qn_dtype dt) {
    return (const char *)p + elems * qn_dtype_size(dt);
}

// st[r*4 + {0,1,2,3}] = m, s, a, z_target (NaN until the target's chunk).
__global__ void __launch_bounds__(LP_THREADS)
    lp_fold_kernel(const float *Z, int vc, double *st, const int32_t *tg, int v0, int first) {
    __shared__ float shf[LP_THREADS];
    __shared__ double shd[LP_THREADS];
    const int r = blockIdx.x, tid = threadIdx.x;
    const float *z = Z + (size_t)r * vc;
    float mc = -INFINITY;
    for (int j = tid; j < vc; j += LP_THREADS)
        mc = fmaxf(mc, z[j]);
    mc = qn_block_reduce(mc, shf, qn_rd_max());
    double *s4 = st + (size_t)r * 4;
    double m = first ? -INFINITY : s4[0];
    double s = first ? 0.0 : s4[1];
    double a = first ? 0.0 : s4[2];
    if ((double)mc > m) {
        double f = exp(m - (double)mc);  // 0 on the first chunk
        s *= f;
        a *= f;
        m = mc;
    }
    const float mr = (float)m;
    double ss = 0.0, aa = 0.0;
    for (int j = tid; j < vc; j += LP_THREADS) {
        float e = expf(z[j] - mr);
        ss += e;
        aa += (double)e * z[j];
    }
    ss = qn_block_reduce(ss, shd, qn_rd_sum());
    aa = qn_block_reduce(aa, shd, qn_rd_sum());
    if (tid == 0) {
        s4[0] = m;
        s4[1] = s + ss;
        s4[2] = a + aa;
        if (first) s4[3] = NAN;
        long long t = (long long)tg[r] - v0;
        if (t >= 0 && t < vc) s4[3] = z[t];
    }
}

__global__ void lp_finish_kernel(const double *st, int nb, float *logp, float *entropy, float *lse,
                                 float *ez) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= nb) return;
    const double *s4 = st + (size_t)r * 4;
    double lz = s4[0] + log(s4[1]);
    double e = s4[2] / s4[1];
    lse[r] = (float)lz;
    ez[r] = (float)e;
    logp[r] = (float)(s4[3] - lz);  // NaN when the target was outside [0, V)
    if (entropy) entropy[r] = (float)(lz - e);
}

// G = d logits / temperature for rows [0, nb) of one chunk (Z may alias G
// when T is float: each element is read before it is written by one thread).
template <typename T>
__global__ void lp_dlogits_kernel(const float *Z, T *G, int vc, const float *dlogp,
                                  const float *dent, const float *lse, const float *ez,
                                  const int32_t *tg, int v0, float invt) {
    const int r = blockIdx.y;
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= vc) return;
    size_t i = (size_t)r * vc + j;
    float z = Z[i];
    float gl = dlogp ? dlogp[r] : 0.0f;
    float ge = dent ? dent[r] : 0.0f;
    float p = expf(z - lse[r]);
    float g = (-gl - ge * (z - ez[r])) * p * invt;
    if ((long long)tg[r] - v0 == j) g += gl * invt;
    qn_st(G + i, g);
}

template <typename TS, typename TD>
__global__ void lp_convert_kernel(const TS *src, TD *dst, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        qn_st(dst + i, qn_ld(src + i));
}

qn_status lp_forward(qn_cuda_ctx *c, qn_dtype dt, const qn_cuda_logprob_plan &pl, float *logp,
                     float *entropy, float *lse, float *ez, const void *h, const int32_t *targets,
                     const void *w, int N, int C, int V, float invt, const char *op) {
    void *zp = NULL, *sp = NULL;
    QN_CHECK(lp_alloc(c, (size_t)pl.rows * pl.chunk * sizeof(float), &zp, op));
    QN_CHECK(lp_alloc(c, (size_t)pl.rows * 4 * sizeof(double), &sp, op));
    float *Z = (float *)zp;
    double *st = (double *)sp;
    cudaStream_t s = qn_cuda_stream(c);
    for (int b = 0; b < pl.nblocks; b++) {
        int n0 = b * pl.rows, nb = N - n0 < pl.rows ? N - n0 : pl.rows;
        for (int ci = 0; ci < pl.nchunks; ci++) {
            int v0 = ci * pl.chunk, vc = V - v0 < pl.chunk ? V - v0 : pl.chunk;
            QN_CHECK(lp_gemm(c, dt, 0, 1, nb, vc, C, invt, ptr_add(h, (size_t)n0 * C, dt), C,
                             ptr_add(w, (size_t)v0 * C, dt), C, 0.0f, Z, vc, op));
            lp_fold_kernel<<<nb, LP_THREADS, 0, s>>>(Z, vc, st, targets + n0, v0, ci == 0);
            QN_CUDA_LAUNCH_CHECK(op);
        }
        lp_finish_kernel<<<(nb + 255) / 256, 256, 0, s>>>(st, nb, logp + n0,
                                                         entropy ? entropy + n0 : NULL, lse + n0,
                                                         ez + n0);
        QN_CUDA_LAUNCH_CHECK(op);
    }
    return QN_OK;
}

template <typename T>
qn_status lp_backward(qn_cuda_ctx *c, qn_dtype dt, const qn_cuda_logprob_plan &pl, T *dh,
                      float *dw, const float *dlogp, const float *dent, const float *lse,
                      const float *ez, const T *h, const int32_t *targets, const T *w, int N,
                      int C, int V, float invt, int accumulate, const char *op) {
    const bool f32 = dt == QN_DTYPE_F32;
    void *zp = NULL, *gp = NULL, *ap = NULL;
    QN_CHECK(lp_alloc(c, (size_t)pl.rows * pl.chunk * sizeof(float), &zp, op));
    float *Z = (float *)zp;
    T *G = (T *)zp;  // in place for f32
    float *acc_scratch = NULL;
    if (!f32) {
        QN_CHECK(lp_alloc(c, (size_t)pl.rows * pl.chunk * sizeof(T), &gp, op));
        G = (T *)gp;
        if (dh) {
            QN_CHECK(lp_alloc(c, (size_t)pl.rows * C * sizeof(float), &ap, op));
            acc_scratch = (float *)ap;
        }
    }
    cudaStream_t s = qn_cuda_stream(c);
    for (int b = 0; b < pl.nblocks; b++) {
        int n0 = b * pl.rows, nb = N - n0 < pl.rows ? N - n0 : pl.rows;
        const T *hb = h + (size_t)n0 * C;
        size_t nbc = (size_t)nb * C;
        float *acc = NULL;
        if (dh) {
            acc = f32 ? (float *)(void *)(dh + (size_t)n0 * C) : acc_scratch;
            if (!accumulate) {
                QN_CHECK(qn_cuda_memset(c, acc, 0, nbc * sizeof(float)));
            } else if (!f32) {  // f32 accumulates straight into dh
                lp_convert_kernel<T, float>
                    <<<qn_cuda_blocks(nbc, 256), 256, 0, s>>>(dh + (size_t)n0 * C, acc, nbc);
                QN_CUDA_LAUNCH_CHECK(op);
            }
        }
        for (int ci = 0; ci < pl.nchunks; ci++) {
            int v0 = ci * pl.chunk, vc = V - v0 < pl.chunk ? V - v0 : pl.chunk;
            const T *wc = w + (size_t)v0 * C;
            QN_CHECK(lp_gemm(c, dt, 0, 1, nb, vc, C, invt, hb, C, wc, C, 0.0f, Z, vc, op));
            dim3 grid((unsigned)((vc + 255) / 256), (unsigned)nb);
            lp_dlogits_kernel<T><<<grid, 256, 0, s>>>(Z, G, vc, dlogp ? dlogp + n0 : NULL,
                                                       dent ? dent + n0 : NULL, lse + n0, ez + n0,
                                                       targets + n0, v0, invt);
            QN_CUDA_LAUNCH_CHECK(op);
            if (acc)  // dh_blk += G W_c : [nb, vc] x [vc, C]
                QN_CHECK(lp_gemm(c, dt, 0, 0, nb, C, vc, 1.0f, G, vc, wc, C, 1.0f, acc, C, op));
            if (dw)   // dW_c += G^T h_blk : [vc, nb] x [nb, C]
                QN_CHECK(lp_gemm(c, dt, 1, 0, vc, C, nb, 1.0f, G, vc, hb, C, 1.0f,
                                 dw + (size_t)v0 * C, C, op));
        }
        if (acc && !f32) {
            lp_convert_kernel<float, T>
                <<<qn_cuda_blocks(nbc, 256), 256, 0, s>>>(acc, dh + (size_t)n0 * C, nbc);
            QN_CUDA_LAUNCH_CHECK(op);
        }
    }
    return QN_OK;
}

}  // namespace

extern "C" qn_status qn_cuda_logprob_forward(qn_cuda_ctx *c, qn_dtype dt, float *logp,
                                             float *entropy, float *lse, float *ez, const void *h,
                                             const int32_t *targets, const void *w, int N, int C,
                                             int V, float temperature, int chunk) {
    const char *op = "qn_cuda_logprob_forward";
    qn_cuda_logprob_plan pl;
    QN_CHECK(qn_cuda_logprob_plan_make(dt, N, C, V, temperature, chunk, &pl));
    if (N == 0) return QN_OK;
    QN_CUDA_REQUIRE(c, "%s: NULL context", op);
    QN_CUDA_REQUIRE(logp && lse && ez && h && targets && w,
                    "%s: NULL logp, lse, ez, h, targets or w", op);
    size_t mark = qn_cuda_mark(c);
    qn_status st = lp_forward(c, dt, pl, logp, entropy, lse, ez, h, targets, w, N, C, V,
                              1.0f / temperature, op);
    qn_cuda_reset(c, mark);
    return st;
}

extern "C" qn_status qn_cuda_logprob_backward(qn_cuda_ctx *c, qn_dtype dt, void *dh, float *dw,
                                              const float *dlogp, const float *dentropy,
                                              const float *lse, const float *ez, const void *h,
                                              const int32_t *targets, const void *w, int N,
                                              int C, int V, float temperature, int chunk,
                                              int accumulate) {
    const char *op = "qn_cuda_logprob_backward";
    qn_cuda_logprob_plan pl;
    QN_CHECK(qn_cuda_logprob_plan_make(dt, N, C, V, temperature, chunk, &pl));
    if (N == 0 || (!dh && !dw)) return QN_OK;
    QN_CUDA_REQUIRE(c, "%s: NULL context", op);
    QN_CUDA_REQUIRE(lse && ez && h && targets && w, "%s: NULL lse, ez, h, targets or w", op);
    size_t mark = qn_cuda_mark(c);
    float invt = 1.0f / temperature;
    qn_status st = qn_cuda_dispatch(op, dt, [&](auto tag) {
        using T = decltype(tag);
        return lp_backward<T>(c, dt, pl, (T *)dh, dw, dlogp, dentropy, lse, ez, (const T *)h,
                              targets, (const T *)w, N, C, V, invt, accumulate, op);
    });
    qn_cuda_reset(c, mark);
    return st;
}
