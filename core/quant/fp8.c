/* fp8.c — FP8 e4m3 block quantisation, dequantisation, checkpoint loading
 * and the row-block-dequantising CPU matmul (contracts in fp8.h).
 *
 * Leaves out: threading of the quantiser (convert is I/O bound), SIMD
 * decoding (the scalar e4m3 decode of core/dtype.c is used per element).
 */
#include "core/quant/fp8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/ops/cpu/ops.h"

static int64_t ceil_div(int64_t a, int64_t b) {
    return (a + b - 1) / b;
}

int64_t qn_fp8_scale_rows(const qn_fp8_shape *sh) {
    return ceil_div(sh->rows, sh->block_rows);
}

int64_t qn_fp8_scale_cols(const qn_fp8_shape *sh) {
    return ceil_div(sh->cols, sh->block_cols);
}

static qn_status check_shape(const qn_fp8_shape *sh, const char *label) {
    if (sh->rows <= 0 || sh->cols <= 0 || sh->block_rows <= 0 || sh->block_cols <= 0)
        return qn_fail(QN_ERR_INVALID,
                       "fp8: tensor '%s': shape [%lld, %lld] with block [%d, %d] is not valid",
                       label ? label : "?", (long long)sh->rows, (long long)sh->cols,
                       (int)sh->block_rows, (int)sh->block_cols);
    return QN_OK;
}

qn_status qn_fp8_quantize(const qn_fp8_shape *sh, const float *w, uint8_t *q, float *scale_inv,
                          const char *label) {
    QN_CHECK(check_shape(sh, label));
    const int64_t M = sh->rows, N = sh->cols, bm = sh->block_rows, bn = sh->block_cols;
    const int64_t sc = qn_fp8_scale_cols(sh);
    for (int64_t br = 0; br * bm < M; br++) {
        const int64_t r0 = br * bm, r1 = r0 + bm < M ? r0 + bm : M;
        for (int64_t bc = 0; bc * bn < N; bc++) {
            const int64_t c0 = bc * bn, c1 = c0 + bn < N ? c0 + bn : N;
            float amax = 0.0f;
            for (int64_t r = r0; r < r1; r++) {
                for (int64_t c = c0; c < c1; c++) {
                    float v = w[r * N + c];
                    if (!isfinite(v))
                        return qn_fail(QN_ERR_INVALID,
                                       "fp8: tensor '%s': element [%lld, %lld] is not finite",
                                       label ? label : "?", (long long)r, (long long)c);
                    if (fabsf(v) > amax) amax = fabsf(v);
                }
            }
            const float s = (amax > QN_FP8_AMAX_FLOOR ? amax : QN_FP8_AMAX_FLOOR) / QN_FP8_E4M3_MAX;
            scale_inv[br * sc + bc] = s;
            for (int64_t r = r0; r < r1; r++) {
                for (int64_t c = c0; c < c1; c++) {
                    float v = w[r * N + c] / s;
                    /* w / s can exceed 448 by an ulp when amax / 448 rounded down */
                    if (v > QN_FP8_E4M3_MAX) v = QN_FP8_E4M3_MAX;
                    if (v < -QN_FP8_E4M3_MAX) v = -QN_FP8_E4M3_MAX;
                    q[r * N + c] = qn_f32_to_fp8e4m3(v);
                }
            }
        }
    }
    return QN_OK;
}

void qn_fp8_dequantize_rows(const qn_fp8_shape *sh, const uint8_t *q, const float *scale_inv,
                            int64_t r0, int64_t n, float *out) {
    const int64_t N = sh->cols, bm = sh->block_rows, bn = sh->block_cols;
    const int64_t sc = qn_fp8_scale_cols(sh);
    float lut[256];
    for (int i = 0; i < 256; i++)
        lut[i] = qn_fp8e4m3_to_f32((uint8_t)i);
    for (int64_t r = r0; r < r0 + n; r++) {
        const float *srow = scale_inv + (r / bm) * sc;
        const uint8_t *qrow = q + r * N;
        float *orow = out + (r - r0) * N;
        for (int64_t c = 0; c < N; c++)
            orow[c] = lut[qrow[c]] * srow[c / bn];
    }
}

void qn_fp8_dequantize(const qn_fp8_shape *sh, const uint8_t *q, const float *scale_inv, float *w) {
    qn_fp8_dequantize_rows(sh, q, scale_inv, 0, sh->rows, w);
}

