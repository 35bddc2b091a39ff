/* safetensors.c — the safetensors reader (file via pread+mmap, or memory),
 * sharded models through model.safetensors.index.json, and the
 * deterministic, atomic writer. See safetensors.h for the rules enforced.
 *
 * The header is parsed with cJSON. cJSON keeps every member of an object,
 * duplicates included, so duplicate tensor names (and duplicate fields in a
 * tensor entry) are found by sorting, not hidden by a map. Numbers arrive
 * as doubles: integers are accepted only up to 2^53, far beyond any real
 * offset, so a value is either exact or rejected.
 *
 * Leaves out: reading tensor data through read() instead of mmap, checksums
 * (the format has none), and writing tensors that do not fit in memory as
 * one borrowed buffer each. */
#include "core/io/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define QN_ST_MAX_EXACT 9007199254740992.0 /* 2^53 */
#define QN_ST_INDEX_NAME "model.safetensors.index.json"
#define QN_ST_SINGLE_NAME "model.safetensors"

/* ---- shared helpers ---------------------------------------------------- */

/* Byte offset of the first invalid UTF-8 sequence, or len when the whole
 * buffer is valid (RFC 3629: no overlongs, no surrogates, <= U+10FFFF). */
static size_t utf8_invalid_at(const unsigned char *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            return i;
        }
        if (len - i <= n) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k <= n; k++)
            if ((s[i + k] & 0xC0) != 0x80) return i;
        i += n + 1;
    }
    return len;
}

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

static char *path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

/* Why a JSON value is not an exact non-negative integer, or NULL if it is. */
static const char *json_uint_problem(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return "is not a number";
    double d = j->valuedouble;
    if (!isfinite(d)) return "is not finite";
    if (d < 0) return "is negative";
    if (d != floor(d)) return "is not an integer";
    if (d >= QN_ST_MAX_EXACT) return "is too large";
    *out = (uint64_t)d;
    return NULL;
}

static int is_json_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* ---- reader ------------------------------------------------------------ */

struct qn_st_file {
    char *path;
    void *map;
    size_t map_len;
    const unsigned char *data; /* data section */
    uint64_t data_size;
    qn_st_tensor *tensors; /* data-offset order */
    size_t n;
    const qn_st_tensor **by_name; /* name order */
    char **meta_keys;             /* key order */
    char **meta_vals;
    size_t n_meta;
};

const char *qn_st_path(const qn_st_file *f) {
    return f->path;
}
size_t qn_st_count(const qn_st_file *f) {
    return f->n;
}
const qn_st_tensor *qn_st_tensor_at(const qn_st_file *f, size_t i) {
    return i < f->n ? &f->tensors[i] : NULL;
}
size_t qn_st_metadata_count(const qn_st_file *f) {
    return f->n_meta;
}

void qn_st_metadata_at(const qn_st_file *f, size_t i, const char **key, const char **value) {
    *key = i < f->n_meta ? f->meta_keys[i] : NULL;
    *value = i < f->n_meta ? f->meta_vals[i] : NULL;
}

