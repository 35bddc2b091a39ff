/* rollout_service.c — `quench rollout`'s service loop: one DEALER socket to
 * the router, one engine, one thread driving both (docs/services.md).
 *
 * Each turn of the loop: (re-)register or heartbeat when due; read every
 * message waiting on the socket (without waiting when the engine has work,
 * otherwise until a message, a signal or the next heartbeat, at most 50 ms);
 * run one engine step; send the results of finished
 * requests. A weight update stops the stepping: the version is pulled by a
 * helper thread (so that heartbeats go on while megabytes move) into
 * staging memory, then checked, converted and copied into the model by this
 * thread between two steps; stepping resumes after that. Requests that
 * arrive meanwhile are queued in the engine.
 *
 * Leaves out: NCCL broadcast manifests (refused), streaming partial output
 * (qn_engine_peek is there for it), metrics, more than one engine per
 * process. */
#include <errno.h>
#include <math.h>
#include <float.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "cli/rollout_service.h"
#include "core/dtype.h"
#include "core/log.h"
#include "net/codec.h"
#include "net/weights.h"
#include "net/zchan.h"
#include "core/clock.h"

/* Messages read per loop turn at most, so that a flood cannot starve the engine. */
#define RS_MAX_MSGS_PER_TURN 256
/* A malformed message up to this size is parsed once more without the codec's checks,
 * to answer a bad GenerateRequest with an error instead of leaving it unanswered. */
#define RS_LENIENT_PARSE_BYTES ((size_t)4 << 20)

typedef struct rs_req {
    uint64_t env_id; /* envelope request id from the router */
    uint64_t eng_id; /* qn_engine id */
    uint64_t group_id;
    uint32_t sample_index;
    int32_t n;       /* samples */
    int32_t max_new; /* tokens the engine may add per sample (after the prefix) */
    int32_t n_input; /* prompt tokens as sent, without the prefix */
    int return_logprob;
    int32_t n_prefix;
    int32_t *prefix_ids;
    float *prefix_lp;     /* NULL when the request carried none */
    uint64_t *prefix_ver; /* NULL when the request carried none */
    double t_recv;
    int stream;      /* GenerateRequest.stream: send partial results after steps */
    int32_t *sent;   /* [n] when streaming: tokens (prefix included) already sent per sample */
    struct rs_req *next;
} rs_req;

typedef struct pull_job {
    Quench__WeightManifest *mf; /* owned copy */
    size_t *map;                /* [n_params]: manifest index of each model parameter */
    uint8_t *blob;              /* [mf->total_bytes] staging memory */
    int from_update;            /* 1: WeightUpdateBegin (acked), 0: RegisterAck */
    void *ctx;
    qn_weight_pull_opts opts;
    pthread_t th;
    atomic_int done;
    qn_status st;
    char err[1024];
} pull_job;

typedef struct svc {
    const qn_rollout_service_params *p;
    void *ctx, *sock;
    char sender[300];
    char host[256];
    rs_req *reqs; /* in flight */
    size_t n_reqs;
    size_t n_streaming; /* requests in reqs with stream set: 0 skips the peeks */
    int registered;
    int register_tries;
    double next_register, register_backoff;
    double hb_interval, next_hb;
    int draining;
    pull_job *pull;                  /* running pull, or NULL */
    Quench__WeightManifest *pending; /* next update to pull once the running one ends */
    float *tmp;                      /* conversion scratch */
    size_t tmp_cap;
} svc;

/* Error text for the wire: strings must be valid UTF-8, and a codec message
 * may quote bytes from a bad message, so anything outside ASCII becomes '?'. */
static void wire_text(char *dst, size_t cap, const char *src) {
    size_t i = 0;
    for (; src && src[i] && i + 1 < cap; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = (c >= 0x80 || c < 0x20) ? '?' : (char)c;
    }
    dst[i] = '\0';
    if (i == 0 && cap > 1) snprintf(dst, cap, "unknown error");
}

static void send_env(svc *s, Quench__Envelope *env, uint64_t rid) {
    if (qn_zsend(s->sock, NULL, 0, env, rid, s->sender) != QN_OK)
        QN_LOG_WARN("rollout: sending %s to %s failed: %s", qn_envelope_body_name(env->body_case),
                    s->p->router, qn_last_error());
}

/* ------------------------------------------------------------ membership */

static void send_register(svc *s) {
    const qn_rollout_service_params *p = s->p;
    Quench__EngineInfo ei = QUENCH__ENGINE_INFO__INIT;
    ei.engine_id = (char *)p->engine_id;
    ei.endpoint = (char *)p->router;
    ei.host = s->host;
    ei.device = "cpu";
    ei.max_running_requests = (uint32_t)p->max_running;
    ei.kv_cache_tokens = (uint64_t)p->kv_cache_tokens;
    ei.fp8 = *p->fp8 != NULL;
    Quench__Register r = QUENCH__REGISTER__INIT;
    r.engine = &ei;
    Quench__Envelope env = qn_envelope_register(&r);
    s->register_tries++;
    if (s->register_tries == 1)
        QN_LOG_INFO("rollout: registering engine %s with router %s", p->engine_id, p->router);
    else
        QN_LOG_WARN("rollout: no answer from router %s yet; registering again (try %d, next in "
                    "%.1f s)",
                    p->router, s->register_tries, s->register_backoff);
    send_env(s, &env, 0);
}

/* Tokens the in-flight requests may still generate: the router's balancing weight. */
static uint64_t outstanding_tokens(const svc *s) {
    uint64_t sum = 0;
    for (const rs_req *r = s->reqs; r; r = r->next) {
        for (int32_t i = 0; i < r->n; i++) {
            qn_engine_sample smp;
            int32_t done = 0;
            if (qn_engine_peek(s->p->engine, r->eng_id, i, &smp) == QN_OK) done = smp.n_out;
            if (done < r->max_new) sum += (uint64_t)(r->max_new - done);
        }
    }
    return sum;
}

