/* bench_train.c — `quench bench train`: tokens/s of a whole training step
 * (forward, GRPO loss, backward, AdamW) on samples with a long-tailed length
 * distribution, run two ways in the same process on the same samples:
 *
 *   packed  dynamic batching (trainer/packing.h, --max-tokens-per-gpu):
 *           micro-batches of whole samples up to the token budget, every
 *           computed token is a real one;
 *   padded  what a naive trainer does: micro-batches of --micro-batch-size
 *           consecutive samples, each padded to the longest of its
 *           micro-batch; the padding tokens are really fed to the model (and
 *           their positions to the loss, with loss mask 0), so they cost
 *           compute like real ones.
 *
 * tokens/s counts real tokens only. Lengths: lognormal (median --median-len,
 * --sigma), clamped to [--min-len, --max-len]; a quarter of each sample is
 * prompt. Random weights from --config. The kinds alternate (--iters), the
 * best step of each is reported; the optimizer steps in between change the
 * weights, not the work. Leaves out: data parallelism (one
 * rank), the reference model forward (--use-kl-loss), GPU. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/bench_train.h"
#include "cli/commands.h"
#include "core/flags.h"
#include "core/model/model.h"
#include "trainer/loss.h"
#include "trainer/optimizer.h"
#include "trainer/packing.h"
#include "core/clock.h"

typedef struct bench_train_cfg {
    char *config;
    int64_t samples, min_len, max_len, median_len, threads, seed, micro_batch_size,
        max_tokens_per_gpu, iters;
    double sigma;
} bench_train_cfg;

static const qn_flag k_bt_flags[] = {
    QN_F_STRING(bench_train_cfg, config, "config",
                QN_SOURCE_DIR "/bench/configs/glm45_25m.json",
                "Hugging Face config.json of the model (random weights)", .metavar = "CONFIG.json"),
    QN_F_INT(bench_train_cfg, samples, "samples", "64", 1, 65536, "samples in the step"),
    QN_F_INT(bench_train_cfg, median_len, "median-len", "160", 2, 1048576,
             "median sample length (lognormal)"),
    QN_F_FLOAT(bench_train_cfg, sigma, "sigma", "1.0", 0, 10, "lognormal sigma of the lengths"),
    QN_F_INT(bench_train_cfg, min_len, "min-len", "16", 2, 1048576, "shortest sample"),
    QN_F_INT(bench_train_cfg, max_len, "max-len", "1024", 2, 1048576, "longest sample"),
    QN_F_INT(bench_train_cfg, micro_batch_size, "micro-batch-size", "4", 1, 65536,
             "padded run: samples per micro-batch"),
    QN_F_INT(bench_train_cfg, max_tokens_per_gpu, "max-tokens-per-gpu", "4096", 1, 1e12,
             "packed run: token budget per micro-batch (default: micro-batch-size x max-len, "
             "the padded run's worst case)"),
    QN_F_INT(bench_train_cfg, threads, "threads", "2", 1, 4096, "CPU threads"),
    QN_F_INT(bench_train_cfg, iters, "iters", "1", 1, 1000,
             "steps of each kind, alternating packed and padded; the best is reported"),
    QN_F_INT(bench_train_cfg, seed, "seed", "1", 0, 1e15, "seed of the weights and lengths"),
};
static const qn_flag_table k_bt_table = {
    .command = "bench train",
    .usage = "quench bench train [--config CONFIG.json] [--samples 64] [--max-len 1024]",
    .summary = "One full training step (forward, loss, backward, AdamW) on long-tailed sample\n"
               "lengths, with dynamic packing and with padding to the longest sample of each\n"
               "fixed-size micro-batch; prints real tokens/s of both and the ratio.",
    .flags = k_bt_flags,
    .n_flags = QN_FLAGS_COUNT(k_bt_flags),
    .cfg_size = sizeof(bench_train_cfg)};

void qn_help_bench_train(FILE *out) { qn_flags_print_help(&k_bt_table, out); }

static uint64_t xs(uint64_t *x) {
    *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
    return *x;
}

static double unif(uint64_t *x) { return ((double)(xs(x) >> 11) + 0.5) / 9007199254740992.0; }

typedef struct bt_data {
    int64_t n;
    int64_t *len, *k;   /* [n] length, response start */
    int32_t **tok;      /* [n][len] */
    float *adv;         /* [n] */
} bt_data;

