/* cmd_generate.c — `quench generate`: offline batch generation with the
 * rollout engine (rollout/engine.h) on a checkpoint.
 *
 * Every input line becomes one engine request; all of them are submitted at
 * once and the engine's continuous batching decides what runs together.
 * Output lines come back in input order, one per non-empty input line: the
 * generated ids, their log-probs (of the temperature-scaled full
 * distribution, engine.h), the finish reason, the decoded text when a
 * tokenizer exists, prompt/cached token counts, the weight version and
 * timings. A line the engine (or this parser) refuses gets an "error" line
 * and the rest are generated; the exit status then is 3.
 *
 * Sampling parameters: the command-line flags are the defaults of every
 * line; a line's "sampling_params" object overrides them with SGLang's
 * names. Leaves out: streaming output, the HTTP API (router/), repetition
 * penalties and the rest of SGLang's sampling options (unknown keys are
 * ignored with a warning). */
#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/commands.h"
#include "cli/served_model.h"
#include "core/flags.h"
#include "core/io/jsonl.h"
#include "core/log.h"
#include "core/model/infer.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "rollout/engine.h"
#include "rollout/sampler.h"
#include "core/clock.h"

/* Exit status when some lines were refused and the others generated. */
enum { GEN_EXIT_REFUSED = 3 };

typedef struct gen_cfg {
    char *model, *input, *output, *tokenizer, *chat_template;
    double temperature, top_p, min_p;
    int64_t top_k, max_new_tokens, seed, n_samples, threads;
    qn_engine_flags eng;
    qn_int_list stop_token_ids;
    qn_string_list stop;
    int quantize;
    bool ignore_eos;
} gen_cfg;

