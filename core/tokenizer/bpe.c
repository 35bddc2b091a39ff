/* bpe.c — encoding and decoding: added-token matching, normalisation
 * (utf8proc), regex pre-tokenisation (PCRE2), byte-level BPE with a merge
 * cache, and the id lookups.
 *
 * The BPE step follows Hugging Face's Word::merge_all: a priority queue of
 * adjacent pairs ordered by merge rank, then position; a popped pair is
 * applied only if the two symbols are still neighbours and still form a
 * pair with the same result. Leaves out: BPE dropout, byte_fallback,
 * continuing_subword_prefix / end_of_word_suffix (loaders reject them). */
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "core/tokenizer/tok_internal.h"

void qn_token_ids_free(qn_token_ids *v) {
    if (!v) return;
    free(v->ids);
    v->ids = NULL;
    v->n = v->cap = 0;
}

static qn_status ids_reserve(qn_token_ids *v, size_t extra) {
    if (v->n + extra <= v->cap) return QN_OK;
    size_t cap = v->cap ? v->cap : 64;
    while (cap < v->n + extra) cap *= 2;
    int32_t *n = realloc(v->ids, cap * sizeof *n);
    if (!n) return qn_fail(QN_ERR_NOMEM, "token ids: out of memory");
    v->ids = n;
    v->cap = cap;
    return QN_OK;
}

qn_status qn_token_ids_push(qn_token_ids *v, int32_t id) {
    QN_CHECK(ids_reserve(v, 1));
    v->ids[v->n++] = id;
    return QN_OK;
}

qn_encode_opts qn_encode_opts_default(void) {
    return (qn_encode_opts){.split_special = false, .add_special = false};
}

/* ---- BPE ------------------------------------------------------------- */

static inline const qn_tok_merge_slot *merge_get(const qn_tokenizer *t, int32_t l, int32_t r) {
    if (t->merge_cap == 0) return NULL; /* a vocabulary without merges */
    uint64_t key = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    uint64_t x = key;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    size_t mask = t->merge_cap - 1, j = x & mask;
    for (;;) {
        const qn_tok_merge_slot *s = &t->merges[j];
        if (s->key == key) return s;
        if (s->key == UINT64_MAX) return NULL;
        j = (j + 1) & mask;
    }
}

typedef struct heap_ent {
    uint32_t rank, pos;
    int32_t result;
} heap_ent;

static inline bool heap_less(const heap_ent *a, const heap_ent *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(heap_ent *h, size_t *n, heap_ent e) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&e, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static heap_ent heap_pop(heap_ent *h, size_t *n) {
    heap_ent top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(&h[c + 1], &h[c])) c++;
        if (!heap_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

/* Merges the bytes of one piece; appends the resulting ids. */
static qn_status bpe_merge(const qn_tokenizer *t, const uint8_t *p, size_t n, qn_token_ids *out) {
    enum { SMALL = 128 };
    int32_t s_id[SMALL], s_prev[SMALL], s_next[SMALL];
    heap_ent s_heap[2 * SMALL]; /* pushes minus pops never exceed 2n */
    int32_t *id = s_id, *prev = s_prev, *next = s_next;
    heap_ent *heap = s_heap;
    void *big = NULL;
    if (n > SMALL) {
        big = malloc(n * (3 * sizeof(int32_t) + 2 * sizeof(heap_ent)));
        if (!big) return qn_fail(QN_ERR_NOMEM, "tokenizer: out of memory");
        id = big;
        prev = id + n;
        next = prev + n;
        heap = (heap_ent *)(next + n);
    }
    for (size_t i = 0; i < n; i++) {
        id[i] = t->byte_id[p[i]];
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    size_t hn = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        const qn_tok_merge_slot *m = merge_get(t, id[i], id[i + 1]);
        if (m) heap_push(heap, &hn, (heap_ent){m->rank, (uint32_t)i, m->result});
    }
    while (hn) {
        heap_ent e = heap_pop(heap, &hn);
        int32_t a = (int32_t)e.pos;
        if (id[a] < 0) continue; /* merged into its left neighbour */
        int32_t b = next[a];
        if (b < 0) continue;
        const qn_tok_merge_slot *m = merge_get(t, id[a], id[b]);
        if (!m || m->result != e.result) continue;
        id[a] = e.result;
        id[b] = -1;
        next[a] = next[b];
        if (next[b] >= 0) prev[next[b]] = a;
        if (prev[a] >= 0) {
            const qn_tok_merge_slot *ml = merge_get(t, id[prev[a]], id[a]);
            if (ml) heap_push(heap, &hn, (heap_ent){ml->rank, (uint32_t)prev[a], ml->result});
        }
        if (next[a] >= 0) {
            const qn_tok_merge_slot *mr = merge_get(t, id[a], id[next[a]]);
            if (mr) heap_push(heap, &hn, (heap_ent){mr->rank, (uint32_t)a, mr->result});
        }
    }
    qn_status st = ids_reserve(out, n);
    if (st == QN_OK) {
        for (int32_t i = 0; i >= 0; i = next[i]) out->ids[out->n++] = id[i];
    }
    free(big);
    return st;
}

/* Hashes 8 bytes at a time: pieces are short and hashed once per piece. */
static uint64_t piece_hash(const uint8_t *p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001B3ull;
        h ^= h >> 32;
    }
    uint64_t w = 0;
    memcpy(&w, p + i, n - i);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 29);
}

