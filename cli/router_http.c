/* router_http.c — the router's HTTP API (docs/services.md "HTTP API"):
 * routing of requests to endpoints, turning POST /generate and
 * POST /v1/completions into router requests (bodies parsed by
 * router_json.c, text through the tokenizer) and their results into SGLang-
 * and OpenAI-shaped answers, streaming ("stream": true) as server-sent events
 * built from the engines' partial results, /health, /workers, DELETE /workers/<id>, and /metrics in
 * Prometheus text. The transport (limits, timeouts, keep-alive) is
 * net/http_server. */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/router_int.h"
#include "core/log.h"

/* ------------------------------------------------------------------ HTTP answers */

static void respond_json(qn_http_conn *c, int status, cJSON *o) {
    char *s = cJSON_PrintUnformatted(o);
    if (!s) {
        qn_http_respond_error(c, 500, "out of memory");
        return;
    }
    qn_http_respond(c, status, "application/json", s, strlen(s), "");
    free(s);
}

/* Text of ids with invalid UTF-8 replaced by U+FFFD (a byte-level
 * tokenizer can cut a character; JSON needs valid UTF-8). NULL without a
 * tokenizer. */
static char *decode_text(rt *r, const int32_t *ids, size_t n) {
    if (!r->tok) return NULL;
    char *text = NULL;
    size_t len = 0;
    if (qn_tokenizer_decode_text(r->tok, ids, n, true, &text, &len) != QN_OK) {
        free(text);
        return strdup("");
    }
    return text;
}

static uint64_t result_version(rt *r, const Quench__GenerateResult *g) {
    uint64_t v = 0;
    for (size_t i = 0; i < g->n_weight_versions; i++)
        if (g->weight_versions[i] > v) v = g->weight_versions[i];
    if (g->n_weight_versions == 0) {
        rt_engine *e = rt_engine_find(r, g->engine_id);
        v = e ? e->version : r->version;
    }
    return v;
}

static cJSON *generate_object(rt *r, rt_req *q, const Quench__GenerateResult *g) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "output_ids",
                          cJSON_CreateIntArray(g->output_ids, (int)g->n_output_ids));
    char *text = decode_text(r, g->output_ids, g->n_output_ids);
    if (text) cJSON_AddStringToObject(o, "text", text);
    free(text);
    cJSON *m = cJSON_AddObjectToObject(o, "meta_info");
    char id[64];
    snprintf(id, sizeof id, "%" PRIu64, q->serial);
    cJSON_AddStringToObject(m, "id", id);
    if (q->http->rj.return_logprob) {
        cJSON *lp = cJSON_AddArrayToObject(m, "output_token_logprobs");
        for (size_t i = 0; i < g->n_output_ids; i++) {
            cJSON *pair = cJSON_CreateArray();
            if (i < g->n_output_logprobs)
                cJSON_AddItemToArray(pair, cJSON_CreateNumber(g->output_logprobs[i]));
            else
                cJSON_AddItemToArray(pair, cJSON_CreateNull());
            cJSON_AddItemToArray(pair, cJSON_CreateNumber(g->output_ids[i]));
            cJSON_AddItemToArray(lp, pair);
        }
    }
    const char *fr = qn_proto_finish_name(g->finish_reason);
    if (fr) {
        cJSON *f = cJSON_AddObjectToObject(m, "finish_reason");
        cJSON_AddStringToObject(f, "type", fr);
    } else {
        cJSON_AddNullToObject(m, "finish_reason");
    }
    cJSON_AddNumberToObject(m, "weight_version", (double)result_version(r, g));
    cJSON_AddNumberToObject(m, "prompt_tokens",
                            g->prompt_tokens ? g->prompt_tokens : q->gr->n_input_ids);
    cJSON_AddNumberToObject(m, "completion_tokens", (double)g->n_output_ids);
    cJSON_AddNumberToObject(m, "cached_tokens", g->cached_tokens);
    cJSON_AddNumberToObject(m, "e2e_latency", (rt_now_ms(r) - q->t_start) / 1000.0);
    cJSON_AddStringToObject(m, "engine_id", g->engine_id ? g->engine_id : "");
    return o;
}

/* OpenAI's "logprobs" of a choice for output tokens [from, n_output_ids) of g, or null when
 * the request did not ask for them. */
