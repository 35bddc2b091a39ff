/* hf_config.c — see hf_config.h. Reads a config.json with cJSON, applies the
 * per-model_type defaults of the transformers configuration classes, and
 * checks the numbers against each other. Every error names the source, the
 * field and what was wrong with it. Does not look at quantization_config,
 * generation settings or anything outside the four decoder model types. */
#include "core/io/hf_config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CONFIG_BYTES (16u << 20)
/* Largest integer a double holds exactly; JSON counts beyond it are refused. */
#define MAX_EXACT_INT 9007199254740992.0

/* Per-model_type defaults (transformers' configuration classes). */
typedef struct arch_info {
    const char *model_type;
    qn_model_arch arch;
    bool moe;
    int64_t kv_heads_default; /* 0: same as num_attention_heads */
    int64_t head_dim_default; /* 0: hidden_size / num_attention_heads */
    int64_t max_pos_default;
    double eps_default;
    double partial_rotary_default;
} arch_info;

static const arch_info k_archs[] = {
    {"glm4_moe", QN_ARCH_GLM4_MOE, true, 8, 0, 131072, 1e-5, 0.5},
    {"qwen3", QN_ARCH_QWEN3, false, 32, 128, 32768, 1e-6, 1.0},
    {"qwen3_moe", QN_ARCH_QWEN3_MOE, true, 4, 0, 32768, 1e-6, 1.0},
    {"llama", QN_ARCH_LLAMA, false, 0, 0, 2048, 1e-6, 1.0},
};
#define N_ARCHS (sizeof k_archs / sizeof k_archs[0])
#define DEFAULT_ROPE_THETA 10000.0

/* Where errors point: the source name and, for nested objects, a prefix
 * ("rope_parameters.") put before field names. */
typedef struct where {
    const char *src;
    const char *prefix;
} where;

static const char *json_type_name(const cJSON *v) {
    if (!v) return "nothing";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "an unknown value";
}

/* The member `key` of obj, with JSON null treated as absent. */
static const cJSON *member(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

static qn_status type_error(where w, const char *key, const char *want, const cJSON *v) {
    return qn_fail(QN_ERR_FORMAT, "%s: field '%s%s': expected %s, got %s", w.src, w.prefix, key,
                   want, json_type_name(v));
}

static qn_status missing(where w, const char *key) {
    return qn_fail(QN_ERR_NOT_FOUND, "%s: required field '%s%s' is missing", w.src, w.prefix, key);
}

/* An integer-valued JSON number. */
static qn_status as_int(where w, const char *key, const cJSON *v, int64_t *out) {
    if (!cJSON_IsNumber(v)) return type_error(w, key, "an integer", v);
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d) || fabs(d) > MAX_EXACT_INT) {
        return qn_fail(QN_ERR_FORMAT, "%s: field '%s%s': expected an integer, got %.17g", w.src,
                       w.prefix, key, d);
    }
    *out = (int64_t)d;
    return QN_OK;
}

/* Integer field; absent or null -> def, or an error when `required`. */
static qn_status get_int(where w, const cJSON *obj, const char *key, bool required, int64_t def,
                         int64_t *out) {
    const cJSON *v = member(obj, key);
    if (!v) {
        if (required) return missing(w, key);
        *out = def;
        return QN_OK;
    }
    return as_int(w, key, v, out);
}

/* Integer field that must be >= min (1 for sizes, 0 for counts). */
static qn_status get_int_min(where w, const cJSON *obj, const char *key, bool required, int64_t def,
                             int64_t min, int64_t *out) {
    QN_CHECK(get_int(w, obj, key, required, def, out));
    if (*out < min) {
        return qn_fail(QN_ERR_RANGE, "%s: field '%s%s': must be %s, got %lld", w.src, w.prefix, key,
                       min == 1 ? "a positive integer" : "an integer >= 0", (long long)*out);
    }
    return QN_OK;
}

