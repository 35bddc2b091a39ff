/* metrics.h — reading a run's metrics.jsonl into one series per metric.
 *
 * Every process of a job (buffer, trainer ranks, eval) appends JSON objects
 * to RUN_DIR/metrics.jsonl, one per line, in whatever order they finish,
 * with slime's key names ("rollout/raw_reward", "train/pg_loss", ...; the
 * list is in docs/metrics.md). "rollout_id" is the x axis of every metric;
 * a line without it is ignored. Several lines may carry the same metric for
 * one rollout (one per optimizer step): the series holds their mean.
 * Left out: wall-clock axes, per-step (rather than per-rollout) series,
 * non-numeric values (strings, bools, arrays are skipped). */
#ifndef QN_CORE_IO_METRICS_H
#define QN_CORE_IO_METRICS_H

#include <stdbool.h>
#include <stddef.h>

#include "quench/status.h"

/* A file with more distinct numeric keys keeps the first ones only: it bounds
 * the memory a hostile or corrupt file can take to its own size. */
#define QN_METRICS_MAX_SERIES 512

typedef struct qn_metric_point {
    double x, y;
} qn_metric_point;

/* One metric. Before qn_metrics_finish: one point per line that had the
 * key, in file order. After it: sorted by x, strictly increasing x, y the
 * mean of the lines with that x. All values are finite. */
typedef struct qn_metric_series {
    char *name;
    qn_metric_point *pts;
    size_t n, cap;
} qn_metric_series;

typedef struct qn_metrics {
    qn_metric_series *series; /* n_series, in order of first appearance */
    size_t n_series;
    size_t lines_used;    /* lines with a rollout_id and at least one numeric metric */
    size_t lines_ignored; /* valid objects without rollout_id, or with nothing else */
    bool finished;
} qn_metrics;

void qn_metrics_init(qn_metrics *m);
void qn_metrics_free(qn_metrics *m); /* NULL ok */

/* Parses one line (len bytes, need not be NUL-terminated; trailing
 * whitespace allowed) and adds its numeric values at x = its rollout_id.
 * QN_ERR_FORMAT with a message (no file or line in it) when the text is not
 * one JSON object or rollout_id is not a finite number; nothing is added
 * then. A line without rollout_id returns QN_OK and counts as ignored.
 * Non-finite values (1e999) are skipped. QN_ERR_INVALID after finish;
 * QN_ERR_NOMEM when out of memory. */
qn_status qn_metrics_add_line(qn_metrics *m, const char *text, size_t len);

/* Sorts every series by rollout_id and averages the points that share one.
 * Idempotent. */
void qn_metrics_finish(qn_metrics *m);

/* The series named name, or NULL when no line had it. */
const qn_metric_series *qn_metrics_get(const qn_metrics *m, const char *name);

/* Called for each malformed line: "metrics.jsonl:7: <why>" (valid during
 * the call). */
typedef void (*qn_metrics_warn_fn)(const char *message, void *user);

/* Reads path line by line through qn_metrics_add_line and finishes. A
 * malformed line (a job killed mid-write leaves a truncated last one) is
 * skipped and reported through warn (NULL: QN_LOG_WARN); *n_malformed (may
 * be NULL) counts them. QN_ERR_IO naming path when it cannot be read;
 * QN_ERR_NOMEM. */
qn_status qn_metrics_load(qn_metrics *m, const char *path, qn_metrics_warn_fn warn, void *user,
                          size_t *n_malformed);

#endif
