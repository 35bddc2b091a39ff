/* test_dtype.c — dtype names/sizes/parsing and the fp32 <-> bf16/f16/e4m3fn
 * conversions.
 *
 * Three independent checks of the conversions:
 *  - first principles, exhaustive: every bit pattern decodes to the value
 *    that the format's definition gives (computed with ldexp), and encodes
 *    back to itself; every midpoint between two neighbouring codes rounds to
 *    the even one and one fp32 ulp either side rounds to the nearer one;
 *  - a brute-force nearest-value search over all 254 finite e4m3 values;
 *  - tests/data/dtype_vectors.txt, written by ml_dtypes/numpy
 *    (tests/data/gen_dtype_vectors.py), compared bit for bit. */
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
#include "tests/test_util.h"

static float bits_f32(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* A narrow float format under test, described by its parameters so that the
 * checks below derive every expected value from the definition. */
typedef struct fmt {
    const char *name;
    int bits;  /* total width */
    int mbits; /* mantissa bits */
    int bias;
    int has_inf; /* IEEE-style all-ones exponent (bf16, f16) vs e4m3fn */
    uint32_t (*enc)(float);
    float (*dec)(uint32_t);
} fmt;

static uint32_t enc_bf16(float x) {
    return qn_f32_to_bf16(x);
}
static float dec_bf16(uint32_t h) {
    return qn_bf16_to_f32((uint16_t)h);
}
static uint32_t enc_f16(float x) {
    return qn_f32_to_f16(x);
}
static float dec_f16(uint32_t h) {
    return qn_f16_to_f32((uint16_t)h);
}
static uint32_t enc_fp8(float x) {
    return qn_f32_to_fp8e4m3(x);
}
static float dec_fp8(uint32_t b) {
    return qn_fp8e4m3_to_f32((uint8_t)b);
}

static const fmt k_bf16 = {"bf16", 16, 7, 127, 1, enc_bf16, dec_bf16};
static const fmt k_f16 = {"f16", 16, 10, 15, 1, enc_f16, dec_f16};
static const fmt k_fp8 = {"e4m3fn", 8, 3, 7, 0, enc_fp8, dec_fp8};

static uint32_t sign_bit(const fmt *f) {
    return 1u << (f->bits - 1);
}

static int code_is_nan(const fmt *f, uint32_t c) {
    uint32_t mag = c & (sign_bit(f) - 1);
    uint32_t emask = ((1u << (f->bits - 1 - f->mbits)) - 1) << f->mbits;
    if (f->has_inf) return (mag & emask) == emask && (mag & ((1u << f->mbits) - 1)) != 0;
    return mag == sign_bit(f) - 1; /* e4m3fn: only S.1111.111 */
}

static int code_is_inf(const fmt *f, uint32_t c) {
    uint32_t mag = c & (sign_bit(f) - 1);
    uint32_t emask = ((1u << (f->bits - 1 - f->mbits)) - 1) << f->mbits;
    return f->has_inf && mag == emask;
}

/* Largest finite magnitude code. */
static uint32_t max_finite(const fmt *f) {
    uint32_t emask = ((1u << (f->bits - 1 - f->mbits)) - 1) << f->mbits;
    return f->has_inf ? emask - 1 : sign_bit(f) - 2;
}

/* The value of a finite code straight from the format definition. */
static double definition_value(const fmt *f, uint32_t c) {
    uint32_t mag = c & (sign_bit(f) - 1);
    int e = (int)(mag >> f->mbits);
    double m = (double)(mag & ((1u << f->mbits) - 1));
    double v = e == 0 ? ldexp(m, 1 - f->bias - f->mbits)
                      : ldexp(m + ldexp(1.0, f->mbits), e - f->bias - f->mbits);
    return (c & sign_bit(f)) ? -v : v;
}

static void check_decode_encode_all(const fmt *f) {
    uint32_t n = 1u << f->bits;
    for (uint32_t c = 0; c < n; c++) {
        float x = f->dec(c);
        if (code_is_nan(f, c)) {
            if (!isnan(x)) fail_msg("%s 0x%x: decodes to %g, want NaN", f->name, c, x);
            assert_int_equal(signbit(x) != 0, (c & sign_bit(f)) != 0);
            uint32_t back = f->enc(x);
            if (!code_is_nan(f, back))
                fail_msg("%s 0x%x: NaN re-encodes to non-NaN 0x%x", f->name, c, back);
            assert_int_equal(back & sign_bit(f), c & sign_bit(f));
            continue;
        }
        if (code_is_inf(f, c)) {
            if (!isinf(x)) fail_msg("%s 0x%x: decodes to %g, want inf", f->name, c, x);
            assert_int_equal(signbit(x) != 0, (c & sign_bit(f)) != 0);
        } else {
            if (!isfinite(x)) fail_msg("%s 0x%x: decodes to non-finite %g", f->name, c, x);
            double want = definition_value(f, c);
            if ((double)x != want || !signbit(x) != !signbit(want))
                fail_msg("%s 0x%x: decodes to %.9g, definition says %.9g", f->name, c, x, want);
        }
        uint32_t back = f->enc(x);
        if (back != c) fail_msg("%s 0x%x -> %.9g -> 0x%x", f->name, c, x, back);
    }
}

/* Between every two neighbouring finite codes of the same sign: the exact
 * midpoint goes to the even code, the fp32 values just inside go to the
 * nearer code. Neighbouring codes differ by one in magnitude. */
static void check_midpoints(const fmt *f) {
    for (uint32_t s = 0; s <= sign_bit(f); s += sign_bit(f)) {
        for (uint32_t c = 0; c < max_finite(f); c++) {
            double lo = definition_value(f, s | c), hi = definition_value(f, s | (c + 1));
            double mid = (lo + hi) / 2;
            float midf = (float)mid;
            assert_true((double)midf == mid); /* narrow midpoints fit in fp32 */
            uint32_t even = (c & 1) ? c + 1 : c;
            uint32_t got = f->enc(midf);
            if (got != (s | even))
                fail_msg("%s: midpoint %.9g of 0x%x/0x%x -> 0x%x, want even 0x%x", f->name, mid,
                         s | c, s | (c + 1), got, s | even);
            float toward_lo = nextafterf(midf, (float)lo);
            float toward_hi = nextafterf(midf, (float)hi);
            got = f->enc(toward_lo);
            if (got != (s | c))
                fail_msg("%s: %.9g (just inside 0x%x) -> 0x%x", f->name, toward_lo, s | c, got);
            got = f->enc(toward_hi);
            if (got != (s | (c + 1)))
                fail_msg("%s: %.9g (just inside 0x%x) -> 0x%x", f->name, toward_hi, s | (c + 1),
                         got);
        }
    }
}

static void test_names_sizes_parse(void **state) {
    static const char *names[] = {"F64", "F32", "F16", "BF16", "F8_E4M3", "I64", "I32", "U8"};
    static const size_t sizes[] = {8, 4, 2, 2, 1, 8, 4, 1};
    for (int i = 0; i < QN_DTYPE_COUNT; i++) {
        assert_string_equal(qn_dtype_name((qn_dtype)i), names[i]);
        assert_int_equal(qn_dtype_size((qn_dtype)i), sizes[i]);
        qn_dtype t = QN_DTYPE_U8;
        assert_int_equal(qn_dtype_parse(names[i], &t), QN_OK);
        assert_int_equal(t, i);
        assert_int_equal(qn_dtype_is_float((qn_dtype)i), i <= QN_DTYPE_F8_E4M3);
    }
    assert_int_equal(qn_dtype_size((qn_dtype)99), 0);
    assert_string_equal(qn_dtype_name((qn_dtype)-1), "?");
    qn_dtype t = QN_DTYPE_I32;
    assert_int_equal(qn_dtype_parse("bf16", &t), QN_ERR_FORMAT);
    assert_non_null(strstr(qn_last_error(), "unknown dtype 'bf16'"));
    assert_int_equal(qn_dtype_parse("F8_E5M2", &t), QN_ERR_FORMAT);
    assert_int_equal(qn_dtype_parse("", &t), QN_ERR_FORMAT);
    assert_int_equal(t, QN_DTYPE_I32);
}

static void test_bf16_exhaustive(void **state) {
    check_decode_encode_all(&k_bf16);
    check_midpoints(&k_bf16);
}

static void test_f16_exhaustive(void **state) {
    check_decode_encode_all(&k_f16);
    check_midpoints(&k_f16);
}

static void test_fp8_exhaustive(void **state) {
    check_decode_encode_all(&k_fp8);
    check_midpoints(&k_fp8);
    assert_true(qn_fp8e4m3_to_f32(0x7E) == QN_FP8_E4M3_MAX);
    assert_true(qn_fp8e4m3_to_f32(0x01) == ldexpf(1.0f, -9));
}

static void test_overflow(void **state) {
    /* f16: the midpoint between 65504 and the would-be 65536 ties to the
     * even code, which is the infinity pattern. */
    assert_int_equal(qn_f32_to_f16(65519.996f), 0x7BFF);
    assert_int_equal(qn_f32_to_f16(65520.0f), 0x7C00);
    assert_int_equal(qn_f32_to_f16(-1e30f), 0xFC00);
    assert_int_equal(qn_f32_to_f16(INFINITY), 0x7C00);
    assert_int_equal(qn_f32_to_bf16(FLT_MAX), 0x7F80);
    assert_int_equal(qn_f32_to_bf16(-INFINITY), 0xFF80);
    /* e4m3fn saturates: nothing finite or infinite becomes NaN. */
    const float big[] = {448.0f, 449.0f, 463.99f, 464.0f, 480.0f, 1e6f, 3.4e38f, INFINITY};
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        assert_int_equal(qn_f32_to_fp8e4m3(big[i]), 0x7E);
        assert_int_equal(qn_f32_to_fp8e4m3(-big[i]), 0xFE);
    }
    assert_int_equal(qn_f32_to_fp8e4m3(447.0f), 0x7E);
    assert_int_equal(qn_f32_to_fp8e4m3(420.0f), 0x7D); /* below the 432 midpoint */
}