static inline bool key_equal(const char *a, const uint8_t *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if ((uint8_t)a[i] != b[i]) return false;
    }
    return true;
}

static qn_status bpe_piece(const qn_tokenizer *t, const uint8_t *p, size_t n, qn_token_ids *out) {
    if (n == 0) return QN_OK;
    if (n == 1) return qn_token_ids_push(out, t->byte_id[p[0]]);
    if (t->ignore_merges) {
        int32_t whole = qn_tok_vocab_find(t, (const char *)p, n);
        if (whole >= 0) return qn_token_ids_push(out, whole);
    }
    qn_tokenizer *mt = (qn_tokenizer *)t; /* the cache is the one mutable part */
    uint64_t h = 0;
    qn_tok_cache_entry *slot = NULL;
    if (n <= QN_TOK_CACHE_MAX_KEY) {
        h = piece_hash(p, n);
        slot = &mt->cache[h & (QN_TOK_CACHE_SLOTS - 1)];
        if (pthread_mutex_trylock(&mt->cache_mu) == 0) {
            if (slot->key && slot->hash == h && slot->key_len == n && key_equal(slot->key, p, n)) {
                qn_status st = ids_reserve(out, slot->n_ids);
                if (st == QN_OK) {
                    memcpy(out->ids + out->n, slot->ids, slot->n_ids * sizeof(int32_t));
                    out->n += slot->n_ids;
                }
                pthread_mutex_unlock(&mt->cache_mu);
                return st;
            }
            pthread_mutex_unlock(&mt->cache_mu);
        }
    }
    size_t before = out->n;
    QN_CHECK(bpe_merge(t, p, n, out));
    if (slot && pthread_mutex_trylock(&mt->cache_mu) == 0) {
        size_t k = out->n - before;
        char *key = malloc(n);
        int32_t *ids = malloc(k * sizeof *ids);
        if (key && ids) {
            memcpy(key, p, n);
            memcpy(ids, out->ids + before, k * sizeof *ids);
            free(slot->key);
            free(slot->ids);
            *slot = (qn_tok_cache_entry){.hash = h, .key = key, .ids = ids,
                                         .key_len = (uint32_t)n, .n_ids = (uint32_t)k};
        } else {
            free(key);
            free(ids);
        }
        pthread_mutex_unlock(&mt->cache_mu);
    }
    return QN_OK;
}

/* ---- pre-tokenisation ------------------------------------------------ */

typedef struct enc_ctx {
    const qn_tokenizer *t;
    pcre2_match_data *md[QN_TOK_MAX_REGEX];
    qn_token_ids *out;
} enc_ctx;

static size_t utf8_char_len(const uint8_t *p, size_t n) {
    if (n == 0) return 0;
    uint8_t c = p[0];
    size_t w = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3
                                                 : (c & 0xF8) == 0xF0 ? 4 : 1;
    return w > n ? 1 : w;
}

static qn_status split_level(enc_ctx *c, const uint8_t *s, size_t n, int level) {
    const qn_tokenizer *t = c->t;
    if (n == 0) return QN_OK;
    if (level >= t->n_re) return bpe_piece(t, s, n, c->out);
    pcre2_match_data *md = c->md[level];
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    size_t start = 0, last = 0;
    while (start < n) {
        int rc = pcre2_match(t->re[level], (PCRE2_SPTR)s, n, start, 0, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return qn_fail(QN_ERR_INTERNAL, "tokenizer: pre-tokenizer regex failed: %s",
                           (const char *)msg);
        }
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) { /* empty match: step over one character */
            start = ms + utf8_char_len(s + ms, n - ms);
            if (ms >= n) break;
            continue;
        }
        if (ms > last) QN_CHECK(split_level(c, s + last, ms - last, level + 1));
        QN_CHECK(split_level(c, s + ms, me - ms, level + 1));
        last = start = me;
    }
    if (last < n) QN_CHECK(split_level(c, s + last, n - last, level + 1));
    return QN_OK;
}

