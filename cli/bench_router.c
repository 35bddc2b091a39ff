/* bench_router.c — `quench bench router`: load on the request router
 * (cli/router.c) with real engines, all child processes of this one:
 *
 *   (a) HTTP load: --clients concurrent clients (libcurl multi, one
 *       keep-alive connection each) send POST /generate to the router for
 *       --seconds, each sending its next request as soon as the last one is
 *       answered; prints requests/s, generated tokens/s and the latency
 *       percentiles of the requests answered within the window (the ones
 *       still open at the end are finished but not counted);
 *   (b) router overhead: the same GenerateRequests sent one at a time over
 *       ZeroMQ, alternately (i) straight to an engine whose "router" is this
 *       process (a ROUTER socket answering its Register and Heartbeats) and
 *       (ii) through the router by a DEALER client, to engines with the
 *       same flags; prints both latency distributions and the median of
 *       the per-pair differences. Alternating keeps the two paths under the
 *       same machine load.
 *
 * The model is a random one from --config (the tiny GLM-4.5-style test
 * config by default), saved in a temporary folder that is removed at the
 * end with the service logs (kept, and named, when something failed).
 * Leaves out: /v1/completions and streaming, requests with n > 1, engines
 * on other machines. */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "cli/bench_router.h"
#include "cli/commands.h"
#include "core/flags.h"
#include "core/model/model.h"
#include "net/codec.h"
#include "net/zchan.h"
#include "core/clock.h"

typedef struct bench_router_cfg {
    char *config;
    int64_t engines, clients, seconds, prompt_len, max_new, threads, max_running, pairs,
        overhead_max_new, seed;
} bench_router_cfg;

static const qn_flag k_brt_flags[] = {
    QN_F_STRING(bench_router_cfg, config, "config",
                QN_SOURCE_DIR "/tests/ref/configs/tiny_glm45.json",
                "Hugging Face config.json of the engines' model (random weights)",
                .metavar = "CONFIG.json"),
    QN_F_INT(bench_router_cfg, engines, "engines", "2", 1, 64, "engines behind the router"),
    QN_F_INT(bench_router_cfg, clients, "clients", "256", 1, 4096,
             "concurrent HTTP clients (one connection and one request in flight each)"),
    QN_F_INT(bench_router_cfg, seconds, "seconds", "20", 1, 3600, "length of the HTTP load"),
    QN_F_INT(bench_router_cfg, prompt_len, "prompt-len", "8", 1, 4096, "prompt tokens"),
    QN_F_INT(bench_router_cfg, max_new, "max-new-tokens", "8", 1, 4096,
             "max_new_tokens of the HTTP requests"),
    QN_F_INT(bench_router_cfg, threads, "engine-threads", "1", 1, 256, "CPU threads per engine"),
    QN_F_INT(bench_router_cfg, max_running, "max-running-requests", "64", 1, 65536,
             "engines' --max-running-requests"),
    QN_F_INT(bench_router_cfg, pairs, "overhead-pairs", "400", 0, 1000000,
             "requests per path in the overhead measurement (0: skip it)"),
    QN_F_INT(bench_router_cfg, overhead_max_new, "overhead-max-new-tokens", "1", 1, 4096,
             "max_new_tokens of the overhead requests (small: the engine's time is noise)"),
    QN_F_INT(bench_router_cfg, seed, "seed", "1", 0, 1e15, "seed of the weights and prompts"),
};
static const qn_flag_table k_brt_table = {
    .command = "bench router",
    .usage = "quench bench router [--engines 2] [--clients 256] [--seconds 20]\n"
             "       [--max-new-tokens 8] [--overhead-pairs 400] [--config CONFIG.json]",
    .summary = "Starts `quench router` and --engines `quench rollout` engines on a random model,\n"
               "drives POST /generate with --clients concurrent HTTP clients for --seconds\n"
               "(requests/s, tokens/s, p50/p90/p99 latency), then measures the router's\n"
               "overhead per request: the same requests one at a time straight to an engine\n"
               "over ZeroMQ and through the router, alternately.",
    .flags = k_brt_flags,
    .n_flags = QN_FLAGS_COUNT(k_brt_flags),
    .cfg_size = sizeof(bench_router_cfg)};

