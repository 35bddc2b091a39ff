/* test_tokenizer_chat.c — the C chat templates against the real Jinja
 * templates: 126 renders made by scripts/tokenizer/gen_chat_template_vectors.py
 * (GLM-4.5, Qwen2.5, Qwen3; plain, multi-turn, thinking, tools), the GLM-4.5
 * cases of glm45_template_cases_naitok that are faithful to the template,
 * template recognition, and bad messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/tokenizer/tokenizer.h"
#include "tests/test_util.h"

static int thinking_of(const cJSON *v) {
    if (!v || cJSON_IsNull(v)) return -1;
    return cJSON_IsTrue(v) ? 1 : 0;
}

static void test_jinja_vectors(void **state) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/tokenizer/chat_template_vectors.json", QN_SOURCE_DIR);
    size_t len;
    char *js = qn_test_read_file(path, &len);
    cJSON *root = cJSON_Parse(js);
    free(js);
    assert_non_null(root);
    const cJSON *c;
    int n = 0, bad = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases")) {
        qn_chat_template tpl;
        assert_int_equal(qn_chat_template_parse(cJSON_GetObjectItem(c, "template")->valuestring, &tpl),
                         QN_OK);
        const cJSON *tools = cJSON_GetObjectItem(c, "tools");
        qn_chat_opts o = {
            .add_generation_prompt = cJSON_IsTrue(cJSON_GetObjectItem(c, "add_generation_prompt")),
            .enable_thinking = thinking_of(cJSON_GetObjectItem(c, "enable_thinking")),
            .tools = cJSON_IsArray(tools) ? tools : NULL};
        char *text;
        size_t tl;
        assert_int_equal(qn_chat_render(&tpl, cJSON_GetObjectItem(c, "messages"), &o, &text, &tl), QN_OK);
        const char *want = cJSON_GetObjectItem(c, "expected")->valuestring;
        if (strcmp(text, want) != 0) {
            bad++;
            fprintf(stderr, "case %d %s/%s gen=%d think=%d differs:\n--- got\n%s\n--- want\n%s\n---\n", n,
                    cJSON_GetObjectItem(c, "template")->valuestring,
                    cJSON_GetObjectItem(c, "name")->valuestring, o.add_generation_prompt,
                    o.enable_thinking, text, want);
        }
        assert_int_equal(tl, strlen(text));
        free(text);
        n++;
    }
    assert_true(n >= 120);
    assert_int_equal(bad, 0);
    cJSON_Delete(root);
}

static void test_naitok_glm45_cases(void **state) {
    size_t len;
    char *js = qn_test_read_file(qn_test_fixture("glm45_template_cases_naitok/glm45_template_cases.json"), &len);
    cJSON *root = cJSON_Parse(js);
    free(js);
    assert_non_null(root);
    qn_chat_template tpl;
    assert_int_equal(qn_chat_template_parse("glm45", &tpl), QN_OK);
    const cJSON *c;
    int faithful = 0, unfaithful = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases")) {
        const cJSON *cfg = cJSON_GetObjectItem(c, "config");
        qn_chat_opts o = {
            .add_generation_prompt = cJSON_IsTrue(cJSON_GetObjectItem(cfg, "add_generation_prompt")),
            .enable_thinking = thinking_of(cJSON_GetObjectItem(cfg, "enable_thinking"))};
        char *text;
        size_t tl;
        assert_int_equal(qn_chat_render(&tpl, cJSON_GetObjectItem(c, "messages"), &o, &text, &tl), QN_OK);
        const char *want = cJSON_GetObjectItem(c, "expected_rendered_by_nai_tok_rust")->valuestring;
        if (cJSON_IsTrue(cJSON_GetObjectItem(c, "hf_faithful"))) {
            if (strcmp(text, want) != 0)
                fail_msg("%s:\n%s\nwant\n%s", cJSON_GetObjectItem(c, "name")->valuestring, text, want);
            faithful++;
        } else {
            /* the real template keeps reasoning after the last user turn */
            assert_string_not_equal(text, want);
            assert_non_null(strstr(text, "<think>15 * 24 = 15 * (20 + 4) = 300 + 60 = 360</think>"));
            unfaithful++;
        }
        free(text);
    }
    assert_int_equal(faithful, 6);
    assert_int_equal(unfaithful, 2);
    cJSON_Delete(root);
}

static void detect_file(const char *rel, qn_status want_st, qn_chat_kind kind, bool dflt_sys,
                        bool think) {
    size_t len;
    char *j = qn_test_read_file(qn_test_fixture(rel), &len);
    qn_chat_template t;
    assert_int_equal(qn_chat_template_detect(j, &t), want_st);
    if (want_st == QN_OK) {
        assert_int_equal(t.kind, kind);
        assert_int_equal(t.default_system != NULL, dflt_sys);
        assert_int_equal(t.qwen3_think, think);
    }
    free(j);
}

