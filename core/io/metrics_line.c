/* metrics_line.c — metrics lines out (contract in metrics_line.h). */
#include "core/io/metrics_line.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

qn_metrics_numtext qn_metrics_num(double v) {
    qn_metrics_numtext t;
    if (isfinite(v))
        snprintf(t.s, sizeof t.s, "%.17g", v);
    else
        snprintf(t.s, sizeof t.s, "null");
    return t;
}

qn_metrics_numtext qn_metrics_num_fixed(double v, int decimals) {
    if (!isfinite(v) || fabs(v) >= 1e15) return qn_metrics_num(v);
    if (decimals < 0) decimals = 0;
    if (decimals > 17) decimals = 17;
    qn_metrics_numtext t;
    snprintf(t.s, sizeof t.s, "%.*f", decimals, v);
    return t;
}

qn_status qn_metrics_open_append(const char *path, int *fd) {
    *fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (*fd < 0) return qn_fail(QN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    return QN_OK;
}

qn_status qn_metrics_write_line(int fd, const char *line, size_t len) {
    ssize_t w;
    do
        w = write(fd, line, len); /* one write(): other processes append to the file too */
    while (w < 0 && errno == EINTR);
    if (w != (ssize_t)len)
        return qn_fail(QN_ERR_IO, "metrics file: write failed: %s",
                       w < 0 ? strerror(errno) : "short write");
    return QN_OK;
}

qn_status qn_metrics_write_json(int fd, const cJSON *j) {
    char *txt = cJSON_PrintUnformatted(j);
    if (!txt) return qn_fail(QN_ERR_NOMEM, "metrics line: cannot print the JSON object");
    size_t len = strlen(txt);
    txt[len] = '\n'; /* replaces the NUL: the newline goes out in the same write */
    qn_status s = qn_metrics_write_line(fd, txt, len + 1);
    free(txt);
    return s;
}