size_t qn_fp8_matmul_scratch_floats(const qn_fp8_shape *sh) {
    int64_t rows = sh->block_rows < sh->rows ? sh->block_rows : sh->rows;
    return (size_t)rows * (size_t)sh->cols;
}

void qn_fp8_matmul(const qn_fp8_shape *sh, const float *x, int64_t T, const uint8_t *q,
                   const float *scale_inv, float *y, float *scratch) {
    const int64_t M = sh->rows, N = sh->cols, bm = sh->block_rows;
    for (int64_t r0 = 0; r0 < M; r0 += bm) {
        const int64_t n = r0 + bm < M ? bm : M - r0;
        qn_fp8_dequantize_rows(sh, q, scale_inv, r0, n, scratch);
        /* y[:, r0:r0+n] = x @ scratch^T; ldc = M writes the column slice in place */
        qn_sgemm(0, 1, (int)T, (int)n, (int)N, 1.0f, x, (int)N, scratch, (int)N, 0.0f, y + r0,
                 (int)M);
    }
}

qn_status qn_fp8_load_f32(qn_st_model *m, const char *name, int32_t block_rows, int32_t block_cols,
                          float *out, size_t cap) {
    const qn_st_tensor *t;
    QN_CHECK(qn_st_model_get(m, name, &t));
    const uint64_t numel = qn_st_numel(t);
    if (numel > cap)
        return qn_fail(QN_ERR_RANGE, "fp8: tensor '%s': %llu elements do not fit in %zu", name,
                       (unsigned long long)numel, cap);
    if (t->dtype != QN_DTYPE_F8_E4M3) {
        if (!qn_dtype_is_float(t->dtype))
            return qn_fail(QN_ERR_UNSUPPORTED, "fp8: tensor '%s': dtype %s is not a float type",
                           name, qn_dtype_name(t->dtype));
        return qn_dtype_to_f32(t->dtype, t->data, out, (size_t)numel);
    }
    if (t->ndim != 2)
        return qn_fail(QN_ERR_FORMAT, "fp8: tensor '%s': F8_E4M3 tensor has %d dims, want 2", name,
                       (int)t->ndim);
    qn_fp8_shape sh = {.rows = t->shape[0],
                       .cols = t->shape[1],
                       .block_rows = block_rows,
                       .block_cols = block_cols};
    QN_CHECK(check_shape(&sh, name));
    size_t nlen = strlen(name);
    char *sname = malloc(nlen + sizeof "_scale_inv");
    if (!sname) return qn_fail(QN_ERR_NOMEM, "fp8: tensor '%s': scale name", name);
    memcpy(sname, name, nlen);
    memcpy(sname + nlen, "_scale_inv", sizeof "_scale_inv");
    const qn_st_tensor *st = NULL;
    qn_status s = qn_st_model_get(m, sname, &st);
    if (s != QN_OK) {
        s = qn_fail(QN_ERR_NOT_FOUND, "fp8: tensor '%s' is F8_E4M3 but '%s' is missing", name,
                    sname);
        free(sname);
        return s;
    }
    const int64_t sr = qn_fp8_scale_rows(&sh), scc = qn_fp8_scale_cols(&sh);
    if (st->ndim != 2 || st->shape[0] != sr || st->shape[1] != scc) {
        s = qn_fail(QN_ERR_FORMAT,
                    "fp8: tensor '%s': shape must be [%lld, %lld] for weight [%lld, %lld] with "
                    "block [%d, %d]",
                    sname, (long long)sr, (long long)scc, (long long)sh.rows, (long long)sh.cols,
                    (int)block_rows, (int)block_cols);
        free(sname);
        return s;
    }
    if (st->dtype != QN_DTYPE_F32 && st->dtype != QN_DTYPE_BF16 && st->dtype != QN_DTYPE_F16) {
        s = qn_fail(QN_ERR_FORMAT, "fp8: tensor '%s': dtype %s, want F32, BF16 or F16", sname,
                    qn_dtype_name(st->dtype));
        free(sname);
        return s;
    }
    free(sname);
    float *scale = malloc((size_t)(sr * scc) * sizeof *scale);
    if (!scale) return qn_fail(QN_ERR_NOMEM, "fp8: tensor '%s': scale buffer", name);
    s = qn_dtype_to_f32(st->dtype, st->data, scale, (size_t)(sr * scc));
    if (s == QN_OK) qn_fp8_dequantize(&sh, (const uint8_t *)t->data, scale, out);
    free(scale);
    return s;
}
