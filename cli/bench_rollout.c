/* bench_rollout.c — `quench bench rollout`: prefill and decode tokens/s of the
 * rollout engine (rollout/engine.h) at several batch sizes, against
 *
 *   (a) the memory-bandwidth bound of a decode step: the bytes one step must
 *       read (weights: core/model/infer.h qn_infer_weight_bytes, plus the K/V
 *       rows every sequence attends to) divided by the machine's copy
 *       bandwidth, measured in the same run (memcpy of a buffer far larger
 *       than the last-level cache, the same thread count, read + write bytes
 *       counted, best of a few; a read-only figure of the same buffer is
 *       printed beside it for reference, the bound does not use it);
 *   (b) a plain PyTorch generation loop on the same weights and threads
 *       (tests/ref/generate_ref.py bench: float32, one prefill forward, K/V
 *       cache grown by torch.cat).
 *
 * Random weights from --config. Per batch size, one engine runs an untimed
 * warm-up round (the same shapes), then the timed phases, each with new random
 * prompts, so nothing comes from the prefix cache (the JSON line shows the
 * prefix-hit count). Prefill:
 * B prompts of --prompt-len tokens with max_new_tokens 1; tokens/s over the
 * steps that computed something (chunked under --max-prefill-tokens). Decode:
 * greedy, EOS ignored; only steps in which all B sequences decode one token
 * are timed, after one such warm-up step; the median step is reported (the
 * machine is shared; the mean is in the JSON line).
 *
 * Routed experts read per MoE layer in a decode step are taken as
 * min(n_experts, B * top_k): exact at batch 1, an upper bound above it (the
 * run does not count the experts the router picks), which can only lower the
 * bound's tokens/s. Leaves out: GPU, FP8 in the PyTorch loop (it runs the
 * dequantised fp32 weights), sampling with temperature. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/bench_rollout.h"
#include "cli/commands.h"
#include "core/bigmem.h"
#include "core/flags.h"
#include "core/model/infer.h"
#include "core/model/model.h"
#include "rollout/engine.h"

typedef struct bench_rollout_cfg {
    char *config, *ref, *python;
    qn_int_list batches;
    int64_t threads, prompt_len, decode_steps, max_prefill_tokens, block_size, seed, copy_mib;
    int quantize;
    bool no_ref;
} bench_rollout_cfg;

static const qn_flag k_br_flags[] = {
    QN_F_STRING(bench_rollout_cfg, config, "config",
                QN_SOURCE_DIR "/bench/configs/glm45_25m.json",
                "Hugging Face config.json of the model (random weights)", .metavar = "CONFIG.json"),
    QN_F_INT(bench_rollout_cfg, threads, "threads", "2", 1, 4096,
             "CPU threads (engine, copy bandwidth and the PyTorch loop)"),
    QN_F_INT_LIST(bench_rollout_cfg, batches, "batches", "1,16,64,256", 1, 65536,
                  "batch sizes (sequences decoding together)"),
    QN_F_INT(bench_rollout_cfg, prompt_len, "prompt-len", "128", 1, 1048576, "tokens per prompt"),
    QN_F_INT(bench_rollout_cfg, decode_steps, "decode-steps", "16", 1, 1048576,
             "timed decode steps (after one warm-up step)"),
    QN_F_CHOICE(bench_rollout_cfg, quantize, "quantize", "none", "none|fp8",
                "fp8: the engine multiplies by 128x128-block e4m3 weights"),
    QN_F_INT(bench_rollout_cfg, max_prefill_tokens, "max-prefill-tokens", "2048", 1, 1e9,
             "engine prefill budget per step"),
    QN_F_INT(bench_rollout_cfg, block_size, "block-size", "16", 1, 64, "KV cache block size"),
    QN_F_INT(bench_rollout_cfg, copy_mib, "copy-mib", "512", 16, 65536,
             "buffer size of the copy-bandwidth measurement (well above the LLC)"),
    QN_F_INT(bench_rollout_cfg, seed, "seed", "1", 0, 1e15, "seed of the weights and prompts"),
    QN_F_BOOL(bench_rollout_cfg, no_ref, "no-ref", "false", "skip the PyTorch loop"),
    QN_F_STRING(bench_rollout_cfg, ref, "ref", QN_SOURCE_DIR "/tests/ref/generate_ref.py",
                "the PyTorch generation loop script", .metavar = "PATH"),
    QN_F_STRING(bench_rollout_cfg, python, "python", "/usr/bin/python3",
                "python with torch (Debian python3-torch)", .metavar = "PATH"),
};
static const qn_flag_table k_br_table = {
    .command = "bench rollout",
    .usage = "quench bench rollout [--config CONFIG.json] [--threads 2] [--batches 1,16,64,256]\n"
             "       [--prompt-len 128] [--decode-steps 16] [--quantize none|fp8] [--no-ref]",
    .summary = "Prefill and decode tokens/s of the rollout engine per batch size, against the\n"
               "memory-bandwidth bound of a decode step (bytes read per step over the copy\n"
               "bandwidth measured in the same run) and against a plain PyTorch generation\n"
               "loop on the same weights and threads; prints a table and one JSON line per\n"
               "batch size.",
    .flags = k_br_flags,
    .n_flags = QN_FLAGS_COUNT(k_br_flags),
    .cfg_size = sizeof(bench_rollout_cfg)};

void qn_help_bench_rollout(FILE *out) { qn_flags_print_help(&k_br_table, out); }

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t xs(uint64_t *x) {
    *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
    return *x;
}

/* Copy bandwidth in bytes/s: every thread memcpy's its slice of a buffer of
 * mib MiB; read + write bytes over the slowest thread's time, best of reps.
 * Also *rbw, a read-only figure for reference (one load per 64-byte line of
 * the same buffer, which the hardware fetches whole); the bound uses *bw.
 * The buffers are allocated like the engine's weights and KV cache
 * (qn_big_alloc: 2 MiB pages where the kernel gives them), so the bound is
 * measured with the same page size the engine reads through. */