static void test_nan(void **state) {
    const uint32_t nans[] = {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0xFF812345u, 0x7FFFFFFFu};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        float x = bits_f32(nans[i]);
        int neg = (nans[i] >> 31) != 0;
        uint16_t b = qn_f32_to_bf16(x);
        assert_int_equal(b, neg ? 0xFFC0 : 0x7FC0);
        uint16_t h = qn_f32_to_f16(x);
        assert_true(code_is_nan(&k_f16, h));
        assert_true(h & 0x0200); /* quiet */
        assert_int_equal((h >> 15) != 0, neg);
        assert_int_equal(qn_f32_to_fp8e4m3(x), neg ? 0xFF : 0x7F);
    }
    assert_true(isnan(qn_fp8e4m3_to_f32(0x7F)));
    assert_true(isnan(qn_fp8e4m3_to_f32(0xFF)));
}

static void test_subnormals(void **state) {
    /* Smallest subnormals and the values that round to them, from the
     * definition: 2^(1-bias-mbits). */
    const fmt *fs[] = {&k_bf16, &k_f16, &k_fp8};
    for (size_t i = 0; i < 3; i++) {
        const fmt *f = fs[i];
        float tiny = ldexpf(1.0f, 1 - f->bias - f->mbits);
        assert_int_equal(f->enc(tiny), 1);
        assert_int_equal(f->enc(-tiny), sign_bit(f) | 1);
        assert_int_equal(f->enc(tiny / 2), 0);                   /* tie -> even 0 */
        assert_int_equal(f->enc(nextafterf(tiny / 2, 1.0f)), 1); /* just above */
        assert_int_equal(f->enc(-tiny / 2), sign_bit(f));        /* -0 */
        assert_int_equal(f->enc(tiny * 1.5f), 2);                /* tie 1|2 -> 2 */
        assert_int_equal(f->enc(tiny * 2.5f), 2);                /* tie 2|3 -> 2 */
        assert_int_equal(f->enc(ldexpf(1.0f, -140)), 0);
        assert_int_equal(f->enc(bits_f32(0x00000001u)), 0); /* fp32 denormal */
        /* largest subnormal + half ulp rounds up into the smallest normal */
        uint32_t maxsub = (1u << f->mbits) - 1;
        float up = (float)definition_value(f, maxsub) + tiny / 2;
        assert_int_equal(f->enc(up), 1u << f->mbits);
        assert_true(f->dec(maxsub) == (float)definition_value(f, maxsub));
    }
}

