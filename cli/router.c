/* router.c — the request router service (router.h; the wire protocol and
 * the HTTP API are in docs/services.md; the HTTP side is router_http.c,
 * the state both share router_int.h).
 *
 * One libuv loop, one thread. The ZeroMQ ROUTER socket is watched with
 * uv_poll on ZMQ_FD, which is edge-triggered: every wake-up drains the
 * socket with non-blocking receives until it is empty, and so does every
 * callback that sent something (a send can consume the edge), with a short
 * repeating timer as a safety net. A slower "tick" timer expires engines,
 * queued requests and HTTP deadlines.
 *
 * A request (from a ZeroMQ client or from HTTP) lives in exactly one of two
 * lists: the FIFO queue (waiting for an engine) or in flight (sent to one
 * engine under a router-chosen envelope request id, looked up in a hash
 * table when results come back). Re-sending after an engine is lost takes
 * a fresh id, so a late answer from the lost engine is recognised as stale
 * and dropped. Per request a bitmap of its n samples records what was
 * already forwarded: a sample is forwarded once.
 *
 * Streaming HTTP requests set GenerateRequest.stream; the engine's partial
 * results are forwarded as events (router_http.c) and never complete a
 * request. Leaves out: resuming a stream on another engine (cut instead),
 * continuing a re-sent request from its partial output (it starts from
 * scratch), persistence of queued requests across router restarts, and
 * Redis calls off the loop thread (they are synchronous with a timeout). */
#include "cli/router.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>
#include <zmq.h>

#include "cli/router_int.h"
#include "cli/router_json.h"
#include "core/log.h"
#include "core/tokenizer/tokenizer.h"
#include "net/codec.h"
#include "net/http_server.h"
#include "net/redis.h"
#include "net/weights.h"
#include "net/zchan.h"

/* ------------------------------------------------------------------ helpers */

uint64_t rt_now_ms(rt *r) {
    return uv_now(&r->loop);
}

static bool ident_eq(const uint8_t *a, size_t al, const uint8_t *b, size_t bl) {
    return al == bl && memcmp(a, b, al) == 0;
}

static void on_ztimer(uv_timer_t *t);

qn_status rt_zsend(rt *r, const uint8_t *ident, size_t len, const Quench__Envelope *env,
                   uint64_t rid) {
    qn_status st = qn_zsend(r->zsock, ident, len, env, rid, RT_SENDER);
    if (st != QN_OK)
        QN_LOG_DEBUG("router: send %s to '%.*s': %s", qn_envelope_body_name(env->body_case),
                     (int)len, (const char *)ident, qn_last_error());
    return st;
}

rt_engine *rt_engine_find(rt *r, const char *id) {
    for (size_t i = 0; i < r->n_engines; i++)
        if (strcmp(r->engines[i]->id, id) == 0) return r->engines[i];
    return NULL;
}

bool rt_engine_eligible(const rt *r, const rt_engine *e) {
    return !e->dead && !e->draining && e->version_known && e->version == r->version;
}

static bool engine_has_room(const rt_engine *e) {
    return e->outstanding < e->max_running;
}

size_t rt_count_dispatchable(const rt *r) {
    size_t n = 0;
    for (size_t i = 0; i < r->n_engines; i++)
        n += rt_engine_eligible(r, r->engines[i]);
    return n;
}

/* ------------------------------------------------------------------ redis */

static void redis_warn(rt *r) {
    r->redis_errors++;
    uint64_t t = rt_now_ms(r);
    if (r->redis_log_at == 0 || t - r->redis_log_at >= 5000) {
        r->redis_log_at = t;
        QN_LOG_WARN("router: redis (%" PRIu64 " errors so far; the registry in memory goes on): %s",
                    r->redis_errors, qn_last_error());
    }
}

void rt_redis_engine_put(rt *r, const rt_engine *e) {
    if (!r->redis) return;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "engine_id", e->id);
    cJSON_AddStringToObject(o, "endpoint", e->endpoint);
    cJSON_AddStringToObject(o, "host", e->host);
    cJSON_AddStringToObject(o, "device", e->device);
    cJSON_AddNumberToObject(o, "max_running_requests", e->max_running);
    cJSON_AddNumberToObject(o, "kv_cache_tokens", (double)e->kv_tokens);
    cJSON_AddBoolToObject(o, "fp8", e->fp8);
    cJSON_AddNumberToObject(o, "weight_version", (double)e->version);
    cJSON_AddBoolToObject(o, "draining", e->draining);
    char *json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    char suffix[300], key[512];
    snprintf(suffix, sizeof suffix, "engines:%s", e->id);
    qn_redis_key(r->redis, key, sizeof key, suffix);
    if (json && qn_redis_command(r->redis, NULL, "SET %s %s PX %u", key, json,
                                 (unsigned)r->o->engine_timeout_ms) != QN_OK) {
        redis_warn(r);
    }
    free(json);
}

static void redis_engine_del(rt *r, const rt_engine *e) {
    if (!r->redis) return;
    char suffix[300], key[512];
    snprintf(suffix, sizeof suffix, "engines:%s", e->id);
    qn_redis_key(r->redis, key, sizeof key, suffix);
    if (qn_redis_command(r->redis, NULL, "DEL %s", key) != QN_OK) {
        redis_warn(r);
    }
}

static void redis_version_put(rt *r) {
    if (!r->redis) return;
    char key[512];
    qn_redis_key(r->redis, key, sizeof key, "weight_version");
    if (qn_redis_command(r->redis, NULL, "SET %s %" PRIu64, key, r->version) != QN_OK) {
        redis_warn(r);
    }
}

/* ------------------------------------------------------------------ request lists */

