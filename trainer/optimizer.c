/* optimizer.c — AdamW, gradient clipping and the Megatron lr schedule (see
 * optimizer.h for the formulas). Leaves out what the header lists. */
#include "trainer/optimizer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

qn_status qn_adamw_cfg_check(const qn_adamw_cfg *c) {
    if (!(isfinite(c->lr) && c->lr >= 0))
        return qn_fail(QN_ERR_RANGE, "--lr must be >= 0, got %g", c->lr);
    if (!(isfinite(c->min_lr) && c->min_lr >= 0 && c->min_lr <= c->lr))
        return qn_fail(QN_ERR_RANGE, "--min-lr must lie in [0, --lr (%g)], got %g", c->lr,
                       c->min_lr);
    if (!(c->beta1 >= 0 && c->beta1 < 1))
        return qn_fail(QN_ERR_RANGE, "--adam-beta1 must lie in [0, 1), got %g", c->beta1);
    if (!(c->beta2 >= 0 && c->beta2 < 1))
        return qn_fail(QN_ERR_RANGE, "--adam-beta2 must lie in [0, 1), got %g", c->beta2);
    if (!(isfinite(c->eps) && c->eps > 0))
        return qn_fail(QN_ERR_RANGE, "--adam-eps must be > 0, got %g", c->eps);
    if (!(isfinite(c->weight_decay) && c->weight_decay >= 0))
        return qn_fail(QN_ERR_RANGE, "--weight-decay must be >= 0, got %g", c->weight_decay);
    if (!(isfinite(c->clip_grad) && c->clip_grad >= 0))
        return qn_fail(QN_ERR_RANGE, "--clip-grad must be >= 0, got %g", c->clip_grad);
    if (c->warmup_iters < 0)
        return qn_fail(QN_ERR_RANGE, "--lr-warmup-iters must be >= 0");
    if ((int)c->decay_style < QN_LR_CONSTANT || (int)c->decay_style > QN_LR_COSINE)
        return qn_fail(QN_ERR_RANGE, "--lr-decay-style: unknown style %d", (int)c->decay_style);
    if (c->decay_style != QN_LR_CONSTANT && c->decay_iters <= c->warmup_iters)
        return qn_fail(QN_ERR_RANGE,
                       "--lr-decay-iters (%lld) must exceed --lr-warmup-iters (%lld) for a "
                       "decaying lr", (long long)c->decay_iters, (long long)c->warmup_iters);
    return QN_OK;
}

double qn_lr_at(const qn_adamw_cfg *c, int64_t t) {
    if (c->warmup_iters > 0 && t <= c->warmup_iters)
        return c->lr * (double)t / (double)c->warmup_iters;
    if (c->decay_style == QN_LR_CONSTANT) return c->lr;
    if (t > c->decay_iters) return c->min_lr;
    double r = (double)(t - c->warmup_iters) / (double)(c->decay_iters - c->warmup_iters);
    double coeff = c->decay_style == QN_LR_LINEAR ? 1.0 - r : 0.5 * (cos(M_PI * r) + 1.0);
    return c->min_lr + coeff * (c->lr - c->min_lr);
}

/* qsort has no context argument: the table reaches the comparator through a
 * thread-local, so concurrent inits on different threads do not collide. */
static _Thread_local const qn_opt_tensor *g_sort_params;

static int cmp_offset(const void *x, const void *y) {
    int64_t a = g_sort_params[*(const size_t *)x].offset,
            b = g_sort_params[*(const size_t *)y].offset;
    return a < b ? -1 : a > b;
}

