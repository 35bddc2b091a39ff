/* test_util.c — see test_util.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/test_util.h"

const char *qn_test_fixture(const char *relative) {
    static char buf[4096];
    const char *root = getenv("QN_FIXTURES");
    if (!root || !*root) root = QN_FIXTURES_DEFAULT;
    snprintf(buf, sizeof buf, "%s/%s", root, relative);
    if (access(buf, R_OK) != 0) {
        fail_msg("fixture %s is missing (QN_FIXTURES=%s)", buf, root);
    }
    return buf;
}

const char *qn_test_tmpdir(void) {
    static char dir[512];
    if (dir[0]) return dir;
    const char *base = getenv("QN_TEST_TMP");
    if (!base || !*base) base = "/tmp";
    mkdir(base, 0755);
    snprintf(dir, sizeof dir, "%s/qn-test-XXXXXX", base);
    if (!mkdtemp(dir)) {
        fail_msg("mkdtemp(%s): %s", dir, strerror(errno));
    }
    return dir;
}

const char *qn_test_path(const char *name) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", qn_test_tmpdir(), name);
    return buf;
}

void qn_test_write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("open %s: %s", path, strerror(errno));
    if (len && fwrite(data, 1, len, f) != len) fail_msg("write %s failed", path);
    fclose(f);
}

char *qn_test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    if (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) fail_msg("read %s failed", path);
    buf[n] = '\0';
    fclose(f);
    if (len) *len = (size_t)n;
    return buf;
}

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

pid_t qn_test_redis_start(const char *dir, const char *const *extra_args, char *url, size_t cap) {
    char sock[100], logf[300];
    if (strlen(dir) + sizeof "/redis.sock" > sizeof sock)
        fail_msg("tmp dir %s is too long for a unix socket path", dir);
    snprintf(sock, sizeof sock, "%s/redis.sock", dir);
    snprintf(logf, sizeof logf, "%s/redis.log", dir);
    unlink(sock);
    const char *argv[64] = {"redis-server", "--port", "0", "--unixsocket", sock,
                            "--dir", dir, "--save", "", "--appendonly", "no",
                            "--logfile", logf};
    int argc = 13;
    for (int i = 0; extra_args && extra_args[i] && argc < 62; i++) argv[argc++] = extra_args[i];
    argv[argc] = NULL;
    pid_t pid = fork();
    if (pid < 0) fail_msg("fork: %s", strerror(errno));
    if (pid == 0) {
        /* keep the test's stdout/stderr pipes free: ctest waits for them */
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    /* wait until the socket accepts a connection (up to 10 s) */
    for (int i = 0; i < 1000; i++) {
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof a.sun_path, "%s", sock);
        int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok) {
            snprintf(url, cap, "unix://%s", sock);
            return pid;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) fail_msg("redis-server exited early (see %s)", logf);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    fail_msg("redis-server did not come up on %s", sock);
    return -1;
}

void qn_test_redis_stop(pid_t pid, int hard) {
    if (pid <= 0) return;
    kill(pid, hard ? SIGKILL : SIGTERM);
    waitpid(pid, NULL, 0);
}
