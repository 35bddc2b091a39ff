/* http.h — an HTTP/1.1 request parser that never touches a socket.
 *
 * The server side of quench's HTTP API (router, reward test servers) reads
 * bytes into a per-connection buffer and calls qn_http_parse() on what it
 * has; the parser says "need more", "here is one complete request, it used
 * N bytes" (pipelined requests follow), or "bad request, answer with status
 * S and close". Parsing is separate from I/O so that it can be tested and
 * fuzzed on byte strings.
 *
 * Covered: request line (method, target, HTTP/1.0 and 1.1), header fields
 * (case-insensitive names, optional whitespace trimmed, obs-fold rejected),
 * Content-Length and chunked transfer coding (chunk extensions ignored,
 * trailers skipped), keep-alive defaults per version and Connection header,
 * Expect: 100-continue reported to the caller. Limits on header bytes,
 * header count and body bytes. Left out: HTTP/2, upgrades, multiple
 * Content-Length values that disagree (rejected), Transfer-Encodings other
 * than chunked (rejected with 501).
 *
 * Ownership: the request's strings point into the caller's buffer and are
 * valid until that buffer changes. A chunked body is decoded into
 * req->body_buf (malloc'd, owned by the request, freed by
 * qn_http_request_free). */
#ifndef QN_NET_HTTP_H
#define QN_NET_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QN_HTTP_MAX_HEADERS 64

typedef struct qn_http_limits {
    size_t max_header_bytes; /* request line + headers; 0: 16 KiB */
    size_t max_body_bytes;   /* 0: 8 MiB */
} qn_http_limits;

typedef struct qn_http_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} qn_http_header;

typedef struct qn_http_request {
    const char *method; /* "GET", "POST", ... */
    size_t method_len;
    const char *target; /* "/v1/completions?x=1" */
    size_t target_len;
    int version_minor; /* 0 or 1 (HTTP/1.x) */
    qn_http_header headers[QN_HTTP_MAX_HEADERS];
    size_t n_headers;
    const char *body; /* points into the buffer, or into body_buf when chunked */
    size_t body_len;
    bool keep_alive;
    bool expect_continue;
    size_t head_len; /* bytes of request line + headers, once they are complete */
    char *body_buf; /* owned: decoded chunked body */
} qn_http_request;

/* Results of qn_http_parse (besides a positive byte count). */
enum {
    QN_HTTP_INCOMPLETE = 0, /* need more bytes */
    QN_HTTP_ERROR = -1,     /* malformed or over a limit: see *status_out */
};

/* Parses one request from buf[0..len). Returns the number of bytes it used
 * (> 0) and fills *req; QN_HTTP_INCOMPLETE when more bytes are needed (if
 * the head is already complete, req->head_len > 0 and the head fields are
 * filled — a server uses that to answer "Expect: 100-continue" — but there
 * is no body yet and nothing to free); QN_HTTP_ERROR with *status_out set to the HTTP status to
 * answer (400, 413, 431, 501, 505) and *why_out to a short reason. The
 * caller must call qn_http_request_free on a filled request. */
long qn_http_parse(const char *buf, size_t len, const qn_http_limits *limits,
                   qn_http_request *req, int *status_out, const char **why_out);

void qn_http_request_free(qn_http_request *req);

/* The value of header `name` (case-insensitive), or NULL; *len gets its length. */
const char *qn_http_header_get(const qn_http_request *req, const char *name, size_t *len);

/* Reason phrase for a status code ("Not Found"); "Unknown" otherwise. */
const char *qn_http_reason(int status);

#endif
