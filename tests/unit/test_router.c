/* test_router.c — `quench router` as a process ($QN_BIN), driven over
 * loopback by fake engines, a fake client (the buffer's role) and a fake
 * trainer, all ZeroMQ DEALER sockets in this test, plus libcurl for the
 * HTTP API:
 *   - 64 groups x 8 samples from the client come back exactly once, each
 *     group on one engine (the engines have room), work on both engines;
 *     an engine that sends Drain gets no more work;
 *   - a request of n = 4 whose engine answered 2 samples and went silent
 *     is re-sent, and each sample reaches the client once; results from a
 *     peer the request was not sent to are dropped;
 *   - an engine that stops heartbeating with requests unanswered is
 *     dropped (and its Redis key deleted); its requests are re-sent to the
 *     other and still come back exactly once, its late answers are dropped;
 *     a third engine registering later receives work;
 *   - a weight update: READY then APPLIED reach the trainer in order, no
 *     request goes out during it, later requests carry min_weight_version
 *     and go only to the engine that applied it; an engine registering
 *     later gets the manifest in its RegisterAck;
 *   - without engines the queue is bounded (--max-queued) and waiting
 *     requests fail after --queue-timeout-s, each with an error result;
 *   - garbage, truncated and multi-frame messages do not kill the router;
 *   - HTTP: /generate, /v1/completions (plain and stream), /health,
 *     /workers, /metrics are well formed; bad JSON 400; a huge body 413;
 *     DELETE /workers/<id> drains; a client that hangs up has its request
 *     aborted at the engine; SIGTERM answers a request in flight with 503
 *     and the router exits 0.
 * Every router process is registered in a table that the teardown kills
 * and reaps, also when an assertion failed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "net/zchan.h"
#include "tests/test_util.h"

#define HB_MS 100
#define TIMEOUT_MS 1500

/* ------------------------------------------------------------------ processes */

static pid_t g_pids[8];
static int g_n_pids;

static uint64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Waits up to ms for pid; returns its status or -1. */
static int wait_pid(pid_t pid, int ms) {
    for (int i = 0; i < ms / 5 + 1; i++) {
        int st = 0;
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid) return st;
        if (w < 0) return -1;
        usleep(5000);
    }
    return -1;
}

static void forget_pid(pid_t pid) {
    for (int i = 0; i < g_n_pids; i++)
        if (g_pids[i] == pid) g_pids[i] = g_pids[--g_n_pids];
}

static void kill_all(void) {
    for (int i = 0; i < g_n_pids; i++) {
        kill(g_pids[i], SIGKILL);
        waitpid(g_pids[i], NULL, 0);
    }
    g_n_pids = 0;
}

typedef struct router_proc {
    pid_t pid;
    char zmq[256];
    int http;
    char log[512];
} router_proc;

