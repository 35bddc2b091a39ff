/* train_step_run.c — the work of `quench train-step` (flags and the AdamW
 * bridge are in cmd_train_step.c): read and validate the batch file, GRPO
 * advantages, the packing plan, per micro-batch forward / loss / backward,
 * the all-reduce over data-parallel ranks, the optimizer step and the
 * outputs. The work is a trainer object (ts_trainer, train_step.h) that
 * keeps the model, workspaces, buffers, optimizer table and dist handle
 * across batches, so `quench train` (cmd_train.c) runs the same code on
 * every rollout; ts_run is train-step's one-batch use of it. A batch may
 * carry its own advantages (the buffer's) instead of GRPO from the rewards.
 *
 * Old log-probs are "recomputed": with one optimizer step per batch the
 * forward of the loss pass runs on the unchanged weights, so its log-probs
 * ARE the recomputed old log-probs (a second forward with the same packing
 * gives the same bits);
 * they are copied and passed as old_logp, so ratio = 1 and ppo_kl = 0 exactly
 * unless --use-rollout-logprobs. Every rank reads the whole file (advantages
 * and the loss normaliser are global), computes the same plan and runs its
 * share.
 *
 * Several optimizer steps per batch (--global-batch-size): the old log-probs
 * of every step are those of the weights at the start of the batch (slime
 * computes them once per rollout). They are computed in a forward-only pass
 * with the same micro-batches before the first step (so step 1's ratio is
 * still exactly 1), gathered over the ranks by an exact all-reduce (every
 * other rank adds zeros), and stored in mid-batch checkpoints so that a resume
 * continues with the same values. Each step's loss normaliser counts that
 * step's samples; advantages are over the whole batch. Checkpoint layout:
 * cmd_train_step.c; rank 0 writes checkpoints and OUT_DIR (the optimizer is
 * replicated, not sharded). Leaves out: barriers around checkpoint writes
 * (a rank may run ahead of rank 0's fsync), keeping only the last k step
 * dirs. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/io/jsonl.h"
#include "core/io/metrics_line.h"
#include "cli/commands.h"
#include "cli/train_step.h"
#include "net/weight_update.h"
#include "core/dist/dist.h"
#include "core/log.h"
#include "core/model/model.h"
#include "core/io/safetensors.h"
#include "trainer/advantages.h"

/* the metrics are all-reduced as one array of doubles */
_Static_assert(sizeof(qn_loss_metrics) % sizeof(double) == 0, "qn_loss_metrics: doubles only");

void ts_batch_free(ts_batch *b) {
    for (int64_t i = 0; i < b->n; i++) {
        free(b->v[i].tokens);
        free(b->v[i].roll);
        free(b->v[i].mask);
    }
    free(b->v);
    memset(b, 0, sizeof *b);
}

void ts_batch_finish(ts_batch *b) {
    b->all_roll = true;
    for (int64_t i = 0; i < b->n; i++) b->all_roll = b->all_roll && b->v[i].roll;
}

static bool is_int(const cJSON *x) {
    return cJSON_IsNumber(x) && isfinite(x->valuedouble) && x->valuedouble == floor(x->valuedouble);
}

/* A per-response-position array; want = len - k. */
static qn_status read_resp(const cJSON *arr, const char *key, int64_t want, bool is_mask,
                           const char *path, long line, float **out) {
    if (!cJSON_IsArray(arr))
        return qn_fail(QN_ERR_FORMAT, "%s:%ld: \"%s\" must be an array of numbers", path, line,
                       key);
    int64_t n = cJSON_GetArraySize(arr);
    if (n != want)
        return qn_fail(QN_ERR_FORMAT,
                       "%s:%ld: \"%s\" has %lld values; expected one per response position "
                       "(len - response_start = %lld)",
                       path, line, key, (long long)n, (long long)want);
    float *v = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!v) return qn_fail(QN_ERR_NOMEM, "%s:%ld", path, line);
    int64_t i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        bool ok = cJSON_IsNumber(it) && isfinite(it->valuedouble);
        if (ok && is_mask) ok = it->valuedouble == 0.0 || it->valuedouble == 1.0;
        if (!ok) {
            free(v);
            return qn_fail(QN_ERR_FORMAT, "%s:%ld: \"%s\"[%lld] is not %s", path, line, key,
                           (long long)i, is_mask ? "0 or 1" : "a finite number");
        }
        v[i++] = (float)it->valuedouble;
    }
    *out = v;
    return QN_OK;
}