static void hash_put(rt *r, rt_req *q) {
    size_t b = q->rid % RT_HASH;
    q->hnext = r->hash[b];
    r->hash[b] = q;
}

static void hash_del(rt *r, rt_req *q) {
    for (rt_req **p = &r->hash[q->rid % RT_HASH]; *p; p = &(*p)->hnext) {
        if (*p == q) {
            *p = q->hnext;
            q->hnext = NULL;
            return;
        }
    }
}

static rt_req *hash_get(rt *r, uint64_t rid) {
    for (rt_req *q = r->hash[rid % RT_HASH]; q; q = q->hnext)
        if (q->rid == rid) return q;
    return NULL;
}

void rt_queue_push(rt *r, rt_req *q, bool front) {
    q->where = RQ_QUEUED;
    q->t_queued = rt_now_ms(r);
    q->prev = q->next = NULL;
    if (!r->q_head) {
        r->q_head = r->q_tail = q;
    } else if (front) {
        q->next = r->q_head;
        r->q_head->prev = q;
        r->q_head = q;
    } else {
        q->prev = r->q_tail;
        r->q_tail->next = q;
        r->q_tail = q;
    }
    r->n_queued++;
}

static void queue_remove(rt *r, rt_req *q) {
    if (q->prev)
        q->prev->next = q->next;
    else
        r->q_head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        r->q_tail = q->prev;
    q->prev = q->next = NULL;
    q->where = RQ_NONE;
    r->n_queued--;
}

static void inflight_add(rt *r, rt_req *q) {
    q->where = RQ_INFLIGHT;
    q->prev = NULL;
    q->next = r->inflight;
    if (r->inflight) r->inflight->prev = q;
    r->inflight = q;
    r->n_inflight++;
}

static void inflight_remove(rt *r, rt_req *q) {
    if (q->prev)
        q->prev->next = q->next;
    else
        r->inflight = q->next;
    if (q->next) q->next->prev = q->prev;
    q->prev = q->next = NULL;
    q->where = RQ_NONE;
    r->n_inflight--;
}

/* Takes q off its engine (it stays in no list). */
static void req_detach(rt *r, rt_req *q) {
    if (q->where == RQ_QUEUED) {
        queue_remove(r, q);
        return;
    }
    if (q->where == RQ_INFLIGHT) inflight_remove(r, q);
    hash_del(r, q);
    q->rid = 0;
    if (q->engine) {
        q->engine->outstanding--;
        q->engine->outstanding_tokens -= q->cost;
        q->engine = NULL;
    }
}

void rt_req_free(rt_req *q) {
    if (!q) return;
    if (q->http) {
        for (uint32_t i = 0; q->http->results && i < q->n; i++)
            qn_envelope_free(q->http->results[i]);
        free(q->http->results);
        rt_http_stream_free(q->http, q->n);
        qn_rj_request_free(&q->http->rj);
        free(q->http);
    }
    qn_envelope_free(q->env);
    free(q->done);
    free(q);
}

static void observe_latency(rt *r, double s) {
    if (!isfinite(s) || s < 0) return;
    size_t b = 0;
    while (b < RT_N_LAT && s > k_lat_bounds[b])
        b++;
    r->lat_bucket[b]++;
    r->lat_sum += s;
    r->lat_count++;
}

static void send_abort(rt *r, rt_req *q) {
    if (!q->engine || q->rid == 0) return;
    uint64_t id = q->rid;
    Quench__AbortRequest ab = QUENCH__ABORT_REQUEST__INIT;
    ab.n_request_ids = 1;
    ab.request_ids = &id;
    Quench__Envelope env = qn_envelope_abort_request(&ab);
    rt_zsend(r, q->engine->ident, q->engine->ident_len, &env, ++r->next_rid);
}

/* ------------------------------------------------------------------ finishing */

/* q has every sample: account, answer HTTP, free. */
static void req_complete(rt *r, rt_req *q) {
    req_detach(r, q);
    r->req_done++;
    observe_latency(r, (rt_now_ms(r) - q->t_start) / 1000.0);
    if (q->from_http) rt_http_answer(r, q);
    rt_req_free(q);
}

/* Fails every sample of q not yet answered: ZMQ clients get error
 * results, HTTP clients `status`. */
static void req_fail(rt *r, rt_req *q, int status, const char *msg) {
    if (q->where == RQ_INFLIGHT && q->engine) send_abort(r, q);
    req_detach(r, q);
    r->req_failed++;
    if (q->from_http && q->http->sse) {
        rt_http_stream_error(q->http, status, msg);
    } else if (q->from_http) {
        qn_http_respond_error(q->http->conn, status, msg);
    } else {
        for (uint32_t i = 0; i < q->n; i++) {
            if (q->done[i]) continue;
            Quench__GenerateResult g = QUENCH__GENERATE_RESULT__INIT;
            g.group_id = q->gr->group_id;
            g.sample_index = q->gr->sample_index + i;
            g.error = (char *)msg;
            Quench__Envelope env = qn_envelope_generate_result(&g);
            rt_zsend(r, q->client, q->client_len, &env, q->client_rid);
        }
    }
    rt_req_free(q);
}

/* ------------------------------------------------------------------ dispatch */

static rt_engine *pick_engine(rt *r, const rt_req *q) {
    if (!q->from_http) {
        for (rt_req *x = r->inflight; x; x = x->next) {
            if (x->from_http || !x->engine || x->gr->group_id != q->gr->group_id ||
                !ident_eq(x->client, x->client_len, q->client, q->client_len))
                continue;
            if (rt_engine_eligible(r, x->engine) && engine_has_room(x->engine)) return x->engine;
            break; /* the group's engine is full: balance by tokens */
        }
    }
    rt_engine *best = NULL;
    for (size_t i = 0; i < r->n_engines; i++) {
        rt_engine *e = r->engines[i];
        if (!rt_engine_eligible(r, e) || !engine_has_room(e)) continue;
        if (!best || e->outstanding_tokens < best->outstanding_tokens ||
            (e->outstanding_tokens == best->outstanding_tokens && e->last_pick < best->last_pick))
            best = e;
    }
    return best;
}

