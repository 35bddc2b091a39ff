/* test_fp8.c — FP8 block quantisation (core/quant/fp8.h): the scales of a
 * hand-made matrix whose tiles have known amax (incl. a partial edge tile
 * and an all-zero tile), the round-trip error bound derived in fp8.h, the
 * row-block-dequantising matmul against a plain GEMM on the fully
 * dequantised weight, and loading FP8 tensors from a safetensors file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/io/safetensors.h"
#include "core/ops/cpu/ops.h"
#include "core/quant/fp8.h"
#include "tests/test_util.h"

static uint64_t g_state = 0x9E3779B97F4A7C15ull;
static float frand(void) { /* uniform in [-1, 1) */
    g_state ^= g_state << 13;
    g_state ^= g_state >> 7;
    g_state ^= g_state << 17;
    return (float)((g_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

/* 5 x 6 with 2 x 4 tiles: grid 3 x 2; column tiles 4 wide and 2 wide (partial),
 * the last row tile 1 high (partial). Each tile's amax is planted. */
static void test_scales_hand_case(void **state) {
    (void)state;
    enum { M = 5, N = 6 };
    const float amax[3][2] = {{3.5f, 896.0f}, {0.0f, 0.25f}, {1e-3f, 7.0f}};
    float w[M * N];
    for (int r = 0; r < M; r++) {
        for (int c = 0; c < N; c++) {
            float a = amax[r / 2][c / 4];
            /* every element strictly inside the tile's amax, alternating sign */
            w[r * N + c] = ((r + c) % 2 ? -0.5f : 0.25f) * a;
        }
    }
    w[1 * N + 2] = -3.5f;  /* tile (0,0), negative extreme */
    w[0 * N + 5] = 896.0f; /* tile (0,1), partial columns */
    w[3 * N + 4] = 0.25f;  /* tile (1,1) */
    w[4 * N + 1] = 1e-3f;  /* tile (2,0), partial row */
    w[4 * N + 4] = -7.0f;  /* tile (2,1), partial both ways */
    uint8_t q[M * N];
    float s[3 * 2];
    qn_fp8_shape sh = {.rows = M, .cols = N, .block_rows = 2, .block_cols = 4};
    assert_int_equal(qn_fp8_scale_rows(&sh), 3);
    assert_int_equal(qn_fp8_scale_cols(&sh), 2);
    assert_int_equal(qn_fp8_quantize(&sh, w, q, s, "hand"), QN_OK);
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 2; j++) {
            float want = (amax[i][j] > 1e-12f ? amax[i][j] : 1e-12f) / 448.0f;
            assert_true(isfinite(s[i * 2 + j]));
            if (s[i * 2 + j] != want)
                fail_msg("tile (%d,%d): s %g, want %g", i, j, s[i * 2 + j], want);
        }
    }
    /* the all-zero tile gets the floor and encodes zeros */
    assert_true(s[1 * 2 + 0] == 1e-12f / 448.0f);
    for (int r = 2; r < 4; r++)
        for (int c = 0; c < 4; c++)
            assert_int_equal(q[r * N + c] & 0x7F, 0);
    /* the tile's extreme maps to +-448 (0x7E | sign), half of it to +-224 */
    assert_int_equal(q[1 * N + 2], 0xFE);
    assert_int_equal(q[0 * N + 5], 0x7E);
    assert_int_equal(q[4 * N + 4], 0xFE);
    assert_true(qn_fp8e4m3_to_f32(q[0 * N + 1]) == -224.0f); /* -0.5 * amax of tile (0,0) */
}

/* Random tiles of very different magnitudes, including values deep in the
 * e4m3 subnormal range of their tile, on a grid with partial edge tiles. */
