/* flags.h — one table per subcommand drives command-line parsing, bounds and
 * type checks, environment overrides, --help and the dump of the effective
 * configuration (DESIGN.md "Configuration"; the shape follows Redis's config
 * table: name, type, bounds, default, destination).
 *
 * A command declares a config struct and a table of qn_flag entries that
 * point into it with offsetof (use the QN_F_* macros below), then:
 *
 *   typedef struct train_cfg { int64_t rollout_batch_size; double lr; bool use_kl_loss;
 *                              int kl_loss_type; char *save; qn_int_list block_size; } train_cfg;
 *   static const qn_flag k_train_flags[] = {
 *       QN_F_INT(train_cfg, rollout_batch_size, "rollout-batch-size", "32", 1, 1048576,
 *                "prompts per rollout step"),
 *       QN_F_FLOAT(train_cfg, lr, "lr", "1e-6", 0, 1, "learning rate"),
 *       QN_F_BOOL(train_cfg, use_kl_loss, "use-kl-loss", "false", "add a KL loss term"),
 *       QN_F_CHOICE(train_cfg, kl_loss_type, "kl-loss-type", "k1", "k1|k2|k3|low_var_kl",
 *                   "KL estimator"),
 *       QN_F_STRING(train_cfg, save, "save", NULL, "checkpoint folder",
 *                   .attrs = QN_FLAG_REQUIRED, .metavar = "DIR"),
 *       QN_F_INT_LIST(train_cfg, block_size, "block-size", "128,128", 1, 4096, "FP8 tile"),
 *   };
 *   static const qn_flag_table k_train_table = {
 *       .command = "train", .usage = "quench train [flags]", .summary = "GRPO trainer.",
 *       .flags = k_train_flags, .n_flags = QN_FLAGS_COUNT(k_train_flags),
 *       .cfg_size = sizeof(train_cfg)};
 *
 *   train_cfg cfg; qn_flags_parsed p;
 *   if (qn_flags_parse(&k_train_table, &cfg, argc, argv, &p) != QN_OK) {
 *       fprintf(stderr, "quench train: %s\n", qn_last_error()); return QN_EXIT_USAGE; }
 *   qn_flags_log(&k_train_table, &cfg, &p);      // effective configuration at start
 *   ...
 *   qn_flags_parsed_free(&p); qn_flags_free(&k_train_table, &cfg);
 *
 * Field types: BOOL -> bool, INT -> int64_t, FLOAT -> double, STRING -> char *
 * (owned by cfg, NULL when unset), CHOICE -> int (index into the choices;
 * order an enum the same way), INT_LIST -> qn_int_list, FLOAT_LIST ->
 * qn_float_list, STRING_LIST -> qn_string_list (elements owned by cfg).
 * The QN_F_* macros make the compiler diagnose a field of the wrong type
 * (-Wincompatible-pointer-types: an error under -Werror and in GCC >= 14).
 *
 * Syntax on the command line (argv[0] is the command name and is skipped):
 *   --name value, --name=value      any non-bool flag; a scalar value may start
 *                                    with '-' ("--min -1"), but not with "--"
 *   --flag, --no-flag               bool (store_true, like slime); also
 *   --flag=true|false               (1/0, yes/no, on/off; case-insensitive)
 *   --block-size 128 128            lists take the following tokens up to the next
 *   --block-size 128,128            one that starts with "--" (argparse nargs='+'),
 *   --block-size=128,128            each split on commas; "--name=" gives an empty
 *                                    list. Put positional arguments before list
 *                                    flags, or after "--".
 *   --                              everything after it is positional
 *   --print-config                  built in: sets parsed.print_config (the command
 *                                    should dump the configuration and exit 0)
 * A repeated flag replaces the earlier value (lists too): the last one wins.
 * There are no abbreviations and no short flags; -h/--help is intercepted by
 * cli/main.c before the command runs.
 *
 * Precedence: table default < environment QN_<NAME> (upper case, '-' -> '_',
 * e.g. QN_ROLLOUT_BATCH_SIZE; same syntax as "--name=value") < command line.
 * A set-but-bad environment value is an error even when the command line
 * also gives the flag (a stale export should not go unnoticed).
 * Errors name the flag, the accepted form and the offending text, and name the
 * environment variable when the value came from there:
 *   --rollout-batch-size expects an integer in [1, 1048576], got '12x'
 *   QN_ROLLOUT_BATCH_SIZE (--rollout-batch-size) expects ..., got '0'
 *   unknown flag --rollout-batch for 'train'; did you mean --rollout-batch-size?
 *
 * Numbers: INT is a decimal int64 ("12", "-3", "+7"; no "12x", "1e3", " 12",
 * overflow is an error). FLOAT is strtod syntax, finite, not over- or
 * underflowing ("1e-6", "0.8"; no "inf", "nan", "1e999"). Bounds are
 * inclusive; min == max == 0 means unbounded; use -INFINITY / INFINITY for a
 * one-sided bound ("an integer >= 1"). List elements obey the same bounds.
 *
 * Not here: short options, abbreviations, config files, sub-sub-commands.
 */
