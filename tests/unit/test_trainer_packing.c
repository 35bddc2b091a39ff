/* test_trainer_packing.c — trainer/packing.c: plan invariants (every sample
 * exactly once, in its own step; token budget respected except by samples
 * that are alone; every rank the same number of micro-batches; static mode
 * shares), Karmarkar–Karp against naive assignments on a long-tailed length
 * distribution (the figures are printed), and the flag errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/loss.h"
#include "trainer/packing.h"

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static double urand(void) { /* xorshift64*, [0, 1) */
    g_rng ^= g_rng >> 12, g_rng ^= g_rng << 25, g_rng ^= g_rng >> 27;
    return (double)((g_rng * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

/* prompt 50..400 tokens + lognormal response (median ~400, long tail), capped */
static int64_t long_tail_len(void) {
    double z = sqrt(-2 * log(1 - urand())) * cos(2 * M_PI * urand());
    double r = exp(6.0 + 1.1 * z);
    if (r > 16000) r = 16000;
    return 50 + (int64_t)(urand() * 350) + (int64_t)r;
}

static void check_plan(const qn_pack_cfg *c, const int64_t *len, int64_t n,
                       const qn_pack_plan *p) {
    char *seen = calloc((size_t)n, 1);
    assert_non_null(seen);
    assert_int_equal(p->n_steps * p->global_batch_size, n);
    int64_t total_mb = 0;
    for (int64_t s = 0; s < p->n_steps; s++) {
        assert_int_equal(p->mb_start[s + 1] - p->mb_start[s], c->dp_size * p->n_micro[s]);
        assert_true(p->n_micro[s] >= 1);
        for (int64_t r = 0; r < c->dp_size; r++) {
            int64_t rank_samples = 0;
            for (int64_t j = 0; j < p->n_micro[s]; j++) {
                int64_t mb = qn_pack_mb(p, s, r, j), tok = 0;
                int64_t cnt = p->mb_off[mb + 1] - p->mb_off[mb];
                for (int64_t q = p->mb_off[mb]; q < p->mb_off[mb + 1]; q++) {
                    int64_t i = p->sample_idx[q];
                    assert_true(i >= s * p->global_batch_size &&
                                i < (s + 1) * p->global_batch_size);
                    assert_int_equal(seen[i], 0);
                    seen[i] = 1;
                    tok += len[i];
                }
                assert_int_equal(tok, p->mb_tokens[mb]);
                rank_samples += cnt;
                if (c->dynamic) {
                    if (tok > c->max_tokens_per_gpu) assert_int_equal(cnt, 1);
                } else {
                    assert_true(cnt <= c->micro_batch_size);
                }
                total_mb++;
            }
            if (!c->dynamic) assert_int_equal(rank_samples, p->global_batch_size / c->dp_size);
        }
    }
    assert_int_equal(total_mb, p->mb_start[p->n_steps]);
    for (int64_t i = 0; i < n; i++) assert_int_equal(seen[i], 1);
    free(seen);
}

static void test_plan_invariants(void **state) {
    for (int trial = 0; trial < 300; trial++) {
        int64_t dp = 1 + (int64_t)(urand() * 6), steps = 1 + (int64_t)(urand() * 3);
        int64_t gbs = dp * (1 + (int64_t)(urand() * 20));
        if (trial % 3 == 0) gbs = 1 + (int64_t)(urand() * 40); /* fewer samples than ranks too */
        int64_t n = gbs * steps;
        int64_t *len = malloc((size_t)n * sizeof *len);
        for (int64_t i = 0; i < n; i++)
            len[i] = trial % 5 == 0 ? (int64_t)(urand() * 3) : long_tail_len() / 4;
        qn_pack_cfg c = {.dp_size = dp, .dynamic = trial % 4 != 0,
                         .max_tokens_per_gpu = 64 + (int64_t)(urand() * 2000),
                         .micro_batch_size = 1 + (int64_t)(urand() * 5)};
        if (trial % 2) c.global_batch_size = gbs;
        else c.num_steps_per_rollout = steps;
        if (!c.dynamic && gbs % dp) c.dynamic = true;
        qn_pack_plan p;
        qn_status st = qn_pack_plan_build(&c, len, n, &p);
        if (st != QN_OK) fail_msg("trial %d: %s", trial, qn_last_error());
        check_plan(&c, len, n, &p);
        qn_pack_plan_free(&p);
        free(len);
    }
}

static void test_long_sample_alone(void **state) {
    int64_t len[6] = {5, 300, 7, 8, 9, 10};
    qn_pack_cfg c = {.dp_size = 2, .dynamic = true, .max_tokens_per_gpu = 20};
    qn_pack_plan p;
    assert_int_equal(qn_pack_plan_build(&c, len, 6, &p), QN_OK);
    check_plan(&c, len, 6, &p);
    int found = 0;
    for (int64_t mb = 0; mb < p.mb_start[1]; mb++)
        for (int64_t q = p.mb_off[mb]; q < p.mb_off[mb + 1]; q++)
            if (p.sample_idx[q] == 1) {
                assert_int_equal(p.mb_off[mb + 1] - p.mb_off[mb], 1);
                assert_int_equal(p.mb_tokens[mb], 300); /* whole, not truncated */
                found = 1;
            }
    assert_true(found);
    qn_pack_plan_free(&p);
}

/* max rank load / mean rank load */
static double imbalance(const int64_t *len, int64_t n, const int64_t *part, int64_t k) {
    double *load = calloc((size_t)k, sizeof *load), mx = 0, sum = 0;
    for (int64_t i = 0; i < n; i++) load[part[i]] += (double)len[i];
    for (int64_t r = 0; r < k; r++) mx = fmax(mx, load[r]), sum += load[r];
    free(load);
    return mx / (sum / (double)k);
}

static int cmp_desc(const void *a, const void *b) {
    int64_t x = ((const int64_t *)a)[0], y = ((const int64_t *)b)[0];
    return x > y ? -1 : x < y;
}

static void test_balance_vs_naive(void **state) {
    const int64_t n = 512, trials = 50;
    const int64_t ks[3] = {2, 8, 32};
    int64_t *len = malloc(n * sizeof *len), *part = malloc(n * sizeof *part);
    int64_t *pair = malloc(2 * n * sizeof *pair);
    double *load = malloc(64 * sizeof *load);
    printf("  long-tailed lengths (50..400 prompt + lognormal(6, 1.1) response, cap 16k), "
           "%lld samples, %lld trials; mean max/mean rank tokens:\n", (long long)n,
           (long long)trials);
    for (int ki = 0; ki < 3; ki++) {
        int64_t k = ks[ki];
        double contig = 0, greedy = 0, lpt = 0, kk = 0, kk_worst = 0, greedy_worst = 0, lb = 0;
        for (int t = 0; t < trials; t++) {
            for (int64_t i = 0; i < n; i++) len[i] = long_tail_len();
            double tot = 0, big = 0; /* no partition beats max(1, longest / mean) */
            for (int64_t i = 0; i < n; i++) tot += (double)len[i], big = fmax(big, (double)len[i]);
            lb += fmax(1.0, big / (tot / (double)k));
            for (int64_t i = 0; i < n; i++) part[i] = i * k / n; /* contiguous shares */
            contig += imbalance(len, n, part, k);
            memset(load, 0, 64 * sizeof *load); /* greedy in arrival order */
            for (int64_t i = 0; i < n; i++) {
                int64_t b = 0;
                for (int64_t r = 1; r < k; r++)
                    if (load[r] < load[b]) b = r;
                part[i] = b, load[b] += (double)len[i];
            }
            double g = imbalance(len, n, part, k);
            greedy += g, greedy_worst = fmax(greedy_worst, g);
            for (int64_t i = 0; i < n; i++) pair[2 * i] = len[i], pair[2 * i + 1] = i;
            qsort(pair, (size_t)n, 2 * sizeof(int64_t), cmp_desc); /* LPT */
            memset(load, 0, 64 * sizeof *load);
            for (int64_t q = 0; q < n; q++) {
                int64_t b = 0;
                for (int64_t r = 1; r < k; r++)
                    if (load[r] < load[b]) b = r;
                part[pair[2 * q + 1]] = b, load[b] += (double)pair[2 * q];
            }
            lpt += imbalance(len, n, part, k);
            assert_int_equal(qn_pack_kk(len, n, k, part), QN_OK);
            for (int64_t i = 0; i < n; i++) assert_true(part[i] >= 0 && part[i] < k);
            double v = imbalance(len, n, part, k);
            kk += v, kk_worst = fmax(kk_worst, v);
        }
        printf("    dp=%-3lld contiguous %.4f  greedy %.4f (worst %.4f)  LPT %.5f  "
               "karmarkar-karp %.6f (worst %.6f)  bound %.6f\n", (long long)k, contig / trials,
               greedy / trials, greedy_worst, lpt / trials, kk / trials, kk_worst, lb / trials);
        assert_true(kk / trials < greedy / trials);
        assert_true(kk / trials <= lpt / trials + 1e-12);
    }
    /* micro-batch counts against the lower bound ceil(tokens / budget) */
    for (int64_t i = 0; i < n; i++) len[i] = long_tail_len();
    qn_pack_cfg c = {.dp_size = 8, .dynamic = true, .max_tokens_per_gpu = 16384};
    qn_pack_plan p;
    assert_int_equal(qn_pack_plan_build(&c, len, n, &p), QN_OK);
    check_plan(&c, len, n, &p);
    int64_t total = 0, mx = 0, mn = INT64_MAX;
    for (int64_t i = 0; i < n; i++) total += len[i];
    for (int64_t mb = 0; mb < p.mb_start[1]; mb++)
        mx = p.mb_tokens[mb] > mx ? p.mb_tokens[mb] : mx,
        mn = p.mb_tokens[mb] < mn ? p.mb_tokens[mb] : mn;
    printf("  plan: %lld samples, %lld tokens, dp 8, budget 16384: %lld micro-batches per rank "
           "(lower bound %lld), micro-batch tokens %lld..%lld\n", (long long)n,
           (long long)total, (long long)p.n_micro[0],
           (long long)((total + 8 * 16384 - 1) / (8 * 16384)), (long long)mn, (long long)mx);
    qn_pack_plan_free(&p);
    free(len), free(part), free(pair), free(load);
}

static void test_plan_errors(void **state) {
    int64_t len[6] = {1, 2, 3, 4, 5, 6};
    qn_pack_plan p;
    qn_pack_cfg c = {.dp_size = 1, .global_batch_size = 4, .micro_batch_size = 1};
    assert_int_equal(qn_pack_plan_build(&c, len, 6, &p), QN_ERR_INVALID);
    assert_non_null(strstr(qn_last_error(), "--global-batch-size"));
    c = (qn_pack_cfg){.dp_size = 4, .global_batch_size = 6, .micro_batch_size = 1};
    assert_int_equal(qn_pack_plan_build(&c, len, 6, &p), QN_ERR_INVALID);
    assert_non_null(strstr(qn_last_error(), "data-parallel"));
    c = (qn_pack_cfg){.dp_size = 1, .num_steps_per_rollout = 4, .micro_batch_size = 1};
    assert_int_equal(qn_pack_plan_build(&c, len, 6, &p), QN_ERR_INVALID);
    assert_non_null(strstr(qn_last_error(), "--num-steps-per-rollout"));
    c = (qn_pack_cfg){.dp_size = 1, .dynamic = true};
    assert_int_equal(qn_pack_plan_build(&c, len, 6, &p), QN_ERR_RANGE);
    assert_non_null(strstr(qn_last_error(), "--max-tokens-per-gpu"));
    c = (qn_pack_cfg){.dp_size = 2, .micro_batch_size = 2}; /* neither size: one step */
    assert_int_equal(qn_pack_plan_build(&c, len, 6, &p), QN_OK);
    assert_int_equal(p.n_steps, 1);
    assert_int_equal(p.n_micro[0], 2);
    qn_pack_plan_free(&p);
}

/* The loss gradient of every token is the same whether the global batch runs
 * whole or through a dynamic plan over 3 ranks (micro-batches gathered from
 * non-adjacent samples), as long as the global normaliser is used. */
static void test_gradient_independent_of_plan(void **state) {
    enum { N = 24 };
    int64_t len[N], cu[N + 1] = {0};
    for (int i = 0; i < N; i++) len[i] = 1 + (int64_t)(urand() * 40), cu[i + 1] = cu[i] + len[i];
    int64_t T = cu[N];
    float *arr[6];
    for (int a = 0; a < 6; a++) {
        arr[a] = malloc((size_t)T * sizeof(float));
        for (int64_t t = 0; t < T; t++)
            arr[a][t] = a == 5 ? (urand() < 0.2 ? 0.0f : 1.0f) : (float)(-3 * urand());
    }
    for (int64_t t = 0; t < T; t++) arr[4][t] += 1.5f; /* advantages of both signs */
    qn_loss_cfg c = {.eps_clip = 0.2, .eps_clip_high = 0.28, .eps_clip_c = 3, .use_kl_loss = true,
                     .kl_loss_coef = 0.1, .kl_type = QN_KL_K3, .entropy_coef = 0.01};
    for (int pt = 0; pt < 2; pt++) {
        c.per_token_loss = pt;
        qn_loss_batch all = {.n_samples = N, .cu_tokens = cu, .logp = arr[0],
                             .old_logp = arr[1], .ref_logp = arr[2], .entropy = arr[3],
                             .advantage = arr[4], .loss_mask = arr[5]};
        qn_loss_norm norm = {0};
        qn_loss_count(&all, &norm);
        double *want = malloc((size_t)T * sizeof *want), *got = malloc((size_t)T * sizeof *got);
        qn_loss_metrics mw = {0}, mg = {0};
        assert_int_equal(qn_loss_compute(&c, &all, &norm, want, NULL, &mw), QN_OK);
        qn_pack_cfg pc = {.dp_size = 3, .dynamic = true, .max_tokens_per_gpu = 50};
        qn_pack_plan p;
        assert_int_equal(qn_pack_plan_build(&pc, len, N, &p), QN_OK);
        qn_loss_norm n2 = {0}; /* what an all-reduce of per-micro-batch counts gives */
        float *pk[6];
        for (int a = 0; a < 6; a++) pk[a] = malloc((size_t)T * sizeof(float));
        double *dg = malloc((size_t)T * sizeof *dg);
        for (int pass = 0; pass < 2; pass++)
            for (int64_t mb = 0; mb < p.mb_start[1]; mb++) {
                int64_t mcu[N + 1] = {0}, k = 0;
                for (int64_t q = p.mb_off[mb]; q < p.mb_off[mb + 1]; q++, k++) {
                    int64_t i = p.sample_idx[q];
                    for (int a = 0; a < 6; a++)
                        memcpy(pk[a] + mcu[k], arr[a] + cu[i], (size_t)len[i] * sizeof(float));
                    mcu[k + 1] = mcu[k] + len[i];
                }
                qn_loss_batch b = {.n_samples = k, .cu_tokens = mcu, .logp = pk[0],
                                   .old_logp = pk[1], .ref_logp = pk[2], .entropy = pk[3],
                                   .advantage = pk[4], .loss_mask = pk[5]};
                if (pass == 0) {
                    qn_loss_count(&b, &n2);
                    continue;
                }
                assert_int_equal(qn_loss_compute(&c, &b, &n2, dg, NULL, &mg), QN_OK);
                k = 0;
                for (int64_t q = p.mb_off[mb]; q < p.mb_off[mb + 1]; q++, k++) {
                    int64_t i = p.sample_idx[q];
                    memcpy(got + cu[i], dg + mcu[k], (size_t)len[i] * sizeof(double));
                }
            }
        assert_true(n2.n_samples == norm.n_samples && n2.n_tokens == norm.n_tokens);
        assert_memory_equal(got, want, (size_t)T * sizeof(double)); /* bit-identical */
        assert_true(fabs(mg.loss - mw.loss) <= 1e-12 * fmax(1, fabs(mw.loss)));
        assert_true(fabs(mg.kl_loss - mw.kl_loss) <= 1e-12 * fmax(1, fabs(mw.kl_loss)));
        for (int a = 0; a < 6; a++) free(pk[a]);
        free(dg), free(want), free(got);
        qn_pack_plan_free(&p);
    }
    for (int a = 0; a < 6; a++) free(arr[a]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_invariants),
        cmocka_unit_test(test_long_sample_alone),
        cmocka_unit_test(test_balance_vs_naive),
        cmocka_unit_test(test_plan_errors),
        cmocka_unit_test(test_gradient_independent_of_plan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