void qn_help_bench_router(FILE *out) {
    qn_flags_print_help(&k_brt_table, out);
}

/* ------------------------------------------------------------------ processes */

#define BRT_MAX_PROCS 80

typedef struct brt {
    const bench_router_cfg *c;
    char dir[64];
    char exe[4096];
    pid_t procs[BRT_MAX_PROCS];
    int n_procs;
    char zmq[256];
    int http;
    int32_t vocab;
    uint64_t rng;
} brt;

static pid_t spawn(brt *b, const char *const *argv, const char *log_name) {
    char log[256];
    snprintf(log, sizeof log, "%s/%s", b->dir, log_name);
    if (b->n_procs == BRT_MAX_PROCS) return -1;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the benchmark */
        if (getppid() != parent) _exit(127);
        int in = open("/dev/null", O_RDONLY), out = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (in >= 0) dup2(in, 0);
        if (out >= 0) {
            dup2(out, 1);
            dup2(out, 2);
        }
        execv(b->exe, (char *const *)argv);
        _exit(127);
    }
    b->procs[b->n_procs++] = pid;
    return pid;
}

/* SIGTERM everything, SIGKILL what is left after 3 s, reap all. */
static void stop_all(brt *b) {
    for (int i = 0; i < b->n_procs; i++)
        kill(b->procs[i], SIGTERM);
    double end = qn_now_s() + 3.0;
    for (int i = 0; i < b->n_procs; i++) {
        while (waitpid(b->procs[i], NULL, WNOHANG) == 0) {
            if (qn_now_s() > end) {
                kill(b->procs[i], SIGKILL);
                waitpid(b->procs[i], NULL, 0);
                break;
            }
            usleep(10000);
        }
    }
    b->n_procs = 0;
}

static bool any_exited(brt *b) {
    for (int i = 0; i < b->n_procs; i++) {
        int st;
        if (waitpid(b->procs[i], &st, WNOHANG) == b->procs[i]) {
            b->procs[i] = b->procs[--b->n_procs];
            return true;
        }
    }
    return false;
}

/* CPU seconds (user + system) pid has used so far; NAN if unknown. */
static double proc_cpu_s(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return NAN;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* fields after the ")" that ends the command name: state is field 3, utime 14, stime 15 */
    const char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (!p ||
        sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return NAN;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

typedef struct body {
    char *p;
    size_t n;
} body;

static size_t on_data(char *d, size_t sz, size_t nm, void *u) {
    body *b = u;
    char *np = realloc(b->p, b->n + sz * nm + 1);
    if (!np) return 0;
    b->p = np;
    memcpy(b->p + b->n, d, sz * nm);
    b->n += sz * nm;
    b->p[b->n] = '\0';
    return sz * nm;
}

/* Dispatchable engines per GET /health; -1 when the router does not answer. */
static int health(brt *b) {
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/health", b->http);
    CURL *h = curl_easy_init();
    if (!h) return -1;
    body bd = {0};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &bd);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 3000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    int n = -1;
    if (curl_easy_perform(h) == CURLE_OK) {
        cJSON *o = bd.p ? cJSON_Parse(bd.p) : NULL;
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "engines");
        n = cJSON_IsNumber(e) ? e->valueint : 0;
        cJSON_Delete(o);
    }
    free(bd.p);
    curl_easy_cleanup(h);
    return n;
}

