/* launch_model.c — the Megatron-style architecture flags of slime's
 * scripts/models/<model>.sh (--num-layers, --hidden-size, --num-experts, ...), as
 * `quench launch` takes them (scripts/models/<model>.sh here).
 *
 * quench reads the architecture from the checkpoint's config.json, so these
 * flags do not configure anything: they are a statement about the model the
 * job expects, and the launcher checks each one against the checkpoint
 * (parsed by core/io/hf_config.h, defaults applied) before starting
 * anything, naming the flag, the config key and both values on a mismatch
 * (docs/launch-model-args.md has the mapping). Without a checkpoint (a
 * --dry-run of a recipe on a machine that does not hold the weights) the
 * flags are turned into a config.json of the implied model type and the
 * plan reports its parameter counts from the model core.
 *
 * Flags marked "accepted" describe choices quench's model types fix
 * (SwiGLU, RMSNorm, no linear biases, ...) or Megatron kernels and
 * training knobs with no meaning here; they are taken and not checked. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "cli/launch.h"
#include "core/io/hf_config.h"
#include "core/model/model.h"

typedef enum mkind {
    MK_INT,      /* compared with an integer field */
    MK_FLOAT,    /* compared with a float field (relative 1e-9) */
    MK_TRUE,     /* a bool flag: the field must be true */
    MK_FALSE,    /* a bool flag: the field must be false */
    MK_ACCEPT,   /* bool, taken and not checked */
    MK_ACCEPT_V, /* with a value, taken and not checked */
    MK_NORM,     /* --normalization: RMSNorm */
    MK_POS,      /* --position-embedding-type: rope */
    MK_SCORE,    /* --moe-router-score-function sigmoid|softmax */
    MK_FREQ,     /* --moe-layer-freq */
    MK_SHARED,   /* --moe-shared-expert-intermediate-size */
    MK_ROTPCT,   /* --rotary-percent */
} mkind;

enum {
    F_LAYERS, F_HIDDEN, F_FFN, F_HEADS, F_KV, F_HEAD_DIM, F_VOCAB, F_MAXPOS, F_MOE_FFN, F_EXPERTS,
    F_TOPK, F_GROUPS, F_GROUP_TOPK, F_MTP, F_EPS, F_THETA, F_SCALE, F_QKNORM, F_QKVBIAS,
    F_TIE, F_EBIAS, F_NONE
};

typedef struct mflag {
    const char *name;
    mkind kind;
    int field;      /* F_* for MK_INT/FLOAT/TRUE/FALSE */
    const char *hf; /* the config.json key, for messages */
} mflag;

