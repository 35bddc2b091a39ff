/* reward.c — choosing a reward (built-in table, plugin loaded with dlopen,
 * or remote_rm), scoring batches inline or in a pool of worker processes,
 * and the failure policy.
 *
 * Worker processes are forked from the caller (no exec), so built-ins and
 * plugins need no separate binary; each worker calls the table's init, says
 * hello, then serves one job at a time over a socketpair: the parent sends
 * the samples of one job (a sample, or a whole group for score_group), the
 * worker answers with fixed-size qn_reward_score records. The parent drives
 * all workers from one poll() loop with per-job deadlines; a worker that
 * dies (EOF), passes its deadline or its RSS limit is killed with SIGKILL,
 * reaped, its job marked crash/timeout/memory, and a fresh worker is forked;
 * one above 3/4 of the RSS limit after a job is replaced the same way
 * (recycled) without failing anything.
 * Workers die with the parent (PR_SET_PDEATHSIG) and write their stdout to
 * stderr so a chatty plugin cannot corrupt `quench reward` output.
 *
 * Forking a threaded host is safe here because a worker only runs the
 * reward, malloc (fork-safe in glibc) and socket I/O; a reward that needs
 * threads starts them in init, which runs in the worker.
 *
 * Left out: CPU-time limits (the wall-clock timeout covers hangs), seccomp
 * sandboxing (isolation here is about faults, not hostile code).
 */
#include "rewards/rewards.h"

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "rewards/remote_rm.h"
#include "core/clock.h"

enum { MSG_MAGIC = 0x51524557u, /* "QREW" */ HELLO_CAP = 256 };

typedef struct worker {
    pid_t pid; /* 0 when no process */
    int fd;    /* parent's end of the socketpair */
    long job;  /* job index, -1 when idle */
    double deadline;
    unsigned char *rx; /* answer being received */
    size_t rx_len, rx_want;
} worker;

typedef struct job {
    size_t first, count;
    bool group;
} job;

struct qn_reward {
    qn_reward_config cfg;
    char *rm_type, *custom_rm_path, *rm_config, *reward_key, *rm_url; /* owned copies */
    char name[96];
    void *dl;
    qn_reward_api_v1 api; /* the table, converted to the v1 layout */
    void *inline_state;   /* init's state in inline mode */
    bool inline_inited;
    qn_remote_rm *remote;
    worker *workers;
    int32_t n_workers;
    qn_reward_stats stats;
};

/* ---- small helpers ---- */

const char *qn_reward_status_str(int32_t status) {
    switch (status) {
#define QN_REWARD_STATUS_STR_(name, value, str)                                                    \
    case name:                                                                                     \
        return str;
        QN_REWARD_STATUS_LIST(QN_REWARD_STATUS_STR_)
#undef QN_REWARD_STATUS_STR_
    default:
        return "unknown";
    }
}

qn_status qn_reward_isolation_parse(const char *s, qn_reward_isolation *out) {
    if (s && strcmp(s, "process") == 0)
        *out = QN_REWARD_ISOLATION_PROCESS;
    else if (s && strcmp(s, "inline") == 0)
        *out = QN_REWARD_ISOLATION_INLINE;
    else
        return qn_fail(QN_ERR_INVALID, "--reward-isolation expects process|inline, got '%s'",
                       s ? s : "");
    return QN_OK;
}

qn_status qn_reward_failure_parse(const char *s, qn_reward_failure *out) {
    if (s && strcmp(s, "drop") == 0)
        *out = QN_REWARD_FAILURE_DROP;
    else if (s && strcmp(s, "zero") == 0)
        *out = QN_REWARD_FAILURE_ZERO;
    else if (s && strcmp(s, "fail") == 0)
        *out = QN_REWARD_FAILURE_FAIL;
    else
        return qn_fail(QN_ERR_INVALID, "--reward-failure expects drop|zero|fail, got '%s'",
                       s ? s : "");
    return QN_OK;
}

qn_reward_config qn_reward_config_default(void) {
    return (qn_reward_config){.isolation = QN_REWARD_ISOLATION_PROCESS,
                              .failure = QN_REWARD_FAILURE_DROP,
                              .timeout_s = 10.0,
                              .n_workers = 4,
                              .worker_memory_mb = 2048,
                              .rm_concurrency = 64,
                              .rm_retries = 3,
                              .rm_backoff_s = 0.1};
}

const char *qn_reward_name(const qn_reward *rw) {
    return rw->name;
}

void qn_reward_get_stats(const qn_reward *rw, qn_reward_stats *out) {
    *out = rw->stats;
}

static char *dup_or_null(const char *s) {
    return s ? strdup(s) : NULL;
}

