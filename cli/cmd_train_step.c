/* cmd_train_step.c — `quench train-step`: the optimizer steps of one JSONL
 * batch file (GRPO or SFT). This file holds the flag table, the AdamW bridge
 * and the resolution of --load; the model, batch, loss, data-parallel and
 * checkpoint work is in train_step_run.c (see train_step.h for the split).
 * OUT_DIR receives the final model and optimizer.safetensors (AdamW moments
 * under exp_avg.<hf name> / exp_avg_sq.<hf name>, metadata "step").
 *
 * Checkpoints (--save DIR, rank 0 writes them):
 *   DIR/step-K/          K = optimizer steps taken in total
 *       config.json, model.safetensors   fp32 HF weights (qn_model_save_dir)
 *       optimizer.safetensors            AdamW state as above
 *       trainer_state.json               {"step": K, "rollout_id", "batch_step" (steps of
 *                                        this batch done), "batch_steps", "samples_consumed",
 *                                        "data_cursor" (the --data-cursor passthrough),
 *                                        "rng": train-step draws no random numbers}
 *       old_logprobs.safetensors         only mid-batch with recomputed old log-probs: the
 *                                        start-of-batch log-probs ("old_logp", F32 [tokens])
 *   DIR/latest           "step-K\n", replaced by rename after the step dir is complete
 * A step dir is written as DIR/.tmp-step-K, every file and the folder fsynced,
 * then renamed, so a crash leaves either the old or the new checkpoint.
 * OUT_DIR gets the same files (not atomically), so it is a checkpoint too.
 * --load DIR takes a step dir (or an OUT_DIR) or a save dir with `latest`.
 * A different --rollout-id starts the batch at its first step.
 * Leaves out: sharded (per-rank) optimizer states, keeping only the last k
 * checkpoints, resuming across a different --global-batch-size. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/train_step.h"
#include "core/flags.h"
#include "core/io/safetensors.h"
#include "trainer/options.h"

typedef struct ts_cfg {
    char *model, *batch, *out, *ref_load, *save_grads, *load, *save;
    char *router, *weight_listen, *weight_advertise;
    double rollout_temperature, update_weights_timeout;
    int64_t threads, save_interval, max_steps, rollout_id, data_cursor, weight_version;
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
                "resume from a checkpoint (a step dir or --out, or a --save dir with `latest`): "
                "weights, optimizer, and (same --rollout-id) the steps of this batch already done",
                .metavar = "DIR"),
    QN_F_STRING(ts_cfg, save, "save", NULL, "checkpoint folder (DIR/step-K, DIR/latest)",
                .metavar = "DIR"),
    QN_F_INT(ts_cfg, save_interval, "save-interval", "0", 0, INFINITY,
             "checkpoint after every N-th optimizer step (0: only at the end)"),
    QN_F_INT(ts_cfg, max_steps, "max-steps", "0", 0, INFINITY,
             "stop once this many optimizer steps of the batch are done (0: all)"),
    QN_F_INT(ts_cfg, rollout_id, "rollout-id", "0", 0, INFINITY,
             "id of this batch's rollout (recorded; resume skips steps only for the same id)"),
    QN_F_INT(ts_cfg, data_cursor, "data-cursor", "0", 0, INFINITY,
             "data position of the rollout generator (recorded in trainer_state.json)"),
    QN_F_FLOAT(ts_cfg, rollout_temperature, "rollout-temperature", "1.0", 1e-6, 1e6,
               "logits are divided by this (the sampling temperature of the rollout)"),
    QN_F_INT(ts_cfg, threads, "threads", "0", 0, 4096, "CPU threads (0: OpenMP default)"),
    QN_F_STRING(ts_cfg, router, "router", NULL,
                "after the batch, publish the new weights and announce them to this router "
                "(rank 0), waiting until the engines serve them",
                .metavar = "ENDPOINT"),
    QN_F_STRING(ts_cfg, weight_listen, "weight-listen", "tcp://127.0.0.1:*",
                "where the trainer's weight server listens for chunk pulls", .metavar = "ENDPOINT"),
    QN_F_STRING(ts_cfg, weight_advertise, "weight-advertise", NULL,
                "the weight server's endpoint as engines should dial it (default: the bound one)",
                .metavar = "ENDPOINT"),
    QN_F_INT(ts_cfg, weight_version, "weight-version", "0", 0, INFINITY,
             "version number of the published weights (0: --rollout-id + 1)"),
    QN_F_FLOAT(ts_cfg, update_weights_timeout, "update-weights-timeout", "600", 0.1, 1e6,
               "seconds to wait for the engines to apply the weights"),
    QN_TRAINER_FLAGS(ts_cfg, tr),
};
static const qn_flag_table k_ts_table = {
    .command = "train-step",
    .usage = "quench train-step --model DIR --batch IN.jsonl --out OUT_DIR [--ref-load DIR]\n"
             "       [--save-grads FILE.safetensors] [--save DIR [--save-interval N]]\n"
             "       [--load DIR] [--max-steps N] [loss, packing and optimizer flags]",
    .summary =
        "The optimizer steps of one batch (--global-batch-size samples each; all by default\n"
        "one step). IN lines: {\"tokens\":[...],\"response_start\":k,\"group\":g,\n"
        "\"reward\":r} plus optional \"rollout_logprobs\":[...] and \"loss_mask\":[...] (one\n"
        "value per response position). GRPO advantages per group; with QN_WORLD_SIZE > 1\n"
        "(QN_RANK, QN_REDIS_URL) each rank takes its share and gradients are all-reduced.\n"
        "Prints each step's metrics as one JSON line with slime's names. --save DIR writes\n"
        "checkpoints DIR/step-K (+ DIR/latest); --load resumes one bit-exactly.",
    .flags = k_ts_flags,
    .n_flags = QN_FLAGS_COUNT(k_ts_flags),
    .cfg_size = sizeof(ts_cfg)};

void qn_help_train_step(FILE *out) { qn_flags_print_help(&k_ts_table, out); }

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

qn_status ts_opt_step(void *ctx, const ts_tensor *tensors, size_t n_tensors, int64_t n,
                      int64_t total_steps, float *params, float *grad, ts_opt_info *info) {
    ts_opt_ctx *oc = ctx;
    if (!oc->ready) {
        qn_adamw_cfg cfg;
        QN_CHECK(qn_trainer_adamw_cfg(oc->tr, total_steps, &cfg));
        oc->table = calloc(n_tensors ? n_tensors : 1, sizeof *oc->table);
        if (!oc->table) return qn_fail(QN_ERR_NOMEM, "optimizer table");
        for (size_t i = 0; i < n_tensors; i++)
            oc->table[i] = (qn_opt_tensor){.name = tensors[i].name, .offset = tensors[i].offset,
                                           .size = tensors[i].size, .ndim = tensors[i].ndim};
        QN_CHECK(qn_adamw_init(&oc->opt, &cfg, oc->table, n_tensors, n));
        oc->ready = true;
        oc->tensors = tensors;
        oc->n_tensors = n_tensors;
        if (oc->load) QN_CHECK(load_state(&oc->opt, oc->load, tensors, n_tensors));
    }
    qn_adamw_step_info si = {0};
    QN_CHECK(qn_adamw_step(&oc->opt, params, grad, &si));
    *info = (ts_opt_info){si.grad_norm, si.clip_scale, si.lr, oc->opt.step};
    return QN_OK;
}

qn_status ts_opt_save(void *ctx, const char *dir) {
    ts_opt_ctx *oc = ctx;
    if (!oc->ready) return qn_fail(QN_ERR_INVALID, "%s: no optimizer step was taken", dir);
    return save_state(&oc->opt, dir, oc->tensors, oc->n_tensors);
}

void ts_opt_free(ts_opt_ctx *oc) {
    if (oc->ready) qn_adamw_free(&oc->opt);
    free(oc->table);
    oc->table = NULL;
    oc->ready = false;
}

static int64_t state_int(const cJSON *o, const char *key) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(x) && isfinite(x->valuedouble) ? (int64_t)x->valuedouble : -1;
}

qn_status ts_ckpt_resolve(const char *load, ts_ckpt *out) {
    char path[4400];
    char *dir = out->dir;
    size_t cap = sizeof out->dir;
    snprintf(path, sizeof path, "%s/latest", load);
    snprintf(dir, cap, "%s", load);
    FILE *f = fopen(path, "rb");
    if (f) {
        char name[256] = {0};
        size_t got = fread(name, 1, sizeof name - 1, f);
        fclose(f);
        while (got > 0 && (name[got - 1] == '\n' || name[got - 1] == ' ')) name[--got] = 0;
        if (got == 0 || strchr(name, '/'))
            return qn_fail(QN_ERR_FORMAT, "%s: expected one step folder name", path);
        snprintf(dir, cap, "%s/%s", load, name);
    }
    const char *need[] = {"config.json", "model.safetensors", "optimizer.safetensors",
                          "trainer_state.json"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, need[i]);
        if (access(path, R_OK) != 0)
            return qn_fail(QN_ERR_IO, "%s: missing checkpoint file %s", dir, need[i]);
    }
    qn_status s = QN_OK;
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    char *text = NULL;
    size_t len = 0;
    f = fopen(path, "rb");
    if (f) {
        fseek(f, 0, SEEK_END);
        long sz = ftell(f);
        fseek(f, 0, SEEK_SET);
        text = sz >= 0 ? calloc((size_t)sz + 1, 1) : NULL;
        if (text) len = fread(text, 1, (size_t)sz, f);
        fclose(f);
    }
    cJSON *o = text ? cJSON_ParseWithLength(text, len) : NULL;
    const cJSON *bs = cJSON_GetObjectItemCaseSensitive(o, "batch_step");
    const cJSON *rid = cJSON_GetObjectItemCaseSensitive(o, "rollout_id");
    if (!cJSON_IsNumber(bs) || !cJSON_IsNumber(rid) || bs->valuedouble < 0)
        s = qn_fail(QN_ERR_FORMAT, "%s: expected numbers \"batch_step\" and \"rollout_id\"",
                    path);
    else {
        out->rollout_id = (int64_t)rid->valuedouble;
        out->batch_step = (int64_t)bs->valuedouble;
        out->batch_steps = state_int(o, "batch_steps");
        out->step = state_int(o, "step");
        out->data_cursor = state_int(o, "data_cursor");
    }
    cJSON_Delete(o);
    free(text);
    return s;
}

qn_status ts_args_trainer_flags(ts_args *a, ts_opt_ctx *oc, const qn_trainer_opts *tr,
                                const char *ref_load) {
    *oc = (ts_opt_ctx){.tr = tr};
    a->ref_load = ref_load;
    a->normalize_std = !tr->disable_grpo_std_normalization;
    a->opt_step = ts_opt_step;
    a->opt_save = ts_opt_save;
    a->opt_ctx = oc;
    QN_CHECK(qn_trainer_loss_cfg(tr, &a->loss));
    /* the flags alone: the batch's step count, known later, replaces this stand-in */
    qn_adamw_cfg check;
    QN_CHECK(qn_trainer_adamw_cfg(tr, tr->lr_warmup_iters + 1, &check));
    QN_CHECK(qn_trainer_pack_cfg(tr, 1, &a->pack));
    if (a->loss.use_kl_loss && !ref_load)
        return qn_fail(QN_ERR_INVALID, "--use-kl-loss needs --ref-load DIR");
    return QN_OK;
}

