/* test_cuda_dtype.c — the GPU's fp32 -> bf16 conversion (qn_cuda_f32_to_bf16,
 * __float2bfloat16_rn) against the CPU reference qn_f32_to_bf16, on a few
 * thousand inputs: ties at every exponent, their fp32 neighbours, overflow,
 * subnormals, infinities, NaNs and random bit patterns.
 *
 * Finite and infinite inputs must give the same bits. For NaN inputs only
 * the class is compared (both NaN): the CPU keeps the sign and returns
 * 0x7FC0|sign, while NVIDIA's conversion returns its canonical NaN; nothing
 * in quench depends on NaN payloads.
 *
 * Without a CUDA device it prints "SKIPPED: no CUDA device" and returns 77,
 * which ctest reports as skipped. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/ops/cuda/cuda_rt.h"

static float bits_f32(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}

static int bf16_is_nan(uint16_t h) {
    return (h & 0x7F80u) == 0x7F80u && (h & 0x7Fu) != 0;
}

int main(void) {
    if (qn_cuda_device_count() == 0) {
        printf("SKIPPED: no CUDA device\n");
        return 77;
    }
    char desc[256] = "";
    if (qn_cuda_device_describe(0, desc, sizeof desc) == QN_OK) printf("device: %s\n", desc);

    enum { CAP = 8192 };
    float *in = malloc(CAP * sizeof *in);
    uint16_t *gpu = malloc(CAP * sizeof *gpu);
    if (!in || !gpu) return 1;
    size_t n = 0;
    /* Exact ties (low 16 bits 0x8000) with even and odd kept parts, and
     * one ulp either side, over every exponent and both signs. */
    for (uint32_t e = 0; e < 255; e++) {
        for (uint32_t k = 0; k < 4; k++) {
            uint32_t s = (k & 1) << 31;
            uint32_t kept = (k >> 1) ? 0x0001u : 0x0042u; /* odd / even bf16 mantissa */
            uint32_t tie = s | (e << 23) | (kept << 16) | 0x8000u;
            in[n++] = bits_f32(tie);
            in[n++] = bits_f32(tie - 1);
            in[n++] = bits_f32(tie + 1);
        }
    }
    const uint32_t specials[] = {0x00000000u, 0x80000000u, 0x00000001u, 0x807FFFFFu,
                                 0x7F7FFFFFu, 0xFF7FFFFFu, 0x7F7F8000u, 0x7F7F7FFFu,
                                 0x7F800000u, 0xFF800000u, 0x7FC00000u, 0xFFC00000u,
                                 0x7F800001u, 0xFFBFFFFFu, 0x7FFFFFFFu, 0x3F808000u};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++)
        in[n++] = bits_f32(specials[i]);
    uint64_t x = 0x9E3779B97F4A7C15ull; /* xorshift: fixed, reproducible inputs */
    while (n < CAP) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        in[n++] = bits_f32((uint32_t)(x >> 32));
    }

    qn_status s = qn_cuda_f32_to_bf16(in, gpu, n);
    if (s != QN_OK) {
        fprintf(stderr, "FAIL: qn_cuda_f32_to_bf16: %s\n", qn_last_error());
        return 1;
    }
    size_t bad = 0, nans = 0, ties = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t cpu = qn_f32_to_bf16(in[i]);
        uint32_t u;
        memcpy(&u, &in[i], 4);
        if ((u & 0xFFFFu) == 0x8000u && !isnan(in[i])) ties++;
        int ok;
        if (isnan(in[i])) {
            nans++;
            ok = bf16_is_nan(cpu) && bf16_is_nan(gpu[i]);
        } else {
            ok = cpu == gpu[i];
        }
        if (!ok && bad++ < 20)
            fprintf(stderr, "FAIL: f32 0x%08x (%.9g): cpu 0x%04x gpu 0x%04x\n", u, in[i], cpu,
                    gpu[i]);
    }
    printf("%zu inputs (%zu exact ties, %zu NaN): %zu mismatches\n", n, ties, nans, bad);
    free(in);
    free(gpu);
    return bad ? 1 : 0;
}
