/* test_hf_config.c — config.json parsing: the real GLM-4.5 config, realistic
 * Qwen3 / Qwen3-MoE / Llama configs, the rope_parameters form, defaults,
 * per-layer MLP kinds, every error case, and dump -> parse round trips.
 *
 * Inline configs are written with single quotes and turned into JSON by
 * json(); expected numbers are read off the configs by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/io/hf_config.h"
#include "tests/test_util.h"

/* Single-quoted JSON -> JSON, in a static buffer. */
static const char *json(const char *sq) {
    static char buf[8192];
    size_t n = strlen(sq);
    assert_true(n < sizeof buf);
    for (size_t i = 0; i <= n; i++)
        buf[i] = sq[i] == '\'' ? '"' : sq[i];
    return buf;
}

static qn_status parse_text(const char *text, qn_model_config *c) {
    return qn_hf_config_parse(text, strlen(text), "<inline>", c);
}

static void parse_ok(const char *text, qn_model_config *c) {
    qn_status s = parse_text(text, c);
    if (s != QN_OK) fail_msg("parse failed: %s: %s", qn_status_name(s), qn_last_error());
}

/* parse(dump(c)) gives c back. */
static void check_round_trip(const qn_model_config *c) {
    char *text = qn_model_config_to_json(c);
    assert_non_null(text);
    qn_model_config back;
    qn_status s = qn_hf_config_parse(text, strlen(text), "<dump>", &back);
    if (s != QN_OK) fail_msg("dump does not parse back: %s\n%s", qn_last_error(), text);
    assert_memory_equal(c, &back, sizeof back);
    free(text);
}

static void assert_close(double got, double want) {
    if (!isfinite(got) || fabs(got - want) > 1e-12 * fabs(want)) {
        fail_msg("got %.17g, want %.17g", got, want);
    }
}

/* ---- the real GLM-4.5 config --------------------------------------------- */

static void test_glm45_fixture(void **state) {
    const char *path = qn_test_fixture("glm45_config_rtpllm/config.json");
    qn_model_config c;
    qn_status s = qn_hf_config_load(path, &c);
    if (s != QN_OK) fail_msg("%s", qn_last_error());
    assert_int_equal(c.arch, QN_ARCH_GLM4_MOE);
    assert_string_equal(c.model_type, "glm4_moe");
    assert_int_equal(c.vocab_size, 151552);
    assert_int_equal(c.hidden_size, 5120);
    assert_int_equal(c.intermediate_size, 12288);
    assert_int_equal(c.num_hidden_layers, 92);
    assert_int_equal(c.num_attention_heads, 96);
    assert_int_equal(c.num_key_value_heads, 8);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.rotary_dim, 64);
    assert_int_equal(c.max_position_embeddings, 131072);
    assert_close(c.rms_norm_eps, 1e-5);
    assert_int_equal(c.rope.type, QN_ROPE_DEFAULT);
    assert_close(c.rope.theta, 1000000.0);
    assert_close(c.rope.partial_rotary_factor, 0.5);
    assert_close(c.rope.factor, 1.0);
    assert_true(c.attention_bias);
    assert_true(c.use_qk_norm);
    assert_false(c.tie_word_embeddings);
    assert_int_equal(c.n_routed_experts, 160);
    assert_int_equal(c.num_experts_per_tok, 8);
    assert_int_equal(c.moe_intermediate_size, 1536);
    assert_int_equal(c.n_shared_experts, 1);
    assert_int_equal(c.first_k_dense_replace, 3);
    assert_int_equal(c.n_group, 1);
    assert_int_equal(c.topk_group, 1);
    assert_true(c.norm_topk_prob);
    assert_close(c.routed_scaling_factor, 2.5);
    assert_int_equal(c.scoring, QN_MOE_SCORING_SIGMOID);
    assert_true(c.has_e_score_correction_bias);
    assert_int_equal(c.num_nextn_predict_layers, 1);
    assert_int_equal(c.decoder_sparse_step, 1);
    assert_int_equal(c.n_mlp_only_layers, 0);
    assert_int_equal(c.bos_token_id, -1);
    assert_int_equal(c.pad_token_id, 151329);
    assert_int_equal(c.n_eos, 3);
    assert_int_equal(c.eos_token_ids[0], 151329);
    assert_int_equal(c.eos_token_ids[1], 151336);
    assert_int_equal(c.eos_token_ids[2], 151338);
    assert_int_equal(c.torch_dtype, QN_TORCH_DTYPE_BF16);

    /* dense for the first 3 layers, MoE after, MTP layer 92 is MoE */
    for (int64_t l = 0; l < 3; l++)
        assert_int_equal(qn_model_config_mlp_kind(&c, l), QN_MLP_DENSE);
    for (int64_t l = 3; l < 93; l++)
        assert_int_equal(qn_model_config_mlp_kind(&c, l), QN_MLP_MOE);
    assert_int_equal(qn_model_config_mlp_kind(&c, 93), QN_MLP_NONE);
    assert_int_equal(qn_model_config_mlp_kind(&c, -1), QN_MLP_NONE);
    assert_int_equal(qn_model_config_n_moe_layers(&c), 89);
    check_round_trip(&c);
}

/* ---- realistic configs of the other model types -------------------------- */

