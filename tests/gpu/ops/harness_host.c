/* harness_host.c — the host-side logic of the op harness (harness_host.h):
 * tolerances, argument parsing, per-case seeds, guard bytes and the check of
 * one downloaded output. No CUDA calls here, so tests/unit/test_harness_host.c
 * exercises all of it on a machine without a GPU.
 *
 * Tolerances (normalised error, sqrt(sum d^2 / sum ref^2), i.e. a relative
 * RMS error) per storage dtype and op class:
 *
 *                 f32     bf16    f16     (fp8 class: any dtype)
 *   ELEMENTWISE   1e-6    5e-3    1e-3
 *   NORM          1e-5    1e-2    2e-3
 *   REDUCE        5e-5    2e-2    4e-3
 *   GRAD          1e-4    3e-2    6e-3
 *   FP8           6e-2
 *
 * Why: the reference sees the same dtype-rounded inputs, so in bf16 the
 * error of an elementwise op is the rounding of its output: half an ulp,
 * i.e. 2^-9..2^-8 of the value, uniformly spread, an RMS of about 1.6e-3;
 * 5e-3 leaves a 3x margin and still fails a kernel that drops or misplaces
 * more than ~0.3% of the energy. Norms add a reduction (1e-2); long
 * reductions and backward passes may round intermediate products to bf16
 * (flash-style attention keeps P in bf16), hence 2e-2 and 3e-2. In fp32 the
 * only differences are ulps of expf/sqrtf and the summation order: 1e-6 for
 * one rounding, growing with reduction length (sqrt(K) * 6e-8 = 4e-6 at
 * K = 4096) to 5e-5 and 1e-4. e4m3 keeps 3 mantissa bits (rounding up to
 * 6% per operand), hence 6e-2. A relative RMS threshold can hide a few bad
 * elements in a large bf16 output; the f32 sweep of every op, with its tight
 * threshold, is what catches indexing bugs.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "tests/gpu/ops/harness_host.h"

double qn_h_tol(qn_dtype dt, qn_h_tol_class cls) {
    static const double f32[] = {1e-6, 1e-5, 5e-5, 1e-4, 6e-2};
    static const double bf16[] = {5e-3, 1e-2, 2e-2, 3e-2, 6e-2};
    static const double f16[] = {1e-3, 2e-3, 4e-3, 6e-3, 6e-2};
    int k = (int)cls;
    if (k < 0 || k > (int)QN_H_TOL_FP8) return 0.0; /* unknown class: nothing passes */
    switch (dt) {
    case QN_DTYPE_F32:
    case QN_DTYPE_F64:
        return f32[k];
    case QN_DTYPE_BF16:
        return bf16[k];
    case QN_DTYPE_F16:
        return f16[k];
    case QN_DTYPE_F8_E4M3:
        return 6e-2;
    default:
        return 0.0; /* integers: exact */
    }
}

const char *qn_h_dtname(qn_dtype dt) {
    switch (dt) {
    case QN_DTYPE_F64:
        return "f64";
    case QN_DTYPE_F32:
        return "f32";
    case QN_DTYPE_F16:
        return "f16";
    case QN_DTYPE_BF16:
        return "bf16";
    case QN_DTYPE_F8_E4M3:
        return "fp8";
    case QN_DTYPE_I64:
        return "i64";
    case QN_DTYPE_I32:
        return "i32";
    case QN_DTYPE_U8:
        return "u8";
    }
    return "?";
}

void qn_h_usage(FILE *f, const char *prog) {
    fprintf(f,
            "usage: %s [--list] [--op PREFIX] [--perf] [--seed N]\n"
            "  Runs every CUDA op against its CPU reference (core/ops/cpu) over shape sweeps.\n"
            "  --list        print the cases without running them\n"
            "  --op PREFIX   only cases whose op name starts with PREFIX\n"
            "  --perf        also time each case (CUDA events): us/call, GB/s, TFLOP/s\n"
            "  --seed N      seed of the random inputs (default 1)\n"
            "Exit status: 0 all passed, 1 a failure, 77 no CUDA device (all skipped).\n"
            "Environment: QN_OPS_ARENA_MB device arena size (default 16384).\n",
            prog);
}