static qn_status start_services(brt *b) {
    const bench_router_cfg *c = b->c;
    char port_file[128], threads[32], maxrun[32];
    snprintf(port_file, sizeof port_file, "%s/ports", b->dir);
    snprintf(threads, sizeof threads, "%lld", (long long)c->threads);
    snprintf(maxrun, sizeof maxrun, "%lld", (long long)c->max_running);
    const char *rargv[] = {b->exe,
                           "router",
                           "--listen",
                           "tcp://127.0.0.1:*",
                           "--http-port",
                           "0",
                           "--port-file",
                           port_file,
                           "--heartbeat-ms",
                           "500",
                           "--max-connections",
                           "8192",
                           "--max-queued",
                           "1000000",
                           NULL};
    if (spawn(b, rargv, "router.log") < 0) return qn_fail(QN_ERR_IO, "bench router: fork failed");
    double end = qn_now_s() + 15.0;
    bool up = false;
    while (!up && qn_now_s() < end) {
        FILE *f = fopen(port_file, "r");
        if (f) {
            up = fscanf(f, "zmq=%255s http=%d", b->zmq, &b->http) == 2;
            fclose(f);
        }
        if (!up) {
            if (any_exited(b)) break;
            usleep(20000);
        }
    }
    if (!up)
        return qn_fail(QN_ERR_IO, "bench router: the router did not start (see %s/router.log)",
                       b->dir);
    char model[128];
    snprintf(model, sizeof model, "%s/model", b->dir);
    for (int64_t i = 0; i < c->engines; i++) {
        char id[32], log[32];
        snprintf(id, sizeof id, "bench-e%lld", (long long)i);
        snprintf(log, sizeof log, "engine%lld.log", (long long)i);
        const char *eargv[] = {b->exe,
                               "rollout",
                               "--router",
                               b->zmq,
                               "--model",
                               model,
                               "--engine-id",
                               id,
                               "--threads",
                               threads,
                               "--max-running-requests",
                               maxrun,
                               NULL};
        if (spawn(b, eargv, log) < 0) return qn_fail(QN_ERR_IO, "bench router: fork failed");
    }
    end = qn_now_s() + 60.0;
    while (qn_now_s() < end) {
        if (health(b) == (int)c->engines) return QN_OK;
        if (any_exited(b)) break;
        usleep(50000);
    }
    return qn_fail(QN_ERR_TIMEOUT, "bench router: %lld engines did not become ready (logs in %s)",
                   (long long)c->engines, b->dir);
}

