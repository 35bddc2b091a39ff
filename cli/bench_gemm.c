/* bench_gemm.c — `quench bench gemm --device cuda`: TFLOP/s of the FP8
 * block-scaled GEMM (core/ops/cuda/gemm.h: e4m3 with 128x128 weight tiles
 * and 1x128 activation groups, cuBLASLt) against cuBLASLt bf16 on the same
 * shapes: GLM-4.5-355B's projections (hidden 5120, 96 query heads and 8 KV
 * heads of 128, MoE intermediate 1536, dense 12288) at M tokens (default
 * 64 and 4096). For each shape it times bf16, FP8 (GEMM alone, operands
 * pre-quantised) and FP8 with the activation quantiser, between CUDA events,
 * and reports the normalised difference of the FP8 output from the bf16 one
 * as a sanity check. Without a CUDA device it says so and exits 1.
 *
 * Leaves out: CPU GEMMs (quench bench model covers the CPU path), grouped
 * expert GEMMs, autotuning over cuBLASLt algorithms. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/bench_gemm.h"
#include "cli/commands.h"
#include "core/dtype.h"
#include "core/flags.h"
#include "core/ops/cuda/cuda_ctx.h"
#include "core/ops/cuda/cuda_rt.h"
#include "core/ops/cuda/gemm.h"

typedef struct bench_gemm_cfg {
    char *device;
    qn_int_list m;
    int64_t iters, arena_mb, seed;
} bench_gemm_cfg;

static const qn_flag k_bg_flags[] = {
    QN_F_STRING(bench_gemm_cfg, device, "device", "cuda", "where to run: cuda (the only choice)"),
    QN_F_INT_LIST(bench_gemm_cfg, m, "m", "64,4096", 1, 1048576, "token counts M to time"),
    QN_F_INT(bench_gemm_cfg, iters, "iters", "20", 1, 100000, "timed calls per measurement"),
    QN_F_INT(bench_gemm_cfg, arena_mb, "arena-mb", "4096", 64, 1048576,
             "device arena in MiB (holds one shape's operands at a time)"),
    QN_F_INT(bench_gemm_cfg, seed, "seed", "1", 0, 1e15, "seed of the random operands"),
};
static const qn_flag_table k_bg_table = {
    .command = "bench gemm",
    .usage = "quench bench gemm --device cuda [--m 64,4096] [--iters 20]",
    .summary = "FP8 block-scaled GEMM (cuBLASLt, e4m3, 128x128 weight tiles, 1x128 activation\n"
               "groups) against cuBLASLt bf16, TFLOP/s on GLM-4.5-355B projection shapes.",
    .flags = k_bg_flags,
    .n_flags = QN_FLAGS_COUNT(k_bg_flags),
    .cfg_size = sizeof(bench_gemm_cfg)};

void qn_help_bench_gemm(FILE *out) {
    qn_flags_print_help(&k_bg_table, out);
}

static const struct {
    const char *name;
    int N, K;
} k_shapes[] = {
    {"q_proj", 12288, 5120},        {"k_proj/v_proj", 1024, 5120}, {"o_proj", 5120, 12288},
    {"expert_gate_up", 3072, 5120}, {"expert_down", 5120, 1536},   {"dense_down", 5120, 12288},
};

static uint64_t g_rng;
static float urand(void) { /* [-1, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((g_rng >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

/* Uploads n bf16 values uniform in [-a, a) into a fresh arena block. */
static qn_status upload_rand_bf16(qn_cuda_ctx *c, size_t n, float a, void **out) {
    uint16_t *h = malloc(n * sizeof *h);
    if (!h) return qn_fail(QN_ERR_NOMEM, "bench gemm: %zu host bytes", n * 2);
    for (size_t i = 0; i < n; i++)
        h[i] = qn_f32_to_bf16(a * urand());
    void *d = qn_cuda_alloc(c, n * 2);
    qn_status s =
        d ? qn_cuda_upload(c, d, h, n * 2)
          : qn_fail(QN_ERR_NOMEM, "bench gemm: arena full (%zu bytes); raise --arena-mb", n * 2);
    if (s == QN_OK) s = qn_cuda_sync(c);
    free(h);
    *out = d;
    return s;
}

typedef struct {
    qn_cuda_ctx *c;
    int M, N, K;
    const void *x, *w;
    void *y_bf16, *y_fp8;
    const uint8_t *xq;
    const float *xs;
    qn_cuda_fp8_weight fw;
} gemm_ops;