static void start_router(router_proc *rp, const char *tag, const char *const *extra) {
    char port_file[512];
    snprintf(port_file, sizeof port_file, "%s/%s.port", qn_test_tmpdir(), tag);
    snprintf(rp->log, sizeof rp->log, "%s/%s.log", qn_test_tmpdir(), tag);
    unlink(port_file);
    const char *bin = getenv("QN_BIN");
    if (!bin) fail_msg("QN_BIN must name the quench binary");
    char hb[32], to[32];
    snprintf(hb, sizeof hb, "%d", HB_MS);
    snprintf(to, sizeof to, "%d", TIMEOUT_MS);
    const char *argv[40] = {bin,
                            "router",
                            "--listen",
                            "tcp://127.0.0.1:*",
                            "--http-port",
                            "0",
                            "--port-file",
                            port_file,
                            "--heartbeat-ms",
                            hb,
                            "--engine-timeout-ms",
                            to,
                            "--queue-timeout-s",
                            "60",
                            "--max-body-bytes",
                            "65536"};
    int argc = 16;
    for (int i = 0; extra && extra[i] && argc < 38; i++)
        argv[argc++] = extra[i];
    argv[argc] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(rp->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    rp->pid = pid;
    g_pids[g_n_pids++] = pid;
    uint64_t t0 = mono_ms();
    while (mono_ms() - t0 < 10000) {
        FILE *f = fopen(port_file, "r");
        if (f) {
            int n = fscanf(f, "zmq=%255s http=%d", rp->zmq, &rp->http);
            fclose(f);
            if (n == 2) return;
        }
        if (wait_pid(pid, 0) != -1) fail_msg("router exited at start; see %s", rp->log);
        usleep(10000);
    }
    fail_msg("router did not write %s within 10 s; see %s", port_file, rp->log);
}

/* SIGTERM, then the exit status (SIGKILL after 5 s). */
static int stop_router(router_proc *rp) {
    kill(rp->pid, SIGTERM);
    int st = wait_pid(rp->pid, 5000);
    if (st == -1) {
        kill(rp->pid, SIGKILL);
        waitpid(rp->pid, &st, 0);
        st = -1;
    }
    forget_pid(rp->pid);
    return st;
}

/* ------------------------------------------------------------------ fake peers */

#define MAX_HELD 2048

typedef struct fake_engine {
    char id[64];
    int index;
    void *sock;
    bool beat;       /* send heartbeats */
    bool hold;       /* keep requests instead of answering them */
    int update_mode; /* 0 ignore Begin; 1 READY+APPLIED ok; 2 READY only */
    uint32_t max_running;
    uint64_t version;
    uint64_t last_hb;
    bool acked;
    uint64_t ack_version;
    bool ack_manifest;
    uint64_t held_rid[MAX_HELD];
    Quench__Envelope *held[MAX_HELD];
    size_t n_held;
    size_t n_requests, n_begin, n_drain, n_abort;
    uint64_t min_version_min, min_version_max;
} fake_engine;

static void *g_ctx;

static void fe_send(fake_engine *fe, Quench__Envelope *env, uint64_t rid) {
    assert_int_equal(qn_zsend(fe->sock, NULL, 0, env, rid, fe->id), QN_OK);
}

static void fe_register(fake_engine *fe) {
    Quench__EngineInfo info = QUENCH__ENGINE_INFO__INIT;
    info.engine_id = fe->id;
    info.endpoint = "tcp://127.0.0.1:0";
    info.host = "testhost";
    info.device = "cpu";
    info.max_running_requests = fe->max_running;
    Quench__Register reg = QUENCH__REGISTER__INIT;
    reg.engine = &info;
    Quench__Envelope env = qn_envelope_register(&reg);
    fe_send(fe, &env, 1);
}

static void fe_heartbeat(fake_engine *fe) {
    Quench__Heartbeat hb = QUENCH__HEARTBEAT__INIT;
    hb.engine_id = fe->id;
    hb.weight_version = fe->version;
    hb.running_requests = (uint32_t)fe->n_held;
    Quench__Envelope env = qn_envelope_heartbeat(&hb);
    fe_send(fe, &env, 2);
    fe->last_hb = mono_ms();
}

static void fe_init(fake_engine *fe, int index, const char *endpoint, uint32_t max_running) {
    memset(fe, 0, sizeof *fe);
    snprintf(fe->id, sizeof fe->id, "engine-%d", index);
    fe->index = index;
    fe->beat = true;
    fe->update_mode = 1;
    fe->max_running = max_running;
    fe->min_version_min = UINT64_MAX;
    assert_int_equal(qn_zsock_open(g_ctx, ZMQ_DEALER, endpoint, false, fe->id, &fe->sock), QN_OK);
    fe_register(fe);
    fe_heartbeat(fe);
}

static void fe_close(fake_engine *fe) {
    for (size_t i = 0; i < fe->n_held; i++)
        qn_envelope_free(fe->held[i]);
    fe->n_held = 0;
    qn_zsock_close(fe->sock);
    fe->sock = NULL;
}

/* Answers samples [k0, k1) of one request: 3 made-up tokens naming the engine. */
static void fe_answer_some(fake_engine *fe, uint64_t rid, const Quench__GenerateRequest *gr,
                           Quench__FinishReason fr, uint32_t k0, uint32_t k1) {
    for (uint32_t k = k0; k < k1; k++) {
        int32_t ids[3] = {1000 + fe->index, (int32_t)(gr->sample_index + k), 7};
        float lps[3] = {-0.5f, -0.25f, -1.0f};
        uint64_t vers[3] = {fe->version, fe->version, fe->version};
        Quench__GenerateResult g = QUENCH__GENERATE_RESULT__INIT;
        g.group_id = gr->group_id;
        g.sample_index = gr->sample_index + k;
        g.n_output_ids = g.n_output_logprobs = g.n_weight_versions = 3;
        g.output_ids = ids;
        g.output_logprobs = lps;
        g.weight_versions = vers;
        g.finish_reason = fr;
        g.engine_id = fe->id;
        g.prompt_tokens = (uint32_t)gr->n_input_ids;
        g.latency_s = 0.001;
        Quench__Envelope env = qn_envelope_generate_result(&g);
        fe_send(fe, &env, rid);
    }
}

static void fe_answer(fake_engine *fe, uint64_t rid, const Quench__GenerateRequest *gr,
                      Quench__FinishReason fr) {
    uint32_t n = gr->params && gr->params->n ? gr->params->n : 1;
    fe_answer_some(fe, rid, gr, fr, 0, n);
}

static void fe_ack(fake_engine *fe, uint64_t version, int phase, bool ok) {
    Quench__WeightUpdateAck a = QUENCH__WEIGHT_UPDATE_ACK__INIT;
    a.version = version;
    a.engine_id = fe->id;
    a.ok = ok;
    a.error = ok ? "" : "checksum mismatch in tensor w (test)";
    a.phase = phase;
    Quench__Envelope env = qn_envelope_weight_update_ack(&a);
    fe_send(fe, &env, 3);
}

/* Handles what arrived; heartbeats when due. */
static void fe_step(fake_engine *fe) {
    if (!fe->sock) return;
    for (;;) {
        qn_zmsg m;
        qn_status st = qn_zrecv(fe->sock, false, 0, &m);
        if (st == QN_ERR_TIMEOUT) break;
        assert_int_equal(st, QN_OK);
        Quench__Envelope *env = m.env;
        switch (env->body_case) {
        case QUENCH__ENVELOPE__BODY_REGISTER_ACK:
            fe->acked = env->register_ack->accepted;
            fe->ack_version = env->register_ack->weight_version;
            fe->ack_manifest = env->register_ack->manifest != NULL;
            break;
        case QUENCH__ENVELOPE__BODY_GENERATE_REQUEST: {
            const Quench__GenerateRequest *gr = env->generate_request;
            fe->n_requests++;
            if (gr->min_weight_version < fe->min_version_min)
                fe->min_version_min = gr->min_weight_version;
            if (gr->min_weight_version > fe->min_version_max)
                fe->min_version_max = gr->min_weight_version;
            if (fe->hold && fe->n_held < MAX_HELD) {
                fe->held_rid[fe->n_held] = env->request_id;
                fe->held[fe->n_held++] = env;
                m.env = NULL;
            } else {
                fe_answer(fe, env->request_id, gr, QUENCH__FINISH_REASON__FINISH_REASON_STOP);
            }
            break;
        }
        case QUENCH__ENVELOPE__BODY_ABORT_REQUEST:
            fe->n_abort++;
            for (size_t k = 0; k < env->abort_request->n_request_ids; k++) {
                for (size_t i = 0; i < fe->n_held; i++) {
                    if (fe->held_rid[i] != env->abort_request->request_ids[k]) continue;
                    fe_answer(fe, fe->held_rid[i], fe->held[i]->generate_request,
                              QUENCH__FINISH_REASON__FINISH_REASON_ABORT);
                    qn_envelope_free(fe->held[i]);
                    fe->held[i] = fe->held[--fe->n_held];
                    fe->held_rid[i] = fe->held_rid[fe->n_held];
                    break;
                }
            }
            break;
        case QUENCH__ENVELOPE__BODY_WEIGHT_UPDATE_BEGIN: {
            fe->n_begin++;
            uint64_t v = env->weight_update_begin->manifest->version;
            if (fe->update_mode == 0) break;
            fe_ack(fe, v, QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_READY, true);
            if (fe->update_mode == 1) {
                fe->version = v;
                fe_ack(fe, v, QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_APPLIED, true);
                fe_heartbeat(fe);
            }
            break;
        }
        case QUENCH__ENVELOPE__BODY_DRAIN:
            fe->n_drain++;
            break;
        case QUENCH__ENVELOPE__BODY_HEARTBEAT_ACK:
            if (!env->heartbeat_ack->registered && fe->beat) fe_register(fe);
            break;
        default:
            break;
        }
        qn_zmsg_clear(&m);
    }
    if (fe->beat && mono_ms() - fe->last_hb >= HB_MS) fe_heartbeat(fe);
}

/* Answers the first k held requests (all when k > n_held). */
static void fe_release(fake_engine *fe, size_t k) {
    size_t n = k < fe->n_held ? k : fe->n_held;
    for (size_t i = 0; i < n; i++) {
        fe_answer(fe, fe->held_rid[i], fe->held[i]->generate_request,
                  QUENCH__FINISH_REASON__FINISH_REASON_STOP);
        qn_envelope_free(fe->held[i]);
    }
    memmove(fe->held, fe->held + n, (fe->n_held - n) * sizeof fe->held[0]);
    memmove(fe->held_rid, fe->held_rid + n, (fe->n_held - n) * sizeof fe->held_rid[0]);
    fe->n_held -= n;
}

#define N_GROUPS 64
#define GROUP_SIZE 8
#define N_REQ (N_GROUPS * GROUP_SIZE)
#define MAX_RID 4096

typedef struct fake_client {
    void *sock;
    int count[MAX_RID];     /* results per client request id */
    int engine[MAX_RID];    /* index of the engine that answered */
    int sample[MAX_RID][8]; /* results per (request id, sample index < 8) */
    int sample_engine[MAX_RID][8];
    int errors;
    int stray;
} fake_client;

static void fc_init(fake_client *c, const char *endpoint, const char *name) {
    memset(c, 0, sizeof *c);
    assert_int_equal(qn_zsock_open(g_ctx, ZMQ_DEALER, endpoint, false, name, &c->sock), QN_OK);
}

static void fc_send_n(fake_client *c, uint64_t rid, uint64_t group, uint32_t sample, uint32_t n);

/* One GenerateRequest per sample. */
static void fc_send(fake_client *c, uint64_t rid, uint64_t group, uint32_t sample) {
    fc_send_n(c, rid, group, sample, 0);
}

static void fc_send_n(fake_client *c, uint64_t rid, uint64_t group, uint32_t sample, uint32_t n) {
    int32_t ids[4] = {11, 12, 13, (int32_t)group};
    Quench__SamplingParams sp = QUENCH__SAMPLING_PARAMS__INIT;
    sp.max_new_tokens = 3;
    sp.temperature = 1.0f;
    sp.n = n;
    Quench__GenerateRequest gr = QUENCH__GENERATE_REQUEST__INIT;
    gr.group_id = group;
    gr.sample_index = sample;
    gr.n_input_ids = 4;
    gr.input_ids = ids;
    gr.params = &sp;
    Quench__Envelope env = qn_envelope_generate_request(&gr);
    assert_int_equal(qn_zsend(c->sock, NULL, 0, &env, rid, "buffer"), QN_OK);
}

static void fc_step(fake_client *c) {
    for (;;) {
        qn_zmsg m;
        qn_status st = qn_zrecv(c->sock, false, 0, &m);
        if (st == QN_ERR_TIMEOUT) return;
        assert_int_equal(st, QN_OK);
        if (m.env->body_case == QUENCH__ENVELOPE__BODY_GENERATE_RESULT &&
            m.env->request_id < MAX_RID) {
            const Quench__GenerateResult *g = m.env->generate_result;
            c->count[m.env->request_id]++;
            if (g->error && g->error[0])
                c->errors++;
            else
                c->engine[m.env->request_id] = g->output_ids[0] - 1000;
            if (g->sample_index < 8) {
                c->sample[m.env->request_id][g->sample_index]++;
                if (g->n_output_ids)
                    c->sample_engine[m.env->request_id][g->sample_index] = g->output_ids[0] - 1000;
            }
        } else {
            c->stray++;
        }
        qn_zmsg_clear(&m);
    }
}

static int fc_received(const fake_client *c, uint64_t lo, uint64_t hi) {
    int n = 0;
    for (uint64_t i = lo; i < hi; i++)
        n += c->count[i] > 0;
    return n;
}

typedef struct world {
    fake_engine *fe;
    int n_fe;
    fake_client *fc;
} world;

/* Runs every fake peer for ms milliseconds, or until done(ctx) is true. */
static bool run_for(world *w, int ms, bool (*done)(world *, void *), void *ctx) {
    uint64_t t0 = mono_ms();
    for (;;) {
        for (int i = 0; i < w->n_fe; i++)
            fe_step(&w->fe[i]);
        if (w->fc) fc_step(w->fc);
        if (done && done(w, ctx)) return true;
        if (mono_ms() - t0 >= (uint64_t)ms) return done == NULL;
        usleep(1000);
    }
}

typedef struct range {
    uint64_t lo, hi;
} range;

static bool all_back(world *w, void *ctx) {
    range *r = ctx;
    return fc_received(w->fc, r->lo, r->hi) == (int)(r->hi - r->lo);
}

static bool engines_acked(world *w, void *ctx) {
    for (int i = 0; i < w->n_fe; i++)
        if (w->fe[i].sock && !w->fe[i].acked) return false;
    return true;
}

static void send_groups(fake_client *c, uint64_t base) {
    for (uint64_t g = 0; g < N_GROUPS; g++)
        for (uint32_t s = 0; s < GROUP_SIZE; s++)
            fc_send(c, base + 1 + g * GROUP_SIZE + s, g, s);
}

/* ------------------------------------------------------------------ setup */

static router_proc g_router;
static bool g_clean;                   /* the test closed every socket it opened */
static struct engine_thread *g_thread; /* a running engine thread, stopped in teardown */
static void thread_stop(struct engine_thread *et);

static int setup(void **state) {
    g_ctx = zmq_ctx_new();
    memset(&g_router, 0, sizeof g_router);
    g_clean = false;
    return 0;
}

static int teardown(void **state) {
    if (g_thread) thread_stop(g_thread);
    kill_all();
    /* after a failed assertion sockets are still open and zmq_ctx_term
     * would wait for them forever: shut the context down instead */
    if (g_ctx) {
        if (g_clean)
            zmq_ctx_term(g_ctx);
        else
            zmq_ctx_shutdown(g_ctx);
    }
    g_ctx = NULL;
    return 0;
}

/* ------------------------------------------------------------------ tests */

static void test_groups_exactly_once(void **state) {
    start_router(&g_router, "groups", NULL);
    fake_engine fe[2];
    fake_client fc;
    for (int i = 0; i < 2; i++)
        fe_init(&fe[i], i, g_router.zmq, 1024);
    fc_init(&fc, g_router.zmq, "buffer");
    world w = {fe, 2, &fc};
    assert_true(run_for(&w, 5000, engines_acked, NULL));
    run_for(&w, 3 * HB_MS, NULL, NULL); /* heartbeats carry the versions */
    send_groups(&fc, 0);
    range r = {1, 1 + N_REQ};
    assert_true(run_for(&w, 20000, all_back, &r));
    run_for(&w, 200, NULL, NULL); /* anything extra would show up now */
    int per_engine[2] = {0, 0};
    for (int i = 1; i <= N_REQ; i++) {
        assert_int_equal(fc.count[i], 1);
        per_engine[fc.engine[i]]++;
    }
    assert_int_equal(fc.errors, 0);
    assert_int_equal(fc.stray, 0);
    /* each group's 8 samples on one engine */
    for (int g = 0; g < N_GROUPS; g++)
        for (int s = 1; s < GROUP_SIZE; s++)
            assert_int_equal(fc.engine[1 + g * GROUP_SIZE + s], fc.engine[1 + g * GROUP_SIZE]);
    /* and both engines busy: the balance is by outstanding tokens */
    assert_true(per_engine[0] >= N_REQ / 4);
    assert_true(per_engine[1] >= N_REQ / 4);
    assert_int_equal(fe[0].n_requests + fe[1].n_requests, N_REQ);

    /* an engine that announces Drain gets no new work */
    Quench__Drain d = QUENCH__DRAIN__INIT;
    d.engine_id = fe[1].id;
    Quench__Envelope denv = qn_envelope_drain(&d);
    fe_send(&fe[1], &denv, 4);
    run_for(&w, 100, NULL, NULL);
    size_t before1 = fe[1].n_requests;
    for (uint32_t g = 0; g < 4; g++)
        for (uint32_t s = 0; s < GROUP_SIZE; s++)
            fc_send(&fc, 1000 + g * GROUP_SIZE + s, 100 + g, s);
    range r2 = {1000, 1000 + 4 * GROUP_SIZE};
    assert_true(run_for(&w, 10000, all_back, &r2));
    assert_int_equal(fe[1].n_requests, before1);
    for (int i = 0; i < 2; i++)
        fe_close(&fe[i]);
    qn_zsock_close(fc.sock);
    g_clean = true;
    assert_int_equal(stop_router(&g_router), 0);
}

static void test_engine_lost(void **state) {
    char url[256];
    pid_t redis = qn_test_redis_start(qn_test_tmpdir(), NULL, url, sizeof url);
    g_pids[g_n_pids++] = redis;
    const char *extra[] = {"--redis", url, "--job", "t", NULL};
    start_router(&g_router, "lost", extra);
    fake_engine fe[3];
    fake_client fc;
    memset(fe, 0, sizeof fe);
    for (int i = 0; i < 2; i++)
        fe_init(&fe[i], i, g_router.zmq, 1024);
    fe[1].hold = true;
    fc_init(&fc, g_router.zmq, "buffer");
    world w = {fe, 2, &fc};
    assert_true(run_for(&w, 5000, engines_acked, NULL));
    run_for(&w, 3 * HB_MS, NULL, NULL);

    /* the registry is in Redis with an expiry */
    redisContext *rc = redisConnectUnix(url + strlen("unix://"));
    assert_non_null(rc);
    assert_int_equal(rc->err, 0);
    redisReply *rep = redisCommand(rc, "PTTL quench:t:engines:engine-1");
    assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
    assert_true(rep->integer > 0 && rep->integer <= TIMEOUT_MS);
    freeReplyObject(rep);

    send_groups(&fc, 0);
    /* engine 1 gets its share and holds it */
    uint64_t t0 = mono_ms();
    while (fe[1].n_held < 64 && mono_ms() - t0 < 10000)
        run_for(&w, 10, NULL, NULL);
    assert_true(fe[1].n_held >= 64);
    run_for(&w, 300, NULL, NULL);
    size_t held = fe[1].n_held;
    /* it answers a few, then goes silent with the rest unanswered */
    fe_release(&fe[1], 10);
    fe[1].beat = false;
    run_for(&w, 50, NULL, NULL);
    range r = {1, 1 + N_REQ};
    assert_true(run_for(&w, 20000, all_back, &r));
    /* the silent engine's late answers are dropped, not forwarded twice */
    fe_release(&fe[1], held);
    run_for(&w, 300, NULL, NULL);
    for (int i = 1; i <= N_REQ; i++)
        assert_int_equal(fc.count[i], 1);
    assert_int_equal(fc.errors, 0);
    assert_true(fe[0].n_requests > (size_t)(N_REQ - held));

    rep = redisCommand(rc, "EXISTS quench:t:engines:engine-1");
    assert_int_equal(rep->integer, 0);
    freeReplyObject(rep);
    rep = redisCommand(rc, "EXISTS quench:t:engines:engine-0");
    assert_int_equal(rep->integer, 1);
    freeReplyObject(rep);
    redisFree(rc);

    /* a third engine registers later and receives work */
    fe_init(&fe[2], 2, g_router.zmq, 1024);
    w.n_fe = 3;
    assert_true(run_for(&w, 5000, engines_acked, NULL));
    run_for(&w, 3 * HB_MS, NULL, NULL);
    send_groups(&fc, N_REQ);
    range r2 = {N_REQ + 1, 2 * N_REQ + 1};
    assert_true(run_for(&w, 20000, all_back, &r2));
    run_for(&w, 200, NULL, NULL);
    int on_new = 0;
    for (int i = N_REQ + 1; i <= 2 * N_REQ; i++) {
        assert_int_equal(fc.count[i], 1);
        on_new += fc.engine[i] == 2;
    }
    assert_true(on_new > 0);
    assert_int_equal(fc.errors, 0);
    for (int i = 0; i < 3; i++)
        fe_close(&fe[i]);
    qn_zsock_close(fc.sock);
    g_clean = true;
    assert_int_equal(stop_router(&g_router), 0);
}

/* A manifest that passes the codec's rules (the fake engines never pull). */
static void make_manifest(Quench__WeightManifest *m, Quench__TensorInfo *t, Quench__TensorInfo **tp,
                          uint64_t *shape, uint64_t version) {
    quench__weight_manifest__init(m);
    quench__tensor_info__init(t);
    shape[0] = 4;
    t->name = "model.norm.weight";
    t->dtype = QUENCH__DTYPE__DTYPE_F32;
    t->n_shape = 1;
    t->shape = shape;
    t->nbytes = 16;
    *tp = t;
    m->version = version;
    m->n_tensors = 1;
    m->tensors = tp;
    m->total_bytes = 16;
    m->chunk_bytes = 1024;
    m->transport = QUENCH__WEIGHT_TRANSPORT__WEIGHT_TRANSPORT_ZMQ_PULL;
    m->server_endpoint = "tcp://127.0.0.1:9";
}

typedef struct trainer_state {
    void *sock;
    int n_status;
    int phases[4];
    bool ok[4];
    size_t n_ok[4], n_failed[4];
    char failed0[4][64];
} trainer_state;

static bool trainer_step(world *w, void *ctx) {
    trainer_state *t = ctx;
    qn_zmsg m;
    while (qn_zrecv(t->sock, false, 0, &m) == QN_OK) {
        if (m.env->body_case == QUENCH__ENVELOPE__BODY_WEIGHT_UPDATE_STATUS && t->n_status < 4) {
            const Quench__WeightUpdateStatus *s = m.env->weight_update_status;
            t->phases[t->n_status] = s->phase;
            t->ok[t->n_status] = s->ok;
            t->n_ok[t->n_status] = s->n_engine_ids;
            t->n_failed[t->n_status] = s->n_failed_engine_ids;
            if (s->n_failed_engine_ids)
                snprintf(t->failed0[t->n_status], 64, "%s", s->failed_engine_ids[0]);
            t->n_status++;
        }
        qn_zmsg_clear(&m);
    }
    return t->n_status >= 2;
}

static void test_weight_update(void **state) {
    start_router(&g_router, "update", NULL);
    fake_engine fe[3];
    fake_client fc;
    memset(fe, 0, sizeof fe);
    for (int i = 0; i < 2; i++)
        fe_init(&fe[i], i, g_router.zmq, 1024);
    fe[0].update_mode = 0; /* answers the Begin only when the test says */
    fe[1].update_mode = 2; /* READY at once; fails to apply later */
    fc_init(&fc, g_router.zmq, "buffer");
    world w = {fe, 2, &fc};
    assert_true(run_for(&w, 5000, engines_acked, NULL));
    run_for(&w, 3 * HB_MS, NULL, NULL);

    trainer_state t = {0};
    assert_int_equal(qn_zsock_open(g_ctx, ZMQ_DEALER, g_router.zmq, false, "trainer", &t.sock),
                     QN_OK);
    Quench__WeightManifest m;
    Quench__TensorInfo ti, *tp;
    uint64_t shape[1];
    make_manifest(&m, &ti, &tp, shape, 1);
    Quench__WeightUpdateBegin b = QUENCH__WEIGHT_UPDATE_BEGIN__INIT;
    b.manifest = &m;
    Quench__Envelope env = qn_envelope_weight_update_begin(&b);
    assert_int_equal(qn_zsend(t.sock, NULL, 0, &env, 77, "train:0"), QN_OK);
    uint64_t t0 = mono_ms();
    while ((fe[0].n_begin == 0 || fe[1].n_begin == 0) && mono_ms() - t0 < 5000)
        run_for(&w, 5, NULL, NULL);
    assert_int_equal(fe[0].n_begin, 1);
    assert_int_equal(fe[1].n_begin, 1);
    /* engine 1 is READY, engine 0 not yet: no status, and new work waits */
    size_t before = fe[0].n_requests + fe[1].n_requests;
    for (uint32_t s = 0; s < GROUP_SIZE; s++)
        fc_send(&fc, 1 + s, 5, s);
    run_for(&w, 300, trainer_step, &t);
    assert_int_equal(t.n_status, 0);
    assert_int_equal(fe[0].n_requests + fe[1].n_requests, before);
    assert_int_equal(fc_received(&fc, 1, 1 + GROUP_SIZE), 0);

    fe_ack(&fe[0], 1, QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_READY, true);
    run_for(&w, 300, NULL, NULL);
    trainer_step(&w, &t);
    assert_int_equal(t.n_status, 1);
    assert_int_equal(t.phases[0], QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_READY);
    assert_true(t.ok[0]);
    assert_int_equal(t.n_ok[0], 2);
    assert_int_equal(fe[0].n_requests + fe[1].n_requests, before); /* still paused */

    fe_ack(&fe[1], 1, QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_APPLIED, false);
    run_for(&w, 200, NULL, NULL);
    trainer_step(&w, &t);
    assert_int_equal(t.n_status, 1); /* engine 0 has not applied yet */
    assert_int_equal(fe[0].n_requests + fe[1].n_requests, before);
    fe[0].version = 1;
    fe_ack(&fe[0], 1, QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_APPLIED, true);
    fe_heartbeat(&fe[0]);
    assert_true(run_for(&w, 5000, trainer_step, &t));
    assert_int_equal(t.phases[1], QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_APPLIED);
    assert_false(t.ok[1]);
    assert_int_equal(t.n_ok[1], 1);
    assert_int_equal(t.n_failed[1], 1);
    assert_string_equal(t.failed0[1], "engine-1");

    /* the waiting group and new ones go to the updated engine only, with min_weight_version */
    for (uint32_t s = 0; s < GROUP_SIZE; s++)
        fc_send(&fc, 100 + s, 6, s);
    range r = {1, 1 + GROUP_SIZE};
    assert_true(run_for(&w, 10000, all_back, &r));
    range r2 = {100, 100 + GROUP_SIZE};
    assert_true(run_for(&w, 10000, all_back, &r2));
    assert_int_equal(fe[1].n_requests, 0);
    assert_int_equal(fe[0].n_requests, 2 * GROUP_SIZE);
    assert_int_equal(fe[0].min_version_min, 1);
    assert_int_equal(fc.errors, 0);

    /* an engine registering later is told version 1 with its manifest */
    fe_init(&fe[2], 2, g_router.zmq, 1024);
    w.n_fe = 3;
    assert_true(run_for(&w, 5000, engines_acked, NULL));
    assert_int_equal(fe[2].ack_version, 1);
    assert_true(fe[2].ack_manifest);

    /* an announcement that is not newer is refused */
    make_manifest(&m, &ti, &tp, shape, 1);
    assert_int_equal(qn_zsend(t.sock, NULL, 0, &env, 78, "train:0"), QN_OK);
    t0 = mono_ms();
    while (t.n_status < 3 && mono_ms() - t0 < 5000) {
        trainer_step(&w, &t);
        run_for(&w, 5, NULL, NULL);
    }
    assert_int_equal(t.n_status, 3);
    assert_false(t.ok[2]);

    qn_zsock_close(t.sock);
    for (int i = 0; i < 3; i++)
        fe_close(&fe[i]);
    qn_zsock_close(fc.sock);
    g_clean = true;
    assert_int_equal(stop_router(&g_router), 0);
}

/* A request of n = 4 samples: 2 answered by an engine that then goes
 * silent; the re-sent request is answered in full by another engine, and
 * the client gets each sample exactly once. A result for the request from a
 * peer it was not sent to is dropped. */
static void test_partial_redispatch(void **state) {
    start_router(&g_router, "partial", NULL);
    fake_engine fe[2];
    fake_client fc;
    memset(fe, 0, sizeof fe);
    fe_init(&fe[0], 0, g_router.zmq, 64);
    fe[0].hold = true;
    fc_init(&fc, g_router.zmq, "buffer");
    world w = {fe, 1, &fc};
    assert_true(run_for(&w, 5000, engines_acked, NULL));
    run_for(&w, 3 * HB_MS, NULL, NULL);
    fc_send_n(&fc, 1, 9, 0, 4);
    uint64_t t0 = mono_ms();
    while (fe[0].n_held == 0 && mono_ms() - t0 < 5000)
        run_for(&w, 5, NULL, NULL);
    assert_int_equal(fe[0].n_held, 1);

    /* a peer that was not asked answers sample 3: dropped */
    fake_engine spoof;
    memset(&spoof, 0, sizeof spoof);
    snprintf(spoof.id, sizeof spoof.id, "spoofer");
    spoof.index = 7;
    assert_int_equal(qn_zsock_open(g_ctx, ZMQ_DEALER, g_router.zmq, false, spoof.id, &spoof.sock),
                     QN_OK);
    fe_answer_some(&spoof, fe[0].held_rid[0], fe[0].held[0]->generate_request,
                   QUENCH__FINISH_REASON__FINISH_REASON_STOP, 3, 4);
    run_for(&w, 200, NULL, NULL);
    assert_int_equal(fc.count[1], 0);
    qn_zsock_close(spoof.sock);

    fe_answer_some(&fe[0], fe[0].held_rid[0], fe[0].held[0]->generate_request,
                   QUENCH__FINISH_REASON__FINISH_REASON_STOP, 0, 2);
    run_for(&w, 200, NULL, NULL);
    assert_int_equal(fc.count[1], 2);
    fe_init(&fe[1], 1, g_router.zmq, 64);
    w.n_fe = 2;
    fe[0].beat = false;
    t0 = mono_ms();
    while (fc.count[1] < 4 && mono_ms() - t0 < 10000)
        run_for(&w, 5, NULL, NULL);
    run_for(&w, 300, NULL, NULL);
    assert_int_equal(fc.count[1], 4);
    for (int k = 0; k < 4; k++)
        assert_int_equal(fc.sample[1][k], 1);
    assert_int_equal(fc.sample_engine[1][0], 0);
    assert_int_equal(fc.sample_engine[1][1], 0);
    assert_int_equal(fc.sample_engine[1][2], 1);
    assert_int_equal(fc.sample_engine[1][3], 1);
    assert_int_equal(fe[1].n_requests, 1);
    assert_int_equal(fc.errors, 0);
    for (int i = 0; i < 2; i++)
        fe_close(&fe[i]);
    qn_zsock_close(fc.sock);
    g_clean = true;
    assert_int_equal(stop_router(&g_router), 0);
}

/* No engine: the queue holds --max-queued requests, refuses more at once,
 * and fails those waiting after --queue-timeout-s, each with an error. */
static void test_queue_limits(void **state) {
    const char *extra[] = {"--max-queued", "4", "--queue-timeout-s", "1", NULL};
    start_router(&g_router, "queue", extra);
    fake_client fc;
    fc_init(&fc, g_router.zmq, "buffer");
    world w = {NULL, 0, &fc};
    for (uint32_t s = 0; s < 6; s++)
        fc_send(&fc, 1 + s, 1, s);
    run_for(&w, 300, NULL, NULL);
    assert_int_equal(fc_received(&fc, 1, 7), 2);
    assert_int_equal(fc.count[5] + fc.count[6], 2); /* the last two were refused */
    assert_int_equal(fc.errors, 2);
    range r = {1, 7};
    uint64_t t0 = mono_ms();
    assert_true(run_for(&w, 5000, all_back, &r));
    assert_true(mono_ms() - t0 >= 500);
    assert_int_equal(fc.errors, 6);
    for (int i = 1; i <= 6; i++)
        assert_int_equal(fc.count[i], 1);
    qn_zsock_close(fc.sock);
    g_clean = true;
    assert_int_equal(stop_router(&g_router), 0);
}

static void raw_send(void *sock, const void *a, size_t al, const void *b, size_t bl) {
    if (b) {
        zmq_send(sock, a, al, ZMQ_SNDMORE);
        zmq_send(sock, b, bl, 0);
    } else {
        zmq_send(sock, a, al, 0);
    }
}

static void test_garbage(void **state) {
    start_router(&g_router, "garbage", NULL);
    void *raw = NULL;
    assert_int_equal(qn_zsock_open(g_ctx, ZMQ_DEALER, g_router.zmq, false, "junk", &raw), QN_OK);
    /* a valid envelope, to cut short */
    Quench__Heartbeat hb = QUENCH__HEARTBEAT__INIT;
    hb.engine_id = "engine-x";
    Quench__Envelope env = qn_envelope_heartbeat(&hb);
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(qn_envelope_encode_alloc(&env, 5, "junk", &buf, &len), QN_OK);
    uint8_t noise[512];
    srand(7);
    for (size_t i = 0; i < sizeof noise; i++)
        noise[i] = (uint8_t)rand();
    for (int k = 0; k < 50; k++) {
        raw_send(raw, noise, 1 + (size_t)(rand() % (int)sizeof noise), NULL, 0);
        raw_send(raw, buf, len - 1 - (size_t)(k % (int)(len - 1)), NULL, 0);
        raw_send(raw, "", 0, NULL, 0);
        raw_send(raw, buf, len, noise, 10); /* two frames */
    }
    free(buf);
    /* a message type the router does not take gets an Error back */
    Quench__Metric met = QUENCH__METRIC__INIT;
    met.name = "x";
    Quench__MetricsReport mr = QUENCH__METRICS_REPORT__INIT;
    mr.source = "junk";
    Quench__Metric *mp = &met;
    mr.n_metrics = 1;
    mr.metrics = &mp;
    Quench__Envelope menv = qn_envelope_metrics(&mr);
    assert_int_equal(qn_zsend(raw, NULL, 0, &menv, 9, "junk"), QN_OK);
    qn_zmsg m;
    bool got_error = false;
    uint64_t t0 = mono_ms();
    while (!got_error && mono_ms() - t0 < 5000) {
        if (qn_zrecv(raw, false, 100, &m) == QN_OK) {
            got_error = m.env->body_case == QUENCH__ENVELOPE__BODY_ERROR && m.env->request_id == 9;
            qn_zmsg_clear(&m);
        }
    }
    assert_true(got_error);
    /* the router still serves */
    assert_int_equal(wait_pid(g_router.pid, 0), -1);
    fake_engine fe[1];
    fake_client fc;
    fe_init(&fe[0], 0, g_router.zmq, 64);
    fc_init(&fc, g_router.zmq, "buffer");
    world w = {fe, 1, &fc};
    assert_true(run_for(&w, 5000, engines_acked, NULL));
    run_for(&w, 3 * HB_MS, NULL, NULL);
    for (uint32_t s = 0; s < GROUP_SIZE; s++)
        fc_send(&fc, 1 + s, 1, s);
    range r = {1, 1 + GROUP_SIZE};
    assert_true(run_for(&w, 10000, all_back, &r));
    qn_zsock_close(raw);
    fe_close(&fe[0]);
    qn_zsock_close(fc.sock);
    g_clean = true;
    assert_int_equal(stop_router(&g_router), 0);
}

/* ------------------------------------------------------------------ HTTP */

/* Fake engines in a thread, so that blocking libcurl calls get answers. */
typedef struct engine_thread {
    pthread_t th;
    bool running;
    volatile int stop;
    char endpoint[256];
    int n;
    bool hold;
    size_t drains[2], requests[2], held[2], aborts[2];
} engine_thread;

static void *engine_main(void *arg) {
    engine_thread *et = arg;
    fake_engine fe[2];
    for (int i = 0; i < et->n; i++) {
        fe_init(&fe[i], i, et->endpoint, 64);
        fe[i].hold = et->hold;
    }
    while (!et->stop) {
        for (int i = 0; i < et->n; i++) {
            fe_step(&fe[i]);
            et->drains[i] = fe[i].n_drain;
            et->requests[i] = fe[i].n_requests;
            et->held[i] = fe[i].n_held;
            et->aborts[i] = fe[i].n_abort;
        }
        usleep(1000);
    }
    for (int i = 0; i < et->n; i++)
        fe_close(&fe[i]);
    return NULL;
}

static void thread_start(engine_thread *et) {
    snprintf(et->endpoint, sizeof et->endpoint, "%s", g_router.zmq);
    assert_int_equal(pthread_create(&et->th, NULL, engine_main, et), 0);
    et->running = true;
    g_thread = et;
}

static void thread_stop(engine_thread *et) {
    if (!et->running) return;
    et->stop = 1;
    pthread_join(et->th, NULL);
    et->running = false;
    g_thread = NULL;
}

typedef struct http_resp {
    long status;
    char *body;
    size_t len;
} http_resp;

static size_t on_body(char *p, size_t sz, size_t n, void *ud) {
    http_resp *r = ud;
    char *nb = realloc(r->body, r->len + sz * n + 1);
    if (!nb) return 0;
    r->body = nb;
    memcpy(r->body + r->len, p, sz * n);
    r->len += sz * n;
    r->body[r->len] = 0;
    return sz * n;
}

/* Returns the status (0 when the connection failed or was dropped). */
static long http(const char *method, const char *path, const char *body, size_t body_len,
                 http_resp *out) {
    memset(out, 0, sizeof *out);
    out->body = calloc(1, 1);
    CURL *c = curl_easy_init();
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", g_router.http, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 15000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)body_len);
    }
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return out->status;
}

