/* rollout_service.h — the rollout engine as a service (`quench rollout`): the
 * loop that connects an engine (rollout/engine.h) to the router over ZeroMQ,
 * following the wire protocol of docs/services.md.
 *
 * cli/cmd_rollout.c parses the flags, loads the model and builds the engine;
 * this file owns the socket and runs until a drain completes or a fatal error
 * happens. Leaves out: NCCL weight broadcast (only ZMQ_PULL manifests are
 * accepted), streaming partial outputs, metrics. */
#ifndef QN_CLI_ROLLOUT_SERVICE_H
#define QN_CLI_ROLLOUT_SERVICE_H

#include <signal.h>
#include <stdint.h>

#include "core/model/infer.h"
#include "core/model/model.h"
#include "quench/status.h"
#include "rollout/engine.h"

typedef struct qn_rollout_service_params {
    const char *router;     /* endpoint the DEALER connects to */
    const char *engine_id;  /* our identity (non-empty, <= 255 bytes) */
    qn_model *model;        /* weights rewritten in place by weight updates */
    qn_model_fp8 **fp8;     /* FP8 copies (NULL inside: fp32); replaced on update, old freed */
    int32_t fp8_bm, fp8_bn; /* FP8 tile used when re-quantising */
    qn_engine *engine;      /* created on model and *fp8 */
    int32_t max_running;
    int64_t kv_cache_tokens;
    int32_t block_size;
    uint32_t pull_timeout_ms; /* per weight chunk before it is asked again */
    uint32_t pull_retries;
    /* Incremented by the signal handler: 1 starts a drain. */
    volatile sig_atomic_t *signals;
} qn_rollout_service_params;

/* Registers with the router, serves GenerateRequest / AbortRequest /
 * WeightUpdateBegin / Drain until a drain finishes (QN_OK: every accepted
 * request was answered) or a fatal error (the engine's step failed, the
 * socket cannot be made, out of memory while applying weights) which is
 * returned with its message. Malformed messages are logged and skipped. */
qn_status qn_rollout_service_run(const qn_rollout_service_params *p);

#endif
