/* qn_testplug_leak.c — test plugin that leaks memory heavily: every call
 * leaks 24 MiB (touched, so it counts in RSS); label "hog" keeps allocating
 * and touching 16 MiB blocks (up to 4 GiB) with short pauses, as a runaway
 * reward would. */
#include <quench/reward.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MIB = 1 << 20 };

/* the blocks escape here so the compiler cannot drop the allocations */
void *volatile qn_testplug_leak_sink;

static int score(void *st, const qn_reward_sample *s, qn_reward_score *out) {
    if (strcmp(s->label, "hog") == 0) {
        for (int i = 0; i < 256; i++) {
            char *p = malloc(16 * MIB);
            if (!p) break;
            memset(p, 1, 16 * MIB);
            qn_testplug_leak_sink = p;
            struct timespec ts = {0, 5 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    } else {
        char *p = malloc(24 * MIB);
        if (p) memset(p, 1, 24 * MIB);
        qn_testplug_leak_sink = p;
    }
    out->value = 1.0;
    return QN_REWARD_OK;
}

const qn_reward_api_v1 qn_reward_plugin_v1 = {
    .abi_version = 1, .struct_size = sizeof(qn_reward_api_v1), .name = "leak", .score = score};