static bool send_to(rt *r, rt_req *q, rt_engine *e) {
    Quench__GenerateRequest g = *q->gr;
    if (g.min_weight_version < r->version) g.min_weight_version = r->version;
    Quench__Envelope env = qn_envelope_generate_request(&g);
    uint64_t rid = ++r->next_rid;
    if (rt_zsend(r, e->ident, e->ident_len, &env, rid) != QN_OK) {
        QN_LOG_WARN("router: engine %s is unreachable (%s); dropping it", e->id, qn_last_error());
        e->dead = true;
        return false;
    }
    q->rid = rid;
    q->engine = e;
    e->last_pick = rid;
    q->attempts++;
    e->outstanding++;
    e->outstanding_tokens += q->cost;
    hash_put(r, q);
    inflight_add(r, q);
    return true;
}

void rt_pump_queue(rt *r) {
    if (r->upd_active || r->stopping) return;
    while (r->q_head) {
        rt_req *q = r->q_head;
        if (q->from_http && q->http->sse) {
            /* its engine went away after tokens were streamed: a new engine would
             * start over, and the client cannot take back what it has read */
            req_fail(r, q, 502, "engine lost while streaming; the stream is cut");
            continue;
        }
        rt_engine *e = pick_engine(r, q);
        if (!e) break;
        queue_remove(r, q);
        if (!send_to(r, q, e)) rt_queue_push(r, q, true);
    }
}

/* ------------------------------------------------------------------ engines */

static void update_check(rt *r);

static void part_mark(rt *r, const char *id, int state, const char *error) {
    for (size_t i = 0; i < r->n_parts; i++) {
        rt_part *p = &r->parts[i];
        if (strcmp(p->id, id) != 0 || p->state == UPD_FAILED) continue;
        p->state = state;
        if (error) snprintf(p->error, sizeof p->error, "%s", error);
    }
}

/* Removes e; its requests in flight go back to the front of the queue. */
static void engine_drop(rt *r, rt_engine *e, const char *why) {
    size_t n_back = 0;
    rt_req *back = NULL, *back_tail = NULL;
    for (rt_req *x = r->inflight, *nx; x; x = nx) {
        nx = x->next;
        if (x->engine != e) continue;
        req_detach(r, x);
        x->next = NULL;
        if (back_tail)
            back_tail->next = x;
        else
            back = x;
        back_tail = x;
        n_back++;
    }
    /* the oldest go first: push in reverse so the list order is kept */
    rt_req *arr[64], **all = n_back <= 64 ? arr : malloc(n_back * sizeof *all);
    size_t k = 0;
    for (rt_req *x = back, *nx; x; x = nx) {
        nx = x->next;
        if (all)
            all[k++] = x;
        else
            rt_queue_push(r, x, false);
    }
    for (size_t i = k; i-- > 0;) {
        if (all[i]->attempts >= RT_MAX_ATTEMPTS) {
            req_fail(r, all[i], 503, "request failed on too many engines");
            continue;
        }
        rt_queue_push(r, all[i], true);
    }
    if (all != arr) free(all);
    r->redispatched += n_back;
    r->engines_dropped++;
    QN_LOG_WARN("router: dropping engine %s (%s); %zu requests in flight on it are sent again",
                e->id, why, n_back);
    redis_engine_del(r, e);
    if (r->upd_active) part_mark(r, e->id, UPD_GONE, why);
    for (size_t i = 0; i < r->n_engines; i++) {
        if (r->engines[i] == e) {
            r->engines[i] = r->engines[--r->n_engines];
            break;
        }
    }
    free(e);
    if (r->upd_active) update_check(r);
    rt_pump_queue(r);
}

static void on_register(rt *r, qn_zmsg *m) {
    const Quench__EngineInfo *info = m->env->register_->engine;
    Quench__RegisterAck ack = QUENCH__REGISTER_ACK__INIT;
    Quench__Envelope env = qn_envelope_register_ack(&ack);
    if (r->stopping) {
        ack.error = "router is shutting down";
        rt_zsend(r, m->identity, m->identity_len, &env, m->env->request_id);
        return;
    }
    rt_engine *e = rt_engine_find(r, info->engine_id);
    if (e) {
        /* a restarted engine lost what it was running */
        engine_drop(r, e, "registered again");
    }
    e = calloc(1, sizeof *e);
    if (!e) return;
    if (r->n_engines == r->cap_engines) {
        size_t cap = r->cap_engines ? r->cap_engines * 2 : 16;
        rt_engine **ne = realloc(r->engines, cap * sizeof *ne);
        if (!ne) {
            free(e);
            return;
        }
        r->engines = ne;
        r->cap_engines = cap;
    }
    r->engines[r->n_engines++] = e;
    snprintf(e->id, sizeof e->id, "%s", info->engine_id);
    memcpy(e->ident, m->identity, m->identity_len);
    e->ident_len = m->identity_len;
    snprintf(e->host, sizeof e->host, "%s", info->host);
    snprintf(e->device, sizeof e->device, "%s", info->device);
    snprintf(e->endpoint, sizeof e->endpoint, "%s", info->endpoint);
    e->max_running = info->max_running_requests;
    e->kv_tokens = info->kv_cache_tokens;
    e->fp8 = info->fp8;
    e->last_heard = e->registered_at = e->resync_at = rt_now_ms(r);
    ack.accepted = true;
    ack.heartbeat_interval_ms = r->o->heartbeat_ms;
    ack.weight_version = r->upd_active ? r->upd_version : r->version;
    ack.manifest = r->upd_active ? r->upd_manifest : r->manifest;
    rt_zsend(r, m->identity, m->identity_len, &env, m->env->request_id);
    rt_redis_engine_put(r, e);
    QN_LOG_INFO("router: engine %s registered (host %s, device %s, max_running_requests %u); "
                "told to load version %" PRIu64,
                e->id, e->host, e->device, e->max_running, ack.weight_version);
}

