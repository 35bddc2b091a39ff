/* eval.c — the `quench eval` service (contract in cli/eval.h; when it
 * evaluates, the version rule and the metrics in docs/services.md,
 * "Evaluation").
 *
 * One thread, one zmq_poll loop: a DEALER to the router (results, and a
 * socket monitor that tells when the router connection is up) and, between
 * evaluations, a Redis GET of weight_version every --poll-interval-s. An
 * evaluation sends every request at once (the router queues what the
 * engines have no room for, the engines batch the rest) and scores them all
 * in one reward batch when the last one is answered. Redis is only read, so
 * losing it costs nothing but time: the connection is dropped and made
 * again with backoff.
 *
 * Leaves out: streaming results, and keeping anything across a restart (a
 * restarted eval evaluates the version current then, and goes on from it). */
#include "cli/eval.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "cli/buffer_data.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/tokenizer/tokenizer.h"
#include "net/codec.h"
#include "net/redis.h"
#include "net/zchan.h"
#include "rewards/rewards.h"

#define MAX_SAMPLE_ERRORS 8
#define REDIS_TIMEOUT_MS 2000
#define MAX_LOG_GAP_S 60.0

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

typedef struct req {
    uint64_t rid; /* envelope id of the attempt in flight; 0: not sent */
    double sent_at;
    double retry_at; /* when rid == 0: send not before this */
    uint32_t errors;
    bool failed;           /* refused MAX_SAMPLE_ERRORS times: scores 0 */
    Quench__Envelope *res; /* the answer, once it came */
} req;

/* "retrying, next message in X s" bookkeeping of one unreachable thing */
typedef struct backoff_log {
    uint32_t n;
    double next_at;
} backoff_log;

typedef struct ev {
    const qn_eval_opts *o;
    qn_bd data;
    qn_tokenizer *tok;
    qn_reward *rw;
    qn_redis *redis;
    double redis_retry_at;
    uint32_t redis_fails;
    void *ctx, *dealer, *mon;
    char identity[128];
    bool router_up, router_lost;
    backoff_log router_log, engine_log;
    uint64_t rid_counter;
    int metrics_fd;
    /* schedule */
    bool have_last;
    uint64_t last_point; /* the last evaluation point (a polled version) */
    double next_poll;
    /* the evaluation running */
    bool running;
    uint64_t point;
    double started;
    req *reqs;
    size_t n_reqs, n_done;
} ev;

/* Whether a message is due now; spaces them 1, 2, 4 ... 60 s apart. */
static bool backoff_due(backoff_log *l, double *gap) {
    double t = qn_now_s();
    if (t < l->next_at) return false;
    *gap = l->n >= 6 ? MAX_LOG_GAP_S : (double)(1u << l->n);
    l->n++;
    l->next_at = t + *gap;
    return true;
}

/* ------------------------------------------------------------------ redis */

/* A connection, made again when the last one failed and its backoff passed;
 * false (logged) while Redis cannot be reached. */
static bool redis_ready(ev *e) {
    if (e->redis) return true;
    double t = qn_now_s();
    if (t < e->redis_retry_at) return false;
    if (qn_redis_connect(e->o->redis_url, e->o->job, REDIS_TIMEOUT_MS, &e->redis) == QN_OK) {
        if (e->redis_fails) QN_LOG_INFO("eval: Redis reachable again");
        e->redis_fails = 0;
        return true;
    }
    e->redis = NULL;
    uint32_t n = e->redis_fails < 6 ? e->redis_fails : 6;
    double gap = 0.5 * (double)(1u << n); /* 0.5 s ... 32 s, but Redis is read once a poll */
    if (gap < e->o->poll_interval_s) gap = e->o->poll_interval_s;
    e->redis_fails++;
    e->redis_retry_at = t + gap;
    QN_LOG_WARN("eval: %s; retrying in %.1f s", qn_last_error(), gap);
    return false;
}

