// gemm.cu — the GEMMs of gemm.h on the GPU: cuBLASLt for f32/bf16 products
// and for the FP8 block-scaled product, a process-wide table of cuBLASLt
// plans (descriptors + heuristic algorithm per problem key), the small
// kernels around them (bias broadcast, bias-gradient column sums, C = beta C
// for K == 0), the FP8 activation quantiser, the FP8 weight re-quantiser and
// a plain reference FP8 kernel.
//
// Everything here is unverified on a GPU at the time of writing (no device
// was available); docs/cuda.md "GEMMs and FP8" lists what to run first.
//
// Speed-ups left for later (correctness first): the bias broadcast could be
// a cuBLASLt BIAS epilogue; the bias-gradient column sum uses one thread per
// column (fine for OC in the thousands, slow for small OC and large N); the
// activation quantiser could use the hardware cvt.rn.satfinite.e4m3x2 and be
// fused into the producer of x; the reference FP8 kernel is one thread per
// output with no tiling.
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "core/ops/cuda/cuda_common.cuh"
#include "core/ops/cuda/fp8_codec.h"
#include "core/ops/cuda/gemm.h"
#include "core/ops/cuda/gemm_internal.h"

// cuBLASLt call that must succeed. cublasLtGetStatusString lives in
// libcublasLt itself (cublasGetStatusString would pull in libcublas).
#define QN_LT_TRY(op, call)                                                                        \
    do {                                                                                           \
        cublasStatus_t qn_lt_s_ = (call);                                                          \
        if (qn_lt_s_ != CUBLAS_STATUS_SUCCESS) {                                                   \
            qn_status_trace(__FILE__, __LINE__, QN_ERR_CUDA);                                      \
            return qn_fail(QN_ERR_CUDA, "%s: %s: cuBLASLt status %d (%s)", (op), #call,            \
                           (int)qn_lt_s_, cublasLtGetStatusString(qn_lt_s_));                      \
        }                                                                                          \
    } while (0)

#define QN_REQUIRE_CTX(op, c)                                                                      \
    do {                                                                                           \
        if (!(c)) return qn_fail(QN_ERR_INVALID, "%s: NULL context", (op));                        \
    } while (0)

