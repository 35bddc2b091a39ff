/* log.c — see log.h. Global state is a handful of scalars set at start-up;
 * the level is read without a lock (a torn read is impossible for an int on
 * the platforms quench supports, and a stale one only delays a change). */
#include "core/log.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

static char g_role[32] = "quench";
static int g_rank = -1;
static qn_log_level g_level = QN_LOG_INFO;
static FILE *g_stream = NULL;

static const char k_level_letter[] = {'D', 'I', 'W', 'E'};

void qn_log_init(const char *role, int rank) {
    if (role) {
        snprintf(g_role, sizeof g_role, "%s", role);
    }
    g_rank = rank;
    const char *env = getenv("QN_LOG_LEVEL");
    if (env && *env) {
        qn_log_level lvl;
        if (qn_log_level_parse(env, &lvl) == QN_OK) {
            g_level = lvl;
        } else {
            fprintf(stderr,
                    "quench: QN_LOG_LEVEL='%s' is not one of "
                    "debug|info|warn|error|off; using info\n", env);
        }
    }
}

void qn_log_set_level(qn_log_level level) { g_level = level; }
qn_log_level qn_log_get_level(void) { return g_level; }
void qn_log_set_stream(FILE *stream) { g_stream = stream; }

qn_status qn_log_level_parse(const char *s, qn_log_level *out) {
    static const struct {
        const char *name;
        qn_log_level level;
    } names[] = {
        {"debug", QN_LOG_DEBUG}, {"info", QN_LOG_INFO},   {"warn", QN_LOG_WARN},
        {"warning", QN_LOG_WARN}, {"error", QN_LOG_ERROR}, {"off", QN_LOG_OFF},
    };
    if (!s) return QN_ERR_INVALID;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcasecmp(s, names[i].name) == 0) {
            *out = names[i].level;
            return QN_OK;
        }
    }
    return qn_fail(QN_ERR_INVALID, "log level '%s' is not one of debug|info|warn|error|off", s);
}

size_t qn_log_format(char *buf, size_t cap, qn_log_level level,
                     const char *role, int rank, int64_t unix_ms,
                     const char *file, int line, const char *msg) {
    if (cap == 0) return 0;
    if (unix_ms < 0) unix_ms = 0;
    time_t secs = (time_t)(unix_ms / 1000);
    int millis = (int)(unix_ms % 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    char who[48];
    if (rank >= 0) {
        snprintf(who, sizeof who, "%s:%d", role ? role : "?", rank);
    } else {
        snprintf(who, sizeof who, "%s", role ? role : "?");
    }
    char letter = level <= QN_LOG_ERROR ? k_level_letter[level] : '?';
    int n = snprintf(buf, cap, "%s.%03d %c %s %s:%d] %s\n", when, millis, letter,
                     who, file ? file : "?", line, msg ? msg : "");
    if (n < 0) {
        buf[0] = '\0';
        return 0;
    }
    if ((size_t)n >= cap) {
        /* keep the newline so truncated lines still end a line */
        if (cap >= 2) buf[cap - 2] = '\n';
        buf[cap - 1] = '\0';
        return cap - 1;
    }
    return (size_t)n;
}

/* Shortens "/abs/path/to/quench/core/io/x.c" to "core/io/x.c" when the
 * build passes QN_SOURCE_DIR, so lines stay short and stable. */
static const char *short_path(const char *file) {
#ifdef QN_SOURCE_DIR
    size_t n = strlen(QN_SOURCE_DIR);
    if (file && strncmp(file, QN_SOURCE_DIR, n) == 0 && file[n] == '/') return file + n + 1;
#endif
    return file;
}

void qn_log_write(qn_log_level level, const char *file, int line, const char *fmt, ...) {
    if (level < g_level || level >= QN_LOG_OFF) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    int64_t now = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    char out[2300];
    size_t len = qn_log_format(out, sizeof out, level, g_role, g_rank, now,
                               short_path(file), line, msg);
    FILE *f = g_stream ? g_stream : stderr;
    fwrite(out, 1, len, f);
    fflush(f);
}
