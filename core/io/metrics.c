/* metrics.c — see metrics.h. */
#include "core/io/metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/io/jsonl.h"
#include "core/log.h"

void qn_metrics_init(qn_metrics *m) { memset(m, 0, sizeof *m); }

void qn_metrics_free(qn_metrics *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_series; i++) {
        free(m->series[i].name);
        free(m->series[i].pts);
    }
    free(m->series);
    memset(m, 0, sizeof *m);
}

const qn_metric_series *qn_metrics_get(const qn_metrics *m, const char *name) {
    for (size_t i = 0; i < m->n_series; i++)
        if (strcmp(m->series[i].name, name) == 0) return &m->series[i];
    return NULL;
}

/* The series for name, created if there is room; NULL when the series
 * table is full (the value is dropped) or *oom is set. */
static qn_metric_series *series_for(qn_metrics *m, const char *name, bool *oom) {
    for (size_t i = 0; i < m->n_series; i++)
        if (strcmp(m->series[i].name, name) == 0) return &m->series[i];
    if (m->n_series >= QN_METRICS_MAX_SERIES) return NULL;
    qn_metric_series *grown = realloc(m->series, (m->n_series + 1) * sizeof *grown);
    if (!grown) {
        *oom = true;
        return NULL;
    }
    m->series = grown;
    qn_metric_series *s = &m->series[m->n_series];
    memset(s, 0, sizeof *s);
    s->name = strdup(name);
    if (!s->name) {
        *oom = true;
        return NULL;
    }
    m->n_series++;
    return s;
}

static bool series_push(qn_metric_series *s, double x, double y) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        qn_metric_point *p = realloc(s->pts, cap * sizeof *p);
        if (!p) return false;
        s->pts = p;
        s->cap = cap;
    }
    s->pts[s->n++] = (qn_metric_point){x, y};
    return true;
}

qn_status qn_metrics_add_line(qn_metrics *m, const char *text, size_t len) {
    if (m->finished) return qn_fail(QN_ERR_INVALID, "metrics: add_line after finish");
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!o) return qn_fail(QN_ERR_FORMAT, "not valid JSON (truncated line?)");
    /* cJSON stops after the first value; anything but whitespace after it
     * means two records ran together (a lost newline) */
    size_t used = end ? (size_t)(end - text) : len;
    for (size_t i = used; i < len; i++) {
        char c = text[i];
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
            cJSON_Delete(o);
            return qn_fail(QN_ERR_FORMAT, "text after the JSON object at byte %zu", i + 1);
        }
    }
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return qn_fail(QN_ERR_FORMAT, "not a JSON object");
    }
    const cJSON *rid = cJSON_GetObjectItemCaseSensitive(o, "rollout_id");
    if (!rid) {
        cJSON_Delete(o);
        m->lines_ignored++;
        return QN_OK;
    }
    if (!cJSON_IsNumber(rid) || !isfinite(rid->valuedouble)) {
        cJSON_Delete(o);
        return qn_fail(QN_ERR_FORMAT, "\"rollout_id\" is not a finite number");
    }
    double x = rid->valuedouble;
    size_t added = 0;
    bool oom = false;
    for (const cJSON *it = o->child; it; it = it->next) {
        if (!it->string || !cJSON_IsNumber(it) || !isfinite(it->valuedouble)) continue;
        if (strcmp(it->string, "rollout_id") == 0) continue;
        qn_metric_series *s = series_for(m, it->string, &oom);
        if (oom) break;
        if (!s) continue;
        if (!series_push(s, x, it->valuedouble)) {
            oom = true;
            break;
        }
        added++;
    }
    cJSON_Delete(o);
    if (oom) return qn_fail(QN_ERR_NOMEM, "metrics: out of memory");
    if (added)
        m->lines_used++;
    else
        m->lines_ignored++;
    return QN_OK;
}

static int cmp_point_x(const void *a, const void *b) {
    double xa = ((const qn_metric_point *)a)->x, xb = ((const qn_metric_point *)b)->x;
    return (xa > xb) - (xa < xb);
}

void qn_metrics_finish(qn_metrics *m) {
    if (m->finished) return;
    m->finished = true;
    for (size_t k = 0; k < m->n_series; k++) {
        qn_metric_series *s = &m->series[k];
        if (s->n == 0) continue;
        qsort(s->pts, s->n, sizeof *s->pts, cmp_point_x);
        size_t out = 0;
        for (size_t i = 0; i < s->n;) {
            size_t j = i;
            /* a running mean stays finite where a plain sum of large
             * finite values would overflow */
            double mean = 0;
            for (; j < s->n && s->pts[j].x == s->pts[i].x; j++)
                mean += (s->pts[j].y - mean) / (double)(j - i + 1);
            s->pts[out++] = (qn_metric_point){s->pts[i].x, mean};
            i = j;
        }
        s->n = out;
    }
}

typedef struct load_ctx {
    qn_metrics *m;
    const char *path;
    qn_metrics_warn_fn warn;
    void *user;
    size_t malformed;
} load_ctx;

static qn_status load_line(const char *text, long line, void *user) {
    load_ctx *c = user;
    qn_status s = qn_metrics_add_line(c->m, text, strlen(text));
    if (s == QN_OK) return QN_OK;
    if (s != QN_ERR_FORMAT) return qn_fail(s, "%s:%ld: %s", c->path, line, qn_last_error());
    c->malformed++;
    char msg[512];
    snprintf(msg, sizeof msg, "%s:%ld: %s; line skipped", c->path, line, qn_last_error());
    if (c->warn)
        c->warn(msg, c->user);
    else
        QN_LOG_WARN("%s", msg);
    return QN_OK;
}

qn_status qn_metrics_load(qn_metrics *m, const char *path, qn_metrics_warn_fn warn, void *user,
                          size_t *n_malformed) {
    load_ctx c = {.m = m, .path = path, .warn = warn, .user = user};
    qn_status s = qn_jsonl_foreach(path, load_line, &c);
    if (n_malformed) *n_malformed = c.malformed;
    if (s != QN_OK) return s;
    qn_metrics_finish(m);
    return QN_OK;
}
