/* buffer.h — `quench buffer`, the data buffer service: prompts from JSONL
 * go to the router as GenerateRequests, results are scored, turned into
 * GRPO groups, filtered, persisted to Redis as rollouts, and handed to
 * trainer ranks in shares (docs/services.md, "Buffer").
 *
 * Leaves out: custom filters, and rewards other than the built-ins. */
#ifndef QN_CLI_BUFFER_H
#define QN_CLI_BUFFER_H

#include <stdbool.h>
#include <stdint.h>

#include "cli/buffer_data.h"
#include "quench/status.h"

typedef struct qn_buffer_opts {
    /* data: path, keys, --on-bad-data, shuffle, and seed (also the seed of the sampling seeds) */
    qn_bd_opts data;
    const char *tokenizer_dir;
    /* rollouts */
    uint32_t n_samples_per_prompt, rollout_batch_size, over_sampling_batch_size;
    uint32_t max_response_len;
    double temperature, top_p;
    uint64_t num_rollout;        /* 0: forever */
    uint32_t max_rollouts_ahead; /* 0: no bound */
    bool filter_nonzero_std;
    bool normalize_std;    /* false with --disable-grpo-std-normalization */
    int64_t max_staleness; /* < 0: off; else a group with a token older than current-K is redone */
    bool partial_rollout;  /* samples aborted at the end of a rollout are continued in the next */
    /* rewards */
    const char *reward, *reward_isolation;
    double reward_timeout_s;
    uint32_t reward_workers;
    /* services */
    const char *router, *redis_url, *job, *listen, *port_file, *metrics_file;
    double request_timeout_s;
} qn_buffer_opts;

/* Runs the buffer until SIGTERM/SIGINT (QN_OK) or until --num-rollout
 * rollouts exist and every rank acknowledged them (QN_OK), or a fatal error:
 * Redis unreachable or refusing a write, a bad data file, a reward that
 * cannot start (the error names the cause). */
qn_status qn_buffer_run(const qn_buffer_opts *o);

#endif
