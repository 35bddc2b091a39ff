/* cmd_train.c — `quench train`: the long-running GRPO trainer rank that
 * `quench launch` starts. Per rollout r from the start id to --num-rollout:
 * fetch the whole rollout from `quench buffer` (every share j of W, rank
 * order, so every rank builds train-step's packing plan and loss normaliser),
 * run its optimizer steps with train-step's code (cli/train_step_run.c via
 * train_step.h: model, optimizer, workspaces and dist handle persist), write
 * a checkpoint when due (rank 0, train-step's layout and atomicity), publish
 * the weights as version r+1 to --router (rank 0, one weight server for the
 * whole run) and wait for APPLIED, then ack rollout r, saying whether r is
 * in a checkpoint (the buffer deletes a rollout only then, so a resume from
 * an older checkpoint can fetch it again). Publishing before the ack lets a
 * buffer in sync mode generate r+1 on the new weights.
 *
 * Resume (--load, or --save when it has `latest`): a checkpoint that
 * finished rollout R's batch first acks R as checkpointed again (the run
 * may have died between the checkpoint and the ack, and a sync buffer waits
 * for it) and starts at R+1; a mid-batch one re-requests R and skips its
 * done steps. Rank 0 then publishes the loaded weights as the
 * start id (a router already at that version refuses: logged, not fatal).
 *
 * Buffer requests are resent after --request-timeout-s without an answer
 * (they are idempotent); answers are matched by request id. SIGTERM/SIGINT
 * stop at the next wait or rollout boundary: exit 0 if the last rollout was
 * finished, 1 otherwise.
 *
 * Leaves out: overlapping the fetch of r+1 with training r, sharded
 * optimizer states, NCCL weight broadcast. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "cli/commands.h"
#include "cli/stop_signal.h"
#include "cli/train_step.h"
#include "core/clock.h"
#include "core/flags.h"
#include "core/io/metrics_line.h"
#include "core/log.h"
#include "net/weight_update.h"
#include "net/zchan.h"
#include "trainer/options.h"

typedef struct tr_cfg {
    char *hf_checkpoint, *buffer, *router, *save, *load, *metrics_file, *ref_load;
    char *weight_listen, *weight_advertise, *dump_batches;
    double rollout_temperature, update_weights_timeout, request_timeout_s;
    int64_t threads, save_interval, num_rollout;
    qn_trainer_opts tr;
} tr_cfg;

static const qn_flag k_tr_flags[] = {
    QN_F_STRING(tr_cfg, hf_checkpoint, "hf-checkpoint", NULL,
                "initial policy (HF folder: config.json + safetensors)",
                .attrs = QN_FLAG_REQUIRED, .metavar = "DIR"),
    QN_F_STRING(tr_cfg, buffer, "buffer", NULL, "the buffer's --listen endpoint",
                .attrs = QN_FLAG_REQUIRED, .metavar = "ENDPOINT"),
    QN_F_STRING(tr_cfg, router, "router", NULL,
                "publish the weights to this router after every rollout (rank 0) and wait "
                "until the engines serve them",
                .metavar = "ENDPOINT"),
    QN_F_STRING(tr_cfg, save, "save", NULL, "checkpoint folder (DIR/step-K, DIR/latest)",
                .attrs = QN_FLAG_REQUIRED, .metavar = "DIR"),
    QN_F_STRING(tr_cfg, load, "load", NULL,
                "resume from a checkpoint (a step dir or a save dir with `latest`; default: "
                "--save when it has `latest`)",
                .metavar = "DIR"),
    QN_F_INT(tr_cfg, save_interval, "save-interval", "1", 1, INFINITY,
             "checkpoint after every N-th rollout (the last one is always saved)"),
    QN_F_INT(tr_cfg, num_rollout, "num-rollout", NULL, 1, INFINITY,
             "train rollouts [start, N): start is 0, or the resumed checkpoint's next",
             .attrs = QN_FLAG_REQUIRED),
    QN_F_STRING(tr_cfg, metrics_file, "metrics-file", NULL,
                "append the metrics lines (JSON, one write per line) here (default: stdout)",
                .metavar = "FILE"),
    QN_F_STRING(tr_cfg, ref_load, "ref-load", NULL, "reference model folder (for --use-kl-loss)",
                .metavar = "DIR"),
    QN_F_FLOAT(tr_cfg, rollout_temperature, "rollout-temperature", "1.0", 1e-6, 1e6,
               "logits are divided by this (the sampling temperature of the rollout)"),
    QN_F_INT(tr_cfg, threads, "threads", "0", 0, 4096, "CPU threads (0: OpenMP default)"),
    QN_F_STRING(tr_cfg, weight_listen, "weight-listen", "tcp://127.0.0.1:*",
                "where the trainer's weight server listens for chunk pulls", .metavar = "ENDPOINT"),
    QN_F_STRING(tr_cfg, weight_advertise, "weight-advertise", NULL,
                "the weight server's endpoint as engines should dial it (default: the bound one)",
                .metavar = "ENDPOINT"),
    QN_F_FLOAT(tr_cfg, update_weights_timeout, "update-weights-timeout", "600", 0.1, 1e6,
               "seconds to wait for the engines to apply the weights"),
    QN_F_FLOAT(tr_cfg, request_timeout_s, "request-timeout-s", "30", 0.05, 1e6,
               "resend a buffer request that got no answer for this long"),
    QN_F_STRING(tr_cfg, dump_batches, "dump-batches", NULL,
                "debug: write every rollout as DIR/rollout-R.jsonl in train-step's --batch format "
                "(rank 0)",
                .metavar = "DIR"),
    QN_TRAINER_FLAGS(tr_cfg, tr),
};
static const qn_flag_table k_tr_table = {
    .command = "train",
    .usage = "quench train --hf-checkpoint DIR --buffer ENDPOINT --save DIR --num-rollout N\n"
             "       [--router ENDPOINT] [--load DIR] [--save-interval N] [--metrics-file FILE]\n"
             "       [loss, packing and optimizer flags]",
    .summary =
        "The GRPO trainer rank: for every rollout fetches the batch from `quench buffer`,\n"
        "runs train-step's optimizer steps on it (the buffer's advantages), checkpoints,\n"
        "publishes the weights to the router as version rollout+1, and acknowledges the\n"
        "rollout. QN_WORLD_SIZE / QN_RANK / QN_REDIS_URL make data-parallel ranks.\n"
        "Resumes from --load (or --save's `latest`). Exit 0 once rollout N-1 is trained,\n"
        "published and acknowledged; 1 on failure or when stopped by a signal earlier.",
    .flags = k_tr_flags,
    .n_flags = QN_FLAGS_COUNT(k_tr_flags),
    .cfg_size = sizeof(tr_cfg)};

void qn_help_train(FILE *out) { qn_flags_print_help(&k_tr_table, out); }
const qn_flag_table *qn_flags_train(void) { return &k_tr_table; }

/* ---------------------------------------------------------------- buffer client */

