/* cmd_plot.c — `quench plot RUN_DIR`: PNG charts of a GRPO run's metrics.
 *
 * Reads RUN_DIR/metrics.jsonl (core/io/metrics.h: every process of the job
 * appends to it; x is rollout_id, several lines of one rollout averaged),
 * draws one chart per group of metrics below (core/io/chart.h) and writes
 * it as RUN_DIR/charts/<name>.png (core/io/png.h), printing each path. A
 * chart none of whose metrics occur is skipped with a note on stderr.
 * Malformed lines are skipped with a warning naming FILE:LINE. Left out:
 * live refresh, SVG/HTML output, smoothing, per-step x axes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/commands.h"
#include "core/flags.h"
#include "core/io/chart.h"
#include "core/io/metrics.h"
#include "core/io/png.h"

typedef struct plot_cfg {
    char *out;
    int64_t width, height;
} plot_cfg;

static const qn_flag k_plot_flags[] = {
    QN_F_STRING(plot_cfg, out, "out", NULL, "folder for the PNG files (default RUN_DIR/charts)",
                .metavar = "DIR"),
    QN_F_INT(plot_cfg, width, "width", "800", 320, 4096, "chart width in pixels"),
    QN_F_INT(plot_cfg, height, "height", "480", 200, 4096, "chart height in pixels"),
};
static const qn_flag_table k_plot_table = {
    .command = "plot",
    .usage = "quench plot RUN_DIR [--out DIR] [--width N] [--height N]",
    .summary = "Draws PNG line charts of RUN_DIR/metrics.jsonl against rollout_id: reward,\n"
               "accuracy, response_length, kl, entropy, clip_fraction, tokens_per_s,\n"
               "step_time. Metrics of one rollout on several lines are averaged. Prints the\n"
               "paths written; charts without data are skipped (noted on stderr).",
    .flags = k_plot_flags,
    .n_flags = QN_FLAGS_COUNT(k_plot_flags),
    .cfg_size = sizeof(plot_cfg)};

void qn_help_plot(FILE *out) { qn_flags_print_help(&k_plot_table, out); }

enum { MAX_CHART_SERIES = 4 };

typedef struct chart_def {
    const char *file;    /* <file>.png */
    const char *title;
    const char *y_label;
    const char *keys[MAX_CHART_SERIES]; /* NULL-terminated when shorter */
    bool markers;
    bool y_from_zero;
} chart_def;

static const chart_def k_charts[] = {
    {"reward", "REWARD (ROLLOUT/RAW_REWARD)", "MEAN REWARD", {"rollout/raw_reward"}, false, false},
    {"accuracy", "EVAL ACCURACY (EVAL/ACCURACY)", "ACCURACY", {"eval/accuracy"}, true, false},
    {"response_length", "RESPONSE LENGTH (MEAN)", "TOKENS", {"rollout/response_len/mean"}, false,
     false},
    {"kl", "KL", "KL", {"train/ppo_kl", "train/kl_loss"}, false, false},
    {"entropy", "ENTROPY (TRAIN/ENTROPY_LOSS)", "ENTROPY", {"train/entropy_loss"}, false, false},
    {"clip_fraction", "CLIP FRACTION (TRAIN/PG_CLIPFRAC)", "FRACTION", {"train/pg_clipfrac"},
     false, false},
    {"tokens_per_s", "ROLLOUT THROUGHPUT (PERF/ROLLOUT_TOKENS_PER_S)", "TOKENS/S",
     {"perf/rollout_tokens_per_s"}, false, true},
    {"step_time", "STEP TIME BREAKDOWN", "SECONDS",
     {"perf/rollout_time", "perf/train_time", "perf/update_weights_time", "perf/train_wait_time"},
     false, true},
};

/* Distinct on white and from each other (and from the grey frame). */
static const qn_rgb k_series_colors[MAX_CHART_SERIES] = {
    {31, 119, 180}, {230, 110, 0}, {44, 160, 44}, {200, 30, 40}};

static void warn_line(const char *message, void *user) {
    (void)user;
    fprintf(stderr, "quench plot: warning: %s\n", message);
}

/* mkdir -p */
static qn_status make_dirs(const char *path) {
    char *p = strdup(path);
    if (!p) return qn_fail(QN_ERR_NOMEM, "out of memory");
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char saved = *s;
            *s = '\0';
            if (mkdir(p, 0777) != 0 && errno != EEXIST) {
                qn_status st = qn_fail(QN_ERR_IO, "%s: cannot create folder: %s", p,
                                       strerror(errno));
                free(p);
                return st;
            }
            *s = saved;
            if (saved == '\0') break;
        }
    }
    free(p);
    return QN_OK;
}

/* Draws one chart into path; *drawn false (and QN_OK) when none of its
 * metrics has data, or (*noted set, a note printed) when its values span
 * more than a double can hold: one wild metric does not cost the others. */
