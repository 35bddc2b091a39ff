/* http.c — see http.h. The parser re-reads the buffer from the start on
 * every call (a request is bounded by the limits, so this is cheap and
 * keeps the parser stateless). Strictness follows RFC 9112 where being
 * lenient would open request smuggling: both Content-Length and
 * Transfer-Encoding, disagreeing Content-Lengths, and obs-fold are errors. */
#include "net/http.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_MAX_HEADER (16u * 1024u)
#define DEFAULT_MAX_BODY (8u * 1024u * 1024u)

static bool is_tchar(unsigned char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static long fail(int status, const char *why, int *status_out, const char **why_out) {
    *status_out = status;
    *why_out = why;
    return QN_HTTP_ERROR;
}

/* Finds "\r\n\r\n" in buf[from..len); returns the index just past it, or 0. */
static size_t find_head_end(const char *buf, size_t from, size_t len) {
    for (size_t i = from; i + 3 < len; i++) {
        if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' && buf[i + 3] == '\n')
            return i + 4;
    }
    return 0;
}

static bool token_in_list(const char *v, size_t n, const char *tok) {
    size_t tl = strlen(tok);
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
        size_t s = i;
        while (i < n && v[i] != ',') i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
        if (e - s == tl && strncasecmp(v + s, tok, tl) == 0) return true;
    }
    return false;
}

const char *qn_http_header_get(const qn_http_request *req, const char *name, size_t *len) {
    size_t nl = strlen(name);
    for (size_t i = 0; i < req->n_headers; i++) {
        const qn_http_header *h = &req->headers[i];
        if (h->name_len == nl && strncasecmp(h->name, name, nl) == 0) {
            if (len) *len = h->value_len;
            return h->value;
        }
    }
    return NULL;
}

void qn_http_request_free(qn_http_request *req) {
    if (!req) return;
    free(req->body_buf);
    memset(req, 0, sizeof *req);
}

/* Parses a hex chunk size at buf[*pos..end) followed by optional extensions
 * and CRLF. Returns 1 ok, 0 incomplete, -1 malformed, -2 too large. */
static int parse_chunk_size(const char *buf, size_t end, size_t *pos, size_t max, size_t *out) {
    size_t i = *pos, v = 0, digits = 0;
    while (i < end) {
        char c = buf[i];
        int d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else break;
        if (v > (max >> 4)) return -2;
        v = (v << 4) | (size_t)d;
        if (v > max) return -2;
        digits++;
        i++;
    }
    if (i == end) return 0;
    if (digits == 0) return -1;
    /* chunk extensions: skip to CRLF; they must not contain bare CR/LF */
    while (i < end && buf[i] != '\r') {
        if (buf[i] == '\n') return -1;
        i++;
    }
    if (i + 1 >= end) return 0;
    if (buf[i + 1] != '\n') return -1;
    *pos = i + 2;
    *out = v;
    return 1;
}