static cJSON *http_json(const char *method, const char *path, const char *body, long want) {
    http_resp r;
    long st = http(method, path, body, body ? strlen(body) : 0, &r);
    if (st != want) fail_msg("%s %s: status %ld (want %ld): %s", method, path, st, want, r.body);
    cJSON *j = cJSON_Parse(r.body);
    if (!j) fail_msg("%s %s: not JSON: %s", method, path, r.body);
    free(r.body);
    return j;
}

static void test_http(void **state) {
    start_router(&g_router, "http", NULL);
    cJSON *j = http_json("GET", "/health", NULL, 503); /* no engine yet */
    cJSON_Delete(j);

    engine_thread et = {.n = 2};
    thread_start(&et);
    uint64_t t0 = mono_ms();
    http_resp hr;
    while (http("GET", "/health", NULL, 0, &hr) != 200 && mono_ms() - t0 < 5000) {
        free(hr.body);
        usleep(20000);
    }
    assert_int_equal(hr.status, 200);
    j = cJSON_Parse(hr.body);
    free(hr.body);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "status")->valuestring, "ok");
    /* both engines become dispatchable after their first heartbeats */
    for (t0 = mono_ms();
         cJSON_GetObjectItem(j, "engines")->valueint < 2 && mono_ms() - t0 < 3000;) {
        cJSON_Delete(j);
        usleep(20000);
        j = http_json("GET", "/health", NULL, 200);
    }
    assert_int_equal(cJSON_GetObjectItem(j, "engines")->valueint, 2);
    cJSON_Delete(j);

    /* /generate, SGLang's shape */
    j = http_json("POST", "/generate",
                  "{\"input_ids\":[5,6,7],\"sampling_params\":{\"max_new_tokens\":3,"
                  "\"temperature\":0.5,\"stop\":\"x\"},\"return_logprob\":true}",
                  200);
    cJSON *ids = cJSON_GetObjectItem(j, "output_ids");
    assert_true(cJSON_IsArray(ids));
    assert_int_equal(cJSON_GetArraySize(ids), 3);
    cJSON *meta = cJSON_GetObjectItem(j, "meta_info");
    assert_non_null(meta);
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(meta, "finish_reason"), "type")->valuestring,
        "stop");
    cJSON *lp = cJSON_GetObjectItem(meta, "output_token_logprobs");
    assert_int_equal(cJSON_GetArraySize(lp), 3);
    assert_true(cJSON_GetArrayItem(cJSON_GetArrayItem(lp, 0), 0)->valuedouble == -0.5);
    assert_int_equal(cJSON_GetArrayItem(cJSON_GetArrayItem(lp, 0), 1)->valueint,
                     cJSON_GetArrayItem(ids, 0)->valueint);
    assert_int_equal(cJSON_GetObjectItem(meta, "weight_version")->valueint, 0);
    assert_int_equal(cJSON_GetObjectItem(meta, "prompt_tokens")->valueint, 3);
    assert_int_equal(cJSON_GetObjectItem(meta, "completion_tokens")->valueint, 3);
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(meta, "e2e_latency")));
    cJSON_Delete(j);
    /* n > 1: an array */
    j = http_json("POST", "/generate", "{\"input_ids\":[5],\"sampling_params\":{\"n\":3}}", 200);
    assert_true(cJSON_IsArray(j));
    assert_int_equal(cJSON_GetArraySize(j), 3);
    cJSON_Delete(j);

    /* /v1/completions, OpenAI's shape */
    j = http_json("POST", "/v1/completions",
                  "{\"model\":\"m\",\"prompt\":[1,2,3],\"max_tokens\":3,\"n\":2,\"logprobs\":1}",
                  200);
    assert_string_equal(cJSON_GetObjectItem(j, "object")->valuestring, "text_completion");
    assert_string_equal(cJSON_GetObjectItem(j, "model")->valuestring, "m");
    cJSON *choices = cJSON_GetObjectItem(j, "choices");
    assert_int_equal(cJSON_GetArraySize(choices), 2);
    cJSON *c0 = cJSON_GetArrayItem(choices, 0);
    assert_string_equal(cJSON_GetObjectItem(c0, "finish_reason")->valuestring, "stop");
    assert_true(cJSON_IsString(cJSON_GetObjectItem(c0, "text")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "logprobs"),
                                                            "token_logprobs")),
                     3);
    cJSON *usage = cJSON_GetObjectItem(j, "usage");
    assert_int_equal(cJSON_GetObjectItem(usage, "prompt_tokens")->valueint, 3);
    assert_int_equal(cJSON_GetObjectItem(usage, "completion_tokens")->valueint, 6);
    assert_int_equal(cJSON_GetObjectItem(usage, "total_tokens")->valueint, 9);
    cJSON_Delete(j);

    /* streaming: server-sent events, one chunk per choice, then [DONE] */
    const char *sbody = "{\"prompt\":[1,2],\"max_tokens\":3,\"n\":2,\"stream\":true}";
    assert_int_equal(http("POST", "/v1/completions", sbody, strlen(sbody), &hr), 200);
    int events = 0;
    bool done = false;
    for (char *p = hr.body; p && *p;) {
        char *end = strstr(p, "\n\n");
        assert_non_null(end);
        *end = 0;
        assert_memory_equal(p, "data: ", 6);
        if (strcmp(p + 6, "[DONE]") == 0) {
            done = true;
        } else {
            assert_false(done);
            cJSON *ev = cJSON_Parse(p + 6);
            assert_non_null(ev);
            assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(ev, "choices")), 1);
            cJSON_Delete(ev);
            events++;
        }
        p = end + 2;
    }
    assert_true(done);
    assert_int_equal(events, 2);
    free(hr.body);

    /* /workers */
    j = http_json("GET", "/workers", NULL, 200);
    assert_int_equal(cJSON_GetArraySize(j), 2);
    cJSON *w0 = cJSON_GetArrayItem(j, 0);
    assert_true(cJSON_IsString(cJSON_GetObjectItem(w0, "id")));
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(w0, "version")));
    assert_true(cJSON_IsBool(cJSON_GetObjectItem(w0, "draining")));
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(w0, "outstanding_tokens")));
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(w0, "last_heartbeat_age_s")));
    cJSON_Delete(j);

    /* bad requests: 400 naming the problem */
    const char *bad[][2] = {
        {"{\"input_ids\":[1,2", "not valid JSON"},
        {"[1,2]", "expected a JSON object"},
        {"{\"sampling_params\":{}}", "missing prompt"},
        {"{\"input_ids\":\"abc\"}", "input_ids"},
        {"{\"input_ids\":[1,-2]}", "input_ids[1]"},
        {"{\"input_ids\":[1],\"sampling_params\":{\"top_p\":\"high\"}}", "sampling_params.top_p"},
        {"{\"input_ids\":[1],\"return_logprob\":1}", "return_logprob"},
        {"{\"text\":\"hello\"}", "--tokenizer"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(http("POST", "/generate", bad[i][0], strlen(bad[i][0]), &hr), 400);
        j = cJSON_Parse(hr.body);
        assert_non_null(j);
        const char *msg =
            cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "message")->valuestring;
        if (!strstr(msg, bad[i][1]))
            fail_msg("%s: message '%s' lacks '%s'", bad[i][0], msg, bad[i][1]);
        cJSON_Delete(j);
        free(hr.body);
    }
    assert_int_equal(http("POST", "/v1/completions", "{\"max_tokens\":3}", 16, &hr), 400);
    free(hr.body);
    /* a body over --max-body-bytes: 413 or a dropped connection */
    size_t big = 1 << 20;
    char *huge = malloc(big);
    memset(huge, ' ', big);
    long st = http("POST", "/generate", huge, big, &hr);
    assert_true(st == 413 || st == 0);
    free(hr.body);
    free(huge);
    assert_int_equal(http("GET", "/nope", NULL, 0, &hr), 404);
    free(hr.body);

    /* /metrics: Prometheus text, every sample line "name{labels} number" */
    assert_int_equal(http("GET", "/metrics", NULL, 0, &hr), 200);
    int samples = 0;
    bool saw_req = false, saw_version = false, saw_engine = false, saw_hist = false;
    for (char *line = strtok(hr.body, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#') {
            assert_true(strncmp(line, "# HELP ", 7) == 0 || strncmp(line, "# TYPE ", 7) == 0);
            continue;
        }
        char *sp = strrchr(line, ' ');
        assert_non_null(sp);
        char *end = NULL;
        double v = strtod(sp + 1, &end);
        assert_true(end && *end == 0 && isfinite(v));
        for (char *p = line; p < sp && *p != '{'; p++)
            assert_true((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_');
        samples++;
        saw_req |=
            strncmp(line, "quench_router_requests_total{source=\"http\"} ", 44) == 0 && v >= 7;
        saw_version |= strncmp(line, "quench_router_weight_version ", 29) == 0;
        saw_engine |=
            strncmp(line, "quench_router_engine_outstanding_tokens{engine=\"engine-0\"}", 58) == 0;
        saw_hist |=
            strncmp(line, "quench_router_request_latency_seconds_count ", 44) == 0 && v >= 4;
    }
    free(hr.body);
    assert_true(samples > 20);
    assert_true(saw_req);
    assert_true(saw_version);
    assert_true(saw_engine);
    assert_true(saw_hist);

    /* DELETE /workers/<id>: the engine gets Drain and no more work */
    j = http_json("DELETE", "/workers/engine-1", NULL, 200);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "draining")));
    cJSON_Delete(j);
    j = http_json("DELETE", "/workers/nobody", NULL, 404);
    cJSON_Delete(j);
    for (t0 = mono_ms(); et.drains[1] == 0 && mono_ms() - t0 < 3000;)
        usleep(5000);
    assert_int_equal(et.drains[1], 1);
    size_t r1 = et.requests[1];
    for (int i = 0; i < 8; i++) {
        j = http_json("POST", "/generate", "{\"input_ids\":[9,9]}", 200);
        cJSON_Delete(j);
    }
    assert_int_equal(et.requests[1], r1);
    j = http_json("GET", "/health", NULL, 200);
    assert_int_equal(cJSON_GetObjectItem(j, "engines")->valueint, 1);
    cJSON_Delete(j);

    thread_stop(&et);
    g_clean = true;
    assert_int_equal(stop_router(&g_router), 0);
}