static void redis_lost(ev *e, const char *what) {
    QN_LOG_WARN("eval: Redis %s: %s; reconnecting", what, qn_last_error());
    qn_redis_free(e->redis);
    e->redis = NULL;
    e->redis_retry_at = qn_now_s() + 0.5;
    e->redis_fails = 1;
}

/* The job's weight version (no key: 0). false when Redis failed (logged). */
static bool poll_version(ev *e, uint64_t *v) {
    char key[512];
    qn_redis_key(e->redis, key, sizeof key, "weight_version");
    redisReply *rep = NULL;
    if (qn_redis_command(e->redis, &rep, "GET %s", key) != QN_OK) {
        redis_lost(e, "GET weight_version");
        return false;
    }
    bool ok = true;
    *v = 0;
    if (rep->type == REDIS_REPLY_STRING) {
        char *end;
        errno = 0;
        unsigned long long x = strtoull(rep->str, &end, 10);
        if (errno || *end || end == rep->str || rep->str[0] == '-') {
            QN_LOG_WARN("eval: Redis %s is '%s', not a version; ignored", key, rep->str);
            ok = false;
        }
        *v = x;
    }
    freeReplyObject(rep);
    return ok;
}

/* Whether the router has registered an engine (its Redis keys engines:<id>,
 * kept alive by heartbeats). Logged with backoff while there is none. */
static bool engine_registered(ev *e) {
    char pat[512];
    qn_redis_key(e->redis, pat, sizeof pat, "engines:*");
    redisReply *rep = NULL;
    if (qn_redis_command(e->redis, &rep, "KEYS %s", pat) != QN_OK) {
        redis_lost(e, "KEYS engines:*");
        return false;
    }
    bool any = rep->type == REDIS_REPLY_ARRAY && rep->elements > 0;
    freeReplyObject(rep);
    double gap;
    if (any) {
        if (e->engine_log.n) QN_LOG_INFO("eval: a rollout engine is registered");
        e->engine_log = (backoff_log){0};
    } else if (backoff_due(&e->engine_log, &gap)) {
        QN_LOG_WARN("eval: no rollout engine registered with the router yet (Redis %s); "
                    "waiting (next message in %.0f s)",
                    pat, gap);
    }
    return any;
}

/* ------------------------------------------------------------------ requests */

static void send_req(ev *e, size_t i) {
    const qn_eval_opts *o = e->o;
    size_t p = i / o->n_samples;
    uint32_t k = (uint32_t)(i % o->n_samples);
    const qn_bd_prompt *pr = &e->data.v[p];
    Quench__SamplingParams sp = QUENCH__SAMPLING_PARAMS__INIT;
    sp.temperature = (float)o->temperature;
    sp.top_p = (float)o->top_p;
    sp.max_new_tokens = (int32_t)o->max_response_len;
    sp.n = 1;
    /* the same seed at every evaluation point: versions are compared on the same draws */
    sp.has_seed = true;
    sp.seed = o->seed * 0x9E3779B97F4A7C15ull ^ ((uint64_t)p << 16) ^ k;
    Quench__GenerateRequest rq = QUENCH__GENERATE_REQUEST__INIT;
    rq.group_id = p; /* the router keeps a prompt's samples on one engine: shared KV */
    rq.sample_index = k;
    rq.input_ids = pr->tokens;
    rq.n_input_ids = pr->n_tokens;
    rq.params = &sp;
    Quench__Envelope env = qn_envelope_generate_request(&rq);
    uint64_t rid = ++e->rid_counter;
    req *r = &e->reqs[i];
    if (qn_zsend(e->dealer, NULL, 0, &env, rid, e->identity) != QN_OK) {
        r->rid = 0; /* the socket's queue is full (router away): try again shortly */
        r->retry_at = qn_now_s() + 0.5;
        return;
    }
    r->rid = rid;
    r->sent_at = qn_now_s();
}

