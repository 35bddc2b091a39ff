/* rendezvous.c — publish/fetch of a root-made blob through Redis (see
 * rendezvous.h). Plain hiredis on one short-lived connection per call: this
 * runs once per group formation, never on a step's path. */
#include "core/dist/rendezvous.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/redis_url.h"

#define RDV_TTL_S 3600

static qn_status rdv_connect(const qn_rdv_key *k, redisContext **out) {
    *out = NULL;
    if (!k || !k->redis_url || !*k->redis_url || !k->job || !k->group || !k->name)
        return qn_fail(QN_ERR_INVALID, "rendezvous: needs a Redis URL, a job, a group and a name");
    qn_redis_url a;
    QN_CHECK(qn_redis_url_parse(k->redis_url, &a));
    struct timeval tv = {5, 0};
    redisContext *c = a.unix_path[0] ? redisConnectUnixWithTimeout(a.unix_path, tv)
                                     : redisConnectWithTimeout(a.host, a.port, tv);
    if (!c || c->err) {
        qn_status s = qn_fail(QN_ERR_NET, "rendezvous: cannot connect to Redis at %s: %s",
                              k->redis_url, c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        return s;
    }
    redisSetTimeout(c, tv);
    redisReply *r = NULL;
    if (a.password[0])
        r = a.user[0] ? redisCommand(c, "AUTH %s %s", a.user, a.password)
                      : redisCommand(c, "AUTH %s", a.password);
    if (a.password[0] && (!r || r->type == REDIS_REPLY_ERROR)) {
        qn_status s = qn_fail(QN_ERR_NET, "rendezvous: Redis AUTH at %s: %s", k->redis_url,
                              r ? r->str : c->errstr);
        if (r) freeReplyObject(r);
        redisFree(c);
        return s;
    }
    if (r) freeReplyObject(r);
    r = NULL;
    if (a.db) {
        r = redisCommand(c, "SELECT %d", a.db);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            qn_status s = qn_fail(QN_ERR_NET, "rendezvous: Redis SELECT %d: %s", a.db,
                                  r ? r->str : c->errstr);
            if (r) freeReplyObject(r);
            redisFree(c);
            return s;
        }
        freeReplyObject(r);
    }
    *out = c;
    return QN_OK;
}

static void rdv_name(char *buf, size_t cap, const qn_rdv_key *k, const char *suffix) {
    snprintf(buf, cap, "quench:%s:dist:%s:%s:%s", k->job, k->group, k->name, suffix);
}

/* Reads the epoch counter; 0 when absent. */
static qn_status rdv_epoch(redisContext *c, const char *key, int64_t *out) {
    *out = 0;
    redisReply *r = redisCommand(c, "GET %s", key);
    if (!r) return qn_fail(QN_ERR_NET, "rendezvous: GET %s: %s", key, c->errstr);
    qn_status s = QN_OK;
    if (r->type == REDIS_REPLY_STRING) {
        char *end = NULL;
        long long v = strtoll(r->str, &end, 10);
        if (!end || *end || v < 0)
            s = qn_fail(QN_ERR_FORMAT, "rendezvous: %s holds '%s', not an epoch", key, r->str);
        else
            *out = v;
    } else if (r->type == REDIS_REPLY_ERROR) {
        s = qn_fail(QN_ERR_NET, "rendezvous: GET %s: %s", key, r->str);
    }
    freeReplyObject(r);
    return s;
}

qn_status qn_rdv_publish(const qn_rdv_key *k, const void *blob, size_t len, int64_t *epoch) {
    if (len > QN_RDV_MAX_BLOB)
        return qn_fail(QN_ERR_TOO_LARGE, "rendezvous: blob of %zu bytes (at most %d)", len,
                       QN_RDV_MAX_BLOB);
    redisContext *c;
    QN_CHECK(rdv_connect(k, &c));
    char ekey[512], vkey[600];
    rdv_name(ekey, sizeof ekey, k, "epoch");
    qn_status s = QN_OK;
    redisReply *r = redisCommand(c, "INCR %s", ekey);
    if (!r || r->type != REDIS_REPLY_INTEGER) {
        s = qn_fail(QN_ERR_NET, "rendezvous: INCR %s: %s", ekey,
                    r && r->type == REDIS_REPLY_ERROR ? r->str : c->errstr);
        goto out;
    }
    int64_t e = (int64_t)r->integer;
    freeReplyObject(r);
    r = NULL;
    char suffix[64];
    snprintf(suffix, sizeof suffix, "%lld", (long long)e);
    rdv_name(vkey, sizeof vkey, k, suffix);
    r = redisCommand(c, "SET %s %b EX %d", vkey, blob, len, RDV_TTL_S);
    if (!r || r->type == REDIS_REPLY_ERROR) {
        s = qn_fail(QN_ERR_NET, "rendezvous: SET %s: %s", vkey, r ? r->str : c->errstr);
        goto out;
    }
    freeReplyObject(r);
    r = redisCommand(c, "EXPIRE %s %d", ekey, RDV_TTL_S);
    if (!r || r->type == REDIS_REPLY_ERROR) {
        s = qn_fail(QN_ERR_NET, "rendezvous: EXPIRE %s: %s", ekey, r ? r->str : c->errstr);
        goto out;
    }
    if (epoch) *epoch = e;
out:
    if (r) freeReplyObject(r);
    redisFree(c);
    return s;
}

qn_status qn_rdv_fetch(const qn_rdv_key *k, int64_t after, void *blob, size_t len,
                       uint32_t timeout_ms, int64_t *epoch) {
    redisContext *c;
    QN_CHECK(rdv_connect(k, &c));
    char ekey[512], vkey[600];
    rdv_name(ekey, sizeof ekey, k, "epoch");
    double deadline = qn_now_s() + (double)timeout_ms / 1000.0;
    qn_status s = QN_OK;
    for (;;) {
        int64_t e = 0;
        s = rdv_epoch(c, ekey, &e);
        if (s != QN_OK) break;
        if (e > after) {
            char suffix[64];
            snprintf(suffix, sizeof suffix, "%lld", (long long)e);
            rdv_name(vkey, sizeof vkey, k, suffix);
            redisReply *r = redisCommand(c, "GET %s", vkey);
            if (!r) {
                s = qn_fail(QN_ERR_NET, "rendezvous: GET %s: %s", vkey, c->errstr);
                break;
            }
            if (r->type == REDIS_REPLY_STRING) {
                if ((size_t)r->len != len)
                    s = qn_fail(QN_ERR_FORMAT, "rendezvous: %s holds %zu bytes, expected %zu",
                                vkey, (size_t)r->len, len);
                else
                    memcpy(blob, r->str, len);
                freeReplyObject(r);
                if (s == QN_OK && epoch) *epoch = e;
                break;
            }
            freeReplyObject(r); /* epoch bumped, value not yet SET: poll again */
        }
        if (qn_now_s() > deadline) {
            s = qn_fail(QN_ERR_TIMEOUT, "rendezvous: no %s:%s:%s published after epoch %lld "
                        "within %u ms (is rank 0 up?)", k->job, k->group, k->name,
                        (long long)after, timeout_ms);
            break;
        }
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    redisFree(c);
    return s;
}
