/* log.h — leveled logging with time, process role and rank.
 *
 * One line per call, written with a single fwrite so that lines from
 * threads do not interleave:
 *
 *   2026-11-22 20:40:01.123 I router:0 router/main.c:42] listening on ...
 *
 * The level comes from QN_LOG_LEVEL (debug|info|warn|error|off) when
 * qn_log_init is called, and can be changed with qn_log_set_level. The role
 * and rank name the process ("train", 3) so that merged logs of a job can be
 * told apart. Logging never fails and never allocates.
 */
#ifndef QN_CORE_LOG_H
#define QN_CORE_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "quench/status.h"

typedef enum qn_log_level {
    QN_LOG_DEBUG = 0,
    QN_LOG_INFO = 1,
    QN_LOG_WARN = 2,
    QN_LOG_ERROR = 3,
    QN_LOG_OFF = 4,
} qn_log_level;

/* Sets role and rank for this process and reads QN_LOG_LEVEL. A bad
 * QN_LOG_LEVEL is reported once on stderr and info is used. role is copied
 * (at most 31 bytes kept). rank < 0 leaves the rank out of lines. */
void qn_log_init(const char *role, int rank);
void qn_log_set_level(qn_log_level level);
qn_log_level qn_log_get_level(void);
/* Where lines go; NULL restores stderr. The stream is not owned. */
void qn_log_set_stream(FILE *stream);

/* "debug", "info", "warn" (or "warning"), "error", "off"; case-insensitive. */
qn_status qn_log_level_parse(const char *s, qn_log_level *out);

/* Formats one line (with trailing '\n') into buf; returns its length,
 * truncated to cap-1. Exposed so the layout can be tested without a clock. */
size_t qn_log_format(char *buf, size_t cap, qn_log_level level,
                     const char *role, int rank, int64_t unix_ms,
                     const char *file, int line, const char *msg);

void qn_log_write(qn_log_level level, const char *file, int line,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#define QN_LOG_DEBUG(...) qn_log_write(QN_LOG_DEBUG, __FILE__, __LINE__, __VA_ARGS__)
#define QN_LOG_INFO(...) qn_log_write(QN_LOG_INFO, __FILE__, __LINE__, __VA_ARGS__)
#define QN_LOG_WARN(...) qn_log_write(QN_LOG_WARN, __FILE__, __LINE__, __VA_ARGS__)
#define QN_LOG_ERROR(...) qn_log_write(QN_LOG_ERROR, __FILE__, __LINE__, __VA_ARGS__)

#endif /* QN_CORE_LOG_H */
