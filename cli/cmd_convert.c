/* cmd_convert.c — `quench convert`: rewrites a Hugging Face checkpoint
 * folder as FP8 (DeepSeek-V3 / GLM-4.5-FP8 block convention, core/quant/
 * fp8.h) or, from FP8 or any float dtype, as bf16 / fp32.
 *
 * --to fp8 quantises every 2-D `*.{q,k,v,o,gate,up,down}_proj.weight`
 * (attention, dense MLP, routed and shared experts) into F8_E4M3 plus
 * `<name>.weight_scale_inv` (F32) and keeps every other tensor byte for byte
 * (norms, embeddings, lm_head, the router `mlp.gate.weight`,
 * e_score_correction_bias, biases, MTP extras such as eh_proj).
 * config.json gets "quantization_config": {"quant_method": "fp8", "fmt":
 * "e4m3", "activation_scheme": "dynamic", "weight_block_size": [bm, bn],
 * "modules_to_not_convert": [...]}, where the list names (without
 * ".weight") every module whose 2-D weight was kept in high precision: the
 * linear-like layers a loader must not treat as FP8 (embed_tokens, lm_head,
 * the routers). Norms and biases are not modules of that kind and are not
 * listed; their dtype already says what they are.
 *
 * --to bf16|fp32 dequantises every F8_E4M3 tensor with its
 * weight_scale_inv (block from the input's quantization_config, else
 * --block-size), drops the scale tensors and quantization_config, and casts
 * the other float tensors to the target dtype, except
 * e_score_correction_bias which stays as it is (F32 in HF checkpoints).
 *
 * The output is sharded (--max-shard-bytes) when the input folder is
 * sharded (has model.safetensors.index.json), else one model.safetensors.
 * Tokenizer and generation files are copied when present.
 *
 * Leaves out: re-quantising an FP8 input to FP8 (convert it to bf16 first),
 * e5m2, activation scales, tensors of rank other than 2 among the
 * projections (an error), and streaming: converted tensors stay in memory
 * until the writer finishes (1 byte per FP8 parameter, 2 or 4 per cast one;
 * unchanged tensors are borrowed from the input's maps).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "cli/commands.h"
#include "core/dtype.h"
#include "core/flags.h"
#include "core/io/safetensors.h"
#include "core/quant/fp8.h"

enum { TO_FP8 = 0, TO_BF16 = 1, TO_FP32 = 2 };

typedef struct conv_cfg {
    int to;
    qn_int_list block_size;
    int64_t max_shard_bytes;
} conv_cfg;

static const qn_flag k_conv_flags[] = {
    QN_F_CHOICE(conv_cfg, to, "to", "fp8", "fp8|bf16|fp32", "dtype of the converted weights"),
    QN_F_INT_LIST(conv_cfg, block_size, "block-size", "128,128", 1, 65536,
                  "FP8 tile rows and columns (weight_block_size)", .metavar = "BM BN"),
    QN_F_INT(conv_cfg, max_shard_bytes, "max-shard-bytes", "5000000000", 1, 9.2e18,
             "largest shard when the input is sharded"),
};
static const qn_flag_table k_conv_table = {
    .command = "convert",
    .usage = "quench convert --to fp8|bf16|fp32 [--block-size 128 128] IN_DIR OUT_DIR",
    .summary = "Rewrites the checkpoint in IN_DIR (config.json + safetensors) into OUT_DIR.\n"
               "fp8: q/k/v/o and gate/up/down projections (experts included) become F8_E4M3\n"
               "with a per-tile <name>.weight_scale_inv (the dequantisation multiplier);\n"
               "everything else stays as it is, listed in\n"
               "quantization_config.modules_to_not_convert. bf16|fp32: dequantises an FP8\n"
               "checkpoint (or casts any other). IN_DIR and OUT_DIR may also come first.",
    .flags = k_conv_flags,
    .n_flags = QN_FLAGS_COUNT(k_conv_flags),
    .cfg_size = sizeof(conv_cfg)};

void qn_help_convert(FILE *out) {
    qn_flags_print_help(&k_conv_table, out);
}

static const char *const k_proj[] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                     "gate_proj", "up_proj", "down_proj"};

/* 1 when name is "<...>.<proj>.weight" for one of k_proj. */
static int is_projection_weight(const char *name) {
    size_t n = strlen(name);
    const char *suf = ".weight";
    size_t ns = strlen(suf);
    if (n <= ns || strcmp(name + n - ns, suf) != 0) return 0;
    size_t end = n - ns, start = end;
    while (start > 0 && name[start - 1] != '.')
        start--;
    for (size_t i = 0; i < sizeof k_proj / sizeof k_proj[0]; i++) {
        if (strlen(k_proj[i]) == end - start && memcmp(name + start, k_proj[i], end - start) == 0)
            return 1;
    }
    return 0;
}

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = (len + 4096 + 1) * 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + len, 1, 4096, f);
        len += r;
        if (r < 4096) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