static cudaDataType_t cuda_type(qn_dtype t) {
    return t == QN_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

// ======================================================== plan table

enum plan_kind { PLAN_PLAIN = 0, PLAN_FP8_BLOCK = 1 };

// Everything the cuBLASLt descriptors and the heuristic's choice depend on.
// Built with memset first so that memcmp over the padding is meaningful.
struct plan_key {
    int32_t device, kind, trans_a, trans_b;
    int64_t m, n, k, lda, ldb, ldc;
    int32_t atype, btype, ctype, compute;
    int32_t align_a, align_b, align_c, pad_;
    uint64_t ws_bytes;
};

struct plan {
    plan_key key;
    int used;
    uint64_t stamp;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
};

static pthread_mutex_t g_plan_mu = PTHREAD_MUTEX_INITIALIZER;
static plan g_plans[QN_CUDA_GEMM_PLAN_CAP];
static uint64_t g_clock, g_hits, g_misses, g_evictions;

static void plan_destroy(plan *p) {
    if (p->c) cublasLtMatrixLayoutDestroy(p->c);
    if (p->b) cublasLtMatrixLayoutDestroy(p->b);
    if (p->a) cublasLtMatrixLayoutDestroy(p->a);
    if (p->op) cublasLtMatmulDescDestroy(p->op);
    memset(p, 0, sizeof *p);
}

// Alignment of a device pointer as cuBLASLt's preference wants it (1..16).
static int32_t ptr_align(const void *p) {
    uintptr_t u = (uintptr_t)p;
    int32_t a = 16;
    while (a > 1 && (u % (uintptr_t)a) != 0)
        a /= 2;
    return a;
}

// Creates descriptors and asks the heuristic for one algorithm. For FP8 the
// scale pointers of the first call are set before the heuristic (cuBLASLt's
// samples do the same); each later call sets its own.
static qn_status plan_build(const char *op, cublasLtHandle_t lt, const plan_key *k, plan *p,
                            const void *a_scale, const void *b_scale) {
    memset(p, 0, sizeof *p);
    p->key = *k;
    qn_status s = QN_OK;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    cublasStatus_t st;
    memset(&heur, 0, sizeof heur);

#define PLAN_STEP(call)                                                                            \
    do {                                                                                           \
        st = (call);                                                                               \
        if (st != CUBLAS_STATUS_SUCCESS) {                                                         \
            s = qn_fail(QN_ERR_CUDA, "%s: %s: cuBLASLt status %d (%s)", op, #call, (int)st,        \
                        cublasLtGetStatusString(st));                                              \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

    {
        const cublasComputeType_t compute = (cublasComputeType_t)k->compute;
        PLAN_STEP(cublasLtMatmulDescCreate(&p->op, compute, CUDA_R_32F));
        const cublasOperation_t ta = k->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
        const cublasOperation_t tb = k->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
        PLAN_STEP(
            cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
        PLAN_STEP(
            cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
        if (k->kind == PLAN_FP8_BLOCK) {
            const int32_t amode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
            const int32_t bmode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
            PLAN_STEP(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE,
                                                     &amode, sizeof amode));
            PLAN_STEP(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE,
                                                     &bmode, sizeof bmode));
            PLAN_STEP(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                                                     &a_scale, sizeof a_scale));
            PLAN_STEP(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                                                     &b_scale, sizeof b_scale));
        }
        // stored shapes: op(A') is m x k, op(B') is k x n
        const uint64_t a_rows = (uint64_t)(k->trans_a ? k->k : k->m);
        const uint64_t a_cols = (uint64_t)(k->trans_a ? k->m : k->k);
        const uint64_t b_rows = (uint64_t)(k->trans_b ? k->n : k->k);
        const uint64_t b_cols = (uint64_t)(k->trans_b ? k->k : k->n);
        PLAN_STEP(
            cublasLtMatrixLayoutCreate(&p->a, (cudaDataType_t)k->atype, a_rows, a_cols, k->lda));
        PLAN_STEP(
            cublasLtMatrixLayoutCreate(&p->b, (cudaDataType_t)k->btype, b_rows, b_cols, k->ldb));
        PLAN_STEP(cublasLtMatrixLayoutCreate(&p->c, (cudaDataType_t)k->ctype, (uint64_t)k->m,
                                             (uint64_t)k->n, k->ldc));
        PLAN_STEP(cublasLtMatmulPreferenceCreate(&pref));
        const uint64_t ws = k->ws_bytes;
        PLAN_STEP(cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
        const uint32_t al_a = (uint32_t)k->align_a, al_b = (uint32_t)k->align_b,
                       al_c = (uint32_t)k->align_c;
        PLAN_STEP(cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a));
        PLAN_STEP(cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b));
        PLAN_STEP(cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c));
        PLAN_STEP(cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c));
        st = cublasLtMatmulAlgoGetHeuristic(lt, p->op, p->a, p->b, p->c, p->c, pref, 1, &heur,
                                            &found);
        if (st != CUBLAS_STATUS_SUCCESS || found < 1 || heur.state != CUBLAS_STATUS_SUCCESS) {
            s = qn_fail(QN_ERR_UNSUPPORTED,
                        "%s: cuBLASLt has no algorithm for %s m=%lld n=%lld k=%lld "
                        "(column-major, trans %c%c, lda %lld ldb %lld ldc %lld, types A %d B %d "
                        "C %d, compute %d, align %d/%d/%d): status %d (%s), %d found",
                        op, k->kind == PLAN_FP8_BLOCK ? "FP8 block-scaled" : "GEMM",
                        (long long)k->m, (long long)k->n, (long long)k->k, k->trans_a ? 'T' : 'N',
                        k->trans_b ? 'T' : 'N', (long long)k->lda, (long long)k->ldb,
                        (long long)k->ldc, k->atype, k->btype, k->ctype, k->compute, k->align_a,
                        k->align_b, k->align_c, (int)st, cublasLtGetStatusString(st), found);
            goto fail;
        }
        p->algo = heur.algo;
        p->used = 1;
    }
    cublasLtMatmulPreferenceDestroy(pref);
    return QN_OK;
