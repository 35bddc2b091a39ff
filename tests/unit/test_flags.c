/* test_flags.c — the flag tables of core/flags.h: every type from defaults,
 * environment and command line, their precedence, positional arguments,
 * lists, every error path (each message must name the flag and the accepted
 * form), table validation, help, the text dump (which must parse back) and
 * the JSON dump. */
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

#include "core/flags.h"
#include "core/log.h"
#include "quench/status.h"

typedef struct test_cfg {
    int64_t rollout_batch_size;
    double temperature;
    bool use_kl_loss;
    bool apply_chat_template;
    int kl_loss_type;
    char *save;
    char *redis;
    qn_int_list block_size;
    qn_float_list weights;
    qn_string_list stop;
    int64_t seed;
    double lr;
    int64_t n_min;
} test_cfg;

static const qn_flag k_flags[] = {
    QN_F_INT(test_cfg, rollout_batch_size, "rollout-batch-size", "32", 1, 1048576,
             "prompts per rollout step"),
    QN_F_FLOAT(test_cfg, temperature, "rollout-temperature", "0.8", 0, 10,
               "sampling temperature"),
    QN_F_BOOL(test_cfg, use_kl_loss, "use-kl-loss", NULL, "add the KL loss"),
    QN_F_BOOL(test_cfg, apply_chat_template, "apply-chat-template", "true",
              "wrap prompts in the chat template"),
    QN_F_CHOICE(test_cfg, kl_loss_type, "kl-loss-type", "k1", "k1|k2|k3|low_var_kl",
                "KL estimator"),
    QN_F_STRING(test_cfg, save, "save", "/tmp/ckpt", "checkpoint folder", .metavar = "DIR"),
    QN_F_STRING(test_cfg, redis, "redis", NULL, "redis URL", .attrs = QN_FLAG_SECRET,
                .metavar = "URL"),
    QN_F_INT_LIST(test_cfg, block_size, "block-size", "128,128", 1, 4096, "FP8 tile shape"),
    QN_F_FLOAT_LIST(test_cfg, weights, "weights", NULL, -1, 1, "mixing weights"),
    QN_F_STRING_LIST(test_cfg, stop, "rollout-stop", "</s>", "stop strings"),
    QN_F_INT(test_cfg, seed, "seed", "1234", 0, 0, "random seed (unbounded)"),
    QN_F_FLOAT(test_cfg, lr, "lr", "1e-6", 0, INFINITY, "learning rate"),
    QN_F_INT(test_cfg, n_min, "min-tokens", "-5", -INFINITY, 0, "non-positive"),
};

static const qn_flag_table k_table = {
    .command = "test",
    .usage = "quench test [flags] FILE...",
    .summary = "A table that uses every flag type.",
    .flags = k_flags,
    .n_flags = QN_FLAGS_COUNT(k_flags),
    .cfg_size = sizeof(test_cfg),
};

static const char *const k_env_names[] = {
    "QN_ROLLOUT_BATCH_SIZE", "QN_ROLLOUT_TEMPERATURE", "QN_USE_KL_LOSS", "QN_APPLY_CHAT_TEMPLATE",
    "QN_KL_LOSS_TYPE",       "QN_SAVE",                "QN_REDIS",       "QN_BLOCK_SIZE",
    "QN_WEIGHTS",            "QN_ROLLOUT_STOP",        "QN_SEED",        "QN_LR",
    "QN_MIN_TOKENS",         "QN_REQ_PATH",
};

static int clear_env(void **state) {
    for (size_t i = 0; i < sizeof k_env_names / sizeof k_env_names[0]; i++) {
        unsetenv(k_env_names[i]);
    }
    return 0;
}

/* argv from a space-separated string (tokens may not contain spaces); the
 * command name is prepended. */
typedef struct argvec {
    int argc;
    char *argv[64];
    char buf[2048];
} argvec;

static void mkargs(argvec *a, const char *line) {
    snprintf(a->buf, sizeof a->buf, "test %s", line);
    a->argc = 0;
    for (char *tok = strtok(a->buf, " "); tok && a->argc < 63; tok = strtok(NULL, " ")) {
        a->argv[a->argc++] = tok;
    }
    a->argv[a->argc] = NULL;
}

/* The positional arguments point into argv, so it outlives the call. */
static argvec g_args;
static qn_status parse_line(test_cfg *c, qn_flags_parsed *p, const char *line) {
    mkargs(&g_args, line);
    return qn_flags_parse(&k_table, c, g_args.argc, g_args.argv, p);
}

/* Parses a line that must fail with status want; returns the message (copied). */
static char g_msg[1024];
static const char *parse_fail(const char *line, qn_status want) {
    test_cfg c;
    qn_flags_parsed p;
    qn_clear_error();
    qn_status s = parse_line(&c, &p, line);
    if (s != want) {
        fprintf(stderr, "line '%s': status %s, wanted %s (%s)\n", line, qn_status_name(s),
                qn_status_name(want), qn_last_error());
    }
    assert_int_equal(s, want);
    /* nothing to release on failure */
    assert_null(c.save);
    assert_null(c.block_size.v);
    assert_null(c.stop.v);
    assert_null(p.sources);
    assert_null(p.args);
    snprintf(g_msg, sizeof g_msg, "%s", qn_last_error());
    return g_msg;
}

static void assert_contains(const char *hay, const char *needle) {
    if (!strstr(hay, needle)) fprintf(stderr, "'%s' does not contain '%s'\n", hay, needle);
    assert_non_null(strstr(hay, needle));
}

static void test_table_valid(void **state) {
    assert_int_equal(qn_flags_validate_table(&k_table), QN_OK);
}