static void test_detect(void **state) {
    detect_file("glm45_config_rtpllm/chat_template.jinja", QN_OK, QN_CHAT_GLM45, false, false);
    detect_file("chat_templates/GLM-4.6.jinja", QN_OK, QN_CHAT_GLM45, false, false);
    detect_file("chat_templates/Qwen-Qwen2.5-7B-Instruct.jinja", QN_OK, QN_CHAT_CHATML, true, false);
    detect_file("chat_templates/Qwen-Qwen3-0.6B.jinja", QN_OK, QN_CHAT_CHATML, false, true);
    detect_file("chat_templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", QN_ERR_UNSUPPORTED,
                QN_CHAT_RAW, false, false);
    detect_file("chat_templates/Qwen-QwQ-32B.jinja", QN_ERR_UNSUPPORTED, QN_CHAT_RAW, false, false);
    /* tokenizer_config.json templates: Qwen3 hybrid yes; thinking-only and Coder refused */
    static const struct { const char *rel; qn_status st; } cfgs[] = {
        {"qwen3_tokenizer_configs_rtpllm/qwen3_30b/tokenizer_config.json", QN_OK},
        {"qwen3_tokenizer_configs_rtpllm/qwen3_30b_thinking_0527/tokenizer_config.json",
         QN_ERR_UNSUPPORTED},
        {"qwen3_tokenizer_configs_rtpllm/qwen3_coder/tokenizer_config.json", QN_ERR_UNSUPPORTED},
        {"glm45_config_rtpllm/tokenizer_config.json", QN_ERR_NOT_FOUND}, /* template is in .jinja */
    };
    qn_chat_template t;
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        size_t len;
        char *js = qn_test_read_file(qn_test_fixture(cfgs[i].rel), &len);
        cJSON *c = cJSON_Parse(js);
        free(js);
        const cJSON *ct = cJSON_GetObjectItem(c, "chat_template");
        assert_int_equal(qn_chat_template_detect(cJSON_IsString(ct) ? ct->valuestring : NULL, &t),
                         cfgs[i].st);
        if (cfgs[i].st == QN_OK) assert_true(t.qwen3_think && t.kind == QN_CHAT_CHATML);
        cJSON_Delete(c);
    }
    assert_int_equal(qn_chat_template_parse("jinja", &t), QN_ERR_INVALID);
    assert_non_null(strstr(qn_last_error(), "glm45"));
    assert_int_equal(qn_chat_template_parse("raw", &t), QN_OK);
    assert_int_equal(t.kind, QN_CHAT_RAW);
}

static void test_bad_messages(void **state) {
    qn_chat_template t;
    assert_int_equal(qn_chat_template_parse("chatml", &t), QN_OK);
    char *text;
    size_t tl;
    cJSON *m = cJSON_Parse("{\"role\": \"user\"}");
    assert_int_equal(qn_chat_render(&t, m, NULL, &text, &tl), QN_ERR_FORMAT);
    cJSON_Delete(m);
    m = cJSON_Parse("[{\"role\": \"user\", \"content\": \"a\"}, {\"content\": \"b\"}]");
    assert_int_equal(qn_chat_render(&t, m, NULL, &text, &tl), QN_ERR_FORMAT);
    assert_non_null(strstr(qn_last_error(), "messages[1]"));
    cJSON_Delete(m);
    m = cJSON_Parse("[{\"role\": \"user\", \"content\": 5}]");
    assert_int_equal(qn_chat_render(&t, m, NULL, &text, &tl), QN_ERR_FORMAT);
    cJSON_Delete(m);
    /* raw joins the contents */
    assert_int_equal(qn_chat_template_parse("raw", &t), QN_OK);
    m = cJSON_Parse("[{\"role\": \"system\", \"content\": \"a\"}, {\"role\": \"user\", \"content\": \"b\"}]");
    assert_int_equal(qn_chat_render(&t, m, NULL, &text, &tl), QN_OK);
    assert_string_equal(text, "ab");
    free(text);
    cJSON_Delete(m);
}

/* A GLM-4.5 tokenizer folder as checkpoints ship it (ranks file, config,
 * chat_template.jinja, generation_config.json), assembled from the fixtures:
 * the template is recognised, and rendering + encoding one user turn gives
 * the ids chatglm.cpp expects for that prompt. */
static void test_glm45_dir_chat_encode(void **state) {
    const char *dir = qn_test_path("glm45_dir");
    mkdir(dir, 0755);
    struct { const char *src, *name; } files[] = {
        {"glm4_9b_chat_tokenizer/tokenizer.model", "tokenizer.model"},
        {"glm45_config_rtpllm/tokenizer_config.json", "tokenizer_config.json"},
        {"glm45_config_rtpllm/chat_template.jinja", "chat_template.jinja"},
        {"glm45_config_rtpllm/generation_config.json", "generation_config.json"}};
    char dst[4096], src[4096];
    for (size_t i = 0; i < 4; i++) {
        snprintf(src, sizeof src, "%s", qn_test_fixture(files[i].src));
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i].name);
        unlink(dst);
        assert_int_equal(symlink(src, dst), 0);
    }
    qn_tokenizer *tok;
    if (qn_tokenizer_load(dir, &tok) != QN_OK) fail_msg("%s", qn_last_error());
    qn_chat_template tpl;
    assert_int_equal(qn_chat_template_for(tok, "auto", &tpl), QN_OK);
    assert_int_equal(tpl.kind, QN_CHAT_GLM45);
    const qn_special_ids *sp = qn_tokenizer_special_ids(tok);
    assert_int_equal(sp->eos, 151329);
    assert_int_equal(sp->n_stop, 3); /* generation_config: <|endoftext|>, <|user|>, <|observation|> */
    assert_int_equal(sp->stop[1], 151336);
    cJSON *m = cJSON_Parse("[{\"role\": \"user\", \"content\": \"\u4f60\u597d\"}]");
    qn_chat_opts o = {.add_generation_prompt = true, .enable_thinking = -1};
    qn_token_ids ids = {0};
    assert_int_equal(qn_chat_encode(tok, &tpl, m, &o, &ids), QN_OK);
    const int32_t want[] = {151331, 151333, 151336, 198, 109377, 151337};
    assert_int_equal(ids.n, 6);
    assert_memory_equal(ids.ids, want, sizeof want);
    qn_token_ids_free(&ids);
    cJSON_Delete(m);
    qn_tokenizer_free(tok);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jinja_vectors),
        cmocka_unit_test(test_naitok_glm45_cases),
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_bad_messages),
        cmocka_unit_test(test_glm45_dir_chat_encode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