static const char *k_qwen3_06b =
    "{'architectures': ['Qwen3ForCausalLM'], 'attention_bias': false, 'attention_dropout': 0.0,"
    " 'bos_token_id': 151643, 'eos_token_id': 151645, 'head_dim': 128, 'hidden_act': 'silu',"
    " 'hidden_size': 1024, 'initializer_range': 0.02, 'intermediate_size': 3072,"
    " 'max_position_embeddings': 40960, 'max_window_layers': 28, 'model_type': 'qwen3',"
    " 'num_attention_heads': 16, 'num_hidden_layers': 28, 'num_key_value_heads': 8,"
    " 'rms_norm_eps': 1e-06, 'rope_scaling': null, 'rope_theta': 1000000,"
    " 'sliding_window': null, 'tie_word_embeddings': true, 'torch_dtype': 'bfloat16',"
    " 'transformers_version': '4.51.0', 'use_cache': true, 'use_sliding_window': false,"
    " 'vocab_size': 151936}";

static void test_qwen3_dense(void **state) {
    qn_model_config c;
    parse_ok(json(k_qwen3_06b), &c);
    assert_int_equal(c.arch, QN_ARCH_QWEN3);
    assert_int_equal(c.vocab_size, 151936);
    assert_int_equal(c.hidden_size, 1024);
    assert_int_equal(c.intermediate_size, 3072);
    assert_int_equal(c.num_hidden_layers, 28);
    assert_int_equal(c.num_attention_heads, 16);
    assert_int_equal(c.num_key_value_heads, 8);
    assert_int_equal(c.head_dim, 128); /* != hidden / heads = 64 */
    assert_int_equal(c.rotary_dim, 128);
    assert_int_equal(c.max_position_embeddings, 40960);
    assert_close(c.rms_norm_eps, 1e-6);
    assert_close(c.rope.theta, 1e6);
    assert_close(c.rope.partial_rotary_factor, 1.0);
    assert_false(c.attention_bias);
    assert_true(c.use_qk_norm);
    assert_true(c.tie_word_embeddings);
    assert_int_equal(c.scoring, QN_MOE_SCORING_NONE);
    assert_int_equal(c.n_routed_experts, 0);
    assert_int_equal(c.bos_token_id, 151643);
    assert_int_equal(c.pad_token_id, -1);
    assert_int_equal(c.n_eos, 1);
    assert_int_equal(c.eos_token_ids[0], 151645);
    assert_int_equal(c.torch_dtype, QN_TORCH_DTYPE_BF16);
    for (int64_t l = 0; l < 28; l++)
        assert_int_equal(qn_model_config_mlp_kind(&c, l), QN_MLP_DENSE);
    assert_int_equal(qn_model_config_mlp_kind(&c, 28), QN_MLP_NONE);
    assert_int_equal(qn_model_config_n_moe_layers(&c), 0);
    check_round_trip(&c);
}

static const char *k_qwen3_30b_a3b =
    "{'architectures': ['Qwen3MoeForCausalLM'], 'attention_bias': false,"
    " 'attention_dropout': 0.0, 'bos_token_id': 151643, 'decoder_sparse_step': 1,"
    " 'eos_token_id': 151645, 'head_dim': 128, 'hidden_act': 'silu', 'hidden_size': 2048,"
    " 'initializer_range': 0.02, 'intermediate_size': 6144, 'max_position_embeddings': 40960,"
    " 'max_window_layers': 48, 'mlp_only_layers': [], 'model_type': 'qwen3_moe',"
    " 'moe_intermediate_size': 768, 'norm_topk_prob': true, 'num_attention_heads': 32,"
    " 'num_experts': 128, 'num_experts_per_tok': 8, 'num_hidden_layers': 48,"
    " 'num_key_value_heads': 4, 'output_router_logits': false, 'rms_norm_eps': 1e-06,"
    " 'rope_scaling': null, 'rope_theta': 1000000.0, 'router_aux_loss_coef': 0.001,"
    " 'sliding_window': null, 'tie_word_embeddings': false, 'torch_dtype': 'bfloat16',"
    " 'transformers_version': '4.51.0', 'use_cache': true, 'use_sliding_window': false,"
    " 'vocab_size': 151936}";

static void test_qwen3_moe(void **state) {
    qn_model_config c;
    parse_ok(json(k_qwen3_30b_a3b), &c);
    assert_int_equal(c.arch, QN_ARCH_QWEN3_MOE);
    assert_int_equal(c.hidden_size, 2048);
    assert_int_equal(c.intermediate_size, 6144);
    assert_int_equal(c.num_hidden_layers, 48);
    assert_int_equal(c.num_attention_heads, 32);
    assert_int_equal(c.num_key_value_heads, 4);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.max_position_embeddings, 40960);
    assert_int_equal(c.n_routed_experts, 128);
    assert_int_equal(c.num_experts_per_tok, 8);
    assert_int_equal(c.moe_intermediate_size, 768);
    assert_int_equal(c.n_shared_experts, 0);
    assert_int_equal(c.first_k_dense_replace, 0);
    assert_int_equal(c.n_group, 1);
    assert_int_equal(c.topk_group, 1);
    assert_true(c.norm_topk_prob);
    assert_close(c.routed_scaling_factor, 1.0);
    assert_int_equal(c.scoring, QN_MOE_SCORING_SOFTMAX);
    assert_false(c.has_e_score_correction_bias);
    assert_true(c.use_qk_norm);
    assert_int_equal(c.decoder_sparse_step, 1);
    assert_int_equal(c.n_mlp_only_layers, 0);
    assert_int_equal(c.num_nextn_predict_layers, 0);
    assert_int_equal(qn_model_config_n_moe_layers(&c), 48);
    assert_int_equal(qn_model_config_mlp_kind(&c, 0), QN_MLP_MOE);
    assert_int_equal(qn_model_config_mlp_kind(&c, 47), QN_MLP_MOE);
    assert_int_equal(qn_model_config_mlp_kind(&c, 48), QN_MLP_NONE);
    check_round_trip(&c);
}

