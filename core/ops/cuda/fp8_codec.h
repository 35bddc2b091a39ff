/* fp8_codec.h — the FP8 e4m3 scalar arithmetic that the GPU quantisers share
 * with the host, as static inline functions compiled both by the C compiler
 * and by nvcc (__host__ __device__), so that the CPU unit tests check the
 * very code the kernels run.
 *
 *   qn_fp8_encode_e4m3   fp32 -> e4m3fn byte: round to nearest even on the
 *                        bit pattern with integer arithmetic only (no FPU
 *                        rounding mode, no flush-to-zero), saturating to
 *                        +-448, NaN -> 0x7F|sign. The same algorithm as
 *                        qn_f32_to_fp8e4m3 (core/dtype.c), so the result is
 *                        identical for every input (tests/unit checks that
 *                        over a sweep of bit patterns).
 *   qn_fp8_decode_e4m3   e4m3fn byte -> fp32, exact
 *   qn_fp8_block_scale   s = max(amax, 1e-12) / 448 (IEEE division)
 *   qn_fp8_quant_value   e4m3(clamp(v / s, -448, 448)) (IEEE division)
 *
 * These are exactly the steps of qn_fp8_quantize (core/quant/fp8.c), which is
 * why the GPU weight re-quantiser reproduces it bit for bit. Division goes
 * through __fdiv_rn on the device so that no compiler flag (fast math) can
 * turn it into an approximate reciprocal.
 *
 * Also here: qn_fp8_quantize_act_ref, the host reference of the activation
 * quantiser (1x128 groups per token), and qn_fp8_act_scale_at, the one
 * definition of the activation-scale layout.
 *
 * Leaves out: e5m2, vectorised (x2/x4) conversions; the hardware cvt
 * instructions (cvt.rn.satfinite.e4m3x2.f32) would be faster in the
 * activation quantiser but are not used until a GPU run shows they agree. */
#ifndef QN_CORE_OPS_CUDA_FP8_CODEC_H
#define QN_CORE_OPS_CUDA_FP8_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define QN_FP8_HD static __host__ __device__ __forceinline__
#else
#define QN_FP8_HD static inline
#endif

#define QN_FP8_CODEC_MAX 448.0f
#define QN_FP8_CODEC_AMAX_FLOOR 1e-12f

QN_FP8_HD uint32_t qn_fp8_f32_bits(float x) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(x);
#else
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
#endif
}

QN_FP8_HD float qn_fp8_div(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}

/* e4m3fn: 1-4-3, bias 7, max finite 448 (0x7E), 0x7F NaN, subnormal step
 * 2^-9. Rounds the magnitude with shift = 20 mantissa bits dropped (more for
 * results below the normal range), ties to even, then saturates. */
QN_FP8_HD uint8_t qn_fp8_encode_e4m3(float x) {
    const uint32_t u = qn_fp8_f32_bits(x);
    const uint32_t sign = (u >> 24) & 0x80u;
    const uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return (uint8_t)(sign | 0x7Fu);  /* NaN */
    if (a == 0x7F800000u) return (uint8_t)(sign | 0x7Eu); /* inf saturates */
    const int exp_field = (int)(a >> 23);
    uint32_t m = a & 0x7FFFFFu;
    int e;
    if (exp_field == 0) {
        e = -126;
    } else {
        e = exp_field - 127;
        m |= 0x800000u;
    }
    const int emin = -6; /* 1 - bias */
    int shift = 20;      /* 23 - 3 mantissa bits */
    uint32_t exp_part = 0;
    if (e >= emin) {
        exp_part = (uint32_t)(e + 7 - 1) << 3; /* the implicit bit adds one */
    } else {
        shift += emin - e;
        if (shift > 24) return (uint8_t)sign; /* below half the smallest subnormal */
    }
    uint32_t code = exp_part + (m >> shift);
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (code & 1u))) code++;
    if (code > 0x7Eu) code = 0x7Eu;
    return (uint8_t)(sign | code);
}

QN_FP8_HD float qn_fp8_f32_from_bits(uint32_t u) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
#endif
}

/* e4m3fn byte -> fp32, exact (0x7F/0xFF decode to NaN). */
QN_FP8_HD float qn_fp8_decode_e4m3(uint8_t b) {
    const uint32_t sign = (uint32_t)(b & 0x80u) << 24;
    const uint32_t e = (b >> 3) & 0xFu;
    const uint32_t m = b & 0x7u;
    if ((b & 0x7Fu) == 0x7Fu) return qn_fp8_f32_from_bits(sign | 0x7FC00000u);
    if (e == 0) {
        const float v = (float)m * 0.001953125f; /* m * 2^-9, exact */
        return sign ? -v : v;
    }
    return qn_fp8_f32_from_bits(sign | ((e + 120u) << 23) | (m << 20));
}

QN_FP8_HD float qn_fp8_block_scale(float amax) {
    return qn_fp8_div(amax > QN_FP8_CODEC_AMAX_FLOOR ? amax : QN_FP8_CODEC_AMAX_FLOOR,
                      QN_FP8_CODEC_MAX);
}

QN_FP8_HD uint8_t qn_fp8_quant_value(float v, float s) {
    float r = qn_fp8_div(v, s);
    /* v / s can exceed 448 by an ulp when amax / 448 rounded down */
    if (r > QN_FP8_CODEC_MAX) r = QN_FP8_CODEC_MAX;
    if (r < -QN_FP8_CODEC_MAX) r = -QN_FP8_CODEC_MAX;
    return qn_fp8_encode_e4m3(r);
}

/* Where the scale of activation group (token t, 128-column block kb) lives in
 * an activation-scale array with stride ld: the layout cuBLASLt's
 * VEC128_32F mode reads for the B operand, [ceil(K/128), ld] with the token
 * index fastest and ld = qn_cuda_fp8_act_scale_ld(T, K) = T (gemm.h). The
 * kernels, the host reference and gemm_plan.c all index through this one
 * function, so a different layout is a change here and in that ld helper. */
QN_FP8_HD int64_t qn_fp8_act_scale_at(int64_t t, int64_t kb, int64_t ld) {
    return kb * ld + t;
}

#if !defined(__CUDA_ARCH__)
/* Host reference of qn_cuda_fp8_quantize_act: x [T, K] fp32 -> xq [T, K],
 * xs with group (t, kb) at qn_fp8_act_scale_at(t, kb, xs_ld); pass
 * xs_ld = qn_cuda_fp8_act_scale_ld(T, K) as the GPU does. */
static inline void qn_fp8_quantize_act_ref(const float *x, int T, int K, uint8_t *xq, float *xs,
                                           size_t xs_ld) {
    const int G = (K + 127) / 128;
    for (int t = 0; t < T; t++) {
        for (int g = 0; g < G; g++) {
            const int c0 = g * 128, c1 = c0 + 128 < K ? c0 + 128 : K;
            float amax = 0.0f;
            for (int k = c0; k < c1; k++) {
                float a = x[(size_t)t * K + k];
                a = a < 0 ? -a : a;
                if (a > amax) amax = a;
            }
            const float s = qn_fp8_block_scale(amax);
            xs[qn_fp8_act_scale_at(t, g, (int64_t)xs_ld)] = s;
            for (int k = c0; k < c1; k++)
                xq[(size_t)t * K + k] = qn_fp8_quant_value(x[(size_t)t * K + k], s);
        }
    }
}
#endif

#endif /* QN_CORE_OPS_CUDA_FP8_CODEC_H */
