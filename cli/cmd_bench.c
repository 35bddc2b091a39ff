/* cmd_bench.c — `quench bench <what>`: benchmarks that print a ratio against
 * a reference measured in the same run.
 *
 *   quench bench model   forward+backward tokens/s of the model core on a
 *                        config and a packed batch shape, against the
 *                        PyTorch reference (tests/ref/model_ref.py, float32,
 *                        same weights, same threads), plus peak RSS of both.
 *   quench bench train   a whole training step, dynamic packing vs padding
 *                        (cli/bench_train.c).
 *   quench bench rollout the rollout engine's prefill and decode tokens/s
 *                        against the memory-bandwidth bound and a PyTorch
 *                        generation loop (cli/bench_rollout.c).
 *   quench bench router  concurrent HTTP clients against the router with
 *                        real engines, and the router's overhead per request
 *                        over ZeroMQ (cli/bench_router.c).
 *
 *   quench bench gemm    FP8 block-scaled GEMM vs cuBLASLt bf16 on the GPU
 *                        (cli/bench_gemm.c).
 *
 * To add a benchmark, add a row to k_benches. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "cli/bench_gemm.h"
#include "cli/bench_rollout.h"
#include "cli/bench_router.h"
#include "cli/bench_train.h"
#include "cli/commands.h"
#include "core/flags.h"
#include "core/model/model.h"

typedef struct bench_model_cfg {
    char *config, *ref, *python;
    int64_t seqs, seq_len, threads, iters, seed;
    bool no_ref;
} bench_model_cfg;

static const qn_flag k_bm_flags[] = {
    QN_F_STRING(bench_model_cfg, config, "config", QN_SOURCE_DIR "/bench/configs/glm45_25m.json",
                "Hugging Face config.json of the model (random weights)", .metavar = "CONFIG.json"),
    QN_F_INT(bench_model_cfg, seqs, "seqs", "4", 1, 4096, "sequences in the packed batch"),
    QN_F_INT(bench_model_cfg, seq_len, "seq-len", "512", 2, 1048576, "tokens per sequence"),
    QN_F_INT(bench_model_cfg, threads, "threads", "2", 1, 4096, "CPU threads (both sides)"),
    QN_F_INT(bench_model_cfg, iters, "iters", "3", 1, 1000,
             "timed iterations after one warm-up; the best is reported"),
    QN_F_INT(bench_model_cfg, seed, "seed", "1", 0, 1e15, "seed of the random weights"),
    QN_F_BOOL(bench_model_cfg, no_ref, "no-ref", "false", "skip the PyTorch reference"),
    QN_F_STRING(bench_model_cfg, ref, "ref", QN_SOURCE_DIR "/tests/ref/model_ref.py",
                "the PyTorch reference script", .metavar = "PATH"),
    QN_F_STRING(bench_model_cfg, python, "python", "/usr/bin/python3",
                "python with torch (Debian python3-torch)", .metavar = "PATH"),
};
static const qn_flag_table k_bm_table = {
    .command = "bench model",
    .usage = "quench bench model [--config CONFIG.json] [--seqs 4] [--seq-len 512] [--threads 2]",
    .summary = "Forward+backward (log-prob and entropy at every position) tokens/s of the model\n"
               "core, and of the PyTorch reference on the same weights and threads; prints the\n"
               "ratio and the peak RSS of each.",
    .flags = k_bm_flags,
    .n_flags = QN_FLAGS_COUNT(k_bm_flags),
    .cfg_size = sizeof(bench_model_cfg)};

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Wall and CPU (all threads of the process) tokens/s, best of cfg->iters
 * after a warm-up. CPU figures matter on a shared machine, where wall time
 * is mostly waiting for a core. */
