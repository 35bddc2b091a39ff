/* hf_config.h — Hugging Face config.json -> qn_model_config for the decoder
 * family of DESIGN.md "The model".
 *
 * Four model_type values are understood, matching the Hugging Face classes:
 *   "glm4_moe"   Glm4MoeForCausalLM   (GLM-4.5, GLM-4.5-Air)
 *   "qwen3"      Qwen3ForCausalLM     (dense, QK-norm always on)
 *   "qwen3_moe"  Qwen3MoeForCausalLM  (QK-norm always on, softmax router)
 *   "llama"      LlamaForCausalLM
 * A field that is absent takes the default of that model's transformers
 * configuration class (e.g. rms_norm_eps 1e-5 for glm4_moe, 1e-6 for the
 * others; partial_rotary_factor 0.5 for glm4_moe; head_dim 128 for qwen3),
 * EXCEPT the shape of the model: vocab_size, hidden_size, intermediate_size,
 * num_hidden_layers, num_attention_heads and, for MoE models, the expert
 * count, num_experts_per_tok and moe_intermediate_size are required. A
 * config.json without them is broken, and transformers' defaults (a 4096-wide
 * model) would silently build something else.
 *
 * RoPE: rope_theta / partial_rotary_factor / rope_scaling at the top level
 * (transformers 4.x) and the newer `rope_parameters` object ({"rope_type",
 * "rope_theta", "partial_rotary_factor", "factor", ...}, or the same keyed
 * by layer type: {"full_attention": {...}}) are both read; the same value
 * given twice with different numbers is an error. Scaling types default,
 * linear, llama3 and yarn are recorded with their parameters (the model
 * code applies them or refuses them); dynamic, longrope and unknown types
 * are refused at parse time (QN_ERR_UNSUPPORTED).
 *
 * Refused as unsupported: hidden_act other than "silu", Llama mlp_bias,
 * Qwen3 sliding-window attention, sliding layer types.
 *
 * Not here: quantization_config (FP8 checkpoints), generation_config.json,
 * tokenizer files, vision towers, any architecture outside the four above.
 */
#ifndef QN_CORE_IO_HF_CONFIG_H
#define QN_CORE_IO_HF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quench/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Limits that make the config struct a plain value. */
#define QN_MODEL_MAX_LAYERS 1024 /* num_hidden_layers + MTP layers */
#define QN_MODEL_MAX_EOS 16      /* entries of an eos_token_id list */

typedef enum qn_model_arch {
    QN_ARCH_GLM4_MOE = 0,
    QN_ARCH_QWEN3 = 1,
    QN_ARCH_QWEN3_MOE = 2,
    QN_ARCH_LLAMA = 3,
} qn_model_arch;

typedef enum qn_rope_type {
    QN_ROPE_DEFAULT = 0, /* plain RoPE: inv_freq[i] = theta^(-2i/rotary_dim) */
    QN_ROPE_LINEAR = 1,  /* positions divided by factor */
    QN_ROPE_LLAMA3 = 2,  /* Llama 3.1 frequency-band scaling */
    QN_ROPE_YARN = 3,    /* YaRN */
} qn_rope_type;

typedef enum qn_moe_scoring {
    QN_MOE_SCORING_NONE = 0,    /* dense model */
    QN_MOE_SCORING_SIGMOID = 1, /* glm4_moe (DeepSeek-V3 style) */
    QN_MOE_SCORING_SOFTMAX = 2, /* qwen3_moe */
} qn_moe_scoring;

typedef enum qn_mlp_kind {
    QN_MLP_NONE = 0, /* layer index out of range */
    QN_MLP_DENSE = 1,
    QN_MLP_MOE = 2,
} qn_mlp_kind;

typedef enum qn_torch_dtype {
    QN_TORCH_DTYPE_UNSET = 0, /* absent or null */
    QN_TORCH_DTYPE_F32 = 1,
    QN_TORCH_DTYPE_F16 = 2,
    QN_TORCH_DTYPE_BF16 = 3,
} qn_torch_dtype;

typedef struct qn_rope_config {
    qn_rope_type type;
    double theta;                 /* rope_theta */
    double partial_rotary_factor; /* fraction of head_dim that is rotated */
    double factor;                /* scaling factor; 1 for default */
    /* llama3, yarn: pretraining context (yarn defaults to max_position_embeddings) */
    int64_t original_max_position_embeddings;
    double low_freq_factor, high_freq_factor; /* llama3 */
    double beta_fast, beta_slow;              /* yarn (defaults 32, 1) */
    double attention_factor;                  /* yarn; 0 = not given, derive from factor */
} qn_rope_config;

/* Everything a model implementation needs from config.json, defaults
 * applied and cross-checked. A plain value: copy it, no free. Counts are
 * int64_t so products (vocab * hidden) do not overflow. Fields that do not
 * apply to a model_type hold the neutral value noted. */
