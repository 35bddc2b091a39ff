/* bench_rollout.h — `quench bench rollout` (cli/bench_rollout.c), a row of
 * cmd_bench.c's k_benches. */
#ifndef QN_CLI_BENCH_ROLLOUT_H
#define QN_CLI_BENCH_ROLLOUT_H

#include <stdio.h>

/* argv[0] is "rollout"; returns the exit status. */
int qn_bench_rollout(int argc, char **argv);
void qn_help_bench_rollout(FILE *out);

#endif
