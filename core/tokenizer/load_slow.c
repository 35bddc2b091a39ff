/* load_slow.c — the two loaders that need a family's pre-tokenizer: the
 * "slow" GPT-2/Qwen2 pair vocab.json + merges.txt, and tiktoken ranks files
 * (tokenizer.model of GLM-4 / GLM-4.5).
 *
 * Tiktoken merges are derived as transformers' TikTokenConverter does: for
 * every token (in rank order) each split into two pieces that are both
 * tokens gives a merge; a token's merges are ordered by the ranks of (left,
 * right), and the whole list by the rank of the merged token. Leaves out:
 * tiktoken files with a pattern other than the family's (the ranks file does
 * not carry its regex). */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/log.h"
#include "core/tokenizer/tok_internal.h"

static const char *config_class(const cJSON *config) {
    const cJSON *c = config ? cJSON_GetObjectItemCaseSensitive(config, "tokenizer_class") : NULL;
    return cJSON_IsString(c) ? c->valuestring : "";
}

/* Finishes a slow/tiktoken tokenizer: config, family defaults, indexes. */
static qn_status finish_family(qn_tokenizer *t, const cJSON *config, const char *name,
                               bool glm) {
    qn_status s = qn_tok_apply_config(t, config, name);
    if (s != QN_OK) return s;
    QN_CHECK(qn_tok_finish(t, name));
    QN_CHECK(qn_tok_apply_config_names(t, config));
    if (glm) {
        int32_t g = qn_tok_lookup_token(t, "[gMASK]"), sop = qn_tok_lookup_token(t, "<sop>");
        if (g >= 0 && sop >= 0) {
            t->prefix[0] = g;
            t->prefix[1] = sop;
            t->n_prefix = 2;
        }
        if (t->special.eos < 0) t->special.eos = qn_tok_lookup_token(t, "<|endoftext|>");
    }
    return QN_OK;
}

qn_status qn_tokenizer_parse_slow(const char *vocab, size_t vocab_len, const char *merges,
                                  size_t merges_len, const char *name, const cJSON *config,
                                  qn_tokenizer **out) {
    *out = NULL;
    qn_tokenizer *t;
    QN_CHECK(qn_tok_new(&t));
    t->format = QN_TOKENIZER_FORMAT_SLOW;
    qn_status st = QN_OK;
    cJSON *vj = cJSON_ParseWithLength(vocab, vocab_len);
    if (!cJSON_IsObject(vj)) {
        st = qn_fail(QN_ERR_FORMAT, "%s: vocab.json is not a JSON object", name);
        goto fail;
    }
    QN_CHECK_GOTO(qn_tok_load_vocab_object(t, vj, name, "vocab.json"), st, fail);
    /* merges.txt: optional "#version" line, then "left right" per line */
    size_t line_no = 0;
    for (size_t i = 0; i < merges_len;) {
        size_t j = i;
        while (j < merges_len && merges[j] != '\n') j++;
        size_t a = i, b = j;
        i = j + 1;
        line_no++;
        while (b > a && (merges[b - 1] == '\r' || merges[b - 1] == ' ')) b--;
        while (a < b && merges[a] == ' ') a++;
        if (a == b) continue;
        if (line_no == 1 && b - a >= 9 && memcmp(merges + a, "#version:", 9) == 0) continue;
        size_t sp = a;
        while (sp < b && merges[sp] != ' ') sp++;
        size_t r0 = sp;
        while (r0 < b && merges[r0] == ' ') r0++;
        if (sp == b || r0 == b || memchr(merges + r0, ' ', b - r0)) {
            st = qn_fail(QN_ERR_FORMAT, "%s: merges.txt line %zu: expected two tokens separated "
                         "by a space", name, line_no);
            goto fail;
        }
        int32_t ids[2];
        const char *parts[2] = {merges + a, merges + r0};
        size_t lens[2] = {sp - a, b - r0};
        for (int k = 0; k < 2; k++) {
            char *ub;
            size_t ul;
            QN_CHECK_GOTO(qn_tok_unmap_bytes(parts[k], lens[k], &ub, &ul), st, fail);
            ids[k] = qn_tok_vocab_find(t, ub, ul);
            free(ub);
            if (ids[k] < 0) {
                st = qn_fail(QN_ERR_FORMAT, "%s: merges.txt line %zu: '%.*s' is not in the "
                             "vocabulary", name, line_no, (int)lens[k], parts[k]);
                goto fail;
            }
        }
        st = qn_tok_add_merge(t, ids[0], ids[1]);
        if (st != QN_OK) {
            st = qn_fail(st, "%s: merges.txt line %zu: %s", name, line_no, qn_last_error());
            goto fail;
        }
    }
    const char *cls = config_class(config);
    if (strcmp(cls, "GPT2Tokenizer") == 0) {
        QN_CHECK_GOTO(qn_tok_add_regex(t, QN_TOK_RE_GPT2, name), st, fail);
    } else {
        /* Qwen2Tokenizer and unknown classes: Qwen2's regex and NFC */
        QN_CHECK_GOTO(qn_tok_add_regex(t, QN_TOK_RE_QWEN2, name), st, fail);
        t->norm = QN_TOK_NORM_NFC;
    }
    QN_CHECK_GOTO(finish_family(t, config, name, false), st, fail);
    cJSON_Delete(vj);
    *out = t;
    return QN_OK;
fail:
    cJSON_Delete(vj);
    qn_tokenizer_free(t);
    return st;
}

