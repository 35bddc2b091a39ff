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