/* A micro-batch: the samples idx[0..ns), each fed as pad_to tokens
 * (pad_to 0: its own length). */
typedef struct bt_buf {
    int32_t *tokens, *targets;
    int64_t *cu, *rows, *cu_resp;
    float *logp, *ent, *adv, *mask, *dl, *de;
    double *dlogp, *dent;
} bt_buf;

static void buf_free(bt_buf *b) {
    free(b->tokens), free(b->targets), free(b->cu), free(b->rows), free(b->cu_resp);
    free(b->logp), free(b->ent), free(b->adv), free(b->mask), free(b->dl), free(b->de);
    free(b->dlogp), free(b->dent);
}

static qn_status buf_alloc(bt_buf *b, int64_t T, int64_t S) {
    size_t t = (size_t)T, s1 = (size_t)S + 1;
    b->tokens = malloc(t * 4), b->targets = malloc(t * 4);
    b->cu = malloc(s1 * 8), b->cu_resp = malloc(s1 * 8), b->rows = malloc(t * 8);
    b->logp = malloc(t * 4), b->ent = malloc(t * 4), b->adv = malloc(t * 4);
    b->mask = malloc(t * 4), b->dl = malloc(t * 4), b->de = malloc(t * 4);
    b->dlogp = malloc(t * 8), b->dent = malloc(t * 8);
    bool ok = b->tokens && b->targets && b->cu && b->cu_resp && b->rows && b->logp && b->ent &&
              b->adv && b->mask && b->dl && b->de && b->dlogp && b->dent;
    return ok ? QN_OK : qn_fail(QN_ERR_NOMEM, "bench train: buffers");
}

typedef struct bt_run {
    qn_model *m;
    qn_model_ws *ws;
    bt_buf b;
    const bt_data *d;
    qn_loss_cfg lc;
    qn_loss_norm norm;
    int64_t computed; /* tokens fed to the model */
} bt_run;

static qn_status micro(bt_run *r, const int64_t *idx, int64_t ns, int64_t pad_to) {
    bt_buf *b = &r->b;
    int64_t T = 0, R = 0;
    b->cu[0] = b->cu_resp[0] = 0;
    for (int64_t j = 0; j < ns; j++) {
        int64_t i = idx[j], L = r->d->len[i], Lf = pad_to > L ? pad_to : L;
        for (int64_t t = 0; t < Lf; t++) b->tokens[T + t] = t < L ? r->d->tok[i][t] : 0;
        for (int64_t t = r->d->k[i]; t < Lf; t++, R++) {
            b->rows[R] = T + t - 1;
            b->targets[R] = b->tokens[T + t];
            b->adv[R] = r->d->adv[i];
            b->mask[R] = t < L ? 1.0f : 0.0f; /* padding: computed, then masked out */
        }
        T += Lf;
        b->cu[j + 1] = T;
        b->cu_resp[j + 1] = R;
    }
    r->computed += T;
    qn_batch mb = {.tokens = b->tokens, .n_tokens = T, .cu_seqlens = b->cu, .n_seqs = ns,
                   .rows = b->rows, .targets = b->targets, .n_rows = R};
    QN_CHECK(qn_model_forward(r->m, r->ws, &mb, 1.0f, b->logp, b->ent));
    qn_loss_batch lb = {.n_samples = ns, .cu_tokens = b->cu_resp, .logp = b->logp,
                        .entropy = b->ent, .advantage = b->adv, .loss_mask = b->mask};
    QN_CHECK(qn_loss_compute(&r->lc, &lb, &r->norm, b->dlogp, b->dent, NULL));
    for (int64_t t = 0; t < R; t++) b->dl[t] = (float)b->dlogp[t], b->de[t] = (float)b->dent[t];
    return qn_model_backward(r->m, r->ws, &mb, b->dl, b->de);
}

/* One optimizer step over all samples; padded: static micro-batches padded
 * to their longest sample, else the dynamic packing plan. */
