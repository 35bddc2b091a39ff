/* swiglu.c — out = silu(gate) * up, the gated activation of the MLPs.
 *
 * Performance: elementwise and parallel; with ld == F the rows are one flat
 * array and are split evenly whatever N is (callers may pass N = 1 and the
 * whole buffer as one row). The row stride lets a fused gate_up GEMM output
 * be used without splitting it.
 */
#include <math.h>

#include "core/ops/cpu/ops.h"

static void fwd_span(float *o, const float *g, const float *u, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + expf(-g[i]));
        o[i] = g[i] * s * u[i];
    }
}

/* Reads every element before writing it, so dg may alias d. */
static void bwd_span(float *dg, float *du, const float *d, const float *g, const float *u,
                     size_t n) {
    for (size_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + expf(-g[i]));
        float dd = d[i], gi = g[i], ui = u[i];
        /* d silu/dg = s (1 + g (1 - s)) */
        dg[i] = dd * ui * s * (1.0f + gi * (1.0f - s));
        du[i] = dd * gi * s;
    }
}

enum { SPAN = 4096 };

void qn_swiglu_forward(float *out, const float *gate, const float *up, int N, int F, int ld) {
    if (ld == F) {
        size_t n = (size_t)N * F, nb = (n + SPAN - 1) / SPAN;
#pragma omp parallel for schedule(static) if (n > 65536)
        for (size_t b = 0; b < nb; b++) {
            size_t i0 = b * SPAN, m = n - i0 < SPAN ? n - i0 : SPAN;
            fwd_span(out + i0, gate + i0, up + i0, m);
        }
        return;
    }
#pragma omp parallel for schedule(static) if ((size_t)N * F > 65536)
    for (int r = 0; r < N; r++)
        fwd_span(out + (size_t)r * F, gate + (size_t)r * ld, up + (size_t)r * ld, (size_t)F);
}

void qn_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                        const float *up, int N, int F, int ld) {
    if (ld == F) {
        size_t n = (size_t)N * F, nb = (n + SPAN - 1) / SPAN;
#pragma omp parallel for schedule(static) if (n > 65536)
        for (size_t b = 0; b < nb; b++) {
            size_t i0 = b * SPAN, m = n - i0 < SPAN ? n - i0 : SPAN;
            bwd_span(dgate + i0, dup + i0, dout + i0, gate + i0, up + i0, m);
        }
        return;
    }
#pragma omp parallel for schedule(static) if ((size_t)N * F > 65536)
    for (int r = 0; r < N; r++)
        bwd_span(dgate + (size_t)r * ld, dup + (size_t)r * ld, dout + (size_t)r * F,
                 gate + (size_t)r * ld, up + (size_t)r * ld, (size_t)F);
}