static void send_heartbeat(svc *s) {
    qn_engine_stats st;
    qn_engine_get_stats(s->p->engine, &st);
    Quench__Heartbeat hb = QUENCH__HEARTBEAT__INIT;
    hb.engine_id = (char *)s->p->engine_id;
    hb.weight_version = (uint64_t)qn_engine_weight_version(s->p->engine);
    hb.running_requests = (uint32_t)st.running;
    hb.queued_requests = (uint32_t)st.waiting;
    hb.outstanding_tokens = outstanding_tokens(s);
    int64_t free_blocks = st.kv_blocks_total - st.kv_blocks_used;
    hb.free_kv_tokens = free_blocks > 0 ? (uint64_t)free_blocks * (uint64_t)s->p->block_size : 0;
    hb.draining = s->draining != 0;
    Quench__Envelope env = qn_envelope_heartbeat(&hb);
    send_env(s, &env, 0);
}

static void start_drain(svc *s, const char *why) {
    if (s->draining) return;
    s->draining = 1;
    QN_LOG_INFO("rollout: draining (%s): %zu requests in flight; new requests are refused", why,
                s->n_reqs);
    Quench__Drain d = QUENCH__DRAIN__INIT;
    d.engine_id = (char *)s->p->engine_id;
    Quench__Envelope env = qn_envelope_drain(&d);
    send_env(s, &env, 0);
}

/* ------------------------------------------------------------ results */

static void send_error_result(svc *s, uint64_t rid, uint64_t group_id, uint32_t sample_index,
                              const char *why) {
    char text[1024];
    wire_text(text, sizeof text, why);
    Quench__GenerateResult r = QUENCH__GENERATE_RESULT__INIT;
    r.group_id = group_id;
    r.sample_index = sample_index;
    r.error = text;
    r.engine_id = (char *)s->p->engine_id;
    Quench__Envelope env = qn_envelope_generate_result(&r);
    send_env(s, &env, rid);
}

/* Samples a refusal answers: the router counts one result per sample (0 means 1; a bogus
 * huge n is capped, the router cannot have dispatched it anyway). */
#define RS_MAX_REFUSAL_RESULTS 4096u

/* Refuses request rid: one error result per sample, sample_index .. + n - 1. */
static void refuse_request(svc *s, uint64_t rid, const Quench__GenerateRequest *g,
                           const char *why) {
    uint32_t n = g->params && g->params->n ? g->params->n : 1;
    if (n > RS_MAX_REFUSAL_RESULTS) n = RS_MAX_REFUSAL_RESULTS;
    for (uint32_t i = 0; i < n; i++)
        send_error_result(s, rid, g->group_id, g->sample_index + i, why);
}

static Quench__FinishReason finish_to_proto(qn_finish_reason f) {
    switch (f) {
    case QN_FINISH_STOP:
        return QUENCH__FINISH_REASON__FINISH_REASON_STOP;
    case QN_FINISH_LENGTH:
        return QUENCH__FINISH_REASON__FINISH_REASON_LENGTH;
    default:
        return QUENCH__FINISH_REASON__FINISH_REASON_ABORT;
    }
}

/* One GenerateResult for sample i of a finished request: the prefix the request
 * carried, then what this engine generated. */
static void send_result(svc *s, const rs_req *r, const qn_engine_output *o, int32_t i) {
    const qn_engine_sample *smp = &o->samples[i];
    size_t n = (size_t)r->n_prefix + (size_t)smp->n_out;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    int with_lp = r->return_logprob && (r->n_prefix == 0 || r->prefix_lp);
    int with_ver = r->n_prefix == 0 || r->prefix_ver;
    float *lp = with_lp ? malloc((n ? n : 1) * sizeof *lp) : NULL;
    uint64_t *ver = with_ver ? malloc((n ? n : 1) * sizeof *ver) : NULL;
    if (!ids || (with_lp && !lp) || (with_ver && !ver)) {
        free(ids), free(lp), free(ver);
        QN_LOG_ERROR("rollout: out of memory for the result of request %llu",
                     (unsigned long long)r->env_id);
        send_error_result(s, r->env_id, r->group_id, r->sample_index + (uint32_t)i,
                          "out of memory while sending the result");
        return;
    }
    size_t k = 0;
    for (int32_t t = 0; t < r->n_prefix; t++, k++) {
        ids[k] = r->prefix_ids[t];
        if (lp) lp[k] = r->prefix_lp[t];
        if (ver) ver[k] = r->prefix_ver[t];
    }
    int clamped = 0;
    for (int32_t t = 0; t < smp->n_out; t++, k++) {
        ids[k] = smp->ids[t];
        if (lp) {
            float x = smp->logprobs[t];
            /* the wire wants finite values <= 0; the sampler never picks a token of
             * probability 0, so this only guards against a broken model */
            if (!isfinite(x))
                x = -FLT_MAX, clamped = 1;
            else if (x > 0.0f)
                x = 0.0f;
            lp[k] = x;
        }
        if (ver) ver[k] = smp->versions[t] > 0 ? (uint64_t)smp->versions[t] : 0;
    }
    if (clamped)
        QN_LOG_WARN("rollout: request %llu sample %d had non-finite log-probs",
                    (unsigned long long)r->env_id, i);
    Quench__GenerateResult g = QUENCH__GENERATE_RESULT__INIT;
    g.group_id = r->group_id;
    g.sample_index = r->sample_index + (uint32_t)i;
    g.n_output_ids = n;
    g.output_ids = ids;
    g.n_output_logprobs = lp ? n : 0;
    g.output_logprobs = lp;
    g.n_weight_versions = ver ? n : 0;
    g.weight_versions = ver;
    g.finish_reason = finish_to_proto(smp->finish);
    g.engine_id = (char *)s->p->engine_id;
    g.prompt_tokens = (uint32_t)r->n_input;
    g.cached_tokens =
        o->cached_tokens < r->n_input ? (uint32_t)o->cached_tokens : (uint32_t)r->n_input;
    double lat = qn_now_s() - r->t_recv;
    g.latency_s = isfinite(lat) && lat > 0 ? lat : 0.0;
    Quench__Envelope env = qn_envelope_generate_result(&g);
    send_env(s, &env, r->env_id);
    free(ids), free(lp), free(ver);
}