static void score_fail(qn_reward_score *o, qn_reward_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void score_fail(qn_reward_score *o, qn_reward_status st, const char *fmt, ...) {
    memset(o, 0, sizeof *o);
    o->status = st;
    o->value = NAN;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->message, sizeof o->message, fmt, ap);
    va_end(ap);
}

/* ---- loading ---- */

/* Splits "path.so:SYMBOL" (SYMBOL a C identifier) from a plain path. */
static void split_plugin_spec(const char *spec, char *path, size_t cap, char *sym, size_t scap) {
    const char *colon = strrchr(spec, ':');
    bool ident = colon && colon[1] && !isdigit((unsigned char)colon[1]);
    for (const char *p = colon ? colon + 1 : NULL; ident && *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_') ident = false;
    size_t pl = ident ? (size_t)(colon - spec) : strlen(spec);
    snprintf(path, cap, "%.*s", (int)pl, spec);
    snprintf(sym, scap, "%s", ident ? colon + 1 : QN_REWARD_PLUGIN_SYMBOL);
}

/* Checks a v1 table found at symbol `symname`. */
static qn_status accept_v1(qn_reward *rw, const qn_reward_api_v1 *t, const char *path,
                           const char *symname) {
    if (t->abi_version != 1)
        return qn_fail(QN_ERR_VERSION, "%s: %s has abi_version %u, expected 1", path, symname,
                       t->abi_version);
    if (t->struct_size < sizeof(qn_reward_api_v1))
        return qn_fail(QN_ERR_VERSION, "%s: %s has struct_size %u, version 1 needs %zu", path,
                       symname, t->struct_size, sizeof(qn_reward_api_v1));
    if (!t->score) return qn_fail(QN_ERR_INVALID, "%s: %s has no score function", path, symname);
    rw->api = *t;
    return QN_OK;
}

static qn_status load_plugin(qn_reward *rw, const char *spec) {
    char path[4096], sym[128], symname[160];
    split_plugin_spec(spec, path, sizeof path, sym, sizeof sym);
    rw->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!rw->dl) return qn_fail(QN_ERR_IO, "--custom-rm-path %s: %s", path, dlerror());
    /* newest known version first; only v1 exists so far, so newer tables
     * found below are reported rather than used */
    for (int v = QN_REWARD_ABI_VERSION; v >= 1; v--) {
        snprintf(symname, sizeof symname, "%s_v%d", sym, v);
        void *t = dlsym(rw->dl, symname);
        if (!t) continue;
        QN_CHECK(accept_v1(rw, t, path, symname));
        snprintf(rw->name, sizeof rw->name, "%.64s (abi v%d)",
                 rw->api.name ? rw->api.name : symname, v);
        return QN_OK;
    }
    for (int v = QN_REWARD_ABI_VERSION + 1; v <= 64; v++) {
        snprintf(symname, sizeof symname, "%s_v%d", sym, v);
        if (dlsym(rw->dl, symname))
            return qn_fail(QN_ERR_VERSION,
                           "--custom-rm-path %s: exports %s, but this quench "
                           "knows reward ABI versions 1..%d only",
                           path, symname, QN_REWARD_ABI_VERSION);
    }
    return qn_fail(QN_ERR_NOT_FOUND, "--custom-rm-path %s: no symbol %s_v1..%s_v%d", path, sym, sym,
                   QN_REWARD_ABI_VERSION);
}

/* ---- the worker side ---- */

static bool write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static bool read_all(int fd, void *buf, size_t n) {
    char *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}

typedef struct req_header {
    uint32_t magic;
    uint32_t n;
    uint32_t group;
    uint32_t pad;
    uint64_t payload;
} req_header;

typedef struct wire_sample {
    uint64_t prompt_len, n_prompt_ids, response_len, n_response_ids, label_len, meta_len,
        finish_len;
    uint32_t group_index, sample_index;
} wire_sample;

static size_t pad8(size_t n) {
    return (n + 7) & ~(size_t)7;
}

static size_t sample_wire_size(const qn_reward_sample *s) {
    return sizeof(wire_sample) + pad8(s->prompt_len + 1) + pad8(s->n_prompt_ids * 4) +
           pad8(s->response_len + 1) + pad8(s->n_response_ids * 4) +
           pad8(strlen(s->label ? s->label : "") + 1) +
           pad8(strlen(s->metadata_json ? s->metadata_json : "") + 1) +
           pad8(strlen(s->finish_reason ? s->finish_reason : "") + 1);
}

