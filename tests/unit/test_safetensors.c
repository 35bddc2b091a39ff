/* test_safetensors.c — the safetensors writer and reader: round trips for
 * every dtype (single file, memory, sharded), determinism and alignment of
 * the writer's output, a file written by the Python safetensors package,
 * and every malformed-input rule of safetensors.h rejected with a message
 * that names the file and the problem. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/io/safetensors.h"
#include "tests/test_util.h"

static char *dup_path(const char *name) {
    return strdup(qn_test_path(name));
}

/* A deterministic byte pattern that differs per tensor. */
static void fill(unsigned char *p, size_t n, unsigned seed) {
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (unsigned char)(x >> 16);
    }
}

typedef struct spec {
    const char *name;
    qn_dtype dtype;
    int32_t ndim;
    int64_t shape[QN_ST_MAX_DIMS];
} spec;

/* One tensor of every dtype, with odd element counts so that a layout by
 * name alone would misalign the wider types, plus a scalar, an empty tensor
 * and an 8-dim one. */
static const spec k_specs[] = {
    {"a.u8", QN_DTYPE_U8, 1, {7}},
    {"b.f64", QN_DTYPE_F64, 2, {3, 5}},
    {"c.bf16", QN_DTYPE_BF16, 3, {2, 3, 3}},
    {"d.f8", QN_DTYPE_F8_E4M3, 2, {5, 3}},
    {"e.i32", QN_DTYPE_I32, 1, {9}},
    {"f.f16", QN_DTYPE_F16, 2, {1, 11}},
    {"g.i64", QN_DTYPE_I64, 0, {0}},
    {"h.f32", QN_DTYPE_F32, 2, {4, 3}},
    {"i.empty", QN_DTYPE_F32, 2, {0, 4}},
    {"j.rank8", QN_DTYPE_U8, 8, {1, 2, 1, 2, 1, 2, 1, 3}},
    {"k.\"quoted\\name\"\xc3\xa9", QN_DTYPE_BF16, 1, {2}},
};
#define NSPECS (sizeof k_specs / sizeof k_specs[0])

static size_t spec_bytes(const spec *s) {
    size_t n = qn_dtype_size(s->dtype);
    for (int i = 0; i < s->ndim; i++)
        n *= (size_t)s->shape[i];
    return n;
}

static unsigned char *g_data[NSPECS];

static int setup(void **state) {
    for (size_t i = 0; i < NSPECS; i++) {
        size_t n = spec_bytes(&k_specs[i]);
        g_data[i] = malloc(n ? n : 1);
        fill(g_data[i], n, (unsigned)i + 1);
    }
    return 0;
}

static int teardown(void **state) {
    for (size_t i = 0; i < NSPECS; i++)
        free(g_data[i]);
    return 0;
}

/* Adds the specs in the order given by perm (so determinism can be tested
 * against insertion order). */
static void add_all(qn_st_writer *w, const size_t *perm) {
    for (size_t k = 0; k < NSPECS; k++) {
        size_t i = perm ? perm[k] : k;
        const spec *s = &k_specs[i];
        assert_int_equal(qn_st_writer_add(w, s->name, s->dtype, s->ndim, s->shape, g_data[i]),
                         QN_OK);
    }
}

static void check_all(const qn_st_file *f) {
    assert_int_equal(qn_st_count(f), NSPECS);
    for (size_t i = 0; i < NSPECS; i++) {
        const spec *s = &k_specs[i];
        const qn_st_tensor *t = qn_st_find(f, s->name);
        if (!t) fail_msg("tensor %s missing", s->name);
        assert_string_equal(t->name, s->name);
        assert_int_equal(t->dtype, s->dtype);
        assert_int_equal(t->ndim, s->ndim);
        for (int d = 0; d < s->ndim; d++)
            assert_int_equal(t->shape[d], s->shape[d]);
        assert_int_equal(t->nbytes, spec_bytes(s));
        assert_int_equal(qn_st_numel(t) * qn_dtype_size(t->dtype), t->nbytes);
        if (t->nbytes) assert_memory_equal(t->data, g_data[i], t->nbytes);
        /* the writer aligns every tensor to its element size */
        assert_int_equal(t->offset % qn_dtype_size(t->dtype), 0);
        assert_int_equal((uintptr_t)t->data % qn_dtype_size(t->dtype), 0);
    }
    assert_null(qn_st_find(f, "nope"));
    const qn_st_tensor *t = NULL;
    assert_int_equal(qn_st_get(f, "nope", &t), QN_ERR_NOT_FOUND);
    assert_non_null(strstr(qn_last_error(), "nope"));
    assert_non_null(strstr(qn_last_error(), qn_st_path(f)));
    /* tensors come in data-offset order */
    for (size_t i = 1; i < qn_st_count(f); i++)
        assert_true(qn_st_tensor_at(f, i - 1)->offset <= qn_st_tensor_at(f, i)->offset);
    assert_null(qn_st_tensor_at(f, NSPECS));
}

