/* qn_testplug_nan.c — test plugin: returns NaN for label "nan", +Inf for
 * "inf", an error for "error", otherwise 0.5 with a named score "half". */
#include <math.h>
#include <quench/reward.h>
#include <stdio.h>
#include <string.h>

static int score(void *st, const qn_reward_sample *s, qn_reward_score *out) {
    if (strcmp(s->label, "nan") == 0) {
        out->value = NAN;
    } else if (strcmp(s->label, "inf") == 0) {
        out->value = INFINITY;
    } else if (strcmp(s->label, "error") == 0) {
        snprintf(out->message, sizeof out->message, "label says error");
        return QN_REWARD_ERROR;
    } else {
        out->value = 0.5;
        qn_reward_score_set_named(out, "half", 0.5);
    }
    return QN_REWARD_OK;
}

const qn_reward_api_v1 qn_reward_plugin_v1 = {
    .abi_version = 1, .struct_size = sizeof(qn_reward_api_v1), .name = "nan", .score = score};