static void req_free(rs_req *r) {
    if (!r) return;
    free(r->sent);
    free(r->prefix_ids);
    free(r->prefix_lp);
    free(r->prefix_ver);
    free(r);
}

static void unlink_req(svc *s, rs_req *r) {
    for (rs_req **pp = &s->reqs; *pp; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            s->n_reqs--;
            if (r->stream) s->n_streaming--;
            return;
        }
    }
}

/* Streaming: for every sample of a streaming request, one partial GenerateResult with
 * the tokens (the carried prefix first) not yet sent. Runs after each engine step and
 * before collect(), so the partials of a sample always add up to its final result. */
static void send_partials(svc *s) {
    if (!s->n_streaming) return;
    for (rs_req *r = s->reqs; r; r = r->next) {
        if (!r->stream) continue;
        for (int32_t i = 0; i < r->n; i++) {
            qn_engine_sample smp;
            if (qn_engine_peek(s->p->engine, r->eng_id, i, &smp) != QN_OK) continue;
            int32_t total = r->n_prefix + smp.n_out, from = r->sent[i];
            if (total <= from) continue;
            size_t n = (size_t)(total - from);
            int with_lp = r->return_logprob && (r->n_prefix == 0 || r->prefix_lp);
            int with_ver = r->n_prefix == 0 || r->prefix_ver;
            int32_t *ids = malloc(n * sizeof *ids);
            float *lp = with_lp ? malloc(n * sizeof *lp) : NULL;
            uint64_t *ver = with_ver ? malloc(n * sizeof *ver) : NULL;
            if (!ids || (with_lp && !lp) || (with_ver && !ver)) {
                /* the final result still carries everything; skip this delta */
                free(ids), free(lp), free(ver);
                continue;
            }
            for (int32_t t = from, k = 0; t < total; t++, k++) {
                int pre = t < r->n_prefix;
                int32_t e = t - r->n_prefix;
                ids[k] = pre ? r->prefix_ids[t] : smp.ids[e];
                if (lp) {
                    float x = pre ? r->prefix_lp[t] : smp.logprobs[e];
                    lp[k] = !isfinite(x) ? -FLT_MAX : (x > 0.0f ? 0.0f : x);
                }
                if (ver) {
                    int64_t v = pre ? (int64_t)r->prefix_ver[t] : smp.versions[e];
                    ver[k] = v > 0 ? (uint64_t)v : 0;
                }
            }
            Quench__GenerateResult g = QUENCH__GENERATE_RESULT__INIT;
            g.group_id = r->group_id;
            g.sample_index = r->sample_index + (uint32_t)i;
            g.n_output_ids = n;
            g.output_ids = ids;
            g.n_output_logprobs = lp ? n : 0;
            g.output_logprobs = lp;
            g.n_weight_versions = ver ? n : 0;
            g.weight_versions = ver;
            g.engine_id = (char *)s->p->engine_id;
            g.prompt_tokens = (uint32_t)r->n_input;
            double lat = qn_now_s() - r->t_recv;
            g.latency_s = isfinite(lat) && lat > 0 ? lat : 0.0;
            g.partial = 1;
            Quench__Envelope env = qn_envelope_generate_result(&g);
            send_env(s, &env, r->env_id);
            free(ids), free(lp), free(ver);
            r->sent[i] = total;
        }
    }
}

static void collect(svc *s) {
    qn_engine_output o;
    while (qn_engine_next_finished(s->p->engine, &o)) {
        rs_req *r = o.user;
        for (int32_t i = 0; i < o.n_samples; i++)
            send_result(s, r, &o, i);
        unlink_req(s, r);
        req_free(r);
    }
}

/* ------------------------------------------------------------ requests */

