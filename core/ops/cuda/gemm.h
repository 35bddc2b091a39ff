/* gemm.h — GEMMs on the GPU through cuBLASLt: f32 and bf16 matrix products
 * with the row-major conventions of qn_sgemm, the linear-layer twins of
 * qn_matmul_forward / qn_matmul_backward, and the FP8 block-scaled GEMM of
 * the rollout path (e4m3 weights with 128x128 tile scales, activations with
 * 1x128 per-token-group scales) with its quantisers.
 *
 * Conventions (all functions):
 *   - row-major like core/ops/cpu/ops.h; weights in the Hugging Face [out, in]
 *     layout; letters as there (N rows, IC/OC in/out features; for FP8, T
 *     tokens, N out features, K in features);
 *   - asynchronous on the context's stream; errors in arguments are refused on
 *     the host, before anything touches the device (QN_ERR_INVALID for shapes
 *     and NULL pointers, QN_ERR_UNSUPPORTED for dtypes and for shapes cuBLASLt
 *     cannot take); in builds without CUDA the same checks run and then
 *     QN_ERR_NO_DEVICE is returned (gemm_stub.c);
 *   - nothing is allocated on the device: qn_cuda_fp8_matmul_forward takes
 *     its scratch from the context's arena (mark/reset inside the call);
 *     everything else needs no scratch. cuBLASLt uses the context's workspace.
 *
 * cuBLASLt plans. Creating matmul descriptors and asking cuBLASLt's heuristic
 * for an algorithm costs host time and host allocations, so gemm.cu keeps a
 * small process-wide table (QN_CUDA_GEMM_PLAN_CAP entries, least recently
 * used evicted) keyed by everything the choice depends on: device ordinal,
 * workspace size, transposes, M N K, leading dimensions, dtypes, compute
 * mode, scale modes, and the alignment (1..16 bytes) of each pointer. After
 * the first call with a given key, a call only sets the FP8 scale pointers on
 * the cached descriptor and enqueues cublasLtMatmul: no allocation on the
 * step path. The table is guarded by a mutex held while enqueueing (calls
 * from several threads serialise there, which is fine with one stream per
 * GPU). qn_cuda_gemm_plan_stats reports hits and misses.
 *
 * Numerics. F32 GEMMs compute in fp32 (CUBLAS_COMPUTE_32F: no TF32 unless
 * qn_cuda_gemm_desc.allow_tf32), so they match qn_sgemm within fp32
 * summation-order rounding. BF16 GEMMs read bf16 A and B and accumulate in
 * fp32; C is bf16 (activations) or f32 (gradient accumulation). FP8: see
 * below.
 *
 * Leaves out: batched and grouped GEMMs (MoE experts use tiled_gemm.cuh),
 * epilogue fusions (bias, activation), FP8 for training, f16 storage.
 */
#ifndef QN_CORE_OPS_CUDA_GEMM_H
#define QN_CORE_OPS_CUDA_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/ops/cuda/cuda_ctx.h"
#include "quench/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Entries in the plan table (see above). */
#define QN_CUDA_GEMM_PLAN_CAP 128

/* ------------------------------------------------------------ plain GEMM */

/* Everything about a GEMM except the pointers and alpha/beta:
 * C[M, N] = alpha op(A)[M, K] op(B)[K, N] + beta C, row-major, op(X) = X or
 * X^T (trans_* non-zero) exactly as qn_sgemm / cblas_sgemm with
 * CblasRowMajor: A is stored [M, K] (lda >= K) or, transposed, [K, M]
 * (lda >= M); B is [K, N] (ldb >= N) or [N, K] (ldb >= K); ldc >= N.
 * ab_dtype: F32 or BF16 (A and B). c_dtype: F32 (with either), or BF16 (with
 * BF16 A and B). allow_tf32: F32 only, lets cuBLASLt round A and B to TF32
 * (faster, ~1e-3 relative error); 0 by default. */
