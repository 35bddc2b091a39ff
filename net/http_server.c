/* http_server.c — see http_server.h.
 *
 * Each connection owns a TCP handle, a timer and an input buffer. The timer
 * is the connection's single deadline: the idle timeout while no request
 * has started, the request timeout once its first byte has arrived, and
 * nothing while a handler is answering. Memory is reclaimed only when both
 * handles are closed and no handler still holds the connection (the rule
 * libuv and Redis both follow: never free inside your own callback). */
#include "net/http_server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

struct qn_http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    qn_http_server_config cfg;
    qn_http_handler handler;
    void *user;
    qn_http_conn *conns; /* doubly linked list of live connections */
    uint64_t n_conns;
    int listening;
    int closing;
    int listener_closed;
    int port;
    qn_http_server_stats stats;
};

enum { TIMER_NONE, TIMER_IDLE, TIMER_REQUEST };

struct qn_http_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    qn_http_server *srv;
    qn_http_conn *prev, *next;
    char *buf;
    size_t len, cap;
    int open;          /* TCP not closing: writes allowed */
    int closing;       /* shutting down after the last write: no more requests */
    int reading;
    int busy;          /* a request was handed to the handler and is not answered */
    int streaming;     /* answering with chunked encoding */
    int chunked_ok;    /* request was HTTP/1.1 */
    int keep_alive;    /* of the request being answered */
    int sent_continue; /* "100 Continue" already sent for the pending request */
    int in_parse;
    int handles_open;
    int timer_mode;
};

typedef struct write_req {
    uv_write_t req;
    char *data;
} write_req;

static size_t max_buffer(const qn_http_server *s) {
    size_t h = s->cfg.limits.max_header_bytes ? s->cfg.limits.max_header_bytes : 16u * 1024u;
    size_t b = s->cfg.limits.max_body_bytes ? s->cfg.limits.max_body_bytes : 8u * 1024u * 1024u;
    /* room for chunk-size lines and a pipelined request behind */
    return h + b + b / 8 + 64u * 1024u;
}

static void maybe_free_server(qn_http_server *s) {
    if (s->closing && s->listener_closed && s->n_conns == 0) free(s);
}

static void maybe_free_conn(qn_http_conn *c) {
    if (c->handles_open > 0 || c->busy) return;
    qn_http_server *s = c->srv;
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->n_conns--;
    s->stats.connections_open = s->n_conns;
    free(c->buf);
    free(c);
    maybe_free_server(s);
}

static void on_handle_closed(uv_handle_t *h) {
    qn_http_conn *c = h->data;
    c->handles_open--;
    maybe_free_conn(c);
}

static void conn_close(qn_http_conn *c) {
    if (!c->open) return;
    c->open = 0;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
    qn_http_conn *c = req->data;
    free(req);
    conn_close(c);
}

/* Closes after queued writes are flushed. */
static void conn_close_after_writes(qn_http_conn *c) {
    if (!c->open || c->closing) return;
    c->closing = 1;
    c->reading = 0;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_stop(&c->timer);
    uv_shutdown_t *req = malloc(sizeof *req);
    if (!req || uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        free(req);
        conn_close(c);
        return;
    }
    req->data = c;
}

static void on_written(uv_write_t *req, int status) {
    write_req *w = (write_req *)req;
    free(w->data);
    free(w);
}