static void test_roundtrip_every_dtype(void **state) {
    char *path = dup_path("all.safetensors");
    qn_st_writer *w = NULL;
    assert_int_equal(qn_st_writer_init(&w, path), QN_OK);
    add_all(w, NULL);
    assert_int_equal(qn_st_writer_set_metadata(w, "format", "pt"), QN_OK);
    assert_int_equal(qn_st_writer_set_metadata(w, "note", "x"), QN_OK);
    assert_int_equal(qn_st_writer_set_metadata(w, "note", "line\n\"two\""), QN_OK); /* replaces */
    assert_int_equal(qn_st_writer_finish(w), QN_OK);
    qn_st_writer_free(w);

    qn_st_file *f = NULL;
    assert_int_equal(qn_st_open(path, &f), QN_OK);
    check_all(f);
    assert_int_equal(qn_st_metadata_count(f), 2);
    const char *k, *v;
    qn_st_metadata_at(f, 0, &k, &v);
    assert_string_equal(k, "format");
    assert_string_equal(v, "pt");
    assert_string_equal(qn_st_metadata_get(f, "note"), "line\n\"two\"");
    assert_null(qn_st_metadata_get(f, "absent"));
    qn_st_close(f);

    /* header length is a multiple of 8 and the rest is padding spaces */
    size_t len = 0;
    char *bytes = qn_test_read_file(path, &len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | (unsigned char)bytes[i];
    assert_int_equal(hlen % 8, 0);
    assert_true(8 + hlen <= len);
    assert_int_equal(bytes[8], '{');

    /* the same bytes from memory */
    assert_int_equal(qn_st_open_memory(bytes, len, "mem.safetensors", &f), QN_OK);
    check_all(f);
    assert_string_equal(qn_st_path(f), "mem.safetensors");
    qn_st_close(f);
    free(bytes);
    free(path);
}

static void test_deterministic(void **state) {
    char *p1 = dup_path("det1.safetensors"), *p2 = dup_path("det2.safetensors");
    size_t rev[NSPECS];
    for (size_t i = 0; i < NSPECS; i++)
        rev[i] = NSPECS - 1 - i;
    qn_st_writer *w = NULL;
    assert_int_equal(qn_st_writer_init(&w, p1), QN_OK);
    add_all(w, NULL);
    assert_int_equal(qn_st_writer_set_metadata(w, "b", "2"), QN_OK);
    assert_int_equal(qn_st_writer_set_metadata(w, "a", "1"), QN_OK);
    assert_int_equal(qn_st_writer_finish(w), QN_OK);
    qn_st_writer_free(w);
    assert_int_equal(qn_st_writer_init(&w, p2), QN_OK);
    add_all(w, rev);
    assert_int_equal(qn_st_writer_set_metadata(w, "a", "1"), QN_OK);
    assert_int_equal(qn_st_writer_set_metadata(w, "b", "2"), QN_OK);
    assert_int_equal(qn_st_writer_finish(w), QN_OK);
    qn_st_writer_free(w);
    size_t l1, l2;
    char *b1 = qn_test_read_file(p1, &l1), *b2 = qn_test_read_file(p2, &l2);
    assert_int_equal(l1, l2);
    assert_memory_equal(b1, b2, l1);
    /* no temporary file is left behind */
    DIR *d = opendir(qn_test_tmpdir());
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (strstr(e->d_name, ".tmp.")) fail_msg("left behind: %s", e->d_name);
    closedir(d);
    free(b1);
    free(b2);
    free(p1);
    free(p2);
}

static void test_writer_rejects(void **state) {
    char *path = dup_path("never.safetensors");
    qn_st_writer *w = NULL;
    int64_t shape[2] = {2, 2};
    float d[4] = {0};
    assert_int_equal(qn_st_writer_init(&w, path), QN_OK);
    assert_int_equal(qn_st_writer_add(w, "x", QN_DTYPE_F32, 2, shape, d), QN_OK);
    assert_int_equal(qn_st_writer_add(w, "x", QN_DTYPE_F32, 2, shape, d), QN_ERR_EXISTS);
    assert_non_null(strstr(qn_last_error(), "'x' added twice"));
    assert_int_equal(qn_st_writer_add(w, "", QN_DTYPE_F32, 2, shape, d), QN_ERR_INVALID);
    assert_int_equal(qn_st_writer_add(w, "__metadata__", QN_DTYPE_F32, 2, shape, d),
                     QN_ERR_INVALID);
    assert_int_equal(qn_st_writer_add(w, "bad\xff", QN_DTYPE_F32, 2, shape, d), QN_ERR_INVALID);
    assert_int_equal(qn_st_writer_add(w, "y", (qn_dtype)42, 2, shape, d), QN_ERR_INVALID);
    assert_int_equal(qn_st_writer_add(w, "y", QN_DTYPE_F32, 9, shape, d), QN_ERR_INVALID);
    int64_t neg[1] = {-1};
    assert_int_equal(qn_st_writer_add(w, "y", QN_DTYPE_F32, 1, neg, d), QN_ERR_INVALID);
    assert_int_equal(qn_st_writer_add(w, "y", QN_DTYPE_F32, 2, shape, NULL), QN_ERR_INVALID);
    /* many names exercise the duplicate set's growth */
    for (int i = 0; i < 300; i++) {
        char name[32];
        snprintf(name, sizeof name, "t%03d", i);
        assert_int_equal(qn_st_writer_add(w, name, QN_DTYPE_F32, 0, NULL, d), QN_OK);
    }
    assert_int_equal(qn_st_writer_add(w, "t123", QN_DTYPE_F32, 0, NULL, d), QN_ERR_EXISTS);
    qn_st_writer_free(w); /* without finish: nothing written */
    assert_int_not_equal(access(path, F_OK), 0);
    free(path);
}

static void test_sharded_roundtrip(void **state) {
    char *dir = dup_path("sharded");
    qn_st_writer *w = NULL;
    assert_int_equal(qn_st_writer_init(&w, dir), QN_OK);
    add_all(w, NULL);
    assert_int_equal(qn_st_writer_set_metadata(w, "format", "pt"), QN_OK);
    assert_int_equal(qn_st_writer_finish_sharded(w, 64), QN_OK);
    qn_st_writer_free(w);

    qn_st_model *m = NULL;
    assert_int_equal(qn_st_model_open(dir, &m), QN_OK);
    assert_int_equal(qn_st_model_count(m), NSPECS);
    for (size_t i = 1; i < NSPECS; i++)
        assert_true(strcmp(qn_st_model_name_at(m, i - 1), qn_st_model_name_at(m, i)) < 0);
    for (size_t i = 0; i < NSPECS; i++) {
        const qn_st_tensor *t = NULL;
        assert_int_equal(qn_st_model_get(m, k_specs[i].name, &t), QN_OK);
        assert_int_equal(t->dtype, k_specs[i].dtype);
        assert_int_equal(t->nbytes, spec_bytes(&k_specs[i]));
        if (t->nbytes) assert_memory_equal(t->data, g_data[i], t->nbytes);
    }
    const qn_st_tensor *t = NULL;
    assert_int_equal(qn_st_model_get(m, "missing.weight", &t), QN_ERR_NOT_FOUND);
    assert_non_null(strstr(qn_last_error(), "missing.weight"));
    qn_st_model_close(m);

    /* Shards respect the size cap, carry the metadata, and the index is
     * valid JSON that the index path opens directly. */
    char p[4096];
    int shards = 0;
    for (int k = 1; k < 100; k++) {
        snprintf(p, sizeof p, "%s/model-%05d-of-", dir, k);
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "ls %s* > /dev/null 2>&1", p);
        if (system(cmd) != 0) break;
        shards++;
    }
    assert_true(shards >= 4);
    snprintf(p, sizeof p, "%s/model-00001-of-%05d.safetensors", dir, shards);
    qn_st_file *f = NULL;
    assert_int_equal(qn_st_open(p, &f), QN_OK);
    assert_string_equal(qn_st_metadata_get(f, "format"), "pt");
    uint64_t sum = 0;
    for (size_t i = 0; i < qn_st_count(f); i++)
        sum += qn_st_tensor_at(f, i)->nbytes;
    assert_true(sum <= 64 || qn_st_count(f) == 1);
    qn_st_close(f);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    assert_int_equal(qn_st_model_open(p, &m), QN_OK);
    assert_int_equal(qn_st_model_get(m, k_specs[3].name, &t), QN_OK);
    qn_st_model_close(m);

    /* A missing shard is reported with the shard and the tensor. */
    snprintf(p, sizeof p, "%s/model-00002-of-%05d.safetensors", dir, shards);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(qn_st_model_open(dir, &m), QN_OK); /* lazy: still opens */
    qn_status s = QN_OK;
    size_t failed = 0;
    for (size_t i = 0; i < NSPECS; i++) {
        s = qn_st_model_get(m, k_specs[i].name, &t);
        if (s != QN_OK) {
            failed++;
            assert_non_null(strstr(qn_last_error(), "model-00002-of-"));
            assert_non_null(strstr(qn_last_error(), k_specs[i].name));
            assert_non_null(strstr(qn_last_error(), "cannot open"));
        }
    }
    assert_true(failed >= 1);
    qn_st_model_close(m);
    free(dir);
}

