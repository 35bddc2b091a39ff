/* load_json.c — Hugging Face tokenizer.json (read and write) and the
 * directory loader that picks one of the three forms.
 *
 * Read: model BPE (vocab, merges as "a b" strings or [a, b] pairs,
 * ignore_merges), normalizer NFC/NFD/NFKC/NFKD (alone or in a Sequence),
 * pre_tokenizer ByteLevel / Split(Isolated) / Sequence of them, added_tokens,
 * post_processor TemplateProcessing (single sequence) for add_special.
 * Leaves out (QN_ERR_UNSUPPORTED with the component named): other model
 * types, byte_fallback, dropout, subword prefixes, other normalizers and
 * pre-tokenizers (Metaspace, Digits, Whitespace, ...), Split behaviours
 * other than Isolated, inverted Splits. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "core/tokenizer/tok_internal.h"

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool jbool(const cJSON *o, const char *k, bool dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

static qn_status parse_normalizer(qn_tokenizer *t, const cJSON *n, const char *name) {
    if (!n || cJSON_IsNull(n)) return QN_OK;
    const char *type = jstr(n, "type");
    if (!type) return qn_fail(QN_ERR_FORMAT, "%s: normalizer has no type", name);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        const cJSON *e;
        cJSON_ArrayForEach(e, list) QN_CHECK(parse_normalizer(t, e, name));
        return QN_OK;
    }
    qn_tok_norm k = !strcmp(type, "NFC")    ? QN_TOK_NORM_NFC
                    : !strcmp(type, "NFD")  ? QN_TOK_NORM_NFD
                    : !strcmp(type, "NFKC") ? QN_TOK_NORM_NFKC
                    : !strcmp(type, "NFKD") ? QN_TOK_NORM_NFKD
                                            : QN_TOK_NORM_NONE;
    if (k == QN_TOK_NORM_NONE)
        return qn_fail(QN_ERR_UNSUPPORTED, "%s: normalizer '%s' is not supported", name, type);
    if (t->norm != QN_TOK_NORM_NONE && t->norm != k)
        return qn_fail(QN_ERR_UNSUPPORTED, "%s: more than one Unicode normalizer", name);
    t->norm = k;
    return QN_OK;
}

/* Escapes a literal for PCRE2. */
static char *regex_quote(const char *s) {
    size_t n = strlen(s);
    char *o = malloc(n * 2 + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (strchr("\\^$.|?*+()[]{}", s[i])) o[k++] = '\\';
        o[k++] = s[i];
    }
    o[k] = 0;
    return o;
}

static qn_status parse_pretok(qn_tokenizer *t, const cJSON *p, const char *name, bool *byte_level) {
    if (!p || cJSON_IsNull(p)) return QN_OK;
    const char *type = jstr(p, "type");
    if (!type) return qn_fail(QN_ERR_FORMAT, "%s: pre_tokenizer has no type", name);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        const cJSON *e;
        cJSON_ArrayForEach(e, list) QN_CHECK(parse_pretok(t, e, name, byte_level));
        return QN_OK;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        *byte_level = true;
        if (jbool(p, "add_prefix_space", true)) t->add_prefix_space = true;
        if (jbool(p, "use_regex", true)) QN_CHECK(qn_tok_add_regex(t, QN_TOK_RE_GPT2, name));
        return QN_OK;
    }
    if (strcmp(type, "Split") == 0) {
        const char *beh = jstr(p, "behavior");
        if (!beh || strcmp(beh, "Isolated") != 0)
            return qn_fail(QN_ERR_UNSUPPORTED, "%s: Split behavior '%s' is not supported (only "
                           "Isolated)", name, beh ? beh : "(none)");
        if (jbool(p, "invert", false))
            return qn_fail(QN_ERR_UNSUPPORTED, "%s: inverted Split is not supported", name);
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const char *re = jstr(pat, "Regex");
        if (re) return qn_tok_add_regex(t, re, name);
        const char *lit = jstr(pat, "String");
        if (!lit) return qn_fail(QN_ERR_FORMAT, "%s: Split has no Regex or String pattern", name);
        char *q = regex_quote(lit);
        if (!q) return qn_fail(QN_ERR_NOMEM, "%s: out of memory", name);
        qn_status s = qn_tok_add_regex(t, q, name);
        free(q);
        return s;
    }
    return qn_fail(QN_ERR_UNSUPPORTED, "%s: pre_tokenizer '%s' is not supported", name, type);
}