static const qn_flag k_gen_flags[] = {
    QN_F_STRING(gen_cfg, model, "model", NULL, "model folder (config.json + safetensors)",
                .attrs = QN_FLAG_REQUIRED, .metavar = "DIR"),
    QN_F_STRING(gen_cfg, input, "input", NULL, "JSONL requests, one per line",
                .attrs = QN_FLAG_REQUIRED, .metavar = "IN.jsonl"),
    QN_F_STRING(gen_cfg, output, "output", NULL, "JSONL results, one line per request",
                .attrs = QN_FLAG_REQUIRED, .metavar = "OUT.jsonl"),
    QN_F_FLOAT(gen_cfg, temperature, "temperature", "1.0", 0, 1e6,
               "sampling temperature (0: greedy)"),
    QN_F_FLOAT(gen_cfg, top_p, "top-p", "1.0", 0, 1, "nucleus sampling mass, in (0, 1]; 1: off"),
    QN_F_INT(gen_cfg, top_k, "top-k", "-1", -1, 2147483647, "keep the k most likely tokens; -1: off"),
    QN_F_FLOAT(gen_cfg, min_p, "min-p", "0", 0, 1,
               "keep tokens with p >= min-p * max p; 0: off"),
    QN_F_INT(gen_cfg, max_new_tokens, "max-new-tokens", "128", 0, 2147483647,
             "tokens to generate per sample at most (also capped by the context)"),
    QN_F_INT_LIST(gen_cfg, stop_token_ids, "stop-token-ids", NULL, 0, 2147483647,
                  "token ids that end a sample (besides the EOS ids)"),
    QN_F_STRING_LIST(gen_cfg, stop, "stop", NULL,
                     "stop strings (needs a tokenizer); the text is cut where one begins",
                     .metavar = "STR,..."),
    QN_F_INT(gen_cfg, seed, "seed", "0", 0, 9.2e18,
             "engine seed: requests without their own seed draw from it (then the output "
             "depends on the input order)"),
    QN_F_INT(gen_cfg, n_samples, "n-samples-per-prompt", "1", 1, 65536,
             "samples per request (the GRPO group), sharing the prompt's prefill"),
    QN_ENGINE_FLAGS(gen_cfg, eng),
    QN_F_CHOICE(gen_cfg, quantize, "quantize", "none", "none|fp8",
                "fp8: quantise the projections on load (128x128 e4m3 blocks); an FP8 "
                "checkpoint is always served in FP8"),
    QN_F_STRING(gen_cfg, tokenizer, "tokenizer", NULL,
                "tokenizer folder (default: the model folder when it has one)", .metavar = "DIR"),
    QN_F_STRING(gen_cfg, chat_template, "chat-template", "auto",
                "template for \"messages\" lines: auto (the tokenizer's), glm45, chatml, qwen3, "
                "raw", .metavar = "NAME"),
    QN_F_BOOL(gen_cfg, ignore_eos, "ignore-eos", "false",
              "do not stop at the EOS ids of the config/tokenizer"),
    QN_F_INT(gen_cfg, threads, "threads", "0", 0, 4096, "CPU threads (0: OpenMP default)"),
};
static const qn_flag_table k_gen_table = {
    .command = "generate",
    .usage = "quench generate --model DIR --input IN.jsonl --output OUT.jsonl [flags]",
    .summary =
        "Offline batch generation with the rollout engine. IN lines: {\"tokens\":[...]},\n"
        "{\"text\":\"...\"} (tokenizer needed; encoded as is, no special tokens added) or\n"
        "{\"messages\":[...]} (chat template, generation prompt added), each with an optional\n"
        "\"sampling_params\" object overriding the flags (SGLang's names: temperature, top_p,\n"
        "top_k, min_p, max_new_tokens, stop_token_ids, stop, seed, n, ignore_eos).\n"
        "OUT has one line per non-empty IN line, in order: {\"index\", \"output_ids\",\n"
        "\"output_logprobs\", \"finish_reason\" (stop|length|abort), \"text\" (with a tokenizer;\n"
        "cut where a stop string begins), \"prompt_tokens\", \"cached_tokens\", \"weight_version\",\n"
        "\"time\": {\"first_token_s\", \"total_s\"}}; with n > 1 the per-sample fields move into\n"
        "\"samples\": [...]. A refused line (empty prompt, prompt longer than the context,\n"
        "negative max_new_tokens, top_p outside (0, 1], bad JSON, unknown token id, ...) gives\n"
        "{\"index\", \"error\"} and the others are generated.\n"
        "Exit status: 0 every line generated; 3 some lines refused (the others are in OUT);\n"
        "1 fatal error (model, input or output unusable; OUT is not written); 2 bad flags.\n"
        "A summary (requests, tokens/s, prefix-cache hits, preemptions) goes to stderr.",
    .flags = k_gen_flags,
    .n_flags = QN_FLAGS_COUNT(k_gen_flags),
    .cfg_size = sizeof(gen_cfg)};

void qn_help_generate(FILE *out) { qn_flags_print_help(&k_gen_table, out); }

/* ------------------------------------------------------------ growable text */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_fmt(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_fmt(sbuf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) {
        sb_put(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_put(b, big, (size_t)n);
    free(big);
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t k;
    unsigned min;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) k = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef) k = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4) k = 4, min = 0x10000;
    else return 0;
    if (n < k) return 0;
    unsigned cp = c & (0xff >> (k + 1));
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return k;
}

/* A JSON string; bytes that are not valid UTF-8 (a byte-level tokenizer can
 * end a sample mid-character) become U+FFFD, as Hugging Face's decode does,
 * so the output stays valid JSON. */
static void sb_json_str(sbuf *b, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    sb_put(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sb_put(b, e, 2), i++;
        } else if (c == '\n') {
            sb_put(b, "\\n", 2), i++;
        } else if (c == '\t') {
            sb_put(b, "\\t", 2), i++;
        } else if (c == '\r') {
            sb_put(b, "\\r", 2), i++;
        } else if (c < 0x20 || c == 0x7f) {
            sb_fmt(b, "\\u%04x", c), i++;
        } else {
            size_t k = utf8_len(u + i, n - i);
            if (k == 0) {
                sb_put(b, "\xef\xbf\xbd", 3), i++;
            } else {
                sb_put(b, s + i, k), i += k;
            }
        }
    }
    sb_put(b, "\"", 1);
}