static qn_status get_double(where w, const cJSON *obj, const char *key, double def, bool *present,
                            double *out) {
    const cJSON *v = member(obj, key);
    if (present) *present = v != NULL;
    if (!v) {
        *out = def;
        return QN_OK;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return type_error(w, key, "a number", v);
    *out = v->valuedouble;
    return QN_OK;
}

/* A finite number > 0 when present; absent -> def (not checked: callers use
 * 0 as "not given"). */
static qn_status get_positive(where w, const cJSON *obj, const char *key, double def, bool *present,
                              double *out) {
    bool have = false;
    QN_CHECK(get_double(w, obj, key, def, &have, out));
    if (present) *present = have;
    if (have && !(*out > 0.0)) {
        return qn_fail(QN_ERR_RANGE, "%s: field '%s%s': must be > 0, got %.17g", w.src, w.prefix,
                       key, *out);
    }
    return QN_OK;
}

static qn_status get_bool(where w, const cJSON *obj, const char *key, bool def, bool *out) {
    const cJSON *v = member(obj, key);
    if (!v) {
        *out = def;
        return QN_OK;
    }
    if (!cJSON_IsBool(v)) return type_error(w, key, "true or false", v);
    *out = cJSON_IsTrue(v);
    return QN_OK;
}

/* String field; NULL when absent or null. */
static qn_status get_string(where w, const cJSON *obj, const char *key, const char **out) {
    const cJSON *v = member(obj, key);
    *out = NULL;
    if (!v) return QN_OK;
    if (!cJSON_IsString(v) || !v->valuestring) return type_error(w, key, "a string", v);
    *out = v->valuestring;
    return QN_OK;
}

/* A JSON object member; NULL when absent or null. */
static qn_status get_object(where w, const cJSON *obj, const char *key, const cJSON **out) {
    const cJSON *v = member(obj, key);
    *out = NULL;
    if (!v) return QN_OK;
    if (!cJSON_IsObject(v)) return type_error(w, key, "an object", v);
    *out = v;
    return QN_OK;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Two keys with the same name make "the value of X" ambiguous. Sorting the
 * names keeps this O(n log n) for hostile inputs with many keys. */
static qn_status check_duplicates(where w, const cJSON *obj) {
    size_t n = 0;
    for (const cJSON *a = obj->child; a; a = a->next)
        n++;
    if (n < 2) return QN_OK;
    const char **names = malloc(n * sizeof *names);
    if (!names) return qn_fail(QN_ERR_NOMEM, "%s: out of memory", w.src);
    size_t k = 0;
    for (const cJSON *a = obj->child; a; a = a->next)
        names[k++] = a->string ? a->string : "";
    qsort(names, n, sizeof *names, cmp_str_ptr);
    qn_status s = QN_OK;
    for (size_t i = 1; i < n; i++) {
        if (strcmp(names[i - 1], names[i]) == 0) {
            s = qn_fail(QN_ERR_FORMAT, "%s: field '%s%s' appears more than once", w.src, w.prefix,
                        names[i]);
            break;
        }
    }
    free(names);
    return s;
}

/* A token id: >= 0 and < vocab. pad_token_id may be negative, which some
 * Llama-derived configs use for "no pad token". */
static qn_status get_token_id(where w, const cJSON *obj, const char *key, int64_t def,
                              int64_t vocab, int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        /* an explicit null means "no such token", as in transformers */
        *out = v ? -1 : def;
        return QN_OK;
    }
    QN_CHECK(as_int(w, key, v, out));
    if (*out < 0 && strcmp(key, "pad_token_id") == 0) {
        *out = -1;
        return QN_OK;
    }
    if (*out < 0 || *out >= vocab) {
        return qn_fail(QN_ERR_RANGE,
                       "%s: field '%s': token id %lld is outside [0, vocab_size %lld)", w.src, key,
                       (long long)*out, (long long)vocab);
    }
    return QN_OK;
}

/* eos_token_id: an integer or a list of integers. */
static qn_status get_eos(where w, const cJSON *obj, int64_t def, qn_model_config *c) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "eos_token_id");
    c->n_eos = 0;
    if (!v || cJSON_IsNull(v)) {
        if (!v && def >= 0) c->eos_token_ids[c->n_eos++] = def;
        return QN_OK;
    }
    if (cJSON_IsNumber(v)) {
        QN_CHECK(get_token_id(w, obj, "eos_token_id", -1, c->vocab_size, &c->eos_token_ids[0]));
        c->n_eos = 1;
        return QN_OK;
    }
    if (!cJSON_IsArray(v)) return type_error(w, "eos_token_id", "an integer or a list of them", v);
    int n = cJSON_GetArraySize(v);
    if (n > QN_MODEL_MAX_EOS) {
        return qn_fail(QN_ERR_TOO_LARGE, "%s: field 'eos_token_id': %d ids, at most %d supported",
                       w.src, n, QN_MODEL_MAX_EOS);
    }
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        char name[32];
        snprintf(name, sizeof name, "eos_token_id[%d]", i);
        int64_t id;
        QN_CHECK(as_int(w, name, e, &id));
        if (id < 0 || id >= c->vocab_size) {
            return qn_fail(QN_ERR_RANGE,
                           "%s: field '%s': token id %lld is outside [0, vocab_size %lld)", w.src,
                           name, (long long)id, (long long)c->vocab_size);
        }
        c->eos_token_ids[c->n_eos++] = id;
    }
    return QN_OK;
}

/* ---- RoPE ---------------------------------------------------------------- */

/* A value that may be given at the top level and inside the rope object;
 * both present with different numbers is an error. */
static qn_status rope_double(where top, const cJSON *root, where in, const cJSON *rp,
                             const char *key, double def, double *out) {
    bool at_top = false, inside = false;
    double a = def, b = def;
    QN_CHECK(get_positive(top, root, key, def, &at_top, &a));
    if (rp) QN_CHECK(get_positive(in, rp, key, def, &inside, &b));
    if (at_top && inside && a != b) {
        return qn_fail(QN_ERR_FORMAT, "%s: field '%s' (%.17g) and '%s%s' (%.17g) disagree", top.src,
                       key, a, in.prefix, key, b);
    }
    *out = inside ? b : a;
    return QN_OK;
}

