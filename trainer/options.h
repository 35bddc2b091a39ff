/* options.h — the trainer's loss, packing and optimizer flags (slime's and
 * Megatron's names and defaults), as entries for a core/flags.h table.
 *
 * A command embeds a qn_trainer_opts member in its config struct and splices
 * QN_TRAINER_FLAGS(its_cfg_type, member) into its qn_flag array:
 *   typedef struct train_cfg { char *model; qn_trainer_opts tr; } train_cfg;
 *   static const qn_flag k_flags[] = { QN_F_STRING(train_cfg, model, ...),
 *                                      QN_TRAINER_FLAGS(train_cfg, tr) };
 * then turns the parsed values into module configs with qn_trainer_loss_cfg,
 * qn_trainer_adamw_cfg and qn_trainer_pack_cfg (cross-flag checks live there).
 *
 * Defaults, and where they come from:
 *   slime: --advantage-estimator grpo, --loss-type policy_loss, --eps-clip 0.2,
 *     --eps-clip-high unset (= --eps-clip; here -1), --eps-clip-c unset (here 0),
 *     --kl-loss-coef 0, --kl-loss-type k1, --entropy-coef 0, --tis-clip 2.0,
 *     --tis-clip-low 0, store_true flags off.
 *   Megatron: --lr-warmup-iters 0, --min-lr 0, --weight-decay 0.01,
 *     --adam-beta1 0.9, --adam-beta2 0.999, --adam-eps 1e-8, --clip-grad 1.0,
 *     --micro-batch-size 1 (Megatron has none; slime's scripts set it).
 *   Deviations: Megatron requires --lr (no default): here 1e-6, what slime's
 *     example scripts use. Megatron's --lr-decay-style default is linear over
 *     --train-iters; quench has no --train-iters, so the default is constant
 *     and a decaying style takes --lr-decay-iters (0: the caller's total step
 *     count, when it knows one). --loss-type also accepts "sft" as an alias of
 *     sft_loss (the spelling).
 *   --global-batch-size / --num-steps-per-rollout default 0 = derived from the
 *     other; neither: one optimizer step per rollout.
 *   --max-tokens-per-gpu 0 = unset; required with --use-dynamic-batch-size.
 */
#ifndef QN_TRAINER_OPTIONS_H
#define QN_TRAINER_OPTIONS_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/flags.h"
#include "trainer/loss.h"
#include "trainer/optimizer.h"
#include "trainer/packing.h"

typedef struct qn_trainer_opts {
    /* advantages and loss */
    int advantage_estimator; /* "grpo" */
    bool disable_grpo_std_normalization;
    int loss_type; /* "policy_loss|sft_loss|sft" */
    double eps_clip, eps_clip_high, eps_clip_c;
    bool use_kl_loss;
    double kl_loss_coef;
    int kl_loss_type; /* qn_kl_type */
    double entropy_coef;
    bool use_tis;
    double tis_clip, tis_clip_low;
    bool use_rollout_logprobs;
    bool calculate_per_token_loss;
    /* batching */
    bool use_dynamic_batch_size;
    int64_t max_tokens_per_gpu, micro_batch_size, global_batch_size, num_steps_per_rollout;
    /* optimizer */
    double lr, min_lr;
    int lr_decay_style; /* qn_lr_decay_style */
    int64_t lr_warmup_iters, lr_decay_iters;
    double weight_decay, adam_beta1, adam_beta2, adam_eps, clip_grad;
} qn_trainer_opts;