static qn_status write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return qn_fail(QN_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    size_t n = strlen(text);
    int ok = fwrite(text, 1, n, f) == n;
    if (fclose(f) != 0) ok = 0;
    return ok ? QN_OK : qn_fail(QN_ERR_IO, "%s: write failed", path);
}

static qn_status copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "rb");
    if (!in) return qn_fail(QN_ERR_IO, "%s: cannot open: %s", from, strerror(errno));
    FILE *out = fopen(to, "wb");
    if (!out) {
        fclose(in);
        return qn_fail(QN_ERR_IO, "%s: cannot create: %s", to, strerror(errno));
    }
    char buf[65536];
    size_t r;
    int ok = 1;
    while ((r = fread(buf, 1, sizeof buf, in)) > 0) {
        if (fwrite(buf, 1, r, out) != r) ok = 0;
    }
    if (ferror(in)) ok = 0;
    fclose(in);
    if (fclose(out) != 0) ok = 0;
    return ok ? QN_OK : qn_fail(QN_ERR_IO, "%s -> %s: copy failed", from, to);
}

/* Buffers the writer borrows until finish. */
typedef struct owned {
    void **v;
    size_t n, cap;
} owned;

static void *owned_alloc(owned *o, size_t bytes) {
    if (o->n == o->cap) {
        size_t nc = o->cap ? o->cap * 2 : 64;
        void **nv = realloc(o->v, nc * sizeof *nv);
        if (!nv) return NULL;
        o->v = nv;
        o->cap = nc;
    }
    void *p = malloc(bytes ? bytes : 1);
    if (p) o->v[o->n++] = p;
    return p;
}

static void owned_free(owned *o) {
    for (size_t i = 0; i < o->n; i++)
        free(o->v[i]);
    free(o->v);
}

/* Quantises one projection weight and adds it and its scale to w. */
static qn_status add_fp8(qn_st_writer *w, owned *o, const qn_st_tensor *t, int32_t bm, int32_t bn) {
    if (t->ndim != 2)
        return qn_fail(QN_ERR_FORMAT, "convert: tensor '%s': projection weight has %d dims, want 2",
                       t->name, (int)t->ndim);
    if (t->dtype == QN_DTYPE_F8_E4M3)
        return qn_fail(QN_ERR_UNSUPPORTED,
                       "convert: tensor '%s' is already F8_E4M3; convert --to bf16 first", t->name);
    if (!qn_dtype_is_float(t->dtype))
        return qn_fail(QN_ERR_FORMAT, "convert: tensor '%s': dtype %s is not a float type", t->name,
                       qn_dtype_name(t->dtype));
    qn_fp8_shape sh = {
        .rows = t->shape[0], .cols = t->shape[1], .block_rows = bm, .block_cols = bn};
    size_t numel = (size_t)qn_st_numel(t);
    int64_t sshape[2] = {qn_fp8_scale_rows(&sh), qn_fp8_scale_cols(&sh)};
    float *f = malloc((numel ? numel : 1) * sizeof *f);
    uint8_t *q = owned_alloc(o, numel);
    float *s = owned_alloc(o, (size_t)(sshape[0] * sshape[1]) * sizeof *s);
    if (!f || !q || !s) {
        free(f);
        return qn_fail(QN_ERR_NOMEM, "convert: tensor '%s': buffers", t->name);
    }
    qn_status st = qn_dtype_to_f32(t->dtype, t->data, f, numel);
    if (st == QN_OK && numel > 0) st = qn_fp8_quantize(&sh, f, q, s, t->name);
    free(f);
    QN_CHECK(st);
    char sname[1024];
    if ((size_t)snprintf(sname, sizeof sname, "%s_scale_inv", t->name) >= sizeof sname)
        return qn_fail(QN_ERR_INVALID, "convert: tensor '%s': name too long", t->name);
    QN_CHECK(qn_st_writer_add(w, t->name, QN_DTYPE_F8_E4M3, 2, t->shape, q));
    return qn_st_writer_add(w, sname, QN_DTYPE_F32, 2, sshape, s);
}