static const mflag k_mflags[] = {
    {"num-layers", MK_INT, F_LAYERS, "num_hidden_layers"},
    {"hidden-size", MK_INT, F_HIDDEN, "hidden_size"},
    {"ffn-hidden-size", MK_INT, F_FFN, "intermediate_size"},
    {"num-attention-heads", MK_INT, F_HEADS, "num_attention_heads"},
    {"num-query-groups", MK_INT, F_KV, "num_key_value_heads"},
    {"kv-channels", MK_INT, F_HEAD_DIM, "head_dim"},
    {"vocab-size", MK_INT, F_VOCAB, "vocab_size"},
    {"padded-vocab-size", MK_INT, F_VOCAB, "vocab_size"},
    {"max-position-embeddings", MK_INT, F_MAXPOS, "max_position_embeddings"},
    {"moe-ffn-hidden-size", MK_INT, F_MOE_FFN, "moe_intermediate_size"},
    {"num-experts", MK_INT, F_EXPERTS, "n_routed_experts / num_experts"},
    {"moe-router-topk", MK_INT, F_TOPK, "num_experts_per_tok"},
    {"moe-router-num-groups", MK_INT, F_GROUPS, "n_group"},
    {"moe-router-group-topk", MK_INT, F_GROUP_TOPK, "topk_group"},
    {"mtp-num-layers", MK_INT, F_MTP, "num_nextn_predict_layers"},
    {"norm-epsilon", MK_FLOAT, F_EPS, "rms_norm_eps"},
    {"rotary-base", MK_FLOAT, F_THETA, "rope_theta"},
    {"moe-router-topk-scaling-factor", MK_FLOAT, F_SCALE, "routed_scaling_factor"},
    {"qk-layernorm", MK_TRUE, F_QKNORM, "use_qk_norm"},
    {"add-qkv-bias", MK_TRUE, F_QKVBIAS, "attention_bias"},
    {"untie-embeddings-and-output-weights", MK_FALSE, F_TIE, "tie_word_embeddings"},
    {"moe-router-enable-expert-bias", MK_TRUE, F_EBIAS, "e_score_correction_bias (glm4_moe)"},
    {"normalization", MK_NORM, F_NONE, "(RMSNorm in every supported model)"},
    {"position-embedding-type", MK_POS, F_NONE, "(rope in every supported model)"},
    {"moe-router-score-function", MK_SCORE, F_NONE, "model_type (glm4_moe sigmoid, qwen3_moe softmax)"},
    {"moe-layer-freq", MK_FREQ, F_NONE, "first_k_dense_replace / decoder_sparse_step"},
    {"moe-shared-expert-intermediate-size", MK_SHARED, F_NONE,
     "moe_intermediate_size * n_shared_experts"},
    {"rotary-percent", MK_ROTPCT, F_NONE, "partial_rotary_factor"},
    {"swiglu", MK_ACCEPT, F_NONE, NULL},
    {"group-query-attention", MK_ACCEPT, F_NONE, NULL},
    {"disable-bias-linear", MK_ACCEPT, F_NONE, NULL},
    {"use-rotary-position-embeddings", MK_ACCEPT, F_NONE, NULL},
    {"moe-grouped-gemm", MK_ACCEPT, F_NONE, NULL},
    {"moe-permute-fusion", MK_ACCEPT, F_NONE, NULL},
    {"moe-router-pre-softmax", MK_ACCEPT, F_NONE, NULL},
    {"no-rope-fusion", MK_ACCEPT, F_NONE, NULL},
    {"no-masked-softmax-fusion", MK_ACCEPT, F_NONE, NULL},
    {"no-position-embedding", MK_ACCEPT, F_NONE, NULL},
    {"seq-length", MK_ACCEPT_V, F_NONE, NULL},
    {"make-vocab-size-divisible-by", MK_ACCEPT_V, F_NONE, NULL},
    {"moe-token-dispatcher-type", MK_ACCEPT_V, F_NONE, NULL},
    {"moe-router-dtype", MK_ACCEPT_V, F_NONE, NULL},
    {"moe-router-load-balancing-type", MK_ACCEPT_V, F_NONE, NULL},
    {"moe-aux-loss-coeff", MK_ACCEPT_V, F_NONE, NULL},
    {"moe-router-bias-update-rate", MK_ACCEPT_V, F_NONE, NULL},
    {"rotary-interleaved", MK_ACCEPT, F_NONE, NULL},
};
enum { N_MFLAGS = sizeof k_mflags / sizeof k_mflags[0] };

static bool is_bool_kind(mkind k) { return k == MK_TRUE || k == MK_FALSE || k == MK_ACCEPT; }

static const mflag *lookup(const char *name) {
    for (size_t i = 0; i < N_MFLAGS; i++)
        if (strcmp(k_mflags[i].name, name) == 0) return &k_mflags[i];
    return NULL;
}

bool ln_model_is_flag(const char *name, bool *is_bool, bool *is_list) {
    const mflag *f = lookup(name);
    if (!f) return false;
    *is_bool = is_bool_kind(f->kind);
    *is_list = false;
    return true;
}

struct ln_model_args {
    char *val[N_MFLAGS]; /* the value given ("1"/"0" for bools), NULL: not given */
};

qn_status ln_model_args_new(ln_model_args **out) {
    *out = calloc(1, sizeof **out);
    return *out ? QN_OK : qn_fail(QN_ERR_NOMEM, "launch: model arguments");
}

void ln_model_args_free(ln_model_args *m) {
    if (!m) return;
    for (size_t i = 0; i < N_MFLAGS; i++) free(m->val[i]);
    free(m);
}

