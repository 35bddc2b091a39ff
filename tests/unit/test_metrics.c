/* test_metrics.c — core/io/metrics.h: lines of several processes in mixed
 * order become one series per metric sorted by rollout_id, with the lines
 * of one rollout averaged; lines without rollout_id are ignored; malformed
 * lines are refused (and skipped with FILE:LINE by the loader). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/io/metrics.h"
#include "tests/test_util.h"

static qn_status add(qn_metrics *m, const char *line) {
    return qn_metrics_add_line(m, line, strlen(line));
}

static void test_average_and_order(void **state) {
    qn_metrics m;
    qn_metrics_init(&m);
    /* per-step trainer lines, a buffer line, in scrambled order */
    double pg[3][3] = {{2, 0.5, 0.7}, {0, 0.25, 0.75}, {1, 0.1, 0.3}}; /* rollout, two steps */
    char line[256];
    for (int i = 0; i < 3; i++)
        for (int k = 1; k <= 2; k++) {
            snprintf(line, sizeof line,
                     "{\"rollout_id\": %g, \"step\": %d, \"train/pg_clipfrac\": %g}", pg[i][0],
                     k, pg[i][k]);
            assert_int_equal(add(&m, line), QN_OK);
        }
    assert_int_equal(add(&m, "{\"rollout_id\": 1, \"rollout/raw_reward\": 0.5, \"note\": \"x\"}"),
                     QN_OK);
    assert_int_equal(add(&m, "{\"step\": 3, \"train/pg_clipfrac\": 9}"), QN_OK); /* ignored */
    /* nothing numeric besides rollout_id: ignored too */
    assert_int_equal(add(&m, "{\"rollout_id\": 4, \"flag\": true}"), QN_OK);
    assert_int_equal(m.lines_used, 7);
    assert_int_equal(m.lines_ignored, 2);
    qn_metrics_finish(&m);
    const qn_metric_series *s = qn_metrics_get(&m, "train/pg_clipfrac");
    assert_non_null(s);
    assert_int_equal(s->n, 3);
    for (size_t i = 0; i < 3; i++) {
        /* the row of pg[] whose rollout is i */
        size_t r = 0;
        while (pg[r][0] != (double)i) r++;
        assert_true(isfinite(s->pts[i].y));
        assert_true(s->pts[i].x == (double)i);
        assert_true(fabs(s->pts[i].y - (pg[r][1] + pg[r][2]) / 2) < 1e-12);
    }
    s = qn_metrics_get(&m, "rollout/raw_reward");
    assert_non_null(s);
    assert_int_equal(s->n, 1);
    assert_null(qn_metrics_get(&m, "note"));
    assert_null(qn_metrics_get(&m, "flag"));
    assert_null(qn_metrics_get(&m, "rollout_id"));
    qn_metrics_free(&m);
}

static void test_malformed(void **state) {
    qn_metrics m;
    qn_metrics_init(&m);
    const char *bad[] = {
        "{\"rollout_id\": 3, \"train/pg_loss\": 0.",  /* truncated mid-write */
        "[1, 2]",
        "{\"rollout_id\": \"3\", \"train/pg_loss\": 1}",
        "{\"rollout_id\": 1} {\"rollout_id\": 2}",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(add(&m, bad[i]), QN_ERR_FORMAT);
    assert_int_equal(m.n_series, 0);
    assert_int_equal(m.lines_used, 0);
    /* an overflowing value is skipped, the rest of the line kept */
    assert_int_equal(add(&m, "{\"rollout_id\": 1, \"a\": 1e999, \"b\": 2}"), QN_OK);
    assert_null(qn_metrics_get(&m, "a"));
    assert_non_null(qn_metrics_get(&m, "b"));
    qn_metrics_free(&m);
}

static void warn_collect(const char *msg, void *user) {
    char *acc = user;
    strncat(acc, msg, 1023 - strlen(acc));
    strncat(acc, "\n", 1023 - strlen(acc));
}

static void test_load_file(void **state) {
    const char *text = "{\"rollout_id\": 0, \"eval/accuracy\": 0.5}\n"
                       "not json\n"
                       "\n"
                       "{\"rollout_id\": 0, \"eval/accuracy\": 0.7}\n"
                       "{\"rollout_id\": 1, \"eval/acc";
    const char *path = qn_test_path("metrics.jsonl");
    qn_test_write_file(path, text, strlen(text));
    qn_metrics m;
    qn_metrics_init(&m);
    char warnings[1024] = "";
    size_t malformed = 0;
    assert_int_equal(qn_metrics_load(&m, path, warn_collect, warnings, &malformed), QN_OK);
    assert_int_equal(malformed, 2);
    char want[600];
    snprintf(want, sizeof want, "%s:2:", path);
    assert_non_null(strstr(warnings, want));
    snprintf(want, sizeof want, "%s:5:", path);
    assert_non_null(strstr(warnings, want));
    const qn_metric_series *s = qn_metrics_get(&m, "eval/accuracy");
    assert_non_null(s);
    assert_int_equal(s->n, 1);
    assert_true(fabs(s->pts[0].y - 0.6) < 1e-12);
    qn_metrics_free(&m);
    qn_metrics_init(&m);
    assert_int_equal(qn_metrics_load(&m, qn_test_path("missing.jsonl"), NULL, NULL, NULL),
                     QN_ERR_IO);
    qn_metrics_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_average_and_order),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_load_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
