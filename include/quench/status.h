/* status.h — the one result type of quench.
 *
 * Every fallible function returns a qn_status. QN_OK is 0, errors are
 * negative. The list below is the only place statuses are defined; the enum,
 * the names and the descriptions are generated from it.
 *
 * A function that fails may also leave a human-readable explanation in a
 * thread-local buffer (qn_fail / qn_last_error): "model.safetensors: tensor
 * 'x': data offsets [8, 4) are reversed". Callers that print errors print
 * that message, which names the input and the problem; the status is for
 * code that branches on the kind of failure.
 *
 * Library code never calls exit(); only main() does.
 */
#ifndef QUENCH_STATUS_H
#define QUENCH_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

/* X(name, value, description) */
#define QN_STATUS_LIST(X)                                                  \
    X(QN_OK, 0, "success")                                                 \
    X(QN_ERR_INVALID, -1, "invalid argument")                              \
    X(QN_ERR_NOMEM, -2, "out of memory")                                   \
    X(QN_ERR_IO, -3, "input/output error")                                 \
    X(QN_ERR_FORMAT, -4, "malformed input")                                \
    X(QN_ERR_RANGE, -5, "value out of range")                              \
    X(QN_ERR_NOT_FOUND, -6, "not found")                                   \
    X(QN_ERR_UNSUPPORTED, -7, "not supported")                             \
    X(QN_ERR_TOO_LARGE, -8, "input exceeds a size limit")                  \
    X(QN_ERR_TIMEOUT, -9, "timed out")                                     \
    X(QN_ERR_CLOSED, -10, "closed")                                        \
    X(QN_ERR_EXISTS, -11, "already exists")                                \
    X(QN_ERR_VERSION, -12, "version mismatch")                             \
    X(QN_ERR_NET, -13, "network error")                                    \
    X(QN_ERR_CUDA, -14, "CUDA error")                                      \
    X(QN_ERR_NO_DEVICE, -15, "no GPU device")                              \
    X(QN_ERR_INTERNAL, -16, "internal error")

typedef enum qn_status {
#define QN_STATUS_ENUM_(name, value, desc) name = value,
    QN_STATUS_LIST(QN_STATUS_ENUM_)
#undef QN_STATUS_ENUM_
} qn_status;

/* "malformed input"; "unknown status" for a value not in the list. */
const char *qn_status_str(qn_status s);
/* "QN_ERR_FORMAT"; "QN_UNKNOWN" for a value not in the list. */
const char *qn_status_name(qn_status s);

/* Records a formatted explanation in this thread's error buffer and returns
 * s, so that `return qn_fail(QN_ERR_FORMAT, "%s: ...", path);` reads as one
 * statement. The message replaces any earlier one. */
qn_status qn_fail(qn_status s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* This thread's last message from qn_fail, or "" when there is none. The
 * pointer stays valid until the next qn_fail/qn_clear_error on this thread. */
const char *qn_last_error(void);
void qn_clear_error(void);

/* Logs "file:line -> QN_ERR_X" at debug level; used by the check macros so
 * that a failure prints the path it travelled, innermost first. */
void qn_status_trace(const char *file, int line, qn_status s);

/* Evaluate `call`; on error trace and return it from the current function. */
#define QN_CHECK(call)                                                     \
    do {                                                                   \
        qn_status qn_check_s_ = (call);                                    \
        if (qn_check_s_ != QN_OK) {                                        \
            qn_status_trace(__FILE__, __LINE__, qn_check_s_);              \
            return qn_check_s_;                                            \
        }                                                                  \
    } while (0)

/* Evaluate `call` into `res`; on error trace and jump to `label`. */
#define QN_CHECK_GOTO(call, res, label)                                    \
    do {                                                                   \
        (res) = (call);                                                    \
        if ((res) != QN_OK) {                                              \
            qn_status_trace(__FILE__, __LINE__, (res));                    \
            goto label;                                                    \
        }                                                                  \
    } while (0)

#ifdef __cplusplus
}
#endif
#endif /* QUENCH_STATUS_H */