typedef struct tr_client {
    void *sock;
    uint64_t rid;
    double timeout_s;
    char sender[64];
} tr_client;

/* Sends env and waits for its answer, resending every timeout_s (the buffer's
 * requests are idempotent); an answer to any attempt of this call counts.
 * QN_ERR_CLOSED when a signal stops the wait. */
static qn_status rpc(tr_client *c, const Quench__Envelope *env, const char *what,
                     Quench__Envelope **out) {
    *out = NULL;
    uint64_t first = c->rid + 1;
    for (;;) {
        uint64_t rid = ++c->rid;
        qn_status s = qn_zsend(c->sock, NULL, 0, env, rid, c->sender);
        if (s != QN_OK) QN_LOG_WARN("train: %s: send failed (%s); retrying", what, qn_last_error());
        double end = qn_now_s() + c->timeout_s;
        for (double now = qn_now_s(); now < end; now = qn_now_s()) {
            if (qn_stop_signal_seen())
                return qn_fail(QN_ERR_CLOSED, "%s: interrupted by a signal", what);
            int left = (int)((end - now) * 1000.0) + 1;
            qn_zmsg m = {0};
            s = qn_zrecv(c->sock, false, left < 200 ? left : 200, &m);
            if (s == QN_ERR_TIMEOUT) continue;
            if (s != QN_OK) {
                if (!qn_stop_signal_seen())
                    QN_LOG_WARN("train: %s: bad answer ignored: %s", what, qn_last_error());
                continue;
            }
            if (m.env->request_id >= first && m.env->request_id <= rid) {
                *out = m.env;
                m.env = NULL;
                return QN_OK;
            }
            qn_zmsg_clear(&m); /* an answer to an earlier call */
        }
        QN_LOG_INFO("train: %s: no answer from the buffer in %.1f s; sending again", what,
                    c->timeout_s);
    }
}