static void add_choice_logprobs(rt *r, cJSON *c, const Quench__GenerateResult *g, size_t from,
                                bool asked) {
    if (!asked) {
        cJSON_AddNullToObject(c, "logprobs");
        return;
    }
    cJSON *lp = cJSON_AddObjectToObject(c, "logprobs");
    cJSON *toks = cJSON_AddArrayToObject(lp, "tokens");
    cJSON *tlp = cJSON_AddArrayToObject(lp, "token_logprobs");
    for (size_t k = from; k < g->n_output_ids; k++) {
        char buf[32];
        char *t = decode_text(r, &g->output_ids[k], 1);
        if (!t) snprintf(buf, sizeof buf, "token_id:%d", g->output_ids[k]);
        cJSON_AddItemToArray(toks, cJSON_CreateString(t ? t : buf));
        free(t);
        cJSON_AddItemToArray(tlp, k < g->n_output_logprobs
                                      ? cJSON_CreateNumber(g->output_logprobs[k])
                                      : cJSON_CreateNull());
    }
    cJSON_AddNullToObject(lp, "top_logprobs");
}

static cJSON *completion_choice(rt *r, rt_req *q, uint32_t i, const Quench__GenerateResult *g) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", i);
    char *text = decode_text(r, g->output_ids, g->n_output_ids);
    cJSON_AddStringToObject(c, "text", text ? text : "");
    free(text);
    /* not OpenAI's: the token ids, since text needs a tokenizer */
    cJSON_AddItemToObject(c, "token_ids",
                          cJSON_CreateIntArray(g->output_ids, (int)g->n_output_ids));
    add_choice_logprobs(r, c, g, 0, q->http->rj.return_logprob);
    const char *fr = qn_proto_finish_name(g->finish_reason);
    if (fr)
        cJSON_AddStringToObject(c, "finish_reason", fr);
    else
        cJSON_AddNullToObject(c, "finish_reason");
    return c;
}

static cJSON *completion_head(rt_req *q) {
    cJSON *o = cJSON_CreateObject();
    char id[64];
    snprintf(id, sizeof id, "cmpl-%" PRIu64, q->serial);
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)time(NULL));
    cJSON_AddStringToObject(o, "model", q->http->rj.model);
    return o;
}

/* ------------------------------------------------------------------ streaming */

/* What one choice of a streaming request has sent: every token id so far
 * (SGLang events and text decoding need them all) and the bytes of text. */
typedef struct rt_stream {
    int32_t *ids;
    size_t n, cap;
    size_t text_sent;
} rt_stream;

void rt_http_stream_free(rt_http *h, uint32_t n) {
    for (uint32_t i = 0; h->st && i < n; i++)
        free(h->st[i].ids);
    free(h->st);
    h->st = NULL;
}

static void sse_send(rt_http *h, cJSON *o) {
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s) return;
    qn_http_stream_write(h->conn, "data: ", 6);
    qn_http_stream_write(h->conn, s, strlen(s));
    qn_http_stream_write(h->conn, "\n\n", 2);
    free(s);
}

static void sse_begin(rt_http *h) {
    if (h->sse) return;
    qn_http_stream_begin(h->conn, 200, "text/event-stream");
    h->sse = true;
}

void rt_http_stream_error(rt_http *h, int status, const char *msg) {
    cJSON *o = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddNumberToObject(e, "code", status);
    sse_send(h, o);
    qn_http_stream_end(h->conn);
}

/* The text of choice `st` not yet sent: the decoded ids minus what was sent. Before the
 * end a trailing U+FFFD (a character cut between tokens) is held back. NULL without a
 * tokenizer. Decodes every id each time: quadratic, fine for completion lengths. */
static char *stream_text(rt *r, rt_stream *st, bool final) {
    char *all = decode_text(r, st->ids, st->n);
    if (!all) return NULL;
    size_t len = strlen(all);
    if (!final)
        while (len >= 3 && memcmp(all + len - 3, "\xEF\xBF\xBD", 3) == 0)
            len -= 3;
    size_t from = st->text_sent < len ? st->text_sent : len;
    char *out = strndup(all + from, len - from);
    if (out && len > st->text_sent) st->text_sent = len;
    free(all);
    return out;
}

