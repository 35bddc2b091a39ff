/* embedding.c — token embedding lookup and its scatter-add backward.
 *
 * Performance: forward is a row copy per token (parallel over tokens).
 * Backward parallelises over column blocks instead of tokens, so repeated
 * token ids never race and no per-thread copy of dwte [V, C] is needed.
 */
#include <string.h>

#include "core/ops/cpu/ops.h"

void qn_embedding_forward(float *out, const int32_t *tokens, const float *wte, int T, int C) {
#pragma omp parallel for schedule(static) if (T > 64)
    for (int t = 0; t < T; t++)
        memcpy(out + (size_t)t * C, wte + (size_t)tokens[t] * C, (size_t)C * sizeof(float));
}

void qn_embedding_backward(float *dwte, const float *dout, const int32_t *tokens, int T, int C) {
    enum { BLK = 64 };
    int nblk = (C + BLK - 1) / BLK;
#pragma omp parallel for schedule(static) if ((size_t)T * C > 65536)
    for (int b = 0; b < nblk; b++) {
        int c0 = b * BLK, c1 = c0 + BLK < C ? c0 + BLK : C;
        for (int t = 0; t < T; t++) {
            float *dst = dwte + (size_t)tokens[t] * C;
            const float *src = dout + (size_t)t * C;
            for (int c = c0; c < c1; c++)
                dst[c] += src[c];
        }
    }
}
