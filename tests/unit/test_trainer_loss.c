/* test_trainer_loss.c — trainer/loss.c against the independent PyTorch
 * float64 autograd reference (tests/ref/loss_ref.py, run at test time) over
 * every loss variant: clip-higher with ratios outside the clip range via
 * rollout log-probs, dual clip, TIS, the four KL estimators with a reference
 * that differs from the policy, entropy bonus, per-sample and per-token
 * reductions, SFT, masks with zeros (and a fully masked and an empty sample).
 * The C side runs each global batch as two micro-batches with the global
 * normaliser; the reference runs it whole. Also: GRPO advantages, slime's
 * ppo_kl == 0 invariant, and input validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/test_util.h"
#include "trainer/advantages.h"
#include "trainer/loss.h"

#define GRAD_TOL 1e-9 /* issue: 1e-4 relative; the C side is double, so far tighter */

static float *json_floats(const cJSON *a, int64_t *n) {
    if (!a || cJSON_IsNull(a)) return NULL;
    int64_t k = cJSON_GetArraySize(a);
    float *v = malloc((size_t)(k ? k : 1) * sizeof *v);
    assert_non_null(v);
    int64_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, a) v[i++] = (float)e->valuedouble;
    if (n) *n = k;
    return v;
}

static double json_num(const cJSON *o, const char *k) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, k);
    assert_non_null(e);
    return e->valuedouble;
}

static bool json_bool(const cJSON *o, const char *k) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, k));
}

static qn_loss_cfg cfg_from_json(const cJSON *c) {
    const char *type = cJSON_GetObjectItemCaseSensitive(c, "type")->valuestring;
    const char *kl = cJSON_GetObjectItemCaseSensitive(c, "kl_type")->valuestring;
    qn_kl_type kt = !strcmp(kl, "k1")   ? QN_KL_K1
                    : !strcmp(kl, "k2") ? QN_KL_K2
                    : !strcmp(kl, "k3") ? QN_KL_K3
                                        : QN_KL_LOW_VAR;
    return (qn_loss_cfg){
        .type = strcmp(type, "sft") ? QN_LOSS_POLICY : QN_LOSS_SFT,
        .eps_clip = json_num(c, "eps_clip"),
        .eps_clip_high = json_num(c, "eps_clip_high"),
        .eps_clip_c = json_num(c, "eps_clip_c"),
        .use_kl_loss = json_bool(c, "use_kl_loss"),
        .kl_loss_coef = json_num(c, "kl_loss_coef"),
        .kl_type = kt,
        .entropy_coef = json_num(c, "entropy_coef"),
        .use_tis = json_bool(c, "use_tis"),
        .tis_clip = json_num(c, "tis_clip"),
        .tis_clip_low = json_num(c, "tis_clip_low"),
        .use_rollout_logprobs = json_bool(c, "use_rollout_logprobs"),
        .per_token_loss = json_bool(c, "per_token_loss"),
    };
}

/* Sub-batch of samples [s0, s1) of a packed batch: pointers shifted, cu rebased. */
static qn_loss_batch sub_batch(const qn_loss_batch *b, int64_t s0, int64_t s1, int64_t *cu) {
    int64_t o = b->cu_tokens[s0];
    for (int64_t i = s0; i <= s1; i++) cu[i - s0] = b->cu_tokens[i] - o;
#define SH(p) ((p) ? (p) + o : NULL)
    return (qn_loss_batch){.n_samples = s1 - s0, .cu_tokens = cu, .logp = SH(b->logp),
                           .old_logp = SH(b->old_logp), .ref_logp = SH(b->ref_logp),
                           .rollout_logp = SH(b->rollout_logp), .entropy = SH(b->entropy),
                           .advantage = SH(b->advantage), .loss_mask = SH(b->loss_mask)};
#undef SH
}

static double max_rel_err(const double *got, const cJSON *want, int64_t n) {
    double scale = 0, err = 0;
    int64_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, want) {
        assert_true(i < n);
        assert_true(isfinite(got[i]));
        scale = fmax(scale, fabs(e->valuedouble));
        err = fmax(err, fabs(got[i] - e->valuedouble));
        i++;
    }
    assert_int_equal(i, n);
    return scale > 0 ? err / scale : err;
}

