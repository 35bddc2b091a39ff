/* test_sampler.c — the per-request sampler: greedy and its tie rule, top-k = 1 equals greedy,
 * exact top-p and min-p cuts on a hand-made distribution, agreement of the kept set and the
 * drawn token with an independent reference, a chi-square test of sampling frequencies against
 * the filtered renormalised distribution, seed determinism and independence from batch
 * composition, the full-distribution log-prob, parameter validation and stop conditions.
 *
 * The reference below is written separately from rollout/sampler.c: long double softmax, a
 * plain sort of all V tokens, and the three filters applied one after the other. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rollout/sampler.h"

static uint64_t g_rs = 88172645463325252ull;
static double rnd01(void) { /* xorshift64: test data only */
    g_rs ^= g_rs << 13;
    g_rs ^= g_rs >> 7;
    g_rs ^= g_rs << 17;
    return (double)(g_rs >> 11) * (1.0 / 9007199254740992.0);
}

static void random_logits(float *l, int32_t V, double lo, double hi) {
    for (int32_t i = 0; i < V; i++)
        l[i] = (float)(lo + (hi - lo) * rnd01());
}

/* ---- reference ---------------------------------------------------------------------- */

typedef struct ref_out {
    long double logprob[4096]; /* full log softmax(logits / T), T = 1 when greedy */
    double q[4096];            /* filtered, renormalised distribution */
    int32_t order[4096];       /* token ids by probability, ties by id */
    int32_t n_kept;
} ref_out;

static const long double *g_sort_p;
static int sort_desc(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (g_sort_p[x] != g_sort_p[y]) return g_sort_p[x] > g_sort_p[y] ? -1 : 1;
    return x < y ? -1 : 1;
}

static void reference(const float *logits, int32_t V, const qn_sampling_params *p, ref_out *r) {
    static long double prob[4096];
    long double T = p->temperature > 0 ? (long double)p->temperature : 1.0L;
    long double mx = -INFINITY;
    for (int32_t i = 0; i < V; i++)
        if ((long double)logits[i] / T > mx) mx = (long double)logits[i] / T;
    long double sum = 0;
    for (int32_t i = 0; i < V; i++)
        sum += expl((long double)logits[i] / T - mx);
    long double lse = mx + logl(sum);
    for (int32_t i = 0; i < V; i++) {
        r->logprob[i] = (long double)logits[i] / T - lse;
        prob[i] = expl(r->logprob[i]);
        r->order[i] = i;
    }
    g_sort_p = prob;
    qsort(r->order, (size_t)V, sizeof(int32_t), sort_desc);
    int32_t kept = V;
    if (p->temperature == 0.0f) kept = 1;
    if (p->top_k > 0 && p->top_k < kept) kept = p->top_k;
    if (p->top_p < 1.0f) {
        long double before = 0;
        int32_t j = 0;
        while (j < V && (j == 0 || before < (long double)p->top_p))
            before += prob[r->order[j++]];
        if (j < kept) kept = j;
    }
    if (p->min_p > 0.0f) {
        long double thr = (long double)p->min_p * prob[r->order[0]];
        int32_t j = 0;
        while (j < V && prob[r->order[j]] >= thr)
            j++;
        if (j < kept) kept = j;
    }
    while (kept > 1 && prob[r->order[kept - 1]] == 0)
        kept--; /* p = 0 is never kept */
    long double mass = 0;
    for (int32_t j = 0; j < kept; j++)
        mass += prob[r->order[j]];
    memset(r->q, 0, sizeof(double) * (size_t)V);
    for (int32_t j = 0; j < kept; j++)
        r->q[r->order[j]] = (double)(prob[r->order[j]] / mass);
    r->n_kept = kept;
}

static int32_t argmax_lowest(const float *l, int32_t V) {
    int32_t b = 0;
    for (int32_t i = 1; i < V; i++)
        if (l[i] > l[b]) b = i;
    return b;
}

