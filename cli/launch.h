/* launch.h — internal interface of `quench launch` (cli/cmd_launch.c), split
 * into the plan (cli/launch_plan.c: one command line split among the
 * processes of a job, placement on nodes and GPUs, the dry-run printout),
 * the model arguments (cli/launch_model.c: Megatron-style architecture
 * flags checked against the checkpoint's config.json) and the supervisor
 * (cli/launch_run.c: starting, logging, restarting and tearing down the
 * processes).
 *
 * A job is a list of processes, each with a role, a node, its GPUs (none on
 * a CPU job), the argv of a `quench` subcommand and extra environment. The
 * first node is the one the launcher runs on: its processes are started
 * directly; the others through ssh (--hostfile) or srun (Slurm). */
#ifndef QN_CLI_LAUNCH_H
#define QN_CLI_LAUNCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "quench/status.h"

typedef enum ln_role {
    LN_REDIS,
    LN_ROUTER,
    LN_BUFFER,
    LN_ENGINE,
    LN_EVAL,
    LN_TRAINER,
    LN_N_ROLES
} ln_role;

/* The command each role runs ("redis-server" for LN_REDIS). */
const char *ln_role_command(ln_role r);

/* A growable list of owned strings (an argv or an environment). */
typedef struct ln_strv {
    char **v;
    size_t n, cap;
} ln_strv;

qn_status ln_strv_push(ln_strv *s, const char *x);
qn_status ln_strv_pushf(ln_strv *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ln_strv_free(ln_strv *s);

typedef enum ln_mode { LN_MODE_LOCAL, LN_MODE_SSH, LN_MODE_SLURM } ln_mode;

typedef struct ln_node {
    char host[256]; /* as named (hostfile, Slurm): the ssh / srun target, may be user@host */
    char addr[64];  /* its IPv4 address: what the node's processes bind to and are reached at */
    int slots;      /* GPUs of the node (hostfile slots, --num-gpus-per-node), 0 on CPU */
} ln_node;

typedef struct ln_proc {
    char name[48]; /* "router", "engine-0", "trainer-1" (log file name) */
    ln_role role;
    int index;     /* engine or trainer rank number, 0 for the singletons */
    int node;      /* index into ln_plan.nodes */
    char gpus[512]; /* "0,1,2,3" (CUDA_VISIBLE_DEVICES) or "" */
    ln_strv argv;  /* argv[0] is the program */
    ln_strv env;   /* "K=V" added to the environment */
    /* supervision state (cli/launch_run.c) */
    pid_t pid;        /* 0: not running */
    int restarts;     /* times restarted so far */
    int generation;   /* incremented per start; engines get a new --engine-id each start */
    bool exited;      /* ended and not restarted */
    int exit_status;  /* waitpid status of the last end */
    double restart_at; /* monotonic time of a pending restart, 0: none */
    int64_t log_off;  /* bytes of the log already streamed to the terminal */
    int stop_fd;      /* remote: the write end of its ssh stdin (closing it ends it), else 0 */
    int log_rfd;      /* its log, open for reading (the terminal stream), 0 before its start */
} ln_proc;

typedef struct ln_plan {
    ln_mode mode;
    ln_node *nodes;
    size_t n_nodes;
    ln_proc *procs;
    size_t n_procs;
    char run_dir[2048];
    char quench[2048];    /* path of the quench binary the processes run */
    char redis_url[512];  /* URL the processes use */
    bool own_redis;       /* the launcher starts redis-server */
    int redis_port;       /* its port on node 0 */
    char job[128];
    char ssh_command[512];
    char srun_command[512];
    int engine_restarts;
    int64_t num_rollout;
    int n_engines, n_trainers;
    bool colocate, async, resume, has_eval;
    int stream; /* 0 none, 1 warnings and errors, 2 everything */
    int lock_fd; /* RUN_DIR/launch.lock, held (flock) from the plan on; -1 for a dry run */
} ln_plan;

/* Parses the launcher's command line (argv[0] = "launch") into a plan. With
 * --load RUN_DIR the saved arguments of that run come first and the given
 * ones override them. Prints the dry-run plan instead when asked, setting
 * *dry_run. */
qn_status ln_plan_build(int argc, char **argv, ln_plan *plan, bool *dry_run);
void ln_plan_free(ln_plan *plan);

/* Prints the plan: nodes, then every process with its node, GPUs,
 * environment and full command line. */
void ln_plan_print(const ln_plan *plan, FILE *out);

/* Runs the job until it ends: returns the launcher's exit status (0 when the
 * trainer ranks, the buffer and the evaluation all finished cleanly). */
int ln_run(ln_plan *plan);

/* Megatron-style model architecture flags (scripts/models/<model>.sh). */
typedef struct ln_model_args ln_model_args;
/* True when name (without dashes) is a model architecture flag. */
bool ln_model_is_flag(const char *name, bool *is_bool, bool *is_list);
qn_status ln_model_args_new(ln_model_args **out);
/* Records one flag with its values (tokens after the flag, or "=value"). */
qn_status ln_model_args_set(ln_model_args *m, const char *name, char **vals, size_t n_vals,
                            bool negated);
/* With checkpoint_dir holding config.json: checks every given flag against
 * it (an error names the flag, the config key and both values). Without
 * one, an error, except in a dry run, which describes the model from the
 * flags. Writes a description of the model (type, layers, parameter
 * counts) to desc. */
qn_status ln_model_args_check(const ln_model_args *m, const char *checkpoint_dir, bool dry_run,
                              char *desc, size_t desc_size);
void ln_model_args_free(ln_model_args *m);

#endif