static qn_status parse_rope(where w, const cJSON *root, qn_model_config *c) {
    const cJSON *scaling = NULL, *params = NULL;
    QN_CHECK(get_object(w, root, "rope_scaling", &scaling));
    QN_CHECK(get_object(w, root, "rope_parameters", &params));
    if (scaling && params) {
        return qn_fail(QN_ERR_FORMAT,
                       "%s: both 'rope_scaling' and 'rope_parameters' are given; use one", w.src);
    }
    const cJSON *rp = scaling ? scaling : params;
    where in = {w.src, scaling ? "rope_scaling." : "rope_parameters."};
    if (rp) {
        /* Per-layer-type form: {"full_attention": {...}, "sliding_attention": {...}}. */
        const cJSON *sliding = cJSON_GetObjectItemCaseSensitive(rp, "sliding_attention");
        if (sliding && cJSON_IsObject(sliding)) {
            return qn_fail(QN_ERR_UNSUPPORTED,
                           "%s: field '%ssliding_attention': sliding-window layers are not "
                           "supported",
                           w.src, in.prefix);
        }
        const cJSON *full = cJSON_GetObjectItemCaseSensitive(rp, "full_attention");
        if (full) {
            if (!cJSON_IsObject(full)) return type_error(in, "full_attention", "an object", full);
            rp = full;
            in.prefix =
                scaling ? "rope_scaling.full_attention." : "rope_parameters.full_attention.";
        }
        QN_CHECK(check_duplicates(in, rp));
    }

    qn_rope_config *r = &c->rope;
    memset(r, 0, sizeof *r);
    const arch_info *ai = NULL;
    for (size_t i = 0; i < N_ARCHS; i++)
        if (k_archs[i].arch == c->arch) ai = &k_archs[i];
    QN_CHECK(rope_double(w, root, in, rp, "rope_theta", DEFAULT_ROPE_THETA, &r->theta));
    QN_CHECK(rope_double(w, root, in, rp, "partial_rotary_factor", ai->partial_rotary_default,
                         &r->partial_rotary_factor));
    if (r->partial_rotary_factor > 1.0) {
        return qn_fail(QN_ERR_RANGE, "%s: field 'partial_rotary_factor': must be in (0, 1], got %g",
                       w.src, r->partial_rotary_factor);
    }

    const char *type = "default";
    if (rp) {
        const char *t1 = NULL, *t2 = NULL;
        QN_CHECK(get_string(in, rp, "rope_type", &t1));
        QN_CHECK(get_string(in, rp, "type", &t2));
        if (t1 && t2 && strcmp(t1, t2) != 0) {
            return qn_fail(QN_ERR_FORMAT,
                           "%s: fields '%srope_type' (%s) and '%stype' (%s) disagree", w.src,
                           in.prefix, t1, in.prefix, t2);
        }
        if (t1 || t2) type = t1 ? t1 : t2;
    }
    r->factor = 1.0;
    if (strcmp(type, "default") == 0) {
        r->type = QN_ROPE_DEFAULT;
        return QN_OK;
    }
    if (strcmp(type, "linear") == 0) {
        r->type = QN_ROPE_LINEAR;
    } else if (strcmp(type, "llama3") == 0) {
        r->type = QN_ROPE_LLAMA3;
    } else if (strcmp(type, "yarn") == 0) {
        r->type = QN_ROPE_YARN;
    } else {
        return qn_fail(QN_ERR_UNSUPPORTED,
                       "%s: field '%srope_type': RoPE type '%s' is not supported (quench reads "
                       "default, linear, llama3, yarn)",
                       w.src, in.prefix, type);
    }
    bool have = false;
    QN_CHECK(get_positive(in, rp, "factor", 1.0, &have, &r->factor));
    if (!have) return missing(in, "factor");
    if (r->type == QN_ROPE_LLAMA3) {
        bool lo = false, hi = false;
        QN_CHECK(get_positive(in, rp, "low_freq_factor", 0, &lo, &r->low_freq_factor));
        if (!lo) return missing(in, "low_freq_factor");
        QN_CHECK(get_positive(in, rp, "high_freq_factor", 0, &hi, &r->high_freq_factor));
        if (!hi) return missing(in, "high_freq_factor");
        if (!(r->high_freq_factor > r->low_freq_factor)) {
            return qn_fail(QN_ERR_RANGE,
                           "%s: field '%shigh_freq_factor' (%g) must exceed low_freq_factor (%g)",
                           w.src, in.prefix, r->high_freq_factor, r->low_freq_factor);
        }
        QN_CHECK(get_int_min(in, rp, "original_max_position_embeddings", true, 0, 1,
                             &r->original_max_position_embeddings));
    } else if (r->type == QN_ROPE_YARN) {
        static const char *const k_unsupported[] = {"mscale", "mscale_all_dim"};
        for (size_t i = 0; i < 2; i++) {
            if (member(rp, k_unsupported[i])) {
                return qn_fail(QN_ERR_UNSUPPORTED,
                               "%s: field '%s%s': YaRN with %s is not supported", w.src, in.prefix,
                               k_unsupported[i], k_unsupported[i]);
            }
        }
        QN_CHECK(get_int_min(in, rp, "original_max_position_embeddings", false,
                             c->max_position_embeddings, 1, &r->original_max_position_embeddings));
        QN_CHECK(get_positive(in, rp, "beta_fast", 32.0, NULL, &r->beta_fast));
        QN_CHECK(get_positive(in, rp, "beta_slow", 1.0, NULL, &r->beta_slow));
        bool af = false;
        QN_CHECK(get_positive(in, rp, "attention_factor", 0.0, &af, &r->attention_factor));
        (void)af;
    }
    return QN_OK;
}