static qn_sampler *make_sampler(int32_t V) {
    qn_sampler *s = NULL;
    assert_int_equal(qn_sampler_init(&s, V), QN_OK);
    return s;
}

static void assert_close(double got, long double want, double tol) {
    if (!isfinite(got) || !(fabsl((long double)got - want) <= tol))
        fail_msg("got %.17g want %.17Lg (tol %g)", got, want, tol);
}

/* ---- tests ---------------------------------------------------------------------------- */

static void test_greedy(void **state) {
    const int32_t V = 10;
    float l[10] = {0.5f, -1.0f, 2.0f, 3.0f, 3.0f, -INFINITY, 1.0f, 3.0f, 0.0f, -2.0f};
    qn_sampler *s = make_sampler(V);
    qn_sampling_params p = qn_sampling_params_default();
    p.temperature = 0.0f;
    p.top_p = 0.3f; /* ignored by greedy */
    static ref_out r;
    reference(l, V, &p, &r);
    for (uint64_t step = 0; step < 50; step++) {
        qn_sample_result o;
        p.seed = step * 31;
        assert_int_equal(qn_sampler_sample(s, l, &p, (uint32_t)step, step, &o), QN_OK);
        assert_int_equal(o.token, 3); /* ties 3, 4, 7 -> lowest id */
        assert_int_equal(o.n_kept, 1);
        assert_close(o.logprob, r.logprob[3], 1e-12); /* at T = 1 */
    }
    /* greedy's log-prob is taken at temperature 1, not at any other temperature */
    p.temperature = 0.5f;
    static ref_out r2;
    reference(l, V, &p, &r2);
    assert_true(fabsl(r2.logprob[3] - r.logprob[3]) > 1e-3);
    qn_sampler_free(s);
}

static void test_top_k1_is_greedy(void **state) {
    const int32_t V = 500;
    static float l[500];
    qn_sampler *s = make_sampler(V);
    static ref_out r;
    const float temps[3] = {0.5f, 1.0f, 2.0f};
    for (int trial = 0; trial < 60; trial++) {
        random_logits(l, V, -4, 4);
        qn_sampling_params p = qn_sampling_params_default();
        p.temperature = temps[trial % 3];
        p.top_k = 1;
        p.seed = (uint64_t)trial;
        reference(l, V, &p, &r);
        qn_sample_result o;
        assert_int_equal(qn_sampler_sample(s, l, &p, 0, (uint64_t)trial, &o), QN_OK);
        assert_int_equal(o.token, argmax_lowest(l, V));
        assert_int_equal(o.n_kept, 1);
        assert_close(o.logprob, r.logprob[o.token], 1e-12);
        qn_sampling_params g = p;
        g.temperature = 0.0f;
        qn_sample_result og;
        assert_int_equal(qn_sampler_sample(s, l, &g, 0, 0, &og), QN_OK);
        assert_int_equal(og.token, o.token);
    }
    qn_sampler_free(s);
}

/* p = 1/2, 1/4, 1/8, 1/16, 1/16 (the last two tie: the lower id comes first) */
static void half_dist(float *l) {
    const double p[5] = {0.5, 0.25, 0.125, 0.0625, 0.0625};
    for (int i = 0; i < 5; i++)
        l[i] = (float)log(p[i]);
}

static int32_t kept_for(qn_sampler *s, const float *l, qn_sampling_params *p) {
    qn_sample_result o;
    assert_int_equal(qn_sampler_sample_u(s, l, p, 0.0, &o), QN_OK);
    /* every u reaches only the first n_kept tokens, and each of them is reached */
    int seen[5] = {0};
    for (int k = 0; k < 2000; k++) {
        qn_sample_result ok;
        assert_int_equal(qn_sampler_sample_u(s, l, p, k / 2000.0, &ok), QN_OK);
        assert_true(ok.token >= 0 && ok.token < o.n_kept);
        seen[ok.token] = 1;
    }
    for (int i = 0; i < o.n_kept; i++)
        assert_true(seen[i]);
    return o.n_kept;
}

