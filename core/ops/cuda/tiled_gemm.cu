// tiled_gemm.cu — the shared-memory tiled GEMM of tiled_gemm.cuh (plain, row-
// grouped and K-grouped), fp32 accumulation, 64x64 output tiles, 256 threads,
// 4x4 outputs per thread. Correctness first: no tensor cores, no double
// buffering (see the header for what to speed up later).
#include "core/ops/cuda/tiled_gemm.cuh"

#include <limits.h>
#include <stdlib.h>

#include "core/ops/cuda/gemm.h"

namespace {

struct tg_params {
    int mode, ta, tb, M, N, K;
    float alpha, beta;
    const void *A;
    size_t lda;
    const void *B;
    size_t ldb;
    void *C;
    size_t ldc;
    const int32_t *offsets;
    size_t stride_b, stride_c;
    const int32_t *tile_g;  // ROWS: group of tile j, -1 past the last tile
    const int32_t *tile_m;  // ROWS: first row of tile j
};

// ROWS mode: one thread lists the row tiles of every group in order (at most
// ceil(M/BM) + G entries; G <= a few thousand, so a serial loop is fine and
// keeps the table's order fixed).
__global__ void tg_tiles_kernel(int32_t *tile_g, int32_t *tile_m, const int32_t *off, int G,
                                int ntiles) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    int j = 0;
    for (int g = 0; g < G; g++) {
        int r0 = off[g], r1 = off[g + 1];
        for (int r = r0; r < r1 && j < ntiles; r += QN_TG_BM) {
            tile_g[j] = g;
            tile_m[j] = r;
            j++;
        }
    }
    for (; j < ntiles; j++) {
        tile_g[j] = -1;
        tile_m[j] = 0;
    }
}

template <typename TI, typename TO>
__global__ void __launch_bounds__(256) tg_kernel(tg_params p) {
    __shared__ float As[QN_TG_BK][QN_TG_BM + 4];
    __shared__ float Bs[QN_TG_BK][QN_TG_BN + 4];
    const TI *A = (const TI *)p.A;
    const TI *B = (const TI *)p.B;
    TO *C = (TO *)p.C;
    int m0, mend, kbeg, kend;
    int n0 = blockIdx.y * QN_TG_BN;
    if (p.mode == QN_TG_ROWS) {
        int g = p.tile_g[blockIdx.x];
        if (g < 0) return;
        m0 = p.tile_m[blockIdx.x];
        mend = p.offsets[g + 1];
        B += (size_t)g * p.stride_b;
        kbeg = 0;
        kend = p.K;
    } else if (p.mode == QN_TG_KSPLIT) {
        int g = blockIdx.z;
        m0 = blockIdx.x * QN_TG_BM;
        mend = p.M;
        kbeg = p.offsets[g];
        kend = p.offsets[g + 1];
        C += (size_t)g * p.stride_c;
    } else {
        m0 = blockIdx.x * QN_TG_BM;
        mend = p.M;
        kbeg = 0;
        kend = p.K;
    }
    if (m0 >= mend || n0 >= p.N) return;  // uniform across the block

    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
            acc[i][j] = 0.0f;

    for (int k0 = kbeg; k0 < kend; k0 += QN_TG_BK) {
#pragma unroll
        for (int r = 0; r < 4; r++) {
            int l = tid + 256 * r;  // 0 .. BM*BK-1
            int mm, kk;
            if (p.ta) {  // A stored [K, M]: consecutive threads walk m
                kk = l / QN_TG_BM;
                mm = l % QN_TG_BM;
            } else {     // A stored [M, K]: consecutive threads walk k
                mm = l / QN_TG_BK;
                kk = l % QN_TG_BK;
            }
            int m = m0 + mm, k = k0 + kk;
            float v = 0.0f;
            if (m < mend && k < kend)
                v = p.ta ? qn_ld(A + (size_t)k * p.lda + m) : qn_ld(A + (size_t)m * p.lda + k);
            As[kk][mm] = v;
        }
#pragma unroll
        for (int r = 0; r < 4; r++) {
            int l = tid + 256 * r;
            int nn, kk;
            if (p.tb) {  // B stored [N, K]
                nn = l / QN_TG_BK;
                kk = l % QN_TG_BK;
            } else {     // B stored [K, N]
                kk = l / QN_TG_BN;
                nn = l % QN_TG_BN;
            }
            int n = n0 + nn, k = k0 + kk;
            float v = 0.0f;
            if (n < p.N && k < kend)
                v = p.tb ? qn_ld(B + (size_t)n * p.ldb + k) : qn_ld(B + (size_t)k * p.ldb + n);
            Bs[kk][nn] = v;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < QN_TG_BK; kk++) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; i++)
                a[i] = As[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; j++)
                b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int m = m0 + ty + 16 * i;
        if (m >= mend) continue;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int n = n0 + tx + 16 * j;
            if (n >= p.N) continue;
            TO *dst = C + (size_t)m * p.ldc + n;
            float v = p.alpha * acc[i][j];
            if (p.beta != 0.0f) v += p.beta * qn_ld(dst);
            qn_st(dst, v);
        }
    }
}

