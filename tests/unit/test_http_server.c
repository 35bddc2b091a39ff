/* test_http_server.c — the libuv HTTP server driven by real clients over
 * loopback: libcurl for well-formed traffic (keep-alive reuse, POST bodies,
 * chunked streaming, errors) and raw sockets for bad clients (garbage,
 * oversized bodies, a client that stops mid-request, a client that
 * disconnects while its answer is pending, too many connections). The server
 * runs on its own loop thread, as it does in the router. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/http_server.h"

typedef struct fixture {
    uv_loop_t loop;
    uv_async_t stop;
    uv_timer_t later;            /* answers the /slow request after a delay */
    qn_http_conn *pending;       /* connection waiting for /slow */
    qn_http_server *srv;
    pthread_t thread;
    int port;
    int stream_chunks;
} fixture;

static void on_later(uv_timer_t *t) {
    fixture *f = t->data;
    if (f->pending) {
        qn_http_respond(f->pending, 200, "text/plain", "late", 4, "");
        f->pending = NULL;
    }
}

static void handler(qn_http_conn *conn, const qn_http_request *req, void *user) {
    fixture *f = user;
    char target[256];
    snprintf(target, sizeof target, "%.*s", (int)req->target_len, req->target);
    if (strcmp(target, "/echo") == 0) {
        qn_http_respond(conn, 200, "application/octet-stream", req->body, req->body_len, "");
    } else if (strcmp(target, "/health") == 0) {
        qn_http_respond(conn, 200, "application/json", "{\"ok\":true}", 11, "X-Test: 1\r\n");
    } else if (strcmp(target, "/stream") == 0) {
        qn_http_stream_begin(conn, 200, "text/event-stream");
        for (int i = 0; i < f->stream_chunks; i++) {
            char ev[64];
            int n = snprintf(ev, sizeof ev, "data: %d\n\n", i);
            qn_http_stream_write(conn, ev, (size_t)n);
        }
        qn_http_stream_write(conn, "data: [DONE]\n\n", 14);
        qn_http_stream_end(conn);
    } else if (strcmp(target, "/slow") == 0) {
        f->pending = conn;
        uv_timer_start(&f->later, on_later, 300, 0);
    } else {
        qn_http_respond_error(conn, 404, "no such route");
    }
}

static void on_stop(uv_async_t *a) {
    fixture *f = a->data;
    qn_http_server_close(f->srv);
    uv_close((uv_handle_t *)&f->stop, NULL);
    uv_close((uv_handle_t *)&f->later, NULL);
}

static void *loop_main(void *arg) {
    fixture *f = arg;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    return NULL;
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    uv_loop_init(&f->loop);
    uv_async_init(&f->loop, &f->stop, on_stop);
    f->stop.data = f;
    uv_timer_init(&f->loop, &f->later);
    f->later.data = f;
    f->stream_chunks = 50;
    qn_http_server_config cfg = {
        .limits = {.max_header_bytes = 4096, .max_body_bytes = 1 << 20},
        .request_timeout_ms = 400,
        .idle_timeout_ms = 2000,
        .max_connections = 32,
    };
    assert_int_equal(qn_http_server_init(&f->srv, &f->loop, &cfg, handler, f), QN_OK);
    assert_int_equal(qn_http_server_listen(f->srv, "127.0.0.1", 0), QN_OK);
    f->port = qn_http_server_port(f->srv);
    assert_true(f->port > 0);
    pthread_create(&f->thread, NULL, loop_main, f);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    uv_async_send(&f->stop);
    pthread_join(f->thread, NULL);
    /* every handle closed and the server freed: the loop closes cleanly */
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

typedef struct membuf {
    char *data;
    size_t len;
} membuf;

static size_t collect(char *p, size_t sz, size_t n, void *user) {
    membuf *m = user;
    m->data = realloc(m->data, m->len + sz * n + 1);
    memcpy(m->data + m->len, p, sz * n);
    m->len += sz * n;
    m->data[m->len] = '\0';
    return sz * n;
}

static long curl_request(CURL *h, int port, const char *path, const char *post, size_t post_len,
                         membuf *out) {
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
    if (post) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, post);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)post_len);
    } else {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    }
    CURLcode rc = curl_easy_perform(h);
    assert_int_equal(rc, CURLE_OK);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    return code;
}

static void test_keepalive_reuse(void **state) {
    fixture *f = *state;
    CURL *h = curl_easy_init();
    for (int i = 0; i < 20; i++) {
        membuf m = {0};
        assert_int_equal(curl_request(h, f->port, "/health", NULL, 0, &m), 200);
        assert_string_equal(m.data, "{\"ok\":true}");
        free(m.data);
    }
    long conns = 0;
    curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &conns);
    curl_easy_cleanup(h);
    qn_http_server_stats st = qn_http_server_get_stats(f->srv);
    assert_int_equal(st.connections_accepted, 1); /* one connection reused 20 times */
    assert_int_equal(st.requests, 20);
}

