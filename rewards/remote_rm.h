/* remote_rm.h — the remote reward client (--rm-type remote_rm): POST each
 * sample as JSON to --rm-url and read the reward back, many requests in
 * flight at once.
 *
 * Request body: {"prompt": ..., "response": ..., "label": ..., "metadata": {...}}.
 * Accepted answers (HTTP 200): a bare JSON number, or an object whose
 * "reward" (or "score") member is the reward; its other numeric members
 * become named scores (for --reward-key). Classification after the last
 * attempt: http_error (a non-2xx status), timeout (no full answer within the
 * per-request timeout), network_error (refused, reset, dropped connection),
 * bad_response (200 but not a usable JSON answer; not retried). 5xx, 408,
 * 429, timeouts and network errors are retried with exponential backoff and
 * jitter; other 4xx are not. Connections are kept alive and reused.
 */
#ifndef QN_REWARDS_REMOTE_RM_H
#define QN_REWARDS_REMOTE_RM_H

#include <stddef.h>
#include <stdint.h>

#include "quench/reward.h"
#include "quench/status.h"

typedef struct qn_remote_rm qn_remote_rm;

typedef struct qn_remote_rm_config {
    const char *url;
    double timeout_s;       /* per attempt */
    int32_t concurrency;    /* requests in flight */
    int32_t retries;        /* attempts after the first */
    double backoff_s;       /* wait before retry k is backoff_s * 2^(k-1) * [0.5, 1.5) */
    const char *reward_key; /* when set, "reward" may be absent from answers */
} qn_remote_rm_config;

/* QN_ERR_INVALID for a missing/non-http URL or bad numbers, QN_ERR_NOMEM. */
qn_status qn_remote_rm_init(qn_remote_rm **out, const qn_remote_rm_config *cfg);
void qn_remote_rm_free(qn_remote_rm *rm);

/* Scores n samples; every out[i] gets a value and status (never left
 * unset). *retries (may be NULL) is increased by the retries made. Returns
 * QN_ERR_NOMEM/QN_ERR_NET only when the client itself cannot work. */
qn_status qn_remote_rm_score(qn_remote_rm *rm, const qn_reward_sample *samples, size_t n,
                             qn_reward_score *out, uint64_t *retries);

#endif /* QN_REWARDS_REMOTE_RM_H */