static void test_qwen3_moe_sparse_step(void **state) {
    /* every second layer sparse, layers 5 and 1 forced dense */
    qn_model_config c;
    parse_ok(json("{'model_type': 'qwen3_moe', 'vocab_size': 1000, 'hidden_size': 64,"
                  " 'intermediate_size': 128, 'num_hidden_layers': 8, 'num_attention_heads': 4,"
                  " 'num_key_value_heads': 2, 'num_experts': 8, 'num_experts_per_tok': 2,"
                  " 'moe_intermediate_size': 32, 'decoder_sparse_step': 2,"
                  " 'mlp_only_layers': [5, 1]}"),
             &c);
    assert_int_equal(c.decoder_sparse_step, 2);
    assert_int_equal(c.n_mlp_only_layers, 2);
    assert_int_equal(c.mlp_only_layers[0], 1);
    assert_int_equal(c.mlp_only_layers[1], 5);
    /* (l + 1) % 2 == 0: layers 1, 3, 5, 7; minus 1 and 5 */
    const qn_mlp_kind want[8] = {QN_MLP_DENSE, QN_MLP_DENSE, QN_MLP_DENSE, QN_MLP_MOE,
                                 QN_MLP_DENSE, QN_MLP_DENSE, QN_MLP_DENSE, QN_MLP_MOE};
    for (int64_t l = 0; l < 8; l++) {
        if (qn_model_config_mlp_kind(&c, l) != want[l]) fail_msg("layer %lld", (long long)l);
    }
    assert_int_equal(qn_model_config_n_moe_layers(&c), 2);
    assert_int_equal(c.head_dim, 16); /* qwen3_moe: hidden / heads when absent */
    check_round_trip(&c);
}

static const char *k_llama3_8b =
    "{'architectures': ['LlamaForCausalLM'], 'attention_bias': false, 'attention_dropout': 0.0,"
    " 'bos_token_id': 128000, 'eos_token_id': 128001, 'hidden_act': 'silu', 'hidden_size': 4096,"
    " 'initializer_range': 0.02, 'intermediate_size': 14336, 'max_position_embeddings': 8192,"
    " 'model_type': 'llama', 'num_attention_heads': 32, 'num_hidden_layers': 32,"
    " 'num_key_value_heads': 8, 'pretraining_tp': 1, 'rms_norm_eps': 1e-05,"
    " 'rope_scaling': null, 'rope_theta': 500000.0, 'tie_word_embeddings': false,"
    " 'torch_dtype': 'bfloat16', 'transformers_version': '4.40.0.dev0', 'use_cache': true,"
    " 'vocab_size': 128256}";

static void test_llama3(void **state) {
    qn_model_config c;
    parse_ok(json(k_llama3_8b), &c);
    assert_int_equal(c.arch, QN_ARCH_LLAMA);
    assert_int_equal(c.vocab_size, 128256);
    assert_int_equal(c.hidden_size, 4096);
    assert_int_equal(c.intermediate_size, 14336);
    assert_int_equal(c.num_hidden_layers, 32);
    assert_int_equal(c.num_attention_heads, 32);
    assert_int_equal(c.num_key_value_heads, 8);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.rotary_dim, 128);
    assert_int_equal(c.max_position_embeddings, 8192);
    assert_close(c.rms_norm_eps, 1e-5);
    assert_close(c.rope.theta, 500000.0);
    assert_int_equal(c.rope.type, QN_ROPE_DEFAULT);
    assert_false(c.use_qk_norm);
    assert_false(c.attention_bias);
    assert_false(c.tie_word_embeddings);
    assert_int_equal(c.bos_token_id, 128000);
    assert_int_equal(c.n_eos, 1);
    assert_int_equal(c.eos_token_ids[0], 128001);
    assert_int_equal(c.pad_token_id, -1);
    check_round_trip(&c);
}