static qn_status copy_bandwidth(int64_t mib, int threads, int reps, double *bw, double *rbw) {
    size_t n = (size_t)mib << 20;
    char *src = qn_big_alloc(n), *dst = qn_big_alloc(n);
    if (!src || !dst) {
        qn_big_free(src, n), qn_big_free(dst, n);
        return qn_fail(QN_ERR_NOMEM, "bench rollout: %lld MiB copy buffers", (long long)mib);
    }
    /* first touch from the threads that will copy, so pages are mapped */
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        size_t a = n / (size_t)nt * (size_t)t, b = t == nt - 1 ? n : n / (size_t)nt * (size_t)(t + 1);
        memset(src + a, 1 + t, b - a);
        memset(dst + a, 0, b - a);
    }
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = clock_s(CLOCK_MONOTONIC);
#pragma omp parallel num_threads(threads)
        {
            int t = omp_get_thread_num(), nt = omp_get_num_threads();
            size_t a = n / (size_t)nt * (size_t)t;
            size_t b = t == nt - 1 ? n : n / (size_t)nt * (size_t)(t + 1);
            memcpy(dst + a, src + a, b - a);
        }
        double dt = clock_s(CLOCK_MONOTONIC) - t0;
        if (dt < best) best = dt;
    }
    double best_r = 1e30;
    unsigned long long total = 0;
    for (int r = 0; r < reps; r++) {
        unsigned long long sum = 0;
        double t0 = clock_s(CLOCK_MONOTONIC);
#pragma omp parallel for num_threads(threads) reduction(+ : sum) schedule(static)
        for (size_t i = 0; i < n; i += 64) sum += (unsigned char)src[i];
        double dt = clock_s(CLOCK_MONOTONIC) - t0;
        if (dt < best_r) best_r = dt;
        total += sum;
    }
    volatile char sink = dst[n / 2] + (char)total;
    (void)sink;
    *rbw = (double)n / best_r;
    qn_big_free(src, n), qn_big_free(dst, n);
    *bw = 2.0 * (double)n / best;
    return QN_OK;
}

typedef struct br_result {
    int64_t batch;
    int64_t prefill_tokens, prefill_steps;
    double prefill_s, prefill_tps;
    int64_t timed_steps;
    double step_median_s, step_mean_s, decode_tps, decode_tps_mean, cpu_util;
    double kv_rows_avg; /* K/V rows read per sequence per timed step, average */
    int64_t experts_touched;
    double weight_bytes, kv_bytes, bound_tps;
    size_t kv_bytes_per_token;
    int64_t prefix_hit_tokens, preemptions;
    double ref_prefill_tps, ref_decode_tps; /* 0: not run */
} br_result;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static qn_status submit_batch(qn_engine *e, int64_t B, int64_t P, int32_t max_new, uint64_t *rng,
                              int32_t vocab, int32_t *prompt) {
    for (int64_t i = 0; i < B; i++) {
        for (int64_t t = 0; t < P; t++) prompt[t] = (int32_t)(xs(rng) % (uint64_t)vocab);
        qn_engine_request r = {.prompt = prompt, .n_prompt = (int32_t)P, .has_seed = 1,
                               .ignore_eos = 1, .n = 1};
        r.params = qn_sampling_params_default();
        r.params.temperature = 0.0f;
        r.params.max_new_tokens = max_new;
        r.params.seed = (uint64_t)i;
        uint64_t id;
        QN_CHECK(qn_engine_submit(e, &r, &id));
    }
    return QN_OK;
}

