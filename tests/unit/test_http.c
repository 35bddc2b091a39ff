/* test_http.c — the HTTP/1.1 request parser on byte strings: complete and
 * partial requests, pipelining, chunked bodies, keep-alive rules, limits and
 * every rejection with its status code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "net/http.h"

static long parse(const char *s, qn_http_request *req, int *status) {
    const char *why;
    return qn_http_parse(s, strlen(s), NULL, req, status, &why);
}

static void test_simple_get(void **state) {
    const char *s = "GET /health HTTP/1.1\r\nHost: x\r\nUser-Agent:  curl/8 \r\n\r\n";
    qn_http_request req;
    int st;
    long n = parse(s, &req, &st);
    assert_int_equal(n, (long)strlen(s));
    assert_int_equal(req.method_len, 3);
    assert_memory_equal(req.method, "GET", 3);
    assert_int_equal(req.target_len, 7);
    assert_memory_equal(req.target, "/health", 7);
    assert_int_equal(req.version_minor, 1);
    assert_true(req.keep_alive);
    assert_int_equal(req.n_headers, 2);
    size_t vl;
    const char *ua = qn_http_header_get(&req, "user-agent", &vl);
    assert_non_null(ua);
    assert_int_equal(vl, 6); /* surrounding whitespace trimmed */
    assert_memory_equal(ua, "curl/8", 6);
    assert_null(qn_http_header_get(&req, "content-type", NULL));
    assert_int_equal(req.body_len, 0);
    qn_http_request_free(&req);
}

static void test_post_body_and_incomplete(void **state) {
    const char *s = "POST /generate HTTP/1.1\r\nContent-Length: 11\r\n\r\n{\"a\":\"bcd\"}";
    size_t full = strlen(s);
    qn_http_request req;
    int st;
    const char *why;
    /* every strict prefix is incomplete, never an error */
    for (size_t k = 0; k < full; k++) {
        long r = qn_http_parse(s, k, NULL, &req, &st, &why);
        assert_int_equal(r, QN_HTTP_INCOMPLETE);
    }
    long n = qn_http_parse(s, full, NULL, &req, &st, &why);
    assert_int_equal(n, (long)full);
    assert_int_equal(req.body_len, 11);
    assert_memory_equal(req.body, "{\"a\":\"bcd\"}", 11);
    qn_http_request_free(&req);
}

static void test_pipelined(void **state) {
    const char *s = "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n";
    qn_http_request req;
    int st;
    long n1 = parse(s, &req, &st);
    assert_true(n1 > 0);
    assert_memory_equal(req.target, "/a", 2);
    assert_true(req.keep_alive);
    qn_http_request_free(&req);
    long n2 = parse(s + n1, &req, &st);
    assert_int_equal(n1 + n2, (long)strlen(s));
    assert_memory_equal(req.target, "/b", 2);
    assert_false(req.keep_alive);
    qn_http_request_free(&req);
}

static void test_http10_keepalive(void **state) {
    qn_http_request req;
    int st;
    assert_true(parse("GET / HTTP/1.0\r\n\r\n", &req, &st) > 0);
    assert_false(req.keep_alive);
    qn_http_request_free(&req);
    assert_true(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &req, &st) > 0);
    assert_true(req.keep_alive);
    qn_http_request_free(&req);
    assert_true(parse("GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n", &req, &st) > 0);
    assert_false(req.keep_alive);
    qn_http_request_free(&req);
}

static void test_chunked(void **state) {
    const char *s = "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
    qn_http_request req;
    int st;
    const char *why;
    size_t full = strlen(s) - 4;
    for (size_t k = 0; k < full; k++) {
        long r = qn_http_parse(s, k, NULL, &req, &st, &why);
        assert_int_equal(r, QN_HTTP_INCOMPLETE);
        assert_null(req.body_buf);
    }
    long n = qn_http_parse(s, strlen(s), NULL, &req, &st, &why);
    assert_int_equal(n, (long)full);
    assert_int_equal(req.body_len, 11);
    assert_memory_equal(req.body, "hello world", 11);
    qn_http_request_free(&req);
}