static qn_status run_bf16(const gemm_ops *o) {
    return qn_cuda_gemm(o->c, QN_DTYPE_BF16, 0, 1, o->M, o->N, o->K, 1.0f, o->x, o->K, o->w, o->K,
                        0.0f, o->y_bf16, o->N);
}
static qn_status run_fp8(const gemm_ops *o) {
    return qn_cuda_fp8_gemm(o->c, QN_DTYPE_BF16, o->y_fp8, o->xq, o->xs, &o->fw, o->M);
}
static qn_status run_fp8_fused(const gemm_ops *o) {
    return qn_cuda_fp8_matmul_forward(o->c, QN_DTYPE_BF16, o->y_fp8, o->x, &o->fw, o->M);
}

/* Seconds per call: 3 warm-up calls, then iters calls between two events. */
static qn_status time_it(const gemm_ops *o, qn_status (*fn)(const gemm_ops *), int iters,
                         double *sec) {
    for (int i = 0; i < 3; i++)
        QN_CHECK(fn(o));
    QN_CHECK(qn_cuda_event_record(o->c, 0));
    for (int i = 0; i < iters; i++)
        QN_CHECK(fn(o));
    QN_CHECK(qn_cuda_event_record(o->c, 1));
    float ms = 0;
    QN_CHECK(qn_cuda_elapsed_ms(o->c, 0, 1, &ms));
    QN_CHECK(qn_cuda_sync(o->c));
    *sec = (double)ms / 1e3 / iters;
    return QN_OK;
}

/* sqrt(sum (a-b)^2 / sum a^2) of two bf16 device buffers. */
static qn_status nerr_bf16(qn_cuda_ctx *c, const void *a, const void *b, size_t n, double *err) {
    uint16_t *ha = malloc(n * 2), *hb = malloc(n * 2);
    qn_status s = (ha && hb) ? QN_OK : qn_fail(QN_ERR_NOMEM, "bench gemm: host buffers");
    if (s == QN_OK) s = qn_cuda_download(c, ha, a, n * 2);
    if (s == QN_OK) s = qn_cuda_download(c, hb, b, n * 2);
    if (s == QN_OK) {
        double num = 0, den = 0;
        for (size_t i = 0; i < n; i++) {
            double va = qn_bf16_to_f32(ha[i]), vb = qn_bf16_to_f32(hb[i]);
            if (!isfinite(va) || !isfinite(vb)) {
                num = INFINITY;
                break;
            }
            num += (va - vb) * (va - vb);
            den += va * va;
        }
        *err = isfinite(num) ? sqrt(num / (den > 1e-30 ? den : 1e-30)) : INFINITY;
    }
    free(ha);
    free(hb);
    return s;
}

static qn_status bench_shape(qn_cuda_ctx *c, const char *name, int M, int N, int K, int iters) {
    const size_t mark = qn_cuda_mark(c);
    gemm_ops o = {.c = c, .M = M, .N = N, .K = K};
    qn_status s = QN_OK;
    void *x = NULL, *w = NULL;
    const size_t nx = (size_t)M * K, nw = (size_t)N * K, ny = (size_t)M * N;
    const int ld = (int)qn_cuda_fp8_weight_scale_ld(K);
    const size_t nsw = (size_t)qn_cuda_fp8_blocks(N) * (size_t)ld;
    const size_t nsx = qn_cuda_fp8_act_scale_floats(M, K);
    uint8_t *wq = NULL, *xq = NULL;
    float *ws = NULL, *xs = NULL;
    double t_bf16 = 0, t_fp8 = 0, t_fused = 0, err = 0;

    s = upload_rand_bf16(c, nx, 1.0f, &x);
    if (s == QN_OK) s = upload_rand_bf16(c, nw, 0.05f, &w);
    if (s == QN_OK) {
        wq = qn_cuda_alloc(c, nw);
        ws = qn_cuda_alloc(c, nsw * sizeof(float));
        xq = qn_cuda_alloc(c, nx);
        xs = qn_cuda_alloc(c, nsx * sizeof(float));
        o.y_bf16 = qn_cuda_alloc(c, ny * 2);
        o.y_fp8 = qn_cuda_alloc(c, ny * 2);
        if (!wq || !ws || !xq || !xs || !o.y_bf16 || !o.y_fp8)
            s = qn_fail(QN_ERR_NOMEM, "bench gemm: %s M=%d: arena full; raise --arena-mb", name, M);
    }
    if (s == QN_OK) s = qn_cuda_memset(c, ws, 0, nsw * sizeof(float));
    if (s == QN_OK) s = qn_cuda_fp8_requantize_weight(c, QN_DTYPE_BF16, wq, ws, ld, w, N, K, NULL);
    if (s == QN_OK) s = qn_cuda_fp8_quantize_act(c, QN_DTYPE_BF16, xq, xs, x, M, K);
    o.x = x;
    o.w = w;
    o.xq = xq;
    o.xs = xs;
    o.fw = (qn_cuda_fp8_weight){.q = wq, .scale = ws, .N = N, .K = K, .scale_ld = ld};
    if (s == QN_OK) s = time_it(&o, run_bf16, iters, &t_bf16);
    if (s == QN_OK) s = time_it(&o, run_fp8, iters, &t_fp8);
    if (s == QN_OK) s = nerr_bf16(c, o.y_bf16, o.y_fp8, ny, &err);
    if (s == QN_OK) s = time_it(&o, run_fp8_fused, iters, &t_fused);
    if (s == QN_OK) {
        const double fl = 2.0 * M * (double)N * K;
        printf("%-15s %6d %6d %6d %12.1f %12.1f %12.1f %9.2fx %10.2e\n", name, M, N, K,
               fl / t_bf16 / 1e12, fl / t_fp8 / 1e12, fl / t_fused / 1e12, t_bf16 / t_fp8, err);
        fflush(stdout);
    }
    qn_cuda_reset(c, mark);
    return s;
}