static void write_text(const char *path, const char *text) {
    qn_test_write_file(path, text, strlen(text));
}

static void test_model_index_errors(void **state) {
    char *dir = dup_path("idx");
    mkdir(dir, 0755);
    char idx[4096], shard[4096];
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
    snprintf(shard, sizeof shard, "%s/s1.safetensors", dir);
    /* a real shard with tensor "a" only */
    qn_st_writer *w = NULL;
    float v = 1.0f;
    assert_int_equal(qn_st_writer_init(&w, shard), QN_OK);
    assert_int_equal(qn_st_writer_add(w, "a", QN_DTYPE_F32, 0, NULL, &v), QN_OK);
    assert_int_equal(qn_st_writer_finish(w), QN_OK);
    qn_st_writer_free(w);

    qn_st_model *m = NULL;
    const qn_st_tensor *t = NULL;
    write_text(idx, "{\"weight_map\": {\"a\": \"s1.safetensors\", \"b\": \"s1.safetensors\"}}");
    assert_int_equal(qn_st_model_open(dir, &m), QN_OK);
    assert_int_equal(qn_st_model_get(m, "a", &t), QN_OK);
    assert_true(*(const float *)t->data == 1.0f);
    assert_int_equal(qn_st_model_get(m, "b", &t), QN_ERR_NOT_FOUND);
    assert_non_null(strstr(qn_last_error(), "'b'"));
    assert_non_null(strstr(qn_last_error(), "s1.safetensors"));
    qn_st_model_close(m);

    write_text(idx, "{\"weight_map\": {\"a\": \"../s1.safetensors\"}}");
    assert_int_equal(qn_st_model_open(dir, &m), QN_ERR_FORMAT);
    assert_non_null(strstr(qn_last_error(), "model.safetensors.index.json"));
    assert_non_null(strstr(qn_last_error(), "not a plain shard file name"));

    write_text(idx, "{\"weight_map\": {\"a\": \"s1.safetensors\", \"a\": \"s1.safetensors\"}}");
    assert_int_equal(qn_st_model_open(dir, &m), QN_ERR_FORMAT);
    assert_non_null(strstr(qn_last_error(), "more than once"));

    write_text(idx, "{\"metadata\": {}}");
    assert_int_equal(qn_st_model_open(dir, &m), QN_ERR_FORMAT);
    assert_non_null(strstr(qn_last_error(), "weight_map"));

    write_text(idx, "{\"weight_map\": ");
    assert_int_equal(qn_st_model_open(idx, &m), QN_ERR_FORMAT);
    assert_non_null(strstr(qn_last_error(), "index.json"));

    /* a directory with only model.safetensors */
    unlink(idx);
    char single[4096];
    snprintf(single, sizeof single, "%s/model.safetensors", dir);
    assert_int_equal(rename(shard, single), 0);
    assert_int_equal(qn_st_model_open(dir, &m), QN_OK);
    assert_int_equal(qn_st_model_count(m), 1);
    assert_string_equal(qn_st_model_name_at(m, 0), "a");
    assert_int_equal(qn_st_model_get(m, "a", &t), QN_OK);
    qn_st_model_close(m);
    assert_int_equal(qn_st_model_open(single, &m), QN_OK);
    qn_st_model_close(m);

    unlink(single);
    assert_int_equal(qn_st_model_open(dir, &m), QN_ERR_NOT_FOUND);
    assert_non_null(strstr(qn_last_error(), "neither"));
    free(dir);
}

