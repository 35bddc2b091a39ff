/* test_reward_math.c — the built-in verifiers: a table of answer pairs for
 * math (equal forms that must match, near misses that must not), most of
 * them real answers from the MATH-500, GSM8K, AIME 2024 and AMC 2023
 * fixtures; answer extraction; whole-dataset checks that score the
 * fixtures' own reference solutions; deepscaler, dapo, exact and f1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "rewards/rewards.h"
#include "tests/test_util.h"

typedef struct math_case {
    const char *given; /* what the model put in \boxed{} */
    const char *truth; /* the dataset's answer */
    int equal;
} math_case;

/* truth column: answers copied from the fixtures (file noted per block) */
static const math_case k_math_cases[] = {
    /* math500_hf_format/test.jsonl */
    {"\\frac{14}{3}", "\\frac{14}{3}", 1},
    {"14/3", "\\frac{14}{3}", 1},
    {"\\dfrac{14}{3}", "\\frac{14}{3}", 1},
    {"\\frac{28}{6}", "\\frac{14}{3}", 1},
    {"4.67", "\\frac{14}{3}", 0},
    {"90", "90^\\circ", 1},
    {"90^{\\circ}", "90^\\circ", 1},
    {"90 \\text{ degrees}", "90^\\circ", 1},
    {"89^\\circ", "90^\\circ", 0},
    {"\\sqrt{117}", "3\\sqrt{13}", 1},
    {"3 \\sqrt{13}", "3\\sqrt{13}", 1},
    {"3\\sqrt{14}", "3\\sqrt{13}", 0},
    {"51^{1/2}", "\\sqrt{51}", 1},
    {"50", "-50", 0},
    {"13,535", "13535", 1},
    {"5", "x=5", 1},
    {"x = 5", "x=5", 1},
    {"-2, 1", "1,-2", 1},
    {"1, 2", "1,-2", 0},
    {"52_8", "52_8", 1},
    {"52", "52_8", 0},
    {"11\\sqrt{2}", "11\\sqrt2", 1},
    {"0.3888", "\\frac{243}{625}", 1},
    {"3,5,7", "3, 5, 7", 1},
    {"3, 5", "3, 5, 7", 0},
    {"70\\sqrt{2}", "70 \\sqrt{2}", 1},
    {"\\frac{5}{4}", "1.25", 1},
    {"1.24", "1.25", 0},
    {"1.5", "\\frac{3}{2}", 1},
    {"\\frac{2}{3}", "\\frac{3}{2}", 0},
    {"-\\frac{1}{6}\\pi", "-\\frac{\\pi}{6}", 1},
    {"\\frac{\\pi}{6}", "-\\frac{\\pi}{6}", 0},
    {".15", "0.15", 1},
    {"0.151", "0.15", 0},
    {"(6, 31, -1)", "(6,31,-1)", 1},
    {"(6,-1,31)", "(6,31,-1)", 0},
    {"(-2, 1)", "(-2,1)", 1},
    {"[-2,1]", "(-2,1)", 0},
    {"\\frac{4}{3}", "\\frac43", 1},
    {"1\\pm\\sqrt{19}", "1 \\pm \\sqrt{19}", 1},
    {"east", "\\text{east}", 1},
    {"\\text{west}", "\\text{east}", 0},
    {"\\begin{pmatrix} -\\frac{1}{3} \\\\ \\frac{2}{3} \\\\ \\frac{5}{3} \\end{pmatrix}",
     "\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}", 1},
    {"\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 4/3 \\end{pmatrix}",
     "\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}", 0},
    {"145", "145^\\circ", 1},
    {"(3, 4]", "(3,4]", 1},
    {"(3,4)", "(3,4]", 0},
    {"0.028672", "\\frac{448}{15625}", 1},
    {"4210_5", "4210_{5}", 1},
    {"0.34", "\\dfrac{17}{50}", 1},
    {"\\frac{270}{7}", "\\frac{270}7\\text{ degrees}", 1},
    {"6.72\\times10^{-5}", ".0000672", 1},
    {"0.0000673", ".0000672", 0},
    {"10080", "10,\\!080", 1},
    {"10,800", "10,\\!080", 0},
    {"11111111100", "11,\\! 111,\\! 111,\\! 100", 1},
    {"32348", "\\$32,\\!348", 1},
    {"32,384", "\\$32,\\!348", 0},
    {"864", "864 \\mbox{ inches}^2", 1},
    {"864^2", "864 \\mbox{ inches}^2", 0},
    {"\\frac{9}{5}", "1\\frac{4}{5}", 1},
    {"\\frac{4}{5}", "1\\frac{4}{5}", 0},
    {"137.5", "137 \\frac{1}{2}", 1},
    {"5.4", "5.4 \\text{ cents}", 1},
    {"18.9", "\\$18.90", 1},
    {"15", "15\\mbox{ cm}^2", 1},
    {"(C)", "\\text{(C)}", 1},
    {"(D)", "\\text{(C)}", 0},
    {"(2, \\infty)", "(2,\\infty)", 1},
    {"(3,\\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", 1},
    {"(3,\\frac{\\pi}{3})", "\\left( 3, \\frac{\\pi}{2} \\right)", 0},
    {"6-5i", "6 - 5i", 1},
    {"6+5i", "6 - 5i", 0},
    {"x^5-x^4+x^3-x^2+x-1", "x^5 - x^4 + x^3 - x^2 + x - 1", 1},
    {"y=2x+3", "y = 2x + 3", 1},
    {"\\frac{1}{\\sqrt{3}}", "\\frac{\\sqrt{3}}{3}", 1},
    {"\\sqrt{452}", "2\\sqrt{113}", 1},
    {"-\\sqrt3", "-\\sqrt{3}", 1},
    {"\\sqrt{3}", "-\\sqrt{3}", 0},
    {"2k + 2", "2k+2", 1},
    {"2k+1", "2k+2", 0},
    {"6366", "\\frac{20000}{\\pi}", 0},
    {"6366.2", "\\frac{20000}{\\pi}", 0},
    {"1450001", "1,450,000", 0}, /* gsm8k */
    {"\\frac{20000}{\\pi}", "\\frac{20000}{\\pi}", 1},
    {"3.14", "\\pi", 0},
    /* math_eval_qwen25math/aime24/test.jsonl ("025") and amc23 (27.0) */
    {"25", "025", 1},
    {"52", "025", 0},
    {"27", "27.0", 1},
    {"27.5", "27.0", 0},
    /* gsm8k/test.jsonl */
    {"1600", "1,600", 1},
    {"1,600", "1600", 1},
    {"$1,600", "1600", 1},
    {"160", "1,600", 0},
    {"-10", "-10", 1},
    {"10", "-10", 0},
    {"114200", "114,200", 1},
    {"18", "18", 1},
    {"18.0", "18", 1},
    {"17.99", "18", 0},
};

