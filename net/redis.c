/* redis.c — see redis.h. A thin layer over hiredis's blocking API: what it
 * adds is URL parsing, the key prefix, one reconnect-and-resend on I/O
 * errors, and errors that say which server and which command failed. */
#include "net/redis.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/redis_url.h"

struct qn_redis {
    qn_redis_url url;
    char url_text[512];
    char prefix[160];
    uint32_t timeout_ms;
    redisContext *ctx;
};

static qn_status redis_error(qn_redis *r, const char *what) {
    return qn_fail(QN_ERR_NET, "Redis %s: %s: %s", r->url_text, what,
                   r->ctx && r->ctx->errstr[0] ? r->ctx->errstr : "connection failed");
}

static qn_status do_connect(qn_redis *r) {
    if (r->ctx) {
        redisFree(r->ctx);
        r->ctx = NULL;
    }
    struct timeval tv = {.tv_sec = r->timeout_ms / 1000, .tv_usec = (r->timeout_ms % 1000) * 1000};
    r->ctx = r->url.unix_path[0] ? redisConnectUnixWithTimeout(r->url.unix_path, tv)
                                 : redisConnectWithTimeout(r->url.host, r->url.port, tv);
    if (!r->ctx) return qn_fail(QN_ERR_NOMEM, "Redis %s: out of memory", r->url_text);
    if (r->ctx->err) return redis_error(r, "cannot connect");
    redisSetTimeout(r->ctx, tv);
    redisReply *rep = NULL;
    if (r->url.password[0]) {
        rep = r->url.user[0] ? redisCommand(r->ctx, "AUTH %s %s", r->url.user, r->url.password)
                             : redisCommand(r->ctx, "AUTH %s", r->url.password);
        if (!rep) return redis_error(r, "AUTH");
        int bad = rep->type == REDIS_REPLY_ERROR;
        if (bad) qn_fail(QN_ERR_NET, "Redis %s: AUTH refused: %s", r->url_text, rep->str);
        freeReplyObject(rep);
        if (bad) return QN_ERR_NET;
    }
    if (r->url.db) {
        rep = redisCommand(r->ctx, "SELECT %d", r->url.db);
        if (!rep) return redis_error(r, "SELECT");
        int bad = rep->type == REDIS_REPLY_ERROR;
        if (bad) qn_fail(QN_ERR_NET, "Redis %s: SELECT %d refused: %s", r->url_text, r->url.db, rep->str);
        freeReplyObject(rep);
        if (bad) return QN_ERR_NET;
    }
    return QN_OK;
}

qn_status qn_redis_connect(const char *url, const char *job, uint32_t timeout_ms, qn_redis **out) {
    *out = NULL;
    qn_redis *r = calloc(1, sizeof *r);
    if (!r) return qn_fail(QN_ERR_NOMEM, "Redis: out of memory");
    qn_status s = qn_redis_url_parse(url, &r->url);
    if (s != QN_OK) {
        free(r);
        return s;
    }
    /* never print the password */
    if (r->url.unix_path[0]) snprintf(r->url_text, sizeof r->url_text, "unix://%s", r->url.unix_path);
    else snprintf(r->url_text, sizeof r->url_text, "%s:%d", r->url.host, r->url.port);
    if (job && *job) snprintf(r->prefix, sizeof r->prefix, "quench:%s:", job);
    else snprintf(r->prefix, sizeof r->prefix, "quench:");
    r->timeout_ms = timeout_ms ? timeout_ms : 5000;
    s = do_connect(r);
    if (s != QN_OK) {
        qn_redis_free(r);
        return s;
    }
    *out = r;
    return QN_OK;
}

void qn_redis_free(qn_redis *r) {
    if (!r) return;
    if (r->ctx) redisFree(r->ctx);
    free(r);
}

/* Interprets a reply: NULL means the connection failed (retryable). */
static qn_status take_reply(qn_redis *r, redisReply *rep, redisReply **out, const char *cmd) {
    if (rep->type == REDIS_REPLY_ERROR) {
        qn_status s = qn_fail(QN_ERR_NET, "Redis %s: %s: %s", r->url_text, cmd, rep->str);
        freeReplyObject(rep);
        return s;
    }
    if (out) *out = rep;
    else freeReplyObject(rep);
    return QN_OK;
}