const char *qn_st_metadata_get(const qn_st_file *f, const char *key) {
    size_t lo = 0, hi = f->n_meta;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->meta_keys[mid], key);
        if (c == 0) return f->meta_vals[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

uint64_t qn_st_numel(const qn_st_tensor *t) {
    uint64_t n = 1;
    for (int32_t i = 0; i < t->ndim; i++)
        n *= (uint64_t)t->shape[i];
    return n;
}

const qn_st_tensor *qn_st_find(const qn_st_file *f, const char *name) {
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->by_name[mid]->name, name);
        if (c == 0) return f->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

qn_status qn_st_get(const qn_st_file *f, const char *name, const qn_st_tensor **out) {
    *out = qn_st_find(f, name);
    if (!*out) return qn_fail(QN_ERR_NOT_FOUND, "%s: no tensor '%s'", f->path, name);
    return QN_OK;
}

void qn_st_close(qn_st_file *f) {
    if (!f) return;
    if (f->map) munmap(f->map, f->map_len);
    for (size_t i = 0; i < f->n; i++)
        free((char *)f->tensors[i].name);
    free(f->tensors);
    free(f->by_name);
    for (size_t i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->path);
    free(f);
}

static int cmp_offset(const void *a, const void *b) {
    const qn_st_tensor *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    uint64_t ex = x->offset + x->nbytes, ey = y->offset + y->nbytes;
    if (ex != ey) return ex < ey ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_tensor_ptr_name(const void *a, const void *b) {
    const qn_st_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* Reads one tensor entry of the header into t (name already set). */
static qn_status parse_entry(const char *path, const cJSON *e, uint64_t data_size,
                             qn_st_tensor *t) {
    const char *nm = t->name;
    if (!cJSON_IsObject(e))
        return qn_fail(QN_ERR_FORMAT, "%s: tensor '%s': entry is not a JSON object", path, nm);
    const cJSON *dtype = NULL, *shape = NULL, *offs = NULL;
    for (const cJSON *c = e->child; c; c = c->next) {
        const cJSON **slot = NULL;
        if (strcmp(c->string, "dtype") == 0)
            slot = &dtype;
        else if (strcmp(c->string, "shape") == 0)
            slot = &shape;
        else if (strcmp(c->string, "data_offsets") == 0)
            slot = &offs;
        if (!slot) continue; /* unknown fields are ignored, as by other readers */
        if (*slot)
            return qn_fail(QN_ERR_FORMAT, "%s: tensor '%s': field \"%s\" appears twice", path, nm,
                           c->string);
        *slot = c;
    }
    if (!cJSON_IsString(dtype))
        return qn_fail(QN_ERR_FORMAT, "%s: tensor '%s': missing or non-string \"dtype\"", path, nm);
    if (qn_dtype_parse(dtype->valuestring, &t->dtype) != QN_OK)
        return qn_fail(QN_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%.40s'", path, nm,
                       dtype->valuestring);
    if (!cJSON_IsArray(shape))
        return qn_fail(QN_ERR_FORMAT, "%s: tensor '%s': missing or non-array \"shape\"", path, nm);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > QN_ST_MAX_DIMS)
        return qn_fail(QN_ERR_FORMAT, "%s: tensor '%s': shape has %d dims, at most %d supported",
                       path, nm, ndim, QN_ST_MAX_DIMS);
    t->ndim = ndim;
    uint64_t numel = 1;
    int overflow = 0;
    int i = 0;
    for (const cJSON *d = shape->child; d; d = d->next, i++) {
        uint64_t v = 0;
        const char *why = json_uint_problem(d, &v);
        if (why)
            return qn_fail(QN_ERR_FORMAT, "%s: tensor '%s': shape dim %d %s", path, nm, i, why);
        t->shape[i] = (int64_t)v;
        if (v && numel > UINT64_MAX / v) overflow = 1;
        numel *= v;
    }
    size_t esize = qn_dtype_size(t->dtype);
    if (overflow || numel > UINT64_MAX / esize)
        return qn_fail(QN_ERR_FORMAT, "%s: tensor '%s': shape overflows a 64-bit byte count", path,
                       nm);
    uint64_t want = numel * esize;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return qn_fail(QN_ERR_FORMAT,
                       "%s: tensor '%s': \"data_offsets\" is not an array of two integers", path,
                       nm);
    uint64_t begin = 0, end = 0;
    const char *why = json_uint_problem(offs->child, &begin);
    if (!why) why = json_uint_problem(offs->child->next, &end);
    if (why) return qn_fail(QN_ERR_FORMAT, "%s: tensor '%s': data_offsets entry %s", path, nm, why);
    if (end < begin)
        return qn_fail(QN_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu) are reversed",
                       path, nm, (unsigned long long)begin, (unsigned long long)end);
    if (end > data_size)
        return qn_fail(QN_ERR_FORMAT,
                       "%s: tensor '%s': data_offsets [%llu, %llu) lie outside the data section "
                       "(%llu bytes)",
                       path, nm, (unsigned long long)begin, (unsigned long long)end,
                       (unsigned long long)data_size);
    if (end - begin != want)
        return qn_fail(QN_ERR_FORMAT,
                       "%s: tensor '%s': byte size %llu from data_offsets does not match "
                       "shape and dtype %s (%llu elements, %llu bytes)",
                       path, nm, (unsigned long long)(end - begin), qn_dtype_name(t->dtype),
                       (unsigned long long)numel, (unsigned long long)want);
    t->offset = begin;
    t->nbytes = want;
    return QN_OK;
}

static qn_status parse_metadata(qn_st_file *f, const cJSON *m) {
    if (!cJSON_IsObject(m))
        return qn_fail(QN_ERR_FORMAT, "%s: __metadata__ is not a JSON object", f->path);
    size_t n = (size_t)cJSON_GetArraySize(m);
    f->meta_keys = calloc(n ? n : 1, sizeof(char *));
    f->meta_vals = calloc(n ? n : 1, sizeof(char *));
    if (!f->meta_keys || !f->meta_vals) return qn_fail(QN_ERR_NOMEM, "%s: out of memory", f->path);
    for (const cJSON *c = m->child; c; c = c->next) {
        if (!cJSON_IsString(c))
            return qn_fail(QN_ERR_FORMAT, "%s: __metadata__ value of '%s' is not a string", f->path,
                           c->string);
        /* insertion sort keeps keys ordered; metadata maps are tiny */
        size_t k = f->n_meta;
        while (k > 0 && strcmp(f->meta_keys[k - 1], c->string) > 0)
            k--;
        if (k > 0 && strcmp(f->meta_keys[k - 1], c->string) == 0)
            return qn_fail(QN_ERR_FORMAT, "%s: __metadata__ key '%s' appears twice", f->path,
                           c->string);
        char *key = xstrdup(c->string), *val = xstrdup(c->valuestring);
        if (!key || !val) {
            free(key);
            free(val);
            return qn_fail(QN_ERR_NOMEM, "%s: out of memory", f->path);
        }
        memmove(f->meta_keys + k + 1, f->meta_keys + k, (f->n_meta - k) * sizeof(char *));
        memmove(f->meta_vals + k + 1, f->meta_vals + k, (f->n_meta - k) * sizeof(char *));
        f->meta_keys[k] = key;
        f->meta_vals[k] = val;
        f->n_meta++;
    }
    return QN_OK;
}

/* Parses and validates header bytes hdr[0..len) against f->data_size. */
static qn_status parse_header(qn_st_file *f, const char *hdr, size_t len) {
    const char *path = f->path;
    if (len == 0 || hdr[0] != '{')
        return qn_fail(QN_ERR_FORMAT, "%s: header is not a JSON object (does not start with '{')",
                       path);
    size_t bad = utf8_invalid_at((const unsigned char *)hdr, len);
    if (bad != len)
        return qn_fail(QN_ERR_FORMAT,
                       "%s: header is not valid UTF-8 (bad byte 0x%02x at offset %zu)", path,
                       (unsigned char)hdr[bad], bad);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, len, &end, 0);
    if (!root) {
        /* On failure cJSON points end at the error (its global error
         * pointer is not thread-safe, so it is not used). */
        size_t at = end && end >= hdr && end <= hdr + len ? (size_t)(end - hdr) : 0;
        return qn_fail(QN_ERR_FORMAT, "%s: header is not valid JSON (error near byte %zu)", path,
                       at);
    }
    qn_status s = QN_OK;
    if (!cJSON_IsObject(root)) {
        s = qn_fail(QN_ERR_FORMAT, "%s: header is not a JSON object", path);
        goto done;
    }
    for (const char *p = end; p < hdr + len; p++) {
        if (!is_json_space(*p)) {
            s = qn_fail(QN_ERR_FORMAT,
                        "%s: header has bytes after the JSON object (offset %zu; only space "
                        "padding is allowed)",
                        path, (size_t)(p - hdr));
            goto done;
        }
    }
    size_t count = 0, n_meta_keys = 0;
    const cJSON *meta = NULL;
    for (const cJSON *c = root->child; c; c = c->next) {
        if (strcmp(c->string, "__metadata__") == 0) {
            meta = c;
            n_meta_keys++;
        } else {
            count++;
        }
    }
    if (n_meta_keys > 1) {
        s = qn_fail(QN_ERR_FORMAT, "%s: __metadata__ appears %zu times", path, n_meta_keys);
        goto done;
    }
    if (meta && (s = parse_metadata(f, meta)) != QN_OK) goto done;
    f->tensors = calloc(count ? count : 1, sizeof *f->tensors);
    f->by_name = calloc(count ? count : 1, sizeof *f->by_name);
    if (!f->tensors || !f->by_name) {
        s = qn_fail(QN_ERR_NOMEM, "%s: out of memory for %zu tensors", path, count);
        goto done;
    }
    for (const cJSON *c = root->child; c; c = c->next) {
        if (c == meta) continue;
        qn_st_tensor *t = &f->tensors[f->n];
        t->name = xstrdup(c->string);
        if (!t->name) {
            s = qn_fail(QN_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        f->n++;
        if ((s = parse_entry(path, c, f->data_size, t)) != QN_OK) goto done;
    }
    qsort(f->tensors, f->n, sizeof *f->tensors, cmp_offset);
    for (size_t i = 0; i < f->n; i++)
        f->by_name[i] = &f->tensors[i];
    qsort(f->by_name, f->n, sizeof *f->by_name, cmp_tensor_ptr_name);
    for (size_t i = 1; i < f->n; i++) {
        if (strcmp(f->by_name[i - 1]->name, f->by_name[i]->name) == 0) {
            s = qn_fail(QN_ERR_FORMAT, "%s: tensor '%s': name appears more than once in the header",
                        path, f->by_name[i]->name);
            goto done;
        }
    }
    /* The tensors must tile [0, data_size) exactly. */
    uint64_t covered = 0;
    const char *prev = NULL;
    for (size_t i = 0; i < f->n; i++) {
        const qn_st_tensor *t = &f->tensors[i];
        if (t->offset < covered) {
            s = qn_fail(QN_ERR_FORMAT,
                        "%s: tensor '%s': data_offsets [%llu, %llu) overlap tensor '%s' (which "
                        "ends at %llu)",
                        path, t->name, (unsigned long long)t->offset,
                        (unsigned long long)(t->offset + t->nbytes), prev,
                        (unsigned long long)covered);
            goto done;
        }
        if (t->offset > covered) {
            s = qn_fail(QN_ERR_FORMAT,
                        "%s: tensor '%s': hole in the data section: bytes [%llu, %llu) before it "
                        "belong to no tensor",
                        path, t->name, (unsigned long long)covered, (unsigned long long)t->offset);
            goto done;
        }
        covered = t->offset + t->nbytes;
        prev = t->name;
    }
    if (covered != f->data_size) {
        s = qn_fail(QN_ERR_FORMAT,
                    "%s: data section has %llu bytes but the tensors cover only %llu (the "
                    "trailing bytes belong to no tensor)",
                    path, (unsigned long long)f->data_size, (unsigned long long)covered);
        goto done;
    }
done:
    cJSON_Delete(root);
    return s;
}

static void set_data_pointers(qn_st_file *f) {
    for (size_t i = 0; i < f->n; i++)
        f->tensors[i].data = f->data + f->tensors[i].offset;
}

static uint64_t le64(const unsigned char *b) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | b[i];
    return v;
}

/* Checks the header length against the total size; sets f->data_size. */
static qn_status check_lengths(qn_st_file *f, uint64_t size, uint64_t hlen) {
    if (hlen > QN_ST_MAX_HEADER)
        return qn_fail(QN_ERR_TOO_LARGE, "%s: header length %llu exceeds the limit of %llu bytes",
                       f->path, (unsigned long long)hlen, (unsigned long long)QN_ST_MAX_HEADER);
    if (hlen > size - 8)
        return qn_fail(QN_ERR_FORMAT,
                       "%s: header length %llu runs past the end of the file (%llu bytes)", f->path,
                       (unsigned long long)hlen, (unsigned long long)size);
    f->data_size = size - 8 - hlen;
    return QN_OK;
}

static qn_st_file *file_new(const char *label) {
    qn_st_file *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->path = xstrdup(label);
    if (!f->path) {
        free(f);
        return NULL;
    }
    return f;
}

qn_status qn_st_open_memory(const void *data, size_t size, const char *label, qn_st_file **out) {
    *out = NULL;
    if (!label) label = "<memory>";
    qn_st_file *f = file_new(label);
    if (!f) return qn_fail(QN_ERR_NOMEM, "%s: out of memory", label);
    qn_status s = QN_OK;
    const unsigned char *b = data;
    if (size < 8) {
        s = qn_fail(QN_ERR_FORMAT, "%s: file is %zu bytes, too short for the 8-byte header length",
                    label, size);
        goto fail;
    }
    uint64_t hlen = le64(b);
    QN_CHECK_GOTO(check_lengths(f, size, hlen), s, fail);
    f->data = b + 8 + hlen;
    QN_CHECK_GOTO(parse_header(f, (const char *)b + 8, (size_t)hlen), s, fail);
    set_data_pointers(f);
    *out = f;
    return QN_OK;
fail:
    qn_st_close(f);
    return s;
}

static qn_status pread_all(int fd, void *buf, size_t len, uint64_t off, const char *path) {
    unsigned char *p = buf;
    while (len) {
        ssize_t r = pread(fd, p, len, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return qn_fail(QN_ERR_IO, "%s: read failed: %s", path, strerror(errno));
        if (r == 0) return qn_fail(QN_ERR_IO, "%s: file shrank while being read", path);
        p += r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    return QN_OK;
}

qn_status qn_st_open(const char *path, qn_st_file **out) {
    *out = NULL;
    qn_st_file *f = file_new(path);
    if (!f) return qn_fail(QN_ERR_NOMEM, "%s: out of memory", path);
    qn_status s = QN_OK;
    char *hdr = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        s = qn_fail(errno == ENOENT ? QN_ERR_NOT_FOUND : QN_ERR_IO, "%s: cannot open: %s", path,
                    strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        s = qn_fail(QN_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        s = qn_fail(QN_ERR_IO, "%s: not a regular file", path);
        goto fail;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < 8) {
        s = qn_fail(QN_ERR_FORMAT, "%s: file is %llu bytes, too short for the 8-byte header length",
                    path, (unsigned long long)size);
        goto fail;
    }
    unsigned char lenbuf[8];
    QN_CHECK_GOTO(pread_all(fd, lenbuf, 8, 0, path), s, fail);
    uint64_t hlen = le64(lenbuf);
    QN_CHECK_GOTO(check_lengths(f, size, hlen), s, fail);
    hdr = malloc(hlen ? (size_t)hlen : 1);
    if (!hdr) {
        s = qn_fail(QN_ERR_NOMEM, "%s: out of memory for a %llu-byte header", path,
                    (unsigned long long)hlen);
        goto fail;
    }
    QN_CHECK_GOTO(pread_all(fd, hdr, (size_t)hlen, 8, path), s, fail);
    QN_CHECK_GOTO(parse_header(f, hdr, (size_t)hlen), s, fail);
    /* Map only now that the header is known to be sane; no data page is
     * read until a caller touches it. */
    f->map_len = (size_t)size;
    f->map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        s = qn_fail(QN_ERR_IO, "%s: mmap of %llu bytes failed: %s", path, (unsigned long long)size,
                    strerror(errno));
        goto fail;
    }
    f->data = (const unsigned char *)f->map + 8 + hlen;
    set_data_pointers(f);
    free(hdr);
    close(fd);
    *out = f;
    return QN_OK;
fail:
    free(hdr);
    if (fd >= 0) close(fd);
    qn_st_close(f);
    return s;
}

/* ---- sharded models ------------------------------------------------------ */

typedef struct model_entry {
    char *name;
    size_t shard;
} model_entry;

struct qn_st_model {
    char *index_path; /* the index, or the single file */
    char *dir;
    model_entry *entries; /* name order */
    size_t n;
    char **shard_names;
    qn_st_file **shards; /* NULL until first used */
    size_t n_shards;
    pthread_mutex_t mu;
};

size_t qn_st_model_count(const qn_st_model *m) {
    return m->n;
}
const char *qn_st_model_name_at(const qn_st_model *m, size_t i) {
    return i < m->n ? m->entries[i].name : NULL;
}

void qn_st_model_close(qn_st_model *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n; i++)
        free(m->entries[i].name);
    free(m->entries);
    for (size_t i = 0; i < m->n_shards; i++) {
        free(m->shard_names[i]);
        qn_st_close(m->shards[i]);
    }
    free(m->shard_names);
    free(m->shards);
    free(m->index_path);
    free(m->dir);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const model_entry *)a)->name, ((const model_entry *)b)->name);
}

