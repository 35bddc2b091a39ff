/* fuzz_tokenizer_encode.c — libFuzzer target for encode/decode. A small
 * byte-level tokenizer (all 256 bytes, a few merges, two added tokens) is
 * built once; every input is encoded with and without special-token
 * matching and must decode back to exactly the input bytes (no normalizer),
 * whatever the input: invalid UTF-8, NUL bytes, long runs. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/tokenizer/tokenizer.h"

static const char k_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64(const char *in, size_t n, char *out) {
    size_t k = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(uint8_t)in[i] << 16;
        if (i + 1 < n) v |= (uint32_t)(uint8_t)in[i + 1] << 8;
        if (i + 2 < n) v |= (uint8_t)in[i + 2];
        out[k++] = k_b64[(v >> 18) & 63];
        out[k++] = k_b64[(v >> 12) & 63];
        out[k++] = i + 1 < n ? k_b64[(v >> 6) & 63] : '=';
        out[k++] = i + 2 < n ? k_b64[v & 63] : '=';
    }
    return k;
}

static qn_tokenizer *build(void) {
    static const char *multi[] = {"th", "he", "the", " t", " the", "in", "an", "  ", "    ",
                                  "\n\n", "12", "123", "\xe4\xb8", "\xe4\xb8\xad", "ing", " a"};
    size_t cap = 256 * 16 + 1024;
    char *ranks = malloc(cap), *p = ranks;
    int rank = 0;
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        p += b64(&c, 1, p);
        p += sprintf(p, " %d\n", rank++);
    }
    for (size_t i = 0; i < sizeof multi / sizeof multi[0]; i++) {
        p += b64(multi[i], strlen(multi[i]), p);
        p += sprintf(p, " %d\n", rank++);
    }
    cJSON *cfg = cJSON_Parse("{\"added_tokens_decoder\": {\"300\": {\"content\": \"<|x|>\", "
                             "\"special\": true}, \"301\": {\"content\": \"<|xy|>\", "
                             "\"special\": false}}, \"eos_token\": \"<|x|>\"}");
    qn_tokenizer *t = NULL;
    if (qn_tokenizer_parse_tiktoken(ranks, (size_t)(p - ranks), "<built>", cfg, &t) != QN_OK) {
        fprintf(stderr, "%s\n", qn_last_error());
        abort();
    }
    cJSON_Delete(cfg);
    free(ranks);
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static qn_tokenizer *t;
    if (!t) t = build();
    for (int parse = 0; parse < 2; parse++) {
        qn_encode_opts o = {.split_special = parse, .add_special = false};
        qn_token_ids ids = {0};
        if (qn_tokenizer_encode(t, (const char *)data, size, &o, &ids) != QN_OK) abort();
        char *back;
        size_t bl;
        if (qn_tokenizer_decode(t, ids.ids, ids.n, false, &back, &bl) != QN_OK) abort();
        if (bl != size || memcmp(back, data, size) != 0) abort();
        free(back);
        qn_token_ids_free(&ids);
    }
    return 0;
}
