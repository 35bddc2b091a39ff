/* ops.h — the CPU reference ops of the decoder family, forward and backward.
 *
 * These functions are the specification that the CUDA ops are checked
 * against, and fast enough to develop on: fp32 throughout, OpenBLAS sgemm for
 * every matrix product, OpenMP over rows/tokens for elementwise work. One .c
 * file per op family (embedding.c, matmul.c, rmsnorm.c, rope.c, attention.c,
 * swiglu.c, moe.c, logprob.c); performance notes are in each file's header.
 *
 * Legend (every argument carries its shape in these letters):
 *   T    packed tokens in the batch (all sequences back to back)
 *   S    number of sequences in the batch; cu_seqlens has S+1 entries,
 *        cu_seqlens[0] = 0, cu_seqlens[S] = T, sequence s is rows
 *        [cu_seqlens[s], cu_seqlens[s+1]); positions restart at 0 in each
 *   C    hidden size              V   vocabulary size
 *   NH   query heads              NKV key/value heads (NKV divides NH)
 *   HD   head dim                 R   rotary dims per head (even, <= HD)
 *   E    routed experts           K   experts per token (top-k)
 *   F    intermediate size (dense MLP or one expert; not `I`, which
 *        <complex.h> defines and cblas.h includes)
 *   N    generic number of rows   D   generic row length
 *   IC/OC  matmul in/out features
 * Matrices are row-major. Weights use the Hugging Face layout [out, in], so a
 * linear layer is y = x W^T. "q[T, NH*HD]" means row t holds the NH heads of
 * token t one after the other (head h at columns h*HD .. h*HD+HD-1).
 *
 * THE BACKWARD RULE: backward functions ADD into parameter gradients (dw += ,
 * db +=; zero them once per optimizer step) and WRITE activation gradients
 * (dx = ), except where an argument named `accumulate` is non-zero, in which
 * case that activation gradient is added to (dx += ) so that a tensor read
 * by several consumers (the residual stream, x feeding q/k/v projections)
 * collects its gradient without a temporary.
 *
 * Nothing here allocates: buffers (including scratch) come from the caller,
 * whose sizes are given by the *_scratch_floats helpers where needed. Ops
 * never fail on valid shapes, so they return void; shapes are the caller's
 * contract. Calls use OpenMP internally (one level; OpenBLAS is kept
 * single-threaded, see qn_sgemm); call them from one thread. Set
 * OMP_NUM_THREADS to the cores you want used. Scratch sizes that depend on
 * the thread count (attention, logprob) use omp_get_max_threads() when
 * asked: ask again if the thread count changes.
 *
 * Results do not depend on how threads are scheduled (no atomics, every
 * output element has one writer), but may change in the last bits with the
 * number of threads (products are split by output slices of different
 * size).
 */
#ifndef QN_OPS_CPU_OPS_H
#define QN_OPS_CPU_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------- gemm */

/* C[M, N] = alpha op(A) op(B) + beta C, row-major, op(X) = X or X^T (trans_*
 * non-zero), the same arguments as cblas_sgemm. Threads over slices of C
 * with OpenMP; OpenBLAS itself is held to one thread (see gemm.c for why:
 * its pthread pool and OpenMP's spin-waits fight over the cores). Inside an
 * OpenMP parallel region it runs on the calling thread. Use this rather
 * than cblas_sgemm directly next to these ops. */
void qn_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);
/* Sets OpenBLAS to one thread (once per process; qn_sgemm calls it). Call it
 * before calling cblas_* directly from inside an OpenMP region. */
void qn_blas_init(void);

/* ---------------------------------------------------------------- packing */

/* pos[t] = t - cu_seqlens[s] for the sequence s that holds token t. */
void qn_packed_positions(int32_t *pos /* T */, const int32_t *cu_seqlens /* S+1 */, int S);

/* -------------------------------------------------------------- embedding */

/* out[t, :] = wte[tokens[t], :]. Token ids must be in [0, V). */
void qn_embedding_forward(float *out /* T, C */, const int32_t *tokens /* T */,
                          const float *wte /* V, C */, int T, int C);
/* dwte[tokens[t], :] += dout[t, :] (scatter-add; repeated ids add up). */
void qn_embedding_backward(float *dwte /* V, C */, const float *dout /* T, C */,
                           const int32_t *tokens /* T */, int T, int C);

/* ----------------------------------------------------------------- matmul */

/* out = inp w^T (+ bias). bias may be NULL. out must not alias inp. */
void qn_matmul_forward(float *out /* N, OC */, const float *inp /* N, IC */,
                       const float *w /* OC, IC */, const float *bias /* OC or NULL */, int N,
                       int IC, int OC);
