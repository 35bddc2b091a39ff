/* loss_host.c — the host-side half of the CUDA loss (loss.h): configuration
 * and argument checks before any launch, and the translation of the
 * device's error record into qn_loss_compute's status and message. Plain C,
 * built with or without CUDA, so it is unit-tested without a GPU
 * (tests/unit/test_cuda_lpmoe_host.c). The messages repeat trainer/loss.c's
 * word for word so that a job says the same thing on either path. */
#include <math.h>

#include "core/ops/cuda/loss.h"

qn_status qn_cuda_loss_cfg_check(const qn_cuda_loss_cfg *c) {
    if (!c) return qn_fail(QN_ERR_INVALID, "loss: NULL configuration");
    if (!(c->eps_clip >= 0 && c->eps_clip <= 1))
        return qn_fail(QN_ERR_RANGE, "--eps-clip must lie in [0, 1], got %g", c->eps_clip);
    if (!(c->eps_clip_high >= 0 && isfinite(c->eps_clip_high)))
        return qn_fail(QN_ERR_RANGE, "--eps-clip-high must be >= 0, got %g", c->eps_clip_high);
    if (!(c->eps_clip_c == 0 || (c->eps_clip_c > 1 && isfinite(c->eps_clip_c))))
        return qn_fail(QN_ERR_RANGE, "--eps-clip-c must be > 1 (or 0: off), got %g", c->eps_clip_c);
    if (!isfinite(c->kl_loss_coef) || !isfinite(c->entropy_coef))
        return qn_fail(QN_ERR_RANGE, "--kl-loss-coef and --entropy-coef must be finite");
    if (c->kl_type < QN_CUDA_KL_K1 || c->kl_type > QN_CUDA_KL_LOW_VAR)
        return qn_fail(QN_ERR_RANGE, "--kl-loss-type: unknown type %d", c->kl_type);
    if (c->use_tis &&
        !(c->tis_clip_low >= 0 && c->tis_clip_low <= c->tis_clip && isfinite(c->tis_clip)))
        return qn_fail(QN_ERR_RANGE, "--tis-clip-low (%g) must lie in [0, --tis-clip (%g)]",
                       c->tis_clip_low, c->tis_clip);
    if (c->type != QN_CUDA_LOSS_POLICY && c->type != QN_CUDA_LOSS_SFT)
        return qn_fail(QN_ERR_RANGE, "--loss-type: unknown type %d", c->type);
    return QN_OK;
}

qn_status qn_cuda_loss_check(const qn_cuda_loss_cfg *c, const qn_cuda_loss_batch *b,
                             double norm_samples, double norm_tokens) {
    QN_CHECK(qn_cuda_loss_cfg_check(c));
    if (!b || !b->cu_tokens || (b->n_samples > 0 && !b->logp))
        return qn_fail(QN_ERR_INVALID, "loss: NULL batch, normaliser, cu_tokens or logp");
    if (b->n_samples < 0 || b->n_tokens < 0)
        return qn_fail(QN_ERR_INVALID, "loss: negative sample (%lld) or token (%lld) count",
                       (long long)b->n_samples, (long long)b->n_tokens);
    double d = c->per_token_loss ? norm_tokens : norm_samples;
    if (!(d > 0) || !isfinite(d))
        return qn_fail(QN_ERR_INVALID, "loss: the global %s count must be > 0, got %g",
                       c->per_token_loss ? "token" : "sample", d);
    if (c->type == QN_CUDA_LOSS_SFT) return QN_OK;
    if (!b->advantage) return qn_fail(QN_ERR_INVALID, "loss: policy loss needs advantages");
    if (c->use_kl_loss && !b->ref_logp)
        return qn_fail(QN_ERR_INVALID, "loss: --use-kl-loss needs reference log-probs");
    if ((c->use_tis || c->use_rollout_logprobs) && !b->rollout_logp)
        return qn_fail(QN_ERR_INVALID, "loss: %s needs rollout log-probs",
                       c->use_tis ? "--use-tis" : "--use-rollout-logprobs");
    if (c->entropy_coef != 0 && !b->entropy)
        return qn_fail(QN_ERR_INVALID, "loss: --entropy-coef needs per-token entropy");
    return QN_OK;
}

qn_status qn_cuda_loss_out_status(const qn_cuda_loss_out *o) {
    static const char *const what[] = {"loss_mask",    "logp",     "advantage", "entropy",
                                       "rollout_logp", "old_logp", "ref_logp"};
    if (!o) return qn_fail(QN_ERR_INVALID, "loss: NULL output record");
    if (o->bad_cu_sample >= 0) {
        if (o->bad_cu_sample == 0)
            return qn_fail(QN_ERR_INVALID, "loss: cu_tokens must start at 0 and stay within "
                                           "the batch's tokens (sample 0)");
        return qn_fail(QN_ERR_INVALID, "loss: cu_tokens decreases at sample %lld",
                       (long long)o->bad_cu_sample);
    }
    if (o->bad_sample >= 0) {
        int64_t k = o->bad_what;
        const char *name = k >= 0 && k < (int64_t)(sizeof what / sizeof what[0]) ? what[k] : "?";
        return qn_fail(QN_ERR_RANGE, "loss: sample %lld token %lld: %s is not finite (%g)",
                       (long long)o->bad_sample, (long long)o->bad_token, name, o->bad_value);
    }
    return QN_OK;
}
