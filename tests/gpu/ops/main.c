/* main.c — qn_test_ops: runs every op family of the CUDA op harness (see
 * harness.h) and exits 0 (all passed), 1 (a failure) or 77 (no CUDA
 * device: every case printed as SKIPPED). Usage: qn_test_ops --help. */
#include <stdio.h>

#include "tests/gpu/ops/families.h"
#include "tests/gpu/ops/harness_host.h"

/* One line per family (ops_<family>.c); keep the order: cheap ones first. */
static const struct {
    const char *name;
    void (*run)(qn_harness *h);
} k_families[] = {
    {"elementwise", qn_ops_elementwise},
    {"gemm", qn_ops_gemm},
    {"attention", qn_ops_attention},
    {"logprob", qn_ops_logprob},
    {"moe", qn_ops_moe},
};

int main(int argc, char **argv) {
    qn_h_opts o;
    if (qn_h_parse_args(argc, argv, &o) != QN_OK) {
        fprintf(stderr, "qn_test_ops: %s\n", qn_last_error());
        qn_h_usage(stderr, argv[0]);
        return 2;
    }
    if (o.help) {
        qn_h_usage(stdout, argv[0]);
        return 0;
    }
    qn_harness *h = qn_h_create(&o);
    if (!h) return 1;
    for (size_t i = 0; i < sizeof k_families / sizeof k_families[0]; i++) k_families[i].run(h);
    return qn_h_finish(h);
}
