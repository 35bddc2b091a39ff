/* cmd_rollout.c — `quench rollout`: a rollout engine serving a router
 * (docs/services.md). Parses the flags, loads the model the way
 * `quench generate` does (fp32, an FP8 checkpoint, or --quantize fp8),
 * builds the engine and hands over to the service loop
 * (cli/rollout_service.c). SIGTERM/SIGINT drain: the engine tells the router,
 * refuses new requests, finishes the ones it has and exits 0; a second
 * signal exits at once with status 1.
 *
 * Leaves out: GPUs (the engine is the CPU one), listening for requests itself
 * (engines only connect to the router), metrics endpoints. */
#include <omp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/served_model.h"
#include "cli/rollout_service.h"
#include "core/flags.h"
#include "core/log.h"
#include "core/model/infer.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "rollout/engine.h"

typedef struct rollout_cfg {
    char *router, *model, *engine_id, *tokenizer;
    int quantize;
    int64_t threads, seed, pull_timeout_ms, pull_retries;
    qn_engine_flags eng;
} rollout_cfg;

static const qn_flag k_rollout_flags[] = {
    QN_F_STRING(rollout_cfg, router, "router", NULL,
                "router endpoint to connect to (its --listen), e.g. tcp://10.0.0.1:5600",
                .attrs = QN_FLAG_REQUIRED, .metavar = "ENDPOINT"),
    QN_F_STRING(rollout_cfg, model, "model", NULL, "model folder (config.json + safetensors)",
                .attrs = QN_FLAG_REQUIRED, .metavar = "DIR"),
    QN_F_STRING(rollout_cfg, engine_id, "engine-id", NULL,
                "this engine's name in the registry (default: <host>-<pid>)", .metavar = "ID"),
    QN_F_CHOICE(rollout_cfg, quantize, "quantize", "none", "none|fp8",
                "fp8: quantise the projections on load and after every weight update (128x128 "
                "e4m3 blocks); an FP8 checkpoint is always served in FP8"),
    QN_ENGINE_FLAGS(rollout_cfg, eng),
    QN_F_STRING(rollout_cfg, tokenizer, "tokenizer", NULL,
                "tokenizer folder, for stop strings (default: the model folder when it has one)",
                .metavar = "DIR"),
    QN_F_INT(rollout_cfg, threads, "threads", "0", 0, 4096, "CPU threads (0: OpenMP default)"),
    QN_F_INT(rollout_cfg, seed, "seed", "0", 0, 9.2e18,
             "engine seed: requests without their own seed draw from it"),
    QN_F_INT(rollout_cfg, pull_timeout_ms, "weight-pull-timeout-ms", "10000", 1, 3600000,
             "a weight chunk not answered in this time is asked again"),
    QN_F_INT(rollout_cfg, pull_retries, "weight-pull-retries", "3", 1, 1000,
             "times a weight chunk is asked again before the update fails"),
};
static const qn_flag_table k_rollout_table = {
    .command = "rollout",
    .usage = "quench rollout --router ENDPOINT --model DIR [flags]",
    .summary =
        "A rollout engine serving a router (docs/services.md): registers, heartbeats every\n"
        "interval the router sets, generates GenerateRequests with continuous batching and\n"
        "answers one GenerateResult per sample (token ids, log-probs, the weight version of\n"
        "every token), pulls weight versions from the trainer's weight server when the\n"
        "router announces them and applies them completely or not at all. SIGTERM/SIGINT\n"
        "drains: new requests are refused, the ones in flight finish, then exit 0.",
    .flags = k_rollout_flags,
    .n_flags = QN_FLAGS_COUNT(k_rollout_flags),
    .cfg_size = sizeof(rollout_cfg)};

void qn_help_rollout(FILE *out) {
    qn_flags_print_help(&k_rollout_table, out);
}
const qn_flag_table *qn_flags_rollout(void) { return &k_rollout_table; }

static volatile sig_atomic_t g_signals;

static void on_signal(int sig) {
    (void)sig;
    g_signals++;
    if (g_signals >= 2) {
        static const char msg[] = "quench rollout: second signal, exiting without draining\n";
        ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
        _exit(QN_EXIT_FAILURE);
    }
}

static int run_rollout(const rollout_cfg *c) {
    qn_served_model sm = {0};
    qn_engine *e = NULL;
    char id_buf[300];
    qn_status s;
    int rc = QN_EXIT_FAILURE;

    if (c->threads > 0) omp_set_num_threads((int)c->threads);
    const char *engine_id = c->engine_id;
    if (!engine_id) {
        char host[256] = "host";
        if (gethostname(host, sizeof host - 1) != 0) snprintf(host, sizeof host, "host");
        host[sizeof host - 1] = '\0';
        snprintf(id_buf, sizeof id_buf, "%s-%ld", host, (long)getpid());
        engine_id = id_buf;
    }
    QN_CHECK_GOTO(qn_served_model_load(&sm, c->model, c->tokenizer, c->quantize == 1), s, fail);
    qn_engine_params ep = qn_served_engine_params(&sm, &c->eng, (uint64_t)c->seed);
    QN_CHECK_GOTO(qn_engine_create(&e, &sm.m, sm.f8, &ep), s, fail);
    QN_LOG_INFO("rollout: engine %s: model %s (%s weights%s), tokenizer %s, %d eos ids, weight "
                "version 0",
                engine_id, c->model, sm.f8 ? "fp8" : "fp32",
                sm.fp8_checkpoint ? ", FP8 checkpoint" : "", sm.tok_dir ? sm.tok_dir : "none",
                sm.n_eos);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: a signal wakes the loop's poll */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    qn_rollout_service_params sp = {
        .router = c->router,
        .engine_id = engine_id,
        .model = &sm.m,
        .fp8 = &sm.f8,
        .fp8_bm = sm.fp8_bm,
        .fp8_bn = sm.fp8_bn,
        .engine = e,
        .max_running = (int32_t)c->eng.max_running,
        .kv_cache_tokens = c->eng.kv_cache_tokens,
        .block_size = (int32_t)c->eng.block_size,
        .pull_timeout_ms = (uint32_t)c->pull_timeout_ms,
        .pull_retries = (uint32_t)c->pull_retries,
        .signals = &g_signals,
    };
    QN_CHECK_GOTO(qn_rollout_service_run(&sp), s, fail);
    rc = QN_EXIT_OK;
    goto done;
fail:
    (void)s;
    QN_LOG_ERROR("rollout: %s", qn_last_error());
    fprintf(stderr, "quench rollout: %s\n", qn_last_error());
done:
    qn_engine_free(e);
    qn_served_model_free(&sm);
    return rc;
}

int qn_cmd_rollout(int argc, char **argv) {
    rollout_cfg cfg;
    qn_flags_parsed p;
    if (qn_flags_parse(&k_rollout_table, &cfg, argc, argv, &p) != QN_OK) {
        fprintf(stderr, "quench rollout: %s\n", qn_last_error());
        return QN_EXIT_USAGE;
    }
    int rc;
    if (p.print_config) {
        qn_flags_dump(&k_rollout_table, &cfg, &p, stdout);
        rc = QN_EXIT_OK;
    } else {
        qn_flags_log(&k_rollout_table, &cfg, &p);
        rc = run_rollout(&cfg);
    }
    qn_flags_parsed_free(&p);
    qn_flags_free(&k_rollout_table, &cfg);
    return rc;
}
