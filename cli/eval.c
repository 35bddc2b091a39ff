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
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "cli/buffer_data.h"
#include "cli/gen_client.h"
#include "cli/stop_signal.h"
#include "core/clock.h"
#include "core/io/metrics_line.h"
#include "core/log.h"
#include "core/tokenizer/tokenizer.h"
#include "net/codec.h"
#include "net/redis.h"
#include "rewards/rewards.h"

#define REDIS_TIMEOUT_MS 2000

typedef struct req {
    qn_gen_slot g;
    bool failed;           /* refused QN_GEN_MAX_SAMPLE_ERRORS times: scores 0 */
    Quench__Envelope *res; /* the answer, once it came */
} req;

typedef struct ev {
    const qn_eval_opts *o;
    qn_bd data;
    qn_tokenizer *tok;
    qn_reward *rw;
    qn_redis *redis;
    double redis_retry_at;
    uint32_t redis_fails;
    void *ctx;
    qn_gen_client gc;
    qn_log_backoff engine_log;
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
    bool found;
    *v = 0;
    qn_status st = qn_redis_get_u64(e->redis, "weight_version", v, &found);
    if (st == QN_ERR_FORMAT) {
        QN_LOG_WARN("eval: %s (not a version); ignored", qn_last_error());
        return false;
    }
    if (st != QN_OK) {
        redis_lost(e, "GET weight_version");
        return false;
    }
    return true;
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
        e->engine_log = (qn_log_backoff){0};
    } else if (qn_log_backoff_due(&e->engine_log, &gap)) {
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
    /* the same seed at every evaluation point: versions are compared on the same draws */
    Quench__SamplingParams sp;
    qn_gen_sampling(&sp, o->temperature, o->top_p, o->max_response_len, o->seed, p, k);
    Quench__GenerateRequest rq = QUENCH__GENERATE_REQUEST__INIT;
    rq.group_id = p; /* the router keeps a prompt's samples on one engine: shared KV */
    rq.sample_index = k;
    rq.input_ids = pr->tokens;
    rq.n_input_ids = pr->n_tokens;
    rq.params = &sp;
    qn_gen_client_send(&e->gc, &e->reqs[i].g, &rq);
}

/* Samples whose answer is still missing get an AbortRequest (at SIGTERM). */
static void abort_in_flight(ev *e) {
    qn_gen_aborts ab = {0};
    for (size_t i = 0; i < e->n_reqs; i++)
        if (e->reqs[i].g.rid && !e->reqs[i].res && !e->reqs[i].failed)
            qn_gen_abort_add(&e->gc, &ab, e->reqs[i].g.rid);
    (void)qn_gen_abort_flush(&e->gc, &ab);
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
        qn_gen_due d = qn_gen_slot_due(&r->g, t, all, e->o->request_timeout_s);
        if (d == QN_GEN_TIMED_OUT)
            QN_LOG_WARN("eval: prompt %zu sample %zu: no answer in %.0f s; sending it again",
                        i / e->o->n_samples, i % e->o->n_samples, t - r->g.sent_at);
        if (d != QN_GEN_WAIT) send_req(e, i);
    }
}

static void on_result(ev *e, Quench__Envelope *env) {
    const Quench__GenerateResult *g = env->generate_result;
    uint32_t n = e->o->n_samples;
    size_t i = (size_t)g->group_id * n + g->sample_index;
    if (!e->running || g->partial || g->group_id >= e->data.n || g->sample_index >= n ||
        e->reqs[i].g.rid != env->request_id || e->reqs[i].res || e->reqs[i].failed) {
        qn_envelope_free(env); /* an earlier attempt's, or an earlier evaluation's */
        return;
    }
    req *r = &e->reqs[i];
    if (g->error && g->error[0]) {
        double delay;
        if (qn_gen_slot_refused(&r->g, &delay)) {
            QN_LOG_WARN("eval: prompt %zu sample %u refused %u times (last: %s); it scores 0",
                        (size_t)g->group_id, g->sample_index, r->g.errors, g->error);
            r->failed = true;
            e->n_done++;
        } else {
            QN_LOG_WARN("eval: prompt %zu sample %u refused (%s); retrying in %.1f s",
                        (size_t)g->group_id, g->sample_index, g->error, delay);
        }
        qn_envelope_free(env);
        return;
    }
    r->res = env;
    e->n_done++;
}