/* Queues data (takes ownership of `data`, allocated with malloc). */
static qn_status conn_write_owned(qn_http_conn *c, char *data, size_t len) {
    if (!c->open) {
        free(data);
        return QN_ERR_CLOSED;
    }
    write_req *w = malloc(sizeof *w);
    if (!w) {
        free(data);
        conn_close(c);
        return qn_fail(QN_ERR_NOMEM, "http: no memory for a response");
    }
    w->data = data;
    uv_buf_t b = uv_buf_init(data, (unsigned)len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (rc != 0) {
        free(data);
        free(w);
        conn_close(c);
        return qn_fail(QN_ERR_NET, "http: write failed: %s", uv_strerror(rc));
    }
    return QN_OK;
}

static void on_timer(uv_timer_t *t);

static void timer_set(qn_http_conn *c, int mode) {
    if (!c->open || c->closing) return;
    c->timer_mode = mode;
    if (mode == TIMER_NONE) {
        uv_timer_stop(&c->timer);
        return;
    }
    uint32_t ms = mode == TIMER_IDLE ? c->srv->cfg.idle_timeout_ms : c->srv->cfg.request_timeout_ms;
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void try_parse(qn_http_conn *c);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b);

/* The current request is fully answered: continue with the next one. */
static void request_done(qn_http_conn *c) {
    c->busy = 0;
    c->streaming = 0;
    c->sent_continue = 0;
    if (!c->open) {
        maybe_free_conn(c);
        return;
    }
    if (!c->keep_alive) {
        conn_close_after_writes(c);
        return;
    }
    if (!c->reading && !c->closing) {
        c->reading = 1;
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    }
    timer_set(c, c->len > 0 ? TIMER_REQUEST : TIMER_IDLE);
    if (!c->in_parse) try_parse(c);
}

static void count_status(qn_http_server *s, int status) {
    if (status >= 500) s->stats.responses_5xx++;
    else if (status >= 400) s->stats.responses_4xx++;
}

static char *format_head(int status, const char *content_type, const char *framing,
                         int keep_alive, const char *extra, size_t body_len, size_t *head_len) {
    size_t cap = 256 + strlen(content_type) + strlen(framing) + strlen(extra);
    char *out = malloc(cap + body_len);
    if (!out) return NULL;
    int n = snprintf(out, cap,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%sConnection: %s\r\n%s\r\n", status,
                     qn_http_reason(status), content_type, framing,
                     keep_alive ? "keep-alive" : "close", extra);
    *head_len = (size_t)n;
    return out;
}

qn_status qn_http_respond(qn_http_conn *c, int status, const char *content_type, const char *body,
                          size_t body_len, const char *extra_headers) {
    if (!c->busy || c->streaming) return qn_fail(QN_ERR_INVALID, "http: no request to answer");
    count_status(c->srv, status);
    qn_status st = QN_ERR_CLOSED;
    if (c->open) {
        char framing[64];
        snprintf(framing, sizeof framing, "Content-Length: %zu\r\n", body_len);
        size_t head = 0;
        char *out = format_head(status, content_type ? content_type : "application/json", framing,
                                c->keep_alive, extra_headers ? extra_headers : "", body_len, &head);
        if (!out) {
            conn_close(c);
            st = qn_fail(QN_ERR_NOMEM, "http: no memory for a response");
        } else {
            if (body_len) memcpy(out + head, body, body_len);
            st = conn_write_owned(c, out, head + body_len);
        }
    }
    request_done(c);
    return st;
}

qn_status qn_http_respond_error(qn_http_conn *c, int status, const char *msg) {
    char body[1024];
    /* escape the few characters JSON needs escaped; messages are ours */
    char esc[700];
    size_t k = 0;
    for (const char *p = msg; *p && k + 7 < sizeof esc; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '"' || ch == '\\') {
            esc[k++] = '\\';
            esc[k++] = (char)ch;
        } else if (ch < 0x20) {
            k += (size_t)snprintf(esc + k, sizeof esc - k, "\\u%04x", ch);
        } else {
            esc[k++] = (char)ch;
        }
    }
    esc[k] = '\0';
    int n = snprintf(body, sizeof body, "{\"error\":{\"message\":\"%s\",\"code\":%d}}", esc, status);
    return qn_http_respond(c, status, "application/json", body, (size_t)n, "");
}

