/* bench_gemm.h — `quench bench gemm` (cli/bench_gemm.c), a row of
 * cmd_bench.c's k_benches. */
#ifndef QN_CLI_BENCH_GEMM_H
#define QN_CLI_BENCH_GEMM_H

#include <stdio.h>

/* argv[0] is "gemm"; returns the exit status. */
int qn_bench_gemm(int argc, char **argv);
void qn_help_bench_gemm(FILE *out);

#endif
