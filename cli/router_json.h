/* router_json.h — the JSON bodies of the router's HTTP API (`quench
 * router`, docs/services.md "HTTP API"): request bodies of POST /generate
 * (SGLang's shape) and POST /v1/completions (OpenAI's shape) turned into one
 * generation request, every field type- and range-checked.
 *
 * Parsing is separate from the server so that it can be fuzzed on byte
 * strings (tests/fuzz/fuzz_router_json.c includes router_json.c, since cli/
 * is linked only into the quench binary). Leaves out: batched prompts
 * (a list of prompts in one call), OpenAI's echo, best_of, suffix and
 * top-logprob alternatives and SGLang's image inputs. */
#ifndef QN_CLI_ROUTER_JSON_H
#define QN_CLI_ROUTER_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quench/status.h"

typedef enum qn_rapi {
    QN_RAPI_GENERATE = 0,    /* POST /generate */
    QN_RAPI_COMPLETIONS = 1, /* POST /v1/completions */
} qn_rapi;

/* Bounds on what one HTTP request may ask for. */
#define QN_RJ_MAX_INPUT_IDS (1u << 20)
#define QN_RJ_MAX_NEW_TOKENS (1 << 20)
#define QN_RJ_MAX_N 64u
#define QN_RJ_MAX_STOP 16u
#define QN_RJ_MAX_STOP_LEN 1024u
#define QN_RJ_MAX_STOP_IDS 1024u

/* One parsed request. Arrays and strings are malloc'd and owned (release
 * with qn_rj_request_free). Exactly one of input_ids (n_input > 0) and text
 * (non-NULL) is set: text needs a tokenizer, which the caller applies. */
typedef struct qn_rj_request {
    qn_rapi api;
    int32_t *input_ids;
    size_t n_input;
    char *text;
    /* sampling parameters in the wire convention (quench.proto SamplingParams) */
    float temperature, top_p, min_p;
    int32_t top_k, max_new_tokens;
    uint64_t seed;
    bool has_seed;
    uint32_t n;
    char **stop;
    size_t n_stop;
    int32_t *stop_ids;
    size_t n_stop_ids;
    bool return_logprob;
    bool stream;     /* server-sent events, token by token */
    char model[128]; /* completions: echoed back; "quench" when absent */
} qn_rj_request;

/* Parses body[0..len) (not NUL-terminated) as the JSON body of `api`.
 * QN_OK fills *out; otherwise *out owns nothing and qn_last_error() names
 * the problem for a 400 answer: "body is not valid JSON", "missing prompt
 * (\"text\" or \"input_ids\")", "sampling_params.temperature: expected a
 * finite number >= 0", ... (QN_ERR_FORMAT for types, QN_ERR_RANGE for
 * values out of bounds). Unknown fields are ignored, as SGLang and OpenAI
 * servers do. */
qn_status qn_rj_parse(qn_rapi api, const char *body, size_t len, qn_rj_request *out);

void qn_rj_request_free(qn_rj_request *r);

#endif
