/* test_services_e2e.c — the services end to end on loopback: a real `quench router`
 * ($QN_BIN) and real `quench rollout` engines serving a random tiny GLM-4.5-style model
 * (tests/ref/configs/tiny_glm45.json), with this test as the client (a DEALER named "buffer"
 * sending one GenerateRequest per sample, group_id / sample_index set) and as the trainer (a
 * qn_weight_server plus a DEALER named "trainer" announcing versions):
 *   1. a rollout of 64 groups x 8 samples through the router and 2 engines completes: every
 *      (group, sample) arrives exactly once, without error, with all its tokens, and both
 *      engines served some; the tokens equal an in-process engine's on the same seeded
 *      requests;
 *   2. SIGKILL of one engine after a third of that rollout arrived: the rollout still
 *      completes with nothing lost and nothing twice, the router dropped the engine and
 *      re-sent its requests (its /metrics), the survivor answered at least as many samples
 *      after the kill as were re-sent, and nothing came from the dead engine later than 1 s;
 *   3. with the job at version 1 (published by the test's weight server, announced and
 *      applied), a third engine started mid-run (the client keeps sending, as a buffer does)
 *      registers, pulls version 1 (chunks served) and serves samples whose tokens are all
 *      marked version 1 and equal an in-process engine's on version 1 (not version 0's);
 *   4. a weight update under load: with ~120 requests in flight the trainer announces v+1;
 *      READY then APPLIED (both ok, both engines) reach the trainer; no request fails; every
 *      token carries a version, per sample non-decreasing; both versions occur and samples in
 *      flight continue on v+1; tokens marked v equal version v's model, samples all of v+1
 *      equal v+1's, and samples sent after APPLIED carry only v+1.
 * Each case starts its own router and engines and prints the rollout's wall time and tokens/s.
 * Every wait is bounded; every process is killed and reaped in the teardown, also after a
 * failed assertion (set QN_TEST_VERBOSE=1 to see the service logs; a failure shows their
 * tails). Leaves out: Redis (the router runs without it here), the buffer service, HTTP
 * (tests/cli/test_router_http.sh). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "core/model/model.h"
#include "core/rng.h"
#include "net/codec.h"
#include "net/weights.h"
#include "net/zchan.h"
#include "rollout/engine.h"
#include "tests/test_util.h"

#define N_PER 8          /* samples per group */
#define MAX_SAMPLES 2048 /* (group, sample) slots the bookkeeping holds */
#define MAX_ENGINES 3
#define MAX_NEW_CAP 32 /* largest max_new_tokens used */
#define HB_MS 100
#define ENGINE_TIMEOUT_MS 1500

typedef struct sample_rec {
    bool sent;
    bool late; /* sent after the trainer got APPLIED */
    int32_t max_new;
    int got; /* results received for it */
    bool error;
    int n_tok;
    int32_t ids[MAX_NEW_CAP];
    uint64_t ver[MAX_NEW_CAP];
    int n_ver;       /* weight_versions entries */
    bool ver_sorted; /* non-decreasing */
    uint64_t vmin, vmax;
    char engine[64];
    double t_recv; /* seconds since the rollout started */
} sample_rec;

typedef struct wstatus {
    uint64_t version;
    int phase;
    bool ok;
    size_t n_engines, n_failed;
} wstatus;

static struct {
    void *ctx;
    char cfg_path[1024];
    char model_dir[600];
    qn_model m0, m1; /* version 0 (the checkpoint) and 1 (perturbed version 0) */
    qn_weight_server *ws;
    Quench__WeightManifest *mf1;
    /* per case */
    char router_log[600], engine_log[MAX_ENGINES][600];
    pid_t router, eng[MAX_ENGINES];
    char zmq[256];
    int http;
    void *client, *trainer;
    sample_rec rec[MAX_SAMPLES];
    int n_sent, n_recv, n_dup, n_err, n_alien;
    long n_tokens;
    char first_error[512];
    double t0;
    wstatus st[8];
    int n_st;
} g;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void dump_logs(void) {
    qn_test_dump_tail(g.router_log, 3000);
    for (int i = 0; i < MAX_ENGINES; i++)
        if (g.engine_log[i][0]) qn_test_dump_tail(g.engine_log[i], 2000);
}

/* fail_msg with the service logs first */
#define FAIL(...)                                                                                  \
    do {                                                                                           \
        dump_logs();                                                                               \
        fail_msg(__VA_ARGS__);                                                                     \
    } while (0)

/* ------------------------------------------------------------------ HTTP */

typedef struct buf {
    char *p;
    size_t n;
} buf;

