/* test_zchan.c — envelopes over real ZeroMQ sockets on loopback TCP: a
 * DEALER/ROUTER round trip in both directions, then bad input on the
 * ROUTER (garbage payload, extra frames, missing payload, an envelope of
 * another protocol version, a non-ZMTP client writing junk to the port, an
 * oversized frame): each is reported and consumed, and the socket keeps
 * serving the well-behaved peer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

#include "net/zchan.h"

typedef struct fx {
    void *ctx, *router, *dealer;
    char endpoint[128];
} fx;

static int setup(void **state) {
    fx *f = calloc(1, sizeof *f);
    f->ctx = zmq_ctx_new();
    assert_int_equal(qn_zsock_open(f->ctx, ZMQ_ROUTER, "tcp://127.0.0.1:*", true, NULL, &f->router), QN_OK);
    assert_int_equal(qn_zsock_endpoint(f->router, f->endpoint, sizeof f->endpoint), QN_OK);
    assert_int_equal(qn_zsock_open(f->ctx, ZMQ_DEALER, f->endpoint, false, "engine-1", &f->dealer), QN_OK);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx *f = *state;
    qn_zsock_close(f->dealer);
    qn_zsock_close(f->router);
    zmq_ctx_term(f->ctx);
    free(f);
    return 0;
}

static void send_heartbeat(void *sock, const uint8_t *id, size_t idlen, uint64_t rid, uint32_t running) {
    Quench__Heartbeat hb = QUENCH__HEARTBEAT__INIT;
    hb.engine_id = "engine-1";
    hb.running_requests = running;
    Quench__Envelope env = qn_envelope_heartbeat(&hb);
    assert_int_equal(qn_zsend(sock, id, idlen, &env, rid, "engine-1"), QN_OK);
}

/* The router receives a valid heartbeat from the dealer and answers it. */
static void expect_roundtrip(fx *f, uint64_t rid) {
    send_heartbeat(f->dealer, NULL, 0, rid, 7);
    qn_zmsg m;
    assert_int_equal(qn_zrecv(f->router, true, 5000, &m), QN_OK);
    assert_string_equal((char *)m.identity, "engine-1");
    assert_int_equal(m.env->request_id, rid);
    assert_int_equal(m.env->body_case, QUENCH__ENVELOPE__BODY_HEARTBEAT);
    assert_int_equal(m.env->heartbeat->running_requests, 7);
    assert_string_equal(m.env->sender, "engine-1");
    Quench__Drain d = QUENCH__DRAIN__INIT;
    d.engine_id = "engine-1";
    Quench__Envelope reply = qn_envelope_drain(&d);
    assert_int_equal(qn_zsend(f->router, m.identity, m.identity_len, &reply, rid + 1, "router"), QN_OK);
    qn_zmsg_clear(&m);
    qn_zmsg r;
    assert_int_equal(qn_zrecv(f->dealer, false, 5000, &r), QN_OK);
    assert_int_equal(r.env->body_case, QUENCH__ENVELOPE__BODY_DRAIN);
    assert_int_equal(r.env->request_id, rid + 1);
    qn_zmsg_clear(&r);
}

static void test_roundtrip(void **state) {
    fx *f = *state;
    expect_roundtrip(f, 100);
    qn_zmsg m;
    assert_int_equal(qn_zrecv(f->router, true, 50, &m), QN_ERR_TIMEOUT);
    /* unknown peer on a ROUTER: an error, not a silent drop */
    Quench__Drain d = QUENCH__DRAIN__INIT;
    d.engine_id = "nobody";
    Quench__Envelope env = qn_envelope_drain(&d);
    assert_int_equal(qn_zsend(f->router, (const uint8_t *)"nobody", 6, &env, 1, "router"), QN_ERR_NET);
}

static void test_bad_messages(void **state) {
    fx *f = *state;
    qn_zmsg m;
    /* garbage payload */
    zmq_send(f->dealer, "\xff\xff\xff\xff garbage", 12, 0);
    assert_int_equal(qn_zrecv(f->router, true, 5000, &m), QN_ERR_FORMAT);
    assert_non_null(strstr(qn_last_error(), "engine-1"));
    qn_zmsg_clear(&m);
    expect_roundtrip(f, 200);

    /* extra frames */
    zmq_send(f->dealer, "a", 1, ZMQ_SNDMORE);
    zmq_send(f->dealer, "b", 1, ZMQ_SNDMORE);
    zmq_send(f->dealer, "c", 1, 0);
    assert_int_equal(qn_zrecv(f->router, true, 5000, &m), QN_ERR_FORMAT);
    assert_non_null(strstr(qn_last_error(), "extra frames"));
    expect_roundtrip(f, 300);

    /* empty payload frame: not an envelope with a body */
    zmq_send(f->dealer, "", 0, 0);
    assert_true(qn_zrecv(f->router, true, 5000, &m) != QN_OK);
    expect_roundtrip(f, 400);

    /* another protocol version: field 1 (varint) = 99, then a heartbeat body */
    uint8_t other[] = {0x08, 99, 0x10, 5};
    zmq_send(f->dealer, other, sizeof other, 0);
    assert_int_equal(qn_zrecv(f->router, true, 5000, &m), QN_ERR_VERSION);
    expect_roundtrip(f, 500);
}

static void test_junk_clients(void **state) {
    fx *f = *state;
    int port = atoi(strrchr(f->endpoint, ':') + 1);
    /* a client that does not speak ZMTP */
    for (int i = 0; i < 5; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
        static const char junk[] = "GET / HTTP/1.1\r\n\r\n\x00\x01\x02\x03 not zmtp at all";
        send(fd, junk, sizeof junk, 0);
        usleep(20 * 1000);
        close(fd);
    }
    expect_roundtrip(f, 600);

    /* an oversized frame from a second dealer: ZeroMQ drops that peer and
     * nothing reaches us; the first dealer is still served */
    void *big_sender = NULL;
    assert_int_equal(qn_zsock_open(f->ctx, ZMQ_DEALER, f->endpoint, false, "bulky", &big_sender), QN_OK);
    size_t n = QN_MAX_MESSAGE_BYTES + 8192;
    char *big = calloc(1, n);
    zmq_send(big_sender, big, n, 0);
    free(big);
    qn_zmsg m;
    assert_int_equal(qn_zrecv(f->router, true, 1500, &m), QN_ERR_TIMEOUT);
    expect_roundtrip(f, 700);
    qn_zsock_close(big_sender);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_messages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_junk_clients, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