static void test_math_table(void **state) {
    size_t n = sizeof k_math_cases / sizeof k_math_cases[0];
    assert_true(n >= 60);
    size_t wrong = 0, n_equal = 0;
    const qn_reward_api_v1 *math = qn_reward_builtin("math");
    assert_non_null(math);
    for (size_t i = 0; i < n; i++) {
        const math_case *c = &k_math_cases[i];
        n_equal += c->equal;
        bool eq = qn_math_answers_equal(c->given, c->truth);
        /* the same through the reward: a response that boxes the answer */
        char resp[512];
        snprintf(resp, sizeof resp, "Let me think. ... So the final answer is $\\boxed{%s}$.",
                 c->given);
        qn_reward_sample s = {.response = resp,
                              .response_len = strlen(resp),
                              .label = c->truth,
                              .metadata_json = "{}",
                              .finish_reason = "stop"};
        qn_reward_score sc;
        memset(&sc, 0, sizeof sc);
        assert_int_equal(math->score(NULL, &s, &sc), QN_REWARD_OK);
        assert_true(isfinite(sc.value));
        if ((int)eq != c->equal || (sc.value == 1.0) != (c->equal == 1)) {
            fprintf(stderr, "case %zu: '%s' vs '%s': expected %s, answers_equal=%d reward=%g\n", i,
                    c->given, c->truth, c->equal ? "equal" : "different", (int)eq, sc.value);
            wrong++;
        }
    }
    fprintf(stderr, "math table: %zu cases (%zu equal forms, %zu near misses), %zu wrong\n", n,
            n_equal, n - n_equal, wrong);
    assert_true(n_equal >= 20 && n - n_equal >= 20);
    assert_int_equal(wrong, 0);
}