static void on_heartbeat(rt *r, qn_zmsg *m) {
    const Quench__Heartbeat *hb = m->env->heartbeat;
    rt_engine *e = rt_engine_find(r, hb->engine_id);
    Quench__HeartbeatAck ack = QUENCH__HEARTBEAT_ACK__INIT;
    ack.weight_version = r->version;
    ack.registered = e != NULL && !e->dead;
    Quench__Envelope env = qn_envelope_heartbeat_ack(&ack);
    rt_zsend(r, m->identity, m->identity_len, &env, m->env->request_id);
    if (!e || e->dead) return;
    memcpy(e->ident, m->identity, m->identity_len);
    e->ident_len = m->identity_len;
    e->last_heard = rt_now_ms(r);
    bool was_eligible = rt_engine_eligible(r, e);
    e->version_known = true;
    e->version = hb->weight_version;
    e->hb_running = hb->running_requests;
    e->hb_queued = hb->queued_requests;
    e->hb_free_kv = hb->free_kv_tokens;
    if (hb->draining && !e->draining) {
        e->draining = true;
        QN_LOG_INFO("router: engine %s is draining", e->id);
    }
    rt_redis_engine_put(r, e);
    /* behind the job (a failed pull, or it missed the update): offer the
     * current manifest again now and then */
    uint64_t every = 10ull * r->o->heartbeat_ms;
    if (!r->upd_active && r->manifest && e->version != r->version && !e->draining &&
        rt_now_ms(r) - e->resync_at >= every) {
        e->resync_at = rt_now_ms(r);
        Quench__WeightUpdateBegin b = QUENCH__WEIGHT_UPDATE_BEGIN__INIT;
        b.manifest = r->manifest;
        Quench__Envelope benv = qn_envelope_weight_update_begin(&b);
        QN_LOG_INFO("router: engine %s has version %" PRIu64 ", job is at %" PRIu64
                    "; sending the manifest again",
                    e->id, e->version, r->version);
        rt_zsend(r, e->ident, e->ident_len, &benv, ++r->next_rid);
    }
    if (!was_eligible && rt_engine_eligible(r, e)) rt_pump_queue(r);
}

static void on_drain(rt *r, qn_zmsg *m) {
    rt_engine *e = rt_engine_find(r, m->env->drain->engine_id);
    if (!e) return;
    if (!e->draining) QN_LOG_INFO("router: engine %s is draining", e->id);
    e->draining = true;
    rt_redis_engine_put(r, e);
}

static void on_result(rt *r, qn_zmsg *m) {
    const Quench__GenerateResult *g = m->env->generate_result;
    rt_req *q = hash_get(r, m->env->request_id);
    if (!q || !q->engine ||
        !ident_eq(q->engine->ident, q->engine->ident_len, m->identity, m->identity_len)) {
        r->stale_results++;
        QN_LOG_DEBUG("router: result for unknown request %" PRIu64 " from '%s' dropped",
                     m->env->request_id, m->identity);
        return;
    }
    rt_engine *e = q->engine;
    e->last_heard = rt_now_ms(r);
    if (g->sample_index < q->gr->sample_index || g->sample_index - q->gr->sample_index >= q->n) {
        r->stale_results++;
        QN_LOG_WARN("router: engine %s answered sample %u of a request for samples %u..%u; dropped",
                    e->id, g->sample_index, q->gr->sample_index, q->gr->sample_index + q->n - 1);
        return;
    }
    uint32_t slot = g->sample_index - q->gr->sample_index;
    if (q->done[slot]) {
        r->dup_results++;
        return;
    }
    if (g->partial) {
        /* a streaming delta: never completes anything */
        if (q->from_http)
            rt_http_partial(r, q, slot, g);
        else
            rt_zsend(r, q->client, q->client_len, m->env, q->client_rid);
        return;
    }
    if (g->error && g->error[0] && (e->draining || e->version != r->version) &&
        q->attempts < RT_MAX_ATTEMPTS) {
        /* refused because it is leaving or behind: another engine can serve it */
        QN_LOG_INFO("router: engine %s refused request %" PRIu64 " (%s); sending it elsewhere",
                    e->id, m->env->request_id, g->error);
        req_detach(r, q);
        r->redispatched++;
        rt_queue_push(r, q, true);
        rt_pump_queue(r);
        return;
    }
    q->done[slot] = 1;
    q->n_done++;
    e->results++;
    if (q->from_http) {
        q->http->results[slot] = m->env;
        m->env = NULL;
    } else {
        rt_zsend(r, q->client, q->client_len, m->env, q->client_rid);
    }
    if (q->n_done == q->n) {
        req_complete(r, q);
        rt_pump_queue(r);
    }
}

/* ------------------------------------------------------------------ weight updates */

