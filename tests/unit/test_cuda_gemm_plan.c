/* test_cuda_gemm_plan.c — the host-side logic of the CUDA GEMMs
 * (core/ops/cuda/gemm.h, gemm_plan.c, fp8_codec.h), runnable without a GPU:
 *
 *   - descriptor checks refuse bad dims, leading dimensions and dtypes;
 *   - the row-major -> column-major mapping handed to cuBLASLt is right: a
 *     naive column-major GEMM run on the mapped problem reproduces qn_sgemm
 *     for all four transpose combinations, with padded leading dimensions;
 *   - every entry point refuses bad arguments before touching a device, with
 *     the same status in CUDA and no-CUDA builds, and never answers OK
 *     without a context;
 *   - FP8 scale layout helpers (strides, indices, sizes);
 *   - the shared e4m3 codec that the kernels run equals core/dtype.c's
 *     encoder/decoder over a sweep of bit patterns and every tie, and the
 *     per-tile steps reproduce core/quant/fp8.c's qn_fp8_quantize bit for bit
 *     (the GPU re-quantiser's exactness argument, on the CPU);
 *   - the activation quantiser's host reference meets the e4m3 error bound
 *     and writes its scales in the [ceil(K/128), T] layout. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/ops/cpu/ops.h"
#include "core/ops/cuda/fp8_codec.h"
#include "core/ops/cuda/gemm.h"
#include "core/quant/fp8.h"

static uint64_t g_state = 0x243F6A8885A308D3ull;
static uint64_t rnd64(void) {
    g_state ^= g_state << 13;
    g_state ^= g_state >> 7;
    g_state ^= g_state << 17;
    return g_state;
}
static float frand(void) { /* uniform in [-1, 1) */
    return (float)((rnd64() >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static qn_cuda_gemm_desc desc(int ta, int tb, int M, int N, int K, qn_dtype ab, qn_dtype c) {
    qn_cuda_gemm_desc d;
    memset(&d, 0, sizeof d);
    d.trans_a = ta;
    d.trans_b = tb;
    d.M = M;
    d.N = N;
    d.K = K;
    d.lda = ta ? M : K;
    d.ldb = tb ? K : N;
    d.ldc = N;
    d.ab_dtype = ab;
    d.c_dtype = c;
    return d;
}

static void test_desc_checks(void **state) {
    (void)state;
    qn_cuda_gemm_desc d = desc(0, 0, 3, 4, 5, QN_DTYPE_F32, QN_DTYPE_F32);
    assert_int_equal(qn_cuda_gemm_check("t", &d), QN_OK);
    d = desc(0, 0, 3, 4, 5, QN_DTYPE_BF16, QN_DTYPE_F32);
    assert_int_equal(qn_cuda_gemm_check("t", &d), QN_OK);
    d = desc(0, 0, 3, 4, 5, QN_DTYPE_BF16, QN_DTYPE_BF16);
    assert_int_equal(qn_cuda_gemm_check("t", &d), QN_OK);
    /* zero dims are fine (no-ops), leading dims still >= 1 */
    d = desc(1, 1, 0, 0, 0, QN_DTYPE_F32, QN_DTYPE_F32);
    d.lda = d.ldb = d.ldc = 1;
    assert_int_equal(qn_cuda_gemm_check("t", &d), QN_OK);
    d.lda = 0;
    assert_int_equal(qn_cuda_gemm_check("t", &d), QN_ERR_INVALID);

    d = desc(0, 0, 3, 4, 5, QN_DTYPE_F32, QN_DTYPE_BF16);
    assert_int_equal(qn_cuda_gemm_check("t", &d), QN_ERR_UNSUPPORTED);
    d = desc(0, 0, 3, 4, 5, QN_DTYPE_F16, QN_DTYPE_F16);
    assert_int_equal(qn_cuda_gemm_check("t", &d), QN_ERR_UNSUPPORTED);
    d = desc(0, 0, 3, 4, 5, QN_DTYPE_F8_E4M3, QN_DTYPE_F32);
    assert_int_equal(qn_cuda_gemm_check("t", &d), QN_ERR_UNSUPPORTED);
    d = desc(0, 0, 3, 4, 5, QN_DTYPE_BF16, QN_DTYPE_F32);
    d.allow_tf32 = 1;
    assert_int_equal(qn_cuda_gemm_check("t", &d), QN_ERR_INVALID);
    d = desc(0, 0, -1, 4, 5, QN_DTYPE_F32, QN_DTYPE_F32);
    assert_int_equal(qn_cuda_gemm_check("t", &d), QN_ERR_INVALID);
    assert_int_equal(qn_cuda_gemm_check("t", NULL), QN_ERR_INVALID);

    /* each leading dimension one short, for every transpose combination */
    for (int ta = 0; ta < 2; ta++) {
        for (int tb = 0; tb < 2; tb++) {
            qn_cuda_gemm_desc g = desc(ta, tb, 3, 4, 5, QN_DTYPE_F32, QN_DTYPE_F32);
            assert_int_equal(qn_cuda_gemm_check("t", &g), QN_OK);
            qn_cuda_gemm_desc b = g;
            b.lda--;
            assert_int_equal(qn_cuda_gemm_check("t", &b), QN_ERR_INVALID);
            assert_non_null(strstr(qn_last_error(), "lda"));
            b = g;
            b.ldb--;
            assert_int_equal(qn_cuda_gemm_check("t", &b), QN_ERR_INVALID);
            assert_non_null(strstr(qn_last_error(), "ldb"));
            b = g;
            b.ldc--;
            assert_int_equal(qn_cuda_gemm_check("t", &b), QN_ERR_INVALID);
            assert_non_null(strstr(qn_last_error(), "ldc"));
        }
    }
}

/* Column-major D[m, n] = op(A)[m, k] op(B)[k, n], naive, element (i, j) of a
 * column-major X with ld at X[i + j * ld]. */
static void colmajor_gemm(const qn_cuda_gemm_colmajor *p, const float *A, const float *B,
                          float *C) {
    for (int64_t j = 0; j < p->n; j++) {
        for (int64_t i = 0; i < p->m; i++) {
            double acc = 0.0;
            for (int64_t l = 0; l < p->k; l++) {
                float a = p->trans_a ? A[l + i * p->lda] : A[i + l * p->lda];
                float b = p->trans_b ? B[j + l * p->ldb] : B[l + j * p->ldb];
                acc += (double)a * b;
            }
            C[i + j * p->ldc] = (float)acc;
        }
    }
}

static void test_colmajor_mapping(void **state) {
    (void)state;
    const int M = 5, N = 7, K = 3, pad = 2;
    for (int ta = 0; ta < 2; ta++) {
        for (int tb = 0; tb < 2; tb++) {
            qn_cuda_gemm_desc d = desc(ta, tb, M, N, K, QN_DTYPE_F32, QN_DTYPE_F32);
            d.lda += pad;
            d.ldb += pad + 1;
            d.ldc += pad;
            const int a_rows = ta ? K : M, b_rows = tb ? N : K;
            float *A = calloc((size_t)a_rows * d.lda, sizeof *A);
            float *B = calloc((size_t)b_rows * d.ldb, sizeof *B);
            float *C0 = calloc((size_t)M * d.ldc, sizeof *C0);
            float *C1 = calloc((size_t)M * d.ldc, sizeof *C1);
            for (int i = 0; i < a_rows * d.lda; i++)
                A[i] = frand();
            for (int i = 0; i < b_rows * d.ldb; i++)
                B[i] = frand();
            qn_sgemm(ta, tb, M, N, K, 1.0f, A, d.lda, B, d.ldb, 0.0f, C0, d.ldc);

            qn_cuda_gemm_colmajor p;
            qn_cuda_gemm_to_colmajor(&d, &p);
            assert_int_equal(p.m, N);
            assert_int_equal(p.n, M);
            assert_int_equal(p.k, K);
            assert_true(p.lda >= p.a_rows && p.ldb >= p.b_rows && p.ldc >= p.c_rows);
            /* op(A') is m x k and op(B') is k x n */
            assert_int_equal(p.trans_a ? p.a_cols : p.a_rows, p.m);
            assert_int_equal(p.trans_a ? p.a_rows : p.a_cols, p.k);
            assert_int_equal(p.trans_b ? p.b_cols : p.b_rows, p.k);
            assert_int_equal(p.trans_b ? p.b_rows : p.b_cols, p.n);
            assert_int_equal(p.c_rows, N);
            assert_int_equal(p.c_cols, M);
            /* A' is the row-major B, B' the row-major A */
            colmajor_gemm(&p, B, A, C1);
            for (int r = 0; r < M; r++) {
                for (int c = 0; c < N; c++) {
                    float want = C0[r * d.ldc + c], got = C1[r * d.ldc + c];
                    assert_true(isfinite(got));
                    assert_true(fabsf(want - got) <= 1e-5f * (1.0f + fabsf(want)));
                }
            }
            free(A);
            free(B);
            free(C0);
            free(C1);
        }
    }
}

/* Without a context (and in builds without CUDA) nothing may answer QN_OK
 * for work that needs the device. */
static void assert_no_device_ok(qn_status s) {
    assert_true(s == QN_ERR_INVALID || s == QN_ERR_NO_DEVICE);
}

static void test_entry_points_refuse_bad_args(void **state) {
    (void)state;
    float buf[64] = {0};
    uint8_t qb[64] = {0};
    const void *p = buf;
    /* dtype */
    assert_int_equal(qn_cuda_gemm(NULL, QN_DTYPE_F16, 0, 0, 2, 2, 2, 1, p, 2, p, 2, 0, buf, 2),
                     QN_ERR_UNSUPPORTED);
    /* lda too small */
    assert_int_equal(qn_cuda_gemm(NULL, QN_DTYPE_F32, 0, 0, 2, 3, 4, 1, p, 3, p, 3, 0, buf, 3),
                     QN_ERR_INVALID);
    /* NULL C with work to do */
    assert_int_equal(qn_cuda_gemm(NULL, QN_DTYPE_F32, 0, 0, 2, 3, 4, 1, p, 4, p, 3, 0, NULL, 3),
                     QN_ERR_INVALID);
    /* valid arguments but no context */
    assert_no_device_ok(qn_cuda_gemm(NULL, QN_DTYPE_F32, 0, 0, 2, 3, 4, 1, p, 4, p, 3, 0, buf, 3));

    assert_int_equal(qn_cuda_matmul_forward(NULL, QN_DTYPE_F32, buf, buf, buf, NULL, 2, 3, 4),
                     QN_ERR_INVALID); /* out aliases inp */
    assert_int_equal(qn_cuda_matmul_forward(NULL, QN_DTYPE_F32, buf, p, NULL, NULL, 2, 3, 4),
                     QN_ERR_INVALID);
    assert_int_equal(qn_cuda_matmul_forward(NULL, QN_DTYPE_I32, buf, qb, p, NULL, 2, 3, 4),
                     QN_ERR_UNSUPPORTED);
    assert_int_equal(qn_cuda_matmul_forward(NULL, QN_DTYPE_F32, buf, qb, p, NULL, -1, 3, 4),
                     QN_ERR_INVALID);
    assert_no_device_ok(qn_cuda_matmul_forward(NULL, QN_DTYPE_BF16, buf, qb, p, NULL, 2, 3, 4));
    assert_int_equal(
        qn_cuda_matmul_backward(NULL, QN_DTYPE_F32, buf, NULL, NULL, NULL, qb, p, 2, 3, 4, 0),
        QN_ERR_INVALID); /* dout NULL */
    assert_int_equal(
        qn_cuda_matmul_backward(NULL, QN_DTYPE_F32, buf, NULL, NULL, buf, qb, p, 2, 3, 4, 0),
        QN_ERR_INVALID); /* dinp aliases dout */
    assert_no_device_ok(
        qn_cuda_matmul_backward(NULL, QN_DTYPE_F32, buf, buf + 32, NULL, qb, qb, p, 2, 3, 4, 1));

    /* FP8 */
    qn_cuda_fp8_weight w = {.q = qb, .scale = buf, .N = 256, .K = 640, .scale_ld = 8};
    assert_no_device_ok(qn_cuda_fp8_gemm(NULL, QN_DTYPE_BF16, buf, qb, buf, &w, 4));
    assert_no_device_ok(qn_cuda_fp8_gemm_ref(NULL, QN_DTYPE_F32, buf, qb, buf, &w, 4));
    assert_no_device_ok(qn_cuda_fp8_matmul_forward(NULL, QN_DTYPE_BF16, buf, qb, &w, 4));
    w.scale_ld = 5; /* the checkpoint's unpadded stride: fine for the reference only */
    assert_int_equal(qn_cuda_fp8_gemm(NULL, QN_DTYPE_BF16, buf, qb, buf, &w, 4),
                     QN_ERR_UNSUPPORTED);
    assert_non_null(strstr(qn_last_error(), "scale_ld"));
    assert_no_device_ok(qn_cuda_fp8_gemm_ref(NULL, QN_DTYPE_F32, buf, qb, buf, &w, 4));
    w.scale_ld = 4; /* < ceil(640/128) */
    assert_int_equal(qn_cuda_fp8_gemm_ref(NULL, QN_DTYPE_F32, buf, qb, buf, &w, 4), QN_ERR_INVALID);
    w = (qn_cuda_fp8_weight){.q = qb, .scale = buf, .N = 256, .K = 200, .scale_ld = 4};
    assert_int_equal(qn_cuda_fp8_gemm(NULL, QN_DTYPE_BF16, buf, qb, buf, &w, 4),
                     QN_ERR_UNSUPPORTED); /* K % 128 */
    assert_no_device_ok(qn_cuda_fp8_gemm_ref(NULL, QN_DTYPE_BF16, buf, qb, buf, &w, 4));
    w = (qn_cuda_fp8_weight){.q = qb, .scale = buf, .N = 200, .K = 256, .scale_ld = 4};
    assert_int_equal(qn_cuda_fp8_gemm(NULL, QN_DTYPE_BF16, buf, qb, buf, &w, 4),
                     QN_ERR_UNSUPPORTED); /* N % 16 */
    w.N = 208;
    assert_no_device_ok(qn_cuda_fp8_gemm(NULL, QN_DTYPE_BF16, buf, qb, buf, &w, 4));
    assert_int_equal(qn_cuda_fp8_gemm(NULL, QN_DTYPE_F16, buf, qb, buf, &w, 4), QN_ERR_UNSUPPORTED);
    w.q = NULL;
    assert_int_equal(qn_cuda_fp8_gemm(NULL, QN_DTYPE_BF16, buf, qb, buf, &w, 4), QN_ERR_INVALID);
    assert_int_equal(qn_cuda_fp8_gemm(NULL, QN_DTYPE_BF16, buf, qb, buf, NULL, 4), QN_ERR_INVALID);

    assert_int_equal(qn_cuda_fp8_quantize_act(NULL, QN_DTYPE_F32, qb, buf, p, -1, 128),
                     QN_ERR_INVALID);
    assert_int_equal(qn_cuda_fp8_quantize_act(NULL, QN_DTYPE_F32, NULL, buf, p, 2, 128),
                     QN_ERR_INVALID);
    assert_no_device_ok(qn_cuda_fp8_quantize_act(NULL, QN_DTYPE_F32, qb, buf, p, 2, 128));
    assert_int_equal(qn_cuda_fp8_requantize_weight(NULL, QN_DTYPE_F32, qb, buf, 1, p, 4, 300, NULL),
                     QN_ERR_INVALID); /* scale_ld 1 < 3 */
    assert_int_equal(qn_cuda_fp8_requantize_weight(NULL, QN_DTYPE_F32, qb, buf, 3, p, 0, 300, NULL),
                     QN_ERR_INVALID);
    assert_no_device_ok(
        qn_cuda_fp8_requantize_weight(NULL, QN_DTYPE_BF16, qb, buf, 3, p, 4, 300, NULL));
}

static void test_fp8_layout_helpers(void **state) {
    (void)state;
    assert_int_equal(qn_cuda_fp8_blocks(1), 1);
    assert_int_equal(qn_cuda_fp8_blocks(128), 1);
    assert_int_equal(qn_cuda_fp8_blocks(129), 2);
    assert_int_equal(qn_cuda_fp8_blocks(5120), 40);
    /* 16-byte rows: multiples of 4 floats */
    assert_int_equal(qn_cuda_fp8_weight_scale_ld(128), 4);
    assert_int_equal(qn_cuda_fp8_weight_scale_ld(640), 8);
    assert_int_equal(qn_cuda_fp8_weight_scale_ld(5120), 40);  /* GLM-4.5 hidden */
    assert_int_equal(qn_cuda_fp8_weight_scale_ld(12288), 96); /* q_proj out / o_proj in */
    assert_int_equal(qn_cuda_fp8_weight_scale_ld(1536), 12);  /* expert down in */
    for (int64_t K = 1; K < 3000; K += 37) {
        int64_t ld = qn_cuda_fp8_weight_scale_ld(K);
        assert_true(ld % 4 == 0 && ld >= qn_cuda_fp8_blocks(K) && ld < qn_cuda_fp8_blocks(K) + 4);
    }
    assert_int_equal(qn_cuda_fp8_weight_scale_index(2, 3, 8), 19);
    /* activations: [ceil(K/128), T], token fastest */
    assert_int_equal(qn_cuda_fp8_act_scale_ld(7, 300), 7);
    assert_int_equal(qn_cuda_fp8_act_scale_index(5, 2, 7), 19);
    assert_int_equal(qn_cuda_fp8_act_scale_floats(7, 300), 21);
    assert_int_equal(qn_cuda_fp8_act_scale_floats(0, 300), 0);
    /* the index map is a bijection onto [0, floats) */
    enum { T = 5, K = 700 };
    const int G = (int)qn_cuda_fp8_blocks(K);
    int seen[T * 6] = {0};
    assert_int_equal(qn_cuda_fp8_act_scale_floats(T, K), (size_t)T * G);
    for (int t = 0; t < T; t++)
        for (int g = 0; g < G; g++)
            seen[qn_cuda_fp8_act_scale_index(t, g, qn_cuda_fp8_act_scale_ld(T, K))]++;
    for (int i = 0; i < T * G; i++)
        assert_int_equal(seen[i], 1);
}

static void check_encode(float x) {
    uint8_t want = qn_f32_to_fp8e4m3(x), got = qn_fp8_encode_e4m3(x);
    if (want != got) fail_msg("e4m3 encode of %a: core 0x%02X, codec 0x%02X", (double)x, want, got);
}

static void test_codec_matches_core(void **state) {
    (void)state;
    for (int b = 0; b < 256; b++) {
        float want = qn_fp8e4m3_to_f32((uint8_t)b), got = qn_fp8_decode_e4m3((uint8_t)b);
        if (isnan(want)) {
            assert_true(isnan(got));
        } else {
            assert_memory_equal(&want, &got, sizeof want);
            check_encode(want); /* every representable value round-trips */
        }
    }
    /* every tie and its neighbours: midpoints between adjacent e4m3 values,
     * including the subnormal range and 448 / 464 (the saturation edge) */
    for (int b = 0; b < 0x7E; b++) {
        float lo = qn_fp8e4m3_to_f32((uint8_t)b), hi = qn_fp8e4m3_to_f32((uint8_t)(b + 1));
        float mid = 0.5f * (lo + hi);
        float cases[] = {mid, nextafterf(mid, 0.0f), nextafterf(mid, 1e9f), lo * 0.999f};
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            check_encode(cases[i]);
            check_encode(-cases[i]);
        }
    }
    const float specials[] = {0.0f,     -0.0f,    448.0f,     463.9f,    464.0f,
                              480.0f,   1e30f,    INFINITY,   -INFINITY, NAN,
                              0x1p-10f, 0x1p-11f, 0x1.8p-10f, 1e-45f,    0x1p-126f};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) {
        check_encode(specials[i]);
        check_encode(-specials[i]);
    }
    /* a sweep over the fp32 bit patterns (stride prime, ~1.1M values) */
    for (uint64_t u = 0; u < 0x100000000ull; u += 3889) {
        uint32_t bits = (uint32_t)u;
        float x;
        memcpy(&x, &bits, sizeof x);
        check_encode(x);
    }
}