fail:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    plan_destroy(p);
    return s;
#undef PLAN_STEP
}

// Finds or builds the plan for k (caller holds g_plan_mu). Evicts the least
// recently used entry when the table is full.
static qn_status plan_get(const char *op, cublasLtHandle_t lt, const plan_key *k,
                          const void *a_scale, const void *b_scale, plan **out) {
    plan *free_slot = NULL, *lru = NULL;
    for (int i = 0; i < QN_CUDA_GEMM_PLAN_CAP; i++) {
        plan *p = &g_plans[i];
        if (!p->used) {
            if (!free_slot) free_slot = p;
            continue;
        }
        if (memcmp(&p->key, k, sizeof *k) == 0) {
            p->stamp = ++g_clock;
            g_hits++;
            *out = p;
            return QN_OK;
        }
        if (!lru || p->stamp < lru->stamp) lru = p;
    }
    plan *slot = free_slot;
    if (!slot) {
        plan_destroy(lru);
        g_evictions++;
        slot = lru;
    }
    QN_CHECK(plan_build(op, lt, k, slot, a_scale, b_scale));
    slot->stamp = ++g_clock;
    g_misses++;
    *out = slot;
    return QN_OK;
}

extern "C" void qn_cuda_gemm_plan_stats_get(qn_cuda_gemm_plan_stats *out) {
    pthread_mutex_lock(&g_plan_mu);
    out->hits = g_hits;
    out->misses = g_misses;
    out->evictions = g_evictions;
    out->entries = 0;
    for (int i = 0; i < QN_CUDA_GEMM_PLAN_CAP; i++)
        out->entries += g_plans[i].used ? 1 : 0;
    pthread_mutex_unlock(&g_plan_mu);
}

extern "C" void qn_cuda_gemm_plan_clear(void) {
    pthread_mutex_lock(&g_plan_mu);
    for (int i = 0; i < QN_CUDA_GEMM_PLAN_CAP; i++)
        if (g_plans[i].used) plan_destroy(&g_plans[i]);
    g_hits = g_misses = g_evictions = 0;
    pthread_mutex_unlock(&g_plan_mu);
}

// Looks up / builds the plan and enqueues D = alpha op(A') op(B') + beta C
// with C == D, all under the table lock.
static qn_status lt_matmul(const char *op, qn_cuda_ctx *c, plan_key *k, float alpha, const void *A,
                           const void *B, float beta, void *C, const void *a_scale,
                           const void *b_scale) {
    cublasLtHandle_t lt = (cublasLtHandle_t)qn_cuda_ctx_blaslt(c);
    size_t ws_bytes = 0;
    void *ws = qn_cuda_ctx_workspace(c, &ws_bytes);
    if (!lt) return qn_fail(QN_ERR_INVALID, "%s: context has no cuBLASLt handle", op);
    k->device = qn_cuda_ctx_device(c);
    k->ws_bytes = ws ? (uint64_t)ws_bytes : 0;
    k->align_a = ptr_align(A);
    k->align_b = ptr_align(B);
    k->align_c = ptr_align(C);
    pthread_mutex_lock(&g_plan_mu);
    plan *p = NULL;
    qn_status s = plan_get(op, lt, k, a_scale, b_scale, &p);
    if (s == QN_OK && k->kind == PLAN_FP8_BLOCK) {
        cublasStatus_t st = cublasLtMatmulDescSetAttribute(
            p->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scale, sizeof a_scale);
        if (st == CUBLAS_STATUS_SUCCESS)
            st = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                                                &b_scale, sizeof b_scale);
        if (st != CUBLAS_STATUS_SUCCESS)
            s = qn_fail(QN_ERR_CUDA, "%s: setting FP8 scale pointers: cuBLASLt status %d (%s)", op,
                        (int)st, cublasLtGetStatusString(st));
    }
    if (s == QN_OK) {
        cublasStatus_t st =
            cublasLtMatmul(lt, p->op, &alpha, A, p->a, B, p->b, &beta, C, p->c, C, p->c, &p->algo,
                           ws, ws ? ws_bytes : 0, qn_cuda_stream(c));
        if (st != CUBLAS_STATUS_SUCCESS)
            s = qn_fail(QN_ERR_CUDA, "%s: cublasLtMatmul (m=%lld n=%lld k=%lld): status %d (%s)",
                        op, (long long)k->m, (long long)k->n, (long long)k->k, (int)st,
                        cublasLtGetStatusString(st));
    }
    pthread_mutex_unlock(&g_plan_mu);
    if (s != QN_OK) return s;
    QN_CUDA_LAUNCH_CHECK(op);
    return QN_OK;
}

