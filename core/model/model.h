/* model.h — the decoder family (GLM-4.5 MoE, Qwen3 / Qwen3-MoE, Llama) on the CPU.
 *
 * One implementation with options, described by qn_model_desc (filled from a
 * Hugging Face config.json). The parameters are listed ONCE, in the X-macros
 * QN_GLOBAL_PARAMS and QN_LAYER_PARAMS below; that list generates the fields
 * of the weight structs, the sizes, the parameter table with Hugging Face
 * checkpoint names, the parameter count and the initialisation.
 *
 * Letters: T packed tokens, H hidden, V vocab, NH query heads, NKV key/value
 * heads, HD head dim, I dense MLP width, E routed experts, MI expert width,
 * K experts per token, R rows (positions) asked for.
 *
 * Weights live in one fp32 buffer, gradients in a second buffer with the same
 * layout. Backward ADDS into parameter gradients and WRITES activation
 * gradients. MTP layers (model.layers.<num_hidden_layers>.*) are not part of
 * this model: they are counted separately and ignored on load.
 *
 * Routing follows HF Glm4MoeTopkRouter / Qwen3MoeSparseMoeBlock exactly,
 * including masked_fill(0.0) for the groups left out; where that produces
 * exactly equal choice scores, the lower expert index wins (HF's topk leaves
 * ties unspecified). Checked against tests/ref/model_ref.py (float64) by
 * tests/cli/test_model_ref.sh, and against transformers by scripts/check-hf.sh.
 */
#ifndef QN_CORE_MODEL_MODEL_H
#define QN_CORE_MODEL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "quench/status.h"

typedef enum qn_model_router {
    QN_MODEL_ROUTER_NONE = 0,    /* dense model */
    QN_MODEL_ROUTER_SIGMOID = 1, /* GLM-4.5, DeepSeek-V3 */
    QN_MODEL_ROUTER_SOFTMAX = 2, /* Qwen3-MoE */
} qn_model_router;

/* Everything the model needs from config.json, with HF defaults applied. */
typedef struct qn_model_desc {
    char arch[64]; /* "Glm4MoeForCausalLM", ... (informational) */
    int64_t vocab, hidden, n_layers, n_heads, n_kv_heads, head_dim;
    int64_t intermediate;     /* dense MLP width */
    int64_t first_dense;      /* layers [0, first_dense) are dense */
    int64_t moe_step;         /* Qwen3-MoE decoder_sparse_step (1 = every layer) */
    int64_t n_experts, top_k, moe_intermediate, n_shared_experts;
    int64_t n_group, topk_group;
    int64_t n_mtp;            /* num_nextn_predict_layers: counted, not built */
    int64_t rot_dim;          /* head_dim * partial_rotary_factor, even */
    int64_t max_position;     /* max_position_embeddings: the engine's default context */
    int qkv_bias, qk_norm, tied, norm_topk_prob, has_score_bias;
    int o_bias; /* attention_bias also biases o_proj in Llama/Qwen3/Qwen3-MoE, not in GLM-4.5 */
    qn_model_router router;
    double routed_scale, rope_theta, rms_eps;
    uint64_t mlp_only_mask;   /* Qwen3-MoE mlp_only_layers (layers < 64) */
} qn_model_desc;

/* Whether layer l has a MoE block (else a dense SwiGLU MLP). */
int qn_model_layer_is_moe(const qn_model_desc *d, int64_t l);

/* Fills d from a parsed config.json (core/io/hf_config.h). rope_scaling
 * other than plain RoPE, more than 1024 experts and group settings that do
 * not fit the experts are errors naming `what` (the file). */
struct qn_model_config;
qn_status qn_model_desc_from_config(const struct qn_model_config *c, const char *what,
                                    qn_model_desc *d);
/* Reads config_path with qn_hf_config_load and fills d. */
qn_status qn_model_desc_load(const char *config_path, qn_model_desc *d);

typedef enum qn_param_init {
    QN_INIT_NORMAL = 0, /* normal(0, std) */
    QN_INIT_ONES = 1,   /* norm weights */
    QN_INIT_ZERO = 2,
} qn_param_init;

