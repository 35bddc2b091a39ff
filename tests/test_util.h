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

/* Child processes for tests that run real quench services. qn_test_spawn
 * starts argv[0] (a path) with argv (NULL-terminated), stdin from
 * /dev/null, stdout and stderr appended to log_path (NULL: /dev/null, so
 * ctest's pipes stay free), killed by the kernel if the test process dies
 * (PR_SET_PDEATHSIG), and remembered so that qn_test_kill_all can kill and
 * reap it in a teardown even after a failed assertion. Fails the test if
 * fork fails or more than 64 are alive. */
pid_t qn_test_spawn(const char *const *argv, const char *log_path);

/* Waits up to ms for pid to exit: its wait status, or -1 while it runs.
 * A reaped pid is forgotten. */
int qn_test_wait_pid(pid_t pid, int ms);

/* SIGKILLs and reaps pid (<= 0: no-op) and forgets it. */
void qn_test_kill(pid_t pid);

/* SIGKILLs and reaps every process from qn_test_spawn not yet reaped. */
void qn_test_kill_all(void);

/* Copies the last max_bytes of a file (a child's log) to stderr, with a
 * header naming it; a missing file is said so. For diagnostics on failure. */
void qn_test_dump_tail(const char *path, size_t max_bytes);