/* ------------------------------------------------------------ input lines */

typedef struct gen_line {
    long line; /* 1-based line number in IN */
    int32_t *prompt;
    int32_t n_prompt;
    qn_sampling_params sp; /* its stop arrays point at stop_ids / stop below */
    int32_t *stop_ids;
    char **stop;
    int has_seed, ignore_eos;
    int32_t n;
    char *error;  /* refused: the reason */
    char *result; /* the output line (without the newline) once finished */
} gen_line;

typedef struct gen_ctx {
    const gen_cfg *cfg;
    const char *path;
    const qn_tokenizer *tok;
    const qn_chat_template *tpl; /* NULL: messages lines are refused */
    const char *tpl_error;       /* why there is no template */
    gen_line *v;
    size_t n, cap;
    int warned_keys;
} gen_ctx;

static void line_free(gen_line *l) {
    free(l->prompt);
    free(l->stop_ids);
    if (l->stop)
        for (int32_t i = 0; i < l->sp.n_stop; i++) free(l->stop[i]);
    free(l->stop);
    free(l->error);
    free(l->result);
}

/* An integer-valued JSON number in [lo, hi]. */
static int json_int(const cJSON *x, double lo, double hi, int64_t *out) {
    if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble) || x->valuedouble != floor(x->valuedouble) ||
        x->valuedouble < lo || x->valuedouble > hi)
        return 0;
    *out = (int64_t)x->valuedouble;
    return 1;
}

static qn_status read_ids(const cJSON *arr, const char *key, int32_t **out, int32_t *n) {
    if (!cJSON_IsArray(arr)) return qn_fail(QN_ERR_FORMAT, "\"%s\" must be an array of token ids", key);
    int sz = cJSON_GetArraySize(arr);
    int32_t *v = malloc((size_t)(sz > 0 ? sz : 1) * sizeof(int32_t));
    if (!v) return qn_fail(QN_ERR_NOMEM, "\"%s\"", key);
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        int64_t x;
        if (!json_int(it, 0, 2147483647.0, &x)) {
            free(v);
            return qn_fail(QN_ERR_RANGE, "\"%s\"[%d] is not a token id (an integer >= 0)", key, i);
        }
        v[i++] = (int32_t)x;
    }
    *out = v;
    *n = sz;
    return QN_OK;
}

/* Copies CLI-level stop ids / strings into l (each line owns its arrays). */
static qn_status set_stops_from_cfg(const gen_cfg *c, gen_line *l) {
    l->sp.n_stop_token_ids = (int32_t)c->stop_token_ids.n;
    l->stop_ids = malloc((c->stop_token_ids.n + 1) * sizeof(int32_t));
    l->stop = calloc(c->stop.n + 1, sizeof(char *));
    if (!l->stop_ids || !l->stop) return qn_fail(QN_ERR_NOMEM, "stop lists");
    for (size_t i = 0; i < c->stop_token_ids.n; i++) l->stop_ids[i] = (int32_t)c->stop_token_ids.v[i];
    for (size_t i = 0; i < c->stop.n; i++) {
        l->stop[i] = strdup(c->stop.v[i]);
        if (!l->stop[i]) return qn_fail(QN_ERR_NOMEM, "stop lists");
        l->sp.n_stop = (int32_t)i + 1;
    }
    return QN_OK;
}

