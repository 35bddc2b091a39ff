/* loss.h — the GRPO/PPO policy loss, KL loss, entropy bonus, TIS and SFT loss
 * on the GPU: a CUDA twin of trainer/loss.c's qn_loss_compute with the same
 * semantics (trainer/loss.h describes them: clip-higher eps_clip /
 * eps_clip_high, dual clip, TIS weights, k1/k2/k3/low_var_kl, entropy
 * coefficient, per-sample or per-token reduction over the GLOBAL batch,
 * loss masks, torch's tie rules for max/min/clamp gradients).
 *
 * core must not depend on trainer/, so the configuration is restated here as
 * qn_cuda_loss_cfg with the same fields, meanings and enum values as
 * qn_loss_cfg (QN_CUDA_LOSS_* == QN_LOSS_*, QN_CUDA_KL_* == QN_KL_*); the
 * trainer copies its qn_loss_cfg field by field.
 *
 * Per-token inputs are fp32 device arrays (the model's log-probs and
 * entropies are fp32 on every path); arithmetic is double, as on the CPU.
 * Outputs: d_logp / d_entropy as fp32 device arrays (what
 * qn_cuda_logprob_backward takes) and the metrics of this micro-batch in a
 * device qn_cuda_loss_out, written (=), not added: download it and add the
 * metric fields into the host's qn_loss_metrics.
 *
 * Deterministic: one CUDA block per sample reduces that sample's tokens in a
 * fixed tree, then one block reduces the per-sample partials in sample
 * order; no atomics. Results therefore do not change run to run, and differ
 * from the CPU only by the order of double-precision sums.
 *
 * Errors the CPU reports while it computes (cu_tokens that decrease,
 * non-finite inputs) cannot be returned by an asynchronous call: they are
 * recorded in the output struct, and qn_cuda_loss_out_status turns them into
 * the same qn_status and message qn_loss_compute gives. Shapes, missing
 * arrays and the configuration are checked on the host before any launch.
 *
 * Leaves out what trainer/loss.h leaves out, and qn_loss_count (the global
 * normalisers come from the host batch, where the masks are). */
#ifndef QN_CORE_OPS_CUDA_LOSS_H
#define QN_CORE_OPS_CUDA_LOSS_H

#include <stddef.h>
#include <stdint.h>

#include "core/ops/cuda/cuda_ctx.h"
#include "quench/status.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { QN_CUDA_LOSS_POLICY = 0, QN_CUDA_LOSS_SFT = 1 };
enum { QN_CUDA_KL_K1 = 0, QN_CUDA_KL_K2 = 1, QN_CUDA_KL_K3 = 2, QN_CUDA_KL_LOW_VAR = 3 };

typedef struct qn_cuda_loss_cfg {
    int type; /* QN_CUDA_LOSS_* */
    double eps_clip, eps_clip_high, eps_clip_c;
    int use_kl_loss;
    double kl_loss_coef;
    int kl_type; /* QN_CUDA_KL_* */
    double entropy_coef;
    int use_tis;
    double tis_clip, tis_clip_low;
    int use_rollout_logprobs;
    int per_token_loss;
} qn_cuda_loss_cfg;

/* One packed micro-batch; every pointer is a DEVICE pointer. Optional arrays
 * as in qn_loss_batch (NULL: see trainer/loss.h). n_tokens is the length of
 * the per-token arrays (cu_tokens[n_samples] must not exceed it). */
typedef struct qn_cuda_loss_batch {
    int64_t n_samples;
    int64_t n_tokens;
    const int64_t *cu_tokens; /* [n_samples + 1] */
    const float *logp, *old_logp, *ref_logp, *rollout_logp, *entropy, *advantage, *loss_mask;
} qn_cuda_loss_batch;

/* Which input was not finite (the CPU's message names it). */
enum {
    QN_CUDA_LOSS_BAD_MASK = 0,
    QN_CUDA_LOSS_BAD_LOGP,
    QN_CUDA_LOSS_BAD_ADVANTAGE,
    QN_CUDA_LOSS_BAD_ENTROPY,
    QN_CUDA_LOSS_BAD_ROLLOUT,
    QN_CUDA_LOSS_BAD_OLD,
    QN_CUDA_LOSS_BAD_REF,
};

/* Written by qn_cuda_loss_compute on the device. The metric fields are this
 * micro-batch's share of R(.), named and ordered as qn_loss_metrics. */
typedef struct qn_cuda_loss_out {
    double loss, pg_loss, pg_clipfrac, ppo_kl, kl_loss, entropy_loss;
    double tis, tis_clipfrac;
    double train_rollout_logprob_abs_diff;
    int64_t bad_cu_sample; /* first sample whose cu_tokens range is bad, or -1 */
    int64_t bad_sample;    /* first sample with a non-finite input, or -1 */
    int64_t bad_token;     /* its token, counted from the sample's start */
    int64_t bad_what;      /* QN_CUDA_LOSS_BAD_* */
    double bad_value;
} qn_cuda_loss_out;

/* qn_loss_cfg_check's rules and messages (QN_ERR_RANGE naming the flag). */
qn_status qn_cuda_loss_cfg_check(const qn_cuda_loss_cfg *c);

/* Host checks of one call: the configuration, the required arrays for it
 * (QN_ERR_INVALID with qn_loss_compute's messages), n_samples and n_tokens
 * >= 0, and the normaliser that the reduction uses (> 0, finite). Touches
 * no device. */
qn_status qn_cuda_loss_check(const qn_cuda_loss_cfg *c, const qn_cuda_loss_batch *b,
                             double norm_samples, double norm_tokens);

/* Queues the loss of one micro-batch: writes d_logp[t] (0 where masked) and,
 * when d_entropy and b->entropy are not NULL, d_entropy[t]; writes *out
 * (device). norm_samples / norm_tokens are qn_loss_norm's two fields for the
 * global batch. Scratch: n_samples * 88 bytes (+ alignment) from the arena,
 * released before return. */
qn_status qn_cuda_loss_compute(qn_cuda_ctx *ctx, const qn_cuda_loss_cfg *c,
                               const qn_cuda_loss_batch *b, double norm_samples, double norm_tokens,
                               float *d_logp /* n_tokens */,
                               float *d_entropy /* n_tokens or NULL */,
                               qn_cuda_loss_out *out /* device */);

/* After downloading *out: QN_OK, or the status and message qn_loss_compute
 * would have returned (QN_ERR_INVALID for cu_tokens, QN_ERR_RANGE for a
 * non-finite value, naming the sample, the token and the input). */
qn_status qn_cuda_loss_out_status(const qn_cuda_loss_out *o);

#ifdef __cplusplus
}
#endif
#endif /* QN_CORE_OPS_CUDA_LOSS_H */
