/* test_trainer_optimizer.c — trainer/optimizer.c (AdamW with fp32 states,
 * global-norm clipping, Megatron lr schedule) against torch.optim.AdamW in
 * float64 (tests/ref/adamw_ref.py, run at test time) over several steps with
 * tensors of 1, 2 and 3 dimensions; the state save/load hooks (resume is
 * bit-identical); configuration errors. */
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
#include "trainer/optimizer.h"

#define PARAM_TOL 1e-6 /* relative, fp32 params and states vs a float64 reference */

static double num(const cJSON *o, const char *k) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, k);
    assert_non_null(e);
    return e->valuedouble;
}

static void fill(float *dst, const cJSON *a, int64_t n) {
    int64_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, a) {
        assert_true(i < n);
        dst[i++] = (float)e->valuedouble;
    }
    assert_int_equal(i, n);
}

static void test_adamw_vs_torch(void **state) {
    const char *out = qn_test_path("adamw_cases.json");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/ref/adamw_ref.py '%s'", QN_SOURCE_DIR,
             out);
    int rc = system(cmd);
    if (rc != 0)
        fail_msg("'%s' failed (%d): needs Debian python3-torch, python3-numpy", cmd, rc);
    size_t len;
    char *text = qn_test_read_file(out, &len);
    cJSON *root = cJSON_Parse(text);
    assert_non_null(root);
    const cJSON *cs;
    double worst = 0;
    int n_cases = 0;
    cJSON_ArrayForEach(cs, cJSON_GetObjectItemCaseSensitive(root, "cases")) {
        const char *name = cJSON_GetObjectItemCaseSensitive(cs, "name")->valuestring;
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(cs, "cfg");
        const char *style = cJSON_GetObjectItemCaseSensitive(c, "style")->valuestring;
        qn_adamw_cfg cfg = {
            .lr = num(c, "lr"), .min_lr = num(c, "min_lr"),
            .decay_style = !strcmp(style, "constant") ? QN_LR_CONSTANT
                           : !strcmp(style, "linear") ? QN_LR_LINEAR
                                                      : QN_LR_COSINE,
            .warmup_iters = (int64_t)num(c, "warmup"), .decay_iters = (int64_t)num(c, "decay_iters"),
            .weight_decay = num(c, "wd"), .beta1 = num(c, "b1"), .beta2 = num(c, "b2"),
            .eps = num(c, "eps"), .clip_grad = num(c, "clip")};
        const cJSON *tj = cJSON_GetObjectItemCaseSensitive(cs, "tensors"), *t;
        qn_opt_tensor info[16];
        size_t nt = 0;
        int64_t n = 0;
        cJSON_ArrayForEach(t, tj) {
            assert_true(nt < 16);
            info[nt] = (qn_opt_tensor){
                .name = cJSON_GetObjectItemCaseSensitive(t, "name")->valuestring,
                .offset = (int64_t)num(t, "offset"), .size = (int64_t)num(t, "size"),
                .ndim = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(t, "shape"))};
            n = info[nt].offset + info[nt].size;
            nt++;
        }
        float *p = malloc((size_t)n * sizeof *p), *g = malloc((size_t)n * sizeof *g);
        fill(p, cJSON_GetObjectItemCaseSensitive(cs, "params0"), n);
        qn_adamw opt;
        assert_int_equal(qn_adamw_init(&opt, &cfg, info, nt, n), QN_OK);
        const cJSON *grads = cJSON_GetObjectItemCaseSensitive(cs, "grads");
        const cJSON *ex = cJSON_GetObjectItemCaseSensitive(cs, "expect");
        int steps = cJSON_GetArraySize(grads);
        double case_worst = 0;
        for (int s = 0; s < steps; s++) {
            fill(g, cJSON_GetArrayItem(grads, s), n);
            qn_adamw_step_info si;
            assert_int_equal(qn_adamw_step(&opt, p, g, &si), QN_OK);
            double want_lr = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(ex, "lr"), s)
                                 ->valuedouble;
            double want_norm =
                cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(ex, "grad_norm"), s)
                    ->valuedouble;
            if (!(fabs(si.lr - want_lr) <= 1e-15 * fmax(want_lr, 1e-300) + 1e-300))
                fail_msg("case %s step %d: lr %.17g, reference %.17g", name, s, si.lr, want_lr);
            if (!(fabs(si.grad_norm - want_norm) <= 1e-12 * want_norm))
                fail_msg("case %s step %d: grad norm %.17g, reference %.17g", name, s,
                         si.grad_norm, want_norm);
            const cJSON *wp = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(ex, "params"), s);
            double scale = 0, err = 0;
            int64_t i = 0;
            const cJSON *e;
            cJSON_ArrayForEach(e, wp) {
                assert_true(isfinite(p[i]));
                scale = fmax(scale, fabs(e->valuedouble));
                err = fmax(err, fabs(p[i] - e->valuedouble));
                i++;
            }
            double rel = err / scale;
            case_worst = fmax(case_worst, rel);
            if (!(rel <= PARAM_TOL))
                fail_msg("case %s step %d: params off by %.3g relative", name, s, rel);
        }
        printf("  %-24s %d steps, max rel param err %.2e\n", name, steps, case_worst);
        worst = fmax(worst, case_worst);
        qn_adamw_free(&opt);
        free(p), free(g);
        n_cases++;
    }
    printf("  %d cases; worst max rel param err %.2e\n", n_cases, worst);
    assert_true(n_cases >= 4);
    cJSON_Delete(root);
    free(text);
}