/* The one list of parameters.
 * X(member, hf_name, copies, rows, cols, present, init, trainable)
 *   hf_name: printf format; the layer index is the first %d in layer names,
 *            for per-expert tensors the expert index is the second one.
 *   copies:  number of HF tensors stored back to back (experts), else 1.
 *   rows, cols: shape of one copy; cols == 0 means a 1-D tensor [rows].
 * Expressions use `d` (const qn_model_desc *) and, in layers, `moe`. */
#define QN_GLOBAL_PARAMS(X)                                                           \
    X(embed, "model.embed_tokens.weight", 1, d->vocab, d->hidden, 1, QN_INIT_NORMAL, 1) \
    X(final_norm, "model.norm.weight", 1, d->hidden, 0, 1, QN_INIT_ONES, 1)           \
    X(lm_head, "lm_head.weight", 1, d->vocab, d->hidden, !d->tied, QN_INIT_NORMAL, 1)

#define QN_QD (d->n_heads * d->head_dim)
#define QN_KD (d->n_kv_heads * d->head_dim)
#define QN_SHI (d->moe_intermediate * d->n_shared_experts)
#define QN_LAYER_PARAMS(X)                                                                      \
    X(in_norm, "model.layers.%d.input_layernorm.weight", 1, d->hidden, 0, 1, QN_INIT_ONES, 1)   \
    X(wq, "model.layers.%d.self_attn.q_proj.weight", 1, QN_QD, d->hidden, 1, QN_INIT_NORMAL, 1) \
    X(bq, "model.layers.%d.self_attn.q_proj.bias", 1, QN_QD, 0, d->qkv_bias, QN_INIT_NORMAL, 1) \
    X(wk, "model.layers.%d.self_attn.k_proj.weight", 1, QN_KD, d->hidden, 1, QN_INIT_NORMAL, 1) \
    X(bk, "model.layers.%d.self_attn.k_proj.bias", 1, QN_KD, 0, d->qkv_bias, QN_INIT_NORMAL, 1) \
    X(wv, "model.layers.%d.self_attn.v_proj.weight", 1, QN_KD, d->hidden, 1, QN_INIT_NORMAL, 1) \
    X(bv, "model.layers.%d.self_attn.v_proj.bias", 1, QN_KD, 0, d->qkv_bias, QN_INIT_NORMAL, 1) \
    X(wo, "model.layers.%d.self_attn.o_proj.weight", 1, d->hidden, QN_QD, 1, QN_INIT_NORMAL, 1) \
    X(bo, "model.layers.%d.self_attn.o_proj.bias", 1, d->hidden, 0, d->o_bias, QN_INIT_NORMAL, 1) \
    X(q_norm, "model.layers.%d.self_attn.q_norm.weight", 1, d->head_dim, 0, d->qk_norm,        \
      QN_INIT_ONES, 1)                                                                          \
    X(k_norm, "model.layers.%d.self_attn.k_norm.weight", 1, d->head_dim, 0, d->qk_norm,        \
      QN_INIT_ONES, 1)                                                                          \
    X(post_norm, "model.layers.%d.post_attention_layernorm.weight", 1, d->hidden, 0, 1,        \
      QN_INIT_ONES, 1)                                                                          \
    X(w_gate, "model.layers.%d.mlp.gate_proj.weight", 1, d->intermediate, d->hidden, !moe,     \
      QN_INIT_NORMAL, 1)                                                                        \
    X(w_up, "model.layers.%d.mlp.up_proj.weight", 1, d->intermediate, d->hidden, !moe,         \
      QN_INIT_NORMAL, 1)                                                                        \
    X(w_down, "model.layers.%d.mlp.down_proj.weight", 1, d->hidden, d->intermediate, !moe,     \
      QN_INIT_NORMAL, 1)                                                                        \
    X(router, "model.layers.%d.mlp.gate.weight", 1, d->n_experts, d->hidden, moe,              \
      QN_INIT_NORMAL, 1)                                                                        \
    X(score_bias, "model.layers.%d.mlp.gate.e_score_correction_bias", 1, d->n_experts, 0,      \
      moe && d->has_score_bias, QN_INIT_NORMAL, 0)                                              \
    X(e_gate, "model.layers.%d.mlp.experts.%d.gate_proj.weight", d->n_experts,                 \
      d->moe_intermediate, d->hidden, moe, QN_INIT_NORMAL, 1)                                   \
    X(e_up, "model.layers.%d.mlp.experts.%d.up_proj.weight", d->n_experts,                     \
      d->moe_intermediate, d->hidden, moe, QN_INIT_NORMAL, 1)                                   \
    X(e_down, "model.layers.%d.mlp.experts.%d.down_proj.weight", d->n_experts, d->hidden,      \
      d->moe_intermediate, moe, QN_INIT_NORMAL, 1)                                              \
    X(s_gate, "model.layers.%d.mlp.shared_experts.gate_proj.weight", 1, QN_SHI, d->hidden,     \
      moe && d->n_shared_experts > 0, QN_INIT_NORMAL, 1)                                        \
    X(s_up, "model.layers.%d.mlp.shared_experts.up_proj.weight", 1, QN_SHI, d->hidden,         \
      moe && d->n_shared_experts > 0, QN_INIT_NORMAL, 1)                                        \
    X(s_down, "model.layers.%d.mlp.shared_experts.down_proj.weight", 1, d->hidden, QN_SHI,     \
      moe && d->n_shared_experts > 0, QN_INIT_NORMAL, 1)

