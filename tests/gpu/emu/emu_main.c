/* emu_main.c — test_ops_emulated: runs the elementwise family of the op
 * harness against mock_cuda.c (host memory, CPU ops) and requires every case
 * to pass. This tests the harness and the family's case bodies without a GPU
 * (see mock_cuda.c for what it cannot test). Arguments as qn_test_ops. */
#include <stdio.h>
#include <stdlib.h>

#include "tests/gpu/ops/families.h"
#include "tests/gpu/ops/harness_host.h"

int main(int argc, char **argv) {
    qn_h_opts o;
    if (qn_h_parse_args(argc, argv, &o) != QN_OK) {
        fprintf(stderr, "test_ops_emulated: %s\n", qn_last_error());
        return 2;
    }
    qn_harness *h = qn_h_create(&o);
    if (!h) return 1;
    qn_ops_elementwise(h);
    return qn_h_finish(h);
}
