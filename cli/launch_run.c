/* launch_run.c — the supervisor of `quench launch`: starts the processes of
 * a plan (cli/launch_plan.c) in order, streams their logs, restarts
 * engines, and tears everything down at the end, on a crash, or on Ctrl-C.
 *
 * Start order: redis-server (until it answers PING; on --load it reloads
 * its append-only file first), the router and the buffer (each until it has
 * written its bound endpoint to RUN_DIR/ports/<name>), then the engines, the
 * evaluator and the trainer ranks.
 *
 * Every process is started in its own process group with its output
 * appended to RUN_DIR/logs/<name>.log; a process of another node is a local
 * ssh (or srun) client whose remote command ends the process when the
 * client's stdin closes, so killing the client or the launcher (kill -9
 * included) ends it. Local children get PR_SET_PDEATHSIG = SIGKILL: when the
 * launcher dies, so does the job, and `quench launch --load RUN_DIR` can
 * start it again from Redis and the last checkpoint. A run directory is
 * locked (flock on RUN_DIR/launch.lock) by the launcher running it.
 *
 * Ends: the trainer ranks exit 0 after the last rollout, the buffer exits 0
 * once every rollout is acknowledged, the evaluator exits 0 after the final
 * weights; then the rest is stopped and the launcher exits 0. An engine that
 * exits is restarted (--engine-restarts times, a new --engine-id each time,
 * so the router times out the old one and sends its requests elsewhere) and
 * pulls the current weights when it registers. Any other process exiting
 * stops the job: exit status 1 with the process, its status and the end of
 * its log. SIGINT/SIGTERM stop the job (status 130/143); a second one kills
 * at once. Stopping = SIGTERM to every process group but Redis, up to 10 s,
 * SIGKILL, then Redis (SIGTERM flushes its file).
 *
 * The terminal gets the launcher's own lines, a progress line per rollout
 * and evaluation (from RUN_DIR/metrics.jsonl), and the processes' log lines
 * at warning level and above (--stream). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli/launch.h"
#include "core/clock.h"
#include "net/redis.h"

static volatile sig_atomic_t g_signal;

static void on_signal(int sig) {
    if (g_signal) {
        /* a second Ctrl-C: no more waiting */
        g_signal = -sig;
        return;
    }
    g_signal = sig;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "[launch] %s\n", buf);
    fflush(stderr);
}

typedef struct run_state {
    ln_plan *p;
    char router_ep[640], buffer_ep[640];
    int router_http; /* the router's HTTP port, 0: none */
    /* progress from metrics.jsonl */
    int64_t metrics_off;
    int metrics_fd; /* RUN_DIR/metrics.jsonl for reading, 0 until it exists */
    double t0;
    double first_acc, last_acc;
    int64_t first_acc_v, last_acc_v;
    bool have_acc;
} run_state;

/* ------------------------------------------------------------ quoting for the remote shell */

static void shell_quote(char *out, size_t size, size_t *off, const char *w) {
    if (*off + 4 >= size) return;
    out[(*off)++] = '\'';
    for (const char *c = w; *c && *off + 6 < size; c++) {
        if (*c == '\'') {
            memcpy(out + *off, "'\\''", 4);
            *off += 4;
        } else {
            out[(*off)++] = *c;
        }
    }
    out[(*off)++] = '\'';
    out[*off] = 0;
}

static void append(char *out, size_t size, size_t *off, const char *s) {
    size_t n = strlen(s);
    if (*off + n + 1 > size) n = size - *off - 1;
    memcpy(out + *off, s, n);
    *off += n;
    out[*off] = 0;
}

/* ------------------------------------------------------------ spawning */