/* Adds t cast to dtype (dequantising FP8 with its scale). */
static qn_status add_cast(qn_st_writer *w, owned *o, qn_st_model *m, const qn_st_tensor *t,
                          qn_dtype dtype, int32_t bm, int32_t bn) {
    if (!qn_dtype_is_float(t->dtype) || t->dtype == dtype)
        return qn_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
    size_t numel = (size_t)qn_st_numel(t);
    float *f = malloc((numel ? numel : 1) * sizeof *f);
    void *out = owned_alloc(o, numel * qn_dtype_size(dtype));
    if (!f || !out) {
        free(f);
        return qn_fail(QN_ERR_NOMEM, "convert: tensor '%s': buffers", t->name);
    }
    qn_status st = qn_fp8_load_f32(m, t->name, bm, bn, f, numel);
    if (st == QN_OK) st = qn_dtype_from_f32(dtype, f, out, numel);
    free(f);
    QN_CHECK(st);
    return qn_st_writer_add(w, t->name, dtype, t->ndim, t->shape, out);
}

/* Writes OUT/config.json from the input's, with quantization_config set
 * (fp8, modules listed in keep) or removed (bf16/fp32). */
static qn_status write_config(const char *in_path, const char *out_path, int to, int32_t bm,
                              int32_t bn, cJSON *keep) {
    char *text = read_text(in_path);
    if (!text) return qn_fail(QN_ERR_IO, "%s: cannot read", in_path);
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return qn_fail(QN_ERR_FORMAT, "%s: not a JSON object", in_path);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(root, "quantization_config");
    if (to == TO_FP8) {
        cJSON *qc = cJSON_CreateObject();
        int dims[2] = {bm, bn};
        cJSON_AddStringToObject(qc, "quant_method", "fp8");
        cJSON_AddStringToObject(qc, "fmt", "e4m3");
        cJSON_AddStringToObject(qc, "activation_scheme", "dynamic");
        cJSON_AddItemToObject(qc, "weight_block_size", cJSON_CreateIntArray(dims, 2));
        cJSON_AddItemReferenceToObject(qc, "modules_to_not_convert", keep);
        cJSON_AddItemToObject(root, "quantization_config", qc);
    } else {
        cJSON_DeleteItemFromObjectCaseSensitive(root, "torch_dtype");
        cJSON_AddStringToObject(root, "torch_dtype", to == TO_BF16 ? "bfloat16" : "float32");
    }
    char *out = cJSON_Print(root);
    cJSON_Delete(root);
    if (!out) return qn_fail(QN_ERR_NOMEM, "%s: printing", out_path);
    size_t n = strlen(out);
    char *withnl = malloc(n + 2);
    qn_status s = QN_OK;
    if (!withnl) {
        s = qn_fail(QN_ERR_NOMEM, "%s", out_path);
    } else {
        memcpy(withnl, out, n);
        withnl[n] = '\n';
        withnl[n + 1] = '\0';
        s = write_text(out_path, withnl);
    }
    free(withnl);
    cJSON_free(out);
    return s;
}