static void drain(qn_engine *e) {
    qn_engine_output o;
    while (qn_engine_next_finished(e, &o)) {
    }
}

static qn_status run_batch(const bench_rollout_cfg *c, const qn_model *m, const qn_model_fp8 *f8,
                           int64_t B, br_result *res) {
    int64_t P = c->prompt_len, N = c->decode_steps;
    int64_t prefill_steps_max = (B * P + c->max_prefill_tokens - 1) / c->max_prefill_tokens;
    /* enough output tokens that N + 1 steps have every sequence decoding,
     * however the chunked prefill staggers the sequences */
    int64_t max_new = N + 2 + prefill_steps_max;
    int64_t bs = c->block_size;
    qn_engine_params ep = qn_engine_params_default();
    ep.max_running = (int32_t)B;
    ep.block_size = (int32_t)bs;
    ep.max_prefill_tokens = (int32_t)c->max_prefill_tokens;
    ep.kv_cache_tokens = B * ((P + max_new + bs - 1) / bs + 1) * bs;
    ep.context_len = P + max_new + 1;
    ep.seed = (uint64_t)c->seed;
    qn_engine *e = NULL;
    int32_t *prompt = malloc((size_t)P * sizeof(int32_t));
    double *steps = malloc((size_t)N * sizeof(double));
    qn_status s = QN_OK;
    if (!prompt || !steps) {
        s = qn_fail(QN_ERR_NOMEM, "bench rollout: buffers");
        goto done;
    }
    if (max_new > INT32_MAX || P > INT32_MAX) {
        s = qn_fail(QN_ERR_RANGE, "bench rollout: prompt or decode length too large");
        goto done;
    }
    uint64_t rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)c->seed * 1000003u + (uint64_t)B);
    int32_t vocab = (int32_t)m->d.vocab;
    memset(res, 0, sizeof *res);
    res->batch = B;

    /* warm-up: the same work once, untimed, so that first-touch page faults
     * of the cache and the workspace are not counted (an engine lives long) */
    QN_CHECK_GOTO(qn_engine_create(&e, m, f8, &ep), s, done);
    QN_CHECK_GOTO(submit_batch(e, B, P, 3, &rng, vocab, prompt), s, done);
    while (qn_engine_busy(e)) {
        QN_CHECK_GOTO(qn_engine_step(e, NULL), s, done);
        drain(e);
    }
    qn_engine_stats st0;
    qn_engine_get_stats(e, &st0);

    /* prefill: B new prompts, one output token each */
    QN_CHECK_GOTO(submit_batch(e, B, P, 1, &rng, vocab, prompt), s, done);
    while (qn_engine_busy(e)) {
        int64_t nt = 0;
        double t0 = clock_s(CLOCK_MONOTONIC);
        QN_CHECK_GOTO(qn_engine_step(e, &nt), s, done);
        double dt = clock_s(CLOCK_MONOTONIC) - t0;
        if (nt > 0) res->prefill_s += dt, res->prefill_steps++;
        drain(e);
    }
    qn_engine_stats st;
    qn_engine_get_stats(e, &st);
    res->prefill_tokens = st.prefill_tokens - st0.prefill_tokens;
    res->prefill_tps = res->prefill_s > 0 ? (double)res->prefill_tokens / res->prefill_s : 0.0;

    /* decode: new prompts again */
    QN_CHECK_GOTO(submit_batch(e, B, P, (int32_t)max_new, &rng, vocab, prompt), s, done);
    int warm = 1;
    double rows = 0.0, cpu = 0.0, wall = 0.0;
    while (res->timed_steps < N && qn_engine_busy(e)) {
        qn_engine_stats a, b;
        qn_engine_get_stats(e, &a);
        int64_t nt = 0;
        double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        QN_CHECK_GOTO(qn_engine_step(e, &nt), s, done);
        double dt = clock_s(CLOCK_MONOTONIC) - t0, dc = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
        qn_engine_get_stats(e, &b);
        drain(e);
        int full = b.prefill_tokens == a.prefill_tokens && b.decode_tokens - a.decode_tokens == B &&
                   a.running == B;
        if (!full) continue;
        if (warm) {
            warm = 0;
            continue;
        }
        steps[res->timed_steps++] = dt;
        /* a sequence with g tokens generated computes its last one at
         * position P + g - 1 and reads the K/V rows of positions 0..P+g-1 */
        rows += (double)P + (double)a.generated_tokens / (double)B;
        cpu += dc, wall += dt;
    }
    qn_engine_get_stats(e, &st);
    res->kv_bytes_per_token = st.kv_bytes_per_token;
    res->preemptions = st.preemptions;
    res->prefix_hit_tokens = st.prefix_hit_tokens; /* random prompts: expected 0 */
    if (res->timed_steps < N) {
        s = qn_fail(QN_ERR_INTERNAL, "bench rollout: batch %lld: only %lld steps had every "
                    "sequence decoding (wanted %lld)", (long long)B, (long long)res->timed_steps,
                    (long long)N);
        goto done;
    }
    res->step_mean_s = wall / (double)N;
    qsort(steps, (size_t)N, sizeof(double), cmp_double);
    res->step_median_s = N % 2 ? steps[N / 2] : 0.5 * (steps[N / 2 - 1] + steps[N / 2]);
    res->decode_tps = (double)B / res->step_median_s;
    res->decode_tps_mean = (double)B / res->step_mean_s;
    res->cpu_util = wall > 0 ? cpu / (wall * (double)c->threads) : 0.0;
    res->kv_rows_avg = rows / (double)N;
    const qn_model_desc *d = &m->d;
    res->experts_touched = d->n_experts > 0 ? (B * d->top_k < d->n_experts ? B * d->top_k
                                                                          : d->n_experts)
                                            : 0;
    res->weight_bytes = qn_infer_weight_bytes(d, f8 != NULL, 128, 128, res->experts_touched, B);
    res->kv_bytes = (double)B * res->kv_rows_avg * (double)st.kv_bytes_per_token;
