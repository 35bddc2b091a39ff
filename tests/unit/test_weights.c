/* test_weights.c — weight versions from a server to a client over real
 * ZeroMQ sockets: a pull of several tensors whose sizes do not divide the
 * chunk size, bit-exact; two versions kept, the third evicting the first
 * (refused with a clear error); a server that corrupts a chunk (detected by
 * its checksum and re-fetched); a server that never answers (timeout naming
 * the chunk); and manifest copy/find. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "net/weights.h"
#include "net/zchan.h"

typedef struct fake_weights {
    float a[1000];  /* 4000 bytes */
    uint16_t b[333]; /* bf16, 666 bytes */
    int64_t c[7];    /* 56 bytes */
} fake_weights;

static void fill(fake_weights *w, int seed) {
    for (int i = 0; i < 1000; i++) w->a[i] = (float)(seed * 1000 + i) * 0.25f;
    for (int i = 0; i < 333; i++) w->b[i] = (uint16_t)(seed * 7 + i);
    for (int i = 0; i < 7; i++) w->c[i] = seed * 100 + i;
}

static void describe(fake_weights *w, qn_weight_tensor t[3]) {
    t[0] = (qn_weight_tensor){.name = "model.layers.0.mlp.up_proj.weight", .dtype = QN_DTYPE_F32,
                              .ndim = 2, .shape = {25, 40}, .data = w->a};
    t[1] = (qn_weight_tensor){.name = "model.norm.weight", .dtype = QN_DTYPE_BF16, .ndim = 1,
                              .shape = {333}, .data = w->b};
    t[2] = (qn_weight_tensor){.name = "ids", .dtype = QN_DTYPE_I64, .ndim = 1, .shape = {7}, .data = w->c};
}

static void check_pulled(const Quench__WeightManifest *m, const uint8_t *buf, const fake_weights *w) {
    const Quench__TensorInfo *a = qn_weight_manifest_find(m, "model.layers.0.mlp.up_proj.weight");
    const Quench__TensorInfo *b = qn_weight_manifest_find(m, "model.norm.weight");
    const Quench__TensorInfo *c = qn_weight_manifest_find(m, "ids");
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_null(qn_weight_manifest_find(m, "nope"));
    assert_int_equal(a->nbytes, sizeof w->a);
    assert_int_equal(b->nbytes, sizeof w->b);
    assert_int_equal(a->n_shape, 2);
    assert_int_equal(a->shape[1], 40);
    assert_int_equal(b->dtype, QUENCH__DTYPE__DTYPE_BF16);
    assert_memory_equal(buf + a->offset, w->a, sizeof w->a);
    assert_memory_equal(buf + b->offset, w->b, sizeof w->b);
    assert_memory_equal(buf + c->offset, w->c, sizeof w->c);
}

static void test_publish_pull_versions(void **state) {
    void *ctx = zmq_ctx_new();
    qn_weight_server *srv = NULL;
    assert_int_equal(qn_weight_server_start(ctx, "tcp://127.0.0.1:*", NULL, 1000, &srv), QN_OK);
    fake_weights w1, w2, w3;
    fill(&w1, 1);
    fill(&w2, 2);
    fill(&w3, 3);
    qn_weight_tensor t[3];
    Quench__WeightManifest *m1 = NULL, *m2 = NULL, *m3 = NULL;
    describe(&w1, t);
    assert_int_equal(qn_weight_server_publish(srv, 1, t, 3, &m1), QN_OK);
    /* the snapshot is stable: changing the live weights does not change v1 */
    fake_weights keep = w1;
    w1.a[0] = -1;
    assert_int_equal(m1->total_bytes, sizeof w1.a + sizeof w1.b + sizeof w1.c);
    uint8_t *buf = malloc(m1->total_bytes);
    /* long enough that a loaded machine does not ask for a chunk twice: the count below is
     * exact */
    qn_weight_pull_opts o = {.window = 2, .chunk_timeout_ms = 15000, .identity = "engine-a"};
    assert_int_equal(qn_weight_pull(ctx, m1, buf, &o), QN_OK);
    check_pulled(m1, buf, &keep);
    uint64_t served = qn_weight_server_chunks_served(srv);
    assert_int_equal(served, (m1->total_bytes + 999) / 1000);

    describe(&w2, t);
    assert_int_equal(qn_weight_server_publish(srv, 2, t, 3, &m2), QN_OK);
    /* not newer: refused */
    Quench__WeightManifest *mx = NULL;
    assert_int_equal(qn_weight_server_publish(srv, 2, t, 3, &mx), QN_ERR_RANGE);
    /* v1 is still there while v2 is the newest */
    memset(buf, 0, m1->total_bytes);
    qn_status pst = qn_weight_pull(ctx, m1, buf, &o);
    if (pst != QN_OK) fail_msg("pull: %s", qn_last_error());
    check_pulled(m1, buf, &keep);
    /* a manifest copy (as an engine keeps one) pulls the same bytes */
    Quench__WeightManifest *copy = NULL;
    assert_int_equal(qn_weight_manifest_copy(m2, &copy), QN_OK);
    assert_int_equal(qn_weight_pull(ctx, copy, buf, &o), QN_OK);
    check_pulled(copy, buf, &w2);
    qn_weight_manifest_free(copy);

    describe(&w3, t);
    assert_int_equal(qn_weight_server_publish(srv, 3, t, 3, &m3), QN_OK);
    assert_int_equal(qn_weight_pull(ctx, m1, buf, &o), QN_ERR_NOT_FOUND);
    assert_non_null(strstr(qn_last_error(), "version 1 is gone"));
    assert_int_equal(qn_weight_pull(ctx, m3, buf, &o), QN_OK);
    check_pulled(m3, buf, &w3);

    /* a manifest whose checksum does not match what the server sends */
    m3->tensors[1]->checksum ^= 1;
    assert_int_equal(qn_weight_pull(ctx, m3, buf, &o), QN_ERR_FORMAT);
    assert_non_null(strstr(qn_last_error(), "model.norm.weight"));

    free(buf);
    qn_weight_manifest_free(m1);
    qn_weight_manifest_free(m2);
    qn_weight_manifest_free(m3);
    qn_weight_server_stop(srv);
    zmq_ctx_term(ctx);
}

