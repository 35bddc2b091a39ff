/* test_metrics_line.c — core/io/metrics_line.h and the writers built on it:
 * a value that is not finite comes out as null (valid JSON) from
 * qn_metrics_num, qn_metrics_num_fixed, the trainer's loss metrics
 * (qn_loss_metrics_json) and cJSON lines; finite values round-trip; lines
 * appended by two writers of one file stay whole and in order; a file that
 * cannot be opened is QN_ERR_IO naming it. */
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
#include <unistd.h>

#include "core/io/metrics.h"
#include "core/io/metrics_line.h"
#include "tests/test_util.h"
#include "trainer/loss.h"

/* text parses as one JSON object whose member key is null */
static void assert_null_member(const char *text, const char *key) {
    cJSON *j = cJSON_Parse(text);
    if (!j) fail_msg("not JSON: %s", text);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    assert_non_null(v);
    assert_true(cJSON_IsNull(v));
    cJSON_Delete(j);
}

static void test_numbers(void **state) {
    (void)state;
    assert_string_equal(qn_metrics_num(NAN).s, "null");
    assert_string_equal(qn_metrics_num(INFINITY).s, "null");
    assert_string_equal(qn_metrics_num(-INFINITY).s, "null");
    assert_string_equal(qn_metrics_num_fixed(NAN, 6).s, "null");
    assert_string_equal(qn_metrics_num_fixed(-INFINITY, 3).s, "null");
    /* finite values: %.17g round-trips, the fixed form keeps its decimals */
    double xs[] = {0.0, -0.0, 1.0 / 3.0, -2.5e-300, 1.7976931348623157e308, 4.9e-324};
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
        const char *t = qn_metrics_num(xs[i]).s;
        assert_true(strtod(t, NULL) == xs[i]);
    }
    assert_string_equal(qn_metrics_num_fixed(1.25, 3).s, "1.250");
    assert_string_equal(qn_metrics_num_fixed(2.0 / 3.0, 6).s, "0.666667");
    /* too large for a fixed form in the buffer: still a number, and the same one */
    const char *big = qn_metrics_num_fixed(-1e300, 6).s;
    assert_true(strtod(big, NULL) == -1e300);
    /* used inline, several in one call */
    char line[200];
    snprintf(line, sizeof line, "{\"a\": %s, \"b\": %s, \"c\": %s}", qn_metrics_num(0.5).s,
             qn_metrics_num(NAN).s, qn_metrics_num_fixed(INFINITY, 6).s);
    assert_string_equal(line, "{\"a\": 0.5, \"b\": null, \"c\": null}");
    assert_null_member(line, "b");
}

/* the trainer's per-step metrics with a loss that blew up */
static void test_loss_metrics_not_finite(void **state) {
    (void)state;
    qn_loss_cfg c = {.eps_clip = 0.2, .eps_clip_high = 0.2, .use_kl_loss = true, .use_tis = true};
    qn_loss_metrics m = {
        .loss = NAN, .pg_loss = INFINITY, .pg_clipfrac = 0.25, .kl_loss = -INFINITY, .tis = NAN};
    char buf[1024], line[1100];
    int n = qn_loss_metrics_json(&c, &m, true, buf, sizeof buf);
    assert_true(n > 0 && (size_t)n < sizeof buf);
    assert_null(strstr(buf, "nan"));
    assert_null(strstr(buf, "inf"));
    snprintf(line, sizeof line, "{\"rollout_id\": 3, %s}", buf);
    assert_null_member(line, "train/loss");
    assert_null_member(line, "train/pg_loss");
    assert_null_member(line, "train/kl_loss");
    assert_null_member(line, "train/tis");
    /* the plot reader takes the line and keeps the finite values */
    qn_metrics r;
    qn_metrics_init(&r);
    assert_int_equal(qn_metrics_add_line(&r, line, strlen(line)), QN_OK);
    assert_non_null(qn_metrics_get(&r, "train/pg_clipfrac"));
    assert_null(qn_metrics_get(&r, "train/loss"));
    qn_metrics_free(&r);
    c.type = QN_LOSS_SFT;
    qn_loss_metrics_json(&c, &m, false, buf, sizeof buf);
    assert_string_equal(buf, "\"train/loss\": null");
}

static void test_append_lines(void **state) {
    (void)state;
    char path[1024]; /* qn_test_path's buffer is reused by the next call */
    snprintf(path, sizeof path, "%s", qn_test_path("metrics_line.jsonl"));
    unlink(path);
    int a = -1, b = -1;
    assert_int_equal(qn_metrics_open_append(path, &a), QN_OK);
    assert_int_equal(qn_metrics_open_append(path, &b), QN_OK);
    const char *l1 = "{\"rollout_id\": 0, \"x\": 1}\n";
    assert_int_equal(qn_metrics_write_line(a, l1, strlen(l1)), QN_OK);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "rollout_id", 0);
    cJSON_AddNumberToObject(j, "y", NAN); /* cJSON writes null too */
    assert_int_equal(qn_metrics_write_json(b, j), QN_OK);
    cJSON_Delete(j);
    const char *l3 = "{\"rollout_id\": 1, \"x\": 2}\n";
    assert_int_equal(qn_metrics_write_line(a, l3, strlen(l3)), QN_OK); /* O_APPEND: at the end */
    close(a);
    close(b);
    size_t len = 0;
    char *txt = qn_test_read_file(path, &len);
    assert_non_null(txt);
    assert_string_equal(txt, "{\"rollout_id\": 0, \"x\": 1}\n{\"rollout_id\":0,\"y\":null}\n"
                             "{\"rollout_id\": 1, \"x\": 2}\n");
    free(txt);
    /* errors name the file; a closed descriptor fails the write */
    int bad = -1;
    assert_int_equal(qn_metrics_open_append(qn_test_path("no-such-dir/m.jsonl"), &bad), QN_ERR_IO);
    assert_non_null(strstr(qn_last_error(), "no-such-dir/m.jsonl"));
    assert_true(bad < 0);
    assert_int_equal(qn_metrics_write_line(a, l1, strlen(l1)), QN_ERR_IO);
    unlink(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_loss_metrics_not_finite),
        cmocka_unit_test(test_append_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
