/* cmd_router.c — `quench router`: the request router service. This file
 * holds the flag table; the service is cli/router.c, the HTTP JSON bodies
 * cli/router_json.c, the protocol docs/services.md. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/commands.h"
#include "cli/router.h"
#include "core/flags.h"
#include "core/log.h"

typedef struct router_cfg {
    char *listen, *http_host, *port_file, *redis, *job, *tokenizer;
    int64_t http_port, heartbeat_ms, engine_timeout_ms, request_timeout_s, queue_timeout_s,
        max_queued, max_body_bytes, max_connections;
} router_cfg;

static const qn_flag k_router_flags[] = {
    QN_F_STRING(router_cfg, listen, "listen", "tcp://127.0.0.1:5600",
                "ZeroMQ ROUTER endpoint to bind for engines and clients (port * picks a free one)",
                .metavar = "ENDPOINT"),
    QN_F_STRING(router_cfg, http_host, "http-host", "127.0.0.1", "address of the HTTP API",
                .metavar = "HOST"),
    QN_F_INT(router_cfg, http_port, "http-port", "30000", -1, 65535,
             "port of the HTTP API (0: a free port; -1: no HTTP)"),
    QN_F_STRING(router_cfg, port_file, "port-file", NULL,
                "once listening, write \"zmq=<endpoint>\\nhttp=<port>\\n\" here (atomically)",
                .metavar = "FILE"),
    QN_F_STRING(router_cfg, redis, "redis", NULL,
                "Redis of the job for the engine registry (without it: in memory only)",
                .metavar = "URL", .attrs = QN_FLAG_SECRET),
    QN_F_STRING(router_cfg, job, "job", "default", "job name: Redis keys are quench:<job>:*",
                .metavar = "NAME"),
    QN_F_INT(router_cfg, heartbeat_ms, "heartbeat-ms", "1000", 10, 600000,
             "heartbeat interval told to engines"),
    QN_F_INT(router_cfg, engine_timeout_ms, "engine-timeout-ms", "0", 0, 3600000,
             "drop an engine not heard from for this long (0: 5 x --heartbeat-ms)"),
    QN_F_STRING(router_cfg, tokenizer, "tokenizer", NULL,
                "tokenizer folder, for text prompts and text in HTTP answers", .metavar = "DIR"),
    QN_F_INT(router_cfg, request_timeout_s, "request-timeout-s", "600", 1, 86400,
             "an HTTP generation request not answered within this gets 504"),
    QN_F_INT(router_cfg, queue_timeout_s, "queue-timeout-s", "300", 1, 86400,
             "a request waiting this long for an engine fails"),
    QN_F_INT(router_cfg, max_queued, "max-queued", "65536", 1, 16777216,
             "requests that may wait for an engine; more are refused"),
    QN_F_INT(router_cfg, max_body_bytes, "max-body-bytes", "8388608", 1024, 1073741824,
             "largest HTTP request body (larger: 413)"),
    QN_F_INT(router_cfg, max_connections, "max-connections", "1024", 1, 65536,
             "open HTTP connections (more: 503 and close)"),
};
static const qn_flag_table k_router_table = {
    .command = "router",
    .usage = "quench router [--listen ENDPOINT] [--http-port N] [--redis URL --job NAME] [flags]",
    .summary =
        "The request router: engines (`quench rollout --router ENDPOINT`) register and\n"
        "heartbeat; clients (the buffer, the trainer) send GenerateRequests and weight updates\n"
        "over ZeroMQ; the HTTP API serves POST /generate (SGLang's shape), POST /v1/completions\n"
        "(OpenAI's), GET /health, GET /workers, DELETE /workers/<id>, GET /metrics.\n"
        "Protocol and API: docs/services.md. SIGTERM/SIGINT: answers HTTP requests in flight\n"
        "with 503 and exits 0.",
    .flags = k_router_flags,
    .n_flags = QN_FLAGS_COUNT(k_router_flags),
    .cfg_size = sizeof(router_cfg)};

void qn_help_router(FILE *out) {
    qn_flags_print_help(&k_router_table, out);
}
const qn_flag_table *qn_flags_router(void) { return &k_router_table; }

int qn_cmd_router(int argc, char **argv) {
    router_cfg cfg;
    qn_flags_parsed p;
    if (qn_flags_parse(&k_router_table, &cfg, argc, argv, &p) != QN_OK) {
        fprintf(stderr, "quench router: %s\n", qn_last_error());
        return QN_EXIT_USAGE;
    }
    if (p.print_config) {
        qn_flags_dump(&k_router_table, &cfg, &p, stdout);
        qn_flags_parsed_free(&p);
        qn_flags_free(&k_router_table, &cfg);
        return QN_EXIT_OK;
    }
    qn_flags_log(&k_router_table, &cfg, &p);
    qn_router_opts o = {
        .listen = cfg.listen,
        .http_host = cfg.http_host,
        .http_port = (int)cfg.http_port,
        .port_file = cfg.port_file,
        .redis_url = cfg.redis,
        .job = cfg.job,
        .heartbeat_ms = (uint32_t)cfg.heartbeat_ms,
        .engine_timeout_ms =
            (uint32_t)(cfg.engine_timeout_ms ? cfg.engine_timeout_ms : 5 * cfg.heartbeat_ms),
        .tokenizer_dir = cfg.tokenizer,
        .request_timeout_s = (uint32_t)cfg.request_timeout_s,
        .queue_timeout_s = (uint32_t)cfg.queue_timeout_s,
        .max_queued = (uint32_t)cfg.max_queued,
        .max_body_bytes = (uint64_t)cfg.max_body_bytes,
        .max_connections = (uint32_t)cfg.max_connections,
    };
    qn_status st = qn_router_run(&o);
    if (st != QN_OK) fprintf(stderr, "quench router: %s\n", qn_last_error());
    qn_flags_parsed_free(&p);
    qn_flags_free(&k_router_table, &cfg);
    return st == QN_OK ? QN_EXIT_OK : QN_EXIT_FAILURE;
}
