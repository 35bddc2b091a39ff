/* harness.c — the device side of the CUDA op harness (harness.h): case
 * bookkeeping, host and device buffers owned by a case, guarded outputs,
 * comparisons, perf timing and the summary. The checks themselves live in
 * harness_host.c (unit-tested without a GPU).
 *
 * Device buffers come from one CUDA context arena; each case marks it at its
 * start and resets it at its end, so cases cannot leak into each other. A
 * fault inside a kernel is sticky in CUDA: every later case then fails with
 * the same error, so the FIRST failure printed is the one to look at.
 *
 * Leaves out: finite-difference gradient checks (backward ops are checked
 * against the CPU backward), several devices. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops/cuda/cuda_rt.h"
#include "tests/gpu/ops/harness_host.h"

enum { QN_H_MAX_OUTS = 64 };

typedef struct h_out {
    uint8_t *base; /* device: guard | payload | guard */
    void *dev;     /* base + guard */
    size_t n;
    qn_dtype dt;
} h_out;

struct qn_harness {
    qn_h_opts o;
    qn_cuda_ctx *ctx;
    int has_dev;
    int n_seen, n_run, n_pass, n_fail, n_skip;
    /* the open case */
    int open;
    char op[64], shape[256];
    int failed, n_msgs;
    char first_msg[512];
    double worst_ratio, worst_err, worst_tol;
    uint64_t rng;
    size_t mark;
    void **host;
    size_t n_host, cap_host;
    h_out outs[QN_H_MAX_OUTS];
    int n_outs;
};

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "qn_test_ops: out of host memory (%zu bytes)\n", n);
        abort();
    }
    return p;
}

qn_harness *qn_h_create(const qn_h_opts *o) {
    qn_harness *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->o = *o;
    if (o->list || qn_cuda_device_count() == 0) return h;
    char desc[256] = "";
    if (qn_cuda_device_describe(0, desc, sizeof desc) == QN_OK) printf("device: %s\n", desc);
    size_t mb = 16384;
    const char *env = getenv("QN_OPS_ARENA_MB");
    if (env && *env) mb = (size_t)strtoull(env, NULL, 10);
    qn_status s = QN_ERR_NOMEM;
    /* Halve until it fits (another process may hold memory on the GPU). */
    for (; mb >= 256 && s == QN_ERR_NOMEM; mb /= 2) {
        qn_cuda_ctx_params p = {.device = 0, .arena_bytes = mb << 20};
        s = qn_cuda_ctx_create(&p, &h->ctx);
        if (s == QN_OK) printf("arena: %zu MiB\n", mb);
    }
    if (s != QN_OK) {
        fprintf(stderr, "qn_test_ops: a CUDA device is present but unusable: %s\n",
                qn_last_error());
        free(h);
        return NULL;
    }
    h->has_dev = 1;
    return h;
}

static void case_release(qn_harness *h) {
    for (size_t i = 0; i < h->n_host; i++)
        free(h->host[i]);
    h->n_host = 0;
    h->n_outs = 0;
    if (h->ctx) qn_cuda_reset(h->ctx, h->mark);
}

void qn_h_end(qn_harness *h) {
    if (!h->open) return;
    h->open = 0;
    if (h->failed) {
        h->n_fail++;
        if (h->n_msgs > 1)
            printf("FAIL %s %s: %s (+%d more)\n", h->op, h->shape, h->first_msg, h->n_msgs - 1);
        else
            printf("FAIL %s %s: %s\n", h->op, h->shape, h->first_msg);
    } else {
        h->n_pass++;
        if (h->worst_tol > 0)
            printf("OK %s %s (err %.2e, tol %.0e)\n", h->op, h->shape, h->worst_err, h->worst_tol);
        else
            printf("OK %s %s\n", h->op, h->shape);
    }
    fflush(stdout);
    case_release(h);
}