/* Samples whose answer is still missing get an AbortRequest (at SIGTERM). */
static void abort_in_flight(ev *e) {
    uint64_t ids[256];
    size_t m = 0;
    for (size_t i = 0; i <= e->n_reqs; i++) {
        if (i < e->n_reqs && e->reqs[i].rid && !e->reqs[i].res && !e->reqs[i].failed)
            ids[m++] = e->reqs[i].rid;
        if (m == 256 || (i == e->n_reqs && m)) {
            Quench__AbortRequest ar = QUENCH__ABORT_REQUEST__INIT;
            ar.request_ids = ids;
            ar.n_request_ids = m;
            Quench__Envelope env = qn_envelope_abort_request(&ar);
            (void)qn_zsend(e->dealer, NULL, 0, &env, ++e->rid_counter, e->identity);
            m = 0;
        }
    }
}

static void clear_reqs(ev *e) {
    for (size_t i = 0; i < e->n_reqs; i++)
        qn_envelope_free(e->reqs[i].res);
    memset(e->reqs, 0, e->n_reqs * sizeof *e->reqs);
    e->n_done = 0;
    e->running = false;
}

static void start_eval(ev *e, uint64_t v) {
    clear_reqs(e);
    e->running = true;
    e->point = v;
    e->started = qn_now_s();
    QN_LOG_INFO("eval: weight version %" PRIu64 ": evaluating %zu prompts x %u samples", v,
                e->data.n, e->o->n_samples);
    for (size_t i = 0; i < e->n_reqs; i++)
        send_req(e, i);
}

/* Sends what is due: refused samples after their backoff, ones unanswered
 * for --request-timeout-s, and (all) every unanswered one after the router
 * connection came back (a restarted router forgot them). */
static void resend_due(ev *e, bool all) {
    double t = qn_now_s();
    for (size_t i = 0; i < e->n_reqs; i++) {
        req *r = &e->reqs[i];
        if (r->res || r->failed) continue;
        if (r->rid == 0 && t >= r->retry_at) {
            send_req(e, i);
        } else if (r->rid && (all || t - r->sent_at > e->o->request_timeout_s)) {
            if (!all)
                QN_LOG_WARN("eval: prompt %zu sample %zu: no answer in %.0f s; sending it again",
                            i / e->o->n_samples, i % e->o->n_samples, t - r->sent_at);
            send_req(e, i);
        }
    }
}

static void on_result(ev *e, Quench__Envelope *env) {
    const Quench__GenerateResult *g = env->generate_result;
    uint32_t n = e->o->n_samples;
    size_t i = (size_t)g->group_id * n + g->sample_index;
    if (!e->running || g->partial || g->group_id >= e->data.n || g->sample_index >= n ||
        e->reqs[i].rid != env->request_id || e->reqs[i].res || e->reqs[i].failed) {
        qn_envelope_free(env); /* an earlier attempt's, or an earlier evaluation's */
        return;
    }
    req *r = &e->reqs[i];
    if (g->error && g->error[0]) {
        r->errors++;
        r->rid = 0;
        if (r->errors >= MAX_SAMPLE_ERRORS) {
            QN_LOG_WARN("eval: prompt %zu sample %u refused %u times (last: %s); it scores 0",
                        (size_t)g->group_id, g->sample_index, r->errors, g->error);
            r->failed = true;
            e->n_done++;
        } else {
            double delay = 0.1 * (double)(1u << (r->errors < 7 ? r->errors : 7));
            QN_LOG_WARN("eval: prompt %zu sample %u refused (%s); retrying in %.1f s",
                        (size_t)g->group_id, g->sample_index, g->error, delay);
            r->retry_at = qn_now_s() + delay;
        }
        qn_envelope_free(env);
        return;
    }
    r->res = env;
    e->n_done++;
}

/* ------------------------------------------------------------------ scoring */

static char *ids_text(const int32_t *ids, size_t n) {
    size_t cap = n * 12 + 1, k = 0;
    char *s = malloc(cap);
    if (!s) return NULL;
    s[0] = '\0';
    for (size_t i = 0; i < n; i++)
        k += (size_t)snprintf(s + k, cap - k, "%s%" PRId32, i ? " " : "", ids[i]);
    return s;
}

