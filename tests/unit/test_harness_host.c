/* test_harness_host.c — the host-side logic of the CUDA op harness
 * (tests/gpu/ops/harness_host.c), which decides pass or fail on a GPU run:
 * tolerances, argument parsing, the --op filter, per-case seeds, guard bytes,
 * and the output check (guards, NaN/Inf, normalised error). Each check is
 * shown both to pass a good output and to fail a broken one, so a GPU run
 * cannot pass by accident. Runs without a GPU. */
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
#include "tests/gpu/ops/harness_host.h"

static void test_tolerances(void **state) {
    const qn_h_tol_class cls[] = {QN_H_TOL_ELEMENTWISE, QN_H_TOL_NORM, QN_H_TOL_REDUCE,
                                  QN_H_TOL_GRAD};
    for (int i = 0; i < 4; i++) {
        double f = qn_h_tol(QN_DTYPE_F32, cls[i]), b = qn_h_tol(QN_DTYPE_BF16, cls[i]);
        assert_true(f > 0 && f <= 1e-4);
        assert_true(b > f);
        /* bf16: at least the RMS of one output rounding (2^-8 / sqrt(3)) ... */
        assert_true(b >= 2.0 * ldexp(1.0, -8) / sqrt(3.0));
        /* ... and tight enough that 1% of garbage elements fail */
        assert_true(b < 0.1);
        if (i) {
            assert_true(f >= qn_h_tol(QN_DTYPE_F32, cls[i - 1]));
            assert_true(b >= qn_h_tol(QN_DTYPE_BF16, cls[i - 1]));
        }
    }
    assert_true(qn_h_tol(QN_DTYPE_F8_E4M3, QN_H_TOL_FP8) > qn_h_tol(QN_DTYPE_BF16, QN_H_TOL_GRAD));
    assert_true(qn_h_tol(QN_DTYPE_I32, QN_H_TOL_ELEMENTWISE) == 0.0);
    assert_true(qn_h_tol(QN_DTYPE_F32, (qn_h_tol_class)99) == 0.0);
    assert_string_equal(qn_h_dtname(QN_DTYPE_BF16), "bf16");
    assert_string_equal(qn_h_dtname(QN_DTYPE_F32), "f32");
}

static void test_parse_args(void **state) {
    qn_h_opts o;
    char *a1[] = {"x", "--list", "--op", "rms", "--perf", "--seed", "42", NULL};
    assert_int_equal(qn_h_parse_args(7, a1, &o), QN_OK);
    assert_true(o.list && o.perf && !o.help);
    assert_string_equal(o.op_prefix, "rms");
    assert_true(o.seed == 42);
    char *a2[] = {"x", NULL};
    assert_int_equal(qn_h_parse_args(1, a2, &o), QN_OK);
    assert_true(!o.list && !o.perf && o.op_prefix == NULL && o.seed == 1);
    char *a3[] = {"x", "--seed", "-3", NULL};
    assert_int_equal(qn_h_parse_args(3, a3, &o), QN_ERR_INVALID);
    assert_non_null(strstr(qn_last_error(), "--seed"));
    char *a4[] = {"x", "--seed", "12x", NULL};
    assert_int_equal(qn_h_parse_args(3, a4, &o), QN_ERR_INVALID);
    char *a5[] = {"x", "--op", NULL};
    assert_int_equal(qn_h_parse_args(2, a5, &o), QN_ERR_INVALID);
    char *a6[] = {"x", "--frobnicate", NULL};
    assert_int_equal(qn_h_parse_args(2, a6, &o), QN_ERR_INVALID);
    assert_non_null(strstr(qn_last_error(), "--frobnicate"));
    char *a7[] = {"x", "--help", NULL};
    assert_int_equal(qn_h_parse_args(2, a7, &o), QN_OK);
    assert_true(o.help);
}