static uint32_t next_rand(brt *b) {
    /* xorshift64*: prompts only need to differ */
    b->rng ^= b->rng >> 12;
    b->rng ^= b->rng << 25;
    b->rng ^= b->rng >> 27;
    return (uint32_t)((b->rng * 2685821657736338717ull) >> 32);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Percentile q (0..1) of sorted v[n] (nearest rank). */
static double pct(const double *v, size_t n, double q) {
    if (n == 0) return NAN;
    size_t k = (size_t)ceil(q * (double)n);
    if (k == 0) k = 1;
    return v[k - 1];
}

/* ------------------------------------------------------------------ (a) HTTP load */

typedef struct hclient {
    CURL *h;
    body bd;
    double t0;
} hclient;

static void http_request(brt *b, hclient *cl, const char *url) {
    const bench_router_cfg *c = b->c;
    size_t cap = 128 + (size_t)c->prompt_len * 12;
    char *json = malloc(cap);
    if (!json) return;
    size_t n = (size_t)snprintf(json, cap, "{\"input_ids\":[");
    for (int64_t i = 0; i < c->prompt_len; i++)
        n += (size_t)snprintf(json + n, cap - n, "%s%u", i ? "," : "",
                              next_rand(b) % (uint32_t)b->vocab);
    snprintf(json + n, cap - n,
             "],\"sampling_params\":{\"max_new_tokens\":%lld,\"temperature\":1.0}}",
             (long long)c->max_new);
    free(cl->bd.p);
    cl->bd = (body){0};
    curl_easy_setopt(cl->h, CURLOPT_URL, url);
    curl_easy_setopt(cl->h, CURLOPT_COPYPOSTFIELDS, json);
    free(json);
    cl->t0 = qn_now_s();
}

static qn_status run_http(brt *b) {
    const bench_router_cfg *c = b->c;
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/generate", b->http);
    size_t nc = (size_t)c->clients;
    hclient *cl = calloc(nc, sizeof *cl);
    size_t lat_cap = 1 << 16, n_lat = 0;
    double *lat = malloc(lat_cap * sizeof *lat);
    CURLM *mh = curl_multi_init();
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    if (!cl || !lat || !mh || !hdr) {
        free(cl);
        free(lat);
        if (mh) curl_multi_cleanup(mh);
        curl_slist_free_all(hdr);
        return qn_fail(QN_ERR_NOMEM, "bench router: %zu HTTP clients", nc);
    }
    uint64_t errors = 0, late = 0, tokens = 0;
    char first_err[256] = "";
    pid_t router_pid = b->procs[0];
    double router_cpu0 = proc_cpu_s(router_pid);
    double t_start = qn_now_s(), t_end = t_start + (double)c->seconds;
    size_t active = 0;
    for (size_t i = 0; i < nc; i++) {
        cl[i].h = curl_easy_init();
        if (!cl[i].h) continue;
        curl_easy_setopt(cl[i].h, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(cl[i].h, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(cl[i].h, CURLOPT_WRITEDATA, &cl[i].bd);
        curl_easy_setopt(cl[i].h, CURLOPT_PRIVATE, &cl[i]);
        curl_easy_setopt(cl[i].h, CURLOPT_TIMEOUT, 120L);
        curl_easy_setopt(cl[i].h, CURLOPT_NOSIGNAL, 1L);
        http_request(b, &cl[i], url);
        curl_multi_add_handle(mh, cl[i].h);
        active++;
    }
    double hard_end = t_end + 60.0;
    while (active > 0 && qn_now_s() < hard_end) {
        int running = 0;
        curl_multi_perform(mh, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(mh, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            hclient *x = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            double t = qn_now_s();
            long code = 0;
            curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &code);
            bool ok = msg->data.result == CURLE_OK && code == 200;
            int64_t ntok = -1;
            if (ok) {
                cJSON *o = x->bd.p ? cJSON_Parse(x->bd.p) : NULL;
                const cJSON *ids = cJSON_GetObjectItemCaseSensitive(o, "output_ids");
                if (cJSON_IsArray(ids)) ntok = cJSON_GetArraySize(ids);
                cJSON_Delete(o);
                ok = ntok >= 0;
            }
            if (t > t_end) {
                late++;
            } else if (!ok) {
                if (errors++ == 0)
                    snprintf(first_err, sizeof first_err, "%s, HTTP %ld: %.120s",
                             curl_easy_strerror(msg->data.result), code, x->bd.p ? x->bd.p : "");
            } else {
                if (n_lat == lat_cap) {
                    double *nl = realloc(lat, 2 * lat_cap * sizeof *lat);
                    if (nl) {
                        lat = nl;
                        lat_cap *= 2;
                    }
                }
                if (n_lat < lat_cap) lat[n_lat++] = t - x->t0;
                tokens += (uint64_t)ntok;
            }
            curl_multi_remove_handle(mh, x->h);
            if (t < t_end) {
                http_request(b, x, url);
                curl_multi_add_handle(mh, x->h);
            } else {
                active--;
            }
        }
        curl_multi_poll(mh, NULL, 0, 50, NULL);
    }
    double wall = (qn_now_s() < t_end ? qn_now_s() : t_end) - t_start;
    double router_cpu = proc_cpu_s(router_pid) - router_cpu0;
    for (size_t i = 0; i < nc; i++) {
        if (!cl[i].h) continue;
        curl_multi_remove_handle(mh, cl[i].h);
        curl_easy_cleanup(cl[i].h);
        free(cl[i].bd.p);
    }
    curl_multi_cleanup(mh);
    curl_slist_free_all(hdr);
    free(cl);
    qsort(lat, n_lat, sizeof *lat, cmp_double);
    double mean = 0;
    for (size_t i = 0; i < n_lat; i++)
        mean += lat[i];
    mean = n_lat ? mean / (double)n_lat : NAN;
    printf("http: %lld clients, %.1f s: %zu requests answered (%llu errors, %llu finished after "
           "the window, not counted)\n",
           (long long)c->clients, wall, n_lat, (unsigned long long)errors,
           (unsigned long long)late);
    printf("http: %.1f requests/s, %.0f generated tokens/s\n", (double)n_lat / wall,
           (double)tokens / wall);
    printf("http: latency p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms, mean %.1f ms\n",
           1e3 * pct(lat, n_lat, 0.50), 1e3 * pct(lat, n_lat, 0.90), 1e3 * pct(lat, n_lat, 0.99),
           1e3 * pct(lat, n_lat, 1.0), 1e3 * mean);
    printf("http: router process CPU %.2f s (%.0f us per request answered; the rest of the time "
           "went to the engines and these clients)\n",
           router_cpu, n_lat ? 1e6 * router_cpu / (double)n_lat : NAN);
    if (errors) printf("http: first error: %s\n", first_err);
    free(lat);
    fflush(stdout);
    if (active > 0)
        return qn_fail(QN_ERR_TIMEOUT,
                       "bench router: %zu HTTP requests unanswered "
                       "60 s after the window",
                       active);
    return QN_OK;
}

/* ------------------------------------------------------------------ (b) overhead */

#define DIRECT_ID "bench-direct"

typedef struct zside {
    void *direct; /* ROUTER: the direct engine connects here */
    void *client; /* DEALER to the router */
    uint64_t rid;
} zside;

/* Answers the direct engine's Register / Heartbeat in m; returns true if m was one. */
static bool serve_engine_msg(zside *z, qn_zmsg *m, bool *registered, bool *beat) {
    if (m->env->body_case == QUENCH__ENVELOPE__BODY_REGISTER) {
        Quench__RegisterAck a = QUENCH__REGISTER_ACK__INIT;
        a.accepted = true;
        a.heartbeat_interval_ms = 500;
        Quench__Envelope env = qn_envelope_register_ack(&a);
        qn_zsend(z->direct, m->identity, m->identity_len, &env, m->env->request_id, "router");
        *registered = true;
        return true;
    }
    if (m->env->body_case == QUENCH__ENVELOPE__BODY_HEARTBEAT) {
        Quench__HeartbeatAck a = QUENCH__HEARTBEAT_ACK__INIT;
        a.registered = true;
        Quench__Envelope env = qn_envelope_heartbeat_ack(&a);
        qn_zsend(z->direct, m->identity, m->identity_len, &env, m->env->request_id, "router");
        *beat = true;
        return true;
    }
    return false;
}

/* Sends req on one path and waits for its result; the latency in seconds, or -1. */
static double zcall(zside *z, bool direct, Quench__GenerateRequest *req) {
    Quench__Envelope env = qn_envelope_generate_request(req);
    uint64_t rid = ++z->rid;
    double t0 = qn_now_s();
    qn_status st = direct ? qn_zsend(z->direct, (const uint8_t *)DIRECT_ID, strlen(DIRECT_ID), &env,
                                     rid, "router")
                          : qn_zsend(z->client, NULL, 0, &env, rid, "bench");
    if (st != QN_OK) return -1;
    double end = t0 + 30.0;
    while (qn_now_s() < end) {
        qn_zmsg m;
        st = qn_zrecv(direct ? z->direct : z->client, direct, 1000, &m);
        if (st == QN_ERR_TIMEOUT) continue;
        if (st != QN_OK) return -1;
        double t = qn_now_s();
        bool reg = false, beat = false;
        if (direct && serve_engine_msg(z, &m, &reg, &beat)) {
            qn_zmsg_clear(&m);
            continue;
        }
        bool mine =
            m.env->body_case == QUENCH__ENVELOPE__BODY_GENERATE_RESULT && m.env->request_id == rid;
        bool err = mine && m.env->generate_result->error && m.env->generate_result->error[0];
        qn_zmsg_clear(&m);
        if (mine) return err ? -1 : t - t0;
    }
    return -1;
}

static qn_status run_overhead(brt *b) {
    const bench_router_cfg *c = b->c;
    zside z = {0};
    qn_status st = QN_OK;
    size_t n = (size_t)c->pairs;
    double *dl = calloc(n, sizeof *dl), *rl = calloc(n, sizeof *rl), *df = calloc(n, sizeof *df);
    int32_t *prompt = malloc((size_t)c->prompt_len * sizeof *prompt);
    void *ctx = zmq_ctx_new();
    if (!dl || !rl || !df || !prompt || !ctx) {
        st = qn_fail(QN_ERR_NOMEM, "bench router: overhead buffers");
        goto done;
    }
    char ep[256], model[128], threads[32], maxrun[32];
    QN_CHECK_GOTO(qn_zsock_open(ctx, ZMQ_ROUTER, "tcp://127.0.0.1:*", true, NULL, &z.direct), st,
                  done);
    QN_CHECK_GOTO(qn_zsock_endpoint(z.direct, ep, sizeof ep), st, done);
    QN_CHECK_GOTO(qn_zsock_open(ctx, ZMQ_DEALER, b->zmq, false, "bench", &z.client), st, done);
    snprintf(model, sizeof model, "%s/model", b->dir);
    snprintf(threads, sizeof threads, "%lld", (long long)c->threads);
    snprintf(maxrun, sizeof maxrun, "%lld", (long long)c->max_running);
    const char *eargv[] = {b->exe,
                           "rollout",
                           "--router",
                           ep,
                           "--model",
                           model,
                           "--engine-id",
                           DIRECT_ID,
                           "--threads",
                           threads,
                           "--max-running-requests",
                           maxrun,
                           NULL};
    if (spawn(b, eargv, "direct.log") < 0) {
        st = qn_fail(QN_ERR_IO, "bench router: fork failed");
        goto done;
    }
    /* the direct engine registers and heartbeats once */
    bool reg = false, beat = false;
    double end = qn_now_s() + 60.0;
    while (!(reg && beat) && qn_now_s() < end) {
        qn_zmsg m;
        qn_status rs = qn_zrecv(z.direct, true, 200, &m);
        if (rs == QN_OK) {
            serve_engine_msg(&z, &m, &reg, &beat);
            qn_zmsg_clear(&m);
        }
    }
    if (!(reg && beat)) {
        st = qn_fail(QN_ERR_TIMEOUT,
                     "bench router: the direct engine did not register (see "
                     "%s/direct.log)",
                     b->dir);
        goto done;
    }
    Quench__SamplingParams sp = QUENCH__SAMPLING_PARAMS__INIT;
    sp.temperature = 1.0f;
    sp.top_p = 1.0f;
    sp.max_new_tokens = (int32_t)c->overhead_max_new;
    sp.has_seed = 1;
    sp.n = 1;
    Quench__GenerateRequest req = QUENCH__GENERATE_REQUEST__INIT;
    req.input_ids = prompt;
    req.n_input_ids = (size_t)c->prompt_len;
    req.params = &sp;
    req.return_logprob = 1;
    size_t warm = 20;
    for (size_t i = 0; i < n + warm; i++) {
        for (int64_t k = 0; k < c->prompt_len; k++)
            prompt[k] = (int32_t)(next_rand(b) % (uint32_t)b->vocab);
        sp.seed = i;
        req.group_id = i;
        bool direct_first = i % 2 == 0;
        double a = zcall(&z, direct_first, &req);
        double r = zcall(&z, !direct_first, &req);
        if (a < 0 || r < 0) {
            st = qn_fail(QN_ERR_NET, "bench router: overhead request %zu failed", i);
            goto done;
        }
        if (i < warm) continue;
        dl[i - warm] = direct_first ? a : r;
        rl[i - warm] = direct_first ? r : a;
        df[i - warm] = rl[i - warm] - dl[i - warm];
    }
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        md += dl[i];
        mr += rl[i];
    }
    md /= (double)n;
    mr /= (double)n;
    qsort(dl, n, sizeof *dl, cmp_double);
    qsort(rl, n, sizeof *rl, cmp_double);
    qsort(df, n, sizeof *df, cmp_double);
    printf("overhead: %zu pairs, one request at a time, prompt %lld tokens, max_new_tokens %lld\n",
           n, (long long)c->prompt_len, (long long)c->overhead_max_new);
    printf("overhead: direct to an engine   p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, mean %.3f ms\n",
           1e3 * pct(dl, n, 0.5), 1e3 * pct(dl, n, 0.9), 1e3 * pct(dl, n, 0.99), 1e3 * md);
    printf("overhead: through the router    p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, mean %.3f ms\n",
           1e3 * pct(rl, n, 0.5), 1e3 * pct(rl, n, 0.9), 1e3 * pct(rl, n, 0.99), 1e3 * mr);
    printf("overhead: router - direct per pair: p50 %.3f ms, p10 %.3f ms, p90 %.3f ms; "
           "difference of means %.3f ms\n",
           1e3 * pct(df, n, 0.5), 1e3 * pct(df, n, 0.1), 1e3 * pct(df, n, 0.9), 1e3 * (mr - md));
    fflush(stdout);
done:
    qn_zsock_close(z.direct);
    qn_zsock_close(z.client);
    if (ctx) zmq_ctx_term(ctx);
    free(dl);
    free(rl);
    free(df);
    free(prompt);
    return st;
}

/* ------------------------------------------------------------------ main */

static void remove_files(const brt *b) {
    static const char *const names[] = {"model/model.safetensors",
                                        "model/config.json",
                                        "model",
                                        "router.log",
                                        "direct.log",
                                        "ports"};
    char path[256];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", b->dir, names[i]);
        if (unlink(path) != 0 && errno == EISDIR) rmdir(path);
        rmdir(path);
    }
    for (int64_t i = 0; i < b->c->engines; i++) {
        snprintf(path, sizeof path, "%s/engine%lld.log", b->dir, (long long)i);
        unlink(path);
    }
    rmdir(b->dir);
}

int qn_bench_router(int argc, char **argv) {
    bench_router_cfg cfg;
    qn_flags_parsed p;
    if (qn_flags_parse(&k_brt_table, &cfg, argc, argv, &p) != QN_OK) {
        fprintf(stderr, "quench bench router: %s\n", qn_last_error());
        return QN_EXIT_USAGE;
    }
    int rc = QN_EXIT_FAILURE;
    brt b = {.c = &cfg, .rng = 0x9E3779B97F4A7C15ull ^ (uint64_t)cfg.seed};
    qn_model m = {0};
    bool have_dir = false, curl_up = false;
    qn_status s = QN_OK;
    if (p.print_config) {
        qn_flags_dump(&k_brt_table, &cfg, &p, stdout);
        rc = QN_EXIT_OK;
        goto done;
    }
    ssize_t len = readlink("/proc/self/exe", b.exe, sizeof b.exe - 1);
    if (len <= 0) {
        fprintf(stderr, "quench bench router: cannot find the quench binary (/proc/self/exe)\n");
        goto done;
    }
    b.exe[len] = '\0';
    snprintf(b.dir, sizeof b.dir, "/tmp/quench-bench-router-XXXXXX");
    if (!mkdtemp(b.dir)) {
        fprintf(stderr, "quench bench router: mkdtemp: %s\n", strerror(errno));
        goto done;
    }
    have_dir = true;
    qn_model_desc d;
    char model[128];
    snprintf(model, sizeof model, "%s/model", b.dir);
    s = qn_model_desc_load(cfg.config, &d);
    if (s == QN_OK) s = qn_model_init(&m, &d);
    if (s == QN_OK) s = qn_model_read_config_json(&m, cfg.config);
    if (s == QN_OK) s = qn_model_init_random(&m, (uint64_t)cfg.seed, 0.2f, 0.1f);
    if (s == QN_OK) s = qn_model_save_dir(&m, model, "fp32");
    if (s != QN_OK) goto fail;
    b.vocab = (int32_t)d.vocab;
    qn_model_free(&m);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        s = qn_fail(QN_ERR_INTERNAL, "bench router: curl_global_init failed");
        goto fail;
    }
    curl_up = true;
    double load[3] = {0};
    if (getloadavg(load, 3) < 0) load[0] = NAN;
    printf("bench router: %lld engines (%lld thread%s, --max-running-requests %lld) on %s, "
           "load average %.2f at start\n",
           (long long)cfg.engines, (long long)cfg.threads, cfg.threads == 1 ? "" : "s",
           (long long)cfg.max_running, cfg.config, load[0]);
    fflush(stdout);
    QN_CHECK_GOTO(start_services(&b), s, fail);
    QN_CHECK_GOTO(run_http(&b), s, fail);
    if (cfg.pairs > 0) QN_CHECK_GOTO(run_overhead(&b), s, fail);
    rc = QN_EXIT_OK;
    goto done;
fail:
    (void)s;
    fprintf(stderr, "quench bench router: %s\n", qn_last_error());
done:
    stop_all(&b);
    if (have_dir) {
        if (rc == QN_EXIT_OK)
            remove_files(&b);
        else
            fprintf(stderr, "quench bench router: logs kept in %s\n", b.dir);
    }
    if (curl_up) curl_global_cleanup();
    qn_model_free(&m);
    qn_flags_parsed_free(&p);
    qn_flags_free(&k_brt_table, &cfg);
    return rc;
}