/* Block size of an FP8 input from its quantization_config; 0 when absent. */
static void input_block(const char *config_path, int32_t *bm, int32_t *bn) {
    char *text = read_text(config_path);
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    free(text);
    cJSON *qc = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
    cJSON *wb = cJSON_GetObjectItemCaseSensitive(qc, "weight_block_size");
    if (cJSON_IsArray(wb) && cJSON_GetArraySize(wb) == 2) {
        cJSON *a = cJSON_GetArrayItem(wb, 0), *b = cJSON_GetArrayItem(wb, 1);
        if (cJSON_IsNumber(a) && cJSON_IsNumber(b) && a->valuedouble >= 1 && b->valuedouble >= 1 &&
            a->valuedouble <= 65536 && b->valuedouble <= 65536) {
            *bm = (int32_t)a->valuedouble;
            *bn = (int32_t)b->valuedouble;
        }
    }
    cJSON_Delete(root);
}

static const char *const k_copy_files[] = {"tokenizer.json",
                                           "tokenizer_config.json",
                                           "special_tokens_map.json",
                                           "tokenizer.model",
                                           "vocab.json",
                                           "merges.txt",
                                           "chat_template.jinja",
                                           "generation_config.json",
                                           "added_tokens.json"};

static qn_status convert(const conv_cfg *cfg, const char *in_dir, const char *out_dir,
                         size_t *n_fp8, size_t *n_kept) {
    char path[4096], out_path[4096];
    int32_t bm = (int32_t)cfg->block_size.v[0], bn = (int32_t)cfg->block_size.v[1];
    snprintf(path, sizeof path, "%s/config.json", in_dir);
    if (!file_exists(path)) return qn_fail(QN_ERR_NOT_FOUND, "%s: missing", path);
    if (cfg->to != TO_FP8) input_block(path, &bm, &bn);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", in_dir);
    int sharded = file_exists(path);
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST)
        return qn_fail(QN_ERR_IO, "%s: cannot create: %s", out_dir, strerror(errno));

    qn_st_model *m = NULL;
    qn_st_writer *w = NULL;
    owned o = {0};
    cJSON *keep = cJSON_CreateArray();
    qn_status s = keep ? QN_OK : qn_fail(QN_ERR_NOMEM, "convert");
    if (s == QN_OK) s = qn_st_model_open(in_dir, &m);
    if (s == QN_OK) {
        snprintf(out_path, sizeof out_path, "%s/model.safetensors", out_dir);
        s = qn_st_writer_init(&w, sharded ? out_dir : out_path);
    }
    const qn_dtype target = cfg->to == TO_BF16 ? QN_DTYPE_BF16 : QN_DTYPE_F32;
    for (size_t i = 0; s == QN_OK && i < qn_st_model_count(m); i++) {
        const qn_st_tensor *t;
        s = qn_st_model_get(m, qn_st_model_name_at(m, i), &t);
        if (s != QN_OK) break;
        if (cfg->to == TO_FP8) {
            if (t->dtype == QN_DTYPE_F8_E4M3 || ends_with(t->name, "_scale_inv")) {
                s = qn_fail(QN_ERR_UNSUPPORTED,
                            "convert: tensor '%s': the input is already FP8; convert --to bf16 "
                            "first",
                            t->name);
            } else if (is_projection_weight(t->name)) {
                s = add_fp8(w, &o, t, bm, bn);
                (*n_fp8)++;
            } else {
                s = qn_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
                (*n_kept)++;
                if (s == QN_OK && t->ndim == 2 && ends_with(t->name, ".weight")) {
                    size_t len = strlen(t->name) - strlen(".weight");
                    char mod[1024];
                    snprintf(mod, sizeof mod, "%.*s", (int)len, t->name);
                    cJSON_AddItemToArray(keep, cJSON_CreateString(mod));
                }
            }
        } else {
            if (ends_with(t->name, ".weight_scale_inv")) {
                /* dropped if it belongs to an FP8 weight; kept otherwise */
                char base[1024];
                size_t len = strlen(t->name) - strlen("_scale_inv");
                snprintf(base, sizeof base, "%.*s", (int)len, t->name);
                const qn_st_tensor *bt = NULL;
                if (qn_st_model_get(m, base, &bt) == QN_OK && bt->dtype == QN_DTYPE_F8_E4M3)
                    continue;
            }
            if (t->dtype == QN_DTYPE_F8_E4M3)
                (*n_fp8)++;
            else
                (*n_kept)++;
            if (ends_with(t->name, "e_score_correction_bias"))
                s = qn_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
            else
                s = add_cast(w, &o, m, t, target, bm, bn);
        }
    }
    if (s == QN_OK)
        s = sharded ? qn_st_writer_finish_sharded(w, (uint64_t)cfg->max_shard_bytes)
                    : qn_st_writer_finish(w);
    if (s == QN_OK) {
        snprintf(path, sizeof path, "%s/config.json", in_dir);
        snprintf(out_path, sizeof out_path, "%s/config.json", out_dir);
        s = write_config(path, out_path, cfg->to, bm, bn, keep);
    }
    for (size_t i = 0; s == QN_OK && i < sizeof k_copy_files / sizeof k_copy_files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", in_dir, k_copy_files[i]);
        snprintf(out_path, sizeof out_path, "%s/%s", out_dir, k_copy_files[i]);
        if (file_exists(path)) s = copy_file(path, out_path);
    }
    qn_st_writer_free(w);
    owned_free(&o);
    qn_st_model_close(m);
    cJSON_Delete(keep);
    return s;
}