qn_status ln_model_args_set(ln_model_args *m, const char *name, char **vals, size_t n_vals,
                            bool negated) {
    const mflag *f = lookup(name);
    if (!f) return qn_fail(QN_ERR_INVALID, "launch: --%s is not a model flag", name);
    size_t i = (size_t)(f - k_mflags);
    char buf[32];
    const char *v;
    if (is_bool_kind(f->kind)) {
        bool on = !negated;
        if (n_vals == 1) {
            const char *t = vals[0];
            if (!strcasecmp(t, "true") || !strcmp(t, "1") || !strcasecmp(t, "yes") ||
                !strcasecmp(t, "on"))
                on = true;
            else if (!strcasecmp(t, "false") || !strcmp(t, "0") || !strcasecmp(t, "no") ||
                     !strcasecmp(t, "off"))
                on = false;
            else
                return qn_fail(QN_ERR_INVALID, "launch: --%s expects true or false, got '%s'",
                               name, t);
        } else if (n_vals > 1) {
            return qn_fail(QN_ERR_INVALID, "launch: --%s takes no value", name);
        }
        snprintf(buf, sizeof buf, "%d", on);
        v = buf;
    } else {
        if (n_vals != 1)
            return qn_fail(QN_ERR_INVALID, "launch: --%s expects one value", name);
        v = vals[0];
    }
    free(m->val[i]);
    m->val[i] = strdup(v);
    return m->val[i] ? QN_OK : qn_fail(QN_ERR_NOMEM, "launch: model arguments");
}

static qn_status parse_num(const char *flag, const char *text, double *out) {
    char *end = NULL;
    double x = strtod(text, &end);
    if (end == text || *end != 0 || !isfinite(x))
        return qn_fail(QN_ERR_INVALID, "launch: --%s expects a number, got '%s'", flag, text);
    *out = x;
    return QN_OK;
}

/* "[0]*3+[1]*89" -> k dense then m MoE layers; "1" -> every layer MoE;
 * "N" -> every N-th layer. */
static qn_status parse_freq(const char *text, int64_t *dense_first, int64_t *moe_after,
                            int64_t *every) {
    *dense_first = *moe_after = *every = 0;
    const char *p = text;
    while (isspace((unsigned char)*p)) p++;
    if (isdigit((unsigned char)*p)) {
        char *end;
        long long n = strtoll(p, &end, 10);
        if (*end == 0 && n >= 1) {
            *every = n;
            return QN_OK;
        }
    }
    int64_t pos = 0;
    bool seen_moe = false;
    while (*p) {
        int bit;
        long long count;
        int used = 0;
        if (sscanf(p, " [%d]*%lld%n", &bit, &count, &used) != 2 || used == 0 || count < 0 ||
            (bit != 0 && bit != 1))
            return qn_fail(QN_ERR_INVALID,
                           "launch: --moe-layer-freq '%s': expected N or [0]*K+[1]*M", text);
        p += used;
        if (bit == 0) {
            if (seen_moe)
                return qn_fail(QN_ERR_INVALID,
                               "launch: --moe-layer-freq '%s': dense layers after MoE layers "
                               "(quench's models have the dense ones first)", text);
            *dense_first += count;
        } else {
            seen_moe = true;
            *moe_after += count;
        }
        pos += count;
        while (isspace((unsigned char)*p)) p++;
        if (*p == '+') p++;
    }
    (void)pos;
    return QN_OK;
}

