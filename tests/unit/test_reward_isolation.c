/* test_reward_isolation.c — the plugin loader and the worker pool against
 * misbehaving plugins (tests/rewards/plugins): one that segfaults, one that
 * loops forever, one that returns NaN/Inf/errors, one that leaks memory
 * heavily. The caller must survive each, the sample must carry the right
 * status, and the pool must replace dead workers and keep scoring. Also: the
 * loader picks the newest ABI version it knows, refuses unknown versions,
 * group scoring, init config/failure, --reward-key, failure policies, and
 * that samples cross the process border intact. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rewards/rewards.h"

/* Test plugins are built into <build>/lib; this executable is <build>/tests/x. */
static const char *plugin(const char *name) {
    static char path[PATH_MAX + 64];
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    assert_true(n > 0);
    exe[n] = '\0';
    char *dir = dirname(exe);
    snprintf(path, sizeof path, "%s/../lib/qn_testplug_%s.so", dir, name);
    assert_int_equal(access(path, R_OK), 0);
    return path;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static qn_reward_sample mk(const char *label, const char *response) {
    return (qn_reward_sample){.prompt = "p",
                              .prompt_len = 1,
                              .response = response,
                              .response_len = strlen(response),
                              .label = label,
                              .metadata_json = "{}",
                              .finish_reason = "stop"};
}

static qn_reward *open_plugin(const char *name, qn_reward_isolation iso, double timeout,
                              int32_t workers) {
    qn_reward_config c = qn_reward_config_default();
    c.custom_rm_path = plugin(name);
    c.isolation = iso;
    c.timeout_s = timeout;
    c.n_workers = workers;
    qn_reward *rw = NULL;
    qn_status s = qn_reward_init(&rw, &c);
    if (s != QN_OK) fprintf(stderr, "init: %s\n", qn_last_error());
    assert_int_equal(s, QN_OK);
    return rw;
}

static void score(qn_reward *rw, const qn_reward_sample *s, size_t n, qn_reward_score *out,
                  bool *kept) {
    qn_reward_batch b = {.samples = s, .n_samples = n, .scores = out, .group_kept = kept};
    qn_status st = qn_reward_score_batch(rw, &b);
    if (st != QN_OK) fprintf(stderr, "score: %s\n", qn_last_error());
    assert_int_equal(st, QN_OK);
}

static void test_segfault(void **state) {
    qn_reward *rw = open_plugin("segv", QN_REWARD_ISOLATION_PROCESS, 5.0, 2);
    qn_reward_sample s[6] = {mk("ok", "a"),    mk("crash", "b"), mk("ok", "c"),
                             mk("crash", "d"), mk("ok", "e"),    mk("ok", "f")};
    qn_reward_score out[6];
    bool kept[6];
    score(rw, s, 6, out, kept);
    for (int i = 0; i < 6; i++) {
        bool crash = strcmp(s[i].label, "crash") == 0;
        assert_int_equal(out[i].status, crash ? QN_REWARD_CRASH : QN_REWARD_OK);
        if (crash) {
            assert_true(isnan(out[i].value));
            assert_non_null(strstr(out[i].message, "signal 11"));
            assert_false(kept[i]); /* default policy: drop the group */
        } else {
            assert_true(out[i].value == 1.0);
            assert_true(kept[i]);
        }
    }
    qn_reward_stats st;
    qn_reward_get_stats(rw, &st);
    assert_int_equal(st.by_status[QN_REWARD_CRASH], 2);
    assert_int_equal(st.groups_dropped, 2);
    assert_true(st.worker_restarts >= 2);
    /* the replaced workers keep working */
    qn_reward_sample again[4] = {mk("ok", "a"), mk("ok", "b"), mk("ok", "c"), mk("ok", "d")};
    score(rw, again, 4, out, NULL);
    for (int i = 0; i < 4; i++)
        assert_int_equal(out[i].status, QN_REWARD_OK);
    qn_reward_free(rw);
}

static void test_infinite_loop(void **state) {
    qn_reward *rw = open_plugin("loop", QN_REWARD_ISOLATION_PROCESS, 0.3, 2);
    qn_reward_sample s[4] = {mk("hang", "a"), mk("ok", "b"), mk("hang", "c"), mk("ok", "d")};
    qn_reward_score out[4];
    double t0 = now_s();
    score(rw, s, 4, out, NULL);
    double dt = now_s() - t0;
    fprintf(stderr, "two hanging samples with a 0.3 s timeout took %.2f s\n", dt);
    assert_true(dt < 3.0);
    assert_int_equal(out[0].status, QN_REWARD_TIMEOUT);
    assert_int_equal(out[2].status, QN_REWARD_TIMEOUT);
    assert_non_null(strstr(out[0].message, "no answer within"));
    assert_int_equal(out[1].status, QN_REWARD_OK);
    assert_int_equal(out[3].status, QN_REWARD_OK);
    qn_reward_stats st;
    qn_reward_get_stats(rw, &st);
    assert_int_equal(st.by_status[QN_REWARD_TIMEOUT], 2);
    assert_true(st.worker_restarts >= 2);
    score(rw, s + 1, 1, out, NULL);
    assert_int_equal(out[0].status, QN_REWARD_OK);
    qn_reward_free(rw);
}

static void check_nan_plugin(qn_reward_isolation iso) {
    qn_reward *rw = open_plugin("nan", iso, 5.0, 1);
    qn_reward_sample s[4] = {mk("nan", "a"), mk("inf", "b"), mk("error", "c"), mk("ok", "d")};
    qn_reward_score out[4];
    score(rw, s, 4, out, NULL);
    assert_int_equal(out[0].status, QN_REWARD_NON_FINITE);
    assert_non_null(strstr(out[0].message, "NaN"));
    assert_int_equal(out[1].status, QN_REWARD_NON_FINITE);
    assert_int_equal(out[2].status, QN_REWARD_ERROR);
    assert_string_equal(out[2].message, "label says error");
    assert_int_equal(out[3].status, QN_REWARD_OK);
    assert_true(out[3].value == 0.5);
    for (int i = 0; i < 3; i++)
        assert_true(isnan(out[i].value));
    qn_reward_free(rw);
}

static void test_nan_process(void **state) {
    check_nan_plugin(QN_REWARD_ISOLATION_PROCESS);
}
static void test_nan_inline(void **state) {
    check_nan_plugin(QN_REWARD_ISOLATION_INLINE);
}

static int64_t self_rss_mb(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long size, rss;
    assert_int_equal(fscanf(f, "%ld %ld", &size, &rss), 2);
    fclose(f);
    return (int64_t)rss * sysconf(_SC_PAGESIZE) / (1024 * 1024);
}

static void test_memory_leak(void **state) {
    int64_t rss0 = self_rss_mb();
    qn_reward_config c = qn_reward_config_default();
    c.custom_rm_path = plugin("leak");
    c.n_workers = 1;
    c.worker_memory_mb = 128;
    c.timeout_s = 20;
    qn_reward *rw = NULL;
    assert_int_equal(qn_reward_init(&rw, &c), QN_OK);
    /* every call leaks 24 MiB: the worker passes 128 MiB after a few calls
     * and is recycled between samples; every sample still scores */
    enum { N = 16 };
    qn_reward_sample s[N];
    for (int i = 0; i < N; i++)
        s[i] = mk("ok", "x");
    qn_reward_score out[N];
    score(rw, s, N, out, NULL);
    for (int i = 0; i < N; i++)
        assert_int_equal(out[i].status, QN_REWARD_OK);
    qn_reward_stats st;
    qn_reward_get_stats(rw, &st);
    fprintf(stderr, "leak: %d samples, %llu recycles\n", N, (unsigned long long)st.worker_recycles);
    assert_true(st.worker_recycles >= 2);
    /* a runaway allocation inside one sample is killed there */
    qn_reward_sample hog[3] = {mk("ok", "a"), mk("hog", "b"), mk("ok", "c")};
    score(rw, hog, 3, out, NULL);
    assert_int_equal(out[0].status, QN_REWARD_OK);
    assert_int_equal(out[1].status, QN_REWARD_MEMORY);
    assert_non_null(strstr(out[1].message, "128 MiB"));
    assert_int_equal(out[2].status, QN_REWARD_OK);
    qn_reward_free(rw);
    /* none of it landed in the caller */
    assert_true(self_rss_mb() - rss0 < 64);
}

static void test_newest_known_version(void **state) {
    char spec[PATH_MAX + 64];
    snprintf(spec, sizeof spec, "%s:ranker", plugin("versions"));
    qn_reward_config c = qn_reward_config_default();
    c.custom_rm_path = spec;
    c.rm_config = "bonus=0.25";
    c.n_workers = 2;
    qn_reward *rw = NULL;
    assert_int_equal(qn_reward_init(&rw, &c), QN_OK);
    assert_non_null(strstr(qn_reward_name(rw), "ranker (abi v1)"));
    /* two groups: score_group sees each whole group at once */
    qn_reward_sample s[5] = {mk("", "short"), mk("", "the longest one"), mk("", "mid one"),
                             mk("", "xx"), mk("", "xyz")};
    uint32_t sizes[2] = {3, 2};
    qn_reward_score out[5];
    bool kept[2];
    qn_reward_batch b = {.samples = s,
                         .n_samples = 5,
                         .group_sizes = sizes,
                         .n_groups = 2,
                         .scores = out,
                         .group_kept = kept};
    assert_int_equal(qn_reward_score_batch(rw, &b), QN_OK);
    double want[5] = {0.25, 1.25, 0.25, 0.25, 1.25};
    double gsize[5] = {3, 3, 3, 2, 2};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(out[i].status, QN_REWARD_OK);
        assert_true(fabs(out[i].value - want[i]) < 1e-12);
        assert_true(out[i].named[0] == gsize[i]);
    }
    assert_true(kept[0] && kept[1]);
    /* bad group sizes are refused */
    uint32_t bad[2] = {3, 3};
    b.group_sizes = bad;
    assert_int_equal(qn_reward_score_batch(rw, &b), QN_ERR_INVALID);
    qn_reward_free(rw);

    /* init's error reaches the caller */
    c.rm_config = "fail";
    assert_int_equal(qn_reward_init(&rw, &c), QN_ERR_INVALID);
    assert_non_null(strstr(qn_last_error(), "config asked to fail"));
    c.isolation = QN_REWARD_ISOLATION_INLINE;
    assert_int_equal(qn_reward_init(&rw, &c), QN_ERR_INVALID);
    assert_non_null(strstr(qn_last_error(), "config asked to fail"));
}

