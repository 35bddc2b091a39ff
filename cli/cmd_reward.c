/* cmd_reward.c — `quench reward`: score a JSONL file offline with a built-in
 * reward or a plugin, to check a reward function before a run (and to
 * measure its throughput with --repeat).
 *
 * Input, one JSON object per line:
 *   {"prompt": ..., "response": "...", "label": ..., "metadata": {...}}
 * (prompt may be a string or a list of chat messages, which is passed as its
 * JSON text; a numeric label is passed as its shortest text, 27.0 -> "27";
 * optional "finish_reason", "prompt_ids", "response_ids"). Output, one line
 * per input line in the same order:
 *   {"reward": 1, "status": "ok"}
 *   {"reward": null, "status": "timeout", "message": "..."}
 * plus "scores" (named numbers) when the reward reports any, and
 * "group_dropped": true for samples of a group the drop policy removed.
 * A line that is not a valid sample gets status "bad_input" and the exit
 * status is 1; so is any failure under --reward-failure fail.
 *
 * Left out: streaming very large files (the file is read whole).
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "cli/commands.h"
#include "core/flags.h"
#include "core/log.h"
#include "rewards/rewards.h"
#include "core/clock.h"

typedef struct reward_cfg {
    char *rm_type;
    char *custom_rm_path;
    char *rm_config;
    char *reward_key;
    int isolation;
    int failure;
    double timeout;
    int64_t workers;
    int64_t worker_memory_mb;
    char *rm_url;
    int64_t rm_concurrency;
    int64_t rm_retries;
    double rm_backoff;
    char *input;
    char *output;
    int64_t group_size;
    int64_t repeat;
} reward_cfg;

static const qn_flag k_reward_flags[] = {
    QN_F_STRING(reward_cfg, rm_type, "rm-type", NULL,
                "built-in reward: math|deepscaler|dapo|exact|f1|remote_rm", .metavar = "NAME"),
    QN_F_STRING(reward_cfg, custom_rm_path, "custom-rm-path", NULL,
                "reward plugin PATH.so[:SYMBOL] (SYMBOL: table base name, default "
                "qn_reward_plugin)",
                .metavar = "SO"),
    QN_F_STRING(reward_cfg, rm_config, "rm-config", NULL, "string passed to the plugin's init",
                .metavar = "TEXT"),
    QN_F_STRING(reward_cfg, reward_key, "reward-key", NULL,
                "use this named score as the reward instead of the main value", .metavar = "NAME"),
    QN_F_CHOICE(reward_cfg, isolation, "reward-isolation", "process", "process|inline",
                "run the reward in worker processes (crash/hang safe) or in this process"),
    QN_F_CHOICE(reward_cfg, failure, "reward-failure", "drop", "drop|zero|fail",
                "a failed sample drops its group, scores 0 (status kept), or stops the run"),
    QN_F_FLOAT(reward_cfg, timeout, "reward-timeout", "10", 0.001, 86400,
               "seconds per sample (process isolation and remote_rm)"),
    QN_F_INT(reward_cfg, workers, "reward-workers", "4", 1, 1024, "worker processes"),
    QN_F_INT(reward_cfg, worker_memory_mb, "reward-worker-memory-mb", "2048", 0, 1 << 24,
             "RSS limit per worker in MiB: passing it kills the sample (status memory); above 3/4 "
             "of it after a sample the worker is replaced; 0: no limit"),
    QN_F_STRING(reward_cfg, rm_url, "rm-url", NULL, "remote_rm: URL to POST samples to",
                .metavar = "URL"),
    QN_F_INT(reward_cfg, rm_concurrency, "rm-concurrency", "64", 1, 4096,
             "remote_rm: requests in flight at once"),
    QN_F_INT(reward_cfg, rm_retries, "rm-retries", "3", 0, 100,
             "remote_rm: retries after 5xx, timeouts and connection errors"),
    QN_F_FLOAT(reward_cfg, rm_backoff, "rm-backoff", "0.1", 0, 60,
               "remote_rm: first retry delay in seconds (doubles each retry, with jitter)"),
    QN_F_STRING(reward_cfg, input, "input", NULL, "samples to score, JSONL",
                .attrs = QN_FLAG_REQUIRED, .metavar = "PATH"),
    QN_F_STRING(reward_cfg, output, "output", "-", "where to write results ('-': stdout)",
                .metavar = "PATH"),
    QN_F_INT(reward_cfg, group_size, "group-size", "1", 1, 65536,
             "consecutive lines per prompt group (group rewards, drop policy)"),
    QN_F_INT(reward_cfg, repeat, "repeat", "1", 1, 1000000,
             "score the file this many times and report throughput (output written once)"),
};

static const qn_flag_table k_reward_table = {
    .command = "reward",
    .usage = "quench reward (--rm-type NAME | --custom-rm-path SO) --input samples.jsonl [flags]",
    .summary =
        "Scores a JSONL file of samples offline and writes one JSON result per line:\n"
        "{\"reward\": x, \"status\": \"ok\"} or {\"reward\": null, \"status\": \"<reason>\"}.\n"
        "A summary with failure counts and throughput goes to stderr.",
    .flags = k_reward_flags,
    .n_flags = QN_FLAGS_COUNT(k_reward_flags),
    .cfg_size = sizeof(reward_cfg)};

void qn_help_reward(FILE *out) {
    qn_flags_print_help(&k_reward_table, out);
}

typedef struct owned_sample {
    char *prompt, *response, *label, *meta, *finish;
    int32_t *prompt_ids, *response_ids;
    size_t n_prompt_ids, n_response_ids;
    char *bad; /* why the line is not a sample, or NULL */
} owned_sample;