static unsigned char *put(unsigned char *p, const void *src, size_t n, bool nul) {
    if (n) memcpy(p, src, n);
    size_t total = n + (nul ? 1 : 0);
    memset(p + n, 0, pad8(total) - n);
    return p + pad8(total);
}

static void sample_put(unsigned char **pp, const qn_reward_sample *s) {
    const char *label = s->label ? s->label : "", *meta = s->metadata_json ? s->metadata_json : "";
    const char *fin = s->finish_reason ? s->finish_reason : "";
    wire_sample w = {.prompt_len = s->prompt_len,
                     .n_prompt_ids = s->n_prompt_ids,
                     .response_len = s->response_len,
                     .n_response_ids = s->n_response_ids,
                     .label_len = strlen(label),
                     .meta_len = strlen(meta),
                     .finish_len = strlen(fin),
                     .group_index = s->group_index,
                     .sample_index = s->sample_index};
    unsigned char *p = *pp;
    memcpy(p, &w, sizeof w);
    p += sizeof w;
    p = put(p, s->prompt ? s->prompt : "", s->prompt_len, true);
    p = put(p, s->prompt_ids, s->n_prompt_ids * 4, false);
    p = put(p, s->response ? s->response : "", s->response_len, true);
    p = put(p, s->response_ids, s->n_response_ids * 4, false);
    p = put(p, label, w.label_len, true);
    p = put(p, meta, w.meta_len, true);
    p = put(p, fin, w.finish_len, true);
    *pp = p;
}

/* Points s into the received buffer; false when lengths overrun end. */
static bool sample_get(unsigned char **pp, const unsigned char *end, qn_reward_sample *s) {
    unsigned char *p = *pp;
    wire_sample w;
    if ((size_t)(end - p) < sizeof w) return false;
    memcpy(&w, p, sizeof w);
    p += sizeof w;
#define TAKE_(field, bytes, nul)                                                                   \
    do {                                                                                           \
        size_t sz_ = pad8((bytes) + ((nul) ? 1 : 0));                                              \
        if ((size_t)(end - p) < sz_) return false;                                                 \
        field = (void *)p;                                                                         \
        p += sz_;                                                                                  \
    } while (0)
    memset(s, 0, sizeof *s);
    TAKE_(s->prompt, w.prompt_len, 1);
    TAKE_(s->prompt_ids, w.n_prompt_ids * 4, 0);
    TAKE_(s->response, w.response_len, 1);
    TAKE_(s->response_ids, w.n_response_ids * 4, 0);
    TAKE_(s->label, w.label_len, 1);
    TAKE_(s->metadata_json, w.meta_len, 1);
    TAKE_(s->finish_reason, w.finish_len, 1);
#undef TAKE_
    s->prompt_len = w.prompt_len;
    s->n_prompt_ids = w.n_prompt_ids;
    s->response_len = w.response_len;
    s->n_response_ids = w.n_response_ids;
    if (!w.n_prompt_ids) s->prompt_ids = NULL;
    if (!w.n_response_ids) s->response_ids = NULL;
    s->group_index = w.group_index;
    s->sample_index = w.sample_index;
    *pp = p;
    return true;
}

/* Calls the table for one job; shared by inline mode and workers. */
static void run_job(const qn_reward_api_v1 *api, void *state, const qn_reward_sample *s, size_t n,
                    bool group, qn_reward_score *out) {
    memset(out, 0, n * sizeof *out);
    if (group) {
        int rc = api->score_group(state, s, n, out);
        for (size_t i = 0; i < n; i++) {
            if (rc != QN_REWARD_OK && out[i].status == QN_REWARD_OK) {
                out[i].status = QN_REWARD_ERROR;
                if (!out[i].message[0])
                    snprintf(out[i].message, sizeof out[i].message, "score_group returned %d", rc);
            }
        }
        return;
    }
    int rc = api->score(state, s, out);
    if (rc != QN_REWARD_OK) {
        out->status = QN_REWARD_ERROR;
        if (!out->message[0]) snprintf(out->message, sizeof out->message, "score returned %d", rc);
    }
}