static qn_status draw_chart(const chart_def *d, const qn_metrics *m, const plot_cfg *cfg,
                            const char *path, bool *drawn, bool *noted) {
    *drawn = false;
    *noted = false;
    qn_chart_series series[MAX_CHART_SERIES];
    double *xs[MAX_CHART_SERIES] = {0}, *ys[MAX_CHART_SERIES] = {0};
    size_t n_defined = 0, n = 0;
    qn_status s = QN_OK;
    for (size_t k = 0; k < MAX_CHART_SERIES && d->keys[k]; k++) {
        n_defined++;
        const qn_metric_series *ms = qn_metrics_get(m, d->keys[k]);
        if (!ms || ms->n == 0) continue;
        xs[n] = malloc(ms->n * sizeof(double));
        ys[n] = malloc(ms->n * sizeof(double));
        if (!xs[n] || !ys[n]) {
            n++;
            s = qn_fail(QN_ERR_NOMEM, "out of memory");
            goto done;
        }
        for (size_t i = 0; i < ms->n; i++) {
            xs[n][i] = ms->pts[i].x;
            ys[n][i] = ms->pts[i].y;
        }
        /* the colour follows the metric, not its position among those present */
        series[n] = (qn_chart_series){.name = d->keys[k], .x = xs[n], .y = ys[n], .n = ms->n,
                                      .color = k_series_colors[k], .markers = d->markers};
        n++;
    }
    if (n == 0) goto done;
    qn_chart ch = {.title = d->title, .x_label = "ROLLOUT", .y_label = d->y_label,
                   .series = series, .n_series = n, .legend = n_defined > 1,
                   .y_from_zero = d->y_from_zero};
    qn_canvas c;
    s = qn_canvas_init(&c, (int32_t)cfg->width, (int32_t)cfg->height, (qn_rgb){255, 255, 255});
    if (s != QN_OK) goto done;
    s = qn_chart_render(&ch, &c);
    if (s == QN_ERR_RANGE) {
        fprintf(stderr, "quench plot: skipping chart '%s': %s\n", d->file, qn_last_error());
        *noted = true;
        qn_canvas_free(&c);
        s = QN_OK;
        goto done;
    }
    if (s == QN_OK) {
        qn_png_image img = {.width = (uint32_t)c.w, .height = (uint32_t)c.h,
                            .format = QN_PNG_RGB8, .pixels = c.rgb};
        s = qn_png_write(path, &img);
    }
    qn_canvas_free(&c);
    if (s == QN_OK) *drawn = true;
done:
    for (size_t i = 0; i < n; i++) {
        free(xs[i]);
        free(ys[i]);
    }
    return s;
}

int qn_cmd_plot(int argc, char **argv) {
    plot_cfg cfg;
    qn_flags_parsed p;
    if (qn_flags_parse(&k_plot_table, &cfg, argc, argv, &p) != QN_OK) {
        fprintf(stderr, "quench plot: %s\n", qn_last_error());
        return QN_EXIT_USAGE;
    }
    int rc = QN_EXIT_FAILURE;
    char *metrics_path = NULL, *out_dir = NULL;
    qn_metrics m;
    qn_metrics_init(&m);
    if (p.print_config) {
        qn_flags_dump(&k_plot_table, &cfg, &p, stdout);
        rc = QN_EXIT_OK;
        goto done;
    }
    if (p.n_args != 1) {
        fprintf(stderr, "quench plot: expected one RUN_DIR argument, got %zu; usage: %s\n",
                p.n_args, k_plot_table.usage);
        rc = QN_EXIT_USAGE;
        goto done;
    }
    const char *run_dir = p.args[0];
    if (asprintf(&metrics_path, "%s/metrics.jsonl", run_dir) < 0) {
        metrics_path = NULL;
        goto done;
    }
    struct stat st;
    if (stat(metrics_path, &st) != 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "quench plot: %s: no such file (is %s a run folder?)\n", metrics_path,
                run_dir);
        goto done;
    }
    size_t malformed = 0;
    if (qn_metrics_load(&m, metrics_path, warn_line, NULL, &malformed) != QN_OK) {
        fprintf(stderr, "quench plot: %s\n", qn_last_error());
        goto done;
    }
    if (m.lines_used == 0) {
        fprintf(stderr,
                "quench plot: %s: no usable line (%zu malformed, %zu without rollout_id or "
                "numeric metrics)\n",
                metrics_path, malformed, m.lines_ignored);
        goto done;
    }
    if (cfg.out)
        out_dir = strdup(cfg.out);
    else if (asprintf(&out_dir, "%s/charts", run_dir) < 0)
        out_dir = NULL;
    if (!out_dir) goto done;
    if (make_dirs(out_dir) != QN_OK) {
        fprintf(stderr, "quench plot: %s\n", qn_last_error());
        goto done;
    }
    size_t written = 0;
    for (size_t i = 0; i < sizeof k_charts / sizeof k_charts[0]; i++) {
        const chart_def *d = &k_charts[i];
        char *path = NULL;
        if (asprintf(&path, "%s/%s.png", out_dir, d->file) < 0) goto done;
        bool drawn = false, noted = false;
        qn_status s = draw_chart(d, &m, &cfg, path, &drawn, &noted);
        if (s != QN_OK) {
            fprintf(stderr, "quench plot: chart '%s': %s\n", d->file, qn_last_error());
            free(path);
            goto done;
        }
        if (drawn) {
            printf("%s\n", path);
            written++;
        } else if (!noted) {
            char keys[256] = "";
            for (size_t k = 0; k < MAX_CHART_SERIES && d->keys[k]; k++) {
                if (k) strncat(keys, ", ", sizeof keys - strlen(keys) - 1);
                strncat(keys, d->keys[k], sizeof keys - strlen(keys) - 1);
            }
            fprintf(stderr, "quench plot: skipping chart '%s': no %s in %s\n", d->file, keys,
                    metrics_path);
        }
        free(path);
    }
    if (written == 0) {
        fprintf(stderr, "quench plot: %s: none of the charted metrics occurs; nothing written\n",
                metrics_path);
        goto done;
    }
    rc = QN_EXIT_OK;
done:
    qn_metrics_free(&m);
    free(metrics_path);
    free(out_dir);
    qn_flags_parsed_free(&p);
    qn_flags_free(&k_plot_table, &cfg);
    return rc;
}