/* Pointers into the weight (or gradient) buffer; NULL where absent. */
typedef struct qn_global_params {
#define QN_GP_FIELD_(m, ...) float *m;
    QN_GLOBAL_PARAMS(QN_GP_FIELD_)
#undef QN_GP_FIELD_
} qn_global_params;

typedef struct qn_layer_params {
#define QN_LP_FIELD_(m, ...) float *m;
    QN_LAYER_PARAMS(QN_LP_FIELD_)
#undef QN_LP_FIELD_
} qn_layer_params;

/* One Hugging Face tensor of the model. */
typedef struct qn_param_info {
    char name[96];
    int64_t shape[2];
    int ndim;
    int trainable;
    qn_param_init init;
    size_t offset; /* in floats, into the weight/gradient buffers */
    size_t numel;
} qn_param_info;

/* Parameter counts from the description alone (nothing allocated).
 * total:  every trainable parameter of the main model, which is what HF's
 *         Glm4MoeForCausalLM.num_parameters() counts: the MTP layers are not
 *         instantiated by HF, and e_score_correction_bias is a buffer;
 * active: per token — everything but the routed experts, plus top_k routed
 *         experts in each MoE layer, embedding and LM head included;
 * active_core: active without the embedding and LM head matrices;
 * mtp_total / mtp_active: the num_nextn_predict_layers MTP layers (a MoE
 *         decoder layer plus eh_proj [H, 2H], enorm, hnorm, shared_head.norm
 *         each; their embed/head copies in GLM checkpoints are not counted).
 * GLM-4.5 (fixture config): total 352.8 B, with the MTP layer 356.8 B — the
 * published "355B" lies between the two; active 33.6 B, active_core 32.1 B
 * (the published "32B"). */
typedef struct qn_param_count {
    uint64_t total, active, active_core, mtp_total, mtp_active, n_tensors;
} qn_param_count;
void qn_model_count_params(const qn_model_desc *d, qn_param_count *out);

typedef struct qn_model {
    qn_model_desc d;
    float *w;           /* [n_floats] weights */
    float *g;           /* [n_floats] gradients, NULL until qn_model_alloc_grads */
    size_t n_floats;
    qn_param_info *params; /* [n_params] in checkpoint order */
    size_t n_params;
    qn_global_params gw, gg;   /* weights, gradients */
    qn_layer_params *lw, *lg;  /* [n_layers] */
    char *config_json;         /* config.json text written by save (owned) */
} qn_model;