static bool stream_add(rt_stream *st, const int32_t *ids, size_t n) {
    if (st->n + n > st->cap) {
        size_t cap = st->cap * 2 + n + 16;
        int32_t *p = realloc(st->ids, cap * sizeof *p);
        if (!p) return false;
        st->ids = p;
        st->cap = cap;
    }
    if (n) memcpy(st->ids + st->n, ids, n * sizeof *ids);
    st->n += n;
    return true;
}

/* One event for choice i: the tokens of g from `from` on (a partial result: all of
 * them; the final one: those not streamed yet). */
static void stream_event(rt *r, rt_req *q, uint32_t i, const Quench__GenerateResult *g,
                         size_t from, bool final) {
    rt_http *h = q->http;
    rt_stream *st = &h->st[i];
    size_t n = g->n_output_ids > from ? g->n_output_ids - from : 0;
    if (!stream_add(st, g->output_ids + from, n)) return;
    if (h->rj.api == QN_RAPI_GENERATE) {
        /* SGLang's shape: every event has the output so far */
        Quench__GenerateResult so_far = *g;
        so_far.output_ids = st->ids;
        so_far.n_output_ids = st->n;
        if (!final) so_far.n_output_logprobs = 0, so_far.n_weight_versions = 0;
        cJSON *o = generate_object(r, q, &so_far);
        if (q->n > 1) cJSON_AddNumberToObject(o, "index", i);
        sse_send(h, o);
        return;
    }
    cJSON *o = completion_head(q);
    cJSON *c = cJSON_CreateObject();
    cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "choices"), c);
    cJSON_AddNumberToObject(c, "index", i);
    char *text = stream_text(r, st, final);
    cJSON_AddStringToObject(c, "text", text ? text : "");
    free(text);
    cJSON_AddItemToObject(c, "token_ids", cJSON_CreateIntArray(g->output_ids + from, (int)n));
    add_choice_logprobs(r, c, g, from, h->rj.return_logprob);
    const char *fr = final ? qn_proto_finish_name(g->finish_reason) : NULL;
    if (fr)
        cJSON_AddStringToObject(c, "finish_reason", fr);
    else
        cJSON_AddNullToObject(c, "finish_reason");
    sse_send(h, o);
}

void rt_http_partial(rt *r, rt_req *q, uint32_t slot, const Quench__GenerateResult *g) {
    rt_http *h = q->http;
    if (!h->rj.stream || g->n_output_ids == 0) return;
    if (!h->st) {
        h->st = calloc(q->n, sizeof *h->st);
        if (!h->st) return; /* the final event still carries everything */
    }
    sse_begin(h);
    stream_event(r, q, slot, g, 0, false);
}

/* All n results are in: answer the HTTP client. */
void rt_http_answer(rt *r, rt_req *q) {
    rt_http *h = q->http;
    /* an engine refusal (bad prompt, params out of range) is the client's 400 */
    for (uint32_t i = 0; i < q->n; i++) {
        const Quench__GenerateResult *g = h->results[i]->generate_result;
        if (g->error && g->error[0]) {
            char msg[600];
            snprintf(msg, sizeof msg, "engine %s refused the request: %s", g->engine_id, g->error);
            if (h->sse)
                rt_http_stream_error(h, 400, msg);
            else
                qn_http_respond_error(h->conn, 400, msg);
            return;
        }
    }
    if (h->rj.stream) {
        if (!h->st) h->st = calloc(q->n, sizeof *h->st);
        if (!h->st) {
            qn_http_respond_error(h->conn, 500, "out of memory");
            return;
        }
        sse_begin(h);
        for (uint32_t i = 0; i < q->n; i++) {
            const Quench__GenerateResult *g = h->results[i]->generate_result;
            /* the final result repeats every token: send those no partial carried */
            size_t from = h->st[i].n < g->n_output_ids ? h->st[i].n : g->n_output_ids;
            stream_event(r, q, i, g, from, true);
        }
        qn_http_stream_write(h->conn, "data: [DONE]\n\n", 14);
        qn_http_stream_end(h->conn);
        return;
    }
    if (h->rj.api == QN_RAPI_GENERATE) {
        cJSON *out = q->n > 1 ? cJSON_CreateArray() : NULL;
        cJSON *one = NULL;
        for (uint32_t i = 0; i < q->n; i++) {
            one = generate_object(r, q, h->results[i]->generate_result);
            if (out) cJSON_AddItemToArray(out, one);
        }
        respond_json(h->conn, 200, out ? out : one);
        cJSON_Delete(out ? out : one);
        return;
    }
    uint64_t completion = 0, prompt = q->gr->n_input_ids;
    for (uint32_t i = 0; i < q->n; i++)
        completion += h->results[i]->generate_result->n_output_ids;
    cJSON *o = completion_head(q);
    cJSON *ch = cJSON_AddArrayToObject(o, "choices");
    for (uint32_t i = 0; i < q->n; i++)
        cJSON_AddItemToArray(ch, completion_choice(r, q, i, h->results[i]->generate_result));
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)completion);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(prompt + completion));
    respond_json(h->conn, 200, o);
    cJSON_Delete(o);
}

