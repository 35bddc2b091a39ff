/* test_dist.c — collectives between real processes: 2 and 3 ranks forked
 * from this test, meeting through a real redis-server, each checking
 * allreduce (f32, f64, max i64), broadcast and barrier results against
 * values it computes itself; a group of one without Redis; environment
 * parsing; and a rank that never shows up (the others fail with a timeout
 * naming the group instead of hanging). */
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
#include <unistd.h>

#include "core/dist/dist.h"
#include "tests/test_util.h"

static char g_url[512];

/* Value rank r contributes at index i. */
static float val_f32(int r, size_t i) { return (float)(0.5 * (r + 1)) + (float)i * 1e-3f; }

/* Runs in a child: returns 0 if every check passed, else a code naming it. */
static int rank_main(int rank, int world, const char *group, size_t n) {
    qn_dist_config cfg = {.rank = rank, .world_size = world, .redis_url = g_url, .job = "t",
                          .group = group, .host = "127.0.0.1", .timeout_ms = 20000};
    qn_dist *d = NULL;
    if (qn_dist_init(&cfg, &d) != QN_OK) {
        fprintf(stderr, "rank %d: %s\n", rank, qn_last_error());
        return 10;
    }
    float *f = malloc(n * sizeof *f);
    double *g = malloc(n * sizeof *g);
    for (size_t i = 0; i < n; i++) {
        f[i] = val_f32(rank, i);
        g[i] = (double)rank * 1e-9 + (double)i;
    }
    if (qn_dist_allreduce_sum_f32(d, f, n) != QN_OK) return 11;
    if (qn_dist_allreduce_sum_f64(d, g, n) != QN_OK) return 12;
    for (size_t i = 0; i < n; i++) {
        float want = 0;
        double wantd = 0;
        for (int r = 0; r < world; r++) {
            want += val_f32(r, i);
            wantd += (double)r * 1e-9 + (double)i;
        }
        if (!isfinite(f[i]) || fabsf(f[i] - want) > 1e-5f * fabsf(want)) return 13;
        if (!isfinite(g[i]) || fabs(g[i] - wantd) > 1e-12 * fabs(wantd) + 1e-15) return 14;
    }
    int64_t m[3] = {rank, -rank, 100 + rank};
    if (qn_dist_allreduce_max_i64(d, m, 3) != QN_OK) return 15;
    if (m[0] != world - 1 || m[1] != 0 || m[2] != 100 + world - 1) return 16;
    char msg[64] = {0};
    if (rank == world - 1) snprintf(msg, sizeof msg, "from the last rank %d", rank);
    if (qn_dist_broadcast(d, msg, sizeof msg, world - 1) != QN_OK) return 17;
    char want_msg[64];
    snprintf(want_msg, sizeof want_msg, "from the last rank %d", world - 1);
    if (strcmp(msg, want_msg) != 0) return 18;
    if (qn_dist_barrier(d) != QN_OK) return 19;
    /* results are identical on every rank: broadcast rank 0's sum and compare bitwise */
    float *f0 = malloc(n * sizeof *f0);
    memcpy(f0, f, n * sizeof *f);
    if (qn_dist_broadcast(d, f0, n * sizeof *f0, 0) != QN_OK) return 20;
    if (memcmp(f0, f, n * sizeof *f) != 0) return 21;
    free(f0);
    free(f);
    free(g);
    qn_dist_free(d);
    return 0;
}

