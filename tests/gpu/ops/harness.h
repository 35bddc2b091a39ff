/* harness.h — the CUDA op harness (after ggml's test-backend-ops): every
 * CUDA op against its CPU reference (core/ops/cpu) over shape sweeps.
 *
 * A family file (ops_<family>.c) holds one function, void qn_ops_<family>(
 * qn_harness *h), listed in main.c. For each case it:
 *
 *   if (!qn_h_case(h, "rmsnorm_fwd", "N=%d D=%d %s", N, D, qn_h_dtname(dt)))
 *       continue;                          // skipped (no GPU) or filtered out
 *   float *x = qn_h_rand(h, n, -2, 2);     // host inputs, freed at case end
 *   ... CPU reference into host buffers (qn_h_host) ...
 *   void *dx = qn_h_in(h, dt, x, n);       // uploaded in the case's dtype
 *   void *dy = qn_h_out(h, dt, n);         // device output with guard bytes
 *   QN_H_TRY(h, qn_cuda_rmsnorm_forward(qn_h_ctx(h), dt, dy, ...));
 *   qn_h_compare(h, "out", dt, ref, dy, n, qn_h_tol(dt, QN_H_TOL_NORM));
 *   qn_h_perf(h, bytes, flops, launch_fn, &args);   // only in --perf mode
 *   qn_h_end(h);                            // prints the case's line
 *
 * Checks, in this order, for every compared output: the guard bytes either
 * side of the device buffer are intact (a kernel wrote out of bounds); no
 * NaN/Inf in the GPU result where the reference is finite; then the
 * normalised error  sqrt(sum (ref-got)^2 / max(sum ref^2, tiny))  is within
 * the tolerance. The reference is always computed in fp32 on the CPU from
 * the same (dtype-rounded) inputs the GPU sees.
 *
 * Without a CUDA device every case prints "SKIPPED" (never "OK") and the
 * program exits with 77, which ctest reports as skipped. With --list it
 * prints the cases without running them. --op NAME runs only cases whose op
 * starts with NAME. --perf adds a timing line per case (GB/s, TFLOP/s). */
#ifndef QN_TESTS_GPU_OPS_HARNESS_H
#define QN_TESTS_GPU_OPS_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/dtype.h"
#include "core/ops/cuda/cuda_ctx.h"
#include "quench/status.h"

typedef struct qn_harness qn_harness;

/* Tolerance classes: the harness maps (dtype, class) to a threshold on the
 * normalised error. ELEMENTWISE: one rounding (embedding, swiglu, rope);
 * NORM: a reduction then a scale; REDUCE: long reductions (GEMMs, attention,
 * log-softmax over a vocabulary); GRAD: backward passes (two reductions
 * deep); FP8: e4m3 operands. */
typedef enum qn_h_tol_class {
    QN_H_TOL_ELEMENTWISE,
    QN_H_TOL_NORM,
    QN_H_TOL_REDUCE,
    QN_H_TOL_GRAD,
    QN_H_TOL_FP8
} qn_h_tol_class;

double qn_h_tol(qn_dtype dt, qn_h_tol_class cls);
const char *qn_h_dtname(qn_dtype dt); /* "f32", "bf16", ... */

/* Starts a case. Returns 1 when it runs on the GPU, 0 when it is skipped
 * (no device: prints "SKIPPED op shape") or filtered out (--op, --list:
 * prints nothing / its name). A case left open is ended by the next call. */
int qn_h_case(qn_harness *h, const char *op, const char *shape_fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prints "OK op shape (err ...)" or "FAIL op shape: reason" and releases the
 * case's host and device buffers. */
void qn_h_end(qn_harness *h);

qn_cuda_ctx *qn_h_ctx(qn_harness *h);
int qn_h_perf_mode(const qn_harness *h);

/* Host buffers owned by the case: n floats uniform in [lo, hi) from the
 * harness's seeded generator, rounded to dt's precision when dt is bf16
 * (qn_h_rand_dt) so the CPU reference sees exactly the GPU's inputs. */
float *qn_h_rand(qn_harness *h, size_t n, float lo, float hi);
float *qn_h_rand_dt(qn_harness *h, qn_dtype dt, size_t n, float lo, float hi);
void *qn_h_host(qn_harness *h, size_t bytes); /* zeroed */
/* A case-owned copy of n host floats; n ints uniform in [0, hi). Inline, on
 * qn_h_host and qn_h_rand, so that the host emulations, which define those
 * two themselves, share them too. */
static inline float *qn_h_copy(qn_harness *h, const float *x, size_t n) {
    float *y = (float *)qn_h_host(h, n * sizeof *y);
    if (y && n) memcpy(y, x, n * sizeof *y);
    return y;
}
static inline int32_t *qn_h_rand_ints(qn_harness *h, size_t n, int hi) {
    float *u = qn_h_rand(h, n, 0.0f, 1.0f);
    int32_t *v = (int32_t *)qn_h_host(h, n * sizeof *v);
    if (!u || !v) return v;
    for (size_t i = 0; i < n; i++) {
        int k = (int)(u[i] * (float)hi);
        v[i] = k >= hi ? hi - 1 : k;
    }
    return v;
}

/* Device buffers owned by the case. qn_h_in uploads n floats converted to
 * dt (f32 or bf16). qn_h_in_raw uploads bytes as they are (ints, fp8).
 * qn_h_out reserves n elements of dt with guard bytes either side (filled
 * with a pattern that qn_h_compare checks); qn_h_out_init also fills it
 * from host floats (for ops that accumulate into their output). */
void *qn_h_in(qn_harness *h, qn_dtype dt, const float *host, size_t n);
void *qn_h_in_raw(qn_harness *h, const void *host, size_t bytes);
void *qn_h_out(qn_harness *h, qn_dtype dt, size_t n);
void *qn_h_out_init(qn_harness *h, qn_dtype dt, const float *host, size_t n);

/* Syncs, downloads dev (n elements of dt, from qn_h_out), checks guards,
 * NaN/Inf, then the normalised error against ref. Records a failure on the
 * case (the case goes on, so all its outputs are reported). */
void qn_h_compare(qn_harness *h, const char *what, qn_dtype dt, const float *ref,
                  const void *dev, size_t n, double tol);
/* Same for integer outputs (router indices, permutations): exact match. */
void qn_h_compare_i32(qn_harness *h, const char *what, const int32_t *ref, const void *dev,
                      size_t n);
/* Downloads dev into a case-owned host float buffer (converted from dt),
 * for checks a family does itself; NULL after a recorded failure. */
float *qn_h_fetch(qn_harness *h, qn_dtype dt, const void *dev, size_t n);
/* Records a failure with a message (printf-style). */
void qn_h_fail(qn_harness *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A CUDA call that must succeed inside a case: records the failure with the
 * status message and skips the rest of the case body's statement. */
#define QN_H_TRY(h, call)                                                           \
    do {                                                                            \
        qn_status qn_h_s_ = (call);                                                 \
        if (qn_h_s_ != QN_OK) qn_h_fail((h), "%s: %s", #call, qn_last_error());     \
    } while (0)

/* --perf: runs launch(arg) warm-up then timed repetitions between CUDA
 * events and prints GB/s (bytes moved per call) and TFLOP/s (flops per
 * call; 0 prints none). A no-op outside perf mode. */
void qn_h_perf(qn_harness *h, double bytes, double flops, qn_status (*launch)(void *arg),
               void *arg);

#endif /* QN_TESTS_GPU_OPS_HARNESS_H */
