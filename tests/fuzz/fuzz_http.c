/* fuzz_http.c — the HTTP request parser on arbitrary bytes, including
 * pipelined requests: parse repeatedly from where the last request ended,
 * touch every field the parser returned, and check its invariants. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qn_http_limits lim = {.max_header_bytes = 2048, .max_body_bytes = 4096};
    size_t off = 0;
    while (off < size) {
        qn_http_request req;
        int st;
        const char *why;
        long n = qn_http_parse((const char *)data + off, size - off, &lim, &req, &st, &why);
        if (n <= 0) {
            if (n == QN_HTTP_ERROR && (st < 400 || st > 599)) abort();
            break;
        }
        if ((size_t)n > size - off) abort();
        volatile unsigned sum = 0;
        for (size_t i = 0; i < req.method_len; i++) sum += (unsigned char)req.method[i];
        for (size_t i = 0; i < req.target_len; i++) sum += (unsigned char)req.target[i];
        for (size_t h = 0; h < req.n_headers; h++) {
            for (size_t i = 0; i < req.headers[h].name_len; i++) sum += (unsigned char)req.headers[h].name[i];
            for (size_t i = 0; i < req.headers[h].value_len; i++) sum += (unsigned char)req.headers[h].value[i];
        }
        for (size_t i = 0; i < req.body_len; i++) sum += (unsigned char)req.body[i];
        if (req.body_len > lim.max_body_bytes) abort();
        if (sum == 0xFFFFFFFFu) abort(); /* uses every byte read above */
        qn_http_request_free(&req);
        off += (size_t)n;
    }
    return 0;
}
