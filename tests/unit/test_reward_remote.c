/* test_reward_remote.c — remote_rm against a local misbehaving reward
 * service (tests/rewards/rm_server.py on 127.0.0.1): plain answers, 500s
 * that clear up after retries, 500s that do not, delays past the timeout,
 * dropped connections, non-JSON answers, 4xx without retries, named scores,
 * and 64 concurrent slow requests finishing in about the time of one. Every
 * case is bounded in time: the server exits by itself after two minutes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "rewards/rewards.h"

static pid_t g_server, g_slow_server;
static int g_port;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static pid_t start_server(const char *delay, int *port) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execl("/usr/bin/python3", "python3", QN_SOURCE_DIR "/tests/rewards/rm_server.py",
              "--lifetime", "120", "--delay", delay, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char buf[32] = "";
    FILE *f = fdopen(fds[0], "r");
    if (!f || !fgets(buf, sizeof buf, f)) {
        if (f) fclose(f);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    fclose(f);
    *port = atoi(buf);
    return pid;
}

static void stop_server(pid_t pid) {
    if (pid > 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
}

static int setup(void **state) {
    if (access("/usr/bin/python3", X_OK) != 0) return 0;
    g_server = start_server("0", &g_port);
    return g_server > 0 ? 0 : -1;
}

static int teardown(void **state) {
    stop_server(g_server);
    stop_server(g_slow_server);
    return 0;
}

static qn_reward *open_remote(int port, double timeout, int retries, const char *key) {
    if (port <= 0) skip();
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
    qn_reward_config c = qn_reward_config_default();
    c.rm_type = "remote_rm";
    c.rm_url = url;
    c.timeout_s = timeout;
    c.rm_retries = retries;
    c.rm_backoff_s = 0.02;
    c.reward_key = key;
    qn_reward *rw = NULL;
    qn_status s = qn_reward_init(&rw, &c);
    if (s != QN_OK) fprintf(stderr, "%s\n", qn_last_error());
    assert_int_equal(s, QN_OK);
    return rw;
}

static qn_reward_sample mk(const char *response) {
    return (qn_reward_sample){.prompt = "2+2?",
                              .prompt_len = 4,
                              .response = response,
                              .response_len = strlen(response),
                              .label = "4",
                              .metadata_json = "{\"id\": 1}",
                              .finish_reason = "stop"};
}

static void score(qn_reward *rw, const qn_reward_sample *s, size_t n, qn_reward_score *out) {
    qn_reward_batch b = {.samples = s, .n_samples = n, .scores = out};
    assert_int_equal(qn_reward_score_batch(rw, &b), QN_OK);
}

static void test_remote_classified(void **state) {
    qn_reward *rw = open_remote(g_port, 0.5, 2, NULL);
    const char *texts[] = {
        "ok:0.75",           /* 0 */
        "flaky500:2:1:a",    /* 1: two 500s, then fine on the third attempt */
        "always500",         /* 2 */
        "slow:3:1",          /* 3: every attempt past the 0.5 s timeout */
        "drop",              /* 4 */
        "droponce:0.5:b",    /* 5 */
        "slowonce:3:0.25:c", /* 6 */
        "garbage",           /* 7 */
        "status:404",        /* 8: not retried */
        "number:-2",         /* 9 */
    };
    enum { N = sizeof texts / sizeof texts[0] };
    qn_reward_sample s[N];
    for (int i = 0; i < N; i++)
        s[i] = mk(texts[i]);
    qn_reward_score out[N];
    double t0 = now_s();
    score(rw, s, N, out);
    double dt = now_s() - t0;
    for (int i = 0; i < N; i++)
        fprintf(stderr, "%-20s -> %-13s %g %s\n", texts[i], qn_reward_status_str(out[i].status),
                out[i].value, out[i].message);
    fprintf(stderr, "all cases took %.2f s\n", dt);
    assert_true(dt < 10.0);
    assert_int_equal(out[0].status, QN_REWARD_OK);
    assert_true(out[0].value == 0.75);
    assert_int_equal(out[1].status, QN_REWARD_OK);
    assert_true(out[1].value == 1.0);
    assert_int_equal(out[2].status, QN_REWARD_HTTP_ERROR);
    assert_non_null(strstr(out[2].message, "HTTP 500 after 3 attempts"));
    assert_int_equal(out[3].status, QN_REWARD_TIMEOUT);
    assert_non_null(strstr(out[3].message, "after 3 attempts"));
    assert_int_equal(out[4].status, QN_REWARD_NETWORK_ERROR);
    assert_non_null(strstr(out[4].message, "after 3 attempts"));
    assert_int_equal(out[5].status, QN_REWARD_OK);
    assert_true(out[5].value == 0.5);
    assert_int_equal(out[6].status, QN_REWARD_OK);
    assert_true(out[6].value == 0.25);
    assert_int_equal(out[7].status, QN_REWARD_BAD_RESPONSE);
    assert_non_null(strstr(out[7].message, "after 1 attempt"));
    assert_int_equal(out[8].status, QN_REWARD_HTTP_ERROR);
    assert_non_null(strstr(out[8].message, "HTTP 404 after 1 attempt"));
    assert_int_equal(out[9].status, QN_REWARD_OK);
    assert_true(out[9].value == -2.0);
    qn_reward_stats st;
    qn_reward_get_stats(rw, &st);
    assert_int_equal(st.by_status[QN_REWARD_OK], 5);
    assert_int_equal(st.groups_dropped, 5);
    qn_reward_free(rw);
}

