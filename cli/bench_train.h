/* bench_train.h — `quench bench train` (cli/bench_train.c), a row of
 * cmd_bench.c's k_benches. */
#ifndef QN_CLI_BENCH_TRAIN_H
#define QN_CLI_BENCH_TRAIN_H

#include <stdio.h>

/* argv[0] is "train"; returns the exit status. */
int qn_bench_train(int argc, char **argv);
void qn_help_bench_train(FILE *out);

#endif