static size_t on_body(char *d, size_t sz, size_t nm, void *u) {
    buf *b = u;
    char *np = realloc(b->p, b->n + sz * nm + 1);
    if (!np) return 0;
    b->p = np;
    memcpy(b->p + b->n, d, sz * nm);
    b->n += sz * nm;
    b->p[b->n] = '\0';
    return sz * nm;
}

/* GET http://127.0.0.1:<router http>/path; the body (malloc'd) or NULL; *code the status. */
static char *http_get(const char *path, long *code) {
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", g.http, path);
    CURL *c = curl_easy_init();
    assert_non_null(c);
    buf b = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    *code = 0;
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, code);
    curl_easy_cleanup(c);
    return b.p;
}

/* A counter from the router's /metrics (the first sample line named `name`, no labels). */
static double router_metric(const char *name) {
    long code;
    char *body = http_get("/metrics", &code);
    if (!body || code != 200) FAIL("GET /metrics: status %ld", code);
    double v = NAN;
    size_t nl = strlen(name);
    for (char *l = body; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strncmp(l, name, nl) == 0 && l[nl] == ' ') {
            v = strtod(l + nl + 1, NULL);
            break;
        }
    }
    free(body);
    if (!isfinite(v)) FAIL("/metrics has no finite %s", name);
    return v;
}

/* Dispatchable engines according to GET /health (0 on 503). */
static int health_engines(void) {
    long code;
    char *body = http_get("/health", &code);
    int n = 0;
    cJSON *o = body ? cJSON_Parse(body) : NULL;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "engines");
    if (code == 200 && cJSON_IsNumber(e)) n = e->valueint;
    cJSON_Delete(o);
    free(body);
    return n;
}

/* ------------------------------------------------------------------ processes */

static void start_router(void) {
    const char *bin = getenv("QN_BIN");
    if (!bin) fail_msg("QN_BIN must name the quench binary");
    char port_file[600], hb[16], to[16];
    snprintf(port_file, sizeof port_file, "%s", qn_test_path("ports"));
    snprintf(g.router_log, sizeof g.router_log, "%s", qn_test_path("router.log"));
    unlink(port_file);
    unlink(g.router_log);
    snprintf(hb, sizeof hb, "%d", HB_MS);
    snprintf(to, sizeof to, "%d", ENGINE_TIMEOUT_MS);
    const char *argv[] = {bin,
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
                          NULL};
    g.router = qn_test_spawn(argv, g.router_log);
    double end = now_s() + 10.0;
    while (now_s() < end) {
        FILE *f = fopen(port_file, "r");
        if (f) {
            int n = fscanf(f, "zmq=%255s http=%d", g.zmq, &g.http);
            fclose(f);
            if (n == 2) return;
        }
        if (qn_test_wait_pid(g.router, 0) != -1) FAIL("the router exited at start");
        usleep(10000);
    }
    FAIL("the router wrote no port file within 10 s");
}

static void start_engine(int i) {
    const char *bin = getenv("QN_BIN");
    char id[16], log_name[32];
    snprintf(id, sizeof id, "e%d", i);
    snprintf(log_name, sizeof log_name, "engine%d.log", i);
    snprintf(g.engine_log[i], sizeof g.engine_log[i], "%s", qn_test_path(log_name));
    unlink(g.engine_log[i]);
    const char *argv[] = {bin,
                          "rollout",
                          "--router",
                          g.zmq,
                          "--model",
                          g.model_dir,
                          "--engine-id",
                          id,
                          "--threads",
                          "1",
                          "--max-running-requests",
                          "64",
                          "--kv-cache-tokens",
                          "8192",
                          "--block-size",
                          "8",
                          "--context-len",
                          "256",
                          "--seed",
                          i == 0   ? "11"
                          : i == 1 ? "12"
                                   : "13",
                          NULL};
    g.eng[i] = qn_test_spawn(argv, g.engine_log[i]);
}

/* The job's weight version according to GET /health. */
static double health_version(void) {
    long code;
    char *body = http_get("/health", &code);
    cJSON *o = body ? cJSON_Parse(body) : NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "weight_version");
    double r = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    cJSON_Delete(o);
    free(body);
    return r;
}

/* Waits until GET /health reports n dispatchable engines. */
static void wait_engines(int n, double timeout_s) {
    double end = now_s() + timeout_s;
    int have = 0;
    while (now_s() < end) {
        if ((have = health_engines()) == n) return;
        for (int i = 0; i < MAX_ENGINES; i++)
            if (g.eng[i] > 0 && qn_test_wait_pid(g.eng[i], 0) != -1)
                FAIL("engine e%d exited at start", i);
        usleep(20000);
    }
    FAIL("/health reports %d dispatchable engines after %.0f s, expected %d", have, timeout_s, n);
}

