/* rmsnorm.c — RMSNorm over the last dimension (also used per head for
 * QK-norm, with rows = tokens x heads).
 *
 * Performance: rows are independent (parallel over rows); the sum of
 * squares is taken in double, which costs nothing next to memory traffic
 * and keeps rstd exact to fp32. The weight gradient is reduced over
 * column blocks so that threads never share a dw entry.
 */
#include <math.h>

#include "core/ops/cpu/ops.h"

void qn_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, float eps, int N,
                        int D) {
#pragma omp parallel for schedule(static) if ((size_t)N * D > 32768)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * D;
        float *y = out + (size_t)n * D;
        double ss = 0.0;
        for (int i = 0; i < D; i++)
            ss += (double)x[i] * x[i];
        float r = (float)(1.0 / sqrt(ss / D + (double)eps));
        rstd[n] = r;
        for (int i = 0; i < D; i++)
            y[i] = x[i] * r * w[i];
    }
}

void qn_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp,
                         const float *w, const float *rstd, int N, int D, int accumulate) {
    /* dw first: dinp may alias dout, so dout must be fully read before. */
    if (dw) {
        enum { BLK = 64 };
        int nblk = (D + BLK - 1) / BLK;
#pragma omp parallel for schedule(static) if ((size_t)N * D > 32768)
        for (int b = 0; b < nblk; b++) {
            int i0 = b * BLK, i1 = i0 + BLK < D ? i0 + BLK : D;
            float acc[BLK] = {0};
            for (int n = 0; n < N; n++) {
                const float *x = inp + (size_t)n * D, *dy = dout + (size_t)n * D;
                float r = rstd[n];
                for (int i = i0; i < i1; i++)
                    acc[i - i0] += dy[i] * x[i] * r;
            }
            for (int i = i0; i < i1; i++)
                dw[i] += acc[i - i0];
        }
    }
    if (!dinp) return;
        /* y = x r w, r = (mean x^2 + eps)^-1/2:
         * dx_i = r w_i dy_i - x_i r^3 / D * sum_j w_j dy_j x_j */
#pragma omp parallel for schedule(static) if ((size_t)N * D > 32768)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * D, *dy = dout + (size_t)n * D;
        float *dx = dinp + (size_t)n * D;
        float r = rstd[n];
        double dot = 0.0;
        for (int i = 0; i < D; i++)
            dot += (double)w[i] * dy[i] * x[i];
        float c = (float)(dot * r * r * r / D);
        if (accumulate) {
            for (int i = 0; i < D; i++)
                dx[i] += r * w[i] * dy[i] - x[i] * c;
        } else {
            for (int i = 0; i < D; i++)
                dx[i] = r * w[i] * dy[i] - x[i] * c;
        }
    }
}
