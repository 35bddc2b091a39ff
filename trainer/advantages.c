/* advantages.c — GRPO group-normalised advantages (see advantages.h).
 * Groups are found by sorting sample indices by group id, so a batch whose
 * groups arrive interleaved (asynchronous rollouts) works the same as one
 * with contiguous groups. */
#include "trainer/advantages.h"

#include <math.h>
#include <stdlib.h>

typedef struct grp_key {
    int64_t group;
    size_t index;
} grp_key;

static int cmp_by_group(const void *a, const void *b) {
    const grp_key *x = a, *y = b;
    if (x->group != y->group) return x->group < y->group ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

qn_status qn_adv_grpo(const double *rewards, const int64_t *group, size_t n, bool normalize_std,
                      double *adv) {
    if (n == 0) return QN_OK;
    if (!rewards || !group || !adv) return qn_fail(QN_ERR_INVALID, "qn_adv_grpo: NULL argument");
    for (size_t i = 0; i < n; i++)
        if (!isfinite(rewards[i]))
            return qn_fail(QN_ERR_INVALID, "grpo advantages: sample %zu has a non-finite reward", i);
    grp_key *key = malloc(n * sizeof *key);
    if (!key) return qn_fail(QN_ERR_NOMEM, "grpo advantages: %zu samples", n);
    for (size_t i = 0; i < n; i++) key[i] = (grp_key){group[i], i};
    qsort(key, n, sizeof *key, cmp_by_group);
#define idx(k) key[k].index
    for (size_t s = 0; s < n;) {
        size_t e = s + 1;
        while (e < n && key[e].group == key[s].group) e++;
        size_t m = e - s;
        double mean = 0;
        for (size_t k = s; k < e; k++) mean += rewards[idx(k)];
        mean /= (double)m;
        double sd = 0; /* a group of one: std defined as 0 (see header) */
        if (m > 1) {
            double ss = 0;
            for (size_t k = s; k < e; k++) {
                double d = rewards[idx(k)] - mean;
                ss += d * d;
            }
            sd = sqrt(ss / (double)(m - 1));
        }
        for (size_t k = s; k < e; k++) {
            double a = rewards[idx(k)] - mean;
            adv[idx(k)] = normalize_std ? a / (sd + QN_GRPO_STD_EPS) : a;
        }
        s = e;
    }
#undef idx
    free(key);
    return QN_OK;
}

void qn_adv_broadcast(const double *adv, const int64_t *cu_tokens, size_t n, float *out) {
    for (size_t i = 0; i < n; i++)
        for (int64_t t = cu_tokens[i]; t < cu_tokens[i + 1]; t++) out[t] = (float)adv[i];
}