/* argv with the late endpoints filled in */
static qn_status resolve_argv(const run_state *rs, const ln_proc *q, ln_strv *out) {
    for (size_t i = 0; i < q->argv.n; i++) {
        const char *a = q->argv.v[i];
        char buf[4096];
        const char *at = strchr(a, '@');
        if (!at) {
            QN_CHECK(ln_strv_push(out, a));
            continue;
        }
        size_t pre = (size_t)(at - a);
        const char *rep = NULL;
        char id[64];
        size_t key = 0;
        if (!strncmp(at, "@ROUTER@", 8)) rep = rs->router_ep, key = 8;
        else if (!strncmp(at, "@BUFFER@", 8)) rep = rs->buffer_ep, key = 8;
        else if (!strncmp(at, "@ENGINE_ID@", 11)) {
            snprintf(id, sizeof id, "engine-%d.%d", q->index, q->generation);
            rep = id;
            key = 11;
        }
        if (!rep) {
            QN_CHECK(ln_strv_push(out, a));
            continue;
        }
        int k = snprintf(buf, sizeof buf, "%.*s%s%s", (int)pre, a, rep, at + key);
        if (k < 0 || (size_t)k >= sizeof buf)
            return qn_fail(QN_ERR_RANGE, "%s: argument too long: %.40s...", q->name, a);
        QN_CHECK(ln_strv_push(out, buf));
    }
    return QN_OK;
}

static qn_status redis_argv(const ln_plan *p, ln_strv *a) {
    QN_CHECK(ln_strv_push(a, "redis-server"));
    QN_CHECK(ln_strv_pushf(a, "--port"));
    QN_CHECK(ln_strv_pushf(a, "%d", p->redis_port));
    QN_CHECK(ln_strv_push(a, "--bind"));
    QN_CHECK(ln_strv_push(a, p->nodes[0].addr));
    QN_CHECK(ln_strv_push(a, "--dir"));
    QN_CHECK(ln_strv_pushf(a, "%s/redis", p->run_dir));
    QN_CHECK(ln_strv_push(a, "--appendonly"));
    QN_CHECK(ln_strv_push(a, "yes"));
    QN_CHECK(ln_strv_push(a, "--appendfsync"));
    QN_CHECK(ln_strv_push(a, "everysec"));
    QN_CHECK(ln_strv_push(a, "--save"));
    QN_CHECK(ln_strv_push(a, ""));
    QN_CHECK(ln_strv_push(a, "--protected-mode"));
    QN_CHECK(ln_strv_push(a, "no"));
    QN_CHECK(ln_strv_push(a, "--daemonize"));
    QN_CHECK(ln_strv_push(a, "no"));
    return QN_OK;
}

/* Splits a command like "ssh -p 2222" on spaces into a. */
static qn_status split_words(const char *cmd, ln_strv *a) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", cmd);
    for (char *save = NULL, *w = strtok_r(buf, " \t", &save); w; w = strtok_r(NULL, " \t", &save))
        QN_CHECK(ln_strv_push(a, w));
    return QN_OK;
}

/* The local argv that starts q: the command itself on node 0, an ssh or srun
 * client for other nodes. */
