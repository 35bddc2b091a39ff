/* fuzz_metrics.c — the metrics.jsonl line parser (core/io/metrics.c) on
 * arbitrary bytes: input is split at '\n' into lines, each fed to
 * qn_metrics_add_line. It must not crash, must refuse (QN_ERR_FORMAT) or
 * accept each line, and after finish every series must be sorted by
 * strictly increasing, finite rollout_id with finite values, no larger
 * than the points that went in. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/io/metrics.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qn_metrics m;
    qn_metrics_init(&m);
    const char *text = (const char *)data;
    size_t start = 0, lines = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i < size && data[i] != '\n') continue;
        qn_status s = qn_metrics_add_line(&m, text + start, i - start);
        if (s != QN_OK && s != QN_ERR_FORMAT) abort(); /* NOMEM does not happen at these sizes */
        lines++;
        start = i + 1;
    }
    if (m.lines_used + m.lines_ignored > lines) abort();
    if (m.n_series > QN_METRICS_MAX_SERIES) abort();
    size_t before = 0;
    for (size_t k = 0; k < m.n_series; k++) before += m.series[k].n;
    qn_metrics_finish(&m);
    size_t after = 0;
    for (size_t k = 0; k < m.n_series; k++) {
        const qn_metric_series *s = &m.series[k];
        if (qn_metrics_get(&m, s->name) != s) abort(); /* names are unique */
        after += s->n;
        for (size_t i = 0; i < s->n; i++) {
            if (!isfinite(s->pts[i].x) || !isfinite(s->pts[i].y)) abort();
            if (i && !(s->pts[i].x > s->pts[i - 1].x)) abort();
        }
    }
    if (after > before) abort();
    qn_metrics_free(&m);
    return 0;
}
