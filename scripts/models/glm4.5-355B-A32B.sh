# glm4.5-355B-A32B.sh — Megatron-style architecture flags for GLM-4.5
# (zai-org/GLM-4.5, Glm4MoeForCausalLM), in the shape of slime's
# scripts/models/*.sh: source it, then pass "${MODEL_ARGS[@]}".
#
# Every value comes from the model's Hugging Face config.json (a copy is in
# ../shared/fixtures/glm45_config_rtpllm/config.json); the key each flag must
# equal is in docs/launch-model-args.md, and `quench launch` checks them
# against the checkpoint's config.json:
#   num_hidden_layers 92, first_k_dense_replace 3, hidden_size 5120,
#   intermediate_size 12288, num_attention_heads 96, num_key_value_heads 8,
#   head_dim 128, partial_rotary_factor 0.5, rope_theta 1000000,
#   rms_norm_eps 1e-05, vocab_size 151552, tie_word_embeddings false,
#   attention_bias true, use_qk_norm true, hidden_act silu,
#   moe_intermediate_size 1536, n_shared_experts 1, n_routed_experts 160,
#   num_experts_per_tok 8, routed_scaling_factor 2.5, norm_topk_prob true,
#   n_group 1, topk_group 1 (group-limited routing off: no group flags).
# Not here: num_nextn_predict_layers 1 (the MTP layer is not trained).
GLM45_N_DENSE_LAYERS=3
GLM45_N_MOE_LAYERS=89

MODEL_ARGS=(
    --num-layers $((GLM45_N_DENSE_LAYERS + GLM45_N_MOE_LAYERS))
    --hidden-size 5120
    --ffn-hidden-size 12288
    --num-attention-heads 96
    --group-query-attention
    --num-query-groups 8
    --kv-channels 128
    --normalization RMSNorm
    --norm-epsilon 1e-5
    --swiglu
    --disable-bias-linear
    --add-qkv-bias
    --qk-layernorm
    --position-embedding-type rope
    --rotary-percent 0.5
    --rotary-base 1000000
    --vocab-size 151552
    --untie-embeddings-and-output-weights

    # mixture of experts
    --moe-layer-freq "[0]*${GLM45_N_DENSE_LAYERS}+[1]*${GLM45_N_MOE_LAYERS}"
    --num-experts 160
    --moe-ffn-hidden-size 1536
    --moe-shared-expert-intermediate-size 1536
    --moe-router-topk 8
    --moe-router-score-function sigmoid
    --moe-router-enable-expert-bias
    --moe-router-topk-scaling-factor 2.5
)