qn_status qn_http_stream_begin(qn_http_conn *c, int status, const char *content_type) {
    if (!c->busy || c->streaming) return qn_fail(QN_ERR_INVALID, "http: no request to answer");
    c->streaming = 1;
    count_status(c->srv, status);
    if (!c->chunked_ok) c->keep_alive = 0; /* HTTP/1.0: body ends at close */
    size_t head = 0;
    char *out = format_head(status, content_type, c->chunked_ok ? "Transfer-Encoding: chunked\r\n" : "",
                            c->keep_alive, "Cache-Control: no-cache\r\n", 0, &head);
    if (!out) return qn_fail(QN_ERR_NOMEM, "http: no memory");
    return conn_write_owned(c, out, head);
}

qn_status qn_http_stream_write(qn_http_conn *c, const char *data, size_t len) {
    if (!c->streaming) return qn_fail(QN_ERR_INVALID, "http: stream not begun");
    if (len == 0) return QN_OK; /* a zero-length chunk would end the body */
    char *out = malloc(len + 32);
    if (!out) return qn_fail(QN_ERR_NOMEM, "http: no memory");
    size_t n = 0;
    if (c->chunked_ok) n = (size_t)sprintf(out, "%zx\r\n", len);
    memcpy(out + n, data, len);
    n += len;
    if (c->chunked_ok) {
        memcpy(out + n, "\r\n", 2);
        n += 2;
    }
    return conn_write_owned(c, out, n);
}

qn_status qn_http_stream_end(qn_http_conn *c) {
    if (!c->streaming) return qn_fail(QN_ERR_INVALID, "http: stream not begun");
    qn_status st = QN_OK;
    if (c->chunked_ok) {
        char *out = malloc(5);
        if (out) {
            memcpy(out, "0\r\n\r\n", 5);
            st = conn_write_owned(c, out, 5);
        }
    }
    request_done(c);
    return st;
}

int qn_http_conn_is_open(const qn_http_conn *c) { return c->open; }

/* Answers a framing error and closes; the request never reached the handler. */
static void reject(qn_http_conn *c, int status, const char *why) {
    c->busy = 1;
    c->keep_alive = 0;
    c->chunked_ok = 1;
    QN_LOG_DEBUG("http: rejecting request: %d %s", status, why);
    c->in_parse = 1;
    qn_http_respond_error(c, status, why);
    c->in_parse = 0;
}

static void try_parse(qn_http_conn *c) {
    qn_http_server *s = c->srv;
    c->in_parse = 1;
    while (c->open && !c->closing && !c->busy && c->len > 0) {
        qn_http_request req;
        int status = 0;
        const char *why = "";
        long n = qn_http_parse(c->buf, c->len, &s->cfg.limits, &req, &status, &why);
        if (n == QN_HTTP_INCOMPLETE) {
            if (req.head_len > 0 && req.expect_continue && !c->sent_continue) {
                c->sent_continue = 1;
                char *cont = malloc(25);
                if (cont) {
                    memcpy(cont, "HTTP/1.1 100 Continue\r\n\r\n", 25);
                    conn_write_owned(c, cont, 25);
                }
            }
            if (c->len >= max_buffer(s)) reject(c, 413, "request too large");
            break;
        }
        if (n == QN_HTTP_ERROR) {
            reject(c, status, why);
            break;
        }
        s->stats.requests++;
        c->busy = 1;
        c->keep_alive = req.keep_alive && !s->closing;
        c->chunked_ok = req.version_minor >= 1;
        timer_set(c, TIMER_NONE);
        s->handler(c, &req, s->user);
        qn_http_request_free(&req);
        /* the handler's view of the buffer is over: drop the request bytes */
        memmove(c->buf, c->buf + n, c->len - (size_t)n);
        c->len -= (size_t)n;
    }
    c->in_parse = 0;
    if (c->open && !c->busy && c->timer_mode == TIMER_IDLE && c->len > 0) timer_set(c, TIMER_REQUEST);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
    qn_http_conn *c = h->data;
    size_t limit = max_buffer(c->srv);
    if (c->cap - c->len < 4096 && c->cap < limit) {
        size_t ncap = c->cap ? c->cap * 2 : 8192;
        if (ncap > limit) ncap = limit;
        char *p = realloc(c->buf, ncap);
        if (p) {
            c->buf = p;
            c->cap = ncap;
        }
    }
    if (c->cap == c->len) {
        *b = uv_buf_init(NULL, 0); /* makes read_cb see UV_ENOBUFS */
        return;
    }
    *b = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b) {
    qn_http_conn *c = stream->data;
    if (nread == UV_ENOBUFS) {
        /* buffer full while a handler is busy: stop reading until it answers */
        uv_read_stop(stream);
        c->reading = 0;
        if (!c->busy) reject(c, 413, "request too large");
        return;
    }
    if (nread < 0) {
        conn_close(c); /* EOF or error: the client is gone */
        return;
    }
    if (nread == 0) return;
    c->len += (size_t)nread;
    if (!c->busy) {
        if (c->timer_mode == TIMER_IDLE) timer_set(c, TIMER_REQUEST);
        try_parse(c);
    }
}