static qn_status special_ids_of(const qn_tokenizer *t, const cJSON *specials, const char *tok,
                                int32_t *dst, int *n, const char *name) {
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(specials, tok);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(sp, "ids");
    const cJSON *e;
    if (!cJSON_IsArray(ids)) {
        int32_t id = qn_tok_lookup_token(t, tok);
        if (id < 0) return qn_fail(QN_ERR_FORMAT, "%s: post_processor names unknown token '%s'",
                                   name, tok);
        if (*n >= QN_TOK_MAX_AFFIX) return qn_fail(QN_ERR_UNSUPPORTED, "%s: too many template "
                                                   "tokens", name);
        dst[(*n)++] = id;
        return QN_OK;
    }
    cJSON_ArrayForEach(e, ids) {
        if (!cJSON_IsNumber(e) || *n >= QN_TOK_MAX_AFFIX)
            return qn_fail(QN_ERR_FORMAT, "%s: post_processor ids of '%s'", name, tok);
        dst[(*n)++] = (int32_t)e->valuedouble;
    }
    return QN_OK;
}

static qn_status parse_post(qn_tokenizer *t, const cJSON *p, const char *name) {
    if (!p || cJSON_IsNull(p)) return QN_OK;
    const char *type = jstr(p, "type");
    if (!type) return QN_OK;
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(p, "processors"))
            QN_CHECK(parse_post(t, e, name));
        return QN_OK;
    }
    if (strcmp(type, "TemplateProcessing") != 0) return QN_OK; /* ByteLevel: offsets only */
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(p, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(p, "special_tokens");
    bool seen_seq = false;
    const cJSON *e;
    t->n_prefix = t->n_suffix = 0;
    cJSON_ArrayForEach(e, single) {
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(e, "SpecialToken");
        if (st) {
            const char *id = jstr(st, "id");
            if (!id) return qn_fail(QN_ERR_FORMAT, "%s: TemplateProcessing token without id", name);
            if (seen_seq) QN_CHECK(special_ids_of(t, specials, id, t->suffix, &t->n_suffix, name));
            else QN_CHECK(special_ids_of(t, specials, id, t->prefix, &t->n_prefix, name));
        } else if (cJSON_GetObjectItemCaseSensitive(e, "Sequence")) {
            seen_seq = true;
        }
    }
    return QN_OK;
}

