/* optimizer.h — AdamW with fp32 moment states over one flat fp32 parameter
 * buffer, global-norm gradient clipping, and Megatron's learning-rate
 * schedule (the one slime uses: OptimizerParamScheduler).
 *
 * The parameters are one float array; a table of tensors (name, offset, size,
 * ndim) says where each lies. Weight decay is applied to tensors with
 * ndim >= 2 only: 1-D tensors (norm weights, biases) are not decayed
 * (Megatron's default rule). Floats that no tensor covers are never updated
 * (but count in the gradient norm).
 *
 * One step with gradient g (already summed over data-parallel ranks):
 *   norm  = ||g||_2 over the whole buffer (double accumulation)
 *   if clip_grad > 0: c = clip_grad / (norm + 1e-6); if c < 1: g *= c
 *     (torch's clip_grad_norm_ and Megatron: scaling happens exactly when
 *     norm + 1e-6 > clip_grad)
 *   lr    = qn_lr_at(cfg, t) with t = number of steps taken before this one
 *   t += 1
 *   m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2
 *   p = p - lr*wd*p (ndim >= 2 only) - lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps)
 * which is torch.optim.AdamW. m and v are stored as float; the update is
 * computed in double per element.
 *
 * Learning rate at step t (Megatron OptimizerParamScheduler.get_lr with
 * init lr 0 and one scheduler increment per optimizer step):
 *   warmup > 0 and t <= warmup: lr * t / warmup  (so the first step has lr 0)
 *   constant: lr
 *   t > decay_iters: min_lr
 *   else r = (t - warmup)/(decay_iters - warmup),
 *        linear: min_lr + (lr - min_lr)(1 - r)
 *        cosine: min_lr + (lr - min_lr) * 0.5 (cos(pi r) + 1)
 *
 * Leaves out: distributed (sharded) optimizer states, loss scaling, bf16
 * master-weight handling (the caller keeps fp32 params), weight-decay
 * schedules, the WSD and inverse-square-root styles.
 */
#ifndef QN_TRAINER_OPTIMIZER_H
#define QN_TRAINER_OPTIMIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quench/status.h"

typedef enum qn_lr_decay_style { /* choice order "constant|linear|cosine" */
    QN_LR_CONSTANT = 0,
    QN_LR_LINEAR = 1,
    QN_LR_COSINE = 2,
} qn_lr_decay_style;

typedef struct qn_adamw_cfg {
    double lr, min_lr;
    qn_lr_decay_style decay_style;
    int64_t warmup_iters, decay_iters; /* decay_iters: resolved (> warmup unless constant) */
    double weight_decay, beta1, beta2, eps;
    double clip_grad; /* 0: no clipping */
} qn_adamw_cfg;

typedef struct qn_opt_tensor {
    const char *name; /* borrowed; the table must outlive the optimizer */
    int64_t offset, size;
    int32_t ndim;
} qn_opt_tensor;

typedef struct qn_adamw {
    qn_adamw_cfg cfg;
    const qn_opt_tensor *params;
    size_t n_params;
    int64_t n;      /* floats in the flat buffer */
    float *m, *v;   /* [n] first and second moments */
    int64_t step;   /* optimizer steps taken */
} qn_adamw;

/* What a step did, for metrics (train/grad_norm, train/lr). */
typedef struct qn_adamw_step_info {
    double grad_norm;  /* before clipping */
    double clip_scale; /* 1 when not clipped */
    double lr;
} qn_adamw_step_info;

/* Checks cfg (finite, lr >= min_lr >= 0, betas in [0,1), eps > 0, wd >= 0,
 * clip >= 0, warmup < decay_iters for non-constant styles); QN_ERR_RANGE
 * naming the flag otherwise. */
qn_status qn_adamw_cfg_check(const qn_adamw_cfg *cfg);

/* The lr used by the step that follows `step` completed steps. */
double qn_lr_at(const qn_adamw_cfg *cfg, int64_t step);

/* Prepares an optimizer for a buffer of n floats described by params
 * (tensors must lie inside [0, n) without overlapping; ndim >= 1). States
 * start at zero. QN_ERR_INVALID for a bad table, naming the tensor. */
qn_status qn_adamw_init(qn_adamw *opt, const qn_adamw_cfg *cfg, const qn_opt_tensor *params,
                        size_t n_params, int64_t n);
void qn_adamw_free(qn_adamw *opt);

/* The L2 norm of g[0..n), accumulated in double. */
double qn_grad_norm(const float *g, int64_t n);

/* One AdamW step: clips grad in place (so it ends as the applied gradient),
 * updates m, v and params. QN_ERR_RANGE when the gradient norm is not finite
 * (nothing is changed then: the step is skipped, like Megatron's). info may
 * be NULL. */
qn_status qn_adamw_step(qn_adamw *opt, float *params, float *grad, qn_adamw_step_info *info);

/* Checkpoint hooks: the state is step plus the m and v arrays of n floats
 * each. set copies from the given arrays (n must match). */
qn_status qn_adamw_set_state(qn_adamw *opt, int64_t step, const float *m, const float *v,
                             int64_t n);

#endif /* QN_TRAINER_OPTIMIZER_H */
