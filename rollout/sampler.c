/* sampler.c — temperature / top-k / top-p / min-p sampling of one logits row with counter-based
 * randomness, the full-distribution log-prob, parameter validation and stop conditions (see
 * sampler.h for the semantics).
 *
 * When a filter is on, only a candidate set is sorted, not the whole vocabulary: the tokens
 * with p >= t for a threshold t that is lowered until the set provably contains every kept
 * token (it reaches the min-p bound, holds top_k tokens, or holds at least top_p of the mass).
 * Such a set is always a prefix of the sorted order, so the result is the same as sorting
 * everything.
 *
 * Left out: penalties, logit bias, grammar masks, top-n logprobs, GPU kernels. */
#include "rollout/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

typedef struct cand {
    double e; /* exp(z - max z) */
    int32_t id;
} cand;

struct qn_sampler {
    int32_t V;
    double *e; /* [V] */
    cand *c;   /* [V] */
};

const char *qn_finish_reason_str(qn_finish_reason r) {
    switch (r) {
    case QN_FINISH_STOP:
        return "stop";
    case QN_FINISH_LENGTH:
        return "length";
    case QN_FINISH_ABORT:
        return "abort";
    default:
        return "";
    }
}

qn_sampling_params qn_sampling_params_default(void) {
    return (qn_sampling_params){.temperature = 1.0f,
                                .top_p = 1.0f,
                                .top_k = -1,
                                .min_p = 0.0f,
                                .max_new_tokens = 128,
                                .seed = 0};
}