static void test_round_trip_bound(void **state) {
    (void)state;
    const int64_t M = 300, N = 260;
    qn_fp8_shape sh = {.rows = M, .cols = N, .block_rows = 128, .block_cols = 128};
    const int64_t sr = qn_fp8_scale_rows(&sh), sc = qn_fp8_scale_cols(&sh);
    assert_int_equal(sr, 3);
    assert_int_equal(sc, 3);
    float *w = malloc((size_t)(M * N) * sizeof *w), *d = malloc((size_t)(M * N) * sizeof *d);
    uint8_t *q = malloc((size_t)(M * N));
    float *s = malloc((size_t)(sr * sc) * sizeof *s);
    for (int64_t r = 0; r < M; r++) {
        for (int64_t c = 0; c < N; c++) {
            float mag = ldexpf(1.0f, (int)((r / 128) * 3 + (c / 128)) * 4 - 20);
            float u = frand();
            /* a third of the values tiny relative to the tile (|w/s| < 2^-6) */
            w[r * N + c] = ((r * N + c) % 3 == 0) ? u * mag * 1e-4f : u * mag;
        }
    }
    assert_int_equal(qn_fp8_quantize(&sh, w, q, s, "rt"), QN_OK);
    qn_fp8_dequantize(&sh, q, s, d);
    double worst = 0.0;
    for (int64_t r = 0; r < M; r++) {
        for (int64_t c = 0; c < N; c++) {
            float ws = w[r * N + c], dv = d[r * N + c], ss = s[(r / 128) * sc + c / 128];
            assert_true(isfinite(dv));
            double err = fabs((double)dv - (double)ws);
            double bound = ldexp(fabs(ws), -4) + ldexp(ss, -10) + 4.0 * FLT_EPSILON * fabs(ws);
            if (!(err <= bound))
                fail_msg("[%lld,%lld]: w %g deq %g err %g > bound %g", (long long)r, (long long)c,
                         ws, dv, err, bound);
            double tile_bound = ldexp(448.0 * ss, -4) * (1 + 4 * FLT_EPSILON);
            if (!(err <= tile_bound))
                fail_msg("tile bound violated at [%lld,%lld]", (long long)r, (long long)c);
            if (err / bound > worst) worst = err / bound;
        }
    }
    /* the bound is tight: some element uses more than half of it */
    assert_true(worst > 0.5);
    free(w);
    free(d);
    free(q);
    free(s);
}

static void test_nonfinite_rejected(void **state) {
    (void)state;
    float w[4] = {1, 2, NAN, 4};
    uint8_t q[4];
    float s[1];
    qn_fp8_shape sh = {.rows = 2, .cols = 2, .block_rows = 128, .block_cols = 128};
    assert_int_equal(qn_fp8_quantize(&sh, w, q, s, "layer.w"), QN_ERR_INVALID);
    assert_non_null(strstr(qn_last_error(), "layer.w"));
    assert_non_null(strstr(qn_last_error(), "[1, 0]"));
    qn_fp8_shape bad = {.rows = 2, .cols = 2, .block_rows = 0, .block_cols = 128};
    w[2] = 3;
    assert_int_equal(qn_fp8_quantize(&bad, w, q, s, "layer.w"), QN_ERR_INVALID);
}

static void test_tiled_matmul(void **state) {
    (void)state;
    const int64_t M = 300, N = 260, T = 7;
    qn_fp8_shape sh = {.rows = M, .cols = N, .block_rows = 128, .block_cols = 128};
    const int64_t ns = qn_fp8_scale_rows(&sh) * qn_fp8_scale_cols(&sh);
    float *w = malloc((size_t)(M * N) * sizeof *w), *d = malloc((size_t)(M * N) * sizeof *d);
    float *x = malloc((size_t)(T * N) * sizeof *x), *s = malloc((size_t)ns * sizeof *s);
    float *y1 = malloc((size_t)(T * M) * sizeof *y1), *y2 = malloc((size_t)(T * M) * sizeof *y2);
    uint8_t *q = malloc((size_t)(M * N));
    for (int64_t i = 0; i < M * N; i++)
        w[i] = frand() * (1 + (float)(i % 7));
    for (int64_t i = 0; i < T * N; i++)
        x[i] = frand();
    assert_int_equal(qn_fp8_quantize(&sh, w, q, s, "mm"), QN_OK);
    qn_fp8_dequantize(&sh, q, s, d);
    size_t nscr = qn_fp8_matmul_scratch_floats(&sh);
    assert_int_equal(nscr, (size_t)(128 * N));
    /* guard floats after the scratch catch writes past the documented size */
    float *scratch = malloc((nscr + 16) * sizeof *scratch);
    for (int i = 0; i < 16; i++)
        scratch[nscr + (size_t)i] = 12345.0f;
    for (int64_t i = 0; i < T * M; i++)
        y2[i] = NAN;
    qn_sgemm(0, 1, (int)T, (int)M, (int)N, 1.0f, x, (int)N, d, (int)N, 0.0f, y1, (int)M);
    qn_fp8_matmul(&sh, x, T, q, s, y2, scratch);
    for (int i = 0; i < 16; i++)
        assert_true(scratch[nscr + (size_t)i] == 12345.0f);
    for (int64_t t = 0; t < T; t++) {
        for (int64_t m = 0; m < M; m++) {
            double mag = 0.0;
            for (int64_t k = 0; k < N; k++)
                mag += fabs((double)x[t * N + k] * d[m * N + k]);
            float a = y1[t * M + m], b = y2[t * M + m];
            assert_true(isfinite(a) && isfinite(b));
            if (!(fabs((double)a - b) <= 2.0 * N * FLT_EPSILON * mag))
                fail_msg("y[%lld,%lld]: tiled %g vs full %g", (long long)t, (long long)m, b, a);
        }
    }
    free(w);
    free(d);
    free(x);
    free(s);
    free(y1);
    free(y2);
    free(q);
    free(scratch);
}