// ======================================================== small kernels

// C[M, N] (ld ldc) = beta C; beta == 0 writes zeros without reading C.
template <typename T> __global__ void k_scale_c(T *C, int64_t ldc, int M, int N, float beta) {
    const int64_t total = (int64_t)M * N;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / N, col = i % N;
        T *p = C + r * ldc + col;
        qn_st(p, beta == 0.0f ? 0.0f : beta * qn_ld(p));
    }
}

// out[n, o] = bias[o]
template <typename T> __global__ void k_bias_bcast(T *out, const T *bias, int N, int OC) {
    const int64_t total = (int64_t)N * OC;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = bias[i % OC];
}

// dbias[o] += sum_n dout[n, o], fp32, one thread per column (deterministic).
template <typename T> __global__ void k_colsum(float *dbias, const T *dout, int N, int OC) {
    const int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= OC) return;
    float acc = 0.0f;
    for (int n = 0; n < N; n++)
        acc += qn_ld(dout + (int64_t)n * OC + o);
    dbias[o] += acc;
}

// ======================================================== plain GEMM

extern "C" qn_status qn_cuda_gemm_ex(qn_cuda_ctx *c, const qn_cuda_gemm_desc *d, float alpha,
                                     const void *A, const void *B, float beta, void *C) {
    const char *op = "gemm";
    QN_CHECK(qn_gemm_check_ex(op, d, A, B, C));
    QN_REQUIRE_CTX(op, c);
    if (d->M == 0 || d->N == 0) return QN_OK;
    if (d->K == 0) {
        // cuBLASLt does not take k = 0; BLAS semantics: C = beta C
        const size_t n = (size_t)d->M * (size_t)d->N;
        const unsigned blocks = qn_cuda_blocks(n, 256);
        if (d->c_dtype == QN_DTYPE_BF16)
            k_scale_c<__nv_bfloat16><<<blocks, 256, 0, qn_cuda_stream(c)>>>(
                (__nv_bfloat16 *)C, d->ldc, d->M, d->N, beta);
        else
            k_scale_c<float>
                <<<blocks, 256, 0, qn_cuda_stream(c)>>>((float *)C, d->ldc, d->M, d->N, beta);
        QN_CUDA_LAUNCH_CHECK("gemm (K = 0)");
        return QN_OK;
    }
    qn_cuda_gemm_colmajor cm;
    qn_cuda_gemm_to_colmajor(d, &cm);
    plan_key k;
    memset(&k, 0, sizeof k);
    k.kind = PLAN_PLAIN;
    k.trans_a = cm.trans_a;
    k.trans_b = cm.trans_b;
    k.m = cm.m;
    k.n = cm.n;
    k.k = cm.k;
    k.lda = cm.lda;
    k.ldb = cm.ldb;
    k.ldc = cm.ldc;
    k.atype = cuda_type(d->ab_dtype);
    k.btype = cuda_type(d->ab_dtype);
    k.ctype = cuda_type(d->c_dtype);
    k.compute = (d->ab_dtype == QN_DTYPE_F32 && d->allow_tf32) ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                               : CUBLAS_COMPUTE_32F;
    // A' = row-major B, B' = row-major A
    return lt_matmul(op, c, &k, alpha, B, A, beta, C, NULL, NULL);
}

