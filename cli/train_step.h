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
} ts_opt_info;

/* Runs AdamW (from the parsed flags held by ctx) on params/grad of n floats
 * described by tensors, first resuming its state from --load when given;
 * with save_dir (an existing folder) writes the state after the step to
 * save_dir/optimizer.safetensors. Implemented in cmd_train_step.c. */
typedef qn_status (*ts_opt_step_fn)(void *ctx, const ts_tensor *tensors, size_t n_tensors,
                                    int64_t n, float *params, float *grad, const char *save_dir,
                                    ts_opt_info *info);

typedef struct ts_args {
    const char *model, *batch, *out, *ref_load, *save_grads;
    double temperature;
    int64_t threads; /* 0: OpenMP default */
    bool normalize_std; /* !--disable-grpo-std-normalization */
    qn_loss_cfg loss;
    qn_pack_cfg pack; /* dp_size is replaced by the world size */
    ts_opt_step_fn opt_step;
    void *opt_ctx;
} ts_args;

/* Reads and validates the batch, computes the step's gradient (all-reduced
 * over the ranks of QN_WORLD_SIZE), saves it if asked, steps the optimizer,
 * writes the model (rank 0) and prints the metrics line. Returns the exit
 * status (0 ok, 1 failure, message on stderr). */
int ts_run(const ts_args *a);

#endif