static void on_generate(svc *s, uint64_t rid, const Quench__GenerateRequest *g) {
    const qn_rollout_service_params *p = s->p;
    char why[1200];
    if (s->draining) {
        snprintf(why, sizeof why, "draining: engine %s is shutting down", p->engine_id);
        refuse_request(s, rid, g, why);
        return;
    }
    int64_t ver = qn_engine_weight_version(p->engine);
    if (g->min_weight_version > (uint64_t)(ver > 0 ? ver : 0)) {
        snprintf(why, sizeof why,
                 "request needs weight version >= %llu; engine %s has version %lld",
                 (unsigned long long)g->min_weight_version, p->engine_id, (long long)ver);
        refuse_request(s, rid, g, why);
        return;
    }
    qn_sampling_params sp = qn_sampling_params_default();
    int has_seed = 0;
    int32_t n = 1;
    const Quench__SamplingParams *w = g->params;
    if (w) {
        sp.temperature = w->temperature;
        sp.top_p = w->top_p == 0.0f ? 1.0f : w->top_p;
        sp.top_k = w->top_k <= 0 ? -1 : w->top_k;
        sp.min_p = w->min_p;
        sp.max_new_tokens = w->max_new_tokens;
        sp.stop_token_ids = w->stop_token_ids;
        sp.n_stop_token_ids = (int32_t)w->n_stop_token_ids;
        sp.stop = (const char *const *)w->stop;
        sp.n_stop = (int32_t)w->n_stop;
        sp.seed = w->seed;
        has_seed = w->has_seed;
        n = w->n == 0 ? 1 : (w->n > INT32_MAX ? INT32_MAX : (int32_t)w->n);
    }
    size_t np = g->n_prefix_output_ids, ni = g->n_input_ids;
    if (ni + np > (size_t)INT32_MAX) {
        refuse_request(s, rid, g, "prompt plus prefix too long");
        return;
    }
    /* the continuation of a partial rollout: the earlier tokens join the prompt and the
     * budget shrinks by as many */
    sp.max_new_tokens = sp.max_new_tokens > (int32_t)np ? sp.max_new_tokens - (int32_t)np : 0;
    rs_req *r = calloc(1, sizeof *r);
    int32_t *prompt = malloc((ni + np ? ni + np : 1) * sizeof *prompt);
    if (np) {
        if (r) {
            r->prefix_ids = malloc(np * sizeof *r->prefix_ids);
            if (g->n_prefix_output_logprobs == np) r->prefix_lp = malloc(np * sizeof(float));
            if (g->n_prefix_weight_versions == np) r->prefix_ver = malloc(np * sizeof(uint64_t));
        }
    }
    if (!r || !prompt ||
        (np && (!r->prefix_ids || (g->n_prefix_output_logprobs == np && !r->prefix_lp) ||
                (g->n_prefix_weight_versions == np && !r->prefix_ver)))) {
        req_free(r);
        free(prompt);
        refuse_request(s, rid, g, "engine out of memory");
        return;
    }
    if (ni) memcpy(prompt, g->input_ids, ni * sizeof *prompt);
    if (np) {
        memcpy(prompt + ni, g->prefix_output_ids, np * sizeof *prompt);
        memcpy(r->prefix_ids, g->prefix_output_ids, np * sizeof *prompt);
        if (r->prefix_lp) memcpy(r->prefix_lp, g->prefix_output_logprobs, np * sizeof(float));
        if (r->prefix_ver) memcpy(r->prefix_ver, g->prefix_weight_versions, np * sizeof(uint64_t));
    }
    r->env_id = rid;
    r->group_id = g->group_id;
    r->sample_index = g->sample_index;
    r->n = n;
    r->max_new = sp.max_new_tokens;
    r->n_input = (int32_t)ni;
    r->return_logprob = g->return_logprob;
    r->n_prefix = (int32_t)np;
    r->t_recv = qn_now_s();
    if (g->stream) {
        r->sent = calloc((size_t)n, sizeof *r->sent);
        if (!r->sent) {
            req_free(r);
            free(prompt);
            refuse_request(s, rid, g, "engine out of memory");
            return;
        }
        r->stream = 1;
    }
    qn_engine_request er = {.prompt = prompt,
                            .n_prompt = (int32_t)(ni + np),
                            .params = sp,
                            .has_seed = has_seed,
                            .n = n,
                            .user = r};
    qn_clear_error();
    qn_status st = qn_engine_submit(p->engine, &er, &r->eng_id);
    free(prompt);
    if (st != QN_OK) {
        snprintf(why, sizeof why, "refused: %s",
                 qn_last_error()[0] ? qn_last_error() : qn_status_str(st));
        QN_LOG_WARN("rollout: request %llu (group %llu, sample %u) %s", (unsigned long long)rid,
                    (unsigned long long)g->group_id, g->sample_index, why);
        refuse_request(s, rid, g, why);
        req_free(r);
        return;
    }
    r->next = s->reqs;
    s->reqs = r;
    s->n_reqs++;
    if (r->stream) s->n_streaming++;
}

static void on_abort(svc *s, const Quench__AbortRequest *a) {
    for (size_t i = 0; i < a->n_request_ids; i++) {
        int found = 0;
        for (rs_req *r = s->reqs; r; r = r->next) {
            if (r->env_id != a->request_ids[i]) continue;
            found = 1;
            if (qn_engine_abort(s->p->engine, r->eng_id) != QN_OK)
                QN_LOG_DEBUG("rollout: abort of request %llu: %s", (unsigned long long)r->env_id,
                             qn_last_error());
        }
        if (!found)
            QN_LOG_DEBUG("rollout: abort of unknown request %llu",
                         (unsigned long long)a->request_ids[i]);
    }
}

/* ------------------------------------------------------------ weight updates */

static void send_ack(svc *s, uint64_t version, Quench__WeightUpdatePhase phase, int ok,
                     const char *err) {
    char text[1200];
    Quench__WeightUpdateAck a = QUENCH__WEIGHT_UPDATE_ACK__INIT;
    a.version = version;
    a.engine_id = (char *)s->p->engine_id;
    a.ok = ok != 0;
    a.phase = phase;
    if (!ok) {
        wire_text(text, sizeof text, err);
        a.error = text;
    }
    Quench__Envelope env = qn_envelope_weight_update_ack(&a);
    send_env(s, &env, version);
}

typedef struct name_ix {
    const char *name;
    size_t ix;
} name_ix;

static int cmp_name_ix(const void *a, const void *b) {
    return strcmp(((const name_ix *)a)->name, ((const name_ix *)b)->name);
}

/* Every parameter of the model must be in the manifest with its shape and a float dtype
 * we convert (F32, BF16, F16); extra tensors (MTP layers) are ignored. Fills map[i] with the
 * manifest index of parameter i. Checked before pulling, so a wrong manifest costs nothing. */