/* ------------------------------------------------------------------ HTTP */

static void http_submit(rt *r, qn_http_conn *conn, qn_rapi api, const qn_http_request *hr) {
    rt_http *h = calloc(1, sizeof *h);
    rt_req *q = calloc(1, sizeof *q);
    if (!h || !q) {
        free(h);
        free(q);
        qn_http_respond_error(conn, 500, "out of memory");
        return;
    }
    r->req_http++;
    h->conn = conn;
    if (qn_rj_parse(api, hr->body, hr->body_len, &h->rj) != QN_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", qn_last_error());
        qn_http_respond_error(conn, 400, msg);
        free(h);
        free(q);
        return;
    }
    if (h->rj.text) {
        if (!r->tok) {
            qn_http_respond_error(conn, 400,
                                  "a text prompt needs the router to be started with "
                                  "--tokenizer; send token ids instead");
            qn_rj_request_free(&h->rj);
            free(h);
            free(q);
            return;
        }
        qn_token_ids ids = {0};
        if (qn_tokenizer_encode(r->tok, h->rj.text, strlen(h->rj.text), NULL, &ids) != QN_OK ||
            ids.n == 0) {
            char msg[512];
            snprintf(msg, sizeof msg, "prompt: cannot tokenize: %s",
                     ids.n ? qn_last_error() : "no tokens");
            qn_token_ids_free(&ids);
            qn_http_respond_error(conn, 400, msg);
            qn_rj_request_free(&h->rj);
            free(h);
            free(q);
            return;
        }
        h->rj.input_ids = ids.ids;
        h->rj.n_input = ids.n;
    }
    quench__generate_request__init(&h->gr);
    quench__sampling_params__init(&h->sp);
    h->sp.temperature = h->rj.temperature;
    h->sp.top_p = h->rj.top_p;
    h->sp.top_k = h->rj.top_k;
    h->sp.min_p = h->rj.min_p;
    h->sp.max_new_tokens = h->rj.max_new_tokens;
    h->sp.n_stop_token_ids = h->rj.n_stop_ids;
    h->sp.stop_token_ids = h->rj.stop_ids;
    h->sp.n_stop = h->rj.n_stop;
    h->sp.stop = h->rj.stop;
    h->sp.seed = h->rj.seed;
    h->sp.has_seed = h->rj.has_seed;
    h->sp.n = h->rj.n;
    h->gr.params = &h->sp;
    h->gr.n_input_ids = h->rj.n_input;
    h->gr.input_ids = h->rj.input_ids;
    h->gr.return_logprob = h->rj.return_logprob;
    h->gr.stream = h->rj.stream;
    q->from_http = true;
    q->http = h;
    q->gr = &h->gr;
    q->n = h->rj.n;
    q->serial = ++r->next_serial;
    h->gr.group_id = q->serial; /* HTTP requests have no group: a unique one */
    q->t_start = rt_now_ms(r);
    h->deadline = q->t_start + (uint64_t)r->o->request_timeout_s * 1000u;
    q->cost = h->rj.n_input + (uint64_t)h->rj.max_new_tokens * q->n;
    q->done = calloc(q->n, 1);
    h->results = calloc(q->n, sizeof *h->results);
    if (!q->done || !h->results) {
        qn_http_respond_error(conn, 500, "out of memory");
        rt_req_free(q);
        return;
    }
    if (r->n_queued >= r->o->max_queued) {
        r->req_failed++;
        qn_http_respond_error(conn, 503, "router queue is full");
        rt_req_free(q);
        return;
    }
    rt_queue_push(r, q, false);
    rt_pump_queue(r);
}

