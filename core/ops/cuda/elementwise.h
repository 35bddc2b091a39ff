/* elementwise.h — the CUDA twins of the row-wise and elementwise CPU ops
 * (core/ops/cpu/ops.h): embedding, RMSNorm (also per-head QK-norm), partial
 * RoPE, SwiGLU, forward and backward; the AdamW step with its gradient
 * sum of squares; f32 <-> bf16 conversion of whole tensors.
 *
 * Common rules (see also cuda_ctx.h):
 *   - Every function runs asynchronously on the context's stream and returns
 *     after queueing its kernels; a bad launch is QN_ERR_CUDA naming the op,
 *     a fault inside a kernel surfaces at the next qn_cuda_sync.
 *   - `dt` is the storage dtype of the activations and of the weights read
 *     (QN_DTYPE_F32 or QN_DTYPE_BF16; others: QN_ERR_UNSUPPORTED). Arithmetic
 *     is fp32. PARAMETER GRADIENTS (dwte, dw) AND SAVED STATISTICS (rstd) ARE
 *     ALWAYS fp32, whatever dt: they feed fp32 master weights, and summing
 *     many small bf16 increments would lose them.
 *   - Shapes, argument order and the backward rule (+= into parameter
 *     gradients, = into activation gradients unless `accumulate`) are those
 *     of the CPU ops; the few extra arguments (V, P) let the kernels refuse
 *     out-of-range indices instead of reading outside a buffer.
 *   - All pointers are device pointers (from the ctx arena or the caller).
 *     Shapes are checked on the host before any launch (QN_ERR_INVALID);
 *     zero-sized work is a no-op.
 *   - Scratch: only qn_cuda_rmsnorm_backward (with dw) and qn_cuda_sumsq use
 *     any; they take it from the ctx arena and release it (mark/reset) before
 *     returning; QN_ERR_NOMEM when the arena is full. Nothing else allocates.
 *   - Results are deterministic: no floating-point atomics anywhere; every
 *     reduction has a fixed order that depends on the shape only.
 *
 * Leaves out: fused kernels (residual add + norm, norm + quantise), vectorised
 * 128-bit loads (see docs/cuda.md for the speed-ups to do later), fp8 storage.
 */
#ifndef QN_CORE_OPS_CUDA_ELEMENTWISE_H
#define QN_CORE_OPS_CUDA_ELEMENTWISE_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/ops/cuda/cuda_ctx.h"
#include "quench/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- embedding ---- */

/* out[t, :] = wte[tokens[t], :], both in dt. A token outside [0, V) gives a
 * row of NaN (visible in the next check) instead of an out-of-bounds read. */
qn_status qn_cuda_embedding_forward(qn_cuda_ctx *c, qn_dtype dt, void *out /* T, C */,
                                    const int32_t *tokens /* T */, const void *wte /* V, C */,
                                    int T, int C, int V);
/* dwte[tokens[t], :] += dout[t, :]; dwte is fp32, dout in dt. Deterministic
 * and, in fp32, bit-identical to the CPU op: each thread owns one column of
 * one slice of the vocabulary (token % 16) and adds its tokens in increasing
 * t, as the CPU loop does. Tokens outside [0, V) are skipped. */
qn_status qn_cuda_embedding_backward(qn_cuda_ctx *c, qn_dtype dt, float *dwte /* V, C */,
                                     const void *dout /* T, C */, const int32_t *tokens /* T */,
                                     int T, int C, int V);

/* ---- RMSNorm (QK-norm: N = T*NH rows of D = HD) ---- */

/* out = inp * rstd * w, rstd[n] = 1/sqrt(mean(inp[n,:]^2) + eps) saved in
 * fp32 (sum of squares in fp32 here, double on the CPU). out may alias inp. */
qn_status qn_cuda_rmsnorm_forward(qn_cuda_ctx *c, qn_dtype dt, void *out /* N, D */,
                                  float *rstd /* N */, const void *inp /* N, D */,
                                  const void *w /* D */, float eps, int N, int D);
/* dinp (=, or += with accumulate; may be NULL) and dw += (fp32, may be
 * NULL). dinp may alias dout: dw is reduced first. dw uses arena scratch of
 * ceil(N / rows_per_chunk) * D floats (at most 1024 * D). */
qn_status qn_cuda_rmsnorm_backward(qn_cuda_ctx *c, qn_dtype dt, void *dinp /* N, D */,
                                   float *dw /* D */, const void *dout /* N, D */,
                                   const void *inp /* N, D */, const void *w /* D */,
                                   const float *rstd /* N */, int N, int D, int accumulate);

