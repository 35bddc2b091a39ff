/* families.h — the op families of the CUDA op harness, one function per
 * tests/gpu/ops/ops_<family>.c, each listed once in main.c's k_families. */
#ifndef QN_TESTS_GPU_OPS_FAMILIES_H
#define QN_TESTS_GPU_OPS_FAMILIES_H

#include "tests/gpu/ops/harness.h"

void qn_ops_elementwise(qn_harness *h); /* embedding, rmsnorm, rope, swiglu, adamw, convert */
void qn_ops_gemm(qn_harness *h);
void qn_ops_attention(qn_harness *h);
void qn_ops_logprob(qn_harness *h);
void qn_ops_moe(qn_harness *h);

#endif /* QN_TESTS_GPU_OPS_FAMILIES_H */