static void run_group(int world, const char *group, size_t n) {
    pid_t pids[8];
    for (int r = 0; r < world; r++) {
        pids[r] = fork();
        if (pids[r] == 0) _exit(rank_main(r, world, group, n));
    }
    for (int r = 0; r < world; r++) {
        int st = 0;
        waitpid(pids[r], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            fail_msg("group %s: rank %d of %d failed (status %d)", group, r, world,
                     WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }
}

static void test_two_and_three_ranks(void **state) {
    run_group(2, "two", 1000);
    run_group(3, "three", 3 * 1024 * 1024 + 7); /* several ring segments, odd size */
}

static void test_single_rank(void **state) {
    qn_dist_config cfg = {.rank = 0, .world_size = 1};
    qn_dist *d = NULL;
    assert_int_equal(qn_dist_init(&cfg, &d), QN_OK);
    float x[2] = {1.5f, -2};
    assert_int_equal(qn_dist_allreduce_sum_f32(d, x, 2), QN_OK);
    assert_true(x[0] == 1.5f && x[1] == -2);
    assert_int_equal(qn_dist_broadcast(d, x, sizeof x, 1), QN_ERR_RANGE);
    assert_int_equal(qn_dist_barrier(d), QN_OK);
    qn_dist_free(d);
    /* more than one rank without a Redis URL is refused */
    qn_dist_config bad = {.rank = 0, .world_size = 2};
    assert_int_equal(qn_dist_init(&bad, &d), QN_ERR_INVALID);
    assert_non_null(strstr(qn_last_error(), "QN_REDIS_URL"));
    qn_dist_config bad_url = {.rank = 0, .world_size = 2, .redis_url = "http://node0"};
    assert_int_equal(qn_dist_init(&bad_url, &d), QN_ERR_INVALID);
    assert_non_null(strstr(qn_last_error(), "Redis URL 'http://node0'"));
    qn_dist_config bad2 = {.rank = 3, .world_size = 2};
    assert_int_equal(qn_dist_init(&bad2, &d), QN_ERR_RANGE);
}

static void test_env(void **state) {
    qn_dist_config cfg;
    unsetenv("QN_WORLD_SIZE");
    unsetenv("QN_RANK");
    assert_int_equal(qn_dist_config_from_env("train", &cfg), QN_OK);
    assert_int_equal(cfg.world_size, 1);
    setenv("QN_WORLD_SIZE", "4", 1);
    setenv("QN_RANK", "3", 1);
    setenv("QN_LOCAL_RANK", "1", 1);
    setenv("QN_REDIS_URL", "redis://node0:7000", 1);
    assert_int_equal(qn_dist_config_from_env("train", &cfg), QN_OK);
    assert_int_equal(cfg.rank, 3);
    assert_int_equal(cfg.local_rank, 1);
    assert_string_equal(cfg.redis_url, "redis://node0:7000");
    assert_string_equal(cfg.group, "train");
    setenv("QN_RANK", "4", 1);
    assert_int_equal(qn_dist_config_from_env("train", &cfg), QN_ERR_RANGE);
    assert_non_null(strstr(qn_last_error(), "QN_RANK"));
    setenv("QN_RANK", "x", 1);
    assert_int_equal(qn_dist_config_from_env("train", &cfg), QN_ERR_RANGE);
    unsetenv("QN_RANK");
    assert_int_equal(qn_dist_config_from_env("train", &cfg), QN_ERR_INVALID);
    unsetenv("QN_WORLD_SIZE");
    unsetenv("QN_LOCAL_RANK");
    unsetenv("QN_REDIS_URL");
}

static void test_missing_rank_times_out(void **state) {
    qn_dist_config cfg = {.rank = 0, .world_size = 2, .redis_url = g_url, .job = "t",
                          .group = "lonely", .host = "127.0.0.1", .timeout_ms = 1500};
    qn_dist *d = NULL;
    assert_int_equal(qn_dist_init(&cfg, &d), QN_ERR_NET);
    assert_null(d);
    assert_non_null(strstr(qn_last_error(), "lonely"));
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    pid_t redis = qn_test_redis_start(qn_test_tmpdir(), NULL, g_url, sizeof g_url);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_rank),
        cmocka_unit_test(test_env),
        cmocka_unit_test(test_two_and_three_ranks),
        cmocka_unit_test(test_missing_rank_times_out),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    qn_test_redis_stop(redis, 0);
    return rc;
}