static void test_top_p_cut(void **state) {
    float l[5];
    half_dist(l);
    qn_sampler *s = make_sampler(5);
    qn_sampling_params p = qn_sampling_params_default();
    const struct {
        float top_p;
        int32_t kept;
    } cases[] = {{0.01f, 1},   {0.4999f, 1}, {0.5001f, 2}, {0.7499f, 2}, {0.7501f, 3}, {0.8749f, 3},
                 {0.8751f, 4}, {0.9f, 4},    {0.9374f, 4}, {0.9376f, 5}, {1.0f, 5}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        p.top_p = cases[i].top_p;
        int32_t k = kept_for(s, l, &p);
        if (k != cases[i].kept)
            fail_msg("top_p %g: kept %d, want %d", (double)p.top_p, k, cases[i].kept);
    }
    /* inverse CDF over the renormalised kept mass: {1/2, 1/4} -> token 0 below u = 2/3 */
    p.top_p = 0.6f;
    qn_sample_result o;
    assert_int_equal(qn_sampler_sample_u(s, l, &p, 0.6666, &o), QN_OK);
    assert_int_equal(o.token, 0);
    assert_int_equal(qn_sampler_sample_u(s, l, &p, 0.6667, &o), QN_OK);
    assert_int_equal(o.token, 1);
    assert_int_equal(qn_sampler_sample_u(s, l, &p, 0.9999999, &o), QN_OK);
    assert_int_equal(o.token, 1);
    /* the log-prob is that of the full distribution, not the renormalised one */
    assert_close(o.logprob, logl(0.25L), 1e-6);
    /* top-k with the tie: k = 4 keeps id 3, not 4 */
    p = qn_sampling_params_default();
    p.top_k = 4;
    assert_int_equal(kept_for(s, l, &p), 4);
    p.top_k = 2;
    p.top_p = 0.9f;
    assert_int_equal(kept_for(s, l, &p), 2);
    qn_sampler_free(s);
}

static void test_min_p_cut(void **state) {
    float l[5];
    half_dist(l);
    qn_sampler *s = make_sampler(5);
    qn_sampling_params p = qn_sampling_params_default();
    const struct {
        float min_p;
        int32_t kept;
    } cases[] = {{0.3f, 2},   {0.24f, 3}, {0.26f, 2}, {0.126f, 3},
                 {0.124f, 5}, {1.0f, 1},  {0.6f, 1},  {0.01f, 5}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        p.min_p = cases[i].min_p;
        int32_t k = kept_for(s, l, &p);
        if (k != cases[i].kept)
            fail_msg("min_p %g: kept %d, want %d", (double)p.min_p, k, cases[i].kept);
    }
    /* filters intersect: the shortest prefix wins */
    p.min_p = 0.2f; /* 3 */
    p.top_k = 2;
    assert_int_equal(kept_for(s, l, &p), 2);
    p.top_k = -1;
    p.top_p = 0.8f; /* 3 */
    p.min_p = 0.3f; /* 2 */
    assert_int_equal(kept_for(s, l, &p), 2);
    /* temperature reshapes p before the cut: at T = 2, p ~ sqrt(p) = .5,.35,.25,.18,.18 / 1.46 */
    p = qn_sampling_params_default();
    p.temperature = 2.0f;
    p.min_p = 0.4f; /* threshold 0.2 * ... keeps p_i / p_max >= 0.4: ratios 1, .71, .5, .35 */
    assert_int_equal(kept_for(s, l, &p), 3);
    qn_sampler_free(s);
}