/* ------------------------------------------------------------------ scoring */

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
    int fd = e->metrics_fd >= 0 ? e->metrics_fd : STDOUT_FILENO;
    if (qn_metrics_write_json(fd, j) != QN_OK)
        QN_LOG_WARN("eval: writing the metrics line to %s: %s",
                    e->o->metrics_file ? e->o->metrics_file : "stdout", qn_last_error());
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
        texts[i] = qn_gen_response_text(e->tok, g->output_ids, g->n_output_ids);
        if (!texts[i]) {
            st = qn_fail(QN_ERR_NOMEM, "eval: scoring");
            goto out;
        }
        rs[m] = qn_gen_reward_sample(&e->data.v[i / o->n_samples], g, texts[i]);
        rs[m].group_index = (uint32_t)m; /* each its own group */
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

static qn_status step(ev *e) {
    if (!e->running) maybe_start(e);
    if (e->running) resend_due(e, false);
    zmq_pollitem_t items[2] = {{e->gc.dealer, 0, ZMQ_POLLIN, 0}, {e->gc.mon, 0, ZMQ_POLLIN, 0}};
    if (zmq_poll(items, 2, 100) < 0) {
        if (errno == EINTR) return QN_OK;
        return qn_fail(QN_ERR_NET, "zmq_poll: %s", zmq_strerror(errno));
    }
    /* after a lost connection the router may have restarted and forgotten what was in flight */
    if ((items[1].revents & ZMQ_POLLIN) && qn_gen_client_on_monitor(&e->gc) && e->running)
        resend_due(e, true);
    for (int i = 0; i < 1024 && (items[0].revents & ZMQ_POLLIN); i++) {
        Quench__Envelope *env = NULL;
        if (qn_gen_client_recv(&e->gc, &env) == QN_ERR_TIMEOUT) break;
        if (env) on_result(e, env);
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
    QN_CHECK(qn_bd_open(&e->data, &o->data, o->tokenizer_dir, &e->tok));
    e->n_reqs = e->data.n * o->n_samples;
    e->reqs = calloc(e->n_reqs, sizeof *e->reqs);
    if (!e->reqs) return qn_fail(QN_ERR_NOMEM, "eval: %zu requests", e->n_reqs);
    qn_reward_config rc = qn_reward_config_default();
    rc.rm_type = o->reward;
    rc.failure = QN_REWARD_FAILURE_ZERO;
    rc.n_workers = 2;
    QN_CHECK(qn_reward_init(&e->rw, &rc));
    if (o->metrics_file) QN_CHECK(qn_metrics_open_append(o->metrics_file, &e->metrics_fd));
    e->ctx = zmq_ctx_new();
    if (!e->ctx) return qn_fail(QN_ERR_NET, "zmq_ctx_new: %s", zmq_strerror(errno));
    return qn_gen_client_open(&e->gc, e->ctx, "eval", o->router, o->job);
}

static void teardown(ev *e) {
    if (e->reqs) clear_reqs(e);
    free(e->reqs);
    qn_gen_client_close(&e->gc);
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
    qn_stop_signal_catch();
    qn_status st = setup(&e);
    if (st == QN_OK) {
        char last[64] = "none (until a signal)";
        if (o->num_rollout >= 0) snprintf(last, sizeof last, "%" PRId64, o->num_rollout);
        QN_LOG_INFO("eval: job '%s', router %s, --eval-interval %" PRIu64 ", final version %s",
                    o->job, o->router, o->eval_interval, last);
    }
    while (st == QN_OK && !qn_stop_signal_seen()) {
        st = step(&e);
        if (st == QN_OK && e.have_last && o->num_rollout >= 0 &&
            e.last_point >= (uint64_t)o->num_rollout) {
            QN_LOG_INFO("eval: final weight version %" PRId64 " evaluated; exiting",
                        o->num_rollout);
            break;
        }
    }
    if (st == QN_OK && qn_stop_signal_seen()) {
        if (e.running) abort_in_flight(&e);
        const char *why = e.running ? "; the evaluation running is abandoned" : "";
        QN_LOG_INFO("eval: stopping (signal)%s", why);
    }
    teardown(&e);
    return st;
}