#ifndef QN_CORE_FLAGS_H
#define QN_CORE_FLAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "quench/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum qn_flag_type {
    QN_FLAG_BOOL,
    QN_FLAG_INT,
    QN_FLAG_FLOAT,
    QN_FLAG_STRING,
    QN_FLAG_CHOICE,
    QN_FLAG_INT_LIST,
    QN_FLAG_FLOAT_LIST,
    QN_FLAG_STRING_LIST,
} qn_flag_type;

/* qn_flag.attrs bits */
enum {
    QN_FLAG_REQUIRED = 1u << 0, /* must come from the environment or command line */
    QN_FLAG_SECRET = 1u << 1,   /* value shown as <hidden> in dumps (passwords in URLs) */
};

typedef struct qn_int_list {
    int64_t *v; /* n elements, malloc'd, owned by the config */
    size_t n;
} qn_int_list;

typedef struct qn_float_list {
    double *v;
    size_t n;
} qn_float_list;

typedef struct qn_string_list {
    char **v; /* n malloc'd strings in a malloc'd array */
    size_t n;
} qn_string_list;

typedef struct qn_flag {
    const char *name; /* long name without dashes, slime's spelling: "rollout-batch-size" */
    qn_flag_type type;
    uint32_t attrs;      /* QN_FLAG_REQUIRED | QN_FLAG_SECRET */
    size_t offset;       /* offsetof(config struct, field) */
    size_t size;         /* sizeof(field); checked against the type */
    const char *def;     /* default, in command-line syntax; NULL: false/0/NULL/empty list,
                          * first choice */
    double min, max;     /* inclusive bounds of INT/FLOAT and list elements; 0,0: none */
    const char *choices; /* CHOICE only: "k1|k2|k3|low_var_kl" */
    const char *metavar; /* shown in help ("PATH", "URL"); NULL: derived from the type */
    const char *help;    /* one line, lower case, no final period */
} qn_flag;

typedef struct qn_flag_table {
    const char *command; /* "train" (for messages) */
    const char *usage;   /* "quench train [flags]" */
    const char *summary; /* a paragraph printed under the usage; may be NULL */
    const qn_flag *flags;
    size_t n_flags;
    size_t cfg_size; /* sizeof(config struct); fields must lie inside it */
} qn_flag_table;

typedef enum qn_flag_source {
    QN_FLAG_FROM_DEFAULT = 0,
    QN_FLAG_FROM_ENV = 1,
    QN_FLAG_FROM_CLI = 2,
} qn_flag_source;

/* What a parse leaves besides the config: positional arguments and where each
 * flag's value came from. Release with qn_flags_parsed_free. */
typedef struct qn_flags_parsed {
    char **args;             /* positional arguments, in order; the strings belong to argv */
    size_t n_args;
    qn_flag_source *sources; /* n_flags entries, same order as the table */
    bool print_config;       /* --print-config was given */
} qn_flags_parsed;