/* The kept set and the drawn token agree with the reference for random params and rows. */
static void test_against_reference(void **state) {
    const int32_t V = 300;
    static float l[300];
    static ref_out r;
    qn_sampler *s = make_sampler(V);
    int filtered = 0;
    for (int trial = 0; trial < 400; trial++) {
        random_logits(l, V, -6, 6);
        if (trial % 7 == 0) l[trial % V] = -INFINITY;
        qn_sampling_params p = qn_sampling_params_default();
        p.temperature = (float)(0.2 + 2.0 * rnd01());
        p.top_k = trial % 3 == 0 ? -1 : 1 + (int32_t)(rnd01() * 40);
        p.top_p = trial % 4 == 0 ? 1.0f : (float)(0.05 + 0.95 * rnd01());
        p.min_p = trial % 5 < 2 ? 0.0f : (float)(0.3 * rnd01());
        p.seed = (uint64_t)trial * 7919;
        reference(l, V, &p, &r);
        qn_sample_result o;
        double u = qn_sampler_uniform(p.seed, 2, (uint64_t)trial);
        assert_int_equal(qn_sampler_sample(s, l, &p, 2, (uint64_t)trial, &o), QN_OK);
        qn_sample_result o2;
        assert_int_equal(qn_sampler_sample_u(s, l, &p, u, &o2), QN_OK);
        assert_int_equal(o.token, o2.token);
        assert_int_equal(o.n_kept, r.n_kept);
        filtered += r.n_kept < V;
        /* inverse CDF over the kept tokens: in sorted order when a filter is on, in id order
         * otherwise (as the header says) */
        int filter_on = (p.top_k > 0 && p.top_k < V) || p.top_p < 1.0f || p.min_p > 0.0f;
        double cum = 0;
        int32_t want = -1, last = -1;
        for (int32_t j = 0; j < V; j++) {
            int32_t t = filter_on ? r.order[j] : j;
            if (r.q[t] == 0.0) continue;
            last = t;
            cum += r.q[t];
            if (want < 0 && cum > u) want = t;
        }
        if (want < 0) want = last;
        if (o.token != want)
            fail_msg("trial %d: token %d, reference %d (u %.17g)", trial, o.token, want, u);
        assert_close(o.logprob, r.logprob[o.token], 1e-12);
    }
    assert_true(filtered > 200);
    qn_sampler_free(s);
}

/* Distributions whose kept set reaches far below the most likely token (a cliff: a few
 * tokens high, thousands low and tied), so the sampler's candidate pre-selection has to widen
 * several times, and ties must be broken by id. */
static void test_cliff_distributions(void **state) {
    const int32_t V = 3000;
    static float l[3000];
    static ref_out r;
    qn_sampler *s = make_sampler(V);
    const struct {
        int32_t n_high;
        float gap, temperature, top_p, min_p;
        int32_t top_k;
    } cases[] = {
        {1, 8.0f, 1.0f, 0.9f, 0.0f, -1},    {30, 8.0f, 1.0f, 1.0f, 0.0f, 50},
        {30, 8.0f, 1.0f, 0.995f, 0.0f, -1}, {5, 12.0f, 1.0f, 0.999f, 0.0f, 400},
        {3, 7.0f, 0.9f, 1.0f, 1e-4f, -1},   {30, 8.0f, 1.0f, 0.99f, 1e-5f, 2000},
        {1, 30.0f, 1.0f, 1.0f, 1e-20f, -1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int32_t i = 0; i < V; i++)
            l[i] = 0.0f;
        for (int32_t i = 0; i < cases[c].n_high; i++)
            l[(i * 97 + 11) % V] = cases[c].gap;
        qn_sampling_params p = qn_sampling_params_default();
        p.temperature = cases[c].temperature;
        p.top_p = cases[c].top_p;
        p.min_p = cases[c].min_p;
        p.top_k = cases[c].top_k;
        reference(l, V, &p, &r);
        assert_true(r.n_kept > cases[c].n_high); /* reaches into the tied tail */
        for (int k = 0; k < 50; k++) {
            double u = (k + 0.5) / 50.0;
            qn_sample_result o;
            assert_int_equal(qn_sampler_sample_u(s, l, &p, u, &o), QN_OK);
            if (o.n_kept != r.n_kept)
                fail_msg("case %zu: kept %d, reference %d", c, o.n_kept, r.n_kept);
            double cum = 0;
            int32_t want = r.order[r.n_kept - 1];
            for (int32_t j = 0; j < r.n_kept; j++) {
                cum += r.q[r.order[j]];
                if (cum > u) {
                    want = r.order[j];
                    break;
                }
            }
            if (o.token != want)
                fail_msg("case %zu u %g: token %d, reference %d", c, u, o.token, want);
        }
    }
    qn_sampler_free(s);
}