static qn_status build_exec(const run_state *rs, const ln_proc *q, ln_strv *out) {
    const ln_plan *p = rs->p;
    ln_strv cmd = {0};
    qn_status s = q->role == LN_REDIS ? redis_argv(p, &cmd) : resolve_argv(rs, q, &cmd);
    if (s != QN_OK || q->node == 0) {
        if (s == QN_OK) *out = cmd;
        else ln_strv_free(&cmd);
        return s;
    }
    if (p->mode == LN_MODE_SLURM) {
        s = split_words(p->srun_command, out);
        if (s == QN_OK) s = ln_strv_push(out, "--nodes=1");
        if (s == QN_OK) s = ln_strv_push(out, "--ntasks=1");
        if (s == QN_OK) s = ln_strv_pushf(out, "--nodelist=%s", p->nodes[q->node].host);
        if (s == QN_OK) s = ln_strv_push(out, "--overlap");
        if (s == QN_OK) s = ln_strv_push(out, "--kill-on-bad-exit=1");
        if (s == QN_OK) s = ln_strv_push(out, "--export=ALL");
        if (s == QN_OK) s = ln_strv_push(out, "env");
        for (size_t i = 0; i < q->env.n && s == QN_OK; i++) s = ln_strv_push(out, q->env.v[i]);
        for (size_t i = 0; i < cmd.n && s == QN_OK; i++) s = ln_strv_push(out, cmd.v[i]);
        ln_strv_free(&cmd);
        return s;
    }
    /* ssh HOST 'cd CWD || exit 97; env K=V ... CMD </dev/null & p=$!; exec 3<&0;
     *           (cat <&3 >/dev/null; kill -TERM $p; sleep 5; kill -KILL $p) >/dev/null 2>&1 &
     *           wait $p' */
    char remote[16384], cwd[2048];
    size_t off = 0;
    remote[0] = 0;
    if (!getcwd(cwd, sizeof cwd)) snprintf(cwd, sizeof cwd, "/");
    append(remote, sizeof remote, &off, "cd ");
    shell_quote(remote, sizeof remote, &off, cwd);
    append(remote, sizeof remote, &off, " || exit 97; env");
    for (size_t i = 0; i < q->env.n; i++) {
        append(remote, sizeof remote, &off, " ");
        shell_quote(remote, sizeof remote, &off, q->env.v[i]);
    }
    for (size_t i = 0; i < cmd.n; i++) {
        append(remote, sizeof remote, &off, " ");
        shell_quote(remote, sizeof remote, &off, cmd.v[i]);
    }
    /* a background job of a non-interactive shell reads /dev/null unless redirected
     * explicitly: the watcher reads the session's stdin through fd 3; once the process
     * ends, the watcher is ended too (no kill of a pid that may be reused) */
    append(remote, sizeof remote, &off,
           " </dev/null & p=$!; exec 3<&0; (cat <&3 >/dev/null; kill -TERM $p 2>/dev/null; "
           "sleep 5; kill -KILL $p 2>/dev/null) >/dev/null 2>&1 & w=$!; wait $p; s=$?; "
           "kill $w 2>/dev/null; exit $s");
    ln_strv_free(&cmd);
    /* run by sh whatever the login shell is: sh -c '<remote>' */
    char wrapped[sizeof remote + 4096];
    size_t woff = 0;
    wrapped[0] = 0;
    append(wrapped, sizeof wrapped, &woff, "sh -c ");
    shell_quote(wrapped, sizeof wrapped, &woff, remote);
    if (off + 2 >= sizeof remote || woff + 8 >= sizeof wrapped)
        return qn_fail(QN_ERR_RANGE, "%s: command too long for ssh", q->name);
    QN_CHECK(split_words(p->ssh_command, out));
    QN_CHECK(ln_strv_push(out, p->nodes[q->node].host));
    return ln_strv_push(out, wrapped);
}