static qn_status model_new(const char *index_path, qn_st_model **out) {
    qn_st_model *m = calloc(1, sizeof *m);
    if (!m) return qn_fail(QN_ERR_NOMEM, "%s: out of memory", index_path);
    pthread_mutex_init(&m->mu, NULL);
    m->index_path = xstrdup(index_path);
    const char *slash = strrchr(index_path, '/');
    m->dir = slash ? strndup(index_path, (size_t)(slash - index_path + 1)) : xstrdup("./");
    if (!m->index_path || !m->dir) {
        qn_st_model_close(m);
        return qn_fail(QN_ERR_NOMEM, "%s: out of memory", index_path);
    }
    *out = m;
    return QN_OK;
}

static qn_status model_open_single(const char *path, qn_st_model **out) {
    qn_st_model *m = NULL;
    QN_CHECK(model_new(path, &m));
    qn_status s = QN_OK;
    qn_st_file *f = NULL;
    QN_CHECK_GOTO(qn_st_open(path, &f), s, fail);
    m->shards = calloc(1, sizeof *m->shards);
    m->shard_names = calloc(1, sizeof *m->shard_names);
    m->entries = calloc(f->n ? f->n : 1, sizeof *m->entries);
    if (!m->shards || !m->shard_names || !m->entries) goto nomem;
    m->shards[0] = f;
    m->n_shards = 1;
    m->shard_names[0] = xstrdup(path);
    if (!m->shard_names[0]) goto nomem;
    for (size_t i = 0; i < f->n; i++) {
        m->entries[i].name = xstrdup(f->by_name[i]->name);
        if (!m->entries[i].name) goto nomem;
        m->n++;
    }
    *out = m;
    return QN_OK;
nomem:
    if (m->n_shards == 0) qn_st_close(f);
    s = qn_fail(QN_ERR_NOMEM, "%s: out of memory", path);
fail:
    qn_st_model_close(m);
    return s;
}