#define QN_FLAGS_COUNT(arr) (sizeof(arr) / sizeof((arr)[0]))

/* Entry macros. The trailing arguments are further designated initialisers:
 * QN_F_STRING(cfg_t, save, "save", NULL, "checkpoint folder", .attrs = QN_FLAG_REQUIRED).
 * The pointer compound literal in .size makes the compiler diagnose a field
 * whose type does not match the flag type (int64_t for INT, int for CHOICE). */
#define QN_F_FIELD_(T, field, ctype) \
    .offset = offsetof(T, field), .size = sizeof(*(ctype *){&((T *)0)->field})
#define QN_F_BOOL(T, field, name_, def_, help_, ...)                                        \
    {.name = (name_), .type = QN_FLAG_BOOL, QN_F_FIELD_(T, field, bool), .def = (def_),      \
     .help = (help_), __VA_ARGS__}
#define QN_F_INT(T, field, name_, def_, min_, max_, help_, ...)                              \
    {.name = (name_), .type = QN_FLAG_INT, QN_F_FIELD_(T, field, int64_t), .def = (def_),    \
     .min = (min_), .max = (max_), .help = (help_), __VA_ARGS__}
#define QN_F_FLOAT(T, field, name_, def_, min_, max_, help_, ...)                            \
    {.name = (name_), .type = QN_FLAG_FLOAT, QN_F_FIELD_(T, field, double), .def = (def_),   \
     .min = (min_), .max = (max_), .help = (help_), __VA_ARGS__}
#define QN_F_STRING(T, field, name_, def_, help_, ...)                                      \
    {.name = (name_), .type = QN_FLAG_STRING, QN_F_FIELD_(T, field, char *), .def = (def_),  \
     .help = (help_), __VA_ARGS__}
#define QN_F_CHOICE(T, field, name_, def_, choices_, help_, ...)                            \
    {.name = (name_), .type = QN_FLAG_CHOICE, QN_F_FIELD_(T, field, int), .def = (def_),     \
     .choices = (choices_), .help = (help_), __VA_ARGS__}
#define QN_F_INT_LIST(T, field, name_, def_, min_, max_, help_, ...)                         \
    {.name = (name_), .type = QN_FLAG_INT_LIST, QN_F_FIELD_(T, field, qn_int_list),          \
     .def = (def_), .min = (min_), .max = (max_), .help = (help_), __VA_ARGS__}
#define QN_F_FLOAT_LIST(T, field, name_, def_, min_, max_, help_, ...)                       \
    {.name = (name_), .type = QN_FLAG_FLOAT_LIST, QN_F_FIELD_(T, field, qn_float_list),      \
     .def = (def_), .min = (min_), .max = (max_), .help = (help_), __VA_ARGS__}
#define QN_F_STRING_LIST(T, field, name_, def_, help_, ...)                                 \
    {.name = (name_), .type = QN_FLAG_STRING_LIST, QN_F_FIELD_(T, field, qn_string_list),    \
     .def = (def_), .help = (help_), __VA_ARGS__}

/* Checks a table for programming errors: names ([a-z0-9][a-z0-9-]*, unique,
 * not "help"/"print-config", no "no-x" beside a bool "x"), known types, field
 * size matching the type, fields inside cfg_size and not overlapping, bounds
 * (finite or infinite, not NaN, min <= max), choices (CHOICE only, non-empty,
 * distinct), a help text, and every default (or the zero value when def is
 * NULL and the flag is not required) parsing and lying in range. Returns
 * QN_ERR_INTERNAL with a message naming the command and flag. qn_flags_parse
 * and qn_flags_defaults call it first; a test should call it on every table. */
qn_status qn_flags_validate_table(const qn_flag_table *t);

/* Zeroes cfg (cfg_size bytes) and stores every default. On failure cfg holds
 * nothing that needs freeing. */