/* The version an evaluation measured: the polled point, unless most tokens
 * were made by another version (the engines moved on, or the version in
 * Redis was ahead of what they serve); then the oldest version of any token,
 * the weights the evaluation certainly saw. */
static uint64_t measured_version(const ev *e, uint64_t point) {
    uint64_t total = 0, other = 0, min_v = UINT64_MAX;
    for (size_t i = 0; i < e->n_reqs; i++) {
        const Quench__Envelope *r = e->reqs[i].res;
        if (!r) continue;
        const Quench__GenerateResult *g = r->generate_result;
        for (size_t t = 0; t < g->n_weight_versions; t++) {
            total++;
            other += g->weight_versions[t] != point;
            if (g->weight_versions[t] < min_v) min_v = g->weight_versions[t];
        }
    }
    return (total && 2 * other > total) ? min_v : point;
}

static void emit(ev *e, cJSON *j) {
    char *txt = cJSON_PrintUnformatted(j);
    if (!txt) return;
    size_t len = strlen(txt);
    txt[len] = '\n'; /* replaces the NUL: the line goes out in ONE write (O_APPEND) */
    int fd = e->metrics_fd >= 0 ? e->metrics_fd : STDOUT_FILENO;
    ssize_t w;
    do
        w = write(fd, txt, len + 1);
    while (w < 0 && errno == EINTR);
    if (w != (ssize_t)(len + 1))
        QN_LOG_WARN("eval: writing the metrics line to %s: %s",
                    e->o->metrics_file ? e->o->metrics_file : "stdout",
                    w < 0 ? strerror(errno) : "short write");
    free(txt);
}

