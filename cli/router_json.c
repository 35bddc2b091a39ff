/* router_json.c — see router_json.h.
 *
 * Defaults follow the servers whose shapes we speak: SGLang's /generate
 * (max_new_tokens 128, temperature 1, top_p 1, top_k off, min_p 0) and
 * OpenAI's /v1/completions (max_tokens 16, temperature 1, top_p 1, n 1).
 * A JSON null counts as absent. Numbers that must be integers are checked
 * to be whole and inside the int range before conversion. */
#include "cli/router_json.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void qn_rj_request_free(qn_rj_request *r) {
    if (!r) return;
    free(r->input_ids);
    free(r->text);
    for (size_t i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    free(r->stop);
    free(r->stop_ids);
    memset(r, 0, sizeof *r);
}

static const cJSON *field(const cJSON *obj, const char *name) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, name);
    return (f && !cJSON_IsNull(f)) ? f : NULL;
}

/* A finite number in [lo, hi]. */
static qn_status get_float(const cJSON *obj, const char *prefix, const char *name, double lo,
                           double hi, float *out) {
    const cJSON *f = field(obj, name);
    if (!f) return QN_OK;
    if (!cJSON_IsNumber(f) || !isfinite(f->valuedouble))
        return qn_fail(QN_ERR_FORMAT, "%s%s: expected a finite number", prefix, name);
    if (f->valuedouble < lo || f->valuedouble > hi)
        return qn_fail(QN_ERR_RANGE, "%s%s: %g is outside [%g, %g]", prefix, name, f->valuedouble,
                       lo, hi);
    *out = (float)f->valuedouble;
    return QN_OK;
}

static qn_status check_int(const cJSON *f, const char *prefix, const char *name, double lo,
                           double hi, int64_t *out) {
    if (!cJSON_IsNumber(f) || !isfinite(f->valuedouble) || floor(f->valuedouble) != f->valuedouble)
        return qn_fail(QN_ERR_FORMAT, "%s%s: expected an integer", prefix, name);
    if (f->valuedouble < lo || f->valuedouble > hi)
        return qn_fail(QN_ERR_RANGE, "%s%s: %.17g is outside [%.17g, %.17g]", prefix, name,
                       f->valuedouble, lo, hi);
    *out = (int64_t)f->valuedouble;
    return QN_OK;
}

static qn_status get_int(const cJSON *obj, const char *prefix, const char *name, double lo,
                         double hi, int64_t *out, bool *present) {
    const cJSON *f = field(obj, name);
    if (present) *present = f != NULL;
    if (!f) return QN_OK;
    return check_int(f, prefix, name, lo, hi, out);
}

static qn_status get_bool(const cJSON *obj, const char *prefix, const char *name, bool *out) {
    const cJSON *f = field(obj, name);
    if (!f) return QN_OK;
    if (!cJSON_IsBool(f))
        return qn_fail(QN_ERR_FORMAT, "%s%s: expected true or false", prefix, name);
    *out = cJSON_IsTrue(f);
    return QN_OK;
}

/* An array of token ids (integers in [0, INT32_MAX]) into a new array. */
static qn_status get_ids(const cJSON *arr, const char *what, size_t max_n, int32_t **out,
                         size_t *n_out) {
    if (!cJSON_IsArray(arr))
        return qn_fail(QN_ERR_FORMAT, "%s: expected an array of token ids", what);
    int n = cJSON_GetArraySize(arr);
    if (n < 0 || (size_t)n > max_n)
        return qn_fail(QN_ERR_RANGE, "%s: %d entries (at most %zu)", what, n, max_n);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
    if (!ids) return qn_fail(QN_ERR_NOMEM, "%s", what);
    int i = 0;
    for (const cJSON *e = arr->child; e; e = e->next, i++) {
        char name[64];
        snprintf(name, sizeof name, "[%d]", i);
        int64_t v = 0;
        qn_status st = check_int(e, what, name, 0, 2147483647.0, &v);
        if (st != QN_OK) {
            free(ids);
            return st;
        }
        ids[i] = (int32_t)v;
    }
    *out = ids;
    *n_out = (size_t)n;
    return QN_OK;
}

