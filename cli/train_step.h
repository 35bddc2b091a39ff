/* train_step.h — internal split of `quench train-step` into two translation
 * units: cli/cmd_train_step.c owns the flags, the optimizer and its state
 * files (trainer/options.h, trainer/optimizer.h), and cli/train_step_run.c
 * owns the model, the batch file, the loss and the data-parallel
 * reduction. This header is what they share, and what `quench train`
 * (cli/cmd_train.c) reuses: the trainer object (ts_trainer_*) keeps the
 * model, workspaces, optimizer and dist handle across batches, and a batch
 * can come from memory (ts_batch) instead of a file. */
#ifndef QN_CLI_TRAIN_STEP_H
#define QN_CLI_TRAIN_STEP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quench/status.h"
#include "trainer/loss.h"
#include "core/model/model.h"
#include "trainer/optimizer.h"
#include "trainer/options.h"
#include "trainer/packing.h"

/* One trainable tensor of the model, as the optimizer needs it. */
typedef struct ts_tensor {
    const char *name;
    int64_t offset, size;
    int32_t ndim;
    int64_t shape[2]; /* shape[0..ndim-1] */
} ts_tensor;

/* What the optimizer step reports back. */
typedef struct ts_opt_info {
    double grad_norm, clip_scale, lr;
    int64_t step; /* optimizer steps taken, this one included */
} ts_opt_info;

/* Runs one AdamW step (from the parsed flags held by ctx) on params/grad of n
 * floats described by tensors. The optimizer lives in ctx across calls: the
 * first call creates it (total_steps, the optimizer steps of this batch,
 * stands in for --lr-decay-iters when that is 0) and resumes its state from
 * --load when given. tensors must stay valid until the last call.
 * Implemented in cmd_train_step.c. */
typedef qn_status (*ts_opt_step_fn)(void *ctx, const ts_tensor *tensors, size_t n_tensors,
                                    int64_t n, int64_t total_steps, float *params, float *grad,
                                    ts_opt_info *info);
/* Writes the optimizer state to dir/optimizer.safetensors (dir exists). */
typedef qn_status (*ts_opt_save_fn)(void *ctx, const char *dir);

/* The AdamW bridge (cmd_train_step.c) behind ts_opt_step_fn / ts_opt_save_fn:
 * ctx is a ts_opt_ctx with tr set (and load: a folder whose
 * optimizer.safetensors the first step resumes); free with ts_opt_free. */
typedef struct ts_opt_ctx {
    const qn_trainer_opts *tr;
    const char *load;
    bool ready;
    qn_adamw opt;
    qn_opt_tensor *table;
    const ts_tensor *tensors;
    size_t n_tensors;
} ts_opt_ctx;
qn_status ts_opt_step(void *ctx, const ts_tensor *tensors, size_t n_tensors, int64_t n,
                      int64_t total_steps, float *params, float *grad, ts_opt_info *info);
qn_status ts_opt_save(void *ctx, const char *dir);
void ts_opt_free(ts_opt_ctx *oc);

typedef struct ts_args ts_args;
/* Fills what train-step and train take from the shared trainer flags
 * (trainer/options.h): a->ref_load, normalize_std, the loss and packing
 * configs, and the AdamW bridge (a->opt_* with *oc, reset to {.tr = tr};
 * oc->load may be set afterwards). The AdamW flags are checked with a
 * stand-in step count (a batch's real one is known later). A flag error is
 * returned naming the flag (a usage error for the caller). Implemented in
 * cmd_train_step.c. */
qn_status ts_args_trainer_flags(ts_args *a, ts_opt_ctx *oc, const qn_trainer_opts *tr,
                                const char *ref_load);

/* A checkpoint found by ts_ckpt_resolve: dir is the step folder (a save dir
 * with `latest` resolved), the rest is its trainer_state.json (batch_steps
 * and step are -1 when absent). */
typedef struct ts_ckpt {
    char dir[4096];
    int64_t rollout_id, batch_step, batch_steps, step, data_cursor;
} ts_ckpt;
/* Resolves load (a step dir, an OUT_DIR, or a save dir with `latest`),
 * checks that every checkpoint file is there and reads trainer_state.json. */
qn_status ts_ckpt_resolve(const char *load, ts_ckpt *out);

/* One sample of a batch. */
typedef struct ts_sample {
    int32_t *tokens; /* [len] */
    int64_t len, k;  /* response positions k..len-1 */
    int64_t group;
    double reward;
    double advantage; /* used when the batch has_adv */
    float *roll;      /* [len-k] rollout log-probs or NULL */
    float *mask;      /* [len-k] or NULL (all ones) */
} ts_sample;