static qn_status spawn(run_state *rs, size_t idx) {
    ln_plan *p = rs->p;
    ln_proc *q = &p->procs[idx];
    ln_strv ex = {0};
    QN_CHECK(build_exec(rs, q, &ex));
    char log[2300];
    snprintf(log, sizeof log, "%s/logs/%s.log", p->run_dir, q->name);
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        ln_strv_free(&ex);
        return qn_fail(QN_ERR_IO, "%s: cannot open: %s", log, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && q->generation == 0) q->log_off = st.st_size;
    if (q->log_rfd <= 0) q->log_rfd = open(log, O_RDONLY | O_CLOEXEC); /* for the stream */
    char banner[256];
    int bl = snprintf(banner, sizeof banner, "==== quench launch: starting %s (start %d) ====\n",
                      q->name, q->generation + 1);
    if (bl > 0 && write(fd, banner, (size_t)bl) < 0) { /* best effort */
    }
    int pipefd[2] = {-1, -1};
    bool remote = q->node != 0 && p->mode == LN_MODE_SSH;
    if (remote && pipe2(pipefd, O_CLOEXEC) != 0) {
        close(fd);
        ln_strv_free(&ex);
        return qn_fail(QN_ERR_IO, "pipe: %s", strerror(errno));
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int err = errno;
        close(fd);
        if (remote) close(pipefd[0]), close(pipefd[1]);
        ln_strv_free(&ex);
        return qn_fail(QN_ERR_IO, "fork: %s", strerror(err));
    }
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int in = remote ? pipefd[0] : open("/dev/null", O_RDONLY);
        if (in >= 0) dup2(in, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        if (!remote || q->node == 0)
            for (size_t i = 0; i < q->env.n; i++) putenv(q->env.v[i]);
        if (q->role == LN_REDIS || remote || (q->node != 0 && p->mode == LN_MODE_SLURM))
            execvp(ex.v[0], ex.v);
        else
            execv(ex.v[0], ex.v);
        dprintf(2, "quench launch: cannot run %s: %s\n", ex.v[0], strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid); /* also here: no race with a kill right after fork */
    close(fd);
    if (remote) {
        close(pipefd[0]);
        if (q->stop_fd > 0) close(q->stop_fd);
        q->stop_fd = pipefd[1];
    }
    ln_strv_free(&ex);
    q->pid = pid;
    q->exited = false;
    q->restart_at = 0;
    return QN_OK;
}

/* ------------------------------------------------------------ waiting for a service */

/* Reads "zmq=<endpoint>" (and "http=<port>" when http is not NULL) from a
 * port file. */
static bool read_port_file(const char *path, char *ep, size_t size, int *http) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    char line[600];
    bool ok = false;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (strncmp(line, "zmq=", 4) == 0) {
            snprintf(ep, size, "%s", line + 4);
            ok = ep[0] != 0;
        } else if (http && strncmp(line, "http=", 5) == 0) {
            *http = atoi(line + 5);
        }
    }
    fclose(f);
    return ok;
}

static void reap(run_state *rs, bool quiet);

/* Waits until ready() or the process exits or the deadline passes. */
static qn_status wait_ready(run_state *rs, size_t idx, double timeout_s,
                            bool (*ready)(run_state *, size_t)) {
    ln_proc *q = &rs->p->procs[idx];
    double end = qn_now_s() + timeout_s;
    while (qn_now_s() < end) {
        if (ready(rs, idx)) return QN_OK;
        reap(rs, true);
        if (q->exited)
            return qn_fail(QN_ERR_IO, "%s exited while starting (see %s/logs/%s.log)", q->name,
                           rs->p->run_dir, q->name);
        if (g_signal) return qn_fail(QN_ERR_CLOSED, "interrupted while starting %s", q->name);
        usleep(50 * 1000);
    }
    return qn_fail(QN_ERR_TIMEOUT, "%s not ready after %.0f s (see %s/logs/%s.log)", q->name,
                   timeout_s, rs->p->run_dir, q->name);
}

/* Ready once PING answers PONG (a Redis still loading its append-only file
 * answers an error, which qn_redis_command reports). */
static bool redis_ready(run_state *rs, size_t idx) {
    (void)idx;
    qn_redis *r = NULL;
    redisReply *rep = NULL;
    bool ok = qn_redis_connect(rs->p->redis_url, NULL, 1000, &r) == QN_OK &&
              qn_redis_command_once(r, &rep, "PING") == QN_OK && rep &&
              rep->type == REDIS_REPLY_STATUS && rep->str && strcmp(rep->str, "PONG") == 0;
    if (rep) freeReplyObject(rep);
    qn_redis_free(r);
    return ok;
}

static bool router_ready(run_state *rs, size_t idx) {
    (void)idx;
    char path[2300];
    snprintf(path, sizeof path, "%s/ports/router", rs->p->run_dir);
    return read_port_file(path, rs->router_ep, sizeof rs->router_ep, &rs->router_http);
}

static bool buffer_ready(run_state *rs, size_t idx) {
    (void)idx;
    char path[2300];
    snprintf(path, sizeof path, "%s/ports/buffer", rs->p->run_dir);
    return read_port_file(path, rs->buffer_ep, sizeof rs->buffer_ep, NULL);
}

