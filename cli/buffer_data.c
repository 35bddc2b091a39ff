/* buffer_data.c — loading the buffer's JSONL prompts and mapping the data
 * cursor to dataset lines (contract in buffer_data.h). Leaves out: images
 * and other multimodal inputs, tools in chat prompts. */
#include "cli/buffer_data.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/io/jsonl.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/tokenizer/tokenizer.h"

typedef struct load_ctx {
    qn_bd *d;
    const qn_bd_opts *o;
    size_t cap;
    char reason[512];
} load_ctx;

static char *dup_str(const char *s) {
    size_t n = strlen(s);
    char *o = malloc(n + 1);
    if (o) memcpy(o, s, n + 1);
    return o;
}

static void prompt_free(qn_bd_prompt *p) {
    free(p->tokens);
    free(p->text);
    free(p->label);
    free(p->metadata);
    memset(p, 0, sizeof *p);
}

/* Fills p from one parsed line; on a data problem writes the reason and
 * returns false (p partly filled: the caller frees it). */
static bool parse_line(load_ctx *c, const cJSON *obj, qn_bd_prompt *p) {
    const qn_bd_opts *o = c->o;
    if (!cJSON_IsObject(obj)) {
        snprintf(c->reason, sizeof c->reason, "not a JSON object");
        return false;
    }
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(obj, o->input_key);
    if (!in || cJSON_IsNull(in)) {
        snprintf(c->reason, sizeof c->reason, "no \"%s\" (--input-key)", o->input_key);
        return false;
    }
    char *text = NULL;
    if (cJSON_IsArray(in) && cJSON_GetArraySize(in) > 0 && cJSON_IsNumber(in->child)) {
        int n = cJSON_GetArraySize(in);
        p->tokens = malloc((size_t)n * sizeof *p->tokens);
        if (!p->tokens) {
            snprintf(c->reason, sizeof c->reason, "out of memory");
            return false;
        }
        int32_t vocab = o->tok ? qn_tokenizer_vocab_size(o->tok) : INT32_MAX;
        int i = 0;
        for (const cJSON *e = in->child; e; e = e->next, i++) {
            double v = cJSON_IsNumber(e) ? e->valuedouble : -1.0;
            if (!cJSON_IsNumber(e) || v != (double)(int64_t)v || v < 0 || v >= (double)vocab) {
                snprintf(c->reason, sizeof c->reason,
                         "\"%s\"[%d]: expected a token id in [0, %" PRId32 ")", o->input_key, i,
                         vocab);
                return false;
            }
            p->tokens[i] = (int32_t)v;
        }
        p->n_tokens = (size_t)n;
        if (o->tok) {
            size_t len;
            if (qn_tokenizer_decode_text(o->tok, p->tokens, p->n_tokens, false, &p->text, &len) !=
                QN_OK) {
                snprintf(c->reason, sizeof c->reason, "%s", qn_last_error());
                return false;
            }
        }
    } else if (cJSON_IsString(in) || cJSON_IsArray(in)) {
        if (!o->tok) {
            snprintf(c->reason, sizeof c->reason,
                     "\"%s\" is text or messages: give --tokenizer (or token id arrays)",
                     o->input_key);
            return false;
        }
        if (cJSON_IsArray(in) && !o->apply_chat_template) {
            snprintf(c->reason, sizeof c->reason,
                     "\"%s\" is a list of messages: give --apply-chat-template", o->input_key);
            return false;
        }
        if (o->apply_chat_template) {
            cJSON *msgs = NULL;
            if (cJSON_IsString(in)) {
                msgs = cJSON_CreateArray();
                cJSON *m = cJSON_CreateObject();
                cJSON_AddStringToObject(m, "role", "user");
                cJSON_AddStringToObject(m, "content", in->valuestring);
                cJSON_AddItemToArray(msgs, m);
            }
            qn_chat_template tpl;
            qn_chat_opts co = {.add_generation_prompt = true, .enable_thinking = -1};
            size_t len;
            qn_status st = qn_chat_template_for(o->tok, NULL, &tpl);
            if (st == QN_OK) st = qn_chat_render(&tpl, msgs ? msgs : in, &co, &text, &len);
            cJSON_Delete(msgs);
            if (st != QN_OK) {
                snprintf(c->reason, sizeof c->reason, "chat template: %s", qn_last_error());
                return false;
            }
        } else {
            text = dup_str(in->valuestring);
        }
        if (!text) {
            snprintf(c->reason, sizeof c->reason, "out of memory");
            return false;
        }
        p->text = text;
        qn_token_ids ids = {0};
        if (qn_tokenizer_encode(o->tok, text, strlen(text), NULL, &ids) != QN_OK) {
            qn_token_ids_free(&ids);
            snprintf(c->reason, sizeof c->reason, "tokenizing: %s", qn_last_error());
            return false;
        }
        p->tokens = ids.ids;
        p->n_tokens = ids.n;
    } else {
        snprintf(c->reason, sizeof c->reason,
                 "\"%s\": expected text, a token id array or chat messages", o->input_key);
        return false;
    }
    if (p->n_tokens == 0) {
        snprintf(c->reason, sizeof c->reason, "\"%s\": empty prompt", o->input_key);
        return false;
    }
    if (!p->text) p->text = dup_str("");
    const cJSON *lab = o->label_key ? cJSON_GetObjectItemCaseSensitive(obj, o->label_key) : NULL;
    if (!lab || cJSON_IsNull(lab))
        p->label = dup_str("");
    else if (cJSON_IsString(lab))
        p->label = dup_str(lab->valuestring);
    else
        p->label = cJSON_PrintUnformatted(lab);
    const cJSON *md =
        o->metadata_key ? cJSON_GetObjectItemCaseSensitive(obj, o->metadata_key) : NULL;
    if (md && !cJSON_IsNull(md) && !cJSON_IsObject(md)) {
        snprintf(c->reason, sizeof c->reason, "\"%s\" (--metadata-key): expected an object",
                 o->metadata_key);
        return false;
    }
    p->metadata = (md && !cJSON_IsNull(md)) ? cJSON_PrintUnformatted(md) : dup_str("{}");
    if (!p->text || !p->label || !p->metadata) {
        snprintf(c->reason, sizeof c->reason, "out of memory");
        return false;
    }
    return true;
}