/* Appends share tb to b, validating what train-step's batch reader checks. */
static qn_status add_share(ts_batch *b, const Quench__TrainBatch *tb, int64_t vocab,
                           const qn_loss_cfg *lc) {
    if (tb->n_samples == 0) return QN_OK;
    ts_sample *nv = realloc(b->v, (size_t)(b->n + (int64_t)tb->n_samples) * sizeof *nv);
    if (!nv) return qn_fail(QN_ERR_NOMEM, "train: batch");
    b->v = nv;
    for (size_t i = 0; i < tb->n_samples; i++) {
        const Quench__TrainSample *x = tb->samples[i];
        ts_sample *q = &b->v[b->n];
        memset(q, 0, sizeof *q);
        int64_t len = (int64_t)x->n_tokens, k = (int64_t)x->response_start;
        const char *r = "TrainBatch";
        if (len < 2 || k < 1 || k > len - 1)
            return qn_fail(QN_ERR_FORMAT, "%s %" PRIu64 " share %u sample %zu: response_start %lld"
                           " outside [1, %lld]", r, tb->rollout_id, tb->rank, i, (long long)k,
                           (long long)(len - 1));
        if (x->n_rollout_logprobs && (int64_t)x->n_rollout_logprobs != len - k)
            return qn_fail(QN_ERR_FORMAT, "%s %" PRIu64 " sample %zu: %zu rollout_logprobs for %lld "
                           "response tokens", r, tb->rollout_id, i, x->n_rollout_logprobs,
                           (long long)(len - k));
        if (x->n_loss_mask && (int64_t)x->n_loss_mask != len - k)
            return qn_fail(QN_ERR_FORMAT, "%s %" PRIu64 " sample %zu: %zu loss_mask values for %lld "
                           "response tokens", r, tb->rollout_id, i, x->n_loss_mask,
                           (long long)(len - k));
        if (!x->n_rollout_logprobs && (lc->use_rollout_logprobs || lc->use_tis))
            return qn_fail(QN_ERR_FORMAT, "%s %" PRIu64 " sample %zu: no rollout_logprobs (needed "
                           "by %s)", r, tb->rollout_id, i,
                           lc->use_tis ? "--use-tis" : "--use-rollout-logprobs");
        if (!isfinite(x->reward) || !isfinite(x->advantage))
            return qn_fail(QN_ERR_FORMAT, "%s %" PRIu64 " sample %zu: reward or advantage is not "
                           "finite", r, tb->rollout_id, i);
        q->tokens = malloc((size_t)len * sizeof(int32_t));
        q->roll = x->n_rollout_logprobs ? malloc((size_t)(len - k) * sizeof(float)) : NULL;
        q->mask = x->n_loss_mask ? malloc((size_t)(len - k) * sizeof(float)) : NULL;
        b->n++; /* owned by b from here: ts_batch_free frees it */
        if (!q->tokens || (x->n_rollout_logprobs && !q->roll) || (x->n_loss_mask && !q->mask))
            return qn_fail(QN_ERR_NOMEM, "train: batch sample");
        for (int64_t t = 0; t < len; t++) {
            if (x->tokens[t] < 0 || x->tokens[t] >= vocab)
                return qn_fail(QN_ERR_RANGE, "%s %" PRIu64 " sample %zu: tokens[%lld] = %d is not "
                               "in [0, %lld) (the model's vocab_size)", r, tb->rollout_id, i,
                               (long long)t, x->tokens[t], (long long)vocab);
            q->tokens[t] = x->tokens[t];
        }
        for (int64_t t = 0; q->roll && t < len - k; t++) {
            if (!isfinite(x->rollout_logprobs[t]))
                return qn_fail(QN_ERR_FORMAT, "%s %" PRIu64 " sample %zu: rollout_logprobs[%lld] "
                               "is not finite", r, tb->rollout_id, i, (long long)t);
            q->roll[t] = x->rollout_logprobs[t];
        }
        for (int64_t t = 0; q->mask && t < len - k; t++) {
            if (x->loss_mask[t] > 1)
                return qn_fail(QN_ERR_FORMAT, "%s %" PRIu64 " sample %zu: loss_mask[%lld] is not "
                               "0 or 1", r, tb->rollout_id, i, (long long)t);
            q->mask[t] = (float)x->loss_mask[t];
        }
        q->len = len;
        q->k = k;
        q->group = (int64_t)x->group_id;
        q->reward = x->reward;
        q->advantage = x->advantage;
    }
    return QN_OK;
}