/* Wilson-Hilferty upper quantile of chi-square with k degrees of freedom at z sigmas. */
static double chi2_bound(int k, double z) {
    double a = 2.0 / (9.0 * k);
    double t = 1.0 - a + z * sqrt(a);
    return k * t * t * t;
}

static void test_chi_square(void **state) {
    const int32_t V = 16;
    const int N = 100000;
    float l[16];
    random_logits(l, V, -3, 3);
    qn_sampler *s = make_sampler(V);
    static ref_out r;
    qn_sampling_params cases[6];
    for (int i = 0; i < 6; i++)
        cases[i] = qn_sampling_params_default();
    cases[0].temperature = 0.8f;
    cases[1].temperature = 1.3f, cases[1].top_k = 6;
    cases[2].temperature = 0.7f, cases[2].top_p = 0.8f;
    cases[3].min_p = 0.1f;
    cases[4].temperature = 0.9f, cases[4].top_k = 10, cases[4].top_p = 0.9f;
    cases[4].min_p = 0.05f;
    cases[5].temperature = 3.0f, cases[5].top_p = 0.95f;
    for (int c = 0; c < 6; c++) {
        qn_sampling_params *p = &cases[c];
        p->seed = 1000 + (uint64_t)c;
        reference(l, V, p, &r);
        int counts[16] = {0};
        for (int i = 0; i < N; i++) {
            qn_sample_result o;
            assert_int_equal(qn_sampler_sample(s, l, p, (uint32_t)c, (uint64_t)i, &o), QN_OK);
            counts[o.token]++;
        }
        double chi2 = 0;
        int df = -1;
        for (int32_t t = 0; t < V; t++) {
            if (r.q[t] == 0.0) {
                assert_int_equal(counts[t], 0); /* filtered tokens are never drawn */
                continue;
            }
            double e = N * r.q[t];
            chi2 += (counts[t] - e) * (counts[t] - e) / e;
            df++;
        }
        assert_true(df >= 1);
        double bound = chi2_bound(df, 4.75); /* ~1e-6 false-failure rate */
        print_message("chi-square case %d: kept %d, chi2 %.2f (df %d, bound %.2f)\n", c, r.n_kept,
                      chi2, df, bound);
        assert_true(isfinite(chi2));
        assert_true(chi2 < bound);
    }
    qn_sampler_free(s);
}