/* ------------------------------------------------------------ logs and progress */

static void stream_logs(run_state *rs) {
    ln_plan *p = rs->p;
    if (p->stream == 0) return;
    for (size_t i = 0; i < p->n_procs; i++) {
        ln_proc *q = &p->procs[i];
        if (q->log_rfd <= 0) continue; /* not started yet */
        char buf[65536];
        ssize_t n = pread(q->log_rfd, buf, sizeof buf - 1, q->log_off);
        if (n <= 0) continue;
        buf[n] = 0;
        char *line = buf, *nl;
        while ((nl = strchr(line, '\n'))) {
            *nl = 0;
            /* quench log lines: "YYYY-MM-DD HH:MM:SS.mmm L who file:line] msg" */
            size_t len = strlen(line);
            bool is_log = len > 24 && line[4] == '-' && line[10] == ' ' && line[23] == ' ';
            char level = is_log ? line[24] : 'E';
            bool banner = strncmp(line, "==== quench launch", 18) == 0;
            /* Redis's own lines are shown with --stream all only */
            bool show = p->stream == 2 ||
                        (!banner && q->role != LN_REDIS && (level == 'W' || level == 'E'));
            if (show) fprintf(stderr, "[%s] %s\n", q->name, line);
            line = nl + 1;
        }
        q->log_off += line - buf;
        if (line == buf && n == (ssize_t)sizeof buf - 1) q->log_off += n; /* a huge line */
    }
    fflush(stderr);
}

/* One metrics line: remembers the latest figures and, unless quiet, prints
 * a progress line for a rollout generated, a rollout trained or an
 * evaluation. */
static void progress_line(run_state *rs, const char *line, bool quiet) {
    cJSON *o = cJSON_Parse(line);
    const cJSON *rid = cJSON_GetObjectItemCaseSensitive(o, "rollout_id");
    const cJSON *rew = cJSON_GetObjectItemCaseSensitive(o, "rollout/raw_reward");
    const cJSON *tt = cJSON_GetObjectItemCaseSensitive(o, "perf/train_time");
    const cJSON *acc = cJSON_GetObjectItemCaseSensitive(o, "eval/accuracy");
    const cJSON *rt = cJSON_GetObjectItemCaseSensitive(o, "perf/rollout_time");
    const cJSON *tps = cJSON_GetObjectItemCaseSensitive(o, "perf/rollout_tokens_per_s");
    const cJSON *wt = cJSON_GetObjectItemCaseSensitive(o, "perf/train_wait_time");
    const cJSON *ut = cJSON_GetObjectItemCaseSensitive(o, "perf/update_weights_time");
#define NUM(x) (cJSON_IsNumber(x) ? (x)->valuedouble : NAN)
    if (cJSON_IsNumber(rid) && cJSON_IsNumber(rew) && !quiet)
        say("rollout %lld generated: reward %.3f, %.1f s, %.0f tokens/s",
            (long long)rid->valuedouble, rew->valuedouble, NUM(rt), NUM(tps));
    if (cJSON_IsNumber(rid) && cJSON_IsNumber(tt) && !quiet)
        say("rollout %lld trained (%lld of %lld): train %.1f s, waited %.1f s, weight update "
            "%.2f s (%.0f s elapsed)", (long long)rid->valuedouble,
            (long long)rid->valuedouble + 1, (long long)rs->p->num_rollout, tt->valuedouble,
            NUM(wt), NUM(ut), qn_now_s() - rs->t0);
#undef NUM
    if (cJSON_IsNumber(acc)) {
        int64_t v = cJSON_IsNumber(rid) ? (int64_t)rid->valuedouble : -1;
        if (!rs->have_acc) {
            rs->first_acc = acc->valuedouble;
            rs->first_acc_v = v;
        }
        rs->have_acc = true;
        rs->last_acc = acc->valuedouble;
        rs->last_acc_v = v;
        if (!quiet) say("eval after %lld rollouts: accuracy %.3f", (long long)v, acc->valuedouble);
    }
    cJSON_Delete(o);
}