static qn_status bench(const bench_gemm_cfg *cfg) {
    if (strcmp(cfg->device, "cuda") != 0)
        return qn_fail(QN_ERR_INVALID,
                       "--device %s: only cuda is supported (CPU GEMMs: quench bench model)",
                       cfg->device);
    if (qn_cuda_device_count() == 0)
        return qn_fail(QN_ERR_NO_DEVICE,
                       "no CUDA device: this benchmark needs an NVIDIA Hopper GPU (H100/H200)%s",
#ifdef QN_HAVE_CUDA
                       ""
#else
                       "; this quench was built without CUDA (QN_CUDA=OFF)"
#endif
        );
    qn_cuda_ctx_params p = {.device = 0, .arena_bytes = (size_t)cfg->arena_mb << 20};
    qn_cuda_ctx *c = NULL;
    QN_CHECK(qn_cuda_ctx_create(&p, &c));
    char desc[256] = "";
    if (qn_cuda_device_describe(0, desc, sizeof desc) != QN_OK)
        snprintf(desc, sizeof desc, "GPU 0");
    printf("quench bench gemm: %s\n", desc);
    printf("y[M, N] = x[M, K] W[N, K]^T, bf16 out; TFLOP/s = 2 M N K / time, %d calls each\n",
           (int)cfg->iters);
    printf("  bf16: cuBLASLt bf16 x bf16 (fp32 accumulation)\n");
    printf("  fp8: cuBLASLt e4m3 block-scaled (128x128 weight tiles, 1x128 activation groups),\n"
           "       operands quantised beforehand; fp8+q: with the activation quantiser\n");
    printf("  nerr: normalised difference of the fp8 output from the bf16 one\n\n");
    printf("%-15s %6s %6s %6s %12s %12s %12s %10s %10s\n", "shape", "M", "N", "K", "bf16 TF/s",
           "fp8 TF/s", "fp8+q TF/s", "fp8/bf16", "nerr");
    g_rng = 0x9E3779B97F4A7C15ull ^ (uint64_t)cfg->seed;
    if (!g_rng) g_rng = 1;
    qn_status s = QN_OK;
    for (size_t mi = 0; mi < cfg->m.n && s == QN_OK; mi++)
        for (size_t i = 0; i < sizeof k_shapes / sizeof k_shapes[0] && s == QN_OK; i++)
            s = bench_shape(c, k_shapes[i].name, (int)cfg->m.v[mi], k_shapes[i].N, k_shapes[i].K,
                            (int)cfg->iters);
    qn_cuda_ctx_free(c);
    return s;
}

int qn_bench_gemm(int argc, char **argv) {
    bench_gemm_cfg cfg;
    qn_flags_parsed p;
    if (qn_flags_parse(&k_bg_table, &cfg, argc, argv, &p) != QN_OK) {
        fprintf(stderr, "quench bench gemm: %s\n", qn_last_error());
        return QN_EXIT_USAGE;
    }
    int rc = QN_EXIT_OK;
    if (p.print_config) {
        qn_flags_dump(&k_bg_table, &cfg, &p, stdout);
    } else if (bench(&cfg) != QN_OK) {
        fprintf(stderr, "quench bench gemm: %s\n", qn_last_error());
        rc = QN_EXIT_FAILURE;
    }
    qn_flags_parsed_free(&p);
    qn_flags_free(&k_bg_table, &cfg);
    return rc;
}