static void check_metric(const char *c, const char *k, double got, const cJSON *want) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(want, k);
    if (!e) return;
    double rel = fabs(got - e->valuedouble) / fmax(1.0, fabs(e->valuedouble));
    if (!isfinite(got) || rel > GRAD_TOL)
        fail_msg("case %s: metric %s = %.17g, reference %.17g", c, k, got, e->valuedouble);
}

static void test_loss_vs_torch(void **state) {
    const char *out = qn_test_path("loss_cases.json");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/ref/loss_ref.py '%s'", QN_SOURCE_DIR, out);
    int rc = system(cmd);
    if (rc != 0)
        fail_msg("'%s' failed (%d): needs Debian python3-torch, python3-numpy "
                 "(scripts/install-deps.sh)", cmd, rc);
    size_t len;
    char *text = qn_test_read_file(out, &len);
    cJSON *root = cJSON_Parse(text);
    assert_non_null(root);
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(root, "cases"), *cs;
    int n_cases = 0;
    double worst_g = 0, worst_e = 0;
    cJSON_ArrayForEach(cs, cases) {
        const char *name = cJSON_GetObjectItemCaseSensitive(cs, "name")->valuestring;
        qn_loss_cfg cfg = cfg_from_json(cJSON_GetObjectItemCaseSensitive(cs, "cfg"));
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(cs, "data");
        const cJSON *cuj = cJSON_GetObjectItemCaseSensitive(d, "cu"), *e;
        int64_t ns = cJSON_GetArraySize(cuj) - 1, T;
        int64_t *cu = malloc((size_t)(ns + 1) * sizeof *cu), *cu2 = malloc((size_t)(ns + 1) * 8);
        int64_t i = 0;
        cJSON_ArrayForEach(e, cuj) cu[i++] = (int64_t)e->valuedouble;
        float *logp = json_floats(cJSON_GetObjectItemCaseSensitive(d, "logp"), &T);
        qn_loss_batch all = {
            .n_samples = ns, .cu_tokens = cu, .logp = logp,
            .old_logp = json_floats(cJSON_GetObjectItemCaseSensitive(d, "old_logp"), NULL),
            .ref_logp = json_floats(cJSON_GetObjectItemCaseSensitive(d, "ref_logp"), NULL),
            .rollout_logp = json_floats(cJSON_GetObjectItemCaseSensitive(d, "rollout_logp"), NULL),
            .entropy = json_floats(cJSON_GetObjectItemCaseSensitive(d, "entropy"), NULL),
            .advantage = json_floats(cJSON_GetObjectItemCaseSensitive(d, "advantage"), NULL),
            .loss_mask = json_floats(cJSON_GetObjectItemCaseSensitive(d, "loss_mask"), NULL)};
        int64_t split = (int64_t)json_num(cs, "split");
        int64_t cua[64], cub[64];
        assert_true(ns < 64);
        qn_loss_batch mb[2] = {sub_batch(&all, 0, split, cua), sub_batch(&all, split, ns, cub)};
        qn_loss_norm norm = {0};
        for (int k = 0; k < 2; k++) qn_loss_count(&mb[k], &norm); /* "all-reduced" normaliser */
        double *dl = calloc((size_t)T + 1, sizeof *dl), *de = calloc((size_t)T + 1, sizeof *de);
        qn_loss_metrics met = {0};
        for (int k = 0; k < 2; k++) {
            int64_t o = cu[k ? split : 0];
            qn_status st = qn_loss_compute(&cfg, &mb[k], &norm, dl + o, de + o, &met);
            if (st != QN_OK) fail_msg("case %s: %s", name, qn_last_error());
        }
        const cJSON *ex = cJSON_GetObjectItemCaseSensitive(cs, "expect");
        double eg = max_rel_err(dl, cJSON_GetObjectItemCaseSensitive(ex, "d_logp"), T);
        double ee = max_rel_err(de, cJSON_GetObjectItemCaseSensitive(ex, "d_entropy"), T);
        printf("  %-30s max rel err d_logp %.2e  d_entropy %.2e\n", name, eg, ee);
        if (!(eg <= GRAD_TOL) || !(ee <= GRAD_TOL))
            fail_msg("case %s: gradient error %.3g / %.3g over %g", name, eg, ee, GRAD_TOL);
        worst_g = fmax(worst_g, eg), worst_e = fmax(worst_e, ee);
        const cJSON *wm = cJSON_GetObjectItemCaseSensitive(ex, "metrics");
        check_metric(name, "loss", met.loss, wm);
        check_metric(name, "pg_loss", met.pg_loss, wm);
        check_metric(name, "pg_clipfrac", met.pg_clipfrac, wm);
        check_metric(name, "ppo_kl", met.ppo_kl, wm);
        check_metric(name, "kl_loss", met.kl_loss, wm);
        check_metric(name, "entropy_loss", met.entropy_loss, wm);
        check_metric(name, "tis", met.tis, wm);
        check_metric(name, "tis_clipfrac", met.tis_clipfrac, wm);
        check_metric(name, "train_rollout_logprob_abs_diff", met.train_rollout_logprob_abs_diff,
                     wm);
        /* the same batch as ONE micro-batch gives the same gradient */
        double *dl1 = calloc((size_t)T + 1, sizeof *dl1);
        qn_loss_norm n1 = {0};
        qn_loss_count(&all, &n1);
        assert_int_equal(qn_loss_compute(&cfg, &all, &n1, dl1, NULL, NULL), QN_OK);
        for (int64_t t = 0; t < T; t++)
            assert_true(fabs(dl1[t] - dl[t]) <= 1e-15 * fmax(1e-300, fabs(dl[t])) + 1e-300);
        free(dl1);
        free(dl), free(de), free(cu), free(cu2), free(logp);
        free((void *)all.old_logp), free((void *)all.ref_logp), free((void *)all.rollout_logp);
        free((void *)all.entropy), free((void *)all.advantage), free((void *)all.loss_mask);
        n_cases++;
    }
    printf("  %d cases; worst max rel err: d_logp %.2e, d_entropy %.2e\n", n_cases, worst_g,
           worst_e);
    assert_true(n_cases >= 15);
    cJSON_Delete(root);
    free(text);
}

