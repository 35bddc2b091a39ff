/* cmd_eval.c — `quench eval`: the flag table (slime's names where slime has
 * the flag: --eval-prompt-data, --eval-interval, --n-samples-per-eval-prompt,
 * --eval-max-response-len, --eval-temperature, --eval-top-p); the service is
 * cli/eval.c, its rules docs/services.md ("Evaluation"). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/buffer_data.h"
#include "cli/commands.h"
#include "cli/eval.h"
#include "core/flags.h"
#include "core/log.h"
#include "rewards/rewards.h"

typedef struct eval_cfg {
    char *eval_prompt_data, *eval_reward, *router, *redis, *job, *metrics_file;
    qn_bd_flags data;
    int64_t eval_interval, num_rollout, eval_max_response_len, n_samples_per_eval_prompt, eval_seed;
    double eval_temperature, eval_top_p, request_timeout_s, poll_interval_s;
} eval_cfg;

static const qn_flag k_eval_flags[] = {
    QN_F_STRING(eval_cfg, eval_prompt_data, "eval-prompt-data", NULL,
                "JSONL held-out prompts, one per line (read like the buffer's --prompt-data)",
                .attrs = QN_FLAG_REQUIRED, .metavar = "FILE"),
    QN_BD_FLAGS(eval_cfg, data),
    QN_F_STRING(eval_cfg, eval_reward, "eval-reward", "math",
                "built-in reward: math, deepscaler, dapo, exact, f1 (docs/rewards.md); a sample "
                "with reward >= 1 is correct",
                .metavar = "NAME"),
    QN_F_INT(eval_cfg, eval_interval, "eval-interval", "0", 0, INFINITY,
             "evaluate version v when floor(v/K) > floor(last evaluated/K) (0: only the first "
             "and the final version)",
             .metavar = "K"),
    QN_F_INT(eval_cfg, num_rollout, "num-rollout", "-1", -1, INFINITY,
             "the final version (the trainer publishes r+1 after rollout r): evaluated, then "
             "exit 0 (-1: none, run until a signal)",
             .metavar = "N"),
    QN_F_INT(eval_cfg, n_samples_per_eval_prompt, "n-samples-per-eval-prompt", "1", 1, 4096,
             "samples per held-out prompt"),
    QN_F_INT(eval_cfg, eval_max_response_len, "eval-max-response-len", "1024", 1, 1048576,
             "max_new_tokens of each sample"),
    QN_F_FLOAT(eval_cfg, eval_temperature, "eval-temperature", "0", 0, 1e6,
               "sampling temperature (0: greedy)"),
    QN_F_FLOAT(eval_cfg, eval_top_p, "eval-top-p", "1.0", 1e-9, 1, "nucleus sampling"),
    QN_F_INT(eval_cfg, eval_seed, "eval-seed", "1234", 0, INFINITY,
             "seed of the sampling seeds (the same draws at every version)"),
    QN_F_STRING(eval_cfg, router, "router", "tcp://127.0.0.1:5600",
                "router endpoint (its --listen)", .metavar = "ENDPOINT"),
    QN_F_FLOAT(eval_cfg, request_timeout_s, "request-timeout-s", "3600", 1, 604800,
               "a sample not answered within this is sent again"),
    QN_F_STRING(eval_cfg, redis, "redis", NULL, "Redis of the job (weight_version is read from it)",
                .attrs = QN_FLAG_REQUIRED | QN_FLAG_SECRET, .metavar = "URL"),
    QN_F_STRING(eval_cfg, job, "job", "default", "job name: Redis keys are quench:<job>:*",
                .metavar = "NAME"),
    QN_F_FLOAT(eval_cfg, poll_interval_s, "poll-interval-s", "1", 0.01, 3600,
               "between evaluations, read the job's weight version this often"),
    QN_F_STRING(eval_cfg, metrics_file, "metrics-file", NULL,
                "append one JSON line of metrics per evaluation here, in one write (default: "
                "stdout)",
                .metavar = "FILE"),
};
static const qn_flag_table k_eval_table = {
    .command = "eval",
    .usage = "quench eval --eval-prompt-data FILE.jsonl --redis URL [--router ENDPOINT] [flags]",
    .summary =
        "The evaluation process of a job: reads the job's weight version from Redis and, at the\n"
        "first version it sees, every --eval-interval versions and at the final one\n"
        "(--num-rollout), sends every held-out prompt x --n-samples-per-eval-prompt through the\n"
        "router, scores the answers with a built-in reward and appends one JSON metrics line\n"
        "(eval/accuracy, eval/reward, ...). Exits 0 after the final version, or at\n"
        "SIGTERM/SIGINT. Rules: docs/services.md (\"Evaluation\").",
    .flags = k_eval_flags,
    .n_flags = QN_FLAGS_COUNT(k_eval_flags),
    .cfg_size = sizeof(eval_cfg)};

const qn_flag_table *qn_flags_eval(void) {
    return &k_eval_table;
}

void qn_help_eval(FILE *out) {
    qn_flags_print_help(&k_eval_table, out);
}

int qn_cmd_eval(int argc, char **argv) {
    eval_cfg cfg;
    qn_flags_parsed p;
    if (qn_flags_parse(&k_eval_table, &cfg, argc, argv, &p) != QN_OK) {
        fprintf(stderr, "quench eval: %s\n", qn_last_error());
        return QN_EXIT_USAGE;
    }
    if (p.print_config) {
        qn_flags_dump(&k_eval_table, &cfg, &p, stdout);
        qn_flags_parsed_free(&p);
        qn_flags_free(&k_eval_table, &cfg);
        return QN_EXIT_OK;
    }
    qn_flags_log(&k_eval_table, &cfg, &p);
    qn_eval_opts o = {
        .data = qn_bd_flags_opts(&cfg.data, cfg.eval_prompt_data, "eval"),
        .tokenizer_dir = cfg.data.tokenizer,
        .reward = cfg.eval_reward,
        .eval_interval = (uint64_t)cfg.eval_interval,
        .num_rollout = cfg.num_rollout,
        .n_samples = (uint32_t)cfg.n_samples_per_eval_prompt,
        .max_response_len = (uint32_t)cfg.eval_max_response_len,
        .temperature = cfg.eval_temperature,
        .top_p = cfg.eval_top_p,
        .seed = (uint64_t)cfg.eval_seed,
        .router = cfg.router,
        .redis_url = cfg.redis,
        .job = cfg.job,
        .metrics_file = cfg.metrics_file,
        .request_timeout_s = cfg.request_timeout_s,
        .poll_interval_s = cfg.poll_interval_s,
    };
    int rc = QN_EXIT_OK;
    if (!qn_reward_builtin(cfg.eval_reward)) {
        fprintf(stderr,
                "quench eval: --eval-reward '%s' is not a built-in reward (math, deepscaler, "
                "dapo, exact, f1)\n",
                cfg.eval_reward);
        rc = QN_EXIT_USAGE;
    }
    if (rc == QN_EXIT_OK) {
        qn_status st = qn_eval_run(&o);
        if (st != QN_OK) {
            fprintf(stderr, "quench eval: %s\n", qn_last_error());
            rc = QN_EXIT_FAILURE;
        }
    }
    qn_flags_parsed_free(&p);
    qn_flags_free(&k_eval_table, &cfg);
    return rc;
}