// ======================================================== linear layers

extern "C" qn_status qn_cuda_matmul_forward(qn_cuda_ctx *c, qn_dtype dt, void *out, const void *inp,
                                            const void *w, const void *bias, int N, int IC,
                                            int OC) {
    const char *op = "matmul_forward";
    QN_CHECK(qn_gemm_check_matmul_fwd(dt, out, inp, w, N, IC, OC));
    QN_REQUIRE_CTX(op, c);
    if (N == 0 || OC == 0) return QN_OK;
    float beta = 0.0f;
    if (bias) {
        const size_t n = (size_t)N * (size_t)OC;
        const unsigned blocks = qn_cuda_blocks(n, 256);
        if (dt == QN_DTYPE_BF16)
            k_bias_bcast<__nv_bfloat16><<<blocks, 256, 0, qn_cuda_stream(c)>>>(
                (__nv_bfloat16 *)out, (const __nv_bfloat16 *)bias, N, OC);
        else
            k_bias_bcast<float>
                <<<blocks, 256, 0, qn_cuda_stream(c)>>>((float *)out, (const float *)bias, N, OC);
        QN_CUDA_LAUNCH_CHECK("matmul_forward (bias)");
        beta = 1.0f;
    }
    if (IC == 0) {
        if (!bias) return qn_cuda_memset(c, out, 0, (size_t)N * OC * qn_dtype_size(dt));
        return QN_OK;
    }
    return qn_cuda_gemm(c, dt, 0, 1, N, OC, IC, 1.0f, inp, IC, w, IC, beta, out, OC);
}

extern "C" qn_status qn_cuda_matmul_backward(qn_cuda_ctx *c, qn_dtype dt, void *dinp, float *dw,
                                             float *dbias, const void *dout, const void *inp,
                                             const void *w, int N, int IC, int OC, int accumulate) {
    const char *op = "matmul_backward";
    QN_CHECK(qn_gemm_check_matmul_bwd(dt, dinp, dw, dbias, dout, inp, w, N, IC, OC));
    QN_REQUIRE_CTX(op, c);
    if (N == 0 || IC == 0) return QN_OK;
    if (dinp) {
        if (OC > 0) {
            QN_CHECK(qn_cuda_gemm(c, dt, 0, 0, N, IC, OC, 1.0f, dout, OC, w, IC,
                                  accumulate ? 1.0f : 0.0f, dinp, IC));
        } else if (!accumulate) {
            QN_CHECK(qn_cuda_memset(c, dinp, 0, (size_t)N * IC * qn_dtype_size(dt)));
        }
    }
    if (OC == 0) return QN_OK;
    if (dw) {
        qn_cuda_gemm_desc d;
        memset(&d, 0, sizeof d);
        d.trans_a = 1;
        d.trans_b = 0;
        d.M = OC;
        d.N = IC;
        d.K = N;
        d.lda = OC;
        d.ldb = IC;
        d.ldc = IC;
        d.ab_dtype = dt;
        d.c_dtype = QN_DTYPE_F32;
        QN_CHECK(qn_cuda_gemm_ex(c, &d, 1.0f, dout, inp, 1.0f, dw));
    }
    if (dbias) {
        const unsigned blocks = (unsigned)((OC + 255) / 256);
        if (dt == QN_DTYPE_BF16)
            k_colsum<__nv_bfloat16>
                <<<blocks, 256, 0, qn_cuda_stream(c)>>>(dbias, (const __nv_bfloat16 *)dout, N, OC);
        else
            k_colsum<float>
                <<<blocks, 256, 0, qn_cuda_stream(c)>>>(dbias, (const float *)dout, N, OC);
        QN_CUDA_LAUNCH_CHECK("matmul_backward (dbias)");
    }
    return QN_OK;
}

// ======================================================== FP8 kernels