typedef struct qn_model_config {
    qn_model_arch arch;
    char model_type[16]; /* "glm4_moe", "qwen3", "qwen3_moe", "llama" */

    int64_t vocab_size;
    int64_t hidden_size;
    int64_t intermediate_size; /* dense MLP width (GLM: first_k_dense_replace layers) */
    int64_t num_hidden_layers; /* decoder layers, MTP layers not included */
    int64_t num_attention_heads;
    int64_t num_key_value_heads;
    int64_t head_dim;
    int64_t rotary_dim; /* (int)(head_dim * partial_rotary_factor), even, >= 2 */
    int64_t max_position_embeddings;
    double rms_norm_eps;
    qn_rope_config rope;
    bool attention_bias; /* q/k/v have a bias; so does o_proj for llama/qwen3/qwen3_moe, not glm4_moe */
    bool use_qk_norm;    /* per-head RMSNorm on q and k before RoPE */
    bool tie_word_embeddings;

    /* MoE; all zero / false / NONE for dense models. */
    int64_t n_routed_experts;    /* n_routed_experts (glm4_moe) / num_experts (qwen3_moe) */
    int64_t num_experts_per_tok; /* top-k */
    int64_t moe_intermediate_size;
    int64_t n_shared_experts;      /* shared expert width = moe_intermediate_size * this */
    int64_t first_k_dense_replace; /* glm4_moe: layers [0, k) are dense */
    int64_t n_group, topk_group;   /* group-limited routing; 1, 1 = no grouping */
    bool norm_topk_prob;
    double routed_scaling_factor; /* 1 for qwen3_moe */
    qn_moe_scoring scoring;
    bool has_e_score_correction_bias; /* glm4_moe routers carry the selection bias */
    int64_t decoder_sparse_step;      /* qwen3_moe: layer l is MoE iff (l+1) % step == 0 */
    int64_t n_mlp_only_layers;        /* qwen3_moe mlp_only_layers (dense), sorted */
    int32_t mlp_only_layers[QN_MODEL_MAX_LAYERS];

    int64_t num_nextn_predict_layers; /* MTP layers after the decoder (glm4_moe) */

    /* Token ids; -1 where absent or null. */
    int64_t bos_token_id;
    int64_t pad_token_id;
    int64_t n_eos; /* 0 when absent */
    int64_t eos_token_ids[QN_MODEL_MAX_EOS];

    qn_torch_dtype torch_dtype; /* "torch_dtype" or the newer "dtype" */
} qn_model_config;

/* Parses config.json text (len bytes, need not be NUL-terminated) into *out.
 * `source` names the input in error messages (a path, or "<inline>"). On
 * failure *out is unspecified and qn_last_error() names the source, the field
 * and the problem: QN_ERR_FORMAT (not JSON, not an object, wrong JSON type,
 * non-integral count), QN_ERR_NOT_FOUND (required field missing),
 * QN_ERR_RANGE (non-positive size, eps <= 0, top-k > experts, heads not
 * divisible by kv heads, ...), QN_ERR_UNSUPPORTED (unknown model_type, rope
 * type, activation, ...), QN_ERR_TOO_LARGE (more layers or eos ids than the
 * limits above). */
qn_status qn_hf_config_parse(const char *json, size_t len, const char *source,
                             qn_model_config *out);

/* Reads and parses the file at path (at most 16 MiB). QN_ERR_IO when it
 * cannot be read; otherwise as qn_hf_config_parse with source = path. */
qn_status qn_hf_config_load(const char *path, qn_model_config *out);

/* Whether layer l's MLP is dense or MoE. Layers [0, num_hidden_layers) follow
 * the model's rule (glm4_moe: l >= first_k_dense_replace; qwen3_moe: not in
 * mlp_only_layers and (l + 1) % decoder_sparse_step == 0; dense models:
 * always dense). MTP layers [num_hidden_layers, + num_nextn_predict_layers)
 * use the same rule (GLM's are MoE). Anything else is QN_MLP_NONE. */
qn_mlp_kind qn_model_config_mlp_kind(const qn_model_config *c, int64_t layer);

/* Number of decoder layers (MTP excluded) whose MLP is MoE. */
int64_t qn_model_config_n_moe_layers(const qn_model_config *c);

/* "glm4_moe", ...; "default", "linear", "llama3", "yarn"; "sigmoid",
 * "softmax", "none"; "bfloat16", ... ("" for unset). */
const char *qn_model_arch_name(qn_model_arch a);
const char *qn_rope_type_name(qn_rope_type t);
const char *qn_moe_scoring_name(qn_moe_scoring s);
const char *qn_torch_dtype_name(qn_torch_dtype d);

/* The parsed config as a cJSON object (a `cJSON *`, typed void * so this
 * header does not pull in cJSON): Hugging Face field names where they
 * exist, plus the derived fields (rotary_dim, scoring_func,
 * has_e_score_correction_bias, dense_layers, moe_layer_count). Callers may
 * add members (parameter counts) before printing. Returns NULL only when out
 * of memory. Free with cJSON_Delete. */
void *qn_model_config_to_cjson(const qn_model_config *c);

/* The same object printed (indented), malloc'd; caller frees. NULL when out
 * of memory. */
char *qn_model_config_to_json(const qn_model_config *c);

#ifdef __cplusplus
}
#endif
#endif /* QN_CORE_IO_HF_CONFIG_H */