qn_status qn_flags_defaults(const qn_flag_table *t, void *cfg);

/* Fills cfg (which need not be initialised: it is zeroed first) from the
 * defaults, then QN_<NAME> environment variables, then argv[1..argc-1], and
 * checks required flags. On success cfg owns its strings and lists (release
 * with qn_flags_free) and *out (if out is not NULL) holds the positional
 * arguments and sources (release with qn_flags_parsed_free); with out NULL a
 * positional argument is an error. On failure nothing needs releasing (cfg
 * owns nothing, *out is empty), and qn_last_error() says which flag, what it
 * accepts and what it got: QN_ERR_INVALID (unknown flag, missing value,
 * missing required flag, positional argument not accepted), QN_ERR_FORMAT
 * (malformed value, bad choice), QN_ERR_RANGE (out of bounds, overflow),
 * QN_ERR_INTERNAL (bad table), QN_ERR_NOMEM. */
qn_status qn_flags_parse(const qn_flag_table *t, void *cfg, int argc, char **argv,
                         qn_flags_parsed *out);

/* Sets one flag of an already initialised cfg from text in command-line
 * syntax ("32", "true", "128,128", "k3"), with the same checks as parsing;
 * the old value is freed. For code that builds configs (the launcher, tests).
 * QN_ERR_NOT_FOUND for an unknown name. On failure the old value stays. */
qn_status qn_flags_set(const qn_flag_table *t, void *cfg, const char *name, const char *value);

/* The entry named `name` (without dashes), or NULL. */
const qn_flag *qn_flags_find(const qn_flag_table *t, const char *name);

/* Frees what cfg owns (strings, lists) and zeroes those fields; NULL cfg ok. */
void qn_flags_free(const qn_flag_table *t, void *cfg);
void qn_flags_parsed_free(qn_flags_parsed *p);

/* The choice text of a CHOICE flag's index ("k3"), written into buf (cap
 * bytes); "" when the index is out of range. Returns buf. */
const char *qn_flags_choice_name(const qn_flag *f, int index, char *buf, size_t cap);

/* Writes the usage, the summary, then per flag:
 *     --rollout-batch-size N
 *         prompts per rollout step
 *         integer in [1, 1048576]; default 32; env QN_ROLLOUT_BATCH_SIZE
 * and a closing note on QN_<FLAG> and list syntax. Commands' help functions
 * call this. A table that fails validation gets its error printed to stderr. */
void qn_flags_print_help(const qn_flag_table *t, FILE *out);

/* Writes the effective configuration, one flag per line, in a form that
 * parses back as a command line (secret values excepted):
 *     --rollout-batch-size=32            # default
 *     --save='/ckpt/run 1'               # env QN_SAVE
 *     --block-size=128,128               # cli
 * p may be NULL (no sources shown). Floats are printed with the fewest
 * digits that read back to the same double. */
void qn_flags_dump(const qn_flag_table *t, const void *cfg, const qn_flags_parsed *p,
                   FILE *out);

/* The same lines as qn_flags_dump, each through QN_LOG_INFO, preceded by a
 * "<command> configuration:" line: what every process logs at start. */
void qn_flags_log(const qn_flag_table *t, const void *cfg, const qn_flags_parsed *p);

/* The effective configuration as a JSON object {"rollout-batch-size": 32,
 * ...} (bools, numbers, strings or null, choice names, arrays), for run
 * metadata files. *json is malloc'd (caller frees). Secrets are "<hidden>". */
qn_status qn_flags_to_json(const qn_flag_table *t, const void *cfg, char **json);

/* Writes s to out as one shell word: as is when it holds only plain
 * characters (letters, digits, _./:,@%+=-), else in single quotes with each
 * ' as '\''. Dumps and printed command lines can be pasted back. */
void qn_flags_write_quoted(FILE *out, const char *s);

#ifdef __cplusplus
}
#endif
#endif /* QN_CORE_FLAGS_H */
