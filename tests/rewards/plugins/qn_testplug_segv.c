/* qn_testplug_segv.c — test plugin: segfaults when the label is "crash",
 * otherwise scores 1. Used to check that a crashing reward fails only its
 * sample and that the pool replaces the dead worker. It also reports what
 * it received, to check that samples cross the process border intact:
 * label "ids" scores sum(response_ids) + 1000 * n_prompt_ids +
 * 100000 * prompt_ids[0] + 1e7 if the metadata is {"k":"v"}; a label equal
 * to a response longer than 1000 bytes scores the response length. */
#include <quench/reward.h>
#include <string.h>

static int score(void *st, const qn_reward_sample *s, qn_reward_score *out) {
    if (strcmp(s->label, "crash") == 0) {
        volatile int *p = NULL;
        *p = 42;
    }
    out->value = 1.0;
    if (strcmp(s->label, "ids") == 0) {
        double v = 0;
        for (size_t i = 0; i < s->n_response_ids; i++)
            v += s->response_ids[i];
        v += 1000.0 * (double)s->n_prompt_ids;
        if (s->n_prompt_ids) v += 100000.0 * s->prompt_ids[0];
        if (strcmp(s->metadata_json, "{\"k\":\"v\"}") == 0) v += 1e7;
        out->value = v;
    } else if (s->response_len > 1000 && strlen(s->response) == s->response_len &&
               strcmp(s->label, s->response) == 0) {
        out->value = (double)s->response_len;
    }
    return QN_REWARD_OK;
}

const qn_reward_api_v1 qn_reward_plugin_v1 = {
    .abi_version = 1, .struct_size = sizeof(qn_reward_api_v1), .name = "segv", .score = score};