/* The whole rollout r: shares 0..W-1 in rank order. */
static qn_status fetch_rollout(tr_client *c, uint64_t r, uint32_t world, int64_t vocab,
                              const qn_loss_cfg *lc, ts_batch *b, uint64_t *data_cursor) {
    memset(b, 0, sizeof *b);
    b->have_adv = true;
    for (uint32_t j = 0; j < world; j++) {
        Quench__TrainBatchRequest q = QUENCH__TRAIN_BATCH_REQUEST__INIT;
        q.rollout_id = r;
        q.rank = j;
        q.world_size = world;
        Quench__Envelope env = qn_envelope_train_batch_request(&q);
        char what[96];
        snprintf(what, sizeof what, "rollout %" PRIu64 " share %u/%u", r, j, world);
        Quench__Envelope *e = NULL;
        QN_CHECK(rpc(c, &env, what, &e));
        qn_status s = QN_OK;
        if (e->body_case == QUENCH__ENVELOPE__BODY_ERROR)
            s = qn_fail(QN_ERR_INVALID, "%s: the buffer answered: %s", what, e->error->message);
        else if (e->body_case != QUENCH__ENVELOPE__BODY_TRAIN_BATCH ||
                 e->train_batch->rollout_id != r || e->train_batch->rank != j)
            s = qn_fail(QN_ERR_FORMAT, "%s: unexpected answer %s", what,
                        qn_envelope_body_name(e->body_case));
        else {
            s = add_share(b, e->train_batch, vocab, lc);
            *data_cursor = e->train_batch->data_cursor;
        }
        qn_envelope_free(e);
        QN_CHECK(s);
    }
    ts_batch_finish(b);
    if (b->n == 0) return qn_fail(QN_ERR_FORMAT, "rollout %" PRIu64 ": no samples", r);
    return QN_OK;
}

/* checkpointed: r's optimizer steps are in a checkpoint written for r (rank 0
 * writes it; every rank follows the same schedule and says the same), which
 * lets the buffer delete r and the rollouts before it. */
static qn_status ack_rollout(tr_client *c, uint64_t r, uint32_t rank, uint64_t ckpt_step,
                             bool checkpointed) {
    Quench__TrainBatchAck a = QUENCH__TRAIN_BATCH_ACK__INIT;
    a.rollout_id = r;
    a.rank = rank;
    a.checkpoint_step = ckpt_step;
    a.checkpointed = checkpointed;
    Quench__Envelope env = qn_envelope_train_batch_ack(&a);
    char what[64];
    snprintf(what, sizeof what, "ack of rollout %" PRIu64, r);
    Quench__Envelope *e = NULL;
    QN_CHECK(rpc(c, &env, what, &e));
    if (e->body_case == QUENCH__ENVELOPE__BODY_ERROR) /* e.g. a rollout deleted already */
        QN_LOG_WARN("train: %s: the buffer answered: %s", what, e->error->message);
    qn_envelope_free(e);
    return QN_OK;
}