static qn_status run_step(bt_run *r, const bench_train_cfg *cfg, bool padded, qn_adamw *opt,
                          double *secs) {
    const bt_data *d = r->d;
    qn_pack_cfg pc = {.dp_size = 1, .dynamic = !padded,
                      .max_tokens_per_gpu = cfg->max_tokens_per_gpu,
                      .micro_batch_size = cfg->micro_batch_size};
    qn_pack_plan pl;
    QN_CHECK(qn_pack_plan_build(&pc, d->len, d->n, &pl));
    int64_t maxT = 1, maxS = 1;
    qn_status s = QN_OK;
    for (int64_t mb = 0; mb < pl.mb_start[1]; mb++) {
        int64_t ns = pl.mb_off[mb + 1] - pl.mb_off[mb], longest = 0;
        for (int64_t o = pl.mb_off[mb]; o < pl.mb_off[mb + 1]; o++)
            if (d->len[pl.sample_idx[o]] > longest) longest = d->len[pl.sample_idx[o]];
        int64_t T = padded ? ns * longest : pl.mb_tokens[mb];
        if (T > maxT) maxT = T;
        if (ns > maxS) maxS = ns;
    }
    memset(&r->b, 0, sizeof r->b);
    r->ws = NULL;
    r->computed = 0;
    QN_CHECK_GOTO(buf_alloc(&r->b, maxT, maxS), s, done);
    QN_CHECK_GOTO(qn_model_ws_init(&r->ws, r->m, maxT, maxT), s, done);
    double t0 = qn_now_s();
    qn_model_zero_grads(r->m);
    for (int64_t mb = 0; mb < pl.mb_start[1]; mb++) {
        int64_t ns = pl.mb_off[mb + 1] - pl.mb_off[mb], longest = 0;
        if (ns == 0) continue;
        for (int64_t o = pl.mb_off[mb]; o < pl.mb_off[mb + 1]; o++)
            if (d->len[pl.sample_idx[o]] > longest) longest = d->len[pl.sample_idx[o]];
        QN_CHECK_GOTO(micro(r, pl.sample_idx + pl.mb_off[mb], ns, padded ? longest : 0), s,
                      done);
    }
    QN_CHECK_GOTO(qn_adamw_step(opt, r->m->w, r->m->g, NULL), s, done);
    *secs = qn_now_s() - t0;
    printf("%-7s %3lld micro-batches, %7lld tokens computed: %.2f s\n",
           padded ? "padded" : "packed", (long long)pl.mb_start[1], (long long)r->computed, *secs);
    fflush(stdout);
done:
    qn_model_ws_free(r->ws);
    r->ws = NULL;
    buf_free(&r->b);
    qn_pack_plan_free(&pl);
    return s;
}

