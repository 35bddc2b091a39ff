/* bench_router.h — `quench bench router` (cli/bench_router.c), a row of
 * cmd_bench.c's k_benches. */
#ifndef QN_CLI_BENCH_ROUTER_H
#define QN_CLI_BENCH_ROUTER_H

#include <stdio.h>

/* argv[0] is "router"; returns the exit status. */
int qn_bench_router(int argc, char **argv);
void qn_help_bench_router(FILE *out);

#endif
