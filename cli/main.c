/* main.c — the quench binary: subcommand dispatch, --version, help.
 *
 * This is the only place in quench that calls exit (by returning from
 * main); library code reports errors as qn_status values. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "core/log.h"


static int cmd_help(int argc, char **argv);
static void help_help(FILE *out);
static int cmd_version(int argc, char **argv);
static void help_version(FILE *out);

static const qn_command k_commands[] = {
    {"help", "show the commands, or one command's flags", cmd_help, help_help},
    {"version", "print the version and build options", cmd_version, help_version},
    {"reward", "score a JSONL file of samples with a reward function", qn_cmd_reward, qn_help_reward},
    {"init-model", "write a randomly initialised model for a config.json", qn_cmd_init_model, qn_help_init_model},
    {"logprobs", "per-token log-probs and entropies of a model on JSONL sequences", qn_cmd_logprobs, qn_help_logprobs},
    {"grad", "gradients of sum(dlogp*logp + dentropy*entropy) as safetensors", qn_cmd_grad, qn_help_grad},
    {"bench", "benchmarks with a reference ratio (quench bench model)", qn_cmd_bench, qn_help_bench},
    {"model-info", "print what quench reads from a config.json, as JSON", qn_cmd_model_info, qn_help_model_info},
    {"convert", "rewrite a checkpoint as FP8 blocks (DeepSeek-V3 convention), bf16 or fp32", qn_cmd_convert, qn_help_convert},
    {"tokenize", "text to token ids and back, chat templates, tokenizer.json export", qn_cmd_tokenize, qn_help_tokenize},
    {"train-step", "the GRPO/SFT optimizer steps of a JSONL batch (AdamW, checkpoints)", qn_cmd_train_step, qn_help_train_step},
    {"train", "the GRPO trainer rank: rollouts from the buffer, checkpoints, weight updates", qn_cmd_train, qn_help_train},
    {"generate", "offline batch generation with the rollout engine (JSONL in, JSONL out)", qn_cmd_generate, qn_help_generate},
    {"rollout", "a rollout engine serving a router (register, generate, weight updates, drain)", qn_cmd_rollout, qn_help_rollout},
    {"router", "the request router: engine registry, dispatch, weight updates, HTTP API", qn_cmd_router, qn_help_router},
    {"buffer", "the data buffer: prompts, groups, rewards, advantages, rollouts in Redis for trainers", qn_cmd_buffer, qn_help_buffer},
    {"plot", "PNG charts of a run's metrics.jsonl (reward, KL, entropy, step time, ...)", qn_cmd_plot, qn_help_plot},
    {"eval", "the evaluation process: held-out accuracy of the served weights at eval points", qn_cmd_eval, qn_help_eval},
    {"launch", "run a whole GRPO job: Redis, router, buffer, engines, eval, trainer ranks", qn_cmd_launch, qn_help_launch},
};
static const size_t k_n_commands = sizeof k_commands / sizeof k_commands[0];

static const qn_command *find_command(const char *name) {
    for (size_t i = 0; i < k_n_commands; i++) {
        if (strcmp(k_commands[i].name, name) == 0) return &k_commands[i];
    }
    return NULL;
}

static void print_overview(FILE *out) {
    fprintf(out,
            "quench %s — reinforcement-learning post-training for LLMs\n\n"
            "usage: quench <command> [flags]\n"
            "       quench help <command>   flags of one command\n"
            "       quench --version\n\n"
            "commands:\n",
            QN_VERSION);
    for (size_t i = 0; i < k_n_commands; i++) {
        fprintf(out, "  %-14s %s\n", k_commands[i].name, k_commands[i].summary);
    }
    fprintf(out, "\nEvery flag can also be set as an environment variable QN_<FLAG>\n"
                 "(upper case, '-' as '_'); a flag on the command line wins.\n");
}

static void help_help(FILE *out) {
    fprintf(out, "usage: quench help [command]\n\n"
                 "Without a command, lists the commands. With one, prints its flags,\n"
                 "their types, defaults and accepted ranges.\n");
}

static int cmd_help(int argc, char **argv) {
    if (argc < 2) {
        print_overview(stdout);
        return QN_EXIT_OK;
    }
    const qn_command *c = find_command(argv[1]);
    if (!c) {
        fprintf(stderr, "quench: unknown command '%s'; `quench help` lists the commands\n", argv[1]);
        return QN_EXIT_USAGE;
    }
    c->help(stdout);
    return QN_EXIT_OK;
}

static void help_version(FILE *out) {
    fprintf(out, "usage: quench version   (or quench --version)\n\n"
                 "Prints the version and the options this binary was built with.\n");
}

static int cmd_version(int argc, char **argv) {
#ifdef QN_HAVE_CUDA
    const char *cuda = "cuda";
#else
    const char *cuda = "no-cuda";
#endif
    printf("quench %s (%s)\n", QN_VERSION, cuda);
    return QN_EXIT_OK;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        print_overview(stderr);
        return QN_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--version") == 0 || strcmp(name, "-V") == 0) return cmd_version(argc - 1, argv + 1);
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) return cmd_help(1, argv + 1);
    const qn_command *c = find_command(name);
    if (!c) {
        fprintf(stderr, "quench: unknown command '%s'; `quench help` lists the commands\n", name);
        return QN_EXIT_USAGE;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            c->help(stdout);
            return QN_EXIT_OK;
        }
    }
    /* A peer that goes away must be an error return from write(), not a
     * signal that kills the process: every service talks to sockets. */
    signal(SIGPIPE, SIG_IGN);
    qn_log_init(c->name, -1);
    return c->run(argc - 1, argv + 1);
}
