/* test_rollout_service.c — `quench rollout` as a real process, with this test playing the
 * router on a ROUTER socket over loopback TCP (docs/services.md):
 *   - it registers (EngineInfo checked), registers again while unanswered, heartbeats at the
 *     interval of the RegisterAck, and registers again when a HeartbeatAck says the router
 *     forgot it;
 *   - 20 GenerateRequests (some with n > 1) give exactly one result per (request, sample),
 *     greedy ones equal to an in-process engine on the same weights;
 *   - bad requests (empty prompt, top_p 1.5 — both refused by the codec —, a token id
 *     outside the vocabulary, n above max_running, stop strings without a tokenizer, a
 *     min_weight_version not loaded) are answered with errors; garbage, a truncated envelope
 *     and extra frames are skipped; the engine keeps serving;
 *   - a partial rollout continued from prefix_output_ids; AbortRequest;
 *   - a weight update from a real weight server (F32 and BF16 tensors): READY then APPLIED,
 *     then greedy outputs equal the in-process engine on the new weights, differ from the
 *     old ones and carry version 1; requests in flight across the update have
 *     non-decreasing versions;
 *   - failed updates (missing tensor, wrong shape, dead weight server) ack ok = false and
 *     version 1 keeps serving; heartbeats go on during the pull and count queued work;
 *   - a second engine, serving FP8, whose RegisterAck names version 1 pulls it and
 *     re-quantises before serving (outputs equal an in-process FP8 engine on version 1);
 *     versions announced during a pull are queued, the older queued one superseded; a
 *     second SIGTERM makes it exit at once with status 1;
 *   - SIGTERM during generation: Drain, then every in-flight result, new requests refused
 *     with "draining", exit status 0.
 * Every wait is bounded; the engine processes are killed and reaped in teardown. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "core/dtype.h"
#include "core/model/infer.h"
#include "core/model/model.h"
#include "core/rng.h"
#include "net/codec.h"
#include "net/weights.h"
#include "net/zchan.h"
#include "rollout/engine.h"
#include "tests/test_util.h"

#define MAX_TOK 256
#define N_GEN 20
#define ENGINE_ID "eng-test"
#define LATE_ID "eng-late"

typedef struct res {
    uint64_t rid;
    uint32_t sidx;
    int32_t n;
    int32_t ids[MAX_TOK];
    int32_t n_lp, n_ver;
    float lp[MAX_TOK];
    uint64_t ver[MAX_TOK];
    int finish;
    char err[512];
    uint32_t prompt_tokens;
    double latency;
    char engine[64];
    int partial;
} res;

typedef struct peer {
    char id[64];
    uint64_t hb_version;
    int n_hb;
    uint32_t hb_running;
    uint64_t hb_free_kv, hb_outstanding, hb_max_outstanding;
    uint32_t hb_max_busy; /* running + queued, largest seen */
    int hb_draining;
} peer;

static struct {
    void *ctx, *router;
    char endpoint[128];
    char model_dir[600];
    pid_t pid, late_pid;
    qn_model m0, m1; /* version 0 (the checkpoint) and version 1 */
    qn_weight_server *ws;
    Quench__WeightManifest *mf1;
    uint64_t job_version;
    int auto_register;
    peer peers[2];
    uint64_t next_rid;
    int n_drain;
} g;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------ processes */