/* The nearest finite e4m3fn value by exhaustive search, ties to the even
 * code, saturating beyond 448: the definition, with no bit tricks. */
static uint8_t fp8_brute(float x) {
    if (isnan(x)) return signbit(x) ? 0xFF : 0x7F;
    double ax = fabs((double)x);
    uint8_t s = signbit(x) ? 0x80 : 0;
    if (ax >= 448.0) return s | 0x7E;
    uint32_t best = 0;
    double best_d = INFINITY;
    for (uint32_t c = 0; c <= 0x7E; c++) {
        double d = fabs(definition_value(&k_fp8, c) - ax);
        if (d < best_d || (d == best_d && (c & 1) == 0)) {
            best = c;
            best_d = d;
        }
    }
    return (uint8_t)(s | best);
}

static void test_fp8_brute_force(void **state) {
    /* A stride through all fp32 bit patterns plus dense coverage of the
     * e4m3 range. */
    for (uint64_t u = 0; u < (1ull << 32); u += 40961) {
        float x = bits_f32((uint32_t)u);
        uint8_t want = fp8_brute(x), got = qn_f32_to_fp8e4m3(x);
        if (want != got)
            fail_msg("e4m3 %.9g (0x%08x): got 0x%02x, want 0x%02x", x, (uint32_t)u, got, want);
    }
    for (float x = -500.0f; x <= 500.0f; x += 0.0625f) {
        assert_int_equal(qn_f32_to_fp8e4m3(x), fp8_brute(x));
    }
    for (float x = ldexpf(1.0f, -12); x < 0.05f; x *= 1.0009765625f) {
        assert_int_equal(qn_f32_to_fp8e4m3(x), fp8_brute(x));
    }
}

