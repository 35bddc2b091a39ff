/* cmd_train_step.c — `quench train-step`: one GRPO (or SFT) optimizer step on
 * a JSONL batch file. This file holds the flag table and the AdamW step; the
 * model, batch, loss and data-parallel work is in train_step_run.c (see
 * train_step.h for why the split). OUT_DIR also receives the optimizer state
 * (optimizer.safetensors: AdamW moments under exp_avg.<hf name> /
 * exp_avg_sq.<hf name>, metadata "step"), which `--load OUT_DIR` resumes, so
 * chained train-steps equal consecutive AdamW steps. Leaves out: trainer
 * state beyond the step count (rollout id, RNG, data cursor), --save-interval,
 * a whole-folder atomic write (each file is written then renamed), multi-step
 * rollouts (the plan must have exactly one step). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/train_step.h"
#include "core/flags.h"
#include "core/io/safetensors.h"
#include "trainer/options.h"

typedef struct ts_cfg {
    char *model, *batch, *out, *ref_load, *save_grads, *load;
    double rollout_temperature;
    int64_t threads;
    qn_trainer_opts tr;
} ts_cfg;

static const qn_flag k_ts_flags[] = {
    QN_F_STRING(ts_cfg, model, "model", NULL, "policy model folder (config.json + safetensors)",
                .attrs = QN_FLAG_REQUIRED, .metavar = "DIR"),
    QN_F_STRING(ts_cfg, batch, "batch", NULL, "JSONL batch, one sample per line",
                .attrs = QN_FLAG_REQUIRED, .metavar = "IN.jsonl"),
    QN_F_STRING(ts_cfg, out, "out", NULL, "folder for the updated model (fp32 HF checkpoint)",
                .attrs = QN_FLAG_REQUIRED, .metavar = "OUT_DIR"),
    QN_F_STRING(ts_cfg, ref_load, "ref-load", NULL, "reference model folder (for --use-kl-loss)",
                .metavar = "DIR"),
    QN_F_STRING(ts_cfg, save_grads, "save-grads", NULL,
                "write the all-reduced gradient before clipping (fp32, HF names)",
                .metavar = "FILE.safetensors"),
    QN_F_STRING(ts_cfg, load, "load", NULL,
                "resume the optimizer (adam moments, step count) from DIR/optimizer.safetensors "
                "of an earlier --out",
                .metavar = "DIR"),
    QN_F_FLOAT(ts_cfg, rollout_temperature, "rollout-temperature", "1.0", 1e-6, 1e6,
               "logits are divided by this (the sampling temperature of the rollout)"),
    QN_F_INT(ts_cfg, threads, "threads", "0", 0, 4096, "CPU threads (0: OpenMP default)"),
    QN_TRAINER_FLAGS(ts_cfg, tr),
};
static const qn_flag_table k_ts_table = {
    .command = "train-step",
    .usage = "quench train-step --model DIR --batch IN.jsonl --out OUT_DIR [--ref-load DIR]\n"
             "       [--save-grads FILE.safetensors] [loss, packing and optimizer flags]",
    .summary =
        "One optimizer step. IN lines: {\"tokens\":[...],\"response_start\":k,\"group\":g,\n"
        "\"reward\":r} plus optional \"rollout_logprobs\":[...] and \"loss_mask\":[...] (one\n"
        "value per response position). GRPO advantages per group; with QN_WORLD_SIZE > 1\n"
        "(QN_RANK, QN_REDIS_URL) each rank takes its share and gradients are all-reduced.\n"
        "Prints the step's metrics as one JSON line with slime's names.",
    .flags = k_ts_flags,
    .n_flags = QN_FLAGS_COUNT(k_ts_flags),
    .cfg_size = sizeof(ts_cfg)};

void qn_help_train_step(FILE *out) { qn_flags_print_help(&k_ts_table, out); }

typedef struct opt_ctx {
    qn_adamw_cfg cfg;
    const char *load; /* --load DIR or NULL */
} opt_ctx;

/* Optimizer state file: per trainable tensor "exp_avg.<hf name>" and
 * "exp_avg_sq.<hf name>" (F32, the tensor's shape), metadata "step". */
static qn_status load_state(qn_adamw *opt, const char *dir, const ts_tensor *tensors,
                            size_t n_tensors) {
    char path[4096];
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    qn_st_file *f = NULL;
    QN_CHECK(qn_st_open(path, &f));
    qn_status s = QN_OK;
    float *m = calloc((size_t)(opt->n > 0 ? opt->n : 1), sizeof(float));
    float *v = calloc((size_t)(opt->n > 0 ? opt->n : 1), sizeof(float));
    const char *step_text = qn_st_metadata_get(f, "step");
    char *end = NULL;
    long long step = step_text ? strtoll(step_text, &end, 10) : -1;
    if (!m || !v) {
        s = qn_fail(QN_ERR_NOMEM, "%s", path);
        goto done;
    }
    if (!step_text || *end != 0 || step < 0) {
        s = qn_fail(QN_ERR_FORMAT, "%s: metadata \"step\" missing or not a count", path);
        goto done;
    }
    for (size_t i = 0; i < n_tensors; i++) {
        for (int k = 0; k < 2; k++) {
            char name[160];
            snprintf(name, sizeof name, "%s.%s", k ? "exp_avg_sq" : "exp_avg", tensors[i].name);
            const qn_st_tensor *t = NULL;
            QN_CHECK_GOTO(qn_st_get(f, name, &t), s, done);
            if (t->dtype != QN_DTYPE_F32 || t->nbytes != (uint64_t)tensors[i].size * 4) {
                s = qn_fail(QN_ERR_FORMAT, "%s: tensor '%s': expected F32 with %lld elements",
                            path, name, (long long)tensors[i].size);
                goto done;
            }
            memcpy((k ? v : m) + tensors[i].offset, t->data, (size_t)t->nbytes);
        }
    }
    s = qn_adamw_set_state(opt, step, m, v, opt->n);
done:
    free(m);
    free(v);
    qn_st_close(f);
    return s;
}

