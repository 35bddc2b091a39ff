/* dtype.h — the element types quench stores and moves (the safetensors
 * subset it needs), their sizes and names, and the scalar and bulk
 * conversions between fp32 and the narrow float formats.
 *
 * Rounding: every fp32 -> narrow conversion rounds to nearest, ties to even
 * (RNE), and handles the narrow format's subnormals exactly.
 *
 *   bf16  1-8-7, bias 127. Overflow rounds to +-inf. Any NaN becomes the
 *         quiet NaN 0x7FC0 with the input's sign (payload dropped).
 *   f16   1-5-10, bias 15 (IEEE binary16). Overflow (|x| >= 65520) rounds
 *         to +-inf. NaN keeps sign and the top payload bits, quiet bit set.
 *   fp8   e4m3fn as in torch.float8_e4m3fn / DeepSeek-V3: 1-4-3, bias 7, no
 *         infinities, 0x7F/0xFF are NaN, max finite +-448, min subnormal
 *         2^-9. NaN maps to 0x7F|sign. Finite values whose rounded result
 *         would exceed 448, and +-inf, SATURATE to +-448 (the behaviour of
 *         NVIDIA's satfinite conversions). This differs from torch's and
 *         ml_dtypes' default casts, which turn overflow into NaN: a weight
 *         that lands slightly above the clamp then stays finite.
 *
 * Decoding (narrow -> fp32) is exact for all three formats.
 *
 * Leaves out: F8_E5M2, integer conversions (the bulk helpers accept float
 * types only), and endianness other than little-endian hosts.
 */
#ifndef QN_CORE_DTYPE_H
#define QN_CORE_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#include "quench/status.h"

#ifdef __cplusplus
extern "C" { /* callable from the CUDA sources */
#endif

typedef enum qn_dtype {
    QN_DTYPE_F64,
    QN_DTYPE_F32,
    QN_DTYPE_F16,
    QN_DTYPE_BF16,
    QN_DTYPE_F8_E4M3,
    QN_DTYPE_I64,
    QN_DTYPE_I32,
    QN_DTYPE_U8
} qn_dtype;

/* Number of qn_dtype values; valid ones are 0 .. QN_DTYPE_COUNT-1. */
#define QN_DTYPE_COUNT 8

/* Largest finite e4m3fn magnitude. */
#define QN_FP8_E4M3_MAX 448.0f

/* Bytes per element (1, 2, 4 or 8); 0 for a value outside the enum. */
size_t qn_dtype_size(qn_dtype t);

/* The safetensors name ("F64", "BF16", "F8_E4M3", ...); "?" for a value
 * outside the enum. The string is static. */
const char *qn_dtype_name(qn_dtype t);

/* 1 for the floating-point types (F64, F32, F16, BF16, F8_E4M3), else 0. */
int qn_dtype_is_float(qn_dtype t);

/* Parses a safetensors dtype name (exact, case-sensitive) into *out.
 * QN_ERR_FORMAT with "unknown dtype 'X'" for any other string, including
 * safetensors dtypes quench does not support (BOOL, U16, F8_E5M2, ...);
 * *out is untouched then. */
qn_status qn_dtype_parse(const char *name, qn_dtype *out);

/* Scalar conversions; see the top of this file for rounding, overflow and
 * NaN rules. Bit patterns travel as unsigned integers of the format's width. */
uint16_t qn_f32_to_bf16(float x);
float qn_bf16_to_f32(uint16_t h);
uint16_t qn_f32_to_f16(float x);
float qn_f16_to_f32(uint16_t h);
uint8_t qn_f32_to_fp8e4m3(float x);
float qn_fp8e4m3_to_f32(uint8_t b);

/* Converts n elements of src_type (little-endian, any alignment) at src to
 * fp32 at dst. F64 is rounded to nearest fp32; the narrow types are exact.
 * QN_ERR_UNSUPPORTED for integer types. src and dst must not overlap. */
qn_status qn_dtype_to_f32(qn_dtype src_type, const void *src, float *dst, size_t n);

/* Converts n fp32 values to dst_type at dst (any alignment), with the
 * rounding of the scalar functions. QN_ERR_UNSUPPORTED for integer types.
 * src and dst must not overlap. */
qn_status qn_dtype_from_f32(qn_dtype dst_type, const float *src, void *dst, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* QN_CORE_DTYPE_H */