/* Reads RUN_DIR/metrics.jsonl from where the last call stopped (whole lines
 * only). quiet: no progress lines (a resumed job's earlier lines). */
static void progress(run_state *rs, bool quiet) {
    if (rs->metrics_fd <= 0) { /* opened once it exists, then kept */
        char path[2300];
        snprintf(path, sizeof path, "%s/metrics.jsonl", rs->p->run_dir);
        rs->metrics_fd = open(path, O_RDONLY | O_CLOEXEC);
        if (rs->metrics_fd < 0) return;
    }
    int fd = rs->metrics_fd;
    static char buf[65536];
    for (;;) {
        ssize_t n = pread(fd, buf, sizeof buf - 1, rs->metrics_off);
        if (n <= 0) break;
        buf[n] = 0;
        char *line = buf, *nl;
        while ((nl = strchr(line, '\n'))) {
            *nl = 0;
            progress_line(rs, line, quiet);
            line = nl + 1;
        }
        if (line == buf && n == (ssize_t)sizeof buf - 1) line = buf + n; /* a huge line */
        rs->metrics_off += line - buf;
        if (n < (ssize_t)sizeof buf - 1) break;
    }

}

static void print_tail(const ln_plan *p, const ln_proc *q, int lines) {
    char path[2300];
    snprintf(path, sizeof path, "%s/logs/%s.log", p->run_dir, q->name);
    FILE *f = fopen(path, "rb");
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    long from = size > 4096 ? size - 4096 : 0;
    fseek(f, from, SEEK_SET);
    char buf[4097];
    size_t n = fread(buf, 1, 4096, f);
    fclose(f);
    buf[n] = 0;
    int seen = 0;
    size_t i = n;
    while (i > 0 && seen <= lines) {
        i--;
        if (buf[i] == '\n' && i + 1 < n) seen++;
    }
    if (seen > lines) i++;
    fprintf(stderr, "[launch] last lines of %s:\n%s%s", path, buf + i,
            n && buf[n - 1] != '\n' ? "\n" : "");
}

/* ------------------------------------------------------------ supervision */

static void describe_status(int st, char *buf, size_t size) {
    if (WIFEXITED(st)) snprintf(buf, size, "exited with status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st)) snprintf(buf, size, "killed by signal %d (%s)", WTERMSIG(st),
                                       strsignal(WTERMSIG(st)));
    else snprintf(buf, size, "ended (status 0x%x)", st);
}

static void reap(run_state *rs, bool quiet) {
    (void)quiet;
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        for (size_t i = 0; i < rs->p->n_procs; i++) {
            ln_proc *q = &rs->p->procs[i];
            if (q->pid != pid) continue;
            q->pid = 0;
            q->exited = true;
            q->exit_status = st;
            if (q->stop_fd > 0) {
                close(q->stop_fd);
                q->stop_fd = 0;
            }
        }
    }
}

static bool any_running(const ln_plan *p, bool redis_too) {
    for (size_t i = 0; i < p->n_procs; i++)
        if (p->procs[i].pid && (redis_too || p->procs[i].role != LN_REDIS)) return true;
    return false;
}

static void signal_all(run_state *rs, int sig, bool redis) {
    for (size_t i = 0; i < rs->p->n_procs; i++) {
        ln_proc *q = &rs->p->procs[i];
        if (!q->pid || (q->role == LN_REDIS) != redis) continue;
        kill(-q->pid, sig);
        if (sig == SIGKILL) kill(q->pid, SIGKILL);
        if (q->stop_fd > 0) {
            close(q->stop_fd); /* a remote process ends when its stdin closes */
            q->stop_fd = 0;
        }
    }
}

