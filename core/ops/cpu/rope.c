/* rope.c — rotary position embedding, rotate-half convention, with a partial
 * rotary dimension R <= HD (HF partial_rotary_factor).
 *
 * Performance: cos/sin come from a table built once (angles in double, so
 * large positions keep full fp32 accuracy); application is in place,
 * parallel over tokens. Interleaved (GPT-J) rotation is deliberately left
 * out: none of the supported HF classes use it.
 */
#include <math.h>

#include "core/ops/cpu/ops.h"

void qn_rope_table(float *cos_t, float *sin_t, int P, int R, double theta) {
    int h = R / 2;
#pragma omp parallel for schedule(static) if ((size_t)P * h > 65536)
    for (int p = 0; p < P; p++) {
        for (int i = 0; i < h; i++) {
            double inv_freq = pow(theta, -(double)(2 * i) / (double)R);
            double a = (double)p * inv_freq;
            cos_t[(size_t)p * h + i] = (float)cos(a);
            sin_t[(size_t)p * h + i] = (float)sin(a);
        }
    }
}

/* dir = +1 rotates by +angle (forward), -1 by -angle (backward). */
static void rope_apply(float *x, const int32_t *pos, const float *cos_t, const float *sin_t, int T,
                       int NH, int HD, int R, float dir) {
    int h = R / 2;
    if (h <= 0) return;
#pragma omp parallel for schedule(static) if ((size_t)T * NH * R > 65536)
    for (int t = 0; t < T; t++) {
        const float *c = cos_t + (size_t)pos[t] * h, *s = sin_t + (size_t)pos[t] * h;
        for (int hd = 0; hd < NH; hd++) {
            float *v = x + ((size_t)t * NH + hd) * HD;
            for (int i = 0; i < h; i++) {
                float a = v[i], b = v[i + h], sn = dir * s[i];
                v[i] = a * c[i] - b * sn;
                v[i + h] = b * c[i] + a * sn;
            }
        }
    }
}

void qn_rope_forward(float *x, const int32_t *pos, const float *cos_t, const float *sin_t, int T,
                     int NH, int HD, int R) {
    rope_apply(x, pos, cos_t, sin_t, T, NH, HD, R, 1.0f);
}

void qn_rope_backward(float *dx, const int32_t *pos, const float *cos_t, const float *sin_t, int T,
                      int NH, int HD, int R) {
    rope_apply(dx, pos, cos_t, sin_t, T, NH, HD, R, -1.0f);
}

void qn_packed_positions(int32_t *pos, const int32_t *cu_seqlens, int S) {
    for (int s = 0; s < S; s++)
        for (int32_t t = cu_seqlens[s]; t < cu_seqlens[s + 1]; t++)
            pos[t] = t - cu_seqlens[s];
}