// One warp per (token t, group g) of 128 columns: amax by shuffle reduction,
// then every lane quantises its 4 columns with the shared scale.
enum { QA_THREADS = 256, QA_WARPS = QA_THREADS / 32 };

template <typename T>
__global__ void k_fp8_quant_act(const T *x, int Tn, int K, uint8_t *xq, float *xs, int64_t xs_ld) {
    const int G = (K + 127) / 128;
    const int lane = threadIdx.x & 31;
    const int64_t nwarps_total = (int64_t)gridDim.x * QA_WARPS;
    const int64_t groups = (int64_t)Tn * G;
    for (int64_t wi = (int64_t)blockIdx.x * QA_WARPS + (threadIdx.x >> 5); wi < groups;
         wi += nwarps_total) {
        const int64_t t = wi / G;
        const int g = (int)(wi % G);
        const int c0 = g * 128;
        float v[4];
        float amax = 0.0f;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int col = c0 + lane + 32 * i;
            v[i] = col < K ? qn_ld(x + t * K + col) : 0.0f;
            amax = fmaxf(amax, fabsf(v[i]));
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1)
            amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, off));
        const float s = qn_fp8_block_scale(amax);
        if (lane == 0) xs[qn_fp8_act_scale_at(t, g, xs_ld)] = s;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int col = c0 + lane + 32 * i;
            if (col < K) xq[t * K + col] = qn_fp8_quant_value(v[i], s);
        }
    }
}

// One block per 128x128 tile (grid.x = column tiles, grid.y = row tiles).
// Thread (tid) owns column tid % 128 and rows tid / 128, +2, +4, ...
enum { RQ_THREADS = 256 };

template <typename T>
__global__ void k_fp8_requant(const T *w, int N, int K, uint8_t *q, float *scale, int scale_ld,
                              int *bad) {
    __shared__ float s_red[RQ_THREADS / 32];
    __shared__ float s_scale;
    const int kb = blockIdx.x, nb = blockIdx.y;
    const int c0 = kb * 128, r0 = nb * 128;
    const int c1 = min(c0 + 128, K), r1 = min(r0 + 128, N);
    const int col = c0 + (threadIdx.x % 128);
    const int rstep = RQ_THREADS / 128;
    float amax = 0.0f;
    int nonfinite = 0;
    if (col < c1) {
        for (int r = r0 + threadIdx.x / 128; r < r1; r += rstep) {
            const float v = qn_ld(w + (int64_t)r * K + col);
            if (!isfinite(v)) nonfinite++;
            amax = fmaxf(amax, fabsf(v));
        }
    }
    if (nonfinite && bad) atomicAdd(bad, nonfinite);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
        amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, off));
    if ((threadIdx.x & 31) == 0) s_red[threadIdx.x >> 5] = amax;
    __syncthreads();
    if (threadIdx.x == 0) {
        float m = s_red[0];
        for (int i = 1; i < RQ_THREADS / 32; i++)
            m = fmaxf(m, s_red[i]);
        const float s = qn_fp8_block_scale(m);
        s_scale = s;
        scale[(int64_t)nb * scale_ld + kb] = s;
    }
    __syncthreads();
    const float s = s_scale;
    if (col < c1) {
        for (int r = r0 + threadIdx.x / 128; r < r1; r += rstep) {
            const int64_t i = (int64_t)r * K + col;
            q[i] = qn_fp8_quant_value(qn_ld(w + i), s);
        }
    }
}