/* ---- MoE ----------------------------------------------------------------- */

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static qn_status parse_moe(where w, const cJSON *root, qn_model_config *c) {
    const bool glm = c->arch == QN_ARCH_GLM4_MOE;
    const char *experts_key = glm ? "n_routed_experts" : "num_experts";
    QN_CHECK(get_int_min(w, root, experts_key, true, 0, 1, &c->n_routed_experts));
    QN_CHECK(get_int_min(w, root, "num_experts_per_tok", true, 0, 1, &c->num_experts_per_tok));
    QN_CHECK(get_int_min(w, root, "moe_intermediate_size", true, 0, 1, &c->moe_intermediate_size));
    if (c->num_experts_per_tok > c->n_routed_experts) {
        return qn_fail(QN_ERR_RANGE,
                       "%s: field 'num_experts_per_tok': %lld experts per token but only %lld "
                       "experts ('%s')",
                       w.src, (long long)c->num_experts_per_tok, (long long)c->n_routed_experts,
                       experts_key);
    }
    if (glm) {
        c->scoring = QN_MOE_SCORING_SIGMOID;
        c->has_e_score_correction_bias = true;
        QN_CHECK(get_int_min(w, root, "n_shared_experts", false, 1, 0, &c->n_shared_experts));
        QN_CHECK(
            get_int_min(w, root, "first_k_dense_replace", false, 1, 0, &c->first_k_dense_replace));
        if (c->first_k_dense_replace > c->num_hidden_layers) {
            return qn_fail(QN_ERR_RANGE,
                           "%s: field 'first_k_dense_replace': %lld exceeds num_hidden_layers %lld",
                           w.src, (long long)c->first_k_dense_replace,
                           (long long)c->num_hidden_layers);
        }
        QN_CHECK(get_int_min(w, root, "n_group", false, 1, 1, &c->n_group));
        QN_CHECK(get_int_min(w, root, "topk_group", false, 1, 1, &c->topk_group));
        QN_CHECK(get_bool(w, root, "norm_topk_prob", true, &c->norm_topk_prob));
        QN_CHECK(
            get_positive(w, root, "routed_scaling_factor", 1.0, NULL, &c->routed_scaling_factor));
        QN_CHECK(get_int_min(w, root, "num_nextn_predict_layers", false, 0, 0,
                             &c->num_nextn_predict_layers));
        c->decoder_sparse_step = 1;
        if (c->n_routed_experts % c->n_group != 0) {
            return qn_fail(QN_ERR_RANGE,
                           "%s: field 'n_group': %lld groups do not divide %lld experts", w.src,
                           (long long)c->n_group, (long long)c->n_routed_experts);
        }
        if (c->topk_group > c->n_group) {
            return qn_fail(QN_ERR_RANGE, "%s: field 'topk_group': %lld exceeds n_group %lld", w.src,
                           (long long)c->topk_group, (long long)c->n_group);
        }
        int64_t per_group = c->n_routed_experts / c->n_group;
        /* Groups are ranked by the sum of their two best scores. */
        if (per_group < 2) {
            return qn_fail(QN_ERR_RANGE,
                           "%s: field 'n_group': %lld groups of %lld experts; each group needs at "
                           "least 2 (groups are ranked by their top-2 scores)",
                           w.src, (long long)c->n_group, (long long)per_group);
        }
        if (c->num_experts_per_tok > c->topk_group * per_group) {
            return qn_fail(QN_ERR_RANGE,
                           "%s: field 'num_experts_per_tok': %lld experts cannot come from "
                           "topk_group %lld groups of %lld",
                           w.src, (long long)c->num_experts_per_tok, (long long)c->topk_group,
                           (long long)per_group);
        }
    } else {
        c->scoring = QN_MOE_SCORING_SOFTMAX;
        c->has_e_score_correction_bias = false;
        c->n_shared_experts = 0;
        c->first_k_dense_replace = 0;
        c->n_group = 1;
        c->topk_group = 1;
        c->routed_scaling_factor = 1.0;
        c->num_nextn_predict_layers = 0;
        QN_CHECK(get_bool(w, root, "norm_topk_prob", false, &c->norm_topk_prob));
        QN_CHECK(get_int_min(w, root, "decoder_sparse_step", false, 1, 1, &c->decoder_sparse_step));
        const cJSON *list = member(root, "mlp_only_layers");
        c->n_mlp_only_layers = 0;
        if (list) {
            if (!cJSON_IsArray(list)) {
                return type_error(w, "mlp_only_layers", "a list of layer indices", list);
            }
            int i = 0;
            for (const cJSON *e = list->child; e; e = e->next, i++) {
                char name[40];
                snprintf(name, sizeof name, "mlp_only_layers[%d]", i);
                int64_t l;
                QN_CHECK(as_int(w, name, e, &l));
                if (l < 0 || l >= c->num_hidden_layers) {
                    return qn_fail(QN_ERR_RANGE,
                                   "%s: field '%s': layer %lld is outside [0, num_hidden_layers "
                                   "%lld)",
                                   w.src, name, (long long)l, (long long)c->num_hidden_layers);
                }
                for (int64_t j = 0; j < c->n_mlp_only_layers; j++) {
                    if (c->mlp_only_layers[j] == l) {
                        return qn_fail(QN_ERR_FORMAT, "%s: field '%s': layer %lld is listed twice",
                                       w.src, name, (long long)l);
                    }
                }
                /* num_hidden_layers <= QN_MODEL_MAX_LAYERS and no duplicates,
                 * so the list cannot overflow the array. */
                c->mlp_only_layers[c->n_mlp_only_layers++] = (int32_t)l;
            }
            qsort(c->mlp_only_layers, (size_t)c->n_mlp_only_layers, sizeof(int32_t), cmp_i32);
        }
    }
    return QN_OK;
}