static double field_value(const qn_model_config *c, int f) {
    switch (f) {
    case F_LAYERS: return (double)c->num_hidden_layers;
    case F_HIDDEN: return (double)c->hidden_size;
    case F_FFN: return (double)c->intermediate_size;
    case F_HEADS: return (double)c->num_attention_heads;
    case F_KV: return (double)c->num_key_value_heads;
    case F_HEAD_DIM: return (double)c->head_dim;
    case F_VOCAB: return (double)c->vocab_size;
    case F_MAXPOS: return (double)c->max_position_embeddings;
    case F_MOE_FFN: return (double)c->moe_intermediate_size;
    case F_EXPERTS: return (double)c->n_routed_experts;
    case F_TOPK: return (double)c->num_experts_per_tok;
    case F_GROUPS: return (double)c->n_group;
    case F_GROUP_TOPK: return (double)c->topk_group;
    case F_MTP: return (double)c->num_nextn_predict_layers;
    case F_EPS: return c->rms_norm_eps;
    case F_THETA: return c->rope.theta;
    case F_SCALE: return c->routed_scaling_factor;
    case F_QKNORM: return c->use_qk_norm;
    case F_QKVBIAS: return c->attention_bias;
    case F_TIE: return c->tie_word_embeddings;
    case F_EBIAS: return c->has_e_score_correction_bias;
    default: return NAN;
    }
}

static bool same(double a, double b) {
    return isfinite(a) && isfinite(b) && fabs(a - b) <= 1e-9 * fmax(1.0, fmax(fabs(a), fabs(b)));
}

/* Checks one given flag against the parsed config. */
static qn_status check_one(const mflag *f, const char *v, const qn_model_config *c,
                           const char *path) {
    double x, want;
    switch (f->kind) {
    case MK_INT:
    case MK_FLOAT:
        QN_CHECK(parse_num(f->name, v, &x));
        want = field_value(c, f->field);
        if (!same(x, want))
            return qn_fail(QN_ERR_INVALID, "launch: --%s %s but %s has %s = %.10g", f->name, v,
                           path, f->hf, want);
        return QN_OK;
    case MK_TRUE:
    case MK_FALSE: {
        bool on = v[0] == '1';
        bool field = field_value(c, f->field) != 0.0;
        bool expect = f->kind == MK_TRUE ? on : !on;
        if (field != expect)
            return qn_fail(QN_ERR_INVALID, "launch: --%s%s but %s has %s = %s",
                           on ? "" : "no-", f->name, path, f->hf, field ? "true" : "false");
        return QN_OK;
    }
    case MK_NORM:
        if (strcmp(v, "RMSNorm") != 0)
            return qn_fail(QN_ERR_INVALID,
                           "launch: --normalization %s: quench's models use RMSNorm", v);
        return QN_OK;
    case MK_POS:
        if (strcmp(v, "rope") != 0)
            return qn_fail(QN_ERR_INVALID,
                           "launch: --position-embedding-type %s: quench's models use rope", v);
        return QN_OK;
    case MK_SCORE: {
        qn_moe_scoring want_s = !strcmp(v, "sigmoid") ? QN_MOE_SCORING_SIGMOID
                                : !strcmp(v, "softmax") ? QN_MOE_SCORING_SOFTMAX
                                                        : QN_MOE_SCORING_NONE;
        if (want_s == QN_MOE_SCORING_NONE)
            return qn_fail(QN_ERR_INVALID,
                           "launch: --moe-router-score-function expects sigmoid or softmax, "
                           "got '%s'", v);
        if (c->scoring != want_s)
            return qn_fail(QN_ERR_INVALID,
                           "launch: --moe-router-score-function %s but %s is %s, which scores "
                           "%s", v, path, c->model_type,
                           c->scoring == QN_MOE_SCORING_SIGMOID   ? "with sigmoid"
                           : c->scoring == QN_MOE_SCORING_SOFTMAX ? "with softmax"
                                                                  : "nothing (dense)");
        return QN_OK;
    }
    case MK_FREQ: {
        int64_t k, m, every;
        QN_CHECK(parse_freq(v, &k, &m, &every));
        if (every) {
            bool ok = c->arch == QN_ARCH_QWEN3_MOE
                          ? c->decoder_sparse_step == every && c->n_mlp_only_layers == 0
                          : every == 1 && c->first_k_dense_replace == 0 && c->n_routed_experts > 0;
            if (!ok)
                return qn_fail(QN_ERR_INVALID,
                               "launch: --moe-layer-freq %s but %s has first_k_dense_replace = "
                               "%lld, decoder_sparse_step = %lld", v, path,
                               (long long)c->first_k_dense_replace,
                               (long long)c->decoder_sparse_step);
            return QN_OK;
        }
        if (k + m != c->num_hidden_layers || k != c->first_k_dense_replace)
            return qn_fail(QN_ERR_INVALID,
                           "launch: --moe-layer-freq %s (%lld dense then %lld MoE layers) but %s "
                           "has %lld layers with first_k_dense_replace = %lld", v, (long long)k,
                           (long long)m, path, (long long)c->num_hidden_layers,
                           (long long)c->first_k_dense_replace);
        return QN_OK;
    }
    case MK_SHARED:
        QN_CHECK(parse_num(f->name, v, &x));
        want = (double)(c->moe_intermediate_size * c->n_shared_experts);
        if (!same(x, want))
            return qn_fail(QN_ERR_INVALID,
                           "launch: --%s %s but %s has moe_intermediate_size * n_shared_experts "
                           "= %lld * %lld", f->name, v, path, (long long)c->moe_intermediate_size,
                           (long long)c->n_shared_experts);
        return QN_OK;
    case MK_ROTPCT:
        QN_CHECK(parse_num(f->name, v, &x));
        if (!same(x, c->rope.partial_rotary_factor))
            return qn_fail(QN_ERR_INVALID, "launch: --rotary-percent %s but %s has "
                           "partial_rotary_factor = %g", v, path, c->rope.partial_rotary_factor);
        return QN_OK;
    default:
        return QN_OK;
    }
}

