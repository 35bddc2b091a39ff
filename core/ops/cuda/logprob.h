/* logprob.h — CUDA twins of qn_logprob_forward / qn_logprob_backward
 * (core/ops/cpu/ops.h): per-row log-prob of the target token, entropy and
 * log-sum-exp of z = h W^T / temperature, chunked over the vocabulary so that
 * no [N, V] logits matrix ever exists.
 *
 * Plan: rows are taken in blocks of up to QN_CUDA_LOGPROB_ROWS, the
 * vocabulary in chunks of `chunk` columns (any positive number; it need not
 * divide V), exactly the CPU op's chunk semantics. Per (row block, chunk) one
 * GEMM writes a [rows, chunk] fp32 logits block into arena scratch, and a
 * kernel folds it into each row's online log-sum-exp state (running max m,
 * s = sum exp(z - m), a = sum exp(z - m) z, the last two in double, like the
 * CPU). Chunks are folded in vocabulary order, so results do not depend on
 * scheduling. The backward recomputes each chunk's logits, turns them into
 * d logits in place (stored in dt) and runs two GEMMs (dh, dW).
 *
 * Dtypes: h and W are stored in dt (QN_DTYPE_F32 or QN_DTYPE_BF16); the
 * per-row outputs logp, entropy, lse, ez, the inputs dlogp/dentropy and the
 * weight gradient dW are fp32 always (DESIGN: log-probs in fp32; fp32 master
 * weights). dh is stored in dt and accumulated in fp32 across chunks.
 *
 * Scratch: taken from the context's arena inside each call (mark/reset), at
 * most plan.fwd_bytes / plan.bwd_bytes (qn_cuda_logprob_plan_make). Every
 * call is asynchronous on the context's stream. Targets outside [0, V) give
 * logp = NaN (the CPU op leaves them unspecified); nothing is read out of
 * bounds.
 *
 * The plan function is host-only C and works in every build (no device);
 * without CUDA the ops return QN_ERR_NO_DEVICE (logprob_stub.c). */
#ifndef QN_CORE_OPS_CUDA_LOGPROB_H
#define QN_CORE_OPS_CUDA_LOGPROB_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/ops/cuda/cuda_ctx.h"
#include "quench/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Rows per pass (GEMM M); larger N is processed in row blocks. */
#define QN_CUDA_LOGPROB_ROWS 1024
/* Largest chunk the plan accepts (the GEMM grid's column limit). */
#define QN_CUDA_LOGPROB_MAX_CHUNK (1 << 22)

typedef struct qn_cuda_logprob_plan {
    int rows;         /* rows per block: min(N, QN_CUDA_LOGPROB_ROWS) */
    int nblocks;      /* ceil(N / rows); 0 when N == 0 */
    int chunk;        /* columns per chunk: min(chunk, V) */
    int nchunks;      /* ceil(V / chunk) */
    int last_chunk;   /* columns of the last chunk (V - (nchunks-1)*chunk) */
    size_t fwd_bytes; /* arena bytes the forward takes (256-byte aligned blocks) */
    size_t bwd_bytes; /* arena bytes the backward takes */
} qn_cuda_logprob_plan;

/* Checks the shapes (dt f32 or bf16: else QN_ERR_UNSUPPORTED; N >= 0,
 * C > 0, V > 0, 0 < chunk <= QN_CUDA_LOGPROB_MAX_CHUNK, temperature finite
 * and > 0: else QN_ERR_INVALID naming the argument) and fills *out. Touches
 * no device. */
qn_status qn_cuda_logprob_plan_make(qn_dtype dt, int N, int C, int V, float temperature, int chunk,
                                    qn_cuda_logprob_plan *out);

/* Forward: logp[n] = z[target] - logZ, entropy[n] = logZ - sum_v p_v z_v,
 * lse[n] = logZ, ez[n] = sum_v p_v z_v (saved for the backward). entropy
 * may be NULL (not written); logp, lse, ez, h, targets, w are required
 * (device pointers). N == 0 is a no-op. */
qn_status qn_cuda_logprob_forward(qn_cuda_ctx *c, qn_dtype dt, float *logp /* N */,
                                  float *entropy /* N or NULL */, float *lse /* N */,
                                  float *ez /* N */, const void *h /* N, C */,
                                  const int32_t *targets /* N */, const void *w /* V, C */, int N,
                                  int C, int V, float temperature, int chunk);

/* Backward, given dlogp[n] and dentropy[n] (either may be NULL = zeros):
 *   dz_v = dlogp (1[v = target] - p_v) - dentropy p_v (z_v - ez),
 * d logits = dz / temperature; dh (=, or += with accumulate; stored in dt)
 * and dw += (fp32). dh or dw may be NULL to skip that gradient. Needs lse
 * and ez from the forward. */
qn_status qn_cuda_logprob_backward(qn_cuda_ctx *c, qn_dtype dt, void *dh /* N, C or NULL */,
                                   float *dw /* V, C or NULL */, const float *dlogp /* N or NULL */,
                                   const float *dentropy /* N or NULL */, const float *lse /* N */,
                                   const float *ez /* N */, const void *h /* N, C */,
                                   const int32_t *targets /* N */, const void *w /* V, C */, int N,
                                   int C, int V, float temperature, int chunk, int accumulate);

#ifdef __cplusplus
}
#endif
#endif /* QN_CORE_OPS_CUDA_LOGPROB_H */