/* Length of the valid UTF-8 prefix of p (stops before the first bad byte). */
static size_t utf8_valid_prefix(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t w = utf8proc_iterate(p + i, (utf8proc_ssize_t)(n - i), &cp);
        if (w <= 0) break;
        i += (size_t)w;
    }
    return i;
}

static qn_status normalize(const qn_tokenizer *t, const uint8_t *s, size_t n, uint8_t **out,
                           size_t *out_len) {
    int opts = UTF8PROC_STABLE;
    switch (t->norm) {
    case QN_TOK_NORM_NFC: opts |= UTF8PROC_COMPOSE; break;
    case QN_TOK_NORM_NFD: opts |= UTF8PROC_DECOMPOSE; break;
    case QN_TOK_NORM_NFKC: opts |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    case QN_TOK_NORM_NFKD: opts |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
    default: break;
    }
    size_t cap = n * 2 + 16, len = 0;
    uint8_t *buf = malloc(cap);
    if (!buf) return qn_fail(QN_ERR_NOMEM, "tokenizer: out of memory");
    size_t i = 0;
    while (i < n) {
        size_t v = utf8_valid_prefix(s + i, n - i);
        const uint8_t *src = s + i;
        size_t srclen = v;
        utf8proc_uint8_t *mapped = NULL;
        if (v > 0) {
            utf8proc_ssize_t r = utf8proc_map(s + i, (utf8proc_ssize_t)v, &mapped,
                                              (utf8proc_option_t)opts);
            if (r < 0) {
                free(buf);
                return qn_fail(QN_ERR_INTERNAL, "tokenizer: normalisation failed: %s",
                               utf8proc_errmsg(r));
            }
            src = mapped;
            srclen = (size_t)r;
        }
        size_t bad = 0;
        if (i + v < n) bad = 1; /* one invalid byte, copied as is */
        if (len + srclen + bad > cap) {
            while (len + srclen + bad > cap) cap *= 2;
            uint8_t *nb = realloc(buf, cap);
            if (!nb) {
                free(mapped);
                free(buf);
                return qn_fail(QN_ERR_NOMEM, "tokenizer: out of memory");
            }
            buf = nb;
        }
        memcpy(buf + len, src, srclen);
        len += srclen;
        free(mapped);
        if (bad) buf[len++] = s[i + v];
        i += v + bad;
    }
    *out = buf;
    *out_len = len;
    return QN_OK;
}

static qn_status encode_segment(enc_ctx *c, const uint8_t *s, size_t n) {
    const qn_tokenizer *t = c->t;
    if (n == 0) return QN_OK;
    uint8_t *norm = NULL;
    if (t->norm != QN_TOK_NORM_NONE) {
        size_t nl = 0;
        QN_CHECK(normalize(t, s, n, &norm, &nl));
        s = norm;
        n = nl;
    }
    uint8_t *pre = NULL;
    if (t->add_prefix_space && n > 0 && s[0] != ' ') {
        pre = malloc(n + 1);
        if (!pre) {
            free(norm);
            return qn_fail(QN_ERR_NOMEM, "tokenizer: out of memory");
        }
        pre[0] = ' ';
        memcpy(pre + 1, s, n);
        s = pre;
        n++;
    }
    qn_status st = split_level(c, s, n, 0);
    free(pre);
    free(norm);
    return st;
}

