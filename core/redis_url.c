/* redis_url.c — see redis_url.h. */
#include "core/redis_url.h"

#include <stdio.h>
#include <string.h>

static qn_status bad_url(const char *url, const char *why) {
    return qn_fail(QN_ERR_INVALID,
                   "Redis URL '%s': %s (expected redis://[:password@]host[:port][/db] or "
                   "unix:///path[?db=N])",
                   url, why);
}

static int parse_int(const char *s, size_t n, int lo, int hi, int *out) {
    if (n == 0 || n > 9) return -1;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

qn_status qn_redis_url_parse(const char *url, qn_redis_url *out) {
    memset(out, 0, sizeof *out);
    if (!url || !*url) return bad_url(url ? url : "", "empty");
    if (strncmp(url, "unix://", 7) == 0) {
        const char *path = url + 7;
        const char *q = strchr(path, '?');
        size_t plen = q ? (size_t)(q - path) : strlen(path);
        if (plen == 0 || path[0] != '/') return bad_url(url, "the socket path must be absolute");
        if (plen >= sizeof out->unix_path) return bad_url(url, "socket path too long");
        memcpy(out->unix_path, path, plen);
        if (q) {
            if (strncmp(q, "?db=", 4) != 0 || parse_int(q + 4, strlen(q + 4), 0, 65535, &out->db))
                return bad_url(url, "the only query accepted is ?db=<0..65535>");
        }
        return QN_OK;
    }
    if (strncmp(url, "redis://", 8) != 0) return bad_url(url, "unknown scheme");
    const char *p = url + 8;
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon) return bad_url(url, "credentials must be [user]:password");
        size_t ul = (size_t)(colon - p), pl = (size_t)(at - colon - 1);
        if (ul >= sizeof out->user || pl >= sizeof out->password) return bad_url(url, "credentials too long");
        memcpy(out->user, p, ul);
        memcpy(out->password, colon + 1, pl);
        p = at + 1;
    }
    const char *slash = strchr(p, '/');
    size_t hostport = slash ? (size_t)(slash - p) : strlen(p);
    const char *hp_end = p + hostport;
    const char *host = p, *host_end;
    const char *port = NULL;
    if (*p == '[') { /* [ipv6]:port */
        const char *rb = memchr(p, ']', hostport);
        if (!rb) return bad_url(url, "unterminated IPv6 address");
        host = p + 1;
        host_end = rb;
        if (rb + 1 < hp_end) {
            if (rb[1] != ':') return bad_url(url, "junk after IPv6 address");
            port = rb + 2;
        }
    } else {
        const char *colon = memchr(p, ':', hostport);
        host_end = colon ? colon : hp_end;
        if (colon) port = colon + 1;
    }
    size_t hl = (size_t)(host_end - host);
    if (hl == 0) return bad_url(url, "no host");
    if (hl >= sizeof out->host) return bad_url(url, "host too long");
    memcpy(out->host, host, hl);
    out->port = 6379;
    if (port && parse_int(port, (size_t)(hp_end - port), 1, 65535, &out->port))
        return bad_url(url, "port must be an integer in [1, 65535]");
    if (slash && slash[1] && parse_int(slash + 1, strlen(slash + 1), 0, 65535, &out->db))
        return bad_url(url, "database must be an integer in [0, 65535]");
    return QN_OK;
}

