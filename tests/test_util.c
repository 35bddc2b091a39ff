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

#include <sys/prctl.h>

#define QN_TEST_MAX_CHILDREN 64
static pid_t g_children[QN_TEST_MAX_CHILDREN];
static int g_n_children;

static void forget_child(pid_t pid) {
    for (int i = 0; i < g_n_children; i++)
        if (g_children[i] == pid) g_children[i] = g_children[--g_n_children];
}

pid_t qn_test_spawn(const char *const *argv, const char *log_path) {
    if (g_n_children == QN_TEST_MAX_CHILDREN) fail_msg("too many test child processes");
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) fail_msg("fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127); /* the test died before prctl */
        int in = open("/dev/null", O_RDONLY);
        int out = log_path ? open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644)
                           : open("/dev/null", O_WRONLY);
        if (in >= 0) dup2(in, 0);
        if (out >= 0) {
            dup2(out, 1);
            dup2(out, 2);
        }
        execv(argv[0], (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    g_children[g_n_children++] = pid;
    return pid;
}

int qn_test_wait_pid(pid_t pid, int ms) {
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int st = 0;
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid) {
            forget_child(pid);
            return st;
        }
        if (w < 0) return -1;
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >= ms) return -1;
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

void qn_test_kill(pid_t pid) {
    if (pid <= 0) return;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    forget_child(pid);
}

void qn_test_kill_all(void) {
    while (g_n_children > 0)
        qn_test_kill(g_children[g_n_children - 1]);
}

void qn_test_dump_tail(const char *path, size_t max_bytes) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "---- %s: missing\n", path);
        return;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    long from = n > (long)max_bytes ? n - (long)max_bytes : 0;
    fseek(f, from, SEEK_SET);
    fprintf(stderr, "---- %s (last %ld bytes)\n", path, n - from);
    char buf[4096];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, k, stderr);
    fclose(f);
}