static qn_status parse_sample(const char *text, const char *path, long line, int64_t vocab,
                              const qn_loss_cfg *lc, ts_sample *q) {
    memset(q, 0, sizeof *q);
    qn_status s = QN_OK;
    cJSON *o = cJSON_Parse(text);
    const cJSON *toks = cJSON_GetObjectItemCaseSensitive(o, "tokens");
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(o, "response_start");
    const cJSON *grp = cJSON_GetObjectItemCaseSensitive(o, "group");
    const cJSON *rew = cJSON_GetObjectItemCaseSensitive(o, "reward");
    const cJSON *roll = cJSON_GetObjectItemCaseSensitive(o, "rollout_logprobs");
    const cJSON *mask = cJSON_GetObjectItemCaseSensitive(o, "loss_mask");
    if (!cJSON_IsObject(o)) {
        s = qn_fail(QN_ERR_FORMAT, "%s:%ld: not a JSON object", path, line);
        goto done;
    }
    if (!toks) {
        s = qn_fail(QN_ERR_FORMAT, "%s:%ld: missing field \"tokens\"", path, line);
        goto done;
    }
    if (!cJSON_IsArray(toks) || cJSON_GetArraySize(toks) < 2) {
        s = qn_fail(QN_ERR_FORMAT, "%s:%ld: \"tokens\" must be an array of at least 2 token ids",
                    path, line);
        goto done;
    }
    q->len = cJSON_GetArraySize(toks);
    if (!rs) {
        s = qn_fail(QN_ERR_FORMAT, "%s:%ld: missing field \"response_start\"", path, line);
        goto done;
    }
    if (!is_int(rs) || rs->valuedouble < 1 || rs->valuedouble > (double)(q->len - 1)) {
        s = qn_fail(QN_ERR_RANGE,
                    "%s:%ld: \"response_start\" out of range: must be an integer in [1, %lld] "
                    "(len(tokens) - 1)",
                    path, line, (long long)(q->len - 1));
        goto done;
    }
    q->k = (int64_t)rs->valuedouble;
    if (!grp || !is_int(grp)) {
        s = qn_fail(QN_ERR_FORMAT, "%s:%ld: %s field \"group\" (an integer)", path, line,
                    grp ? "bad" : "missing");
        goto done;
    }
    q->group = (int64_t)grp->valuedouble;
    if (!rew || !cJSON_IsNumber(rew) || !isfinite(rew->valuedouble)) {
        s = qn_fail(QN_ERR_FORMAT, "%s:%ld: %s field \"reward\" (a finite number)", path, line,
                    rew ? "bad" : "missing");
        goto done;
    }
    q->reward = rew->valuedouble;
    q->tokens = malloc((size_t)q->len * sizeof(int32_t));
    if (!q->tokens) {
        s = qn_fail(QN_ERR_NOMEM, "%s:%ld", path, line);
        goto done;
    }
    int64_t i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, toks) {
        if (!is_int(it) || it->valuedouble < 0 || it->valuedouble >= (double)vocab) {
            s = qn_fail(QN_ERR_RANGE, "%s:%ld: tokens[%lld] is not a token id in [0, %lld) "
                        "(the model's vocab_size)", path, line, (long long)i, (long long)vocab);
            goto done;
        }
        q->tokens[i++] = (int32_t)it->valuedouble;
    }
    if (roll) {
        QN_CHECK_GOTO(read_resp(roll, "rollout_logprobs", q->len - q->k, false, path, line,
                                &q->roll), s, done);
    } else if (lc->use_rollout_logprobs || lc->use_tis) {
        s = qn_fail(QN_ERR_FORMAT, "%s:%ld: missing field \"rollout_logprobs\" (needed by %s)",
                    path, line, lc->use_tis ? "--use-tis" : "--use-rollout-logprobs");
        goto done;
    }
    if (mask)
        QN_CHECK_GOTO(read_resp(mask, "loss_mask", q->len - q->k, true, path, line, &q->mask), s,
                      done);
done:
    cJSON_Delete(o);
    if (s != QN_OK) {
        free(q->tokens);
        free(q->roll);
        free(q->mask);
        memset(q, 0, sizeof *q);
    }
    return s;
}

typedef struct batch_ctx {
    const char *path;
    int64_t vocab;
    const qn_loss_cfg *lc;
    ts_batch *out;
    size_t cap;
} batch_ctx;

static qn_status read_sample_line(const char *text, long line, void *user) {
    batch_ctx *c = user;
    ts_batch *out = c->out;
    if ((size_t)out->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        ts_sample *nv = realloc(out->v, c->cap * sizeof *nv);
        if (!nv) return qn_fail(QN_ERR_NOMEM, "%s: out of memory at line %ld", c->path, line);
        out->v = nv;
    }
    QN_CHECK(parse_sample(text, c->path, line, c->vocab, c->lc, &out->v[out->n]));
    out->n++;
    return QN_OK;
}

qn_status ts_batch_read(const char *path, int64_t vocab, const qn_loss_cfg *lc,
                        ts_batch *out) {
    memset(out, 0, sizeof *out);
    batch_ctx c = {.path = path, .vocab = vocab, .lc = lc, .out = out};
    qn_status s = qn_jsonl_foreach(path, read_sample_line, &c);
    if (s == QN_OK && out->n == 0) s = qn_fail(QN_ERR_FORMAT, "%s: no samples", path);
    if (s != QN_OK) {
        ts_batch_free(out);
        return s;
    }
    ts_batch_finish(out);
    return QN_OK;
}