static qn_status parse_sampling(gen_ctx *g, const cJSON *sp, gen_line *l) {
    if (!cJSON_IsObject(sp)) return qn_fail(QN_ERR_FORMAT, "\"sampling_params\" must be an object");
    const cJSON *it;
    cJSON_ArrayForEach(it, sp) {
        const char *k = it->string;
        int64_t x;
        if (strcmp(k, "temperature") == 0 || strcmp(k, "top_p") == 0 || strcmp(k, "min_p") == 0) {
            if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble))
                return qn_fail(QN_ERR_FORMAT, "sampling_params.%s must be a finite number", k);
            float v = (float)it->valuedouble;
            if (k[0] == 't' && k[1] == 'e') l->sp.temperature = v;
            else if (k[0] == 't') l->sp.top_p = v;
            else l->sp.min_p = v;
        } else if (strcmp(k, "top_k") == 0 || strcmp(k, "max_new_tokens") == 0 ||
                   strcmp(k, "n") == 0) {
            if (!json_int(it, -2147483648.0, 2147483647.0, &x))
                return qn_fail(QN_ERR_FORMAT, "sampling_params.%s must be a 32-bit integer", k);
            if (k[0] == 't') l->sp.top_k = (int32_t)x;
            else if (k[0] == 'm') l->sp.max_new_tokens = (int32_t)x;
            else l->n = (int32_t)x;
        } else if (strcmp(k, "seed") == 0) {
            if (!json_int(it, 0, 9007199254740992.0, &x))
                return qn_fail(QN_ERR_FORMAT, "sampling_params.seed must be an integer in "
                               "[0, 2^53]");
            l->sp.seed = (uint64_t)x;
            l->has_seed = 1;
        } else if (strcmp(k, "ignore_eos") == 0) {
            if (!cJSON_IsBool(it))
                return qn_fail(QN_ERR_FORMAT, "sampling_params.ignore_eos must be true or false");
            l->ignore_eos = cJSON_IsTrue(it);
        } else if (strcmp(k, "stop_token_ids") == 0) {
            int32_t *ids = NULL, n = 0;
            if (!cJSON_IsNull(it)) QN_CHECK(read_ids(it, "sampling_params.stop_token_ids", &ids, &n));
            free(l->stop_ids);
            l->stop_ids = ids;
            l->sp.n_stop_token_ids = n;
        } else if (strcmp(k, "stop") == 0) {
            int n = cJSON_IsString(it) ? 1 : cJSON_IsArray(it) ? cJSON_GetArraySize(it) : -1;
            if (cJSON_IsNull(it)) n = 0;
            if (n < 0)
                return qn_fail(QN_ERR_FORMAT, "sampling_params.stop must be a string or an array "
                               "of strings");
            for (int32_t i = 0; i < l->sp.n_stop; i++) free(l->stop[i]);
            free(l->stop);
            l->sp.n_stop = 0;
            l->stop = calloc((size_t)n + 1, sizeof(char *));
            if (!l->stop) return qn_fail(QN_ERR_NOMEM, "sampling_params.stop");
            const cJSON *e = cJSON_IsString(it) ? it : (n > 0 ? it->child : NULL);
            for (int i = 0; i < n; i++, e = e->next) {
                if (!cJSON_IsString(e))
                    return qn_fail(QN_ERR_FORMAT, "sampling_params.stop[%d] is not a string", i);
                l->stop[i] = strdup(e->valuestring);
                if (!l->stop[i]) return qn_fail(QN_ERR_NOMEM, "sampling_params.stop");
                l->sp.n_stop = i + 1;
            }
        } else if (!g->warned_keys) {
            QN_LOG_WARN("%s:%ld: sampling_params.%s is not supported and is ignored (further "
                        "unknown keys are not reported)", g->path, l->line, k);
            g->warned_keys = 1;
        }
    }
    return QN_OK;
}

/* Fills l's prompt and params from one JSON line; on failure qn_last_error()
 * has the reason (the caller turns it into the line's error). */
