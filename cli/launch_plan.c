/* launch_plan.c — the plan of a `quench launch` job: one command line split
 * among the processes, their placement on nodes and GPUs, and the dry-run
 * printout.
 *
 * One flat namespace, as slime's train.py has: every flag belongs to the
 * launcher (the table below), to the model architecture flags
 * (cli/launch_model.c), or to the flag table of one or more of the
 * processes (router, buffer, rollout engine, eval, trainer); a flag is given
 * to every process whose table has it (--tokenizer reaches the router, the
 * buffer, the engines and the evaluator), except the flags the launcher sets
 * itself for that process (endpoints, Redis, the job name, the checkpoint
 * and metrics paths: "managed" below), which are refused when given. A
 * flag no table knows is an error naming it. Each process's share is
 * checked with its own table before anything starts.
 *
 * Placement. Node 0 is the machine the launcher runs on (local mode: the
 * only node, 127.0.0.1; --hostfile: the file's first line; Slurm: the first
 * node of SLURM_JOB_NODELIST) and holds Redis, the router, the buffer and
 * the evaluator. Trainer ranks take --actor-num-gpus-per-node GPUs on each
 * of the first --actor-num-nodes nodes; engines take
 * --rollout-num-gpus-per-engine GPUs each, after the trainer's GPUs
 * (decoupled) or on the same GPUs from node 0 on (--colocate). A node's GPU
 * count is its hostfile slots or --num-gpus-per-node; 0 (a CPU job) means
 * no GPU assignment and no capacity limit.
 *
 * Leaves out: engines that span several nodes run as one process on their
 * first node (the multi-node engine is the CUDA backend's), port choice for
 * remote nodes beyond what the processes bind themselves. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netdb.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "cli/commands.h"
#include "cli/launch.h"
#include "cli/launch_hosts.h"
#include "core/flags.h"

/* ------------------------------------------------------------ strv */

qn_status ln_strv_push(ln_strv *s, const char *x) {
    if (s->n + 2 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        char **v = realloc(s->v, cap * sizeof *v);
        if (!v) return qn_fail(QN_ERR_NOMEM, "launch: argument list");
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n] = strdup(x);
    if (!s->v[s->n]) return qn_fail(QN_ERR_NOMEM, "launch: argument list");
    s->n++;
    s->v[s->n] = NULL; /* always NULL-terminated, for execv */
    return QN_OK;
}

qn_status ln_strv_pushf(ln_strv *s, const char *fmt, ...) {
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= sizeof buf) return qn_fail(QN_ERR_RANGE, "launch: argument too long");
    return ln_strv_push(s, buf);
}