int qn_h_case(qn_harness *h, const char *op, const char *shape_fmt, ...) {
    qn_h_end(h);
    char shape[256];
    va_list ap;
    va_start(ap, shape_fmt);
    vsnprintf(shape, sizeof shape, shape_fmt, ap);
    va_end(ap);
    if (!qn_h_op_matches(h->o.op_prefix, op)) return 0;
    h->n_seen++;
    if (h->o.list) {
        printf("%s %s\n", op, shape);
        return 0;
    }
    if (!h->has_dev) {
        h->n_skip++;
        printf("SKIPPED %s %s\n", op, shape);
        return 0;
    }
    h->open = 1;
    h->n_run++;
    snprintf(h->op, sizeof h->op, "%s", op);
    snprintf(h->shape, sizeof h->shape, "%s", shape);
    h->failed = 0;
    h->n_msgs = 0;
    h->first_msg[0] = 0;
    h->worst_ratio = h->worst_err = h->worst_tol = 0;
    h->rng = qn_h_case_seed(h->o.seed, op, shape);
    h->mark = qn_cuda_mark(h->ctx);
    return 1;
}

int qn_h_finish(qn_harness *h) {
    qn_h_end(h);
    int rc;
    if (h->o.list) {
        printf("%d cases\n", h->n_seen);
        rc = 0;
    } else if (!h->has_dev) {
        printf("%d cases skipped: no CUDA device\n", h->n_skip);
        rc = 77;
    } else if (h->n_run == 0) {
        printf("no case matched --op %s\n", h->o.op_prefix ? h->o.op_prefix : "");
        rc = 1;
    } else {
        printf("%d cases: %d passed, %d failed (arena peak %.1f MiB)\n", h->n_run, h->n_pass,
               h->n_fail, (double)qn_cuda_arena_peak(h->ctx) / (1024.0 * 1024.0));
        rc = h->n_fail ? 1 : 0;
    }
    qn_cuda_ctx_free(h->ctx);
    free(h->host);
    free(h);
    return rc;
}

qn_cuda_ctx *qn_h_ctx(qn_harness *h) {
    return h->ctx;
}
int qn_h_perf_mode(const qn_harness *h) {
    return h->o.perf;
}

void qn_h_fail(qn_harness *h, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!h->failed) snprintf(h->first_msg, sizeof h->first_msg, "%s", msg);
    h->failed = 1;
    h->n_msgs++;
    printf("  %s %s: %s\n", h->op, h->shape, msg);
}

/* ---- host buffers ---- */

static void *case_own(qn_harness *h, void *p) {
    if (h->n_host == h->cap_host) {
        size_t cap = h->cap_host ? 2 * h->cap_host : 64;
        void **nh = realloc(h->host, cap * sizeof *nh);
        if (!nh) {
            fprintf(stderr, "qn_test_ops: out of host memory\n");
            abort();
        }
        h->host = nh;
        h->cap_host = cap;
    }
    h->host[h->n_host++] = p;
    return p;
}

void *qn_h_host(qn_harness *h, size_t bytes) {
    void *p = case_own(h, xmalloc(bytes));
    memset(p, 0, bytes ? bytes : 1);
    return p;
}

float *qn_h_rand(qn_harness *h, size_t n, float lo, float hi) {
    float *x = case_own(h, xmalloc(n * sizeof *x));
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * qn_h_rng_u01(&h->rng);
    return x;
}

float *qn_h_rand_dt(qn_harness *h, qn_dtype dt, size_t n, float lo, float hi) {
    float *x = qn_h_rand(h, n, lo, hi);
    if (dt == QN_DTYPE_F32 || dt == QN_DTYPE_F64 || n == 0) return x;
    size_t esz = qn_dtype_size(dt);
    void *tmp = xmalloc(n * (esz ? esz : 1));
    if (qn_dtype_from_f32(dt, x, tmp, n) != QN_OK || qn_dtype_to_f32(dt, tmp, x, n) != QN_OK)
        qn_h_fail(h, "qn_h_rand_dt: cannot round to %s", qn_h_dtname(dt));
    free(tmp);
    return x;
}

/* ---- device buffers ---- */

static void *dev_alloc(qn_harness *h, size_t bytes, const char *what) {
    void *d = qn_cuda_alloc(h->ctx, bytes);
    if (!d)
        qn_h_fail(h, "%s: %zu bytes do not fit the arena (%zu of %zu used)", what, bytes,
                  qn_cuda_arena_used(h->ctx), qn_cuda_arena_cap(h->ctx));
    return d;
}

/* Host copy of n floats in dt, owned by the case (the upload is asynchronous
 * and needs its source until the next sync). */