static void test_load_errors(void **state) {
    qn_reward_config c = qn_reward_config_default();
    qn_reward *rw = NULL;
    c.custom_rm_path = plugin("future");
    assert_int_equal(qn_reward_init(&rw, &c), QN_ERR_VERSION);
    assert_non_null(strstr(qn_last_error(), "qn_reward_plugin_v7"));
    c.custom_rm_path = "/nonexistent/plugin.so";
    assert_int_equal(qn_reward_init(&rw, &c), QN_ERR_IO);
    assert_non_null(strstr(qn_last_error(), "/nonexistent/plugin.so"));
    char spec[PATH_MAX + 64];
    snprintf(spec, sizeof spec, "%s:no_such_table", plugin("nan"));
    c.custom_rm_path = spec;
    assert_int_equal(qn_reward_init(&rw, &c), QN_ERR_NOT_FOUND);
    assert_non_null(strstr(qn_last_error(), "no_such_table_v1"));
    c.custom_rm_path = NULL;
    c.rm_type = "nope";
    assert_int_equal(qn_reward_init(&rw, &c), QN_ERR_NOT_FOUND);
    assert_non_null(strstr(qn_last_error(), "math|deepscaler"));
    c.rm_type = "math";
    c.custom_rm_path = plugin("nan");
    assert_int_equal(qn_reward_init(&rw, &c), QN_ERR_INVALID);
    assert_null(rw);
}