static void test_llama31_rope_scaling(void **state) {
    /* Llama-3.1-8B: llama3 scaling; eos is a list */
    qn_model_config c;
    parse_ok(json("{'model_type': 'llama', 'vocab_size': 128256, 'hidden_size': 4096,"
                  " 'intermediate_size': 14336, 'num_hidden_layers': 32,"
                  " 'num_attention_heads': 32, 'num_key_value_heads': 8,"
                  " 'max_position_embeddings': 131072, 'rms_norm_eps': 1e-05,"
                  " 'rope_theta': 500000.0, 'bos_token_id': 128000,"
                  " 'eos_token_id': [128001, 128008, 128009], 'mlp_bias': false,"
                  " 'rope_scaling': {'factor': 8.0, 'low_freq_factor': 1.0,"
                  " 'high_freq_factor': 4.0, 'original_max_position_embeddings': 8192,"
                  " 'rope_type': 'llama3'}}"),
             &c);
    assert_int_equal(c.rope.type, QN_ROPE_LLAMA3);
    assert_close(c.rope.factor, 8.0);
    assert_close(c.rope.low_freq_factor, 1.0);
    assert_close(c.rope.high_freq_factor, 4.0);
    assert_int_equal(c.rope.original_max_position_embeddings, 8192);
    assert_close(c.rope.theta, 500000.0);
    assert_int_equal(c.n_eos, 3);
    assert_int_equal(c.eos_token_ids[2], 128009);
    check_round_trip(&c);

    /* the old "type" spelling, linear */
    parse_ok(json("{'model_type': 'llama', 'vocab_size': 100, 'hidden_size': 64,"
                  " 'intermediate_size': 128, 'num_hidden_layers': 2, 'num_attention_heads': 4,"
                  " 'rope_scaling': {'type': 'linear', 'factor': 2.0}}"),
             &c);
    assert_int_equal(c.rope.type, QN_ROPE_LINEAR);
    assert_close(c.rope.factor, 2.0);
    check_round_trip(&c);
}

/* ---- rope_parameters (transformers 5) ------------------------------------ */

static void test_rope_parameters(void **state) {
    qn_model_config c;
    /* Qwen3 with rope_parameters and no top-level rope_theta */
    parse_ok(json("{'model_type': 'qwen3', 'vocab_size': 151936, 'hidden_size': 1024,"
                  " 'intermediate_size': 3072, 'num_hidden_layers': 28,"
                  " 'num_attention_heads': 16, 'num_key_value_heads': 8, 'head_dim': 128,"
                  " 'rope_parameters': {'rope_type': 'default', 'rope_theta': 1000000.0}}"),
             &c);
    assert_int_equal(c.rope.type, QN_ROPE_DEFAULT);
    assert_close(c.rope.theta, 1e6);
    assert_close(c.rope.partial_rotary_factor, 1.0);

    /* GLM with partial_rotary_factor inside rope_parameters */
    parse_ok(json("{'model_type': 'glm4_moe', 'vocab_size': 1000, 'hidden_size': 256,"
                  " 'intermediate_size': 512, 'num_hidden_layers': 4, 'num_attention_heads': 8,"
                  " 'num_key_value_heads': 2, 'head_dim': 64, 'n_routed_experts': 8,"
                  " 'num_experts_per_tok': 2, 'moe_intermediate_size': 64,"
                  " 'rope_parameters': {'rope_type': 'default', 'rope_theta': 1000000,"
                  " 'partial_rotary_factor': 0.25}}"),
             &c);
    assert_close(c.rope.theta, 1e6);
    assert_close(c.rope.partial_rotary_factor, 0.25);
    assert_int_equal(c.rotary_dim, 16);

    /* per-layer-type form with yarn; the same theta at the top level is fine */
    parse_ok(json("{'model_type': 'qwen3', 'vocab_size': 151936, 'hidden_size': 1024,"
                  " 'intermediate_size': 3072, 'num_hidden_layers': 28,"
                  " 'num_attention_heads': 16, 'num_key_value_heads': 8,"
                  " 'max_position_embeddings': 131072, 'rope_theta': 1000000,"
                  " 'rope_parameters': {'full_attention': {'rope_type': 'yarn',"
                  " 'rope_theta': 1000000, 'factor': 4.0,"
                  " 'original_max_position_embeddings': 32768}}}"),
             &c);
    assert_int_equal(c.rope.type, QN_ROPE_YARN);
    assert_close(c.rope.factor, 4.0);
    assert_int_equal(c.rope.original_max_position_embeddings, 32768);
    assert_close(c.rope.beta_fast, 32.0);
    assert_close(c.rope.beta_slow, 1.0);
    assert_close(c.rope.attention_factor, 0.0);
    check_round_trip(&c);

    /* yarn without original_max_position_embeddings takes max_position_embeddings */
    parse_ok(json("{'model_type': 'qwen3', 'vocab_size': 100, 'hidden_size': 64,"
                  " 'intermediate_size': 128, 'num_hidden_layers': 2, 'num_attention_heads': 4,"
                  " 'num_key_value_heads': 4, 'head_dim': 16, 'max_position_embeddings': 4096,"
                  " 'rope_parameters': {'rope_type': 'yarn', 'factor': 2.0, 'beta_fast': 16,"
                  " 'attention_factor': 1.1}}"),
             &c);
    assert_int_equal(c.rope.original_max_position_embeddings, 4096);
    assert_close(c.rope.beta_fast, 16.0);
    assert_close(c.rope.attention_factor, 1.1);
    assert_close(c.rope.theta, 10000.0);
}

/* ---- defaults -------------------------------------------------------------- */