static bool is_ws(uint8_t b) { return b == ' ' || (b >= '\t' && b <= '\r'); }
static bool is_word(uint8_t b) {
    return (b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') ||
           b == '_' || b >= 0x80;
}

/* The added token starting at s[pos] (longest), or NULL. */
static const qn_tok_added *match_added(const qn_tokenizer *t, const uint8_t *s, size_t n,
                                       size_t pos, bool split_special) {
    uint8_t b = s[pos];
    for (uint32_t k = t->added_start[b]; k < t->added_start[b + 1]; k++) {
        const qn_tok_added *a = &t->added[t->added_by_byte[k]];
        if (a->special && split_special) continue;
        if (a->len > n - pos || memcmp(s + pos, a->content, a->len) != 0) continue;
        if (a->single_word && ((pos > 0 && is_word(s[pos - 1])) ||
                               (pos + a->len < n && is_word(s[pos + a->len]))))
            continue;
        return a;
    }
    return NULL;
}

qn_status qn_tokenizer_encode(const qn_tokenizer *t, const char *text, size_t len,
                              const qn_encode_opts *opts, qn_token_ids *out) {
    qn_encode_opts o = opts ? *opts : qn_encode_opts_default();
    if (!text && len) return qn_fail(QN_ERR_INVALID, "tokenizer encode: NULL text");
    static const uint8_t empty[1];
    const uint8_t *s = len ? (const uint8_t *)text : empty; /* no arithmetic on NULL */
    enc_ctx c = {.t = t, .out = out};
    qn_status st = QN_OK;
    for (int i = 0; i < t->n_re; i++) {
        c.md[i] = pcre2_match_data_create(1, NULL);
        if (!c.md[i]) {
            st = qn_fail(QN_ERR_NOMEM, "tokenizer: out of memory");
            goto done;
        }
    }
    if (o.add_special) {
        for (int i = 0; i < t->n_prefix; i++) QN_CHECK_GOTO(qn_token_ids_push(out, t->prefix[i]), st, done);
    }
    size_t seg = 0, pos = 0;
    while (pos < len) {
        const qn_tok_added *a = NULL;
        if (t->added_start[s[pos] + 1] > t->added_start[s[pos]])
            a = match_added(t, s, len, pos, o.split_special);
        if (!a) {
            pos++;
            continue;
        }
        size_t seg_end = pos;
        if (a->lstrip) {
            while (seg_end > seg && is_ws(s[seg_end - 1])) seg_end--;
        }
        QN_CHECK_GOTO(encode_segment(&c, s + seg, seg_end - seg), st, done);
        QN_CHECK_GOTO(qn_token_ids_push(out, a->id), st, done);
        pos += a->len;
        if (a->rstrip) {
            while (pos < len && is_ws(s[pos])) pos++;
        }
        seg = pos;
    }
    QN_CHECK_GOTO(encode_segment(&c, s + seg, len - seg), st, done);
    if (o.add_special) {
        for (int i = 0; i < t->n_suffix; i++) QN_CHECK_GOTO(qn_token_ids_push(out, t->suffix[i]), st, done);
    }
done:
    for (int i = 0; i < t->n_re; i++) pcre2_match_data_free(c.md[i]);
    return st;
}

qn_status qn_tokenizer_decode(const qn_tokenizer *t, const int32_t *ids, size_t n,
                              bool skip_special, char **text, size_t *len) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || t->tok_len[id] == UINT32_MAX)
            return qn_fail(QN_ERR_RANGE, "decode: id %d at position %zu is not in the vocabulary "
                           "(size %d)", id, i, t->n_ids);
        if (skip_special && (t->tok_flags[id] & QN_TOK_FLAG_SPECIAL)) continue;
        total += t->tok_len[id];
    }
    char *o = malloc(total + 1);
    if (!o) return qn_fail(QN_ERR_NOMEM, "decode: out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (skip_special && (t->tok_flags[id] & QN_TOK_FLAG_SPECIAL)) continue;
        memcpy(o + k, t->blob + t->tok_off[id], t->tok_len[id]);
        k += t->tok_len[id];
    }
    o[k] = 0;
    *text = o;
    *len = k;
    return QN_OK;
}

/* ---- lookups --------------------------------------------------------- */

int32_t qn_tokenizer_vocab_size(const qn_tokenizer *t) { return t->n_ids; }
size_t qn_tokenizer_merge_count(const qn_tokenizer *t) { return t->n_merges; }
qn_tokenizer_format qn_tokenizer_get_format(const qn_tokenizer *t) { return t->format; }

const char *qn_tokenizer_id_to_bytes(const qn_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_ids || t->tok_len[id] == UINT32_MAX) return NULL;
    if (len) *len = t->tok_len[id];
    return t->blob + t->tok_off[id];
}

int32_t qn_tokenizer_token_to_id(const qn_tokenizer *t, const char *bytes, size_t len) {
    for (size_t i = 0; i < t->n_added; i++) {
        if (t->added[i].len == len && memcmp(t->added[i].content, bytes, len) == 0)
            return t->added[i].id;
    }
    return qn_tok_vocab_find(t, bytes, len);
}

bool qn_tokenizer_is_special(const qn_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids && (t->tok_flags[id] & QN_TOK_FLAG_SPECIAL);
}

const qn_special_ids *qn_tokenizer_special_ids(const qn_tokenizer *t) { return &t->special; }

const char *qn_tokenizer_chat_template(const qn_tokenizer *t) { return t->chat_template; }