static void test_load_f32(void **state) {
    (void)state;
    enum { M = 130, N = 3 };
    float w[M * N], d[M * N], out[M * N], s[2];
    uint8_t q[M * N];
    for (int i = 0; i < M * N; i++)
        w[i] = frand();
    qn_fp8_shape sh = {.rows = M, .cols = N, .block_rows = 128, .block_cols = 128};
    assert_int_equal(qn_fp8_quantize(&sh, w, q, s, "p"), QN_OK);
    qn_fp8_dequantize(&sh, q, s, d);
    const char *path = qn_test_path("fp8_load.safetensors");
    qn_st_writer *wr;
    assert_int_equal(qn_st_writer_init(&wr, path), QN_OK);
    int64_t shp[2] = {M, N}, sshp[2] = {2, 1}, bad_shp[2] = {1, 1};
    assert_int_equal(qn_st_writer_add(wr, "a.weight", QN_DTYPE_F8_E4M3, 2, shp, q), QN_OK);
    assert_int_equal(qn_st_writer_add(wr, "a.weight_scale_inv", QN_DTYPE_F32, 2, sshp, s), QN_OK);
    assert_int_equal(qn_st_writer_add(wr, "b.weight", QN_DTYPE_F8_E4M3, 2, shp, q), QN_OK);
    assert_int_equal(qn_st_writer_add(wr, "c.weight", QN_DTYPE_F8_E4M3, 2, shp, q), QN_OK);
    assert_int_equal(qn_st_writer_add(wr, "c.weight_scale_inv", QN_DTYPE_F32, 2, bad_shp, s),
                     QN_OK);
    assert_int_equal(qn_st_writer_add(wr, "n.weight", QN_DTYPE_F32, 2, shp, w), QN_OK);
    assert_int_equal(qn_st_writer_finish(wr), QN_OK);
    qn_st_writer_free(wr);
    qn_st_model *m;
    assert_int_equal(qn_st_model_open(path, &m), QN_OK);
    assert_int_equal(qn_fp8_load_f32(m, "a.weight", 128, 128, out, M * N), QN_OK);
    assert_memory_equal(out, d, sizeof d);
    assert_int_equal(qn_fp8_load_f32(m, "n.weight", 128, 128, out, M * N), QN_OK);
    assert_memory_equal(out, w, sizeof w);
    assert_int_equal(qn_fp8_load_f32(m, "b.weight", 128, 128, out, M * N), QN_ERR_NOT_FOUND);
    assert_non_null(strstr(qn_last_error(), "b.weight_scale_inv"));
    assert_int_equal(qn_fp8_load_f32(m, "c.weight", 128, 128, out, M * N), QN_ERR_FORMAT);
    assert_non_null(strstr(qn_last_error(), "c.weight_scale_inv"));
    /* the scale shape depends on the block: [2, 1] is wrong for 64 x 64 */
    assert_int_equal(qn_fp8_load_f32(m, "a.weight", 64, 64, out, M * N), QN_ERR_FORMAT);
    assert_int_equal(qn_fp8_load_f32(m, "a.weight", 128, 128, out, M * N - 1), QN_ERR_RANGE);
    qn_st_model_close(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scales_hand_case),   cmocka_unit_test(test_round_trip_bound),
        cmocka_unit_test(test_nonfinite_rejected), cmocka_unit_test(test_tiled_matmul),
        cmocka_unit_test(test_load_f32),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