/* Buffers for one micro-batch (sized for the largest of this rank). */
typedef struct ts_mb {
    int32_t *tokens, *targets;
    int64_t *cu, *rows, *cu_resp;
    float *logp, *ent, *old, *ref, *ref_ent, *adv, *mask, *roll, *dl, *de;
    double *dlogp, *dent;
} ts_mb;

static void mb_free(ts_mb *b) {
    free(b->tokens), free(b->targets), free(b->cu), free(b->rows), free(b->cu_resp);
    free(b->logp), free(b->ent), free(b->old), free(b->ref), free(b->ref_ent), free(b->adv);
    free(b->mask), free(b->roll), free(b->dl), free(b->de), free(b->dlogp), free(b->dent);
}

static qn_status mb_alloc(ts_mb *b, int64_t T, int64_t S) {
    size_t t = (size_t)(T > 0 ? T : 1), s1 = (size_t)(S + 1);
    b->tokens = malloc(t * sizeof(int32_t));
    b->targets = malloc(t * sizeof(int32_t));
    b->cu = malloc(s1 * sizeof(int64_t));
    b->cu_resp = malloc(s1 * sizeof(int64_t));
    b->rows = malloc(t * sizeof(int64_t));
    float **fl[] = {&b->logp, &b->ent, &b->old, &b->ref, &b->ref_ent, &b->adv,
                    &b->mask, &b->roll, &b->dl, &b->de};
    bool ok = b->tokens && b->targets && b->cu && b->cu_resp && b->rows;
    for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++) {
        *fl[i] = malloc(t * sizeof(float));
        ok = ok && *fl[i];
    }
    b->dlogp = malloc(t * sizeof(double));
    b->dent = malloc(t * sizeof(double));
    ok = ok && b->dlogp && b->dent;
    return ok ? QN_OK : qn_fail(QN_ERR_NOMEM, "train-step: micro-batch buffers");
}

/* The trainer: what persists across batches (model, workspaces, buffers,
 * the dist handle, the optimizer's tensor table), then the current batch's
 * state (kept until the next batch: checkpoints refer to it). */
struct ts_trainer {
    const ts_args *a;
    qn_model m, ref;
    bool have_ref, have_grads, joined;
    qn_model_ws *ws, *ref_ws;
    int64_t ws_T, mb_T, mb_S; /* sizes the workspaces and buffers have */
    qn_dist *dist;
    ts_mb mb;
    ts_tensor *tt;
    size_t nt;
    /* the current batch */
    const ts_batch *batch;
    double *adv; /* [n] per sample */
    qn_pack_plan plan;
    bool have_plan;
    qn_loss_norm norm;
    qn_loss_metrics met;
    int64_t *cu_all;  /* [n+1] response-token offsets of the samples in the batch */
    float *old_all;   /* [cu_all[n]] start-of-batch log-probs, or NULL: use this forward's */
    float *mask_all;  /* [cu_all[n]] loss masks */
    bool fwd_only;    /* the old log-prob pass: forward into old_all, no loss */
};
typedef struct ts_trainer ts_state;

/* Runs one micro-batch: its samples are idx[0..ns). */
static qn_status run_micro(ts_state *st, const int64_t *idx, int64_t ns) {
    const ts_args *a = st->a;
    ts_mb *b = &st->mb;
    int64_t T = 0, R = 0;
    b->cu[0] = 0;
    b->cu_resp[0] = 0;
    for (int64_t j = 0; j < ns; j++) {
        const ts_sample *q = &st->batch->v[idx[j]];
        memcpy(b->tokens + T, q->tokens, (size_t)q->len * sizeof(int32_t));
        for (int64_t t = q->k; t < q->len; t++) {
            int64_t r = t - q->k;
            b->rows[R] = T + t - 1;
            b->targets[R] = q->tokens[t];
            b->adv[R] = (float)st->adv[idx[j]];
            b->mask[R] = q->mask ? q->mask[r] : 1.0f;
            b->roll[R] = q->roll ? q->roll[r] : 0.0f;
            R++;
        }
        T += q->len;
        b->cu[j + 1] = T;
        b->cu_resp[j + 1] = R;
    }
    qn_batch mb = {.tokens = b->tokens, .n_tokens = T, .cu_seqlens = b->cu, .n_seqs = ns,
                   .rows = b->rows, .targets = b->targets, .n_rows = R};
    float temp = (float)a->temperature;
    QN_CHECK(qn_model_forward(&st->m, st->ws, &mb, temp, b->logp, b->ent));
    if (st->fwd_only) {
        for (int64_t j = 0; j < ns; j++)
            memcpy(st->old_all + st->cu_all[idx[j]], b->logp + b->cu_resp[j],
                   (size_t)(b->cu_resp[j + 1] - b->cu_resp[j]) * sizeof(float));
        return QN_OK;
    }
    if (st->old_all) {
        for (int64_t j = 0; j < ns; j++)
            memcpy(b->old + b->cu_resp[j], st->old_all + st->cu_all[idx[j]],
                   (size_t)(b->cu_resp[j + 1] - b->cu_resp[j]) * sizeof(float));
    } else {
        memcpy(b->old, b->logp, (size_t)R * sizeof(float));
    }
    if (a->loss.use_kl_loss)
        QN_CHECK(qn_model_forward(&st->ref, st->ref_ws, &mb, temp, b->ref, b->ref_ent));
    qn_loss_batch lb = {.n_samples = ns, .cu_tokens = b->cu_resp, .logp = b->logp,
                        .old_logp = b->old, .ref_logp = a->loss.use_kl_loss ? b->ref : NULL,
                        .rollout_logp = st->batch->all_roll ? b->roll : NULL,
                        .entropy = b->ent, .advantage = b->adv, .loss_mask = b->mask};
    QN_CHECK(qn_loss_compute(&a->loss, &lb, &st->norm, b->dlogp, b->dent, &st->met));
    for (int64_t r = 0; r < R; r++) {
        b->dl[r] = (float)b->dlogp[r];
        b->de[r] = (float)b->dent[r];
    }
    return qn_model_backward(&st->m, st->ws, &mb, b->dl, b->de);
}