template <typename TI, typename TO>
qn_status tg_launch(qn_cuda_ctx *c, const tg_params &p, dim3 grid, const char *op) {
    tg_kernel<TI, TO><<<grid, 256, 0, qn_cuda_stream(c)>>>(p);
    QN_CUDA_LAUNCH_CHECK(op);
    return QN_OK;
}

}  // namespace

qn_status qn_tg_gemm(qn_cuda_ctx *c, const qn_tg_args *a, const char *op) {
    QN_CUDA_REQUIRE(c && a, "%s: gemm: NULL context or arguments", op);
    QN_CUDA_CHECK_DTYPE(op, a->dt_ab);
    QN_CUDA_CHECK_DTYPE(op, a->dt_c);
    QN_CUDA_REQUIRE(a->mode >= QN_TG_PLAIN && a->mode <= QN_TG_KSPLIT, "%s: gemm: bad mode %d",
                    op, a->mode);
    QN_CUDA_REQUIRE(a->M >= 0 && a->N >= 0 && a->K >= 0, "%s: gemm: negative shape %dx%dx%d", op,
                    a->M, a->N, a->K);
    if (a->M == 0 || a->N == 0) return QN_OK;
    QN_CUDA_REQUIRE(a->A && a->B && a->C, "%s: gemm: NULL matrix", op);
    size_t ntn = ((size_t)a->N + QN_TG_BN - 1) / QN_TG_BN;
    QN_CUDA_REQUIRE(ntn <= 65535, "%s: gemm: N = %d too large for the grid", op, a->N);
    tg_params p = {};
    p.mode = a->mode;
    p.ta = a->ta;
    p.tb = a->tb;
    p.M = a->M;
    p.N = a->N;
    p.K = a->K;
    p.alpha = a->alpha;
    p.beta = a->beta;
    p.A = a->A;
    p.lda = a->lda;
    p.B = a->B;
    p.ldb = a->ldb;
    p.C = a->C;
    p.ldc = a->ldc;
    p.offsets = a->offsets;
    p.stride_b = a->stride_b;
    p.stride_c = a->stride_c;
    dim3 grid((unsigned)(((size_t)a->M + QN_TG_BM - 1) / QN_TG_BM), (unsigned)ntn, 1);
    if (a->mode == QN_TG_ROWS) {
        QN_CUDA_REQUIRE(!a->ta, "%s: gemm: row groups need an untransposed A", op);
        QN_CUDA_REQUIRE(a->G > 0 && a->offsets && a->tiles, "%s: gemm: row groups need G > 0, "
                        "offsets and a tile table", op);
        size_t ntiles = qn_tg_tiles_ints(a->M, a->G) / 2;
        QN_CUDA_REQUIRE(ntiles <= 0x7fffffffu, "%s: gemm: too many row tiles", op);
        p.tile_g = a->tiles;
        p.tile_m = a->tiles + ntiles;
        tg_tiles_kernel<<<1, 1, 0, qn_cuda_stream(c)>>>(a->tiles, a->tiles + ntiles, a->offsets,
                                                        a->G, (int)ntiles);
        QN_CUDA_LAUNCH_CHECK(op);
        grid.x = (unsigned)ntiles;
    } else if (a->mode == QN_TG_KSPLIT) {
        QN_CUDA_REQUIRE(a->G > 0 && a->G <= 65535 && a->offsets,
                        "%s: gemm: K groups need 0 < G <= 65535 and offsets", op);
        grid.z = (unsigned)a->G;
    }
    bool ab16 = a->dt_ab == QN_DTYPE_BF16, c16 = a->dt_c == QN_DTYPE_BF16;
    if (!ab16 && !c16) return tg_launch<float, float>(c, p, grid, op);
    if (!ab16 && c16) return tg_launch<float, __nv_bfloat16>(c, p, grid, op);
    if (ab16 && !c16) return tg_launch<__nv_bfloat16, float>(c, p, grid, op);
    return tg_launch<__nv_bfloat16, __nv_bfloat16>(c, p, grid, op);
}

static int force_tiled(void) {
    static int v = -1;  // read once; a benign race (same value) if two threads start together
    if (v < 0) {
        const char *e = getenv("QN_CUDA_TILED_GEMM");
        v = e && *e && *e != '0';
    }
    return v;
}

qn_status qn_tg_gemm_auto(qn_cuda_ctx *c, const qn_tg_args *a, const char *op) {
    QN_CUDA_REQUIRE(a, "%s: gemm: NULL arguments", op);
    bool fits = a->lda <= INT_MAX && a->ldb <= INT_MAX && a->ldc <= INT_MAX;
    if (a->mode != QN_TG_PLAIN || force_tiled() || !fits) return qn_tg_gemm(c, a, op);
    qn_cuda_gemm_desc d = {};
    d.trans_a = a->ta;
    d.trans_b = a->tb;
    d.M = a->M;
    d.N = a->N;
    d.K = a->K;
    d.lda = (int)a->lda;
    d.ldb = (int)a->ldb;
    d.ldc = (int)a->ldc;
    d.ab_dtype = a->dt_ab;
    d.c_dtype = a->dt_c;
    qn_status s = qn_cuda_gemm_ex(c, &d, a->alpha, a->A, a->B, a->beta, a->C);
    if (s == QN_ERR_UNSUPPORTED) return qn_tg_gemm(c, a, op);
    if (s != QN_OK) return qn_fail(s, "%s: %s", op, qn_last_error());
    return QN_OK;
}
