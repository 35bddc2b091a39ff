/* swiglu.c — out = silu(gate) * up, the gated activation of the MLPs.
 *
 * Performance: elementwise, parallel over rows; the row stride lets a fused
 * gate_up GEMM output be used without splitting it.
 */
#include <math.h>

#include "core/ops/cpu/ops.h"

void qn_swiglu_forward(float *out, const float *gate, const float *up, int N, int F, int ld) {
#pragma omp parallel for schedule(static) if ((size_t)N * F > 65536)
    for (int n = 0; n < N; n++) {
        const float *g = gate + (size_t)n * ld, *u = up + (size_t)n * ld;
        float *o = out + (size_t)n * F;
        for (int i = 0; i < F; i++) {
            float s = 1.0f / (1.0f + expf(-g[i]));
            o[i] = g[i] * s * u[i];
        }
    }
}

void qn_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                        const float *up, int N, int F, int ld) {
#pragma omp parallel for schedule(static) if ((size_t)N * F > 65536)
    for (int n = 0; n < N; n++) {
        const float *g = gate + (size_t)n * ld, *u = up + (size_t)n * ld;
        const float *d = dout + (size_t)n * F;
        float *dg = dgate + (size_t)n * ld, *du = dup + (size_t)n * ld;
        for (int i = 0; i < F; i++) {
            float s = 1.0f / (1.0f + expf(-g[i]));
            float dd = d[i];
            /* d silu/dg = s (1 + g (1 - s)) */
            dg[i] = dd * u[i] * s * (1.0f + g[i] * (1.0f - s));
            du[i] = dd * g[i] * s;
        }
    }
}