/* `--block-size 128 128 IN OUT`: a list flag takes every following token,
 * so when the trailing run of plain tokens after --block-size is longer than
 * two, the last two are moved behind a "--" to make them positional. */
static char **fix_positionals(int argc, char **argv, int *out_argc) {
    int run = 0;
    while (run < argc - 1 && argv[argc - 1 - run][0] != '-')
        run++;
    int flag_at = argc - 1 - run;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--") == 0) return NULL;
    if (run <= 2 || flag_at < 1 || strcmp(argv[flag_at], "--block-size") != 0) return NULL;
    char **v = malloc((size_t)(argc + 2) * sizeof *v);
    if (!v) return NULL;
    memcpy(v, argv, (size_t)(argc - 2) * sizeof *v);
    v[argc - 2] = "--";
    v[argc - 1] = argv[argc - 2];
    v[argc] = argv[argc - 1];
    v[argc + 1] = NULL;
    *out_argc = argc + 1;
    return v;
}

int qn_cmd_convert(int argc, char **argv) {
    int fargc = argc;
    char **fixed = fix_positionals(argc, argv, &fargc);
    conv_cfg cfg;
    qn_flags_parsed p;
    if (qn_flags_parse(&k_conv_table, &cfg, fargc, fixed ? fixed : argv, &p) != QN_OK) {
        fprintf(stderr, "quench convert: %s\n", qn_last_error());
        free(fixed);
        return QN_EXIT_USAGE;
    }
    int rc = QN_EXIT_USAGE;
    if (p.print_config) {
        qn_flags_dump(&k_conv_table, &cfg, &p, stdout);
        rc = QN_EXIT_OK;
    } else if (p.n_args != 2) {
        fprintf(stderr, "quench convert: want IN_DIR and OUT_DIR, got %zu positional arguments\n",
                p.n_args);
    } else if (cfg.block_size.n != 2) {
        fprintf(stderr, "quench convert: --block-size wants 2 values (rows cols), got %zu\n",
                cfg.block_size.n);
    } else {
        size_t n_fp8 = 0, n_kept = 0;
        if (convert(&cfg, p.args[0], p.args[1], &n_fp8, &n_kept) == QN_OK) {
            printf("wrote %s: %zu %s tensors, %zu others\n", p.args[1], n_fp8,
                   cfg.to == TO_FP8 ? "FP8" : "dequantised", n_kept);
            rc = QN_EXIT_OK;
        } else {
            fprintf(stderr, "quench convert: %s\n", qn_last_error());
            rc = QN_EXIT_FAILURE;
        }
    }
    qn_flags_parsed_free(&p);
    qn_flags_free(&k_conv_table, &cfg);
    free(fixed);
    return rc;
}