qn_status qn_tokenizer_parse_json(const char *json, size_t len, const char *name,
                                  qn_tokenizer **out) {
    *out = NULL;
    qn_tokenizer *t;
    QN_CHECK(qn_tok_new(&t));
    t->format = QN_TOKENIZER_FORMAT_JSON;
    qn_status st = QN_OK;
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(root)) {
        st = qn_fail(QN_ERR_FORMAT, "%s: not a JSON object", name);
        goto fail;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const char *mtype = jstr(model, "type");
    if (!cJSON_IsObject(model) || (mtype && strcmp(mtype, "BPE") != 0)) {
        st = qn_fail(QN_ERR_UNSUPPORTED, "%s: model type '%s' is not supported (only BPE)", name,
                     mtype ? mtype : "(none)");
        goto fail;
    }
    if (jbool(model, "byte_fallback", false)) {
        st = qn_fail(QN_ERR_UNSUPPORTED, "%s: BPE byte_fallback is not supported", name);
        goto fail;
    }
    const char *csp = jstr(model, "continuing_subword_prefix"), *eow = jstr(model, "end_of_word_suffix");
    if ((csp && csp[0]) || (eow && eow[0])) {
        st = qn_fail(QN_ERR_UNSUPPORTED, "%s: BPE subword prefixes/suffixes are not supported", name);
        goto fail;
    }
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble > 0) {
        st = qn_fail(QN_ERR_UNSUPPORTED, "%s: BPE dropout is not supported", name);
        goto fail;
    }
    t->ignore_merges = jbool(model, "ignore_merges", false);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab)) {
        st = qn_fail(QN_ERR_FORMAT, "%s: model.vocab is not an object", name);
        goto fail;
    }
    QN_CHECK_GOTO(qn_tok_load_vocab_object(t, vocab, name, "model.vocab"), st, fail);
    const cJSON *e;
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    size_t mi = 0;
    cJSON_ArrayForEach(e, merges) {
        const char *parts[2];
        size_t lens[2];
        if (cJSON_IsString(e)) {
            const char *s = e->valuestring, *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                st = qn_fail(QN_ERR_FORMAT, "%s: model.merges[%zu]: expected 'left right'", name, mi);
                goto fail;
            }
            parts[0] = s;
            lens[0] = (size_t)(sp - s);
            parts[1] = sp + 1;
            lens[1] = strlen(sp + 1);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
            parts[0] = cJSON_GetArrayItem(e, 0)->valuestring;
            parts[1] = cJSON_GetArrayItem(e, 1)->valuestring;
            lens[0] = strlen(parts[0]);
            lens[1] = strlen(parts[1]);
        } else {
            st = qn_fail(QN_ERR_FORMAT, "%s: model.merges[%zu]: expected a string or a pair", name, mi);
            goto fail;
        }
        int32_t ids[2];
        for (int k = 0; k < 2; k++) {
            char *ub;
            size_t ul;
            QN_CHECK_GOTO(qn_tok_unmap_bytes(parts[k], lens[k], &ub, &ul), st, fail);
            ids[k] = qn_tok_vocab_find(t, ub, ul);
            free(ub);
            if (ids[k] < 0) {
                st = qn_fail(QN_ERR_FORMAT, "%s: model.merges[%zu]: '%.*s' is not in the vocabulary",
                             name, mi, (int)lens[k], parts[k]);
                goto fail;
            }
        }
        st = qn_tok_add_merge(t, ids[0], ids[1]);
        if (st != QN_OK) {
            st = qn_fail(st, "%s: model.merges[%zu]: %s", name, mi, qn_last_error());
            goto fail;
        }
        mi++;
    }
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    size_t ai = 0;
    cJSON_ArrayForEach(e, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        const char *content = jstr(e, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > QN_TOK_MAX_ID || !content) {
            st = qn_fail(QN_ERR_FORMAT, "%s: added_tokens[%zu]: needs id and content", name, ai);
            goto fail;
        }
        qn_tok_added a = {.content = (char *)content,
                          .len = strlen(content),
                          .id = (int32_t)id->valuedouble,
                          .special = jbool(e, "special", false),
                          .lstrip = jbool(e, "lstrip", false),
                          .rstrip = jbool(e, "rstrip", false),
                          .single_word = jbool(e, "single_word", false),
                          .normalized = jbool(e, "normalized", false)};
        st = qn_tok_add_added(t, &a);
        if (st != QN_OK) {
            st = qn_fail(st, "%s: added_tokens[%zu]: %s", name, ai, qn_last_error());
            goto fail;
        }
        ai++;
    }
    QN_CHECK_GOTO(parse_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), name),
                  st, fail);
    bool byte_level = false;
    QN_CHECK_GOTO(parse_pretok(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), name,
                               &byte_level), st, fail);
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    const char *dtype = jstr(dec, "type");
    if (!byte_level && !(dtype && strcmp(dtype, "ByteLevel") == 0)) {
        st = qn_fail(QN_ERR_UNSUPPORTED, "%s: not a byte-level BPE tokenizer (no ByteLevel "
                     "pre-tokenizer or decoder)", name);
        goto fail;
    }
    QN_CHECK_GOTO(qn_tok_finish(t, name), st, fail);
    QN_CHECK_GOTO(parse_post(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), name),
                  st, fail);
    cJSON_Delete(root);
    *out = t;
    return QN_OK;
fail:
    cJSON_Delete(root);
    qn_tokenizer_free(t);
    return st;
}

static qn_status read_json(const char *path, cJSON **out) {
    char *d;
    size_t l;
    QN_CHECK(qn_tok_read_file(path, &d, &l));
    *out = cJSON_ParseWithLength(d, l);
    free(d);
    if (!*out) return qn_fail(QN_ERR_FORMAT, "%s: not valid JSON", path);
    return QN_OK;
}

