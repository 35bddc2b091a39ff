# qwen3-8B.sh — Megatron-style architecture flags for Qwen3-8B
# (Qwen/Qwen3-8B, Qwen3ForCausalLM), in the shape of slime's
# scripts/models/*.sh: source it, then pass "${MODEL_ARGS[@]}".
#
# Every value comes from the model's Hugging Face config.json
# (https://huggingface.co/Qwen/Qwen3-8B/blob/main/config.json); the key each
# flag must equal is in docs/launch-model-args.md, and `quench launch` checks
# them against the checkpoint's config.json:
#   num_hidden_layers 36, hidden_size 4096, intermediate_size 12288,
#   num_attention_heads 32, num_key_value_heads 8, head_dim 128,
#   rope_theta 1000000, rms_norm_eps 1e-06, vocab_size 151936,
#   tie_word_embeddings false, attention_bias false, hidden_act silu.
#   Qwen3 always has per-head q/k RMSNorm (q_norm, k_norm): --qk-layernorm.
MODEL_ARGS=(
    --num-layers 36
    --hidden-size 4096
    --ffn-hidden-size 12288
    --num-attention-heads 32
    --group-query-attention
    --num-query-groups 8
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
)