/* Resolves --load (ts_ckpt_resolve): its weights replace --model and its
 * batch_step steps are skipped when the rollout id matches. */
static qn_status resolve_load(const char *load, int64_t rollout_id, ts_ckpt *ck, ts_args *a) {
    QN_CHECK(ts_ckpt_resolve(load, ck));
    a->model = ck->dir;
    a->load_ckpt = ck->dir;
    a->skip_steps = ck->rollout_id == rollout_id ? ck->batch_step : 0;
    return QN_OK;
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
                 .save_grads = cfg.save_grads, .temperature = cfg.rollout_temperature,
                 .threads = cfg.threads};
    a.save = cfg.save;
    a.save_interval = cfg.save_interval;
    a.max_steps = cfg.max_steps;
    a.rollout_id = cfg.rollout_id;
    a.data_cursor = cfg.data_cursor;
    a.router = cfg.router;
    a.weight_listen = cfg.weight_listen;
    a.weight_advertise = cfg.weight_advertise;
    a.weight_version = cfg.weight_version ? cfg.weight_version : cfg.rollout_id + 1;
    a.update_timeout_s = cfg.update_weights_timeout;
    ts_opt_ctx oc;
    ts_ckpt ck;
    qn_status s = ts_args_trainer_flags(&a, &oc, &cfg.tr, cfg.ref_load);
    if (s != QN_OK) {
        fprintf(stderr, "quench train-step: %s\n", qn_last_error());
        rc = QN_EXIT_USAGE;
        goto done;
    }
    if (cfg.load) { /* a missing file fails before any work or output */
        s = resolve_load(cfg.load, cfg.rollout_id, &ck, &a);
        if (s != QN_OK) {
            fprintf(stderr, "quench train-step: --load: %s\n", qn_last_error());
            rc = QN_EXIT_FAILURE;
            goto done;
        }
        oc.load = ck.dir;
    }
    a.metrics_fd = -1;
    rc = ts_run(&a);
    ts_opt_free(&oc);
done:
    qn_flags_parsed_free(&p);
    qn_flags_free(&k_ts_table, &cfg);
    return rc;
}
