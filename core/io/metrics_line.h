/* metrics_line.h — writing the metrics lines that core/io/metrics.h reads:
 * one JSON object a line, appended to one file (RUN_DIR/metrics.jsonl) by
 * several processes at once (buffer, trainer rank 0, eval).
 *
 * Two rules every writer needs: a line goes out in ONE write() to a file
 * opened with O_APPEND, so lines of different processes never interleave;
 * and a number that is not finite is written as null, since JSON has no
 * NaN or Infinity and printf's "nan" would make the whole line unreadable.
 * Lines built with cJSON get the second rule from cJSON (it prints null).
 *
 * Leaves out: buffering, rotation, and writers that are not line-oriented. */
#ifndef QN_CORE_IO_METRICS_LINE_H
#define QN_CORE_IO_METRICS_LINE_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "quench/status.h"

/* A number as JSON text, by value so that it can be used inline:
 * printf("%s", qn_metrics_num(x).s) (the temporary lives until the end of
 * the full expression). */
typedef struct qn_metrics_numtext {
    char s[40];
} qn_metrics_numtext;

/* v with %.17g (round-trips a double), or "null" when v is NaN or infinite. */
qn_metrics_numtext qn_metrics_num(double v);

/* v with %.<decimals>f (decimals 0..17), or "null" when v is not finite.
 * Values of 1e15 and more in magnitude are written with %.17g (still valid
 * JSON) so that the text always fits. */
qn_metrics_numtext qn_metrics_num_fixed(double v, int decimals);

/* Opens path for appending lines (created 0644 if missing, O_APPEND,
 * close-on-exec). QN_ERR_IO "path: cannot open: why" on failure. */
qn_status qn_metrics_open_append(const char *path, int *fd);

/* Writes line (len bytes, the newline included) with one write(), retried
 * on EINTR. QN_ERR_IO "metrics file: write failed: why" on an error or a
 * short write. */
qn_status qn_metrics_write_line(int fd, const char *line, size_t len);

/* Prints j unformatted and writes it with a newline as one line
 * (qn_metrics_write_line). QN_ERR_NOMEM when it cannot be printed. */
qn_status qn_metrics_write_json(int fd, const cJSON *j);

#endif