static void test_seed_and_batch_independence(void **state) {
    enum { V = 64, R = 6, STEPS = 30 };
    static float rows[R][V];
    for (int q = 0; q < R; q++)
        random_logits(rows[q], V, -1, 1);
    qn_sampling_params ps[R];
    for (int q = 0; q < R; q++) {
        ps[q] = qn_sampling_params_default();
        ps[q].seed = 42 + (uint64_t)(q / 2); /* pairs share a seed; sample index differs */
        ps[q].temperature = 0.6f + 0.2f * (float)q;
        if (q == 3) ps[q].top_p = 0.7f;
        if (q == 4) ps[q].top_k = 9, ps[q].min_p = 0.2f;
    }
    uint32_t sidx[R];
    for (int q = 0; q < R; q++)
        sidx[q] = (uint32_t)(q % 2);
    qn_sampler *s = make_sampler(V);
    static qn_sample_result alone[R][STEPS];
    for (int q = 0; q < R; q++)
        for (int t = 0; t < STEPS; t++)
            assert_int_equal(
                qn_sampler_sample(s, rows[q], &ps[q], sidx[q], (uint64_t)t, &alone[q][t]), QN_OK);
    /* again, in batches of varying composition and order, with a fresh sampler */
    qn_sampler *s2 = make_sampler(V);
    for (int t = 0; t < STEPS; t++) {
        int perm[R];
        for (int q = 0; q < R; q++)
            perm[q] = q;
        for (int q = R - 1; q > 0; q--) {
            int j = (int)(rnd01() * (q + 1));
            int x = perm[q];
            perm[q] = perm[j];
            perm[j] = x;
        }
        int n = 1 + t % R; /* batch of n rows; the rest alone afterwards */
        static float batch[R * V];
        const qn_sampling_params *bp[R];
        uint32_t bi[R];
        uint64_t bs[R];
        qn_sample_result out[R];
        for (int k = 0; k < n; k++) {
            memcpy(batch + (size_t)k * V, rows[perm[k]], sizeof(float) * V);
            bp[k] = &ps[perm[k]];
            bi[k] = sidx[perm[k]];
            bs[k] = (uint64_t)t;
        }
        assert_int_equal(qn_sampler_sample_batch(s2, batch, n, bp, bi, bs, out), QN_OK);
        for (int k = n; k < R; k++)
            assert_int_equal(qn_sampler_sample(s2, rows[perm[k]], &ps[perm[k]], sidx[perm[k]],
                                               (uint64_t)t, &out[k]),
                             QN_OK);
        for (int k = 0; k < R; k++) {
            const qn_sample_result *a = &alone[perm[k]][t];
            assert_int_equal(out[k].token, a->token);
            assert_memory_equal(&out[k].logprob, &a->logprob, sizeof(double));
        }
    }
    /* the seed and the sample index both matter: pairs with one seed drew differently */
    for (int q = 0; q < R; q += 2) {
        qn_sampling_params same = ps[q + 1];
        int diff_idx = 0, diff_seed = 0;
        for (int t = 0; t < STEPS; t++) {
            qn_sample_result a, b, c;
            assert_int_equal(qn_sampler_sample(s, rows[q], &same, 0, (uint64_t)t, &a), QN_OK);
            assert_int_equal(qn_sampler_sample(s, rows[q], &same, 1, (uint64_t)t, &b), QN_OK);
            same.seed++;
            assert_int_equal(qn_sampler_sample(s, rows[q], &same, 0, (uint64_t)t, &c), QN_OK);
            same.seed--;
            diff_idx += a.token != b.token;
            diff_seed += a.token != c.token;
        }
        assert_true(diff_idx > STEPS / 2);
        assert_true(diff_seed > STEPS / 2);
    }
    /* uniforms are in [0, 1) and reproducible */
    for (uint64_t t = 0; t < 1000; t++) {
        double u = qn_sampler_uniform(7, 3, t);
        assert_true(u >= 0.0 && u < 1.0);
        assert_true(u == qn_sampler_uniform(7, 3, t));
    }
    qn_sampler_free(s);
    qn_sampler_free(s2);
}

static void test_logprob_full_distribution(void **state) {
    const int32_t V = 2000;
    static float l[2000];
    static ref_out r;
    qn_sampler *s = make_sampler(V);
    const float temps[4] = {0.3f, 0.7f, 1.0f, 2.5f};
    for (int trial = 0; trial < 40; trial++) {
        random_logits(l, V, -15, 15);
        qn_sampling_params p = qn_sampling_params_default();
        p.temperature = temps[trial % 4];
        if (trial % 2) p.top_k = 5, p.top_p = 0.5f;
        p.seed = (uint64_t)trial;
        reference(l, V, &p, &r);
        qn_sample_result o;
        assert_int_equal(qn_sampler_sample(s, l, &p, 0, 0, &o), QN_OK);
        assert_close(o.logprob, r.logprob[o.token], 1e-11);
    }
    /* extreme logits stay finite and exact */
    float e[3] = {1000.0f, -1000.0f, 0.0f};
    qn_sampler *s3 = make_sampler(3);
    qn_sampling_params p = qn_sampling_params_default();
    p.temperature = 0.5f;
    qn_sample_result o;
    assert_int_equal(qn_sampler_sample_u(s3, e, &p, 0.5, &o), QN_OK);
    assert_int_equal(o.token, 0);
    assert_true(isfinite(o.logprob) && fabs(o.logprob) < 1e-300);
    p.min_p = 0.5f; /* the max survives any min_p */
    assert_int_equal(qn_sampler_sample_u(s3, e, &p, 0.999, &o), QN_OK);
    assert_int_equal(o.token, 0);
    qn_sampler_free(s3);
    qn_sampler_free(s);
}