static qn_status parse_request(gen_ctx *g, const char *text, gen_line *l) {
    const gen_cfg *c = g->cfg;
    qn_status s = QN_OK;
    cJSON *o = cJSON_Parse(text);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return qn_fail(QN_ERR_FORMAT, "not a JSON object");
    }
    const cJSON *toks = cJSON_GetObjectItemCaseSensitive(o, "tokens");
    const cJSON *txt = cJSON_GetObjectItemCaseSensitive(o, "text");
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(o, "messages");
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(o, "sampling_params");
    int forms = (toks != NULL) + (txt != NULL) + (msgs != NULL);
    if (forms != 1) {
        s = qn_fail(QN_ERR_FORMAT, "needs exactly one of \"tokens\", \"text\", \"messages\"");
        goto done;
    }
    if (toks) {
        QN_CHECK_GOTO(read_ids(toks, "tokens", &l->prompt, &l->n_prompt), s, done);
    } else {
        if (!g->tok) {
            s = qn_fail(QN_ERR_INVALID, "\"%s\" needs a tokenizer (--tokenizer DIR, or one in "
                        "the model folder)", txt ? "text" : "messages");
            goto done;
        }
        qn_token_ids ids = {0};
        if (txt) {
            if (!cJSON_IsString(txt)) {
                s = qn_fail(QN_ERR_FORMAT, "\"text\" must be a string");
                goto done;
            }
            s = qn_tokenizer_encode(g->tok, txt->valuestring, strlen(txt->valuestring), NULL, &ids);
        } else if (!g->tpl) {
            s = qn_fail(QN_ERR_UNSUPPORTED, "\"messages\" needs a chat template: %s", g->tpl_error);
        } else {
            qn_chat_opts co = {.add_generation_prompt = true, .enable_thinking = -1};
            s = qn_chat_encode(g->tok, g->tpl, msgs, &co, &ids);
        }
        if (s != QN_OK) {
            qn_token_ids_free(&ids);
            goto done;
        }
        if (ids.n > INT32_MAX) {
            qn_token_ids_free(&ids);
            s = qn_fail(QN_ERR_TOO_LARGE, "prompt of %zu tokens", ids.n);
            goto done;
        }
        l->n_prompt = (int32_t)ids.n;
        l->prompt = ids.ids; /* ownership moves to the line */
        if (!l->prompt) l->prompt = malloc(sizeof(int32_t));
    }
    if (sp) QN_CHECK_GOTO(parse_sampling(g, sp, l), s, done);
done:
    cJSON_Delete(o);
    (void)c;
    return s;
}

static qn_status on_line(const char *text, long line, void *user) {
    gen_ctx *g = user;
    if (g->n == g->cap) {
        size_t cap = g->cap ? 2 * g->cap : 64;
        gen_line *v = realloc(g->v, cap * sizeof *v);
        if (!v) return qn_fail(QN_ERR_NOMEM, "%s:%ld", g->path, line);
        g->v = v, g->cap = cap;
    }
    gen_line *l = &g->v[g->n++];
    memset(l, 0, sizeof *l);
    const gen_cfg *c = g->cfg;
    l->line = line;
    l->sp = qn_sampling_params_default();
    l->sp.temperature = (float)c->temperature;
    l->sp.top_p = (float)c->top_p;
    l->sp.top_k = (int32_t)c->top_k;
    l->sp.min_p = (float)c->min_p;
    l->sp.max_new_tokens = (int32_t)c->max_new_tokens;
    l->n = (int32_t)c->n_samples;
    l->ignore_eos = c->ignore_eos;
    QN_CHECK(set_stops_from_cfg(c, l));
    if (parse_request(g, text, l) != QN_OK) {
        if (qn_last_error()[0] == '\0') qn_fail(QN_ERR_FORMAT, "bad request");
        size_t n = strlen(qn_last_error()) + 64;
        l->error = malloc(n);
        if (!l->error) return qn_fail(QN_ERR_NOMEM, "%s:%ld", g->path, line);
        snprintf(l->error, n, "line %ld: %s", line, qn_last_error());
    }
    l->sp.stop_token_ids = l->stop_ids;
    l->sp.stop = (const char *const *)l->stop;
    return QN_OK;
}