/* SIGTERM, wait up to grace_s (less after a second Ctrl-C), SIGKILL; Redis last. */
static void teardown(run_state *rs, double grace_s) {
    for (int pass = 0; pass < 2; pass++) {
        bool redis = pass == 1;
        if (!any_running(rs->p, redis)) continue;
        signal_all(rs, SIGTERM, redis);
        double end = qn_now_s() + grace_s;
        while (qn_now_s() < end && g_signal >= 0) {
            reap(rs, true);
            bool left = false;
            for (size_t i = 0; i < rs->p->n_procs; i++)
                left = left || (rs->p->procs[i].pid && (rs->p->procs[i].role == LN_REDIS) == redis);
            if (!left) break;
            usleep(50 * 1000);
        }
        signal_all(rs, SIGKILL, redis);
        for (size_t i = 0; i < rs->p->n_procs; i++) {
            ln_proc *q = &rs->p->procs[i];
            if (q->pid && (q->role == LN_REDIS) == redis) {
                int st;
                if (waitpid(q->pid, &st, 0) == q->pid) {
                    q->exited = true;
                    q->exit_status = st;
                }
                q->pid = 0;
            }
        }
    }
    stream_logs(rs);
}

static qn_status start_all(run_state *rs) {
    ln_plan *p = rs->p;
    char path[2300];
    for (const char *const *f = (const char *const[]){"router", "buffer", NULL}; *f; f++) {
        snprintf(path, sizeof path, "%s/ports/%s", p->run_dir, *f);
        unlink(path);
    }
    static const ln_role k_order[] = {LN_REDIS, LN_ROUTER, LN_BUFFER, LN_ENGINE, LN_EVAL,
                                      LN_TRAINER};
    for (size_t o = 0; o < sizeof k_order / sizeof k_order[0]; o++) {
        for (size_t i = 0; i < p->n_procs; i++) {
            if (p->procs[i].role != k_order[o]) continue;
            QN_CHECK(spawn(rs, i));
            if (k_order[o] == LN_REDIS) {
                QN_CHECK(wait_ready(rs, i, 120, redis_ready));
                say("redis %s ready (append-only file in %s/redis)", p->redis_url, p->run_dir);
            } else if (k_order[o] == LN_ROUTER) {
                QN_CHECK(wait_ready(rs, i, 60, router_ready));
                if (rs->router_http > 0)
                    say("router at %s, HTTP API http://%s:%d (/generate, /v1/completions, "
                        "/workers, /metrics)", rs->router_ep, p->nodes[0].addr, rs->router_http);
                else
                    say("router at %s", rs->router_ep);
            } else if (k_order[o] == LN_BUFFER) {
                QN_CHECK(wait_ready(rs, i, 120, buffer_ready));
                say("buffer at %s", rs->buffer_ep);
            }
        }
    }
    say("%d engine%s, %d trainer rank%s%s started; logs in %s/logs", p->n_engines,
        p->n_engines == 1 ? "" : "s", p->n_trainers, p->n_trainers == 1 ? "" : "s",
        p->has_eval ? ", evaluator" : "", p->run_dir);
    return QN_OK;
}