static void expect_bad(qn_sampling_params p, const char *field) {
    qn_clear_error();
    qn_status st = qn_sampling_params_validate(&p, 100);
    if (st == QN_OK) fail_msg("%s: accepted", field);
    assert_true(st < 0);
    if (!strstr(qn_last_error(), field)) fail_msg("%s: message '%s'", field, qn_last_error());
    /* sampling refuses the same params and leaves the result alone */
    qn_sampler *s = make_sampler(100);
    static float l[100];
    qn_sample_result o = {.token = -7};
    assert_true(qn_sampler_sample(s, l, &p, 0, 0, &o) < 0);
    assert_int_equal(o.token, -7);
    qn_sampler_free(s);
}

static void test_validation(void **state) {
    qn_sampling_params d = qn_sampling_params_default();
    assert_int_equal(qn_sampling_params_validate(&d, 100), QN_OK);
    qn_sampling_params p;
    p = d, p.temperature = -0.1f, expect_bad(p, "temperature");
    p = d, p.temperature = NAN, expect_bad(p, "temperature");
    p = d, p.temperature = INFINITY, expect_bad(p, "temperature");
    p = d, p.top_p = 0.0f, expect_bad(p, "top_p");
    p = d, p.top_p = 1.5f, expect_bad(p, "top_p");
    p = d, p.top_p = -0.5f, expect_bad(p, "top_p");
    p = d, p.top_p = NAN, expect_bad(p, "top_p");
    p = d, p.top_k = -2, expect_bad(p, "top_k");
    p = d, p.top_k = 0, expect_bad(p, "top_k");
    p = d, p.min_p = -0.01f, expect_bad(p, "min_p");
    p = d, p.min_p = 1.01f, expect_bad(p, "min_p");
    p = d, p.min_p = NAN, expect_bad(p, "min_p");
    p = d, p.max_new_tokens = -1, expect_bad(p, "max_new_tokens");
    int32_t ids[2] = {5, 100};
    p = d, p.stop_token_ids = ids, p.n_stop_token_ids = 2, expect_bad(p, "stop_token_ids");
    const char *stops[2] = {"ok", ""};
    p = d, p.stop = stops, p.n_stop = 2, expect_bad(p, "stop");
    assert_non_null(strstr(qn_last_error(), "1")); /* names which one */
    /* edges that are fine */
    p = d, p.top_p = 1.0f, p.top_k = 1, p.min_p = 1.0f, p.temperature = 0.0f;
    p.max_new_tokens = 0;
    assert_int_equal(qn_sampling_params_validate(&p, 100), QN_OK);
    /* bad logits */
    qn_sampler *s = make_sampler(4);
    float l[4] = {0.0f, NAN, 1.0f, 2.0f};
    qn_sample_result o;
    assert_int_equal(qn_sampler_sample(s, l, &d, 0, 0, &o), QN_ERR_RANGE);
    assert_non_null(strstr(qn_last_error(), "logit 1"));
    l[1] = INFINITY;
    assert_int_equal(qn_sampler_sample(s, l, &d, 0, 0, &o), QN_ERR_RANGE);
    for (int i = 0; i < 4; i++)
        l[i] = -INFINITY;
    assert_int_equal(qn_sampler_sample(s, l, &d, 0, 0, &o), QN_ERR_RANGE);
    l[2] = 0.0f; /* a single finite logit is a certain token */
    assert_int_equal(qn_sampler_sample(s, l, &d, 0, 0, &o), QN_OK);
    assert_int_equal(o.token, 2);
    assert_true(o.logprob == 0.0);
    assert_int_equal(qn_sampler_sample_u(s, l, &d, 1.0, &o), QN_ERR_RANGE);
    qn_sampler *bad = NULL;
    assert_int_equal(qn_sampler_init(&bad, 0), QN_ERR_RANGE);
    assert_null(bad);
    qn_sampler_free(NULL);
    qn_sampler_free(s);
}