static qn_status check_manifest(const qn_model *m, const Quench__WeightManifest *mf, size_t *map) {
    unsigned long long v = (unsigned long long)mf->version;
    name_ix *ix = malloc((mf->n_tensors ? mf->n_tensors : 1) * sizeof *ix);
    if (!ix) return qn_fail(QN_ERR_NOMEM, "weight version %llu: manifest index", v);
    for (size_t i = 0; i < mf->n_tensors; i++)
        ix[i] = (name_ix){mf->tensors[i]->name, i};
    qsort(ix, mf->n_tensors, sizeof *ix, cmp_name_ix);
    qn_status st = QN_OK;
    for (size_t i = 0; i < m->n_params && st == QN_OK; i++) {
        const qn_param_info *pi = &m->params[i];
        name_ix key = {pi->name, 0};
        const name_ix *hit = bsearch(&key, ix, mf->n_tensors, sizeof *ix, cmp_name_ix);
        if (!hit) {
            st = qn_fail(QN_ERR_NOT_FOUND,
                         "weight version %llu: tensor '%s' is missing from the "
                         "manifest",
                         v, pi->name);
            break;
        }
        const Quench__TensorInfo *t = mf->tensors[hit->ix];
        int shape_ok = t->n_shape == (size_t)pi->ndim;
        for (int k = 0; shape_ok && k < pi->ndim; k++)
            shape_ok = t->shape[k] == (uint64_t)pi->shape[k];
        if (!shape_ok) {
            char got[128] = "", want[64] = "";
            size_t o = 0;
            for (size_t k = 0; k < t->n_shape && o < sizeof got - 24; k++)
                o += (size_t)snprintf(got + o, sizeof got - o, "%s%llu", k ? ", " : "",
                                      (unsigned long long)t->shape[k]);
            if (pi->ndim == 1)
                snprintf(want, sizeof want, "%lld", (long long)pi->shape[0]);
            else
                snprintf(want, sizeof want, "%lld, %lld", (long long)pi->shape[0],
                         (long long)pi->shape[1]);
            st = qn_fail(QN_ERR_FORMAT,
                         "weight version %llu: tensor '%s' has shape [%s]; the "
                         "model needs [%s]",
                         v, pi->name, got, want);
            break;
        }
        qn_dtype dt;
        int known = qn_dtype_from_proto(t->dtype, &dt) == QN_OK;
        if (!known || (dt != QN_DTYPE_F32 && dt != QN_DTYPE_BF16 && dt != QN_DTYPE_F16)) {
            st = qn_fail(QN_ERR_UNSUPPORTED,
                         "weight version %llu: tensor '%s' has dtype %s; this "
                         "engine takes F32, BF16 or F16",
                         v, pi->name, known ? qn_dtype_name(dt) : "unspecified");
            break;
        }
        if (t->nbytes != (uint64_t)pi->numel * qn_dtype_size(dt)) {
            st = qn_fail(QN_ERR_FORMAT,
                         "weight version %llu: tensor '%s': %llu bytes for %zu "
                         "elements of %s",
                         v, pi->name, (unsigned long long)t->nbytes, pi->numel, qn_dtype_name(dt));
            break;
        }
        map[i] = hit->ix;
    }
    free(ix);
    return st;
}

static void *pull_main(void *arg) {
    pull_job *j = arg;
    j->st = qn_weight_pull(j->ctx, j->mf, j->blob, &j->opts);
    if (j->st != QN_OK) snprintf(j->err, sizeof j->err, "%s", qn_last_error());
    atomic_store(&j->done, 1);
    return NULL;
}

static void pull_job_free(pull_job *j) {
    if (!j) return;
    qn_weight_manifest_free(j->mf);
    free(j->map);
    free(j->blob);
    free(j);
}

/* Starts pulling mf (borrowed; copied). Failures before the pull are acked at once. */
static void start_pull(svc *s, const Quench__WeightManifest *mf, int from_update) {
    const qn_rollout_service_params *p = s->p;
    uint64_t v = mf->version;
    int64_t cur = qn_engine_weight_version(p->engine);
    if (from_update)
        send_ack(s, v, QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_READY, 1, NULL);
    if ((int64_t)v == cur) {
        QN_LOG_INFO("rollout: weight version %llu is already loaded", (unsigned long long)v);
        if (from_update)
            send_ack(s, v, QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_APPLIED, 1, NULL);
        return;
    }
    qn_status st = QN_OK;
    pull_job *j = calloc(1, sizeof *j);
    if (!j) {
        st = qn_fail(QN_ERR_NOMEM, "weight version %llu: out of memory", (unsigned long long)v);
        goto fail;
    }
    if ((int64_t)v < cur) {
        st = qn_fail(QN_ERR_RANGE, "weight version %llu is older than the loaded version %lld",
                     (unsigned long long)v, (long long)cur);
        goto fail;
    }
    if (mf->transport == QUENCH__WEIGHT_TRANSPORT__WEIGHT_TRANSPORT_NCCL_BROADCAST) {
        st = qn_fail(QN_ERR_UNSUPPORTED,
                     "weight version %llu: NCCL broadcast is not supported by "
                     "this engine (ZMQ pull only)",
                     (unsigned long long)v);
        goto fail;
    }
    j->map = malloc((p->model->n_params ? p->model->n_params : 1) * sizeof *j->map);
    if (!j->map) {
        st = qn_fail(QN_ERR_NOMEM, "weight version %llu: out of memory", (unsigned long long)v);
        goto fail;
    }
    QN_CHECK_GOTO(check_manifest(p->model, mf, j->map), st, fail);
    QN_CHECK_GOTO(qn_weight_manifest_copy(mf, &j->mf), st, fail);
    j->blob = malloc(mf->total_bytes ? (size_t)mf->total_bytes : 1);
    if (!j->blob) {
        st = qn_fail(QN_ERR_NOMEM, "weight version %llu: no memory to stage %llu bytes",
                     (unsigned long long)v, (unsigned long long)mf->total_bytes);
        goto fail;
    }
    j->from_update = from_update;
    j->ctx = s->ctx;
    j->opts = (qn_weight_pull_opts){.chunk_timeout_ms = p->pull_timeout_ms,
                                    .max_retries = p->pull_retries,
                                    .identity = p->engine_id};
    atomic_init(&j->done, 0);
    /* signals belong to the service thread (the drain flag), not to the puller */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&j->th, NULL, pull_main, j);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        st = qn_fail(QN_ERR_INTERNAL, "weight version %llu: cannot start the pull thread: %s",
                     (unsigned long long)v, strerror(rc));
        goto fail;
    }
    QN_LOG_INFO("rollout: pulling weight version %llu (%zu tensors, %.1f MiB) from %s; stepping "
                "paused",
                (unsigned long long)v, mf->n_tensors, (double)mf->total_bytes / (1024.0 * 1024.0),
                mf->server_endpoint);
    s->pull = j;
    return;