static void worker_main(const qn_reward *rw, int fd) {
    struct {
        int32_t status;
        char msg[HELLO_CAP];
    } hello = {0};
    void *state = NULL;
    if (rw->api.init) {
        int rc =
            rw->api.init(rw->rm_config ? rw->rm_config : "", &state, hello.msg, sizeof hello.msg);
        hello.msg[HELLO_CAP - 1] = '\0';
        if (rc != QN_REWARD_OK) hello.status = rc ? rc : 1;
    }
    if (!write_all(fd, &hello, sizeof hello) || hello.status) _exit(0);
    unsigned char *buf = NULL;
    size_t cap = 0;
    qn_reward_sample *samples = NULL;
    qn_reward_score *scores = NULL;
    size_t scap = 0;
    for (;;) {
        req_header h;
        if (!read_all(fd, &h, sizeof h) || h.magic != MSG_MAGIC) break;
        if (h.payload > cap) {
            unsigned char *nb = realloc(buf, h.payload);
            if (!nb) _exit(3);
            buf = nb;
            cap = h.payload;
        }
        if (!read_all(fd, buf, h.payload)) break;
        if (h.n > scap) {
            samples = realloc(samples, h.n * sizeof *samples);
            scores = realloc(scores, h.n * sizeof *scores);
            if (!samples || !scores) _exit(3);
            scap = h.n;
        }
        unsigned char *p = buf;
        for (uint32_t i = 0; i < h.n; i++)
            if (!sample_get(&p, buf + h.payload, &samples[i])) _exit(4);
        run_job(&rw->api, state, samples, h.n, h.group != 0, scores);
        uint32_t n = h.n;
        if (!write_all(fd, &n, sizeof n) || !write_all(fd, scores, n * sizeof *scores)) break;
    }
    if (rw->api.free) rw->api.free(state);
    _exit(0);
}

/* ---- the pool ---- */

static int64_t worker_rss_mb(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long size = 0, rss = 0;
    int got = fscanf(f, "%ld %ld", &size, &rss);
    fclose(f);
    if (got != 2) return -1;
    return (int64_t)rss * sysconf(_SC_PAGESIZE) / (1024 * 1024);
}