/* Per case: a fresh router, the client and trainer sockets, and engines e0, e1. */
static void close_sockets(void) {
    qn_zsock_close(g.client);
    qn_zsock_close(g.trainer);
    g.client = g.trainer = NULL;
}

static int case_setup(void **state) {
    (void)state;
    /* a setup that failed skipped its teardown */
    close_sockets();
    qn_test_kill_all();
    memset(g.rec, 0, sizeof g.rec);
    g.n_sent = g.n_recv = g.n_dup = g.n_err = g.n_alien = g.n_st = 0;
    g.n_tokens = 0;
    g.first_error[0] = '\0';
    memset(g.engine_log, 0, sizeof g.engine_log);
    memset(g.eng, 0, sizeof g.eng);
    start_router();
    assert_int_equal(qn_zsock_open(g.ctx, ZMQ_DEALER, g.zmq, false, "buffer", &g.client), QN_OK);
    assert_int_equal(qn_zsock_open(g.ctx, ZMQ_DEALER, g.zmq, false, "trainer", &g.trainer), QN_OK);
    start_engine(0);
    start_engine(1);
    wait_engines(2, 30.0);
    return 0;
}

static int case_teardown(void **state) {
    (void)state;
    if (getenv("QN_TEST_VERBOSE")) dump_logs();
    close_sockets();
    qn_test_kill_all();
    g.router = 0;
    memset(g.eng, 0, sizeof g.eng);
    return 0;
}

/* ------------------------------------------------------------------ the client */

static uint64_t group_of(int idx) {
    return 1000 + (uint64_t)(idx / N_PER);
}

/* Sends sample idx (group idx / 8, sample idx % 8) as one GenerateRequest, request id idx + 1. */
/* The prompt of sample idx's group into p[16]; returns its length. */
static int32_t prompt_of(int idx, int32_t *p) {
    int32_t np = 6 + (idx / N_PER) % 5;
    for (int32_t i = 0; i < np; i++)
        p[i] = (int32_t)(qn_rng_u32(group_of(idx), 5, (uint64_t)i) % 97u);
    return np;
}

static void send_sample(int idx, int32_t max_new, bool late) {
    assert_true(idx < MAX_SAMPLES && max_new <= MAX_NEW_CAP);
    int32_t prompt[16];
    int32_t np = prompt_of(idx, prompt);
    Quench__SamplingParams sp = QUENCH__SAMPLING_PARAMS__INIT;
    sp.temperature = 1.0f;
    sp.top_p = 1.0f;
    sp.max_new_tokens = max_new;
    sp.seed = (uint64_t)idx;
    sp.has_seed = 1;
    sp.n = 1;
    Quench__GenerateRequest r = QUENCH__GENERATE_REQUEST__INIT;
    r.group_id = group_of(idx);
    r.sample_index = (uint32_t)(idx % N_PER);
    r.n_input_ids = (size_t)np;
    r.input_ids = prompt;
    r.params = &sp;
    r.return_logprob = 1;
    Quench__Envelope env = qn_envelope_generate_request(&r);
    assert_int_equal(qn_zsend(g.client, NULL, 0, &env, (uint64_t)idx + 1, "buffer"), QN_OK);
    g.rec[idx].sent = true;
    g.rec[idx].late = late;
    g.rec[idx].max_new = max_new;
    g.n_sent++;
}

static void on_result(uint64_t rid, const Quench__GenerateResult *r) {
    int idx = (int)rid - 1;
    if (rid == 0 || idx >= MAX_SAMPLES || !g.rec[idx].sent || r->group_id != group_of(idx) ||
        r->sample_index != (uint32_t)(idx % N_PER)) {
        g.n_alien++;
        return;
    }
    sample_rec *s = &g.rec[idx];
    g.n_recv++;
    if (s->got++) {
        g.n_dup++;
        return;
    }
    s->t_recv = now_s() - g.t0;
    snprintf(s->engine, sizeof s->engine, "%s", r->engine_id ? r->engine_id : "");
    if (r->error && r->error[0]) {
        s->error = true;
        if (g.n_err++ == 0)
            snprintf(g.first_error, sizeof g.first_error, "group %llu sample %u: %s",
                     (unsigned long long)r->group_id, r->sample_index, r->error);
    }
    s->n_tok = (int)r->n_output_ids;
    for (int t = 0; t < s->n_tok && t < MAX_NEW_CAP; t++)
        s->ids[t] = r->output_ids[t];
    g.n_tokens += s->n_tok;
    s->n_ver = (int)r->n_weight_versions;
    s->ver_sorted = true;
    s->vmin = UINT64_MAX;
    s->vmax = 0;
    for (size_t t = 0; t < r->n_weight_versions; t++) {
        uint64_t v = r->weight_versions[t];
        if (t && v < r->weight_versions[t - 1]) s->ver_sorted = false;
        if (v < s->vmin) s->vmin = v;
        if (v > s->vmax) s->vmax = v;
        if (t < MAX_NEW_CAP) s->ver[t] = v;
    }
}