static void send_status(rt *r, int phase) {
    Quench__WeightUpdateStatus st = QUENCH__WEIGHT_UPDATE_STATUS__INIT;
    st.version = r->upd_version;
    st.phase = phase;
    char **ok_ids = calloc(r->n_parts + 1, sizeof(char *));
    char **bad_ids = calloc(r->n_parts + 1, sizeof(char *));
    char err[1024] = "";
    size_t elen = 0;
    int reached =
        phase == QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_READY ? UPD_READY : UPD_APPLIED;
    size_t n_gone = 0;
    for (size_t i = 0; ok_ids && bad_ids && i < r->n_parts; i++) {
        rt_part *p = &r->parts[i];
        if (p->state == UPD_FAILED) {
            bad_ids[st.n_failed_engine_ids++] = p->id;
            if (elen < sizeof err - 1)
                elen += (size_t)snprintf(err + elen, sizeof err - elen, "%s%s: %s",
                                         elen ? "; " : "", p->id, p->error);
        } else if (p->state == UPD_GONE) {
            n_gone++; /* died during the update: neither applied nor failed */
        } else if (p->state >= reached) {
            ok_ids[st.n_engine_ids++] = p->id;
        }
    }
    if (elen >= sizeof err) elen = sizeof err - 1;
    /* the message may have been cut inside a UTF-8 character */
    while (elen > 0 && ((unsigned char)err[elen - 1] & 0xC0) == 0x80)
        err[--elen] = 0;
    if (elen > 0 && (unsigned char)err[elen - 1] >= 0xC0) err[--elen] = 0;
    st.engine_ids = ok_ids;
    st.failed_engine_ids = bad_ids;
    st.ok = st.n_failed_engine_ids == 0;
    st.error = st.ok ? "" : err;
    Quench__Envelope env = qn_envelope_weight_update_status(&st);
    rt_zsend(r, r->upd_client, r->upd_client_len, &env, r->upd_client_rid);
    QN_LOG_INFO("router: weight update to %" PRIu64 ": %s (%zu engines ok, %zu failed%s%s, "
                "%zu gone)", r->upd_version, reached == UPD_READY ? "READY" : "APPLIED",
                st.n_engine_ids, st.n_failed_engine_ids, st.ok ? "" : ": ", err, n_gone);
    free(ok_ids);
    free(bad_ids);
}

static void update_check(rt *r) {
    if (!r->upd_active) return;
    size_t waiting_ready = 0, waiting_applied = 0;
    for (size_t i = 0; i < r->n_parts; i++) {
        waiting_ready += r->parts[i].state == UPD_WAIT_READY;
        waiting_applied += r->parts[i].state == UPD_WAIT_READY || r->parts[i].state == UPD_READY;
    }
    if (!r->upd_ready_sent && waiting_ready == 0) {
        send_status(r, QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_READY);
        r->upd_ready_sent = true;
    }
    if (!r->upd_ready_sent || waiting_applied > 0) return;
    r->version = r->upd_version;
    qn_weight_manifest_free(r->manifest);
    r->manifest = r->upd_manifest;
    r->upd_manifest = NULL;
    for (size_t i = 0; i < r->n_parts; i++) {
        rt_engine *e = rt_engine_find(r, r->parts[i].id);
        if (e && r->parts[i].state == UPD_APPLIED) {
            e->version = r->version;
            e->version_known = true;
        }
    }
    redis_version_put(r);
    send_status(r, QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_APPLIED);
    r->updates_done++;
    free(r->parts);
    r->parts = NULL;
    r->n_parts = 0;
    r->upd_active = false;
    rt_pump_queue(r);
}

static void status_refuse(rt *r, qn_zmsg *m, uint64_t version, const char *why) {
    Quench__WeightUpdateStatus st = QUENCH__WEIGHT_UPDATE_STATUS__INIT;
    st.version = version;
    st.phase = QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_READY;
    st.ok = false;
    st.error = (char *)why;
    Quench__Envelope env = qn_envelope_weight_update_status(&st);
    QN_LOG_WARN("router: weight update to %" PRIu64 " refused: %s", version, why);
    rt_zsend(r, m->identity, m->identity_len, &env, m->env->request_id);
}

static void on_update_begin(rt *r, qn_zmsg *m) {
    const Quench__WeightManifest *mf = m->env->weight_update_begin->manifest;
    char why[256];
    if (!mf) {
        status_refuse(r, m, 0, "WeightUpdateBegin without a manifest");
        return;
    }
    if (r->stopping) {
        status_refuse(r, m, mf->version, "router is shutting down");
        return;
    }
    if (r->upd_active) {
        snprintf(why, sizeof why, "an update to version %" PRIu64 " is in progress",
                 r->upd_version);
        status_refuse(r, m, mf->version, why);
        return;
    }
    if (mf->version <= r->version) {
        snprintf(why, sizeof why,
                 "version %" PRIu64 " is not newer than the current version %" PRIu64, mf->version,
                 r->version);
        status_refuse(r, m, mf->version, why);
        return;
    }
    if (qn_weight_manifest_copy(mf, &r->upd_manifest) != QN_OK) {
        status_refuse(r, m, mf->version, qn_last_error());
        return;
    }
    r->upd_active = true;
    r->upd_ready_sent = false;
    r->upd_version = mf->version;
    memcpy(r->upd_client, m->identity, m->identity_len);
    r->upd_client_len = m->identity_len;
    r->upd_client_rid = m->env->request_id;
    r->parts = calloc(r->n_engines + 1, sizeof *r->parts);
    r->n_parts = 0;
    QN_LOG_INFO("router: weight update to version %" PRIu64 " announced by '%s'", mf->version,
                m->identity);
    Quench__WeightUpdateBegin b = QUENCH__WEIGHT_UPDATE_BEGIN__INIT;
    b.manifest = r->upd_manifest;
    Quench__Envelope env = qn_envelope_weight_update_begin(&b);
    for (size_t i = 0; r->parts && i < r->n_engines; i++) {
        rt_engine *e = r->engines[i];
        if (e->dead || e->draining) continue; /* they take no more work anyway */
        rt_part *p = &r->parts[r->n_parts++];
        snprintf(p->id, sizeof p->id, "%s", e->id);
        p->state = UPD_WAIT_READY;
        e->resync_at = rt_now_ms(r);
        if (rt_zsend(r, e->ident, e->ident_len, &env, ++r->next_rid) != QN_OK) {
            /* its connection is gone: the engine died. Not a failure of the update: the
             * next tick drops it, and a restarted engine gets the version when it
             * registers. */
            e->dead = true;
            p->state = UPD_GONE;
            snprintf(p->error, sizeof p->error, "unreachable");
        }
    }
    update_check(r);
}

