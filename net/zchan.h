/* zchan.h — envelopes over ZeroMQ sockets.
 *
 * quench processes talk over ZeroMQ ROUTER sockets (services: router,
 * buffer, weight server) and DEALER sockets (their clients). One message is:
 *   DEALER side:  [payload]
 *   ROUTER side:  [peer identity][payload]
 * where payload is one encoded quench.Envelope (net/codec.h). No empty
 * delimiter frame (that is REQ/REP's convention, not used here).
 *
 * Receiving is where bad input is met: a message with the wrong number of
 * frames, a payload that is not a valid envelope, or an envelope of another
 * protocol version is consumed whole and reported as an error (naming the
 * peer when there is one), and the socket stays usable, so a service logs
 * it and goes on serving. Oversized messages never reach us: sockets made
 * by qn_zsock_open set ZMQ_MAXMSGSIZE, and ZeroMQ drops the peer that sends
 * one. */
#ifndef QN_NET_ZCHAN_H
#define QN_NET_ZCHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/codec.h"
#include "quench/status.h"

#define QN_ZMQ_MAX_IDENTITY 255

/* Creates a socket of `type` (ZMQ_ROUTER or ZMQ_DEALER) on context ctx with
 * quench's options (linger 0, max message size QN_MAX_MESSAGE_BYTES plus
 * framing, high-water marks, TCP keepalive; on routers ROUTER_MANDATORY and
 * ROUTER_HANDOVER, so a reconnecting peer keeps its identity),
 * then binds (bind=true) or connects to endpoint. identity (DEALER, may be
 * NULL) names the peer to the ROUTER it connects to. Binding to
 * "tcp://127.0.0.1:*" picks a free port: qn_zsock_endpoint tells which. */
qn_status qn_zsock_open(void *ctx, int type, const char *endpoint, bool bind,
                        const char *identity, void **out);

/* The endpoint a bound socket actually listens on ("tcp://127.0.0.1:41234"). */
qn_status qn_zsock_endpoint(void *sock, char *buf, size_t cap);

/* Closes the socket; NULL is a no-op. */
void qn_zsock_close(void *sock);

/* Encodes env (stamping request_id and sender) and sends it; on a ROUTER
 * socket identity/identity_len name the peer (QN_ERR_NET if it is not
 * connected). Does not block longer than the socket's send timeout. */
qn_status qn_zsend(void *sock, const uint8_t *identity, size_t identity_len,
                   const Quench__Envelope *env, uint64_t request_id, const char *sender);

typedef struct qn_zmsg {
    uint8_t identity[QN_ZMQ_MAX_IDENTITY + 1]; /* ROUTER side only; NUL-terminated */
    size_t identity_len;
    Quench__Envelope *env; /* owned: qn_zmsg_clear frees it */
} qn_zmsg;

/* Receives one message, waiting at most timeout_ms (-1 forever, 0 poll).
 * QN_OK with msg->env set; QN_ERR_TIMEOUT when nothing came; QN_ERR_FORMAT /
 * QN_ERR_VERSION / QN_ERR_RANGE / QN_ERR_TOO_LARGE when a message came but
 * was bad (it is consumed; msg->identity names its sender on a ROUTER);
 * QN_ERR_NET on socket errors. is_router says whether to expect an
 * identity frame. */
qn_status qn_zrecv(void *sock, bool is_router, int timeout_ms, qn_zmsg *msg);

void qn_zmsg_clear(qn_zmsg *msg);

#endif
