/* vocab.c — building a qn_tokenizer: the id table, the vocabulary and merge
 * hashes, added tokens, pre-tokenizer regexes, the byte-level mapping, and
 * tokenizer_config.json handling. Encoding lives in bpe.c, loaders in
 * load_*.c. Leaves out: non-byte-level models (SentencePiece, WordPiece). */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/tokenizer/tok_internal.h"

/* Qwen2's and GLM-4's differ only in how many digits make a piece. */
const char *const QN_TOK_RE_GPT2 =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const char *const QN_TOK_RE_QWEN2 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char *const QN_TOK_RE_GLM4 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static uint64_t hash_bytes(const char *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

qn_status qn_tok_new(qn_tokenizer **out) {
    qn_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return qn_fail(QN_ERR_NOMEM, "tokenizer: out of memory");
    for (int i = 0; i < 256; i++) t->byte_id[i] = -1;
    t->special.eos = t->special.bos = t->special.pad = t->special.unk = -1;
    pthread_mutex_init(&t->cache_mu, NULL);
    *out = t;
    return QN_OK;
}

void qn_tokenizer_free(qn_tokenizer *t) {
    if (!t) return;
    free(t->blob);
    free(t->tok_off);
    free(t->tok_len);
    free(t->tok_flags);
    free(t->vhash);
    free(t->merges);
    free(t->merge_list);
    for (size_t i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    free(t->added_by_byte);
    for (int i = 0; i < t->n_re; i++) {
        pcre2_code_free(t->re[i]);
        free(t->re_src[i]);
    }
    free(t->chat_template);
    if (t->cache) {
        for (size_t i = 0; i < QN_TOK_CACHE_SLOTS; i++) {
            free(t->cache[i].key);
            free(t->cache[i].ids);
        }
        free(t->cache);
    }
    pthread_mutex_destroy(&t->cache_mu);
    free(t);
}

static qn_status ensure_id(qn_tokenizer *t, int32_t id) {
    if (id < 0 || id > QN_TOK_MAX_ID) return qn_fail(QN_ERR_RANGE, "token id %d out of range", id);
    if ((size_t)id < t->id_cap) {
        if (id >= t->n_ids) t->n_ids = id + 1;
        return QN_OK;
    }
    size_t cap = t->id_cap ? t->id_cap : 1024;
    while (cap <= (size_t)id) cap *= 2;
    uint64_t *off = realloc(t->tok_off, cap * sizeof *off);
    if (!off) return qn_fail(QN_ERR_NOMEM, "tokenizer: out of memory");
    t->tok_off = off;
    uint32_t *len = realloc(t->tok_len, cap * sizeof *len);
    if (!len) return qn_fail(QN_ERR_NOMEM, "tokenizer: out of memory");
    t->tok_len = len;
    uint8_t *fl = realloc(t->tok_flags, cap);
    if (!fl) return qn_fail(QN_ERR_NOMEM, "tokenizer: out of memory");
    t->tok_flags = fl;
    for (size_t i = t->id_cap; i < cap; i++) {
        t->tok_len[i] = UINT32_MAX;
        t->tok_off[i] = 0;
        t->tok_flags[i] = 0;
    }
    t->id_cap = cap;
    if (id >= t->n_ids) t->n_ids = id + 1;
    return QN_OK;
}

static qn_status blob_put(qn_tokenizer *t, const char *b, size_t n, uint64_t *off) {
    if (t->blob_len + n + 1 > t->blob_cap) {
        size_t cap = t->blob_cap ? t->blob_cap : 65536;
        while (cap < t->blob_len + n + 1) cap *= 2;
        char *nb = realloc(t->blob, cap);
        if (!nb) return qn_fail(QN_ERR_NOMEM, "tokenizer: out of memory");
        t->blob = nb;
        t->blob_cap = cap;
    }
    memcpy(t->blob + t->blob_len, b, n);
    *off = t->blob_len;
    t->blob_len += n;
    return QN_OK;
}

static qn_status vhash_grow(qn_tokenizer *t) {
    size_t cap = t->vhash_cap ? t->vhash_cap * 2 : 4096;
    int32_t *h = malloc(cap * sizeof *h);
    if (!h) return qn_fail(QN_ERR_NOMEM, "tokenizer: out of memory");
    for (size_t i = 0; i < cap; i++) h[i] = -1;
    for (size_t i = 0; i < t->vhash_cap; i++) {
        int32_t id = t->vhash[i];
        if (id < 0) continue;
        size_t j = hash_bytes(t->blob + t->tok_off[id], t->tok_len[id]) & (cap - 1);
        while (h[j] >= 0) j = (j + 1) & (cap - 1);
        h[j] = id;
    }
    free(t->vhash);
    t->vhash = h;
    t->vhash_cap = cap;
    return QN_OK;
}

int32_t qn_tok_vocab_find(const qn_tokenizer *t, const char *bytes, size_t len) {
    if (!t->vhash_cap) return -1;
    size_t j = hash_bytes(bytes, len) & (t->vhash_cap - 1);
    for (;;) {
        int32_t id = t->vhash[j];
        if (id < 0) return -1;
        if (t->tok_len[id] == len && memcmp(t->blob + t->tok_off[id], bytes, len) == 0) return id;
        j = (j + 1) & (t->vhash_cap - 1);
    }
}

qn_status qn_tok_set_vocab(qn_tokenizer *t, int32_t id, const char *bytes, size_t len) {
    QN_CHECK(ensure_id(t, id));
    if (t->tok_len[id] != UINT32_MAX)
        return qn_fail(QN_ERR_FORMAT, "token id %d appears twice in the vocabulary", id);
    if (len == 0) return qn_fail(QN_ERR_FORMAT, "token id %d is empty", id);
    if (qn_tok_vocab_find(t, bytes, len) >= 0)
        return qn_fail(QN_ERR_FORMAT, "token id %d duplicates the bytes of id %d", id,
                       qn_tok_vocab_find(t, bytes, len));
    uint64_t off;
    QN_CHECK(blob_put(t, bytes, len, &off));
    t->tok_off[id] = off;
    t->tok_len[id] = (uint32_t)len;
    t->tok_flags[id] |= QN_TOK_FLAG_MODEL;
    t->n_vocab++;
    /* keep the load factor under 1/2 */
    if (t->n_vocab * 2 > t->vhash_cap) QN_CHECK(vhash_grow(t));
    size_t j = hash_bytes(bytes, len) & (t->vhash_cap - 1);
    while (t->vhash[j] >= 0) j = (j + 1) & (t->vhash_cap - 1);
    t->vhash[j] = id;
    return QN_OK;
}

static qn_tok_merge_slot *merge_find_slot(qn_tok_merge_slot *tab, size_t cap, uint64_t key) {
    size_t j = hash_u64(key) & (cap - 1);
    while (tab[j].key != UINT64_MAX && tab[j].key != key) j = (j + 1) & (cap - 1);
    return &tab[j];
}

qn_status qn_tok_add_merge(qn_tokenizer *t, int32_t left, int32_t right) {
    if (left < 0 || right < 0 || left >= t->n_ids || right >= t->n_ids ||
        t->tok_len[left] == UINT32_MAX || t->tok_len[right] == UINT32_MAX)
        return qn_fail(QN_ERR_FORMAT, "merge %zu names an unknown token", t->n_merges);
    size_t ll = t->tok_len[left], rl = t->tok_len[right];
    char stackbuf[256];
    char *buf = ll + rl <= sizeof stackbuf ? stackbuf : malloc(ll + rl);
    if (!buf) return qn_fail(QN_ERR_NOMEM, "tokenizer: out of memory");
    memcpy(buf, t->blob + t->tok_off[left], ll);
    memcpy(buf + ll, t->blob + t->tok_off[right], rl);
    int32_t res = qn_tok_vocab_find(t, buf, ll + rl);
    if (buf != stackbuf) free(buf);
    if (res < 0)
        return qn_fail(QN_ERR_FORMAT, "merge %zu (ids %d + %d): the merged token is not in "
                       "the vocabulary", t->n_merges, left, right);
    if ((t->n_merges + 1) * 2 > t->merge_cap) {
        size_t cap = t->merge_cap ? t->merge_cap * 2 : 4096;
        qn_tok_merge_slot *tab = malloc(cap * sizeof *tab);
        if (!tab) return qn_fail(QN_ERR_NOMEM, "tokenizer: out of memory");
        for (size_t i = 0; i < cap; i++) tab[i].key = UINT64_MAX;
        for (size_t i = 0; i < t->merge_cap; i++) {
            if (t->merges[i].key == UINT64_MAX) continue;
            *merge_find_slot(tab, cap, t->merges[i].key) = t->merges[i];
        }
        free(t->merges);
        t->merges = tab;
        t->merge_cap = cap;
    }
    if (t->n_merges + 1 > t->merge_list_cap) {
        size_t cap = t->merge_list_cap ? t->merge_list_cap * 2 : 4096;
        int32_t(*ml)[2] = realloc(t->merge_list, cap * sizeof *ml);
        if (!ml) return qn_fail(QN_ERR_NOMEM, "tokenizer: out of memory");
        t->merge_list = ml;
        t->merge_list_cap = cap;
    }
    uint64_t key = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
    qn_tok_merge_slot *s = merge_find_slot(t->merges, t->merge_cap, key);
    if (s->key == key) return QN_OK; /* Hugging Face keeps the first rank of a repeated pair */
    s->key = key;
    s->rank = (uint32_t)t->n_merges;
    s->result = res;
    t->merge_list[t->n_merges][0] = left;
    t->merge_list[t->n_merges][1] = right;
    t->n_merges++;
    return QN_OK;
}

qn_status qn_tok_add_added(qn_tokenizer *t, const qn_tok_added *a) {
    if (a->len == 0) return qn_fail(QN_ERR_FORMAT, "added token id %d is empty", a->id);
    QN_CHECK(ensure_id(t, a->id));
    for (size_t i = 0; i < t->n_added; i++) {
        if (t->added[i].id == a->id) {
            /* the same token listed twice (tokenizer.json and the config) */
            if (t->added[i].len == a->len && memcmp(t->added[i].content, a->content, a->len) == 0)
                return QN_OK;
            return qn_fail(QN_ERR_FORMAT, "added token id %d is defined twice with different "
                           "content", a->id);
        }
    }
    if (t->tok_len[a->id] != UINT32_MAX) {
        if (t->tok_len[a->id] != a->len || memcmp(t->blob + t->tok_off[a->id], a->content, a->len))
            return qn_fail(QN_ERR_FORMAT, "added token '%.*s' has id %d, which the vocabulary "
                           "uses for another token", (int)a->len, a->content, a->id);
    } else {
        uint64_t off;
        QN_CHECK(blob_put(t, a->content, a->len, &off));
        t->tok_off[a->id] = off;
        t->tok_len[a->id] = (uint32_t)a->len;
    }
    qn_tok_added *na = realloc(t->added, (t->n_added + 1) * sizeof *na);
    if (!na) return qn_fail(QN_ERR_NOMEM, "tokenizer: out of memory");
    t->added = na;
    qn_tok_added *d = &t->added[t->n_added];
    *d = *a;
    d->content = malloc(a->len + 1);
    if (!d->content) return qn_fail(QN_ERR_NOMEM, "tokenizer: out of memory");
    memcpy(d->content, a->content, a->len);
    d->content[a->len] = 0;
    t->n_added++;
    t->tok_flags[a->id] |= QN_TOK_FLAG_ADDED | (a->special ? QN_TOK_FLAG_SPECIAL : 0);
    return QN_OK;
}

qn_status qn_tok_add_regex(qn_tokenizer *t, const char *pattern, const char *where) {
    if (t->n_re >= QN_TOK_MAX_REGEX)
        return qn_fail(QN_ERR_UNSUPPORTED, "%s: more than %d pre-tokenizer regexes", where,
                       QN_TOK_MAX_REGEX);
    int err;
    PCRE2_SIZE eoff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &eoff,
                                   NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return qn_fail(QN_ERR_FORMAT, "%s: pre-tokenizer regex at offset %zu: %s", where,
                       (size_t)eoff, (const char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter on failure */
    t->re[t->n_re] = re;
    t->re_src[t->n_re] = strdup(pattern);
    if (!t->re_src[t->n_re]) {
        pcre2_code_free(re);
        return qn_fail(QN_ERR_NOMEM, "tokenizer: out of memory");
    }
    t->n_re++;
    return QN_OK;
}

static int cmp_added(const void *a, const void *b, void *ctx) {
    const qn_tokenizer *t = ctx;
    const qn_tok_added *x = &t->added[*(const uint32_t *)a];
    const qn_tok_added *y = &t->added[*(const uint32_t *)b];
    if ((uint8_t)x->content[0] != (uint8_t)y->content[0])
        return (uint8_t)x->content[0] < (uint8_t)y->content[0] ? -1 : 1;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : (x->id > y->id);
}

qn_status qn_tok_finish(qn_tokenizer *t, const char *where) {
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = qn_tok_vocab_find(t, &c, 1);
    }
    /* a byte-level vocabulary has all 256 single bytes; others are rejected
     * because their text would silently lose characters */
    for (int b = 0; b < 256; b++) {
        if (t->byte_id[b] < 0)
            return qn_fail(QN_ERR_UNSUPPORTED, "%s: the vocabulary has no token for byte 0x%02x "
                           "(not a byte-level BPE vocabulary)", where, b);
    }
    free(t->added_by_byte);
    t->added_by_byte = malloc((t->n_added ? t->n_added : 1) * sizeof *t->added_by_byte);
    if (!t->added_by_byte) return qn_fail(QN_ERR_NOMEM, "tokenizer: out of memory");
    for (size_t i = 0; i < t->n_added; i++) t->added_by_byte[i] = (uint32_t)i;
    qsort_r(t->added_by_byte, t->n_added, sizeof *t->added_by_byte, cmp_added, t);
    memset(t->added_start, 0, sizeof t->added_start);
    for (size_t i = 0; i < t->n_added; i++) t->added_start[(uint8_t)t->added[i].content[0] + 1]++;
    for (int b = 0; b < 256; b++) t->added_start[b + 1] += t->added_start[b];
    if (!t->cache) {
        t->cache = calloc(QN_TOK_CACHE_SLOTS, sizeof *t->cache);
        if (!t->cache) return qn_fail(QN_ERR_NOMEM, "tokenizer: out of memory");
    }
    return QN_OK;
}

/* ---- byte-level mapping ---------------------------------------------- */

static bool byte_is_printable(int b) {
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

static uint32_t byte_to_cp(uint8_t b) {
    if (byte_is_printable(b)) return b;
    uint32_t n = 0;
    for (int i = 0; i < b; i++) n += !byte_is_printable(i);
    return 256 + n;
}

void qn_tok_byte_to_unicode(uint8_t b, char out[3], size_t *len) {
    uint32_t cp = byte_to_cp(b);
    if (cp < 0x80) {
        out[0] = (char)cp;
        *len = 1;
    } else {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        *len = 2;
    }
}

static int16_t g_inv[512]; /* code point -> byte of the byte-level mapping, -1: none */
static pthread_once_t g_inv_once = PTHREAD_ONCE_INIT;

static void init_inv(void) {
    for (int i = 0; i < 512; i++) g_inv[i] = -1;
    for (int b = 0; b < 256; b++) g_inv[byte_to_cp((uint8_t)b)] = (int16_t)b;
}

qn_status qn_tok_unmap_bytes(const char *s, size_t len, char **out, size_t *out_len) {
    pthread_once(&g_inv_once, init_inv);
    const int16_t *inv = g_inv;
    char *o = malloc(len + 1);
    if (!o) return qn_fail(QN_ERR_NOMEM, "tokenizer: out of memory");
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint8_t c = (uint8_t)s[i];
        uint32_t cp;
        size_t w;
        if (c < 0x80) {
            cp = c;
            w = 1;
        } else if ((c & 0xE0) == 0xC0 && i + 1 < len) {
            cp = ((uint32_t)(c & 0x1F) << 6) | ((uint8_t)s[i + 1] & 0x3F);
            w = 2;
        } else {
            cp = 0x7FFFFFFF;
            w = (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
            if (i + w > len) w = len - i;
        }
        if (cp < 512 && inv[cp] >= 0) {
            o[n++] = (char)inv[cp];
        } else {
            memcpy(o + n, s + i, w);
            n += w;
        }
        i += w;
    }
    o[n] = 0;
    *out = o;
    *out_len = n;
    return QN_OK;
}

/* ---- tokenizer_config.json ------------------------------------------- */

int32_t qn_tok_lookup_token(const qn_tokenizer *t, const char *s) {
    if (!s) return -1;
    return qn_tokenizer_token_to_id(t, s, strlen(s));
}

static const char *token_name(const cJSON *v) {
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(c)) return c->valuestring;
    }
    return NULL;
}

static bool json_bool(const cJSON *o, const char *key, bool dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return dflt;
}

qn_status qn_tok_apply_config(qn_tokenizer *t, const cJSON *config, const char *where) {
    if (!config) return QN_OK;
    if (!cJSON_IsObject(config)) return qn_fail(QN_ERR_FORMAT, "%s: not a JSON object", where);
    const cJSON *atd = cJSON_GetObjectItemCaseSensitive(config, "added_tokens_decoder");
    if (atd) {
        if (!cJSON_IsObject(atd))
            return qn_fail(QN_ERR_FORMAT, "%s: added_tokens_decoder is not an object", where);
        const cJSON *e;
        cJSON_ArrayForEach(e, atd) {
            char *end;
            long id = strtol(e->string, &end, 10);
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
            if (*end || end == e->string || id < 0 || id > QN_TOK_MAX_ID || !cJSON_IsString(c))
                return qn_fail(QN_ERR_FORMAT, "%s: added_tokens_decoder entry '%s' needs a "
                               "numeric id and a string content", where, e->string);
            qn_tok_added a = {.content = c->valuestring,
                              .len = strlen(c->valuestring),
                              .id = (int32_t)id,
                              .special = json_bool(e, "special", false),
                              .lstrip = json_bool(e, "lstrip", false),
                              .rstrip = json_bool(e, "rstrip", false),
                              .single_word = json_bool(e, "single_word", false),
                              .normalized = json_bool(e, "normalized", false)};
            qn_status s = qn_tok_add_added(t, &a);
            if (s != QN_OK) return qn_fail(s, "%s: %s", where, qn_last_error());
        }
    }
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(config, "chat_template");
    if (cJSON_IsString(ct)) {
        free(t->chat_template);
        t->chat_template = strdup(ct->valuestring);
        if (!t->chat_template) return qn_fail(QN_ERR_NOMEM, "tokenizer: out of memory");
    }
    return QN_OK;
}

qn_status qn_tok_apply_config_names(qn_tokenizer *t, const cJSON *config) {
    if (!config) return QN_OK;
    struct {
        const char *key;
        int32_t *dst;
    } names[] = {{"eos_token", &t->special.eos},
                 {"bos_token", &t->special.bos},
                 {"pad_token", &t->special.pad},
                 {"unk_token", &t->special.unk}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *n = token_name(cJSON_GetObjectItemCaseSensitive(config, names[i].key));
        if (n) *names[i].dst = qn_tok_lookup_token(t, n);
    }
    return QN_OK;
}

qn_status qn_tok_read_file(const char *path, char **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return qn_fail(QN_ERR_IO, "%s: cannot open", path);
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = cap ? cap * 2 : 1 << 20;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return qn_fail(QN_ERR_NOMEM, "%s: out of memory", path);
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    bool err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return qn_fail(QN_ERR_IO, "%s: read error", path);
    }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return QN_OK;
}

qn_status qn_tok_load_vocab_object(qn_tokenizer *t, const cJSON *vocab, const char *name,
                                   const char *what) {
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > QN_TOK_MAX_ID ||
            e->valuedouble != (double)(int32_t)e->valuedouble)
            return qn_fail(QN_ERR_FORMAT, "%s: %s: token '%s' has no valid id", name, what, e->string);
        char *b;
        size_t bl;
        QN_CHECK(qn_tok_unmap_bytes(e->string, strlen(e->string), &b, &bl));
        qn_status st = bl ? qn_tok_set_vocab(t, (int32_t)e->valuedouble, b, bl)
                          : qn_fail(QN_ERR_FORMAT, "empty token");
        free(b);
        if (st != QN_OK)
            return qn_fail(st, "%s: %s: token '%s': %s", name, what, e->string, qn_last_error());
    }
    return QN_OK;
}