static void test_filter_and_seed(void **state) {
    assert_true(qn_h_op_matches(NULL, "rmsnorm_fwd"));
    assert_true(qn_h_op_matches("", "rmsnorm_fwd"));
    assert_true(qn_h_op_matches("rmsnorm", "rmsnorm_bwd"));
    assert_true(qn_h_op_matches("rmsnorm_fwd", "rmsnorm_fwd"));
    assert_false(qn_h_op_matches("rmsnorm_fwdx", "rmsnorm_fwd"));
    assert_false(qn_h_op_matches("rope", "rmsnorm_fwd"));

    uint64_t s = qn_h_case_seed(1, "rope_fwd", "T=1");
    assert_true(s == qn_h_case_seed(1, "rope_fwd", "T=1"));
    assert_true(s != qn_h_case_seed(2, "rope_fwd", "T=1"));
    assert_true(s != qn_h_case_seed(1, "rope_bwd", "T=1"));
    assert_true(s != qn_h_case_seed(1, "rope_fwd", "T=2"));
    /* the separator: ("ab","c") and ("a","bc") differ */
    assert_true(qn_h_case_seed(1, "ab", "c") != qn_h_case_seed(1, "a", "bc"));

    uint64_t st = s;
    double sum = 0;
    for (int i = 0; i < 10000; i++) {
        float u = qn_h_rng_u01(&st);
        assert_true(u >= 0.0f && u < 1.0f);
        sum += u;
    }
    assert_true(fabs(sum / 10000 - 0.5) < 0.02);
}

static void test_guards(void **state) {
    uint8_t g[QN_H_GUARD];
    qn_h_guard_fill(g, sizeof g);
    assert_int_equal(qn_h_guard_check(g, sizeof g), -1);
    /* not a constant byte: a shifted copy of the pattern is caught too */
    assert_true(g[0] != g[1]);
    for (size_t i = 0; i < sizeof g; i += 37) {
        g[i] ^= 0x01;
        assert_int_equal(qn_h_guard_check(g, sizeof g), (long)i);
        g[i] ^= 0x01;
    }
    assert_int_equal(qn_h_guard_check(g, sizeof g), -1);
}

/* A downloaded image: guard | n elements of dt from `vals` | guard. */
static uint8_t *image(qn_dtype dt, const float *vals, size_t n) {
    size_t esz = qn_dtype_size(dt);
    uint8_t *b = malloc(n * esz + 2 * QN_H_GUARD);
    assert_non_null(b);
    qn_h_guard_fill(b, QN_H_GUARD);
    qn_h_guard_fill(b + QN_H_GUARD + n * esz, QN_H_GUARD);
    assert_int_equal(qn_dtype_from_f32(dt, vals, b + QN_H_GUARD, n), QN_OK);
    return b;
}

static int check(qn_dtype dt, const float *ref, const uint8_t *img, size_t n, double tol,
                 char *msg) {
    float scratch[256];
    double err;
    assert_true(n <= 256);
    return qn_h_check_host(dt, ref, img, n, QN_H_GUARD, tol, &err, scratch, msg, 400);
}