/* A file made of an 8-byte length, header text and data_len bytes. */
static char *make_raw(const char *name, uint64_t hlen, const char *hdr, size_t hdr_len,
                      size_t data_len) {
    char *path = dup_path(name);
    size_t total = 8 + hdr_len + data_len;
    unsigned char *b = calloc(1, total);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(b + 8, hdr, hdr_len);
    qn_test_write_file(path, b, total);
    free(b);
    return path;
}

static char *make_file(const char *name, const char *hdr, size_t data_len) {
    return make_raw(name, strlen(hdr), hdr, strlen(hdr), data_len);
}

/* Opens path (file and memory) and expects status s with a message holding
 * the file name and each of the NULL-terminated substrings. */
static void expect_reject(char *path, qn_status s, ...) {
    qn_st_file *f = (qn_st_file *)1;
    qn_status got = qn_st_open(path, &f);
    if (got != s)
        fail_msg("%s: got %s (%s), want %s", path, qn_status_name(got), qn_last_error(),
                 qn_status_name(s));
    assert_null(f);
    const char *err = qn_last_error();
    if (!strstr(err, path)) fail_msg("message does not name the file: %s", err);
    va_list ap;
    va_start(ap, s);
    for (const char *sub; (sub = va_arg(ap, const char *)) != NULL;)
        if (!strstr(err, sub)) fail_msg("message lacks \"%s\": %s", sub, err);
    va_end(ap);
    /* the memory reader says the same */
    size_t len;
    char *bytes = qn_test_read_file(path, &len);
    assert_int_equal(qn_st_open_memory(bytes, len, "m.safetensors", &f), s);
    assert_non_null(strstr(qn_last_error(), "m.safetensors"));
    free(bytes);
    free(path);
}

