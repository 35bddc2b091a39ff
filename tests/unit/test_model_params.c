/* test_model_params.c — the model's parameter list: counts from a config
 * without allocating (GLM-4.5's real config.json), agreement between the
 * counting path and the allocated parameter table, HF checkpoint names per
 * layer kind, tied heads, and save/load round trips (fp32 exact, bf16, and a
 * sharded fp16 checkpoint). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/io/hf_config.h"
#include "core/io/safetensors.h"
#include "core/model/model.h"
#include "tests/test_util.h"

static void load_desc(const char *json, qn_model_desc *d) {
    qn_model_config c;
    qn_status s = qn_hf_config_parse(json, strlen(json), "<test>", &c);
    if (s != QN_OK) fail_msg("%s", qn_last_error());
    s = qn_model_desc_from_config(&c, "<test>", d);
    if (s != QN_OK) fail_msg("%s", qn_last_error());
}

static void test_glm45_counts(void **state) {
    qn_model_desc d;
    const char *path = qn_test_fixture("glm45_config_rtpllm/config.json");
    if (qn_model_desc_load(path, &d) != QN_OK) fail_msg("%s", qn_last_error());
    qn_param_count c;
    qn_model_count_params(&d, &c);
    double total = (double)c.total, with_mtp = (double)(c.total + c.mtp_total);
    printf("GLM-4.5: total %.2f B, with MTP %.2f B, active %.2f B, active w/o embeddings %.2f B\n",
           total / 1e9, with_mtp / 1e9, (double)c.active / 1e9, (double)c.active_core / 1e9);
    /* published: 355B total (between the main model and main + MTP), 32B active */
    assert_true(total > 350e9 && total < 355e9);
    assert_true(with_mtp > 355e9 && with_mtp < 358e9);
    assert_true((double)c.active_core > 31.5e9 && (double)c.active_core < 32.5e9);
    assert_true(c.active > c.active_core && (double)c.active < 34e9);
    /* 3 dense + 89 MoE layers: 160 experts x 3 tensors each in MoE layers */
    assert_true(c.n_tensors > 89u * 480u);
}

static const char *k_tiny_glm =
    "{\"model_type\":\"glm4_moe\",\"vocab_size\":50,\"hidden_size\":16,\"num_hidden_layers\":3,"
    "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":8,"
    "\"partial_rotary_factor\":0.5,\"attention_bias\":true,\"use_qk_norm\":true,"
    "\"intermediate_size\":24,\"moe_intermediate_size\":6,\"n_routed_experts\":4,"
    "\"num_experts_per_tok\":2,\"n_shared_experts\":1,\"n_group\":2,\"topk_group\":1,"
    "\"first_k_dense_replace\":1,\"routed_scaling_factor\":2.0,\"norm_topk_prob\":true,"
    "\"tie_word_embeddings\":false,\"rope_scaling\":null}";

static const char *k_tiny_qwen3 =
    "{\"model_type\":\"qwen3\",\"vocab_size\":40,\"hidden_size\":16,\"num_hidden_layers\":2,"
    "\"num_attention_heads\":2,\"num_key_value_heads\":1,\"head_dim\":8,"
    "\"intermediate_size\":20,\"tie_word_embeddings\":true,\"rope_scaling\":null}";

static void test_table_matches_count(void **state) {
    const char *cfgs[] = {k_tiny_glm, k_tiny_qwen3};
    for (int i = 0; i < 2; i++) {
        qn_model_desc d;
        load_desc(cfgs[i], &d);
        qn_model m;
        assert_int_equal(qn_model_init(&m, &d), QN_OK);
        qn_param_count c;
        qn_model_count_params(&d, &c);
        uint64_t sum = 0, floats = 0;
        for (size_t j = 0; j < m.n_params; j++) {
            if (m.params[j].trainable) sum += m.params[j].numel;
            floats += m.params[j].numel;
            /* tensors tile the buffer without overlap */
            if (j > 0)
                assert_int_equal(m.params[j].offset,
                                 m.params[j - 1].offset + m.params[j - 1].numel);
        }
        assert_int_equal(sum, c.total);
        assert_int_equal(floats, m.n_floats);
        assert_int_equal(m.n_params, c.n_tensors);
        qn_model_free(&m);
    }
}