static void test_adamw_resume_bit_identical(void **state) {
    qn_opt_tensor info[2] = {{"w", 0, 12, 2}, {"b", 12, 3, 1}};
    qn_adamw_cfg cfg = {.lr = 1e-2, .min_lr = 1e-4, .decay_style = QN_LR_COSINE,
                        .warmup_iters = 1, .decay_iters = 6, .weight_decay = 0.1, .beta1 = 0.9,
                        .beta2 = 0.999, .eps = 1e-8, .clip_grad = 0.5};
    float pa[15], pb[15], g[15];
    for (int i = 0; i < 15; i++) pa[i] = pb[i] = 0.1f * (float)(i - 7);
    qn_adamw a, b, c;
    assert_int_equal(qn_adamw_init(&a, &cfg, info, 2, 15), QN_OK);
    assert_int_equal(qn_adamw_init(&b, &cfg, info, 2, 15), QN_OK);
    for (int s = 0; s < 8; s++) {
        for (int i = 0; i < 15; i++) g[i] = sinf((float)(s * 15 + i));
        assert_int_equal(qn_adamw_step(&a, pa, g, NULL), QN_OK);
        if (s == 3) { /* checkpoint b, restore into a fresh optimizer c */
            assert_int_equal(qn_adamw_init(&c, &cfg, info, 2, 15), QN_OK);
            assert_int_equal(qn_adamw_set_state(&c, b.step, b.m, b.v, b.n), QN_OK);
            qn_adamw_free(&b);
            b = c;
        }
        for (int i = 0; i < 15; i++) g[i] = sinf((float)(s * 15 + i));
        assert_int_equal(qn_adamw_step(&b, pb, g, NULL), QN_OK);
    }
    assert_memory_equal(pa, pb, sizeof pa);
    assert_int_equal(qn_adamw_set_state(&b, 1, b.m, b.v, 14), QN_ERR_INVALID);
    g[3] = NAN; /* a non-finite gradient skips the step and says so */
    float before[15];
    memcpy(before, pa, sizeof pa);
    assert_int_equal(qn_adamw_step(&a, pa, g, NULL), QN_ERR_RANGE);
    assert_memory_equal(before, pa, sizeof pa);
    qn_adamw_free(&a), qn_adamw_free(&b);
}

static void test_adamw_config_errors(void **state) {
    qn_adamw_cfg ok = {.lr = 1e-3, .decay_style = QN_LR_CONSTANT, .beta1 = 0.9, .beta2 = 0.999,
                       .eps = 1e-8, .clip_grad = 1.0};
    assert_int_equal(qn_adamw_cfg_check(&ok), QN_OK);
    qn_adamw_cfg c = ok;
    c.beta2 = 1.0;
    assert_int_equal(qn_adamw_cfg_check(&c), QN_ERR_RANGE);
    assert_non_null(strstr(qn_last_error(), "--adam-beta2"));
    c = ok, c.min_lr = 1.0;
    assert_int_equal(qn_adamw_cfg_check(&c), QN_ERR_RANGE);
    c = ok, c.decay_style = QN_LR_LINEAR, c.warmup_iters = 5, c.decay_iters = 5;
    assert_int_equal(qn_adamw_cfg_check(&c), QN_ERR_RANGE);
    assert_non_null(strstr(qn_last_error(), "--lr-decay-iters"));
    qn_opt_tensor bad[2] = {{"a", 0, 10, 2}, {"b", 8, 4, 1}};
    qn_adamw o;
    assert_int_equal(qn_adamw_init(&o, &ok, bad, 2, 12), QN_ERR_INVALID);
    assert_non_null(strstr(qn_last_error(), "overlap"));
    qn_opt_tensor out[1] = {{"c", 4, 10, 2}};
    assert_int_equal(qn_adamw_init(&o, &ok, out, 1, 12), QN_ERR_INVALID);
    assert_non_null(strstr(qn_last_error(), "'c'"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adamw_vs_torch),
        cmocka_unit_test(test_adamw_resume_bit_identical),
        cmocka_unit_test(test_adamw_config_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
