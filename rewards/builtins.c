/* builtins.c — the built-in rewards (--rm-type), each a qn_reward_api_v1
 * table like any plugin, so isolation and the failure policy treat them the
 * same way.
 *
 *   math        1 if the final answer (\boxed{} or last number) equals the
 *               label after normalisation (rewards/math_grade.c), else 0
 *   deepscaler  the text after the last </think> graded like math, but only
 *               a \boxed{} answer counts; no </think> scores 0
 *   dapo        +1 if the answer on the last "Answer:" line (its \boxed{}
 *               content if any) equals the label, else -1
 *   exact       1 if the response equals the label after trimming
 *               surrounding white space, else 0
 *   f1          token F1 between response and label (lower case,
 *               punctuation and the articles a/an/the removed, split on
 *               white space), as in SQuAD
 *
 * The math rewards also report the named number "has_answer" (1 when an
 * answer could be extracted) for --reward-key and metrics.
 * remote_rm lives in rewards/remote_rm.c. Left out: code execution rewards.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rewards/rewards.h"

enum { ANSWER_CAP = 1024 };

static int math_score(void *st, const qn_reward_sample *s, qn_reward_score *out) {
    char ans[ANSWER_CAP];
    bool have = qn_math_extract_answer(s->response, ans, sizeof ans);
    out->value = have && qn_math_answers_equal(ans, s->label) ? 1.0 : 0.0;
    qn_reward_score_set_named(out, "has_answer", have ? 1.0 : 0.0);
    return QN_REWARD_OK;
}

static int deepscaler_score(void *st, const qn_reward_sample *s, qn_reward_score *out) {
    const char *after = NULL;
    for (const char *p = strstr(s->response, "</think>"); p; p = strstr(p + 1, "</think>"))
        after = p + strlen("</think>");
    char ans[ANSWER_CAP];
    bool have = after && strstr(after, "\\boxed") && qn_math_extract_answer(after, ans, sizeof ans);
    out->value = have && qn_math_answers_equal(ans, s->label) ? 1.0 : 0.0;
    qn_reward_score_set_named(out, "has_answer", have ? 1.0 : 0.0);
    return QN_REWARD_OK;
}

static int dapo_score(void *st, const qn_reward_sample *s, qn_reward_score *out) {
    const char *line = NULL;
    for (const char *p = strstr(s->response, "Answer:"); p; p = strstr(p + 1, "Answer:"))
        line = p + strlen("Answer:");
    char ans[ANSWER_CAP];
    bool have = false;
    if (line) {
        size_t n = strcspn(line, "\n");
        if (n >= ANSWER_CAP) n = ANSWER_CAP - 1;
        char tmp[ANSWER_CAP];
        memcpy(tmp, line, n);
        tmp[n] = '\0';
        if (strstr(tmp, "\\boxed") || strstr(tmp, "\\fbox")) {
            have = qn_math_extract_answer(tmp, ans, sizeof ans);
        } else {
            memcpy(ans, tmp, n + 1);
            have = true;
        }
    }
    out->value = have && qn_math_answers_equal(ans, s->label) ? 1.0 : -1.0;
    qn_reward_score_set_named(out, "has_answer", have ? 1.0 : 0.0);
    return QN_REWARD_OK;
}

static void trimmed(const char *s, size_t *a, size_t *e) {
    size_t n = strlen(s);
    *a = 0;
    *e = n;
    while (*a < *e && isspace((unsigned char)s[*a]))
        (*a)++;
    while (*e > *a && isspace((unsigned char)s[*e - 1]))
        (*e)--;
}

static int exact_score(void *st, const qn_reward_sample *s, qn_reward_score *out) {
    size_t ra, re, la, le;
    trimmed(s->response, &ra, &re);
    trimmed(s->label, &la, &le);
    out->value =
        (re - ra == le - la && memcmp(s->response + ra, s->label + la, re - ra) == 0) ? 1.0 : 0.0;
    return QN_REWARD_OK;
}

/* Splits normalised text into tokens; returns the count (at most max). The
 * token texts are written NUL-separated into buf. */
static size_t f1_tokens(const char *s, char *buf, size_t cap, const char **tok, size_t max) {
    size_t k = 0, nt = 0;
    const char *p = s;
    while (*p && nt < max) {
        while (*p && (isspace((unsigned char)*p) || ispunct((unsigned char)*p)))
            p++;
        if (!*p) break;
        const char *start = buf + k;
        while (*p && !isspace((unsigned char)*p) && k + 1 < cap) {
            if (!ispunct((unsigned char)*p)) buf[k++] = (char)tolower((unsigned char)*p);
            p++;
        }
        if (k + 1 >= cap) break;
        buf[k++] = '\0';
        if (strcmp(start, "a") == 0 || strcmp(start, "an") == 0 || strcmp(start, "the") == 0 ||
            start[0] == '\0') {
            k = (size_t)(start - buf);
            continue;
        }
        tok[nt++] = start;
    }
    return nt;
}

enum { F1_MAX_TOKENS = 4096, F1_BUF = 65536 };

static int f1_score(void *st, const qn_reward_sample *s, qn_reward_score *out) {
    char *bufs = malloc(2 * F1_BUF);
    const char **tr = malloc(2 * F1_MAX_TOKENS * sizeof *tr);
    bool *used = calloc(F1_MAX_TOKENS, sizeof *used);
    if (!bufs || !tr || !used) {
        free(bufs);
        free(tr);
        free(used);
        snprintf(out->message, sizeof out->message, "f1: out of memory");
        return QN_REWARD_ERROR;
    }
    const char **tl = tr + F1_MAX_TOKENS;
    size_t nr = f1_tokens(s->response, bufs, F1_BUF, tr, F1_MAX_TOKENS);
    size_t nl = f1_tokens(s->label, bufs + F1_BUF, F1_BUF, tl, F1_MAX_TOKENS);
    size_t common = 0;
    for (size_t i = 0; i < nr; i++) {
        for (size_t j = 0; j < nl; j++) {
            if (!used[j] && strcmp(tr[i], tl[j]) == 0) {
                used[j] = true;
                common++;
                break;
            }
        }
    }
    if (nr == 0 && nl == 0) {
        out->value = 1.0;
    } else if (common == 0) {
        out->value = 0.0;
    } else {
        double p = (double)common / (double)nr, r = (double)common / (double)nl;
        out->value = 2 * p * r / (p + r);
    }
    free(bufs);
    free(tr);
    free(used);
    return QN_REWARD_OK;
}

#define BUILTIN(id, fn)                                                                            \
    static const qn_reward_api_v1 k_##id = {                                                       \
        .abi_version = 1, .struct_size = sizeof(qn_reward_api_v1), .name = #id, .score = fn}
BUILTIN(math, math_score);
BUILTIN(deepscaler, deepscaler_score);
BUILTIN(dapo, dapo_score);
BUILTIN(exact, exact_score);
BUILTIN(f1, f1_score);

const char *const qn_reward_builtin_names[] = {"math", "deepscaler", "dapo", "exact",
                                               "f1",   "remote_rm",  NULL};

const qn_reward_api_v1 *qn_reward_builtin(const char *name) {
    static const qn_reward_api_v1 *const tables[] = {&k_math, &k_deepscaler, &k_dapo, &k_exact,
                                                     &k_f1};
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++)
        if (name && strcmp(tables[i]->name, name) == 0) return tables[i];
    return NULL;
}