static qn_status on_line(const char *text, long line, void *user) {
    load_ctx *c = user;
    qn_bd *d = c->d;
    if (d->n == c->cap) {
        size_t nc = c->cap ? 2 * c->cap : 256;
        qn_bd_prompt *nv = realloc(d->v, nc * sizeof *nv);
        if (!nv) return qn_fail(QN_ERR_NOMEM, "%s: out of memory at line %ld", c->o->path, line);
        d->v = nv;
        c->cap = nc;
    }
    qn_bd_prompt *p = &d->v[d->n];
    memset(p, 0, sizeof *p);
    p->line = line;
    cJSON *obj = cJSON_Parse(text);
    bool ok;
    if (!obj) {
        snprintf(c->reason, sizeof c->reason, "not valid JSON");
        ok = false;
    } else {
        ok = parse_line(c, obj, p);
    }
    cJSON_Delete(obj);
    if (ok) {
        d->n++;
        return QN_OK;
    }
    prompt_free(p);
    if (!c->o->skip_bad)
        return qn_fail(QN_ERR_FORMAT, "%s:%ld: %s (--on-bad-data fail)", c->o->path, line,
                       c->reason);
    d->n_bad++;
    QN_LOG_WARN("%s: %s:%ld: %s; line skipped (--on-bad-data skip)",
                c->o->who ? c->o->who : "buffer", c->o->path, line, c->reason);
    return QN_OK;
}

qn_status qn_bd_load(qn_bd *d, const qn_bd_opts *o) {
    memset(d, 0, sizeof *d);
    d->shuffle = o->shuffle;
    d->seed = o->seed;
    load_ctx c = {.d = d, .o = o};
    qn_status st = qn_jsonl_foreach(o->path, on_line, &c);
    if (st == QN_OK && d->n == 0)
        st = qn_fail(QN_ERR_FORMAT, "%s: no usable prompt (%zu bad lines)", o->path, d->n_bad);
    if (st == QN_OK && d->n > UINT32_MAX)
        st = qn_fail(QN_ERR_TOO_LARGE, "%s: too many lines", o->path);
    if (st != QN_OK) qn_bd_free(d);
    return st;
}

qn_status qn_bd_open(qn_bd *d, const qn_bd_opts *o, const char *tokenizer_dir,
                     qn_tokenizer **tok) {
    if (tokenizer_dir) QN_CHECK(qn_tokenizer_load(tokenizer_dir, tok));
    if (o->apply_chat_template && !*tok)
        return qn_fail(QN_ERR_INVALID, "--apply-chat-template needs --tokenizer");
    qn_bd_opts with_tok = *o;
    with_tok.tok = *tok;
    QN_CHECK(qn_bd_load(d, &with_tok));
    QN_LOG_INFO("%s: %s: %zu prompts (%zu bad lines skipped)", o->who ? o->who : "buffer",
                o->path, d->n, d->n_bad);
    return QN_OK;
}

qn_bd_opts qn_bd_flags_opts(const qn_bd_flags *f, const char *path, const char *who) {
    return (qn_bd_opts){.path = path,
                        .input_key = f->input_key,
                        .label_key = f->label_key,
                        .apply_chat_template = f->apply_chat_template,
                        .skip_bad = f->on_bad_data == 0,
                        .who = who};
}

void qn_bd_free(qn_bd *d) {
    if (!d) return;
    for (size_t i = 0; i < d->n; i++)
        prompt_free(&d->v[i]);
    free(d->v);
    free(d->perm);
    memset(d, 0, sizeof *d);
}

size_t qn_bd_index(qn_bd *d, uint64_t c) {
    uint64_t epoch = c / d->n;
    size_t pos = (size_t)(c % d->n);
    if (!d->shuffle) return pos;
    if (!d->perm || d->perm_epoch != epoch) {
        if (!d->perm) {
            d->perm = malloc(d->n * sizeof *d->perm);
            if (!d->perm) return pos; /* out of memory: unshuffled rather than wrong */
        }
        for (size_t i = 0; i < d->n; i++)
            d->perm[i] = (uint32_t)i;
        /* Fisher-Yates from a counter-based stream: the order of an epoch depends only
         * on (seed, epoch), so a restarted buffer draws the same order */
        for (size_t i = d->n - 1; i > 0; i--) {
            uint64_t r = ((uint64_t)qn_rng_u32(d->seed, 0x5348554655ull + epoch, 2 * i) << 32) |
                         qn_rng_u32(d->seed, 0x5348554655ull + epoch, 2 * i + 1);
            size_t j = (size_t)(r % (i + 1));
            uint32_t t = d->perm[i];
            d->perm[i] = d->perm[j];
            d->perm[j] = t;
        }
        d->perm_epoch = epoch;
    }
    return d->perm[pos];
}