/* "stop": a string or an array of strings. */
static qn_status get_stop(const cJSON *obj, const char *prefix, qn_rj_request *r) {
    const cJSON *f = field(obj, "stop");
    if (!f) return QN_OK;
    const cJSON *items = f;
    int n = 1;
    if (cJSON_IsArray(f)) {
        n = cJSON_GetArraySize(f);
        items = f->child;
    } else if (!cJSON_IsString(f)) {
        return qn_fail(QN_ERR_FORMAT, "%sstop: expected a string or an array of strings", prefix);
    }
    if (n < 0 || (size_t)n > QN_RJ_MAX_STOP)
        return qn_fail(QN_ERR_RANGE, "%sstop: %d strings (at most %u)", prefix, n, QN_RJ_MAX_STOP);
    r->stop = calloc((size_t)(n > 0 ? n : 1), sizeof(char *));
    if (!r->stop) return qn_fail(QN_ERR_NOMEM, "stop");
    for (const cJSON *e = items; e && r->n_stop < (size_t)n; e = e->next) {
        if (!cJSON_IsString(e) || !e->valuestring)
            return qn_fail(QN_ERR_FORMAT, "%sstop[%zu]: expected a string", prefix, r->n_stop);
        size_t len = strlen(e->valuestring);
        if (len == 0 || len > QN_RJ_MAX_STOP_LEN)
            return qn_fail(QN_ERR_RANGE, "%sstop[%zu]: length %zu (1 to %u bytes)", prefix,
                           r->n_stop, len, QN_RJ_MAX_STOP_LEN);
        r->stop[r->n_stop] = strdup(e->valuestring);
        if (!r->stop[r->n_stop]) return qn_fail(QN_ERR_NOMEM, "stop");
        r->n_stop++;
        if (f == items) break; /* a single string */
    }
    return QN_OK;
}

/* Sampling fields shared by both shapes; `max_name` is max_new_tokens or max_tokens. */
static qn_status get_sampling(const cJSON *sp, const char *prefix, const char *max_name,
                              qn_rj_request *r) {
    QN_CHECK(get_float(sp, prefix, "temperature", 0, 1e6, &r->temperature));
    QN_CHECK(get_float(sp, prefix, "top_p", 0, 1, &r->top_p));
    if (field(sp, "top_p") && r->top_p <= 0)
        return qn_fail(QN_ERR_RANGE, "%stop_p: must be in (0, 1]", prefix);
    QN_CHECK(get_float(sp, prefix, "min_p", 0, 1, &r->min_p));
    int64_t v = 0;
    bool have = false;
    QN_CHECK(get_int(sp, prefix, "top_k", -1, 2147483647.0, &v, &have));
    if (have) r->top_k = (int32_t)v;
    QN_CHECK(get_int(sp, prefix, max_name, 0, QN_RJ_MAX_NEW_TOKENS, &v, &have));
    if (have) r->max_new_tokens = (int32_t)v;
    QN_CHECK(get_int(sp, prefix, "n", 1, QN_RJ_MAX_N, &v, &have));
    if (have) r->n = (uint32_t)v;
    QN_CHECK(get_int(sp, prefix, "seed", 0, 9007199254740992.0, &v, &have));
    if (have) {
        r->seed = (uint64_t)v;
        r->has_seed = true;
    }
    QN_CHECK(get_stop(sp, prefix, r));
    const cJSON *ids = field(sp, "stop_token_ids");
    if (ids) {
        char what[64];
        snprintf(what, sizeof what, "%sstop_token_ids", prefix);
        QN_CHECK(get_ids(ids, what, QN_RJ_MAX_STOP_IDS, &r->stop_ids, &r->n_stop_ids));
    }
    return QN_OK;
}

