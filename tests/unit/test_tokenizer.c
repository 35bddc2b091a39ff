/* test_tokenizer.c — byte-level BPE on real vocabularies: Qwen2 (slow
 * vocab.json + merges.txt) against llama.cpp's 47 expected encodings, GLM-4.5
 * (tiktoken ranks + GLM-4.5 config) against the GLM token vectors and the
 * 318088 derived merges, the tokenizer.json path (written by quench from the
 * Qwen2 files and read back), decode round trips, error paths, and encoding
 * from several threads at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/tokenizer/tokenizer.h"
#include "tests/test_util.h"

static qn_tokenizer *g_qwen, *g_glm;

static int setup(void **state) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", qn_test_fixture("qwen2_tokenizer_rtpllm"));
    if (qn_tokenizer_load(dir, &g_qwen) != QN_OK) {
        fprintf(stderr, "qwen2 load: %s\n", qn_last_error());
        return -1;
    }
    char model[4096], config[4096];
    snprintf(model, sizeof model, "%s", qn_test_fixture("glm4_9b_chat_tokenizer/tokenizer.model"));
    snprintf(config, sizeof config, "%s",
             qn_test_fixture("glm45_config_rtpllm/tokenizer_config.json"));
    if (qn_tokenizer_load_tiktoken(model, config, &g_glm) != QN_OK) {
        fprintf(stderr, "glm load: %s\n", qn_last_error());
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    qn_tokenizer_free(g_qwen);
    qn_tokenizer_free(g_glm);
    return 0;
}

/* llama.cpp's test format: texts separated by "\n__ggml_vocab_test__\n",
 * one line of space-separated ids per text. */
typedef struct vocab_case {
    char *text;
    size_t len;
    int32_t ids[512];
    size_t n;
} vocab_case;

static vocab_case *read_llamacpp_cases(size_t *n_out) {
    size_t il, ol;
    char *inp = qn_test_read_file(qn_test_fixture("llamacpp_vocab_tests/ggml-vocab-qwen2.gguf.inp"), &il);
    char *out = qn_test_read_file(qn_test_fixture("llamacpp_vocab_tests/ggml-vocab-qwen2.gguf.out"), &ol);
    const char *sep = "\n__ggml_vocab_test__\n";
    vocab_case *cases = calloc(64, sizeof *cases);
    size_t n = 0;
    char *p = inp;
    for (;;) {
        char *s = strstr(p, sep);
        assert_true(n < 64);
        size_t len = s ? (size_t)(s - p) : strlen(p);
        cases[n].text = malloc(len + 1);
        memcpy(cases[n].text, p, len);
        cases[n].text[len] = 0;
        cases[n].len = len;
        n++;
        if (!s) break;
        p = s + strlen(sep);
    }
    size_t line = 0;
    char *q = out;
    while (line < n) {
        char *e = strchr(q, '\n');
        char *end = e ? e : q + strlen(q);
        char *t = q;
        while (t < end) {
            char *num_end;
            long v = strtol(t, &num_end, 10);
            if (num_end == t) break;
            assert_true(cases[line].n < 512);
            cases[line].ids[cases[line].n++] = (int32_t)v;
            t = num_end;
        }
        line++;
        if (!e) break;
        q = e + 1;
    }
    assert_int_equal(line, n);
    free(inp);
    free(out);
    *n_out = n;
    return cases;
}

static void free_cases(vocab_case *c, size_t n) {
    for (size_t i = 0; i < n; i++) free(c[i].text);
    free(c);
}