/* A shard name from an index must be a plain file name in the index's
 * directory: anything else could make a downloaded index read other files. */
static int shard_name_ok(const char *s) {
    return s[0] != '\0' && s[0] != '.' && strchr(s, '/') == NULL;
}

static qn_status model_open_index(const char *path, qn_st_model **out) {
    qn_st_model *m = NULL;
    QN_CHECK(model_new(path, &m));
    qn_status s = QN_OK;
    char *text = NULL;
    cJSON *root = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        s = qn_fail(errno == ENOENT ? QN_ERR_NOT_FOUND : QN_ERR_IO, "%s: cannot open: %s", path,
                    strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        s = qn_fail(QN_ERR_IO, "%s: not a readable regular file", path);
        goto fail;
    }
    if ((uint64_t)st.st_size > QN_ST_MAX_HEADER) {
        s = qn_fail(QN_ERR_TOO_LARGE, "%s: index is %lld bytes, over the %llu-byte limit", path,
                    (long long)st.st_size, (unsigned long long)QN_ST_MAX_HEADER);
        goto fail;
    }
    size_t len = (size_t)st.st_size;
    text = malloc(len + 1);
    if (!text) goto nomem;
    if (len && fread(text, 1, len, fp) != len) {
        s = qn_fail(QN_ERR_IO, "%s: read failed", path);
        goto fail;
    }
    text[len] = '\0';
    size_t bad = utf8_invalid_at((const unsigned char *)text, len);
    if (bad != len) {
        s = qn_fail(QN_ERR_FORMAT, "%s: not valid UTF-8 (offset %zu)", path, bad);
        goto fail;
    }
    root = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsObject(root)) {
        s = qn_fail(QN_ERR_FORMAT, "%s: not a JSON object", path);
        goto fail;
    }
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) {
        s = qn_fail(QN_ERR_FORMAT, "%s: missing or non-object \"weight_map\"", path);
        goto fail;
    }
    size_t n = (size_t)cJSON_GetArraySize(wm);
    m->entries = calloc(n ? n : 1, sizeof *m->entries);
    m->shard_names = calloc(n ? n : 1, sizeof *m->shard_names);
    m->shards = calloc(n ? n : 1, sizeof *m->shards);
    if (!m->entries || !m->shard_names || !m->shards) goto nomem;
    for (const cJSON *c = wm->child; c; c = c->next) {
        if (!cJSON_IsString(c) || !shard_name_ok(c->valuestring)) {
            s = qn_fail(QN_ERR_FORMAT,
                        "%s: weight_map entry for tensor '%s' is not a plain shard file name", path,
                        c->string);
            goto fail;
        }
        /* Shards are few: a linear search keeps their order of appearance. */
        size_t k = 0;
        while (k < m->n_shards && strcmp(m->shard_names[k], c->valuestring) != 0)
            k++;
        if (k == m->n_shards) {
            m->shard_names[k] = xstrdup(c->valuestring);
            if (!m->shard_names[k]) goto nomem;
            m->n_shards++;
        }
        m->entries[m->n].name = xstrdup(c->string);
        if (!m->entries[m->n].name) goto nomem;
        m->entries[m->n].shard = k;
        m->n++;
    }
    qsort(m->entries, m->n, sizeof *m->entries, cmp_entry);
    for (size_t i = 1; i < m->n; i++) {
        if (strcmp(m->entries[i - 1].name, m->entries[i].name) == 0) {
            s = qn_fail(QN_ERR_FORMAT, "%s: tensor '%s' appears more than once in weight_map", path,
                        m->entries[i].name);
            goto fail;
        }
    }
    cJSON_Delete(root);
    free(text);
    fclose(fp);
    *out = m;
    return QN_OK;