static void test_check_output(void **state) {
    enum { N = 200 };
    float ref[N], got[N];
    char msg[400];
    for (int i = 0; i < N; i++)
        ref[i] = sinf((float)i * 0.37f) * 3.0f + 0.1f;

    /* f32: exact passes even at tolerance 0 */
    uint8_t *img = image(QN_DTYPE_F32, ref, N);
    assert_true(check(QN_DTYPE_F32, ref, img, N, 0.0, msg));
    /* one ulp off: fails at 0, passes at the f32 elementwise tolerance */
    memcpy(got, ref, sizeof got);
    got[17] = nextafterf(got[17], INFINITY);
    free(img);
    img = image(QN_DTYPE_F32, got, N);
    assert_false(check(QN_DTYPE_F32, ref, img, N, 0.0, msg));
    assert_non_null(strstr(msg, "normalised error"));
    assert_true(
        check(QN_DTYPE_F32, ref, img, N, qn_h_tol(QN_DTYPE_F32, QN_H_TOL_ELEMENTWISE), msg));

    /* an element wrong by 30%: fails the f32 threshold and names the element */
    got[17] = ref[17] * 1.3f;
    free(img);
    img = image(QN_DTYPE_F32, got, N);
    assert_false(check(QN_DTYPE_F32, ref, img, N, qn_h_tol(QN_DTYPE_F32, QN_H_TOL_GRAD), msg));
    assert_non_null(strstr(msg, "element 17"));

    /* bf16: the output rounding of every element passes the bf16 class ... */
    free(img);
    img = image(QN_DTYPE_BF16, ref, N);
    assert_true(
        check(QN_DTYPE_BF16, ref, img, N, qn_h_tol(QN_DTYPE_BF16, QN_H_TOL_ELEMENTWISE), msg));
    /* ... but not the f32 one, and 5% garbage elements fail it */
    assert_false(check(QN_DTYPE_BF16, ref, img, N, qn_h_tol(QN_DTYPE_F32, QN_H_TOL_GRAD), msg));
    memcpy(got, ref, sizeof got);
    for (int i = 0; i < N; i += 20)
        got[i] = -got[i];
    free(img);
    img = image(QN_DTYPE_BF16, got, N);
    assert_false(check(QN_DTYPE_BF16, ref, img, N, qn_h_tol(QN_DTYPE_BF16, QN_H_TOL_GRAD), msg));

    /* a flipped guard byte before, then after the payload */
    free(img);
    img = image(QN_DTYPE_F32, ref, N);
    img[QN_H_GUARD - 3] ^= 0x40;
    assert_false(check(QN_DTYPE_F32, ref, img, N, 1.0, msg));
    assert_non_null(strstr(msg, "BEFORE"));
    img[QN_H_GUARD - 3] ^= 0x40;
    img[QN_H_GUARD + N * 4 + 5] ^= 0x01;
    assert_false(check(QN_DTYPE_F32, ref, img, N, 1.0, msg));
    assert_non_null(strstr(msg, "AFTER"));
    img[QN_H_GUARD + N * 4 + 5] ^= 0x01;
    assert_true(check(QN_DTYPE_F32, ref, img, N, 0.0, msg));

    /* NaN and Inf in the result fail whatever the tolerance, before the error */
    memcpy(got, ref, sizeof got);
    got[123] = NAN;
    free(img);
    img = image(QN_DTYPE_F32, got, N);
    assert_false(check(QN_DTYPE_F32, ref, img, N, 1e30, msg));
    assert_non_null(strstr(msg, "NaN at element 123"));
    got[123] = -INFINITY;
    free(img);
    img = image(QN_DTYPE_BF16, got, N);
    assert_false(check(QN_DTYPE_BF16, ref, img, N, 1e30, msg));
    assert_non_null(strstr(msg, "Inf at element 123"));

    /* an element never written keeps the 0xFF poison of qn_h_out: NaN */
    free(img);
    img = image(QN_DTYPE_BF16, ref, N);
    memset(img + QN_H_GUARD + 2 * 50, 0xFF, 2);
    assert_false(check(QN_DTYPE_BF16, ref, img, N, 1e30, msg));
    assert_non_null(strstr(msg, "element 50"));

    /* a NaN reference must be matched by NaN (columns that must stay unwritten) */
    float ref2[N];
    memcpy(ref2, ref, sizeof ref2);
    ref2[9] = NAN;
    memcpy(got, ref2, sizeof got);
    free(img);
    img = image(QN_DTYPE_F32, got, N);
    assert_true(check(QN_DTYPE_F32, ref2, img, N, 0.0, msg));
    got[9] = 1.0f;
    free(img);
    img = image(QN_DTYPE_F32, got, N);
    assert_false(check(QN_DTYPE_F32, ref2, img, N, 1e30, msg));

    /* an all-zero reference passes only an all-zero result */
    float zero[N] = {0};
    free(img);
    img = image(QN_DTYPE_F32, zero, N);
    assert_true(check(QN_DTYPE_F32, zero, img, N, 0.0, msg));
    zero[3] = 1e-6f;
    free(img);
    img = image(QN_DTYPE_F32, zero, N);
    zero[3] = 0;
    assert_false(check(QN_DTYPE_F32, zero, img, N, 1e-4, msg));
    free(img);
}

static void test_nerr(void **state) {
    const float ref[2] = {3.0f, 4.0f}, got[2] = {3.0f, 4.5f};
    assert_true(fabs(qn_h_nerr(ref, got, 2) - sqrt(0.25 / 25.0)) < 1e-12);
    assert_true(qn_h_nerr(ref, ref, 2) == 0.0);
    /* scale-free */
    const float ref10[2] = {30.0f, 40.0f}, got10[2] = {30.0f, 45.0f};
    assert_true(fabs(qn_h_nerr(ref10, got10, 2) - qn_h_nerr(ref, got, 2)) < 1e-12);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tolerances),      cmocka_unit_test(test_parse_args),
        cmocka_unit_test(test_filter_and_seed), cmocka_unit_test(test_guards),
        cmocka_unit_test(test_check_output),    cmocka_unit_test(test_nerr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