static void on_status(const Quench__WeightUpdateStatus *st) {
    if (g.n_st == (int)(sizeof g.st / sizeof g.st[0])) FAIL("too many WeightUpdateStatus");
    g.st[g.n_st++] = (wstatus){.version = st->version,
                               .phase = st->phase,
                               .ok = st->ok,
                               .n_engines = st->n_engine_ids,
                               .n_failed = st->n_failed_engine_ids};
    fprintf(stderr,
            "  trainer: WeightUpdateStatus version %llu %s ok=%d (%zu engines, %zu failed)%s%s\n",
            (unsigned long long)st->version,
            st->phase == QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_READY ? "READY"
                                                                                : "APPLIED",
            st->ok, st->n_engine_ids, st->n_failed_engine_ids, st->ok ? "" : ": ",
            st->ok ? "" : st->error);
}

/* Receives what the client and trainer sockets have for up to timeout_ms (returns after the
 * first batch of messages). Anything but results (client) and statuses (trainer) fails. */
static void pump(int timeout_ms) {
    zmq_pollitem_t items[2] = {{g.client, 0, ZMQ_POLLIN, 0}, {g.trainer, 0, ZMQ_POLLIN, 0}};
    if (zmq_poll(items, 2, timeout_ms) <= 0) return;
    for (int k = 0; k < 2; k++) {
        if (!(items[k].revents & ZMQ_POLLIN)) continue;
        for (int i = 0; i < 256; i++) {
            qn_zmsg m;
            qn_status st = qn_zrecv(k ? g.trainer : g.client, false, 0, &m);
            if (st == QN_ERR_TIMEOUT) break;
            if (st != QN_OK) FAIL("bad message from the router: %s", qn_last_error());
            if (k == 0 && m.env->body_case == QUENCH__ENVELOPE__BODY_GENERATE_RESULT)
                on_result(m.env->request_id, m.env->generate_result);
            else if (k == 1 && m.env->body_case == QUENCH__ENVELOPE__BODY_WEIGHT_UPDATE_STATUS)
                on_status(m.env->weight_update_status);
            else
                FAIL("%s got an unexpected %s", k ? "trainer" : "client",
                     qn_envelope_body_name(m.env->body_case));
            qn_zmsg_clear(&m);
        }
    }
}

/* Distinct samples received (first answers). */
static int n_first(void) {
    return g.n_recv - g.n_dup;
}

/* Pumps until every sent sample has an answer, or timeout_s; fails naming what is missing. */
static void wait_all(double timeout_s) {
    double end = now_s() + timeout_s;
    while (n_first() < g.n_sent && now_s() < end)
        pump(100);
    if (n_first() < g.n_sent) {
        int shown = 0;
        char miss[256] = "";
        size_t len = 0;
        for (int i = 0; i < MAX_SAMPLES && shown < 8; i++) {
            if (g.rec[i].sent && !g.rec[i].got) {
                len += (size_t)snprintf(miss + len, sizeof miss - len, " g%llu/s%d",
                                        (unsigned long long)group_of(i), i % N_PER);
                shown++;
            }
        }
        FAIL("rollout incomplete after %.0f s: %d of %d samples arrived (missing:%s ...)",
             timeout_s, n_first(), g.n_sent, miss);
    }
    /* late duplicates would arrive shortly after */
    double quiet = now_s() + 0.3;
    while (now_s() < quiet)
        pump(50);
}

/* Exactly once, no errors, no foreign results, and per-token versions on every token. */
static void check_exactly_once(void) {
    if (g.n_alien) FAIL("%d results for requests never sent", g.n_alien);
    if (g.n_dup) FAIL("%d samples arrived more than once", g.n_dup);
    if (g.n_err) FAIL("%d samples failed; first: %s", g.n_err, g.first_error);
    for (int i = 0; i < MAX_SAMPLES; i++) {
        const sample_rec *s = &g.rec[i];
        if (!s->sent) continue;
        if (s->got != 1) FAIL("sample %d arrived %d times", i, s->got);
        /* the tiny config has no EOS: every sample runs to its max_new_tokens */
        if (s->n_tok != s->max_new)
            FAIL("sample %d: %d tokens, expected %d", i, s->n_tok, s->max_new);
        if (s->n_ver != s->n_tok)
            FAIL("sample %d: %d weight versions for %d tokens", i, s->n_ver, s->n_tok);
        if (!s->ver_sorted) FAIL("sample %d: weight versions decrease", i);
    }
}

