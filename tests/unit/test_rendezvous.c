/* test_rendezvous.c — core/dist/rendezvous (how NCCL groups share their
 * ncclUniqueId) against a real redis-server: a blob published by the root
 * reaches a reader that started first and waits (another process); epochs
 * advance with each publication and a reader asking for a newer one than
 * exists times out instead of hanging or reading the old blob; binary
 * blobs with NUL bytes survive; wrong lengths, oversized blobs, a bad URL
 * and an unreachable server fail with errors naming them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/dist/rendezvous.h"
#include "tests/test_util.h"

static char g_url[512];

static void fill(unsigned char *b, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) b[i] = (unsigned char)((i * 131u + seed * 7u) & 0xFF);
    b[0] = 0; /* a NUL first: the value is binary, not a C string */
}

static void test_publish_then_fetch(void **state) {
    (void)state;
    qn_rdv_key k = {g_url, "t", "g1", "nccl_id"};
    unsigned char id[128], got[128];
    fill(id, sizeof id, 1);
    int64_t e = -1, eg = -1;
    assert_int_equal(qn_rdv_publish(&k, id, sizeof id, &e), QN_OK);
    assert_int_equal(e, 1);
    assert_int_equal(qn_rdv_fetch(&k, 0, got, sizeof got, 2000, &eg), QN_OK);
    assert_int_equal(eg, 1);
    assert_memory_equal(id, got, sizeof id);

    /* nothing newer than epoch 1: a bounded wait, then a timeout naming the group */
    double t0 = qn_now_s();
    assert_int_equal(qn_rdv_fetch(&k, 1, got, sizeof got, 300, NULL), QN_ERR_TIMEOUT);
    double dt = qn_now_s() - t0;
    assert_true(dt >= 0.25 && dt < 5.0);
    assert_non_null(strstr(qn_last_error(), "g1"));

    /* a second publication (a re-formed group) is epoch 2 and replaces what readers get */
    unsigned char id2[128];
    fill(id2, sizeof id2, 2);
    assert_int_equal(qn_rdv_publish(&k, id2, sizeof id2, &e), QN_OK);
    assert_int_equal(e, 2);
    assert_int_equal(qn_rdv_fetch(&k, 1, got, sizeof got, 2000, &eg), QN_OK);
    assert_int_equal(eg, 2);
    assert_memory_equal(id2, got, sizeof id2);
    assert_memory_not_equal(id, got, sizeof id);

    /* another group of the same job is separate */
    qn_rdv_key other = {g_url, "t", "g2", "nccl_id"};
    assert_int_equal(qn_rdv_fetch(&other, 0, got, sizeof got, 100, NULL), QN_ERR_TIMEOUT);
}

/* The reader comes first and waits; the root publishes from another process 300 ms later. */
static void test_reader_waits_for_root(void **state) {
    (void)state;
    qn_rdv_key k = {g_url, "t", "late", "nccl_id"};
    unsigned char id[128], got[128];
    fill(id, sizeof id, 3);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        usleep(300 * 1000);
        _exit(qn_rdv_publish(&k, id, sizeof id, NULL) == QN_OK ? 0 : 1);
    }
    double t0 = qn_now_s();
    qn_status s = qn_rdv_fetch(&k, 0, got, sizeof got, 10000, NULL);
    double dt = qn_now_s() - t0;
    int st = 0;
    waitpid(pid, &st, 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(s, QN_OK);
    assert_memory_equal(id, got, sizeof id);
    assert_true(dt >= 0.2);
}

static void test_errors(void **state) {
    (void)state;
    qn_rdv_key k = {g_url, "t", "err", "blob"};
    unsigned char b[64] = {1, 2, 3};
    assert_int_equal(qn_rdv_publish(&k, b, sizeof b, NULL), QN_OK);
    unsigned char got[32];
    assert_int_equal(qn_rdv_fetch(&k, 0, got, sizeof got, 1000, NULL), QN_ERR_FORMAT);
    assert_non_null(strstr(qn_last_error(), "64 bytes"));

    static unsigned char big[QN_RDV_MAX_BLOB + 1];
    assert_int_equal(qn_rdv_publish(&k, big, sizeof big, NULL), QN_ERR_TOO_LARGE);

    qn_rdv_key bad = {"http://nowhere", "t", "x", "y"};
    assert_int_not_equal(qn_rdv_publish(&bad, b, 4, NULL), QN_OK);
    qn_rdv_key none = {"unix:///nonexistent/redis.sock", "t", "x", "y"};
    assert_int_equal(qn_rdv_fetch(&none, 0, got, 4, 100, NULL), QN_ERR_NET);
    assert_non_null(strstr(qn_last_error(), "cannot connect"));
    qn_rdv_key empty = {NULL, "t", "x", "y"};
    assert_int_equal(qn_rdv_publish(&empty, b, 4, NULL), QN_ERR_INVALID);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    pid_t redis = qn_test_redis_start(qn_test_tmpdir(), NULL, g_url, sizeof g_url);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_publish_then_fetch),
        cmocka_unit_test(test_reader_waits_for_root),
        cmocka_unit_test(test_errors),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    qn_test_redis_stop(redis, 0);
    return rc;
}