static void test_defaults(void **state) {
    test_cfg c;
    qn_flags_parsed p;
    assert_int_equal(parse_line(&c, &p, ""), QN_OK);
    assert_int_equal(c.rollout_batch_size, 32);
    assert_true(c.temperature == 0.8);
    assert_false(c.use_kl_loss);
    assert_true(c.apply_chat_template);
    assert_int_equal(c.kl_loss_type, 0);
    assert_string_equal(c.save, "/tmp/ckpt");
    assert_null(c.redis);
    assert_int_equal(c.block_size.n, 2);
    assert_int_equal(c.block_size.v[0], 128);
    assert_int_equal(c.block_size.v[1], 128);
    assert_int_equal(c.weights.n, 0);
    assert_int_equal(c.stop.n, 1);
    assert_string_equal(c.stop.v[0], "</s>");
    assert_int_equal(c.seed, 1234);
    assert_true(c.lr == 1e-6);
    assert_int_equal(c.n_min, -5);
    assert_int_equal(p.n_args, 0);
    assert_false(p.print_config);
    for (size_t i = 0; i < k_table.n_flags; i++) {
        assert_int_equal(p.sources[i], QN_FLAG_FROM_DEFAULT);
    }
    qn_flags_parsed_free(&p);
    qn_flags_free(&k_table, &c);
    assert_null(c.save);
    assert_null(c.block_size.v);

    /* qn_flags_defaults alone gives the same */
    test_cfg d;
    memset(&d, 0xab, sizeof d);
    assert_int_equal(qn_flags_defaults(&k_table, &d), QN_OK);
    assert_int_equal(d.rollout_batch_size, 32);
    assert_null(d.redis);
    assert_int_equal(d.weights.n, 0);
    assert_null(d.weights.v);
    qn_flags_free(&k_table, &d);
}

static void test_cli_every_type(void **state) {
    test_cfg c;
    qn_flags_parsed p;
    assert_int_equal(parse_line(&c, &p,
                                "--rollout-batch-size 64 --rollout-temperature=1.5 --use-kl-loss "
                                "--no-apply-chat-template --kl-loss-type low_var_kl "
                                "--save=/ckpt/x --redis redis://h:1 --block-size 64 32 "
                                "--weights=-0.5,0.25 --rollout-stop a b,c --seed -7 --lr 3e-4 "
                                "--min-tokens=0"),
                     QN_OK);
    assert_int_equal(c.rollout_batch_size, 64);
    assert_true(c.temperature == 1.5);
    assert_true(c.use_kl_loss);
    assert_false(c.apply_chat_template);
    assert_int_equal(c.kl_loss_type, 3);
    assert_string_equal(c.save, "/ckpt/x");
    assert_string_equal(c.redis, "redis://h:1");
    assert_int_equal(c.block_size.n, 2);
    assert_int_equal(c.block_size.v[0], 64);
    assert_int_equal(c.block_size.v[1], 32);
    assert_int_equal(c.weights.n, 2);
    assert_true(c.weights.v[0] == -0.5 && c.weights.v[1] == 0.25);
    assert_int_equal(c.stop.n, 3);
    assert_string_equal(c.stop.v[0], "a");
    assert_string_equal(c.stop.v[1], "b");
    assert_string_equal(c.stop.v[2], "c");
    assert_int_equal(c.seed, -7);
    assert_true(c.lr == 3e-4);
    assert_int_equal(c.n_min, 0);
    for (size_t i = 0; i < k_table.n_flags; i++) {
        assert_int_equal(p.sources[i], QN_FLAG_FROM_CLI);
    }
    qn_flags_parsed_free(&p);
    qn_flags_free(&k_table, &c);
}