/* The GPU re-quantiser computes, per tile, amax -> qn_fp8_block_scale ->
 * qn_fp8_quant_value per element. Doing exactly that here must give the
 * bytes and scales of core's qn_fp8_quantize (shape with partial tiles). */
static void test_tile_steps_match_core_quantizer(void **state) {
    (void)state;
    enum { N = 300, K = 260 };
    float *w = malloc(sizeof(float) * N * K);
    for (int i = 0; i < N * K; i++) {
        float r = frand();
        /* tiles of very different magnitude, some exact zeros, some ties */
        float mag = ((i / K) / 128 == 1) ? 1e-3f : (((i % K) / 128 == 2) ? 300.0f : 2.0f);
        w[i] = (i % 97 == 0) ? 0.0f : r * mag;
    }
    for (int k = 0; k < K; k++)
        w[(size_t)(N - 1) * K + k] = 0.0f; /* partial all-zero row */
    qn_fp8_shape sh = {.rows = N, .cols = K, .block_rows = 128, .block_cols = 128};
    const int NB = (int)qn_fp8_scale_rows(&sh), KB = (int)qn_fp8_scale_cols(&sh);
    uint8_t *q0 = malloc(N * K), *q1 = malloc(N * K);
    float *s0 = malloc(sizeof(float) * NB * KB);
    const int ld = (int)qn_cuda_fp8_weight_scale_ld(K);
    float *s1 = calloc((size_t)NB * ld, sizeof(float));
    assert_int_equal(qn_fp8_quantize(&sh, w, q0, s0, "w"), QN_OK);
    for (int nb = 0; nb < NB; nb++) {
        for (int kb = 0; kb < KB; kb++) {
            float amax = 0.0f;
            for (int r = nb * 128; r < N && r < nb * 128 + 128; r++)
                for (int c = kb * 128; c < K && c < kb * 128 + 128; c++)
                    amax = fmaxf(amax, fabsf(w[r * K + c]));
            const float s = qn_fp8_block_scale(amax);
            s1[qn_cuda_fp8_weight_scale_index(nb, kb, ld)] = s;
            for (int r = nb * 128; r < N && r < nb * 128 + 128; r++)
                for (int c = kb * 128; c < K && c < kb * 128 + 128; c++)
                    q1[r * K + c] = qn_fp8_quant_value(w[r * K + c], s);
        }
    }
    assert_memory_equal(q0, q1, (size_t)N * K);
    for (int nb = 0; nb < NB; nb++)
        for (int kb = 0; kb < KB; kb++)
            assert_memory_equal(&s0[nb * KB + kb], &s1[qn_cuda_fp8_weight_scale_index(nb, kb, ld)],
                                sizeof(float));
    free(w);
    free(q0);
    free(q1);
    free(s0);
    free(s1);
}

