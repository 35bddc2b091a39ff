/* loss.c — per-token GRPO/PPO, KL, entropy, TIS and SFT loss terms and their
 * gradients wrt log-probs and entropies (semantics in loss.h).
 *
 * Gradients are written by hand, mirroring what autograd does on slime's
 * formulas, including its tie rules: where max/min have equal arguments the
 * gradient is split evenly between them, and clamp passes the gradient on
 * the closed interval [lo, hi]. Inside the clip range pg1 == pg2 and both
 * carry the same gradient, so the split changes nothing there.
 * Leaves out: everything loss.h lists as left out. */
#include "trainer/loss.h"

#include <math.h>
#include <stdio.h>

#include "core/io/metrics_line.h"

void qn_loss_count(const qn_loss_batch *b, qn_loss_norm *acc) {
    for (int64_t i = 0; i < b->n_samples; i++) {
        double m = 0;
        for (int64_t t = b->cu_tokens[i]; t < b->cu_tokens[i + 1]; t++)
            m += b->loss_mask ? b->loss_mask[t] : 1.0;
        acc->n_samples += 1;
        acc->n_tokens += m > 1 ? m : 1;
    }
}

qn_status qn_loss_cfg_check(const qn_loss_cfg *c) {
    if (!(c->eps_clip >= 0 && c->eps_clip <= 1))
        return qn_fail(QN_ERR_RANGE, "--eps-clip must lie in [0, 1], got %g", c->eps_clip);
    if (!(c->eps_clip_high >= 0 && isfinite(c->eps_clip_high)))
        return qn_fail(QN_ERR_RANGE, "--eps-clip-high must be >= 0, got %g", c->eps_clip_high);
    if (!(c->eps_clip_c == 0 || (c->eps_clip_c > 1 && isfinite(c->eps_clip_c))))
        return qn_fail(QN_ERR_RANGE, "--eps-clip-c must be > 1 (or 0: off), got %g",
                       c->eps_clip_c);
    if (!isfinite(c->kl_loss_coef) || !isfinite(c->entropy_coef))
        return qn_fail(QN_ERR_RANGE, "--kl-loss-coef and --entropy-coef must be finite");
    if ((int)c->kl_type < QN_KL_K1 || (int)c->kl_type > QN_KL_LOW_VAR)
        return qn_fail(QN_ERR_RANGE, "--kl-loss-type: unknown type %d", (int)c->kl_type);
    if (c->use_tis && !(c->tis_clip_low >= 0 && c->tis_clip_low <= c->tis_clip &&
                        isfinite(c->tis_clip)))
        return qn_fail(QN_ERR_RANGE,
                       "--tis-clip-low (%g) must lie in [0, --tis-clip (%g)]", c->tis_clip_low,
                       c->tis_clip);
    if (c->type != QN_LOSS_POLICY && c->type != QN_LOSS_SFT)
        return qn_fail(QN_ERR_RANGE, "--loss-type: unknown type %d", (int)c->type);
    return QN_OK;
}

/* d max(a, b) given the two derivatives: torch splits ties evenly. */
static double dmax(double a, double b, double da, double db) {
    return a > b ? da : (b > a ? db : 0.5 * (da + db));
}