/* train-step's --batch format, so that train-step can replay a rollout. */
static qn_status dump_batch(const char *dir, uint64_t r, const ts_batch *b) {
    char path[4200];
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return qn_fail(QN_ERR_IO, "%s: cannot create: %s", dir, strerror(errno));
    snprintf(path, sizeof path, "%s/rollout-%" PRIu64 ".jsonl", dir, r);
    FILE *f = fopen(path, "wb");
    if (!f) return qn_fail(QN_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    for (int64_t i = 0; i < b->n; i++) {
        const ts_sample *q = &b->v[i];
        fprintf(f, "{\"tokens\":[");
        for (int64_t t = 0; t < q->len; t++) fprintf(f, "%s%d", t ? "," : "", q->tokens[t]);
        fprintf(f, "],\"response_start\":%lld,\"group\":%lld,\"reward\":%.17g,\"advantage\":%.17g",
                (long long)q->k, (long long)q->group, q->reward, q->advantage);
        if (q->roll) {
            fprintf(f, ",\"rollout_logprobs\":[");
            for (int64_t t = 0; t < q->len - q->k; t++)
                fprintf(f, "%s%.9g", t ? "," : "", (double)q->roll[t]);
            fprintf(f, "]");
        }
        if (q->mask) {
            fprintf(f, ",\"loss_mask\":[");
            for (int64_t t = 0; t < q->len - q->k; t++)
                fprintf(f, "%s%d", t ? "," : "", (int)q->mask[t]);
            fprintf(f, "]");
        }
        fprintf(f, "}\n");
    }
    return fclose(f) == 0 ? QN_OK : qn_fail(QN_ERR_IO, "%s: write failed", path);
}

/* Publishes the model as `version` and waits for APPLIED. */
static qn_status publish(qn_weight_publisher *pub, const qn_model *m, uint64_t version,
                         double timeout_s, double *secs, bool refusal_ok) {
    qn_weight_update_report rep;
    memset(&rep, 0, sizeof rep);
    double t0 = qn_now_s();
    qn_status s = qn_weight_publisher_update(pub, m, version, (int)(timeout_s * 1000.0), &rep);
    *secs = qn_now_s() - t0;
    if (s == QN_ERR_INVALID && refusal_ok) {
        QN_LOG_WARN("train: the router refused version %" PRIu64 " (%s); it serves that version "
                    "or a newer one already", version, qn_last_error());
        return QN_OK;
    }
    QN_CHECK(s);
    if (!rep.ok)
        return qn_fail(QN_ERR_NET, "weight update: version %" PRIu64 ": %u engines failed: %s",
                       version, rep.n_failed, rep.error);
    QN_LOG_INFO("train: weights version %" PRIu64 " applied by %u engines in %.3f s", version,
                rep.n_engines, rep.applied_s);
    return QN_OK;
}

int qn_cmd_train(int argc, char **argv) {
    tr_cfg cfg;
    qn_flags_parsed p;
    if (qn_flags_parse(&k_tr_table, &cfg, argc, argv, &p) != QN_OK) {
        fprintf(stderr, "quench train: %s\n", qn_last_error());
        return QN_EXIT_USAGE;
    }
    int rc = QN_EXIT_FAILURE;
    ts_trainer *t = NULL;
    void *zctx = NULL;
    tr_client cl = {0};
    qn_weight_publisher *pub = NULL;
    int mfd = -1;
    ts_batch batch = {0};
    ts_opt_ctx oc = {0};
    if (p.print_config) {
        qn_flags_dump(&k_tr_table, &cfg, &p, stdout);
        rc = QN_EXIT_OK;
        goto done;
    }
    ts_args a = {.model = cfg.hf_checkpoint, .temperature = cfg.rollout_temperature,
                 .threads = cfg.threads};
    a.weight_listen = cfg.weight_listen;
    a.weight_advertise = cfg.weight_advertise;
    a.update_timeout_s = cfg.update_weights_timeout;
    qn_status s = ts_args_trainer_flags(&a, &oc, &cfg.tr, cfg.ref_load);
    if (s != QN_OK) {
        fprintf(stderr, "quench train: %s\n", qn_last_error());
        rc = QN_EXIT_USAGE;
        goto done;
    }

    /* resume: --load, or --save when it has `latest` (slime's behaviour) */
    const char *load = cfg.load;
    char latest[4200];
    snprintf(latest, sizeof latest, "%s/latest", cfg.save);
    if (!load && access(latest, F_OK) == 0) load = cfg.save;
    ts_ckpt ck;
    int64_t start = 0, skip = 0;
    uint64_t ckpt_step = 0;
    if (load) {
        s = ts_ckpt_resolve(load, &ck);
        if (s == QN_OK && (ck.batch_steps < 0 || ck.step < 0))
            s = qn_fail(QN_ERR_FORMAT, "%s/trainer_state.json: no \"batch_steps\" or \"step\"",
                        ck.dir);
        if (s != QN_OK) {
            fprintf(stderr, "quench train: --load: %s\n", qn_last_error());
            goto done;
        }
        a.model = ck.dir;
        oc.load = ck.dir;
        ckpt_step = (uint64_t)ck.step;
        if (ck.batch_step >= ck.batch_steps) {
            start = ck.rollout_id + 1;
        } else {
            start = ck.rollout_id;
            skip = ck.batch_step;
        }
        QN_LOG_INFO("train: resuming from %s (rollout %lld, batch step %lld of %lld): starting "
                    "at rollout %lld", ck.dir, (long long)ck.rollout_id, (long long)ck.batch_step,
                    (long long)ck.batch_steps, (long long)start);
    }

    qn_stop_signal_catch();

    if (cfg.metrics_file && qn_metrics_open_append(cfg.metrics_file, &mfd) != QN_OK) {
        fprintf(stderr, "quench train: %s\n", qn_last_error());
        goto done;
    }
    a.metrics_fd = mfd >= 0 ? mfd : STDOUT_FILENO;

    QN_CHECK_GOTO(ts_trainer_open(&a, &t), s, fail);
    QN_CHECK_GOTO(ts_trainer_join(t), s, fail);
    int rank = ts_trainer_rank(t), world = ts_trainer_world_size(t);
    zctx = zmq_ctx_new();
    if (!zctx) {
        s = qn_fail(QN_ERR_NET, "cannot create a ZeroMQ context");
        goto fail;
    }
    snprintf(cl.sender, sizeof cl.sender, "train:%d", rank);
    char ident[96];
    snprintf(ident, sizeof ident, "train-%d-%ld", rank, (long)getpid());
    cl.timeout_s = cfg.request_timeout_s;
    QN_CHECK_GOTO(qn_zsock_open(zctx, ZMQ_DEALER, cfg.buffer, false, ident, &cl.sock), s, fail);
    if (rank == 0 && cfg.router) {
        QN_CHECK_GOTO(qn_weight_publisher_start(zctx, cfg.router, cfg.weight_listen,
                                                cfg.weight_advertise, "trainer", &pub),
                      s, fail);
        if (load) { /* engines start from --hf-checkpoint: serve the resumed weights */
            double secs = 0;
            QN_CHECK_GOTO(publish(pub, ts_trainer_model(t), (uint64_t)start,
                                  cfg.update_weights_timeout, &secs, true), s, fail);
        }
    }
    if (load && ck.batch_step >= ck.batch_steps && ck.rollout_id >= 0) /* idempotent */
        QN_CHECK_GOTO(ack_rollout(&cl, (uint64_t)ck.rollout_id, (uint32_t)rank, ckpt_step, true),
                      s, fail);
    if (start >= cfg.num_rollout)
        QN_LOG_INFO("train: nothing to do: rollouts [0, %lld) are trained",
                    (long long)cfg.num_rollout);
    int64_t r = start;
    for (; r < cfg.num_rollout && !qn_stop_signal_seen(); r++) {
        double t0 = qn_now_s();
        uint64_t cursor = 0;
        QN_CHECK_GOTO(fetch_rollout(&cl, (uint64_t)r, (uint32_t)world, ts_trainer_vocab(t),
                                    &a.loss, &batch, &cursor), s, fail);
        double t1 = qn_now_s();
        if (cfg.dump_batches && rank == 0)
            QN_CHECK_GOTO(dump_batch(cfg.dump_batches, (uint64_t)r, &batch), s, fail);
        a.rollout_id = r;
        a.data_cursor = (int64_t)cursor;
        a.skip_steps = r == start ? skip : 0;
        a.load_ckpt = r == start && skip > 0 ? ck.dir : NULL;
        ts_result res = {0};
        QN_CHECK_GOTO(ts_trainer_train(t, &batch, &res), s, fail);
        bool due = (r + 1) % cfg.save_interval == 0 || r + 1 == cfg.num_rollout;
        if (due) {
            if (rank == 0) QN_CHECK_GOTO(ts_trainer_checkpoint(t, cfg.save, res.end,
                                                               res.last_step), s, fail);
            ckpt_step = (uint64_t)res.last_step;
        }
        double t2 = qn_now_s(), upd = 0;
        if (pub)
            QN_CHECK_GOTO(publish(pub, ts_trainer_model(t), (uint64_t)r + 1,
                                  cfg.update_weights_timeout, &upd, false), s, fail);
        QN_CHECK_GOTO(ack_rollout(&cl, (uint64_t)r, (uint32_t)rank, ckpt_step, due), s, fail);
        int64_t tokens = 0;
        for (int64_t i = 0; i < batch.n; i++) tokens += batch.v[i].len;
        double wait = t1 - t0, train = t2 - t1;
        if (rank == 0) {
            char line[512];
            int n = snprintf(line, sizeof line,
                             "{\"rollout_id\": %lld, \"perf/train_wait_time\": %s, "
                             "\"perf/train_time\": %s, \"perf/update_weights_time\": %s, "
                             "\"perf/step_time\": %s, \"perf/train_tokens_per_s\": %s}\n",
                             (long long)r, qn_metrics_num_fixed(wait, 6).s,
                             qn_metrics_num_fixed(train, 6).s, qn_metrics_num_fixed(upd, 6).s,
                             qn_metrics_num_fixed(wait + train + upd, 6).s,
                             qn_metrics_num_fixed(train > 0 ? (double)tokens / train : 0.0, 3).s);
            QN_CHECK_GOTO(qn_metrics_write_line(a.metrics_fd, line, (size_t)n), s, fail);
        }
        QN_LOG_INFO("train: rollout %lld of %lld: %lld samples, %lld tokens, %lld steps "
                    "(optimizer step %lld), wait %.2f s, train %.2f s, update %.2f s",
                    (long long)r, (long long)cfg.num_rollout, (long long)batch.n,
                    (long long)tokens, (long long)(res.end - a.skip_steps),
                    (long long)res.last_step, wait, train, upd);
        ts_batch_free(&batch);
    }
    if (r < cfg.num_rollout) {
        fprintf(stderr, "quench train: interrupted by a signal before rollout %lld\n",
                (long long)r);
        goto done;
    }
    rc = QN_EXIT_OK;
    goto done;
fail:
    if (s == QN_ERR_CLOSED && qn_stop_signal_seen())
        fprintf(stderr, "quench train: interrupted by a signal: %s\n", qn_last_error());
    else
        fprintf(stderr, "quench train: %s\n", qn_last_error());
    rc = QN_EXIT_FAILURE;
done:
    ts_batch_free(&batch);
    qn_weight_publisher_stop(pub);
    qn_zsock_close(cl.sock);
    if (zctx) zmq_ctx_term(zctx);
    ts_trainer_free(t);
    ts_opt_free(&oc);
    if (mfd >= 0) close(mfd);
    qn_flags_parsed_free(&p);
    qn_flags_free(&k_tr_table, &cfg);
    return rc;
}