/* The start-of-batch log-probs of every sample: a forward-only pass over
 * this rank's micro-batches of every step, summed over ranks (each value
 * comes from one rank, the others add 0: exact), or, when resuming mid-batch,
 * read from the checkpoint. */
static qn_status old_logprobs(ts_state *st, int64_t n_resp, int rank, int world) {
    const ts_args *a = st->a;
    const qn_pack_plan *pl = &st->plan;
    st->old_all = calloc((size_t)(n_resp > 0 ? n_resp : 1), sizeof(float));
    if (!st->old_all) return qn_fail(QN_ERR_NOMEM, "train-step: old log-probs");
    if (a->skip_steps > 0) {
        char path[4200];
        snprintf(path, sizeof path, "%s/old_logprobs.safetensors",
                 a->load_ckpt ? a->load_ckpt : ".");
        qn_st_file *f = NULL;
        const qn_st_tensor *t = NULL;
        QN_CHECK(qn_st_open(path, &f));
        qn_status s = qn_st_get(f, "old_logp", &t);
        if (s == QN_OK && (t->dtype != QN_DTYPE_F32 || t->nbytes != (uint64_t)n_resp * 4))
            s = qn_fail(QN_ERR_FORMAT, "%s: tensor 'old_logp': expected F32 with %lld elements "
                        "(the batch's response tokens): is this the same batch?", path,
                        (long long)n_resp);
        if (s == QN_OK) memcpy(st->old_all, t->data, (size_t)t->nbytes);
        qn_st_close(f);
        return s;
    }
    st->fwd_only = true;
    for (int64_t k = 0; k < pl->n_steps; k++) {
        for (int64_t j = 0; j < pl->n_micro[k]; j++) {
            int64_t mb = qn_pack_mb(pl, k, rank, j);
            int64_t ns = pl->mb_off[mb + 1] - pl->mb_off[mb];
            if (ns == 0) continue;
            qn_status s = run_micro(st, pl->sample_idx + pl->mb_off[mb], ns);
            if (s != QN_OK) {
                st->fwd_only = false;
                return s;
            }
        }
    }
    st->fwd_only = false;
    if (world > 1) QN_CHECK(qn_dist_allreduce_sum_f32(st->dist, st->old_all, n_resp));
    return QN_OK;
}

static qn_status fsync_path(const char *path, bool is_dir) {
    int fd = open(path, is_dir ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
    if (fd < 0) return qn_fail(QN_ERR_IO, "%s: cannot open to fsync: %s", path, strerror(errno));
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    return rc == 0 ? QN_OK : qn_fail(QN_ERR_IO, "%s: fsync: %s", path, strerror(err));
}

/* Removes a folder of plain files (a stale .tmp-step-K or a step dir being
 * rewritten); a missing folder is fine. */
static qn_status remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? QN_OK : qn_fail(QN_ERR_IO, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    char path[4400];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) != 0) {
            closedir(d);
            return qn_fail(QN_ERR_IO, "%s: cannot remove: %s", path, strerror(errno));
        }
    }
    closedir(d);
    return rmdir(dir) == 0 ? QN_OK : qn_fail(QN_ERR_IO, "%s: rmdir: %s", dir, strerror(errno));
}

static const char *const k_ckpt_files[] = {"config.json", "model.safetensors",
                                           "optimizer.safetensors", "trainer_state.json",
                                           "old_logprobs.safetensors"};

/* Writes the checkpoint files into dir (exists); returns how many of
 * k_ckpt_files it wrote (old_logprobs only mid-batch). */
