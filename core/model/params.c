/* params.c — model description from config.json, the parameter table built
 * from the X-macro list in model.h, parameter counting without allocation,
 * and random initialisation.
 *
 * Leaves out: checkpoint I/O (checkpoint.c) and compute (forward.c).
 * Config fields follow the Hugging Face classes: Glm4MoeConfig, Qwen3Config,
 * Qwen3MoeConfig, LlamaConfig (defaults applied where a field is absent). */
#include "core/model/model.h"

#include "core/bigmem.h"
#include "core/io/hf_config.h"
#include "core/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int qn_model_layer_is_moe(const qn_model_desc *d, int64_t l) {
    if (d->router == QN_MODEL_ROUTER_NONE || d->n_experts <= 0) return 0;
    if (l < d->first_dense) return 0;
    if (l < 64 && (d->mlp_only_mask >> l) & 1u) return 0;
    if (d->moe_step > 1 && (l + 1) % d->moe_step != 0) return 0;
    return 1;
}

/* ---- from the parsed config.json (core/io/hf_config.h) ---- */

qn_status qn_model_desc_from_config(const qn_model_config *c, const char *what,
                                    qn_model_desc *d) {
    memset(d, 0, sizeof *d);
    static const char *const k_arch[] = {"Glm4MoeForCausalLM", "Qwen3ForCausalLM",
                                         "Qwen3MoeForCausalLM", "LlamaForCausalLM"};
    snprintf(d->arch, sizeof d->arch, "%s", k_arch[c->arch]);
    if (c->rope.type != QN_ROPE_DEFAULT || c->rope.factor != 1.0)
        return qn_fail(QN_ERR_UNSUPPORTED, "%s: rope_scaling type '%s' is not supported by the "
                       "model core (only plain RoPE)", what, qn_rope_type_name(c->rope.type));
    d->vocab = c->vocab_size;
    d->hidden = c->hidden_size;
    d->n_layers = c->num_hidden_layers;
    d->n_heads = c->num_attention_heads;
    d->n_kv_heads = c->num_key_value_heads;
    d->head_dim = c->head_dim;
    d->intermediate = c->intermediate_size;
    d->rot_dim = c->rotary_dim;
    d->rms_eps = c->rms_norm_eps;
    d->max_position = c->max_position_embeddings;
    d->rope_theta = c->rope.theta;
    d->qkv_bias = c->attention_bias;
    /* HF: LlamaAttention, Qwen3Attention and Qwen3MoeAttention build o_proj
     * with bias=config.attention_bias; Glm4MoeAttention with bias=False. */
    d->o_bias = c->attention_bias && c->arch != QN_ARCH_GLM4_MOE;
    d->qk_norm = c->use_qk_norm;
    d->tied = c->tie_word_embeddings;
    d->n_mtp = c->num_nextn_predict_layers;
    d->moe_step = 1;
    d->n_group = 1;
    d->topk_group = 1;
    d->routed_scale = 1.0;
    if (c->scoring != QN_MOE_SCORING_NONE) {
        d->router = c->scoring == QN_MOE_SCORING_SIGMOID ? QN_MODEL_ROUTER_SIGMOID : QN_MODEL_ROUTER_SOFTMAX;
        d->n_experts = c->n_routed_experts;
        d->top_k = c->num_experts_per_tok;
        d->moe_intermediate = c->moe_intermediate_size;
        d->n_shared_experts = c->n_shared_experts;
        d->first_dense = c->first_k_dense_replace;
        d->n_group = c->n_group > 0 ? c->n_group : 1;
        d->topk_group = c->topk_group > 0 ? c->topk_group : 1;
        d->norm_topk_prob = c->norm_topk_prob;
        d->routed_scale = c->routed_scaling_factor;
        d->has_score_bias = c->has_e_score_correction_bias;
        d->moe_step = c->decoder_sparse_step > 0 ? c->decoder_sparse_step : 1;
        for (int64_t i = 0; i < c->n_mlp_only_layers; i++) {
            int32_t l = c->mlp_only_layers[i];
            if (l < 0 || l >= 64)
                return qn_fail(QN_ERR_UNSUPPORTED, "%s: mlp_only_layers entry %d: only layers "
                               "below 64 are supported", what, l);
            d->mlp_only_mask |= (uint64_t)1 << l;
        }
        if (d->n_experts > 1024)
            return qn_fail(QN_ERR_UNSUPPORTED, "%s: %lld routed experts; at most 1024 are "
                           "supported", what, (long long)d->n_experts);
        if (d->n_experts % d->n_group != 0 || d->topk_group > d->n_group ||
            (d->n_group > 1 && d->n_experts / d->n_group < 2) ||
            d->top_k > d->topk_group * (d->n_experts / d->n_group))
            return qn_fail(QN_ERR_RANGE, "%s: n_group %lld / topk_group %lld / "
                           "num_experts_per_tok %lld do not fit %lld experts", what,
                           (long long)d->n_group, (long long)d->topk_group,
                           (long long)d->top_k, (long long)d->n_experts);
    }
    if (d->rot_dim < 2 || d->rot_dim % 2 != 0 || d->rot_dim > d->head_dim)
        return qn_fail(QN_ERR_RANGE, "%s: rotary dims %lld must be even, >= 2 and <= head_dim",
                       what, (long long)d->rot_dim);
    return QN_OK;
}

