# qwen3-30B-A3B.sh — Megatron-style architecture flags for Qwen3-30B-A3B
# (Qwen/Qwen3-30B-A3B, Qwen3MoeForCausalLM), in the shape of slime's
# scripts/models/*.sh: source it, then pass "${MODEL_ARGS[@]}".
#
# Every value comes from the model's Hugging Face config.json
# (https://huggingface.co/Qwen/Qwen3-30B-A3B/blob/main/config.json); the key
# each flag must equal is in docs/launch-model-args.md, and `quench launch`
# checks them against the checkpoint's config.json:
#   num_hidden_layers 48, decoder_sparse_step 1, mlp_only_layers [] (every
#   layer is MoE), hidden_size 2048, intermediate_size 6144 (unused: no
#   dense layer), num_attention_heads 32, num_key_value_heads 4, head_dim 128,
#   rope_theta 1000000, rms_norm_eps 1e-06, vocab_size 151936,
#   tie_word_embeddings false, attention_bias false, hidden_act silu,
#   moe_intermediate_size 768, num_experts 128, num_experts_per_tok 8,
#   norm_topk_prob true (softmax over the chosen 8: no
#   --moe-router-pre-softmax), no shared expert. Qwen3 always has per-head
#   q/k RMSNorm (q_norm, k_norm): --qk-layernorm.
QWEN3_30B_N_LAYERS=48

MODEL_ARGS=(
    --num-layers ${QWEN3_30B_N_LAYERS}
    --hidden-size 2048
    --ffn-hidden-size 6144
    --num-attention-heads 32
    --group-query-attention
    --num-query-groups 4
    --kv-channels 128
    --normalization RMSNorm
    --norm-epsilon 1e-6
    --swiglu
    --disable-bias-linear
    --qk-layernorm
    --position-embedding-type rope
    --rotary-base 1000000
    --vocab-size 151936
    --untie-embeddings-and-output-weights

    # mixture of experts
    --moe-layer-freq "[1]*${QWEN3_30B_N_LAYERS}"
    --num-experts 128
    --moe-ffn-hidden-size 768
    --moe-router-topk 8
    --moe-router-score-function softmax
)