typedef struct ts_batch {
    ts_sample *v;
    int64_t n;
    bool all_roll; /* every sample has rollout_logprobs (ts_batch_finish sets it) */
    bool have_adv; /* take the samples' advantages; otherwise GRPO from the rewards */
} ts_batch;

/* Reads and validates a JSONL batch file (format: train-step's --help). */
qn_status ts_batch_read(const char *path, int64_t vocab, const qn_loss_cfg *lc, ts_batch *out);
/* Sets all_roll after the samples were filled in by hand. */
void ts_batch_finish(ts_batch *b);
void ts_batch_free(ts_batch *b); /* frees the samples and v; zeroes *b */

struct ts_args {
    const char *model, *batch, *out, *ref_load, *save_grads;
    double temperature;
    int64_t threads; /* 0: OpenMP default */
    bool normalize_std; /* !--disable-grpo-std-normalization */
    qn_loss_cfg loss;
    qn_pack_cfg pack; /* dp_size is replaced by the world size */
    ts_opt_step_fn opt_step;
    ts_opt_save_fn opt_save;
    void *opt_ctx;
    /* checkpoints (layout in cmd_train_step.c's header comment) */
    const char *save;      /* --save DIR or NULL */
    int64_t save_interval; /* checkpoint after every N-th optimizer step (0: at the end only) */
    int64_t max_steps;     /* stop once this many steps of the batch are done (0: all) */
    int64_t skip_steps;    /* steps of this batch already done (resumed checkpoint) */
    const char *load_ckpt; /* the resumed step dir (for old_logprobs) or NULL */
    int64_t rollout_id, data_cursor; /* recorded in trainer_state.json */
    /* weight update after the batch (rank 0; net/weight_update.h), when router is set */
    const char *router, *weight_listen, *weight_advertise;
    int64_t weight_version;
    double update_timeout_s;
    /* step metrics: < 0 (train-step) printf to stdout; >= 0 (train) every line starts
     * with "rollout_id" and "step" and goes out with one write() to this fd */
    int metrics_fd;
};

/* The outcome of ts_trainer_train. */
typedef struct ts_result {
    int64_t n_steps;   /* optimizer steps in the batch's plan */
    int64_t end;       /* batch steps done when it returned */
    int64_t last_step; /* optimizer steps taken in total */
} ts_result;

typedef struct ts_trainer ts_trainer;

/* Opens the policy a->model (threads from a->threads). The trainer keeps a
 * (not a copy): the per-batch fields (rollout_id, data_cursor, skip_steps,
 * max_steps, load_ckpt, save, save_interval) may change between batches. */
qn_status ts_trainer_open(const ts_args *a, ts_trainer **out);
/* Joins the data-parallel group of QN_WORLD_SIZE (once; ts_trainer_train does
 * it on its first batch otherwise). */
qn_status ts_trainer_join(ts_trainer *t);
int ts_trainer_rank(const ts_trainer *t);       /* 0 before the join */
int ts_trainer_world_size(const ts_trainer *t); /* 1 before the join */
const qn_model *ts_trainer_model(const ts_trainer *t);
int64_t ts_trainer_vocab(const ts_trainer *t);
/* The optimizer steps of batch b (kept until the next call: checkpoints
 * refer to it): from a->skip_steps, at most up to a->max_steps; every rank
 * passes the whole batch. Rank 0 prints each step's metrics and writes
 * a->save checkpoints when due (a->save_interval in optimizer steps) and
 * after the last step. */
qn_status ts_trainer_train(ts_trainer *t, const ts_batch *b, ts_result *res);
/* Writes a checkpoint save/step-K (K = step) of the last batch trained, with
 * batch_step of its steps done (atomic; layout: cmd_train_step.c). */
qn_status ts_trainer_checkpoint(ts_trainer *t, const char *save, int64_t batch_step,
                                int64_t step);
/* Writes the checkpoint files into dir (created if missing, not atomic). */
qn_status ts_trainer_write_dir(ts_trainer *t, const char *dir, int64_t batch_step, int64_t step);
void ts_trainer_free(ts_trainer *t); /* NULL ok */

/* Reads and validates the batch; for each optimizer step of its plan (from
 * skip_steps, at most up to max_steps) computes the gradient (all-reduced
 * over the ranks of QN_WORLD_SIZE), saves it if asked, steps the optimizer,
 * prints the step's metrics line (rank 0) and writes a checkpoint when due;
 * at the end writes the model and optimizer state to out (rank 0) and, with a
 * router, publishes and announces the new weights (rank 0). Returns the exit
 * status (0 ok, 1 failure, message on stderr). */
int ts_run(const ts_args *a);

#endif