static int results_of(const char *engine) {
    int n = 0;
    for (int i = 0; i < MAX_SAMPLES; i++)
        n += g.rec[i].got && strcmp(g.rec[i].engine, engine) == 0;
    return n;
}

static void report(const char *what, double wall) {
    fprintf(stderr,
            "  %s: %d samples, %ld tokens in %.2f s wall: %.0f tokens/s, %.0f samples/s "
            "(e0 %d, e1 %d, e2 %d)\n",
            what, n_first(), g.n_tokens, wall, (double)g.n_tokens / wall, (double)n_first() / wall,
            results_of("e0"), results_of("e1"), results_of("e2"));
}

/* Runs the received samples served by `engine` (NULL: all) again on an in-process engine
 * on model m with the same requests (seeded, so sampling is reproducible and independent of
 * the batch) and compares each sample's leading tokens of weight version `version` (all its
 * tokens when version is ALL); samples without such tokens are skipped. Returns how many
 * agree; *n_checked how many were compared. */
#define ALL UINT64_MAX
static int same_as_model(const qn_model *m, const char *engine, uint64_t version, int *n_checked) {
    qn_engine_params ep = qn_engine_params_default();
    ep.max_running = 64;
    ep.kv_cache_tokens = 8192;
    ep.block_size = 8;
    ep.context_len = 256;
    qn_engine *e = NULL;
    assert_int_equal(qn_engine_create(&e, m, NULL, &ep), QN_OK);
    *n_checked = 0;
    int same = 0;
    for (int i = 0; i < MAX_SAMPLES; i++) {
        const sample_rec *s = &g.rec[i];
        if (!s->got || s->error || (engine && strcmp(s->engine, engine) != 0)) continue;
        if (version != ALL && (s->n_ver == 0 || s->ver[0] != version)) continue;
        int32_t prompt[16];
        qn_engine_request r = {
            .prompt = prompt, .n = 1, .has_seed = 1, .user = (void *)(intptr_t)i};
        r.n_prompt = prompt_of(i, prompt);
        r.params = qn_sampling_params_default();
        r.params.temperature = 1.0f;
        r.params.top_p = 1.0f;
        r.params.top_k = -1;
        r.params.max_new_tokens = s->max_new;
        r.params.seed = (uint64_t)i;
        uint64_t id;
        assert_int_equal(qn_engine_submit(e, &r, &id), QN_OK);
        (*n_checked)++;
    }
    int guard = 0;
    while (qn_engine_busy(e) && guard++ < 100000) {
        assert_int_equal(qn_engine_step(e, NULL), QN_OK);
        qn_engine_output o;
        while (qn_engine_next_finished(e, &o)) {
            const sample_rec *s = &g.rec[(intptr_t)o.user];
            int k = 0;
            while (k < s->n_tok && (version == ALL || s->ver[k] == version))
                k++;
            same += o.samples[0].n_out == s->n_tok &&
                    memcmp(o.samples[0].ids, s->ids, (size_t)k * sizeof(int32_t)) == 0;
        }
    }
    qn_engine_free(e);
    return same;
}

/* ------------------------------------------------------------------ the trainer */

/* Announces mf through the router and waits for READY then APPLIED (returned in g.st). */
static void announce(const Quench__WeightManifest *mf) {
    Quench__WeightUpdateBegin b = QUENCH__WEIGHT_UPDATE_BEGIN__INIT;
    b.manifest = (Quench__WeightManifest *)mf;
    Quench__Envelope env = qn_envelope_weight_update_begin(&b);
    assert_int_equal(qn_zsend(g.trainer, NULL, 0, &env, 7000 + mf->version, "train:0"), QN_OK);
}

static void wait_status(int n, double timeout_s) {
    double end = now_s() + timeout_s;
    while (g.n_st < n && now_s() < end)
        pump(100);
    if (g.n_st < n)
        FAIL("the trainer got %d WeightUpdateStatus in %.0f s, expected %d", g.n_st, timeout_s, n);
}

/* The statuses from index `from` are READY then APPLIED of `version`, ok, for n_engines. */
static void check_update_ok(int from, uint64_t version, size_t n_engines) {
    for (int k = 0; k < 2; k++) {
        const wstatus *s = &g.st[from + k];
        int want = k ? QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_APPLIED
                     : QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_READY;
        if (s->phase != want || s->version != version || !s->ok || s->n_engines != n_engines ||
            s->n_failed != 0)
            FAIL("status %d: version %llu phase %d ok %d engines %zu failed %zu; expected "
                 "version %llu phase %d ok with %zu engines",
                 from + k, (unsigned long long)s->version, s->phase, s->ok, s->n_engines,
                 s->n_failed, (unsigned long long)version, want, n_engines);
    }
}