static void on_update_ack(rt *r, qn_zmsg *m) {
    const Quench__WeightUpdateAck *a = m->env->weight_update_ack;
    rt_engine *e = rt_engine_find(r, a->engine_id);
    if (e) e->last_heard = rt_now_ms(r);
    if (!r->upd_active || a->version != r->upd_version) {
        /* an engine catching up outside an update: its heartbeats tell the rest */
        QN_LOG_INFO("router: engine %s: version %" PRIu64 " %s%s%s", a->engine_id, a->version,
                    a->phase == QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_READY ? "ready"
                                                                                       : "applied",
                    a->ok ? "" : ", failed: ", a->ok ? "" : a->error);
        return;
    }
    if (!a->ok)
        part_mark(r, a->engine_id, UPD_FAILED, a->error);
    else if (a->phase == QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_READY) {
        for (size_t i = 0; i < r->n_parts; i++)
            if (strcmp(r->parts[i].id, a->engine_id) == 0 && r->parts[i].state == UPD_WAIT_READY)
                r->parts[i].state = UPD_READY;
    } else {
        /* APPLIED implies READY (an engine may skip straight to it) */
        for (size_t i = 0; i < r->n_parts; i++)
            if (strcmp(r->parts[i].id, a->engine_id) == 0 && r->parts[i].state != UPD_FAILED)
                r->parts[i].state = UPD_APPLIED;
    }
    update_check(r);
}

/* ------------------------------------------------------------------ clients */

static void on_generate(rt *r, qn_zmsg *m) {
    Quench__GenerateRequest *gr = m->env->generate_request;
    uint32_t n = gr->params && gr->params->n ? gr->params->n : 1;
    r->req_zmq++;
    rt_req *q = calloc(1, sizeof *q);
    if (q) q->done = calloc(n <= RT_MAX_N ? n : 1, 1);
    if (!q || !q->done) {
        free(q);
        return;
    }
    memcpy(q->client, m->identity, m->identity_len);
    q->client_len = m->identity_len;
    q->client_rid = m->env->request_id;
    q->env = m->env;
    m->env = NULL;
    q->gr = gr;
    q->n = n <= RT_MAX_N ? n : 1;
    q->serial = ++r->next_serial;
    q->t_start = rt_now_ms(r);
    int32_t max_new = gr->params ? gr->params->max_new_tokens : 0;
    q->cost = gr->n_input_ids + gr->n_prefix_output_ids + (uint64_t)(max_new > 0 ? max_new : 0) * n;
    char why[128];
    if (n > RT_MAX_N) {
        snprintf(why, sizeof why, "SamplingParams.n = %u is more than %u", n, RT_MAX_N);
        req_fail(r, q, 400, why);
    } else if (r->stopping) {
        req_fail(r, q, 503, "router is shutting down");
    } else if (r->n_queued >= r->o->max_queued) {
        snprintf(why, sizeof why, "router queue is full (%u requests waiting)", r->o->max_queued);
        req_fail(r, q, 503, why);
    } else {
        rt_queue_push(r, q, false);
        rt_pump_queue(r);
    }
}

static void on_client_abort(rt *r, qn_zmsg *m) {
    const Quench__AbortRequest *a = m->env->abort_request;
    for (size_t k = 0; k < a->n_request_ids; k++) {
        uint64_t id = a->request_ids[k];
        for (int list = 0; list < 2; list++) {
            for (rt_req *x = list ? r->inflight : r->q_head; x; x = x->next) {
                if (x->from_http || x->client_rid != id ||
                    !ident_eq(x->client, x->client_len, m->identity, m->identity_len))
                    continue;
                if (x->where == RQ_QUEUED) {
                    /* never started: answer it as aborted with nothing generated */
                    queue_remove(r, x);
                    for (uint32_t i = 0; i < x->n; i++) {
                        if (x->done[i]) continue;
                        Quench__GenerateResult g = QUENCH__GENERATE_RESULT__INIT;
                        g.group_id = x->gr->group_id;
                        g.sample_index = x->gr->sample_index + i;
                        g.finish_reason = QUENCH__FINISH_REASON__FINISH_REASON_ABORT;
                        Quench__Envelope env = qn_envelope_generate_result(&g);
                        rt_zsend(r, x->client, x->client_len, &env, x->client_rid);
                    }
                    rt_req_free(x);
                } else {
                    send_abort(r, x); /* the engine answers with what it had */
                }
                goto next_id;
            }
        }
    next_id:;
    }
}

static void bad_message(rt *r, qn_zmsg *m, qn_status st) {
    r->bad_messages++;
    uint64_t t = rt_now_ms(r);
    if (t - r->bad_log_at >= 1000 || r->bad_log_at == 0) {
        r->bad_log_at = t;
        QN_LOG_WARN("router: bad message (%s): %s", qn_status_name(st), qn_last_error());
    }
    (void)m;
}

