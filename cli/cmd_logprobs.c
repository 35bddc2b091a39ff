/* cmd_logprobs.c — `quench logprobs` and `quench grad`: per-token log-probs
 * and entropies of a checkpoint on JSONL sequences, and the gradient of
 * sum(dlogp*logp + dentropy*entropy) for every trainable parameter.
 *
 * Both pack the input sequences into micro-batches of --max-tokens tokens;
 * the results do not depend on the packing. Leaves out: tokenisation (the
 * input is token ids), loss functions (trainer/). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/commands.h"
#include "core/flags.h"
#include "core/model/model.h"
#include "core/model/seqs.h"

typedef struct lp_cfg {
    char *model, *input, *output;
    double temperature;
    int64_t max_tokens, threads;
} lp_cfg;

#define LP_COMMON_FLAGS                                                                         \
    QN_F_STRING(lp_cfg, model, "model", NULL, "model folder (config.json + safetensors)",       \
                .attrs = QN_FLAG_REQUIRED, .metavar = "DIR"),                                   \
    QN_F_STRING(lp_cfg, input, "input", NULL, "JSONL input, one sequence per line",            \
                .attrs = QN_FLAG_REQUIRED, .metavar = "IN.jsonl"),                              \
    QN_F_FLOAT(lp_cfg, temperature, "temperature", "1.0", 1e-6, 1e6,                           \
               "logits are divided by this before the softmax"),                               \
    QN_F_INT(lp_cfg, max_tokens, "max-tokens", "8192", 1, 1e9,                                  \
             "tokens per packed micro-batch (a longer sequence gets its own)"),                 \
    QN_F_INT(lp_cfg, threads, "threads", "0", 0, 4096, "CPU threads (0: OpenMP default)")

static const qn_flag k_lp_flags[] = {
    LP_COMMON_FLAGS,
    QN_F_STRING(lp_cfg, output, "output", NULL,
                "JSONL output: {\"logprobs\":[...],\"entropy\":[...]} per input line",
                .attrs = QN_FLAG_REQUIRED, .metavar = "OUT.jsonl"),
};
static const qn_flag_table k_lp_table = {
    .command = "logprobs",
    .usage = "quench logprobs --model DIR --input IN.jsonl --output OUT.jsonl [--temperature T]",
    .summary = "IN lines: {\"tokens\":[...],\"response_start\":k} (k >= 1). OUT has one line per\n"
               "input line, same order: {\"logprobs\":[...],\"entropy\":[...]} with\n"
               "log p(tokens[t] | tokens[<t]) and the entropy of that distribution (logits / T)\n"
               "for t = k .. len-1.",
    .flags = k_lp_flags,
    .n_flags = QN_FLAGS_COUNT(k_lp_flags),
    .cfg_size = sizeof(lp_cfg)};

static const qn_flag k_grad_flags[] = {
    LP_COMMON_FLAGS,
    QN_F_STRING(lp_cfg, output, "output", NULL, "fp32 safetensors of the gradients (HF names)",
                .attrs = QN_FLAG_REQUIRED, .metavar = "GRADS.safetensors"),
};
static const qn_flag_table k_grad_table = {
    .command = "grad",
    .usage = "quench grad --model DIR --input IN.jsonl --output GRADS.safetensors",
    .summary = "IN lines as for `quench logprobs` plus \"dlogp\":[...] and \"dentropy\":[...]\n"
               "(one value per response position). Writes the gradient of\n"
               "sum(dlogp*logp + dentropy*entropy) for every trainable parameter, fp32, under\n"
               "its HF name (e_score_correction_bias is not trained).",
    .flags = k_grad_flags,
    .n_flags = QN_FLAGS_COUNT(k_grad_flags),
    .cfg_size = sizeof(lp_cfg)};

void qn_help_logprobs(FILE *out) { qn_flags_print_help(&k_lp_table, out); }
void qn_help_grad(FILE *out) { qn_flags_print_help(&k_grad_table, out); }

static qn_status write_jsonl(const char *path, const qn_seqs *seqs, const float *lp,
                             const float *ent) {
    FILE *f = fopen(path, "wb");
    if (!f) return qn_fail(QN_ERR_IO, "%s: cannot create", path);
    int64_t o = 0;
    for (size_t i = 0; i < seqs->n; i++) {
        int64_t n = seqs->v[i].len - seqs->v[i].k;
        fputs("{\"logprobs\":[", f);
        for (int64_t j = 0; j < n; j++) fprintf(f, "%s%.9g", j ? "," : "", (double)lp[o + j]);
        fputs("],\"entropy\":[", f);
        for (int64_t j = 0; j < n; j++) fprintf(f, "%s%.9g", j ? "," : "", (double)ent[o + j]);
        fputs("]}\n", f);
        o += n;
    }
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) return qn_fail(QN_ERR_IO, "%s: write failed", path);
    return QN_OK;
}

static int run(const qn_flag_table *table, int grad, int argc, char **argv) {
    lp_cfg cfg;
    qn_flags_parsed p;
    if (qn_flags_parse(table, &cfg, argc, argv, &p) != QN_OK) {
        fprintf(stderr, "quench %s: %s\n", table->command, qn_last_error());
        return QN_EXIT_USAGE;
    }
    if (p.print_config) {
        qn_flags_dump(table, &cfg, &p, stdout);
        qn_flags_parsed_free(&p);
        qn_flags_free(table, &cfg);
        return QN_EXIT_OK;
    }
    if (cfg.threads > 0) {
        omp_set_num_threads((int)cfg.threads);
    }
    qn_model m = {0};
    qn_seqs seqs = {0};
    float *lp = NULL, *ent = NULL;
    qn_status s = qn_model_open(&m, cfg.model);
    if (s == QN_OK) s = qn_seqs_read_jsonl(cfg.input, grad, m.d.vocab, &seqs);
    if (s == QN_OK) {
        lp = malloc((size_t)(seqs.n_out + 1) * sizeof(float));
        ent = malloc((size_t)(seqs.n_out + 1) * sizeof(float));
        if (!lp || !ent) s = qn_fail(QN_ERR_NOMEM, "%s", cfg.input);
    }
    if (s == QN_OK && grad) {
        s = qn_model_alloc_grads(&m);
        if (s == QN_OK) qn_model_zero_grads(&m);
    }
    if (s == QN_OK && seqs.n > 0)
        s = qn_seqs_run(&m, &seqs, (float)cfg.temperature, cfg.max_tokens, grad, lp, ent);
    if (s == QN_OK)
        s = grad ? qn_model_save_grads(&m, cfg.output) : write_jsonl(cfg.output, &seqs, lp, ent);
    int rc = QN_EXIT_OK;
    if (s != QN_OK) {
        fprintf(stderr, "quench %s: %s\n", table->command, qn_last_error());
        rc = QN_EXIT_FAILURE;
    }
    free(lp);
    free(ent);
    qn_seqs_free(&seqs);
    qn_model_free(&m);
    qn_flags_parsed_free(&p);
    qn_flags_free(table, &cfg);
    return rc;
}

int qn_cmd_logprobs(int argc, char **argv) { return run(&k_lp_table, 0, argc, argv); }
int qn_cmd_grad(int argc, char **argv) { return run(&k_grad_table, 1, argc, argv); }