static int b64_val(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Decodes standard base64 with padding; returns the length or -1. */
static long b64_decode(const char *s, size_t n, uint8_t *out) {
    if (n == 0 || n % 4) return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        for (int j = 0; j < 4; j++) {
            char c = s[i + j];
            v[j] = c == '=' ? -2 : b64_val((unsigned char)c);
            if (v[j] == -1) return -1;
        }
        if (v[0] < 0 || v[1] < 0) return -1;
        bool last = i + 4 == n;
        if ((v[2] == -2 || v[3] == -2) && !last) return -1;
        if (v[2] == -2 && v[3] != -2) return -1;
        out[k++] = (uint8_t)((v[0] << 2) | (v[1] >> 4));
        if (v[2] >= 0) out[k++] = (uint8_t)(((v[1] & 15) << 4) | (v[2] >> 2));
        if (v[3] >= 0) out[k++] = (uint8_t)(((v[2] & 3) << 6) | v[3]);
    }
    return (long)k;
}

typedef struct split_cand {
    int32_t l, r;
} split_cand;

static int cmp_cand(const void *a, const void *b) {
    const split_cand *x = a, *y = b;
    if (x->l != y->l) return x->l < y->l ? -1 : 1;
    return x->r < y->r ? -1 : (x->r > y->r);
}