static void test_hf_names(void **state) {
    qn_model_desc d;
    load_desc(k_tiny_glm, &d);
    qn_model m;
    assert_int_equal(qn_model_init(&m, &d), QN_OK);
    const char *present[] = {
        "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
        "model.layers.0.input_layernorm.weight", "model.layers.0.self_attn.q_proj.bias",
        "model.layers.0.self_attn.q_norm.weight", "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.post_attention_layernorm.weight", "model.layers.2.self_attn.o_proj.weight",
        "model.layers.1.mlp.gate.weight", "model.layers.1.mlp.gate.e_score_correction_bias",
        "model.layers.1.mlp.experts.3.down_proj.weight",
        "model.layers.2.mlp.shared_experts.up_proj.weight"};
    for (size_t i = 0; i < sizeof present / sizeof present[0]; i++)
        if (!qn_model_find_param(&m, present[i])) fail_msg("missing %s", present[i]);
    const char *absent[] = {"model.layers.0.mlp.experts.0.gate_proj.weight",
                            "model.layers.1.mlp.gate_proj.weight",
                            "model.layers.0.self_attn.o_proj.bias",
                            "model.layers.3.input_layernorm.weight"};
    for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++)
        if (qn_model_find_param(&m, absent[i])) fail_msg("unexpected %s", absent[i]);
    const qn_param_info *p = qn_model_find_param(&m, "model.layers.1.mlp.experts.3.down_proj.weight");
    assert_int_equal(p->shape[0], 16);
    assert_int_equal(p->shape[1], 6);
    assert_int_equal(qn_model_find_param(&m, "model.layers.1.mlp.gate.e_score_correction_bias")
                         ->trainable, 0);
    qn_model_free(&m);

    load_desc(k_tiny_qwen3, &d);
    assert_int_equal(qn_model_init(&m, &d), QN_OK);
    assert_null(qn_model_find_param(&m, "lm_head.weight"));
    assert_non_null(qn_model_find_param(&m, "model.layers.1.self_attn.k_norm.weight"));
    assert_null(qn_model_find_param(&m, "model.layers.1.self_attn.q_proj.bias"));
    assert_ptr_equal(m.gw.lm_head, m.gw.embed);
    qn_model_free(&m);
}

static void test_save_load_roundtrip(void **state) {
    qn_model_desc d;
    load_desc(k_tiny_glm, &d);
    qn_model a, b;
    assert_int_equal(qn_model_init(&a, &d), QN_OK);
    assert_int_equal(qn_model_set_config_json(&a, k_tiny_glm), QN_OK);
    assert_int_equal(qn_model_init_random(&a, 5, 0.5f, 0.1f), QN_OK);
    const char *dir = qn_test_path("rt");
    char dirbuf[512];
    snprintf(dirbuf, sizeof dirbuf, "%s", dir);
    if (qn_model_save_dir(&a, dirbuf, "fp32") != QN_OK) fail_msg("%s", qn_last_error());
    if (qn_model_open(&b, dirbuf) != QN_OK) fail_msg("%s", qn_last_error());
    assert_int_equal(a.n_floats, b.n_floats);
    assert_memory_equal(a.w, b.w, a.n_floats * sizeof(float));
    qn_model_free(&b);
    /* bf16: every weight within bf16 rounding */
    if (qn_model_save_dir(&a, dirbuf, "bf16") != QN_OK) fail_msg("%s", qn_last_error());
    if (qn_model_open(&b, dirbuf) != QN_OK) fail_msg("%s", qn_last_error());
    for (size_t i = 0; i < a.n_floats; i++) {
        assert_true(isfinite(b.w[i]));
        assert_true(fabsf(a.w[i] - b.w[i]) <= fabsf(a.w[i]) * (1.0f / 256.0f));
    }
    qn_model_free(&b);

    /* sharded, fp16: written with the safetensors writer's sharded mode */
    char sdir[512];
    snprintf(sdir, sizeof sdir, "%s", qn_test_path("sharded"));
    uint16_t *h = malloc(a.n_floats * sizeof(uint16_t));
    assert_non_null(h);
    assert_int_equal(qn_dtype_from_f32(QN_DTYPE_F16, a.w, h, a.n_floats), QN_OK);
    qn_st_writer *w = NULL;
    assert_int_equal(qn_st_writer_init(&w, sdir), QN_OK);
    for (size_t i = 0; i < a.n_params; i++)
        assert_int_equal(qn_st_writer_add(w, a.params[i].name, QN_DTYPE_F16, a.params[i].ndim,
                                          a.params[i].shape, h + a.params[i].offset),
                         QN_OK);
    if (qn_st_writer_finish_sharded(w, 4096) != QN_OK) fail_msg("%s", qn_last_error());
    qn_st_writer_free(w);
    char cpath[600];
    snprintf(cpath, sizeof cpath, "%s/config.json", sdir);
    qn_test_write_file(cpath, k_tiny_glm, strlen(k_tiny_glm));
    if (qn_model_open(&b, sdir) != QN_OK) fail_msg("%s", qn_last_error());
    for (size_t i = 0; i < a.n_floats; i++)
        assert_true(fabsf(a.w[i] - b.w[i]) <= fabsf(a.w[i]) * (1.0f / 1024.0f) + 1e-7f);
    qn_model_free(&b);
    free(h);
    qn_model_free(&a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_glm45_counts),
        cmocka_unit_test(test_table_matches_count),
        cmocka_unit_test(test_hf_names),
        cmocka_unit_test(test_save_load_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
