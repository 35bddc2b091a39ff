/* cmd_launch.c — `quench launch`: one command that runs a whole GRPO job.
 * The plan (which process runs where with which flags) is built by
 * cli/launch_plan.c, checked model flags by cli/launch_model.c, and the
 * processes are run and supervised by cli/launch_run.c; launch.h describes
 * the split. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/launch.h"

int qn_cmd_launch(int argc, char **argv) {
    ln_plan plan;
    bool dry_run = false;
    qn_status s = ln_plan_build(argc, argv, &plan, &dry_run);
    if (s != QN_OK) {
        const char *msg = qn_last_error();
        if (strncmp(msg, "launch: ", 8) == 0) msg += 8;
        fprintf(stderr, "quench launch: %s\n", msg);
        return s == QN_ERR_INVALID || s == QN_ERR_RANGE ? QN_EXIT_USAGE : QN_EXIT_FAILURE;
    }
    if (dry_run) {
        ln_plan_print(&plan, stdout);
        ln_plan_free(&plan);
        return QN_EXIT_OK;
    }
    int rc = ln_run(&plan);
    ln_plan_free(&plan);
    return rc;
}