static qn_status run_quench(const bench_model_cfg *cfg, qn_model *m, double *tps, double *cpu_tps) {
    int64_t S = cfg->seqs, L = cfg->seq_len, T = S * L, R = S * (L - 1);
    int32_t *tok = malloc((size_t)T * sizeof(int32_t)), *tgt = malloc((size_t)R * sizeof(int32_t));
    int64_t *rows = malloc((size_t)R * sizeof(int64_t)), *cu = malloc((size_t)(S + 1) * sizeof(int64_t));
    float *lp = malloc((size_t)R * sizeof(float)), *ent = malloc((size_t)R * sizeof(float));
    float *dl = malloc((size_t)R * sizeof(float)), *de = malloc((size_t)R * sizeof(float));
    qn_model_ws *ws = NULL;
    qn_status s = QN_OK;
    if (!tok || !tgt || !rows || !cu || !lp || !ent || !dl || !de) {
        s = qn_fail(QN_ERR_NOMEM, "bench: batch buffers");
        goto done;
    }
    uint64_t x = 88172645463325252ull;
    for (int64_t t = 0; t < T; t++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        tok[t] = (int32_t)(x % (uint64_t)m->d.vocab);
    }
    int64_t r = 0;
    for (int64_t i = 0; i < S; i++) {
        cu[i] = i * L;
        for (int64_t t = 1; t < L; t++, r++) {
            rows[r] = i * L + t - 1;
            tgt[r] = tok[i * L + t];
            dl[r] = 1.0f; /* the reference's loss: sum logp + 0.1 sum entropy */
            de[r] = 0.1f;
        }
    }
    cu[S] = T;
    QN_CHECK_GOTO(qn_model_alloc_grads(m), s, done);
    QN_CHECK_GOTO(qn_model_ws_init(&ws, m, T, R), s, done);
    qn_batch b = {.tokens = tok, .n_tokens = T, .cu_seqlens = cu, .n_seqs = S, .rows = rows,
                  .targets = tgt, .n_rows = R};
    double best = 1e30, best_cpu = 1e30;
    for (int64_t it = 0; it <= cfg->iters; it++) {
        qn_model_zero_grads(m);
        double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        QN_CHECK_GOTO(qn_model_forward(m, ws, &b, 1.0f, lp, ent), s, done);
        QN_CHECK_GOTO(qn_model_backward(m, ws, &b, dl, de), s, done);
        double dt = clock_s(CLOCK_MONOTONIC) - t0, dc = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
        if (it > 0 && dt < best) best = dt;
        if (it > 0 && dc < best_cpu) best_cpu = dc;
    }
    *tps = (double)T / best;
    *cpu_tps = (double)T / best_cpu;
    printf("quench: %.0f tokens/s wall, %.0f tokens per CPU-second (forward+backward, best of "
           "%lld: %.3f s wall, %.3f CPU-s per step; activation arena %.1f MiB)\n", *tps,
           *cpu_tps, (long long)cfg->iters, best, best_cpu,
           (double)qn_model_ws_bytes(ws) / 1048576.0);
done:
    qn_model_ws_free(ws);
    free(tok), free(tgt), free(rows), free(cu), free(lp), free(ent), free(dl), free(de);
    return s;
}