/* slime's invariant: when old log-probs equal the current ones, ppo_kl and
 * pg_clipfrac are exactly 0 and the gradient is -A * weight. */
static void test_on_policy_ppo_kl_zero(void **state) {
    float logp[5] = {-0.5f, -1.25f, -3.0f, -0.01f, -2.0f};
    float adv[5] = {1.5f, 1.5f, -0.5f, -0.5f, -0.5f};
    int64_t cu[3] = {0, 2, 5};
    qn_loss_batch b = {.n_samples = 2, .cu_tokens = cu, .logp = logp, .old_logp = logp,
                       .advantage = adv};
    qn_loss_cfg c = {.eps_clip = 0.2, .eps_clip_high = 0.28};
    qn_loss_norm n = {0};
    qn_loss_count(&b, &n);
    double d[5];
    qn_loss_metrics m = {0};
    assert_int_equal(qn_loss_compute(&c, &b, &n, d, NULL, &m), QN_OK);
    assert_true(m.ppo_kl == 0.0);
    assert_true(m.pg_clipfrac == 0.0);
    assert_true(fabs(d[0] - (-1.5 / 2 / 2)) < 1e-15);
    assert_true(fabs(d[4] - (0.5 / 3 / 2)) < 1e-15);
}

static void test_loss_validation(void **state) {
    float x[3] = {-1, -2, -3}, bad[3] = {-1, NAN, -3};
    int64_t cu[2] = {0, 3};
    double d[3];
    qn_loss_cfg c = {.eps_clip = 0.2, .eps_clip_high = 0.2, .use_kl_loss = true,
                     .kl_loss_coef = 0.1};
    qn_loss_batch b = {.n_samples = 1, .cu_tokens = cu, .logp = x, .advantage = x};
    qn_loss_norm n = {1, 3};
    assert_int_equal(qn_loss_compute(&c, &b, &n, d, NULL, NULL), QN_ERR_INVALID);
    assert_non_null(strstr(qn_last_error(), "reference"));
    b.ref_logp = x;
    assert_int_equal(qn_loss_compute(&c, &b, &n, d, NULL, NULL), QN_OK);
    b.logp = bad;
    assert_int_equal(qn_loss_compute(&c, &b, &n, d, NULL, NULL), QN_ERR_RANGE);
    assert_non_null(strstr(qn_last_error(), "token 1"));
    b.logp = x;
    qn_loss_norm zero = {0, 0};
    assert_int_equal(qn_loss_compute(&c, &b, &zero, d, NULL, NULL), QN_ERR_INVALID);
    c.eps_clip_c = 0.5; /* dual clip needs > 1 */
    assert_int_equal(qn_loss_compute(&c, &b, &n, d, NULL, NULL), QN_ERR_RANGE);
    assert_non_null(strstr(qn_last_error(), "--eps-clip-c"));
}