static void test_expect_continue(void **state) {
    qn_http_request req;
    int st;
    const char *s = "POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
    const char *why;
    assert_int_equal(qn_http_parse(s, strlen(s), NULL, &req, &st, &why), QN_HTTP_INCOMPLETE);
    /* head complete: the server can send 100 Continue */
    assert_int_equal(req.head_len, strlen(s));
    assert_true(req.expect_continue);
    /* head incomplete: nothing known yet */
    assert_int_equal(qn_http_parse(s, 20, NULL, &req, &st, &why), QN_HTTP_INCOMPLETE);
    assert_int_equal(req.head_len, 0);
}

static void expect_error(const char *s, int want_status) {
    qn_http_request req;
    int st = 0;
    const char *why = NULL;
    long r = qn_http_parse(s, strlen(s), NULL, &req, &st, &why);
    if (r != QN_HTTP_ERROR || st != want_status) {
        fail_msg("input %s: got result %ld status %d, wanted error %d", s, r, st, want_status);
    }
    assert_non_null(why);
    assert_true(strlen(why) > 0);
}

static void test_rejections(void **state) {
    expect_error("GET\r\n\r\n", 400);
    expect_error("G@T / HTTP/1.1\r\n\r\n", 400);
    expect_error("GET  HTTP/1.1\r\n\r\n", 400);
    expect_error("GET / HTTQ/1.1\r\n\r\n", 400);
    expect_error("GET / HTTP/2.0\r\n\r\n", 505);
    expect_error("GET / HTTP/1.1\r\n folded\r\n\r\n", 400);
    expect_error("GET / HTTP/1.1\r\nNo-Colon\r\n\r\n", 400);
    expect_error("GET / HTTP/1.1\r\n: empty-name\r\n\r\n", 400);
    expect_error("GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", 400);
    expect_error("GET / HTTP/1.1\r\nA: b\x01\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", 413);
    expect_error("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501);
    expect_error("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n", 413);
}

static void test_limits(void **state) {
    qn_http_limits lim = {.max_header_bytes = 64, .max_body_bytes = 10};
    qn_http_request req;
    int st;
    const char *why;
    char big[256];
    memset(big, 'a', sizeof big);
    memcpy(big, "GET /", 5);
    /* no end of headers yet, but already over the limit: refuse early */
    assert_int_equal(qn_http_parse(big, sizeof big, &lim, &req, &st, &why), QN_HTTP_ERROR);
    assert_int_equal(st, 431);
    const char *body = "POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n";
    assert_int_equal(qn_http_parse(body, strlen(body), &lim, &req, &st, &why), QN_HTTP_ERROR);
    assert_int_equal(st, 413);
    const char *chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\n";
    assert_int_equal(qn_http_parse(chunked, strlen(chunked), &lim, &req, &st, &why), QN_HTTP_ERROR);
    assert_int_equal(st, 413);
    /* header count */
    char many[4096] = "GET / HTTP/1.1\r\n";
    for (int k = 0; k < QN_HTTP_MAX_HEADERS + 1; k++) strcat(many, "A: b\r\n");
    strcat(many, "\r\n");
    assert_int_equal(qn_http_parse(many, strlen(many), NULL, &req, &st, &why), QN_HTTP_ERROR);
    assert_int_equal(st, 431);
}

static void test_reason(void **state) {
    assert_string_equal(qn_http_reason(404), "Not Found");
    assert_string_equal(qn_http_reason(799), "Unknown");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),  cmocka_unit_test(test_post_body_and_incomplete),
        cmocka_unit_test(test_pipelined),   cmocka_unit_test(test_http10_keepalive),
        cmocka_unit_test(test_chunked),     cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_rejections),  cmocka_unit_test(test_limits),
        cmocka_unit_test(test_reason),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