static qn_status write_state(ts_state *st, const char *dir, int64_t batch_step, int64_t step,
                             size_t *n_files) {
    const ts_args *a = st->a;
    char path[4400];
    QN_CHECK(qn_model_save_dir(&st->m, dir, "fp32"));
    QN_CHECK(a->opt_save(a->opt_ctx, dir));
    bool mid = batch_step < st->plan.n_steps && st->old_all;
    if (mid) {
        int64_t n_resp = st->cu_all[st->batch->n];
        snprintf(path, sizeof path, "%s/%s", dir, k_ckpt_files[4]);
        qn_st_writer *w = NULL;
        qn_status s = qn_st_writer_init(&w, path);
        if (s == QN_OK) s = qn_st_writer_add(w, "old_logp", QN_DTYPE_F32, 1, &n_resp, st->old_all);
        if (s == QN_OK) s = qn_st_writer_finish(w);
        qn_st_writer_free(w);
        QN_CHECK(s);
    }
    snprintf(path, sizeof path, "%s/%s", dir, k_ckpt_files[3]);
    FILE *f = fopen(path, "wb");
    if (!f) return qn_fail(QN_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    fprintf(f,
            "{\"step\": %lld, \"rollout_id\": %lld, \"batch_step\": %lld, \"batch_steps\": %lld,"
            " \"samples_consumed\": %lld, \"data_cursor\": %lld,"
            " \"rng\": \"none: train-step draws no random numbers\"}\n",
            (long long)step, (long long)a->rollout_id, (long long)batch_step,
            (long long)st->plan.n_steps, (long long)(batch_step * st->plan.global_batch_size),
            (long long)a->data_cursor);
    if (fclose(f) != 0) return qn_fail(QN_ERR_IO, "%s: write failed", path);
    *n_files = mid ? 5 : 4;
    return QN_OK;
}

/* Writes --save/step-K (layout and atomicity: cmd_train_step.c's header). */
static qn_status write_ckpt(ts_state *st, const char *save, int64_t batch_step, int64_t step) {
    char tmp[4096], fin[4096], path[4400], path2[4400];
    if (mkdir(save, 0777) != 0 && errno != EEXIST)
        return qn_fail(QN_ERR_IO, "%s: cannot create: %s", save, strerror(errno));
    snprintf(tmp, sizeof tmp, "%s/.tmp-step-%lld", save, (long long)step);
    snprintf(fin, sizeof fin, "%s/step-%lld", save, (long long)step);
    QN_CHECK(remove_dir(tmp));
    if (mkdir(tmp, 0777) != 0)
        return qn_fail(QN_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    size_t n_files = 0;
    QN_CHECK(write_state(st, tmp, batch_step, step, &n_files));
    for (size_t i = 0; i < n_files; i++) {
        snprintf(path, sizeof path, "%s/%s", tmp, k_ckpt_files[i]);
        QN_CHECK(fsync_path(path, false));
    }
    QN_CHECK(fsync_path(tmp, true));
    QN_CHECK(remove_dir(fin));
    if (rename(tmp, fin) != 0)
        return qn_fail(QN_ERR_IO, "%s -> %s: rename: %s", tmp, fin, strerror(errno));
    snprintf(path, sizeof path, "%s/.latest.tmp", save);
    snprintf(path2, sizeof path2, "%s/latest", save);
    FILE *f = fopen(path, "wb");
    if (!f) return qn_fail(QN_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    fprintf(f, "step-%lld\n", (long long)step);
    bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(path, path2) != 0)
        return qn_fail(QN_ERR_IO, "%s: cannot write: %s", path2, strerror(errno));
    QN_CHECK(fsync_path(save, true));
    QN_LOG_INFO("checkpoint %s (batch step %lld of %lld)", fin, (long long)batch_step,
                (long long)st->plan.n_steps);
    return QN_OK;
}

/* Frees the state of the previous batch. */
static void batch_reset(ts_state *st) {
    if (st->have_plan) qn_pack_plan_free(&st->plan);
    st->have_plan = false;
    free(st->adv);
    free(st->cu_all);
    free(st->old_all);
    free(st->mask_all);
    st->adv = NULL;
    st->cu_all = NULL;
    st->old_all = NULL;
    st->mask_all = NULL;
    st->batch = NULL;
}

qn_status ts_trainer_open(const ts_args *a, ts_trainer **out) {
    *out = NULL;
    if (a->threads > 0) omp_set_num_threads((int)a->threads);
    ts_state *st = calloc(1, sizeof *st);
    if (!st) return qn_fail(QN_ERR_NOMEM, "train: trainer state");
    st->a = a;
    *out = st;
    return qn_model_open(&st->m, a->model);
}

qn_status ts_trainer_join(ts_trainer *st) {
    if (st->joined) return QN_OK;
    qn_dist_config dc;
    QN_CHECK(qn_dist_config_from_env("train", &dc));
    QN_CHECK(qn_dist_init(&dc, &st->dist));
    st->joined = true;
    return QN_OK;
}

int ts_trainer_rank(const ts_trainer *t) { return t->dist ? qn_dist_rank(t->dist) : 0; }
int ts_trainer_world_size(const ts_trainer *t) {
    return t->dist ? qn_dist_world_size(t->dist) : 1;
}
const qn_model *ts_trainer_model(const ts_trainer *t) { return &t->m; }
int64_t ts_trainer_vocab(const ts_trainer *t) { return t->m.d.vocab; }

qn_status ts_trainer_checkpoint(ts_trainer *t, const char *save, int64_t batch_step,
                                int64_t step) {
    if (!t->batch || !t->have_plan)
        return qn_fail(QN_ERR_INVALID, "%s: no batch was trained", save);
    return write_ckpt(t, save, batch_step, step);
}

qn_status ts_trainer_write_dir(ts_trainer *t, const char *dir, int64_t batch_step,
                               int64_t step) {
    if (!t->batch || !t->have_plan)
        return qn_fail(QN_ERR_INVALID, "%s: no batch was trained", dir);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return qn_fail(QN_ERR_IO, "%s: cannot create: %s", dir, strerror(errno));
    size_t n_files = 0;
    return write_state(t, dir, batch_step, step, &n_files);
}

/* One step's metrics line (rank 0). */
static qn_status print_metrics(ts_state *st, const ts_opt_info *oi) {
    const ts_args *a = st->a;
    char buf[2048];
    qn_loss_metrics_json(&a->loss, &st->met, st->batch->all_roll, buf, sizeof buf);
    if (a->metrics_fd < 0) {
        printf("{%s, \"train/grad_norm\": %s, \"train/lr\": %s}\n", buf,
               qn_metrics_num(oi->grad_norm).s, qn_metrics_num(oi->lr).s);
        fflush(stdout);
        return QN_OK;
    }
    char line[2400];
    int n = snprintf(line, sizeof line,
                     "{\"rollout_id\": %lld, \"step\": %lld, %s, \"train/grad_norm\": %s, "
                     "\"train/lr\": %s}\n",
                     (long long)a->rollout_id, (long long)oi->step, buf,
                     qn_metrics_num(oi->grad_norm).s, qn_metrics_num(oi->lr).s);
    if (n < 0 || (size_t)n >= sizeof line)
        return qn_fail(QN_ERR_INTERNAL, "train: metrics line too long");
    return qn_metrics_write_line(a->metrics_fd, line, (size_t)n);
}

qn_status ts_trainer_train(ts_trainer *st, const ts_batch *batch, ts_result *res) {
    const ts_args *a = st->a;
    batch_reset(st);
    st->batch = batch;
    int64_t n = st->batch->n;
    if (n <= 0) return qn_fail(QN_ERR_INVALID, "train: empty batch");
    if (a->loss.use_kl_loss && !st->have_ref) {
        QN_CHECK(qn_model_open(&st->ref, a->ref_load));
        st->have_ref = true;
        if (st->ref.d.vocab != st->m.d.vocab)
            return qn_fail(QN_ERR_INVALID, "%s: vocab_size %lld differs from the policy's %lld",
                           a->ref_load, (long long)st->ref.d.vocab, (long long)st->m.d.vocab);
    }
    /* advantages and the loss normaliser over the whole (global) batch */
    double *rew = malloc((size_t)n * sizeof(double));
    int64_t *grp = malloc((size_t)n * sizeof(int64_t));
    int64_t *len = malloc((size_t)n * sizeof(int64_t));
    int64_t *cu = malloc((size_t)(n + 1) * sizeof(int64_t));
    st->cu_all = cu;
    st->adv = malloc((size_t)n * sizeof(double));
    qn_status s = QN_OK;
    if (!rew || !grp || !len || !cu || !st->adv) {
        s = qn_fail(QN_ERR_NOMEM, "train-step: batch arrays");
        goto done;
    }
    cu[0] = 0;
    for (int64_t i = 0; i < n; i++) {
        rew[i] = st->batch->v[i].reward;
        grp[i] = st->batch->v[i].group;
        len[i] = st->batch->v[i].len;
        cu[i + 1] = cu[i] + st->batch->v[i].len - st->batch->v[i].k;
    }
    float *mask = st->mask_all = malloc((size_t)(cu[n] > 0 ? cu[n] : 1) * sizeof(float));
    if (!mask) {
        s = qn_fail(QN_ERR_NOMEM, "train-step: masks");
        goto done;
    }
    for (int64_t i = 0; i < n; i++) {
        const ts_sample *q = &st->batch->v[i];
        for (int64_t r = 0; r < q->len - q->k; r++) mask[cu[i] + r] = q->mask ? q->mask[r] : 1.0f;
    }
    if (st->batch->have_adv) { /* the buffer's advantages, as they are */
        for (int64_t i = 0; i < n; i++) st->adv[i] = st->batch->v[i].advantage;
    } else {
        QN_CHECK_GOTO(qn_adv_grpo(rew, grp, (size_t)n, a->normalize_std, st->adv), s, done);
    }

    /* rank identity and the plan */
    qn_dist_config dc;
    QN_CHECK_GOTO(qn_dist_config_from_env("train", &dc), s, done);
    qn_pack_cfg pc = a->pack;
    pc.dp_size = dc.world_size;
    QN_CHECK_GOTO(qn_pack_plan_build(&pc, len, n, &st->plan), s, done);
    st->have_plan = true;
    const qn_pack_plan *pl = &st->plan;
    int64_t n_steps = pl->n_steps;
    int64_t end = a->max_steps > 0 && a->max_steps < n_steps ? a->max_steps : n_steps;
    if (a->skip_steps >= end) {
        s = qn_fail(QN_ERR_INVALID,
                    "nothing to do: the checkpoint has %lld of the batch's %lld optimizer steps "
                    "done (rollout id %lld)%s", (long long)a->skip_steps, (long long)n_steps,
                    (long long)a->rollout_id, a->max_steps ? " and --max-steps stops there" : "");
        goto done;
    }
    QN_CHECK_GOTO(ts_trainer_join(st), s, done);
    int rank = qn_dist_rank(st->dist), world = qn_dist_world_size(st->dist);

    int64_t maxT = 1, maxS = 1, n_run = 0, n_tok = 0, n_mine = 0, n_mbs = 0;
    for (int64_t k = 0; k < n_steps; k++) {
        for (int64_t j = 0; j < pl->n_micro[k]; j++) {
            int64_t mb = qn_pack_mb(pl, k, rank, j);
            int64_t ns = pl->mb_off[mb + 1] - pl->mb_off[mb];
            if (pl->mb_tokens[mb] > maxT) maxT = pl->mb_tokens[mb];
            if (ns > maxS) maxS = ns;
            n_run += ns > 0;
            n_mine += ns;
            n_tok += pl->mb_tokens[mb];
            n_mbs++;
        }
    }
    QN_LOG_INFO("rank %d/%d: %lld of %lld samples, %lld tokens, %lld optimizer steps, "
                "%lld micro-batches (%lld non-empty)", rank, world, (long long)n_mine,
                (long long)n, (long long)n_tok, (long long)n_steps, (long long)n_mbs,
                (long long)n_run);
    /* buffers and workspaces grow to the largest batch seen (their contents are
     * scratch: sizes never change results) */
    if (maxT > st->mb_T || maxS > st->mb_S) {
        mb_free(&st->mb);
        memset(&st->mb, 0, sizeof st->mb);
        st->mb_T = st->mb_S = 0;
        QN_CHECK_GOTO(mb_alloc(&st->mb, maxT, maxS), s, done);
        st->mb_T = maxT;
        st->mb_S = maxS;
    }
    if (maxT > st->ws_T) {
        qn_model_ws_free(st->ws);
        qn_model_ws_free(st->ref_ws);
        st->ws = st->ref_ws = NULL;
        st->ws_T = 0;
        QN_CHECK_GOTO(qn_model_ws_init(&st->ws, &st->m, maxT, maxT), s, done);
        if (st->have_ref)
            QN_CHECK_GOTO(qn_model_ws_init(&st->ref_ws, &st->ref, maxT, maxT), s, done);
        st->ws_T = maxT;
    }
    if (!st->have_grads) {
        QN_CHECK_GOTO(qn_model_alloc_grads(&st->m), s, done);
        st->have_grads = true;
    }
    if (n_steps > 1 && !a->loss.use_rollout_logprobs) /* old log-probs of the batch's start */
        QN_CHECK_GOTO(old_logprobs(st, cu[n], rank, world), s, done);

    /* optimizer: trainable tensors only (e_score_correction_bias is a buffer) */
    if (!st->tt) {
        st->tt = calloc(st->m.n_params ? st->m.n_params : 1, sizeof *st->tt);
        if (!st->tt) {
            s = qn_fail(QN_ERR_NOMEM, "train-step: tensor table");
            goto done;
        }
        for (size_t i = 0; i < st->m.n_params; i++) {
            const qn_param_info *p = &st->m.params[i];
            if (!p->trainable) continue;
            st->tt[st->nt++] = (ts_tensor){.name = p->name, .offset = (int64_t)p->offset,
                                           .size = (int64_t)p->numel, .ndim = p->ndim,
                                           .shape = {p->shape[0], p->shape[1]}};
        }
    }
    int64_t last_step = 0;
    for (int64_t k = a->skip_steps; k < end; k++) {
        /* this step's loss normaliser: its samples over all ranks */
        memset(&st->norm, 0, sizeof st->norm);
        memset(&st->met, 0, sizeof st->met);
        for (int64_t mb = pl->mb_start[k]; mb < pl->mb_start[k + 1]; mb++) {
            for (int64_t o = pl->mb_off[mb]; o < pl->mb_off[mb + 1]; o++) {
                int64_t i = pl->sample_idx[o];
                int64_t one_cu[2] = {0, cu[i + 1] - cu[i]};
                qn_loss_batch one = {.n_samples = 1, .cu_tokens = one_cu,
                                     .loss_mask = mask + cu[i]};
                qn_loss_count(&one, &st->norm);
            }
        }
        qn_model_zero_grads(&st->m);
        for (int64_t j = 0; j < pl->n_micro[k]; j++) {
            int64_t mb = qn_pack_mb(pl, k, rank, j);
            int64_t ns = pl->mb_off[mb + 1] - pl->mb_off[mb];
            if (ns == 0) continue; /* empty padding micro-batch */
            QN_CHECK_GOTO(run_micro(st, pl->sample_idx + pl->mb_off[mb], ns), s, done);
        }
        if (world > 1) {
            QN_CHECK_GOTO(qn_dist_allreduce_sum_f32(st->dist, st->m.g, st->m.n_floats), s, done);
            double mv[sizeof(qn_loss_metrics) / sizeof(double)];
            memcpy(mv, &st->met, sizeof mv);
            QN_CHECK_GOTO(qn_dist_allreduce_sum_f64(st->dist, mv, sizeof mv / sizeof mv[0]), s,
                          done);
            memcpy(&st->met, mv, sizeof mv);
        }
        if (a->save_grads && rank == 0)
            QN_CHECK_GOTO(qn_model_save_grads(&st->m, a->save_grads), s, done);
        ts_opt_info oi = {0};
        QN_CHECK_GOTO(a->opt_step(a->opt_ctx, st->tt, st->nt, (int64_t)st->m.n_floats, n_steps,
                                  st->m.w, st->m.g, &oi), s, done);
        last_step = oi.step;
        if (rank != 0) continue;
        QN_CHECK_GOTO(print_metrics(st, &oi), s, done);
        bool due = a->save_interval > 0 && oi.step % a->save_interval == 0;
        if (a->save && (due || k + 1 == end))
            QN_CHECK_GOTO(write_ckpt(st, a->save, k + 1, oi.step), s, done);
    }
    *res = (ts_result){.n_steps = n_steps, .end = end, .last_step = last_step};
done:
    free(rew);
    free(grp);
    free(len);
    return s;
}

void ts_trainer_free(ts_trainer *st) {
    if (!st) return;
    batch_reset(st);
    mb_free(&st->mb);
    qn_model_ws_free(st->ws);
    qn_model_ws_free(st->ref_ws);
    qn_dist_free(st->dist);
    free(st->tt);
    qn_model_free(&st->m);
    qn_model_free(&st->ref);
    free(st);
}

/* Publishes the trained weights on a weight server and announces them to the router; waits
 * until the engines serve them. The server goes away with this process: engines that join
 * later pull from the next trainer to publish (a long-running trainer is the launcher's). */
static qn_status update_weights(ts_state *st) {
    const ts_args *a = st->a;
    void *ctx = zmq_ctx_new();
    if (!ctx) return qn_fail(QN_ERR_NET, "weight update: cannot create a ZeroMQ context");
    qn_weight_publisher *pub = NULL;
    qn_weight_update_report rep;
    qn_status s = qn_weight_publisher_start(ctx, a->router, a->weight_listen, a->weight_advertise,
                                            "trainer", &pub);
    if (s == QN_OK)
        s = qn_weight_publisher_update(pub, &st->m, (uint64_t)a->weight_version,
                                       (int)(a->update_timeout_s * 1000.0), &rep);
    if (s == QN_OK && !rep.ok)
        s = qn_fail(QN_ERR_NET, "weight update: version %lld: %u engines failed: %s",
                    (long long)a->weight_version, rep.n_failed, rep.error);
    if (s == QN_OK)
        printf("{\"weight_version\": %lld, \"perf/update_weights_time\": %.4f, "
               "\"update_weights/engines\": %u}\n",
               (long long)a->weight_version, rep.applied_s, rep.n_engines);
    qn_weight_publisher_stop(pub);
    zmq_ctx_term(ctx);
    return s;
}

int ts_run(const ts_args *a) {
    ts_trainer *st = NULL;
    ts_batch batch = {0};
    ts_result res = {0};
    qn_status s = ts_trainer_open(a, &st);
    if (s == QN_OK) s = ts_batch_read(a->batch, st->m.d.vocab, &a->loss, &batch);
    if (s == QN_OK) s = ts_trainer_train(st, &batch, &res);
    if (s == QN_OK && ts_trainer_rank(st) == 0)
        s = ts_trainer_write_dir(st, a->out, res.end, res.last_step);
    if (s == QN_OK && a->router && ts_trainer_rank(st) == 0) s = update_weights(st);
    if (s != QN_OK) fprintf(stderr, "quench train-step: %s\n", qn_last_error());
    ts_trainer_free(st);
    ts_batch_free(&batch);
    return s == QN_OK ? QN_EXIT_OK : QN_EXIT_FAILURE;
}