/* ---- RoPE (rotate-half over the first R of every HD; tables of qn_rope_table) ---- */

/* In place on x[T, NH*HD] (dt). cos_t/sin_t are the fp32 tables [P, R/2]
 * from qn_rope_table, uploaded once. R even, 0 <= R <= HD. A position
 * outside [0, P) turns that head's rotated dims into NaN. */
qn_status qn_cuda_rope_forward(qn_cuda_ctx *c, qn_dtype dt, void *x /* T, NH*HD */,
                               const int32_t *pos /* T */, const float *cos_t /* P, R/2 */,
                               const float *sin_t /* P, R/2 */, int P, int T, int NH, int HD,
                               int R);
/* The transpose rotation, in place on dx. */
qn_status qn_cuda_rope_backward(qn_cuda_ctx *c, qn_dtype dt, void *dx /* T, NH*HD */,
                                const int32_t *pos /* T */, const float *cos_t /* P, R/2 */,
                                const float *sin_t /* P, R/2 */, int P, int T, int NH, int HD,
                                int R);

/* ---- SwiGLU ---- */

/* out[n, i] = silu(gate[n, i]) * up[n, i]; gate/up rows ld apart (ld >= F). */
qn_status qn_cuda_swiglu_forward(qn_cuda_ctx *c, qn_dtype dt, void *out /* N, F */,
                                 const void *gate /* N, ld */, const void *up /* N, ld */, int N,
                                 int F, int ld);
/* dgate, dup written (=), row stride ld. dgate may alias dout when ld == F. */
qn_status qn_cuda_swiglu_backward(qn_cuda_ctx *c, qn_dtype dt, void *dgate /* N, ld */,
                                  void *dup /* N, ld */, const void *dout /* N, F */,
                                  const void *gate /* N, ld */, const void *up /* N, ld */, int N,
                                  int F, int ld);

/* ---- AdamW (trainer/optimizer.h semantics) ---- */

typedef struct qn_cuda_adamw_args {
    double lr;           /* this step's learning rate: qn_lr_at(cfg, steps before it) */
    double weight_decay; /* cfg.weight_decay for tensors with ndim >= 2, else 0 */
    double beta1, beta2, eps;
    int64_t step;      /* t AFTER the increment (1 on the first step): bias correction */
    double grad_scale; /* clipping multiplier (1 = none): min(1, clip/(norm + 1e-6)) */
} qn_cuda_adamw_args;

/* One AdamW step over n fp32 master weights with fp32 moments, exactly the
 * per-element arithmetic of qn_adamw_step (in double, no fused multiply-add,
 * so fp32 results match the CPU bit for bit on the same inputs):
 *   g = (float)(grad * grad_scale); m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2
 *   p -= lr*wd*p;  p -= lr * (m / (1-b1^t)) / (sqrt(v)/sqrt(1-b2^t) + eps)
 * grad is grad_dt (f32 or bf16) and is not modified (the CPU op leaves the
 * clipped gradient in grad; here the caller keeps the unscaled one). When
 * params_bf16 is not NULL it receives the updated weights rounded to bf16
 * (the model's bf16 copy). Call once per tensor (or per run of tensors with
 * the same weight decay); the caller computes grad_scale from qn_cuda_sumsq. */
qn_status qn_cuda_adamw_step(qn_cuda_ctx *c, qn_dtype grad_dt, float *params /* n */,
                             const void *grad /* n */, float *m /* n */, float *v /* n */,
                             void *params_bf16 /* n or NULL */, int64_t n,
                             const qn_cuda_adamw_args *a);
/* *out_dev (a device double) = sum of x[i]^2 in double, in a fixed order
 * (deterministic): ||grad||^2 for clipping. Uses 8 KiB of arena scratch. */
qn_status qn_cuda_sumsq(qn_cuda_ctx *c, qn_dtype dt, const void *x /* n */, int64_t n,
                        double *out_dev);

/* ---- conversions ---- */

/* dst = src converted (f32 -> bf16 rounds to nearest even like
 * qn_f32_to_bf16; bf16 -> f32 is exact; same dtype copies). */
qn_status qn_cuda_convert(qn_cuda_ctx *c, qn_dtype dst_dt, void *dst, qn_dtype src_dt,
                          const void *src, int64_t n);

#ifdef __cplusplus
}
#endif
#endif /* QN_CORE_OPS_CUDA_ELEMENTWISE_H */