static void check_cases(const qn_tokenizer *tok, const vocab_case *cases, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        qn_token_ids ids = {0};
        assert_int_equal(qn_tokenizer_encode(tok, cases[i].text, cases[i].len, NULL, &ids), QN_OK);
        bool same = ids.n == cases[i].n && (ids.n == 0 || memcmp(ids.ids, cases[i].ids, ids.n * 4) == 0);
        if (!same) {
            bad++;
            fprintf(stderr, "case %zu (%zu bytes): got %zu ids, want %zu:", i, cases[i].len, ids.n,
                    cases[i].n);
            for (size_t k = 0; k < ids.n && k < 40; k++) fprintf(stderr, " %d", ids.ids[k]);
            fprintf(stderr, "\n");
        }
        qn_token_ids_free(&ids);
    }
    assert_int_equal(bad, 0);
}

static void test_qwen2_llamacpp_vectors(void **state) {
    size_t n;
    vocab_case *cases = read_llamacpp_cases(&n);
    assert_int_equal(n, 47);
    assert_int_equal(qn_tokenizer_get_format(g_qwen), QN_TOKENIZER_FORMAT_SLOW);
    check_cases(g_qwen, cases, n);
    free_cases(cases, n);
}

static void test_qwen2_specials(void **state) {
    const qn_special_ids *sp = qn_tokenizer_special_ids(g_qwen);
    assert_int_equal(sp->eos, qn_tokenizer_token_to_id(g_qwen, "<|endoftext|>", 13));
    assert_int_equal(sp->eos, 151643);
    assert_int_equal(qn_tokenizer_vocab_size(g_qwen), 151646);
    /* added tokens are matched before BPE, or not at all with split_special */
    const char *t = "<|im_start|>user\nhi<|im_end|>";
    qn_token_ids a = {0}, b = {0};
    assert_int_equal(qn_tokenizer_encode(g_qwen, t, strlen(t), NULL, &a), QN_OK);
    assert_int_equal(a.ids[0], 151644);
    assert_int_equal(a.ids[a.n - 1], 151645);
    assert_true(qn_tokenizer_is_special(g_qwen, 151644));
    qn_encode_opts o = {.split_special = true};
    assert_int_equal(qn_tokenizer_encode(g_qwen, t, strlen(t), &o, &b), QN_OK);
    assert_true(b.n > a.n);
    for (size_t i = 0; i < b.n; i++) assert_true(b.ids[i] < 151643);
    qn_token_ids_free(&a);
    qn_token_ids_free(&b);
}

static int32_t json_int(const cJSON *v) { return (int32_t)v->valuedouble; }

static void test_glm_vectors(void **state) {
    assert_int_equal(qn_tokenizer_merge_count(g_glm), 318088);
    assert_int_equal(qn_tokenizer_get_format(g_glm), QN_TOKENIZER_FORMAT_TIKTOKEN);
    size_t len;
    char *js = qn_test_read_file(qn_test_fixture("glm4_9b_chat_tokenizer/glm_token_vectors.json"), &len);
    cJSON *root = cJSON_Parse(js);
    assert_non_null(root);
    const cJSON *cases = cJSON_GetObjectItem(root, "cases"), *c;
    int n = 0;
    cJSON_ArrayForEach(c, cases) {
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        const cJSON *want = cJSON_GetObjectItem(c, "ids");
        qn_encode_opts o = {.split_special = false,
                            .add_special = cJSON_IsTrue(cJSON_GetObjectItem(c, "add_special"))};
        qn_token_ids ids = {0};
        assert_int_equal(qn_tokenizer_encode(g_glm, text, strlen(text), &o, &ids), QN_OK);
        bool same = ids.n == (size_t)cJSON_GetArraySize(want);
        for (size_t i = 0; same && i < ids.n; i++)
            same = ids.ids[i] == json_int(cJSON_GetArrayItem(want, (int)i));
        if (!same) fail_msg("GLM case '%s': %zu ids, want %d", cJSON_GetObjectItem(c, "name")->valuestring,
                            ids.n, cJSON_GetArraySize(want));
        /* decode inverts encode */
        char *back;
        size_t bl;
        assert_int_equal(qn_tokenizer_decode(g_glm, ids.ids, ids.n, false, &back, &bl), QN_OK);
        if (!o.add_special) {
            assert_int_equal(bl, strlen(text));
            assert_memory_equal(back, text, bl);
        }
        free(back);
        qn_token_ids_free(&ids);
        n++;
    }
    assert_int_equal(n, 6);
    cJSON_Delete(root);
    free(js);
    const qn_special_ids *sp = qn_tokenizer_special_ids(g_glm);
    assert_int_equal(sp->eos, 151329);
    assert_int_equal(qn_tokenizer_token_to_id(g_glm, "<|user|>", 8), 151336);
    assert_int_equal(qn_tokenizer_vocab_size(g_glm), 151365);
}