nomem:
    s = qn_fail(QN_ERR_NOMEM, "%s: out of memory", path);
fail:
    cJSON_Delete(root);
    free(text);
    if (fp) fclose(fp);
    qn_st_model_close(m);
    return s;
}

static int suffix_is(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

qn_status qn_st_model_open(const char *path, qn_st_model **out) {
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0)
        return qn_fail(errno == ENOENT ? QN_ERR_NOT_FOUND : QN_ERR_IO, "%s: cannot open: %s", path,
                       strerror(errno));
    if (!S_ISDIR(st.st_mode)) {
        if (suffix_is(path, ".json")) return model_open_index(path, out);
        return model_open_single(path, out);
    }
    char *idx = path_join(path, QN_ST_INDEX_NAME);
    char *single = path_join(path, QN_ST_SINGLE_NAME);
    qn_status s;
    if (!idx || !single) {
        s = qn_fail(QN_ERR_NOMEM, "%s: out of memory", path);
    } else if (access(idx, F_OK) == 0) {
        s = model_open_index(idx, out);
    } else if (access(single, F_OK) == 0) {
        s = model_open_single(single, out);
    } else {
        s = qn_fail(QN_ERR_NOT_FOUND, "%s: directory has neither %s nor %s", path, QN_ST_INDEX_NAME,
                    QN_ST_SINGLE_NAME);
    }
    free(idx);
    free(single);
    return s;
}