/* A hand-written server that answers chunk requests from `data`, corrupting
 * the first answer for offset 0 (bytes changed after the checksum). */
typedef struct evil {
    void *sock;
    const uint8_t *data;
    uint64_t size;
    atomic_int stop;
    int corrupted;
    int silent; /* never answer */
} evil;

static void *evil_main(void *arg) {
    evil *e = arg;
    while (!atomic_load(&e->stop)) {
        qn_zmsg m;
        if (qn_zrecv(e->sock, true, 50, &m) != QN_OK) continue;
        if (e->silent) {
            qn_zmsg_clear(&m);
            continue;
        }
        const Quench__WeightChunkRequest *r = m.env->weight_chunk_request;
        Quench__WeightChunk ch = QUENCH__WEIGHT_CHUNK__INIT;
        ch.version = r->version;
        ch.offset = r->offset;
        uint8_t tmp[4096];
        memcpy(tmp, e->data + r->offset, r->length);
        ch.checksum = qn_checksum64(tmp, r->length);
        if (r->offset == 0 && !e->corrupted) {
            tmp[3] ^= 0x40; /* flipped in transit */
            e->corrupted = 1;
        }
        ch.data.data = tmp;
        ch.data.len = r->length;
        Quench__Envelope env = qn_envelope_weight_chunk(&ch);
        env.protocol_version = QN_PROTOCOL_VERSION;
        env.request_id = m.env->request_id;
        /* pack by hand: qn_zsend would refuse the bad checksum */
        size_t n = quench__envelope__get_packed_size(&env);
        uint8_t *out = malloc(n);
        quench__envelope__pack(&env, out);
        zmq_send(e->sock, m.identity, m.identity_len, ZMQ_SNDMORE);
        zmq_send(e->sock, out, n, 0);
        free(out);
        qn_zmsg_clear(&m);
    }
    return NULL;
}

static void test_corruption_and_silence(void **state) {
    void *ctx = zmq_ctx_new();
    fake_weights w;
    fill(&w, 5);
    /* the real server only to build a manifest with correct checksums */
    qn_weight_server *srv = NULL;
    assert_int_equal(qn_weight_server_start(ctx, "tcp://127.0.0.1:*", NULL, 1000, &srv), QN_OK);
    qn_weight_tensor t[3];
    describe(&w, t);
    Quench__WeightManifest *m = NULL;
    assert_int_equal(qn_weight_server_publish(srv, 9, t, 3, &m), QN_OK);
    uint8_t *blob = malloc(m->total_bytes);
    for (size_t i = 0; i < m->n_tensors; i++) memcpy(blob + m->tensors[i]->offset, t[i].data, m->tensors[i]->nbytes);
    qn_weight_server_stop(srv);

    evil e = {.data = blob, .size = m->total_bytes};
    assert_int_equal(qn_zsock_open(ctx, ZMQ_ROUTER, "tcp://127.0.0.1:*", true, NULL, &e.sock), QN_OK);
    char ep[128];
    qn_zsock_endpoint(e.sock, ep, sizeof ep);
    free(m->server_endpoint);
    m->server_endpoint = strdup(ep);
    pthread_t th;
    pthread_create(&th, NULL, evil_main, &e);

    uint8_t *buf = malloc(m->total_bytes);
    qn_weight_pull_opts o = {.window = 3, .chunk_timeout_ms = 300, .max_retries = 3};
    assert_int_equal(qn_weight_pull(ctx, m, buf, &o), QN_OK);
    assert_int_equal(e.corrupted, 1); /* the bad chunk was sent, and refused */
    assert_memory_equal(buf, blob, m->total_bytes);

    e.silent = 1;
    assert_int_equal(qn_weight_pull(ctx, m, buf, &o), QN_ERR_TIMEOUT);
    assert_non_null(strstr(qn_last_error(), "no good answer"));

    atomic_store(&e.stop, 1);
    pthread_join(th, NULL);
    qn_zsock_close(e.sock);
    free(buf);
    free(blob);
    qn_weight_manifest_free(m);
    zmq_ctx_term(ctx);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_publish_pull_versions),
        cmocka_unit_test(test_corruption_and_silence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