static qn_status finish_eval(ev *e) {
    const qn_eval_opts *o = e->o;
    size_t n = e->n_reqs;
    qn_reward_sample *rs = calloc(n, sizeof *rs);
    qn_reward_score *sc = calloc(n, sizeof *sc);
    size_t *which = calloc(n, sizeof *which); /* reward batch entry -> request */
    char **texts = calloc(n, sizeof *texts);
    qn_status st = QN_OK;
    size_t m = 0;
    if (!rs || !sc || !which || !texts) {
        st = qn_fail(QN_ERR_NOMEM, "eval: scoring %zu samples", n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (!e->reqs[i].res) continue; /* refused for good: scores 0 */
        const Quench__GenerateResult *g = e->reqs[i].res->generate_result;
        const qn_bd_prompt *p = &e->data.v[i / o->n_samples];
        size_t len = 0;
        if (e->tok) {
            if (qn_tokenizer_decode(e->tok, g->output_ids, g->n_output_ids, true, &texts[i],
                                    &len) != QN_OK)
                texts[i] = NULL;
        } else {
            texts[i] = ids_text(g->output_ids, g->n_output_ids);
        }
        if (!texts[i]) texts[i] = calloc(1, 1);
        if (!texts[i]) {
            st = qn_fail(QN_ERR_NOMEM, "eval: scoring");
            goto out;
        }
        const char *fr = qn_proto_finish_name(g->finish_reason);
        rs[m] = (qn_reward_sample){.prompt = p->text,
                                   .prompt_len = strlen(p->text),
                                   .prompt_ids = p->tokens,
                                   .n_prompt_ids = p->n_tokens,
                                   .response = texts[i],
                                   .response_len = strlen(texts[i]),
                                   .response_ids = g->output_ids,
                                   .n_response_ids = g->n_output_ids,
                                   .label = p->label,
                                   .metadata_json = p->metadata,
                                   .finish_reason = fr ? fr : "",
                                   .group_index = (uint32_t)m, /* each its own group */
                                   .sample_index = 0};
        which[m++] = i;
    }
    if (m) {
        qn_reward_batch batch = {.samples = rs, .n_samples = m, .scores = sc};
        st = qn_reward_score_batch(e->rw, &batch);
        if (st != QN_OK) goto out;
    }
    uint64_t w = measured_version(e, e->point);
    double reward_sum = 0;
    uint64_t correct = 0, truncated = 0, tokens = 0, mixed = 0, reward_failed = 0;
    for (size_t b = 0; b < m; b++) {
        const Quench__GenerateResult *g = e->reqs[which[b]].res->generate_result;
        double r = sc[b].value;
        if (sc[b].status != QN_REWARD_OK || !isfinite(r)) {
            reward_failed++; /* a reward that failed counts as 0, not correct */
            r = 0;
        }
        reward_sum += r;
        correct += r >= 1.0;
        tokens += g->n_output_ids;
        truncated += g->finish_reason == QUENCH__FINISH_REASON__FINISH_REASON_LENGTH;
        bool mix = false;
        for (size_t t = 0; t < g->n_weight_versions && !mix; t++)
            mix = g->weight_versions[t] != w;
        mixed += mix;
    }
    double secs = qn_now_s() - e->started;
    double ns = n ? (double)n : 1.0;
    double acc = (double)correct / ns;
    cJSON *j = cJSON_CreateObject();
    if (!j) {
        st = qn_fail(QN_ERR_NOMEM, "eval: metrics");
        goto out;
    }
    cJSON_AddNumberToObject(j, "rollout_id", (double)e->point);
    cJSON_AddNumberToObject(j, "eval/weight_version", (double)w);
    cJSON_AddNumberToObject(j, "eval/accuracy", acc);
    cJSON_AddNumberToObject(j, "eval/reward", reward_sum / ns);
    cJSON_AddNumberToObject(j, "eval/response_len/mean", (double)tokens / ns);
    cJSON_AddNumberToObject(j, "eval/truncated_ratio", (double)truncated / ns);
    cJSON_AddNumberToObject(j, "eval/samples", (double)n);
    cJSON_AddNumberToObject(j, "eval/mixed_version_samples", (double)mixed);
    cJSON_AddNumberToObject(j, "eval/generate_failed_samples", (double)(n - m));
    cJSON_AddNumberToObject(j, "eval/reward_failed_samples", (double)reward_failed);
    cJSON_AddNumberToObject(j, "perf/eval_time", secs);
    emit(e, j);
    cJSON_Delete(j);
    if (w != e->point)
        QN_LOG_INFO("eval at weight version %" PRIu64 ": accuracy %.4f (%zu samples); the job "
                    "was at version %" PRIu64 " (rollout_id) but most tokens were not",
                    w, acc, n, e->point);
    else
        QN_LOG_INFO("eval at weight version %" PRIu64 ": accuracy %.4f (%zu samples)", w, acc, n);
out:
    if (texts)
        for (size_t i = 0; i < n; i++)
            free(texts[i]);
    free(texts);
    free(rs);
    free(sc);
    free(which);
    clear_reqs(e);
    return st;
}

/* ------------------------------------------------------------------ schedule */

/* Whether polled version v is an evaluation point (rules in docs/services.md). */
static bool due(const ev *e, uint64_t v) {
    if (!e->have_last) return true;
    if (v <= e->last_point) return false;
    if (e->o->num_rollout >= 0 && v >= (uint64_t)e->o->num_rollout) return true;
    uint64_t k = e->o->eval_interval;
    return k > 0 && v / k > e->last_point / k;
}

static void maybe_start(ev *e) {
    double t = qn_now_s();
    if (t < e->next_poll) return;
    e->next_poll = t + e->o->poll_interval_s;
    if (!redis_ready(e)) return;
    uint64_t v;
    if (!poll_version(e, &v) || !due(e, v)) return;
    if (!engine_registered(e)) return;
    start_eval(e, v);
}

/* ------------------------------------------------------------------ the router */

static void on_monitor(ev *e) {
    zmq_msg_t m1, m2;
    zmq_msg_init(&m1);
    zmq_msg_init(&m2);
    if (zmq_msg_recv(&m1, e->mon, ZMQ_DONTWAIT) < 0) goto done;
    if (zmq_msg_more(&m1)) zmq_msg_recv(&m2, e->mon, 0);
    if (zmq_msg_size(&m1) < 6) goto done;
    uint16_t evt;
    memcpy(&evt, zmq_msg_data(&m1), 2);
    double gap;
    if (evt == ZMQ_EVENT_CONNECTED) {
        if (!e->router_up && e->router_log.n > 0)
            QN_LOG_INFO("eval: router %s reachable", e->o->router);
        e->router_up = true;
        e->router_log = (backoff_log){0};
        /* after a lost connection the router may have restarted and forgotten what was in
         * flight; requests queued before the first connection are still delivered */
        if (e->router_lost && e->running) resend_due(e, true);
        e->router_lost = false;
    } else if (evt == ZMQ_EVENT_DISCONNECTED) {
        e->router_up = false;
        e->router_lost = true;
        e->router_log = (backoff_log){.n = 1, .next_at = qn_now_s() + 1.0};
        QN_LOG_WARN("eval: router %s: connection lost; reconnecting (requests in flight will "
                    "be sent again)",
                    e->o->router);
    } else if (evt == ZMQ_EVENT_CONNECT_RETRIED && !e->router_up &&
               backoff_due(&e->router_log, &gap)) {
        QN_LOG_WARN("eval: router %s unreachable; retrying (next message in %.0f s)", e->o->router,
                    gap);
    }
done:
    zmq_msg_close(&m1);
    zmq_msg_close(&m2);
}

static qn_status step(ev *e) {
    if (!e->running) maybe_start(e);
    if (e->running) resend_due(e, false);
    zmq_pollitem_t items[2] = {{e->dealer, 0, ZMQ_POLLIN, 0}, {e->mon, 0, ZMQ_POLLIN, 0}};
    if (zmq_poll(items, 2, 100) < 0) {
        if (errno == EINTR) return QN_OK;
        return qn_fail(QN_ERR_NET, "zmq_poll: %s", zmq_strerror(errno));
    }
    if (items[1].revents & ZMQ_POLLIN) on_monitor(e);
    for (int i = 0; i < 1024 && (items[0].revents & ZMQ_POLLIN); i++) {
        qn_zmsg msg = {0};
        qn_status st = qn_zrecv(e->dealer, false, 0, &msg);
        if (st == QN_ERR_TIMEOUT) break;
        if (st != QN_OK) {
            QN_LOG_WARN("eval: bad message from the router: %s", qn_last_error());
            continue;
        }
        Quench__Envelope *env = msg.env;
        if (env->body_case == QUENCH__ENVELOPE__BODY_GENERATE_RESULT) {
            on_result(e, env);
        } else {
            if (env->body_case == QUENCH__ENVELOPE__BODY_ERROR)
                QN_LOG_WARN("eval: router: %s", env->error->message);
            qn_envelope_free(env);
        }
    }
    if (e->running && e->n_done == e->n_reqs) {
        QN_CHECK(finish_eval(e));
        e->have_last = true;
        e->last_point = e->point;
        e->next_poll = 0; /* look again at once: the version may have moved meanwhile */
    }
    return QN_OK;
}

/* ------------------------------------------------------------------ setup */

static qn_status setup(ev *e) {
    const qn_eval_opts *o = e->o;
    if (o->tokenizer_dir) QN_CHECK(qn_tokenizer_load(o->tokenizer_dir, &e->tok));
    if (o->apply_chat_template && !e->tok)
        return qn_fail(QN_ERR_INVALID, "--apply-chat-template needs --tokenizer");
    qn_bd_opts dopts = {.path = o->prompt_data,
                        .input_key = o->input_key,
                        .label_key = o->label_key,
                        .apply_chat_template = o->apply_chat_template,
                        .tok = e->tok,
                        .skip_bad = o->skip_bad_data,
                        .who = "eval"};
    QN_CHECK(qn_bd_load(&e->data, &dopts));
    QN_LOG_INFO("eval: %s: %zu prompts (%zu bad lines skipped)", o->prompt_data, e->data.n,
                e->data.n_bad);
    e->n_reqs = e->data.n * o->n_samples;
    e->reqs = calloc(e->n_reqs, sizeof *e->reqs);
    if (!e->reqs) return qn_fail(QN_ERR_NOMEM, "eval: %zu requests", e->n_reqs);
    qn_reward_config rc = qn_reward_config_default();
    rc.rm_type = o->reward;
    rc.failure = QN_REWARD_FAILURE_ZERO;
    rc.n_workers = 2;
    QN_CHECK(qn_reward_init(&e->rw, &rc));
    if (o->metrics_file) {
        e->metrics_fd = open(o->metrics_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (e->metrics_fd < 0)
            return qn_fail(QN_ERR_IO, "%s: %s", o->metrics_file, strerror(errno));
    }
    e->ctx = zmq_ctx_new();
    if (!e->ctx) return qn_fail(QN_ERR_NET, "zmq_ctx_new: %s", zmq_strerror(errno));
    snprintf(e->identity, sizeof e->identity, "eval-%s-%d", o->job, (int)getpid());
    QN_CHECK(qn_zsock_open(e->ctx, ZMQ_DEALER, o->router, false, e->identity, &e->dealer));
    if (zmq_socket_monitor(e->dealer, "inproc://qn-eval-monitor",
                           ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED |
                               ZMQ_EVENT_CONNECT_RETRIED) != 0)
        return qn_fail(QN_ERR_NET, "zmq_socket_monitor: %s", zmq_strerror(errno));
    e->mon = zmq_socket(e->ctx, ZMQ_PAIR);
    if (!e->mon || zmq_connect(e->mon, "inproc://qn-eval-monitor") != 0)
        return qn_fail(QN_ERR_NET, "monitor socket: %s", zmq_strerror(errno));
    return QN_OK;
}

static void teardown(ev *e) {
    if (e->reqs) clear_reqs(e);
    free(e->reqs);
    if (e->dealer) zmq_socket_monitor(e->dealer, NULL, 0);
    if (e->mon) zmq_close(e->mon);
    qn_zsock_close(e->dealer);
    if (e->ctx) zmq_ctx_term(e->ctx);
    if (e->metrics_fd >= 0) close(e->metrics_fd);
    qn_redis_free(e->redis);
    qn_reward_free(e->rw);
    qn_bd_free(&e->data);
    qn_tokenizer_free(e->tok);
}

qn_status qn_eval_run(const qn_eval_opts *o) {
    ev e;
    memset(&e, 0, sizeof e);
    e.o = o;
    e.metrics_fd = -1;
    g_stop = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    qn_status st = setup(&e);
    if (st == QN_OK) {
        char last[64] = "none (until a signal)";
        if (o->num_rollout >= 0) snprintf(last, sizeof last, "%" PRId64, o->num_rollout);
        QN_LOG_INFO("eval: job '%s', router %s, --eval-interval %" PRIu64 ", final version %s",
                    o->job, o->router, o->eval_interval, last);
    }
    while (st == QN_OK && !g_stop) {
        st = step(&e);
        if (st == QN_OK && e.have_last && o->num_rollout >= 0 &&
            e.last_point >= (uint64_t)o->num_rollout) {
            QN_LOG_INFO("eval: final weight version %" PRId64 " evaluated; exiting",
                        o->num_rollout);
            break;
        }
    }
    if (st == QN_OK && g_stop) {
        if (e.running) abort_in_flight(&e);
        const char *why = e.running ? "; the evaluation running is abandoned" : "";
        QN_LOG_INFO("eval: stopping (signal)%s", why);
    }
    teardown(&e);
    return st;
}
