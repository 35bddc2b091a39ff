/* eval.h — `quench eval`, the evaluation process of a GRPO job (slime's
 * --eval-interval / --eval-prompt-data): it watches the job's weight
 * version in Redis and, at each evaluation point, sends every held-out
 * prompt x n samples through the router, scores the answers with a built-in
 * reward and appends one JSON metrics line (docs/services.md, "Evaluation").
 *
 * Leaves out: several evaluation data sets at once, custom reward plugins,
 * and pass@k style metrics beyond the per-sample accuracy. */
#ifndef QN_CLI_EVAL_H
#define QN_CLI_EVAL_H

#include <stdbool.h>
#include <stdint.h>

#include "cli/buffer_data.h"
#include "quench/status.h"

typedef struct qn_eval_opts {
    /* data (read with cli/buffer_data.h, as the buffer reads its prompts) */
    qn_bd_opts data;
    const char *tokenizer_dir;
    /* what to evaluate, and when */
    const char *reward;     /* a built-in reward name */
    uint64_t eval_interval; /* K: versions v with floor(v/K) > floor(last/K); 0: first and final */
    int64_t num_rollout;    /* N: the final version, evaluated last; < 0: none (until a signal) */
    uint32_t n_samples, max_response_len;
    double temperature, top_p;
    uint64_t seed;
    /* services */
    const char *router, *redis_url, *job, *metrics_file;
    double request_timeout_s, poll_interval_s;
} qn_eval_opts;

/* Runs evaluations until version --num-rollout has been evaluated (QN_OK),
 * or SIGTERM/SIGINT (QN_OK, promptly: requests in flight are aborted).
 * Redis and the router being unreachable are not errors: both are retried
 * with logged backoff. Errors: a bad data file (or, with --on-bad-data fail,
 * a bad line), a tokenizer or reward that cannot start, a metrics file that
 * cannot be opened. */
qn_status qn_eval_run(const qn_eval_opts *o);

#endif