qn_status qn_tokenizer_parse_tiktoken(const char *ranks, size_t len, const char *name,
                                      const cJSON *config, qn_tokenizer **out) {
    *out = NULL;
    qn_tokenizer *t;
    QN_CHECK(qn_tok_new(&t));
    t->format = QN_TOKENIZER_FORMAT_TIKTOKEN;
    qn_status st = QN_OK;
    uint8_t *buf = NULL;
    size_t buf_cap = 0;
    size_t line_no = 0;
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && ranks[j] != '\n') j++;
        size_t a = i, b = j;
        i = j + 1;
        line_no++;
        if (b > a && ranks[b - 1] == '\r') b--;
        if (a == b) continue;
        size_t sp = a;
        while (sp < b && ranks[sp] != ' ') sp++;
        if (sp == b || sp == a) {
            st = qn_fail(QN_ERR_FORMAT, "%s: line %zu: expected '<base64 token> <rank>'", name,
                         line_no);
            goto fail;
        }
        char *end;
        char num[16];
        size_t nl = b - sp - 1;
        if (nl == 0 || nl >= sizeof num) {
            st = qn_fail(QN_ERR_FORMAT, "%s: line %zu: bad rank", name, line_no);
            goto fail;
        }
        memcpy(num, ranks + sp + 1, nl);
        num[nl] = 0;
        long rank = strtol(num, &end, 10);
        if (*end || rank < 0 || rank > QN_TOK_MAX_ID) {
            st = qn_fail(QN_ERR_FORMAT, "%s: line %zu: bad rank '%s'", name, line_no, num);
            goto fail;
        }
        size_t need = (sp - a) / 4 * 3 + 3;
        if (need > buf_cap) {
            buf_cap = need * 2;
            uint8_t *nb = realloc(buf, buf_cap);
            if (!nb) {
                st = qn_fail(QN_ERR_NOMEM, "%s: out of memory", name);
                goto fail;
            }
            buf = nb;
        }
        long bl = b64_decode(ranks + a, sp - a, buf);
        if (bl <= 0) {
            st = qn_fail(QN_ERR_FORMAT, "%s: line %zu: invalid base64 token", name, line_no);
            goto fail;
        }
        st = qn_tok_set_vocab(t, (int32_t)rank, (const char *)buf, (size_t)bl);
        if (st != QN_OK) {
            st = qn_fail(st, "%s: line %zu: %s", name, line_no, qn_last_error());
            goto fail;
        }
    }
    /* derive merges in rank order */
    split_cand *cand = NULL;
    size_t cand_cap = 0;
    for (int32_t id = 0; id < t->n_ids; id++) {
        if (t->tok_len[id] == UINT32_MAX || t->tok_len[id] < 2) continue;
        size_t n = t->tok_len[id];
        const char *tb = t->blob + t->tok_off[id];
        if (n - 1 > cand_cap) {
            cand_cap = (n - 1) * 2;
            split_cand *nc = realloc(cand, cand_cap * sizeof *nc);
            if (!nc) {
                free(cand);
                st = qn_fail(QN_ERR_NOMEM, "%s: out of memory", name);
                goto fail;
            }
            cand = nc;
        }
        size_t nc = 0;
        for (size_t k = 1; k < n; k++) {
            int32_t l = qn_tok_vocab_find(t, tb, k), r = qn_tok_vocab_find(t, tb + k, n - k);
            if (l >= 0 && r >= 0) cand[nc++] = (split_cand){l, r};
        }
        qsort(cand, nc, sizeof *cand, cmp_cand);
        for (size_t k = 0; k < nc; k++) {
            st = qn_tok_add_merge(t, cand[k].l, cand[k].r);
            if (st != QN_OK) {
                free(cand);
                st = qn_fail(st, "%s: %s", name, qn_last_error());
                goto fail;
            }
        }
    }
    free(cand);
    QN_CHECK_GOTO(qn_tok_add_regex(t, QN_TOK_RE_GLM4, name), st, fail);
    const char *cls = config_class(config);
    if (cls[0] && !strstr(cls, "GLM") && !strstr(cls, "Glm") && strncmp(cls, "PreTrainedTokenizer", 19) != 0)
        QN_LOG_WARN("%s: tokenizer_class '%s' with a ranks file; using GLM-4's pre-tokenizer regex",
                    name, cls);
    QN_CHECK_GOTO(finish_family(t, config, name, true), st, fail);
    free(buf);
    *out = t;
    return QN_OK;
fail:
    free(buf);
    qn_tokenizer_free(t);
    return st;
}

static qn_status load_config(const char *config_path, cJSON **out) {
    *out = NULL;
    if (!config_path) return QN_OK;
    char *data;
    size_t len;
    QN_CHECK(qn_tok_read_file(config_path, &data, &len));
    cJSON *c = cJSON_ParseWithLength(data, len);
    free(data);
    if (!c) return qn_fail(QN_ERR_FORMAT, "%s: not valid JSON", config_path);
    *out = c;
    return QN_OK;
}

qn_status qn_tokenizer_load_slow(const char *vocab_path, const char *merges_path,
                                 const char *config_path, qn_tokenizer **out) {
    *out = NULL;
    cJSON *config;
    QN_CHECK(load_config(config_path, &config));
    char *v = NULL, *m = NULL;
    size_t vl, ml;
    qn_status st;
    QN_CHECK_GOTO(qn_tok_read_file(vocab_path, &v, &vl), st, done);
    QN_CHECK_GOTO(qn_tok_read_file(merges_path, &m, &ml), st, done);
    st = qn_tokenizer_parse_slow(v, vl, m, ml, vocab_path, config, out);
done:
    free(v);
    free(m);
    cJSON_Delete(config);
    return st;
}

qn_status qn_tokenizer_load_tiktoken(const char *model_path, const char *config_path,
                                     qn_tokenizer **out) {
    *out = NULL;
    cJSON *config;
    QN_CHECK(load_config(config_path, &config));
    char *d = NULL;
    size_t dl;
    qn_status st;
    QN_CHECK_GOTO(qn_tok_read_file(model_path, &d, &dl), st, done);
    st = qn_tokenizer_parse_tiktoken(d, dl, model_path, config, out);
done:
    free(d);
    cJSON_Delete(config);
    return st;
}