static void worker_kill(worker *w) {
    if (w->pid > 0) {
        kill(w->pid, SIGKILL);
        while (waitpid(w->pid, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    if (w->fd >= 0) close(w->fd);
    w->pid = 0;
    w->fd = -1;
    w->job = -1;
    w->rx_len = w->rx_want = 0;
}

/* Describes how a dead worker ended; reaps it. */
static void worker_reap(worker *w, char *why, size_t cap) {
    int st = 0;
    pid_t r;
    while ((r = waitpid(w->pid, &st, 0)) < 0 && errno == EINTR) {
    }
    if (r == w->pid && WIFSIGNALED(st))
        snprintf(why, cap, "worker killed by signal %d (%s)", WTERMSIG(st),
                 strsignal(WTERMSIG(st)));
    else if (r == w->pid && WIFEXITED(st))
        snprintf(why, cap, "worker exited with status %d", WEXITSTATUS(st));
    else
        snprintf(why, cap, "worker vanished");
    w->pid = 0;
    if (w->fd >= 0) close(w->fd);
    w->fd = -1;
    w->job = -1;
    w->rx_len = w->rx_want = 0;
}

static qn_status worker_spawn(qn_reward *rw, int32_t idx) {
    worker *w = &rw->workers[idx];
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return qn_fail(QN_ERR_IO, "reward worker: socketpair: %s", strerror(errno));
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(sv[0]);
        close(sv[1]);
        return qn_fail(QN_ERR_IO, "reward worker: fork: %s", strerror(errno));
    }
    if (pid == 0) {
        close(sv[0]);
        for (int32_t i = 0; i < rw->n_workers; i++)
            if (i != idx && rw->workers[i].fd >= 0) close(rw->workers[i].fd);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(0);
        /* the host's handlers (a test framework's SIGSEGV catcher, a
         * service's shutdown hooks) must not run in a worker: a crash has to
         * kill it so the parent sees the signal */
        for (int sig = 1; sig < NSIG; sig++)
            signal(sig, SIG_DFL);
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        signal(SIGINT, SIG_IGN); /* the parent decides when workers end */
        dup2(STDERR_FILENO, STDOUT_FILENO);
        worker_main(rw, sv[1]);
        _exit(0);
    }
    close(sv[1]);
    w->pid = pid;
    w->fd = sv[0];
    w->job = -1;
    /* wait for hello: init may load large things, so allow more than a sample */
    double limit = fmax(30.0, 3 * rw->cfg.timeout_s);
    struct pollfd pfd = {.fd = w->fd, .events = POLLIN};
    int pr;
    do {
        pr = poll(&pfd, 1, (int)(limit * 1000));
    } while (pr < 0 && errno == EINTR);
    struct {
        int32_t status;
        char msg[HELLO_CAP];
    } hello;
    if (pr <= 0) {
        worker_kill(w);
        return qn_fail(QN_ERR_TIMEOUT, "reward %s: init did not finish within %.0f s", rw->name,
                       limit);
    }
    if (!read_all(w->fd, &hello, sizeof hello)) {
        char why[128];
        worker_reap(w, why, sizeof why);
        return qn_fail(QN_ERR_INTERNAL, "reward %s: init crashed: %s", rw->name, why);
    }
    if (hello.status) {
        hello.msg[HELLO_CAP - 1] = '\0';
        worker_kill(w);
        return qn_fail(QN_ERR_INVALID, "reward %s: init failed: %s", rw->name,
                       hello.msg[0] ? hello.msg : "(no message)");
    }
    int fl = fcntl(w->fd, F_GETFL);
    fcntl(w->fd, F_SETFL, fl | O_NONBLOCK);
    return QN_OK;
}

static void pool_stop(qn_reward *rw) {
    if (!rw->workers) return;
    for (int32_t i = 0; i < rw->n_workers; i++) {
        worker *w = &rw->workers[i];
        if (w->fd >= 0) close(w->fd); /* EOF: the worker frees and exits */
        w->fd = -1;
    }
    double until = qn_now_s() + 0.5;
    for (int32_t i = 0; i < rw->n_workers; i++) {
        worker *w = &rw->workers[i];
        while (w->pid > 0) {
            pid_t r = waitpid(w->pid, NULL, WNOHANG);
            if (r == w->pid || (r < 0 && errno != EINTR)) {
                w->pid = 0;
            } else if (qn_now_s() > until) {
                worker_kill(w);
            } else {
                usleep(1000);
            }
        }
        free(w->rx);
    }
    free(rw->workers);
    rw->workers = NULL;
}

/* ---- init / free ---- */

qn_status qn_reward_init(qn_reward **out, const qn_reward_config *cfg) {
    *out = NULL;
    if ((cfg->rm_type != NULL) == (cfg->custom_rm_path != NULL))
        return qn_fail(QN_ERR_INVALID, "give exactly one of --rm-type and --custom-rm-path");
    if (!(cfg->timeout_s > 0) || !isfinite(cfg->timeout_s))
        return qn_fail(QN_ERR_INVALID, "--reward-timeout must be > 0, got %g", cfg->timeout_s);
    if (cfg->n_workers < 1 || cfg->n_workers > 4096)
        return qn_fail(QN_ERR_INVALID, "--reward-workers must be in [1, 4096], got %d",
                       (int)cfg->n_workers);
    qn_reward *rw = calloc(1, sizeof *rw);
    if (!rw) return qn_fail(QN_ERR_NOMEM, "reward: out of memory");
    rw->cfg = *cfg;
    rw->rm_type = dup_or_null(cfg->rm_type);
    rw->custom_rm_path = dup_or_null(cfg->custom_rm_path);
    rw->rm_config = dup_or_null(cfg->rm_config);
    rw->reward_key = dup_or_null(cfg->reward_key);
    rw->rm_url = dup_or_null(cfg->rm_url);
    rw->cfg.rm_type = rw->rm_type;
    rw->cfg.custom_rm_path = rw->custom_rm_path;
    rw->cfg.rm_config = rw->rm_config;
    rw->cfg.reward_key = rw->reward_key;
    rw->cfg.rm_url = rw->rm_url;
    qn_status s = QN_OK;
    if (rw->rm_type && strcmp(rw->rm_type, "remote_rm") == 0) {
        qn_remote_rm_config rc = {.url = rw->rm_url,
                                  .timeout_s = cfg->timeout_s,
                                  .concurrency = cfg->rm_concurrency,
                                  .retries = cfg->rm_retries,
                                  .backoff_s = cfg->rm_backoff_s,
                                  .reward_key = rw->reward_key};
        QN_CHECK_GOTO(qn_remote_rm_init(&rw->remote, &rc), s, fail);
        snprintf(rw->name, sizeof rw->name, "remote_rm (%s)", rw->rm_url);
        *out = rw;
        return QN_OK;
    }
    if (rw->rm_type) {
        const qn_reward_api_v1 *t = qn_reward_builtin(rw->rm_type);
        if (!t) {
            char names[160] = "";
            for (size_t i = 0; qn_reward_builtin_names[i]; i++)
                snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? "|" : "",
                         qn_reward_builtin_names[i]);
            s = qn_fail(QN_ERR_NOT_FOUND, "--rm-type expects %s, got '%s'", names, rw->rm_type);
            goto fail;
        }
        rw->api = *t;
        snprintf(rw->name, sizeof rw->name, "%s (built-in)", t->name);
    } else {
        QN_CHECK_GOTO(load_plugin(rw, rw->custom_rm_path), s, fail);
    }
    if (cfg->isolation == QN_REWARD_ISOLATION_INLINE) {
        if (rw->api.init) {
            char err[HELLO_CAP] = "";
            int rc = rw->api.init(rw->rm_config ? rw->rm_config : "", &rw->inline_state, err,
                                  sizeof err);
            err[HELLO_CAP - 1] = '\0';
            if (rc != QN_REWARD_OK) {
                s = qn_fail(QN_ERR_INVALID, "reward %s: init failed: %s", rw->name,
                            err[0] ? err : "(no message)");
                goto fail;
            }
        }
        rw->inline_inited = true;
    } else {
        rw->n_workers = cfg->n_workers;
        rw->workers = calloc((size_t)rw->n_workers, sizeof *rw->workers);
        if (!rw->workers) {
            s = qn_fail(QN_ERR_NOMEM, "reward: out of memory");
            goto fail;
        }
        for (int32_t i = 0; i < rw->n_workers; i++) {
            rw->workers[i].fd = -1;
            rw->workers[i].job = -1;
        }
        for (int32_t i = 0; i < rw->n_workers; i++)
            QN_CHECK_GOTO(worker_spawn(rw, i), s, fail);
    }
    *out = rw;
    return QN_OK;
fail:
    qn_reward_free(rw);
    return s;
}

void qn_reward_free(qn_reward *rw) {
    if (!rw) return;
    pool_stop(rw);
    if (rw->inline_inited && rw->api.free) rw->api.free(rw->inline_state);
    qn_remote_rm_free(rw->remote);
    if (rw->dl) dlclose(rw->dl);
    free(rw->rm_type);
    free(rw->custom_rm_path);
    free(rw->rm_config);
    free(rw->reward_key);
    free(rw->rm_url);
    free(rw);
}

/* ---- scoring ---- */

static qn_status send_job(qn_reward *rw, worker *w, const qn_reward_batch *b, const job *j) {
    size_t payload = 0;
    for (size_t i = 0; i < j->count; i++)
        payload += sample_wire_size(&b->samples[j->first + i]);
    unsigned char *buf = malloc(sizeof(req_header) + payload);
    if (!buf) return qn_fail(QN_ERR_NOMEM, "reward: out of memory");
    req_header h = {
        .magic = MSG_MAGIC, .n = (uint32_t)j->count, .group = j->group, .payload = payload};
    memcpy(buf, &h, sizeof h);
    unsigned char *p = buf + sizeof h;
    for (size_t i = 0; i < j->count; i++)
        sample_put(&p, &b->samples[j->first + i]);
    /* the worker is idle and reading, so a blocking send completes */
    int fl = fcntl(w->fd, F_GETFL);
    fcntl(w->fd, F_SETFL, fl & ~O_NONBLOCK);
    bool ok = write_all(w->fd, buf, sizeof h + payload);
    fcntl(w->fd, F_SETFL, fl | O_NONBLOCK);
    free(buf);
    if (!ok) return qn_fail(QN_ERR_CLOSED, "reward worker %d: send failed", (int)w->pid);
    w->rx_want = sizeof(uint32_t) + j->count * sizeof(qn_reward_score);
    w->rx_len = 0;
    unsigned char *rx = realloc(w->rx, w->rx_want);
    if (!rx) return qn_fail(QN_ERR_NOMEM, "reward: out of memory");
    w->rx = rx;
    return QN_OK;
}

static void fail_job(qn_reward_score *scores, const job *j, qn_reward_status st, const char *why) {
    for (size_t i = 0; i < j->count; i++)
        score_fail(&scores[j->first + i], st, "%s", why);
}

/* Replaces a worker after it was killed or died; false when that fails. */
static bool respawn(qn_reward *rw, int32_t idx) {
    rw->stats.worker_restarts++;
    qn_status s = worker_spawn(rw, idx);
    if (s != QN_OK) {
        QN_LOG_ERROR("reward: cannot restart worker %d: %s", (int)idx, qn_last_error());
        return false;
    }
    return true;
}

static qn_status score_pool(qn_reward *rw, const qn_reward_batch *b, const job *jobs,
                            size_t n_jobs) {
    size_t next = 0, done = 0;
    struct pollfd *pfd = calloc((size_t)rw->n_workers, sizeof *pfd);
    int32_t *pidx = calloc((size_t)rw->n_workers, sizeof *pidx);
    if (!pfd || !pidx) {
        free(pfd);
        free(pidx);
        return qn_fail(QN_ERR_NOMEM, "reward: out of memory");
    }
    qn_status result = QN_OK;
    int64_t mem_limit = rw->cfg.worker_memory_mb;
    while (done < n_jobs) {
        /* hand out jobs to idle workers */
        bool any_alive = false;
        for (int32_t i = 0; i < rw->n_workers && next < n_jobs; i++) {
            worker *w = &rw->workers[i];
            if (w->pid <= 0 && !respawn(rw, i)) continue;
            any_alive = true;
            if (w->job >= 0) continue;
            const job *j = &jobs[next];
            if (send_job(rw, w, b, j) != QN_OK) {
                /* died between jobs (e.g. killed from outside): replace, retry later */
                char why[128];
                worker_reap(w, why, sizeof why);
                QN_LOG_WARN("reward: idle worker lost (%s); restarting", why);
                continue;
            }
            w->job = (long)next++;
            w->deadline = qn_now_s() + rw->cfg.timeout_s * (double)j->count;
        }
        int np = 0;
        double now = qn_now_s(), soonest = INFINITY;
        for (int32_t i = 0; i < rw->n_workers; i++) {
            worker *w = &rw->workers[i];
            if (w->pid > 0) any_alive = true;
            if (w->pid <= 0 || w->job < 0) continue;
            pfd[np] = (struct pollfd){.fd = w->fd, .events = POLLIN};
            pidx[np++] = i;
            if (w->deadline < soonest) soonest = w->deadline;
        }
        if (np == 0) {
            if (!any_alive) {
                for (size_t k = next; k < n_jobs; k++)
                    fail_job(b->scores, &jobs[k], QN_REWARD_CRASH,
                             "no reward worker could be started");
                result =
                    qn_fail(QN_ERR_INTERNAL, "reward %s: no worker could be started", rw->name);
                break;
            }
            continue;
        }
        double wait = soonest - now;
        if (mem_limit > 0 && wait > 0.02) wait = 0.02; /* sample RSS while jobs run */
        if (wait < 0) wait = 0;
        int pr = poll(pfd, (nfds_t)np, (int)(wait * 1000) + 1);
        if (pr < 0 && errno != EINTR) {
            result = qn_fail(QN_ERR_IO, "reward: poll: %s", strerror(errno));
            break;
        }
        now = qn_now_s();
        for (int k = 0; k < np; k++) {
            int32_t i = pidx[k];
            worker *w = &rw->workers[i];
            const job *j = &jobs[w->job];
            if (pfd[k].revents) {
                ssize_t r = 1;
                while (w->rx_len < w->rx_want &&
                       (r = read(w->fd, w->rx + w->rx_len, w->rx_want - w->rx_len)) > 0)
                    w->rx_len += (size_t)r;
                if (w->rx_len == w->rx_want) {
                    memcpy(&b->scores[j->first], w->rx + sizeof(uint32_t),
                           j->count * sizeof(qn_reward_score));
                    w->job = -1;
                    done++;
                    if (mem_limit > 0) {
                        /* recycle early, so that a slow leak is cleared
                         * between samples instead of killing one */
                        int64_t rss = worker_rss_mb(w->pid);
                        if (rss > mem_limit * 3 / 4) {
                            QN_LOG_INFO("reward: worker %d RSS %lld MiB > 3/4 of %lld MiB; "
                                        "recycling",
                                        (int)w->pid, (long long)rss, (long long)mem_limit);
                            worker_kill(w);
                            rw->stats.worker_recycles++;
                            rw->stats.worker_restarts--; /* respawn counts it again */
                            respawn(rw, i);
                        }
                    }
                    continue;
                }
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                    char why[128];
                    worker_reap(w, why, sizeof why);
                    fail_job(b->scores, j, QN_REWARD_CRASH, why);
                    done++;
                    respawn(rw, i);
                    continue;
                }
            }
            if (now >= w->deadline) {
                char why[128];
                snprintf(why, sizeof why, "no answer within %.3g s; worker killed",
                         rw->cfg.timeout_s * (double)j->count);
                worker_kill(w);
                fail_job(b->scores, j, QN_REWARD_TIMEOUT, why);
                done++;
                respawn(rw, i);
                continue;
            }
            if (mem_limit > 0) {
                int64_t rss = worker_rss_mb(w->pid);
                if (rss > mem_limit) {
                    char why[128];
                    snprintf(why, sizeof why, "worker RSS %lld MiB over the %lld MiB limit; killed",
                             (long long)rss, (long long)mem_limit);
                    worker_kill(w);
                    fail_job(b->scores, j, QN_REWARD_MEMORY, why);
                    done++;
                    respawn(rw, i);
                }
            }
        }
    }
    free(pfd);
    free(pidx);
    return result;
}