/* ------------------------------------------------------------ output lines */

static void put_sample_fields(sbuf *b, const qn_engine_sample *s, const qn_tokenizer *tok) {
    sb_str(b, "\"output_ids\":[");
    for (int32_t t = 0; t < s->n_out; t++) sb_fmt(b, "%s%d", t ? "," : "", s->ids[t]);
    sb_str(b, "],\"output_logprobs\":[");
    for (int32_t t = 0; t < s->n_out; t++) {
        double lp = (double)s->logprobs[t];
        if (isfinite(lp)) sb_fmt(b, "%s%.9g", t ? "," : "", lp);
        else sb_fmt(b, "%snull", t ? "," : ""); /* JSON has no -inf */
    }
    sb_fmt(b, "],\"finish_reason\":\"%s\"", qn_finish_reason_str(s->finish));
    if (tok) {
        char *text = NULL;
        size_t len = 0;
        /* The same decoding the engine matches stop strings in, so that
         * stop_match_at is an offset into this text. */
        if (qn_tokenizer_decode(tok, s->ids, (size_t)s->n_out, false, &text, &len) == QN_OK) {
            if (s->stop_match_at >= 0 && (size_t)s->stop_match_at <= len)
                len = (size_t)s->stop_match_at;
            /* ill-formed UTF-8 (a character cut between tokens) as Python and the
             * router replace it */
            char *valid = malloc(len * 3 + 1);
            if (valid) {
                size_t vlen = qn_utf8_replace_invalid(text, len, valid);
                sb_str(b, ",\"text\":");
                sb_json_str(b, valid, vlen);
                free(valid);
            }
        }
        free(text);
    }
}