/* Applies a tokenizer_config.json to a tokenizer loaded from tokenizer.json. */
static qn_status apply_config_file(qn_tokenizer *t, const char *config_path) {
    if (!config_path) return QN_OK;
    cJSON *c;
    QN_CHECK(read_json(config_path, &c));
    qn_status st = qn_tok_apply_config(t, c, config_path);
    if (st == QN_OK) st = qn_tok_finish(t, config_path);
    if (st == QN_OK) st = qn_tok_apply_config_names(t, c);
    cJSON_Delete(c);
    return st;
}

qn_status qn_tokenizer_load_json(const char *json_path, const char *config_path,
                                 qn_tokenizer **out) {
    *out = NULL;
    char *d;
    size_t l;
    QN_CHECK(qn_tok_read_file(json_path, &d, &l));
    qn_status st = qn_tokenizer_parse_json(d, l, json_path, out);
    free(d);
    if (st != QN_OK) return st;
    st = apply_config_file(*out, config_path);
    if (st != QN_OK) {
        qn_tokenizer_free(*out);
        *out = NULL;
    }
    return st;
}

static bool file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* A tokenizer.model that is a tiktoken ranks file starts with "<base64> <n>". */
static bool looks_like_tiktoken(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    char line[256];
    bool ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    if (!ok) return false;
    char *sp = strchr(line, ' ');
    if (!sp || sp == line) return false;
    for (char *p = line; p < sp; p++) {
        if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", *p))
            return false;
    }
    return sp[1] >= '0' && sp[1] <= '9';
}

static void set_stops_from_generation_config(qn_tokenizer *t, const char *path) {
    cJSON *g;
    if (!file_exists(path) || read_json(path, &g) != QN_OK) {
        qn_clear_error();
        return;
    }
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(g, "eos_token_id");
    const cJSON *v;
    if (cJSON_IsNumber(e)) {
        t->special.stop[t->special.n_stop++] = (int32_t)e->valuedouble;
    } else if (cJSON_IsArray(e)) {
        cJSON_ArrayForEach(v, e) {
            if (cJSON_IsNumber(v) && t->special.n_stop < 8)
                t->special.stop[t->special.n_stop++] = (int32_t)v->valuedouble;
        }
    }
    cJSON_Delete(g);
}

qn_status qn_tokenizer_load(const char *dir, qn_tokenizer **out) {
    *out = NULL;
    size_t dl = strlen(dir);
    char *p[6];
    static const char *names[6] = {"tokenizer.json",  "vocab.json",          "merges.txt",
                                   "tokenizer.model", "tokenizer_config.json", "generation_config.json"};
    for (int i = 0; i < 6; i++) {
        p[i] = malloc(dl + 32);
        if (!p[i]) {
            for (int j = 0; j < i; j++) free(p[j]);
            return qn_fail(QN_ERR_NOMEM, "tokenizer: out of memory");
        }
        snprintf(p[i], dl + 32, "%s/%s", dir, names[i]);
    }
    const char *config = file_exists(p[4]) ? p[4] : NULL;
    qn_status st;
    if (file_exists(p[0])) {
        st = qn_tokenizer_load_json(p[0], config, out);
    } else if (file_exists(p[1]) && file_exists(p[2])) {
        st = qn_tokenizer_load_slow(p[1], p[2], config, out);
    } else if (file_exists(p[3]) && looks_like_tiktoken(p[3])) {
        st = qn_tokenizer_load_tiktoken(p[3], config, out);
    } else if (file_exists(p[3])) {
        st = qn_fail(QN_ERR_UNSUPPORTED, "%s: not a tiktoken ranks file (SentencePiece models are "
                     "not supported)", p[3]);
    } else {
        st = qn_fail(QN_ERR_NOT_FOUND, "%s: no tokenizer.json, vocab.json + merges.txt, or "
                     "tokenizer.model", dir);
    }
    if (st == QN_OK) {
        qn_tokenizer *t = *out;
        if (!t->chat_template) {
            char *jp = malloc(dl + 32);
            if (jp) {
                snprintf(jp, dl + 32, "%s/chat_template.jinja", dir);
                char *d;
                size_t l;
                if (file_exists(jp) && qn_tok_read_file(jp, &d, &l) == QN_OK) t->chat_template = d;
                free(jp);
            }
        }
        set_stops_from_generation_config(t, p[5]);
        if (t->special.n_stop == 0 && t->special.eos >= 0)
            t->special.stop[t->special.n_stop++] = t->special.eos;
    }
    for (int i = 0; i < 6; i++) free(p[i]);
    return st;
}