/* The fast path: quench writes tokenizer.json from the slow Qwen2 files,
 * reads it back through the tokenizer.json loader, and must get the same
 * ids on all llama.cpp texts. */
static void test_qwen2_tokenizer_json(void **state) {
    const char *path = qn_test_path("qwen2_tokenizer.json");
    assert_int_equal(qn_tokenizer_save_json(g_qwen, path), QN_OK);
    qn_tokenizer *fast = NULL;
    char cfg[4096];
    snprintf(cfg, sizeof cfg, "%s", qn_test_fixture("qwen2_tokenizer_rtpllm/tokenizer_config.json"));
    if (qn_tokenizer_load_json(path, cfg, &fast) != QN_OK) fail_msg("%s", qn_last_error());
    assert_int_equal(qn_tokenizer_get_format(fast), QN_TOKENIZER_FORMAT_JSON);
    assert_int_equal(qn_tokenizer_merge_count(fast), qn_tokenizer_merge_count(g_qwen));
    assert_int_equal(qn_tokenizer_vocab_size(fast), qn_tokenizer_vocab_size(g_qwen));
    size_t n;
    vocab_case *cases = read_llamacpp_cases(&n);
    check_cases(fast, cases, n);
    /* and slow == fast on the GLM vector texts too */
    const char *extra[] = {"Hello, world! 你好，世界 🦙 123456 'll 'RE\r\n\t end  ",
                           "e\xcc\x81 caf\xc3\xa9 A\xcc\x8a", "\xff\xfe bad \xc3 utf8"};
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        qn_token_ids a = {0}, b = {0};
        assert_int_equal(qn_tokenizer_encode(g_qwen, extra[i], strlen(extra[i]), NULL, &a), QN_OK);
        assert_int_equal(qn_tokenizer_encode(fast, extra[i], strlen(extra[i]), NULL, &b), QN_OK);
        assert_int_equal(a.n, b.n);
        assert_memory_equal(a.ids, b.ids, a.n * sizeof(int32_t));
        qn_token_ids_free(&a);
        qn_token_ids_free(&b);
    }
    free_cases(cases, n);
    qn_tokenizer_free(fast);
}

/* GLM's ranks written as tokenizer.json and read back: same merges, same ids. */
static void test_glm_tokenizer_json(void **state) {
    const char *path = qn_test_path("glm_tokenizer.json");
    assert_int_equal(qn_tokenizer_save_json(g_glm, path), QN_OK);
    qn_tokenizer *fast = NULL;
    if (qn_tokenizer_load_json(path, NULL, &fast) != QN_OK) fail_msg("%s", qn_last_error());
    assert_int_equal(qn_tokenizer_merge_count(fast), 318088);
    const char *t = "[gMASK]<sop><|user|>\n晚上睡不着应该怎么办 3333333 I'VE been<|assistant|>";
    qn_token_ids a = {0}, b = {0};
    qn_encode_opts o = {.split_special = false, .add_special = true};
    assert_int_equal(qn_tokenizer_encode(g_glm, t, strlen(t), &o, &a), QN_OK);
    assert_int_equal(qn_tokenizer_encode(fast, t, strlen(t), &o, &b), QN_OK);
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.ids, b.ids, a.n * sizeof(int32_t));
    assert_int_equal(a.ids[0], 151331); /* add_special: [gMASK]<sop> from the template */
    assert_int_equal(a.ids[1], 151333);
    qn_token_ids_free(&a);
    qn_token_ids_free(&b);
    qn_tokenizer_free(fast);
}