// y[t, n] = sum_k (dec(xq[t,k]) * xs(t, kb)) * (dec(wq[n,k]) * ws[nb, kb]):
// one thread per output, fp32, plain loop (reference only).
template <typename OutT>
__global__ void k_fp8_gemm_ref(OutT *y, const uint8_t *xq, const float *xs, int64_t xs_ld,
                               const uint8_t *wq, const float *wscale, int scale_ld, int Tn, int N,
                               int K) {
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    const int t = blockIdx.y * blockDim.y + threadIdx.y;
    if (n >= N || t >= Tn) return;
    const uint8_t *xr = xq + (int64_t)t * K;
    const uint8_t *wr = wq + (int64_t)n * K;
    const float *wsr = wscale + (int64_t)(n / 128) * scale_ld;
    float acc = 0.0f;
    for (int k = 0; k < K; k++) {
        const int kb = k / 128;
        const float a = qn_fp8_decode_e4m3(xr[k]) * xs[qn_fp8_act_scale_at(t, kb, xs_ld)];
        const float b = qn_fp8_decode_e4m3(wr[k]) * wsr[kb];
        acc = fmaf(a, b, acc);
    }
    qn_st(y + (int64_t)t * N + n, acc);
}

// ======================================================== FP8 entry points

extern "C" qn_status qn_cuda_fp8_quantize_act(qn_cuda_ctx *c, qn_dtype dt, uint8_t *xq, float *xs,
                                              const void *x, int T, int K) {
    const char *op = "fp8_quantize_act";
    QN_CHECK(qn_gemm_check_fp8_act(dt, xq, xs, x, T, K));
    QN_REQUIRE_CTX(op, c);
    if (T == 0 || K == 0) return QN_OK;
    const size_t groups = (size_t)T * (size_t)((K + 127) / 128);
    const int64_t xs_ld = qn_cuda_fp8_act_scale_ld(T, K);
    const unsigned blocks = qn_cuda_blocks(groups, QA_WARPS);
    if (dt == QN_DTYPE_BF16)
        k_fp8_quant_act<__nv_bfloat16><<<blocks, QA_THREADS, 0, qn_cuda_stream(c)>>>(
            (const __nv_bfloat16 *)x, T, K, xq, xs, xs_ld);
    else
        k_fp8_quant_act<float>
            <<<blocks, QA_THREADS, 0, qn_cuda_stream(c)>>>((const float *)x, T, K, xq, xs, xs_ld);
    QN_CUDA_LAUNCH_CHECK(op);
    return QN_OK;
}

extern "C" qn_status qn_cuda_fp8_requantize_weight(qn_cuda_ctx *c, qn_dtype dt, uint8_t *q,
                                                   float *scale, int scale_ld, const void *w, int N,
                                                   int K, int *bad_count) {
    const char *op = "fp8_requantize_weight";
    QN_CHECK(qn_gemm_check_fp8_requant(dt, q, scale, scale_ld, w, N, K));
    QN_REQUIRE_CTX(op, c);
    const int64_t nb = qn_cuda_fp8_blocks(N), kb = qn_cuda_fp8_blocks(K);
    if (nb > 65535)
        return qn_fail(QN_ERR_UNSUPPORTED, "%s: %lld row tiles exceed the grid limit 65535", op,
                       (long long)nb);
    dim3 grid((unsigned)kb, (unsigned)nb);
    if (dt == QN_DTYPE_BF16)
        k_fp8_requant<__nv_bfloat16><<<grid, RQ_THREADS, 0, qn_cuda_stream(c)>>>(
            (const __nv_bfloat16 *)w, N, K, q, scale, scale_ld, bad_count);
    else
        k_fp8_requant<float><<<grid, RQ_THREADS, 0, qn_cuda_stream(c)>>>(
            (const float *)w, N, K, q, scale, scale_ld, bad_count);
    QN_CUDA_LAUNCH_CHECK(op);
    return QN_OK;
}