/* dinp (=, or += with accumulate) = dout w; dw += dout^T inp;
 * dbias += column sums of dout. Any of dinp, dw, dbias may be NULL to skip
 * that gradient (e.g. frozen weights, or the input is a token embedding
 * whose gradient is not needed). */
void qn_matmul_backward(float *dinp /* N, IC or NULL */, float *dw /* OC, IC or NULL */,
                        float *dbias /* OC or NULL */, const float *dout /* N, OC */,
                        const float *inp /* N, IC */, const float *w /* OC, IC */, int N, int IC,
                        int OC, int accumulate);

/* ---------------------------------------------------------------- RMSNorm */

/* out = inp * rstd * w with rstd[n] = 1 / sqrt(mean(inp[n,:]^2) + eps),
 * computed in double per row and saved for backward. out may alias inp.
 * QK-norm: call with N = T*NH (or T*NKV) and D = HD on q[T, NH*HD]. */
void qn_rmsnorm_forward(float *out /* N, D */, float *rstd /* N */, const float *inp /* N, D */,
                        const float *w /* D */, float eps, int N, int D);
/* dinp (=, or += with accumulate); dw += . Needs the forward's inp and
 * rstd. dinp may alias dout. */
void qn_rmsnorm_backward(float *dinp /* N, D */, float *dw /* D */, const float *dout /* N, D */,
                         const float *inp /* N, D */, const float *w /* D */,
                         const float *rstd /* N */, int N, int D, int accumulate);

/* ------------------------------------------------------------------- RoPE */

/* The rotary table for positions 0 .. P-1: angle(p, i) = p * theta^(-2i/R)
 * for i in [0, R/2), computed in double and rounded to fp32 cos/sin. This is
 * the HF convention with partial_rotary_factor: R = (int)(HD * factor)
 * (GLM-4.5: HD*0.5; Llama/Qwen3: HD), inv_freq over R, not over HD. */
void qn_rope_table(float *cos_t /* P, R/2 */, float *sin_t /* P, R/2 */, int P, int R,
                   double theta);
/* In place on x[T, NH*HD] (any head count: use NKV for k): for every head,
 * dims [0, R) are rotated "rotate-half" style (GPT-NeoX/HF Llama, also HF
 * Glm4Moe, which takes GPT-NeoX's apply_rotary_pos_emb): with h = R/2,
 *   x'[i]   = x[i] cos - x[i+h] sin,   x'[i+h] = x[i+h] cos + x[i] sin
 * for i < h, angle from pos[t]; dims [R, HD) pass through unchanged.
 * pos[t] must be < P of the table. */
void qn_rope_forward(float *x /* T, NH*HD */, const int32_t *pos /* T */,
                     const float *cos_t /* P, R/2 */, const float *sin_t /* P, R/2 */, int T,
                     int NH, int HD, int R);
/* In place on dx: the inverse (transpose) rotation, i.e. dx_in = R(-angle) dx_out.
 * The pass-through dims are left as they are (identity). */
void qn_rope_backward(float *dx /* T, NH*HD */, const int32_t *pos /* T */,
                      const float *cos_t /* P, R/2 */, const float *sin_t /* P, R/2 */, int T,
                      int NH, int HD, int R);

/* -------------------------------------------------------------- attention */

/* Causal self-attention inside each packed sequence, GQA (query head h uses
 * kv head h / (NH/NKV)), softmax scale 1/sqrt(HD):
 *   out[t, h] = sum_{u in seq(t), u <= t} softmax_u(q[t,h].k[u,g] * scale) v[u,g]
 * Saves lse[t, h] = log sum_u exp(q.k * scale) (natural log) for backward;
 * no [T, T] matrix is kept. scratch: qn_attention_scratch_floats(...) floats
 * (a block of scores per thread, proportional to the longest sequence).
 * out must not alias q, k, v. */
void qn_attention_forward(float *out /* T, NH*HD */, float *lse /* T, NH */,
                          const float *q /* T, NH*HD */, const float *k /* T, NKV*HD */,
                          const float *v /* T, NKV*HD */, const int32_t *cu_seqlens /* S+1 */,
                          int S, int T, int NH, int NKV, int HD, float *scratch);
/* dq, dk, dv written (=). Recomputes the scores from q, k and lse, so it
 * needs out and lse from the forward. scratch: qn_attention_scratch_floats
 * floats (the same buffer as the forward's may be reused). */
