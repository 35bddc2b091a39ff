/* harness_host.h — the host-side logic of the CUDA op harness, kept apart
 * from the device calls so that it is unit-tested without a GPU
 * (tests/unit/test_harness_host.c): argument parsing, the --op filter, the
 * per-case seed and generator, guard bytes, and the check of one downloaded
 * output (guards, NaN/Inf, normalised error). Also the harness's lifetime
 * calls used by main.c. Internal to tests/gpu/ops. */
#ifndef QN_TESTS_GPU_OPS_HARNESS_HOST_H
#define QN_TESTS_GPU_OPS_HARNESS_HOST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tests/gpu/ops/harness.h"

/* Guard bytes either side of every qn_h_out buffer. 256 keeps the payload
 * 256-byte aligned, like every other arena block. */
#define QN_H_GUARD 256

typedef struct qn_h_opts {
    int list;              /* --list: print the cases, run nothing */
    int perf;              /* --perf: timing line per case */
    int help;              /* --help */
    const char *op_prefix; /* --op PREFIX, NULL = all */
    uint64_t seed;         /* --seed N (default 1) */
} qn_h_opts;

/* Parses the command line; QN_ERR_INVALID naming the bad argument. */
qn_status qn_h_parse_args(int argc, char **argv, qn_h_opts *o);
void qn_h_usage(FILE *f, const char *prog);

/* 1 when op starts with prefix (NULL or "" match everything). */
int qn_h_op_matches(const char *prefix, const char *op);

/* The generator of a case: seeded from (seed, op, shape) only, so a case
 * sees the same inputs whether it runs alone (--op) or in the full sweep. */
uint64_t qn_h_case_seed(uint64_t seed, const char *op, const char *shape);
/* Uniform in [0, 1) (24 bits), advancing *state. */
float qn_h_rng_u01(uint64_t *state);

/* Guard pattern: byte i of a guard region (position-dependent, so shifted
 * copies are caught too). */
void qn_h_guard_fill(uint8_t *p, size_t n);
/* Index of the first byte that differs from the pattern, or -1. */
long qn_h_guard_check(const uint8_t *p, size_t n);

/* sqrt(sum (ref-got)^2 / max(sum ref^2, 1e-30)) over the elements where
 * both are finite, in double. */
double qn_h_nerr(const float *ref, const float *got, size_t n);

/* Converts n elements of dt at src to floats (f32, bf16, f16, fp8; I32 as
 * integers converted to float). QN_ERR_UNSUPPORTED for others. */
qn_status qn_h_to_f32(qn_dtype dt, const void *src, float *dst, size_t n);

/* The whole check of one output, on the bytes as downloaded: `buf` holds
 * guard bytes, then n elements of dt, then guard bytes (guard = 0: none).
 * Checks in order: the guards; NaN/Inf where the reference is finite (and
 * a non-finite reference must be matched in kind); the normalised error
 * against tol. Returns 1 when it passes; otherwise 0 with the reason in
 * msg. *err gets the normalised error (or INFINITY when an earlier check
 * failed). scratch: n floats. */
int qn_h_check_host(qn_dtype dt, const float *ref, const void *buf, size_t n, size_t guard,
                    double tol, double *err, float *scratch, char *msg, size_t cap);

/* Harness lifetime (main.c). qn_h_create sets up the CUDA context when a
 * device is present (arena: $QN_OPS_ARENA_MB, default 16384 MiB) and
 * returns NULL after printing why when a present device cannot be used.
 * qn_h_finish ends the open case, prints the summary line and returns the
 * exit status: 0 all passed (or --list), 1 a failure or nothing matched,
 * 77 no CUDA device (every case skipped). */
qn_harness *qn_h_create(const qn_h_opts *o);
int qn_h_finish(qn_harness *h);

#endif /* QN_TESTS_GPU_OPS_HARNESS_HOST_H */
