// tiled_gemm.cuh — a plain shared-memory tiled GEMM with fp32 accumulation,
// internal to the log-prob and MoE ops (logprob.cu, moe.cu), in three modes:
//
//   QN_TG_PLAIN  C[M, N] = alpha op(A)[M, K] op(B)[K, N] + beta C
//   QN_TG_ROWS   the M rows are split into G groups by offsets[G+1] (a DEVICE
//                array, e.g. MoE slots sorted by expert): rows of group g
//                multiply B + g*stride_b (one weight per expert). A and C rows
//                are global; op(A) must not be transposed.
//   QN_TG_KSPLIT the K dimension is split into G groups by offsets; group g
//                writes C + g*stride_c (per-expert weight gradients:
//                dW_e += dY_e^T X_e over the rows of expert e).
//
// Row-major like qn_sgemm: op(A) = A ([M, K], lda) or A^T (A stored [K, M]);
// op(B) = B ([K, N], ldb) or B^T (B stored [N, K]). A and B share one storage
// dtype (f32 or bf16); C is f32 or bf16; beta == 0 never reads C (it may hold
// NaN garbage). Results are deterministic: every output element is written by
// one thread, with k summed in a fixed order.
//
// Why not cuBLASLt: the grouped modes take their group sizes from the device
// (the router's choice), so a loop of cuBLASLt calls would need a sync and a
// download of offsets per MoE layer; this kernel reads them where they are.
// The plain mode is the fallback for shapes cuBLASLt refuses and the
// reference when QN_CUDA_TILED_GEMM=1 (qn_tg_gemm_auto). Speed-ups for
// later: tensor cores (wmma/mma) and bigger tiles for the grouped modes, or
// cuBLASLt per expert after one offsets download.
#ifndef QN_CORE_OPS_CUDA_TILED_GEMM_CUH
#define QN_CORE_OPS_CUDA_TILED_GEMM_CUH

#include "core/ops/cuda/cuda_common.cuh"

enum qn_tg_mode { QN_TG_PLAIN = 0, QN_TG_ROWS = 1, QN_TG_KSPLIT = 2 };

// Tile sizes, public so callers can size the ROWS mode's tile table.
enum { QN_TG_BM = 64, QN_TG_BN = 64, QN_TG_BK = 16 };

typedef struct qn_tg_args {
    int mode;
    int ta, tb;
    int M, N, K;      // ROWS: M = total rows (offsets[G]); KSPLIT: K unused (from offsets)
    float alpha, beta;
    qn_dtype dt_ab;   // A and B storage
    qn_dtype dt_c;    // C storage
    const void *A;
    size_t lda;
    const void *B;
    size_t ldb;
    void *C;
    size_t ldc;
    int G;                    // groups (ROWS, KSPLIT)
    const int32_t *offsets;   // device, G+1 (ROWS, KSPLIT)
    size_t stride_b;          // ROWS: elements between group weights
    size_t stride_c;          // KSPLIT: elements between group outputs
    int32_t *tiles;           // ROWS: device scratch, qn_tg_tiles_ints(M, G) ints
} qn_tg_args;

// Ints of the ROWS mode's tile table for M total rows in G groups.
static inline size_t qn_tg_tiles_ints(int M, int G) {
    return 2 * ((size_t)(M + QN_TG_BM - 1) / QN_TG_BM + (size_t)G);
}

// Queues the product on the context's stream; `op` names the caller in errors.
// Checks its arguments (QN_ERR_INVALID) and the launch (QN_ERR_CUDA).
qn_status qn_tg_gemm(qn_cuda_ctx *c, const qn_tg_args *a, const char *op);

// The plain mode through cuBLASLt (gemm.h's qn_cuda_gemm_ex) when it takes
// the problem, else qn_tg_gemm: cuBLASLt refusing a shape (QN_ERR_UNSUPPORTED,
// e.g. odd leading dimensions or pointers of bf16 chunks) falls back to the
// tiled kernel. The environment variable QN_CUDA_TILED_GEMM=1 forces the tiled
// kernel everywhere (to tell a cuBLASLt problem from one in these ops when
// debugging on a GPU). Grouped modes always use the tiled kernel.
qn_status qn_tg_gemm_auto(qn_cuda_ctx *c, const qn_tg_args *a, const char *op);

#endif  // QN_CORE_OPS_CUDA_TILED_GEMM_CUH