static char *format_output(size_t index, const qn_engine_output *o, const qn_tokenizer *tok,
                           int64_t version) {
    sbuf b = {0};
    sb_fmt(&b, "{\"index\":%zu,", index);
    if (o->n_samples == 1) {
        put_sample_fields(&b, &o->samples[0], tok);
        sb_str(&b, ",");
    } else {
        sb_str(&b, "\"samples\":[");
        for (int32_t i = 0; i < o->n_samples; i++) {
            sb_str(&b, i ? ",{" : "{");
            put_sample_fields(&b, &o->samples[i], tok);
            sb_str(&b, "}");
        }
        sb_str(&b, "],");
    }
    /* The version of the newest token: what the whole output was produced
     * under when weights do not change mid-request (they do not here). */
    for (int32_t i = 0; i < o->n_samples; i++) {
        const qn_engine_sample *s = &o->samples[i];
        if (s->n_out > 0 && s->versions[s->n_out - 1] > version) version = s->versions[s->n_out - 1];
    }
    sb_fmt(&b, "\"prompt_tokens\":%d,\"cached_tokens\":%lld,\"weight_version\":%lld,",
           o->n_prompt, (long long)o->cached_tokens, (long long)version);
    if (o->t_first_token > 0.0)
        sb_fmt(&b, "\"time\":{\"first_token_s\":%.6f,", o->t_first_token - o->t_submit);
    else
        sb_str(&b, "\"time\":{\"first_token_s\":null,");
    sb_fmt(&b, "\"total_s\":%.6f}}", o->t_finish - o->t_submit);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

static char *format_error(size_t index, const char *why) {
    sbuf b = {0};
    sb_fmt(&b, "{\"index\":%zu,\"error\":", index);
    sb_json_str(&b, why, strlen(why));
    sb_str(&b, "}");
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

static qn_status write_output(const char *path, const gen_ctx *g) {
    /* write to a temporary name and rename, so a failed run leaves no
     * half-written OUT behind */
    size_t n = strlen(path) + 16;
    char *tmp = malloc(n);
    if (!tmp) return qn_fail(QN_ERR_NOMEM, "%s", path);
    snprintf(tmp, n, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(tmp);
        return qn_fail(QN_ERR_IO, "%s: cannot create", path);
    }
    for (size_t i = 0; i < g->n; i++) {
        fputs(g->v[i].result, f);
        fputc('\n', f);
    }
    int bad = ferror(f);
    if (fclose(f) != 0 || bad || rename(tmp, path) != 0) {
        remove(tmp);
        free(tmp);
        return qn_fail(QN_ERR_IO, "%s: write failed", path);
    }
    free(tmp);
    return QN_OK;
}

/* ------------------------------------------------------------ setup */

static int run_generate(const gen_cfg *c) {
    int rc = QN_EXIT_FAILURE;
    qn_served_model sm = {0};
    qn_engine *e = NULL;
    qn_chat_template tpl;
    gen_ctx g = {.cfg = c, .path = c->input};
    qn_status s;

    if (c->threads > 0) omp_set_num_threads((int)c->threads);
    double t_load = qn_now_s();
    QN_CHECK_GOTO(qn_served_model_load(&sm, c->model, c->tokenizer, c->quantize == 1), s, fail);
    const qn_tokenizer *tok = sm.tok;
    if (tok) {
        const char *name = strcmp(c->chat_template, "auto") == 0 ? NULL : c->chat_template;
        if (qn_chat_template_for(tok, name, &tpl) == QN_OK) {
            g.tpl = &tpl;
        } else {
            g.tpl_error = strdup(qn_last_error());
        }
    } else {
        g.tpl_error = strdup("no tokenizer");
    }
    g.tok = tok;
    QN_LOG_INFO("generate: model %s (%s weights%s), tokenizer %s, %d eos ids, loaded in %.2f s",
                c->model, sm.f8 ? "fp8" : "fp32", sm.fp8_checkpoint ? ", FP8 checkpoint" : "",
                sm.tok_dir ? sm.tok_dir : "none", sm.n_eos, qn_now_s() - t_load);

    qn_engine_params ep = qn_served_engine_params(&sm, &c->eng, (uint64_t)c->seed);
    QN_CHECK_GOTO(qn_engine_create(&e, &sm.m, sm.f8, &ep), s, fail);

    QN_CHECK_GOTO(qn_jsonl_foreach(c->input, on_line, &g), s, fail);

    size_t n_refused = 0;
    double t0 = qn_now_s();
    for (size_t i = 0; i < g.n; i++) {
        gen_line *l = &g.v[i];
        if (!l->error) {
            qn_engine_request r = {.prompt = l->prompt, .n_prompt = l->n_prompt, .params = l->sp,
                                   .has_seed = l->has_seed, .ignore_eos = l->ignore_eos,
                                   .n = l->n, .user = (void *)(uintptr_t)i};
            uint64_t id;
            qn_clear_error();
            if (qn_engine_submit(e, &r, &id) != QN_OK) {
                size_t n = strlen(qn_last_error()) + 64;
                l->error = malloc(n);
                if (!l->error) {
                    s = qn_fail(QN_ERR_NOMEM, "refusal message");
                    goto fail;
                }
                snprintf(l->error, n, "line %ld: %s", l->line, qn_last_error());
            }
        }
        if (l->error) {
            n_refused++;
            QN_LOG_WARN("%s: refused %s", c->input, l->error);
            l->result = format_error(i, l->error);
            if (!l->result) {
                s = qn_fail(QN_ERR_NOMEM, "output line");
                goto fail;
            }
        }
    }

    /* Step until every submitted request came out. A step that computes
     * nothing and finishes nothing while requests remain is an engine bug;
     * stop rather than spin. */
    int64_t idle = 0, total_tokens = 0;
    double t_report = t0;
    size_t n_done = n_refused;
    while (qn_engine_busy(e)) {
        int64_t nt = 0;
        QN_CHECK_GOTO(qn_engine_step(e, &nt), s, fail);
        total_tokens += nt;
        int got = 0;
        qn_engine_output o;
        while (qn_engine_next_finished(e, &o)) {
            size_t i = (size_t)(uintptr_t)o.user;
            g.v[i].result = format_output(i, &o, tok, qn_engine_weight_version(e));
            if (!g.v[i].result) {
                s = qn_fail(QN_ERR_NOMEM, "output line");
                goto fail;
            }
            got = 1;
            n_done++;
        }
        idle = (nt == 0 && !got) ? idle + 1 : 0;
        if (idle > 1000) {
            s = qn_fail(QN_ERR_INTERNAL, "the engine stopped making progress with %zu requests "
                        "unfinished", g.n - n_done);
            goto fail;
        }
        if (qn_now_s() - t_report > 10.0) {
            t_report = qn_now_s();
            QN_LOG_INFO("generate: %zu/%zu requests done, %lld tokens computed", n_done, g.n,
                        (long long)total_tokens);
        }
    }
    double dt = qn_now_s() - t0;
    for (size_t i = 0; i < g.n; i++) {
        if (!g.v[i].result) {
            s = qn_fail(QN_ERR_INTERNAL, "line %ld: the engine returned no output",
                        g.v[i].line);
            goto fail;
        }
    }
    QN_CHECK_GOTO(write_output(c->output, &g), s, fail);

    qn_engine_stats st;
    qn_engine_get_stats(e, &st);
    fprintf(stderr,
            "generate: %zu requests (%zu refused), %lld tokens generated in %.3f s: %.1f "
            "tokens/s; %lld prefill and %lld decode tokens computed in %lld steps; "
            "prefix-hit tokens %lld, forks %lld, preemptions %lld\n",
            g.n, n_refused, (long long)st.generated_tokens, dt,
            dt > 0 ? (double)st.generated_tokens / dt : 0.0, (long long)st.prefill_tokens,
            (long long)st.decode_tokens, (long long)st.steps, (long long)st.prefix_hit_tokens,
            (long long)st.forks, (long long)st.preemptions);
    rc = n_refused > 0 ? GEN_EXIT_REFUSED : QN_EXIT_OK;
    goto done;
fail:
    (void)s;
    fprintf(stderr, "quench generate: %s\n", qn_last_error());
    rc = QN_EXIT_FAILURE;
done:
    for (size_t i = 0; i < g.n; i++) line_free(&g.v[i]);
    free(g.v);
    free((char *)g.tpl_error);
    qn_engine_free(e);
    qn_served_model_free(&sm);
    return rc;
}

int qn_cmd_generate(int argc, char **argv) {
    gen_cfg cfg;
    qn_flags_parsed p;
    if (qn_flags_parse(&k_gen_table, &cfg, argc, argv, &p) != QN_OK) {
        fprintf(stderr, "quench generate: %s\n", qn_last_error());
        return QN_EXIT_USAGE;
    }
    int rc;
    if (p.print_config) {
        qn_flags_dump(&k_gen_table, &cfg, &p, stdout);
        rc = QN_EXIT_OK;
        goto done;
    }
    /* The flags are every line's defaults: a bad one would refuse every line,
     * so it is a usage error here (the vocabulary is checked per line). */
    qn_sampling_params sp = qn_sampling_params_default();
    sp.temperature = (float)cfg.temperature;
    sp.top_p = (float)cfg.top_p;
    sp.top_k = (int32_t)cfg.top_k;
    sp.min_p = (float)cfg.min_p;
    sp.max_new_tokens = (int32_t)cfg.max_new_tokens;
    if (qn_sampling_params_validate(&sp, INT32_MAX) != QN_OK) {
        fprintf(stderr, "quench generate: %s\n", qn_last_error());
        rc = QN_EXIT_USAGE;
        goto done;
    }
    qn_flags_log(&k_gen_table, &cfg, &p);
    rc = run_generate(&cfg);
done:
    qn_flags_parsed_free(&p);
    qn_flags_free(&k_gen_table, &cfg);
    return rc;
}