static void on_message(rt *r, qn_zmsg *m) {
    switch (m->env->body_case) {
    case QUENCH__ENVELOPE__BODY_REGISTER:
        on_register(r, m);
        break;
    case QUENCH__ENVELOPE__BODY_HEARTBEAT:
        on_heartbeat(r, m);
        break;
    case QUENCH__ENVELOPE__BODY_DRAIN:
        on_drain(r, m);
        break;
    case QUENCH__ENVELOPE__BODY_GENERATE_RESULT:
        on_result(r, m);
        break;
    case QUENCH__ENVELOPE__BODY_WEIGHT_UPDATE_ACK:
        on_update_ack(r, m);
        break;
    case QUENCH__ENVELOPE__BODY_GENERATE_REQUEST:
        on_generate(r, m);
        break;
    case QUENCH__ENVELOPE__BODY_ABORT_REQUEST:
        on_client_abort(r, m);
        break;
    case QUENCH__ENVELOPE__BODY_WEIGHT_UPDATE_BEGIN:
        on_update_begin(r, m);
        break;
    default: {
        r->bad_messages++;
        Quench__Error e = QUENCH__ERROR__INIT;
        char msg[160];
        snprintf(msg, sizeof msg, "router does not accept %s messages",
                 qn_envelope_body_name(m->env->body_case));
        e.status = QN_ERR_UNSUPPORTED;
        e.message = msg;
        Quench__Envelope env = qn_envelope_error(&e);
        rt_zsend(r, m->identity, m->identity_len, &env, m->env->request_id);
    }
    }
}

/* Drains the socket: ZMQ_FD is edge-triggered, so read until it is empty. */
void rt_zpump(rt *r) {
    if (!r->zsock || r->in_pump) return;
    r->in_pump = true;
    int i = 0;
    for (; i < RT_PUMP_BATCH; i++) {
        qn_zmsg m;
        qn_status st = qn_zrecv(r->zsock, true, 0, &m);
        if (st == QN_ERR_TIMEOUT) break;
        if (st == QN_ERR_NET) {
            QN_LOG_WARN("router: zmq: %s", qn_last_error());
            break;
        }
        if (st != QN_OK)
            bad_message(r, &m, st);
        else
            on_message(r, &m);
        qn_zmsg_clear(&m);
    }
    r->in_pump = false;
    /* more waiting: come back on the next loop iteration */
    if (i == RT_PUMP_BATCH) uv_timer_start(&r->ztimer, on_ztimer, 0, 10);
}

/* ------------------------------------------------------------------ timers, signals */

static void on_zpoll(uv_poll_t *p, int status, int events) {
    rt *r = p->data;
    rt_zpump(r);
}

static void on_ztimer(uv_timer_t *t) {
    rt_zpump(t->data);
}

static void on_tick(uv_timer_t *t) {
    rt *r = t->data;
    uint64_t now = rt_now_ms(r);
    for (size_t i = 0; i < r->n_engines;) {
        rt_engine *e = r->engines[i];
        if (e->dead) {
            engine_drop(r, e, "unreachable");
            continue;
        }
        if (now - e->last_heard > r->o->engine_timeout_ms) {
            char why[96];
            snprintf(why, sizeof why, "no heartbeat for %" PRIu64 " ms", now - e->last_heard);
            engine_drop(r, e, why);
            continue;
        }
        i++;
    }
    uint64_t qt = (uint64_t)r->o->queue_timeout_s * 1000u;
    for (rt_req *x = r->q_head, *nx; x; x = nx) {
        nx = x->next;
        if (now - x->t_queued >= qt) {
            char why[160];
            snprintf(why, sizeof why,
                     "no engine could take the request within %u s (%zu engines, %zu dispatchable)",
                     r->o->queue_timeout_s, r->n_engines, rt_count_dispatchable(r));
            req_fail(r, x, 503, why);
            nx = r->q_head; /* the list changed; restart (timeouts are rare) */
        }
    }
    for (int list = 0; list < 2; list++) {
        for (rt_req *x = list ? r->inflight : r->q_head, *nx; x; x = nx) {
            nx = x->next;
            if (!x->from_http) continue;
            if (!qn_http_conn_is_open(x->http->conn)) {
                /* the client hung up: stop the work (nothing can be sent) */
                req_fail(r, x, 499, "client closed the connection");
                nx = list ? r->inflight : r->q_head;
            } else if (now >= x->http->deadline) {
                req_fail(r, x, 504, "request timed out (--request-timeout-s)");
                nx = list ? r->inflight : r->q_head;
            }
        }
    }
    rt_pump_queue(r);
    rt_zpump(r);
}

static void on_closed(uv_handle_t *h) {
    rt *r = h->data;
    r->handles--;
}

static void close_handle(rt *r, uv_handle_t *h) {
    if (!uv_is_closing(h)) uv_close(h, on_closed);
}

static void close_all(rt *r) {
    if (r->http) qn_http_server_close(r->http);
    r->http = NULL;
    if (r->poll_init) {
        uv_poll_stop(&r->zpoll);
        close_handle(r, (uv_handle_t *)&r->zpoll);
    }
    if (!r->timers_init) return;
    close_handle(r, (uv_handle_t *)&r->ztimer);
    close_handle(r, (uv_handle_t *)&r->tick);
    close_handle(r, (uv_handle_t *)&r->grace);
    close_handle(r, (uv_handle_t *)&r->sigterm);
    close_handle(r, (uv_handle_t *)&r->sigint);
}

static void on_grace(uv_timer_t *t) {
    close_all(t->data);
}

static void on_signal(uv_signal_t *s, int signum) {
    rt *r = s->data;
    if (r->stopping) return;
    r->stopping = true;
    QN_LOG_INFO("router: %s: stopping (%zu requests in flight, %zu queued)", strsignal(signum),
                r->n_inflight, r->n_queued);
    /* engines stop work nobody will collect; HTTP clients get an answer now */
    for (rt_req *x = r->inflight; x; x = x->next)
        if (!x->from_http) send_abort(r, x);
    for (int list = 0; list < 2; list++) {
        for (rt_req *x = list ? r->inflight : r->q_head, *nx; x; x = nx) {
            nx = x->next;
            if (!x->from_http) continue;
            req_fail(r, x, 503, "router is shutting down");
            nx = list ? r->inflight : r->q_head;
        }
    }
    /* let the answers flush before the connections close */
    uv_timer_start(&r->grace, on_grace, 200, 0);
}