static void score_inline(qn_reward *rw, const qn_reward_batch *b, const job *jobs, size_t n_jobs) {
    for (size_t k = 0; k < n_jobs; k++)
        run_job(&rw->api, rw->inline_state, b->samples + jobs[k].first, jobs[k].count,
                jobs[k].group, b->scores + jobs[k].first);
}

/* Picks --reward-key and checks finiteness: the host's word on every score. */
static void finish_score(const qn_reward *rw, qn_reward_score *o) {
    if (o->status != QN_REWARD_OK) {
        if (o->status < 0 || o->status >= QN_REWARD_STATUS_COUNT) o->status = QN_REWARD_ERROR;
        o->value = NAN;
        return;
    }
    if (o->n_named > QN_REWARD_MAX_NAMED) o->n_named = QN_REWARD_MAX_NAMED;
    if (rw->reward_key) {
        bool found = false;
        char names[QN_REWARD_MESSAGE_CAP - 64] = "";
        for (uint32_t i = 0; i < o->n_named; i++) {
            o->names[i][QN_REWARD_NAME_CAP - 1] = '\0';
            if (strcmp(o->names[i], rw->reward_key) == 0) {
                o->value = o->named[i];
                found = true;
                break;
            }
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? "," : "",
                     o->names[i]);
        }
        if (!found) {
            char msg[QN_REWARD_MESSAGE_CAP];
            snprintf(msg, sizeof msg, "no named score '%s' (has: %s)", rw->reward_key,
                     names[0] ? names : "none");
            score_fail(o, QN_REWARD_MISSING_KEY, "%s", msg);
            return;
        }
    }
    if (!isfinite(o->value)) {
        double v = o->value;
        score_fail(o, QN_REWARD_NON_FINITE, "reward is %s", isnan(v) ? "NaN" : "infinite");
    }
}