/* Allocates the weights (zeroed) and the parameter table of d. Free with
 * qn_model_free (NULL ok). */
qn_status qn_model_init(qn_model *m, const qn_model_desc *d);
void qn_model_free(qn_model *m);
/* Allocates (zeroed) gradient storage; idempotent. */
qn_status qn_model_alloc_grads(qn_model *m);
void qn_model_zero_grads(qn_model *m);
/* Random init: normal(0, std) for matrices and biases, ones for norms;
 * e_score_correction_bias gets normal(0, bias_std) (HF initialises it to
 * zero; a non-zero one exercises selection-only bias in tests). */
qn_status qn_model_init_random(qn_model *m, uint64_t seed, float std, float bias_std);
const qn_param_info *qn_model_find_param(const qn_model *m, const char *name);

/* Checkpoints: HF safetensors, single file (model.safetensors) or sharded
 * (model.safetensors.index.json), bf16/fp16/fp32 converted to fp32. Every
 * tensor of the parameter table must be present with its shape; a missing
 * tensor, wrong shape, unsupported dtype or truncated data is an error naming
 * the tensor and file. Extra tensors (MTP layers) are ignored. */
qn_status qn_model_load_dir(qn_model *m, const char *dir);
/* Reads DIR/config.json, builds and loads the model. */
qn_status qn_model_open(qn_model *m, const char *dir);
/* Writes DIR/model.safetensors (dtype "fp32" or "bf16"; the
 * e_score_correction_bias stays F32 as in HF checkpoints) and DIR/config.json
 * (m->config_json verbatim). DIR is created if missing. */
qn_status qn_model_save_dir(const qn_model *m, const char *dir, const char *dtype);
/* Sets m->config_json to a copy of text / to the contents of path. */
qn_status qn_model_set_config_json(qn_model *m, const char *text);
qn_status qn_model_read_config_json(qn_model *m, const char *path);
/* Writes the gradients of trainable parameters as fp32 safetensors. */
qn_status qn_model_save_grads(const qn_model *m, const char *path);

/* A packed batch: tokens[T], cu_seqlens[n_seqs+1] (cu[0]=0, cu[n]=T),
 * positions restart at every sequence. rows[R] are packed token indices
 * whose hidden state predicts targets[R] (the next token). */
typedef struct qn_batch {
    const int32_t *tokens;
    int64_t n_tokens;
    const int64_t *cu_seqlens;
    int64_t n_seqs;
    const int64_t *rows;
    const int32_t *targets;
    int64_t n_rows;
} qn_batch;

/* Activation arena of a model for batches up to max_tokens tokens and
 * max_rows requested rows, reserved once; forward/backward allocate nothing.
 * Sets OpenBLAS to one thread for the process: the model splits GEMMs over
 * OpenMP threads itself (two thread pools spinning against each other cost
 * more than half the time on 2 cores). */
typedef struct qn_model_ws qn_model_ws;
qn_status qn_model_ws_init(qn_model_ws **ws, const qn_model *m, int64_t max_tokens,
                           int64_t max_rows);
void qn_model_ws_free(qn_model_ws *ws);
size_t qn_model_ws_bytes(const qn_model_ws *ws);

/* Forward: logp[r] = log softmax(logits(rows[r]) / temperature)[targets[r]],
 * ent[r] = entropy of that distribution. Keeps what backward needs in ws. */
qn_status qn_model_forward(const qn_model *m, qn_model_ws *ws, const qn_batch *b,
                           float temperature, float *logp, float *ent);
/* Backward of the last forward with the same batch: adds d(sum dlogp*logp +
 * dent*ent)/d(param) into m->g (allocated with qn_model_alloc_grads). The
 * e_score_correction_bias gets no gradient. dent may be NULL (zero). */
qn_status qn_model_backward(qn_model *m, qn_model_ws *ws, const qn_batch *b,
                            const float *dlogp, const float *dent);

#endif /* QN_CORE_MODEL_MODEL_H */
