/* cmd_model_info.c — `quench model-info --config CONFIG.json`: parses a
 * Hugging Face config.json the way every quench process does
 * (core/io/hf_config.h) and prints the result as JSON: the fields with
 * defaults applied, plus derived ones (rotary_dim, scoring_func,
 * dense_layers, ...). A config quench cannot run is an error naming the
 * field. Leaves out parameter counts and memory estimates: further sections
 * are added to the object in add_sections() below. */
#include <stdio.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "cli/commands.h"
#include "core/flags.h"
#include "core/io/hf_config.h"
#include "core/model/model.h"

typedef struct model_info_cfg {
    char *config;
    bool compact;
} model_info_cfg;

static const qn_flag k_model_info_flags[] = {
    QN_F_STRING(model_info_cfg, config, "config", NULL, "Hugging Face config.json of the model",
                .attrs = QN_FLAG_REQUIRED, .metavar = "CONFIG.json"),
    QN_F_BOOL(model_info_cfg, compact, "compact", "false", "print the JSON on one line"),
};
static const qn_flag_table k_model_info_table = {
    .command = "model-info",
    .usage = "quench model-info --config CONFIG.json [--compact]",
    .summary = "Parses a Hugging Face config.json (glm4_moe, qwen3, qwen3_moe, llama) and prints\n"
               "what quench reads from it as JSON, defaults applied.",
    .flags = k_model_info_flags,
    .n_flags = QN_FLAGS_COUNT(k_model_info_flags),
    .cfg_size = sizeof(model_info_cfg)};

void qn_help_model_info(FILE *out) {
    qn_flags_print_help(&k_model_info_table, out);
}

/* Sections beyond the parsed config go here, each as one member of `o`
 * (e.g. "parameters": {...} from the model core). Returns 0 when out of
 * memory. */
static int add_sections(cJSON *o, const qn_model_config *c) {
    /* parameter counts from the model core (core/model/model.h) */
    qn_model_desc d;
    if (qn_model_desc_from_config(c, "config", &d) != QN_OK) return 1; /* e.g. rope scaling */
    qn_param_count n;
    qn_model_count_params(&d, &n);
    cJSON *p = cJSON_AddObjectToObject(o, "parameters");
    if (!p) return 0;
    char line[256];
    /* billions for real models, millions for the tiny ones of tests */
    double u = n.total >= 1000000000u ? 1e9 : 1e6;
    const char *un = u == 1e9 ? "B" : "M";
    snprintf(line, sizeof line,
             "params total %.1f %s (%.1f %s with %lld MTP layer(s)), active %.1f %s "
             "(%.1f %s without embedding and LM head)",
             (double)n.total / u, un, (double)(n.total + n.mtp_total) / u, un, (long long)d.n_mtp,
             (double)n.active / u, un, (double)n.active_core / u, un);
    cJSON_AddNumberToObject(p, "total", (double)n.total);
    cJSON_AddNumberToObject(p, "active", (double)n.active);
    cJSON_AddNumberToObject(p, "active_without_embeddings", (double)n.active_core);
    cJSON_AddNumberToObject(p, "mtp_total", (double)n.mtp_total);
    cJSON_AddNumberToObject(p, "tensors", (double)n.n_tensors);
    return cJSON_AddStringToObject(p, "summary", line) != NULL;
}

int qn_cmd_model_info(int argc, char **argv) {
    model_info_cfg cfg;
    qn_flags_parsed p;
    if (qn_flags_parse(&k_model_info_table, &cfg, argc, argv, &p) != QN_OK) {
        fprintf(stderr, "quench model-info: %s\n", qn_last_error());
        return QN_EXIT_USAGE;
    }
    int rc = QN_EXIT_FAILURE;
    if (p.print_config) {
        qn_flags_dump(&k_model_info_table, &cfg, &p, stdout);
        rc = QN_EXIT_OK;
        goto done;
    }
    qn_model_config mc;
    if (qn_hf_config_load(cfg.config, &mc) != QN_OK) {
        fprintf(stderr, "quench model-info: %s\n", qn_last_error());
        goto done;
    }
    cJSON *o = qn_model_config_to_cjson(&mc);
    char *text = NULL;
    if (o && add_sections(o, &mc)) text = cfg.compact ? cJSON_PrintUnformatted(o) : cJSON_Print(o);
    if (text) {
        printf("%s\n", text);
        rc = QN_EXIT_OK;
    } else {
        fprintf(stderr, "quench model-info: out of memory\n");
    }
    free(text);
    cJSON_Delete(o);
done:
    qn_flags_parsed_free(&p);
    qn_flags_free(&k_model_info_table, &cfg);
    return rc;
}