typedef struct qn_cuda_gemm_desc {
    int trans_a, trans_b;
    int M, N, K;
    int lda, ldb, ldc;
    qn_dtype ab_dtype;
    qn_dtype c_dtype;
    int allow_tf32;
} qn_cuda_gemm_desc;

/* Checks a descriptor on the host: dims >= 0, leading dimensions at least the
 * stored row lengths (and >= 1), dtype combination. QN_ERR_INVALID or
 * QN_ERR_UNSUPPORTED with a message naming `op` and the bad field. */
qn_status qn_cuda_gemm_check(const char *op, const qn_cuda_gemm_desc *d);

/* cuBLASLt is column-major; a row-major C = op(A) op(B) is computed as the
 * column-major C^T = op(B)^T op(A)^T. This is that mapping, computed on the
 * host (and unit-tested): the column-major problem is
 *   D[m, n] = op_a'(A')[m, k] op_b'(B')[k, n]  with A' = B, B' = A,
 * m = N, n = M, k = K, trans_a' = trans_b, trans_b' = trans_a, and the
 * stored column-major shapes (rows x cols, leading dim) of A', B' and C. */
typedef struct qn_cuda_gemm_colmajor {
    int trans_a, trans_b; /* of A' (= row-major B) and B' (= row-major A) */
    int64_t m, n, k;
    int64_t a_rows, a_cols, lda; /* A' as stored, column-major */
    int64_t b_rows, b_cols, ldb; /* B' as stored */
    int64_t c_rows, c_cols, ldc; /* C^T: N x M, ld ldc */
} qn_cuda_gemm_colmajor;
void qn_cuda_gemm_to_colmajor(const qn_cuda_gemm_desc *d, qn_cuda_gemm_colmajor *out);

/* C = alpha op(A) op(B) + beta C per the descriptor. beta == 0 never reads C
 * (it may hold NaN). K == 0 gives C = beta C (zeros for beta == 0); M or N
 * == 0 does nothing. A and B must not alias C. QN_ERR_UNSUPPORTED when
 * cuBLASLt has no algorithm for the combination (the message gives it). */
qn_status qn_cuda_gemm_ex(qn_cuda_ctx *c, const qn_cuda_gemm_desc *d, float alpha, const void *A,
                          const void *B, float beta, void *C);

/* qn_sgemm's argument list with one storage dtype dt (F32 or BF16) for A, B
 * and C: the drop-in twin. */
qn_status qn_cuda_gemm(qn_cuda_ctx *c, qn_dtype dt, int trans_a, int trans_b, int M, int N, int K,
                       float alpha, const void *A, int lda, const void *B, int ldb, float beta,
                       void *C, int ldc);

/* Plan-table counters since the process started (or since the last clear):
 * lookups that found a plan, plans created, plans evicted. */
typedef struct qn_cuda_gemm_plan_stats {
    uint64_t hits, misses, evictions;
    int entries;
} qn_cuda_gemm_plan_stats;
void qn_cuda_gemm_plan_stats_get(qn_cuda_gemm_plan_stats *out);
/* Destroys every cached plan (e.g. before the process drops its last
 * context). Must not run concurrently with GEMM calls. */
void qn_cuda_gemm_plan_clear(void);

/* --------------------------------------------------------- linear layers */

/* out[N, OC] = inp[N, IC] w[OC, IC]^T (+ bias[OC]), all in storage dtype dt
 * (F32 or BF16). bias may be NULL. out must not alias inp. The bias is
 * broadcast into out first, then the GEMM adds the product with beta = 1
 * (a bf16 bias is exact in bf16 out, so the result is rounded once). IC == 0
 * writes bias (or zeros). */
qn_status qn_cuda_matmul_forward(qn_cuda_ctx *c, qn_dtype dt, void *out, const void *inp,
                                 const void *w, const void *bias, int N, int IC, int OC);