static char *json_text(const cJSON *it) {
    if (!it || cJSON_IsNull(it)) return strdup("");
    if (cJSON_IsString(it)) return strdup(it->valuestring);
    if (cJSON_IsNumber(it)) {
        char buf[64];
        double v = it->valuedouble;
        if (isfinite(v) && v == floor(v) && fabs(v) < 1e15)
            snprintf(buf, sizeof buf, "%.0f", v);
        else
            snprintf(buf, sizeof buf, "%.17g", v);
        return strdup(buf);
    }
    return cJSON_PrintUnformatted(it);
}

static bool read_ids(const cJSON *arr, int32_t **out, size_t *n) {
    *out = NULL;
    *n = 0;
    if (!arr) return true;
    if (!cJSON_IsArray(arr)) return false;
    size_t cnt = (size_t)cJSON_GetArraySize(arr);
    if (cnt == 0) return true;
    *out = malloc(cnt * sizeof **out);
    if (!*out) return false;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > 2147483647.0)
            return false;
        (*out)[(*n)++] = (int32_t)it->valuedouble;
    }
    return true;
}

static void parse_line(const char *line, owned_sample *o) {
    memset(o, 0, sizeof *o);
    cJSON *j = cJSON_Parse(line);
    char why[160] = "";
    if (!j || !cJSON_IsObject(j)) {
        snprintf(why, sizeof why, "not a JSON object");
    } else {
        const cJSON *resp = cJSON_GetObjectItemCaseSensitive(j, "response");
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(j, "metadata");
        const cJSON *fin = cJSON_GetObjectItemCaseSensitive(j, "finish_reason");
        if (!cJSON_IsString(resp)) {
            snprintf(why, sizeof why, "\"response\" must be a string");
        } else if (meta && !cJSON_IsObject(meta) && !cJSON_IsNull(meta)) {
            snprintf(why, sizeof why, "\"metadata\" must be an object");
        } else if (fin && !cJSON_IsString(fin)) {
            snprintf(why, sizeof why, "\"finish_reason\" must be a string");
        } else if (!read_ids(cJSON_GetObjectItemCaseSensitive(j, "prompt_ids"), &o->prompt_ids,
                             &o->n_prompt_ids) ||
                   !read_ids(cJSON_GetObjectItemCaseSensitive(j, "response_ids"), &o->response_ids,
                             &o->n_response_ids)) {
            snprintf(why, sizeof why,
                     "\"prompt_ids\"/\"response_ids\" must be arrays of token ids");
        } else {
            o->prompt = json_text(cJSON_GetObjectItemCaseSensitive(j, "prompt"));
            o->response = strdup(resp->valuestring);
            o->label = json_text(cJSON_GetObjectItemCaseSensitive(j, "label"));
            o->meta = meta && cJSON_IsObject(meta) ? cJSON_PrintUnformatted(meta) : strdup("{}");
            o->finish = strdup(fin ? fin->valuestring : "");
        }
    }
    cJSON_Delete(j);
    if (why[0]) o->bad = strdup(why);
}

