/* qn_testplug_versions.c — test plugin exporting a table for an ABI version
 * quench does not know (v99, deliberately broken) beside v1 under a custom
 * base name, with init/free and a group scorer: the loader must take v1.
 * init takes a config "bonus=<x>"; score_group ranks the samples by
 * response length (longest gets 1, others 0) plus the bonus. */
#include <quench/reward.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct state {
    double bonus;
    int magic;
} state;

static int init(const char *config, void **out, char *err, size_t cap) {
    state *s = calloc(1, sizeof *s);
    if (!s) return QN_REWARD_ERROR;
    s->magic = 1234;
    if (strcmp(config, "fail") == 0) {
        snprintf(err, cap, "config asked to fail");
        free(s);
        return QN_REWARD_ERROR;
    }
    if (strncmp(config, "bonus=", 6) == 0) s->bonus = atof(config + 6);
    *out = s;
    return QN_REWARD_OK;
}

static int score(void *st, const qn_reward_sample *smp, qn_reward_score *out) {
    return QN_REWARD_ERROR; /* never called: score_group wins */
}

static int score_group(void *st, const qn_reward_sample *smp, size_t n, qn_reward_score *out) {
    state *s = st;
    if (!s || s->magic != 1234) return QN_REWARD_ERROR;
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (smp[i].response_len > smp[best].response_len) best = i;
    for (size_t i = 0; i < n; i++) {
        out[i].value = (i == best ? 1.0 : 0.0) + s->bonus;
        qn_reward_score_set_named(&out[i], "group_size", (double)n);
    }
    return QN_REWARD_OK;
}

static void release(void *st) {
    free(st);
}

const qn_reward_api_v1 ranker_v1 = {.abi_version = 1,
                                    .struct_size = sizeof(qn_reward_api_v1),
                                    .name = "ranker",
                                    .init = init,
                                    .score = score,
                                    .score_group = score_group,
                                    .free = release};

/* a "future" table: if the loader used it, every call would crash */
const char ranker_v99[16] = "not a v1 table";