static void test_post_echo_large(void **state) {
    fixture *f = *state;
    size_t n = 700 * 1000; /* larger than one read, under the body limit */
    char *body = malloc(n);
    for (size_t i = 0; i < n; i++) body[i] = (char)('a' + i % 26);
    CURL *h = curl_easy_init();
    membuf m = {0};
    assert_int_equal(curl_request(h, f->port, "/echo", body, n, &m), 200);
    assert_int_equal(m.len, n);
    assert_memory_equal(m.data, body, n);
    free(m.data);
    membuf m2 = {0};
    assert_int_equal(curl_request(h, f->port, "/nowhere", NULL, 0, &m2), 404);
    assert_non_null(strstr(m2.data, "no such route"));
    free(m2.data);
    curl_easy_cleanup(h);
    free(body);
}

static void test_stream(void **state) {
    fixture *f = *state;
    CURL *h = curl_easy_init();
    membuf m = {0};
    assert_int_equal(curl_request(h, f->port, "/stream", NULL, 0, &m), 200);
    assert_non_null(strstr(m.data, "data: 0\n\n"));
    assert_non_null(strstr(m.data, "data: 49\n\n"));
    assert_non_null(strstr(m.data, "data: [DONE]\n\n"));
    free(m.data);
    /* the connection is still usable after a streamed answer */
    membuf m2 = {0};
    assert_int_equal(curl_request(h, f->port, "/health", NULL, 0, &m2), 200);
    free(m2.data);
    curl_easy_cleanup(h);
}

static int raw_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* Reads until the peer closes (or 5 s); returns what arrived. */
static char *read_all(int fd) {
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n <= 0) break;
        len += (size_t)n;
        if (len + 1 >= cap) break;
    }
    buf[len] = '\0';
    return buf;
}

static void test_bad_clients(void **state) {
    fixture *f = *state;
    /* garbage: 400 and close */
    int fd = raw_connect(f->port);
    const char *junk = "\x01\x02garbage\r\n\r\n";
    send(fd, junk, strlen(junk), 0);
    char *r = read_all(fd);
    assert_non_null(strstr(r, "HTTP/1.1 400 "));
    assert_non_null(strstr(r, "Connection: close"));
    free(r);
    close(fd);
    /* body over the limit: 413 without reading it */
    fd = raw_connect(f->port);
    const char *big = "POST /echo HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n";
    send(fd, big, strlen(big), 0);
    r = read_all(fd);
    assert_non_null(strstr(r, "HTTP/1.1 413 "));
    free(r);
    close(fd);
    /* slow client: half a request, then silence -> 408 after the deadline */
    fd = raw_connect(f->port);
    send(fd, "GET /health HTTP/1.1\r\nHo", 24, 0);
    r = read_all(fd);
    assert_non_null(strstr(r, "HTTP/1.1 408 "));
    free(r);
    close(fd);
    /* client gone while its answer is pending: the late answer is dropped */
    fd = raw_connect(f->port);
    send(fd, "GET /slow HTTP/1.1\r\n\r\n", 22, 0);
    usleep(50 * 1000);
    close(fd);
    usleep(500 * 1000);
    /* the server still answers others */
    CURL *h = curl_easy_init();
    membuf m = {0};
    assert_int_equal(curl_request(h, f->port, "/health", NULL, 0, &m), 200);
    free(m.data);
    curl_easy_cleanup(h);
    qn_http_server_stats st = qn_http_server_get_stats(f->srv);
    assert_true(st.timeouts >= 1);
    assert_true(st.responses_4xx >= 3);
}

static void test_pipelined_and_too_many(void **state) {
    fixture *f = *state;
    int fd = raw_connect(f->port);
    const char *two = "GET /health HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\nConnection: close\r\n\r\n";
    send(fd, two, strlen(two), 0);
    char *r = read_all(fd);
    char *first = strstr(r, "HTTP/1.1 200 ");
    char *second = strstr(r, "HTTP/1.1 404 ");
    assert_non_null(first);
    assert_non_null(second);
    assert_true(first < second); /* answered in order */
    free(r);
    close(fd);
    /* more connections than allowed: the extra ones get 503 */
    int fds[40];
    for (int i = 0; i < 40; i++) fds[i] = raw_connect(f->port);
    usleep(200 * 1000);
    int got503 = 0;
    for (int i = 0; i < 40; i++) {
        struct timeval tv = {.tv_sec = 0, .tv_usec = 200 * 1000};
        setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char buf[512];
        ssize_t n = recv(fds[i], buf, sizeof buf - 1, 0);
        if (n > 0) {
            buf[n] = '\0';
            if (strstr(buf, "HTTP/1.1 503 ")) got503++;
        }
    }
    for (int i = 0; i < 40; i++) close(fds[i]);
    assert_true(got503 >= 8);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN); /* as every quench process does (cli/main.c) */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keepalive_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_echo_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_clients, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_and_too_many, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