static void test_bool_forms(void **state) {
    static const struct {
        const char *line;
        bool want;
    } cases[] = {
        {"--use-kl-loss", true},          {"--use-kl-loss=true", true},
        {"--use-kl-loss=FALSE", false},   {"--use-kl-loss=1", true},
        {"--use-kl-loss=0", false},       {"--use-kl-loss=yes", true},
        {"--use-kl-loss=off", false},     {"--use-kl-loss --no-use-kl-loss", false},
        {"--no-use-kl-loss --use-kl-loss", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        test_cfg c;
        assert_int_equal(parse_line(&c, NULL, cases[i].line), QN_OK);
        assert_int_equal(c.use_kl_loss, cases[i].want);
        qn_flags_free(&k_table, &c);
    }
    /* a bool takes no separate value: the next token stays positional */
    test_cfg c;
    qn_flags_parsed p;
    assert_int_equal(parse_line(&c, &p, "--use-kl-loss false"), QN_OK);
    assert_true(c.use_kl_loss);
    assert_int_equal(p.n_args, 1);
    assert_string_equal(p.args[0], "false");
    qn_flags_parsed_free(&p);
    qn_flags_free(&k_table, &c);
}

static void test_lists(void **state) {
    test_cfg c;
    qn_flags_parsed p;
    /* space-separated, comma-separated, mixed; negative numbers are values */
    assert_int_equal(parse_line(&c, &p, "--weights -1 0.5,1 -0.25 --block-size 1,2,3"), QN_OK);
    assert_int_equal(c.weights.n, 4);
    assert_true(c.weights.v[0] == -1 && c.weights.v[1] == 0.5 && c.weights.v[2] == 1 &&
                c.weights.v[3] == -0.25);
    assert_int_equal(c.block_size.n, 3);
    assert_int_equal(c.block_size.v[2], 3);
    qn_flags_parsed_free(&p);
    qn_flags_free(&k_table, &c);

    /* a repeated list flag replaces, "--x=" empties */
    assert_int_equal(parse_line(&c, &p, "--block-size 5 6 7 --block-size 9"), QN_OK);
    assert_int_equal(c.block_size.n, 1);
    assert_int_equal(c.block_size.v[0], 9);
    qn_flags_free(&k_table, &c);
    assert_int_equal(parse_line(&c, NULL, "--block-size= --rollout-stop="), QN_OK);
    assert_int_equal(c.block_size.n, 0);
    assert_int_equal(c.stop.n, 0);
    qn_flags_free(&k_table, &c);
    qn_flags_parsed_free(&p);

    /* a list value given as one token with spaces (a quoted shell argument) */
    char *argv[] = {"test", "--block-size", " 8  16 ,32 ", NULL};
    assert_int_equal(qn_flags_parse(&k_table, &c, 3, argv, NULL), QN_OK);
    assert_int_equal(c.block_size.n, 3);
    assert_int_equal(c.block_size.v[0], 8);
    assert_int_equal(c.block_size.v[1], 16);
    assert_int_equal(c.block_size.v[2], 32);
    qn_flags_free(&k_table, &c);
}

static void test_positional(void **state) {
    test_cfg c;
    qn_flags_parsed p;
    assert_int_equal(parse_line(&c, &p, "a.jsonl --seed 3 b.jsonl - -12 --lr=0.5 -- --seed c"),
                     QN_OK);
    assert_int_equal(c.seed, 3);
    assert_true(c.lr == 0.5);
    assert_int_equal(p.n_args, 6);
    assert_string_equal(p.args[0], "a.jsonl");
    assert_string_equal(p.args[1], "b.jsonl");
    assert_string_equal(p.args[2], "-");
    assert_string_equal(p.args[3], "-12");
    assert_string_equal(p.args[4], "--seed"); /* after "--" everything is positional */
    assert_string_equal(p.args[5], "c");
    qn_flags_parsed_free(&p);
    assert_null(p.args);
    qn_flags_free(&k_table, &c);

    /* positional arguments are an error when the caller takes none */
    test_cfg d;
    qn_clear_error();
    assert_int_equal(parse_line(&d, NULL, "--seed 3 extra"), QN_ERR_INVALID);
    assert_contains(qn_last_error(), "'extra'");
    assert_contains(qn_last_error(), "positional");
}

static void test_repeated_last_wins(void **state) {
    test_cfg c;
    assert_int_equal(parse_line(&c, NULL, "--seed 1 --seed=2 --save a --save b --kl-loss-type k2 "
                                          "--kl-loss-type k3"),
                     QN_OK);
    assert_int_equal(c.seed, 2);
    assert_string_equal(c.save, "b");
    assert_int_equal(c.kl_loss_type, 2);
    qn_flags_free(&k_table, &c);
}

static void test_print_config_flag(void **state) {
    test_cfg c;
    qn_flags_parsed p;
    assert_int_equal(parse_line(&c, &p, "--seed 1 --print-config"), QN_OK);
    assert_true(p.print_config);
    qn_flags_parsed_free(&p);
    qn_flags_free(&k_table, &c);
    parse_fail("--print-config=1", QN_ERR_INVALID);
}

static void test_env_precedence(void **state) {
    setenv("QN_ROLLOUT_BATCH_SIZE", "16", 1);
    setenv("QN_SEED", "99", 1);
    setenv("QN_USE_KL_LOSS", "true", 1);
    setenv("QN_BLOCK_SIZE", "1 2,3", 1);
    setenv("QN_KL_LOSS_TYPE", "k3", 1);
    test_cfg c;
    qn_flags_parsed p;
    /* env over default; cli over env */
    assert_int_equal(parse_line(&c, &p, "--seed 5 --no-use-kl-loss"), QN_OK);
    assert_int_equal(c.rollout_batch_size, 16);
    assert_int_equal(c.seed, 5);
    assert_false(c.use_kl_loss);
    assert_int_equal(c.block_size.n, 3);
    assert_int_equal(c.block_size.v[2], 3);
    assert_int_equal(c.kl_loss_type, 2);
    const qn_flag *f = qn_flags_find(&k_table, "rollout-batch-size");
    assert_non_null(f);
    assert_int_equal(p.sources[f - k_flags], QN_FLAG_FROM_ENV);
    assert_int_equal(p.sources[qn_flags_find(&k_table, "seed") - k_flags], QN_FLAG_FROM_CLI);
    assert_int_equal(p.sources[qn_flags_find(&k_table, "lr") - k_flags], QN_FLAG_FROM_DEFAULT);
    assert_int_equal(p.sources[qn_flags_find(&k_table, "use-kl-loss") - k_flags],
                     QN_FLAG_FROM_CLI);
    qn_flags_parsed_free(&p);
    qn_flags_free(&k_table, &c);
    clear_env(NULL);
}

static void test_env_errors_name_variable(void **state) {
    setenv("QN_ROLLOUT_BATCH_SIZE", "12x", 1);
    const char *m = parse_fail("", QN_ERR_FORMAT);
    assert_string_equal(m, "QN_ROLLOUT_BATCH_SIZE (--rollout-batch-size) expects an integer in "
                           "[1, 1048576], got '12x'");
    /* the command line does not rescue a bad environment value: it is reported */
    parse_fail("--rollout-batch-size 3", QN_ERR_FORMAT);
    setenv("QN_ROLLOUT_BATCH_SIZE", "0", 1);
    m = parse_fail("", QN_ERR_RANGE);
    assert_contains(m, "QN_ROLLOUT_BATCH_SIZE");
    assert_contains(m, "[1, 1048576]");
    clear_env(NULL);
    setenv("QN_KL_LOSS_TYPE", "k9", 1);
    m = parse_fail("", QN_ERR_FORMAT);
    assert_contains(m, "QN_KL_LOSS_TYPE (--kl-loss-type)");
    assert_contains(m, "one of k1, k2, k3, low_var_kl");
    clear_env(NULL);
    setenv("QN_USE_KL_LOSS", "", 1);
    m = parse_fail("", QN_ERR_FORMAT);
    assert_contains(m, "QN_USE_KL_LOSS (--use-kl-loss) expects true or false, got ''");
    clear_env(NULL);
}

static void test_int_errors(void **state) {
    const char *m = parse_fail("--rollout-batch-size 12x", QN_ERR_FORMAT);
    assert_string_equal(m, "--rollout-batch-size expects an integer in [1, 1048576], got '12x'");
    m = parse_fail("--rollout-batch-size=", QN_ERR_FORMAT);
    assert_contains(m, "--rollout-batch-size expects an integer in [1, 1048576], got ''");
    parse_fail("--rollout-batch-size 1e3", QN_ERR_FORMAT);
    parse_fail("--rollout-batch-size 1.0", QN_ERR_FORMAT);
    parse_fail("--rollout-batch-size=+", QN_ERR_FORMAT);
    m = parse_fail("--seed 99999999999999999999", QN_ERR_RANGE);
    assert_contains(m, "--seed expects an integer, got '99999999999999999999'");
    assert_contains(m, "64-bit");
    parse_fail("--seed -99999999999999999999", QN_ERR_RANGE);
    m = parse_fail("--rollout-batch-size 0", QN_ERR_RANGE);
    assert_string_equal(m, "--rollout-batch-size expects an integer in [1, 1048576], got '0' "
                           "(out of range)");
    parse_fail("--rollout-batch-size 1048577", QN_ERR_RANGE);
    m = parse_fail("--min-tokens 1", QN_ERR_RANGE);
    assert_contains(m, "--min-tokens expects an integer <= 0, got '1'");
    /* the bounds themselves are accepted */
    test_cfg c;
    assert_int_equal(parse_line(&c, NULL, "--rollout-batch-size 1"), QN_OK);
    qn_flags_free(&k_table, &c);
    assert_int_equal(parse_line(&c, NULL, "--rollout-batch-size 1048576 --seed "
                                          "-9223372036854775808"),
                     QN_OK);
    assert_int_equal(c.rollout_batch_size, 1048576);
    assert_true(c.seed == INT64_MIN);
    qn_flags_free(&k_table, &c);
    /* with an explicit '=', a string starting with "--" is a value */
    assert_int_equal(parse_line(&c, NULL, "--save=--weird"), QN_OK);
    assert_string_equal(c.save, "--weird");
    qn_flags_free(&k_table, &c);
}

static void test_float_errors(void **state) {
    const char *m = parse_fail("--rollout-temperature abc", QN_ERR_FORMAT);
    assert_string_equal(m, "--rollout-temperature expects a number in [0, 10], got 'abc'");
    parse_fail("--rollout-temperature 0.5x", QN_ERR_FORMAT);
    parse_fail("--rollout-temperature nan", QN_ERR_FORMAT);
    parse_fail("--rollout-temperature -inf", QN_ERR_FORMAT);
    parse_fail("--rollout-temperature= 1", QN_ERR_FORMAT);
    m = parse_fail("--lr 1e999", QN_ERR_RANGE);
    assert_contains(m, "--lr expects a number >= 0, got '1e999'");
    parse_fail("--lr 1e-400", QN_ERR_RANGE);
    m = parse_fail("--rollout-temperature 10.5", QN_ERR_RANGE);
    assert_contains(m, "--rollout-temperature expects a number in [0, 10], got '10.5'");
    m = parse_fail("--lr -1e-9", QN_ERR_RANGE);
    assert_contains(m, ">= 0");
}

static void test_choice_bool_string_errors(void **state) {
    const char *m = parse_fail("--kl-loss-type k4", QN_ERR_FORMAT);
    assert_string_equal(m, "--kl-loss-type expects one of k1, k2, k3, low_var_kl, got 'k4'");
    parse_fail("--kl-loss-type K1", QN_ERR_FORMAT);
    parse_fail("--kl-loss-type=", QN_ERR_FORMAT);
    parse_fail("--kl-loss-type k", QN_ERR_FORMAT); /* a prefix of a choice is not a choice */
    m = parse_fail("--use-kl-loss=maybe", QN_ERR_FORMAT);
    assert_string_equal(m, "--use-kl-loss expects true or false, got 'maybe'");
    m = parse_fail("--no-use-kl-loss=true", QN_ERR_INVALID);
    assert_contains(m, "--no-use-kl-loss takes no value");
    /* --no- exists only for bools */
    m = parse_fail("--no-seed", QN_ERR_INVALID);
    assert_contains(m, "unknown flag --no-seed");
}

static void test_missing_value(void **state) {
    const char *m = parse_fail("--rollout-batch-size", QN_ERR_INVALID);
    assert_string_equal(m, "--rollout-batch-size expects a value (an integer in [1, 1048576])");
    m = parse_fail("--save --seed 3", QN_ERR_INVALID);
    assert_contains(m, "--save expects a value (a string)");
    m = parse_fail("--block-size --seed 1", QN_ERR_INVALID);
    assert_contains(m, "--block-size expects a value (a list of integers in [1, 4096]");
    m = parse_fail("--rollout-stop", QN_ERR_INVALID);
    assert_contains(m, "--rollout-stop expects a value");
}

static void test_list_errors(void **state) {
    const char *m = parse_fail("--block-size 128 12x", QN_ERR_FORMAT);
    assert_contains(m, "--block-size expects a list of integers in [1, 4096]");
    assert_contains(m, "got '12x'");
    m = parse_fail("--block-size 128,0", QN_ERR_RANGE);
    assert_contains(m, "got '0' in '128,0' (out of range)");
    m = parse_fail("--block-size 1,,2", QN_ERR_FORMAT);
    assert_contains(m, "empty element");
    parse_fail("--block-size 1,", QN_ERR_FORMAT);
    parse_fail("--block-size ,1", QN_ERR_FORMAT);
    m = parse_fail("--weights 0.5 2", QN_ERR_RANGE);
    assert_contains(m, "--weights expects a list of numbers in [-1, 1]");
    parse_fail("--rollout-stop a,,b", QN_ERR_FORMAT);
    /* a failing list leaves the earlier value alone when set through qn_flags_set */
    test_cfg c;
    assert_int_equal(qn_flags_defaults(&k_table, &c), QN_OK);
    assert_int_equal(qn_flags_set(&k_table, &c, "block-size", "1,2,x"), QN_ERR_FORMAT);
    assert_int_equal(c.block_size.n, 2);
    assert_int_equal(c.block_size.v[0], 128);
    qn_flags_free(&k_table, &c);
}

static void test_unknown_flag(void **state) {
    const char *m = parse_fail("--rollout-batch 3", QN_ERR_INVALID);
    assert_string_equal(m, "unknown flag --rollout-batch for 'test'; did you mean "
                           "--rollout-batch-size? (quench help test lists the flags)");
    m = parse_fail("--rollout-tempreature=1", QN_ERR_INVALID);
    assert_contains(m, "unknown flag --rollout-tempreature for 'test'; did you mean "
                       "--rollout-temperature?");
    m = parse_fail("--use-kl-los", QN_ERR_INVALID);
    assert_contains(m, "did you mean --use-kl-loss?");
    m = parse_fail("--zzzzzzzz", QN_ERR_INVALID);
    assert_contains(m, "unknown flag --zzzzzzzz for 'test'");
    assert_null(strstr(m, "did you mean"));
    m = parse_fail("-x", QN_ERR_INVALID);
    assert_contains(m, "unknown flag -x");
    m = parse_fail("--help", QN_ERR_INVALID); /* main.c intercepts --help before parsing */
    assert_contains(m, "unknown flag --help");
}

typedef struct req_cfg {
    char *path;
    int64_t n;
} req_cfg;
static const qn_flag k_req_flags[] = {
    QN_F_STRING(req_cfg, path, "req-path", NULL, "a required path", .attrs = QN_FLAG_REQUIRED,
                .metavar = "PATH"),
    QN_F_INT(req_cfg, n, "n", "1", 1, 8, "a count"),
};
static const qn_flag_table k_req_table = {.command = "req",
                                          .usage = "quench req --req-path PATH",
                                          .flags = k_req_flags,
                                          .n_flags = QN_FLAGS_COUNT(k_req_flags),
                                          .cfg_size = sizeof(req_cfg)};

static void test_required(void **state) {
    req_cfg c;
    char *argv0[] = {"req", NULL};
    qn_clear_error();
    assert_int_equal(qn_flags_parse(&k_req_table, &c, 1, argv0, NULL), QN_ERR_INVALID);
    assert_contains(qn_last_error(), "--req-path is required (a string)");
    assert_contains(qn_last_error(), "QN_REQ_PATH");
    assert_null(c.path);
    char *argv1[] = {"req", "--req-path", "/x", NULL};
    assert_int_equal(qn_flags_parse(&k_req_table, &c, 3, argv1, NULL), QN_OK);
    assert_string_equal(c.path, "/x");
    qn_flags_free(&k_req_table, &c);
    setenv("QN_REQ_PATH", "/from/env", 1);
    assert_int_equal(qn_flags_parse(&k_req_table, &c, 1, argv0, NULL), QN_OK);
    assert_string_equal(c.path, "/from/env");
    qn_flags_free(&k_req_table, &c);
    unsetenv("QN_REQ_PATH");
    /* help says required instead of a default */
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    qn_flags_print_help(&k_req_table, mem);
    fclose(mem);
    assert_contains(buf, "--req-path PATH");
    assert_contains(buf, "a string; required; env QN_REQ_PATH");
    free(buf);
}

/* ---- table validation: each programming error is caught and named */

typedef struct bad_cfg {
    int64_t a;
    int64_t b;
    int c;
    bool d;
} bad_cfg;

static void expect_bad(const qn_flag *flags, size_t n, const char *needle) {
    qn_flag_table t = {.command = "bad", .usage = "quench bad", .flags = flags, .n_flags = n,
                       .cfg_size = sizeof(bad_cfg)};
    qn_clear_error();
    qn_status s = qn_flags_validate_table(&t);
    if (s != QN_ERR_INTERNAL || !strstr(qn_last_error(), needle)) {
        fprintf(stderr, "wanted a table error with '%s', got %s: '%s'\n", needle,
                qn_status_name(s), qn_last_error());
    }
    assert_int_equal(s, QN_ERR_INTERNAL);
    assert_contains(qn_last_error(), "flag table 'bad'");
    assert_contains(qn_last_error(), needle);
    /* parse refuses a bad table too */
    bad_cfg c;
    char *argv[] = {"bad", NULL};
    assert_int_equal(qn_flags_parse(&t, &c, 1, argv, NULL), QN_ERR_INTERNAL);
}

static void test_validate_table_errors(void **state) {
    const qn_flag good = QN_F_INT(bad_cfg, a, "a", "1", 1, 10, "x");
    qn_flag t[2];

    t[0] = good;
    t[0].def = "11";
    expect_bad(t, 1, "default of --a expects an integer in [1, 10], got '11'");
    t[0].def = "1x";
    expect_bad(t, 1, "default of --a");
    t[0].def = NULL; /* zero value outside [1, 10] */
    expect_bad(t, 1, "--a has no default");
    t[0] = good;
    t[0].name = "Bad_Name";
    expect_bad(t, 1, "name 'Bad_Name'");
    t[0].name = "x-";
    expect_bad(t, 1, "name 'x-'");
    t[0].name = "help";
    expect_bad(t, 1, "--help is reserved");
    t[0] = good;
    t[0].size = 4; /* an int field declared as INT (the macro would have refused) */
    expect_bad(t, 1, "field is 4 bytes");
    t[0] = good;
    t[0].offset = sizeof(bad_cfg) - 4;
    expect_bad(t, 1, "outside");
    t[0] = good;
    t[0].min = 5;
    t[0].max = 2;
    expect_bad(t, 1, "bad bounds");
    t[0] = good;
    t[0].min = NAN;
    expect_bad(t, 1, "bad bounds");
    t[0] = good;
    t[0].help = "";
    expect_bad(t, 1, "no help");
    t[0] = good;
    t[0].choices = "a|b";
    expect_bad(t, 1, "choices on a non-choice");
    t[0] = good;
    t[0].attrs = QN_FLAG_REQUIRED;
    expect_bad(t, 1, "required flag cannot have a default");
    t[0] = good;
    t[0].attrs = 1u << 7;
    expect_bad(t, 1, "unknown attrs");

    t[0] = good;
    t[1] = (qn_flag)QN_F_INT(bad_cfg, b, "a", "1", 1, 10, "y");
    expect_bad(t, 2, "--a is listed twice");
    t[1] = (qn_flag)QN_F_INT(bad_cfg, a, "b", "1", 1, 10, "y");
    expect_bad(t, 2, "--a and --b share a field");

    t[0] = (qn_flag)QN_F_CHOICE(bad_cfg, c, "c", "x", "x|y|x", "z");
    expect_bad(t, 1, "duplicate item 'x'");
    t[0] = (qn_flag)QN_F_CHOICE(bad_cfg, c, "c", "x", "x||y", "z");
    expect_bad(t, 1, "empty item");
    t[0] = (qn_flag)QN_F_CHOICE(bad_cfg, c, "c", "w", "x|y", "z");
    expect_bad(t, 1, "default of --c expects one of x, y, got 'w'");
    t[0] = (qn_flag)QN_F_CHOICE(bad_cfg, c, "c", NULL, NULL, "z");
    expect_bad(t, 1, "needs choices");

    t[0] = (qn_flag)QN_F_BOOL(bad_cfg, d, "x", "true", "z");
    t[1] = (qn_flag)QN_F_INT(bad_cfg, a, "no-x", "1", 1, 10, "y");
    expect_bad(t, 2, "clashes with the negation");
    t[0] = (qn_flag)QN_F_BOOL(bad_cfg, d, "x", "maybe", "z");
    expect_bad(t, 1, "default of --x expects true or false");
    t[0] = good;
    t[0].type = QN_FLAG_FLOAT; /* an int64 field is 8 bytes like a double: bounds still checked */
    t[0].def = "0.5";
    expect_bad(t, 1, "default of --a expects a number in [1, 10]");

    /* a table whose entries are all fine passes */
    t[0] = good;
    t[1] = (qn_flag)QN_F_BOOL(bad_cfg, d, "d", NULL, "y");
    qn_flag_table ok = {.command = "bad", .flags = t, .n_flags = 2, .cfg_size = sizeof(bad_cfg)};
    assert_int_equal(qn_flags_validate_table(&ok), QN_OK);
}

static void test_help_lists_every_flag(void **state) {
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    qn_flags_print_help(&k_table, mem);
    fclose(mem);
    assert_contains(buf, "usage: quench test [flags] FILE...");
    assert_contains(buf, "A table that uses every flag type.");
    for (size_t i = 0; i < k_table.n_flags; i++) {
        const qn_flag *f = &k_flags[i];
        char want[256];
        snprintf(want, sizeof want, "  --%s", f->name);
        assert_contains(buf, want);
        assert_contains(buf, f->help);
        assert_contains(buf, k_env_names[i]);
        if (f->def) {
            snprintf(want, sizeof want, "default %s;", f->def);
            assert_contains(buf, want);
        }
    }
    assert_contains(buf, "--rollout-batch-size N\n");
    assert_contains(buf, "an integer in [1, 1048576]; default 32; env QN_ROLLOUT_BATCH_SIZE");
    assert_contains(buf, "a number in [0, 10]; default 0.8;");
    assert_contains(buf, "--use-kl-loss, --no-use-kl-loss");
    assert_contains(buf, "true or false; default false;");
    assert_contains(buf, "--kl-loss-type k1|k2|k3|low_var_kl");
    assert_contains(buf, "one of k1, k2, k3, low_var_kl; default k1;");
    assert_contains(buf, "--save DIR");
    assert_contains(buf, "a string; default unset; env QN_REDIS");
    assert_contains(buf, "a list of integers in [1, 4096] (space- or comma-separated); "
                         "default 128,128");
    assert_contains(buf, "a list of numbers in [-1, 1] (space- or comma-separated); default "
                         "empty");
    assert_contains(buf, "an integer; default 1234;");
    assert_contains(buf, "a number >= 0; default 1e-6;");
    assert_contains(buf, "an integer <= 0; default -5;");
    assert_contains(buf, "QN_<FLAG>");
    free(buf);
}

/* noinline: inlined, GCC 12 mistakes pointers into the returned buffer for
 * pointers to the local `buf` and warns -Wdangling-pointer. */
__attribute__((noinline)) static char *dump_to_string(const test_cfg *c,
                                                      const qn_flags_parsed *p) {
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    qn_flags_dump(&k_table, c, p, mem);
    fclose(mem);
    return buf;
}

static void test_dump(void **state) {
    setenv("QN_SEED", "77", 1);
    test_cfg c;
    qn_flags_parsed p;
    assert_int_equal(parse_line(&c, &p, "--rollout-temperature 0.7 --redis redis://:pw@h:6379 "
                                        "--weights 0.1,-0.3 --kl-loss-type k3"),
                     QN_OK);
    clear_env(NULL);
    char *d = dump_to_string(&c, &p);
    assert_contains(d, "--rollout-batch-size=32");
    assert_contains(d, "--rollout-temperature=0.7 ");
    assert_contains(d, "--weights=0.1,-0.3 ");
    assert_contains(d, "--kl-loss-type=k3 ");
    assert_contains(d, "--use-kl-loss=false ");
    assert_contains(d, "--block-size=128,128 ");
    assert_contains(d, "--rollout-stop='</s>' ");
    assert_contains(d, "--lr=1e-06 ");
    assert_contains(d, "--seed=77 ");
    assert_contains(d, "# env QN_SEED\n");
    assert_contains(d, "--redis=<hidden>");
    assert_null(strstr(d, "pw@h"));
    /* one line per flag, each with its source */
    size_t lines = 0;
    for (const char *q = d; *q; q++) lines += *q == '\n';
    assert_int_equal(lines, k_table.n_flags);
    char *line = strstr(d, "--rollout-temperature=");
    assert_non_null(line);
    char *nl = strchr(line, '\n');
    assert_true(nl - line > 10);
    assert_memory_equal(nl - 5, "# cli\n", 6);
    line = strstr(d, "--rollout-batch-size=32");
    nl = strchr(line, '\n');
    assert_memory_equal(nl - 9, "# default\n", 10);
    free(d);
    qn_flags_parsed_free(&p);

    /* without sources: no comments; quoting of awkward strings */
    assert_int_equal(qn_flags_set(&k_table, &c, "save", "/a b/it's"), QN_OK);
    d = dump_to_string(&c, NULL);
    assert_null(strstr(d, "#"));
    assert_contains(d, "--save='/a b/it'\\''s'");
    free(d);
    qn_flags_free(&k_table, &c);

    /* an unset string is shown as unset, not as an empty value */
    assert_int_equal(qn_flags_defaults(&k_table, &c), QN_OK);
    d = dump_to_string(&c, NULL);
    assert_contains(d, "# --redis (unset)");
    free(d);
    qn_flags_free(&k_table, &c);
}

/* The dump is a command line: parsing its unquoted lines gives back the same
 * configuration (secrets and unset strings excepted). */
static void test_dump_round_trip(void **state) {
    test_cfg a, b;
    assert_int_equal(parse_line(&a, NULL, "--rollout-batch-size 777 --rollout-temperature "
                                          "0.1 --use-kl-loss --no-apply-chat-template "
                                          "--kl-loss-type low_var_kl --save /s --block-size 3 5 "
                                          "--weights 0.3,-0.7,0.123456789012345 --rollout-stop "
                                          "x,y --seed -2 --lr 2.5e-7 --min-tokens -3"),
                     QN_OK);
    char *d = dump_to_string(&a, NULL);
    argvec v;
    v.argc = 1;
    v.argv[0] = "test";
    char *save = NULL;
    for (char *ln = strtok_r(d, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        while (*ln == ' ') ln++;
        char *end = ln + strlen(ln);
        while (end > ln && end[-1] == ' ') *--end = '\0';
        if (ln[0] == '#' || strstr(ln, "<hidden>")) continue;
        assert_null(strchr(ln, '\'')); /* nothing here needs quoting */
        v.argv[v.argc++] = ln;
    }
    v.argv[v.argc] = NULL;
    assert_int_equal(v.argc, (int)k_table.n_flags); /* redis unset: skipped */
    assert_int_equal(qn_flags_parse(&k_table, &b, v.argc, v.argv, NULL), QN_OK);
    assert_int_equal(a.rollout_batch_size, b.rollout_batch_size);
    assert_true(a.temperature == b.temperature);
    assert_int_equal(a.use_kl_loss, b.use_kl_loss);
    assert_int_equal(a.apply_chat_template, b.apply_chat_template);
    assert_int_equal(a.kl_loss_type, b.kl_loss_type);
    assert_string_equal(a.save, b.save);
    assert_int_equal(a.block_size.n, b.block_size.n);
    assert_memory_equal(a.block_size.v, b.block_size.v, a.block_size.n * sizeof(int64_t));
    assert_int_equal(a.weights.n, b.weights.n);
    for (size_t i = 0; i < a.weights.n; i++) assert_true(a.weights.v[i] == b.weights.v[i]);
    assert_int_equal(a.stop.n, b.stop.n);
    assert_string_equal(a.stop.v[1], b.stop.v[1]);
    assert_int_equal(a.seed, b.seed);
    assert_true(a.lr == b.lr);
    assert_int_equal(a.n_min, b.n_min);
    free(d);
    qn_flags_free(&k_table, &a);
    qn_flags_free(&k_table, &b);
}

static void test_log_dump(void **state) {
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    qn_log_set_stream(mem);
    test_cfg c;
    assert_int_equal(qn_flags_defaults(&k_table, &c), QN_OK);
    qn_flags_log(&k_table, &c, NULL);
    fflush(mem);
    qn_log_set_stream(NULL);
    fclose(mem);
    assert_contains(buf, "] test configuration:\n");
    assert_contains(buf, "]   --rollout-batch-size=32");
    free(buf);
    qn_flags_free(&k_table, &c);
}

static void test_json(void **state) {
    test_cfg c;
    assert_int_equal(parse_line(&c, NULL, "--rollout-batch-size 8 --redis r://pw --weights 0.5 "
                                          "--kl-loss-type k2 --use-kl-loss"),
                     QN_OK);
    char *js = NULL;
    assert_int_equal(qn_flags_to_json(&k_table, &c, &js), QN_OK);
    cJSON *o = cJSON_Parse(js);
    assert_non_null(o);
    assert_int_equal(cJSON_GetArraySize(o), (int)k_table.n_flags);
    assert_true(cJSON_GetObjectItem(o, "rollout-batch-size")->valuedouble == 8);
    assert_true(cJSON_GetObjectItem(o, "rollout-temperature")->valuedouble == 0.8);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(o, "use-kl-loss")));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(o, "apply-chat-template")));
    assert_string_equal(cJSON_GetObjectItem(o, "kl-loss-type")->valuestring, "k2");
    assert_string_equal(cJSON_GetObjectItem(o, "save")->valuestring, "/tmp/ckpt");
    assert_string_equal(cJSON_GetObjectItem(o, "redis")->valuestring, "<hidden>");
    cJSON *bs = cJSON_GetObjectItem(o, "block-size");
    assert_int_equal(cJSON_GetArraySize(bs), 2);
    assert_true(cJSON_GetArrayItem(bs, 1)->valuedouble == 128);
    assert_true(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "weights"), 0)->valuedouble == 0.5);
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "rollout-stop"), 0)->valuestring,
                        "</s>");
    cJSON_Delete(o);
    free(js);
    qn_flags_free(&k_table, &c);
    /* an unset string is null */
    assert_int_equal(qn_flags_defaults(&k_table, &c), QN_OK);
    assert_int_equal(qn_flags_to_json(&k_table, &c, &js), QN_OK);
    o = cJSON_Parse(js);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "redis")));
    cJSON_Delete(o);
    free(js);
    qn_flags_free(&k_table, &c);
}

