/* loss.h — the GRPO/PPO policy loss, KL loss, entropy bonus, TIS and SFT loss
 * of slime (DESIGN.md "The loss"), as per-token terms and their gradients
 * with respect to the per-token log-probs and entropies the model produces.
 *
 * The model core gives, per response token t of a packed micro-batch, logp[t]
 * (log-prob of the sampled token under the current policy) and entropy[t];
 * this module turns them into d(loss)/d(logp[t]) and d(loss)/d(entropy[t])
 * for the model's backward pass, and accumulates slime's metrics.
 *
 * Per token (policy loss, slime's compute_policy_loss and policy_loss_function):
 *   old     = rollout_logp if use_rollout_logprobs, else old_logp, else logp
 *             (detached: on-policy, ratio 1)
 *   ratio   = exp(logp - old)                  ppo_kl = old - logp
 *   pg1 = -ratio*A, pg2 = -clamp(ratio, 1-eps_clip, 1+eps_clip_high)*A
 *   pg  = max(pg1, pg2); clipfrac = [pg2 > pg1] (strictly)
 *   dual clip (eps_clip_c > 1): where A < 0, pg = min(pg, -eps_clip_c*A)
 *   TIS: pg *= clamp(exp(tis_old - rollout_logp), tis_clip_low, tis_clip), a
 *        constant weight (no gradient) where tis_old = old_logp if given, else
 *        logp (detached) — slime uses the recomputed old log-probs here even
 *        with --use-rollout-logprobs
 *   KL (use_kl_loss), lr = logp - ref_logp: k1 = lr, k2 = lr^2/2,
 *        k3 = exp(-lr) - 1 + lr, low_var_kl = clamp(k3, -10, 10)
 *        (slime's compute_approx_kl negates the log-ratio for k3, which is
 *        exactly this form)
 *   loss = R(pg) - entropy_coef * R(entropy) + kl_loss_coef * R(kl)
 * SFT: loss = -R(logp).
 *
 * R is the reduction over the GLOBAL batch (all micro-batches of all
 * data-parallel ranks of one optimizer step), with m_i = max(sum of
 * sample i's loss_mask, 1) as in slime:
 *   per-sample (default): R(x) = (1/N_samples) * sum_i (1/m_i) sum_t mask_t x_t
 *   per-token:            R(x) = (1/N_tokens)  * sum_i sum_t mask_t x_t,
 *                          N_tokens = sum_i m_i
 * The caller passes N_samples and N_tokens of the global batch (from
 * qn_loss_count on each micro-batch, summed and all-reduced), so that each
 * micro-batch's contribution — value and gradient — is exactly its share of
 * the global loss and does not depend on packing or the data-parallel split.
 * Metrics are R of the corresponding token quantity, so summing the metric
 * structs of every micro-batch and rank gives the global value.
 *
 * Leaves out: GSPO, CISPO, OPSM, ICEPOP, unbiased KL, custom loss/TIS/reducer
 * hooks, value loss. Arithmetic is double; inputs are the model's floats.
 */
#ifndef QN_TRAINER_LOSS_H
#define QN_TRAINER_LOSS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quench/status.h"

typedef enum qn_loss_type {
    QN_LOSS_POLICY = 0, /* --loss-type policy_loss */
    QN_LOSS_SFT = 1,    /* --loss-type sft_loss */
} qn_loss_type;

typedef enum qn_kl_type { /* same order as the choice string "k1|k2|k3|low_var_kl" */
    QN_KL_K1 = 0,
    QN_KL_K2 = 1,
    QN_KL_K3 = 2,
    QN_KL_LOW_VAR = 3,
} qn_kl_type;