qn_status qn_st_model_get(qn_st_model *m, const char *name, const qn_st_tensor **out) {
    *out = NULL;
    model_entry key = {.name = (char *)name};
    const model_entry *e = bsearch(&key, m->entries, m->n, sizeof *m->entries, cmp_entry);
    if (!e) return qn_fail(QN_ERR_NOT_FOUND, "%s: no tensor '%s'", m->index_path, name);
    qn_status s = QN_OK;
    pthread_mutex_lock(&m->mu);
    qn_st_file *f = m->shards[e->shard];
    if (!f) {
        char *p = path_join(m->dir, m->shard_names[e->shard]);
        if (!p) {
            s = qn_fail(QN_ERR_NOMEM, "%s: out of memory", m->index_path);
        } else if ((s = qn_st_open(p, &f)) != QN_OK) {
            char inner[768];
            snprintf(inner, sizeof inner, "%s", qn_last_error());
            s = qn_fail(s, "%s: shard '%s' (holding tensor '%s'): %s", m->index_path,
                        m->shard_names[e->shard], name, inner);
        } else {
            m->shards[e->shard] = f;
        }
        free(p);
    }
    pthread_mutex_unlock(&m->mu);
    if (s != QN_OK) return s;
    *out = qn_st_find(f, name);
    if (!*out)
        return qn_fail(QN_ERR_NOT_FOUND,
                       "%s: index puts tensor '%s' in shard '%s', which has no "
                       "such tensor",
                       m->index_path, name, m->shard_names[e->shard]);
    return QN_OK;
}

/* ---- writer ------------------------------------------------------------- */

typedef struct wtensor {
    char *name;
    qn_dtype dtype;
    int32_t ndim;
    int64_t shape[QN_ST_MAX_DIMS];
    const void *data;
    uint64_t nbytes;
    uint64_t offset; /* assigned when a file is laid out */
} wtensor;

struct qn_st_writer {
    char *path;
    wtensor *t;
    size_t n, cap;
    uint32_t *slots; /* open-addressing set of index+1, for duplicate names */
    size_t nslots;
    char **meta_keys, **meta_vals;
    size_t n_meta;
};

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

qn_status qn_st_writer_init(qn_st_writer **out, const char *path) {
    *out = NULL;
    qn_st_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = xstrdup(path))) {
        free(w);
        return qn_fail(QN_ERR_NOMEM, "%s: out of memory", path);
    }
    *out = w;
    return QN_OK;
}

void qn_st_writer_free(qn_st_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n; i++)
        free(w->t[i].name);
    free(w->t);
    free(w->slots);
    for (size_t i = 0; i < w->n_meta; i++) {
        free(w->meta_keys[i]);
        free(w->meta_vals[i]);
    }
    free(w->meta_keys);
    free(w->meta_vals);
    free(w->path);
    free(w);
}

/* Finds name in the set: returns the slot holding it or the empty slot
 * where it would go. nslots is a power of two and never full. */
static size_t slot_for(const qn_st_writer *w, const char *name) {
    size_t mask = w->nslots - 1, i = (size_t)hash_name(name) & mask;
    while (w->slots[i] && strcmp(w->t[w->slots[i] - 1].name, name) != 0)
        i = (i + 1) & mask;
    return i;
}

static qn_status grow_set(qn_st_writer *w) {
    size_t ns = w->nslots ? w->nslots * 2 : 64;
    uint32_t *old = w->slots;
    size_t old_n = w->nslots;
    w->slots = calloc(ns, sizeof *w->slots);
    if (!w->slots) {
        w->slots = old;
        return qn_fail(QN_ERR_NOMEM, "%s: out of memory", w->path);
    }
    w->nslots = ns;
    for (size_t i = 0; i < old_n; i++)
        if (old[i]) w->slots[slot_for(w, w->t[old[i] - 1].name)] = old[i];
    free(old);
    return QN_OK;
}

qn_status qn_st_writer_add(qn_st_writer *w, const char *name, qn_dtype dtype, int32_t ndim,
                           const int64_t *shape, const void *data) {
    if (!name || !*name || strcmp(name, "__metadata__") == 0)
        return qn_fail(QN_ERR_INVALID, "%s: invalid tensor name '%s'", w->path,
                       name ? name : "(null)");
    if (utf8_invalid_at((const unsigned char *)name, strlen(name)) != strlen(name))
        return qn_fail(QN_ERR_INVALID, "%s: tensor name is not valid UTF-8", w->path);
    if (qn_dtype_size(dtype) == 0)
        return qn_fail(QN_ERR_INVALID, "%s: tensor '%s': invalid dtype %d", w->path, name,
                       (int)dtype);
    if (ndim < 0 || ndim > QN_ST_MAX_DIMS || (ndim > 0 && !shape))
        return qn_fail(QN_ERR_INVALID, "%s: tensor '%s': ndim %d outside 0..%d", w->path, name,
                       (int)ndim, QN_ST_MAX_DIMS);
    if (w->n >= UINT32_MAX - 1) return qn_fail(QN_ERR_TOO_LARGE, "%s: too many tensors", w->path);
    uint64_t numel = 1;
    for (int32_t i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (double)shape[i] >= QN_ST_MAX_EXACT)
            return qn_fail(QN_ERR_INVALID, "%s: tensor '%s': dim %d is %lld", w->path, name, (int)i,
                           (long long)shape[i]);
        uint64_t v = (uint64_t)shape[i];
        if (v && numel > UINT64_MAX / v / 8)
            return qn_fail(QN_ERR_INVALID, "%s: tensor '%s': shape overflows", w->path, name);
        numel *= v;
    }
    uint64_t nbytes = numel * qn_dtype_size(dtype);
    if (nbytes && !data)
        return qn_fail(QN_ERR_INVALID, "%s: tensor '%s': data is NULL", w->path, name);
    if ((w->n + 1) * 2 > w->nslots) QN_CHECK(grow_set(w));
    size_t slot = slot_for(w, name);
    if (w->slots[slot]) return qn_fail(QN_ERR_EXISTS, "%s: tensor '%s' added twice", w->path, name);
    if (w->n == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 16;
        wtensor *nt = realloc(w->t, nc * sizeof *nt);
        if (!nt) return qn_fail(QN_ERR_NOMEM, "%s: out of memory", w->path);
        w->t = nt;
        w->cap = nc;
    }
    wtensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->name = xstrdup(name);
    if (!t->name) return qn_fail(QN_ERR_NOMEM, "%s: out of memory", w->path);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int32_t i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    t->data = data;
    t->nbytes = nbytes;
    w->n++;
    w->slots[slot] = (uint32_t)w->n;
    return QN_OK;
}

