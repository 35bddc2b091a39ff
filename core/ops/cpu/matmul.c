/* matmul.c — linear layers y = x W^T (+ b) on Hugging Face [out, in] weights.
 *
 * Performance: all three products are single qn_sgemm calls (threaded
 * over slices of the output); the weight is consumed transposed in place, never copied.
 * The bias gradient is a column sum done over column blocks so each thread
 * owns a contiguous slice of dbias and reads dout row by row.
 */
#include <string.h>

#include "core/ops/cpu/ops.h"

void qn_matmul_forward(float *out, const float *inp, const float *w, const float *bias, int N,
                       int IC, int OC) {
    if (N <= 0 || OC <= 0) return;
    float beta = 0.0f;
    if (bias) {
#pragma omp parallel for schedule(static) if ((size_t)N * OC > 65536)
        for (int n = 0; n < N; n++)
            memcpy(out + (size_t)n * OC, bias, (size_t)OC * sizeof(float));
        beta = 1.0f;
    }
    if (IC <= 0) {
        if (!bias) memset(out, 0, (size_t)N * OC * sizeof(float));
        return;
    }
    qn_sgemm(0, 1, N, OC, IC, 1.0f, inp, IC, w, IC, beta, out, OC);
}

void qn_matmul_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                        const float *w, int N, int IC, int OC, int accumulate) {
    if (N <= 0 || IC <= 0) return;
    if (dinp) {
        if (OC > 0) {
            qn_sgemm(0, 0, N, IC, OC, 1.0f, dout, OC, w, IC, accumulate ? 1.0f : 0.0f, dinp, IC);
        } else if (!accumulate) {
            memset(dinp, 0, (size_t)N * IC * sizeof(float));
        }
    }
    if (OC <= 0) return;
    if (dw) qn_sgemm(1, 0, OC, IC, N, 1.0f, dout, OC, inp, IC, 1.0f, dw, IC);
    if (dbias) {
        enum { BLK = 64 };
        int nblk = (OC + BLK - 1) / BLK;
#pragma omp parallel for schedule(static) if ((size_t)N * OC > 65536)
        for (int b = 0; b < nblk; b++) {
            int o0 = b * BLK, o1 = o0 + BLK < OC ? o0 + BLK : OC;
            float acc[BLK] = {0};
            for (int n = 0; n < N; n++) {
                const float *row = dout + (size_t)n * OC;
                for (int o = o0; o < o1; o++)
                    acc[o - o0] += row[o];
            }
            for (int o = o0; o < o1; o++)
                dbias[o] += acc[o - o0];
        }
    }
}