static int post_raw(const char *body) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_router.http)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char req[256];
    int n = snprintf(req, sizeof req,
                     "POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    assert_int_equal(write(fd, req, (size_t)n), n);
    return fd;
}

/* A client that hangs up has its request aborted at the engine; SIGTERM
 * with an HTTP request in flight: it is answered 503, exit 0. */
static void test_sigterm(void **state) {
    start_router(&g_router, "sigterm", NULL);
    engine_thread et = {.n = 1, .hold = true};
    thread_start(&et);
    http_resp hr;
    uint64_t t0 = mono_ms();
    while (http("GET", "/health", NULL, 0, &hr) != 200 && mono_ms() - t0 < 5000) {
        free(hr.body);
        usleep(20000);
    }
    free(hr.body);
    int fd = post_raw("{\"input_ids\":[4,5]}");
    for (t0 = mono_ms(); et.held[0] == 0 && mono_ms() - t0 < 5000;)
        usleep(5000);
    assert_int_equal(et.held[0], 1);
    close(fd);
    for (t0 = mono_ms(); et.aborts[0] == 0 && mono_ms() - t0 < 5000;)
        usleep(5000);
    assert_int_equal(et.aborts[0], 1);
    assert_int_equal(et.held[0], 0);

    fd = post_raw("{\"input_ids\":[1,2,3]}");
    for (t0 = mono_ms(); et.held[0] == 0 && mono_ms() - t0 < 5000;)
        usleep(5000);
    assert_int_equal(et.held[0], 1);
    kill(g_router.pid, SIGTERM);
    char buf[1024] = {0};
    size_t got = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (got < sizeof buf - 1 && poll(&p, 1, 5000) > 0) {
        ssize_t k = read(fd, buf + got, sizeof buf - 1 - got);
        if (k <= 0) break;
        got += (size_t)k;
        if (strstr(buf, "}")) break;
    }
    close(fd);
    if (strncmp(buf, "HTTP/1.1 503", 12) != 0) fail_msg("expected 503, got '%s'", buf);
    assert_non_null(strstr(buf, "shutting down"));
    int status = wait_pid(g_router.pid, 5000);
    forget_pid(g_router.pid);
    thread_stop(&et);
    g_clean = true;
    assert_true(status != -1 && WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_groups_exactly_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_engine_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partial_redispatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_weight_update, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    kill_all();
    curl_global_cleanup();
    return rc;
}