static void test_defaults(void **state) {
    qn_model_config c;
    /* glm4_moe with only the required fields: Glm4MoeConfig's defaults */
    parse_ok(json("{'model_type': 'glm4_moe', 'vocab_size': 1000, 'hidden_size': 256,"
                  " 'intermediate_size': 512, 'num_hidden_layers': 4, 'num_attention_heads': 8,"
                  " 'n_routed_experts': 16, 'num_experts_per_tok': 4,"
                  " 'moe_intermediate_size': 64}"),
             &c);
    assert_int_equal(c.num_key_value_heads, 8);
    assert_int_equal(c.head_dim, 32);
    assert_int_equal(c.rotary_dim, 16); /* partial_rotary_factor 0.5 */
    assert_int_equal(c.max_position_embeddings, 131072);
    assert_close(c.rms_norm_eps, 1e-5);
    assert_close(c.rope.theta, 10000.0);
    assert_close(c.rope.partial_rotary_factor, 0.5);
    assert_false(c.attention_bias);
    assert_false(c.use_qk_norm);
    assert_false(c.tie_word_embeddings);
    assert_int_equal(c.n_shared_experts, 1);
    assert_int_equal(c.first_k_dense_replace, 1);
    assert_int_equal(c.n_group, 1);
    assert_int_equal(c.topk_group, 1);
    assert_true(c.norm_topk_prob);
    assert_close(c.routed_scaling_factor, 1.0);
    assert_int_equal(c.num_nextn_predict_layers, 0);
    assert_int_equal(c.bos_token_id, -1);
    assert_int_equal(c.n_eos, 0);
    assert_int_equal(c.torch_dtype, QN_TORCH_DTYPE_UNSET);
    assert_int_equal(qn_model_config_mlp_kind(&c, 0), QN_MLP_DENSE);
    assert_int_equal(qn_model_config_mlp_kind(&c, 1), QN_MLP_MOE);
    check_round_trip(&c);

    /* qwen3: head_dim 128 and 32 kv heads by default; explicit null kv -> heads */
    parse_ok(json("{'model_type': 'qwen3', 'vocab_size': 1000, 'hidden_size': 256,"
                  " 'intermediate_size': 512, 'num_hidden_layers': 2, 'num_attention_heads': 64,"
                  " 'dtype': 'float32'}"),
             &c);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.num_key_value_heads, 32);
    assert_int_equal(c.max_position_embeddings, 32768);
    assert_close(c.rms_norm_eps, 1e-6);
    assert_true(c.use_qk_norm);
    assert_int_equal(c.torch_dtype, QN_TORCH_DTYPE_F32);

    /* qwen3_moe: 4 kv heads, norm_topk_prob false */
    parse_ok(json("{'model_type': 'qwen3_moe', 'vocab_size': 1000, 'hidden_size': 256,"
                  " 'intermediate_size': 512, 'num_hidden_layers': 2, 'num_attention_heads': 8,"
                  " 'num_experts': 8, 'num_experts_per_tok': 2, 'moe_intermediate_size': 32}"),
             &c);
    assert_int_equal(c.num_key_value_heads, 4);
    assert_false(c.norm_topk_prob);
    assert_int_equal(c.decoder_sparse_step, 1);
    assert_close(c.rms_norm_eps, 1e-6);

    /* llama: kv = heads, bos 1, eos 2, 2048 positions */
    parse_ok(json("{'model_type': 'llama', 'vocab_size': 32000, 'hidden_size': 512,"
                  " 'intermediate_size': 1024, 'num_hidden_layers': 2, 'num_attention_heads': 8,"
                  " 'num_key_value_heads': null, 'pad_token_id': -1}"),
             &c);
    assert_int_equal(c.num_key_value_heads, 8);
    assert_int_equal(c.head_dim, 64);
    assert_int_equal(c.bos_token_id, 1);
    assert_int_equal(c.n_eos, 1);
    assert_int_equal(c.eos_token_ids[0], 2);
    assert_int_equal(c.pad_token_id, -1);
    assert_int_equal(c.max_position_embeddings, 2048);
    assert_close(c.rms_norm_eps, 1e-6);
    assert_close(c.rope.theta, 10000.0);
    assert_close(c.rope.partial_rotary_factor, 1.0);
    check_round_trip(&c);

    /* an explicit null token id means "none", not the default */
    parse_ok(json("{'model_type': 'llama', 'vocab_size': 32000, 'hidden_size': 512,"
                  " 'intermediate_size': 1024, 'num_hidden_layers': 2, 'num_attention_heads': 8,"
                  " 'bos_token_id': null, 'eos_token_id': null}"),
             &c);
    assert_int_equal(c.bos_token_id, -1);
    assert_int_equal(c.n_eos, 0);
    check_round_trip(&c);
}

/* ---- errors ---------------------------------------------------------------- */

/* The GLM-4.5 fixture with one change: `key` set to the JSON `value` (single
 * quotes allowed), or removed when value is NULL. Returns malloc'd text. */