/* ------------------------------------------------------------------ start, stop */

static qn_status write_port_file(rt *r) {
    if (!r->o->port_file) return QN_OK;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", r->o->port_file, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return qn_fail(QN_ERR_IO, "%s: %s", tmp, strerror(errno));
    fprintf(f, "zmq=%s\nhttp=%d\n", r->zendpoint, r->http ? qn_http_server_port(r->http) : -1);
    if (fclose(f) != 0 || rename(tmp, r->o->port_file) != 0) {
        qn_status st = qn_fail(QN_ERR_IO, "%s: %s", r->o->port_file, strerror(errno));
        unlink(tmp);
        return st;
    }
    return QN_OK;
}

static qn_status start(rt *r) {
    const qn_router_opts *o = r->o;
    if (o->tokenizer_dir) QN_CHECK(qn_tokenizer_load(o->tokenizer_dir, &r->tok));
    if (o->redis_url) {
        QN_CHECK(qn_redis_connect(o->redis_url, o->job, 2000, &r->redis));
        redis_version_put(r);
    }
    r->zctx = zmq_ctx_new();
    if (!r->zctx) return qn_fail(QN_ERR_NET, "zmq_ctx_new failed");
    QN_CHECK(qn_zsock_open(r->zctx, ZMQ_ROUTER, o->listen, true, NULL, &r->zsock));
    /* a client that stops reading must not stall the loop for long */
    int sndtimeo = 100;
    zmq_setsockopt(r->zsock, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);
    QN_CHECK(qn_zsock_endpoint(r->zsock, r->zendpoint, sizeof r->zendpoint));
    int fd = -1;
    size_t fdlen = sizeof fd;
    if (zmq_getsockopt(r->zsock, ZMQ_FD, &fd, &fdlen) != 0)
        return qn_fail(QN_ERR_NET, "zmq getsockopt ZMQ_FD: %s", zmq_strerror(zmq_errno()));
    if (uv_poll_init(&r->loop, &r->zpoll, fd) != 0)
        return qn_fail(QN_ERR_NET, "uv_poll_init failed");
    r->poll_init = true;
    r->zpoll.data = r;
    r->handles++;
    uv_poll_start(&r->zpoll, UV_READABLE, on_zpoll);
    uv_timer_init(&r->loop, &r->ztimer);
    uv_timer_init(&r->loop, &r->tick);
    uv_timer_init(&r->loop, &r->grace);
    uv_signal_init(&r->loop, &r->sigterm);
    uv_signal_init(&r->loop, &r->sigint);
    r->ztimer.data = r->tick.data = r->grace.data = r;
    r->sigterm.data = r->sigint.data = r;
    r->handles += 5;
    r->timers_init = true;
    uv_timer_start(&r->ztimer, on_ztimer, 10, 10);
    uint64_t tick = r->o->heartbeat_ms / 4;
    if (tick < 10) tick = 10;
    if (tick > 100) tick = 100;
    uv_timer_start(&r->tick, on_tick, tick, tick);
    uv_signal_start(&r->sigterm, on_signal, SIGTERM);
    uv_signal_start(&r->sigint, on_signal, SIGINT);
    if (o->http_port >= 0) {
        qn_http_server_config hc = {0};
        hc.limits.max_body_bytes = (size_t)o->max_body_bytes;
        hc.max_connections = o->max_connections;
        QN_CHECK(qn_http_server_init(&r->http, &r->loop, &hc, rt_on_http, r));
        QN_CHECK(qn_http_server_listen(r->http, o->http_host, o->http_port));
    }
    QN_LOG_INFO("router: listening on %s (ZeroMQ) and http://%s:%d; heartbeat %u ms, engine "
                "timeout %u ms%s%s",
                r->zendpoint, o->http_host, r->http ? qn_http_server_port(r->http) : -1,
                o->heartbeat_ms, o->engine_timeout_ms, o->redis_url ? ", redis job " : "",
                o->redis_url ? o->job : "");
    return write_port_file(r);
}

qn_status qn_router_run(const qn_router_opts *opts) {
    rt *r = calloc(1, sizeof *r);
    if (!r) return qn_fail(QN_ERR_NOMEM, "router");
    r->o = opts;
    if (uv_loop_init(&r->loop) != 0) {
        free(r);
        return qn_fail(QN_ERR_INTERNAL, "uv_loop_init failed");
    }
    qn_status st = start(r);
    /* on failure: close whatever started, and let the loop reap it */
    if (st != QN_OK) close_all(r);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    uv_loop_close(&r->loop);
    while (r->q_head) {
        rt_req *x = r->q_head;
        queue_remove(r, x);
        rt_req_free(x);
    }
    while (r->inflight) {
        rt_req *x = r->inflight;
        inflight_remove(r, x);
        rt_req_free(x);
    }
    for (size_t i = 0; i < r->n_engines; i++)
        free(r->engines[i]);
    free(r->engines);
    free(r->parts);
    qn_weight_manifest_free(r->manifest);
    qn_weight_manifest_free(r->upd_manifest);
    qn_zsock_close(r->zsock);
    if (r->zctx) zmq_ctx_term(r->zctx);
    qn_redis_free(r->redis);
    qn_tokenizer_free(r->tok);
    if (st == QN_OK) QN_LOG_INFO("router: stopped");
    free(r);
    return st;
}
