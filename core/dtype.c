/* dtype.c — dtype tables and the fp32 <-> bf16/f16/fp8-e4m3fn conversions
 * (see dtype.h for the rounding, overflow and NaN rules).
 *
 * The encoders work on the fp32 bit pattern with integer arithmetic only, so
 * the result does not depend on the FPU rounding mode or on flush-to-zero
 * settings. Leaves out SIMD fast paths: the bulk helpers are plain loops
 * that the compiler may vectorise. */
#include "core/dtype.h"

#include <math.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
    int is_float;
} k_dtypes[QN_DTYPE_COUNT] = {
    [QN_DTYPE_F64] = {"F64", 8, 1},         [QN_DTYPE_F32] = {"F32", 4, 1},
    [QN_DTYPE_F16] = {"F16", 2, 1},         [QN_DTYPE_BF16] = {"BF16", 2, 1},
    [QN_DTYPE_F8_E4M3] = {"F8_E4M3", 1, 1}, [QN_DTYPE_I64] = {"I64", 8, 0},
    [QN_DTYPE_I32] = {"I32", 4, 0},         [QN_DTYPE_U8] = {"U8", 1, 0},
};

static int dtype_valid(qn_dtype t) {
    return (unsigned)t < QN_DTYPE_COUNT;
}

size_t qn_dtype_size(qn_dtype t) {
    return dtype_valid(t) ? k_dtypes[t].size : 0;
}

const char *qn_dtype_name(qn_dtype t) {
    return dtype_valid(t) ? k_dtypes[t].name : "?";
}

int qn_dtype_is_float(qn_dtype t) {
    return dtype_valid(t) && k_dtypes[t].is_float;
}

qn_status qn_dtype_parse(const char *name, qn_dtype *out) {
    if (name) {
        for (int i = 0; i < QN_DTYPE_COUNT; i++) {
            if (strcmp(name, k_dtypes[i].name) == 0) {
                *out = (qn_dtype)i;
                return QN_OK;
            }
        }
    }
    return qn_fail(QN_ERR_FORMAT, "unknown dtype '%s'", name ? name : "(null)");
}

static uint32_t f32_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float bits_f32(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* Rounds a finite, non-negative fp32 (given as bits) to a float format with
 * mbits mantissa bits and exponent bias `bias`, and returns the magnitude
 * code (exponent field << mbits | mantissa) without any overflow handling:
 * a code at or above the format's first non-finite code means overflow and
 * the caller decides what that becomes. Subnormal results are exact RNE. */
static uint32_t round_magnitude(uint32_t a, int mbits, int bias) {
    int exp_field = (int)(a >> 23);
    uint32_t m = a & 0x7FFFFFu;
    int e; /* unbiased exponent of the value m * 2^(e-23) */
    if (exp_field == 0) {
        e = -126;
    } else {
        e = exp_field - 127;
        m |= 0x800000u;
    }
    int emin = 1 - bias;
    int shift = 23 - mbits;
    uint32_t exp_part = 0;
    if (e >= emin) {
        /* The implicit bit of m lands on bit mbits and adds one to the
         * exponent field, hence the -1. */
        exp_part = (uint32_t)(e + bias - 1) << mbits;
    } else {
        shift += emin - e;
        /* m < 2^24, so anything at or below half of the smallest subnormal
         * (including the tie, whose even neighbour is 0) rounds to zero. */
        if (shift > 24) return 0;
    }
    uint32_t code = exp_part + (m >> shift);
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (code & 1u))) code++;
    return code;
}

uint16_t qn_f32_to_bf16(float x) {
    uint32_t u = f32_bits(x);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)(((u >> 16) & 0x8000u) | 0x7FC0u);
    /* Adding 0x7FFF plus the lowest kept bit rounds to nearest even; a carry
     * out of the mantissa bumps the exponent, reaching inf on overflow. */
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float qn_bf16_to_f32(uint16_t h) {
    return bits_f32((uint32_t)h << 16);
}

uint16_t qn_f32_to_f16(float x) {
    uint32_t u = f32_bits(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return (uint16_t)(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
    if (a == 0x7F800000u) return (uint16_t)(sign | 0x7C00u);
    uint32_t code = round_magnitude(a, 10, 15);
    if (code >= 0x7C00u) code = 0x7C00u;
    return (uint16_t)(sign | code);
}

float qn_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1Fu;
    uint32_t m = h & 0x3FFu;
    if (e == 0x1F) return bits_f32(sign | 0x7F800000u | (m << 13));
    if (e == 0) {
        float v = (float)m * 0x1p-24f; /* exact: m < 2^10 */
        return sign ? -v : v;
    }
    return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

uint8_t qn_f32_to_fp8e4m3(float x) {
    uint32_t u = f32_bits(x);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return (uint8_t)(sign | 0x7Fu);
    if (a == 0x7F800000u) return (uint8_t)(sign | 0x7Eu);
    uint32_t code = round_magnitude(a, 3, 7);
    if (code > 0x7Eu) code = 0x7Eu; /* saturate: 0x7F is NaN, not 480 */
    return (uint8_t)(sign | code);
}

float qn_fp8e4m3_to_f32(uint8_t b) {
    uint32_t sign = (uint32_t)(b & 0x80u) << 24;
    uint32_t e = (b >> 3) & 0xFu;
    uint32_t m = b & 0x7u;
    if ((b & 0x7Fu) == 0x7Fu) return bits_f32(sign | 0x7FC00000u);
    if (e == 0) {
        float v = (float)m * 0x1p-9f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((e + 120u) << 23) | (m << 20));
}

qn_status qn_dtype_to_f32(qn_dtype src_type, const void *src, float *dst, size_t n) {
    const unsigned char *p = src;
    switch (src_type) {
    case QN_DTYPE_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        return QN_OK;
    case QN_DTYPE_F32:
        if (n) memcpy(dst, src, n * sizeof(float));
        return QN_OK;
    case QN_DTYPE_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = qn_f16_to_f32(h);
        }
        return QN_OK;
    case QN_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = qn_bf16_to_f32(h);
        }
        return QN_OK;
    case QN_DTYPE_F8_E4M3:
        for (size_t i = 0; i < n; i++)
            dst[i] = qn_fp8e4m3_to_f32(p[i]);
        return QN_OK;
    default:
        return qn_fail(QN_ERR_UNSUPPORTED, "cannot convert %s to F32: not a float type",
                       qn_dtype_name(src_type));
    }
}

qn_status qn_dtype_from_f32(qn_dtype dst_type, const float *src, void *dst, size_t n) {
    unsigned char *p = dst;
    switch (dst_type) {
    case QN_DTYPE_F64:
        for (size_t i = 0; i < n; i++) {
            double d = src[i];
            memcpy(p + 8 * i, &d, 8);
        }
        return QN_OK;
    case QN_DTYPE_F32:
        if (n) memcpy(dst, src, n * sizeof(float));
        return QN_OK;
    case QN_DTYPE_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = qn_f32_to_f16(src[i]);
            memcpy(p + 2 * i, &h, 2);
        }
        return QN_OK;
    case QN_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = qn_f32_to_bf16(src[i]);
            memcpy(p + 2 * i, &h, 2);
        }
        return QN_OK;
    case QN_DTYPE_F8_E4M3:
        for (size_t i = 0; i < n; i++)
            p[i] = qn_f32_to_fp8e4m3(src[i]);
        return QN_OK;
    default:
        return qn_fail(QN_ERR_UNSUPPORTED, "cannot convert F32 to %s: not a float type",
                       qn_dtype_name(dst_type));
    }
}
