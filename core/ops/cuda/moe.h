/* moe.h — CUDA twins of the MoE router and routed experts
 * (qn_router_forward/backward, qn_moe_forward/backward in core/ops/cpu/ops.h,
 * semantics in core/ops/cpu/moe.c): sigmoid or softmax scores in fp32,
 * e_score_correction_bias for the selection only, group-limited top-k
 * (group score = sum of the two best biased scores, other groups' choices set
 * to 0.0), weights gathered from the unbiased scores, optional renorm
 * (+1e-20) and routed_scaling_factor; tokens permuted by expert, each expert
 * a SwiGLU MLP, weighted combine.
 *
 * Top-k tie rule (the CPU's, kept exactly): among equal choice values the
 * LOWER expert index is taken first; likewise for groups (lower group index)
 * and for a group's two best values (the first occurrence is "best"). The
 * GPU finds each maximum with a block reduction whose combine step prefers
 * the larger value and, on equal values, the lower index, which is the CPU's
 * ascending scan with strict '>'. NaN scores are not matched (the CPU's scan
 * keeps a NaN it starts on; the GPU's reduction does not promise that).
 *
 * Permutation: slots (t, k) are sorted by expert with a stable counting sort
 * (within an expert, slots keep (t, k) order), exactly the CPU's offsets /
 * slot_tok / tok_slot. Slots whose idx is outside [0, E) are left out
 * (tok_slot = -1, they contribute nothing) where the CPU would write out of
 * bounds.
 *
 * Experts run as row-grouped GEMMs that read the per-expert row offsets on
 * the device (tiled_gemm.cuh), so a MoE layer needs no host sync; combine and
 * its backward sum the K slots of a token in k order (deterministic, no
 * atomics).
 *
 * Dtypes: x, the router weight, expert weights, activations (acts) and
 * activation gradients (dx) are stored in dt (f32 or bf16), computed in fp32.
 * Router scores, routing weights, dweight and every WEIGHT gradient (dw,
 * dw_gate, dw_up, dw_down: +=) are fp32. HF computes router logits in fp32:
 * call the router with dt = QN_DTYPE_F32 (x and w converted) to match it.
 * cfg->bias, when set, is a DEVICE pointer (fp32 [E]) here.
 *
 * Scratch comes from the context's arena inside each call (mark/reset):
 * qn_cuda_router_scratch_bytes, qn_cuda_moe_fwd_scratch_bytes,
 * qn_cuda_moe_bwd_scratch_bytes. The saved activations (qn_cuda_moe_acts)
 * are the caller's (qn_cuda_moe_acts_bytes + qn_cuda_moe_acts_carve).
 * Every call is asynchronous on the context's stream. The size, layout and
 * check functions are host C, available in every build. */
#ifndef QN_CORE_OPS_CUDA_MOE_H
#define QN_CORE_OPS_CUDA_MOE_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/ops/cpu/ops.h"
#include "core/ops/cuda/cuda_ctx.h"
#include "quench/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ router */

/* Checks cfg (E in [1, QN_ROUTER_MAX_E], K in [1, min(E, QN_ROUTER_MAX_K)],
 * n_group <= 1 or (n_group divides E, E / n_group >= 2, topk_group in
 * [1, n_group]), score sigmoid or softmax, finite scaling factor) and T >= 0;
 * QN_ERR_INVALID naming the field. Touches no device. */
qn_status qn_cuda_router_check(const qn_router_cfg *cfg, int T);

/* Arena bytes the router backward takes (d logits in dt). */
size_t qn_cuda_router_scratch_bytes(qn_dtype dt, int T, int E);

/* Selection alone, from logits: scores[T, E] holds fp32 logits on entry and
 * the scores (sigmoid / softmax) on return; idx, weight as the forward's.
 * What qn_cuda_router_forward does after its GEMM. */
qn_status qn_cuda_router_select(qn_cuda_ctx *c, const qn_router_cfg *cfg, int32_t *idx /* T, K */,
                                float *weight /* T, K */, float *scores /* T, E */, int T);

/* logits = x w^T (fp32 accumulation), then qn_cuda_router_select. */
qn_status qn_cuda_router_forward(qn_cuda_ctx *c, qn_dtype dt, const qn_router_cfg *cfg,
                                 int32_t *idx /* T, K */, float *weight /* T, K */,
                                 float *scores /* T, E */, const void *x /* T, C */,
                                 const void *w /* E, C */, int T, int C);

