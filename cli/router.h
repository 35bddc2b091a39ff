/* router.h — the request router service behind `quench router`
 * (cli/cmd_router.c parses the flags; cli/router.c is the service).
 *
 * One libuv loop owns everything: the ZeroMQ ROUTER socket that engines and
 * clients (buffer, trainer) talk to (docs/services.md), the HTTP API
 * (net/http_server.h), the engine registry with heartbeat expiry, the
 * dispatch queue and the weight-update coordinator. */
#ifndef QN_CLI_ROUTER_H
#define QN_CLI_ROUTER_H

#include <stdint.h>

#include "quench/status.h"

typedef struct qn_router_opts {
    const char *listen; /* ZeroMQ bind endpoint */
    const char *http_host;
    int http_port;         /* 0: a free port; -1: no HTTP */
    const char *port_file; /* NULL or a file that gets "zmq=..\nhttp=..\n" once listening */
    const char *redis_url; /* NULL: registry only in memory */
    const char *job;
    uint32_t heartbeat_ms;
    uint32_t engine_timeout_ms;
    const char *tokenizer_dir;  /* NULL: no text in or out */
    uint32_t request_timeout_s; /* HTTP: answer 504 after this */
    uint32_t queue_timeout_s;   /* a request waiting this long for an engine fails */
    uint32_t max_queued;        /* requests waiting for an engine */
    uint64_t max_body_bytes;
    uint32_t max_connections;
} qn_router_opts;

/* Runs the router until SIGTERM or SIGINT (then: stops accepting, answers
 * HTTP requests still in flight with 503, returns QN_OK). Errors while
 * starting (bind, Redis, tokenizer) are returned with a message. */
qn_status qn_router_run(const qn_router_opts *opts);

#endif