/* ---- top level ----------------------------------------------------------- */

static qn_status parse_root(where w, const cJSON *root, qn_model_config *c) {
    if (!cJSON_IsObject(root)) {
        return qn_fail(QN_ERR_FORMAT, "%s: expected a JSON object at the top level, got %s", w.src,
                       json_type_name(root));
    }
    QN_CHECK(check_duplicates(w, root));

    const char *mt = NULL;
    QN_CHECK(get_string(w, root, "model_type", &mt));
    if (!mt) return missing(w, "model_type");
    const arch_info *ai = NULL;
    for (size_t i = 0; i < N_ARCHS; i++)
        if (strcmp(k_archs[i].model_type, mt) == 0) ai = &k_archs[i];
    if (!ai) {
        return qn_fail(QN_ERR_UNSUPPORTED,
                       "%s: field 'model_type': '%s' is not supported (quench reads glm4_moe, "
                       "qwen3, qwen3_moe, llama)",
                       w.src, mt);
    }
    c->arch = ai->arch;
    snprintf(c->model_type, sizeof c->model_type, "%s", ai->model_type);

    const cJSON *archs = member(root, "architectures");
    if (archs) {
        if (!cJSON_IsArray(archs))
            return type_error(w, "architectures", "a list of strings", archs);
        for (const cJSON *e = archs->child; e; e = e->next)
            if (!cJSON_IsString(e)) return type_error(w, "architectures[]", "a string", e);
    }

    const char *act = NULL;
    QN_CHECK(get_string(w, root, "hidden_act", &act));
    if (act && strcmp(act, "silu") != 0) {
        return qn_fail(QN_ERR_UNSUPPORTED,
                       "%s: field 'hidden_act': '%s' is not supported (quench's MLP is SwiGLU: "
                       "\"silu\")",
                       w.src, act);
    }

    QN_CHECK(get_int_min(w, root, "vocab_size", true, 0, 1, &c->vocab_size));
    QN_CHECK(get_int_min(w, root, "hidden_size", true, 0, 1, &c->hidden_size));
    QN_CHECK(get_int_min(w, root, "intermediate_size", true, 0, 1, &c->intermediate_size));
    QN_CHECK(get_int_min(w, root, "num_hidden_layers", true, 0, 1, &c->num_hidden_layers));
    if (c->num_hidden_layers > QN_MODEL_MAX_LAYERS) {
        return qn_fail(QN_ERR_TOO_LARGE,
                       "%s: field 'num_hidden_layers': %lld, at most %d supported", w.src,
                       (long long)c->num_hidden_layers, QN_MODEL_MAX_LAYERS);
    }
    QN_CHECK(get_int_min(w, root, "num_attention_heads", true, 0, 1, &c->num_attention_heads));
    int64_t kv_def = ai->kv_heads_default ? ai->kv_heads_default : c->num_attention_heads;
    QN_CHECK(
        get_int_min(w, root, "num_key_value_heads", false, kv_def, 1, &c->num_key_value_heads));
    if (c->num_attention_heads % c->num_key_value_heads != 0) {
        return qn_fail(QN_ERR_RANGE,
                       "%s: field 'num_key_value_heads': %lld does not divide num_attention_heads "
                       "%lld",
                       w.src, (long long)c->num_key_value_heads, (long long)c->num_attention_heads);
    }
    if (member(root, "head_dim") || ai->head_dim_default) {
        QN_CHECK(get_int_min(w, root, "head_dim", false, ai->head_dim_default, 1, &c->head_dim));
    } else {
        if (c->hidden_size % c->num_attention_heads != 0) {
            return qn_fail(QN_ERR_RANGE,
                           "%s: field 'head_dim' is absent and num_attention_heads %lld does not "
                           "divide hidden_size %lld",
                           w.src, (long long)c->num_attention_heads, (long long)c->hidden_size);
        }
        c->head_dim = c->hidden_size / c->num_attention_heads;
    }
    QN_CHECK(get_int_min(w, root, "max_position_embeddings", false, ai->max_pos_default, 1,
                         &c->max_position_embeddings));
    QN_CHECK(get_positive(w, root, "rms_norm_eps", ai->eps_default, NULL, &c->rms_norm_eps));

    QN_CHECK(parse_rope(w, root, c));
    c->rotary_dim = (int64_t)((double)c->head_dim * c->rope.partial_rotary_factor);
    if (c->rotary_dim < 2 || c->rotary_dim % 2 != 0) {
        return qn_fail(QN_ERR_RANGE,
                       "%s: field 'partial_rotary_factor': head_dim %lld * %g gives %lld rotary "
                       "dims; must be even and >= 2",
                       w.src, (long long)c->head_dim, c->rope.partial_rotary_factor,
                       (long long)c->rotary_dim);
    }

    QN_CHECK(get_bool(w, root, "attention_bias", false, &c->attention_bias));
    QN_CHECK(get_bool(w, root, "tie_word_embeddings", false, &c->tie_word_embeddings));
    switch (c->arch) {
    case QN_ARCH_GLM4_MOE:
        QN_CHECK(get_bool(w, root, "use_qk_norm", false, &c->use_qk_norm));
        break;
    case QN_ARCH_QWEN3:
    case QN_ARCH_QWEN3_MOE:
        c->use_qk_norm = true;
        break;
    case QN_ARCH_LLAMA:
        c->use_qk_norm = false;
        break;
    }
    if (c->arch == QN_ARCH_LLAMA) {
        bool mlp_bias = false;
        QN_CHECK(get_bool(w, root, "mlp_bias", false, &mlp_bias));
        if (mlp_bias) {
            return qn_fail(QN_ERR_UNSUPPORTED, "%s: field 'mlp_bias': MLP biases are not supported",
                           w.src);
        }
    }
    if (c->arch == QN_ARCH_QWEN3 || c->arch == QN_ARCH_QWEN3_MOE) {
        bool sliding = false;
        QN_CHECK(get_bool(w, root, "use_sliding_window", false, &sliding));
        if (sliding) {
            return qn_fail(QN_ERR_UNSUPPORTED,
                           "%s: field 'use_sliding_window': sliding-window attention is not "
                           "supported",
                           w.src);
        }
    }
    const cJSON *layer_types = member(root, "layer_types");
    if (layer_types) {
        if (!cJSON_IsArray(layer_types)) {
            return type_error(w, "layer_types", "a list of strings", layer_types);
        }
        for (const cJSON *e = layer_types->child; e; e = e->next) {
            if (!cJSON_IsString(e)) return type_error(w, "layer_types[]", "a string", e);
            if (strcmp(e->valuestring, "full_attention") != 0) {
                return qn_fail(QN_ERR_UNSUPPORTED,
                               "%s: field 'layer_types': layer type '%s' is not supported (only "
                               "full_attention)",
                               w.src, e->valuestring);
            }
        }
    }

    if (ai->moe) {
        QN_CHECK(parse_moe(w, root, c));
    } else {
        c->scoring = QN_MOE_SCORING_NONE;
        c->decoder_sparse_step = 1;
    }
    if (c->num_hidden_layers + c->num_nextn_predict_layers > QN_MODEL_MAX_LAYERS) {
        return qn_fail(QN_ERR_TOO_LARGE,
                       "%s: field 'num_nextn_predict_layers': %lld + %lld layers, at most %d "
                       "supported",
                       w.src, (long long)c->num_hidden_layers,
                       (long long)c->num_nextn_predict_layers, QN_MODEL_MAX_LAYERS);
    }

    const bool llama = c->arch == QN_ARCH_LLAMA;
    QN_CHECK(
        get_token_id(w, root, "bos_token_id", llama ? 1 : -1, c->vocab_size, &c->bos_token_id));
    QN_CHECK(get_token_id(w, root, "pad_token_id", -1, c->vocab_size, &c->pad_token_id));
    QN_CHECK(get_eos(w, root, llama ? 2 : -1, c));

    const char *dt = NULL, *dt2 = NULL;
    QN_CHECK(get_string(w, root, "torch_dtype", &dt));
    QN_CHECK(get_string(w, root, "dtype", &dt2));
    if (dt && dt2 && strcmp(dt, dt2) != 0) {
        return qn_fail(QN_ERR_FORMAT, "%s: fields 'torch_dtype' (%s) and 'dtype' (%s) disagree",
                       w.src, dt, dt2);
    }
    if (!dt) dt = dt2;
    c->torch_dtype = QN_TORCH_DTYPE_UNSET;
    if (dt) {
        if (strcmp(dt, "bfloat16") == 0)
            c->torch_dtype = QN_TORCH_DTYPE_BF16;
        else if (strcmp(dt, "float16") == 0)
            c->torch_dtype = QN_TORCH_DTYPE_F16;
        else if (strcmp(dt, "float32") == 0)
            c->torch_dtype = QN_TORCH_DTYPE_F32;
        else {
            return qn_fail(QN_ERR_UNSUPPORTED,
                           "%s: field 'torch_dtype': '%s' is not supported (bfloat16, float16, "
                           "float32)",
                           w.src, dt);
        }
    }
    return QN_OK;
}