static const char *k_roundtrip[] = {
    "",
    "plain ASCII, with punctuation... and   spaces\n\n\ttabs\r\n",
    "中文文本，日本語のテキスト、한국어 텍스트",
    "emoji with joiners: 👨‍👩‍👧‍👦 🏳️‍🌈 👩🏽‍💻 and flags 🇫🇷🇯🇵",
    "combining marks: e\xcc\x81 a\xcc\x8a\xcc\x81 n\xcc\x83 Zalgo: Z\xcd\x91\xcd\x97\xcd\x90o",
    "invalid UTF-8: \xff\xfe \xc3( \xe2\x82 \xf0\x9f\x98 truncated \x80\x80 end",
    "NUL\0inside",
    "<|im_start|><|endoftext|>[gMASK]<sop> special-looking text",
    "math: ∑_{i=1}^{n} i² = n(n+1)/2, √2 ≈ 1.41421356, 10⁻³",
    "   leading and trailing whitespace   \n\n\n   ",
};
static const size_t k_roundtrip_len[] = {0, 0, 0, 0, 0, 0, 11, 0, 0, 0};

static void test_roundtrip(void **state) {
    const qn_tokenizer *toks[] = {g_glm, g_qwen};
    for (size_t k = 0; k < 2; k++) {
        for (size_t i = 0; i < sizeof k_roundtrip / sizeof k_roundtrip[0]; i++) {
            const char *x = k_roundtrip[i];
            size_t n = k_roundtrip_len[i] ? k_roundtrip_len[i] : strlen(x);
            qn_token_ids ids = {0};
            assert_int_equal(qn_tokenizer_encode(toks[k], x, n, NULL, &ids), QN_OK);
            char *back;
            size_t bl;
            assert_int_equal(qn_tokenizer_decode(toks[k], ids.ids, ids.n, false, &back, &bl), QN_OK);
            /* Qwen2 normalises to NFC, which changes the combining-mark text */
            if (k == 1 && i == 4) {
                assert_true(bl < n);
                assert_non_null(strstr(back, "\xc3\xa9")); /* e + U+0301 -> é */
            } else {
                if (bl != n || memcmp(back, x, n) != 0)
                    fail_msg("round trip %zu of tokenizer %zu differs", i, k);
            }
            free(back);
            qn_token_ids_free(&ids);
        }
    }
}

static void test_decode_special_and_errors(void **state) {
    int32_t ids[] = {151644, 872, 151645};
    char *t;
    size_t l;
    assert_int_equal(qn_tokenizer_decode(g_qwen, ids, 3, true, &t, &l), QN_OK);
    assert_string_equal(t, "user");
    free(t);
    assert_int_equal(qn_tokenizer_decode(g_qwen, ids, 3, false, &t, &l), QN_OK);
    assert_string_equal(t, "<|im_start|>user<|im_end|>");
    free(t);
    int32_t bad[] = {1, 999999};
    assert_int_equal(qn_tokenizer_decode(g_qwen, bad, 2, false, &t, &l), QN_ERR_RANGE);
    assert_non_null(strstr(qn_last_error(), "position 1"));
    int32_t neg[] = {-1};
    assert_int_equal(qn_tokenizer_decode(g_qwen, neg, 1, false, &t, &l), QN_ERR_RANGE);
    size_t bl;
    const char *b = qn_tokenizer_id_to_bytes(g_qwen, 872, &bl);
    assert_non_null(b);
    assert_int_equal(qn_tokenizer_token_to_id(g_qwen, b, bl), 872);
    assert_null(qn_tokenizer_id_to_bytes(g_qwen, 1 << 24, &bl));
}