static void command_name(const char *fmt, char *buf, size_t cap) {
    size_t i = 0;
    while (fmt[i] && fmt[i] != ' ' && i + 1 < cap) {
        buf[i] = fmt[i];
        i++;
    }
    buf[i] = '\0';
}

static qn_status vcommand(qn_redis *r, redisReply **out, int retry, const char *fmt, va_list ap) {
    char name[32];
    command_name(fmt, name, sizeof name);
    if (out) *out = NULL;
    for (int attempt = 0;; attempt++) {
        if (!r->ctx || r->ctx->err) {
            qn_status s = do_connect(r);
            if (s != QN_OK) return s;
        }
        va_list cp;
        va_copy(cp, ap);
        redisReply *rep = redisvCommand(r->ctx, fmt, cp);
        va_end(cp);
        if (rep) return take_reply(r, rep, out, name);
        if (!retry || attempt >= 1) return redis_error(r, name);
        QN_LOG_WARN("Redis %s: %s failed (%s); reconnecting", r->url_text, name, r->ctx->errstr);
    }
}

qn_status qn_redis_command(qn_redis *r, redisReply **reply, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    qn_status s = vcommand(r, reply, 1, fmt, ap);
    va_end(ap);
    return s;
}

qn_status qn_redis_command_once(qn_redis *r, redisReply **reply, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    qn_status s = vcommand(r, reply, 0, fmt, ap);
    va_end(ap);
    return s;
}

qn_status qn_redis_command_argv(qn_redis *r, redisReply **reply, int argc, const char **argv,
                                const size_t *argvlen) {
    char name[32];
    snprintf(name, sizeof name, "%s", argc > 0 ? argv[0] : "?");
    if (reply) *reply = NULL;
    for (int attempt = 0;; attempt++) {
        if (!r->ctx || r->ctx->err) {
            qn_status s = do_connect(r);
            if (s != QN_OK) return s;
        }
        redisReply *rep = redisCommandArgv(r->ctx, argc, argv, argvlen);
        if (rep) return take_reply(r, rep, reply, name);
        if (attempt >= 1) return redis_error(r, name);
        QN_LOG_WARN("Redis %s: %s failed (%s); reconnecting", r->url_text, name, r->ctx->errstr);
    }
}

const char *qn_redis_key(const qn_redis *r, char *buf, size_t cap, const char *suffix) {
    snprintf(buf, cap, "%s%s", r->prefix, suffix);
    return buf;
}

uint32_t qn_backoff_ms(uint32_t attempt, uint32_t base_ms, uint32_t max_ms, uint64_t *state) {
    uint64_t d = base_ms;
    for (uint32_t i = 0; i < attempt && d < max_ms; i++) d *= 2;
    if (d > max_ms) d = max_ms;
    /* splitmix64 step: a cheap, well-mixed jitter source */
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    uint64_t half = d / 2;
    return (uint32_t)(half + (d - half ? z % (d - half + 1) : 0));
}

qn_status qn_redis_get_u64(qn_redis *r, const char *suffix, uint64_t *out, bool *found) {
    char key[512];
    qn_redis_key(r, key, sizeof key, suffix);
    redisReply *rep = NULL;
    *found = false;
    QN_CHECK(qn_redis_command(r, &rep, "GET %s", key));
    qn_status st = QN_OK;
    if (rep->type == REDIS_REPLY_STRING) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(rep->str, &end, 10);
        /* strtoull takes "-1" (and leading blanks) too: only plain digits are a count */
        if (errno || *end || rep->str[0] < '0' || rep->str[0] > '9') {
            st = qn_fail(QN_ERR_FORMAT, "Redis %s: '%s' is not a number", key, rep->str);
        } else {
            *out = v;
            *found = true;
        }
    }
    freeReplyObject(rep);
    return st;
}