static void *host_in_dt(qn_harness *h, qn_dtype dt, const float *host, size_t n) {
    size_t esz = qn_dtype_size(dt);
    void *b = case_own(h, xmalloc(n * esz));
    if (dt == QN_DTYPE_I32) {
        for (size_t i = 0; i < n; i++)
            ((int32_t *)b)[i] = (int32_t)host[i];
    } else if (qn_dtype_from_f32(dt, host, b, n) != QN_OK) {
        qn_h_fail(h, "cannot convert inputs to %s", qn_h_dtname(dt));
    }
    return b;
}

void *qn_h_in_raw(qn_harness *h, const void *host, size_t bytes) {
    void *d = dev_alloc(h, bytes, "qn_h_in_raw");
    if (!d) return NULL;
    void *copy = case_own(h, xmalloc(bytes));
    memcpy(copy, host, bytes);
    if (qn_cuda_upload(h->ctx, d, copy, bytes) != QN_OK) {
        qn_h_fail(h, "upload: %s", qn_last_error());
        return NULL;
    }
    return d;
}

void *qn_h_in(qn_harness *h, qn_dtype dt, const float *host, size_t n) {
    size_t esz = qn_dtype_size(dt);
    if (!esz) {
        qn_h_fail(h, "qn_h_in: bad dtype %d", (int)dt);
        return NULL;
    }
    void *b = host_in_dt(h, dt, host, n);
    void *d = dev_alloc(h, n * esz, "qn_h_in");
    if (!d) return NULL;
    if (qn_cuda_upload(h->ctx, d, b, n * esz) != QN_OK) {
        qn_h_fail(h, "upload: %s", qn_last_error());
        return NULL;
    }
    return d;
}

static void *out_common(qn_harness *h, qn_dtype dt, const float *host, size_t n) {
    size_t esz = qn_dtype_size(dt);
    if (!esz) {
        qn_h_fail(h, "qn_h_out: bad dtype %d", (int)dt);
        return NULL;
    }
    if (h->n_outs == QN_H_MAX_OUTS) {
        qn_h_fail(h, "more than %d outputs in one case", QN_H_MAX_OUTS);
        return NULL;
    }
    size_t total = n * esz + 2 * QN_H_GUARD;
    uint8_t *base = dev_alloc(h, total, "qn_h_out");
    if (!base) return NULL;
    uint8_t *img = case_own(h, xmalloc(total));
    qn_h_guard_fill(img, QN_H_GUARD);
    qn_h_guard_fill(img + QN_H_GUARD + n * esz, QN_H_GUARD);
    if (host) {
        void *b = host_in_dt(h, dt, host, n);
        memcpy(img + QN_H_GUARD, b, n * esz);
    } else {
        /* all-ones bytes: NaN in f32/bf16/f16, -1 in integers, so an element
         * the kernel never wrote fails the NaN check */
        memset(img + QN_H_GUARD, 0xFF, n * esz);
    }
    if (qn_cuda_upload(h->ctx, base, img, total) != QN_OK) {
        qn_h_fail(h, "upload: %s", qn_last_error());
        return NULL;
    }
    h_out *o = &h->outs[h->n_outs++];
    *o = (h_out){.base = base, .dev = base + QN_H_GUARD, .n = n, .dt = dt};
    return o->dev;
}

void *qn_h_out(qn_harness *h, qn_dtype dt, size_t n) {
    return out_common(h, dt, NULL, n);
}

void *qn_h_out_init(qn_harness *h, qn_dtype dt, const float *host, size_t n) {
    return out_common(h, dt, host, n);
}

/* Downloads dev into a case-owned host buffer. A qn_h_out buffer compared
 * whole comes with its guards (*guard bytes either side); anything else (an
 * input buffer, or fewer elements than the output holds) without. */
static uint8_t *download(qn_harness *h, qn_dtype dt, const void *dev, size_t n, size_t *guard) {
    size_t esz = qn_dtype_size(dt);
    const void *src = dev;
    *guard = 0;
    if (!dev) {
        qn_h_fail(h, "compare: NULL device buffer (an earlier allocation failed)");
        return NULL;
    }
    for (int i = 0; i < h->n_outs; i++)
        if (h->outs[i].dev == dev && h->outs[i].n == n && qn_dtype_size(h->outs[i].dt) == esz) {
            src = h->outs[i].base;
            *guard = QN_H_GUARD;
            break;
        }
    size_t total = n * esz + 2 * *guard;
    uint8_t *buf = case_own(h, xmalloc(total));
    if (qn_cuda_download(h->ctx, buf, src, total) != QN_OK) {
        qn_h_fail(h, "download: %s", qn_last_error());
        return NULL;
    }
    return buf;
}