qn_status qn_h_parse_args(int argc, char **argv, qn_h_opts *o) {
    *o = (qn_h_opts){.seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--list")) {
            o->list = 1;
        } else if (!strcmp(a, "--perf")) {
            o->perf = 1;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            o->help = 1;
        } else if (!strcmp(a, "--op")) {
            if (i + 1 >= argc)
                return qn_fail(QN_ERR_INVALID, "--op needs a value (an op name prefix)");
            o->op_prefix = argv[++i];
        } else if (!strcmp(a, "--seed")) {
            if (i + 1 >= argc) return qn_fail(QN_ERR_INVALID, "--seed needs a value");
            const char *v = argv[++i];
            char *end = NULL;
            unsigned long long s = strtoull(v, &end, 10);
            if (!*v || *end || *v == '-')
                return qn_fail(QN_ERR_INVALID, "--seed '%s': expected a non-negative integer", v);
            o->seed = (uint64_t)s;
        } else {
            return qn_fail(QN_ERR_INVALID, "unknown argument '%s' (see --help)", a);
        }
    }
    return QN_OK;
}

int qn_h_op_matches(const char *prefix, const char *op) {
    if (!prefix || !*prefix) return 1;
    return strncmp(op, prefix, strlen(prefix)) == 0;
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t qn_h_case_seed(uint64_t seed, const char *op, const char *shape) {
    uint64_t h = 0xCBF29CE484222325ull; /* FNV-1a over op, a separator, shape */
    for (const char *p = op; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001B3ull;
    h = (h ^ 0xFF) * 0x100000001B3ull;
    for (const char *p = shape; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001B3ull;
    uint64_t s = seed ^ h;
    return splitmix(&s);
}

float qn_h_rng_u01(uint64_t *state) {
    return (float)(splitmix(state) >> 40) * (1.0f / 16777216.0f);
}

static uint8_t guard_byte(size_t i) {
    return (uint8_t)(0x5Au + 13u * (unsigned)i);
}

void qn_h_guard_fill(uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        p[i] = guard_byte(i);
}

long qn_h_guard_check(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != guard_byte(i)) return (long)i;
    return -1;
}

double qn_h_nerr(const float *ref, const float *got, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(ref[i]) || !isfinite(got[i])) continue;
        double d = (double)ref[i] - (double)got[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return sqrt(num / (den > 1e-30 ? den : 1e-30));
}

qn_status qn_h_to_f32(qn_dtype dt, const void *src, float *dst, size_t n) {
    if (dt == QN_DTYPE_I32) {
        const int32_t *s = src;
        for (size_t i = 0; i < n; i++) {
            int32_t v;
            memcpy(&v, s + i, sizeof v);
            dst[i] = (float)v;
        }
        return QN_OK;
    }
    return qn_dtype_to_f32(dt, src, dst, n);
}

int qn_h_check_host(qn_dtype dt, const float *ref, const void *buf, size_t n, size_t guard,
                    double tol, double *err, float *scratch, char *msg, size_t cap) {
    const uint8_t *b = buf;
    size_t esz = qn_dtype_size(dt);
    *err = INFINITY;
    if (guard) {
        long bad = qn_h_guard_check(b, guard);
        if (bad >= 0) {
            snprintf(msg, cap,
                     "guard byte %ld of %zu BEFORE the buffer overwritten (write at "
                     "element offset %ld)",
                     bad, guard, (bad - (long)guard) / (long)(esz ? esz : 1));
            return 0;
        }
        bad = qn_h_guard_check(b + guard + n * esz, guard);
        if (bad >= 0) {
            snprintf(msg, cap,
                     "guard byte %ld AFTER the buffer overwritten (write at element "
                     "%zu of %zu)",
                     bad, n + (size_t)bad / (esz ? esz : 1), n);
            return 0;
        }
    }
    if (qn_h_to_f32(dt, b + guard, scratch, n) != QN_OK) {
        snprintf(msg, cap, "cannot compare dtype %s", qn_h_dtname(dt));
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        float r = ref[i], g = scratch[i];
        if (isfinite(r)) {
            if (!isfinite(g)) {
                snprintf(msg, cap, "%s at element %zu of %zu (reference %.9g)",
                         isnan(g) ? "NaN" : "Inf", i, n, (double)r);
                return 0;
            }
        } else if (isnan(r) ? !isnan(g) : g != r) {
            snprintf(msg, cap, "element %zu of %zu: reference %g, got %g", i, n, (double)r,
                     (double)g);
            return 0;
        }
    }
    double e = qn_h_nerr(ref, scratch, n);
    *err = e;
    if (!(e <= tol)) {
        size_t worst = 0;
        double wd = -1.0;
        for (size_t i = 0; i < n; i++) {
            if (!isfinite(ref[i])) continue;
            double d = fabs((double)ref[i] - (double)scratch[i]);
            if (d > wd) wd = d, worst = i;
        }
        snprintf(msg, cap,
                 "normalised error %.3g > tol %.3g (worst element %zu: ref %.9g got %.9g)", e, tol,
                 worst, n ? (double)ref[worst] : 0.0, n ? (double)scratch[worst] : 0.0);
        return 0;
    }
    msg[0] = 0;
    return 1;
}