static pid_t spawn_engine(const char *id, const char *log_name, const char *quantize) {
    const char *bin = getenv("QN_BIN");
    assert_non_null(bin);
    char log_path[1024];
    snprintf(log_path, sizeof log_path, "%s", qn_test_path(log_name));
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a crashed test */
        FILE *f = freopen(log_path, "w", stderr);
        (void)f;
        execl(bin, "quench", "rollout", "--router", g.endpoint, "--model", g.model_dir,
              "--engine-id", id, "--threads", "1", "--max-running-requests", "16",
              "--kv-cache-tokens", "2048", "--block-size", "8", "--context-len", "256",
              "--weight-pull-timeout-ms", "300", "--weight-pull-retries", "1", "--quantize",
              quantize, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void kill_and_reap(pid_t *pid) {
    if (*pid <= 0) return;
    kill(*pid, SIGKILL);
    waitpid(*pid, NULL, 0);
    *pid = 0;
}

/* Waits up to timeout_s for pid to exit; returns its wait status, or -1 on timeout. */
static int wait_exit(pid_t pid, double timeout_s) {
    double end = now_s() + timeout_s;
    while (now_s() < end) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return st;
        usleep(10000);
    }
    return -1;
}

/* ------------------------------------------------------------ the router side */

static peer *peer_of(const char *id) {
    for (int i = 0; i < 2; i++)
        if (strcmp(g.peers[i].id, id) == 0) return &g.peers[i];
    for (int i = 0; i < 2; i++)
        if (!g.peers[i].id[0]) {
            snprintf(g.peers[i].id, sizeof g.peers[i].id, "%s", id);
            return &g.peers[i];
        }
    fail_msg("unexpected peer '%s'", id);
    return NULL;
}

static void send_to(const char *id, Quench__Envelope *env, uint64_t rid) {
    assert_int_equal(qn_zsend(g.router, (const uint8_t *)id, strlen(id), env, rid, "router"),
                     QN_OK);
}

static void send_register_ack(const char *id, uint64_t version, Quench__WeightManifest *mf) {
    Quench__RegisterAck a = QUENCH__REGISTER_ACK__INIT;
    a.accepted = 1;
    a.weight_version = version;
    a.manifest = mf;
    a.heartbeat_interval_ms = 100;
    Quench__Envelope env = qn_envelope_register_ack(&a);
    send_to(id, &env, 0);
}

/* The next message that is not a heartbeat (answered and recorded) nor, when
 * g.auto_register, a Register (answered), within timeout_ms; NULL on timeout. The sender's
 * identity goes to from. Engines must never send anything malformed. */
static Quench__Envelope *pump(int timeout_ms, char *from, size_t cap) {
    double end = now_s() + timeout_ms / 1000.0;
    for (;;) {
        int left = (int)((end - now_s()) * 1000.0);
        if (left < 0) return NULL;
        qn_zmsg m;
        qn_status st = qn_zrecv(g.router, true, left, &m);
        if (st == QN_ERR_TIMEOUT) return NULL;
        if (st != QN_OK) fail_msg("malformed message from the engine: %s", qn_last_error());
        const char *id = (const char *)m.identity;
        if (m.env->body_case == QUENCH__ENVELOPE__BODY_HEARTBEAT) {
            peer *p = peer_of(id);
            const Quench__Heartbeat *hb = m.env->heartbeat;
            assert_string_equal(hb->engine_id, id);
            p->n_hb++;
            p->hb_version = hb->weight_version;
            p->hb_running = hb->running_requests;
            p->hb_free_kv = hb->free_kv_tokens;
            p->hb_outstanding = hb->outstanding_tokens;
            if (hb->outstanding_tokens > p->hb_max_outstanding)
                p->hb_max_outstanding = hb->outstanding_tokens;
            if (hb->running_requests + hb->queued_requests > p->hb_max_busy)
                p->hb_max_busy = hb->running_requests + hb->queued_requests;
            p->hb_draining = hb->draining;
            Quench__HeartbeatAck a = QUENCH__HEARTBEAT_ACK__INIT;
            a.registered = 1;
            a.weight_version = g.job_version;
            Quench__Envelope env = qn_envelope_heartbeat_ack(&a);
            /* an engine that has just exited is no error: a router tolerates that too */
            (void)qn_zsend(g.router, m.identity, m.identity_len, &env, m.env->request_id, "router");
            qn_zmsg_clear(&m);
            continue;
        }
        if (m.env->body_case == QUENCH__ENVELOPE__BODY_REGISTER && g.auto_register) {
            send_register_ack(id, g.job_version, g.job_version ? g.mf1 : NULL);
            qn_zmsg_clear(&m);
            continue;
        }
        if (from) snprintf(from, cap, "%s", id);
        Quench__Envelope *env = m.env;
        m.env = NULL;
        return env;
    }
}

static uint64_t send_gen(const char *id, const int32_t *prompt, int32_t n_prompt, uint32_t n,
                         int32_t max_new, float temp, uint64_t seed, int logprob, uint64_t group,
                         uint32_t sidx) {
    Quench__SamplingParams sp = QUENCH__SAMPLING_PARAMS__INIT;
    sp.temperature = temp;
    sp.max_new_tokens = max_new;
    sp.seed = seed;
    sp.has_seed = 1;
    sp.n = n;
    Quench__GenerateRequest r = QUENCH__GENERATE_REQUEST__INIT;
    r.group_id = group;
    r.sample_index = sidx;
    r.n_input_ids = (size_t)n_prompt;
    r.input_ids = (int32_t *)prompt;
    r.params = &sp;
    r.return_logprob = logprob;
    Quench__Envelope env = qn_envelope_generate_request(&r);
    uint64_t rid = ++g.next_rid;
    send_to(id, &env, rid);
    return rid;
}

static void copy_result(res *o, uint64_t rid, const Quench__GenerateResult *r) {
    memset(o, 0, sizeof *o);
    o->rid = rid;
    o->sidx = r->sample_index;
    assert_true(r->n_output_ids <= MAX_TOK);
    o->n = (int32_t)r->n_output_ids;
    if (o->n) memcpy(o->ids, r->output_ids, r->n_output_ids * sizeof(int32_t));
    o->n_lp = (int32_t)r->n_output_logprobs;
    if (o->n_lp) memcpy(o->lp, r->output_logprobs, r->n_output_logprobs * sizeof(float));
    o->n_ver = (int32_t)r->n_weight_versions;
    if (o->n_ver) memcpy(o->ver, r->weight_versions, r->n_weight_versions * sizeof(uint64_t));
    o->finish = r->finish_reason;
    snprintf(o->err, sizeof o->err, "%s", r->error ? r->error : "");
    o->prompt_tokens = r->prompt_tokens;
    o->latency = r->latency_s;
    o->partial = r->partial;
    snprintf(o->engine, sizeof o->engine, "%s", r->engine_id ? r->engine_id : "");
}

/* Receives `want` GenerateResults within timeout_ms into out[]; Drain messages are counted
 * in g.n_drain (with the number of results seen before the first in *results_before_drain,
 * if not NULL); anything else fails the test. Returns how many arrived. */
static int collect(res *out, int want, int timeout_ms, int *results_before_drain) {
    int got = 0;
    double end = now_s() + timeout_ms / 1000.0;
    while (got < want) {
        int left = (int)((end - now_s()) * 1000.0);
        if (left <= 0) break;
        Quench__Envelope *env = pump(left, NULL, 0);
        if (!env) break;
        if (env->body_case == QUENCH__ENVELOPE__BODY_DRAIN) {
            if (g.n_drain++ == 0 && results_before_drain) *results_before_drain = got;
        } else if (env->body_case == QUENCH__ENVELOPE__BODY_GENERATE_RESULT) {
            copy_result(&out[got++], env->request_id, env->generate_result);
        } else {
            fail_msg("expected a GenerateResult, got %s", qn_envelope_body_name(env->body_case));
        }
        qn_envelope_free(env);
    }
    return got;
}

static const res *find_res(const res *v, int n, uint64_t rid, uint32_t sidx) {
    const res *hit = NULL;
    for (int i = 0; i < n; i++) {
        if (v[i].rid == rid && v[i].sidx == sidx) {
            if (hit)
                fail_msg("request %llu sample %u answered twice", (unsigned long long)rid, sidx);
            hit = &v[i];
        }
    }
    return hit;
}

/* ------------------------------------------------------------ the reference engine */

/* Greedy output of prompt on model m by an in-process engine with the service's settings. */
static int32_t ref_greedy(const qn_model *m, const qn_model_fp8 *f8, const int32_t *prompt,
                          int32_t n_prompt, int32_t max_new, int32_t *ids, float *lp) {
    qn_engine_params p = qn_engine_params_default();
    p.max_running = 16;
    p.kv_cache_tokens = 2048;
    p.block_size = 8;
    p.context_len = 256;
    qn_engine *e = NULL;
    assert_int_equal(qn_engine_create(&e, m, f8, &p), QN_OK);
    qn_engine_request r = {.prompt = prompt, .n_prompt = n_prompt, .n = 1};
    r.params = qn_sampling_params_default();
    r.params.temperature = 0.0f;
    r.params.max_new_tokens = max_new;
    uint64_t id;
    assert_int_equal(qn_engine_submit(e, &r, &id), QN_OK);
    int32_t n = -1;
    while (qn_engine_busy(e)) {
        assert_int_equal(qn_engine_step(e, NULL), QN_OK);
        qn_engine_output o;
        while (qn_engine_next_finished(e, &o)) {
            n = o.samples[0].n_out;
            memcpy(ids, o.samples[0].ids, (size_t)n * sizeof *ids);
            if (lp) memcpy(lp, o.samples[0].logprobs, (size_t)n * sizeof *lp);
        }
    }
    qn_engine_free(e);
    return n;
}

static void make_prompt(int32_t *p, int32_t n, uint64_t seed) {
    for (int32_t i = 0; i < n; i++)
        p[i] = (int32_t)(qn_rng_u32(seed, 11, (uint64_t)i) % 97u);
}

/* ------------------------------------------------------------ setup */

static int group_setup(void **state) {
    (void)state;
    memset(&g, 0, sizeof g);
    char cfg[1024];
    snprintf(cfg, sizeof cfg, "%s/tests/ref/configs/tiny_glm45.json", QN_SOURCE_DIR);
    qn_model_desc d;
    if (qn_model_desc_load(cfg, &d) != QN_OK) return -1;
    if (qn_model_init(&g.m0, &d) != QN_OK || qn_model_init(&g.m1, &d) != QN_OK) return -1;
    if (qn_model_init_random(&g.m0, 1, 0.2f, 0.1f) != QN_OK) return -1;
    if (qn_model_read_config_json(&g.m0, cfg) != QN_OK) return -1;
    snprintf(g.model_dir, sizeof g.model_dir, "%s", qn_test_path("model"));
    if (qn_model_save_dir(&g.m0, g.model_dir, "fp32") != QN_OK) return -1;
    /* version 1: scaled and shifted weights; the norms travel as BF16, so they are
     * rounded to BF16 here too */
    for (size_t i = 0; i < g.m1.n_floats; i++) {
        double u = (double)qn_rng_u32(99, 3, i) / 4294967296.0 - 0.5;
        g.m1.w[i] = g.m0.w[i] * 1.25f + (float)(0.1 * u);
    }
    for (size_t i = 0; i < g.m1.n_params; i++) {
        qn_param_info *pi = &g.m1.params[i];
        if (pi->ndim == 1)
            for (size_t k = 0; k < pi->numel; k++)
                g.m1.w[pi->offset + k] = qn_bf16_to_f32(qn_f32_to_bf16(g.m1.w[pi->offset + k]));
    }
    g.ctx = zmq_ctx_new();
    if (qn_zsock_open(g.ctx, ZMQ_ROUTER, "tcp://127.0.0.1:*", true, NULL, &g.router) != QN_OK)
        return -1;
    if (qn_zsock_endpoint(g.router, g.endpoint, sizeof g.endpoint) != QN_OK) return -1;
    g.pid = spawn_engine(ENGINE_ID, "engine.log", "none");
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    kill_and_reap(&g.pid);
    kill_and_reap(&g.late_pid);
    if (getenv("QN_TEST_VERBOSE")) {
        size_t n;
        char *log = qn_test_read_file(qn_test_path("engine.log"), &n);
        fprintf(stderr, "---- engine log ----\n%s", log);
        free(log);
    }
    qn_weight_server_stop(g.ws);
    qn_weight_manifest_free(g.mf1);
    qn_zsock_close(g.router);
    zmq_ctx_term(g.ctx);
    qn_model_free(&g.m0);
    qn_model_free(&g.m1);
    return 0;
}

/* ------------------------------------------------------------ tests */

static void test_register(void **state) {
    (void)state;
    char from[QN_ZMQ_MAX_IDENTITY + 1];
    Quench__Envelope *env = pump(30000, from, sizeof from);
    assert_non_null(env);
    assert_int_equal(env->body_case, QUENCH__ENVELOPE__BODY_REGISTER);
    assert_string_equal(from, ENGINE_ID);
    const Quench__EngineInfo *ei = env->register_->engine;
    assert_string_equal(ei->engine_id, ENGINE_ID);
    assert_string_equal(ei->endpoint, g.endpoint);
    assert_string_equal(ei->device, "cpu");
    assert_true(ei->host[0] != '\0');
    assert_int_equal(ei->max_running_requests, 16);
    assert_int_equal(ei->kv_cache_tokens, 2048);
    assert_false(ei->fp8);
    qn_envelope_free(env);
    /* unanswered, the engine registers again */
    double t_first = now_s();
    env = pump(5000, from, sizeof from);
    assert_non_null(env);
    assert_int_equal(env->body_case, QUENCH__ENVELOPE__BODY_REGISTER);
    fprintf(stderr, "register: second try after %.2f s\n", now_s() - t_first);
    qn_envelope_free(env);
    send_register_ack(ENGINE_ID, 0, NULL);
    g.auto_register = 1;
    /* heartbeats every 100 ms from now on */
    peer *p = peer_of(ENGINE_ID);
    double t0 = now_s();
    while (p->n_hb < 3 && now_s() - t0 < 5.0)
        assert_null(pump(200, NULL, 0));
    assert_true(p->n_hb >= 3);
    assert_true(now_s() - t0 < 2.0);
    assert_int_equal(p->hb_version, 0);
    assert_int_equal(p->hb_running, 0);
    assert_int_equal(p->hb_free_kv, 2048);
    assert_false(p->hb_draining);
}

static void test_generate(void **state) {
    (void)state;
    int32_t prompts[N_GEN][16], np[N_GEN], max_new[N_GEN];
    uint32_t n[N_GEN], sidx0[N_GEN];
    uint64_t rid[N_GEN];
    int total = 0;
    for (int i = 0; i < N_GEN; i++) {
        np[i] = 3 + i % 10;
        make_prompt(prompts[i], np[i], (uint64_t)i + 1);
        max_new[i] = 4 + i % 7;
        n[i] = i % 4 == 0 ? 3 : 1;
        sidx0[i] = i % 2 ? 5 : 0;
        float temp = i % 3 == 0 ? 1.0f : 0.0f;
        rid[i] = send_gen(ENGINE_ID, prompts[i], np[i], i == 5 ? 0 : n[i], max_new[i], temp,
                          1000 + (uint64_t)i, i != 7, 500 + (uint64_t)i, sidx0[i]);
        if (i == 5) n[i] = 1; /* n = 0 on the wire means 1 */
        total += (int)n[i];
    }
    res *out = calloc((size_t)total + 4, sizeof *out);
    int got = collect(out, total, 60000, NULL);
    assert_int_equal(got, total);
    /* nothing more comes */
    assert_int_equal(collect(out + total, 1, 300, NULL), 0);
    for (int i = 0; i < N_GEN; i++) {
        for (uint32_t s = 0; s < n[i]; s++) {
            const res *r = find_res(out, got, rid[i], sidx0[i] + s);
            assert_non_null(r);
            assert_string_equal(r->err, "");
            assert_string_equal(r->engine, ENGINE_ID);
            assert_int_equal(r->n, max_new[i]); /* the tiny config has no EOS */
            assert_int_equal(r->finish, QUENCH__FINISH_REASON__FINISH_REASON_LENGTH);
            assert_int_equal(r->n_ver, r->n);
            for (int t = 0; t < r->n; t++)
                assert_int_equal(r->ver[t], 0);
            assert_int_equal(r->n_lp, i == 7 ? 0 : r->n);
            assert_int_equal(r->prompt_tokens, np[i]);
            assert_true(isfinite(r->latency) && r->latency >= 0.0);
            if (i % 3 != 0) {
                int32_t ids[MAX_TOK];
                float lp[MAX_TOK];
                assert_int_equal(ref_greedy(&g.m0, NULL, prompts[i], np[i], max_new[i], ids, lp),
                                 r->n);
                assert_memory_equal(ids, r->ids, (size_t)r->n * sizeof(int32_t));
                for (int t = 0; t < r->n_lp; t++) {
                    assert_true(isfinite(r->lp[t]));
                    assert_true(fabsf(r->lp[t] - lp[t]) < 1e-4f);
                }
            }
        }
    }
    free(out);
}

/* A GenerateRequest packed without the codec's checks (the codec refuses to send it). */
static uint64_t send_raw_request(const Quench__GenerateRequest *r) {
    Quench__Envelope env = qn_envelope_generate_request((Quench__GenerateRequest *)r);
    env.protocol_version = QN_PROTOCOL_VERSION;
    env.request_id = ++g.next_rid;
    env.sender = "router";
    size_t len = quench__envelope__get_packed_size(&env);
    uint8_t *buf = malloc(len);
    quench__envelope__pack(&env, buf);
    assert_true(zmq_send(g.router, ENGINE_ID, strlen(ENGINE_ID), ZMQ_SNDMORE) >= 0);
    assert_true(zmq_send(g.router, buf, len, 0) >= 0);
    free(buf);
    return env.request_id;
}

static void expect_error(uint64_t rid, const char *needle) {
    res r;
    assert_int_equal(collect(&r, 1, 10000, NULL), 1);
    assert_int_equal(r.rid, rid);
    if (!strstr(r.err, needle)) fail_msg("error '%s' does not mention '%s'", r.err, needle);
    assert_int_equal(r.n, 0);
}

static void expect_good(void) {
    int32_t prompt[5] = {1, 2, 3, 4, 5};
    uint64_t rid = send_gen(ENGINE_ID, prompt, 5, 1, 6, 0.0f, 1, 1, 1, 0);
    res r;
    assert_int_equal(collect(&r, 1, 10000, NULL), 1);
    assert_int_equal(r.rid, rid);
    assert_string_equal(r.err, "");
    assert_int_equal(r.n, 6);
}

static void test_bad_requests(void **state) {
    (void)state;
    int32_t prompt[4] = {5, 6, 7, 8};
    Quench__SamplingParams sp = QUENCH__SAMPLING_PARAMS__INIT;
    sp.max_new_tokens = 4;
    Quench__GenerateRequest r = QUENCH__GENERATE_REQUEST__INIT;
    r.params = &sp;
    expect_error(send_raw_request(&r), "input_ids"); /* empty prompt */
    r.n_input_ids = 4;
    r.input_ids = prompt;
    sp.top_p = 1.5f;
    expect_error(send_raw_request(&r), "top_p");
    expect_good();
    int32_t bad_tok[3] = {1, 500, 2}; /* vocabulary of 97 */
    expect_error(send_gen(ENGINE_ID, bad_tok, 3, 1, 4, 0.0f, 1, 1, 2, 0), "refused");
    /* n above max_running (16): one refusal per sample, so a router can count them */
    uint64_t rid20 = send_gen(ENGINE_ID, prompt, 4, 20, 4, 0.0f, 1, 1, 3, 100);
    res *many = calloc(21, sizeof *many);
    assert_int_equal(collect(many, 20, 10000, NULL), 20);
    assert_int_equal(collect(many + 20, 1, 200, NULL), 0);
    for (uint32_t i = 0; i < 20; i++) {
        const res *e = find_res(many, 20, rid20, 100 + i);
        assert_non_null(e);
        assert_non_null(strstr(e->err, "refused"));
    }
    free(many);
    sp.top_p = 0.0f;
    char *stop[1] = {"abc"};
    sp.n_stop = 1;
    sp.stop = stop;
    Quench__Envelope env = qn_envelope_generate_request(&r);
    uint64_t rid = ++g.next_rid;
    send_to(ENGINE_ID, &env, rid);
    expect_error(rid, "refused");
    /* a request needing a newer weight version names both versions */
    sp.n_stop = 0;
    r.min_weight_version = 3;
    rid = ++g.next_rid;
    send_to(ENGINE_ID, &env, rid);
    res e;
    assert_int_equal(collect(&e, 1, 10000, NULL), 1);
    assert_non_null(strstr(e.err, "3"));
    assert_non_null(strstr(e.err, "version 0"));
    expect_good();
}

static void test_garbage(void **state) {
    (void)state;
    const char junk[] = "\xff\x01garbage that is no envelope";
    assert_true(zmq_send(g.router, ENGINE_ID, strlen(ENGINE_ID), ZMQ_SNDMORE) >= 0);
    assert_true(zmq_send(g.router, junk, sizeof junk, 0) >= 0);
    /* a valid request cut in half */
    int32_t prompt[6] = {9, 8, 7, 6, 5, 4};
    Quench__SamplingParams sp = QUENCH__SAMPLING_PARAMS__INIT;
    sp.max_new_tokens = 3;
    Quench__GenerateRequest r = QUENCH__GENERATE_REQUEST__INIT;
    r.n_input_ids = 6;
    r.input_ids = prompt;
    r.params = &sp;
    Quench__Envelope env = qn_envelope_generate_request(&r);
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(qn_envelope_encode_alloc(&env, 4242, "router", &buf, &len), QN_OK);
    assert_true(zmq_send(g.router, ENGINE_ID, strlen(ENGINE_ID), ZMQ_SNDMORE) >= 0);
    assert_true(zmq_send(g.router, buf, len / 2, 0) >= 0);
    /* two payload frames */
    assert_true(zmq_send(g.router, ENGINE_ID, strlen(ENGINE_ID), ZMQ_SNDMORE) >= 0);
    assert_true(zmq_send(g.router, buf, len, ZMQ_SNDMORE) >= 0);
    assert_true(zmq_send(g.router, buf, len, 0) >= 0);
    /* an empty frame */
    assert_true(zmq_send(g.router, ENGINE_ID, strlen(ENGINE_ID), ZMQ_SNDMORE) >= 0);
    assert_true(zmq_send(g.router, "", 0, 0) >= 0);
    free(buf);
    expect_good();
    int alive = waitpid(g.pid, NULL, WNOHANG) == 0;
    assert_true(alive);
}

/* A partial rollout continued: the prefix (with its log-probs and versions) is part of the
 * result, and the continuation is what the engine would have generated anyway. */
static void test_prefix_continuation(void **state) {
    (void)state;
    int32_t prompt[9], ids[MAX_TOK];
    float lp[MAX_TOK];
    make_prompt(prompt, 9, 31337);
    assert_int_equal(ref_greedy(&g.m0, NULL, prompt, 9, 10, ids, lp), 10);
    float plp[4] = {-0.5f, -0.25f, -1.0f, -2.0f};
    uint64_t pver[4] = {0, 0, 0, 0};
    Quench__SamplingParams sp = QUENCH__SAMPLING_PARAMS__INIT;
    sp.max_new_tokens = 10;
    Quench__GenerateRequest r = QUENCH__GENERATE_REQUEST__INIT;
    r.group_id = 42;
    r.sample_index = 3;
    r.n_input_ids = 9;
    r.input_ids = prompt;
    r.params = &sp;
    r.return_logprob = 1;
    r.n_prefix_output_ids = 4;
    r.prefix_output_ids = ids;
    r.n_prefix_output_logprobs = 4;
    r.prefix_output_logprobs = plp;
    r.n_prefix_weight_versions = 4;
    r.prefix_weight_versions = pver;
    Quench__Envelope env = qn_envelope_generate_request(&r);
    uint64_t rid = ++g.next_rid;
    send_to(ENGINE_ID, &env, rid);
    res out;
    assert_int_equal(collect(&out, 1, 10000, NULL), 1);
    assert_int_equal(out.rid, rid);
    assert_string_equal(out.err, "");
    assert_int_equal(out.sidx, 3);
    assert_int_equal(out.n, 10); /* max_new_tokens counts the prefix */
    assert_memory_equal(out.ids, ids, 10 * sizeof(int32_t));
    assert_int_equal(out.n_lp, 10);
    for (int t = 0; t < 4; t++)
        assert_true(out.lp[t] == plp[t]);
    for (int t = 4; t < 10; t++)
        assert_true(isfinite(out.lp[t]) && fabsf(out.lp[t] - lp[t]) < 1e-4f);
    assert_int_equal(out.n_ver, 10);
    assert_int_equal(out.prompt_tokens, 9);
    /* without prefix log-probs the result has none (they would be made up) */
    r.n_prefix_output_logprobs = 0;
    rid = ++g.next_rid;
    send_to(ENGINE_ID, &env, rid);
    assert_int_equal(collect(&out, 1, 10000, NULL), 1);
    assert_int_equal(out.n, 10);
    assert_int_equal(out.n_lp, 0);
    assert_int_equal(out.n_ver, 10);
}

/* GenerateRequest.stream: partial results carry the new tokens after engine steps, and
 * per sample they add up to the final result (a carried prefix included). */
static void test_stream(void **state) {
    (void)state;
    int32_t prompt[7], pre[2] = {5, 9};
    float plp[2] = {-0.5f, -1.5f};
    uint64_t pver[2] = {0, 0};
    make_prompt(prompt, 7, 777);
    for (int with_prefix = 0; with_prefix < 2; with_prefix++) {
        Quench__SamplingParams sp = QUENCH__SAMPLING_PARAMS__INIT;
        sp.temperature = 0.8f;
        sp.max_new_tokens = 8;
        sp.seed = 11;
        sp.has_seed = 1;
        sp.n = 2;
        Quench__GenerateRequest r = QUENCH__GENERATE_REQUEST__INIT;
        r.group_id = 9;
        r.sample_index = 4;
        r.n_input_ids = 7;
        r.input_ids = prompt;
        r.params = &sp;
        r.return_logprob = 1;
        r.stream = 1;
        if (with_prefix) {
            r.n_prefix_output_ids = r.n_prefix_output_logprobs = r.n_prefix_weight_versions = 2;
            r.prefix_output_ids = pre;
            r.prefix_output_logprobs = plp;
            r.prefix_weight_versions = pver;
        }
        Quench__Envelope env = qn_envelope_generate_request(&r);
        uint64_t rid = ++g.next_rid;
        send_to(ENGINE_ID, &env, rid);
        int32_t cat[2][MAX_TOK];
        float cat_lp[2][MAX_TOK];
        int n_cat[2] = {0, 0}, n_partials[2] = {0, 0}, finals = 0;
        res fin[2];
        while (finals < 2) {
            res x;
            assert_int_equal(collect(&x, 1, 10000, NULL), 1);
            assert_int_equal(x.rid, rid);
            assert_string_equal(x.err, "");
            assert_true(x.sidx == 4 || x.sidx == 5);
            int k = (int)x.sidx - 4;
            if (x.partial) {
                assert_true(x.n > 0 && x.n_lp == x.n && x.n_ver == x.n);
                assert_int_equal(x.finish, 0);
                assert_true(n_cat[k] + x.n <= MAX_TOK);
                memcpy(cat[k] + n_cat[k], x.ids, (size_t)x.n * sizeof(int32_t));
                memcpy(cat_lp[k] + n_cat[k], x.lp, (size_t)x.n * sizeof(float));
                n_cat[k] += x.n;
                n_partials[k]++;
            } else {
                fin[k] = x;
                finals++;
            }
        }
        for (int k = 0; k < 2; k++) {
            /* one step makes one token per sample: several partials, not one */
            if (n_partials[k] < 3)
                fail_msg("sample %d: %d partial results for %d tokens", k, n_partials[k],
                         fin[k].n);
            assert_true(fin[k].n >= 3 && fin[k].n <= 8);
            assert_int_equal(n_cat[k], fin[k].n);
            assert_memory_equal(cat[k], fin[k].ids, (size_t)fin[k].n * sizeof(int32_t));
            for (int t = 0; t < fin[k].n; t++)
                assert_true(isfinite(cat_lp[k][t]) && cat_lp[k][t] == fin[k].lp[t]);
            if (with_prefix) assert_memory_equal(cat[k], pre, sizeof pre);
        }
    }
}

/* AbortRequest ends a running request with what it has; the heartbeat counts the tokens
 * still to come. */
static void test_abort(void **state) {
    (void)state;
    int32_t prompt[6];
    make_prompt(prompt, 6, 555);
    uint64_t rid = send_gen(ENGINE_ID, prompt, 6, 2, 240, 1.0f, 5, 1, 60, 0);
    uint64_t marker = send_gen(ENGINE_ID, prompt, 6, 1, 1, 0.0f, 0, 1, 61, 0);
    res m;
    assert_int_equal(collect(&m, 1, 10000, NULL), 1);
    assert_int_equal(m.rid, marker);
    Quench__AbortRequest a = QUENCH__ABORT_REQUEST__INIT;
    uint64_t ids[2] = {rid, 987654321};
    a.n_request_ids = 2;
    a.request_ids = ids;
    Quench__Envelope env = qn_envelope_abort_request(&a);
    send_to(ENGINE_ID, &env, ++g.next_rid);
    res out[2];
    assert_int_equal(collect(out, 2, 10000, NULL), 2);
    for (uint32_t s = 0; s < 2; s++) {
        const res *r = find_res(out, 2, rid, s);
        assert_non_null(r);
        assert_int_equal(r->finish, QUENCH__FINISH_REASON__FINISH_REASON_ABORT);
        assert_true(r->n < 240);
        assert_int_equal(r->n_lp, r->n);
    }
    expect_good();
}

/* A router that forgot the engine (HeartbeatAck.registered = false) gets a new Register. */
static void test_reregister(void **state) {
    (void)state;
    g.auto_register = 0;
    Quench__HeartbeatAck a = QUENCH__HEARTBEAT_ACK__INIT;
    a.registered = 0;
    Quench__Envelope env = qn_envelope_heartbeat_ack(&a);
    send_to(ENGINE_ID, &env, 0);
    Quench__Envelope *m = pump(5000, NULL, 0);
    assert_non_null(m);
    assert_int_equal(m->body_case, QUENCH__ENVELOPE__BODY_REGISTER);
    assert_string_equal(m->register_->engine->engine_id, ENGINE_ID);
    qn_envelope_free(m);
    send_register_ack(ENGINE_ID, g.job_version, NULL);
    g.auto_register = 1;
    peer *p = peer_of(ENGINE_ID);
    int n0 = p->n_hb;
    double t0 = now_s();
    while (p->n_hb < n0 + 2 && now_s() - t0 < 5.0)
        assert_null(pump(200, NULL, 0));
    assert_true(p->n_hb >= n0 + 2);
    expect_good();
}

static void publish_v1(void) {
    void *ctx = g.ctx;
    assert_int_equal(qn_weight_server_start(ctx, "tcp://127.0.0.1:*", NULL, 4096, &g.ws), QN_OK);
    size_t n = g.m1.n_params;
    qn_weight_tensor *t = calloc(n, sizeof *t);
    uint16_t **bf = calloc(n, sizeof *bf);
    for (size_t i = 0; i < n; i++) {
        const qn_param_info *pi = &g.m1.params[i];
        t[i].name = pi->name;
        t[i].ndim = pi->ndim;
        for (int k = 0; k < pi->ndim; k++)
            t[i].shape[k] = pi->shape[k];
        if (pi->ndim == 1) {
            bf[i] = malloc(pi->numel * sizeof(uint16_t));
            assert_int_equal(
                qn_dtype_from_f32(QN_DTYPE_BF16, g.m1.w + pi->offset, bf[i], pi->numel), QN_OK);
            t[i].dtype = QN_DTYPE_BF16;
            t[i].data = bf[i];
        } else {
            t[i].dtype = QN_DTYPE_F32;
            t[i].data = g.m1.w + pi->offset;
        }
    }
    assert_int_equal(qn_weight_server_publish(g.ws, 1, t, n, &g.mf1), QN_OK);
    for (size_t i = 0; i < n; i++)
        free(bf[i]);
    free(bf);
    free(t);
}

/* Sends WeightUpdateBegin for mf to engine id and returns the APPLIED ack's ok; the error
 * text goes to err. READY must come first. Results of requests in flight go to inflight. */
static int update(const char *id, Quench__WeightManifest *mf, char *err, size_t cap, res *inflight,
                  int *n_inflight) {
    Quench__WeightUpdateBegin b = QUENCH__WEIGHT_UPDATE_BEGIN__INIT;
    b.manifest = mf;
    Quench__Envelope env = qn_envelope_weight_update_begin(&b);
    send_to(id, &env, 900 + mf->version);
    int phase = 0, ok = -1;
    double end = now_s() + 30.0;
    while (phase < 2 && now_s() < end) {
        Quench__Envelope *m = pump(1000, NULL, 0);
        if (!m) continue;
        if (m->body_case == QUENCH__ENVELOPE__BODY_GENERATE_RESULT && inflight) {
            copy_result(&inflight[(*n_inflight)++], m->request_id, m->generate_result);
            qn_envelope_free(m);
            continue;
        }
        assert_int_equal(m->body_case, QUENCH__ENVELOPE__BODY_WEIGHT_UPDATE_ACK);
        const Quench__WeightUpdateAck *a = m->weight_update_ack;
        assert_int_equal(a->version, mf->version);
        assert_string_equal(a->engine_id, id);
        if (phase == 0) {
            assert_int_equal(a->phase, QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_READY);
            assert_true(a->ok);
        } else {
            assert_int_equal(a->phase, QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_APPLIED);
            ok = a->ok;
            snprintf(err, cap, "%s", a->error ? a->error : "");
        }
        phase++;
        qn_envelope_free(m);
    }
    assert_int_equal(phase, 2);
    return ok;
}

/* Greedy outputs of a few prompts from engine id, checked against model m at version v;
 * returns how many differ from the version-0 model's. */
static int check_greedy(const char *id, const qn_model *m, const qn_model_fp8 *f8, uint64_t v) {
    enum { K = 6 };
    int32_t prompts[K][12];
    uint64_t rid[K];
    for (int i = 0; i < K; i++) {
        make_prompt(prompts[i], 12, 700 + (uint64_t)i);
        rid[i] = send_gen(id, prompts[i], 12, 1, 12, 0.0f, 0, 1, 1, 0);
    }
    res out[K];
    assert_int_equal(collect(out, K, 30000, NULL), K);
    int differ = 0;
    for (int i = 0; i < K; i++) {
        const res *r = find_res(out, K, rid[i], 0);
        assert_non_null(r);
        assert_string_equal(r->err, "");
        assert_string_equal(r->engine, id);
        int32_t ids[MAX_TOK], ids0[MAX_TOK];
        assert_int_equal(ref_greedy(m, f8, prompts[i], 12, 12, ids, NULL), r->n);
        assert_memory_equal(ids, r->ids, (size_t)r->n * sizeof(int32_t));
        assert_int_equal(r->n_ver, r->n);
        for (int t = 0; t < r->n; t++)
            assert_int_equal(r->ver[t], v);
        assert_int_equal(ref_greedy(&g.m0, NULL, prompts[i], 12, 12, ids0, NULL), r->n);
        differ += memcmp(ids0, r->ids, (size_t)r->n * sizeof(int32_t)) != 0;
    }
    return differ;
}

static void test_weight_update(void **state) {
    (void)state;
    publish_v1();
    /* long requests in flight across the update */
    int32_t prompt[8];
    make_prompt(prompt, 8, 4242);
    uint64_t rid[3];
    for (int i = 0; i < 3; i++)
        rid[i] = send_gen(ENGINE_ID, prompt, 8, 2, 200, 0.0f, 0, 1, 77, 0);
    res inflight[8];
    int n_inflight = 0;
    char err[512];
    usleep(20000);
    assert_true(update(ENGINE_ID, g.mf1, err, sizeof err, inflight, &n_inflight));
    g.job_version = 1;
    n_inflight += collect(inflight + n_inflight, 6 - n_inflight, 30000, NULL);
    assert_int_equal(n_inflight, 6);
    int mixed = 0;
    for (int i = 0; i < 3; i++) {
        for (uint32_t s = 0; s < 2; s++) {
            const res *r = find_res(inflight, n_inflight, rid[i], s);
            assert_non_null(r);
            assert_int_equal(r->n, 200);
            assert_int_equal(r->n_ver, 200);
            for (int t = 0; t < r->n; t++) {
                assert_true(r->ver[t] <= 1);
                if (t) assert_true(r->ver[t] >= r->ver[t - 1]);
            }
            mixed += r->ver[0] == 0 && r->ver[r->n - 1] == 1;
        }
    }
    fprintf(stderr, "weight update: %d of 6 in-flight samples have tokens of both versions\n",
            mixed);
    int differ = check_greedy(ENGINE_ID, &g.m1, NULL, 1);
    fprintf(stderr, "weight update: %d of 6 greedy outputs changed with version 1\n", differ);
    assert_true(differ > 0);
    /* the heartbeat reports the new version */
    peer *p = peer_of(ENGINE_ID);
    int n0 = p->n_hb;
    while (p->n_hb < n0 + 2)
        assert_null(pump(300, NULL, 0));
    assert_int_equal(p->hb_version, 1);
}

/* An endpoint where nothing listens any more. */
static void dead_endpoint(char *buf, size_t cap) {
    void *dead = NULL;
    assert_int_equal(qn_zsock_open(g.ctx, ZMQ_ROUTER, "tcp://127.0.0.1:*", true, NULL, &dead),
                     QN_OK);
    assert_int_equal(qn_zsock_endpoint(dead, buf, cap), QN_OK);
    qn_zsock_close(dead);
}

static void test_update_failures(void **state) {
    (void)state;
    assert_non_null(g.mf1);
    char err[512];
    /* a tensor missing from the manifest */
    Quench__WeightManifest bad = *g.mf1;
    bad.version = 2;
    bad.n_tensors = g.mf1->n_tensors - 1;
    assert_false(update(ENGINE_ID, &bad, err, sizeof err, NULL, NULL));
    if (!strstr(err, "missing")) fail_msg("error '%s'", err);
    /* a tensor with the wrong shape */
    bad = *g.mf1;
    bad.version = 2;
    Quench__TensorInfo **tv = malloc(bad.n_tensors * sizeof *tv);
    memcpy(tv, g.mf1->tensors, bad.n_tensors * sizeof *tv);
    Quench__TensorInfo t0 = *tv[0];
    uint64_t shape[2] = {t0.shape[1], t0.shape[0]};
    t0.shape = shape;
    tv[0] = &t0;
    bad.tensors = tv;
    if (t0.shape[0] != t0.shape[1]) {
        assert_false(update(ENGINE_ID, &bad, err, sizeof err, NULL, NULL));
        if (!strstr(err, "shape")) fail_msg("error '%s'", err);
    }
    free(tv);
    /* a weight server that is gone: every chunk times out */
    char dead_ep[128];
    dead_endpoint(dead_ep, sizeof dead_ep);
    bad = *g.mf1;
    bad.version = 2;
    bad.server_endpoint = dead_ep;
    /* a request that waits out the pull: stepping is paused, heartbeats go on and count it */
    int32_t prompt[7];
    make_prompt(prompt, 7, 77);
    uint64_t rid = send_gen(ENGINE_ID, prompt, 7, 2, 100, 0.0f, 0, 1, 88, 0);
    peer *p = peer_of(ENGINE_ID);
    p->hb_max_outstanding = 0;
    p->hb_max_busy = 0;
    res inflight[2];
    int n_inflight = 0;
    double t0s = now_s();
    assert_false(update(ENGINE_ID, &bad, err, sizeof err, inflight, &n_inflight));
    fprintf(stderr, "dead weight server: failed after %.2f s: %s\n", now_s() - t0s, err);
    assert_true(err[0] != '\0');
    fprintf(stderr, "during the pull: heartbeats counted %u requests, %llu outstanding tokens\n",
            p->hb_max_busy, (unsigned long long)p->hb_max_outstanding);
    assert_true(p->hb_max_busy >= 1);
    assert_true(p->hb_max_outstanding > 0 && p->hb_max_outstanding <= 200);
    n_inflight += collect(inflight + n_inflight, 2 - n_inflight, 10000, NULL);
    assert_int_equal(n_inflight, 2);
    for (uint32_t s = 0; s < 2; s++) {
        const res *r = find_res(inflight, 2, rid, s);
        assert_non_null(r);
        assert_int_equal(r->n, 100);
        for (int t = 0; t < r->n; t++)
            assert_int_equal(r->ver[t], 1);
    }
    /* version 1 keeps serving */
    check_greedy(ENGINE_ID, &g.m1, NULL, 1);
    int n0 = p->n_hb;
    while (p->n_hb < n0 + 2)
        assert_null(pump(300, NULL, 0));
    assert_int_equal(p->hb_version, 1);
}

static void test_late_joiner(void **state) {
    (void)state;
    assert_non_null(g.mf1);
    g.job_version = 1;
    g.late_pid = spawn_engine(LATE_ID, "late.log", "fp8");
    peer *p = peer_of(LATE_ID);
    double t0 = now_s();
    /* registers, gets version 1's manifest with its RegisterAck (auto_register), pulls it */
    while (!(p->n_hb > 0 && p->hb_version == 1) && now_s() - t0 < 30.0)
        assert_null(pump(200, NULL, 0));
    assert_int_equal(p->hb_version, 1);
    /* it serves FP8: version 1 re-quantised, as an in-process engine on FP8 copies of
     * version 1 gives */
    qn_model_fp8 *f8 = NULL;
    assert_int_equal(qn_model_fp8_quantize(&f8, &g.m1, 128, 128), QN_OK);
    check_greedy(LATE_ID, &g.m1, f8, 1);
    qn_model_fp8_free(f8);
    /* SIGTERM during a pull (a dead weight server: ~2.5 s of retries) drains after it; a
     * second signal exits at once with status 1 */
    char dead_ep[128];
    dead_endpoint(dead_ep, sizeof dead_ep);
    Quench__WeightManifest bad = *g.mf1;
    bad.version = 2;
    bad.server_endpoint = dead_ep;
    Quench__WeightUpdateBegin b = QUENCH__WEIGHT_UPDATE_BEGIN__INIT;
    b.manifest = &bad;
    Quench__Envelope env = qn_envelope_weight_update_begin(&b);
    send_to(LATE_ID, &env, 1);
    Quench__Envelope *m = pump(5000, NULL, 0);
    assert_non_null(m);
    assert_int_equal(m->body_case, QUENCH__ENVELOPE__BODY_WEIGHT_UPDATE_ACK);
    assert_int_equal(m->weight_update_ack->phase,
                     QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_READY);
    qn_envelope_free(m);
    /* versions 3 then 4 announced during that pull: 4 is kept for later, 3 is superseded */
    for (uint64_t v = 3; v <= 4; v++) {
        bad.version = v;
        send_to(LATE_ID, &env, v);
    }
    for (int k = 0; k < 2; k++) {
        m = pump(5000, NULL, 0);
        assert_non_null(m);
        assert_int_equal(m->body_case, QUENCH__ENVELOPE__BODY_WEIGHT_UPDATE_ACK);
        assert_int_equal(m->weight_update_ack->version, 3);
        assert_int_equal(m->weight_update_ack->ok, k == 0);
        if (k == 1) assert_non_null(strstr(m->weight_update_ack->error, "superseded"));
        qn_envelope_free(m);
    }
    assert_int_equal(kill(g.late_pid, SIGTERM), 0);
    m = pump(5000, NULL, 0);
    assert_non_null(m);
    assert_int_equal(m->body_case, QUENCH__ENVELOPE__BODY_DRAIN);
    qn_envelope_free(m);
    double t0s = now_s();
    assert_int_equal(kill(g.late_pid, SIGTERM), 0);
    int st = wait_exit(g.late_pid, 2.0);
    assert_true(st != -1);
    g.late_pid = 0;
    fprintf(stderr, "second signal: exit after %.3f s\n", now_s() - t0s);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 1);
}