static void test_set_find_choice_name(void **state) {
    test_cfg c;
    assert_int_equal(qn_flags_defaults(&k_table, &c), QN_OK);
    assert_int_equal(qn_flags_set(&k_table, &c, "seed", "42"), QN_OK);
    assert_int_equal(c.seed, 42);
    assert_int_equal(qn_flags_set(&k_table, &c, "rollout-batch-size", "0"), QN_ERR_RANGE);
    assert_int_equal(c.rollout_batch_size, 32);
    assert_int_equal(qn_flags_set(&k_table, &c, "nope", "1"), QN_ERR_NOT_FOUND);
    assert_contains(qn_last_error(), "--nope");
    assert_int_equal(qn_flags_set(&k_table, &c, "save", "/new"), QN_OK);
    assert_string_equal(c.save, "/new");
    qn_flags_free(&k_table, &c);
    assert_null(qn_flags_find(&k_table, "rollout"));
    const qn_flag *f = qn_flags_find(&k_table, "kl-loss-type");
    char buf[32];
    assert_string_equal(qn_flags_choice_name(f, 0, buf, sizeof buf), "k1");
    assert_string_equal(qn_flags_choice_name(f, 3, buf, sizeof buf), "low_var_kl");
    assert_string_equal(qn_flags_choice_name(f, 4, buf, sizeof buf), "");
    assert_string_equal(qn_flags_choice_name(f, -1, buf, sizeof buf), "");
    assert_string_equal(qn_flags_choice_name(f, 3, buf, 4), "low");
    qn_flags_free(&k_table, NULL);
    qn_flags_parsed_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_table_valid, clear_env),
        cmocka_unit_test_setup(test_defaults, clear_env),
        cmocka_unit_test_setup(test_cli_every_type, clear_env),
        cmocka_unit_test_setup(test_bool_forms, clear_env),
        cmocka_unit_test_setup(test_lists, clear_env),
        cmocka_unit_test_setup(test_positional, clear_env),
        cmocka_unit_test_setup(test_repeated_last_wins, clear_env),
        cmocka_unit_test_setup(test_print_config_flag, clear_env),
        cmocka_unit_test_setup(test_env_precedence, clear_env),
        cmocka_unit_test_setup(test_env_errors_name_variable, clear_env),
        cmocka_unit_test_setup(test_int_errors, clear_env),
        cmocka_unit_test_setup(test_float_errors, clear_env),
        cmocka_unit_test_setup(test_choice_bool_string_errors, clear_env),
        cmocka_unit_test_setup(test_missing_value, clear_env),
        cmocka_unit_test_setup(test_list_errors, clear_env),
        cmocka_unit_test_setup(test_unknown_flag, clear_env),
        cmocka_unit_test_setup(test_required, clear_env),
        cmocka_unit_test_setup(test_validate_table_errors, clear_env),
        cmocka_unit_test_setup(test_help_lists_every_flag, clear_env),
        cmocka_unit_test_setup(test_dump, clear_env),
        cmocka_unit_test_setup(test_dump_round_trip, clear_env),
        cmocka_unit_test_setup(test_log_dump, clear_env),
        cmocka_unit_test_setup(test_json, clear_env),
        cmocka_unit_test_setup(test_set_find_choice_name, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