qn_status qn_reward_score_batch(qn_reward *rw, qn_reward_batch *b) {
    size_t n_groups = b->group_sizes ? b->n_groups : b->n_samples;
    if (b->group_sizes) {
        size_t total = 0;
        for (size_t g = 0; g < n_groups; g++) {
            if (b->group_sizes[g] == 0)
                return qn_fail(QN_ERR_INVALID, "reward batch: group %zu is empty", g);
            total += b->group_sizes[g];
        }
        if (total != b->n_samples)
            return qn_fail(QN_ERR_INVALID,
                           "reward batch: group sizes sum to %zu, batch has %zu "
                           "samples",
                           total, b->n_samples);
    }
    if (b->n_samples == 0) return QN_OK;
    qn_status s = QN_OK;
    if (rw->remote) {
        QN_CHECK(qn_remote_rm_score(rw->remote, b->samples, b->n_samples, b->scores, NULL));
    } else {
        bool grouped = rw->api.score_group != NULL;
        size_t n_jobs = grouped ? n_groups : b->n_samples;
        job *jobs = malloc(n_jobs * sizeof *jobs);
        if (!jobs) return qn_fail(QN_ERR_NOMEM, "reward: out of memory");
        size_t off = 0;
        for (size_t k = 0; k < n_jobs; k++) {
            size_t cnt = grouped ? (b->group_sizes ? b->group_sizes[k] : 1) : 1;
            jobs[k] = (job){.first = off, .count = cnt, .group = grouped};
            off += cnt;
        }
        if (rw->workers)
            s = score_pool(rw, b, jobs, n_jobs);
        else
            score_inline(rw, b, jobs, n_jobs);
        free(jobs);
    }
    /* verdicts */
    qn_status policy = QN_OK;
    size_t off = 0;
    for (size_t g = 0; g < n_groups; g++) {
        size_t cnt = b->group_sizes ? b->group_sizes[g] : 1;
        bool failed = false;
        for (size_t i = off; i < off + cnt; i++) {
            qn_reward_score *o = &b->scores[i];
            finish_score(rw, o);
            rw->stats.samples++;
            rw->stats.by_status[o->status]++;
            if (o->status == QN_REWARD_OK) continue;
            failed = true;
            if (rw->cfg.failure == QN_REWARD_FAILURE_ZERO) o->value = 0.0;
            if (rw->cfg.failure == QN_REWARD_FAILURE_FAIL && policy == QN_OK)
                policy =
                    qn_fail(QN_ERR_INTERNAL, "reward %s: sample %zu (group %zu) failed: %s: %s",
                            rw->name, i, g, qn_reward_status_str(o->status), o->message);
        }
        rw->stats.groups++;
        bool kept = !(failed && rw->cfg.failure == QN_REWARD_FAILURE_DROP);
        if (!kept) rw->stats.groups_dropped++;
        if (b->group_kept) b->group_kept[g] = kept;
        off += cnt;
    }
    if (s != QN_OK) return s;
    return policy;
}