done:
    qn_engine_free(e);
    free(prompt);
    free(steps);
    return s;
}

/* Runs the PyTorch loop for batch B; 0 figures when it fails (reported). */
static void run_ref(const bench_rollout_cfg *c, const char *dir, br_result *r) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "OMP_NUM_THREADS=%lld '%s' '%s' bench --model '%s' --batch %lld --prompt-len %lld "
             "--decode-steps %lld --threads %lld --seed %lld",
             (long long)c->threads, c->python, c->ref, dir, (long long)r->batch,
             (long long)c->prompt_len, (long long)c->decode_steps, (long long)c->threads,
             (long long)c->seed);
    FILE *pp = popen(cmd, "r");
    char line[4096];
    double pf = 0.0, dc = 0.0;
    while (pp && fgets(line, sizeof line, pp)) {
        const char *k = strstr(line, "\"prefill_tokens_per_s\":");
        if (k) pf = strtod(k + 23, NULL);
        k = strstr(line, "\"decode_tokens_per_s\":");
        if (k) dc = strtod(k + 22, NULL);
    }
    int st = pp ? pclose(pp) : -1;
    if (st != 0 || !(pf > 0.0) || !(dc > 0.0) || !isfinite(pf) || !isfinite(dc)) {
        fprintf(stderr, "quench bench rollout: the PyTorch loop failed (%s)\n", cmd);
        return;
    }
    r->ref_prefill_tps = pf;
    r->ref_decode_tps = dc;
}

static void remove_dir(const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    rmdir(dir);
}