qn_status qn_sampling_params_validate(const qn_sampling_params *p, int32_t vocab_size) {
    if (!p) return qn_fail(QN_ERR_INVALID, "sampling params: NULL");
    if (vocab_size < 1) return qn_fail(QN_ERR_RANGE, "vocab_size = %d: must be >= 1", vocab_size);
    if (!isfinite(p->temperature) || p->temperature < 0.0f)
        return qn_fail(QN_ERR_RANGE, "temperature = %g: must be a finite number >= 0 (0 = greedy)",
                       (double)p->temperature);
    if (!isfinite(p->top_p) || !(p->top_p > 0.0f && p->top_p <= 1.0f))
        return qn_fail(QN_ERR_RANGE, "top_p = %g: must be in (0, 1]", (double)p->top_p);
    if (p->top_k < -1 || p->top_k == 0)
        return qn_fail(QN_ERR_RANGE, "top_k = %d: must be -1 (off) or >= 1", p->top_k);
    if (!isfinite(p->min_p) || !(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return qn_fail(QN_ERR_RANGE, "min_p = %g: must be in [0, 1]", (double)p->min_p);
    if (p->max_new_tokens < 0)
        return qn_fail(QN_ERR_RANGE, "max_new_tokens = %d: must be >= 0", p->max_new_tokens);
    if (p->n_stop_token_ids < 0 || (p->n_stop_token_ids > 0 && !p->stop_token_ids))
        return qn_fail(QN_ERR_INVALID, "stop_token_ids: %d ids but no array", p->n_stop_token_ids);
    for (int32_t i = 0; i < p->n_stop_token_ids; i++)
        if (p->stop_token_ids[i] < 0 || p->stop_token_ids[i] >= vocab_size)
            return qn_fail(QN_ERR_RANGE, "stop_token_ids[%d] = %d: must be in [0, %d)", i,
                           p->stop_token_ids[i], vocab_size);
    if (p->n_stop < 0 || (p->n_stop > 0 && !p->stop))
        return qn_fail(QN_ERR_INVALID, "stop: %d strings but no array", p->n_stop);
    for (int32_t i = 0; i < p->n_stop; i++)
        if (!p->stop[i] || !p->stop[i][0])
            return qn_fail(QN_ERR_RANGE, "stop[%d]: stop strings must be non-empty", i);
    return QN_OK;
}

qn_status qn_sampler_init(qn_sampler **out, int32_t vocab_size) {
    if (!out) return qn_fail(QN_ERR_INVALID, "sampler: out is NULL");
    *out = NULL;
    if (vocab_size < 1) return qn_fail(QN_ERR_RANGE, "sampler: vocab_size = %d", vocab_size);
    qn_sampler *s = calloc(1, sizeof *s);
    if (!s) return qn_fail(QN_ERR_NOMEM, "sampler: out of memory");
    s->V = vocab_size;
    s->e = malloc((size_t)vocab_size * sizeof *s->e);
    s->c = malloc((size_t)vocab_size * sizeof *s->c);
    if (!s->e || !s->c) {
        qn_sampler_free(s);
        return qn_fail(QN_ERR_NOMEM, "sampler: out of memory for %d tokens", vocab_size);
    }
    *out = s;
    return QN_OK;
}

void qn_sampler_free(qn_sampler *s) {
    if (!s) return;
    free(s->e);
    free(s->c);
    free(s);
}

double qn_sampler_uniform(uint64_t seed, uint32_t sample_index, uint64_t step) {
    uint64_t stream = QN_SAMPLER_STREAM(sample_index);
    uint32_t hi = qn_rng_u32(seed, stream, 2 * step);
    uint32_t lo = qn_rng_u32(seed, stream, 2 * step + 1);
    /* 27 + 26 bits: every value k * 2^-53 in [0, 1) */
    uint64_t k = ((uint64_t)(hi >> 5) << 26) | (uint64_t)(lo >> 6);
    return (double)k * (1.0 / 9007199254740992.0);
}

static int cand_cmp(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->e != y->e) return x->e > y->e ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Checks the row and returns the max logit index (ties: lowest id). */
static qn_status row_max(const float *logits, int32_t V, int32_t *arg) {
    int32_t best = -1;
    for (int32_t i = 0; i < V; i++) {
        float v = logits[i];
        if (isnan(v) || (isinf(v) && v > 0))
            return qn_fail(QN_ERR_RANGE, "sampler: logit %d is %g (must be finite or -inf)", i,
                           (double)v);
        if (isinf(v)) continue;
        if (best < 0 || v > logits[best]) best = i;
    }
    if (best < 0) return qn_fail(QN_ERR_RANGE, "sampler: all %d logits are -inf", V);
    *arg = best;
    return QN_OK;
}

qn_status qn_sampler_sample_u(qn_sampler *s, const float *logits, const qn_sampling_params *p,
                              double u, qn_sample_result *out) {
    if (!s || !logits || !out) return qn_fail(QN_ERR_INVALID, "sampler: NULL argument");
    QN_CHECK(qn_sampling_params_validate(p, s->V));
    if (!(u >= 0.0 && u < 1.0))
        return qn_fail(QN_ERR_RANGE, "sampler: uniform %g not in [0, 1)", u);
    const int32_t V = s->V;
    int32_t amax = 0;
    QN_CHECK(row_max(logits, V, &amax));
    const double T = p->temperature > 0.0f ? (double)p->temperature : 1.0;
    const double m = (double)logits[amax] / T;
    /* e_i = exp(z_i - m) <= 1, with e_amax = 1 exactly; Z >= 1 so log Z is well conditioned */
    double Z = 0.0;
    for (int32_t i = 0; i < V; i++) {
        double e = isinf(logits[i]) ? 0.0 : exp((double)logits[i] / T - m);
        s->e[i] = e;
        Z += e;
    }
    const double logZ = log(Z);
    qn_sample_result r = {.token = amax, .n_kept = 1};
    if (p->temperature == 0.0f) {
        r.logprob = (double)logits[amax] / T - m - logZ;
        *out = r;
        return QN_OK;
    }
    const int topk_on = p->top_k > 0 && p->top_k < V;
    const int topp_on = p->top_p < 1.0f;
    const int minp_on = p->min_p > 0.0f;
    if (!topk_on && !topp_on && !minp_on) {
        double target = u * Z, cum = 0.0;
        int32_t tok = -1, last = amax;
        int32_t kept = 0;
        for (int32_t i = 0; i < V; i++) {
            if (s->e[i] <= 0.0) continue;
            kept++;
            last = i;
            cum += s->e[i];
            if (tok < 0 && cum > target) tok = i;
        }
        r.token = tok >= 0 ? tok : last; /* rounding can leave target just above the sum */
        r.n_kept = kept;
    } else {
        const double top_p = (double)p->top_p, min_p = (double)p->min_p;
        /* candidate threshold on e (p_i >= t  <=>  e_i >= t * Z; the max has e = 1) */
        double t = minp_on ? min_p : 1.0 / 1024.0;
        int32_t n;
        for (;;) {
            n = 0;
            double mass = 0.0;
            for (int32_t i = 0; i < V; i++) {
                double e = s->e[i];
                if (e > 0.0 && e >= t) {
                    s->c[n].e = e;
                    s->c[n].id = i;
                    n++;
                    mass += e;
                }
            }
            if (t == 0.0 || (minp_on && t <= min_p) || (topk_on && n >= p->top_k) ||
                (topp_on && mass / Z >= top_p))
                break;
            t = t > 1e-300 ? t / 8.0 : 0.0; /* gently: every pass is O(V), the sort is not */
        }
        qsort(s->c, (size_t)n, sizeof *s->c, cand_cmp);
        int32_t kept = 0;
        double before = 0.0; /* mass of the tokens before, in e units */
        for (int32_t j = 0; j < n; j++) {
            if (topk_on && j >= p->top_k) break;
            if (topp_on && j > 0 && before / Z >= top_p) break;
            if (minp_on && s->c[j].e < min_p) break;
            before += s->c[j].e;
            kept++;
        }
        double target = u * before, cum = 0.0;
        r.token = s->c[kept - 1].id;
        for (int32_t j = 0; j < kept; j++) {
            cum += s->c[j].e;
            if (cum > target) {
                r.token = s->c[j].id;
                break;
            }
        }
        r.n_kept = kept;
    }
    r.logprob = (double)logits[r.token] / T - m - logZ;
    *out = r;
    return QN_OK;
}

qn_status qn_sampler_sample(qn_sampler *s, const float *logits, const qn_sampling_params *p,
                            uint32_t sample_index, uint64_t step, qn_sample_result *out) {
    if (!p) return qn_fail(QN_ERR_INVALID, "sampling params: NULL");
    return qn_sampler_sample_u(s, logits, p, qn_sampler_uniform(p->seed, sample_index, step), out);
}

qn_status qn_sampler_sample_batch(qn_sampler *s, const float *logits, int32_t n_rows,
                                  const qn_sampling_params *const *params,
                                  const uint32_t *sample_index, const uint64_t *step,
                                  qn_sample_result *out) {
    if (!s || n_rows < 0 || (n_rows > 0 && (!logits || !params || !sample_index || !step || !out)))
        return qn_fail(QN_ERR_INVALID, "sampler batch: bad arguments");
    for (int32_t r = 0; r < n_rows; r++) {
        qn_status st = qn_sampler_sample(s, logits + (size_t)r * s->V, params[r], sample_index[r],
                                         step[r], &out[r]);
        if (st != QN_OK) return qn_fail(st, "sampler batch: row %d: %s", r, qn_last_error());
    }
    return QN_OK;
}

int qn_sampler_is_stop_token(const qn_sampling_params *p, int32_t token) {
    for (int32_t i = 0; i < p->n_stop_token_ids; i++)
        if (p->stop_token_ids[i] == token) return 1;
    return 0;
}

size_t qn_stop_strings_tail_bytes(const qn_sampling_params *p) {
    size_t mx = 0;
    for (int32_t i = 0; i < p->n_stop; i++) {
        size_t l = strlen(p->stop[i]);
        if (l > mx) mx = l;
    }
    return mx;
}

int qn_stop_strings_find(const qn_sampling_params *p, const char *text, size_t len, size_t new_len,
                         size_t *match_at) {
    if (!p || p->n_stop <= 0 || !text) return 0;
    if (new_len > len) new_len = len;
    /* scan match ends in increasing order so the earliest-ending match wins */
    for (size_t end = len - new_len + 1; end <= len; end++) {
        for (int32_t i = 0; i < p->n_stop; i++) {
            size_t l = strlen(p->stop[i]);
            if (l == 0 || l > end) continue;
            if (memcmp(text + end - l, p->stop[i], l) == 0) {
                if (match_at) *match_at = end - l;
                return 1;
            }
        }
    }
    return 0;
}

qn_finish_reason qn_sampler_check_finish(const qn_sampling_params *p, int32_t token,
                                         int32_t n_generated, const char *text, size_t len,
                                         size_t new_len, size_t *match_at) {
    if (qn_sampler_is_stop_token(p, token)) return QN_FINISH_STOP;
    if (qn_stop_strings_find(p, text, len, new_len, match_at)) return QN_FINISH_STOP;
    if (n_generated >= p->max_new_tokens) return QN_FINISH_LENGTH;
    return QN_FINISH_NONE;
}
