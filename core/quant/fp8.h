/* fp8.h — FP8 e4m3 block quantisation of 2-D weights (the DeepSeek-V3 /
 * GLM-4.5-FP8 convention), dequantisation, loading FP8 tensors from a
 * checkpoint, and a CPU matmul that dequantises one row-block of tiles at a
 * time.
 *
 * Convention (DESIGN.md "Numerics"). A weight W [M, N] (out, in) is cut into
 * tiles of bm x bn (128 x 128 by default); the last tile row / column may be
 * partial. For each tile with amax = max |w| over the tile:
 *     s = max(amax, 1e-12) / 448
 *     q = e4m3(clamp(w / s, -448, 448))           (saturating RNE, core/dtype.h)
 * The checkpoint stores q as `<name>.weight` (F8_E4M3, [M, N]) and s as
 * `<name>.weight_scale_inv` (F32, [ceil(M/bm), ceil(N/bn)]). Despite the
 * "_inv" in the name, s is the DEQUANTISATION multiplier: w ~= fp32(q) * s.
 * config.json carries
 *     "quantization_config": {"quant_method": "fp8", "fmt": "e4m3",
 *       "activation_scheme": "dynamic", "weight_block_size": [bm, bn],
 *       "modules_to_not_convert": [...]}
 *
 * Round-trip error (what the tests check). With v = w / s (|v| <= 448), RNE
 * to e4m3 (3 mantissa bits) is off by at most half an ulp: 2^-4 * 2^e for
 * normals (2^e <= |v|, so <= 2^-4 |v|), and 2^-10 for subnormals (|v| <
 * 2^-6, spacing 2^-9). Scaling back by s gives, per element,
 *     |dequant(w) - w| <= 2^-4 |w| + 2^-10 s   (+ a few fp32 ulps of |w|
 * from the division and the multiply), and so <= 2^-4 * (448 s) = amax/16,
 * the tile bound.
 *
 * Leaves out: activation quantisation (the CPU path keeps activations in
 * fp32; the GPU path quantises 1x128 groups elsewhere), e5m2, per-tensor or
 * per-channel scales, and tensors of other ranks than 2.
 */
#ifndef QN_CORE_QUANT_FP8_H
#define QN_CORE_QUANT_FP8_H

#include <stddef.h>
#include <stdint.h>

#include "core/io/safetensors.h"
#include "quench/status.h"

/* Floor of the scale: an all-zero tile gets s = 1e-12 / 448. */
#define QN_FP8_AMAX_FLOOR 1e-12f
/* Default tile, the DeepSeek-V3 / GLM-4.5-FP8 weight_block_size. */
#define QN_FP8_BLOCK_DEFAULT 128

/* Shape of W's block grid. */
typedef struct qn_fp8_shape {
    int64_t rows, cols; /* M, N of the weight */
    int32_t block_rows; /* bm >= 1 */
    int32_t block_cols; /* bn >= 1 */
} qn_fp8_shape;

/* ceil(rows / block_rows) and ceil(cols / block_cols): the shape of the
 * weight_scale_inv tensor. */
int64_t qn_fp8_scale_rows(const qn_fp8_shape *sh);
int64_t qn_fp8_scale_cols(const qn_fp8_shape *sh);

/* Quantises w [rows, cols] (fp32, row-major) into q (rows*cols e4m3 bytes)
 * and scale_inv (scale_rows * scale_cols fp32) by the convention above.
 * QN_ERR_INVALID for a non-positive block or dim, or for a non-finite
 * element (the message gives its row and column; label names the tensor in
 * messages, NULL allowed). On failure q and scale_inv are unspecified. */
qn_status qn_fp8_quantize(const qn_fp8_shape *sh, const float *w, uint8_t *q, float *scale_inv,
                          const char *label);

/* w = fp32(q) * s per tile, for the whole matrix. Never fails on valid
 * shapes (a NaN byte 0x7F/0xFF decodes to NaN). */
void qn_fp8_dequantize(const qn_fp8_shape *sh, const uint8_t *q, const float *scale_inv, float *w);

/* Dequantises rows [r0, r0 + n) of W (n <= rows - r0) into out [n, cols].
 * The building block of the tiled matmul. */
void qn_fp8_dequantize_rows(const qn_fp8_shape *sh, const uint8_t *q, const float *scale_inv,
                            int64_t r0, int64_t n, float *out);

/* Floats of scratch qn_fp8_matmul needs: block_rows * cols (one row-block
 * of tiles: 128 x 5120 floats = 2.5 MiB for GLM-4.5's hidden size), never
 * the whole matrix. */
size_t qn_fp8_matmul_scratch_floats(const qn_fp8_shape *sh);

/* y[T, rows] = x[T, cols] W^T with W given as FP8 q + scale_inv. For each
 * row-block of W it dequantises block_rows x cols into scratch and calls
 * qn_sgemm on it, writing the matching column slice of y. The result equals
 * qn_sgemm with the fully dequantised W up to fp32 summation-order rounding.
 * scratch holds qn_fp8_matmul_scratch_floats(sh) floats. */
void qn_fp8_matmul(const qn_fp8_shape *sh, const float *x, int64_t T, const uint8_t *q,
                   const float *scale_inv, float *y, float *scratch);

/* Reads tensor `name` of a checkpoint as fp32 into out (cap floats).
 * F8_E4M3 tensors must be 2-D and have a companion `<name>_scale_inv`
 * (F32, BF16 or F16) of shape [ceil(M/bm), ceil(N/bn)] for the given block
 * (block_rows, block_cols from the config's weight_block_size); they are
 * dequantised. Any other float dtype is converted exactly (F64 rounded).
 * Errors name the tensor: QN_ERR_NOT_FOUND (tensor or its scale missing),
 * QN_ERR_FORMAT (wrong scale shape or dtype, FP8 tensor not 2-D),
 * QN_ERR_RANGE (cap smaller than the tensor), QN_ERR_UNSUPPORTED (integer
 * dtypes). */
qn_status qn_fp8_load_f32(qn_st_model *m, const char *name, int32_t block_rows, int32_t block_cols,
                          float *out, size_t cap);

#endif /* QN_CORE_QUANT_FP8_H */