static void test_grpo_advantages(void **state) {
    /* two interleaved groups and a singleton */
    double r[7] = {1, 0, 0.5, 1, 0, 3, 1};
    int64_t g[7] = {7, 3, 7, 7, 3, 9, 3};
    double a[7], b[7];
    assert_int_equal(qn_adv_grpo(r, g, 7, true, a), QN_OK);
    assert_int_equal(qn_adv_grpo(r, g, 7, false, b), QN_OK);
    int64_t ids[2] = {7, 3};
    for (int k = 0; k < 2; k++) { /* per group: mean 0; unbiased std = s/(s+1e-6) */
        double mean = 0, cnt = 0, ss = 0, ma = 0, sa = 0;
        for (int i = 0; i < 7; i++)
            if (g[i] == ids[k]) mean += r[i], cnt++;
        mean /= cnt;
        for (int i = 0; i < 7; i++)
            if (g[i] == ids[k]) ss += (r[i] - mean) * (r[i] - mean), ma += a[i];
        double s = sqrt(ss / (cnt - 1));
        for (int i = 0; i < 7; i++)
            if (g[i] == ids[k]) {
                sa += a[i] * a[i];
                assert_true(fabs(b[i] - (r[i] - mean)) < 1e-15); /* Dr. GRPO */
            }
        assert_true(fabs(ma) < 1e-12);
        assert_true(fabs(sqrt(sa / (cnt - 1)) - s / (s + 1e-6)) < 1e-12);
    }
    assert_true(a[5] == 0.0 && b[5] == 0.0); /* group of one: std 0, advantage 0 */
    double bad[1] = {NAN};
    int64_t g1[1] = {0};
    assert_int_equal(qn_adv_grpo(bad, g1, 1, true, a), QN_ERR_INVALID);
    int64_t cu[3] = {0, 2, 5};
    float tok[5];
    double s2[2] = {0.25, -1.5};
    qn_adv_broadcast(s2, cu, 2, tok);
    assert_true(tok[0] == 0.25f && tok[1] == 0.25f && tok[2] == -1.5f && tok[4] == -1.5f);
}

static void test_metrics_json(void **state) {
    qn_loss_cfg c = {.eps_clip = 0.2, .eps_clip_high = 0.2, .use_kl_loss = true};
    qn_loss_metrics m = {.loss = 0.5, .pg_clipfrac = 0.25, .kl_loss = 0.125};
    char buf[1024];
    int n = qn_loss_metrics_json(&c, &m, false, buf, sizeof buf);
    assert_true(n > 0 && (size_t)n < sizeof buf);
    assert_non_null(strstr(buf, "\"train/loss\": 0.5"));
    assert_non_null(strstr(buf, "\"train/pg_clipfrac\": 0.25"));
    assert_non_null(strstr(buf, "\"train/kl_loss\": 0.125"));
    assert_non_null(strstr(buf, "\"train/entropy_loss\""));
    assert_null(strstr(buf, "train/tis"));
    c.use_kl_loss = false, c.use_tis = true;
    char small[8];
    int need = qn_loss_metrics_json(&c, &m, true, small, sizeof small);
    assert_int_equal(need, qn_loss_metrics_json(&c, &m, true, buf, sizeof buf));
    assert_int_equal(strlen(buf), (size_t)need);
    assert_non_null(strstr(buf, "\"train/tis\""));
    assert_non_null(strstr(buf, "train/train_rollout_logprob_abs_diff"));
    assert_null(strstr(buf, "kl_loss"));
    c.type = QN_LOSS_SFT;
    qn_loss_metrics_json(&c, &m, true, buf, sizeof buf);
    assert_null(strstr(buf, "pg_loss"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss_vs_torch),
        cmocka_unit_test(test_on_policy_ppo_kl_zero),
        cmocka_unit_test(test_loss_validation),
        cmocka_unit_test(test_grpo_advantages),
        cmocka_unit_test(test_metrics_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
