/* status.c — names and descriptions from the X-macro list, and the
 * thread-local error message (see quench/status.h). */
#include "quench/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"

const char *qn_status_str(qn_status s) {
    switch (s) {
#define QN_STATUS_STR_(name, value, desc) \
    case name:                            \
        return desc;
        QN_STATUS_LIST(QN_STATUS_STR_)
#undef QN_STATUS_STR_
    }
    return "unknown status";
}

const char *qn_status_name(qn_status s) {
    switch (s) {
#define QN_STATUS_NAME_(name, value, desc) \
    case name:                             \
        return #name;
        QN_STATUS_LIST(QN_STATUS_NAME_)
#undef QN_STATUS_NAME_
    }
    return "QN_UNKNOWN";
}

static _Thread_local char t_error[1024];

qn_status qn_fail(qn_status s, const char *fmt, ...) {
    /* format into a copy first: callers wrap the previous message with
     * qn_fail(s, "...: %s", qn_last_error()), which reads t_error */
    char buf[sizeof t_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    memcpy(t_error, buf, sizeof t_error);
    return s;
}

const char *qn_last_error(void) { return t_error; }
void qn_clear_error(void) { t_error[0] = '\0'; }

void qn_status_trace(const char *file, int line, qn_status s) {
    qn_log_write(QN_LOG_DEBUG, file, line, "-> %s (%s)", qn_status_name(s), qn_status_str(s));
}