qn_status qn_model_desc_load(const char *config_path, qn_model_desc *d) {
    qn_model_config c;
    QN_CHECK(qn_hf_config_load(config_path, &c));
    return qn_model_desc_from_config(&c, config_path, d);
}

/* ---- counting ---- */

static uint64_t layer_count(const qn_model_desc *d, int moe, int active) {
    uint64_t n = 0;
#define QN_COUNT_(m, name, copies, rows, cols, present, init, trainable)                  \
    if ((present) && (trainable)) {                                                       \
        uint64_t c_ = (uint64_t)(copies);                                                 \
        if (active && c_ > 1) c_ = (uint64_t)d->top_k;                                    \
        n += c_ * (uint64_t)(rows) * (uint64_t)((cols) > 0 ? (cols) : 1);                 \
    }
    QN_LAYER_PARAMS(QN_COUNT_)
#undef QN_COUNT_
    return n;
}

void qn_model_count_params(const qn_model_desc *d, qn_param_count *out) {
    memset(out, 0, sizeof *out);
    uint64_t g = 0;
#define QN_GCOUNT_(m, name, copies, rows, cols, present, init, trainable)                  \
    if ((present) && (trainable)) {                                                        \
        g += (uint64_t)(rows) * (uint64_t)((cols) > 0 ? (cols) : 1);                       \
        out->n_tensors++;                                                                  \
    }
    QN_GLOBAL_PARAMS(QN_GCOUNT_)
#undef QN_GCOUNT_
    out->total = out->active = g;
    uint64_t embed_head = (uint64_t)d->vocab * (uint64_t)d->hidden * (d->tied ? 1u : 2u);
    for (int64_t l = 0; l < d->n_layers; l++) {
        int moe = qn_model_layer_is_moe(d, l);
        out->total += layer_count(d, moe, 0);
        out->active += layer_count(d, moe, 1);
#define QN_TCOUNT_(m, name, copies, rows, cols, present, init, trainable) \
    if (present) out->n_tensors += (uint64_t)(copies);
        QN_LAYER_PARAMS(QN_TCOUNT_)
#undef QN_TCOUNT_
    }
    out->active_core = out->active - embed_head;
    /* An MTP layer is a decoder layer at index n_layers (MoE when the model
     * has experts) plus eh_proj [H, 2H] and three H-sized norms. */
    int mtp_moe = qn_model_layer_is_moe(d, d->n_layers);
    uint64_t extra = 2 * (uint64_t)d->hidden * (uint64_t)d->hidden + 3 * (uint64_t)d->hidden;
    out->mtp_total = (uint64_t)d->n_mtp * (layer_count(d, mtp_moe, 0) + extra);
    out->mtp_active = (uint64_t)d->n_mtp * (layer_count(d, mtp_moe, 1) + extra);
}

/* ---- the model ---- */

void qn_model_free(qn_model *m) {
    if (!m) return;
    qn_big_free(m->w, m->n_floats * sizeof(float));
    qn_big_free(m->g, m->n_floats * sizeof(float));
    free(m->params);
    free(m->lw);
    free(m->lg);
    free(m->config_json);
    memset(m, 0, sizeof *m);
}

/* The format comes from the X-macro list: layer names use the layer index,
 * expert names the layer and expert index; extra arguments are ignored. */
static void fmt_name(char *buf, size_t cap, const char *fmt, int l, int e) {
    snprintf(buf, cap, fmt, l, e);
}

/* Walks the parameter list, appending table entries (when tab != NULL) and
 * returning the number of entries and floats. */