static void test_remote_named_key(void **state) {
    qn_reward *rw = open_remote(g_port, 2.0, 0, "acc");
    qn_reward_sample s[2] = {mk("named:0.1:0.9"), mk("ok:1")};
    qn_reward_score out[2];
    score(rw, s, 2, out);
    assert_int_equal(out[0].status, QN_REWARD_OK);
    assert_true(out[0].value == 0.9);
    assert_int_equal(out[1].status, QN_REWARD_MISSING_KEY);
    qn_reward_free(rw);
}

static void test_remote_refused(void **state) {
    if (g_port <= 0) skip();
    /* a port nobody listens on: connection refused, retried, classified */
    qn_reward_config c = qn_reward_config_default();
    c.rm_type = "remote_rm";
    c.rm_url = "http://127.0.0.1:9/";
    c.timeout_s = 1;
    c.rm_retries = 1;
    c.rm_backoff_s = 0.01;
    qn_reward *rw = NULL;
    assert_int_equal(qn_reward_init(&rw, &c), QN_OK);
    qn_reward_sample s = mk("ok:1");
    qn_reward_score out;
    score(rw, &s, 1, &out);
    assert_int_equal(out.status, QN_REWARD_NETWORK_ERROR);
    assert_non_null(strstr(out.message, "after 2 attempts"));
    qn_reward_free(rw);
    c.rm_url = "ftp://example";
    assert_int_equal(qn_reward_init(&rw, &c), QN_ERR_INVALID);
}

static size_t collect(char *data, size_t size, size_t nmemb, void *user) {
    char *buf = user;
    size_t have = strlen(buf), n = size * nmemb;
    if (have + n >= 4096) n = 4095 - have;
    memcpy(buf + have, data, n);
    buf[have + n] = '\0';
    return size * nmemb;
}

/* A member of the test server's GET /stats answer. */
static double server_stat(int port, const char *key, const char *text) {
    char url[64], body[4096] = "";
    snprintf(url, sizeof url, "http://127.0.0.1:%d/stats", port);
    CURL *c = curl_easy_init();
    assert_non_null(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 5L);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_cleanup(c);
    cJSON *j = cJSON_Parse(body);
    assert_non_null(j);
    const cJSON *v = text ? cJSON_GetObjectItem(cJSON_GetObjectItem(j, "by_text"), text)
                          : cJSON_GetObjectItem(j, key);
    double out = cJSON_IsNumber(v) ? v->valuedouble : 0;
    cJSON_Delete(j);
    return out;
}

/* Keep-alive: 30 sequential requests use one connection; retries happened
 * as many times as the server says it answered. */
static void test_remote_connection_reuse(void **state) {
    if (g_port <= 0) skip();
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", g_port);
    qn_reward_config c = qn_reward_config_default();
    c.rm_type = "remote_rm";
    c.rm_url = url;
    c.rm_concurrency = 1; /* one request in flight at a time */
    c.rm_backoff_s = 0.01;
    qn_reward *rw = NULL;
    assert_int_equal(qn_reward_init(&rw, &c), QN_OK);
    enum { N = 30 };
    qn_reward_sample s[N];
    char texts[N][32];
    for (int i = 0; i < N; i++) {
        snprintf(texts[i], sizeof texts[i], "ok:1:%d", i);
        s[i] = mk(i == 7 ? "flaky500:2:1:reuse" : texts[i]);
    }
    double conn0 = server_stat(g_port, "connections", NULL);
    qn_reward_score out[N];
    score(rw, s, N, out);
    for (int i = 0; i < N; i++)
        assert_int_equal(out[i].status, QN_REWARD_OK);
    double conns = server_stat(g_port, "connections", NULL) - conn0 - 1; /* minus this GET */
    double tries = server_stat(g_port, NULL, "flaky500:2:1:reuse");
    fprintf(stderr, "%d requests (one retried twice) over %.0f connection(s)\n", N, conns);
    assert_true(tries == 3);
    assert_true(conns == 1);
    qn_reward_free(rw);
}

/* 64 requests that each take 0.25 s at the server, 64 in flight at once:
 * the batch must take about one delay, not 64. */
static void test_remote_concurrency(void **state) {
    if (g_port <= 0) skip();
    int port = 0;
    g_slow_server = start_server("0.25", &port);
    assert_true(g_slow_server > 0);
    qn_reward *rw = open_remote(port, 5.0, 0, NULL);
    enum { N = 64 };
    qn_reward_sample s[N];
    char texts[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(texts[i], sizeof texts[i], "x%d", i);
        s[i] = mk(texts[i]);
    }
    qn_reward_score out[N];
    double t0 = now_s();
    score(rw, s, N, out);
    double dt = now_s() - t0;
    for (int i = 0; i < N; i++)
        assert_int_equal(out[i].status, QN_REWARD_OK);
    fprintf(stderr, "64 requests of 0.25 s each with 64 in flight: %.2f s\n", dt);
    assert_true(dt < 0.25 * N / 8);
    qn_reward_free(rw);
    stop_server(g_slow_server);
    g_slow_server = 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_remote_classified),  cmocka_unit_test(test_remote_named_key),
        cmocka_unit_test(test_remote_refused),     cmocka_unit_test(test_remote_connection_reuse),
        cmocka_unit_test(test_remote_concurrency),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