void qn_attention_backward(float *dq /* T, NH*HD */, float *dk /* T, NKV*HD */,
                           float *dv /* T, NKV*HD */, const float *dout /* T, NH*HD */,
                           const float *q /* T, NH*HD */, const float *k /* T, NKV*HD */,
                           const float *v /* T, NKV*HD */, const float *out /* T, NH*HD */,
                           const float *lse /* T, NH */, const int32_t *cu_seqlens /* S+1 */, int S,
                           int T, int NH, int NKV, int HD, float *scratch);
/* Scratch floats that forward and backward need for this batch (the larger
 * of the two); depends on T, the longest sequence, NH and HD. */
size_t qn_attention_scratch_floats(const int32_t *cu_seqlens /* S+1 */, int S, int T, int NH,
                                   int NKV, int HD);

/* ----------------------------------------------------------------- SwiGLU */

/* out[n, i] = silu(gate[n, i]) * up[n, i], silu(x) = x / (1 + exp(-x)).
 * gate and up rows are ld floats apart (ld >= F), so a fused gate_up GEMM
 * output [N, 2F] can be passed as gate = h, up = h + F, ld = 2F. */
void qn_swiglu_forward(float *out /* N, F */, const float *gate /* N, ld */,
                       const float *up /* N, ld */, int N, int F, int ld);
/* dgate, dup written (=), with row stride ld like the inputs. When ld == F,
 * dgate may alias dout (each element is read before it is written). */
void qn_swiglu_backward(float *dgate /* N, ld */, float *dup /* N, ld */,
                        const float *dout /* N, F */, const float *gate /* N, ld */,
                        const float *up /* N, ld */, int N, int F, int ld);

/* --------------------------------------------------------------- MoE router */

typedef enum qn_router_score {
    QN_ROUTER_SIGMOID = 0, /* GLM-4.5, DeepSeek-V3 */
    QN_ROUTER_SOFTMAX = 1, /* Qwen3-MoE */
} qn_router_score;

/* Limits of the router's per-token work arrays (GLM-4.5: 160 experts, top 8;
 * DeepSeek-V3: 256, top 8). */
#define QN_ROUTER_MAX_E 1024
#define QN_ROUTER_MAX_K 64

typedef struct qn_router_cfg {
    int E;                       /* routed experts, <= QN_ROUTER_MAX_E */
    int K;                       /* experts per token, <= min(E, QN_ROUTER_MAX_K) */
    int n_group;                 /* <= 1: no group limit; else divides E, E/n_group >= 2 */
    int topk_group;              /* groups kept per token when n_group > 1 */
    qn_router_score score;       /* sigmoid or softmax over all E experts */
    int norm_topk_prob;          /* divide the K weights by their sum + 1e-20 */
    float routed_scaling_factor; /* final multiplier (1.0 for Qwen3-MoE) */
    const float *bias;           /* e_score_correction_bias [E] or NULL; selection only */
} qn_router_cfg;

/* Router forward for T tokens:
 *   logits = x w^T (fp32), scores = sigmoid(logits) or softmax(logits) over E;
 *   choice = scores + bias; with n_group > 1, a group's score is the sum of
 *   its two largest choice values, the topk_group best groups are kept and
 *   the choice of experts in other groups is set to 0.0 (HF masked_fill
 *   0.0, not -inf); the K largest choice values pick idx (ties: lower index);
 *   weight[t,k] = scores[t, idx[t,k]] (unbiased), divided by
 *   (sum_k + 1e-20) if norm_topk_prob, times routed_scaling_factor.
 * Qwen3-MoE order (softmax over all E, top-k, optional renorm) is the same
 * path with bias = NULL, n_group <= 1, factor 1.0. scores is saved for the
 * backward. idx within a token is ordered by decreasing choice value. */
void qn_router_forward(const qn_router_cfg *cfg, int32_t *idx /* T, K */, float *weight /* T, K */,
                       float *scores /* T, E */, const float *x /* T, C */,
                       const float *w /* E, C */, int T, int C);
/* Gradient through the gathered weights only (selection is piecewise
 * constant; the bias gets none): dx (=, or += with accumulate), dw += .
 * scratch: T*E floats (d logits). */
void qn_router_backward(const qn_router_cfg *cfg, float *dx /* T, C */, float *dw /* E, C */,
                        const float *dweight /* T, K */, const int32_t *idx /* T, K */,
                        const float *scores /* T, E */, const float *x /* T, C */,
                        const float *w /* E, C */, int T, int C, int accumulate,
                        float *scratch /* T*E */);

/* ------------------------------------------------------------ MoE experts */

/* What the expert forward keeps for the backward, all caller-owned. TK = T*K
 * slots, sorted by expert: slots offsets[e] .. offsets[e+1]-1 belong to
 * expert e. Sizes in floats/ints are given by the field comments;
 * qn_moe_acts_floats/ints sum them for an arena. */