/* Gradient through the gathered weights only: dx (=, or += with accumulate;
 * dt) and dw += (fp32); either may be NULL to skip. */
qn_status qn_cuda_router_backward(qn_cuda_ctx *c, qn_dtype dt, const qn_router_cfg *cfg,
                                  void *dx /* T, C or NULL */, float *dw /* E, C or NULL */,
                                  const float *dweight /* T, K */, const int32_t *idx /* T, K */,
                                  const float *scores /* T, E */, const void *x /* T, C */,
                                  const void *w /* E, C */, int T, int C, int accumulate);

/* ------------------------------------------------------------------ experts */

/* What the forward keeps for the backward (device pointers, caller-owned);
 * the same fields as qn_moe_acts, the float ones stored in dt. */
typedef struct qn_cuda_moe_acts {
    int32_t *offsets;  /* E+1 */
    int32_t *slot_tok; /* TK */
    int32_t *tok_slot; /* TK: -1 for a slot whose idx was out of range */
    void *xs;          /* TK, C */
    void *gate;        /* TK, F */
    void *up;          /* TK, F */
    void *act;         /* TK, F */
    void *ys;          /* TK, C */
} qn_cuda_moe_acts;

/* Checks dt (QN_ERR_UNSUPPORTED), T >= 0, C, F > 0, E in [1, QN_ROUTER_MAX_E],
 * K in [1, min(E, QN_ROUTER_MAX_K)], and that T*K and every [T*K, C|F] size
 * fit the kernels' index types (QN_ERR_INVALID). Touches no device. */
qn_status qn_cuda_moe_check(qn_dtype dt, int T, int C, int F, int E, int K);

/* Bytes of one block holding a qn_cuda_moe_acts (256-byte aligned fields),
 * and its layout in such a block at base (a device address; nothing is
 * touched). carve fails with QN_ERR_INVALID when bytes is too small. */
size_t qn_cuda_moe_acts_bytes(qn_dtype dt, int T, int K, int C, int F, int E);
qn_status qn_cuda_moe_acts_carve(qn_dtype dt, void *base, size_t bytes, int T, int K, int C, int F,
                                 int E, qn_cuda_moe_acts *out);
/* Arena bytes the forward / backward take from the context inside the call. */
size_t qn_cuda_moe_fwd_scratch_bytes(qn_dtype dt, int T, int K, int C, int F, int E);
size_t qn_cuda_moe_bwd_scratch_bytes(qn_dtype dt, int T, int K, int C, int F, int E);

/* The stable counting sort alone: fills acts->offsets, slot_tok, tok_slot
 * from idx. The forward calls it first. */
qn_status qn_cuda_moe_permute(qn_cuda_ctx *c, qn_cuda_moe_acts *acts, const int32_t *idx /* T, K */,
                              int T, int K, int E);

/* out[t] (=, or += with accumulate) sum_k weight[t,k] expert_{idx[t,k]}(x[t]);
 * expert weights stacked as in qn_moe_forward (w_gate [E, F, C], w_up
 * [E, F, C], w_down [E, C, F]). out must not alias x. */
qn_status qn_cuda_moe_forward(qn_cuda_ctx *c, qn_dtype dt, void *out /* T, C */,
                              qn_cuda_moe_acts *acts, const void *x /* T, C */,
                              const int32_t *idx /* T, K */, const float *weight /* T, K */,
                              const void *w_gate, const void *w_up, const void *w_down, int T,
                              int C, int F, int E, int K, int accumulate);

/* dx (=, or += with accumulate; dt; may be NULL), dweight (=, fp32),
 * dw_gate, dw_up, dw_down += (fp32; any may be NULL to skip). */
qn_status qn_cuda_moe_backward(qn_cuda_ctx *c, qn_dtype dt, void *dx /* T, C or NULL */,
                               float *dweight /* T, K */, float *dw_gate /* E, F, C */,
                               float *dw_up /* E, F, C */, float *dw_down /* E, C, F */,
                               const void *dout /* T, C */, const qn_cuda_moe_acts *acts,
                               const float *weight /* T, K */, const void *w_gate, const void *w_up,
                               const void *w_down, int T, int C, int F, int E, int K,
                               int accumulate);

#ifdef __cplusplus
}
#endif
#endif /* QN_CORE_OPS_CUDA_MOE_H */