static const char *val(const ln_model_args *m, const char *name) {
    const mflag *f = lookup(name);
    return f ? m->val[f - k_mflags] : NULL;
}

/* A config.json for the model the flags describe (when no checkpoint is at
 * hand): glm4_moe when the router scores with sigmoid or has an expert bias,
 * qwen3_moe for other MoE models, qwen3 with qk-layernorm, else llama. */
static char *synthesize(const ln_model_args *m) {
    const char *experts = val(m, "num-experts");
    const char *score = val(m, "moe-router-score-function");
    const char *ebias = val(m, "moe-router-enable-expert-bias");
    const char *qk = val(m, "qk-layernorm");
    bool glm = (score && !strcmp(score, "sigmoid")) || (ebias && ebias[0] == '1');
    const char *type = experts ? (glm ? "glm4_moe" : "qwen3_moe")
                               : (qk && qk[0] == '1' ? "qwen3" : "llama");
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model_type", type);
    static const struct {
        const char *flag, *key;
    } k_map[] = {{"num-layers", "num_hidden_layers"},       {"hidden-size", "hidden_size"},
                 {"ffn-hidden-size", "intermediate_size"},  {"num-attention-heads", "num_attention_heads"},
                 {"num-query-groups", "num_key_value_heads"}, {"kv-channels", "head_dim"},
                 {"vocab-size", "vocab_size"},              {"padded-vocab-size", "vocab_size"},
                 {"max-position-embeddings", "max_position_embeddings"},
                 {"moe-ffn-hidden-size", "moe_intermediate_size"},
                 {"moe-router-topk", "num_experts_per_tok"}, {"moe-router-num-groups", "n_group"},
                 {"moe-router-group-topk", "topk_group"},   {"norm-epsilon", "rms_norm_eps"},
                 {"rotary-base", "rope_theta"},
                 {"moe-router-topk-scaling-factor", "routed_scaling_factor"},
                 {"rotary-percent", "partial_rotary_factor"}};
    for (size_t i = 0; i < sizeof k_map / sizeof k_map[0]; i++) {
        const char *v = val(m, k_map[i].flag);
        if (v && !cJSON_GetObjectItem(o, k_map[i].key))
            cJSON_AddNumberToObject(o, k_map[i].key, strtod(v, NULL));
    }
    if (experts)
        cJSON_AddNumberToObject(o, glm ? "n_routed_experts" : "num_experts", strtod(experts, NULL));
    const char *mtp = val(m, "mtp-num-layers");
    if (mtp) cJSON_AddNumberToObject(o, "num_nextn_predict_layers", strtod(mtp, NULL));
    const char *untie = val(m, "untie-embeddings-and-output-weights");
    cJSON_AddBoolToObject(o, "tie_word_embeddings", !(untie && untie[0] == '1'));
    const char *bias = val(m, "add-qkv-bias");
    cJSON_AddBoolToObject(o, "attention_bias", bias && bias[0] == '1');
    if (glm) cJSON_AddBoolToObject(o, "use_qk_norm", qk && qk[0] == '1');
    const char *sh = val(m, "moe-shared-expert-intermediate-size");
    const char *mf = val(m, "moe-ffn-hidden-size");
    if (glm && sh && mf && strtod(mf, NULL) > 0)
        cJSON_AddNumberToObject(o, "n_shared_experts", floor(strtod(sh, NULL) / strtod(mf, NULL)));
    const char *freq = val(m, "moe-layer-freq");
    int64_t k, mm, every;
    if (freq && parse_freq(freq, &k, &mm, &every) == QN_OK) {
        if (glm) cJSON_AddNumberToObject(o, "first_k_dense_replace", (double)k);
        else if (every) cJSON_AddNumberToObject(o, "decoder_sparse_step", (double)every);
    }
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}