static void test_oracle_vectors(void **state) {
    const char *path = QN_SOURCE_DIR "/tests/data/dtype_vectors.txt";
    FILE *fp = fopen(path, "r");
    if (!fp) fail_msg("cannot open %s", path);
    char line[256];
    int n = 0, nan_inputs = 0, saturated = 0;
    while (fgets(line, sizeof line, fp)) {
        if (line[0] == '#') continue;
        unsigned u, b, h, q;
        if (sscanf(line, "%x %x %x %x", &u, &b, &h, &q) != 4) fail_msg("bad line: %s", line);
        float x = bits_f32(u);
        n++;
        if (isnan(x)) {
            nan_inputs++;
            assert_true(code_is_nan(&k_bf16, qn_f32_to_bf16(x)) && code_is_nan(&k_bf16, b));
            assert_true(code_is_nan(&k_f16, qn_f32_to_f16(x)) && code_is_nan(&k_f16, h));
            assert_true(code_is_nan(&k_fp8, qn_f32_to_fp8e4m3(x)) && code_is_nan(&k_fp8, q));
            continue;
        }
        if (qn_f32_to_bf16(x) != b)
            fail_msg("bf16(%.9g = 0x%08x): got 0x%04x, ml_dtypes 0x%04x", x, u, qn_f32_to_bf16(x),
                     b);
        if (qn_f32_to_f16(x) != h)
            fail_msg("f16(%.9g = 0x%08x): got 0x%04x, numpy 0x%04x", x, u, qn_f32_to_f16(x), h);
        unsigned want_q = q;
        if (code_is_nan(&k_fp8, q)) {
            /* ml_dtypes makes overflow NaN; quench saturates (dtype.h). */
            assert_true(fabsf(x) > 448.0f);
            want_q = (q & 0x80) | 0x7E;
            saturated++;
        }
        if (qn_f32_to_fp8e4m3(x) != want_q)
            fail_msg("e4m3(%.9g = 0x%08x): got 0x%02x, ml_dtypes 0x%02x", x, u,
                     qn_f32_to_fp8e4m3(x), q);
    }
    fclose(fp);
    assert_true(n > 3000);
    assert_true(nan_inputs >= 3);
    assert_true(saturated > 10);
}