static void test_sigterm_drains(void **state) {
    (void)state;
    enum { K = 6 };
    int32_t prompt[10];
    uint64_t rid[K];
    for (int i = 0; i < K; i++) {
        make_prompt(prompt, 10, 900 + (uint64_t)i);
        rid[i] = send_gen(ENGINE_ID, prompt, 10, 1, 240, 1.0f, (uint64_t)i, 1, 9, 0);
    }
    /* a one-token request sent after them: when its result is back, the long ones have
     * been received and are still running (they need 240 steps) */
    uint64_t marker = send_gen(ENGINE_ID, prompt, 10, 1, 1, 0.0f, 0, 1, 11, 0);
    res m;
    assert_int_equal(collect(&m, 1, 10000, NULL), 1);
    assert_int_equal(m.rid, marker);
    g.n_drain = 0;
    assert_int_equal(kill(g.pid, SIGTERM), 0);
    res out[K + 1];
    /* the Drain announcement comes first (docs/services.md); then a new request is refused */
    Quench__Envelope *env = pump(10000, NULL, 0);
    assert_non_null(env);
    if (env->body_case != QUENCH__ENVELOPE__BODY_DRAIN)
        fail_msg("expected Drain first, got %s", qn_envelope_body_name(env->body_case));
    assert_string_equal(env->drain->engine_id, ENGINE_ID);
    qn_envelope_free(env);
    uint64_t late = send_gen(ENGINE_ID, prompt, 10, 1, 5, 0.0f, 0, 1, 10, 0);
    int n = collect(out, K + 1, 30000, NULL);
    assert_int_equal(n, K + 1);
    const res *r = find_res(out, n, late, 0);
    assert_non_null(r);
    assert_non_null(strstr(r->err, "draining"));
    for (int i = 0; i < K; i++) {
        r = find_res(out, n, rid[i], 0);
        assert_non_null(r);
        assert_string_equal(r->err, "");
        assert_int_equal(r->n, 240);
    }
    int st = wait_exit(g.pid, 10.0);
    assert_true(st != -1);
    g.pid = 0;
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_register),
        cmocka_unit_test(test_generate),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_prefix_continuation),
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_abort),
        cmocka_unit_test(test_reregister),
        cmocka_unit_test(test_weight_update),
        cmocka_unit_test(test_update_failures),
        cmocka_unit_test(test_late_joiner),
        cmocka_unit_test(test_sigterm_drains),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