static void test_math_extract(void **state) {
    char out[256];
    assert_true(qn_math_extract_answer("so \\boxed{\\frac{1}{2}} done", out, sizeof out));
    assert_string_equal(out, "\\frac{1}{2}");
    assert_true(qn_math_extract_answer("\\boxed{1} then \\boxed{\\{a, {b}\\}}", out, sizeof out));
    assert_string_equal(out, "\\{a, {b}\\}");
    assert_true(qn_math_extract_answer("\\fbox{7}", out, sizeof out));
    assert_string_equal(out, "7");
    assert_true(qn_math_extract_answer("hence $\\boxed 5$.", out, sizeof out));
    assert_string_equal(out, "5");
    assert_true(qn_math_extract_answer("She makes 9 * 2 = $18 every day.", out, sizeof out));
    assert_string_equal(out, "18");
    assert_true(qn_math_extract_answer("costs $1,600.", out, sizeof out));
    assert_string_equal(out, "1,600");
    assert_true(qn_math_extract_answer("it drops to -10 degrees", out, sizeof out));
    assert_string_equal(out, "-10");
    assert_true(qn_math_extract_answer("5-3 = 2", out, sizeof out));
    assert_string_equal(out, "2");
    assert_true(qn_math_extract_answer("about 0.25 of it", out, sizeof out));
    assert_string_equal(out, "0.25");
    assert_false(qn_math_extract_answer("no digits here", out, sizeof out));
    assert_false(qn_math_extract_answer("\\boxed{unbalanced", out, sizeof out) &&
                 strcmp(out, "unbalanced") == 0);
    /* empty and garbage answers never match */
    assert_false(qn_math_answers_equal("", "0"));
    assert_false(qn_math_answers_equal("\\frac{1}{0}", "\\frac{1}{0}x"));
}

static char *read_fixture(const char *rel) {
    size_t len;
    return qn_test_read_file(qn_test_fixture(rel), &len);
}

static double score_math(const char *resp, const char *label) {
    const qn_reward_api_v1 *math = qn_reward_builtin("math");
    qn_reward_sample s = {.response = resp,
                          .response_len = strlen(resp),
                          .label = label,
                          .metadata_json = "{}",
                          .finish_reason = "stop"};
    qn_reward_score sc;
    memset(&sc, 0, sizeof sc);
    assert_int_equal(math->score(NULL, &s, &sc), QN_REWARD_OK);
    return sc.value;
}

/* Every GSM8K reference solution, with its "#### N" line turned into prose,
 * must score 1 against N by last-number extraction, and 0 against N+1. */
static void test_math_gsm8k_solutions(void **state) {
    char *text = read_fixture("gsm8k/test.jsonl");
    size_t rows = 0, ok = 0, near_ok = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        assert_non_null(j);
        const char *sol = cJSON_GetObjectItem(j, "answer")->valuestring;
        const char *mark = strstr(sol, "#### ");
        assert_non_null(mark);
        char label[64];
        snprintf(label, sizeof label, "%s", mark + 5);
        char *resp = malloc(strlen(sol) + 64);
        snprintf(resp, strlen(sol) + 64, "%.*sSo the answer is %s.", (int)(mark - sol), sol, label);
        rows++;
        ok += score_math(resp, label) == 1.0;
        /* near miss: the answer plus one, written without separators */
        char digits[64];
        size_t k = 0;
        for (const char *p = label; *p; p++)
            if (*p != ',') digits[k++] = *p;
        digits[k] = '\0';
        char miss[64];
        snprintf(miss, sizeof miss, "%lld", atoll(digits) + 1);
        if (score_math(resp, miss) == 0.0)
            near_ok++;
        else
            fprintf(stderr, "gsm8k: '%s' matched near miss '%s'\n", label, miss);
        free(resp);
        cJSON_Delete(j);
    }
    free(text);
    fprintf(stderr, "gsm8k: %zu solutions, %zu scored 1, %zu near misses scored 0\n", rows, ok,
            near_ok);
    assert_int_equal(rows, 1319);
    assert_int_equal(ok, rows);
    assert_int_equal(near_ok, rows);
}

/* MATH-500 reference solutions end in \boxed{answer}: scored against the
 * answer column they must match (the dataset writes a few differently). */
static void test_math_math500_solutions(void **state) {
    char *text = read_fixture("math500_hf_format/test.jsonl");
    size_t rows = 0, ok = 0, self_ok = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        assert_non_null(j);
        const char *sol = cJSON_GetObjectItem(j, "solution")->valuestring;
        const char *ans = cJSON_GetObjectItem(j, "answer")->valuestring;
        rows++;
        if (score_math(sol, ans) == 1.0)
            ok++;
        else
            fprintf(stderr, "math500 row %zu: solution's boxed answer != '%s'\n", rows - 1, ans);
        self_ok += qn_math_answers_equal(ans, ans);
        cJSON_Delete(j);
    }
    free(text);
    fprintf(stderr, "math500: %zu solutions, %zu match their answer\n", rows, ok);
    assert_int_equal(rows, 500);
    assert_int_equal(self_ok, rows);
    assert_true(ok >= rows * 98 / 100);
}