/* ------------------------------------------------------------------ group setup */

static int group_setup(void **state) {
    (void)state;
    memset(&g, 0, sizeof g);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    snprintf(g.cfg_path, sizeof g.cfg_path, "%s/tests/ref/configs/tiny_glm45.json", QN_SOURCE_DIR);
    qn_model_desc d;
    if (qn_model_desc_load(g.cfg_path, &d) != QN_OK) return -1;
    if (qn_model_init(&g.m0, &d) != QN_OK || qn_model_init(&g.m1, &d) != QN_OK) return -1;
    if (qn_model_init_random(&g.m0, 3, 0.2f, 0.1f) != QN_OK) return -1;
    if (qn_model_read_config_json(&g.m0, g.cfg_path) != QN_OK) return -1;
    snprintf(g.model_dir, sizeof g.model_dir, "%s", qn_test_path("model"));
    if (qn_model_save_dir(&g.m0, g.model_dir, "fp32") != QN_OK) return -1;
    /* version 1: version 0 scaled and shifted, so that outputs change */
    for (size_t i = 0; i < g.m1.n_floats; i++) {
        double u = (double)qn_rng_u32(77, 1, i) / 4294967296.0 - 0.5;
        g.m1.w[i] = g.m0.w[i] * 1.2f + (float)(0.1 * u);
    }
    g.ctx = zmq_ctx_new();
    if (!g.ctx) return -1;
    if (qn_weight_server_start(g.ctx, "tcp://127.0.0.1:*", NULL, 65536, &g.ws) != QN_OK) return -1;
    qn_weight_tensor *t = calloc(g.m1.n_params, sizeof *t);
    if (!t) return -1;
    for (size_t i = 0; i < g.m1.n_params; i++) {
        const qn_param_info *pi = &g.m1.params[i];
        t[i].name = pi->name;
        t[i].dtype = QN_DTYPE_F32;
        t[i].ndim = pi->ndim;
        for (int k = 0; k < pi->ndim; k++)
            t[i].shape[k] = pi->shape[k];
        t[i].data = g.m1.w + pi->offset;
    }
    qn_status st = qn_weight_server_publish(g.ws, 1, t, g.m1.n_params, &g.mf1);
    free(t);
    return st == QN_OK ? 0 : -1;
}

static int group_teardown(void **state) {
    (void)state;
    close_sockets();
    qn_test_kill_all();
    qn_weight_server_stop(g.ws);
    qn_weight_manifest_free(g.mf1);
    if (g.ctx) zmq_ctx_term(g.ctx);
    qn_model_free(&g.m0);
    qn_model_free(&g.m1);
    curl_global_cleanup();
    return 0;
}

/* ------------------------------------------------------------------ cases */

#define ROLLOUT_GROUPS 64
#define ROLLOUT_SAMPLES (ROLLOUT_GROUPS * N_PER)
#define ROLLOUT_MAX_NEW 8 /* 8..16 */

/* max_new_tokens of sample i: lengths vary so that results trickle in rather than in
 * lockstep waves, as with real EOS */
static int32_t max_new_of(int i, int32_t lo, int32_t span) {
    return lo + (int32_t)(qn_rng_u32(9, 2, (uint64_t)i) % (uint32_t)span);
}

static void send_rollout(int n_samples, int32_t lo, int32_t span) {
    for (int i = 0; i < n_samples; i++)
        send_sample(i, max_new_of(i, lo, span), false);
}

static void test_rollout(void **state) {
    (void)state;
    g.t0 = now_s();
    send_rollout(ROLLOUT_SAMPLES, ROLLOUT_MAX_NEW, 9);
    wait_all(30.0);
    double wall = now_s() - g.t0;
    report("rollout 64x8, 2 engines", wall);
    check_exactly_once();
    int n0 = results_of("e0"), n1 = results_of("e1");
    if (n0 + n1 != ROLLOUT_SAMPLES || n0 == 0 || n1 == 0)
        FAIL("engines served e0 %d, e1 %d of %d samples", n0, n1, ROLLOUT_SAMPLES);
    for (int i = 0; i < ROLLOUT_SAMPLES; i++)
        if (g.rec[i].vmin != 0 || g.rec[i].vmax != 0) FAIL("sample %d: version is not 0", i);
    /* what came back is what the model generates for these requests */
    int checked, same = same_as_model(&g.m0, NULL, ALL, &checked);
    fprintf(stderr, "  %d of %d samples equal an in-process engine's on the checkpoint\n", same,
            checked);
    if (checked != ROLLOUT_SAMPLES || same != checked) FAIL("the engines' tokens differ");
}