fail:
    QN_LOG_ERROR("rollout: weight update refused, keeping version %lld: %s", (long long)cur,
                 qn_last_error());
    if (from_update)
        send_ack(s, v, QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_APPLIED, 0,
                 qn_last_error());
    (void)st;
    pull_job_free(j);
}

/* Converts the staged version into the model, between two steps. Nothing is written to the
 * model before every tensor converted to finite fp32 values; after the copy, only running
 * out of memory while re-quantising can fail, and that is fatal (*fatal = 1). */
static qn_status apply_weights(svc *s, const pull_job *j, int *fatal) {
    const qn_rollout_service_params *p = s->p;
    qn_model *m = p->model;
    const Quench__WeightManifest *mf = j->mf;
    unsigned long long v = (unsigned long long)mf->version;
    *fatal = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < m->n_params; i++) {
            const qn_param_info *pi = &m->params[i];
            const Quench__TensorInfo *t = mf->tensors[j->map[i]];
            qn_dtype dt;
            QN_CHECK(qn_dtype_from_proto(t->dtype, &dt));
            float *dst;
            if (pass == 0) {
                if (pi->numel > s->tmp_cap) {
                    float *nt = realloc(s->tmp, pi->numel * sizeof *nt);
                    if (!nt) return qn_fail(QN_ERR_NOMEM, "weight version %llu: scratch", v);
                    s->tmp = nt, s->tmp_cap = pi->numel;
                }
                dst = s->tmp;
            } else {
                dst = m->w + pi->offset;
            }
            QN_CHECK(qn_dtype_to_f32(dt, j->blob + t->offset, dst, pi->numel));
            if (pass == 0) {
                for (size_t k = 0; k < pi->numel; k++)
                    if (!isfinite(dst[k]))
                        return qn_fail(QN_ERR_RANGE,
                                       "weight version %llu: tensor '%s' has a "
                                       "non-finite value at element %zu",
                                       v, pi->name, k);
            }
        }
    }
    *fatal = 1;
    if (*p->fp8) {
        qn_model_fp8 *nf = NULL;
        QN_CHECK(qn_model_fp8_quantize(&nf, m, p->fp8_bm, p->fp8_bn));
        qn_status st = qn_engine_set_fp8(p->engine, nf);
        if (st != QN_OK) {
            qn_model_fp8_free(nf);
            return st;
        }
        qn_model_fp8_free(*p->fp8);
        *p->fp8 = nf;
    }
    QN_CHECK(qn_engine_flush_prefix_cache(p->engine));
    qn_engine_set_weight_version(p->engine, (int64_t)mf->version);
    *fatal = 0;
    return QN_OK;
}

/* The pull thread ended: apply or refuse, ack, start the next pending update. */
static qn_status finish_pull(svc *s) {
    pull_job *j = s->pull;
    s->pull = NULL;
    pthread_join(j->th, NULL);
    uint64_t v = j->mf->version;
    int64_t old = qn_engine_weight_version(s->p->engine);
    int fatal = 0;
    qn_status st = j->st;
    char why[1200] = "";
    if (st != QN_OK) {
        snprintf(why, sizeof why, "%s", j->err);
    } else {
        double t0 = qn_now_s();
        st = apply_weights(s, j, &fatal);
        if (st != QN_OK)
            snprintf(why, sizeof why, "%s", qn_last_error());
        else
            QN_LOG_INFO("rollout: weight version %lld -> %llu (applied in %.3f s%s)",
                        (long long)old, (unsigned long long)v, qn_now_s() - t0,
                        *s->p->fp8 ? ", FP8 re-quantised" : "");
    }
    if (st != QN_OK)
        QN_LOG_ERROR("rollout: weight version %llu failed, %s: %s", (unsigned long long)v,
                     fatal ? "the engine cannot continue" : "keeping version", why);
    if (st != QN_OK && !fatal) QN_LOG_INFO("rollout: serving weight version %lld", (long long)old);
    if (j->from_update)
        send_ack(s, v, QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_APPLIED, st == QN_OK, why);
    pull_job_free(j);
    if (fatal) return qn_fail(st, "weight version %llu: %s", (unsigned long long)v, why);
    if (s->pending) {
        Quench__WeightManifest *next = s->pending;
        s->pending = NULL;
        start_pull(s, next, 1);
        qn_weight_manifest_free(next);
    }
    return QN_OK;
}

static void on_update(svc *s, const Quench__WeightUpdateBegin *b) {
    const Quench__WeightManifest *mf = b->manifest;
    if (!mf) {
        QN_LOG_WARN("rollout: WeightUpdateBegin without a manifest; ignored");
        return;
    }
    if (s->draining) {
        /* it is going away: the update cannot count on it */
        send_ack(s, mf->version, QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_READY, 1, NULL);
        send_ack(s, mf->version, QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_APPLIED, 0,
                 "engine is draining");
        return;
    }
    if (s->pull) {
        if (s->pull->mf->version == mf->version) {
            if (!s->pull->from_update) {
                s->pull->from_update = 1;
                send_ack(s, mf->version, QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_READY, 1,
                         NULL);
            }
            return;
        }
        Quench__WeightManifest *c = NULL;
        if (qn_weight_manifest_copy(mf, &c) != QN_OK) {
            send_ack(s, mf->version, QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_APPLIED, 0,
                     "out of memory");
            return;
        }
        QN_LOG_INFO("rollout: weight version %llu announced while %llu is being pulled; it is "
                    "next",
                    (unsigned long long)mf->version, (unsigned long long)s->pull->mf->version);
        if (s->pending) {
            /* the newest announced version is the one worth pulling */
            char why[128];
            snprintf(why, sizeof why, "superseded by weight version %llu",
                     (unsigned long long)mf->version);
            send_ack(s, s->pending->version, QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_READY,
                     1, NULL);
            send_ack(s, s->pending->version,
                     QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_APPLIED, 0, why);
        }
        qn_weight_manifest_free(s->pending);
        s->pending = c;
        return;
    }
    start_pull(s, mf, 1);
}