static void test_bad_inputs(void **state) {
    qn_tokenizer *t = NULL;
    const char *bad_ranks = "IQ== 0\nnot base64! 1\n";
    assert_int_equal(qn_tokenizer_parse_tiktoken(bad_ranks, strlen(bad_ranks), "r.model", NULL, &t),
                     QN_ERR_FORMAT);
    assert_null(t);
    assert_non_null(strstr(qn_last_error(), "r.model: line 2"));
    const char *huge = "IQ== 0\nIg== 222222215\n"; /* a sparse id would need gigabytes */
    assert_int_equal(qn_tokenizer_parse_tiktoken(huge, strlen(huge), "r.model", NULL, &t),
                     QN_ERR_FORMAT);
    assert_non_null(strstr(qn_last_error(), "bad rank"));
    const char *incomplete = "IQ== 0\n"; /* only byte '!': not byte-level complete */
    assert_int_equal(qn_tokenizer_parse_tiktoken(incomplete, strlen(incomplete), "r.model", NULL, &t),
                     QN_ERR_UNSUPPORTED);
    const char *js = "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}";
    assert_int_equal(qn_tokenizer_parse_json(js, strlen(js), "t.json", &t), QN_ERR_UNSUPPORTED);
    assert_non_null(strstr(qn_last_error(), "Unigram"));
    const char *js2 = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}";
    assert_int_equal(qn_tokenizer_parse_json(js2, strlen(js2), "t.json", &t), QN_ERR_FORMAT);
    assert_non_null(strstr(qn_last_error(), "merges[0]"));
    assert_int_equal(qn_tokenizer_parse_json("{", 1, "t.json", &t), QN_ERR_FORMAT);
    const char *v = "{\"a\": 0}", *m = "#version: 0.2\na a\n";
    cJSON *cfg = NULL;
    assert_int_equal(qn_tokenizer_parse_slow(v, strlen(v), m, strlen(m), "v.json", cfg, &t),
                     QN_ERR_FORMAT);
    assert_non_null(strstr(qn_last_error(), "line 2"));
    assert_int_equal(qn_tokenizer_load("/nonexistent-dir", &t), QN_ERR_NOT_FOUND);
}

typedef struct thread_arg {
    const qn_tokenizer *tok;
    const char *text;
    size_t len;
    qn_token_ids ids;
    int status;
} thread_arg;

static void *encode_thread(void *p) {
    thread_arg *a = p;
    for (int rep = 0; rep < 20 && a->status == QN_OK; rep++) {
        qn_token_ids_free(&a->ids);
        a->status = qn_tokenizer_encode(a->tok, a->text, a->len, NULL, &a->ids);
    }
    return NULL;
}

static void test_threads(void **state) {
    size_t len;
    char *text = qn_test_read_file(qn_test_fixture("gsm8k/test.jsonl"), &len);
    if (len > 200000) len = 200000;
    while (len && ((unsigned char)text[len] & 0xC0) == 0x80) len--;
    qn_token_ids want = {0};
    assert_int_equal(qn_tokenizer_encode(g_glm, text, len, NULL, &want), QN_OK);
    thread_arg args[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thread_arg){.tok = g_glm, .text = text, .len = len};
        pthread_create(&th[i], NULL, encode_thread, &args[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].status, QN_OK);
        assert_int_equal(args[i].ids.n, want.n);
        assert_memory_equal(args[i].ids.ids, want.ids, want.n * sizeof(int32_t));
        qn_token_ids_free(&args[i].ids);
    }
    qn_token_ids_free(&want);
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qwen2_llamacpp_vectors),
        cmocka_unit_test(test_qwen2_specials),
        cmocka_unit_test(test_glm_vectors),
        cmocka_unit_test(test_qwen2_tokenizer_json),
        cmocka_unit_test(test_glm_tokenizer_json),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_decode_special_and_errors),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