static void test_stop_conditions(void **state) {
    int32_t ids[2] = {2, 9};
    const char *stops[2] = {"\n\n", "END"};
    qn_sampling_params p = qn_sampling_params_default();
    p.max_new_tokens = 5;
    p.stop_token_ids = ids;
    p.n_stop_token_ids = 2;
    assert_int_equal(qn_sampler_check_finish(&p, 9, 1, NULL, 0, 0, NULL), QN_FINISH_STOP);
    assert_int_equal(qn_sampler_check_finish(&p, 3, 4, NULL, 0, 0, NULL), QN_FINISH_NONE);
    assert_int_equal(qn_sampler_check_finish(&p, 3, 5, NULL, 0, 0, NULL), QN_FINISH_LENGTH);
    assert_int_equal(qn_sampler_check_finish(&p, 2, 5, NULL, 0, 0, NULL), QN_FINISH_STOP);
    p.stop = stops;
    p.n_stop = 2;
    assert_int_equal(qn_stop_strings_tail_bytes(&p), 3);
    size_t at = 999;
    /* a stop string split across two tokens: "...\n" then "\nmore" */
    const char *text = "hello\n\nmore";
    assert_int_equal(qn_stop_strings_find(&p, text, 6, 1, &at), 0);
    assert_int_equal(qn_stop_strings_find(&p, text, 11, 5, &at), 1);
    assert_int_equal(at, 5);
    assert_int_equal(qn_sampler_check_finish(&p, 3, 2, text, 11, 5, &at), QN_FINISH_STOP);
    /* a match that ended before the new bytes was already handled: not reported again */
    assert_int_equal(qn_stop_strings_find(&p, "a\n\nbc", 5, 2, &at), 0);
    /* earliest-ending match wins; the text is cut where it starts */
    assert_int_equal(qn_stop_strings_find(&p, "xxEND\n\n", 7, 6, &at), 1);
    assert_int_equal(at, 2);
    /* a tail of the text is enough */
    assert_int_equal(qn_stop_strings_find(&p, "NDEND", 5, 1, &at), 1);
    assert_int_equal(at, 2);
    assert_int_equal(qn_stop_strings_find(&p, "EN", 2, 5, &at), 0);
    assert_int_equal(qn_sampler_is_stop_token(&p, 2), 1);
    assert_int_equal(qn_sampler_is_stop_token(&p, 3), 0);
    assert_string_equal(qn_finish_reason_str(QN_FINISH_STOP), "stop");
    assert_string_equal(qn_finish_reason_str(QN_FINISH_LENGTH), "length");
    assert_string_equal(qn_finish_reason_str(QN_FINISH_ABORT), "abort");
    assert_string_equal(qn_finish_reason_str(QN_FINISH_NONE), "");
    /* max_new_tokens = 0 finishes at once */
    p.max_new_tokens = 0;
    assert_int_equal(qn_sampler_check_finish(&p, 3, 0, "", 0, 0, NULL), QN_FINISH_LENGTH);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_top_k1_is_greedy),
        cmocka_unit_test(test_top_p_cut),
        cmocka_unit_test(test_min_p_cut),
        cmocka_unit_test(test_against_reference),
        cmocka_unit_test(test_cliff_distributions),
        cmocka_unit_test(test_chi_square),
        cmocka_unit_test(test_seed_and_batch_independence),
        cmocka_unit_test(test_logprob_full_distribution),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_stop_conditions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
