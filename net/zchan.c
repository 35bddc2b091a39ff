/* zchan.c — see zchan.h. */
#include "net/zchan.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

static qn_status zerr(const char *what) {
    return qn_fail(QN_ERR_NET, "zmq %s: %s", what, zmq_strerror(zmq_errno()));
}

qn_status qn_zsock_open(void *ctx, int type, const char *endpoint, bool bind,
                        const char *identity, void **out) {
    *out = NULL;
    void *s = zmq_socket(ctx, type);
    if (!s) return zerr("socket");
    int linger = 0, hwm = 10000, keepalive = 1, mandatory = 1;
    /* the largest envelope plus room for protobuf framing overhead */
    int64_t maxmsg = (int64_t)QN_MAX_MESSAGE_BYTES + 4096;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt(s, ZMQ_TCP_KEEPALIVE, &keepalive, sizeof keepalive);
    if (type == ZMQ_ROUTER) {
        zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &mandatory, sizeof mandatory);
        /* A peer that reconnects under the same identity (a restarted
         * engine, a second pull) takes the name over at once, instead of
         * being ignored until the ROUTER notices the old connection died. */
        zmq_setsockopt(s, ZMQ_ROUTER_HANDOVER, &mandatory, sizeof mandatory);
    }
    if (identity && *identity) {
        size_t n = strlen(identity);
        if (n > QN_ZMQ_MAX_IDENTITY) {
            zmq_close(s);
            return qn_fail(QN_ERR_INVALID, "zmq identity '%s' is longer than %d bytes", identity,
                           QN_ZMQ_MAX_IDENTITY);
        }
        zmq_setsockopt(s, ZMQ_ROUTING_ID, identity, n);
    }
    int rc = bind ? zmq_bind(s, endpoint) : zmq_connect(s, endpoint);
    if (rc != 0) {
        qn_status st = qn_fail(QN_ERR_NET, "zmq %s %s: %s", bind ? "bind" : "connect", endpoint,
                               zmq_strerror(zmq_errno()));
        zmq_close(s);
        return st;
    }
    *out = s;
    return QN_OK;
}

qn_status qn_zsock_endpoint(void *sock, char *buf, size_t cap) {
    size_t len = cap;
    if (zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, buf, &len) != 0) return zerr("getsockopt");
    return QN_OK;
}

void qn_zsock_close(void *sock) {
    if (sock) zmq_close(sock);
}

static void free_buf(void *data, void *hint) { free(data); }

qn_status qn_zsend(void *sock, const uint8_t *identity, size_t identity_len,
                   const Quench__Envelope *env, uint64_t request_id, const char *sender) {
    uint8_t *buf = NULL;
    size_t len = 0;
    QN_CHECK(qn_envelope_encode_alloc(env, request_id, sender, &buf, &len));
    if (identity) {
        if (zmq_send(sock, identity, identity_len, ZMQ_SNDMORE) < 0) {
            free(buf);
            return zerr("send (identity)");
        }
    }
    zmq_msg_t m;
    /* zero-copy: ZeroMQ frees the buffer when it is sent */
    if (zmq_msg_init_data(&m, buf, len, free_buf, NULL) != 0) {
        free(buf);
        return zerr("msg_init");
    }
    if (zmq_msg_send(&m, sock, 0) < 0) {
        qn_status st = zerr("send");
        zmq_msg_close(&m);
        return st;
    }
    return QN_OK;
}

/* Reads and discards the rest of a multipart message. */
static void drain(void *sock) {
    int more = 1;
    size_t sz = sizeof more;
    while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, 0) < 0) {
            zmq_msg_close(&m);
            return;
        }
        zmq_msg_close(&m);
        sz = sizeof more;
    }
}

static int has_more(void *sock) {
    int more = 0;
    size_t sz = sizeof more;
    zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz);
    return more;
}

qn_status qn_zrecv(void *sock, bool is_router, int timeout_ms, qn_zmsg *msg) {
    memset(msg, 0, sizeof *msg);
    zmq_pollitem_t item = {.socket = sock, .events = ZMQ_POLLIN};
    int rc = zmq_poll(&item, 1, timeout_ms);
    if (rc < 0) return zerr("poll");
    if (rc == 0) return QN_ERR_TIMEOUT;

    zmq_msg_t part;
    zmq_msg_init(&part);
    if (zmq_msg_recv(&part, sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&part);
        if (zmq_errno() == EAGAIN) return QN_ERR_TIMEOUT;
        return zerr("recv");
    }
    if (is_router) {
        size_t n = zmq_msg_size(&part);
        if (n > QN_ZMQ_MAX_IDENTITY) n = QN_ZMQ_MAX_IDENTITY;
        memcpy(msg->identity, zmq_msg_data(&part), n);
        msg->identity[n] = '\0';
        msg->identity_len = n;
        zmq_msg_close(&part);
        if (!has_more(sock)) return qn_fail(QN_ERR_FORMAT, "zmq message from '%s' has no payload frame", msg->identity);
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sock, 0) < 0) {
            zmq_msg_close(&part);
            return zerr("recv");
        }
    }
    if (has_more(sock)) {
        zmq_msg_close(&part);
        drain(sock);
        return qn_fail(QN_ERR_FORMAT, "zmq message%s%s has extra frames (expected one payload frame)",
                       is_router ? " from " : "", is_router ? (const char *)msg->identity : "");
    }
    qn_status st = qn_envelope_decode(zmq_msg_data(&part), zmq_msg_size(&part), 0, &msg->env);
    zmq_msg_close(&part);
    if (st != QN_OK && is_router) {
        /* prefix the peer to the codec's message */
        char why[900];
        snprintf(why, sizeof why, "%s", qn_last_error());
        qn_fail(st, "message from '%s': %s", msg->identity, why);
    }
    return st;
}

void qn_zmsg_clear(qn_zmsg *msg) {
    if (!msg) return;
    qn_envelope_free(msg->env);
    msg->env = NULL;
}