/* ---- writing tokenizer.json ------------------------------------------ */

static char *map_bytes(const char *b, size_t n) {
    char *o = malloc(n * 2 + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t w;
        qn_tok_byte_to_unicode((uint8_t)b[i], o + k, &w);
        k += w;
    }
    o[k] = 0;
    return o;
}

static cJSON *tok_obj(const char *type) {
    cJSON *o = cJSON_CreateObject();
    if (o) cJSON_AddStringToObject(o, "type", type);
    return o;
}

qn_status qn_tokenizer_save_json(const qn_tokenizer *t, const char *path) {
    qn_status st = QN_OK;
    char *text = NULL;
    cJSON *root = cJSON_CreateObject();
    if (!root) return qn_fail(QN_ERR_NOMEM, "%s: out of memory", path);
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (size_t i = 0; i < t->n_added; i++) {
        const qn_tok_added *a = &t->added[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "id", a->id);
        cJSON_AddStringToObject(o, "content", a->content);
        cJSON_AddBoolToObject(o, "single_word", a->single_word);
        cJSON_AddBoolToObject(o, "lstrip", a->lstrip);
        cJSON_AddBoolToObject(o, "rstrip", a->rstrip);
        cJSON_AddBoolToObject(o, "normalized", a->normalized);
        cJSON_AddBoolToObject(o, "special", a->special);
        cJSON_AddItemToArray(added, o);
    }
    static const char *norm_names[] = {NULL, "NFC", "NFD", "NFKC", "NFKD"};
    if (t->norm != QN_TOK_NORM_NONE) cJSON_AddItemToObject(root, "normalizer", tok_obj(norm_names[t->norm]));
    else cJSON_AddNullToObject(root, "normalizer");
    cJSON *pre = tok_obj("Sequence");
    cJSON *pl = cJSON_AddArrayToObject(pre, "pretokenizers");
    for (int i = 0; i < t->n_re; i++) {
        cJSON *s = tok_obj("Split");
        cJSON *pat = cJSON_AddObjectToObject(s, "pattern");
        cJSON_AddStringToObject(pat, "Regex", t->re_src[i]);
        cJSON_AddStringToObject(s, "behavior", "Isolated");
        cJSON_AddBoolToObject(s, "invert", false);
        cJSON_AddItemToArray(pl, s);
    }
    cJSON *bl = tok_obj("ByteLevel");
    cJSON_AddBoolToObject(bl, "add_prefix_space", t->add_prefix_space);
    cJSON_AddBoolToObject(bl, "trim_offsets", false);
    cJSON_AddBoolToObject(bl, "use_regex", false);
    cJSON_AddItemToArray(pl, bl);
    cJSON_AddItemToObject(root, "pre_tokenizer", pre);
    if (t->n_prefix || t->n_suffix) {
        cJSON *tp = tok_obj("TemplateProcessing");
        cJSON *single = cJSON_AddArrayToObject(tp, "single");
        cJSON *pair = cJSON_AddArrayToObject(tp, "pair");
        cJSON *sp = cJSON_AddObjectToObject(tp, "special_tokens");
        for (int pass = 0; pass < 2; pass++) {
            cJSON *arr = pass == 0 ? single : pair;
            for (int side = 0; side < 2; side++) {
                const int32_t *ids = side == 0 ? t->prefix : t->suffix;
                int n = side == 0 ? t->n_prefix : t->n_suffix;
                if (side == 1) {
                    for (int s = 0; s < (pass == 0 ? 1 : 2); s++) {
                        cJSON *q = cJSON_CreateObject();
                        cJSON *sq = cJSON_AddObjectToObject(q, "Sequence");
                        cJSON_AddStringToObject(sq, "id", s == 0 ? "A" : "B");
                        cJSON_AddNumberToObject(sq, "type_id", 0);
                        cJSON_AddItemToArray(arr, q);
                    }
                }
                for (int i = 0; i < n; i++) {
                    size_t len;
                    const char *b = qn_tokenizer_id_to_bytes(t, ids[i], &len);
                    char *name = b ? strndup(b, len) : NULL;
                    if (!name) continue;
                    cJSON *q = cJSON_CreateObject();
                    cJSON *so = cJSON_AddObjectToObject(q, "SpecialToken");
                    cJSON_AddStringToObject(so, "id", name);
                    cJSON_AddNumberToObject(so, "type_id", 0);
                    cJSON_AddItemToArray(arr, q);
                    if (pass == 0 && !cJSON_GetObjectItemCaseSensitive(sp, name)) {
                        cJSON *d = cJSON_AddObjectToObject(sp, name);
                        cJSON_AddStringToObject(d, "id", name);
                        cJSON *ia = cJSON_AddArrayToObject(d, "ids");
                        cJSON_AddItemToArray(ia, cJSON_CreateNumber(ids[i]));
                        cJSON *ta = cJSON_AddArrayToObject(d, "tokens");
                        cJSON_AddItemToArray(ta, cJSON_CreateString(name));
                    }
                    free(name);
                }
            }
        }
        cJSON_AddItemToObject(root, "post_processor", tp);
    } else {
        cJSON *bp = tok_obj("ByteLevel");
        cJSON_AddBoolToObject(bp, "add_prefix_space", false);
        cJSON_AddBoolToObject(bp, "trim_offsets", false);
        cJSON_AddBoolToObject(bp, "use_regex", false);
        cJSON_AddItemToObject(root, "post_processor", bp);
    }
    cJSON *dec = tok_obj("ByteLevel");
    cJSON_AddBoolToObject(dec, "add_prefix_space", true);
    cJSON_AddBoolToObject(dec, "trim_offsets", true);
    cJSON_AddBoolToObject(dec, "use_regex", true);
    cJSON_AddItemToObject(root, "decoder", dec);
    cJSON *model = tok_obj("BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddBoolToObject(model, "fuse_unk", false);
    cJSON_AddBoolToObject(model, "byte_fallback", false);
    cJSON_AddBoolToObject(model, "ignore_merges", t->ignore_merges);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    for (int32_t id = 0; id < t->n_ids; id++) {
        if (!(t->tok_flags[id] & QN_TOK_FLAG_MODEL)) continue;
        char *m = map_bytes(t->blob + t->tok_off[id], t->tok_len[id]);
        if (!m) {
            st = qn_fail(QN_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        cJSON_AddItemToObject(vocab, m, cJSON_CreateNumber(id));
        free(m);
    }
    cJSON *ml = cJSON_AddArrayToObject(model, "merges");
    for (size_t i = 0; i < t->n_merges; i++) {
        int32_t l = t->merge_list[i][0], r = t->merge_list[i][1];
        char *a = map_bytes(t->blob + t->tok_off[l], t->tok_len[l]);
        char *b = map_bytes(t->blob + t->tok_off[r], t->tok_len[r]);
        if (!a || !b) {
            free(a);
            free(b);
            st = qn_fail(QN_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        cJSON *pair = cJSON_CreateArray();
        cJSON_AddItemToArray(pair, cJSON_CreateString(a));
        cJSON_AddItemToArray(pair, cJSON_CreateString(b));
        cJSON_AddItemToArray(ml, pair);
        free(a);
        free(b);
    }
    cJSON_AddItemToObject(root, "model", model);
    text = cJSON_PrintUnformatted(root);
    if (!text) {
        st = qn_fail(QN_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    FILE *f = fopen(path, "wb");
    if (!f) {
        st = qn_fail(QN_ERR_IO, "%s: cannot create", path);
        goto done;
    }
    size_t tl = strlen(text);
    bool ok = fwrite(text, 1, tl, f) == tl;
    ok = (fclose(f) == 0) && ok;
    if (!ok) st = qn_fail(QN_ERR_IO, "%s: write failed", path);
done:
    free(text);
    cJSON_Delete(root);
    return st;
}
