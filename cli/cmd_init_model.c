/* cmd_init_model.c — `quench init-model`: a randomly initialised checkpoint
 * (HF safetensors + config.json) for a config.json.
 *
 * Matrices, biases and embeddings ~ normal(0, --init-std), norms = 1, the
 * MoE e_score_correction_bias ~ normal(0, --score-bias-std) (HF starts it at
 * zero; a non-zero one exercises the selection-only bias). Leaves out:
 * sharded output, FP8. */
#include <stdio.h>
#include <stdlib.h>

#include "cli/commands.h"
#include "core/flags.h"
#include "core/model/model.h"

typedef struct init_cfg {
    char *config, *out;
    int64_t seed;
    int dtype;
    double init_std, score_bias_std;
} init_cfg;

static const qn_flag k_init_flags[] = {
    QN_F_STRING(init_cfg, config, "config", NULL, "Hugging Face config.json of the model",
                .attrs = QN_FLAG_REQUIRED, .metavar = "CONFIG.json"),
    QN_F_STRING(init_cfg, out, "out", NULL, "output folder (created if missing)",
                .attrs = QN_FLAG_REQUIRED, .metavar = "DIR"),
    QN_F_INT(init_cfg, seed, "seed", "0", 0, 9.2e18, "random seed"),
    QN_F_CHOICE(init_cfg, dtype, "dtype", "fp32", "fp32|bf16", "dtype of the saved weights"),
    QN_F_FLOAT(init_cfg, init_std, "init-std", "0.02", 0, 10, "std of the normal init"),
    QN_F_FLOAT(init_cfg, score_bias_std, "score-bias-std", "0.02", 0, 10,
               "std of the random e_score_correction_bias (MoE sigmoid routers)"),
};
static const qn_flag_table k_init_table = {
    .command = "init-model",
    .usage = "quench init-model --config CONFIG.json --out DIR --seed N [--dtype fp32|bf16]",
    .summary = "Writes a randomly initialised model (model.safetensors + config.json).",
    .flags = k_init_flags,
    .n_flags = QN_FLAGS_COUNT(k_init_flags),
    .cfg_size = sizeof(init_cfg)};

void qn_help_init_model(FILE *out) { qn_flags_print_help(&k_init_table, out); }

int qn_cmd_init_model(int argc, char **argv) {
    init_cfg cfg;
    qn_flags_parsed p;
    if (qn_flags_parse(&k_init_table, &cfg, argc, argv, &p) != QN_OK) {
        fprintf(stderr, "quench init-model: %s\n", qn_last_error());
        return QN_EXIT_USAGE;
    }
    if (p.print_config) {
        qn_flags_dump(&k_init_table, &cfg, &p, stdout);
        qn_flags_parsed_free(&p);
        qn_flags_free(&k_init_table, &cfg);
        return QN_EXIT_OK;
    }
    int rc = QN_EXIT_FAILURE;
    qn_model m = {0};
    qn_model_desc d;
    qn_status s = qn_model_desc_load(cfg.config, &d);
    if (s == QN_OK) s = qn_model_init(&m, &d);
    if (s == QN_OK) s = qn_model_read_config_json(&m, cfg.config);
    if (s == QN_OK) s = qn_model_init_random(&m, (uint64_t)cfg.seed, (float)cfg.init_std,
                                             (float)cfg.score_bias_std);
    if (s == QN_OK) s = qn_model_save_dir(&m, cfg.out, cfg.dtype == 1 ? "bf16" : "fp32");
    if (s == QN_OK) {
        qn_param_count c;
        qn_model_count_params(&d, &c);
        printf("wrote %s: %zu tensors, %llu parameters\n", cfg.out, m.n_params,
               (unsigned long long)c.total);
        rc = QN_EXIT_OK;
    } else {
        fprintf(stderr, "quench init-model: %s\n", qn_last_error());
    }
    qn_model_free(&m);
    qn_flags_parsed_free(&p);
    qn_flags_free(&k_init_table, &cfg);
    return rc;
}