void ln_strv_free(ln_strv *s) {
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

const char *ln_role_command(ln_role r) {
    static const char *const k[LN_N_ROLES] = {"redis-server", "router", "buffer",
                                              "rollout",      "eval",   "train"};
    return r < LN_N_ROLES ? k[r] : "?";
}

/* ------------------------------------------------------------ the launcher's flags */

typedef struct launch_cfg {
    char *run_dir, *load, *job, *redis, *hf_checkpoint, *hostfile, *ssh_command, *srun_command,
        *quench_bin;
    int64_t rollout_num_engines, rollout_num_gpus, rollout_num_gpus_per_engine, actor_num_nodes,
        actor_num_gpus_per_node, num_gpus_per_node, engine_restarts, num_rollout;
    bool colocate, async, dry_run;
    int launcher, stream;
} launch_cfg;

enum { LAUNCHER_AUTO, LAUNCHER_LOCAL, LAUNCHER_SSH, LAUNCHER_SLURM };

static const qn_flag k_launch_flags[] = {
    QN_F_STRING(launch_cfg, hf_checkpoint, "hf-checkpoint", NULL,
                "the initial policy (HF folder): engines serve it, the trainer starts from it",
                .attrs = QN_FLAG_REQUIRED, .metavar = "DIR"),
    QN_F_INT(launch_cfg, num_rollout, "num-rollout", NULL, 1, INFINITY,
             "rollouts to generate and train on", .attrs = QN_FLAG_REQUIRED),
    QN_F_STRING(launch_cfg, run_dir, "run-dir", NULL,
                "the job's folder: logs/, metrics.jsonl, checkpoints/, redis/, launch.json "
                "(default runs/<job>-<date>-<time>)", .metavar = "DIR"),
    QN_F_STRING(launch_cfg, load, "load", NULL,
                "resume the job of RUN_DIR: its saved flags (the given ones override them), "
                "its Redis state and the trainer's last checkpoint", .metavar = "RUN_DIR"),
    QN_F_STRING(launch_cfg, job, "job", "quench", "job name (Redis key prefix quench:<job>:)",
                .metavar = "NAME"),
    QN_F_STRING(launch_cfg, redis, "redis", NULL,
                "use this Redis instead of starting redis-server in RUN_DIR/redis",
                .metavar = "URL"),
    QN_F_INT(launch_cfg, rollout_num_engines, "rollout-num-engines", "0", 0, 4096,
             "rollout engines (0: --rollout-num-gpus / --rollout-num-gpus-per-engine, or 1)"),
    QN_F_INT(launch_cfg, rollout_num_gpus, "rollout-num-gpus", "0", 0, 1048576,
             "GPUs of all engines together (slime); 0: --rollout-num-engines decides"),
    QN_F_INT(launch_cfg, rollout_num_gpus_per_engine, "rollout-num-gpus-per-engine", "1", 1,
             1048576, "GPUs of one engine"),
    QN_F_INT(launch_cfg, actor_num_nodes, "actor-num-nodes", "1", 1, 65536,
             "nodes of the trainer"),
    QN_F_INT(launch_cfg, actor_num_gpus_per_node, "actor-num-gpus-per-node", "1", 1, 4096,
             "trainer ranks (one per GPU) on each trainer node"),
    QN_F_INT(launch_cfg, num_gpus_per_node, "num-gpus-per-node", "0", 0, 4096,
             "GPUs of a node in local and Slurm mode (0: a CPU job, no GPU assignment)"),
    QN_F_BOOL(launch_cfg, colocate, "colocate", "false",
              "engines share the trainer's GPUs instead of taking their own"),
    QN_F_BOOL(launch_cfg, async, "async", "false",
              "rollout k+1 is generated while the trainer trains on k (buffer "
              "--max-rollouts-ahead 2); bound the lag with --max-staleness"),
    QN_F_STRING(launch_cfg, hostfile, "hostfile", NULL,
                "nodes, one `HOST slots=N` line each (MPI format); the first is this machine, "
                "the others are reached with --ssh-command", .metavar = "FILE"),
    QN_F_CHOICE(launch_cfg, launcher, "launcher", "auto", "auto|local|ssh|slurm",
                "how processes of other nodes start: auto is slurm when SLURM_JOB_NODELIST is "
                "set, ssh with --hostfile, else local"),
    QN_F_STRING(launch_cfg, ssh_command, "ssh-command", "ssh",
                "the ssh client (words split on spaces), run as CMD HOST 'command'",
                .metavar = "CMD"),
    QN_F_STRING(launch_cfg, srun_command, "srun-command", "srun",
                "srun under Slurm (words split on spaces)", .metavar = "CMD"),
    QN_F_STRING(launch_cfg, quench_bin, "quench-bin", NULL,
                "the quench binary on every node (default: this one's absolute path)",
                .metavar = "PATH"),
    QN_F_INT(launch_cfg, engine_restarts, "engine-restarts", "3", 0, 1000000,
             "times one engine is restarted after it dies before the job stops"),
    QN_F_CHOICE(launch_cfg, stream, "stream", "warn", "none|warn|all",
                "what of the processes' logs is copied to the terminal, prefixed with the "
                "process name"),
    QN_F_BOOL(launch_cfg, dry_run, "dry-run", "false",
              "print the process plan (node, GPUs, environment, command line) and exit"),
};
static const qn_flag_table k_launch_table = {
    .command = "launch",
    .usage = "quench launch --hf-checkpoint DIR --num-rollout N --prompt-data FILE [flags of the\n"
             "       router, buffer, engines, eval and trainer] [--hostfile FILE] [--dry-run]\n"
             "       quench launch --load RUN_DIR [flags to change]",
    .summary =
        "Starts and supervises a GRPO job: Redis (unless --redis), the router, the buffer,\n"
        "the rollout engines, the evaluator (with --eval-prompt-data) and the trainer ranks.\n"
        "Every flag of those processes is accepted here and given to the processes that\n"
        "know it (`quench help launch` lists the launcher's own; see `quench help buffer`,\n"
        "`help train`, `help rollout`, `help eval`, `help router`). Each process logs to\n"
        "RUN_DIR/logs/<name>.log; metrics go to RUN_DIR/metrics.jsonl. A crashed engine is\n"
        "restarted; any other crash, Ctrl-C or SIGTERM stops the whole job. Exit status 0\n"
        "when the job finished.",
    .flags = k_launch_flags,
    .n_flags = QN_FLAGS_COUNT(k_launch_flags),
    .cfg_size = sizeof(launch_cfg)};

void qn_help_launch(FILE *out) { qn_flags_print_help(&k_launch_table, out); }

/* ------------------------------------------------------------ components */

typedef struct component {
    ln_role role;
    const qn_flag_table *(*table)(void);
    /* flags the launcher sets for this process (refused from the user) */
    const char *const *managed;
} component;

static const char *const k_managed_router[] = {"listen", "port-file", "redis", "job", NULL};
static const char *const k_managed_buffer[] = {
    "listen", "port-file", "redis", "job", "router", "metrics-file", "num-rollout",
    "max-rollouts-ahead", NULL};
static const char *const k_managed_engine[] = {"router", "model", "engine-id", NULL};
static const char *const k_managed_eval[] = {"router",       "redis",       "job",
                                             "metrics-file", "num-rollout", NULL};
static const char *const k_managed_trainer[] = {
    "hf-checkpoint", "buffer", "router", "save", "load", "metrics-file", "num-rollout",
    "weight-listen", "weight-advertise", NULL};

static const component k_components[] = {
    {LN_ROUTER, qn_flags_router, k_managed_router},
    {LN_BUFFER, qn_flags_buffer, k_managed_buffer},
    {LN_ENGINE, qn_flags_rollout, k_managed_engine},
    {LN_EVAL, qn_flags_eval, k_managed_eval},
    {LN_TRAINER, qn_flags_train, k_managed_trainer},
};
enum { N_COMPONENTS = sizeof k_components / sizeof k_components[0] };

static const qn_flag *find_flag(const qn_flag_table *t, const char *name) {
    for (size_t i = 0; i < t->n_flags; i++)
        if (strcmp(t->flags[i].name, name) == 0) return &t->flags[i];
    return NULL;
}

static bool is_managed(const component *c, const char *name) {
    for (const char *const *m = c->managed; *m; m++)
        if (strcmp(*m, name) == 0) return true;
    return false;
}

/* ------------------------------------------------------------ splitting argv */

typedef struct split {
    ln_strv launcher;           /* the launcher's own flags (argv[0] = "launch") */
    ln_strv comp[N_COMPONENTS]; /* each component's share (argv[0] = its command) */
    ln_model_args *model;
} split;

static void split_free(split *s) {
    ln_strv_free(&s->launcher);
    for (int i = 0; i < N_COMPONENTS; i++) ln_strv_free(&s->comp[i]);
    ln_model_args_free(s->model);
}

static qn_status split_init(split *s) {
    memset(s, 0, sizeof *s);
    QN_CHECK(ln_strv_push(&s->launcher, "launch"));
    for (int i = 0; i < N_COMPONENTS; i++)
        QN_CHECK(ln_strv_push(&s->comp[i], ln_role_command(k_components[i].role)));
    return ln_model_args_new(&s->model);
}

/* Splits argv[from..argc) (flags only) into s. */
static qn_status split_args(int argc, char **argv, int from, split *s) {
    for (int i = from; i < argc;) {
        const char *tok = argv[i];
        if (strncmp(tok, "--", 2) != 0 || tok[2] == 0)
            return qn_fail(QN_ERR_INVALID, "launch: unexpected argument '%s' (flags only)", tok);
        char name[128];
        const char *eq = strchr(tok, '=');
        size_t nl = eq ? (size_t)(eq - tok - 2) : strlen(tok + 2);
        if (nl >= sizeof name) return qn_fail(QN_ERR_INVALID, "launch: flag too long: %s", tok);
        memcpy(name, tok + 2, nl);
        name[nl] = 0;
        if (strcmp(name, "print-config") == 0)
            return qn_fail(QN_ERR_INVALID, "launch: use --dry-run to see the processes' flags");
        /* which tables know it; "--no-x" is the negation of bool x */
        const char *base = name;
        bool negated = false;
        const qn_flag *lf = find_flag(&k_launch_table, name);
        const qn_flag *cf[N_COMPONENTS] = {0};
        bool m_bool = false, m_list = false;
        bool in_model = ln_model_is_flag(name, &m_bool, &m_list);
        bool any = lf || in_model;
        for (int c = 0; c < N_COMPONENTS; c++) {
            cf[c] = find_flag(k_components[c].table(), name);
            any = any || cf[c];
        }
        if (!any && strncmp(name, "no-", 3) == 0) {
            base = name + 3;
            lf = find_flag(&k_launch_table, base);
            in_model = ln_model_is_flag(base, &m_bool, &m_list) && m_bool;
            any = (lf && lf->type == QN_FLAG_BOOL) || in_model;
            if (lf && lf->type != QN_FLAG_BOOL) lf = NULL;
            for (int c = 0; c < N_COMPONENTS; c++) {
                cf[c] = find_flag(k_components[c].table(), base);
                if (cf[c] && cf[c]->type != QN_FLAG_BOOL) cf[c] = NULL;
                any = any || cf[c];
            }
            negated = any;
        }
        if (!any)
            return qn_fail(QN_ERR_INVALID,
                           "launch: unknown flag --%s: not a flag of the launcher, the model "
                           "arguments, or the router, buffer, rollout, eval or train commands",
                           name);
        /* the shape of its values */
        qn_flag_type type = QN_FLAG_STRING;
        if (lf) type = lf->type;
        else if (in_model) type = m_bool ? QN_FLAG_BOOL : m_list ? QN_FLAG_STRING_LIST
                                                                 : QN_FLAG_STRING;
        else
            for (int c = 0; c < N_COMPONENTS; c++)
                if (cf[c]) {
                    type = cf[c]->type;
                    break;
                }
        bool is_list = type == QN_FLAG_INT_LIST || type == QN_FLAG_FLOAT_LIST ||
                       type == QN_FLAG_STRING_LIST;
        int j = i + 1;
        if (!eq && !negated && type != QN_FLAG_BOOL) {
            if (is_list) {
                while (j < argc && strncmp(argv[j], "--", 2) != 0) j++;
            } else {
                if (j >= argc) return qn_fail(QN_ERR_INVALID, "launch: --%s needs a value", name);
                j++;
            }
        }
        /* hand the tokens i..j-1 to their owners */
        bool given = false;
        if (lf) {
            for (int k = i; k < j; k++) QN_CHECK(ln_strv_push(&s->launcher, argv[k]));
            given = true;
        }
        if (in_model) {
            char *one[1];
            char **vals = argv + i + 1;
            size_t nv = (size_t)(j - i - 1);
            if (eq) {
                one[0] = (char *)eq + 1;
                vals = one;
                nv = 1;
            }
            QN_CHECK(ln_model_args_set(s->model, base, vals, nv, negated));
            given = true;
        }
        bool refused = false;
        for (int c = 0; c < N_COMPONENTS; c++) {
            if (!cf[c]) continue;
            if (is_managed(&k_components[c], base)) {
                refused = true;
                continue;
            }
            for (int k = i; k < j; k++) QN_CHECK(ln_strv_push(&s->comp[c], argv[k]));
            given = true;
        }
        if (!given && refused)
            return qn_fail(QN_ERR_INVALID,
                           "launch: --%s is set by the launcher for the processes that have it",
                           base);
        i = j;
    }
    return QN_OK;
}

/* ------------------------------------------------------------ small input files */

/* Reads the whole of path (at most 1 MiB: a hostfile or launch.json) into a
 * malloc'd, NUL-terminated *text of *n bytes; what names the file in errors. */
static qn_status read_small_file(const char *path, const char *what, char **text, size_t *n) {
    enum { MAX = 1 << 20 };
    *text = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return qn_fail(QN_ERR_IO, "%s %s: cannot read: %s", what, path, strerror(errno));
    char *t = malloc(MAX + 1);
    size_t k = t ? fread(t, 1, MAX + 1, f) : 0;
    bool err = t && ferror(f);
    fclose(f);
    if (!t) return qn_fail(QN_ERR_NOMEM, "%s %s", what, path);
    if (err || k > MAX) {
        free(t);
        return err ? qn_fail(QN_ERR_IO, "%s %s: read error", what, path)
                   : qn_fail(QN_ERR_TOO_LARGE, "%s %s: over 1 MiB", what, path);
    }
    t[k] = 0;
    *text = t;
    *n = k;
    return QN_OK;
}

/* ------------------------------------------------------------ saved arguments */

/* RUN_DIR/launch.json: {"argv": [...]} — the flags the job was started
 * with (without --load and --dry-run), read back by --load. */
static qn_status save_args(const char *run_dir, int argc, char **argv) {
    cJSON *o = cJSON_CreateObject();
    cJSON *a = cJSON_AddArrayToObject(o, "argv");
    for (int i = 1; i < argc; i++) cJSON_AddItemToArray(a, cJSON_CreateString(argv[i]));
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return qn_fail(QN_ERR_NOMEM, "launch.json");
    char path[2200], tmp[2300];
    snprintf(path, sizeof path, "%s/launch.json", run_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    bool ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    ok = f && fclose(f) == 0 && ok;
    free(text);
    if (!ok || rename(tmp, path) != 0)
        return qn_fail(QN_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    return QN_OK;
}

static qn_status load_args(const char *run_dir, ln_strv *out) {
    char path[2200];
    snprintf(path, sizeof path, "%s/launch.json", run_dir);
    char *text = NULL;
    size_t n = 0;
    if (read_small_file(path, "--load", &text, &n) != QN_OK)
        return qn_fail(QN_ERR_IO, "%s (not a run directory?)", qn_last_error());
    cJSON *o = cJSON_ParseWithLength(text, n);
    free(text);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "argv");
    if (!cJSON_IsArray(a)) {
        cJSON_Delete(o);
        return qn_fail(QN_ERR_FORMAT, "%s: expected {\"argv\": [strings]}", path);
    }
    const cJSON *it;
    qn_status s = QN_OK;
    cJSON_ArrayForEach(it, a) {
        if (!cJSON_IsString(it)) {
            s = qn_fail(QN_ERR_FORMAT, "%s: argv holds a non-string", path);
            break;
        }
        if ((s = ln_strv_push(out, it->valuestring)) != QN_OK) break;
    }
    cJSON_Delete(o);
    return s;
}

/* ------------------------------------------------------------ placement */

static qn_status add_proc(ln_plan *p, ln_role role, int index, int node, const char *gpus,
                          ln_proc **out) {
    ln_proc *v = realloc(p->procs, (p->n_procs + 1) * sizeof *v);
    if (!v) return qn_fail(QN_ERR_NOMEM, "launch: process table");
    p->procs = v;
    ln_proc *q = &v[p->n_procs++];
    memset(q, 0, sizeof *q);
    q->role = role;
    q->index = index;
    q->node = node;
    snprintf(q->gpus, sizeof q->gpus, "%s", gpus ? gpus : "");
    if (role == LN_ENGINE || role == LN_TRAINER)
        snprintf(q->name, sizeof q->name, "%s-%d", role == LN_ENGINE ? "engine" : "trainer",
                 index);
    else
        snprintf(q->name, sizeof q->name, "%s",
                 role == LN_REDIS ? "redis" : ln_role_command(role));
    *out = q;
    return QN_OK;
}

/* "a,a+1,...,a+n-1"; false when it does not fit */
static bool gpu_list(char *buf, size_t size, int first, int n) {
    size_t off = 0;
    buf[0] = 0;
    for (int g = 0; g < n; g++) {
        int k = snprintf(buf + off, size - off, g ? ",%d" : "%d", first + g);
        if (k < 0 || (size_t)k >= size - off) return false;
        off += (size_t)k;
    }
    return true;
}

static qn_status read_hostfile(const char *path, qn_host_list *out) {
    char *text = NULL;
    size_t n = 0;
    QN_CHECK(read_small_file(path, "--hostfile", &text, &n));
    qn_status s = qn_hostfile_parse(text, n, path, out);
    free(text);
    return s;
}

/* The node's IPv4 address (ZeroMQ binds addresses, not names): the part of
 * "user@host" after the '@', resolved. A dry run shows the name when it does
 * not resolve here (the plan of a cluster printed on a laptop). */
static qn_status resolve(ln_node *n, bool dry_run) {
    const char *at = strrchr(n->host, '@');
    const char *name = at ? at + 1 : n->host;
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(name, NULL, &hints, &res);
    if (rc == 0 && res) {
        const struct sockaddr_in *sa = (const struct sockaddr_in *)res->ai_addr;
        inet_ntop(AF_INET, &sa->sin_addr, n->addr, sizeof n->addr);
        freeaddrinfo(res);
        return QN_OK;
    }
    if (res) freeaddrinfo(res);
    if (dry_run) {
        snprintf(n->addr, sizeof n->addr, "%.63s", name);
        return QN_OK;
    }
    return qn_fail(QN_ERR_NET, "launch: node %s: cannot resolve to an IPv4 address: %s", n->host,
                   gai_strerror(rc));
}

static qn_status nodes_from(ln_plan *p, const launch_cfg *c, bool dry_run) {
    qn_host_list hl = {0};
    const char *nodelist = getenv("SLURM_JOB_NODELIST");
    int mode = c->launcher;
    if (mode == LAUNCHER_AUTO)
        mode = nodelist && *nodelist ? LAUNCHER_SLURM : c->hostfile ? LAUNCHER_SSH : LAUNCHER_LOCAL;
    if (mode == LAUNCHER_SSH && !c->hostfile)
        return qn_fail(QN_ERR_INVALID, "launch: --launcher ssh needs --hostfile");
    if (mode == LAUNCHER_SLURM && !(nodelist && *nodelist))
        return qn_fail(QN_ERR_INVALID, "launch: --launcher slurm needs SLURM_JOB_NODELIST");
    if (mode == LAUNCHER_LOCAL) {
        p->mode = LN_MODE_LOCAL;
        p->nodes = calloc(1, sizeof *p->nodes);
        if (!p->nodes) return qn_fail(QN_ERR_NOMEM, "launch: nodes");
        p->n_nodes = 1;
        snprintf(p->nodes[0].host, sizeof p->nodes[0].host, "127.0.0.1");
        snprintf(p->nodes[0].addr, sizeof p->nodes[0].addr, "127.0.0.1");
        p->nodes[0].slots = (int)c->num_gpus_per_node;
        return QN_OK;
    }
    if (mode == LAUNCHER_SSH) {
        p->mode = LN_MODE_SSH;
        QN_CHECK(read_hostfile(c->hostfile, &hl));
    } else {
        p->mode = LN_MODE_SLURM;
        QN_CHECK(qn_slurm_nodelist_expand(nodelist, &hl));
    }
    p->nodes = calloc(hl.n ? hl.n : 1, sizeof *p->nodes);
    if (!p->nodes) {
        qn_host_list_free(&hl);
        return qn_fail(QN_ERR_NOMEM, "launch: nodes");
    }
    p->n_nodes = hl.n;
    for (size_t i = 0; i < hl.n; i++) {
        snprintf(p->nodes[i].host, sizeof p->nodes[i].host, "%s", hl.hosts[i].name);
        p->nodes[i].slots = mode == LAUNCHER_SSH ? (int)hl.hosts[i].slots
                                                 : (int)c->num_gpus_per_node;
    }
    qn_host_list_free(&hl);
    if (!p->n_nodes) return qn_fail(QN_ERR_INVALID, "launch: no nodes");
    for (size_t i = 0; i < p->n_nodes; i++) QN_CHECK(resolve(&p->nodes[i], dry_run));
    return QN_OK;
}

/* Places the trainer ranks and the engines (see the file comment). */
static qn_status place(ln_plan *p, const launch_cfg *c) {
    int n_nodes = (int)p->n_nodes;
    bool gpu = p->nodes[0].slots > 0;
    int gpn = (int)c->actor_num_gpus_per_node;
    if (c->actor_num_nodes > n_nodes)
        return qn_fail(QN_ERR_INVALID, "launch: --actor-num-nodes %lld but the job has %d node%s",
                       (long long)c->actor_num_nodes, n_nodes, n_nodes == 1 ? "" : "s");
    /* next free GPU per node */
    int *next = calloc((size_t)n_nodes, sizeof(int));
    if (!next) return qn_fail(QN_ERR_NOMEM, "launch: placement");
    qn_status s = QN_OK;
    char gl[512];
    int rank = 0;
    for (int nd = 0; nd < c->actor_num_nodes && s == QN_OK; nd++) {
        if (gpu && gpn > p->nodes[nd].slots) {
            s = qn_fail(QN_ERR_INVALID,
                        "launch: --actor-num-gpus-per-node %d but node %d (%s) has %d GPUs", gpn,
                        nd, p->nodes[nd].host, p->nodes[nd].slots);
            break;
        }
        for (int g = 0; g < gpn && s == QN_OK; g++) {
            ln_proc *q;
            gl[0] = 0;
            if (gpu) (void)gpu_list(gl, sizeof gl, g, 1);
            s = add_proc(p, LN_TRAINER, rank++, nd, gl, &q);
        }
        next[nd] = gpu ? gpn : 0;
    }
    p->n_trainers = rank;
    int per = (int)c->rollout_num_gpus_per_engine;
    int n_eng = (int)c->rollout_num_engines;
    int64_t roll_gpus = c->rollout_num_gpus;
    if (roll_gpus == 0 && n_eng == 0 && c->colocate && gpu)
        roll_gpus = c->actor_num_nodes * c->actor_num_gpus_per_node; /* slime: the actor's GPUs */
    if (n_eng == 0) n_eng = roll_gpus ? (int)(roll_gpus / per) : 1;
    if (n_eng == 0)
        s = qn_fail(QN_ERR_INVALID, "launch: %lld rollout GPUs cannot hold an engine of %d GPUs",
                    (long long)roll_gpus, per);
    if (roll_gpus && roll_gpus % per != 0 && s == QN_OK)
        s = qn_fail(QN_ERR_INVALID,
                    "launch: --rollout-num-gpus %lld is not a multiple of "
                    "--rollout-num-gpus-per-engine %d", (long long)roll_gpus, per);
    if (c->colocate)
        for (int nd = 0; nd < n_nodes; nd++) next[nd] = 0;
    /* engines: whole GPUs of one node, or whole nodes for one spanning several */
    int nd = 0; /* GPU jobs: the first node with room (next[] skips the trainer's GPUs) */
    if (!gpu && !c->colocate && n_nodes > 1 && c->actor_num_nodes < n_nodes)
        nd = (int)c->actor_num_nodes; /* CPU: engines on the nodes after the trainer's */
    for (int e = 0; e < n_eng && s == QN_OK; e++) {
        ln_proc *q;
        if (gpu && nd >= n_nodes) {
            s = qn_fail(QN_ERR_INVALID, "launch: not enough GPUs for %d engine%s of %d GPU%s (%s)",
                        n_eng, n_eng == 1 ? "" : "s", per, per == 1 ? "" : "s",
                        c->colocate ? "colocated" : "after the trainer's GPUs");
            break;
        }
        if (!gpu) {
            s = add_proc(p, LN_ENGINE, e, nd, "", &q);
            if (p->n_nodes > 1 && !c->colocate) {
                nd++;
                if (nd >= n_nodes) nd = c->actor_num_nodes < n_nodes ? (int)c->actor_num_nodes : 0;
            }
            continue;
        }
        int slots = p->nodes[nd].slots;
        if (per <= slots) {
            while (nd < n_nodes && next[nd] + per > p->nodes[nd].slots) nd++;
            if (nd >= n_nodes) {
                s = qn_fail(QN_ERR_INVALID,
                            "launch: not enough GPUs for %d engine%s of %d GPU%s (%s)", n_eng,
                            n_eng == 1 ? "" : "s", per, per == 1 ? "" : "s",
                            c->colocate ? "colocated" : "after the trainer's GPUs");
                break;
            }
            if (!gpu_list(gl, sizeof gl, next[nd], per)) {
                s = qn_fail(QN_ERR_RANGE, "launch: %d GPUs per engine: too many to list", per);
                break;
            }
            s = add_proc(p, LN_ENGINE, e, nd, gl, &q);
            next[nd] += per;
        } else {
            /* spans per/slots whole nodes, starting at a node with no GPU used */
            while (nd < n_nodes && next[nd] != 0) nd++;
            int span = (per + slots - 1) / slots;
            if (nd + span > n_nodes) {
                s = qn_fail(QN_ERR_INVALID,
                            "launch: not enough nodes for %d engines of %d GPUs (%d nodes of %d)",
                            n_eng, per, n_nodes, slots);
                break;
            }
            snprintf(gl, sizeof gl, "nodes %d-%d, all GPUs", nd, nd + span - 1);
            s = add_proc(p, LN_ENGINE, e, nd, gl, &q);
            for (int k = 0; k < span; k++) next[nd + k] = p->nodes[nd + k].slots;
            nd += span;
        }
    }
    p->n_engines = n_eng;
    free(next);
    return s;
}

/* ------------------------------------------------------------ building the plan */

/* A TCP port free on this machine now (bound to port 0 and released; the
 * process that takes it binds it a moment later). */
static qn_status free_port(const char *host, int *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return qn_fail(QN_ERR_NET, "launch: socket: %s", strerror(errno));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) a.sin_addr.s_addr = htonl(INADDR_ANY);
    socklen_t len = sizeof a;
    int rc = bind(fd, (struct sockaddr *)&a, sizeof a);
    if (rc != 0 && errno == EADDRNOTAVAIL) { /* not an address of this machine (a dry run) */
        a.sin_addr.s_addr = htonl(INADDR_ANY);
        rc = bind(fd, (struct sockaddr *)&a, sizeof a);
    }
    if (rc == 0) rc = getsockname(fd, (struct sockaddr *)&a, &len);
    int err = errno;
    close(fd);
    if (rc != 0) return qn_fail(QN_ERR_NET, "launch: no free port on %s: %s", host, strerror(err));
    *port = ntohs(a.sin_port);
    return QN_OK;
}

static qn_status check_share(const component *c, const ln_strv *args) {
    const qn_flag_table *t = c->table();
    size_t sz = t->cfg_size ? t->cfg_size : 1;
    void *cfg = calloc(1, sz);
    if (!cfg) return qn_fail(QN_ERR_NOMEM, "launch");
    /* the managed flags are added with harmless values so REQUIRED checks pass */
    ln_strv full = {0};
    qn_status s = QN_OK;
    for (size_t i = 0; i < args->n && s == QN_OK; i++) s = ln_strv_push(&full, args->v[i]);
    for (const char *const *m = c->managed; *m && s == QN_OK; m++) {
        const qn_flag *f = find_flag(t, *m);
        if (!f) continue;
        if (f->type == QN_FLAG_BOOL) continue;
        s = ln_strv_pushf(&full, "--%s=%s", *m,
                          f->type == QN_FLAG_INT || f->type == QN_FLAG_FLOAT ? "1" : "x");
    }
    qn_flags_parsed parsed;
    if (s == QN_OK) {
        s = qn_flags_parse(t, cfg, (int)full.n, full.v, &parsed);
        if (s == QN_OK) qn_flags_parsed_free(&parsed);
        else s = qn_fail(QN_ERR_INVALID, "launch: flags for `quench %s`: %s", t->command,
                         qn_last_error());
    }
    qn_flags_free(t, cfg);
    free(cfg);
    ln_strv_free(&full);
    return s;
}

static bool share_has(const ln_strv *a, const char *name) {
    size_t nl = strlen(name);
    for (size_t i = 1; i < a->n; i++) {
        const char *t = a->v[i];
        if (strncmp(t, "--", 2) == 0 && strncmp(t + 2, name, nl) == 0 &&
            (t[2 + nl] == 0 || t[2 + nl] == '='))
            return true;
    }
    return false;
}

static qn_status abs_path(const char *in, char *out, size_t size) {
    if (in[0] == '/') {
        snprintf(out, size, "%s", in);
        return QN_OK;
    }
    char cwd[2048];
    if (!getcwd(cwd, sizeof cwd)) return qn_fail(QN_ERR_IO, "getcwd: %s", strerror(errno));
    int k = snprintf(out, size, "%s/%s", cwd, in);
    return k > 0 && (size_t)k < size ? QN_OK : qn_fail(QN_ERR_RANGE, "path too long: %s", in);
}

/* The argv and environment of every process. Endpoints that are only known
 * once a process listens (the router's, the buffer's) are written as
 * "@ROUTER@" / "@BUFFER@" and filled in by the supervisor (launch_run.c). */
static qn_status fill_commands(ln_plan *p, const launch_cfg *c, const split *sp) {
    char ckpt[2200], metrics[2200], hf[2048];
    snprintf(ckpt, sizeof ckpt, "%s/checkpoints", p->run_dir);
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", p->run_dir);
    QN_CHECK(abs_path(c->hf_checkpoint, hf, sizeof hf));
    bool hf_has_tokenizer = false;
    static const char *const k_tok_files[] = {"tokenizer.json", "tokenizer.model", "vocab.json"};
    for (size_t i = 0; i < sizeof k_tok_files / sizeof k_tok_files[0]; i++) {
        char path[2200];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", hf, k_tok_files[i]);
        hf_has_tokenizer = hf_has_tokenizer || stat(path, &st) == 0;
    }
    for (size_t i = 0; i < p->n_procs; i++) {
        ln_proc *q = &p->procs[i];
        const ln_node *node = &p->nodes[q->node];
        ln_strv *a = &q->argv;
        if (q->role == LN_REDIS) {
            /* filled by the supervisor: it needs the chosen port */
            continue;
        }
        QN_CHECK(ln_strv_push(a, p->quench));
        int ci = 0;
        while (k_components[ci].role != q->role) ci++;
        const ln_strv *share = &sp->comp[ci];
        for (size_t k = 0; k < share->n; k++) QN_CHECK(ln_strv_push(a, share->v[k]));
        /* like slime, the tokenizer is the checkpoint's unless named (engines find it
         * there themselves) */
        if (hf_has_tokenizer && q->role != LN_ENGINE && !share_has(share, "tokenizer") &&
            find_flag(k_components[ci].table(), "tokenizer"))
            QN_CHECK(ln_strv_pushf(a, "--tokenizer=%s", hf));
        switch (q->role) {
        case LN_ROUTER:
            QN_CHECK(ln_strv_pushf(a, "--listen=tcp://%s:*", node->addr));
            /* a free port unless given: two jobs on one machine must not collide */
            if (!share_has(share, "http-port")) QN_CHECK(ln_strv_push(a, "--http-port=0"));
            QN_CHECK(ln_strv_pushf(a, "--port-file=%s/ports/router", p->run_dir));
            QN_CHECK(ln_strv_pushf(a, "--redis=%s", p->redis_url));
            QN_CHECK(ln_strv_pushf(a, "--job=%s", p->job));
            break;
        case LN_BUFFER:
            QN_CHECK(ln_strv_pushf(a, "--listen=tcp://%s:*", node->addr));
            QN_CHECK(ln_strv_pushf(a, "--port-file=%s/ports/buffer", p->run_dir));
            QN_CHECK(ln_strv_pushf(a, "--redis=%s", p->redis_url));
            QN_CHECK(ln_strv_pushf(a, "--job=%s", p->job));
            QN_CHECK(ln_strv_push(a, "--router=@ROUTER@"));
            QN_CHECK(ln_strv_pushf(a, "--metrics-file=%s", metrics));
            QN_CHECK(ln_strv_pushf(a, "--num-rollout=%lld", (long long)c->num_rollout));
            QN_CHECK(ln_strv_pushf(a, "--max-rollouts-ahead=%d", c->async ? 2 : 1));
            break;
        case LN_ENGINE:
            QN_CHECK(ln_strv_push(a, "--router=@ROUTER@"));
            QN_CHECK(ln_strv_pushf(a, "--model=%s", hf));
            QN_CHECK(ln_strv_push(a, "--engine-id=@ENGINE_ID@"));
            break;
        case LN_EVAL:
            QN_CHECK(ln_strv_push(a, "--router=@ROUTER@"));
            QN_CHECK(ln_strv_pushf(a, "--redis=%s", p->redis_url));
            QN_CHECK(ln_strv_pushf(a, "--job=%s", p->job));
            QN_CHECK(ln_strv_pushf(a, "--metrics-file=%s", metrics));
            QN_CHECK(ln_strv_pushf(a, "--num-rollout=%lld", (long long)c->num_rollout));
            break;
        case LN_TRAINER:
            QN_CHECK(ln_strv_pushf(a, "--hf-checkpoint=%s", hf));
            QN_CHECK(ln_strv_push(a, "--buffer=@BUFFER@"));
            if (q->index == 0) QN_CHECK(ln_strv_push(a, "--router=@ROUTER@"));
            QN_CHECK(ln_strv_pushf(a, "--save=%s", ckpt));
            QN_CHECK(ln_strv_pushf(a, "--metrics-file=%s", metrics));
            QN_CHECK(ln_strv_pushf(a, "--num-rollout=%lld", (long long)c->num_rollout));
            QN_CHECK(ln_strv_pushf(a, "--weight-listen=tcp://%s:*", node->addr));
            QN_CHECK(ln_strv_pushf(&q->env, "QN_WORLD_SIZE=%d", p->n_trainers));
            QN_CHECK(ln_strv_pushf(&q->env, "QN_RANK=%d", q->index));
            QN_CHECK(ln_strv_pushf(&q->env, "QN_LOCAL_RANK=%d",
                                   q->index % (int)c->actor_num_gpus_per_node));
            QN_CHECK(ln_strv_pushf(&q->env, "QN_REDIS_URL=%s", p->redis_url));
            QN_CHECK(ln_strv_pushf(&q->env, "QN_JOB=%s", p->job));
            QN_CHECK(ln_strv_pushf(&q->env, "QN_DIST_HOST=%s", node->addr));
            break;
        default:
            break;
        }
        if (q->gpus[0] && isdigit((unsigned char)q->gpus[0]))
            QN_CHECK(ln_strv_pushf(&q->env, "CUDA_VISIBLE_DEVICES=%s", q->gpus));
    }
    return QN_OK;
}

static qn_status make_run_dir(ln_plan *p, const launch_cfg *c, bool dry_run) {
    char dir[2048];
    if (c->run_dir) {
        snprintf(dir, sizeof dir, "%s", c->run_dir);
    } else {
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        char stamp[64];
        strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
        snprintf(dir, sizeof dir, "runs/%s-%s", c->job, stamp);
    }
    QN_CHECK(abs_path(dir, p->run_dir, sizeof p->run_dir));
    if (dry_run) return QN_OK;
    const char *subs[] = {"", "/logs", "/ports", "/redis"};
    char path[2300];
    /* mkdir -p of the run dir itself */
    for (char *q = p->run_dir + 1; *q; q++) {
        if (*q != '/') continue;
        *q = 0;
        if (mkdir(p->run_dir, 0777) != 0 && errno != EEXIST) {
            *q = '/';
            return qn_fail(QN_ERR_IO, "%s: cannot create: %s", p->run_dir, strerror(errno));
        }
        *q = '/';
    }
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        snprintf(path, sizeof path, "%s%s", p->run_dir, subs[i]);
        if (mkdir(path, 0777) != 0 && errno != EEXIST)
            return qn_fail(QN_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    }
    return QN_OK;
}

/* Locks RUN_DIR for this launcher (held until ln_plan_free) and refuses a
 * directory that already holds a job unless it is being resumed. */
static qn_status lock_run_dir(ln_plan *p) {
    char path[2300];
    snprintf(path, sizeof path, "%s/launch.lock", p->run_dir);
    p->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (p->lock_fd < 0) return qn_fail(QN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (flock(p->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "?";
        ssize_t k = pread(p->lock_fd, pid, sizeof pid - 1, 0);
        pid[k > 0 ? k : 1] = 0;
        pid[strcspn(pid, "\n")] = 0;
        return qn_fail(QN_ERR_EXISTS, "launch: %s is in use by another launcher (pid %s)",
                       p->run_dir, pid);
    }
    if (ftruncate(p->lock_fd, 0) == 0) dprintf(p->lock_fd, "%d\n", (int)getpid());
    snprintf(path, sizeof path, "%s/launch.json", p->run_dir);
    struct stat st;
    if (!p->resume && stat(path, &st) == 0)
        return qn_fail(QN_ERR_EXISTS,
                       "launch: %s holds a job already: `quench launch --load %s` resumes it, "
                       "or choose another --run-dir", p->run_dir, p->run_dir);
    return QN_OK;
}

qn_status ln_plan_build(int argc, char **argv, ln_plan *p, bool *dry_run) {
    memset(p, 0, sizeof *p);
    p->lock_fd = -1;
    *dry_run = false;
    /* --load RUN_DIR: the saved flags first, then the given ones */
    ln_strv all = {0};
    split sp;
    launch_cfg c;
    qn_flags_parsed parsed = {0};
    bool parsed_ok = false;
    memset(&c, 0, sizeof c);
    qn_status s = split_init(&sp);
    const char *load = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--load") == 0 && i + 1 < argc) load = argv[i + 1];
        else if (strncmp(argv[i], "--load=", 7) == 0) load = argv[i] + 7;
    }
    if (s == QN_OK) s = ln_strv_push(&all, "launch");
    if (s == QN_OK && load) s = load_args(load, &all);
    for (int i = 1; i < argc && s == QN_OK; i++) s = ln_strv_push(&all, argv[i]);
    if (s == QN_OK) s = split_args((int)all.n, all.v, 1, &sp);
    if (s == QN_OK) {
        s = qn_flags_parse(&k_launch_table, &c, (int)sp.launcher.n, sp.launcher.v, &parsed);
        parsed_ok = s == QN_OK;
        if (s == QN_OK && parsed.n_args)
            s = qn_fail(QN_ERR_INVALID, "launch: unexpected argument '%s'", parsed.args[0]);
    }
    if (s != QN_OK) goto done;
    *dry_run = c.dry_run;
    if (load) { /* the run directory is where it is now (the saved --run-dir may be relative) */
        free(c.run_dir);
        c.run_dir = strdup(load);
    }
    p->resume = load != NULL;
    /* the evaluator runs with --eval-prompt-data (or its QN_ variable) */
    for (int ci = 0; ci < N_COMPONENTS; ci++)
        if (k_components[ci].role == LN_EVAL)
            p->has_eval = share_has(&sp.comp[ci], "eval-prompt-data") ||
                          getenv("QN_EVAL_PROMPT_DATA");
    for (int ci = 0; ci < N_COMPONENTS && s == QN_OK; ci++)
        if (k_components[ci].role != LN_EVAL || p->has_eval)
            s = check_share(&k_components[ci], &sp.comp[ci]);
    if (s != QN_OK) goto done;
    snprintf(p->job, sizeof p->job, "%s", c.job);
    p->num_rollout = c.num_rollout;
    p->engine_restarts = (int)c.engine_restarts;
    p->colocate = c.colocate;
    p->async = c.async;
    p->stream = c.stream;
    snprintf(p->ssh_command, sizeof p->ssh_command, "%s", c.ssh_command);
    snprintf(p->srun_command, sizeof p->srun_command, "%s", c.srun_command);
    if (c.quench_bin) {
        snprintf(p->quench, sizeof p->quench, "%s", c.quench_bin);
    } else {
        ssize_t k = readlink("/proc/self/exe", p->quench, sizeof p->quench - 1);
        if (k <= 0) {
            s = qn_fail(QN_ERR_IO, "launch: cannot find this binary: %s", strerror(errno));
            goto done;
        }
        p->quench[k] = 0;
    }
    QN_CHECK_GOTO(make_run_dir(p, &c, *dry_run), s, done);
    if (!*dry_run) QN_CHECK_GOTO(lock_run_dir(p), s, done);
    QN_CHECK_GOTO(nodes_from(p, &c, *dry_run), s, done);
    char desc[1024];
    QN_CHECK_GOTO(ln_model_args_check(sp.model, c.hf_checkpoint, *dry_run, desc, sizeof desc), s,
                  done);
    if (desc[0]) fprintf(*dry_run ? stdout : stderr, "model: %s\n", desc);
    /* Redis: ours on node 0 (port chosen at start) or the given one */
    p->own_redis = c.redis == NULL;
    if (c.redis) {
        snprintf(p->redis_url, sizeof p->redis_url, "%s", c.redis);
    } else {
        int port = 0;
        QN_CHECK_GOTO(free_port(p->nodes[0].addr, &port), s, done);
        snprintf(p->redis_url, sizeof p->redis_url, "redis://%s:%d", p->nodes[0].addr, port);
        p->redis_port = port;
    }
    ln_proc *q;
    if (p->own_redis) QN_CHECK_GOTO(add_proc(p, LN_REDIS, 0, 0, "", &q), s, done);
    QN_CHECK_GOTO(add_proc(p, LN_ROUTER, 0, 0, "", &q), s, done);
    QN_CHECK_GOTO(add_proc(p, LN_BUFFER, 0, 0, "", &q), s, done);
    QN_CHECK_GOTO(place(p, &c), s, done);
    if (p->has_eval) QN_CHECK_GOTO(add_proc(p, LN_EVAL, 0, 0, "", &q), s, done);
    QN_CHECK_GOTO(fill_commands(p, &c, &sp), s, done);
    if (!*dry_run && !load) {
        /* the flags as given (no --dry-run), for --load */
        ln_strv keep = {0};
        QN_CHECK_GOTO(ln_strv_push(&keep, "launch"), s, done);
        for (size_t i = 1; i < all.n && s == QN_OK; i++) s = ln_strv_push(&keep, all.v[i]);
        if (s == QN_OK && !c.run_dir) s = ln_strv_pushf(&keep, "--run-dir=%s", p->run_dir);
        if (s == QN_OK) s = save_args(p->run_dir, (int)keep.n, keep.v);
        ln_strv_free(&keep);
    }
done:
    if (parsed_ok) qn_flags_parsed_free(&parsed);
    qn_flags_free(&k_launch_table, &c);
    split_free(&sp);
    ln_strv_free(&all);
    if (s != QN_OK) ln_plan_free(p);
    return s;
}

void ln_plan_free(ln_plan *p) {
    if (p->lock_fd >= 0) close(p->lock_fd);
    p->lock_fd = -1;
    for (size_t i = 0; i < p->n_procs; i++) {
        ln_strv_free(&p->procs[i].argv);
        ln_strv_free(&p->procs[i].env);
    }
    free(p->procs);
    free(p->nodes);
    p->procs = NULL;
    p->nodes = NULL;
    p->n_procs = p->n_nodes = 0;
}

/* ------------------------------------------------------------ printing */


void ln_plan_print(const ln_plan *p, FILE *out) {
    static const char *const k_mode[] = {"local", "ssh", "slurm"};
    fprintf(out, "job %s: %zu processes on %zu node%s (%s), run directory %s\n", p->job,
            p->n_procs, p->n_nodes, p->n_nodes == 1 ? "" : "s", k_mode[p->mode], p->run_dir);
    fprintf(out, "  %d trainer rank%s, %d engine%s, %s, %s%s\n", p->n_trainers,
            p->n_trainers == 1 ? "" : "s", p->n_engines, p->n_engines == 1 ? "" : "s",
            p->colocate ? "colocated" : "decoupled",
            p->async ? "async (rollout k+1 overlaps training k)" : "sync",
            p->has_eval ? ", evaluation" : "");
    for (size_t i = 0; i < p->n_nodes; i++)
        fprintf(out, "node %zu: %s%s%s%s, %d GPU%s%s\n", i, p->nodes[i].host,
                strcmp(p->nodes[i].host, p->nodes[i].addr) ? " (" : "",
                strcmp(p->nodes[i].host, p->nodes[i].addr) ? p->nodes[i].addr : "",
                strcmp(p->nodes[i].host, p->nodes[i].addr) ? ")" : "", p->nodes[i].slots,
                p->nodes[i].slots == 1 ? "" : "s", i == 0 ? " (this machine)" : "");
    for (size_t i = 0; i < p->n_procs; i++) {
        const ln_proc *q = &p->procs[i];
        fprintf(out, "\n[%s] node %d (%s), GPUs %s\n", q->name, q->node, p->nodes[q->node].host,
                q->gpus[0] ? q->gpus : "none");
        if (q->role == LN_REDIS) {
            fprintf(out, "  redis-server --port %d --dir %s/redis --appendonly yes "
                         "--appendfsync everysec --save ''\n", p->redis_port, p->run_dir);
            continue;
        }
        if (q->node != 0 && p->mode == LN_MODE_SSH)
            fprintf(out, "  via: %s %s '<the command below>' (ends when the connection closes)\n",
                    p->ssh_command, p->nodes[q->node].host);
        else if (q->node != 0 && p->mode == LN_MODE_SLURM)
            fprintf(out, "  via: %s --nodes=1 --ntasks=1 --nodelist=%s --overlap "
                         "--kill-on-bad-exit=1 --export=ALL env ...\n",
                    p->srun_command, p->nodes[q->node].host);
        fputs(" ", out);
        for (size_t k = 0; k < q->env.n; k++) {
            fputc(' ', out);
            qn_flags_write_quoted(out, q->env.v[k]);
        }
        for (size_t k = 0; k < q->argv.n; k++) {
            fputc(' ', out);
            qn_flags_write_quoted(out, q->argv.v[k]);
        }
        fputc('\n', out);
    }
    fprintf(out, "\n@ROUTER@, @BUFFER@: endpoints the processes bind when they "
                 "start (read from RUN_DIR/ports); @ENGINE_ID@: engine-<k>.<start number>\n");
}