static void test_act_quant_reference(void **state) {
    (void)state;
    enum { T = 3, K = 300 };
    float x[T * K];
    for (int i = 0; i < T * K; i++)
        x[i] = frand() * (float)(1 + i % 5);
    for (int k = 0; k < 128; k++)
        x[1 * K + k] = 0.0f; /* an all-zero group */
    x[2 * K + 299] = -57.0f; /* amax of a partial group */
    uint8_t xq[T * K];
    float xs[T * 3];
    const int64_t ld = qn_cuda_fp8_act_scale_ld(T, K);
    assert_true(qn_cuda_fp8_act_scale_floats(T, K) <= sizeof xs / sizeof xs[0]);
    qn_fp8_quantize_act_ref(x, T, K, xq, xs, (size_t)ld);
    assert_true(xs[qn_cuda_fp8_act_scale_index(2, 2, ld)] == 57.0f / 448.0f);
    assert_true(xs[qn_cuda_fp8_act_scale_index(1, 0, ld)] == 1e-12f / 448.0f);
    for (int t = 0; t < T; t++) {
        for (int k = 0; k < K; k++) {
            const float s = xs[qn_cuda_fp8_act_scale_index(t, k / 128, ld)];
            const float v = x[t * K + k], d = qn_fp8_decode_e4m3(xq[t * K + k]) * s;
            assert_true(isfinite(d));
            /* fp8.h's bound: 2^-4 |w| + 2^-10 s, plus fp32 rounding */
            assert_true(fabsf(d - v) <= 0.0625f * fabsf(v) + 0x1p-10f * s + 1e-6f * fabsf(v));
        }
    }
    assert_int_equal(xq[2 * K + 299], qn_f32_to_fp8e4m3(-448.0f));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_desc_checks),
        cmocka_unit_test(test_colmajor_mapping),
        cmocka_unit_test(test_entry_points_refuse_bad_args),
        cmocka_unit_test(test_fp8_layout_helpers),
        cmocka_unit_test(test_codec_matches_core),
        cmocka_unit_test(test_tile_steps_match_core_quantizer),
        cmocka_unit_test(test_act_quant_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
