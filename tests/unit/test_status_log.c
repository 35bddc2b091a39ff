/* test_status_log.c — status names/strings, the error buffer, the check
 * macros' control flow, and the log line layout and level filter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "quench/status.h"

static void test_status_names(void **state) {
    assert_string_equal(qn_status_name(QN_OK), "QN_OK");
    assert_string_equal(qn_status_str(QN_OK), "success");
    assert_string_equal(qn_status_name(QN_ERR_FORMAT), "QN_ERR_FORMAT");
    assert_string_equal(qn_status_str(QN_ERR_FORMAT), "malformed input");
    assert_string_equal(qn_status_name((qn_status)-999), "QN_UNKNOWN");
    assert_string_equal(qn_status_str((qn_status)12345), "unknown status");
    /* every listed status has a distinct name */
#define NAME_(n, v, d) qn_status_name(n),
    const char *names[] = {QN_STATUS_LIST(NAME_)};
#undef NAME_
    size_t n = sizeof names / sizeof names[0];
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++) assert_string_not_equal(names[i], names[j]);
}

static void test_fail_message(void **state) {
    qn_clear_error();
    assert_string_equal(qn_last_error(), "");
    qn_status s = qn_fail(QN_ERR_RANGE, "%s: value %d", "x.json", 7);
    assert_int_equal(s, QN_ERR_RANGE);
    assert_string_equal(qn_last_error(), "x.json: value 7");
    /* wrapping the previous message (it is read while the new one is written) */
    qn_fail(QN_ERR_IO, "tensor 'w': %s", qn_last_error());
    assert_string_equal(qn_last_error(), "tensor 'w': x.json: value 7");
    qn_fail(QN_ERR_IO, "%s (%s)", "ctx", qn_last_error());
    assert_string_equal(qn_last_error(), "ctx (tensor 'w': x.json: value 7)");
}

static int g_after_fail;
static qn_status inner(int ok) { return ok ? QN_OK : qn_fail(QN_ERR_IO, "disk"); }
static qn_status outer(int ok) {
    QN_CHECK(inner(ok));
    g_after_fail = 1;
    return QN_OK;
}
static qn_status outer_goto(int ok, int *cleaned) {
    qn_status s = QN_OK;
    QN_CHECK_GOTO(inner(ok), s, done);
    g_after_fail = 1;
done:
    *cleaned = 1;
    return s;
}

static void test_check_macros(void **state) {
    g_after_fail = 0;
    assert_int_equal(outer(0), QN_ERR_IO);
    assert_int_equal(g_after_fail, 0);
    assert_int_equal(outer(1), QN_OK);
    assert_int_equal(g_after_fail, 1);
    int cleaned = 0;
    g_after_fail = 0;
    assert_int_equal(outer_goto(0, &cleaned), QN_ERR_IO);
    assert_int_equal(cleaned, 1);
    assert_int_equal(g_after_fail, 0);
}

static void test_check_trace_logged(void **state) {
    /* At debug level the check macros log the failing path. */
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    qn_log_set_stream(mem);
    qn_log_set_level(QN_LOG_DEBUG);
    assert_int_equal(outer(0), QN_ERR_IO);
    fflush(mem);
    qn_log_set_stream(NULL);
    qn_log_set_level(QN_LOG_INFO);
    fclose(mem);
    assert_non_null(strstr(buf, "test_status_log.c:"));
    assert_non_null(strstr(buf, "-> QN_ERR_IO"));
    free(buf);
}

static void test_log_format(void **state) {
    char line[256];
    /* 2026-11-22 20:40:01.123 UTC */
    size_t n = qn_log_format(line, sizeof line, QN_LOG_WARN, "router", 3, 1795380001123LL,
                             "net/x.c", 42, "hello");
    assert_string_equal(line, "2026-11-22 20:40:01.123 W router:3 net/x.c:42] hello\n");
    assert_int_equal(n, strlen(line));
    qn_log_format(line, sizeof line, QN_LOG_INFO, "train", -1, 0, "a.c", 1, "m");
    assert_string_equal(line, "1970-01-01 00:00:00.000 I train a.c:1] m\n");
    /* truncation keeps a terminating newline */
    char small[16];
    n = qn_log_format(small, sizeof small, QN_LOG_INFO, "train", 0, 0, "a.c", 1, "long message");
    assert_int_equal(n, 15);
    assert_int_equal(small[14], '\n');
}

static void test_log_level_filter(void **state) {
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    qn_log_set_stream(mem);
    qn_log_set_level(QN_LOG_WARN);
    QN_LOG_INFO("not shown");
    QN_LOG_WARN("shown %d", 1);
    QN_LOG_ERROR("also shown");
    fflush(mem);
    qn_log_set_stream(NULL);
    qn_log_set_level(QN_LOG_INFO);
    fclose(mem);
    assert_null(strstr(buf, "not shown"));
    assert_non_null(strstr(buf, " W "));
    assert_non_null(strstr(buf, "shown 1\n"));
    assert_non_null(strstr(buf, " E "));
    free(buf);
}

static void test_log_level_parse(void **state) {
    qn_log_level l;
    assert_int_equal(qn_log_level_parse("DEBUG", &l), QN_OK);
    assert_int_equal(l, QN_LOG_DEBUG);
    assert_int_equal(qn_log_level_parse("warning", &l), QN_OK);
    assert_int_equal(l, QN_LOG_WARN);
    assert_int_equal(qn_log_level_parse("loud", &l), QN_ERR_INVALID);
    assert_non_null(strstr(qn_last_error(), "loud"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_names),     cmocka_unit_test(test_fail_message),
        cmocka_unit_test(test_check_macros),     cmocka_unit_test(test_check_trace_logged),
        cmocka_unit_test(test_log_format),       cmocka_unit_test(test_log_level_filter),
        cmocka_unit_test(test_log_level_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
