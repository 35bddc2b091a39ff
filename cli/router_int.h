/* router_int.h — what cli/router.c (registry, dispatch, weight updates,
 * the loop) and cli/router_http.c (the HTTP API) share: the router's state
 * and the few functions each side calls on the other. Internal to `quench
 * router`; the service's entry point is router.h. Everything runs on the
 * router's loop thread. */
#ifndef QN_CLI_ROUTER_INT_H
#define QN_CLI_ROUTER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "cli/router.h"
#include "cli/router_json.h"
#include "core/tokenizer/tokenizer.h"
#include "net/codec.h"
#include "net/http_server.h"
#include "net/redis.h"
#include "net/zchan.h"

#define RT_SENDER "router"
#define RT_HASH 4096u
#define RT_PUMP_BATCH 2048 /* messages per drain before yielding to the loop */
#define RT_MAX_ATTEMPTS 8u /* dispatches of one request before it fails */
#define RT_MAX_N 1024u     /* samples in one request */
#define RT_ID_CAP (QN_ZMQ_MAX_IDENTITY + 1)

static const double k_lat_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                      2.5,   5,    10,    30,   60,  120,  300};
#define RT_N_LAT (sizeof k_lat_bounds / sizeof k_lat_bounds[0])

typedef struct rt_engine {
    char id[RT_ID_CAP];
    uint8_t ident[RT_ID_CAP];
    size_t ident_len;
    char host[128], device[64], endpoint[256];
    uint32_t max_running;
    uint64_t kv_tokens;
    bool fp8;
    bool version_known; /* set by the first heartbeat */
    uint64_t version;
    bool draining;
    bool dead; /* unreachable: dropped at the next tick */
    uint64_t last_heard, registered_at, resync_at;
    uint32_t outstanding;
    uint64_t outstanding_tokens;
    uint32_t hb_running, hb_queued;
    uint64_t hb_free_kv;
    uint64_t results;
    uint64_t last_pick; /* dispatch serial: ties go to the least recently used */
} rt_engine;

/* HTTP side of a request. */
typedef struct rt_http {
    qn_http_conn *conn;
    qn_rj_request rj;
    Quench__GenerateRequest gr;
    Quench__SamplingParams sp;
    Quench__Envelope **results; /* n decoded envelopes, owned */
    uint64_t deadline;
    bool sse;                   /* streaming: the event stream has begun */
    struct rt_stream *st;       /* streaming: [n] what each choice has sent so far */
} rt_http;

typedef struct rt_req {
    uint64_t rid; /* envelope id of the current dispatch; 0 while queued */
    uint64_t serial;
    bool from_http;
    uint8_t client[RT_ID_CAP];
    size_t client_len;
    uint64_t client_rid;
    rt_http *http;
    Quench__Envelope *env;       /* ZMQ: the client's decoded envelope (owned) */
    Quench__GenerateRequest *gr; /* into env, or http->gr */
    uint32_t n, n_done;
    uint8_t *done;
    uint64_t cost;
    rt_engine *engine;
    uint64_t t_start, t_queued;
    uint32_t attempts;
    int where;                  /* RQ_* */
    struct rt_req *prev, *next; /* in the queue or the in-flight list */
    struct rt_req *hnext;
} rt_req;

typedef struct rt_part { /* an engine taking part in a weight update */
    char id[RT_ID_CAP];
    int state; /* UPD_* */
    char error[256];
} rt_part;

/* UPD_GONE: the engine died or left during the update; it is neither waited
 * for nor a failure (a new engine gets the version when it registers). */
enum { UPD_WAIT_READY, UPD_READY, UPD_APPLIED, UPD_FAILED, UPD_GONE };
enum { RQ_NONE, RQ_QUEUED, RQ_INFLIGHT };

typedef struct rt {
    const qn_router_opts *o;
    uv_loop_t loop;
    uv_poll_t zpoll;
    uv_timer_t ztimer, tick, grace;
    uv_signal_t sigterm, sigint;
    int handles; /* open uv handles, for shutdown */
    bool poll_init, timers_init;
    void *zctx, *zsock;
    char zendpoint[256];
    qn_http_server *http;
    qn_redis *redis;
    qn_tokenizer *tok;
    rt_engine **engines;
    size_t n_engines, cap_engines;
    rt_req *q_head, *q_tail;
    size_t n_queued;
    rt_req *inflight;
    size_t n_inflight;
    rt_req *hash[RT_HASH];
    uint64_t next_rid, next_serial;
    uint64_t version;
    Quench__WeightManifest *manifest; /* of `version`; NULL while 0 */
    /* weight update in progress */
    bool upd_active, upd_ready_sent;
    uint64_t upd_version;
    Quench__WeightManifest *upd_manifest;
    uint8_t upd_client[RT_ID_CAP];
    size_t upd_client_len;
    uint64_t upd_client_rid;
    rt_part *parts;
    size_t n_parts;
    bool stopping;
    /* metrics */
    uint64_t req_zmq, req_http, req_failed, req_done, redispatched, bad_messages, stale_results,
        dup_results, engines_dropped, updates_done, redis_errors;
    uint64_t lat_bucket[RT_N_LAT + 1];
    double lat_sum;
    uint64_t lat_count;
    uint64_t bad_log_at, redis_log_at;
    bool in_pump; /* zpump is running: a nested call (an HTTP handler run from
                   * inside a message handler) leaves the draining to it */
} rt;

/* router.c */
uint64_t rt_now_ms(rt *r);
rt_engine *rt_engine_find(rt *r, const char *id);
/* at the current version, not draining, alive (room not considered) */
bool rt_engine_eligible(const rt *r, const rt_engine *e);
size_t rt_count_dispatchable(const rt *r);
void rt_redis_engine_put(rt *r, const rt_engine *e);
/* appends q to the queue (front: before everything waiting) */
void rt_queue_push(rt *r, rt_req *q, bool front);
/* dispatches queued requests while engines have room */
void rt_pump_queue(rt *r);
/* frees a request that is in no list */
void rt_req_free(rt_req *q);
/* drains the ZeroMQ socket (call after sending: a send can eat the edge) */
void rt_zpump(rt *r);
qn_status rt_zsend(rt *r, const uint8_t *ident, size_t len, const Quench__Envelope *env,
                   uint64_t rid);

/* router_http.c */
/* all n samples of HTTP request q are in: answers its client */
void rt_http_answer(rt *r, rt_req *q);
/* Streaming: forwards the partial result g of choice `slot` as an event. */
void rt_http_partial(rt *r, rt_req *q, uint32_t slot, const Quench__GenerateResult *g);
/* Frees the streaming state of h (rt_req_free calls it). */
void rt_http_stream_free(rt_http *h, uint32_t n);
/* Ends a begun event stream with an error event (status, msg). */
void rt_http_stream_error(rt_http *h, int status, const char *msg);
/* the qn_http_handler of the router's server (user = rt *) */
void rt_on_http(qn_http_conn *conn, const qn_http_request *hr, void *user);

#endif