static void describe(const qn_model_config *c, const char *from, char *desc, size_t size) {
    qn_model_desc d;
    qn_param_count n = {0};
    bool counted = qn_model_desc_from_config(c, "config", &d) == QN_OK;
    if (counted) qn_model_count_params(&d, &n);
    double u = n.total >= 1000000000u ? 1e9 : 1e6;
    const char *un = u == 1e9 ? "B" : "M";
    int k = snprintf(desc, size, "%s, %lld layers, hidden %lld", c->model_type,
                     (long long)c->num_hidden_layers, (long long)c->hidden_size);
    if (c->n_routed_experts && k > 0 && (size_t)k < size)
        k += snprintf(desc + k, size - (size_t)k, ", %lld experts top-%lld",
                      (long long)c->n_routed_experts, (long long)c->num_experts_per_tok);
    if (counted && k > 0 && (size_t)k < size)
        k += snprintf(desc + k, size - (size_t)k, ": %.1f%s parameters, %.1f%s active",
                      (double)n.total / u, un, (double)n.active / u, un);
    if (k > 0 && (size_t)k < size) snprintf(desc + k, size - (size_t)k, " (%s)", from);
}

qn_status ln_model_args_check(const ln_model_args *m, const char *dir, bool dry_run, char *desc,
                              size_t size) {
    desc[0] = 0;
    size_t given = 0, checked = 0;
    for (size_t i = 0; i < N_MFLAGS; i++) {
        if (!m->val[i]) continue;
        given++;
        checked += k_mflags[i].kind != MK_ACCEPT && k_mflags[i].kind != MK_ACCEPT_V;
    }
    char path[2200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    struct stat st;
    qn_model_config c;
    if (stat(path, &st) == 0) {
        QN_CHECK(qn_hf_config_load(path, &c));
        for (size_t i = 0; i < N_MFLAGS; i++)
            if (m->val[i]) QN_CHECK(check_one(&k_mflags[i], m->val[i], &c, path));
        char from[2400];
        snprintf(from, sizeof from, "%s; %zu model flag%s checked against it", path, checked,
                 checked == 1 ? "" : "s");
        describe(&c, from, desc, size);
        return QN_OK;
    }
    if (!dry_run)
        return qn_fail(QN_ERR_NOT_FOUND, "launch: --hf-checkpoint %s: %s not found", dir, path);
    if (given == 0) {
        snprintf(desc, size, "%s not found (a run would stop here)", path);
        return QN_OK;
    }
    char *text = synthesize(m);
    if (!text) return qn_fail(QN_ERR_NOMEM, "launch: model arguments");
    qn_status s = qn_hf_config_parse(text, strlen(text), "the model flags", &c);
    free(text);
    if (s != QN_OK) {
        snprintf(desc, size, "%s not found; the model flags do not describe a model quench "
                 "runs: %s", path, qn_last_error());
        return QN_OK;
    }
    char from[2400];
    snprintf(from, sizeof from, "from the model flags: %s not found, nothing checked", path);
    describe(&c, from, desc, size);
    return QN_OK;
}