int qn_bench_rollout(int argc, char **argv) {
    bench_rollout_cfg cfg;
    qn_flags_parsed p;
    if (qn_flags_parse(&k_br_table, &cfg, argc, argv, &p) != QN_OK) {
        fprintf(stderr, "quench bench rollout: %s\n", qn_last_error());
        return QN_EXIT_USAGE;
    }
    int rc = QN_EXIT_FAILURE;
    qn_model m = {0};
    qn_model_fp8 *f8 = NULL;
    br_result *res = NULL;
    char dir[] = "/tmp/quench-bench-rollout-XXXXXX";
    int have_dir = 0;
    if (p.print_config) {
        qn_flags_dump(&k_br_table, &cfg, &p, stdout);
        rc = QN_EXIT_OK;
        goto done;
    }
    if (cfg.batches.n == 0) {
        fprintf(stderr, "quench bench rollout: --batches is empty\n");
        rc = QN_EXIT_USAGE;
        goto done;
    }
    omp_set_num_threads((int)cfg.threads);
    qn_model_desc d;
    qn_status s = qn_model_desc_load(cfg.config, &d);
    if (s == QN_OK) s = qn_model_init(&m, &d);
    if (s == QN_OK) s = qn_model_read_config_json(&m, cfg.config);
    if (s == QN_OK) s = qn_model_init_random(&m, (uint64_t)cfg.seed, 0.02f, 0.02f);
    if (s == QN_OK && cfg.quantize == 1) {
        s = qn_model_fp8_quantize(&f8, &m, 128, 128);
        /* the PyTorch loop then reads what the FP8 engine multiplies by */
        if (s == QN_OK) qn_model_fp8_dequantize_into(f8, &m);
    }
    res = calloc(cfg.batches.n, sizeof *res);
    if (s == QN_OK && !res) s = qn_fail(QN_ERR_NOMEM, "bench rollout: results");
    if (s != QN_OK) {
        fprintf(stderr, "quench bench rollout: %s\n", qn_last_error());
        goto done;
    }
    qn_param_count pc;
    qn_model_count_params(&d, &pc);
    double load[3] = {0, 0, 0};
    if (getloadavg(load, 3) < 1) load[0] = -1;
    printf("model %s: %.1f M parameters (%.1f M active per token), %s weights, %lld threads, "
           "prompt %lld tokens, %lld timed decode steps; load average %.2f\n", cfg.config,
           (double)pc.total / 1e6, (double)pc.active / 1e6, f8 ? "fp8 (128x128 blocks)" : "fp32",
           (long long)cfg.threads, (long long)cfg.prompt_len, (long long)cfg.decode_steps,
           load[0]);
    double bw = 0.0, rbw = 0.0;
    if (copy_bandwidth(cfg.copy_mib, (int)cfg.threads, 5, &bw, &rbw) != QN_OK) {
        fprintf(stderr, "quench bench rollout: %s\n", qn_last_error());
        goto done;
    }
    printf("copy bandwidth: %.2f GB/s (memcpy of %lld MiB over %lld threads, read + write bytes, "
           "best of 5); for reference, reading every 64-byte line of it: %.2f GB/s (the bound "
           "uses the copy figure)\n", bw / 1e9, (long long)cfg.copy_mib, (long long)cfg.threads,
           rbw / 1e9);
    fflush(stdout);
    for (size_t i = 0; i < cfg.batches.n; i++) {
        br_result *r = &res[i];
        if (run_batch(&cfg, &m, f8, cfg.batches.v[i], r) != QN_OK) {
            fprintf(stderr, "quench bench rollout: %s\n", qn_last_error());
            goto done;
        }
        double bytes = r->weight_bytes + r->kv_bytes;
        r->bound_tps = (double)r->batch * bw / bytes;
        printf("batch %lld: prefill %.0f tokens/s (%lld tokens, %lld steps), decode %.1f tokens/s "
               "(median step %.2f ms, mean %.2f ms, CPU use %.0f%% of %lld threads), bytes per "
               "step %.1f MB weights + %.1f MB K/V -> bound %.1f tokens/s\n",
               (long long)r->batch, r->prefill_tps, (long long)r->prefill_tokens,
               (long long)r->prefill_steps, r->decode_tps, 1e3 * r->step_median_s,
               1e3 * r->step_mean_s, 100.0 * r->cpu_util, (long long)cfg.threads,
               r->weight_bytes / 1e6, r->kv_bytes / 1e6, r->bound_tps);
        fflush(stdout);
    }
    int ref_failed = 0;
    if (!cfg.no_ref) {
        if (!mkdtemp(dir)) {
            fprintf(stderr, "quench bench rollout: cannot create a temporary folder\n");
            goto done;
        }
        have_dir = 1;
        if (qn_model_save_dir(&m, dir, "fp32") != QN_OK) {
            fprintf(stderr, "quench bench rollout: %s\n", qn_last_error());
            goto done;
        }
        for (size_t i = 0; i < cfg.batches.n; i++) {
            run_ref(&cfg, dir, &res[i]);
            if (!(res[i].ref_decode_tps > 0.0)) ref_failed = 1;
        }
    }
    const char *how = d.n_experts > 0 ? "min(n_experts, batch*top_k): exact at batch 1, an upper "
                                        "bound above (not counted from the run)"
                                      : "dense model";
    printf("\nrouted experts read per MoE layer per decode step: %s\n", how);
    printf("%6s %12s %12s %9s %12s %9s %12s %12s %9s %9s\n", "batch", "prefill t/s", "decode t/s",
           "experts", "bound t/s", "of bound", "torch pf t/s", "torch dec", "x prefill",
           "x decode");
    for (size_t i = 0; i < cfg.batches.n; i++) {
        const br_result *r = &res[i];
        char tp[32] = "-", td[32] = "-", xp[32] = "-", xd[32] = "-";
        if (r->ref_decode_tps > 0.0) {
            snprintf(tp, sizeof tp, "%.0f", r->ref_prefill_tps);
            snprintf(td, sizeof td, "%.1f", r->ref_decode_tps);
            snprintf(xp, sizeof xp, "%.2fx", r->prefill_tps / r->ref_prefill_tps);
            snprintf(xd, sizeof xd, "%.2fx", r->decode_tps / r->ref_decode_tps);
        }
        printf("%6lld %12.0f %12.1f %9lld %12.1f %8.1f%% %12s %12s %9s %9s\n", (long long)r->batch,
               r->prefill_tps, r->decode_tps, (long long)r->experts_touched, r->bound_tps,
               100.0 * r->decode_tps / r->bound_tps, tp, td, xp, xd);
    }
    for (size_t i = 0; i < cfg.batches.n; i++) {
        const br_result *r = &res[i];
        printf("{\"bench\":\"rollout\",\"config\":\"%s\",\"weights\":\"%s\",\"threads\":%lld,"
               "\"batch\":%lld,\"prompt_len\":%lld,\"prefill_tokens\":%lld,\"prefill_steps\":%lld,"
               "\"prefill_tokens_per_s\":%.6g,\"decode_steps\":%lld,\"decode_step_median_s\":%.6g,"
               "\"decode_step_mean_s\":%.6g,\"decode_tokens_per_s\":%.6g,"
               "\"decode_tokens_per_s_mean\":%.6g,\"decode_cpu_use\":%.4g,"
               "\"copy_bandwidth_bytes_per_s\":%.6g,\"read_bandwidth_bytes_per_s\":%.6g,"
               "\"weight_bytes_per_step\":%.6g,"
               "\"kv_bytes_per_step\":%.6g,\"kv_bytes_per_token\":%zu,\"experts_touched\":%lld,"
               "\"experts_touched_from\":\"%s\",\"bound_tokens_per_s\":%.6g,"
               "\"ratio_bound\":%.4g,\"prefix_hit_tokens\":%lld,\"preemptions\":%lld",
               cfg.config, f8 ? "fp8" : "fp32", (long long)cfg.threads, (long long)r->batch,
               (long long)cfg.prompt_len, (long long)r->prefill_tokens,
               (long long)r->prefill_steps, r->prefill_tps, (long long)cfg.decode_steps,
               r->step_median_s, r->step_mean_s, r->decode_tps, r->decode_tps_mean, r->cpu_util,
               bw, rbw, r->weight_bytes, r->kv_bytes, r->kv_bytes_per_token,
               (long long)r->experts_touched, d.n_experts > 0 ? "min(n_experts,batch*top_k)"
                                                             : "dense",
               r->bound_tps, r->decode_tps / r->bound_tps, (long long)r->prefix_hit_tokens,
               (long long)r->preemptions);
        if (r->ref_decode_tps > 0.0)
            printf(",\"torch_prefill_tokens_per_s\":%.6g,\"torch_decode_tokens_per_s\":%.6g,"
                   "\"ratio_torch_prefill\":%.4g,\"ratio_torch_decode\":%.4g",
                   r->ref_prefill_tps, r->ref_decode_tps, r->prefill_tps / r->ref_prefill_tps,
                   r->decode_tps / r->ref_decode_tps);
        printf("}\n");
    }
    rc = ref_failed ? QN_EXIT_FAILURE : QN_EXIT_OK;
done:
    if (have_dir) remove_dir(dir);
    free(res);
    qn_model_fp8_free(f8);
    qn_model_free(&m);
    qn_flags_parsed_free(&p);
    qn_flags_free(&k_br_table, &cfg);
    return rc;
}
