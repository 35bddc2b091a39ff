/* options.c — the trainer flag table and the conversion of parsed flags into
 * loss, optimizer and packing configurations (see options.h). */
#include "trainer/options.h"

#include <stddef.h>

typedef struct trainer_only_cfg {
    qn_trainer_opts tr;
} trainer_only_cfg;

static const qn_flag k_trainer_flags[] = {QN_TRAINER_FLAGS(trainer_only_cfg, tr)};

const qn_flag_table qn_trainer_flag_table = {
    .command = "trainer",
    .usage = "quench train [trainer flags]",
    .summary = "Loss, batching and optimizer flags shared by the training commands.",
    .flags = k_trainer_flags,
    .n_flags = QN_FLAGS_COUNT(k_trainer_flags),
    .cfg_size = sizeof(trainer_only_cfg),
};

qn_status qn_trainer_loss_cfg(const qn_trainer_opts *o, qn_loss_cfg *out) {
    *out = (qn_loss_cfg){
        .type = o->loss_type == 0 ? QN_LOSS_POLICY : QN_LOSS_SFT,
        .eps_clip = o->eps_clip,
        .eps_clip_high = o->eps_clip_high < 0 ? o->eps_clip : o->eps_clip_high,
        .eps_clip_c = o->eps_clip_c,
        .use_kl_loss = o->use_kl_loss,
        .kl_loss_coef = o->kl_loss_coef,
        .kl_type = (qn_kl_type)o->kl_loss_type,
        .entropy_coef = o->entropy_coef,
        .use_tis = o->use_tis,
        .tis_clip = o->tis_clip,
        .tis_clip_low = o->tis_clip_low,
        .use_rollout_logprobs = o->use_rollout_logprobs,
        .per_token_loss = o->calculate_per_token_loss,
    };
    if (o->eps_clip_high < 0 && o->eps_clip_high != -1)
        return qn_fail(QN_ERR_RANGE, "--eps-clip-high must be >= 0 (or -1: same as --eps-clip), "
                                     "got %g", o->eps_clip_high);
    return qn_loss_cfg_check(out);
}

qn_status qn_trainer_adamw_cfg(const qn_trainer_opts *o, int64_t total_steps, qn_adamw_cfg *out) {
    *out = (qn_adamw_cfg){
        .lr = o->lr,
        .min_lr = o->min_lr,
        .decay_style = (qn_lr_decay_style)o->lr_decay_style,
        .warmup_iters = o->lr_warmup_iters,
        .decay_iters = o->lr_decay_iters > 0 ? o->lr_decay_iters : total_steps,
        .weight_decay = o->weight_decay,
        .beta1 = o->adam_beta1,
        .beta2 = o->adam_beta2,
        .eps = o->adam_eps,
        .clip_grad = o->clip_grad,
    };
    if (out->decay_style != QN_LR_CONSTANT && out->decay_iters <= 0)
        return qn_fail(QN_ERR_INVALID, "--lr-decay-style %s needs --lr-decay-iters",
                       out->decay_style == QN_LR_LINEAR ? "linear" : "cosine");
    return qn_adamw_cfg_check(out);
}

qn_status qn_trainer_pack_cfg(const qn_trainer_opts *o, int64_t dp_size, qn_pack_cfg *out) {
    *out = (qn_pack_cfg){
        .global_batch_size = o->global_batch_size,
        .num_steps_per_rollout = o->num_steps_per_rollout,
        .dp_size = dp_size,
        .dynamic = o->use_dynamic_batch_size,
        .max_tokens_per_gpu = o->max_tokens_per_gpu,
        .micro_batch_size = o->micro_batch_size,
    };
    if (o->use_dynamic_batch_size && o->max_tokens_per_gpu < 1)
        return qn_fail(QN_ERR_INVALID, "--use-dynamic-batch-size needs --max-tokens-per-gpu N");
    if (dp_size < 1) return qn_fail(QN_ERR_RANGE, "data-parallel size %lld", (long long)dp_size);
    return QN_OK;
}