static char *glm_with(const char *key, const char *value) {
    size_t len;
    char *text = qn_test_read_file(qn_test_fixture("glm45_config_rtpllm/config.json"), &len);
    cJSON *root = cJSON_Parse(text);
    free(text);
    assert_non_null(root);
    cJSON_DeleteItemFromObjectCaseSensitive(root, key);
    if (value) {
        cJSON *v = cJSON_Parse(json(value));
        if (!v) fail_msg("bad test value %s", value);
        cJSON_AddItemToObject(root, key, v);
    }
    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

/* Parses text, expects status `want` and an error naming the source and
 * `needle` (the field). */
static void expect_error(const char *text, qn_status want, const char *needle) {
    qn_model_config c;
    qn_clear_error();
    qn_status s = qn_hf_config_parse(text, strlen(text), "cfg.json", &c);
    const char *msg = qn_last_error();
    if (s != want) {
        fail_msg("expected %s for '%s', got %s (%s)", qn_status_name(want), needle,
                 qn_status_name(s), msg);
    }
    if (!strstr(msg, "cfg.json") || !strstr(msg, needle)) {
        fail_msg("message '%s' does not name the source and '%s'", msg, needle);
    }
    printf("  %-16s %s\n", qn_status_name(s), msg);
}

static void expect_glm_error(const char *key, const char *value, qn_status want,
                             const char *needle) {
    char *text = glm_with(key, value);
    expect_error(text, want, needle);
    free(text);
}

static void test_errors_glm(void **state) {
    /* the unmodified fixture parses, so each failure below is the change */
    char *text = glm_with("vocab_size", "151552");
    qn_model_config c;
    assert_int_equal(qn_hf_config_parse(text, strlen(text), "x", &c), QN_OK);
    free(text);

    expect_glm_error("hidden_size", NULL, QN_ERR_NOT_FOUND, "hidden_size");
    expect_glm_error("vocab_size", NULL, QN_ERR_NOT_FOUND, "vocab_size");
    expect_glm_error("model_type", NULL, QN_ERR_NOT_FOUND, "model_type");
    expect_glm_error("n_routed_experts", NULL, QN_ERR_NOT_FOUND, "n_routed_experts");
    expect_glm_error("num_experts_per_tok", "null", QN_ERR_NOT_FOUND, "num_experts_per_tok");
    expect_glm_error("model_type", "'gpt2'", QN_ERR_UNSUPPORTED, "model_type");
    expect_glm_error("model_type", "7", QN_ERR_FORMAT, "model_type");
    expect_glm_error("hidden_size", "'5120'", QN_ERR_FORMAT, "hidden_size");
    expect_glm_error("hidden_size", "5120.5", QN_ERR_FORMAT, "hidden_size");
    expect_glm_error("hidden_size", "1e300", QN_ERR_FORMAT, "hidden_size");
    expect_glm_error("num_attention_heads", "[96]", QN_ERR_FORMAT, "num_attention_heads");
    expect_glm_error("vocab_size", "0", QN_ERR_RANGE, "vocab_size");
    expect_glm_error("num_hidden_layers", "-1", QN_ERR_RANGE, "num_hidden_layers");
    expect_glm_error("intermediate_size", "0", QN_ERR_RANGE, "intermediate_size");
    expect_glm_error("moe_intermediate_size", "-5", QN_ERR_RANGE, "moe_intermediate_size");
    expect_glm_error("head_dim", "0", QN_ERR_RANGE, "head_dim");
    expect_glm_error("num_key_value_heads", "7", QN_ERR_RANGE, "num_key_value_heads");
    expect_glm_error("num_key_value_heads", "0", QN_ERR_RANGE, "num_key_value_heads");
    /* head_dim absent: 5120 / 96 is not whole */
    expect_glm_error("head_dim", NULL, QN_ERR_RANGE, "head_dim");
    expect_glm_error("num_experts_per_tok", "161", QN_ERR_RANGE, "num_experts_per_tok");
    expect_glm_error("num_experts_per_tok", "0", QN_ERR_RANGE, "num_experts_per_tok");
    expect_glm_error("topk_group", "2", QN_ERR_RANGE, "topk_group");
    expect_glm_error("n_group", "3", QN_ERR_RANGE, "n_group");
    expect_glm_error("n_group", "0", QN_ERR_RANGE, "n_group");
    expect_glm_error("n_group", "160", QN_ERR_RANGE, "n_group"); /* 1 expert per group */
    expect_glm_error("first_k_dense_replace", "93", QN_ERR_RANGE, "first_k_dense_replace");
    expect_glm_error("n_shared_experts", "-1", QN_ERR_RANGE, "n_shared_experts");
    expect_glm_error("num_nextn_predict_layers", "-1", QN_ERR_RANGE, "num_nextn_predict_layers");
    expect_glm_error("routed_scaling_factor", "0", QN_ERR_RANGE, "routed_scaling_factor");
    expect_glm_error("routed_scaling_factor", "'2.5'", QN_ERR_FORMAT, "routed_scaling_factor");
    expect_glm_error("rms_norm_eps", "0", QN_ERR_RANGE, "rms_norm_eps");
    expect_glm_error("rms_norm_eps", "-1e-5", QN_ERR_RANGE, "rms_norm_eps");
    expect_glm_error("rope_theta", "-1", QN_ERR_RANGE, "rope_theta");
    expect_glm_error("partial_rotary_factor", "1.5", QN_ERR_RANGE, "partial_rotary_factor");
    expect_glm_error("partial_rotary_factor", "0.01", QN_ERR_RANGE, "partial_rotary_factor");
    expect_glm_error("partial_rotary_factor", "0", QN_ERR_RANGE, "partial_rotary_factor");
    expect_glm_error("attention_bias", "'yes'", QN_ERR_FORMAT, "attention_bias");
    expect_glm_error("use_qk_norm", "1", QN_ERR_FORMAT, "use_qk_norm");
    expect_glm_error("norm_topk_prob", "'true'", QN_ERR_FORMAT, "norm_topk_prob");
    expect_glm_error("hidden_act", "'gelu'", QN_ERR_UNSUPPORTED, "hidden_act");
    expect_glm_error("eos_token_id", "'x'", QN_ERR_FORMAT, "eos_token_id");
    expect_glm_error("eos_token_id", "[151329, 'x']", QN_ERR_FORMAT, "eos_token_id[1]");
    expect_glm_error("eos_token_id", "[151329, 999999]", QN_ERR_RANGE, "eos_token_id[1]");
    expect_glm_error("eos_token_id", "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]",
                     QN_ERR_TOO_LARGE, "eos_token_id");
    expect_glm_error("bos_token_id", "-3", QN_ERR_RANGE, "bos_token_id");
    expect_glm_error("pad_token_id", "151552", QN_ERR_RANGE, "pad_token_id");
    expect_glm_error("torch_dtype", "'int8'", QN_ERR_UNSUPPORTED, "torch_dtype");
    expect_glm_error("dtype", "'float16'", QN_ERR_FORMAT, "dtype"); /* disagrees */
    expect_glm_error("num_hidden_layers", "5000", QN_ERR_TOO_LARGE, "num_hidden_layers");
    expect_glm_error("architectures", "'Glm4MoeForCausalLM'", QN_ERR_FORMAT, "architectures");
    expect_glm_error("layer_types", "['full_attention', 'sliding_attention']", QN_ERR_UNSUPPORTED,
                     "layer_types");
    /* rope */
    expect_glm_error("rope_scaling", "{'type': 'dynamic', 'factor': 2.0}", QN_ERR_UNSUPPORTED,
                     "rope_scaling.rope_type");
    expect_glm_error("rope_scaling", "{'rope_type': 'longrope', 'factor': 2.0}", QN_ERR_UNSUPPORTED,
                     "longrope");
    expect_glm_error("rope_scaling", "{'rope_type': 'linear'}", QN_ERR_NOT_FOUND,
                     "rope_scaling.factor");
    expect_glm_error("rope_scaling", "{'rope_type': 'linear', 'type': 'yarn', 'factor': 2}",
                     QN_ERR_FORMAT, "rope_scaling.type");
    expect_glm_error("rope_scaling", "'linear'", QN_ERR_FORMAT, "rope_scaling");
    expect_glm_error("rope_scaling",
                     "{'rope_type': 'llama3', 'factor': 8.0, 'high_freq_factor': 4.0,"
                     " 'original_max_position_embeddings': 8192}",
                     QN_ERR_NOT_FOUND, "rope_scaling.low_freq_factor");
    expect_glm_error("rope_scaling",
                     "{'rope_type': 'llama3', 'factor': 8.0, 'low_freq_factor': 4.0,"
                     " 'high_freq_factor': 1.0, 'original_max_position_embeddings': 8192}",
                     QN_ERR_RANGE, "high_freq_factor");
    expect_glm_error("rope_scaling", "{'rope_type': 'yarn', 'factor': 4.0, 'mscale': 1.0}",
                     QN_ERR_UNSUPPORTED, "mscale");
    expect_glm_error("rope_parameters", "{'rope_type': 'default', 'rope_theta': 500000}",
                     QN_ERR_FORMAT, "rope_theta");
    expect_glm_error("rope_parameters", "{'rope_type': 'default', 'partial_rotary_factor': 1.0}",
                     QN_ERR_FORMAT, "partial_rotary_factor");
    expect_glm_error("rope_parameters", "{'sliding_attention': {'rope_type': 'default'}}",
                     QN_ERR_UNSUPPORTED, "sliding_attention");
}

static void test_errors_other(void **state) {
    /* rope_scaling and rope_parameters together */
    expect_error(json("{'model_type': 'llama', 'vocab_size': 100, 'hidden_size': 64,"
                      " 'intermediate_size': 128, 'num_hidden_layers': 2,"
                      " 'num_attention_heads': 4, 'rope_scaling': {'rope_type': 'linear',"
                      " 'factor': 2.0}, 'rope_parameters': {'rope_type': 'default'}}"),
                 QN_ERR_FORMAT, "rope_parameters");
    /* head_dim absent, heads do not divide hidden (llama) */
    expect_error(json("{'model_type': 'llama', 'vocab_size': 100, 'hidden_size': 100,"
                      " 'intermediate_size': 128, 'num_hidden_layers': 2,"
                      " 'num_attention_heads': 3, 'num_key_value_heads': 1}"),
                 QN_ERR_RANGE, "head_dim");
    expect_error(json("{'model_type': 'llama', 'vocab_size': 100, 'hidden_size': 64,"
                      " 'intermediate_size': 128, 'num_hidden_layers': 2,"
                      " 'num_attention_heads': 4, 'mlp_bias': true}"),
                 QN_ERR_UNSUPPORTED, "mlp_bias");
    expect_error(json("{'model_type': 'qwen3', 'vocab_size': 100, 'hidden_size': 64,"
                      " 'intermediate_size': 128, 'num_hidden_layers': 2,"
                      " 'num_attention_heads': 4, 'num_key_value_heads': 4,"
                      " 'use_sliding_window': true}"),
                 QN_ERR_UNSUPPORTED, "use_sliding_window");
    /* qwen3_moe specifics */
    const char *qm = "{'model_type': 'qwen3_moe', 'vocab_size': 100, 'hidden_size': 64,"
                     " 'intermediate_size': 128, 'num_hidden_layers': 4,"
                     " 'num_attention_heads': 4, 'num_key_value_heads': 2,"
                     " 'moe_intermediate_size': 32, 'num_experts_per_tok': 2, %s}";
    char buf[1024];
    snprintf(buf, sizeof buf, qm, "'num_experts': 8, 'mlp_only_layers': [4]");
    expect_error(json(buf), QN_ERR_RANGE, "mlp_only_layers[0]");
    snprintf(buf, sizeof buf, qm, "'num_experts': 8, 'mlp_only_layers': [1, 1]");
    expect_error(json(buf), QN_ERR_FORMAT, "mlp_only_layers[1]");
    snprintf(buf, sizeof buf, qm, "'num_experts': 8, 'mlp_only_layers': 1");
    expect_error(json(buf), QN_ERR_FORMAT, "mlp_only_layers");
    snprintf(buf, sizeof buf, qm, "'num_experts': 8, 'decoder_sparse_step': 0");
    expect_error(json(buf), QN_ERR_RANGE, "decoder_sparse_step");
    snprintf(buf, sizeof buf, qm, "'n_routed_experts': 8");
    expect_error(json(buf), QN_ERR_NOT_FOUND, "num_experts");
    snprintf(buf, sizeof buf, qm, "'num_experts': 1");
    expect_error(json(buf), QN_ERR_RANGE, "num_experts_per_tok");
    /* glm: top-k larger than what topk_group groups can hold */
    expect_error(json("{'model_type': 'glm4_moe', 'vocab_size': 100, 'hidden_size': 64,"
                      " 'intermediate_size': 128, 'num_hidden_layers': 4,"
                      " 'num_attention_heads': 4, 'num_key_value_heads': 2,"
                      " 'n_routed_experts': 160, 'n_group': 8, 'topk_group': 1,"
                      " 'num_experts_per_tok': 21, 'moe_intermediate_size': 32}"),
                 QN_ERR_RANGE, "num_experts_per_tok");
    /* not JSON, not an object, trailing bytes, duplicate keys */
    expect_error("{\"model_type\": \"llama\",", QN_ERR_FORMAT, "JSON");
    expect_error("[1, 2]", QN_ERR_FORMAT, "object");
    expect_error(json("{'model_type': 'llama'} x"), QN_ERR_FORMAT, "after");
    expect_error(json("{'model_type': 'llama', 'vocab_size': 100, 'hidden_size': 64,"
                      " 'intermediate_size': 128, 'num_hidden_layers': 2,"
                      " 'num_attention_heads': 4, 'hidden_size': 128}"),
                 QN_ERR_FORMAT, "hidden_size");
    /* a file that does not exist */
    qn_model_config c;
    assert_int_equal(qn_hf_config_load("/nonexistent/config.json", &c), QN_ERR_IO);
    assert_non_null(strstr(qn_last_error(), "/nonexistent/config.json"));
}

/* ---- dump ------------------------------------------------------------------ */

static void test_dump(void **state) {
    qn_model_config c;
    assert_int_equal(qn_hf_config_load(qn_test_fixture("glm45_config_rtpllm/config.json"), &c),
                     QN_OK);
    cJSON *o = qn_model_config_to_cjson(&c);
    assert_non_null(o);
    assert_string_equal(cJSON_GetObjectItem(o, "model_type")->valuestring, "glm4_moe");
    assert_int_equal(cJSON_GetObjectItem(o, "n_routed_experts")->valuedouble, 160);
    assert_int_equal(cJSON_GetObjectItem(o, "rotary_dim")->valuedouble, 64);
    assert_string_equal(cJSON_GetObjectItem(o, "scoring_func")->valuestring, "sigmoid");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(o, "has_e_score_correction_bias")));
    assert_int_equal(cJSON_GetObjectItem(o, "moe_layer_count")->valuedouble, 89);
    cJSON *dense = cJSON_GetObjectItem(o, "dense_layers");
    assert_int_equal(cJSON_GetArraySize(dense), 3);
    assert_int_equal(cJSON_GetArrayItem(dense, 2)->valuedouble, 2);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(o, "eos_token_id")), 3);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "bos_token_id")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "rope_scaling")));
    /* callers can extend the object */
    assert_non_null(cJSON_AddNumberToObject(o, "extra", 1));
    cJSON_Delete(o);
    assert_string_equal(qn_rope_type_name(QN_ROPE_LLAMA3), "llama3");
    assert_string_equal(qn_moe_scoring_name(QN_MOE_SCORING_SOFTMAX), "softmax");
    assert_string_equal(qn_model_arch_name(QN_ARCH_QWEN3_MOE), "qwen3_moe");
    assert_string_equal(qn_torch_dtype_name(QN_TORCH_DTYPE_BF16), "bfloat16");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_glm45_fixture),
        cmocka_unit_test(test_qwen3_dense),
        cmocka_unit_test(test_qwen3_moe),
        cmocka_unit_test(test_qwen3_moe_sparse_step),
        cmocka_unit_test(test_llama3),
        cmocka_unit_test(test_llama31_rope_scaling),
        cmocka_unit_test(test_rope_parameters),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_errors_glm),
        cmocka_unit_test(test_errors_other),
        cmocka_unit_test(test_dump),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