static qn_status check_inputs(const qn_loss_cfg *c, const qn_loss_batch *b,
                              const qn_loss_norm *norm) {
    if (!b || !norm || !b->cu_tokens || (b->n_samples > 0 && !b->logp))
        return qn_fail(QN_ERR_INVALID, "loss: NULL batch, normaliser, cu_tokens or logp");
    if (b->n_samples < 0 || b->cu_tokens[0] != 0)
        return qn_fail(QN_ERR_INVALID, "loss: cu_tokens must start at 0");
    for (int64_t i = 0; i < b->n_samples; i++)
        if (b->cu_tokens[i + 1] < b->cu_tokens[i])
            return qn_fail(QN_ERR_INVALID, "loss: cu_tokens decreases at sample %lld",
                           (long long)i);
    double d = c->per_token_loss ? norm->n_tokens : norm->n_samples;
    if (!(d > 0) || !isfinite(d))
        return qn_fail(QN_ERR_INVALID, "loss: the global %s count must be > 0, got %g",
                       c->per_token_loss ? "token" : "sample", d);
    if (c->type == QN_LOSS_SFT) return QN_OK;
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

static qn_status bad_value(const char *what, int64_t i, int64_t t, double v) {
    return qn_fail(QN_ERR_RANGE, "loss: sample %lld token %lld: %s is not finite (%g)",
                   (long long)i, (long long)t, what, v);
}

qn_status qn_loss_compute(const qn_loss_cfg *c, const qn_loss_batch *b, const qn_loss_norm *norm,
                          double *d_logp, double *d_entropy, qn_loss_metrics *metrics) {
    QN_CHECK(qn_loss_cfg_check(c));
    QN_CHECK(check_inputs(c, b, norm));
    qn_loss_metrics acc = {0};
    const bool sft = c->type == QN_LOSS_SFT;
    const bool kl_grad = c->use_kl_loss && c->kl_loss_coef != 0;
    const double lo = 1.0 - c->eps_clip, hi = 1.0 + c->eps_clip_high;
    for (int64_t i = 0; i < b->n_samples; i++) {
        const int64_t t0 = b->cu_tokens[i], t1 = b->cu_tokens[i + 1];
        double msum = 0;
        for (int64_t t = t0; t < t1; t++) {
            double mk = b->loss_mask ? b->loss_mask[t] : 1.0;
            if (!isfinite(mk)) return bad_value("loss_mask", i, t - t0, mk);
            msum += mk;
        }
        const double scale = c->per_token_loss ? 1.0 / norm->n_tokens
                                               : 1.0 / ((msum > 1 ? msum : 1) * norm->n_samples);
        for (int64_t t = t0; t < t1; t++) {
            const double w = (b->loss_mask ? b->loss_mask[t] : 1.0) * scale;
            if (d_entropy && b->entropy) d_entropy[t] = 0;
            d_logp[t] = 0;
            if (w == 0) continue;
            const double logp = b->logp[t];
            if (!isfinite(logp)) return bad_value("logp", i, t - t0, logp);
            if (sft) {
                d_logp[t] = -w;
                acc.loss += -w * logp;
                continue;
            }
            const double a = b->advantage[t];
            if (!isfinite(a)) return bad_value("advantage", i, t - t0, a);
            const double ent = b->entropy ? b->entropy[t] : 0.0;
            if (!isfinite(ent)) return bad_value("entropy", i, t - t0, ent);
            const double roll = b->rollout_logp ? b->rollout_logp[t] : 0.0;
            if (!isfinite(roll)) return bad_value("rollout_logp", i, t - t0, roll);
            const double recomputed_old = b->old_logp ? b->old_logp[t] : logp;
            if (!isfinite(recomputed_old)) return bad_value("old_logp", i, t - t0, recomputed_old);
            const double old = c->use_rollout_logprobs ? roll : recomputed_old;

            /* policy term; d(ratio)/d(logp) = ratio because old is a constant */
            const double ratio = exp(logp - old);
            const double pg1 = -ratio * a, d1 = -ratio * a;
            const double cr = ratio < lo ? lo : (ratio > hi ? hi : ratio);
            const double dcr = (ratio >= lo && ratio <= hi) ? ratio : 0.0;
            const double pg2 = -cr * a, d2 = -dcr * a;
            double pg = pg1 > pg2 ? pg1 : pg2;
            double dpg = dmax(pg1, pg2, d1, d2);
            const double clipped = pg2 > pg1 ? 1.0 : 0.0;
            if (c->eps_clip_c > 0 && a < 0) {
                const double pg3 = -c->eps_clip_c * a; /* min(pg3, pg) = -max(-pg3, -pg) */
                dpg = -dmax(-pg3, -pg, 0.0, -dpg);
                pg = pg3 < pg ? pg3 : pg;
            }
            if (c->use_tis) {
                const double raw = exp(recomputed_old - roll);
                double tw = raw < c->tis_clip_low ? c->tis_clip_low : raw;
                tw = tw > c->tis_clip ? c->tis_clip : tw;
                pg *= tw;
                dpg *= tw;
                acc.tis += w * raw;
                acc.tis_clipfrac += w * (tw != raw ? 1.0 : 0.0);
            }
            double kl = 0, dkl = 0;
            if (c->use_kl_loss) {
                const double ref = b->ref_logp[t];
                if (!isfinite(ref)) return bad_value("ref_logp", i, t - t0, ref);
                const double lr = logp - ref;
                switch (c->kl_type) {
                case QN_KL_K1: kl = lr, dkl = 1; break;
                case QN_KL_K2: kl = 0.5 * lr * lr, dkl = lr; break;
                case QN_KL_K3:
                case QN_KL_LOW_VAR: {
                    const double e = exp(-lr);
                    kl = e - 1.0 + lr, dkl = 1.0 - e;
                    if (c->kl_type == QN_KL_LOW_VAR) {
                        if (kl > 10 || kl < -10) dkl = 0;
                        kl = kl > 10 ? 10 : (kl < -10 ? -10 : kl);
                    }
                } break;
                }
                acc.kl_loss += w * kl;
            }
            d_logp[t] = w * (dpg + (kl_grad ? c->kl_loss_coef * dkl : 0.0));
            if (d_entropy && b->entropy) d_entropy[t] = -c->entropy_coef * w;
            acc.pg_loss += w * pg;
            acc.pg_clipfrac += w * clipped;
            acc.ppo_kl += w * (old - logp);
            acc.entropy_loss += w * ent;
            acc.loss += w * (pg - c->entropy_coef * ent + (kl_grad ? c->kl_loss_coef * kl : 0.0));
            if (b->rollout_logp)
                acc.train_rollout_logprob_abs_diff +=
                    w * fabs((c->use_rollout_logprobs ? logp : recomputed_old) - roll);
        }
    }
    if (metrics) qn_loss_metrics_add(metrics, &acc);
    return QN_OK;
}

void qn_loss_metrics_add(qn_loss_metrics *dst, const qn_loss_metrics *src) {
    dst->loss += src->loss;
    dst->pg_loss += src->pg_loss;
    dst->pg_clipfrac += src->pg_clipfrac;
    dst->ppo_kl += src->ppo_kl;
    dst->kl_loss += src->kl_loss;
    dst->entropy_loss += src->entropy_loss;
    dst->tis += src->tis;
    dst->tis_clipfrac += src->tis_clipfrac;
    dst->train_rollout_logprob_abs_diff += src->train_rollout_logprob_abs_diff;
}

int qn_loss_metrics_json(const qn_loss_cfg *c, const qn_loss_metrics *m, bool have_rollout,
                         char *buf, size_t cap) {
    /* qn_metrics_num: a value that is not finite is written as null, not as nan */
    if (c->type == QN_LOSS_SFT)
        return snprintf(buf, cap, "\"train/loss\": %s", qn_metrics_num(m->loss).s);
    int n = snprintf(buf, cap,
                     "\"train/loss\": %s, \"train/pg_loss\": %s, "
                     "\"train/pg_clipfrac\": %s, \"train/ppo_kl\": %s, "
                     "\"train/entropy_loss\": %s",
                     qn_metrics_num(m->loss).s, qn_metrics_num(m->pg_loss).s,
                     qn_metrics_num(m->pg_clipfrac).s, qn_metrics_num(m->ppo_kl).s,
                     qn_metrics_num(m->entropy_loss).s);
#define QN_APPEND_(...)                                                              \
    do {                                                                             \
        int k_ = snprintf(buf ? buf + ((size_t)n < cap ? (size_t)n : cap) : NULL,    \
                          (size_t)n < cap ? cap - (size_t)n : 0, __VA_ARGS__);       \
        n += k_;                                                                     \
    } while (0)
    if (c->use_kl_loss) QN_APPEND_(", \"train/kl_loss\": %s", qn_metrics_num(m->kl_loss).s);
    if (c->use_tis)
        QN_APPEND_(", \"train/tis\": %s, \"train/tis_clipfrac\": %s", qn_metrics_num(m->tis).s,
                   qn_metrics_num(m->tis_clipfrac).s);
    if (have_rollout)
        QN_APPEND_(", \"train/train_rollout_logprob_abs_diff\": %s",
                   qn_metrics_num(m->train_rollout_logprob_abs_diff).s);
#undef QN_APPEND_
    return n;
}
