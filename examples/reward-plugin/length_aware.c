/* length_aware.c — an example quench reward plugin.
 *
 * Scores a response 1 when it contains the label as a whole word (case
 * sensitive), minus a length penalty of 0.1 per 100 bytes beyond max_len
 * (default 400, set with --rm-config "max_len=N"). Reports the parts as
 * named scores "match" and "length_penalty", so `--reward-key match` uses
 * the bare match. A response marked as truncated (finish_reason "length")
 * scores 0 whatever it says. It shows every entry point of the ABI: init
 * with a config string, score, free. Build: see Makefile / CMakeLists.txt.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <quench/reward.h>

typedef struct cfg {
    long max_len;
} cfg;

static int la_init(const char *config, void **state, char *err, size_t err_cap) {
    cfg *c = malloc(sizeof *c);
    if (!c) return QN_REWARD_ERROR;
    c->max_len = 400;
    if (config[0] != '\0') {
        char *end = NULL;
        if (strncmp(config, "max_len=", 8) != 0 ||
            (c->max_len = strtol(config + 8, &end, 10)) <= 0 || *end != '\0') {
            snprintf(err, err_cap, "length_aware: config must be max_len=<positive int>, got '%s'",
                     config);
            free(c);
            return QN_REWARD_ERROR;
        }
    }
    *state = c;
    return QN_REWARD_OK;
}

static int is_word(char ch) {
    return isalnum((unsigned char)ch) || ch == '_';
}

static int contains_word(const char *text, const char *word) {
    size_t n = strlen(word);
    if (n == 0) return 0;
    for (const char *p = strstr(text, word); p; p = strstr(p + 1, word)) {
        int left_ok = p == text || !is_word(p[-1]);
        int right_ok = !is_word(p[n]);
        if (left_ok && right_ok) return 1;
    }
    return 0;
}

static int la_score(void *state, const qn_reward_sample *s, qn_reward_score *out) {
    const cfg *c = state;
    if (strcmp(s->finish_reason, "length") == 0) {
        out->value = 0.0;
        return QN_REWARD_OK;
    }
    double match = contains_word(s->response, s->label) ? 1.0 : 0.0;
    double over = (double)s->response_len - (double)c->max_len;
    double penalty = over > 0 ? 0.1 * over / 100.0 : 0.0;
    out->value = match - penalty;
    qn_reward_score_set_named(out, "match", match);
    qn_reward_score_set_named(out, "length_penalty", penalty);
    return QN_REWARD_OK;
}

static void la_free(void *state) {
    free(state);
}

/* The table quench looks for: qn_reward_plugin_v1 (ABI version 1). */
const qn_reward_api_v1 qn_reward_plugin_v1 = {
    .abi_version = 1,
    .struct_size = sizeof(qn_reward_api_v1),
    .name = "length_aware",
    .init = la_init,
    .score = la_score,
    .score_group = NULL, /* per-sample only */
    .free = la_free,
};