static qn_status bench(const bench_train_cfg *cfg) {
    qn_model m = {0};
    bt_data d = {.n = cfg->samples};
    qn_adamw opt = {0};
    qn_opt_tensor *table = NULL;
    qn_status s = QN_OK;
    qn_model_desc desc;
    QN_CHECK_GOTO(qn_model_desc_load(cfg->config, &desc), s, done);
    QN_CHECK_GOTO(qn_model_init(&m, &desc), s, done);
    QN_CHECK_GOTO(qn_model_init_random(&m, (uint64_t)cfg->seed, 0.02f, 0.02f), s, done);
    QN_CHECK_GOTO(qn_model_alloc_grads(&m), s, done);
    if (cfg->min_len > cfg->max_len) {
        s = qn_fail(QN_ERR_RANGE, "--min-len %lld exceeds --max-len %lld",
                    (long long)cfg->min_len, (long long)cfg->max_len);
        goto done;
    }
    d.len = calloc((size_t)d.n, 8), d.k = calloc((size_t)d.n, 8);
    d.tok = calloc((size_t)d.n, sizeof *d.tok), d.adv = calloc((size_t)d.n, 4);
    if (!d.len || !d.k || !d.tok || !d.adv) {
        s = qn_fail(QN_ERR_NOMEM, "bench train: samples");
        goto done;
    }
    uint64_t x = 0x9e3779b97f4a7c15ull ^ (uint64_t)cfg->seed;
    int64_t real = 0, longest = 0;
    for (int64_t i = 0; i < d.n; i++) {
        double z = sqrt(-2.0 * log(unif(&x))) * cos(6.283185307179586 * unif(&x));
        double l = round((double)cfg->median_len * exp(cfg->sigma * z));
        d.len[i] = l < (double)cfg->min_len   ? cfg->min_len
                   : l > (double)cfg->max_len ? cfg->max_len
                                              : (int64_t)l;
        d.k[i] = d.len[i] / 4 > 0 ? d.len[i] / 4 : 1;
        d.adv[i] = (i % 2) ? 1.0f : -1.0f;
        d.tok[i] = malloc((size_t)d.len[i] * 4);
        if (!d.tok[i]) {
            s = qn_fail(QN_ERR_NOMEM, "bench train: samples");
            goto done;
        }
        for (int64_t t = 0; t < d.len[i]; t++)
            d.tok[i][t] = (int32_t)(xs(&x) % (uint64_t)desc.vocab);
        real += d.len[i];
        if (d.len[i] > longest) longest = d.len[i];
    }
    table = calloc(m.n_params, sizeof *table);
    if (!table) {
        s = qn_fail(QN_ERR_NOMEM, "bench train: optimizer table");
        goto done;
    }
    size_t nt = 0;
    for (size_t i = 0; i < m.n_params; i++)
        if (m.params[i].trainable)
            table[nt++] = (qn_opt_tensor){.name = m.params[i].name,
                                          .offset = (int64_t)m.params[i].offset,
                                          .size = (int64_t)m.params[i].numel,
                                          .ndim = m.params[i].ndim};
    qn_adamw_cfg oc = {.lr = 1e-6, .decay_style = QN_LR_CONSTANT, .weight_decay = 0.01,
                       .beta1 = 0.9, .beta2 = 0.98, .eps = 1e-8, .clip_grad = 1.0};
    QN_CHECK_GOTO(qn_adamw_init(&opt, &oc, table, nt, (int64_t)m.n_floats), s, done);
    bt_run r = {.m = &m, .d = &d,
                .lc = {.type = QN_LOSS_POLICY, .eps_clip = 0.2, .eps_clip_high = 0.28}};
    for (int64_t i = 0; i < d.n; i++) {
        int64_t cu[2] = {0, d.len[i] - d.k[i]};
        qn_loss_batch one = {.n_samples = 1, .cu_tokens = cu};
        qn_loss_count(&one, &r.norm);
    }
    printf("model %s, %lld samples: %lld real tokens, lengths lognormal (median %lld, sigma "
           "%.2f) in [%lld, %lld], longest %lld; %lld threads\n", cfg->config,
           (long long)d.n, (long long)real, (long long)cfg->median_len, cfg->sigma,
           (long long)cfg->min_len, (long long)cfg->max_len, (long long)longest,
           (long long)cfg->threads);
    double tp = INFINITY, tq = INFINITY;
    int64_t packed_tokens = 0;
    for (int64_t it = 0; it < cfg->iters; it++) {
        double t;
        QN_CHECK_GOTO(run_step(&r, cfg, false, &opt, &t), s, done);
        packed_tokens = r.computed;
        tp = t < tp ? t : tp;
        QN_CHECK_GOTO(run_step(&r, cfg, true, &opt, &t), s, done);
        tq = t < tq ? t : tq;
    }
    printf("packed (--max-tokens-per-gpu %lld): %.0f real tokens/s (%lld computed)\n",
           (long long)cfg->max_tokens_per_gpu, (double)real / tp, (long long)packed_tokens);
    printf("padded (--micro-batch-size %lld): %.0f real tokens/s (%lld computed, %.0f%% "
           "padding)\n", (long long)cfg->micro_batch_size, (double)real / tq,
           (long long)r.computed, 100.0 * (double)(r.computed - real) / (double)r.computed);
    printf("ratio packed / padded: %.2fx\n", tq / tp);
done:
    if (d.tok)
        for (int64_t i = 0; i < d.n; i++) free(d.tok[i]);
    free(d.tok), free(d.len), free(d.k), free(d.adv);
    qn_adamw_free(&opt);
    free(table);
    qn_model_free(&m);
    return s;
}

int qn_bench_train(int argc, char **argv) {
    bench_train_cfg cfg;
    qn_flags_parsed p;
    if (qn_flags_parse(&k_bt_table, &cfg, argc, argv, &p) != QN_OK) {
        fprintf(stderr, "quench bench train: %s\n", qn_last_error());
        return QN_EXIT_USAGE;
    }
    int rc = QN_EXIT_OK;
    if (p.print_config) {
        qn_flags_dump(&k_bt_table, &cfg, &p, stdout);
    } else {
        omp_set_num_threads((int)cfg.threads);
        if (bench(&cfg) != QN_OK) {
            fprintf(stderr, "quench bench train: %s\n", qn_last_error());
            rc = QN_EXIT_FAILURE;
        }
    }
    qn_flags_parsed_free(&p);
    qn_flags_free(&k_bt_table, &cfg);
    return rc;
}