static void on_register_ack(svc *s, const Quench__RegisterAck *a) {
    const qn_rollout_service_params *p = s->p;
    if (!a->accepted) {
        QN_LOG_ERROR("rollout: router %s refused engine %s: %s; retrying", p->router, p->engine_id,
                     a->error ? a->error : "");
        return;
    }
    if (!s->registered)
        QN_LOG_INFO("rollout: registered with router %s (job weight version %llu, heartbeat "
                    "every %u ms)",
                    p->router, (unsigned long long)a->weight_version, a->heartbeat_interval_ms);
    s->registered = 1;
    s->register_tries = 0;
    s->hb_interval = a->heartbeat_interval_ms ? a->heartbeat_interval_ms / 1000.0 : 1.0;
    s->next_hb = qn_now_s() + s->hb_interval;
    int64_t cur = qn_engine_weight_version(p->engine);
    if ((int64_t)a->weight_version == cur) return;
    if (s->pull && s->pull->mf->version == a->weight_version) return;
    if (a->manifest && a->manifest->version == a->weight_version && !s->pull) {
        start_pull(s, a->manifest, 0);
    } else if (!a->manifest) {
        QN_LOG_WARN("rollout: the job is at weight version %llu, this engine at %lld, and the "
                    "router sent no manifest",
                    (unsigned long long)a->weight_version, (long long)cur);
    }
}

/* ------------------------------------------------------------ receiving */

/* A message the codec refused: when it still parses as a GenerateRequest, answer it with
 * the codec's reason, so that the sender does not wait for it forever. */
static void refuse_invalid(svc *s, const uint8_t *data, size_t len, const char *why) {
    if (len > RS_LENIENT_PARSE_BYTES) return;
    Quench__Envelope *raw = quench__envelope__unpack(NULL, len, data);
    if (!raw) return;
    if (raw->body_case == QUENCH__ENVELOPE__BODY_GENERATE_REQUEST && raw->generate_request) {
        char text[1200];
        snprintf(text, sizeof text, "invalid request: %s", why);
        refuse_request(s, raw->request_id, raw->generate_request, text);
    }
    quench__envelope__free_unpacked(raw, NULL);
}

/* One message from the router: QN_OK with *out, QN_ERR_TIMEOUT when none came, or an
 * error for a malformed message (consumed) or a socket failure (QN_ERR_NET). */
static qn_status recv_one(svc *s, int timeout_ms, Quench__Envelope **out) {
    *out = NULL;
    zmq_pollitem_t item = {.socket = s->sock, .events = ZMQ_POLLIN};
    int rc = zmq_poll(&item, 1, timeout_ms);
    if (rc < 0) {
        if (zmq_errno() == EINTR) return QN_ERR_TIMEOUT; /* a signal: the loop looks at it */
        return qn_fail(QN_ERR_NET, "poll on %s: %s", s->p->router, zmq_strerror(zmq_errno()));
    }
    if (rc == 0) return QN_ERR_TIMEOUT;
    zmq_msg_t part;
    zmq_msg_init(&part);
    if (zmq_msg_recv(&part, s->sock, ZMQ_DONTWAIT) < 0) {
        int e = zmq_errno();
        zmq_msg_close(&part);
        if (e == EAGAIN || e == EINTR) return QN_ERR_TIMEOUT;
        return qn_fail(QN_ERR_NET, "recv on %s: %s", s->p->router, zmq_strerror(e));
    }
    if (zmq_msg_more(&part)) {
        zmq_msg_close(&part);
        int more = 1;
        while (more) {
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, s->sock, 0) < 0) {
                zmq_msg_close(&part);
                break;
            }
            more = zmq_msg_more(&part);
            zmq_msg_close(&part);
        }
        return qn_fail(QN_ERR_FORMAT, "message with extra frames (expected one payload frame)");
    }
    const uint8_t *data = zmq_msg_data(&part);
    size_t len = zmq_msg_size(&part);
    qn_status st = qn_envelope_decode(data, len, 0, out);
    if (st == QN_ERR_FORMAT || st == QN_ERR_RANGE) {
        char why[1024];
        snprintf(why, sizeof why, "%s", qn_last_error());
        refuse_invalid(s, data, len, why);
        qn_fail(st, "%s", why);
    }
    zmq_msg_close(&part);
    return st;
}

static void handle(svc *s, const Quench__Envelope *env) {
    switch (env->body_case) {
    case QUENCH__ENVELOPE__BODY_GENERATE_REQUEST:
        on_generate(s, env->request_id, env->generate_request);
        break;
    case QUENCH__ENVELOPE__BODY_ABORT_REQUEST:
        on_abort(s, env->abort_request);
        break;
    case QUENCH__ENVELOPE__BODY_WEIGHT_UPDATE_BEGIN:
        on_update(s, env->weight_update_begin);
        break;
    case QUENCH__ENVELOPE__BODY_REGISTER_ACK:
        on_register_ack(s, env->register_ack);
        break;
    case QUENCH__ENVELOPE__BODY_HEARTBEAT_ACK:
        if (!env->heartbeat_ack->registered && s->registered) {
            QN_LOG_WARN("rollout: router %s does not know engine %s any more; registering again",
                        s->p->router, s->p->engine_id);
            s->registered = 0;
            s->register_backoff = 0.5;
            s->next_register = qn_now_s();
        }
        break;
    case QUENCH__ENVELOPE__BODY_DRAIN:
        start_drain(s, "the router asked");
        break;
    default:
        QN_LOG_WARN("rollout: ignoring a %s message from the router",
                    qn_envelope_body_name(env->body_case));
        break;
    }
}

