/* fuzz_math_answer.c — the math answer extractor, normaliser and evaluator
 * (rewards/math_grade.c) and every text built-in reward on arbitrary model
 * output: input is "<response>\n<label>" (no newline: label empty). They
 * must not crash, must be symmetric on identical inputs, and must return
 * finite scores. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rewards/rewards.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    char *label = strchr(buf, '\n');
    if (label)
        *label++ = '\0';
    else
        label = buf + strlen(buf);
    char ans[1024];
    if (qn_math_extract_answer(buf, ans, sizeof ans)) {
        if (strlen(ans) >= sizeof ans) abort();
        (void)qn_math_answers_equal(ans, label);
    }
    /* an answer (that normalises to something) always equals itself */
    bool self = qn_math_answers_equal(label, label);
    (void)self;
    static const char *names[] = {"math", "deepscaler", "dapo", "exact", "f1"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const qn_reward_api_v1 *t = qn_reward_builtin(names[i]);
        qn_reward_sample s = {.prompt = "",
                              .response = buf,
                              .response_len = strlen(buf),
                              .label = label,
                              .metadata_json = "{}",
                              .finish_reason = ""};
        qn_reward_score sc;
        memset(&sc, 0, sizeof sc);
        if (t->score(NULL, &s, &sc) == QN_REWARD_OK && !isfinite(sc.value)) abort();
    }
    free(buf);
    return 0;
}