static void test_reward_key(void **state) {
    qn_reward_config c = qn_reward_config_default();
    c.custom_rm_path = plugin("nan");
    c.reward_key = "half";
    c.n_workers = 1;
    qn_reward *rw = NULL;
    assert_int_equal(qn_reward_init(&rw, &c), QN_OK);
    qn_reward_sample s = mk("ok", "x");
    qn_reward_score out;
    score(rw, &s, 1, &out, NULL);
    assert_int_equal(out.status, QN_REWARD_OK);
    assert_true(out.value == 0.5);
    qn_reward_free(rw);
    c.reward_key = "absent";
    assert_int_equal(qn_reward_init(&rw, &c), QN_OK);
    score(rw, &s, 1, &out, NULL);
    assert_int_equal(out.status, QN_REWARD_MISSING_KEY);
    assert_non_null(strstr(out.message, "half"));
    qn_reward_free(rw);
}

static void test_failure_policies(void **state) {
    qn_reward_sample s[4] = {mk("ok", "a"), mk("crash", "b"), mk("ok", "c"), mk("ok", "d")};
    uint32_t sizes[2] = {2, 2};
    qn_reward_score out[4];
    bool kept[2];
    qn_reward_config c = qn_reward_config_default();
    c.custom_rm_path = plugin("segv");
    c.n_workers = 2;
    qn_reward *rw = NULL;

    c.failure = QN_REWARD_FAILURE_ZERO;
    assert_int_equal(qn_reward_init(&rw, &c), QN_OK);
    qn_reward_batch b = {.samples = s,
                         .n_samples = 4,
                         .group_sizes = sizes,
                         .n_groups = 2,
                         .scores = out,
                         .group_kept = kept};
    assert_int_equal(qn_reward_score_batch(rw, &b), QN_OK);
    assert_true(out[1].value == 0.0);
    assert_int_equal(out[1].status, QN_REWARD_CRASH); /* zero, but never silently */
    assert_true(kept[0] && kept[1]);
    qn_reward_free(rw);

    c.failure = QN_REWARD_FAILURE_DROP;
    assert_int_equal(qn_reward_init(&rw, &c), QN_OK);
    assert_int_equal(qn_reward_score_batch(rw, &b), QN_OK);
    assert_false(kept[0]);
    assert_true(kept[1]);
    qn_reward_stats st;
    qn_reward_get_stats(rw, &st);
    assert_int_equal(st.groups, 2);
    assert_int_equal(st.groups_dropped, 1);
    qn_reward_free(rw);

    c.failure = QN_REWARD_FAILURE_FAIL;
    assert_int_equal(qn_reward_init(&rw, &c), QN_OK);
    assert_int_equal(qn_reward_score_batch(rw, &b), QN_ERR_INTERNAL);
    assert_non_null(strstr(qn_last_error(), "sample 1 (group 0) failed: crash"));
    assert_int_equal(out[3].status, QN_REWARD_OK);
    qn_reward_free(rw);
}