qn_status qn_adamw_init(qn_adamw *opt, const qn_adamw_cfg *cfg, const qn_opt_tensor *params,
                        size_t n_params, int64_t n) {
    memset(opt, 0, sizeof *opt);
    QN_CHECK(qn_adamw_cfg_check(cfg));
    if (n < 0) return qn_fail(QN_ERR_INVALID, "adamw: buffer of %lld floats", (long long)n);
    /* tensors inside the buffer, then pairwise disjoint: sorted by offset,
     * each must end before the next non-empty one starts */
    size_t *ord = malloc((n_params ? n_params : 1) * sizeof *ord);
    if (!ord) return qn_fail(QN_ERR_NOMEM, "adamw: table of %zu tensors", n_params);
    size_t n_ord = 0;
    for (size_t i = 0; i < n_params; i++) {
        const qn_opt_tensor *p = &params[i];
        if (p->offset < 0 || p->size < 0 || p->offset > n || p->size > n - p->offset ||
            p->ndim < 1) {
            free(ord);
            return qn_fail(QN_ERR_INVALID,
                           "adamw: tensor '%s': [%lld, +%lld) ndim %d does not fit a buffer of "
                           "%lld floats", p->name ? p->name : "?", (long long)p->offset,
                           (long long)p->size, (int)p->ndim, (long long)n);
        }
        if (p->size > 0) ord[n_ord++] = i;
    }
    g_sort_params = params;
    qsort(ord, n_ord, sizeof *ord, cmp_offset);
    for (size_t k = 1; k < n_ord; k++) {
        const qn_opt_tensor *a = &params[ord[k - 1]], *b = &params[ord[k]];
        if (a->offset + a->size > b->offset) {
            free(ord);
            return qn_fail(QN_ERR_INVALID, "adamw: tensors '%s' and '%s' overlap",
                           a->name ? a->name : "?", b->name ? b->name : "?");
        }
    }
    free(ord);
    opt->m = calloc(n ? (size_t)n : 1, sizeof(float));
    opt->v = calloc(n ? (size_t)n : 1, sizeof(float));
    if (!opt->m || !opt->v) {
        qn_adamw_free(opt);
        return qn_fail(QN_ERR_NOMEM, "adamw: states for %lld parameters", (long long)n);
    }
    opt->cfg = *cfg;
    opt->params = params;
    opt->n_params = n_params;
    opt->n = n;
    return QN_OK;
}

void qn_adamw_free(qn_adamw *opt) {
    if (!opt) return;
    free(opt->m), free(opt->v);
    memset(opt, 0, sizeof *opt);
}

double qn_grad_norm(const float *g, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)g[i] * (double)g[i];
    return sqrt(s);
}

qn_status qn_adamw_step(qn_adamw *opt, float *params, float *grad, qn_adamw_step_info *info) {
    const qn_adamw_cfg *c = &opt->cfg;
    double norm = qn_grad_norm(grad, opt->n);
    if (!isfinite(norm))
        return qn_fail(QN_ERR_RANGE, "adamw: gradient norm is %g; step skipped", norm);
    double scale = 1.0;
    if (c->clip_grad > 0) {
        double cc = c->clip_grad / (norm + 1e-6);
        if (cc < 1.0) scale = cc;
    }
    if (scale != 1.0)
        for (int64_t i = 0; i < opt->n; i++) grad[i] = (float)((double)grad[i] * scale);
    const double lr = qn_lr_at(c, opt->step);
    opt->step++;
    const double b1 = c->beta1, b2 = c->beta2;
    const double bc1 = 1.0 - pow(b1, (double)opt->step), bc2 = 1.0 - pow(b2, (double)opt->step);
    const double sqrt_bc2 = sqrt(bc2);
    for (size_t k = 0; k < opt->n_params; k++) {
        const qn_opt_tensor *p = &opt->params[k];
        const double decay = p->ndim >= 2 ? lr * c->weight_decay : 0.0;
        for (int64_t i = p->offset; i < p->offset + p->size; i++) {
            const double g = grad[i];
            const double m = b1 * opt->m[i] + (1.0 - b1) * g;
            const double v = b2 * opt->v[i] + (1.0 - b2) * g * g;
            opt->m[i] = (float)m, opt->v[i] = (float)v;
            double w = params[i];
            w -= decay * w;
            w -= lr * ((double)opt->m[i] / bc1) / (sqrt((double)opt->v[i]) / sqrt_bc2 + c->eps);
            params[i] = (float)w;
        }
    }
    if (info) *info = (qn_adamw_step_info){.grad_norm = norm, .clip_scale = scale, .lr = lr};
    return QN_OK;
}

qn_status qn_adamw_set_state(qn_adamw *opt, int64_t step, const float *m, const float *v,
                             int64_t n) {
    if (n != opt->n || step < 0)
        return qn_fail(QN_ERR_INVALID,
                       "adamw state: %lld floats at step %lld for an optimizer of %lld floats",
                       (long long)n, (long long)step, (long long)opt->n);
    memcpy(opt->m, m, (size_t)n * sizeof(float));
    memcpy(opt->v, v, (size_t)n * sizeof(float));
    opt->step = step;
    return QN_OK;
}