int ln_run(ln_plan *p) {
    run_state rs;
    memset(&rs, 0, sizeof rs);
    rs.p = p;
    rs.t0 = qn_now_s();
    struct sigaction sa; /* the run directory is locked already (ln_plan_build) */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    progress(&rs, true); /* a resumed job's metrics so far: no progress lines for them */
    say("%s job %s: %zu processes, run directory %s", p->resume ? "resuming" : "starting",
        p->job, p->n_procs, p->run_dir);
    int rc = 1;
    char reason[1024] = "";
    const ln_proc *culprit = NULL;
    qn_status s = start_all(&rs);
    if (s != QN_OK) {
        snprintf(reason, sizeof reason, "%s", qn_last_error());
        if (g_signal) rc = 128 + abs(g_signal);
        for (size_t i = 0; i < p->n_procs; i++)
            if (p->procs[i].exited) culprit = &p->procs[i];
    }
    bool trainers_done = false, finished = false;
    double trainers_done_at = 0;
    while (s == QN_OK && !finished) {
        if (g_signal) {
            snprintf(reason, sizeof reason, "stopped by %s", strsignal(abs(g_signal)));
            rc = 128 + abs(g_signal);
            break;
        }
        reap(&rs, false);
        stream_logs(&rs);
        progress(&rs, false);
        double now = qn_now_s();
        bool failed = false;
        int trainers_ok = 0;
        bool buffer_ok = false, eval_ok = !p->has_eval;
        for (size_t i = 0; i < p->n_procs && !failed; i++) {
            ln_proc *q = &p->procs[i];
            if (q->restart_at > 0 && now >= q->restart_at) {
                q->generation++;
                q->restart_at = 0;
                if ((s = spawn(&rs, i)) != QN_OK) {
                    snprintf(reason, sizeof reason, "%s: restart failed: %s", q->name,
                             qn_last_error());
                    failed = true;
                }
                continue;
            }
            if (!q->exited || q->restart_at > 0) {
                continue;
            }
            bool ok = WIFEXITED(q->exit_status) && WEXITSTATUS(q->exit_status) == 0;
            char how[128];
            describe_status(q->exit_status, how, sizeof how);
            switch (q->role) {
            case LN_TRAINER:
                if (ok) trainers_ok++;
                break;
            case LN_BUFFER:
                buffer_ok = ok;
                break;
            case LN_EVAL:
                eval_ok = ok;
                break;
            case LN_ENGINE:
                if (q->restarts < p->engine_restarts) {
                    q->restarts++;
                    q->restart_at = now + 1.0;
                    say("%s %s; restarting it (%d of %d), it rejoins with the current weights",
                        q->name, how, q->restarts, p->engine_restarts);
                    continue;
                }
                snprintf(reason, sizeof reason, "%s %s and was restarted %d times already",
                         q->name, how, q->restarts);
                failed = true;
                culprit = q;
                continue;
            default:
                break;
            }
            if (!ok) {
                snprintf(reason, sizeof reason, "%s %s", q->name, how);
                failed = true;
                culprit = q;
            } else if (q->role == LN_ROUTER || q->role == LN_REDIS) {
                snprintf(reason, sizeof reason, "%s exited before the job finished", q->name);
                failed = true;
                culprit = q;
            }
        }
        if (failed) break;
        if (trainers_ok == p->n_trainers && !trainers_done) {
            trainers_done = true;
            trainers_done_at = now;
            say("the trainer finished %lld rollouts; waiting for the buffer%s",
                (long long)p->num_rollout, p->has_eval ? " and the final evaluation" : "");
        }
        if (trainers_done && buffer_ok && eval_ok) {
            finished = true;
            rc = 0;
            break;
        }
        if (trainers_done && now - trainers_done_at > 600) {
            snprintf(reason, sizeof reason, "%s did not exit within 600 s of the trainer",
                     !buffer_ok ? "the buffer" : "the evaluator");
            break;
        }
        struct pollfd none;
        poll(&none, 0, 100);
    }
    progress(&rs, false);
    if (!finished && reason[0]) say("stopping the job: %s", reason);
    if (culprit) print_tail(p, culprit, 15);
    teardown(&rs, g_signal < 0 ? 0.5 : 10.0);
    if (finished) {
        say("job finished: %lld rollouts in %.0f s; run directory %s", (long long)p->num_rollout,
            qn_now_s() - rs.t0, p->run_dir);
        if (rs.have_acc)
            say("eval/accuracy %.3f (after %lld rollouts) -> %.3f (after %lld)", rs.first_acc,
                (long long)rs.first_acc_v, rs.last_acc, (long long)rs.last_acc_v);
    } else {
        say("job stopped (exit status %d); `quench launch --load %s` resumes it", rc, p->run_dir);
    }
    for (size_t i = 0; i < p->n_procs; i++) {
        if (p->procs[i].stop_fd > 0) close(p->procs[i].stop_fd);
        if (p->procs[i].log_rfd > 0) close(p->procs[i].log_rfd);
    }
    if (rs.metrics_fd > 0) close(rs.metrics_fd);
    return rc;
}