static void test_bulk(void **state) {
    enum { N = 1001 };
    float src[N], back[N];
    for (int i = 0; i < N; i++)
        src[i] = (float)(i - 500) * 0.37f + (i % 7 ? 0.0f : 1e-6f);
    src[3] = NAN;
    src[4] = INFINITY;
    unsigned char *raw = malloc(N * 8 + 1);
    assert_non_null(raw);
    for (int t = 0; t < QN_DTYPE_COUNT; t++) {
        unsigned char *dst = raw + 1; /* deliberately misaligned */
        qn_status s = qn_dtype_from_f32((qn_dtype)t, src, dst, N);
        if (!qn_dtype_is_float((qn_dtype)t)) {
            assert_int_equal(s, QN_ERR_UNSUPPORTED);
            assert_int_equal(qn_dtype_to_f32((qn_dtype)t, dst, back, N), QN_ERR_UNSUPPORTED);
            assert_non_null(strstr(qn_last_error(), qn_dtype_name((qn_dtype)t)));
            continue;
        }
        assert_int_equal(s, QN_OK);
        assert_int_equal(qn_dtype_to_f32((qn_dtype)t, dst, back, N), QN_OK);
        for (int i = 0; i < N; i++) {
            float want;
            switch (t) {
            case QN_DTYPE_F16:
                want = qn_f16_to_f32(qn_f32_to_f16(src[i]));
                break;
            case QN_DTYPE_BF16:
                want = qn_bf16_to_f32(qn_f32_to_bf16(src[i]));
                break;
            case QN_DTYPE_F8_E4M3:
                want = qn_fp8e4m3_to_f32(qn_f32_to_fp8e4m3(src[i]));
                break;
            default:
                want = src[i];
            }
            if (isnan(want)) {
                assert_true(isnan(back[i]));
            } else if (!(back[i] == want)) {
                fail_msg("%s bulk[%d]: %.9g, want %.9g", qn_dtype_name((qn_dtype)t), i, back[i],
                         want);
            }
        }
        /* the bulk encoder writes the same bytes as the scalar one */
        if (t == QN_DTYPE_BF16) {
            uint16_t h;
            memcpy(&h, dst + 2 * 10, 2);
            assert_int_equal(h, qn_f32_to_bf16(src[10]));
        }
    }
    free(raw);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_sizes_parse), cmocka_unit_test(test_bf16_exhaustive),
        cmocka_unit_test(test_f16_exhaustive),    cmocka_unit_test(test_fp8_exhaustive),
        cmocka_unit_test(test_overflow),          cmocka_unit_test(test_nan),
        cmocka_unit_test(test_subnormals),        cmocka_unit_test(test_fp8_brute_force),
        cmocka_unit_test(test_oracle_vectors),    cmocka_unit_test(test_bulk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