/* ------------------------------------------------------------ the loop */

/* Answers every request still in flight with an error (the engine cannot go on). */
static void fail_all(svc *s, const char *why) {
    while (s->reqs) {
        rs_req *r = s->reqs;
        s->reqs = r->next;
        s->n_reqs--;
        if (r->stream) s->n_streaming--;
        for (int32_t i = 0; i < r->n; i++)
            send_error_result(s, r->env_id, r->group_id, r->sample_index + (uint32_t)i, why);
        req_free(r);
    }
}

static qn_status serve(svc *s) {
    const qn_rollout_service_params *p = s->p;
    for (;;) {
        if (*p->signals >= 1) start_drain(s, "signal");
        if (s->draining && s->n_reqs == 0 && !s->pull && !qn_engine_busy(p->engine)) {
            /* The router may have sent requests before it read our Drain: answer what
             * arrives until the socket has been quiet for 100 ms (2 s at most). */
            double end = qn_now_s() + 2.0;
            Quench__Envelope *env = NULL;
            qn_status st;
            while (qn_now_s() < end && (st = recv_one(s, 100, &env)) != QN_ERR_TIMEOUT) {
                if (st == QN_OK) handle(s, env);
                qn_envelope_free(env);
                env = NULL;
                if (st == QN_ERR_NET) break;
            }
            QN_LOG_INFO("rollout: drained; engine %s exits", p->engine_id);
            return QN_OK;
        }
        double now = qn_now_s();
        if (!s->registered && now >= s->next_register) {
            send_register(s);
            s->next_register = now + s->register_backoff;
            s->register_backoff = s->register_backoff * 2 > 5.0 ? 5.0 : s->register_backoff * 2;
        }
        if (s->registered && now >= s->next_hb) {
            send_heartbeat(s);
            s->next_hb = now + s->hb_interval;
        }
        if (s->pull && atomic_load(&s->pull->done)) {
            qn_status st = finish_pull(s);
            if (st != QN_OK) {
                char why[1100];
                snprintf(why, sizeof why, "engine failed: %s", qn_last_error());
                fail_all(s, why);
                return qn_fail(st, "%s", why);
            }
        }

        /* Idle, the poll may sleep until the next heartbeat or registration is due (a
         * message or a signal wakes it earlier); a running pull is looked at every 5 ms. */
        int wait_ms = 0;
        if (!(!s->pull && qn_engine_busy(p->engine))) {
            double due = s->registered ? s->next_hb : s->next_register;
            double ms = (due - qn_now_s()) * 1000.0;
            wait_ms = s->pull ? 5 : (ms < 1.0 ? 1 : (ms > 50.0 ? 50 : (int)ms));
        }
        for (int k = 0; k < RS_MAX_MSGS_PER_TURN; k++) {
            Quench__Envelope *env = NULL;
            qn_status st = recv_one(s, k == 0 ? wait_ms : 0, &env);
            if (st == QN_ERR_TIMEOUT) break;
            if (st == QN_ERR_NET) return st;
            if (st != QN_OK) {
                QN_LOG_WARN("rollout: skipping a bad message: %s", qn_last_error());
                continue;
            }
            handle(s, env);
            qn_envelope_free(env);
        }
        if (!s->pull && qn_engine_busy(p->engine)) {
            int64_t nt = 0;
            qn_status st = qn_engine_step(p->engine, &nt);
            if (st != QN_OK) {
                char why[1100];
                snprintf(why, sizeof why, "engine failed: %s", qn_last_error());
                QN_LOG_ERROR("rollout: %s", why);
                collect(s);
                fail_all(s, why);
                return qn_fail(st, "%s", why);
            }
            send_partials(s);
        }
        collect(s);
    }
}

qn_status qn_rollout_service_run(const qn_rollout_service_params *p) {
    svc s = {.p = p, .register_backoff = 0.5, .hb_interval = 1.0};
    if (!p->engine_id || !p->engine_id[0] || strlen(p->engine_id) > QN_ZMQ_MAX_IDENTITY)
        return qn_fail(QN_ERR_INVALID, "engine id '%s' must have 1 to %d bytes",
                       p->engine_id ? p->engine_id : "", QN_ZMQ_MAX_IDENTITY);
    snprintf(s.sender, sizeof s.sender, "engine:%s", p->engine_id);
    if (gethostname(s.host, sizeof s.host - 1) != 0) snprintf(s.host, sizeof s.host, "unknown");
    wire_text(s.host, sizeof s.host, s.host);
    s.ctx = zmq_ctx_new();
    if (!s.ctx) return qn_fail(QN_ERR_NET, "zmq context: %s", zmq_strerror(zmq_errno()));
    qn_status st = qn_zsock_open(s.ctx, ZMQ_DEALER, p->router, false, p->engine_id, &s.sock);
    if (st == QN_OK) {
        /* a router that is gone must not block the loop on a full queue */
        int sndtimeo = 1000;
        zmq_setsockopt(s.sock, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);
        st = serve(&s);
    }
    if (s.pull) {
        pthread_join(s.pull->th, NULL);
        pull_job_free(s.pull);
    }
    qn_weight_manifest_free(s.pending);
    while (s.reqs) {
        rs_req *r = s.reqs;
        s.reqs = r->next;
        req_free(r);
    }
    free(s.tmp);
    if (s.sock) {
        /* the last results may still be queued: give them time to leave */
        int linger = 2000;
        zmq_setsockopt(s.sock, ZMQ_LINGER, &linger, sizeof linger);
    }
    qn_zsock_close(s.sock);
    zmq_ctx_term(s.ctx);
    return st;
}