static void owned_free(owned_sample *o) {
    free(o->prompt);
    free(o->response);
    free(o->label);
    free(o->meta);
    free(o->finish);
    free(o->prompt_ids);
    free(o->response_ids);
    free(o->bad);
}

static void write_result(FILE *out, const qn_reward_score *s, bool dropped, const char *bad) {
    cJSON *o = cJSON_CreateObject();
    if (bad) {
        cJSON_AddNullToObject(o, "reward");
        cJSON_AddStringToObject(o, "status", "bad_input");
        cJSON_AddStringToObject(o, "message", bad);
    } else {
        if (isfinite(s->value))
            cJSON_AddNumberToObject(o, "reward", s->value);
        else
            cJSON_AddNullToObject(o, "reward");
        cJSON_AddStringToObject(o, "status", qn_reward_status_str(s->status));
        if (s->status != QN_REWARD_OK) cJSON_AddStringToObject(o, "message", s->message);
        if (s->n_named > 0) {
            cJSON *named = cJSON_AddObjectToObject(o, "scores");
            for (uint32_t i = 0; i < s->n_named && i < QN_REWARD_MAX_NAMED; i++) {
                char name[QN_REWARD_NAME_CAP];
                snprintf(name, sizeof name, "%s", s->names[i]);
                if (isfinite(s->named[i]))
                    cJSON_AddNumberToObject(named, name, s->named[i]);
                else
                    cJSON_AddNullToObject(named, name);
            }
        }
        if (dropped) cJSON_AddTrueToObject(o, "group_dropped");
    }
    char *text = cJSON_PrintUnformatted(o);
    fprintf(out, "%s\n", text ? text : "{\"reward\": null, \"status\": \"error\"}");
    free(text);
    cJSON_Delete(o);
}

