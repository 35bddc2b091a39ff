/* cmd_buffer.c — `quench buffer`: the flag table (slime's names where slime
 * has the flag); the service is cli/buffer.c, the data cli/buffer_data.c,
 * the protocol and Redis keys docs/services.md ("Buffer"). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/buffer.h"
#include "cli/buffer_data.h"
#include "cli/commands.h"
#include "core/flags.h"
#include "core/log.h"
#include "rewards/rewards.h"

typedef struct buffer_cfg {
    char *prompt_data, *metadata_key, *reward, *router, *redis, *job, *listen, *port_file,
        *metrics_file;
    qn_bd_flags data;
    bool rollout_shuffle, disable_grpo_std_normalization, partial_rollout;
    int dynamic_sampling_filter, reward_isolation;
    int64_t rollout_seed, n_samples_per_prompt, rollout_batch_size, over_sampling_batch_size,
        rollout_max_response_len, num_rollout, max_rollouts_ahead, reward_workers, max_staleness;
    double rollout_temperature, rollout_top_p, reward_timeout_s, request_timeout_s;
} buffer_cfg;

static const qn_flag k_buffer_flags[] = {
    QN_F_STRING(buffer_cfg, prompt_data, "prompt-data", NULL, "JSONL prompts, one per line",
                .attrs = QN_FLAG_REQUIRED, .metavar = "FILE"),
    QN_BD_FLAGS(buffer_cfg, data),
    QN_F_STRING(buffer_cfg, metadata_key, "metadata-key", NULL,
                "field of a JSON object given to the reward as metadata", .metavar = "KEY"),
    QN_F_INT(buffer_cfg, rollout_seed, "rollout-seed", "42", 0, INFINITY,
             "seed of the per-epoch shuffle and of the sampling seeds"),
    QN_F_BOOL(buffer_cfg, rollout_shuffle, "rollout-shuffle", "false",
              "shuffle the prompts every epoch (order from --rollout-seed and the epoch)"),
    QN_F_INT(buffer_cfg, n_samples_per_prompt, "n-samples-per-prompt", "8", 1, 4096,
             "samples per prompt (the group size)"),
    QN_F_INT(buffer_cfg, rollout_batch_size, "rollout-batch-size", "32", 1, 1048576,
             "groups per rollout"),
    QN_F_INT(buffer_cfg, over_sampling_batch_size, "over-sampling-batch-size", "0", 0, 1048576,
             "groups sent at a time while the batch is short (0: --rollout-batch-size)"),
    QN_F_INT(buffer_cfg, rollout_max_response_len, "rollout-max-response-len", "1024", 1, 1048576,
             "max_new_tokens of each sample"),
    QN_F_FLOAT(buffer_cfg, rollout_temperature, "rollout-temperature", "1.0", 0, 1e6,
               "sampling temperature"),
    QN_F_FLOAT(buffer_cfg, rollout_top_p, "rollout-top-p", "1.0", 1e-9, 1, "nucleus sampling"),
    QN_F_INT(buffer_cfg, num_rollout, "num-rollout", "0", 0, INFINITY,
             "stop after this many rollouts are made and acknowledged (0: forever)"),
    QN_F_INT(buffer_cfg, max_rollouts_ahead, "max-rollouts-ahead", "2", 0, 1048576,
             "persisted rollouts not yet acknowledged by every rank, at most (0: no bound)"),
    QN_F_CHOICE(buffer_cfg, dynamic_sampling_filter, "dynamic-sampling-filter", "none",
                "none|nonzero_std", "nonzero_std drops groups whose rewards are all equal"),
    QN_F_BOOL(buffer_cfg, partial_rollout, "partial-rollout", "false",
              "samples still running when a rollout is full are aborted and continued (their "
              "tokens kept) in the next rollout"),
    QN_F_INT(buffer_cfg, max_staleness, "max-staleness", "-1", -1, INFINITY,
             "a group with a token of a weight version older than the job's current one minus K "
             "is generated again (-1: off)",
             .metavar = "K"),
    QN_F_BOOL(buffer_cfg, disable_grpo_std_normalization, "disable-grpo-std-normalization", "false",
              "advantages r - mean instead of (r - mean) / (std + 1e-6)"),
    QN_F_STRING(buffer_cfg, reward, "reward", "math",
                "built-in reward: math, deepscaler, dapo, exact, f1 (docs/rewards.md)",
                .metavar = "NAME"),
    QN_F_CHOICE(buffer_cfg, reward_isolation, "reward-isolation", "process", "process|inline",
                "score in worker processes, or in the buffer itself"),
    QN_F_INT(buffer_cfg, reward_workers, "reward-workers", "2", 1, 1024, "reward worker processes"),
    QN_F_FLOAT(buffer_cfg, reward_timeout_s, "reward-timeout-s", "10", 1e-3, 86400,
               "per-sample reward timeout (a group with a failed sample is dropped)"),
    QN_F_STRING(buffer_cfg, router, "router", "tcp://127.0.0.1:5600",
                "router endpoint (its --listen)", .metavar = "ENDPOINT"),
    QN_F_FLOAT(buffer_cfg, request_timeout_s, "request-timeout-s", "3600", 1, 604800,
               "a sample not answered within this is sent again"),
    QN_F_STRING(buffer_cfg, redis, "redis", NULL, "Redis of the job (rollouts, data cursor)",
                .attrs = QN_FLAG_REQUIRED | QN_FLAG_SECRET, .metavar = "URL"),
    QN_F_STRING(buffer_cfg, job, "job", "default", "job name: Redis keys are quench:<job>:*",
                .metavar = "NAME"),
    QN_F_STRING(buffer_cfg, listen, "listen", "tcp://127.0.0.1:5700",
                "ZeroMQ ROUTER endpoint where trainer ranks ask for batches (port * picks one)",
                .metavar = "ENDPOINT"),
    QN_F_STRING(buffer_cfg, port_file, "port-file", NULL,
                "once listening, write \"zmq=<endpoint>\\n\" here (atomically)", .metavar = "FILE"),
    QN_F_STRING(buffer_cfg, metrics_file, "metrics-file", NULL,
                "append one JSON line of metrics per rollout here (default: stderr)",
                .metavar = "FILE"),
};
static const qn_flag_table k_buffer_table = {
    .command = "buffer",
    .usage = "quench buffer --prompt-data FILE.jsonl --redis URL [--router ENDPOINT] [flags]",
    .summary =
        "The data buffer: draws prompts from JSONL, sends n samples per prompt to the router,\n"
        "scores them with a built-in reward, computes GRPO advantages, filters groups, persists\n"
        "each rollout to Redis before any trainer sees it, and serves trainer ranks their share\n"
        "(TrainBatchRequest -> TrainBatch, TrainBatchAck once trained; a rollout is deleted once\n"
        "every rank's checkpoint holds it). A restarted buffer resumes from Redis. Protocol and\n"
        "keys: docs/services.md. SIGTERM/SIGINT: exits 0 (the rollout being made is regenerated\n"
        "on restart).",
    .flags = k_buffer_flags,
    .n_flags = QN_FLAGS_COUNT(k_buffer_flags),
    .cfg_size = sizeof(buffer_cfg)};

void qn_help_buffer(FILE *out) {
    qn_flags_print_help(&k_buffer_table, out);
}
const qn_flag_table *qn_flags_buffer(void) { return &k_buffer_table; }

int qn_cmd_buffer(int argc, char **argv) {
    buffer_cfg cfg;
    qn_flags_parsed p;
    if (qn_flags_parse(&k_buffer_table, &cfg, argc, argv, &p) != QN_OK) {
        fprintf(stderr, "quench buffer: %s\n", qn_last_error());
        return QN_EXIT_USAGE;
    }
    if (p.print_config) {
        qn_flags_dump(&k_buffer_table, &cfg, &p, stdout);
        qn_flags_parsed_free(&p);
        qn_flags_free(&k_buffer_table, &cfg);
        return QN_EXIT_OK;
    }
    qn_flags_log(&k_buffer_table, &cfg, &p);
    qn_buffer_opts o = {
        .data = qn_bd_flags_opts(&cfg.data, cfg.prompt_data, "buffer"),
        .tokenizer_dir = cfg.data.tokenizer,
        .n_samples_per_prompt = (uint32_t)cfg.n_samples_per_prompt,
        .rollout_batch_size = (uint32_t)cfg.rollout_batch_size,
        .over_sampling_batch_size =
            (uint32_t)(cfg.over_sampling_batch_size ? cfg.over_sampling_batch_size
                                                    : cfg.rollout_batch_size),
        .max_response_len = (uint32_t)cfg.rollout_max_response_len,
        .temperature = cfg.rollout_temperature,
        .top_p = cfg.rollout_top_p,
        .num_rollout = (uint64_t)cfg.num_rollout,
        .max_rollouts_ahead = (uint32_t)cfg.max_rollouts_ahead,
        .filter_nonzero_std = cfg.dynamic_sampling_filter == 1,
        .normalize_std = !cfg.disable_grpo_std_normalization,
        .max_staleness = cfg.max_staleness,
        .partial_rollout = cfg.partial_rollout,
        .reward = cfg.reward,
        .reward_isolation = cfg.reward_isolation == 0 ? "process" : "inline",
        .reward_timeout_s = cfg.reward_timeout_s,
        .reward_workers = (uint32_t)cfg.reward_workers,
        .router = cfg.router,
        .redis_url = cfg.redis,
        .job = cfg.job,
        .listen = cfg.listen,
        .port_file = cfg.port_file,
        .metrics_file = cfg.metrics_file,
        .request_timeout_s = cfg.request_timeout_s,
    };
    o.data.metadata_key = cfg.metadata_key;
    o.data.shuffle = cfg.rollout_shuffle;
    o.data.seed = (uint64_t)cfg.rollout_seed;
    int rc = QN_EXIT_OK;
    if (!qn_reward_builtin(cfg.reward)) {
        fprintf(stderr,
                "quench buffer: --reward '%s' is not a built-in reward (math, deepscaler, "
                "dapo, exact, f1)\n",
                cfg.reward);
        rc = QN_EXIT_USAGE;
    }
    if (rc == QN_EXIT_OK) {
        qn_status st = qn_buffer_run(&o);
        if (st != QN_OK) {
            fprintf(stderr, "quench buffer: %s\n", qn_last_error());
            rc = QN_EXIT_FAILURE;
        }
    }
    qn_flags_parsed_free(&p);
    qn_flags_free(&k_buffer_table, &cfg);
    return rc;
}