qn_status qn_st_writer_set_metadata(qn_st_writer *w, const char *key, const char *value) {
    if (!key || !value)
        return qn_fail(QN_ERR_INVALID, "%s: metadata key and value must not be NULL", w->path);
    if (utf8_invalid_at((const unsigned char *)key, strlen(key)) != strlen(key) ||
        utf8_invalid_at((const unsigned char *)value, strlen(value)) != strlen(value))
        return qn_fail(QN_ERR_INVALID, "%s: metadata '%s' is not valid UTF-8", w->path, key);
    size_t k = 0;
    while (k < w->n_meta && strcmp(w->meta_keys[k], key) < 0)
        k++;
    char *v = xstrdup(value);
    if (!v) return qn_fail(QN_ERR_NOMEM, "%s: out of memory", w->path);
    if (k < w->n_meta && strcmp(w->meta_keys[k], key) == 0) {
        free(w->meta_vals[k]);
        w->meta_vals[k] = v;
        return QN_OK;
    }
    char *kk = xstrdup(key);
    char **nk = realloc(w->meta_keys, (w->n_meta + 1) * sizeof *nk);
    if (nk) w->meta_keys = nk;
    char **nv = realloc(w->meta_vals, (w->n_meta + 1) * sizeof *nv);
    if (nv) w->meta_vals = nv;
    if (!kk || !nk || !nv) {
        free(kk);
        free(v);
        return qn_fail(QN_ERR_NOMEM, "%s: out of memory", w->path);
    }
    memmove(w->meta_keys + k + 1, w->meta_keys + k, (w->n_meta - k) * sizeof *nk);
    memmove(w->meta_vals + k + 1, w->meta_vals + k, (w->n_meta - k) * sizeof *nv);
    w->meta_keys[k] = kk;
    w->meta_vals[k] = v;
    w->n_meta++;
    return QN_OK;
}

/* A growable string; on allocation failure it stops growing and sets oom. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->len + n + 1)
            nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sbuf *b, const char *s) {
    sb_add(b, s, strlen(s));
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) sb_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void sb_json_str(sbuf *b, const char *s) {
    sb_add(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sb_add(b, e, 2);
        } else if (c < 0x20) {
            sb_printf(b, "\\u%04x", c);
        } else {
            sb_add(b, s, 1);
        }
    }
    sb_add(b, "\"", 1);
}

static int cmp_wname(const void *a, const void *b) {
    return strcmp((*(wtensor *const *)a)->name, (*(wtensor *const *)b)->name);
}

/* Data order: larger elements first so every tensor is aligned to its
 * element size (all sizes are powers of two and the data section starts at
 * a multiple of 8), then by name for determinism. */
