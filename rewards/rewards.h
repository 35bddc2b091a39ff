/* rewards.h — the host side of quench rewards: pick a reward (built-in or
 * plugin), score batches of samples under isolation and timeouts, and apply
 * the failure policy.
 *
 * Every reward, built-in or loaded from a shared object, is a
 * qn_reward_api_v1 table (include/quench/reward.h). qn_reward_init finds the
 * table, then either calls it in this process (inline) or starts a pool of
 * worker processes that each call init once and then score one job at a
 * time (process isolation, the default). A job is one sample, or one whole
 * group when the reward has score_group. The caller's thread drives the
 * pool with poll(): no threads are created, and a worker that crashes, runs
 * past its deadline or grows past its memory limit is killed and replaced
 * while the others keep working.
 *
 * remote_rm is not a table call per sample: it sends up to --rm-concurrency
 * HTTP requests at once with libcurl's multi interface from the calling
 * thread, so it ignores the isolation setting (a remote service cannot crash
 * this process; its failures are classified as http_error, network_error,
 * timeout or bad_response).
 *
 * Not thread-safe: one qn_reward belongs to one thread.
 */
#ifndef QN_REWARDS_REWARDS_H
#define QN_REWARDS_REWARDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quench/reward.h"
#include "quench/status.h"

typedef enum qn_reward_isolation {
    QN_REWARD_ISOLATION_PROCESS = 0,
    QN_REWARD_ISOLATION_INLINE = 1,
} qn_reward_isolation;

/* What a failed sample does to its group. */
typedef enum qn_reward_failure {
    QN_REWARD_FAILURE_DROP = 0, /* the whole group is dropped and counted */
    QN_REWARD_FAILURE_ZERO = 1, /* the sample scores 0, keeps its failure status */
    QN_REWARD_FAILURE_FAIL = 2, /* scoring returns an error naming the sample */
} qn_reward_failure;

typedef struct qn_reward_config {
    const char *rm_type;        /* built-in name ("math", ...); NULL with custom_rm_path */
    const char *custom_rm_path; /* "path.so" or "path.so:SYMBOL" */
    const char *rm_config;      /* string for the plugin's init; NULL = "" */
    const char *reward_key;     /* named score to use as reward; NULL = main value */
    qn_reward_isolation isolation;
    qn_reward_failure failure;
    double timeout_s;         /* per sample; > 0 */
    int32_t n_workers;        /* worker processes (process isolation); >= 1 */
    int64_t worker_memory_mb; /* a worker whose RSS passes this during a sample is
                               * killed (status memory); one above 3/4 of it after a
                               * sample is replaced (recycled); 0 = no limit */
    /* remote_rm */
    const char *rm_url;
    int32_t rm_concurrency; /* requests in flight at once; >= 1 */
    int32_t rm_retries;     /* retries after the first attempt; >= 0 */
    double rm_backoff_s;    /* first retry waits about this long; doubles, with jitter */
} qn_reward_config;

/* Sensible defaults: isolation process, failure drop, timeout 10 s,
 * 4 workers, 2048 MiB per worker, 64 concurrent requests, 3 retries,
 * 0.1 s backoff. */
qn_reward_config qn_reward_config_default(void);

typedef struct qn_reward qn_reward;

/* Creates a reward from cfg (copied; the strings need not outlive the call).
 * Fails with QN_ERR_NOT_FOUND for an unknown --rm-type or a missing symbol,
 * QN_ERR_IO when the shared object cannot be opened, QN_ERR_VERSION when it
 * exports no table version this quench knows, QN_ERR_INVALID for bad config
 * values, or the error of the plugin's init (message from the plugin). In
 * process mode the workers are started and initialised before it returns. */
qn_status qn_reward_init(qn_reward **out, const qn_reward_config *cfg);
/* Stops the workers (they are killed if they do not exit) and frees. NULL ok. */
void qn_reward_free(qn_reward *rw);

/* "name (abi vN)" of the loaded table, for logs. */
const char *qn_reward_name(const qn_reward *rw);

/* A batch to score: n_samples samples in order, split into n_groups
 * consecutive groups (group_sizes sums to n_samples; NULL means every sample
 * is its own group). scores gets one entry per sample, group_kept one per
 * group (may be NULL). */
typedef struct qn_reward_batch {
    const qn_reward_sample *samples;
    size_t n_samples;
    const uint32_t *group_sizes;
    size_t n_groups;
    qn_reward_score *scores;
    bool *group_kept;
} qn_reward_batch;

/* Scores a batch and applies the failure policy. Every sample ends with a
 * status; for non-ok ones value is 0 under the zero policy and NaN
 * otherwise, and message says why ("worker killed by SIGSEGV"). With
 * --reward-key the chosen named number becomes value (missing_key if it is
 * absent). Under drop, a group with any failure has group_kept false. Under
 * fail, the first failure makes the call return QN_ERR_INTERNAL with a
 * message naming the sample and reason (the other scores are still filled).
 * Returns QN_ERR_INVALID for inconsistent group sizes. */
qn_status qn_reward_score_batch(qn_reward *rw, qn_reward_batch *batch);

/* Counters since init, for metrics (rollout/reward_failed/<status> etc.). */
typedef struct qn_reward_stats {
    uint64_t samples;
    uint64_t by_status[QN_REWARD_STATUS_COUNT];
    uint64_t groups;
    uint64_t groups_dropped;
    uint64_t worker_restarts; /* workers replaced after crash/timeout/memory */
    uint64_t worker_recycles; /* workers replaced because RSS passed the limit */
} qn_reward_stats;

void qn_reward_get_stats(const qn_reward *rw, qn_reward_stats *out);

/* "ok", "timeout", ...; "unknown" for values outside the list. */
const char *qn_reward_status_str(int32_t status);

/* Parses "process"/"inline" and "drop"/"zero"/"fail". */
qn_status qn_reward_isolation_parse(const char *s, qn_reward_isolation *out);
qn_status qn_reward_failure_parse(const char *s, qn_reward_failure *out);

/* ---- built-ins (rewards/builtin_*.c) ---- */

/* The table of a built-in by --rm-type name, or NULL. remote_rm is not in
 * this list (see rewards/remote_rm.h). */
const qn_reward_api_v1 *qn_reward_builtin(const char *name);
/* Names of the built-ins, NULL-terminated, for help text. */
extern const char *const qn_reward_builtin_names[];

/* Math answer checking, exposed for tests and other rewards. */

/* Writes the final answer of a response into out (cap bytes): the content of
 * the last \boxed{...} or \fbox{...}, else the last number in the text.
 * Returns false when there is neither. */
bool qn_math_extract_answer(const char *response, char *out, size_t cap);
/* Whether two answer strings are equal after normalisation (LaTeX wrappers,
 * units, degrees, thousands separators stripped), compared by value when
 * both sides evaluate to numbers, element-wise for tuples and lists. */
bool qn_math_answers_equal(const char *given, const char *truth);

#endif /* QN_REWARDS_REWARDS_H */