static void build_table(const qn_model_desc *d, qn_param_info *tab, size_t *n_entries,
                        size_t *n_floats, qn_global_params *gp, qn_layer_params *lp) {
    size_t ne = 0, nf = 0;
#define QN_ADD_(m, fmt, copies, rows, cols, present, init_, trainable_, ...)                \
    if (present) {                                                                          \
        size_t per_ = (size_t)(rows) * (size_t)((cols) > 0 ? (cols) : 1);                   \
        for (int64_t c_ = 0; c_ < (int64_t)(copies); c_++) {                                \
            if (tab) {                                                                      \
                qn_param_info *p_ = &tab[ne];                                               \
                fmt_name(p_->name, sizeof p_->name, fmt, __VA_ARGS__);                      \
                p_->shape[0] = (rows);                                                      \
                p_->shape[1] = (cols);                                                      \
                p_->ndim = (cols) > 0 ? 2 : 1;                                              \
                p_->trainable = (trainable_);                                               \
                p_->init = (init_);                                                         \
                p_->offset = nf + (size_t)c_ * per_;                                        \
                p_->numel = per_;                                                           \
            }                                                                               \
            ne++;                                                                           \
        }                                                                                   \
        if (OWNER) OWNER->m = (float *)(uintptr_t)(nf + 1);                                 \
        nf += per_ * (size_t)(copies);                                                      \
    }
#define OWNER gp
#define QN_GADD_(m, fmt, copies, rows, cols, present, init_, trainable_) \
    QN_ADD_(m, fmt, copies, rows, cols, present, init_, trainable_, 0, 0)
    QN_GLOBAL_PARAMS(QN_GADD_)
#undef OWNER
#define OWNER (lp ? &lp[l] : NULL)
    for (int64_t l = 0; l < d->n_layers; l++) {
        int moe = qn_model_layer_is_moe(d, l);
#define QN_LADD_(m, fmt, copies, rows, cols, present, init_, trainable_) \
    QN_ADD_(m, fmt, copies, rows, cols, present, init_, trainable_, (int)l, (int)c_)
        QN_LAYER_PARAMS(QN_LADD_)
#undef QN_LADD_
    }
#undef OWNER
#undef QN_GADD_
#undef QN_ADD_
    *n_entries = ne;
    *n_floats = nf;
}

/* build_table stores offset+1 in the pointer fields; turn them into pointers
 * into base (0 stays NULL). */
static void bind_ptrs(float **fields, size_t n_fields, float *base) {
    for (size_t i = 0; i < n_fields; i++) {
        uintptr_t v = (uintptr_t)fields[i];
        fields[i] = v ? base + (v - 1) : NULL;
    }
}

static void bind_all(qn_model *m, qn_global_params *gp, qn_layer_params *lp, float *base,
                     const qn_global_params *gproto, const qn_layer_params *lproto) {
    *gp = *gproto;
    bind_ptrs((float **)gp, sizeof *gp / sizeof(float *), base);
    for (int64_t l = 0; l < m->d.n_layers; l++) {
        lp[l] = lproto[l];
        bind_ptrs((float **)&lp[l], sizeof lp[l] / sizeof(float *), base);
    }
    if (m->d.tied) gp->lm_head = gp->embed;
}

qn_status qn_model_init(qn_model *m, const qn_model_desc *d) {
    memset(m, 0, sizeof *m);
    m->d = *d;
    size_t ne, nf;
    build_table(d, NULL, &ne, &nf, NULL, NULL);
    m->n_floats = nf; /* before the block is allocated: qn_model_free frees by size */
    m->params = calloc(ne, sizeof *m->params);
    m->lw = calloc((size_t)d->n_layers, sizeof *m->lw);
    m->lg = calloc((size_t)d->n_layers, sizeof *m->lg);
    m->w = qn_big_alloc(nf * sizeof(float));
    if (!m->params || !m->lw || !m->lg || !m->w) {
        qn_model_free(m);
        return qn_fail(QN_ERR_NOMEM, "model: cannot allocate %zu parameters (%.1f MiB)", nf,
                       (double)nf * 4.0 / 1048576.0);
    }
    qn_global_params gproto;
    memset(&gproto, 0, sizeof gproto);
    build_table(d, m->params, &ne, &nf, &gproto, m->lg);
    m->n_params = ne;
    m->n_floats = nf;
    /* m->lg holds the offset prototypes until gradients are allocated. */
    bind_all(m, &m->gw, m->lw, m->w, &gproto, m->lg);
    m->gg = gproto; /* prototype kept for qn_model_alloc_grads */
    return QN_OK;
}

qn_status qn_model_alloc_grads(qn_model *m) {
    if (m->g) return QN_OK;
    m->g = qn_big_alloc(m->n_floats * sizeof(float));
    if (!m->g) return qn_fail(QN_ERR_NOMEM, "model: cannot allocate gradients");
    qn_global_params gproto = m->gg;
    bind_all(m, &m->gg, m->lg, m->g, &gproto, m->lg);
    return QN_OK;
}

void qn_model_zero_grads(qn_model *m) {
    if (m->g) memset(m->g, 0, m->n_floats * sizeof(float));
}

const qn_param_info *qn_model_find_param(const qn_model *m, const char *name) {
    for (size_t i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i].name, name) == 0) return &m->params[i];
    return NULL;
}

qn_status qn_model_init_random(qn_model *m, uint64_t seed, float std, float bias_std) {
    /* one Philox stream per tensor: the draw does not depend on the order
     * or the threads that fill the tensors */
    for (size_t i = 0; i < m->n_params; i++) {
        const qn_param_info *p = &m->params[i];
        float *w = m->w + p->offset;
        float sd = p->trainable ? std : bias_std;
        if (p->init == QN_INIT_NORMAL) {
            qn_rng_fill_normal(seed, (uint64_t)i, 0, w, p->numel);
            for (size_t j = 0; j < p->numel; j++) w[j] *= sd;
        } else {
            for (size_t j = 0; j < p->numel; j++) w[j] = p->init == QN_INIT_ONES ? 1.0f : 0.0f;
        }
    }
    return QN_OK;
}
