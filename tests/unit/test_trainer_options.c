/* test_trainer_options.c — trainer/options.c: the trainer flag table is valid
 * and embeddable, defaults are slime's/Megatron's as documented in
 * options.h, a slime-style command line resolves into loss, optimizer and
 * packing configurations, and cross-flag errors name the flag. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/options.h"

typedef struct embed_cfg { /* how a command embeds the trainer flags */
    char *model;
    qn_trainer_opts tr;
} embed_cfg;

static const qn_flag k_embed_flags[] = {
    QN_F_STRING(embed_cfg, model, "model", NULL, "model folder"),
    QN_TRAINER_FLAGS(embed_cfg, tr),
};
static const qn_flag_table k_embed = {.command = "train-step", .usage = "quench train-step",
                                      .flags = k_embed_flags,
                                      .n_flags = QN_FLAGS_COUNT(k_embed_flags),
                                      .cfg_size = sizeof(embed_cfg)};

static void test_tables_valid(void **state) {
    assert_int_equal(qn_flags_validate_table(&qn_trainer_flag_table), QN_OK);
    assert_int_equal(qn_flags_validate_table(&k_embed), QN_OK);
}

static void test_defaults(void **state) {
    qn_trainer_opts o;
    assert_int_equal(qn_flags_defaults(&qn_trainer_flag_table, &o), QN_OK);
    qn_loss_cfg lc;
    assert_int_equal(qn_trainer_loss_cfg(&o, &lc), QN_OK);
    assert_int_equal(lc.type, QN_LOSS_POLICY);
    assert_true(lc.eps_clip == 0.2 && lc.eps_clip_high == 0.2 && lc.eps_clip_c == 0);
    assert_true(!lc.use_kl_loss && lc.kl_loss_coef == 0 && lc.kl_type == QN_KL_K1);
    assert_true(lc.entropy_coef == 0 && !lc.use_tis && lc.tis_clip == 2.0 &&
                lc.tis_clip_low == 0);
    assert_true(!lc.per_token_loss && !lc.use_rollout_logprobs);
    qn_adamw_cfg ac;
    assert_int_equal(qn_trainer_adamw_cfg(&o, 0, &ac), QN_OK);
    assert_true(ac.lr == 1e-6 && ac.min_lr == 0 && ac.decay_style == QN_LR_CONSTANT);
    assert_true(ac.weight_decay == 0.01 && ac.beta1 == 0.9 && ac.beta2 == 0.999 &&
                ac.eps == 1e-8 && ac.clip_grad == 1.0 && ac.warmup_iters == 0);
    qn_pack_cfg pc;
    assert_int_equal(qn_trainer_pack_cfg(&o, 2, &pc), QN_OK);
    assert_true(!pc.dynamic && pc.micro_batch_size == 1 && pc.dp_size == 2);
    qn_flags_free(&qn_trainer_flag_table, &o);
}

static void test_slime_command_line(void **state) {
    char *argv[] = {"train-step", "--model", "m", "--advantage-estimator", "grpo",
                    "--use-kl-loss", "--kl-loss-coef", "0.01", "--kl-loss-type", "low_var_kl",
                    "--entropy-coef", "0.001", "--eps-clip", "0.2", "--eps-clip-high", "0.28",
                    "--eps-clip-c", "3", "--use-tis", "--tis-clip-low", "0.1",
                    "--calculate-per-token-loss", "--use-dynamic-batch-size",
                    "--max-tokens-per-gpu", "9216", "--global-batch-size", "256",
                    "--lr", "1e-6", "--lr-decay-style", "cosine", "--lr-warmup-iters", "3",
                    "--lr-decay-iters", "100", "--min-lr", "1e-7", "--weight-decay", "0.1",
                    "--adam-beta1", "0.9", "--adam-beta2", "0.98", "--loss-type", "sft"};
    embed_cfg c;
    qn_status st = qn_flags_parse(&k_embed, &c, (int)(sizeof argv / sizeof *argv), argv, NULL);
    if (st != QN_OK) fail_msg("%s", qn_last_error());
    qn_loss_cfg lc;
    assert_int_equal(qn_trainer_loss_cfg(&c.tr, &lc), QN_OK);
    assert_int_equal(lc.type, QN_LOSS_SFT); /* "sft" alias */
    assert_true(lc.eps_clip_high == 0.28 && lc.eps_clip_c == 3 && lc.kl_type == QN_KL_LOW_VAR);
    assert_true(lc.use_kl_loss && lc.kl_loss_coef == 0.01 && lc.entropy_coef == 0.001);
    assert_true(lc.use_tis && lc.tis_clip_low == 0.1 && lc.per_token_loss);
    qn_adamw_cfg ac;
    assert_int_equal(qn_trainer_adamw_cfg(&c.tr, 0, &ac), QN_OK);
    assert_true(ac.decay_style == QN_LR_COSINE && ac.decay_iters == 100 && ac.beta2 == 0.98);
    assert_true(fabs(qn_lr_at(&ac, 100) - 1e-7) < 1e-20 && qn_lr_at(&ac, 0) == 0);
    qn_pack_cfg pc;
    assert_int_equal(qn_trainer_pack_cfg(&c.tr, 4, &pc), QN_OK);
    assert_true(pc.dynamic && pc.max_tokens_per_gpu == 9216 && pc.global_batch_size == 256);
    qn_flags_free(&k_embed, &c);
}

static void test_cross_flag_errors(void **state) {
    qn_trainer_opts o;
    assert_int_equal(qn_flags_defaults(&qn_trainer_flag_table, &o), QN_OK);
    qn_pack_cfg pc;
    assert_int_equal(qn_flags_set(&qn_trainer_flag_table, &o, "use-dynamic-batch-size", "true"),
                     QN_OK);
    assert_int_equal(qn_trainer_pack_cfg(&o, 1, &pc), QN_ERR_INVALID);
    assert_non_null(strstr(qn_last_error(), "--max-tokens-per-gpu"));
    qn_adamw_cfg ac;
    assert_int_equal(qn_flags_set(&qn_trainer_flag_table, &o, "lr-decay-style", "linear"), QN_OK);
    assert_int_equal(qn_trainer_adamw_cfg(&o, 0, &ac), QN_ERR_INVALID);
    assert_non_null(strstr(qn_last_error(), "--lr-decay-iters"));
    assert_int_equal(qn_trainer_adamw_cfg(&o, 50, &ac), QN_OK); /* the run's total steps */
    assert_int_equal(ac.decay_iters, 50);
    qn_loss_cfg lc;
    assert_int_equal(qn_flags_set(&qn_trainer_flag_table, &o, "eps-clip-c", "0.5"), QN_OK);
    assert_int_equal(qn_trainer_loss_cfg(&o, &lc), QN_ERR_RANGE);
    assert_non_null(strstr(qn_last_error(), "--eps-clip-c"));
    assert_int_not_equal(qn_flags_set(&qn_trainer_flag_table, &o, "kl-loss-type", "k4"), QN_OK);
    qn_flags_free(&qn_trainer_flag_table, &o);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tables_valid),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_slime_command_line),
        cmocka_unit_test(test_cross_flag_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
