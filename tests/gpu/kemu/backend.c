/* backend.c — the host side of the kernel emulation (tests/gpu/kemu/run.sh):
 * the op harness API (harness.h) and the parts of the CUDA context
 * (cuda_ctx.h) and of gemm.h that the emulated ops call, all on host memory,
 * so that tests/gpu/ops/ops_logprob.c and ops_moe.c run unchanged against
 * the REAL kernels of core/ops/cuda/{tiled_gemm,logprob,loss,moe}.cu
 * compiled for the CPU (emu.cc).
 *
 * Harness semantics kept: per-case seeded inputs (harness_host.c's
 * generator and seed), bf16 rounding of inputs, outputs filled with all-ones
 * bytes (NaN) so unwritten elements fail, the same output check and
 * tolerances (qn_h_check_host). Left out: guard bytes (host memory: run
 * under ASan instead), --perf, --list, timing. The "device" arena is plain
 * calloc; nothing is freed before exit (the sweep is small).
 *
 * qn_cuda_gemm_ex answers QN_ERR_UNSUPPORTED, so every GEMM runs on the
 * emulated tiled kernel, unless KEMU_BLAS=1: then it is qn_sgemm on the
 * host (checks the arguments the ops pass to gemm.h). Usage:
 *   kemu_test [OP_PREFIX]     exit 0 when every case passed */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/ops/cpu/ops.h"
#include "core/ops/cuda/cuda_ctx.h"
#include "core/ops/cuda/gemm.h"
#include "tests/gpu/ops/families.h"
#include "tests/gpu/ops/harness_host.h"

struct qn_harness {
    const char *prefix;
    int open, failed, n_pass, n_fail;
    char op[64], shape[256];
    uint64_t rng;
    double worst;
};

static size_t g_used;

static void *xm(size_t n) {
    void *p = calloc(1, n ? n : 1);
    if (!p) {
        fprintf(stderr, "kemu: out of host memory (%zu bytes)\n", n);
        exit(3);
    }
    g_used += n;
    return p;
}

/* ------------------------------------------------------------ harness API */

void qn_h_end(qn_harness *h) {
    if (!h->open) return;
    h->open = 0;
    if (h->failed) {
        h->n_fail++;
        return;
    }
    h->n_pass++;
    printf("OK %s %s (err %.3g)\n", h->op, h->shape, h->worst);
}

int qn_h_case(qn_harness *h, const char *op, const char *fmt, ...) {
    qn_h_end(h);
    if (!qn_h_op_matches(h->prefix, op)) return 0;
    snprintf(h->op, sizeof h->op, "%s", op);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->shape, sizeof h->shape, fmt, ap);
    va_end(ap);
    h->open = 1;
    h->failed = 0;
    h->worst = 0;
    h->rng = qn_h_case_seed(1, h->op, h->shape);
    return 1;
}

qn_cuda_ctx *qn_h_ctx(qn_harness *h) {
    return (qn_cuda_ctx *)h;
}
int qn_h_perf_mode(const qn_harness *h) {
    return 0;
}

void qn_h_fail(qn_harness *h, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL %s %s: ", h->op, h->shape);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    h->failed = 1;
}

void *qn_h_host(qn_harness *h, size_t bytes) {
    return xm(bytes);
}

