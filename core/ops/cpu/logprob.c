/* logprob.c — per-position log-prob of the target and entropy of the
 * next-token distribution, z = h W^T / temperature, without a [N, V] buffer.
 *
 * Forward: rows are taken in blocks of up to ROWS, the vocabulary in chunks
 * of `chunk` columns. Each (row block, chunk) is one sgemm into a
 * [ROWS, chunk] scratch; an online log-sum-exp keeps, per row, the running
 * max m, s = sum exp(z - m) and a = sum exp(z - m) z (in double), so that
 * logZ = m + log s and E_p[z] = a / s come out after the last chunk.
 * Backward recomputes each chunk's logits (cheaper than storing them) and
 * turns them into d logits in place before two sgemms (dh, dW).
 *
 * Performance: the sgemms dominate (2 N V C flops each way). Threads take
 * whole row blocks in the forward and whole vocabulary chunks in the
 * backward, one parallel region per call, each product single-threaded on
 * its thread: no barrier per chunk, which matters on busy machines where a
 * descheduled thread stalls every barrier. In the backward a thread owns
 * its chunk's rows of dW (no race) and adds into a private dh (thread 0
 * into dh itself), summed at the end; that private dh is why the scratch
 * holds (threads - 1) x N x C floats. With fewer chunks than threads the
 * backward instead runs chunk by chunk with qn_sgemm threading each
 * product.
 */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "core/ops/cpu/ops.h"

enum { ROWS = 128 };

static int slots(void) {
    int n = omp_get_max_threads();
    return n > 0 ? n : 1;
}

size_t qn_logprob_scratch_floats(int N, int C, int chunk) {
    int nb = N < ROWS ? N : ROWS;
    int nt = slots();
    return (size_t)nt * nb * (size_t)chunk + (size_t)(nt - 1) * N * (size_t)C;
}

/* Forward for rows [n0, n0 + nb) over the whole vocabulary. */
static void fwd_block(float *logp, float *entropy, float *lse, float *ez, const float *h,
                      const int32_t *targets, const float *w, int n0, int nb, int C, int V,
                      float invt, int chunk, float *Z) {
    double m[ROWS], s[ROWS], a[ROWS];
    float zt[ROWS];
    for (int r = 0; r < nb; r++) {
        m[r] = -INFINITY;
        s[r] = a[r] = 0.0;
        zt[r] = 0.0f;
    }
    for (int v0 = 0; v0 < V; v0 += chunk) {
        int vc = V - v0 < chunk ? V - v0 : chunk;
        qn_sgemm(0, 1, nb, vc, C, invt, h + (size_t)n0 * C, C, w + (size_t)v0 * C, C, 0.0f, Z, vc);
        for (int r = 0; r < nb; r++) {
            const float *z = Z + (size_t)r * vc;
            float mc = -INFINITY;
            for (int j = 0; j < vc; j++)
                mc = z[j] > mc ? z[j] : mc;
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

void qn_logprob_forward(float *logp, float *entropy, float *lse, float *ez, const float *h,
                        const int32_t *targets, const float *w, int N, int C, int V,
                        float temperature, int chunk, float *scratch) {
    if (N <= 0) return;
    float invt = 1.0f / temperature;
    int nblk = (N + ROWS - 1) / ROWS, nt = slots();
    size_t per = (size_t)(N < ROWS ? N : ROWS) * chunk;
    if (nblk >= nt && nt > 1) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
        for (int b = 0; b < nblk; b++) {
            int n0 = b * ROWS, nb = N - n0 < ROWS ? N - n0 : ROWS;
            fwd_block(logp, entropy, lse, ez, h, targets, w, n0, nb, C, V, invt, chunk,
                      scratch + (size_t)omp_get_thread_num() * per);
        }
    } else {
        for (int b = 0; b < nblk; b++) {
            int n0 = b * ROWS, nb = N - n0 < ROWS ? N - n0 : ROWS;
            fwd_block(logp, entropy, lse, ez, h, targets, w, n0, nb, C, V, invt, chunk, scratch);
        }
    }
}

/* Backward of vocabulary chunk [v0, v0 + vc) for all rows: dh_acc += G W_c,
 * dW_c += G^T h, G = d logits recomputed row block by row block. */
static void bwd_chunk(float *dh_acc, float *dw, const float *dlogp, const float *dentropy,
                      const float *lse, const float *ez, const float *h, const int32_t *targets,
                      const float *w, int N, int C, int v0, int vc, float invt, float *Z) {
    for (int n0 = 0; n0 < N; n0 += ROWS) {
        int nb = N - n0 < ROWS ? N - n0 : ROWS;
        const float *hb = h + (size_t)n0 * C;
        qn_sgemm(0, 1, nb, vc, C, invt, hb, C, w + (size_t)v0 * C, C, 0.0f, Z, vc);
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
        if (dh_acc)
            qn_sgemm(0, 0, nb, C, vc, 1.0f, Z, vc, w + (size_t)v0 * C, C, 1.0f,
                     dh_acc + (size_t)n0 * C, C);
        if (dw) qn_sgemm(1, 0, vc, C, nb, 1.0f, Z, vc, hb, C, 1.0f, dw + (size_t)v0 * C, C);
    }
}

void qn_logprob_backward(float *dh, float *dw, const float *dlogp, const float *dentropy,
                         const float *lse, const float *ez, const float *h, const int32_t *targets,
                         const float *w, int N, int C, int V, float temperature, int chunk,
                         int accumulate, float *scratch) {
    if (N <= 0) return;
    float invt = 1.0f / temperature;
    size_t nc = (size_t)N * C;
    if (dh && !accumulate) memset(dh, 0, nc * sizeof(float));
    int nchunk = (V + chunk - 1) / chunk, nt = slots();
    size_t per = (size_t)(N < ROWS ? N : ROWS) * chunk;
    if (nchunk >= nt && nt > 1) {
        float *priv = scratch + (size_t)nt * per; /* (nt - 1) x [N, C] */
#pragma omp parallel num_threads(nt)
        {
            int me = omp_get_thread_num();
            float *acc = NULL;
            if (dh) {
                acc = me == 0 ? dh : priv + (size_t)(me - 1) * nc;
                if (me > 0) memset(acc, 0, nc * sizeof(float));
            }
            /* static: which private sum a chunk lands in must not depend on
             * timing, or dh would change in the last bits run to run */
#pragma omp for schedule(static)
            for (int c = 0; c < nchunk; c++) {
                int v0 = c * chunk, vc = V - v0 < chunk ? V - v0 : chunk;
                bwd_chunk(acc, dw, dlogp, dentropy, lse, ez, h, targets, w, N, C, v0, vc, invt,
                          scratch + (size_t)me * per);
            }
            /* implicit barrier of the for: all private sums are complete */
            if (dh) {
#pragma omp for schedule(static)
                for (size_t i = 0; i < nc; i++) {
                    float s = 0.0f;
                    for (int t = 1; t < nt; t++)
                        s += priv[(size_t)(t - 1) * nc + i];
                    dh[i] += s;
                }
            }
        }
    } else {
        for (int c = 0; c < nchunk; c++) {
            int v0 = c * chunk, vc = V - v0 < chunk ? V - v0 : chunk;
            bwd_chunk(dh, dw, dlogp, dentropy, lse, ez, h, targets, w, N, C, v0, vc, invt, scratch);
        }
    }
}