static int cmp_wlayout(const void *a, const void *b) {
    const wtensor *x = *(wtensor *const *)a, *y = *(wtensor *const *)b;
    size_t sx = qn_dtype_size(x->dtype), sy = qn_dtype_size(y->dtype);
    if (sx != sy) return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

static qn_status write_all(int fd, const void *buf, size_t len, const char *path) {
    const unsigned char *p = buf;
    while (len) {
        ssize_t r = write(fd, p, len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return qn_fail(QN_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        p += r;
        len -= (size_t)r;
    }
    return QN_OK;
}

/* Writes bytes produced by `emit` to path through a temporary file in the
 * same directory and a rename. */
typedef qn_status (*emit_fn)(int fd, const char *path, void *ctx);

static qn_status write_atomic(const char *path, emit_fn emit, void *ctx) {
    size_t pl = strlen(path);
    char *tmp = malloc(pl + 16);
    if (!tmp) return qn_fail(QN_ERR_NOMEM, "%s: out of memory", path);
    snprintf(tmp, pl + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        qn_status s =
            qn_fail(QN_ERR_IO, "%s: cannot create temporary file: %s", path, strerror(errno));
        free(tmp);
        return s;
    }
    qn_status s = QN_OK;
    if (fchmod(fd, 0644) != 0) {
        s = qn_fail(QN_ERR_IO, "%s: chmod: %s", tmp, strerror(errno));
        goto fail;
    }
    QN_CHECK_GOTO(emit(fd, path, ctx), s, fail);
    if (fsync(fd) != 0) {
        s = qn_fail(QN_ERR_IO, "%s: fsync: %s", path, strerror(errno));
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        s = qn_fail(QN_ERR_IO, "%s: close: %s", path, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        s = qn_fail(QN_ERR_IO, "%s: rename from %s: %s", path, tmp, strerror(errno));
        goto fail;
    }
    free(tmp);
    return QN_OK;
fail:
    if (fd >= 0) close(fd);
    unlink(tmp);
    free(tmp);
    return s;
}

typedef struct file_job {
    const qn_st_writer *w;
    wtensor **t; /* the tensors of this file */
    size_t n;
} file_job;

static qn_status emit_file(int fd, const char *path, void *ctx) {
    file_job *job = ctx;
    const qn_st_writer *w = job->w;
    qn_status s = QN_OK;
    wtensor **order = malloc((job->n ? job->n : 1) * sizeof *order);
    sbuf h = {0};
    if (!order) return qn_fail(QN_ERR_NOMEM, "%s: out of memory", path);
    memcpy(order, job->t, job->n * sizeof *order);
    qsort(order, job->n, sizeof *order, cmp_wlayout);
    uint64_t off = 0;
    for (size_t i = 0; i < job->n; i++) {
        order[i]->offset = off;
        off += order[i]->nbytes;
    }
    /* header keys by name */
    qsort(job->t, job->n, sizeof *job->t, cmp_wname);
    sb_puts(&h, "{");
    int first = 1;
    if (w->n_meta) {
        sb_puts(&h, "\"__metadata__\":{");
        for (size_t i = 0; i < w->n_meta; i++) {
            if (i) sb_puts(&h, ",");
            sb_json_str(&h, w->meta_keys[i]);
            sb_puts(&h, ":");
            sb_json_str(&h, w->meta_vals[i]);
        }
        sb_puts(&h, "}");
        first = 0;
    }
    for (size_t i = 0; i < job->n; i++) {
        const wtensor *t = job->t[i];
        if (!first) sb_puts(&h, ",");
        first = 0;
        sb_json_str(&h, t->name);
        sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", qn_dtype_name(t->dtype));
        for (int32_t d = 0; d < t->ndim; d++)
            sb_printf(&h, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        sb_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)t->offset,
                  (unsigned long long)(t->offset + t->nbytes));
    }
    sb_puts(&h, "}");
    while (!h.oom && h.len % 8)
        sb_puts(&h, " ");
    if (h.oom) {
        s = qn_fail(QN_ERR_NOMEM, "%s: out of memory for the header", path);
        goto done;
    }
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++)
        lenbuf[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
    QN_CHECK_GOTO(write_all(fd, lenbuf, 8, path), s, done);
    QN_CHECK_GOTO(write_all(fd, h.p, h.len, path), s, done);
    for (size_t i = 0; i < job->n; i++)
        QN_CHECK_GOTO(write_all(fd, order[i]->data, (size_t)order[i]->nbytes, path), s, done);
done:
    free(h.p);
    free(order);
    return s;
}

qn_status qn_st_writer_finish(qn_st_writer *w) {
    wtensor **all = malloc((w->n ? w->n : 1) * sizeof *all);
    if (!all) return qn_fail(QN_ERR_NOMEM, "%s: out of memory", w->path);
    for (size_t i = 0; i < w->n; i++)
        all[i] = &w->t[i];
    file_job job = {w, all, w->n};
    qn_status s = write_atomic(w->path, emit_file, &job);
    free(all);
    return s;
}

typedef struct index_job {
    wtensor **t; /* name order */
    size_t n;
    size_t *shard_of;
    char **shard_names;
    uint64_t total;
} index_job;

static qn_status emit_index(int fd, const char *path, void *ctx) {
    index_job *job = ctx;
    sbuf b = {0};
    sb_printf(&b, "{\n  \"metadata\": {\n    \"total_size\": %llu\n  },\n  \"weight_map\": {",
              (unsigned long long)job->total);
    for (size_t i = 0; i < job->n; i++) {
        sb_puts(&b, i ? ",\n    " : "\n    ");
        sb_json_str(&b, job->t[i]->name);
        sb_puts(&b, ": ");
        sb_json_str(&b, job->shard_names[job->shard_of[i]]);
    }
    sb_puts(&b, "\n  }\n}\n");
    qn_status s =
        b.oom ? qn_fail(QN_ERR_NOMEM, "%s: out of memory", path) : write_all(fd, b.p, b.len, path);
    free(b.p);
    return s;
}

qn_status qn_st_writer_finish_sharded(qn_st_writer *w, uint64_t max_shard_bytes) {
    if (mkdir(w->path, 0755) != 0 && errno != EEXIST)
        return qn_fail(QN_ERR_IO, "%s: cannot create directory: %s", w->path, strerror(errno));
    qn_status s = QN_OK;
    size_t n = w->n;
    wtensor **byname = malloc((n ? n : 1) * sizeof *byname);
    size_t *shard_of = malloc((n ? n : 1) * sizeof *shard_of);
    size_t n_shards = 0;
    char **names = NULL;
    if (!byname || !shard_of) goto nomem;
    for (size_t i = 0; i < n; i++)
        byname[i] = &w->t[i];
    qsort(byname, n, sizeof *byname, cmp_wname);
    uint64_t used = 0, total = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t sz = byname[i]->nbytes;
        if (n_shards == 0 || (used > 0 && used + sz > max_shard_bytes)) {
            n_shards++;
            used = 0;
        }
        shard_of[i] = n_shards - 1;
        used += sz;
        total += sz;
    }
    if (n_shards == 0) n_shards = 1; /* no tensors: one empty shard */
    names = calloc(n_shards, sizeof *names);
    if (!names) goto nomem;
    for (size_t k = 0; k < n_shards; k++) {
        char buf[96];
        snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", k + 1, n_shards);
        if (!(names[k] = xstrdup(buf))) goto nomem;
    }
    for (size_t k = 0, i = 0; k < n_shards; k++) {
        size_t start = i;
        while (i < n && shard_of[i] == k)
            i++;
        char *p = path_join(w->path, names[k]);
        if (!p) goto nomem;
        file_job job = {w, byname + start, i - start};
        s = write_atomic(p, emit_file, &job);
        free(p);
        if (s != QN_OK) goto done;
    }
    /* emit_file re-sorted each slice by name, which leaves byname in name
     * order, as the index needs. */
    char *ip = path_join(w->path, QN_ST_INDEX_NAME);
    if (!ip) goto nomem;
    index_job ij = {byname, n, shard_of, names, total};
    s = write_atomic(ip, emit_index, &ij);
    free(ip);
    goto done;
nomem:
    s = qn_fail(QN_ERR_NOMEM, "%s: out of memory", w->path);
done:
    if (names)
        for (size_t k = 0; k < n_shards; k++)
            free(names[k]);
    free(names);
    free(byname);
    free(shard_of);
    return s;
}