/* clang-format off */
#define QN_TRAINER_FLAGS(T, M)                                                                    \
    QN_F_CHOICE(T, M.advantage_estimator, "advantage-estimator", "grpo", "grpo",                  \
                "advantage estimator (group-normalised rewards)"),                                \
    QN_F_BOOL(T, M.disable_grpo_std_normalization, "disable-grpo-std-normalization", "false",     \
              "grpo advantages without dividing by the group std (dr. grpo)"),                    \
    QN_F_CHOICE(T, M.loss_type, "loss-type", "policy_loss", "policy_loss|sft_loss|sft",           \
                "policy gradient loss, or next-token likelihood on masked tokens (sft)"),         \
    QN_F_FLOAT(T, M.eps_clip, "eps-clip", "0.2", 0, 1, "ppo clip: ratio >= 1 - eps-clip"),        \
    QN_F_FLOAT(T, M.eps_clip_high, "eps-clip-high", "-1", -1, 100,                                \
               "ppo clip: ratio <= 1 + eps-clip-high (-1: same as --eps-clip)"),                  \
    QN_F_FLOAT(T, M.eps_clip_c, "eps-clip-c", "0", 0, 1e6,                                        \
               "dual-clip bound (> 1) for negative advantages; 0: off"),                          \
    QN_F_BOOL(T, M.use_kl_loss, "use-kl-loss", "false",                                           \
              "add a kl loss against the reference model (--ref-load)"),                          \
    QN_F_FLOAT(T, M.kl_loss_coef, "kl-loss-coef", "0", 0, 1e6, "weight of the kl loss"),          \
    QN_F_CHOICE(T, M.kl_loss_type, "kl-loss-type", "k1", "k1|k2|k3|low_var_kl",                   \
                "kl estimator over lr = logp - logp_ref"),                                        \
    QN_F_FLOAT(T, M.entropy_coef, "entropy-coef", "0", -1e6, 1e6,                                 \
               "entropy bonus: loss -= entropy-coef * entropy"),                                  \
    QN_F_BOOL(T, M.use_tis, "use-tis", "false",                                                   \
              "truncated importance sampling weight exp(old - rollout logp) on the pg term"),     \
    QN_F_FLOAT(T, M.tis_clip, "tis-clip", "2.0", 0, 1e6, "upper clamp of the tis weight"),        \
    QN_F_FLOAT(T, M.tis_clip_low, "tis-clip-low", "0", 0, 1e6, "lower clamp of the tis weight"),  \
    QN_F_BOOL(T, M.use_rollout_logprobs, "use-rollout-logprobs", "false",                         \
              "use the engines' log-probs as the old policy instead of recomputing them"),        \
    QN_F_BOOL(T, M.calculate_per_token_loss, "calculate-per-token-loss", "false",                 \
              "average over all tokens of the global batch instead of per-sample means"),         \
    QN_F_BOOL(T, M.use_dynamic_batch_size, "use-dynamic-batch-size", "false",                     \
              "pack whole samples into micro-batches of at most --max-tokens-per-gpu tokens"),    \
    QN_F_INT(T, M.max_tokens_per_gpu, "max-tokens-per-gpu", "0", 0, INFINITY,                     \
             "token budget of a micro-batch with --use-dynamic-batch-size (0: unset)"),           \
    QN_F_INT(T, M.micro_batch_size, "micro-batch-size", "1", 1, INFINITY,                         \
             "samples per micro-batch without --use-dynamic-batch-size"),                         \
    QN_F_INT(T, M.global_batch_size, "global-batch-size", "0", 0, INFINITY,                       \
             "samples per optimizer step over all data-parallel ranks (0: derived)"),             \
    QN_F_INT(T, M.num_steps_per_rollout, "num-steps-per-rollout", "0", 0, INFINITY,               \
             "optimizer steps per rollout (0: derived; neither set: 1)"),                         \
    QN_F_FLOAT(T, M.lr, "lr", "1e-6", 0, 10, "peak learning rate"),                               \
    QN_F_FLOAT(T, M.min_lr, "min-lr", "0", 0, 10, "learning rate at the end of the decay"),       \
    QN_F_CHOICE(T, M.lr_decay_style, "lr-decay-style", "constant", "constant|linear|cosine",      \
                "learning-rate decay after warmup"),                                              \
    QN_F_INT(T, M.lr_warmup_iters, "lr-warmup-iters", "0", 0, INFINITY,                           \
             "optimizer steps of linear warmup from 0"),                                          \
    QN_F_INT(T, M.lr_decay_iters, "lr-decay-iters", "0", 0, INFINITY,                             \
             "step at which the decay reaches --min-lr (0: the run's total steps)"),              \
    QN_F_FLOAT(T, M.weight_decay, "weight-decay", "0.01", 0, 100,                                 \
               "decoupled weight decay, not applied to 1-d parameters (norms, biases)"),          \
    QN_F_FLOAT(T, M.adam_beta1, "adam-beta1", "0.9", 0, 0.999999999, "adam first-moment decay"),  \
    QN_F_FLOAT(T, M.adam_beta2, "adam-beta2", "0.999", 0, 0.999999999,                            \
               "adam second-moment decay"),                                                       \
    QN_F_FLOAT(T, M.adam_eps, "adam-eps", "1e-8", 1e-30, 1, "adam denominator epsilon"),          \
    QN_F_FLOAT(T, M.clip_grad, "clip-grad", "1.0", 0, 1e9,                                        \
               "clip the global gradient norm to this (0: off)")
/* clang-format on */

/* A table holding only the trainer flags (config struct: qn_trainer_opts),
 * for tests and for code that builds an opts struct from text. */
extern const qn_flag_table qn_trainer_flag_table;

/* Resolves the loss configuration (eps-clip-high -1 -> eps-clip) and checks
 * it (qn_loss_cfg_check). */
qn_status qn_trainer_loss_cfg(const qn_trainer_opts *o, qn_loss_cfg *out);

/* Resolves the optimizer configuration; total_steps (0: unknown) stands in
 * for an unset --lr-decay-iters. */
qn_status qn_trainer_adamw_cfg(const qn_trainer_opts *o, int64_t total_steps, qn_adamw_cfg *out);

/* Resolves the packing configuration for dp_size ranks; checks that dynamic
 * mode has a --max-tokens-per-gpu. */
qn_status qn_trainer_pack_cfg(const qn_trainer_opts *o, int64_t dp_size, qn_pack_cfg *out);

#endif /* QN_TRAINER_OPTIONS_H */