static int bench_model(int argc, char **argv) {
    bench_model_cfg cfg;
    qn_flags_parsed p;
    if (qn_flags_parse(&k_bm_table, &cfg, argc, argv, &p) != QN_OK) {
        fprintf(stderr, "quench bench model: %s\n", qn_last_error());
        return QN_EXIT_USAGE;
    }
    int rc = QN_EXIT_FAILURE;
    qn_model m = {0};
    char dir[] = "/tmp/quench-bench-XXXXXX";
    int have_dir = 0;
    if (p.print_config) {
        qn_flags_dump(&k_bm_table, &cfg, &p, stdout);
        rc = QN_EXIT_OK;
        goto done;
    }
    omp_set_num_threads((int)cfg.threads);
    qn_model_desc d;
    qn_status s = qn_model_desc_load(cfg.config, &d);
    if (s == QN_OK) s = qn_model_init(&m, &d);
    if (s == QN_OK) s = qn_model_read_config_json(&m, cfg.config);
    if (s == QN_OK) s = qn_model_init_random(&m, (uint64_t)cfg.seed, 0.02f, 0.02f);
    if (s != QN_OK) {
        fprintf(stderr, "quench bench model: %s\n", qn_last_error());
        goto done;
    }
    qn_param_count pc;
    qn_model_count_params(&d, &pc);
    printf("model %s: %.1f M parameters (%.1f M active per token), batch %lld x %lld tokens, "
           "%lld threads\n", cfg.config, (double)pc.total / 1e6, (double)pc.active / 1e6,
           (long long)cfg.seqs, (long long)cfg.seq_len, (long long)cfg.threads);
    double q_tps = 0.0, q_cpu = 0.0;
    if (run_quench(&cfg, &m, &q_tps, &q_cpu) != QN_OK) {
        fprintf(stderr, "quench bench model: %s\n", qn_last_error());
        goto done;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("quench peak RSS: %.1f MiB\n", (double)ru.ru_maxrss / 1024.0);
    if (cfg.no_ref) {
        rc = QN_EXIT_OK;
        goto done;
    }
    /* the reference loads the same weights from a temporary checkpoint */
    if (!mkdtemp(dir)) {
        fprintf(stderr, "quench bench model: cannot create a temporary folder\n");
        goto done;
    }
    have_dir = 1;
    if (qn_model_save_dir(&m, dir, "fp32") != QN_OK) {
        fprintf(stderr, "quench bench model: %s\n", qn_last_error());
        goto done;
    }
    qn_model_free(&m);
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "OMP_NUM_THREADS=%lld '%s' '%s' bench --config '%s' --model '%s' --seqs %lld "
             "--len %lld --threads %lld --iters %lld",
             (long long)cfg.threads, cfg.python, cfg.ref, cfg.config, dir, (long long)cfg.seqs,
             (long long)cfg.seq_len, (long long)cfg.threads, (long long)cfg.iters);
    FILE *pp = popen(cmd, "r");
    double r_tps = 0.0, r_cpu = 0.0;
    char line[1024];
    while (pp && fgets(line, sizeof line, pp)) {
        const char *k = strstr(line, "\"tokens_per_s\":");
        if (k) r_tps = strtod(k + 15, NULL);
        k = strstr(line, "\"tokens_per_cpu_s\":");
        if (k) r_cpu = strtod(k + 19, NULL);
    }
    int st = pp ? pclose(pp) : -1;
    if (st != 0 || !(r_tps > 0.0)) {
        fprintf(stderr, "quench bench model: the PyTorch reference failed (%s)\n", cmd);
        goto done;
    }
    struct rusage rc_ru;
    getrusage(RUSAGE_CHILDREN, &rc_ru);
    printf("pytorch reference (float32, %lld threads): %.0f tokens/s wall, %.0f tokens per "
           "CPU-second, peak RSS %.1f MiB\n", (long long)cfg.threads, r_tps, r_cpu,
           (double)rc_ru.ru_maxrss / 1024.0);
    printf("ratio quench / pytorch: %.2fx wall, %.2fx CPU\n", q_tps / r_tps,
           r_cpu > 0.0 ? q_cpu / r_cpu : 0.0);
    rc = QN_EXIT_OK;
done:
    if (have_dir) {
        char path[4200];
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        unlink(path);
        snprintf(path, sizeof path, "%s/config.json", dir);
        unlink(path);
        rmdir(dir);
    }
    qn_model_free(&m);
    qn_flags_parsed_free(&p);
    qn_flags_free(&k_bm_table, &cfg);
    return rc;
}

typedef struct bench_entry {
    const char *name, *summary;
    int (*run)(int argc, char **argv);
    void (*help)(FILE *out);
} bench_entry;

static void help_bench_model(FILE *out) { qn_flags_print_help(&k_bm_table, out); }

static const bench_entry k_benches[] = {
    {"model", "model core forward+backward vs the PyTorch reference", bench_model,
     help_bench_model},
    {"train", "training step tokens/s: dynamic packing vs padded micro-batches", qn_bench_train,
     qn_help_bench_train},
    {"rollout", "engine prefill/decode tokens/s vs the bandwidth bound and a PyTorch loop",
     qn_bench_rollout, qn_help_bench_rollout},
    {"router", "HTTP load on the router (requests/s, p50/p99) and its overhead per request",
     qn_bench_router, qn_help_bench_router},
    {"gemm", "GPU: FP8 block-scaled GEMM vs cuBLASLt bf16 TFLOP/s (--device cuda)",
     qn_bench_gemm, qn_help_bench_gemm},
};
static const size_t k_n_benches = sizeof k_benches / sizeof k_benches[0];

void qn_help_bench(FILE *out) {
    fprintf(out, "usage: quench bench <what> [flags]   (quench bench <what> --help)\n\n");
    for (size_t i = 0; i < k_n_benches; i++)
        fprintf(out, "  %-10s %s\n", k_benches[i].name, k_benches[i].summary);
    for (size_t i = 0; i < k_n_benches; i++) {
        fprintf(out, "\n");
        k_benches[i].help(out);
    }
}

int qn_cmd_bench(int argc, char **argv) {
    if (argc < 2) {
        qn_help_bench(stderr);
        return QN_EXIT_USAGE;
    }
    for (size_t i = 0; i < k_n_benches; i++)
        if (strcmp(argv[1], k_benches[i].name) == 0) return k_benches[i].run(argc - 1, argv + 1);
    fprintf(stderr, "quench bench: unknown benchmark '%s'\n", argv[1]);
    qn_help_bench(stderr);
    return QN_EXIT_USAGE;
}
