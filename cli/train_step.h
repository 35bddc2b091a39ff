/* train_step.h — internal split of `quench train-step` into two translation
 * units: cli/cmd_train_step.c owns the flags, the optimizer and its state
 * files (trainer/options.h, trainer/optimizer.h), and cli/train_step_run.c
 * owns the model, the batch file, the loss and the data-parallel
 * reduction. This header is what they share. */
#ifndef QN_CLI_TRAIN_STEP_H
#define QN_CLI_TRAIN_STEP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quench/status.h"
#include "trainer/loss.h"
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

typedef struct ts_args {
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
} ts_args;

/* Reads and validates the batch; for each optimizer step of its plan (from
 * skip_steps, at most up to max_steps) computes the gradient (all-reduced
 * over the ranks of QN_WORLD_SIZE), saves it if asked, steps the optimizer,
 * prints the step's metrics line (rank 0) and writes a checkpoint when due;
 * at the end writes the model and optimizer state to out (rank 0) and, with a
 * router, publishes and announces the new weights (rank 0). Returns the exit
 * status (0 ok, 1 failure, message on stderr). */
int ts_run(const ts_args *a);

#endif