/* The backward of the above, with ops.h's BACKWARD RULE:
 *   dinp[N, IC]  = dout w        (+= when accumulate != 0), storage dtype dt
 *   dw[OC, IC]  += dout^T inp    always fp32 (gradient accumulation buffers)
 *   dbias[OC]   += column sums of dout, fp32
 * dout, inp, w in dt. Any of dinp, dw, dbias may be NULL to skip it. The
 * column sum is a plain deterministic kernel (one thread per column). */
qn_status qn_cuda_matmul_backward(qn_cuda_ctx *c, qn_dtype dt, void *dinp, float *dw, float *dbias,
                                  const void *dout, const void *inp, const void *w, int N, int IC,
                                  int OC, int accumulate);

/* ------------------------------------------------------------- FP8 GEMM */

/* FP8 e4m3 block-scaled linear layer for rollout on Hopper:
 *   y[T, N] = x[T, K] W[N, K]^T
 * W is quantised per 128x128 tile (core/quant/fp8.h, DESIGN.md): q [N, K]
 * e4m3 bytes, scale[nb, kb] = s of tile (nb, kb), the dequantisation
 * multiplier (checkpoint name weight_scale_inv). x is quantised per token and
 * per 128-column group: xq [T, K] e4m3, xs = s of group (t, kb) with
 * s = max(amax, 1e-12) / 448, q = e4m3(clamp(x / s, +-448)), like the weights.
 *
 * Scale layouts (what cuBLASLt's CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F
 * and ..._VEC128_32F read; derivation in docs/cuda.md "GEMMs and FP8"):
 *   weight: row-major [ceil(N/128), scale_ld] floats, element (nb, kb) at
 *           nb * scale_ld + kb, with scale_ld = round_up(ceil(K/128), 4) for
 *           cuBLASLt (16-byte aligned rows); the checkpoint's unpadded
 *           [ceil(N/128), ceil(K/128)] is the same when ceil(K/128) % 4 == 0
 *           (every GLM-4.5 shape);
 *   activations: "outer-dim-major" [ceil(K/128), T]: group (t, kb) at
 *           kb * act_ld + t with act_ld = T.
 * The helpers below compute these; if a GPU run shows cuBLASLt wants other
 * strides, they are the one place to change. */

#define QN_CUDA_FP8_BLOCK 128

typedef struct qn_cuda_fp8_weight {
    const uint8_t *q;   /* [N, K] e4m3, row-major, ld K (device) */
    const float *scale; /* [ceil(N/128), scale_ld] (device) */
    int N, K;
    int scale_ld; /* >= ceil(K/128) */
} qn_cuda_fp8_weight;

/* ceil(n / 128). */
int64_t qn_cuda_fp8_blocks(int64_t n);
/* The weight-scale row stride cuBLASLt needs: round_up(ceil(K/128), 4). */
int64_t qn_cuda_fp8_weight_scale_ld(int64_t K);
/* Index of tile (nb, kb)'s scale in a weight-scale array with row stride ld. */
int64_t qn_cuda_fp8_weight_scale_index(int64_t nb, int64_t kb, int64_t ld);
/* The activation-scale stride cuBLASLt needs for T tokens of K columns: T. */
int64_t qn_cuda_fp8_act_scale_ld(int64_t T, int64_t K);
/* Index of group (t, kb)'s scale with stride act_ld (qn_fp8_act_scale_at of
 * fp8_codec.h, which the kernels use too). */
int64_t qn_cuda_fp8_act_scale_index(int64_t t, int64_t kb, int64_t act_ld);
/* Floats of an activation-scale array for T tokens and K columns. */
size_t qn_cuda_fp8_act_scale_floats(int64_t T, int64_t K);

/* Host checks of the FP8 entry points (shared by the CUDA and stub builds):
 * weight descriptor sane (N, K >= 1, scale_ld >= ceil(K/128), pointers set);
 * for the cuBLASLt path also K % 128 == 0, N % 16 == 0 and scale_ld ==
 * qn_cuda_fp8_weight_scale_ld(K) (QN_ERR_UNSUPPORTED otherwise: use the
 * reference kernel); output dtype F32 or BF16. */