qn_status qn_hf_config_parse(const char *json, size_t len, const char *source,
                             qn_model_config *out) {
    if (!json || !out) return qn_fail(QN_ERR_INVALID, "qn_hf_config_parse: NULL argument");
    where w = {source ? source : "<config>", ""};
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t at = (end && end >= json && end <= json + len) ? (size_t)(end - json) : 0;
        return qn_fail(QN_ERR_FORMAT, "%s: not valid JSON (error near byte %zu)", w.src, at);
    }
    /* Trailing non-space bytes after the object mean a damaged file. */
    for (const char *p = end; p && p < json + len; p++) {
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t' && *p != '\0') {
            cJSON_Delete(root);
            return qn_fail(QN_ERR_FORMAT, "%s: unexpected data after the JSON object at byte %zu",
                           w.src, (size_t)(p - json));
        }
    }
    memset(out, 0, sizeof *out);
    qn_status s = parse_root(w, root, out);
    cJSON_Delete(root);
    return s;
}

qn_status qn_hf_config_load(const char *path, qn_model_config *out) {
    if (!path) return qn_fail(QN_ERR_INVALID, "qn_hf_config_load: NULL path");
    FILE *f = fopen(path, "rb");
    if (!f) return qn_fail(QN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char *buf = malloc(MAX_CONFIG_BYTES + 1);
    if (!buf) {
        fclose(f);
        return qn_fail(QN_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, MAX_CONFIG_BYTES + 1, f);
    int err = ferror(f);
    fclose(f);
    qn_status s;
    if (err) {
        s = qn_fail(QN_ERR_IO, "%s: read error", path);
    } else if (n > MAX_CONFIG_BYTES) {
        s = qn_fail(QN_ERR_TOO_LARGE, "%s: larger than %u bytes; not a config.json", path,
                    MAX_CONFIG_BYTES);
    } else {
        s = qn_hf_config_parse(buf, n, path, out);
    }
    free(buf);
    return s;
}

qn_mlp_kind qn_model_config_mlp_kind(const qn_model_config *c, int64_t layer) {
    if (!c || layer < 0 || layer >= c->num_hidden_layers + c->num_nextn_predict_layers) {
        return QN_MLP_NONE;
    }
    switch (c->arch) {
    case QN_ARCH_GLM4_MOE:
        return layer >= c->first_k_dense_replace ? QN_MLP_MOE : QN_MLP_DENSE;
    case QN_ARCH_QWEN3_MOE:
        for (int64_t i = 0; i < c->n_mlp_only_layers; i++)
            if (c->mlp_only_layers[i] == layer) return QN_MLP_DENSE;
        return (layer + 1) % c->decoder_sparse_step == 0 ? QN_MLP_MOE : QN_MLP_DENSE;
    case QN_ARCH_QWEN3:
    case QN_ARCH_LLAMA:
        return QN_MLP_DENSE;
    }
    return QN_MLP_NONE;
}

int64_t qn_model_config_n_moe_layers(const qn_model_config *c) {
    int64_t n = 0;
    for (int64_t l = 0; c && l < c->num_hidden_layers; l++)
        n += qn_model_config_mlp_kind(c, l) == QN_MLP_MOE;
    return n;
}

const char *qn_model_arch_name(qn_model_arch a) {
    for (size_t i = 0; i < N_ARCHS; i++)
        if (k_archs[i].arch == a) return k_archs[i].model_type;
    return "unknown";
}

const char *qn_rope_type_name(qn_rope_type t) {
    switch (t) {
    case QN_ROPE_DEFAULT:
        return "default";
    case QN_ROPE_LINEAR:
        return "linear";
    case QN_ROPE_LLAMA3:
        return "llama3";
    case QN_ROPE_YARN:
        return "yarn";
    }
    return "unknown";
}

const char *qn_moe_scoring_name(qn_moe_scoring s) {
    switch (s) {
    case QN_MOE_SCORING_NONE:
        return "none";
    case QN_MOE_SCORING_SIGMOID:
        return "sigmoid";
    case QN_MOE_SCORING_SOFTMAX:
        return "softmax";
    }
    return "unknown";
}

const char *qn_torch_dtype_name(qn_torch_dtype d) {
    switch (d) {
    case QN_TORCH_DTYPE_UNSET:
        return "";
    case QN_TORCH_DTYPE_F32:
        return "float32";
    case QN_TORCH_DTYPE_F16:
        return "float16";
    case QN_TORCH_DTYPE_BF16:
        return "bfloat16";
    }
    return "";
}

/* ---- dump ---------------------------------------------------------------- */

/* Adds helpers that remember the first allocation failure. */
typedef struct jw {
    cJSON *obj;
    bool oom;
} jw;

static void add(jw *j, const char *key, cJSON *v) {
    if (!v || !cJSON_AddItemToObject(j->obj, key, v)) {
        cJSON_Delete(v);
        j->oom = true;
    }
}
static void add_int(jw *j, const char *key, int64_t v) {
    add(j, key, cJSON_CreateNumber((double)v));
}
static void add_num(jw *j, const char *key, double v) {
    add(j, key, cJSON_CreateNumber(v));
}
static void add_bool(jw *j, const char *key, bool v) {
    add(j, key, cJSON_CreateBool(v));
}
static void add_str(jw *j, const char *key, const char *v) {
    add(j, key, cJSON_CreateString(v));
}
static void add_id(jw *j, const char *key, int64_t v) {
    add(j, key, v >= 0 ? cJSON_CreateNumber((double)v) : cJSON_CreateNull());
}

static cJSON *int_array(const int64_t *v, int64_t n) {
    cJSON *a = cJSON_CreateArray();
    for (int64_t i = 0; a && i < n; i++) {
        cJSON *e = cJSON_CreateNumber((double)v[i]);
        if (!e || !cJSON_AddItemToArray(a, e)) {
            cJSON_Delete(e);
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

void *qn_model_config_to_cjson(const qn_model_config *c) {
    jw j = {cJSON_CreateObject(), false};
    if (!j.obj) return NULL;
    static const char *const k_arch_class[] = {"Glm4MoeForCausalLM", "Qwen3ForCausalLM",
                                               "Qwen3MoeForCausalLM", "LlamaForCausalLM"};
    cJSON *archs = cJSON_CreateArray();
    if (archs && !cJSON_AddItemToArray(archs, cJSON_CreateString(k_arch_class[c->arch]))) {
        j.oom = true;
    }
    add(&j, "architectures", archs);
    add_str(&j, "model_type", c->model_type);
    add_int(&j, "vocab_size", c->vocab_size);
    add_int(&j, "hidden_size", c->hidden_size);
    add_int(&j, "intermediate_size", c->intermediate_size);
    add_int(&j, "num_hidden_layers", c->num_hidden_layers);
    add_int(&j, "num_attention_heads", c->num_attention_heads);
    add_int(&j, "num_key_value_heads", c->num_key_value_heads);
    add_int(&j, "head_dim", c->head_dim);
    add_int(&j, "max_position_embeddings", c->max_position_embeddings);
    add_num(&j, "rms_norm_eps", c->rms_norm_eps);
    add_str(&j, "hidden_act", "silu");
    add_num(&j, "rope_theta", c->rope.theta);
    add_num(&j, "partial_rotary_factor", c->rope.partial_rotary_factor);
    if (c->rope.type == QN_ROPE_DEFAULT) {
        add(&j, "rope_scaling", cJSON_CreateNull());
    } else {
        jw r = {cJSON_CreateObject(), false};
        if (r.obj) {
            add_str(&r, "rope_type", qn_rope_type_name(c->rope.type));
            add_num(&r, "factor", c->rope.factor);
            if (c->rope.type == QN_ROPE_LLAMA3 || c->rope.type == QN_ROPE_YARN) {
                add_int(&r, "original_max_position_embeddings",
                        c->rope.original_max_position_embeddings);
            }
            if (c->rope.type == QN_ROPE_LLAMA3) {
                add_num(&r, "low_freq_factor", c->rope.low_freq_factor);
                add_num(&r, "high_freq_factor", c->rope.high_freq_factor);
            }
            if (c->rope.type == QN_ROPE_YARN) {
                add_num(&r, "beta_fast", c->rope.beta_fast);
                add_num(&r, "beta_slow", c->rope.beta_slow);
                if (c->rope.attention_factor > 0) {
                    add_num(&r, "attention_factor", c->rope.attention_factor);
                }
            }
            if (r.oom) j.oom = true;
        }
        add(&j, "rope_scaling", r.obj);
    }
    add_int(&j, "rotary_dim", c->rotary_dim);
    add_bool(&j, "attention_bias", c->attention_bias);
    add_bool(&j, "use_qk_norm", c->use_qk_norm);
    add_bool(&j, "tie_word_embeddings", c->tie_word_embeddings);

    if (c->scoring != QN_MOE_SCORING_NONE) {
        const bool glm = c->arch == QN_ARCH_GLM4_MOE;
        add_int(&j, glm ? "n_routed_experts" : "num_experts", c->n_routed_experts);
        add_int(&j, "num_experts_per_tok", c->num_experts_per_tok);
        add_int(&j, "moe_intermediate_size", c->moe_intermediate_size);
        add_bool(&j, "norm_topk_prob", c->norm_topk_prob);
        if (glm) {
            add_int(&j, "n_shared_experts", c->n_shared_experts);
            add_int(&j, "first_k_dense_replace", c->first_k_dense_replace);
            add_int(&j, "n_group", c->n_group);
            add_int(&j, "topk_group", c->topk_group);
            add_num(&j, "routed_scaling_factor", c->routed_scaling_factor);
            add_int(&j, "num_nextn_predict_layers", c->num_nextn_predict_layers);
        } else {
            add_int(&j, "decoder_sparse_step", c->decoder_sparse_step);
            int64_t only[QN_MODEL_MAX_LAYERS];
            for (int64_t i = 0; i < c->n_mlp_only_layers; i++)
                only[i] = c->mlp_only_layers[i];
            add(&j, "mlp_only_layers", int_array(only, c->n_mlp_only_layers));
        }
        add_str(&j, "scoring_func", qn_moe_scoring_name(c->scoring));
        add_bool(&j, "has_e_score_correction_bias", c->has_e_score_correction_bias);
        int64_t dense[QN_MODEL_MAX_LAYERS];
        int64_t n_dense = 0;
        for (int64_t l = 0; l < c->num_hidden_layers; l++)
            if (qn_model_config_mlp_kind(c, l) == QN_MLP_DENSE) dense[n_dense++] = l;
        add(&j, "dense_layers", int_array(dense, n_dense));
        add_int(&j, "moe_layer_count", qn_model_config_n_moe_layers(c));
    }

    add_id(&j, "bos_token_id", c->bos_token_id);
    add_id(&j, "pad_token_id", c->pad_token_id);
    if (c->n_eos == 0)
        add(&j, "eos_token_id", cJSON_CreateNull());
    else if (c->n_eos == 1)
        add_int(&j, "eos_token_id", c->eos_token_ids[0]);
    else
        add(&j, "eos_token_id", int_array(c->eos_token_ids, c->n_eos));
    if (c->torch_dtype == QN_TORCH_DTYPE_UNSET)
        add(&j, "torch_dtype", cJSON_CreateNull());
    else
        add_str(&j, "torch_dtype", qn_torch_dtype_name(c->torch_dtype));

    if (j.oom) {
        cJSON_Delete(j.obj);
        return NULL;
    }
    return j.obj;
}

char *qn_model_config_to_json(const qn_model_config *c) {
    cJSON *o = qn_model_config_to_cjson(c);
    if (!o) return NULL;
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    return s;
}
