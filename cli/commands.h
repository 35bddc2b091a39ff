/* commands.h — the subcommands of the quench binary.
 *
 * Every process and tool is a subcommand: `quench <command> [flags]`. A
 * command's run function gets argv starting at the command name and returns
 * the process exit status (0 ok, 1 failure, 2 usage error). Its help
 * function prints the usage, generated from the command's flag table where
 * it has one. To add a command, write cli/cmd_<name>.c and add one line to
 * the table in cli/main.c. */
#ifndef QN_CLI_COMMANDS_H
#define QN_CLI_COMMANDS_H

#include <stdio.h>

typedef struct qn_command {
    const char *name;
    const char *summary; /* one line for `quench help` */
    int (*run)(int argc, char **argv);
    void (*help)(FILE *out);
} qn_command;

/* Exit codes shared by all commands. */
enum { QN_EXIT_OK = 0, QN_EXIT_FAILURE = 1, QN_EXIT_USAGE = 2 };

/* rewards (cli/cmd_reward.c) */
int qn_cmd_reward(int argc, char **argv);
void qn_help_reward(FILE *out);

/* core/model tools (cli/cmd_init_model.c, cli/cmd_logprobs.c) */
int qn_cmd_init_model(int argc, char **argv);
void qn_help_init_model(FILE *out);
int qn_cmd_logprobs(int argc, char **argv);
void qn_help_logprobs(FILE *out);
int qn_cmd_grad(int argc, char **argv);
void qn_help_grad(FILE *out);
/* benchmarks with in-run reference ratios (cli/cmd_bench.c) */
int qn_cmd_bench(int argc, char **argv);
void qn_help_bench(FILE *out);

/* config.json inspection (cli/cmd_model_info.c) */
int qn_cmd_model_info(int argc, char **argv);
void qn_help_model_info(FILE *out);

/* checkpoint dtype conversion, FP8 block quantisation (cli/cmd_convert.c) */
int qn_cmd_convert(int argc, char **argv);
void qn_help_convert(FILE *out);

/* tokenizer tool (cli/cmd_tokenize.c) */
int qn_cmd_tokenize(int argc, char **argv);
void qn_help_tokenize(FILE *out);

/* one trainer optimizer step on a JSONL batch (cli/cmd_train_step.c) */
int qn_cmd_train_step(int argc, char **argv);
void qn_help_train_step(FILE *out);
/* the long-running GRPO trainer rank fed by `quench buffer` (cli/cmd_train.c) */
int qn_cmd_train(int argc, char **argv);
void qn_help_train(FILE *out);

/* offline batch generation with the rollout engine (cli/cmd_generate.c) */
int qn_cmd_generate(int argc, char **argv);
void qn_help_generate(FILE *out);

/* a rollout engine serving a router (cli/cmd_rollout.c, cli/rollout_service.c) */
int qn_cmd_rollout(int argc, char **argv);
void qn_help_rollout(FILE *out);

/* the request router service (cli/cmd_router.c, cli/router*.c) */
int qn_cmd_router(int argc, char **argv);
void qn_help_router(FILE *out);

/* the data buffer service (cli/cmd_buffer.c, cli/buffer*.c) */
int qn_cmd_buffer(int argc, char **argv);
void qn_help_buffer(FILE *out);

/* PNG charts of a run's metrics.jsonl (cli/cmd_plot.c) */
int qn_cmd_plot(int argc, char **argv);
void qn_help_plot(FILE *out);

/* the evaluation process of a job (cli/cmd_eval.c, cli/eval.c) */
int qn_cmd_eval(int argc, char **argv);
void qn_help_eval(FILE *out);

/* The flag tables of the processes `quench launch` starts: it splits one
 * command line among them by flag name (cli/launch_plan.c). */
struct qn_flag_table;
const struct qn_flag_table *qn_flags_router(void);
const struct qn_flag_table *qn_flags_buffer(void);
const struct qn_flag_table *qn_flags_rollout(void);
const struct qn_flag_table *qn_flags_eval(void);
const struct qn_flag_table *qn_flags_train(void);

/* the job launcher (cli/cmd_launch.c, cli/launch_*.c) */
int qn_cmd_launch(int argc, char **argv);
void qn_help_launch(FILE *out);

#endif
