/* test_util.h — small helpers shared by the cmocka tests.
 *
 * Include after <stdarg.h>, <stddef.h>, <setjmp.h> and <cmocka.h>. */
#ifndef QN_TEST_UTIL_H
#define QN_TEST_UTIL_H

#include <stddef.h>

/* Absolute path of a file under the shared fixtures folder ($QN_FIXTURES, or
 * ../shared/fixtures next to the source tree). Returns a static buffer, valid
 * until the next call. Fails the test if the file does not exist. */
const char *qn_test_fixture(const char *relative);

/* A fresh empty directory for this test process (under $QN_TEST_TMP or
 * /tmp), created on first call and reused after. */
const char *qn_test_tmpdir(void);

/* Joins the tmp dir and name into a static buffer (valid until next call). */
const char *qn_test_path(const char *name);

/* Writes len bytes to path; fails the test on error. */
void qn_test_write_file(const char *path, const void *data, size_t len);

/* Reads a whole file into a malloc'd buffer (NUL-terminated, *len without
 * the NUL); fails the test on error. */
char *qn_test_read_file(const char *path, size_t *len);

#endif

#include <sys/types.h>

/* Starts a private redis-server listening only on a unix socket in `dir`
 * (no TCP port, so parallel tests never collide), waits until it answers,
 * and writes its URL ("unix:///.../redis.sock") into url. extra_args (may be
 * NULL) is a NULL-terminated list of further redis-server arguments, e.g.
 * {"--appendonly", "yes", NULL}. Fails the test if it cannot start. */
pid_t qn_test_redis_start(const char *dir, const char *const *extra_args, char *url, size_t cap);

/* SIGKILLs (hard=1) or SIGTERMs the server and reaps it. */
void qn_test_redis_stop(pid_t pid, int hard);