extern "C" qn_status qn_cuda_fp8_gemm(qn_cuda_ctx *c, qn_dtype out_dt, void *y, const uint8_t *xq,
                                      const float *xs, const qn_cuda_fp8_weight *w, int T) {
    const char *op = "fp8_gemm";
    QN_CHECK(qn_gemm_check_fp8_gemm(op, out_dt, y, xq, xs, w, T, 1));
    QN_REQUIRE_CTX(op, c);
    if (T == 0) return QN_OK;
    // Column-major "TN": D[N, T] = op(A)[N, K] op(B)[K, T] with A = W stored
    // K x N (ld K, transposed) and B = xq stored K x T (ld K, not transposed):
    // both operands K-contiguous, as Hopper FP8 requires. D is y [T, N]
    // row-major = N x T column-major (ld N).
    plan_key k;
    memset(&k, 0, sizeof k);
    k.kind = PLAN_FP8_BLOCK;
    k.trans_a = 1;
    k.trans_b = 0;
    k.m = w->N;
    k.n = T;
    k.k = w->K;
    k.lda = w->K;
    k.ldb = w->K;
    k.ldc = w->N;
    k.atype = CUDA_R_8F_E4M3;
    k.btype = CUDA_R_8F_E4M3;
    k.ctype = cuda_type(out_dt);
    k.compute = CUBLAS_COMPUTE_32F;
    return lt_matmul(op, c, &k, 1.0f, w->q, xq, 0.0f, y, w->scale, xs);
}

extern "C" qn_status qn_cuda_fp8_gemm_ref(qn_cuda_ctx *c, qn_dtype out_dt, void *y,
                                          const uint8_t *xq, const float *xs,
                                          const qn_cuda_fp8_weight *w, int T) {
    const char *op = "fp8_gemm_ref";
    QN_CHECK(qn_gemm_check_fp8_gemm(op, out_dt, y, xq, xs, w, T, 0));
    QN_REQUIRE_CTX(op, c);
    if (T == 0) return QN_OK;
    const int64_t gy = ((int64_t)T + 7) / 8;
    if (gy > 65535)
        return qn_fail(QN_ERR_UNSUPPORTED, "%s: T = %d exceeds the reference kernel's grid", op, T);
    const int64_t xs_ld = qn_cuda_fp8_act_scale_ld(T, w->K);
    dim3 block(32, 8);
    dim3 grid((unsigned)((w->N + 31) / 32), (unsigned)gy);
    if (out_dt == QN_DTYPE_BF16)
        k_fp8_gemm_ref<__nv_bfloat16><<<grid, block, 0, qn_cuda_stream(c)>>>(
            (__nv_bfloat16 *)y, xq, xs, xs_ld, w->q, w->scale, w->scale_ld, T, w->N, w->K);
    else
        k_fp8_gemm_ref<float><<<grid, block, 0, qn_cuda_stream(c)>>>(
            (float *)y, xq, xs, xs_ld, w->q, w->scale, w->scale_ld, T, w->N, w->K);
    QN_CUDA_LAUNCH_CHECK(op);
    return QN_OK;
}

extern "C" qn_status qn_cuda_fp8_matmul_forward(qn_cuda_ctx *c, qn_dtype dt, void *y, const void *x,
                                                const qn_cuda_fp8_weight *w, int T) {
    const char *op = "fp8_matmul_forward";
    QN_CHECK(qn_gemm_check_fp8_matmul(dt, y, x, w, T));
    QN_REQUIRE_CTX(op, c);
    if (T == 0) return QN_OK;
    const size_t mark = qn_cuda_mark(c);
    const size_t q_bytes = (size_t)T * (size_t)w->K;
    const size_t s_bytes = qn_cuda_fp8_act_scale_floats(T, w->K) * sizeof(float);
    uint8_t *xq = (uint8_t *)qn_cuda_alloc(c, q_bytes);
    float *xs = xq ? (float *)qn_cuda_alloc(c, s_bytes) : NULL;
    if (!xq || !xs) {
        qn_cuda_reset(c, mark);
        return qn_fail(QN_ERR_NOMEM,
                       "%s: arena has no room for %zu + %zu bytes of activation scratch (T = %d, "
                       "K = %d; %zu of %zu bytes in use)",
                       op, q_bytes, s_bytes, T, w->K, qn_cuda_arena_used(c), qn_cuda_arena_cap(c));
    }
    qn_status s = qn_cuda_fp8_quantize_act(c, dt, xq, xs, x, T, w->K);
    if (s == QN_OK) s = qn_cuda_fp8_gemm(c, dt, y, xq, xs, w, T);
    qn_cuda_reset(c, mark); // later work is ordered after the queued kernels
    return s;
}