typedef struct qn_moe_acts {
    int32_t *offsets;  /* E+1 */
    int32_t *slot_tok; /* TK: token of each sorted slot */
    int32_t *tok_slot; /* TK: [t*K + k] -> sorted slot of (t, k) */
    float *xs;         /* TK, C: gathered inputs */
    float *gate;       /* TK, F: x W_gate^T */
    float *up;         /* TK, F: x W_up^T */
    float *act;        /* TK, F: silu(gate) * up */
    float *ys;         /* TK, C: expert outputs before weighting */
} qn_moe_acts;

size_t qn_moe_acts_floats(int T, int K, int C, int F);
size_t qn_moe_acts_ints(int T, int K, int E);

/* Routed experts. Expert e is a SwiGLU MLP with HF weights
 * gate_proj [F, C], up_proj [F, C], down_proj [C, F], stored stacked:
 * w_gate[e] = w_gate + e*F*C etc. (the parameter table can point each HF
 * tensor name into these blocks). Tokens are grouped per expert and each
 * expert runs as GEMMs over its rows:
 *   out[t] (=, or += with accumulate) sum_k weight[t,k] * expert_{idx[t,k]}(x[t])
 * out must not alias x. */
void qn_moe_forward(float *out /* T, C */, qn_moe_acts *acts, const float *x /* T, C */,
                    const int32_t *idx /* T, K */, const float *weight /* T, K */,
                    const float *w_gate /* E, F, C */, const float *w_up /* E, F, C */,
                    const float *w_down /* E, C, F */, int T, int C, int F, int E, int K,
                    int accumulate);
/* dx (=, or += with accumulate); dweight (=) is d loss / d weight[t,k] for
 * qn_router_backward; dw_gate, dw_up, dw_down += (any may be NULL to skip).
 * scratch: qn_moe_scratch_floats(T, K, C, F) floats. */
void qn_moe_backward(float *dx /* T, C */, float *dweight /* T, K */, float *dw_gate /* E, F, C */,
                     float *dw_up /* E, F, C */, float *dw_down /* E, C, F */,
                     const float *dout /* T, C */, const qn_moe_acts *acts,
                     const float *weight /* T, K */, const float *w_gate /* E, F, C */,
                     const float *w_up /* E, F, C */, const float *w_down /* E, C, F */, int T,
                     int C, int F, int E, int K, int accumulate, float *scratch);
size_t qn_moe_scratch_floats(int T, int K, int C, int F);

/* ------------------------------------------------------- log-prob / entropy */

/* For N rows of hidden states h (already gathered at the positions asked
 * for) and their targets, with z = h W^T / temperature over the vocabulary:
 *   logp[n] = z[target] - logZ,   entropy[n] = logZ - sum_v p_v z_v,
 * logZ = log sum_v exp z_v, computed chunk by chunk over V (chunk columns at
 * a time, online log-sum-exp), so no [N, V] buffer exists. Saves
 * lse[n] = logZ and ez[n] = sum_v p_v z_v for the backward. chunk is any
 * positive number (it need not divide V). scratch:
 * qn_logprob_scratch_floats(N, C, chunk) floats. */
void qn_logprob_forward(float *logp /* N */, float *entropy /* N */, float *lse /* N */,
                        float *ez /* N */, const float *h /* N, C */,
                        const int32_t *targets /* N */, const float *w /* V, C */, int N, int C,
                        int V, float temperature, int chunk, float *scratch);
/* Given dlogp[n] and dentropy[n] (either may be NULL = zeros): recomputes
 * each chunk of z and forms
 *   dz_v = dlogp (1[v = target] - p_v) - dentropy p_v (z_v - ez),
 * d logits = dz / temperature; dh (=, or += with accumulate) and dw += .
 * Needs lse and ez from the forward. */
void qn_logprob_backward(float *dh /* N, C */, float *dw /* V, C */, const float *dlogp /* N */,
                         const float *dentropy /* N */, const float *lse /* N */,
                         const float *ez /* N */, const float *h /* N, C */,
                         const int32_t *targets /* N */, const float *w /* V, C */, int N, int C,
                         int V, float temperature, int chunk, int accumulate, float *scratch);
/* Scratch floats for forward and backward: a [min(N, 128), chunk] logits
 * block per thread plus (threads - 1) private [N, C] dh sums. */
size_t qn_logprob_scratch_floats(int N, int C, int chunk);

#ifdef __cplusplus
}
#endif
#endif /* QN_OPS_CPU_OPS_H */
