/* logprob.c — per-position log-prob of the target and entropy of the
 * next-token distribution, z = h W^T / temperature, without a [N, V] buffer.
 *
 * Rows are taken in blocks of up to ROWS, the vocabulary in chunks of
 * `chunk` columns. Each (row block, chunk) is one sgemm into scratch
 * [ROWS, chunk]; an online log-sum-exp keeps, per row, the running max m,
 * s = sum exp(z - m) and a = sum exp(z - m) z (in double), so that
 * logZ = m + log s and E_p[z] = a / s come out after the last chunk. The
 * backward recomputes each chunk's logits (cheaper than storing them) and
 * turns them into d logits in place before two sgemms (dh, dW).
 *
 * Performance: the sgemms dominate (2 N V C flops each way) and OpenBLAS
 * threads them; the exp pass is parallel over rows. W is streamed once per
 * row block, so ROWS is large enough that W traffic is amortised.
 */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "core/ops/cpu/ops.h"

enum { ROWS = 256 };

size_t qn_logprob_scratch_floats(int N, int chunk) {
    int nb = N < ROWS ? N : ROWS;
    return (size_t)nb * (size_t)chunk;
}

void qn_logprob_forward(float *logp, float *entropy, float *lse, float *ez, const float *h,
                        const int32_t *targets, const float *w, int N, int C, int V,
                        float temperature, int chunk, float *scratch) {
    float invt = 1.0f / temperature;
    for (int n0 = 0; n0 < N; n0 += ROWS) {
        int nb = N - n0 < ROWS ? N - n0 : ROWS;
        double m[ROWS], s[ROWS], a[ROWS];
        float zt[ROWS];
        for (int r = 0; r < nb; r++) {
            m[r] = -INFINITY;
            s[r] = 0.0;
            a[r] = 0.0;
            zt[r] = 0.0f;
        }
        for (int v0 = 0; v0 < V; v0 += chunk) {
            int vc = V - v0 < chunk ? V - v0 : chunk;
            float *Z = scratch;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, vc, C, invt,
                        h + (size_t)n0 * C, C, w + (size_t)v0 * C, C, 0.0f, Z, vc);
#pragma omp parallel for schedule(static) if ((size_t)nb * vc > 16384)
            for (int r = 0; r < nb; r++) {
                const float *z = Z + (size_t)r * vc;
                float mc = -INFINITY;
                for (int j = 0; j < vc; j++) mc = z[j] > mc ? z[j] : mc;
                if (mc > m[r]) {
                    double f = exp(m[r] - mc); /* 0 on the first chunk */
                    s[r] *= f;
                    a[r] *= f;
                    m[r] = mc;
                }
                float mr = (float)m[r];
                double ss = 0.0, aa = 0.0;
                for (int j = 0; j < vc; j++) {
                    float e = expf(z[j] - mr);
                    ss += e;
                    aa += (double)e * z[j];
                }
                s[r] += ss;
                a[r] += aa;
                int tg = targets[n0 + r] - v0;
                if (tg >= 0 && tg < vc) zt[r] = z[tg];
            }
        }
        for (int r = 0; r < nb; r++) {
            double lz = m[r] + log(s[r]);
            double e = a[r] / s[r];
            lse[n0 + r] = (float)lz;
            ez[n0 + r] = (float)e;
            logp[n0 + r] = (float)((double)zt[r] - lz);
            entropy[n0 + r] = (float)(lz - e);
        }
    }
}

void qn_logprob_backward(float *dh, float *dw, const float *dlogp, const float *dentropy,
                         const float *lse, const float *ez, const float *h,
                         const int32_t *targets, const float *w, int N, int C, int V,
                         float temperature, int chunk, int accumulate, float *scratch) {
    float invt = 1.0f / temperature;
    for (int n0 = 0; n0 < N; n0 += ROWS) {
        int nb = N - n0 < ROWS ? N - n0 : ROWS;
        const float *hb = h + (size_t)n0 * C;
        float *dhb = dh ? dh + (size_t)n0 * C : NULL;
        if (dhb && !accumulate) memset(dhb, 0, (size_t)nb * C * sizeof(float));
        for (int v0 = 0; v0 < V; v0 += chunk) {
            int vc = V - v0 < chunk ? V - v0 : chunk;
            float *Z = scratch;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, vc, C, invt, hb, C,
                        w + (size_t)v0 * C, C, 0.0f, Z, vc);
#pragma omp parallel for schedule(static) if ((size_t)nb * vc > 16384)
            for (int r = 0; r < nb; r++) {
                float *z = Z + (size_t)r * vc;
                float gl = dlogp ? dlogp[n0 + r] : 0.0f;
                float ge = dentropy ? dentropy[n0 + r] : 0.0f;
                float l = lse[n0 + r], e = ez[n0 + r];
                /* dz_v = gl (1[v = tgt] - p_v) - ge p_v (z_v - ez); then / T */
                for (int j = 0; j < vc; j++) {
                    float p = expf(z[j] - l);
                    z[j] = (-gl - ge * (z[j] - e)) * p * invt;
                }
                int tg = targets[n0 + r] - v0;
                if (tg >= 0 && tg < vc) z[tg] += gl * invt;
            }
            if (dhb)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, C, vc, 1.0f, Z, vc,
                            w + (size_t)v0 * C, C, 1.0f, dhb, C);
            if (dw)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, vc, C, nb, 1.0f, Z, vc, hb, C,
                            1.0f, dw + (size_t)v0 * C, C);
        }
    }
}
