/* test_tokenizer_hf.c — quench's encoder against Hugging Face `tokenizers`
 * on 252 texts (GSM8K questions and answers, scripts, normalisation and
 * whitespace corner cases, special tokens), with the expected ids made by
 * scripts/tokenizer/gen_token_vectors.py from tokenizers built in Python
 * from the same fixture files (GLM-4.5 ranks, Qwen2 vocab/merges). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/tokenizer/tokenizer.h"
#include "tests/test_util.h"

static void check_key(const qn_tokenizer *tok, const cJSON *cases, const char *key) {
    const cJSON *c;
    int n = 0, bad = 0;
    cJSON_ArrayForEach(c, cases) {
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        const cJSON *want = cJSON_GetObjectItem(c, key);
        qn_token_ids ids = {0};
        assert_int_equal(qn_tokenizer_encode(tok, text, strlen(text), NULL, &ids), QN_OK);
        bool same = ids.n == (size_t)cJSON_GetArraySize(want);
        for (size_t i = 0; same && i < ids.n; i++)
            same = ids.ids[i] == (int32_t)cJSON_GetArrayItem(want, (int)i)->valuedouble;
        if (!same) {
            bad++;
            fprintf(stderr, "%s case %d differs: %.60s\n", key, n, text);
        }
        qn_token_ids_free(&ids);
        n++;
    }
    assert_true(n >= 250);
    assert_int_equal(bad, 0);
}

static cJSON *load_vectors(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/tokenizer/hf_token_vectors.json", QN_SOURCE_DIR);
    size_t len;
    char *js = qn_test_read_file(path, &len);
    cJSON *root = cJSON_Parse(js);
    free(js);
    assert_non_null(root);
    return root;
}

static void test_glm_matches_hf(void **state) {
    cJSON *root = load_vectors();
    char model[4096], config[4096];
    snprintf(model, sizeof model, "%s", qn_test_fixture("glm4_9b_chat_tokenizer/tokenizer.model"));
    snprintf(config, sizeof config, "%s", qn_test_fixture("glm45_config_rtpllm/tokenizer_config.json"));
    qn_tokenizer *t;
    assert_int_equal(qn_tokenizer_load_tiktoken(model, config, &t), QN_OK);
    assert_int_equal(qn_tokenizer_merge_count(t),
                     (size_t)cJSON_GetObjectItem(root, "glm_merges")->valuedouble);
    check_key(t, cJSON_GetObjectItem(root, "cases"), "glm");
    qn_tokenizer_free(t);
    cJSON_Delete(root);
}

static void test_qwen2_matches_hf(void **state) {
    cJSON *root = load_vectors();
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", qn_test_fixture("qwen2_tokenizer_rtpllm"));
    qn_tokenizer *t;
    assert_int_equal(qn_tokenizer_load(dir, &t), QN_OK);
    check_key(t, cJSON_GetObjectItem(root, "cases"), "qwen2");
    qn_tokenizer_free(t);
    cJSON_Delete(root);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_glm_matches_hf),
        cmocka_unit_test(test_qwen2_matches_hf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