float *qn_h_rand(qn_harness *h, size_t n, float lo, float hi) {
    float *x = xm(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * qn_h_rng_u01(&h->rng);
    return x;
}

float *qn_h_rand_dt(qn_harness *h, qn_dtype dt, size_t n, float lo, float hi) {
    float *x = qn_h_rand(h, n, lo, hi);
    if (dt == QN_DTYPE_BF16)
        for (size_t i = 0; i < n; i++)
            x[i] = qn_bf16_to_f32(qn_f32_to_bf16(x[i]));
    return x;
}

void *qn_h_in_raw(qn_harness *h, const void *host, size_t bytes) {
    void *d = xm(bytes);
    memcpy(d, host, bytes);
    return d;
}

void *qn_h_in(qn_harness *h, qn_dtype dt, const float *host, size_t n) {
    void *d = xm(n * qn_dtype_size(dt));
    if (dt == QN_DTYPE_I32) {
        for (size_t i = 0; i < n; i++)
            ((int32_t *)d)[i] = (int32_t)host[i];
    } else if (qn_dtype_from_f32(dt, host, d, n) != QN_OK) {
        qn_h_fail(h, "qn_h_in: cannot convert to %s", qn_h_dtname(dt));
    }
    return d;
}

void *qn_h_out(qn_harness *h, qn_dtype dt, size_t n) {
    void *d = xm(n * qn_dtype_size(dt));
    memset(d, 0xFF, n * qn_dtype_size(dt)); /* NaN: an unwritten element fails */
    return d;
}

void *qn_h_out_init(qn_harness *h, qn_dtype dt, const float *host, size_t n) {
    return qn_h_in(h, dt, host, n);
}

void qn_h_compare(qn_harness *h, const char *what, qn_dtype dt, const float *ref, const void *dev,
                  size_t n, double tol) {
    if (!h->open) return;
    if (!dev) {
        qn_h_fail(h, "%s: NULL buffer", what);
        return;
    }
    float *scratch = xm(n * sizeof(float));
    double err;
    char msg[400];
    if (!qn_h_check_host(dt, ref, dev, n, 0, tol, &err, scratch, msg, sizeof msg))
        qn_h_fail(h, "%s: %s", what, msg);
    else if (err > h->worst)
        h->worst = err;
}

void qn_h_compare_i32(qn_harness *h, const char *what, const int32_t *ref, const void *dev,
                      size_t n) {
    if (!h->open) return;
    for (size_t i = 0; i < n; i++) {
        int32_t v = ((const int32_t *)dev)[i];
        if (v != ref[i]) {
            qn_h_fail(h, "%s: element %zu of %zu: expected %d, got %d", what, i, n, ref[i], v);
            return;
        }
    }
}

float *qn_h_fetch(qn_harness *h, qn_dtype dt, const void *dev, size_t n) {
    float *o = xm(n * sizeof(float));
    if (qn_h_to_f32(dt, dev, o, n) != QN_OK) qn_h_fail(h, "fetch: cannot convert");
    return o;
}

void qn_h_perf(qn_harness *h, double bytes, double flops, qn_status (*launch)(void *), void *a) {}

/* --------------------------------------------- CUDA context stand-ins */

void *qn_cuda_alloc(qn_cuda_ctx *c, size_t bytes) {
    return xm(bytes);
}
size_t qn_cuda_mark(const qn_cuda_ctx *c) {
    return 0;
}
void qn_cuda_reset(qn_cuda_ctx *c, size_t mark) {}
size_t qn_cuda_arena_used(const qn_cuda_ctx *c) {
    return g_used;
}
size_t qn_cuda_arena_cap(const qn_cuda_ctx *c) {
    return (size_t)1 << 40;
}
void *qn_cuda_ctx_stream(const qn_cuda_ctx *c) {
    return NULL;
}

qn_status qn_cuda_memset(qn_cuda_ctx *c, void *dst, int byte, size_t bytes) {
    memset(dst, byte, bytes);
    return QN_OK;
}

qn_status qn_cuda_download(qn_cuda_ctx *c, void *dst, const void *src, size_t bytes) {
    memcpy(dst, src, bytes);
    return QN_OK;
}

qn_status qn_cuda_gemm_ex(qn_cuda_ctx *c, const qn_cuda_gemm_desc *d, float alpha, const void *A,
                          const void *B, float beta, void *C) {
    const char *e = getenv("KEMU_BLAS");
    if (!e || *e == '0') return qn_fail(QN_ERR_UNSUPPORTED, "kemu: no cuBLASLt here");
    size_t na = (size_t)(d->trans_a ? d->K : d->M) * d->lda;
    size_t nb = (size_t)(d->trans_b ? d->N : d->K) * d->ldb;
    size_t nc = (size_t)d->M * d->ldc;
    float *a = xm(na * 4), *b = xm(nb * 4), *cf = xm(nc * 4);
    qn_h_to_f32(d->ab_dtype, A, a, na);
    qn_h_to_f32(d->ab_dtype, B, b, nb);
    qn_h_to_f32(d->c_dtype, C, cf, nc);
    /* beta == 0 must not read C: clear the block the GEMM writes */
    if (beta == 0)
        for (int i = 0; i < d->M; i++)
            memset(cf + (size_t)i * d->ldc, 0, (size_t)d->N * sizeof(float));
    qn_sgemm(d->trans_a, d->trans_b, d->M, d->N, d->K, alpha, a, d->lda, b, d->ldb, beta, cf,
             d->ldc);
    return qn_dtype_from_f32(d->c_dtype, cf, C, nc);
}

int main(int argc, char **argv) {
    qn_harness h = {.prefix = argc > 1 ? argv[1] : NULL};
    qn_ops_logprob(&h);
    qn_ops_moe(&h);
    qn_h_end(&h);
    printf("kemu: %d cases passed, %d failed\n", h.n_pass, h.n_fail);
    return h.n_fail || !h.n_pass ? 1 : 0;
}