/* The prompt: a string (needs a tokenizer) or token ids. */
static qn_status get_prompt(const cJSON *f, const char *name, qn_rj_request *r) {
    if (cJSON_IsString(f) && f->valuestring) {
        if (f->valuestring[0] == '\0') return qn_fail(QN_ERR_RANGE, "%s: empty prompt", name);
        r->text = strdup(f->valuestring);
        return r->text ? QN_OK : qn_fail(QN_ERR_NOMEM, "%s", name);
    }
    if (cJSON_IsArray(f)) {
        if (f->child && (cJSON_IsString(f->child) || cJSON_IsArray(f->child)))
            return qn_fail(QN_ERR_UNSUPPORTED,
                           "%s: a list of prompts (batch) is not supported; send one per request",
                           name);
        QN_CHECK(get_ids(f, name, QN_RJ_MAX_INPUT_IDS, &r->input_ids, &r->n_input));
        if (r->n_input == 0) return qn_fail(QN_ERR_RANGE, "%s: empty prompt", name);
        return QN_OK;
    }
    return qn_fail(QN_ERR_FORMAT, "%s: expected a string or an array of token ids", name);
}

static qn_status parse_generate(const cJSON *root, qn_rj_request *r) {
    const cJSON *text = field(root, "text"), *ids = field(root, "input_ids");
    if (text && ids)
        return qn_fail(QN_ERR_INVALID, "give either \"text\" or \"input_ids\", not both");
    if (!text && !ids) return qn_fail(QN_ERR_INVALID, "missing prompt (\"text\" or \"input_ids\")");
    if (text && !cJSON_IsString(text)) return qn_fail(QN_ERR_FORMAT, "text: expected a string");
    if (ids && !cJSON_IsArray(ids))
        return qn_fail(QN_ERR_FORMAT, "input_ids: expected an array of token ids");
    QN_CHECK(get_prompt(text ? text : ids, text ? "text" : "input_ids", r));
    r->max_new_tokens = 128;
    const cJSON *sp = field(root, "sampling_params");
    if (sp) {
        if (!cJSON_IsObject(sp))
            return qn_fail(QN_ERR_FORMAT, "sampling_params: expected an object");
        QN_CHECK(get_sampling(sp, "sampling_params.", "max_new_tokens", r));
    }
    QN_CHECK(get_bool(root, "", "stream", &r->stream));
    return get_bool(root, "", "return_logprob", &r->return_logprob);
}

static qn_status parse_completions(const cJSON *root, qn_rj_request *r) {
    const cJSON *prompt = field(root, "prompt");
    if (!prompt) return qn_fail(QN_ERR_INVALID, "missing prompt (\"prompt\")");
    QN_CHECK(get_prompt(prompt, "prompt", r));
    r->max_new_tokens = 16;
    QN_CHECK(get_sampling(root, "", "max_tokens", r));
    QN_CHECK(get_bool(root, "", "stream", &r->stream));
    int64_t lp = 0;
    bool have = false;
    QN_CHECK(get_int(root, "", "logprobs", 0, 5, &lp, &have));
    r->return_logprob = have;
    const cJSON *model = field(root, "model");
    if (model) {
        if (!cJSON_IsString(model) || !model->valuestring)
            return qn_fail(QN_ERR_FORMAT, "model: expected a string");
        snprintf(r->model, sizeof r->model, "%s", model->valuestring);
    }
    return QN_OK;
}

qn_status qn_rj_parse(qn_rapi api, const char *body, size_t len, qn_rj_request *out) {
    memset(out, 0, sizeof *out);
    out->api = api;
    out->temperature = 1.0f;
    out->top_p = 1.0f;
    out->top_k = -1;
    out->n = 1;
    snprintf(out->model, sizeof out->model, "quench");
    if (!body || len == 0) return qn_fail(QN_ERR_FORMAT, "empty body (expected a JSON object)");
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!root) return qn_fail(QN_ERR_FORMAT, "body is not valid JSON");
    qn_status st;
    if (!cJSON_IsObject(root))
        st = qn_fail(QN_ERR_FORMAT, "body: expected a JSON object");
    else
        st = api == QN_RAPI_GENERATE ? parse_generate(root, out) : parse_completions(root, out);
    cJSON_Delete(root);
    if (st != QN_OK) {
        qn_rj_request_free(out);
        out->api = api;
    }
    return st;
}
