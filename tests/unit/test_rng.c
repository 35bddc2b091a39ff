/* test_rng.c — Philox4x32 known answers, the bits->float map, uniform and
 * normal moments over 1e6 draws, independence of streams, seeds and
 * neighbouring indices, determinism, and the fill/sequential views agreeing
 * with the pure functions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

#define N_DRAWS 1000000

/* Known-answer vectors from Random123's tests/kat_vectors
 * (github.com/DEShawResearch/random123, commit 9545ff6413f2, lines 24-29):
 * columns are counter[4], key[2], expected output[4]. The 7-round lines
 * check the round count is a real parameter. */
typedef struct kat {
    int rounds;
    uint32_t ctr[4];
    uint32_t key[2];
    uint32_t expect[4];
} kat;

static const kat k_kats[] = {
    {7, {0, 0, 0, 0}, {0, 0}, {0x5f6fb709, 0x0d893f64, 0x4f121f81, 0x4f730a48}},
    {7,
     {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
     {0xffffffff, 0xffffffff},
     {0x5207ddc2, 0x45165e59, 0x4d8ee751, 0x8c52f662}},
    {7,
     {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
     {0xa4093822, 0x299f31d0},
     {0x4dfccaba, 0x190a87f0, 0xc47362ba, 0xb6b5242a}},
    {10, {0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
    {10,
     {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
     {0xffffffff, 0xffffffff},
     {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
    {10,
     {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
     {0xa4093822, 0x299f31d0},
     {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
};

static void test_known_answers(void **state) {
    for (size_t i = 0; i < sizeof k_kats / sizeof k_kats[0]; i++) {
        uint32_t out[4];
        qn_philox4x32_r(k_kats[i].rounds, k_kats[i].ctr, k_kats[i].key, out);
        for (int w = 0; w < 4; w++) {
            if (out[w] != k_kats[i].expect[w]) {
                fail_msg("vector %zu (%d rounds) word %d: got %08x, want %08x", i, k_kats[i].rounds,
                         w, out[w], k_kats[i].expect[w]);
            }
        }
        if (k_kats[i].rounds == 10) {
            uint32_t out10[4];
            qn_philox4x32_10(k_kats[i].ctr, k_kats[i].key, out10);
            assert_memory_equal(out10, k_kats[i].expect, sizeof out10);
        }
    }
    /* out may alias ctr */
    uint32_t buf[4] = {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344};
    const uint32_t key[2] = {0xa4093822, 0x299f31d0};
    qn_philox4x32_10(buf, key, buf);
    assert_memory_equal(buf, k_kats[5].expect, sizeof buf);
}

/* The (seed, stream, index) -> (key, counter, word) layout of rng.h. */
static void test_layout(void **state) {
    /* key {a4093822, 299f31d0}, counter {243f6a88, 85a308d3, 13198a2e, 03707344} */
    const uint64_t seed = 0x299f31d0a4093822ull;
    const uint64_t stream = 0x0370734413198a2eull;
    uint32_t w[4];
    qn_rng_block(seed, stream, 0x85a308d3243f6a88ull, w);
    assert_memory_equal(w, k_kats[5].expect, sizeof w);
    /* index i is word i & 3 of block i >> 2: all-zero key and counter */
    for (uint64_t i = 0; i < 4; i++) {
        uint32_t x = qn_rng_u32(0, 0, i);
        assert_int_equal(x, k_kats[3].expect[i]);
        float u = qn_rng_uniform(0, 0, i);
        assert_true(u == (float)(k_kats[3].expect[i] >> 8) / 16777216.0f);
    }
    /* the block index is the low counter words: index 4 * 0x85a308d3243f6a88
     * would overflow, so check a block with the high counter word set */
    const uint64_t block = 0x05a308d3243f6a88ull;
    qn_rng_block(seed, stream, block, w);
    const uint32_t ctr[4] = {0x243f6a88, 0x05a308d3, 0x13198a2e, 0x03707344};
    const uint32_t key[2] = {0xa4093822, 0x299f31d0};
    uint32_t direct[4];
    qn_philox4x32_10(ctr, key, direct);
    assert_memory_equal(w, direct, sizeof w);
    for (uint64_t i = 0; i < 4; i++)
        assert_int_equal(qn_rng_u32(seed, stream, block * 4 + i), w[i]);
    /* bits -> float edge values */
    assert_true(qn_rng_u32_to_uniform(0) == 0.0f);
    assert_true(qn_rng_u32_to_uniform(0xffffffffu) == 1.0f - 1.0f / 16777216.0f);
    assert_true(qn_rng_u32_to_uniform(0xffffffffu) < 1.0f);
    assert_true(qn_rng_u32_to_uniform(0x80000000u) == 0.5f);
}

static void moments(const float *x, size_t n, double *mean, double *var) {
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++)
        s += x[i];
    *mean = s / (double)n;
    for (size_t i = 0; i < n; i++)
        s2 += (x[i] - *mean) * (x[i] - *mean);
    *var = s2 / (double)(n - 1);
}

static void test_uniform_moments(void **state) {
    float *u = malloc(N_DRAWS * sizeof *u);
    assert_non_null(u);
    qn_rng_fill_uniform(42, 7, 0, u, N_DRAWS);
    size_t bins[16] = {0};
    for (size_t i = 0; i < N_DRAWS; i++) {
        if (!isfinite(u[i]) || u[i] < 0.0f || u[i] >= 1.0f) fail_msg("u[%zu] = %g", i, u[i]);
        bins[(int)(u[i] * 16.0f)]++;
    }
    double mean, var;
    moments(u, N_DRAWS, &mean, &var);
    printf("uniform: mean %.6f (0.5) var %.6f (%.6f)\n", mean, var, 1.0 / 12.0);
    /* standard errors: mean 2.9e-4, variance 7.5e-5; allow ~5 sigma */
    assert_true(isfinite(mean) && fabs(mean - 0.5) < 1.5e-3);
    assert_true(isfinite(var) && fabs(var - 1.0 / 12.0) < 4e-4);
    /* chi-square over 16 bins, 15 degrees of freedom: p(> 37.7) = 0.001 */
    double chi2 = 0, e = N_DRAWS / 16.0;
    for (int b = 0; b < 16; b++)
        chi2 += (bins[b] - e) * (bins[b] - e) / e;
    printf("uniform: chi2 (15 dof) %.2f\n", chi2);
    assert_true(isfinite(chi2) && chi2 < 37.7);
    free(u);
}

static void test_normal_moments(void **state) {
    float *z = malloc(N_DRAWS * sizeof *z);
    assert_non_null(z);
    qn_rng_fill_normal(1234, 3, 0, z, N_DRAWS);
    size_t within1 = 0;
    double m4 = 0;
    for (size_t i = 0; i < N_DRAWS; i++) {
        if (!isfinite(z[i]) || fabsf(z[i]) > 5.8f) fail_msg("z[%zu] = %g", i, z[i]);
        if (fabsf(z[i]) < 1.0f) within1++;
        m4 += (double)z[i] * z[i] * z[i] * z[i];
    }
    double mean, var;
    moments(z, N_DRAWS, &mean, &var);
    m4 /= N_DRAWS;
    double frac1 = (double)within1 / N_DRAWS;
    printf("normal: mean %.5f var %.5f kurtosis %.4f P(|z|<1) %.5f\n", mean, var, m4, frac1);
    assert_true(isfinite(mean) && fabs(mean) < 5e-3);
    assert_true(isfinite(var) && fabs(var - 1.0) < 1e-2);
    assert_true(isfinite(m4) && fabs(m4 - 3.0) < 0.05);
    assert_true(fabs(frac1 - 0.682689) < 3e-3);
    free(z);
}

static double correlation(const float *a, const float *b, size_t n) {
    double ma = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        ma += a[i];
        mb += b[i];
    }
    ma /= n;
    mb /= n;
    double sab = 0, saa = 0, sbb = 0;
    for (size_t i = 0; i < n; i++) {
        sab += (a[i] - ma) * (b[i] - mb);
        saa += (a[i] - ma) * (a[i] - ma);
        sbb += (b[i] - mb) * (b[i] - mb);
    }
    return sab / sqrt(saa * sbb);
}

static void test_independence(void **state) {
    float *a = malloc(N_DRAWS * sizeof *a), *b = malloc(N_DRAWS * sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    /* standard error of a correlation is 1/sqrt(n) = 1e-3; allow 5 sigma */
    const double tol = 5e-3;

    qn_rng_fill_uniform(42, 0, 0, a, N_DRAWS);
    qn_rng_fill_uniform(42, 1, 0, b, N_DRAWS);
    double c_stream = correlation(a, b, N_DRAWS);
    size_t same = 0;
    for (size_t i = 0; i < N_DRAWS; i++)
        same += a[i] == b[i];

    qn_rng_fill_uniform(43, 0, 0, b, N_DRAWS);
    double c_seed = correlation(a, b, N_DRAWS);

    /* streams that differ only in the high word */
    qn_rng_fill_uniform(42, 1ull << 32, 0, b, N_DRAWS);
    double c_stream_hi = correlation(a, b, N_DRAWS);

    /* neighbouring indices in one stream (lag 1, and lag 4 = next block) */
    double c_lag1 = correlation(a, a + 1, N_DRAWS - 1);
    double c_lag4 = correlation(a, a + 4, N_DRAWS - 4);
    printf("corr: stream %.5f seed %.5f stream-hi %.5f lag1 %.5f lag4 %.5f; equal %zu\n", c_stream,
           c_seed, c_stream_hi, c_lag1, c_lag4, same);
    assert_true(isfinite(c_stream) && fabs(c_stream) < tol);
    assert_true(isfinite(c_seed) && fabs(c_seed) < tol);
    assert_true(isfinite(c_stream_hi) && fabs(c_stream_hi) < tol);
    assert_true(isfinite(c_lag1) && fabs(c_lag1) < tol);
    assert_true(isfinite(c_lag4) && fabs(c_lag4) < tol);
    /* 24-bit values: about n / 2^24 = 0.06 coincidences expected */
    assert_true(same < 10);

    /* the two Box-Muller outputs of a pair are uncorrelated */
    qn_rng_fill_normal(42, 5, 0, a, N_DRAWS);
    for (size_t i = 0; i < N_DRAWS / 2; i++) {
        b[i] = a[2 * i];
        b[N_DRAWS / 2 + i] = a[2 * i + 1];
    }
    double c_pair = correlation(b, b + N_DRAWS / 2, N_DRAWS / 2);
    printf("corr: normal cos/sin pair %.5f\n", c_pair);
    assert_true(isfinite(c_pair) && fabs(c_pair) < 2 * tol);
    free(a);
    free(b);
}

static void test_determinism(void **state) {
    enum { N = 1003 };
    float a[N], b[N];
    /* pure function vs fill, at an offset that is not block-aligned */
    const uint64_t off = 0xfffffffffull + 2;
    qn_rng_fill_uniform(9, 11, off, a, N);
    for (size_t i = 0; i < N; i++) {
        float u = qn_rng_uniform(9, 11, off + i);
        assert_memory_equal(&a[i], &u, sizeof u);
    }
    qn_rng_fill_uniform(9, 11, off, b, N);
    assert_memory_equal(a, b, sizeof a);
    qn_rng_fill_normal(9, 11, off + 1, a, N);
    for (size_t i = 0; i < N; i++) {
        float z = qn_rng_normal(9, 11, off + 1 + i);
        assert_memory_equal(&a[i], &z, sizeof z);
    }
    /* a fill that starts in the middle gives the same values as one that
     * covers it (splitting work does not change the numbers) */
    qn_rng_fill_uniform(9, 11, off, a, N);
    qn_rng_fill_uniform(9, 11, off + 5, b, N - 5);
    assert_memory_equal(a + 5, b, (N - 5) * sizeof(float));

    /* sequential wrapper */
    qn_rng r;
    qn_rng_init(&r, 9, 11);
    for (uint64_t i = 0; i < 10; i++) {
        float u = qn_rng_next_uniform(&r);
        float want = qn_rng_uniform(9, 11, i);
        assert_memory_equal(&u, &want, sizeof u);
    }
    float z = qn_rng_next_normal(&r); /* uniforms 10, 11 -> normal index 10 */
    float zwant = qn_rng_normal(9, 11, 10);
    assert_memory_equal(&z, &zwant, sizeof z);
    assert_int_equal(r.index, 12);
    assert_int_equal(qn_rng_next_u32(&r), qn_rng_u32(9, 11, 12));

    /* a different seed changes the numbers */
    assert_true(qn_rng_u32(9, 11, 0) != qn_rng_u32(10, 11, 0));
}

static void test_next_below(void **state) {
    qn_rng r;
    qn_rng_init(&r, 5, 0);
    size_t counts[7] = {0};
    for (int i = 0; i < 70000; i++) {
        uint32_t k = qn_rng_next_below(&r, 7);
        assert_true(k < 7);
        counts[k]++;
    }
    for (int k = 0; k < 7; k++)
        assert_true(counts[k] > 9500 && counts[k] < 10500);
    assert_int_equal(qn_rng_next_below(&r, 1), 0);
    assert_int_equal(qn_rng_next_below(&r, 0), 0);
    /* a bound near 2^32 exercises the rejection path without bias to low values */
    uint32_t big = 0xC0000000u;
    size_t low_half = 0;
    for (int i = 0; i < 20000; i++)
        low_half += qn_rng_next_below(&r, big) < big / 2;
    assert_true(low_half > 9500 && low_half < 10500);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_answers),   cmocka_unit_test(test_layout),
        cmocka_unit_test(test_uniform_moments), cmocka_unit_test(test_normal_moments),
        cmocka_unit_test(test_independence),    cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_next_below),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