typedef struct qn_loss_cfg {
    qn_loss_type type;
    double eps_clip;      /* lower clip: ratio >= 1 - eps_clip */
    double eps_clip_high; /* upper clip: ratio <= 1 + eps_clip_high (resolved, not -1) */
    double eps_clip_c;    /* dual-clip bound (> 1), or 0: off */
    bool use_kl_loss;
    double kl_loss_coef;
    qn_kl_type kl_type;
    double entropy_coef;
    bool use_tis;
    double tis_clip, tis_clip_low;
    bool use_rollout_logprobs;
    bool per_token_loss; /* --calculate-per-token-loss */
} qn_loss_cfg;

/* One packed micro-batch of response tokens. Token t of sample i lies at
 * [cu_tokens[i], cu_tokens[i+1]). Optional arrays may be NULL:
 *   old_logp      NULL: on-policy (old = current logp, detached)
 *   ref_logp      required when use_kl_loss
 *   rollout_logp  required when use_tis or use_rollout_logprobs; when given
 *                 otherwise it only feeds train_rollout_logprob_abs_diff
 *   entropy       NULL: entropy treated as 0 and d_entropy not written;
 *                 required when entropy_coef != 0
 *   advantage     required for the policy loss
 *   loss_mask     NULL: all ones; values are 0 or 1 (any weight works) */
typedef struct qn_loss_batch {
    int64_t n_samples;
    const int64_t *cu_tokens; /* [n_samples + 1], cu_tokens[0] == 0 */
    const float *logp, *old_logp, *ref_logp, *rollout_logp, *entropy, *advantage, *loss_mask;
} qn_loss_batch;

/* The global normalisers of one optimizer step. */
typedef struct qn_loss_norm {
    double n_samples; /* samples in the global batch */
    double n_tokens;  /* sum over samples of max(mask sum, 1) */
} qn_loss_norm;

/* Sums of R(.) over the micro-batches seen so far; zero-initialise, then
 * every qn_loss_compute adds its share. Names in qn_loss_metrics_names. */
typedef struct qn_loss_metrics {
    double loss, pg_loss, pg_clipfrac, ppo_kl, kl_loss, entropy_loss;
    double tis, tis_clipfrac;                  /* when use_tis */
    double train_rollout_logprob_abs_diff;     /* when rollout_logp is given */
} qn_loss_metrics;

/* Adds this micro-batch's sample count and token count (sum of max(mask
 * sum, 1)) into *acc, for building qn_loss_norm. */
void qn_loss_count(const qn_loss_batch *b, qn_loss_norm *acc);

/* Checks the configuration (eps_clip in [0,1], eps_clip_high >= 0,
 * eps_clip_c 0 or > 1, tis_clip_low <= tis_clip, finite coefficients);
 * QN_ERR_RANGE naming the flag otherwise. */
qn_status qn_loss_cfg_check(const qn_loss_cfg *c);

/* Computes this micro-batch's share of the global loss. Writes
 * d_logp[t] = d(loss)/d(logp[t]) for every token of the batch (0 where
 * masked), and d_entropy[t] likewise when d_entropy and b->entropy are not
 * NULL; adds into *metrics (may be NULL). Returns QN_ERR_INVALID for a
 * missing required array, bad cu_tokens or a non-positive normaliser, and
 * QN_ERR_RANGE for a non-finite input value (naming the sample and token);
 * outputs are then unspecified. */
qn_status qn_loss_compute(const qn_loss_cfg *c, const qn_loss_batch *b, const qn_loss_norm *norm,
                          double *d_logp, double *d_entropy, qn_loss_metrics *metrics);

/* Adds src into dst field by field (for combining micro-batches). */
void qn_loss_metrics_add(qn_loss_metrics *dst, const qn_loss_metrics *src);

/* Writes the metrics that apply to cfg as JSON members with slime's names
 * ("train/loss": ..., "train/pg_loss": ...) into buf, comma-separated, no
 * braces; a value that is not finite is written as null (JSON has no NaN).
 * Returns the length snprintf would have written. */
int qn_loss_metrics_json(const qn_loss_cfg *c, const qn_loss_metrics *m, bool have_rollout,
                         char *buf, size_t cap);

#endif /* QN_TRAINER_LOSS_H */