static void test_engine_killed(void **state) {
    (void)state;
    g.t0 = now_s();
    send_rollout(ROLLOUT_SAMPLES, ROLLOUT_MAX_NEW, 9);
    double end = now_s() + 60.0;
    while (n_first() < ROLLOUT_SAMPLES / 3 && now_s() < end)
        pump(20);
    if (n_first() < ROLLOUT_SAMPLES / 3) FAIL("only %d results in 60 s", n_first());
    /* e1 dies now: whatever it had in flight is lost with it */
    int at_kill = n_first(), e1_at_kill = results_of("e1");
    qn_test_kill(g.eng[1]);
    g.eng[1] = 0;
    double t_kill = now_s() - g.t0;
    fprintf(stderr, "  killed e1 (SIGKILL) after %d results (%d from e1) at %.2f s\n", at_kill,
            e1_at_kill, t_kill);
    wait_all(30.0);
    double wall = now_s() - g.t0;
    report("rollout 64x8, e1 killed at 1/3", wall);
    check_exactly_once();
    double resent = router_metric("quench_router_requests_redispatched_total");
    double dropped = router_metric("quench_router_engines_dropped_total");
    fprintf(stderr, "  router: %.0f requests re-sent, %.0f engines dropped\n", resent, dropped);
    if (dropped != 1.0) FAIL("the router dropped %.0f engines, expected 1", dropped);
    if (resent < 1.0) FAIL("the router re-sent nothing, but e1 had work in flight");
    /* results e1 had sent just before the kill may still have been on their way; the
     * re-sent requests went out after the router dropped e1, so each was answered after
     * the kill, by the survivor */
    int e0_after = 0, e1_after = 0, e1_late = 0;
    for (int i = 0; i < ROLLOUT_SAMPLES; i++) {
        const sample_rec *s = &g.rec[i];
        if (s->t_recv <= t_kill) continue;
        if (strcmp(s->engine, "e0") == 0) e0_after++;
        if (strcmp(s->engine, "e1") == 0) e1_after++;
        if (strcmp(s->engine, "e1") == 0 && s->t_recv > t_kill + 1.0) e1_late++;
    }
    fprintf(stderr, "  after the kill: e0 served %d samples, e1 %d (sent before it died)\n",
            e0_after, e1_after);
    if (e1_late) FAIL("%d results from the killed engine arrived more than 1 s after", e1_late);
    if (e0_after < (int)resent)
        FAIL("e0 served %d after the kill, fewer than the %.0f re-sent", e0_after, resent);
    if (results_of("e0") + results_of("e1") != ROLLOUT_SAMPLES) FAIL("results from other engines");
}

static void test_engine_joins(void **state) {
    (void)state;
    /* the job moves to version 1 first */
    uint64_t chunks0 = qn_weight_server_chunks_served(g.ws);
    announce(g.mf1);
    wait_status(2, 30.0);
    check_update_ok(0, 1, 2);
    wait_engines(2, 10.0);
    uint64_t chunks1 = qn_weight_server_chunks_served(g.ws);
    if (chunks1 <= chunks0) FAIL("no weight chunks were served for the update");
    /* a rollout that keeps ~256 samples in flight (as a buffer does) */
    g.t0 = now_s();
    int next = 0;
    for (; next < 256; next++)
        send_sample(next, max_new_of(next, ROLLOUT_MAX_NEW, 9), false);
    double end = now_s() + 30.0;
    while (n_first() < 64 && now_s() < end)
        pump(20);
    start_engine(2);
    double t_start = now_s() - g.t0;
    fprintf(stderr, "  started e2 after %d results at %.2f s\n", n_first(), t_start);
    /* new samples keep coming until e2 has served some and the rollout has its 512 */
    while (now_s() < end && (results_of("e2") < 16 || next < ROLLOUT_SAMPLES)) {
        for (; next < MAX_SAMPLES && next - n_first() < 256; next++)
            send_sample(next, max_new_of(next, ROLLOUT_MAX_NEW, 9), false);
        pump(20);
        if (qn_test_wait_pid(g.eng[2], 0) != -1) FAIL("e2 exited");
    }
    wait_all(30.0);
    double wall = now_s() - g.t0;
    report("rollout with e2 joining", wall);
    check_exactly_once();
    int n2 = results_of("e2");
    if (n2 == 0) FAIL("e2 served nothing of %d samples", g.n_sent);
    uint64_t chunks2 = qn_weight_server_chunks_served(g.ws);
    fprintf(stderr, "  e2 served %d samples; its pull took %llu chunks\n", n2,
            (unsigned long long)(chunks2 - chunks1));
    /* e2 generates with version 1's weights, and the comparison can tell them apart */
    int checked, same1 = same_as_model(&g.m1, "e2", ALL, &checked);
    int same0 = same_as_model(&g.m0, "e2", ALL, &checked);
    fprintf(stderr, "  e2's samples: %d of %d equal version 1's, %d version 0's\n", same1, checked,
            same0);
    if (same1 != checked || same0 == checked) FAIL("e2 does not generate with version 1's weights");
    if (chunks2 <= chunks1) FAIL("e2 served work without pulling version 1");
    for (int i = 0; i < MAX_SAMPLES; i++)
        if (g.rec[i].sent && (g.rec[i].vmin != 1 || g.rec[i].vmax != 1))
            FAIL("sample %d (from %s): versions %llu..%llu, expected all 1", i, g.rec[i].engine,
                 (unsigned long long)g.rec[i].vmin, (unsigned long long)g.rec[i].vmax);
    wait_engines(3, 5.0);
}