static void add_label(char *out, size_t cap, const char *v) {
    size_t k = 0;
    for (const char *p = v; *p && k + 3 < cap; p++) {
        if (*p == '\\' || *p == '"') {
            out[k++] = '\\';
            out[k++] = *p;
        } else if (*p == '\n') {
            out[k++] = '\\';
            out[k++] = 'n';
        } else {
            out[k++] = *p;
        }
    }
    out[k] = 0;
}

typedef struct sbuf {
    char *s;
    size_t len, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if (b->s && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap ? b->cap * 2 : 4096) + (size_t)n;
        char *ns = realloc(b->s, cap);
        if (!ns) return;
        b->s = ns;
        b->cap = cap;
    }
}

static void http_metrics(rt *r, qn_http_conn *conn) {
    sbuf b = {0};
    qn_http_server_stats hs = qn_http_server_get_stats(r->http);
    sb_printf(&b,
              "# HELP quench_router_requests_total generation requests received\n"
              "# TYPE quench_router_requests_total counter\n"
              "quench_router_requests_total{source=\"zmq\"} %" PRIu64 "\n"
              "quench_router_requests_total{source=\"http\"} %" PRIu64 "\n",
              r->req_zmq, r->req_http);
    sb_printf(&b,
              "# HELP quench_router_requests_failed_total requests answered with an error\n"
              "# TYPE quench_router_requests_failed_total counter\n"
              "quench_router_requests_failed_total %" PRIu64 "\n",
              r->req_failed);
    sb_printf(&b,
              "# HELP quench_router_requests_completed_total requests with every sample answered\n"
              "# TYPE quench_router_requests_completed_total counter\n"
              "quench_router_requests_completed_total %" PRIu64 "\n",
              r->req_done);
    sb_printf(&b,
              "# HELP quench_router_requests_in_flight requests sent to engines and not finished\n"
              "# TYPE quench_router_requests_in_flight gauge\n"
              "quench_router_requests_in_flight %zu\n",
              r->n_inflight);
    sb_printf(&b,
              "# HELP quench_router_requests_queued requests waiting for an engine\n"
              "# TYPE quench_router_requests_queued gauge\n"
              "quench_router_requests_queued %zu\n",
              r->n_queued);
    sb_printf(
        &b,
        "# HELP quench_router_requests_redispatched_total requests sent again to another engine\n"
        "# TYPE quench_router_requests_redispatched_total counter\n"
        "quench_router_requests_redispatched_total %" PRIu64 "\n",
        r->redispatched);
    sb_printf(
        &b,
        "# HELP quench_router_results_dropped_total stale or duplicate engine results dropped\n"
        "# TYPE quench_router_results_dropped_total counter\n"
        "quench_router_results_dropped_total{reason=\"stale\"} %" PRIu64 "\n"
        "quench_router_results_dropped_total{reason=\"duplicate\"} %" PRIu64 "\n",
        r->stale_results, r->dup_results);
    sb_printf(&b,
              "# HELP quench_router_bad_messages_total malformed or unexpected ZeroMQ messages\n"
              "# TYPE quench_router_bad_messages_total counter\n"
              "quench_router_bad_messages_total %" PRIu64 "\n",
              r->bad_messages);
    sb_printf(&b,
              "# HELP quench_router_engines registered engines\n"
              "# TYPE quench_router_engines gauge\n"
              "quench_router_engines %zu\n"
              "# HELP quench_router_engines_dispatchable engines that can take work now\n"
              "# TYPE quench_router_engines_dispatchable gauge\n"
              "quench_router_engines_dispatchable %zu\n"
              "# HELP quench_router_engines_dropped_total engines dropped (timeout, restart)\n"
              "# TYPE quench_router_engines_dropped_total counter\n"
              "quench_router_engines_dropped_total %" PRIu64 "\n",
              r->n_engines, rt_count_dispatchable(r), r->engines_dropped);
    sb_printf(&b,
              "# HELP quench_router_redis_errors_total Redis commands that failed\n"
              "# TYPE quench_router_redis_errors_total counter\n"
              "quench_router_redis_errors_total %" PRIu64 "\n",
              r->redis_errors);
    sb_printf(&b,
              "# HELP quench_router_engine_outstanding_tokens prompt + max new tokens in flight\n"
              "# TYPE quench_router_engine_outstanding_tokens gauge\n");
    for (size_t i = 0; i < r->n_engines; i++) {
        char lab[600];
        add_label(lab, sizeof lab, r->engines[i]->id);
        sb_printf(&b, "quench_router_engine_outstanding_tokens{engine=\"%s\"} %" PRIu64 "\n", lab,
                  r->engines[i]->outstanding_tokens);
    }
    sb_printf(&b, "# HELP quench_router_engine_outstanding_requests requests in flight\n"
                  "# TYPE quench_router_engine_outstanding_requests gauge\n");
    for (size_t i = 0; i < r->n_engines; i++) {
        char lab[600];
        add_label(lab, sizeof lab, r->engines[i]->id);
        sb_printf(&b, "quench_router_engine_outstanding_requests{engine=\"%s\"} %u\n", lab,
                  r->engines[i]->outstanding);
    }
    sb_printf(&b,
              "# HELP quench_router_request_latency_seconds time from arrival to the last sample\n"
              "# TYPE quench_router_request_latency_seconds histogram\n");
    uint64_t cum = 0;
    for (size_t i = 0; i < RT_N_LAT; i++) {
        cum += r->lat_bucket[i];
        sb_printf(&b, "quench_router_request_latency_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                  k_lat_bounds[i], cum);
    }
    cum += r->lat_bucket[RT_N_LAT];
    sb_printf(&b,
              "quench_router_request_latency_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n"
              "quench_router_request_latency_seconds_sum %.6f\n"
              "quench_router_request_latency_seconds_count %" PRIu64 "\n",
              cum, r->lat_sum, r->lat_count);
    sb_printf(&b,
              "# HELP quench_router_weight_version the job's current weight version\n"
              "# TYPE quench_router_weight_version gauge\n"
              "quench_router_weight_version %" PRIu64 "\n"
              "# HELP quench_router_weight_updates_total weight updates completed\n"
              "# TYPE quench_router_weight_updates_total counter\n"
              "quench_router_weight_updates_total %" PRIu64 "\n",
              r->version, r->updates_done);
    sb_printf(&b,
              "# HELP quench_router_http_connections_open open HTTP connections\n"
              "# TYPE quench_router_http_connections_open gauge\n"
              "quench_router_http_connections_open %" PRIu64 "\n"
              "# HELP quench_router_http_responses_total HTTP error responses by class\n"
              "# TYPE quench_router_http_responses_total counter\n"
              "quench_router_http_responses_total{class=\"4xx\"} %" PRIu64 "\n"
              "quench_router_http_responses_total{class=\"5xx\"} %" PRIu64 "\n"
              "# HELP quench_router_http_timeouts_total slow or idle HTTP clients cut off\n"
              "# TYPE quench_router_http_timeouts_total counter\n"
              "quench_router_http_timeouts_total %" PRIu64 "\n",
              hs.connections_open, hs.responses_4xx, hs.responses_5xx, hs.timeouts);
    if (!b.s) {
        qn_http_respond_error(conn, 500, "out of memory");
        return;
    }
    qn_http_respond(conn, 200, "text/plain; version=0.0.4", b.s, b.len, "");
    free(b.s);
}

static void http_workers(rt *r, qn_http_conn *conn) {
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < r->n_engines; i++) {
        rt_engine *e = r->engines[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", e->id);
        cJSON_AddStringToObject(o, "host", e->host);
        cJSON_AddStringToObject(o, "device", e->device);
        if (e->version_known)
            cJSON_AddNumberToObject(o, "version", (double)e->version);
        else
            cJSON_AddNullToObject(o, "version");
        cJSON_AddBoolToObject(o, "draining", e->draining);
        cJSON_AddBoolToObject(o, "dispatchable", rt_engine_eligible(r, e));
        cJSON_AddNumberToObject(o, "running", e->outstanding);
        cJSON_AddNumberToObject(o, "max_running_requests", e->max_running);
        cJSON_AddNumberToObject(o, "outstanding_tokens", (double)e->outstanding_tokens);
        cJSON_AddNumberToObject(o, "engine_running", e->hb_running);
        cJSON_AddNumberToObject(o, "engine_queued", e->hb_queued);
        cJSON_AddNumberToObject(o, "results", (double)e->results);
        cJSON_AddNumberToObject(o, "last_heartbeat_age_s", (rt_now_ms(r) - e->last_heard) / 1000.0);
        cJSON_AddItemToArray(a, o);
    }
    respond_json(conn, 200, a);
    cJSON_Delete(a);
}

static void http_delete_worker(rt *r, qn_http_conn *conn, const char *id, size_t len) {
    char name[RT_ID_CAP];
    if (len == 0 || len >= sizeof name) {
        qn_http_respond_error(conn, 404, "no such engine");
        return;
    }
    memcpy(name, id, len);
    name[len] = 0;
    rt_engine *e = rt_engine_find(r, name);
    if (!e) {
        char msg[400];
        snprintf(msg, sizeof msg, "no engine '%s' is registered", name);
        qn_http_respond_error(conn, 404, msg);
        return;
    }
    Quench__Drain d = QUENCH__DRAIN__INIT;
    d.engine_id = e->id;
    Quench__Envelope env = qn_envelope_drain(&d);
    rt_zsend(r, e->ident, e->ident_len, &env, ++r->next_rid);
    if (!e->draining) QN_LOG_INFO("router: engine %s drained by DELETE /workers", e->id);
    e->draining = true;
    rt_redis_engine_put(r, e);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", e->id);
    cJSON_AddBoolToObject(o, "draining", true);
    cJSON_AddNumberToObject(o, "running", e->outstanding);
    respond_json(conn, 200, o);
    cJSON_Delete(o);
}

static bool path_is(const char *t, size_t tl, const char *p) {
    size_t n = strlen(p);
    return tl == n && memcmp(t, p, n) == 0;
}

void rt_on_http(qn_http_conn *conn, const qn_http_request *hr, void *user) {
    rt *r = user;
    size_t tl = hr->target_len;
    for (size_t i = 0; i < hr->target_len; i++)
        if (hr->target[i] == '?') {
            tl = i;
            break;
        }
    const char *t = hr->target;
    bool get = hr->method_len == 3 && memcmp(hr->method, "GET", 3) == 0;
    bool post = hr->method_len == 4 && memcmp(hr->method, "POST", 4) == 0;
    bool del = hr->method_len == 6 && memcmp(hr->method, "DELETE", 6) == 0;
    if (r->stopping) {
        qn_http_respond_error(conn, 503, "router is shutting down");
    } else if (path_is(t, tl, "/health")) {
        size_t n = rt_count_dispatchable(r);
        char body[128];
        int len = snprintf(body, sizeof body,
                           "{\"status\":\"%s\",\"engines\":%zu,\"weight_version\":%" PRIu64 "}",
                           n ? "ok" : "unavailable", n, r->version);
        qn_http_respond(conn, n ? 200 : 503, "application/json", body, (size_t)len, "");
    } else if (path_is(t, tl, "/workers")) {
        if (get)
            http_workers(r, conn);
        else
            qn_http_respond_error(conn, 405, "use GET /workers or DELETE /workers/<id>");
    } else if (tl > 9 && memcmp(t, "/workers/", 9) == 0) {
        if (del)
            http_delete_worker(r, conn, t + 9, tl - 9);
        else
            qn_http_respond_error(conn, 405, "use DELETE /workers/<id>");
    } else if (path_is(t, tl, "/metrics")) {
        http_metrics(r, conn);
    } else if (path_is(t, tl, "/generate") || path_is(t, tl, "/v1/completions")) {
        if (post)
            http_submit(r, conn,
                        path_is(t, tl, "/generate") ? QN_RAPI_GENERATE : QN_RAPI_COMPLETIONS, hr);
        else
            qn_http_respond_error(conn, 405, "use POST");
    } else {
        qn_http_respond_error(conn, 404,
                              "no such endpoint (POST /generate, POST /v1/completions, "
                              "GET /health, GET /workers, DELETE /workers/<id>, GET /metrics)");
    }
    rt_zpump(r); /* a send may have consumed the ZMQ_FD edge */
}