static double cpu_seconds(int who) {
    struct rusage ru;
    if (getrusage(who, &ru) != 0) return 0.0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

/* Reads the input file into lines (in place: newlines become NULs). */
static char **split_lines(char *text, size_t *n_out) {
    size_t cap = 1024, n = 0;
    char **lines = malloc(cap * sizeof *lines);
    for (char *p = text; lines && *p;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = '\0';
        size_t len = strlen(p);
        if (len && p[len - 1] == '\r') p[len - 1] = '\0';
        bool blank = p[strspn(p, " \t")] == '\0';
        if (!blank) {
            if (n == cap) {
                char **nl2 = realloc(lines, 2 * cap * sizeof *lines);
                if (!nl2) {
                    free(lines);
                    return NULL;
                }
                lines = nl2;
                cap *= 2;
            }
            lines[n++] = p;
        }
        if (!nl) break;
        p = nl + 1;
    }
    *n_out = n;
    return lines;
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (n + 1 == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    bool err = ferror(f);
    fclose(f);
    if (!buf || err) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

int qn_cmd_reward(int argc, char **argv) {
    reward_cfg cfg;
    qn_flags_parsed parsed;
    if (qn_flags_parse(&k_reward_table, &cfg, argc, argv, &parsed) != QN_OK) {
        fprintf(stderr, "quench reward: %s\n", qn_last_error());
        return QN_EXIT_USAGE;
    }
    int rc = QN_EXIT_FAILURE;
    char *text = NULL, **lines = NULL;
    owned_sample *owned = NULL;
    qn_reward_sample *samples = NULL;
    qn_reward_score *scores = NULL;
    uint32_t *gsizes = NULL;
    bool *kept = NULL;
    qn_reward *rw = NULL;
    FILE *out = NULL;
    size_t n = 0, n_groups = 0, n_bad = 0;

    if (parsed.print_config) {
        qn_flags_dump(&k_reward_table, &cfg, &parsed, stdout);
        rc = QN_EXIT_OK;
        goto done;
    }
    if ((cfg.rm_type != NULL) == (cfg.custom_rm_path != NULL)) {
        fprintf(stderr, "quench reward: give exactly one of --rm-type and --custom-rm-path\n");
        rc = QN_EXIT_USAGE;
        goto done;
    }
    qn_flags_log(&k_reward_table, &cfg, &parsed);
    text = read_file(cfg.input);
    if (!text) {
        fprintf(stderr, "quench reward: --input %s: cannot read the file\n", cfg.input);
        goto done;
    }
    lines = split_lines(text, &n);
    owned = calloc(n ? n : 1, sizeof *owned);
    samples = calloc(n ? n : 1, sizeof *samples);
    scores = calloc(n ? n : 1, sizeof *scores);
    if (!lines || !owned || !samples || !scores) {
        fprintf(stderr, "quench reward: out of memory\n");
        goto done;
    }
    /* good samples are packed; bad lines keep their place in the output */
    size_t n_good = 0;
    for (size_t i = 0; i < n; i++) {
        parse_line(lines[i], &owned[i]);
        if (owned[i].bad) {
            n_bad++;
            fprintf(stderr, "quench reward: %s line %zu: %s\n", cfg.input, i + 1, owned[i].bad);
        }
    }
    size_t gs = (size_t)cfg.group_size;
    gsizes = calloc(n / gs + 2, sizeof *gsizes);
    kept = calloc(n / gs + 2, sizeof *kept);
    if (!gsizes || !kept) goto done;
    /* groups are consecutive runs of group_size input lines, bad lines left out */
    for (size_t start = 0; start < n; start += gs) {
        uint32_t cnt = 0;
        for (size_t i = start; i < start + gs && i < n; i++) {
            if (owned[i].bad) continue;
            owned_sample *o = &owned[i];
            samples[n_good++] = (qn_reward_sample){.prompt = o->prompt,
                                                   .prompt_len = strlen(o->prompt),
                                                   .prompt_ids = o->prompt_ids,
                                                   .n_prompt_ids = o->n_prompt_ids,
                                                   .response = o->response,
                                                   .response_len = strlen(o->response),
                                                   .response_ids = o->response_ids,
                                                   .n_response_ids = o->n_response_ids,
                                                   .label = o->label,
                                                   .metadata_json = o->meta,
                                                   .finish_reason = o->finish,
                                                   .group_index = (uint32_t)n_groups,
                                                   .sample_index = cnt};
            cnt++;
        }
        if (cnt) gsizes[n_groups++] = cnt;
    }

    qn_reward_config rc_cfg = qn_reward_config_default();
    rc_cfg.rm_type = cfg.rm_type;
    rc_cfg.custom_rm_path = cfg.custom_rm_path;
    rc_cfg.rm_config = cfg.rm_config;
    rc_cfg.reward_key = cfg.reward_key;
    rc_cfg.isolation = (qn_reward_isolation)cfg.isolation;
    rc_cfg.failure = (qn_reward_failure)cfg.failure;
    rc_cfg.timeout_s = cfg.timeout;
    rc_cfg.n_workers = (int32_t)cfg.workers;
    rc_cfg.worker_memory_mb = cfg.worker_memory_mb;
    rc_cfg.rm_url = cfg.rm_url;
    rc_cfg.rm_concurrency = (int32_t)cfg.rm_concurrency;
    rc_cfg.rm_retries = (int32_t)cfg.rm_retries;
    rc_cfg.rm_backoff_s = cfg.rm_backoff;
    if (qn_reward_init(&rw, &rc_cfg) != QN_OK) {
        fprintf(stderr, "quench reward: %s\n", qn_last_error());
        goto done;
    }
    QN_LOG_INFO("reward %s: %zu samples in %zu groups", qn_reward_name(rw), n_good, n_groups);

    qn_status policy = QN_OK;
    double t0 = qn_now_s();
    for (int64_t r = 0; r < cfg.repeat; r++) {
        qn_reward_batch b = {.samples = samples,
                             .n_samples = n_good,
                             .group_sizes = gsizes,
                             .n_groups = n_groups,
                             .scores = scores,
                             .group_kept = kept};
        qn_status s = qn_reward_score_batch(rw, &b);
        if (s != QN_OK) {
            fprintf(stderr, "quench reward: %s\n", qn_last_error());
            policy = s;
            break;
        }
    }
    double dt = qn_now_s() - t0;

    out = strcmp(cfg.output, "-") == 0 ? stdout : fopen(cfg.output, "w");
    if (!out) {
        fprintf(stderr, "quench reward: --output %s: cannot open for writing\n", cfg.output);
        goto done;
    }
    size_t gi = 0, gpos = 0, k = 0;
    for (size_t i = 0; i < n; i++) {
        if (owned[i].bad) {
            write_result(out, NULL, false, owned[i].bad);
            continue;
        }
        write_result(out, &scores[k], !kept[gi], NULL);
        k++;
        if (++gpos == gsizes[gi]) {
            gi++;
            gpos = 0;
        }
    }
    if (out != stdout && fclose(out) != 0) {
        fprintf(stderr, "quench reward: --output %s: write failed\n", cfg.output);
        out = NULL;
        goto done;
    }
    out = NULL;

    qn_reward_stats st;
    qn_reward_get_stats(rw, &st);
    uint64_t failed = st.samples - st.by_status[QN_REWARD_OK];
    fprintf(stderr, "quench reward: %zu samples (%zu bad lines), ok %llu, failed %llu", n_good,
            n_bad, (unsigned long long)st.by_status[QN_REWARD_OK], (unsigned long long)failed);
    for (int s = 1; s < QN_REWARD_STATUS_COUNT; s++)
        if (st.by_status[s])
            fprintf(stderr, " %s=%llu", qn_reward_status_str(s),
                    (unsigned long long)st.by_status[s]);
    fprintf(stderr, "; groups dropped %llu/%llu; workers restarted %llu, recycled %llu\n",
            (unsigned long long)st.groups_dropped, (unsigned long long)st.groups,
            (unsigned long long)st.worker_restarts, (unsigned long long)st.worker_recycles);
    /* workers are reaped by qn_reward_free, so their CPU time is known after it */
    qn_reward_free(rw);
    rw = NULL;
    double cpu_self = cpu_seconds(RUSAGE_SELF), cpu_workers = cpu_seconds(RUSAGE_CHILDREN);
    double scored = (double)n_good * (double)cfg.repeat;
    fprintf(stderr,
            "quench reward: scored %.0f samples in %.3f s: %.1f samples/s, %.2f us/sample\n",
            scored, dt, dt > 0 ? scored / dt : 0.0, scored > 0 ? dt / scored * 1e6 : 0.0);
    fprintf(stderr,
            "quench reward: cpu %.3f s (this process %.3f s incl. reading input, workers "
            "%.3f s): %.2f cpu-us/sample\n",
            cpu_self + cpu_workers, cpu_self, cpu_workers,
            scored > 0 ? (cpu_self + cpu_workers) / scored * 1e6 : 0.0);
    rc = (policy == QN_OK && n_bad == 0) ? QN_EXIT_OK : QN_EXIT_FAILURE;
done:
    if (out && out != stdout) fclose(out);
    qn_reward_free(rw);
    for (size_t i = 0; owned && i < n; i++)
        owned_free(&owned[i]);
    free(owned);
    free(samples);
    free(scores);
    free(gsizes);
    free(kept);
    free(lines);
    free(text);
    qn_flags_parsed_free(&parsed);
    qn_flags_free(&k_reward_table, &cfg);
    return rc;
}