static void on_timer(uv_timer_t *t) {
    qn_http_conn *c = t->data;
    if (c->busy || c->closing) return;
    c->srv->stats.timeouts++;
    if (c->len > 0) {
        reject(c, 408, "request not received in time");
    } else {
        conn_close(c);
    }
}

static void on_connection(uv_stream_t *server, int status) {
    qn_http_server *s = server->data;
    if (status < 0) {
        QN_LOG_WARN("http: accept error: %s", uv_strerror(status));
        return;
    }
    qn_http_conn *c = calloc(1, sizeof *c);
    if (!c) return;
    c->srv = s;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles_open = 2;
    c->open = 1;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    s->stats.connections_open = s->n_conns;
    s->stats.connections_accepted++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (s->n_conns > s->cfg.max_connections) {
        reject(c, 503, "too many connections");
        return;
    }
    timer_set(c, TIMER_IDLE);
    c->reading = 1;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

qn_status qn_http_server_init(qn_http_server **out, uv_loop_t *loop,
                              const qn_http_server_config *cfg, qn_http_handler handler,
                              void *user) {
    if (!out || !loop || !handler) return qn_fail(QN_ERR_INVALID, "http server: missing argument");
    qn_http_server *s = calloc(1, sizeof *s);
    if (!s) return qn_fail(QN_ERR_NOMEM, "http server: out of memory");
    s->loop = loop;
    if (cfg) s->cfg = *cfg;
    if (!s->cfg.request_timeout_ms) s->cfg.request_timeout_ms = 30000;
    if (!s->cfg.idle_timeout_ms) s->cfg.idle_timeout_ms = 60000;
    if (!s->cfg.max_connections) s->cfg.max_connections = 1024;
    s->handler = handler;
    s->user = user;
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    *out = s;
    return QN_OK;
}

qn_status qn_http_server_listen(qn_http_server *s, const char *host, int port) {
    struct sockaddr_storage addr;
    int rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&addr);
    if (rc != 0) rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr);
    if (rc != 0) return qn_fail(QN_ERR_INVALID, "http server: bad address '%s'", host);
    rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, 512, on_connection);
    if (rc != 0)
        return qn_fail(QN_ERR_NET, "http server: cannot listen on %s:%d: %s", host, port, uv_strerror(rc));
    struct sockaddr_storage bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &len);
    s->port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                          : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    s->listening = 1;
    return QN_OK;
}

int qn_http_server_port(const qn_http_server *s) { return s->port; }

qn_http_server_stats qn_http_server_get_stats(const qn_http_server *s) { return s->stats; }

static void on_listener_closed(uv_handle_t *h) {
    qn_http_server *s = h->data;
    s->listener_closed = 1;
    maybe_free_server(s);
}

void qn_http_server_close(qn_http_server *s) {
    if (!s || s->closing) return;
    s->closing = 1;
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    for (qn_http_conn *c = s->conns; c; c = c->next) conn_close(c);
}