static qn_status save_state(const qn_adamw *opt, const char *dir, const ts_tensor *tensors,
                            size_t n_tensors) {
    char path[4096], step[32];
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    snprintf(step, sizeof step, "%lld", (long long)opt->step);
    qn_st_writer *w = NULL;
    qn_status s;
    QN_CHECK_GOTO(qn_st_writer_init(&w, path), s, done);
    for (size_t i = 0; i < n_tensors; i++) {
        for (int k = 0; k < 2; k++) {
            char name[160];
            snprintf(name, sizeof name, "%s.%s", k ? "exp_avg_sq" : "exp_avg", tensors[i].name);
            const float *src = (k ? opt->v : opt->m) + tensors[i].offset;
            QN_CHECK_GOTO(qn_st_writer_add(w, name, QN_DTYPE_F32, tensors[i].ndim,
                                           tensors[i].shape, src), s, done);
        }
    }
    QN_CHECK_GOTO(qn_st_writer_set_metadata(w, "step", step), s, done);
    s = qn_st_writer_finish(w);
done:
    qn_st_writer_free(w);
    return s;
}

static qn_status opt_step(void *ctx, const ts_tensor *tensors, size_t n_tensors, int64_t n,
                          float *params, float *grad, const char *save_dir, ts_opt_info *info) {
    const opt_ctx *oc = ctx;
    qn_opt_tensor *table = calloc(n_tensors ? n_tensors : 1, sizeof *table);
    if (!table) return qn_fail(QN_ERR_NOMEM, "optimizer table");
    for (size_t i = 0; i < n_tensors; i++)
        table[i] = (qn_opt_tensor){.name = tensors[i].name, .offset = tensors[i].offset,
                                   .size = tensors[i].size, .ndim = tensors[i].ndim};
    qn_adamw opt = {0};
    qn_adamw_step_info si = {0};
    qn_status s = qn_adamw_init(&opt, &oc->cfg, table, n_tensors, n);
    if (s == QN_OK && oc->load) s = load_state(&opt, oc->load, tensors, n_tensors);
    if (s == QN_OK) s = qn_adamw_step(&opt, params, grad, &si);
    if (s == QN_OK) *info = (ts_opt_info){si.grad_norm, si.clip_scale, si.lr};
    if (s == QN_OK && save_dir) s = save_state(&opt, save_dir, tensors, n_tensors);
    qn_adamw_free(&opt);
    free(table);
    return s;
}

int qn_cmd_train_step(int argc, char **argv) {
    ts_cfg cfg;
    qn_flags_parsed p;
    if (qn_flags_parse(&k_ts_table, &cfg, argc, argv, &p) != QN_OK) {
        fprintf(stderr, "quench train-step: %s\n", qn_last_error());
        return QN_EXIT_USAGE;
    }
    int rc = QN_EXIT_OK;
    if (p.print_config) {
        qn_flags_dump(&k_ts_table, &cfg, &p, stdout);
        goto done;
    }
    ts_args a = {.model = cfg.model, .batch = cfg.batch, .out = cfg.out,
                 .ref_load = cfg.ref_load, .save_grads = cfg.save_grads,
                 .temperature = cfg.rollout_temperature, .threads = cfg.threads,
                 .normalize_std = !cfg.tr.disable_grpo_std_normalization};
    opt_ctx oc = {.load = cfg.load};
    /* one step: a decaying schedule without --lr-decay-iters spans this step */
    qn_status s = qn_trainer_loss_cfg(&cfg.tr, &a.loss);
    if (s == QN_OK) s = qn_trainer_adamw_cfg(&cfg.tr, 1, &oc.cfg);
    if (s == QN_OK) s = qn_trainer_pack_cfg(&cfg.tr, 1, &a.pack);
    if (s == QN_OK && a.loss.use_kl_loss && !cfg.ref_load)
        s = qn_fail(QN_ERR_INVALID, "--use-kl-loss needs --ref-load DIR");
    if (s != QN_OK) {
        fprintf(stderr, "quench train-step: %s\n", qn_last_error());
        rc = QN_EXIT_USAGE;
        goto done;
    }
    if (cfg.load) { /* a missing state file fails before any work or output */
        char path[4096];
        snprintf(path, sizeof path, "%s/optimizer.safetensors", cfg.load);
        qn_st_file *f = NULL;
        if (qn_st_open(path, &f) != QN_OK) {
            fprintf(stderr, "quench train-step: --load: %s\n", qn_last_error());
            rc = QN_EXIT_FAILURE;
            goto done;
        }
        qn_st_close(f);
    }
    a.opt_step = opt_step;
    a.opt_ctx = &oc;
    rc = ts_run(&a);
done:
    qn_flags_parsed_free(&p);
    qn_flags_free(&k_ts_table, &cfg);
    return rc;
}