/* Long texts, token ids and metadata survive the trip to a worker, and
 * process and inline isolation agree. */
static void test_wire_roundtrip(void **state) {
    size_t big = 3 << 20;
    char *text = malloc(big + 1);
    for (size_t i = 0; i < big; i++)
        text[i] = (char)('a' + i % 26);
    text[big] = '\0';
    int32_t ids[5] = {1, 2, 3, 4, 5}, pids[2] = {7, 8};
    qn_reward_sample s[3] = {mk(text, text), mk("ids", "r"), mk("ok", "")};
    s[1].response_ids = ids;
    s[1].n_response_ids = 5;
    s[1].prompt_ids = pids;
    s[1].n_prompt_ids = 2;
    s[1].metadata_json = "{\"k\":\"v\"}";
    qn_reward_score a[3], b[3];
    qn_reward *rw = open_plugin("segv", QN_REWARD_ISOLATION_PROCESS, 10, 2);
    score(rw, s, 3, a, NULL);
    qn_reward_free(rw);
    rw = open_plugin("segv", QN_REWARD_ISOLATION_INLINE, 10, 1);
    score(rw, s, 3, b, NULL);
    qn_reward_free(rw);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(a[i].status, QN_REWARD_OK);
        assert_int_equal(b[i].status, QN_REWARD_OK);
        assert_true(a[i].value == b[i].value);
    }
    /* the plugin encodes what it saw: see qn_testplug_segv.c */
    assert_true(a[0].value == (double)big);
    assert_true(a[1].value == 15 + 2 * 1000 + 7 * 100000 + 1e7);
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_segfault),         cmocka_unit_test(test_infinite_loop),
        cmocka_unit_test(test_nan_process),      cmocka_unit_test(test_nan_inline),
        cmocka_unit_test(test_memory_leak),      cmocka_unit_test(test_newest_known_version),
        cmocka_unit_test(test_load_errors),      cmocka_unit_test(test_reward_key),
        cmocka_unit_test(test_failure_policies), cmocka_unit_test(test_wire_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