void qn_h_compare(qn_harness *h, const char *what, qn_dtype dt, const float *ref, const void *dev,
                  size_t n, double tol) {
    if (!h->open) return;
    size_t guard = 0;
    uint8_t *buf = download(h, dt, dev, n, &guard);
    if (!buf) return;
    float *scratch = case_own(h, xmalloc(n * sizeof(float)));
    double err;
    char msg[400];
    if (!qn_h_check_host(dt, ref, buf, n, guard, tol, &err, scratch, msg, sizeof msg)) {
        qn_h_fail(h, "%s: %s", what, msg);
        return;
    }
    double ratio = tol > 0 ? err / tol : (err > 0 ? INFINITY : 0);
    if (ratio >= h->worst_ratio) {
        h->worst_ratio = ratio;
        h->worst_err = err;
        h->worst_tol = tol;
    }
}

void qn_h_compare_i32(qn_harness *h, const char *what, const int32_t *ref, const void *dev,
                      size_t n) {
    if (!h->open) return;
    size_t guard = 0;
    uint8_t *buf = download(h, QN_DTYPE_I32, dev, n, &guard);
    if (!buf) return;
    if (guard) {
        long bad = qn_h_guard_check(buf, guard);
        if (bad < 0) bad = qn_h_guard_check(buf + guard + n * 4, guard);
        if (bad >= 0) {
            qn_h_fail(h, "%s: guard bytes overwritten", what);
            return;
        }
    }
    const uint8_t *p = buf + guard;
    for (size_t i = 0; i < n; i++) {
        int32_t v;
        memcpy(&v, p + 4 * i, 4);
        if (v != ref[i]) {
            qn_h_fail(h, "%s: element %zu of %zu: expected %d, got %d", what, i, n, ref[i], v);
            return;
        }
    }
}

float *qn_h_fetch(qn_harness *h, qn_dtype dt, const void *dev, size_t n) {
    if (!h->open) return NULL;
    size_t guard = 0;
    uint8_t *buf = download(h, dt, dev, n, &guard);
    if (!buf) return NULL;
    float *out = case_own(h, xmalloc(n * sizeof(float)));
    if (qn_h_to_f32(dt, buf + guard, out, n) != QN_OK) {
        qn_h_fail(h, "fetch: cannot convert %s", qn_h_dtname(dt));
        return NULL;
    }
    return out;
}

/* ---- perf ---- */

void qn_h_perf(qn_harness *h, double bytes, double flops, qn_status (*launch)(void *arg),
               void *arg) {
    if (!h->o.perf || !h->open || h->failed) return;
    qn_cuda_ctx *c = h->ctx;
    for (int i = 0; i < 3; i++) /* warm-up */
        if (launch(arg) != QN_OK) {
            qn_h_fail(h, "perf launch: %s", qn_last_error());
            return;
        }
    float ms = 0;
    if (qn_cuda_event_record(c, 0) != QN_OK || launch(arg) != QN_OK ||
        qn_cuda_event_record(c, 1) != QN_OK || qn_cuda_elapsed_ms(c, 0, 1, &ms) != QN_OK) {
        qn_h_fail(h, "perf: %s", qn_last_error());
        return;
    }
    /* about 50 ms of repetitions, 5 .. 1000 */
    int reps = ms > 0 ? (int)(50.0f / ms) : 1000;
    if (reps < 5) reps = 5;
    if (reps > 1000) reps = 1000;
    if (qn_cuda_event_record(c, 0) != QN_OK) goto fail;
    for (int i = 0; i < reps; i++)
        if (launch(arg) != QN_OK) goto fail;
    if (qn_cuda_event_record(c, 1) != QN_OK || qn_cuda_elapsed_ms(c, 0, 1, &ms) != QN_OK) goto fail;
    if (qn_cuda_sync(c) != QN_OK) goto fail;
    double s = (double)ms / 1e3 / reps;
    printf("PERF %s %s: %.2f us", h->op, h->shape, s * 1e6);
    if (bytes > 0) printf("  %.1f GB/s", bytes / s / 1e9);
    if (flops > 0) printf("  %.2f TFLOP/s", flops / s / 1e12);
    printf("  (%d reps)\n", reps);
    return;
fail:
    qn_h_fail(h, "perf: %s", qn_last_error());
}
