/* http_server.h — a small HTTP/1.1 server on a libuv loop.
 *
 * One loop thread owns the server and all its connections (libuv's rule);
 * handlers run on that thread. A handler gets the parsed request and a
 * connection handle, and answers now or later (from the loop thread) with
 * qn_http_respond, or streams a chunked response (server-sent events) with
 * qn_http_stream_begin / _write / _end. Pipelined requests on a keep-alive
 * connection are answered in order: the next one is parsed only when the
 * previous response is complete.
 *
 * The server stays up under bad clients: request size limits (413/431), a
 * deadline for receiving each request (408, then close: slow clients), an
 * idle timeout on keep-alive connections, a cap on open connections (503
 * and close), and malformed requests answered 4xx/5xx and closed.
 *
 * Lifetime: a connection is freed only after libuv's close callback AND
 * after the handler has finished answering; a handler that answers later
 * must check qn_http_conn_is_open() — answering a connection the client has
 * dropped is allowed and does nothing. */
#ifndef QN_NET_HTTP_SERVER_H
#define QN_NET_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "net/http.h"
#include "quench/status.h"

typedef struct qn_http_server qn_http_server;
typedef struct qn_http_conn qn_http_conn;

/* Called once per complete request. The request (and its strings) are valid
 * only during the call: copy what an async answer needs. */
typedef void (*qn_http_handler)(qn_http_conn *conn, const qn_http_request *req, void *user);

typedef struct qn_http_server_config {
    qn_http_limits limits;       /* zeros: parser defaults */
    uint32_t request_timeout_ms; /* whole request must arrive within; 0: 30000 */
    uint32_t idle_timeout_ms;    /* keep-alive idle; 0: 60000 */
    uint32_t max_connections;    /* 0: 1024 */
} qn_http_server_config;

/* Creates a server on `loop` (not owned). */
qn_status qn_http_server_init(qn_http_server **out, uv_loop_t *loop,
                              const qn_http_server_config *cfg, qn_http_handler handler,
                              void *user);

/* Binds and listens. port 0 picks a free port; qn_http_server_port tells it. */
qn_status qn_http_server_listen(qn_http_server *s, const char *host, int port);
int qn_http_server_port(const qn_http_server *s);

/* Stops listening and closes every connection; the server's memory is
 * freed once libuv has closed all handles (run the loop until it has:
 * uv_run(loop, UV_RUN_DEFAULT) returns). */
void qn_http_server_close(qn_http_server *s);

/* Counters, for /metrics and tests. */
typedef struct qn_http_server_stats {
    uint64_t connections_accepted;
    uint64_t connections_open;
    uint64_t requests;
    uint64_t responses_4xx;
    uint64_t responses_5xx;
    uint64_t timeouts;
} qn_http_server_stats;
qn_http_server_stats qn_http_server_get_stats(const qn_http_server *s);

/* Full response with Content-Length. extra_headers: "" or lines each ending
 * in "\r\n". Copies everything it needs. Returns QN_ERR_CLOSED when the
 * client is gone (nothing is sent; the call still completes the request). */
qn_status qn_http_respond(qn_http_conn *conn, int status, const char *content_type,
                          const char *body, size_t body_len, const char *extra_headers);

/* Convenience: a JSON error body {"error": {"message": msg, "code": status}}. */
qn_status qn_http_respond_error(qn_http_conn *conn, int status, const char *msg);

/* Chunked streaming (e.g. text/event-stream). */
qn_status qn_http_stream_begin(qn_http_conn *conn, int status, const char *content_type);
qn_status qn_http_stream_write(qn_http_conn *conn, const char *data, size_t len);
qn_status qn_http_stream_end(qn_http_conn *conn);

int qn_http_conn_is_open(const qn_http_conn *conn);

#endif