#define LOAD_SAMPLES 136 /* 17 groups: ~130 in flight at the announcement */
#define LOAD_MAX_NEW 4   /* 4..31 */
#define LATE_SAMPLES 32

static void test_update_under_load(void **state) {
    (void)state;
    g.t0 = now_s();
    send_rollout(LOAD_SAMPLES, LOAD_MAX_NEW, 28);
    double end = now_s() + 60.0;
    /* the first dozen answers: the engines are generating the rest by now */
    while (n_first() < 12 && now_s() < end)
        pump(5);
    int in_flight = g.n_sent - n_first();
    announce(g.mf1);
    double t_announce = now_s() - g.t0;
    fprintf(stderr, "  announced version 1 with %d requests in flight at %.2f s\n", in_flight,
            t_announce);
    /* most of the rollout is still running (on a loaded machine answers come in bunches, so
     * fewer than the ~130 of a quiet one) */
    if (in_flight < 40) FAIL("only %d requests in flight at the announcement", in_flight);
    wait_status(2, 30.0);
    check_update_ok(0, 1, 2);
    double t_applied = now_s() - g.t0;
    int before_applied = n_first();
    /* samples started after APPLIED */
    for (int i = LOAD_SAMPLES; i < LOAD_SAMPLES + LATE_SAMPLES; i++)
        send_sample(i, max_new_of(i, LOAD_MAX_NEW, 28), true);
    wait_all(30.0);
    double wall = now_s() - g.t0;
    fprintf(stderr, "  APPLIED reached the trainer at %.2f s (%d results before it)\n", t_applied,
            before_applied);
    report("weight update under load", wall);
    check_exactly_once();
    int n_v0 = 0, n_v1 = 0, n_mixed = 0;
    for (int i = 0; i < LOAD_SAMPLES + LATE_SAMPLES; i++) {
        const sample_rec *s = &g.rec[i];
        if (s->vmax > 1) FAIL("sample %d has version %llu", i, (unsigned long long)s->vmax);
        if (s->late && s->vmin != 1) FAIL("sample %d, sent after APPLIED, has version 0", i);
        n_v0 += s->vmin == 0;
        n_v1 += s->vmax == 1;
        n_mixed += s->vmin == 0 && s->vmax == 1;
    }
    fprintf(stderr, "  samples with version-0 tokens %d, version-1 tokens %d, both %d\n", n_v0,
            n_v1, n_mixed);
    if (n_v0 == 0 || n_v1 == 0) FAIL("expected tokens of both versions");
    if (n_mixed == 0) FAIL("no sample in flight across the update continued on version 1");
    /* the tokens marked version 0 are version 0's (per sample, the leading ones), the
     * samples made only by version 1 are version 1's */
    int c0, c1, s0 = same_as_model(&g.m0, NULL, 0, &c0), s1 = same_as_model(&g.m1, NULL, 1, &c1);
    fprintf(stderr,
            "  tokens marked version 0 equal version 0's in %d of %d samples; samples "
            "all of version 1 equal version 1's in %d of %d\n",
            s0, c0, s1, c1);
    if (s0 != c0 || s1 != c1) FAIL("tokens do not carry the version that produced them");
    if (results_of("e0") == 0 || results_of("e1") == 0) FAIL("an engine served nothing");
    /* both engines serve version 1 now */
    wait_engines(2, 5.0);
    if (health_version() != 1.0) FAIL("/health does not report weight version 1");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rollout, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_engine_killed, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_engine_joins, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_update_under_load, case_setup, case_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
