/* qn_testplug_loop.c — test plugin: spins forever when the label is "hang",
 * otherwise scores 1. Checks the per-sample timeout. */
#include <quench/reward.h>
#include <string.h>

static int score(void *st, const qn_reward_sample *s, qn_reward_score *out) {
    if (strcmp(s->label, "hang") == 0) {
        for (volatile unsigned long i = 0;; i++) {
        }
    }
    out->value = 1.0;
    return QN_REWARD_OK;
}

const qn_reward_api_v1 qn_reward_plugin_v1 = {
    .abi_version = 1, .struct_size = sizeof(qn_reward_api_v1), .name = "loop", .score = score};