qn_status qn_cuda_fp8_check_weight(const char *op, const qn_cuda_fp8_weight *w, int for_cublas);

/* Quantises activations x [T, K] (storage dtype dt: F32 or BF16) per token
 * and 128-column group (a partial last group when K % 128 != 0): xq [T, K]
 * e4m3; the scale of group (t, kb) at qn_cuda_fp8_act_scale_index(t, kb,
 * qn_cuda_fp8_act_scale_ld(T, K)). One warp per group, amax by warp
 * reduction, then s and q per element with IEEE division and the integer
 * e4m3 encoder of fp8_codec.h: bit-identical to the host reference
 * qn_fp8_quantize_act_ref (fp8_codec.h). An all-zero group gets
 * s = 1e-12 / 448 (the weights' floor). x must be finite. */
qn_status qn_cuda_fp8_quantize_act(qn_cuda_ctx *c, qn_dtype dt, uint8_t *xq, float *xs,
                                   const void *x, int T, int K);

/* Re-quantises an updated weight w [N, K] (F32 or BF16 storage, on the
 * device) into q [N, K] e4m3 and scale [ceil(N/128), scale_ld] by the
 * convention of core/quant/fp8.c, bit for bit (same amax, same IEEE division
 * s = max(amax, 1e-12) / 448, same clamp and e4m3 encoder); for bf16 storage
 * the CPU quantiser must be fed the bf16 values widened to fp32. One block
 * per 128x128 tile. Padding columns of scale (kb >= ceil(K/128)) are left
 * untouched. bad_count (device int, may be NULL) is incremented for each
 * non-finite element (the CPU quantiser refuses those; here q and scale are
 * unspecified for their tiles). */
qn_status qn_cuda_fp8_requantize_weight(qn_cuda_ctx *c, qn_dtype dt, uint8_t *q, float *scale,
                                        int scale_ld, const void *w, int N, int K, int *bad_count);

/* y[T, N] (out_dt F32 or BF16) = dequant(xq, xs) dequant(W)^T through
 * cuBLASLt's block-scaled FP8 path (Hopper, sm_90; CUDA >= 12.9): A = W in
 * "TN" form, scale modes BLK128x128_32F (A) and VEC128_32F (B), fp32
 * compute, no fast accumulation. xs stride must be qn_cuda_fp8_act_scale_ld(T, K).
 * QN_ERR_UNSUPPORTED for shapes outside qn_cuda_fp8_check_weight's cuBLASLt
 * rules or when cuBLASLt has no algorithm (e.g. not a Hopper GPU). */
qn_status qn_cuda_fp8_gemm(qn_cuda_ctx *c, qn_dtype out_dt, void *y, const uint8_t *xq,
                           const float *xs, const qn_cuda_fp8_weight *w, int T);

/* The same product by a plain CUDA kernel (one thread per output, fp32
 * dequantise-and-multiply over K, any shape and scale_ld, xs stride T):
 * slow, for checking cuBLASLt's answer on the GPU. */
qn_status qn_cuda_fp8_gemm_ref(qn_cuda_ctx *c, qn_dtype out_dt, void *y, const uint8_t *xq,
                               const float *xs, const qn_cuda_fp8_weight *w, int T);

/* The rollout linear layer: quantises x [T, K] (dt) into arena scratch
 * (T*K bytes + qn_cuda_fp8_act_scale_floats floats, released before return)
 * and runs qn_cuda_fp8_gemm into y [T, N] (dt). QN_ERR_NOMEM when the arena
 * has no room. */
qn_status qn_cuda_fp8_matmul_forward(qn_cuda_ctx *c, qn_dtype dt, void *y, const void *x,
                                     const qn_cuda_fp8_weight *w, int T);

#ifdef __cplusplus
}
#endif
#endif /* QN_CORE_OPS_CUDA_GEMM_H */