long qn_http_parse(const char *buf, size_t len, const qn_http_limits *limits,
                   qn_http_request *req, int *status_out, const char **why_out) {
    size_t max_head = limits && limits->max_header_bytes ? limits->max_header_bytes : DEFAULT_MAX_HEADER;
    size_t max_body = limits && limits->max_body_bytes ? limits->max_body_bytes : DEFAULT_MAX_BODY;
    memset(req, 0, sizeof *req);
    *status_out = 0;
    *why_out = "";

    /* RFC 9112 §2.2: ignore empty lines before the request line. */
    size_t start = 0;
    while (start + 1 < len && buf[start] == '\r' && buf[start + 1] == '\n') start += 2;
    if (start > 64) return fail(400, "too many empty lines before the request", status_out, why_out);

    size_t head_end = find_head_end(buf, start, len);
    if (head_end == 0) {
        if (len - start > max_head)
            return fail(431, "request header section too large", status_out, why_out);
        return QN_HTTP_INCOMPLETE;
    }
    if (head_end - start > max_head)
        return fail(431, "request header section too large", status_out, why_out);

    /* Request line: method SP target SP HTTP/1.x CRLF */
    size_t i = start;
    req->method = buf + i;
    while (i < head_end && is_tchar((unsigned char)buf[i])) i++;
    req->method_len = (size_t)(buf + i - req->method);
    if (req->method_len == 0 || buf[i] != ' ') return fail(400, "malformed request method", status_out, why_out);
    i++;
    req->target = buf + i;
    while (i < head_end && (unsigned char)buf[i] > 0x20 && buf[i] != 0x7f) i++;
    req->target_len = (size_t)(buf + i - req->target);
    if (req->target_len == 0 || buf[i] != ' ') return fail(400, "malformed request target", status_out, why_out);
    i++;
    if (head_end - i < 10 || memcmp(buf + i, "HTTP/", 5) != 0)
        return fail(400, "malformed HTTP version", status_out, why_out);
    char major = buf[i + 5], dot = buf[i + 6], minor = buf[i + 7];
    if (dot != '.' || major < '0' || major > '9' || minor < '0' || minor > '9' ||
        buf[i + 8] != '\r' || buf[i + 9] != '\n')
        return fail(400, "malformed HTTP version", status_out, why_out);
    if (major != '1' || (minor != '0' && minor != '1'))
        return fail(505, "only HTTP/1.0 and HTTP/1.1 are supported", status_out, why_out);
    req->version_minor = minor - '0';
    i += 10;

    /* Header fields until the empty line at head_end-2. */
    while (i < head_end - 2) {
        if (buf[i] == ' ' || buf[i] == '\t') return fail(400, "obsolete header line folding", status_out, why_out);
        if (req->n_headers == QN_HTTP_MAX_HEADERS) return fail(431, "too many header fields", status_out, why_out);
        qn_http_header *h = &req->headers[req->n_headers];
        h->name = buf + i;
        while (i < head_end && is_tchar((unsigned char)buf[i])) i++;
        h->name_len = (size_t)(buf + i - h->name);
        if (h->name_len == 0 || buf[i] != ':') return fail(400, "malformed header field name", status_out, why_out);
        i++;
        while (buf[i] == ' ' || buf[i] == '\t') i++;
        h->value = buf + i;
        while (buf[i] != '\r') {
            unsigned char c = (unsigned char)buf[i];
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                return fail(400, "control character in header value", status_out, why_out);
            i++;
        }
        size_t vend = i;
        while (vend > (size_t)(h->value - buf) && (buf[vend - 1] == ' ' || buf[vend - 1] == '\t')) vend--;
        h->value_len = vend - (size_t)(h->value - buf);
        if (buf[i + 1] != '\n') return fail(400, "bare CR in header section", status_out, why_out);
        i += 2;
        req->n_headers++;
    }

    /* Framing. */
    bool have_cl = false, chunked = false;
    size_t content_length = 0;
    for (size_t k = 0; k < req->n_headers; k++) {
        const qn_http_header *h = &req->headers[k];
        if (h->name_len == 14 && strncasecmp(h->name, "content-length", 14) == 0) {
            if (h->value_len == 0) return fail(400, "empty Content-Length", status_out, why_out);
            size_t v = 0;
            for (size_t j = 0; j < h->value_len; j++) {
                char c = h->value[j];
                if (c < '0' || c > '9') return fail(400, "malformed Content-Length", status_out, why_out);
                if (v > (SIZE_MAX - 9) / 10) return fail(413, "request body too large", status_out, why_out);
                v = v * 10 + (size_t)(c - '0');
            }
            if (have_cl && v != content_length)
                return fail(400, "conflicting Content-Length values", status_out, why_out);
            have_cl = true;
            content_length = v;
        } else if (h->name_len == 17 && strncasecmp(h->name, "transfer-encoding", 17) == 0) {
            if (!(h->value_len == 7 && strncasecmp(h->value, "chunked", 7) == 0))
                return fail(501, "unsupported Transfer-Encoding", status_out, why_out);
            chunked = true;
        } else if (h->name_len == 10 && strncasecmp(h->name, "connection", 10) == 0) {
            /* handled below */
        } else if (h->name_len == 6 && strncasecmp(h->name, "expect", 6) == 0) {
            if (h->value_len == 12 && strncasecmp(h->value, "100-continue", 12) == 0)
                req->expect_continue = true;
        }
    }
    if (have_cl && chunked)
        return fail(400, "both Content-Length and Transfer-Encoding", status_out, why_out);
    if (chunked && req->version_minor == 0)
        return fail(400, "chunked transfer coding in HTTP/1.0", status_out, why_out);

    size_t conn_len = 0;
    const char *conn = qn_http_header_get(req, "connection", &conn_len);
    if (req->version_minor == 1) {
        req->keep_alive = !(conn && token_in_list(conn, conn_len, "close"));
    } else {
        req->keep_alive = conn && token_in_list(conn, conn_len, "keep-alive");
    }

    if (!chunked) {
        if (content_length > max_body) return fail(413, "request body too large", status_out, why_out);
        req->head_len = head_end;
        if (len - head_end < content_length) return QN_HTTP_INCOMPLETE;
        req->body = content_length ? buf + head_end : NULL;
        req->body_len = content_length;
        return (long)(head_end + content_length);
    }

    /* Chunked body: decode into an owned buffer. Re-decoded on each call
     * until complete; bounded by max_body. */
    size_t pos = head_end, total = 0, cap = 0;
    char *out = NULL;
    for (;;) {
        size_t n = 0;
        int r = parse_chunk_size(buf, len, &pos, max_body, &n);
        if (r == 0) goto incomplete;
        if (r == -1) {
            free(out);
            return fail(400, "malformed chunk size", status_out, why_out);
        }
        if (r == -2 || total + n > max_body) {
            free(out);
            return fail(413, "request body too large", status_out, why_out);
        }
        if (n == 0) break;
        if (len - pos < n + 2) goto incomplete;
        if (buf[pos + n] != '\r' || buf[pos + n + 1] != '\n') {
            free(out);
            return fail(400, "chunk data not followed by CRLF", status_out, why_out);
        }
        if (total + n > cap) {
            size_t ncap = cap ? cap * 2 : 1024;
            while (ncap < total + n) ncap *= 2;
            char *p = realloc(out, ncap);
            if (!p) {
                free(out);
                return fail(413, "request body too large", status_out, why_out);
            }
            out = p;
            cap = ncap;
        }
        memcpy(out + total, buf + pos, n);
        total += n;
        pos += n + 2;
    }
    /* Trailer section: header lines until an empty line. */
    for (;;) {
        size_t e = pos;
        while (e < len && buf[e] != '\n') e++;
        if (e >= len) goto incomplete;
        if (e == pos || buf[e - 1] != '\r') {
            free(out);
            return fail(400, "malformed chunked trailer", status_out, why_out);
        }
        bool empty = (e == pos + 1);
        pos = e + 1;
        if (empty) break;
        if (pos - head_end > max_body + max_head) {
            free(out);
            return fail(431, "trailer section too large", status_out, why_out);
        }
    }
    req->head_len = head_end;
    req->body_buf = out;
    req->body = out;
    req->body_len = total;
    return (long)pos;

incomplete:
    free(out);
    req->head_len = head_end;
    return QN_HTTP_INCOMPLETE;
}

const char *qn_http_reason(int status) {
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}
