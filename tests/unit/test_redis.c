/* test_redis.c — the Redis layer against a real redis-server: URL parsing
 * (good and bad), commands, the job key prefix, binary-safe argv commands,
 * a server restart in the middle (transparent reconnect), a dead server
 * (clear error naming it), and the retry backoff. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "net/redis.h"
#include "tests/test_util.h"

static void test_url_parse(void **state) {
    qn_redis_url u;
    assert_int_equal(qn_redis_url_parse("redis://127.0.0.1", &u), QN_OK);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_int_equal(qn_redis_url_parse("redis://:s3cr3t@node0:7000/2", &u), QN_OK);
    assert_string_equal(u.host, "node0");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 2);
    assert_string_equal(u.password, "s3cr3t");
    assert_string_equal(u.user, "");
    assert_int_equal(qn_redis_url_parse("redis://alice:pw@[::1]:6380", &u), QN_OK);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 6380);
    assert_string_equal(u.user, "alice");
    assert_int_equal(qn_redis_url_parse("unix:///run/r.sock?db=3", &u), QN_OK);
    assert_string_equal(u.unix_path, "/run/r.sock");
    assert_int_equal(u.db, 3);

    const char *bad[] = {"", "http://x", "redis://", "redis://h:0", "redis://h:70000",
                         "redis://h:12x", "redis://h/abc", "unix://rel.sock", "unix:///s?x=1",
                         "redis://user@h", "redis://[::1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(qn_redis_url_parse(bad[i], &u), QN_ERR_INVALID);
        assert_non_null(strstr(qn_last_error(), "Redis URL"));
    }
    qn_redis_url_parse("redis://h:12x", &u);
    assert_non_null(strstr(qn_last_error(), "port"));
}

static void test_commands_and_restart(void **state) {
    char url[512];
    const char *dir = qn_test_tmpdir();
    pid_t pid = qn_test_redis_start(dir, NULL, url, sizeof url);
    qn_redis *r = NULL;
    assert_int_equal(qn_redis_connect(url, "job7", 2000, &r), QN_OK);
    char key[128];
    assert_string_equal(qn_redis_key(r, key, sizeof key, "weight_version"), "quench:job7:weight_version");
    assert_int_equal(qn_redis_command(r, NULL, "SET %s %d", key, 41), QN_OK);
    redisReply *rep = NULL;
    assert_int_equal(qn_redis_command(r, &rep, "GET %s", key), QN_OK);
    assert_int_equal(rep->type, REDIS_REPLY_STRING);
    assert_string_equal(rep->str, "41");
    freeReplyObject(rep);

    /* binary-safe arguments */
    const char bin[] = {'a', '\0', 'b', '\n'};
    const char *argv[] = {"SET", "quench:job7:bin", bin};
    size_t lens[] = {3, strlen("quench:job7:bin"), sizeof bin};
    assert_int_equal(qn_redis_command_argv(r, NULL, 3, argv, lens), QN_OK);
    assert_int_equal(qn_redis_command(r, &rep, "GET quench:job7:bin"), QN_OK);
    assert_int_equal(rep->len, sizeof bin);
    assert_memory_equal(rep->str, bin, sizeof bin);
    freeReplyObject(rep);

    /* an error reply carries Redis's message and the command */
    assert_int_equal(qn_redis_command(r, NULL, "INCR quench:job7:bin"), QN_ERR_NET);
    assert_non_null(strstr(qn_last_error(), "INCR"));
    assert_non_null(strstr(qn_last_error(), "not an integer"));

    /* restart the server: the next command reconnects and succeeds */
    qn_test_redis_stop(pid, 1);
    pid = qn_test_redis_start(dir, NULL, url, sizeof url);
    assert_int_equal(qn_redis_command(r, NULL, "SET %s %d", key, 42), QN_OK);
    assert_int_equal(qn_redis_command(r, &rep, "GET %s", key), QN_OK);
    assert_string_equal(rep->str, "42");
    freeReplyObject(rep);

    /* a non-idempotent command is not re-sent: it fails once the server died */
    qn_test_redis_stop(pid, 1);
    pid = qn_test_redis_start(dir, NULL, url, sizeof url);
    assert_int_equal(qn_redis_command_once(r, NULL, "INCR quench:job7:n"), QN_ERR_NET);
    assert_int_equal(qn_redis_command_once(r, &rep, "INCR quench:job7:n"), QN_OK);
    assert_int_equal(rep->integer, 1); /* counted exactly once */
    freeReplyObject(rep);

    /* server gone for good: a clear error naming it */
    qn_test_redis_stop(pid, 1);
    assert_int_equal(qn_redis_command(r, NULL, "GET %s", key), QN_ERR_NET);
    assert_non_null(strstr(qn_last_error(), "redis.sock"));
    qn_redis_free(r);
    assert_int_equal(qn_redis_connect(url, "job7", 500, &r), QN_ERR_NET);
    assert_null(r);
    assert_non_null(strstr(qn_last_error(), "cannot connect"));
}

static void test_backoff(void **state) {
    uint64_t st = 1;
    for (uint32_t a = 0; a < 20; a++) {
        uint32_t d = qn_backoff_ms(a, 100, 5000, &st);
        uint64_t full = 100ull << (a < 10 ? a : 10);
        if (full > 5000) full = 5000;
        assert_true(d >= full / 2);
        assert_true(d <= full);
    }
    /* deterministic for the same state, different for different states */
    uint64_t s1 = 7, s2 = 7, s3 = 8;
    uint32_t a1 = qn_backoff_ms(5, 100, 100000, &s1), a2 = qn_backoff_ms(5, 100, 100000, &s2);
    assert_int_equal(a1, a2);
    int differ = 0;
    for (int i = 0; i < 10; i++) differ |= qn_backoff_ms(5, 100, 100000, &s1) != qn_backoff_ms(5, 100, 100000, &s3);
    assert_true(differ);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN); /* as every quench process does (cli/main.c) */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_parse),
        cmocka_unit_test(test_commands_and_restart),
        cmocka_unit_test(test_backoff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
