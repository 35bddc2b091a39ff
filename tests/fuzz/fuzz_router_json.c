/* fuzz_router_json.c — the router's HTTP body parser (cli/router_json.c:
 * qn_rj_parse for POST /generate and POST /v1/completions) on arbitrary
 * bytes. The first byte picks the API (even: /generate, odd:
 * /v1/completions); the rest is the body. Checks the contract: on success
 * exactly one of token ids / text, every bound of router_json.h held; on
 * failure an error message and nothing owned. cli/ is linked only into the
 * quench binary, so the parser's source is compiled in here. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli/router_json.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    qn_rapi api = (data[0] & 1) ? QN_RAPI_COMPLETIONS : QN_RAPI_GENERATE;
    qn_rj_request r;
    qn_status st = qn_rj_parse(api, (const char *)data + 1, size - 1, &r);
    if (st != QN_OK) {
        const char *msg = qn_last_error();
        if (!msg || !msg[0]) abort();
        if (r.input_ids || r.text || r.stop || r.stop_ids) abort();
        return 0;
    }
    if ((r.n_input > 0) == (r.text != NULL)) abort();
    if (r.text && r.text[0] == '\0') abort();
    if (r.n_input > QN_RJ_MAX_INPUT_IDS) abort();
    for (size_t i = 0; i < r.n_input; i++)
        if (r.input_ids[i] < 0) abort();
    if (!isfinite(r.temperature) || r.temperature < 0) abort();
    if (!(r.top_p > 0 && r.top_p <= 1) || !(r.min_p >= 0 && r.min_p <= 1)) abort();
    if (r.max_new_tokens < 0 || r.max_new_tokens > QN_RJ_MAX_NEW_TOKENS) abort();
    if (r.n < 1 || r.n > QN_RJ_MAX_N) abort();
    if (r.n_stop > QN_RJ_MAX_STOP || r.n_stop_ids > QN_RJ_MAX_STOP_IDS) abort();
    for (size_t i = 0; i < r.n_stop; i++) {
        size_t len = strlen(r.stop[i]);
        if (len == 0 || len > QN_RJ_MAX_STOP_LEN) abort();
    }
    for (size_t i = 0; i < r.n_stop_ids; i++)
        if (r.stop_ids[i] < 0) abort();
    if (r.stream && api != QN_RAPI_COMPLETIONS) abort();
    if (memchr(r.model, 0, sizeof r.model) == NULL) abort();
    qn_rj_request_free(&r);
    return 0;
}