static qn_reward_score run(const char *type, const char *resp, const char *label) {
    const qn_reward_api_v1 *t = qn_reward_builtin(type);
    assert_non_null(t);
    qn_reward_sample s = {.response = resp,
                          .response_len = strlen(resp),
                          .label = label,
                          .metadata_json = "{}",
                          .finish_reason = "stop"};
    qn_reward_score sc;
    memset(&sc, 0, sizeof sc);
    assert_int_equal(t->score(NULL, &s, &sc), QN_REWARD_OK);
    assert_true(isfinite(sc.value));
    return sc;
}

static void test_deepscaler(void **state) {
    assert_true(run("deepscaler", "<think>maybe 3</think> The answer is \\boxed{\\frac{14}{3}}.",
                    "\\frac{14}{3}")
                    .value == 1.0);
    /* no </think>: 0 even with the right answer */
    assert_true(run("deepscaler", "The answer is \\boxed{\\frac{14}{3}}.", "\\frac{14}{3}").value ==
                0.0);
    /* the boxed answer inside the thinking does not count */
    assert_true(run("deepscaler", "<think>\\boxed{5}</think> so 5", "5").value == 0.0);
    assert_true(run("deepscaler", "<think>x</think> \\boxed{6}", "5").value == 0.0);
    /* the last </think> starts the answer */
    assert_true(run("deepscaler", "<think>a</think>b</think> \\boxed{90^\\circ}", "90").value ==
                1.0);
}

static void test_dapo(void **state) {
    /* DAPO-Math-17k prompts ask for "Answer: \boxed{$Answer}" on the last line */
    assert_true(run("dapo", "steps...\nAnswer: \\boxed{34}", "34").value == 1.0);
    assert_true(run("dapo", "steps...\nAnswer: 34", "34").value == 1.0);
    assert_true(run("dapo", "steps...\nAnswer: \\boxed{35}", "34").value == -1.0);
    assert_true(run("dapo", "the answer is \\boxed{34}", "34").value == -1.0); /* no Answer: */
    assert_true(run("dapo", "Answer: 12\nwait, Answer: 34\n", "34").value == 1.0);
    qn_reward_score s = run("dapo", "nothing", "34");
    assert_true(s.value == -1.0);
    assert_int_equal(s.n_named, 1);
    assert_string_equal(s.names[0], "has_answer");
    assert_true(s.named[0] == 0.0);
}

static void test_exact(void **state) {
    assert_true(run("exact", "  Paris\n", "Paris").value == 1.0);
    assert_true(run("exact", "paris", "Paris").value == 0.0);
    assert_true(run("exact", "Paris.", "Paris").value == 0.0);
    assert_true(run("exact", "", "").value == 1.0);
}

static void test_f1(void **state) {
    assert_true(run("f1", "The Eiffel Tower!", "eiffel tower").value == 1.0);
    assert_true(run("f1", "red apple", "green pear").value == 0.0);
    /* 2 of 3 predicted tokens right, 2 of 2 truth tokens: p=2/3, r=1 */
    double v = run("f1", "big red apple", "red apple").value;
    assert_true(fabs(v - 0.8) < 1e-12);
    /* repeated tokens count once per occurrence */
    v = run("f1", "apple apple", "apple").value;
    assert_true(fabs(v - 2.0 / 3.0) < 1e-12);
    assert_true(run("f1", "", "").value == 1.0);
    assert_true(run("f1", "the", "a").value == 1.0); /* only articles: both empty */
}

static void test_builtin_names(void **state) {
    for (size_t i = 0; qn_reward_builtin_names[i]; i++) {
        if (strcmp(qn_reward_builtin_names[i], "remote_rm") == 0) continue;
        assert_non_null(qn_reward_builtin(qn_reward_builtin_names[i]));
    }
    assert_null(qn_reward_builtin("nope"));
    assert_string_equal(qn_reward_status_str(QN_REWARD_NON_FINITE), "non_finite");
    assert_string_equal(qn_reward_status_str(99), "unknown");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_math_table),
        cmocka_unit_test(test_math_extract),
        cmocka_unit_test(test_math_gsm8k_solutions),
        cmocka_unit_test(test_math_math500_solutions),
        cmocka_unit_test(test_deepscaler),
        cmocka_unit_test(test_dapo),
        cmocka_unit_test(test_exact),
        cmocka_unit_test(test_f1),
        cmocka_unit_test(test_builtin_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