#define T_F32_2(name, b, e)                                                                        \
    "\"" name "\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[" #b "," #e "]}"

static void test_malformed(void **state) {
    char *p = dup_path("short.safetensors");
    qn_test_write_file(p, "\x02\0\0\0\0", 5);
    expect_reject(p, QN_ERR_FORMAT, "5 bytes", "too short", NULL);

    expect_reject(make_raw("past_end.safetensors", 1000, "{}", 2, 0), QN_ERR_FORMAT,
                  "header length 1000", "past the end", NULL);
    expect_reject(make_raw("absurd.safetensors", 1ull << 40, "{}", 2, 0), QN_ERR_TOO_LARGE,
                  "exceeds the limit", NULL);
    expect_reject(make_file("utf8.safetensors", "{\"w\xc3\x28\":{}}", 0), QN_ERR_FORMAT,
                  "not valid UTF-8", NULL);
    expect_reject(make_file("overlong.safetensors", "{\"\xc0\xafw\":{}}", 0), QN_ERR_FORMAT,
                  "not valid UTF-8", NULL);
    expect_reject(make_file("overlong3.safetensors", "{\"\xe0\x80\xafw\":{}}", 0), QN_ERR_FORMAT,
                  "not valid UTF-8", NULL);
    expect_reject(make_file("surrogate.safetensors", "{\"\xed\xa0\x80w\":{}}", 0), QN_ERR_FORMAT,
                  "not valid UTF-8", NULL);
    expect_reject(make_file("too_high.safetensors", "{\"\xf4\x90\x80\x80w\":{}}", 0), QN_ERR_FORMAT,
                  "not valid UTF-8", NULL);
    expect_reject(make_file("cut.safetensors", "{\"w\":{}}\xe2\x82", 0), QN_ERR_FORMAT,
                  "not valid UTF-8", NULL);
    expect_reject(make_file("array.safetensors", "[1, 2]", 0), QN_ERR_FORMAT, "not a JSON object",
                  NULL);
    expect_reject(make_file("badjson.safetensors", "{\"a\": }", 0), QN_ERR_FORMAT,
                  "not valid JSON (error near byte 6)", NULL);
    expect_reject(make_file("trailing_json.safetensors", "{}  x", 0), QN_ERR_FORMAT,
                  "after the JSON object", NULL);
    expect_reject(make_file("dtype.safetensors",
                            "{\"w\":{\"dtype\":\"F8_E5M2\",\"shape\":[2],\"data_offsets\":[0,2]}}",
                            2),
                  QN_ERR_FORMAT, "tensor 'w'", "unknown dtype 'F8_E5M2'", NULL);
    expect_reject(make_file("neg.safetensors",
                            "{\"w\":{\"dtype\":\"U8\",\"shape\":[2,-1],\"data_offsets\":[0,2]}}",
                            2),
                  QN_ERR_FORMAT, "tensor 'w'", "dim 1 is negative", NULL);
    expect_reject(make_file("frac.safetensors",
                            "{\"w\":{\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,2]}}", 2),
                  QN_ERR_FORMAT, "dim 0 is not an integer", NULL);
    expect_reject(make_file("strdim.safetensors",
                            "{\"w\":{\"dtype\":\"U8\",\"shape\":[\"2\"],\"data_offsets\":[0,2]}}",
                            2),
                  QN_ERR_FORMAT, "dim 0 is not a number", NULL);
    expect_reject(make_file("hugedim.safetensors",
                            "{\"w\":{\"dtype\":\"U8\",\"shape\":[1e300],\"data_offsets\":[0,2]}}",
                            2),
                  QN_ERR_FORMAT, "dim 0 is too large", NULL);
    expect_reject(make_file("overflow.safetensors",
                            "{\"w\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296,16],"
                            "\"data_offsets\":[0,2]}}",
                            2),
                  QN_ERR_FORMAT, "tensor 'w'", "overflows", NULL);
    expect_reject(make_file("dims9.safetensors",
                            "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                            "\"data_offsets\":[0,1]}}",
                            1),
                  QN_ERR_FORMAT, "9 dims", NULL);
    expect_reject(make_file("offs1.safetensors",
                            "{\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0]}}", 2),
                  QN_ERR_FORMAT, "tensor 'w'", "not an array of two integers", NULL);
    expect_reject(make_file("offs_str.safetensors",
                            "{\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,\"2\"]}}",
                            2),
                  QN_ERR_FORMAT, "data_offsets entry is not a number", NULL);
    expect_reject(make_file("reversed.safetensors",
                            "{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[2,0]}}", 2),
                  QN_ERR_FORMAT, "tensor 'w'", "[2, 0) are reversed", NULL);
    expect_reject(make_file("outside.safetensors", "{" T_F32_2("w", 0, 8) "}", 4), QN_ERR_FORMAT,
                  "tensor 'w'", "outside the data section (4 bytes)", NULL);
    expect_reject(make_file("size.safetensors",
                            "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8),
                  QN_ERR_FORMAT, "tensor 'w'", "byte size 8", "does not match", NULL);
    expect_reject(
        make_file("overlap.safetensors", "{" T_F32_2("a", 0, 8) "," T_F32_2("b", 4, 12) "}", 12),
        QN_ERR_FORMAT, "tensor 'b'", "overlap tensor 'a'", NULL);
    expect_reject(
        make_file("dup.safetensors", "{" T_F32_2("a", 0, 8) "," T_F32_2("a", 8, 16) "}", 16),
        QN_ERR_FORMAT, "tensor 'a'", "more than once", NULL);
    expect_reject(make_file("dupfield.safetensors",
                            "{\"w\":{\"dtype\":\"U8\",\"dtype\":\"F32\",\"shape\":[1],"
                            "\"data_offsets\":[0,1]}}",
                            1),
                  QN_ERR_FORMAT, "\"dtype\" appears twice", NULL);
    expect_reject(
        make_file("hole.safetensors", "{" T_F32_2("a", 0, 8) "," T_F32_2("b", 12, 20) "}", 20),
        QN_ERR_FORMAT, "tensor 'b'", "hole", "[8, 12)", NULL);
    expect_reject(make_file("gap_at_start.safetensors", "{" T_F32_2("a", 4, 12) "}", 12),
                  QN_ERR_FORMAT, "hole", "[0, 4)", NULL);
    expect_reject(make_file("tail.safetensors", "{" T_F32_2("a", 0, 8) "}", 9), QN_ERR_FORMAT,
                  "9 bytes", "cover only 8", NULL);
    expect_reject(make_file("meta_type.safetensors", "{\"__metadata__\":{\"k\":1}}", 0),
                  QN_ERR_FORMAT, "__metadata__ value of 'k' is not a string", NULL);
    expect_reject(
        make_file("meta_twice.safetensors", "{\"__metadata__\":{},\"__metadata__\":{}}", 0),
        QN_ERR_FORMAT, "__metadata__ appears 2 times", NULL);
    expect_reject(make_file("entry_type.safetensors", "{\"w\":[]}", 0), QN_ERR_FORMAT, "tensor 'w'",
                  "not a JSON object", NULL);

    /* a missing file and a directory */
    qn_st_file *f = NULL;
    assert_int_equal(qn_st_open("/nonexistent/x.safetensors", &f), QN_ERR_NOT_FOUND);
    assert_non_null(strstr(qn_last_error(), "/nonexistent/x.safetensors"));
    assert_int_equal(qn_st_open(qn_test_tmpdir(), &f), QN_ERR_IO);
    assert_non_null(strstr(qn_last_error(), "not a regular file"));
}

static void test_accepts_edge_cases(void **state) {
    /* Empty header object, space padding, unknown extra fields, zero-size
     * tensors at the end, a scalar. */
    const char *hdr = "{\"s\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8],\"x\":1},"
                      "\"z\":{\"dtype\":\"I32\",\"shape\":[0,3],\"data_offsets\":[8,8]}}    ";
    char *p = make_file("edge.safetensors", hdr, 8);
    qn_st_file *f = NULL;
    assert_int_equal(qn_st_open(p, &f), QN_OK);
    assert_int_equal(qn_st_count(f), 2);
    const qn_st_tensor *s = qn_st_find(f, "s"), *z = qn_st_find(f, "z");
    assert_non_null(s);
    assert_non_null(z);
    assert_int_equal(s->ndim, 0);
    assert_int_equal(qn_st_numel(s), 1);
    assert_int_equal(z->nbytes, 0);
    qn_st_close(f);
    free(p);
    p = make_file("empty.safetensors", "{}", 0);
    assert_int_equal(qn_st_open(p, &f), QN_OK);
    assert_int_equal(qn_st_count(f), 0);
    qn_st_close(f);
    free(p);
}

/* tests/data/st_python.safetensors was written by the Python safetensors
 * package (tests/data/gen_st_fixture.py); its values follow the formulas
 * in that script. */
static void test_python_fixture(void **state) {
    qn_st_file *f = NULL;
    assert_int_equal(qn_st_open(QN_SOURCE_DIR "/tests/data/st_python.safetensors", &f), QN_OK);
    assert_string_equal(qn_st_metadata_get(f, "format"), "np");
    assert_string_equal(qn_st_metadata_get(f, "made_by"), "safetensors");
    const qn_st_tensor *t = NULL;
    assert_int_equal(qn_st_get(f, "f32", &t), QN_OK);
    assert_int_equal(t->dtype, QN_DTYPE_F32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 3);
    float fv[6];
    memcpy(fv, t->data, sizeof fv);
    for (int i = 0; i < 6; i++)
        assert_true(fv[i] == (float)i * 0.5f - 1.0f);
    assert_int_equal(qn_st_get(f, "f16", &t), QN_OK);
    assert_int_equal(t->dtype, QN_DTYPE_F16);
    float hv[5];
    assert_int_equal(qn_dtype_to_f32(t->dtype, t->data, hv, 5), QN_OK);
    for (int i = 0; i < 5; i++)
        assert_true(hv[i] == (float)i / 4.0f);
    assert_int_equal(qn_st_get(f, "f64", &t), QN_OK);
    double dv[2];
    memcpy(dv, t->data, sizeof dv);
    assert_true(dv[0] == 3.25 && dv[1] == -1e300);
    assert_int_equal(qn_st_get(f, "i64", &t), QN_OK);
    int64_t iv[3];
    memcpy(iv, t->data, sizeof iv);
    assert_true(iv[0] == -1 && iv[1] == 0 && iv[2] == INT64_C(1) << 40);
    assert_int_equal(qn_st_get(f, "i32", &t), QN_OK);
    assert_int_equal(t->nbytes, 4 * 4);
    assert_int_equal(qn_st_get(f, "u8", &t), QN_OK);
    assert_int_equal(t->ndim, 3);
    for (int i = 0; i < 8; i++)
        assert_int_equal(((const uint8_t *)t->data)[i], 250 + i % 6);
    qn_st_close(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_every_dtype), cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_writer_rejects),        cmocka_unit_test(test_sharded_roundtrip),
        cmocka_unit_test(test_model_index_errors),    cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_accepts_edge_cases),    cmocka_unit_test(test_python_fixture),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
