/* fuzz_tokenizer_json.c — libFuzzer target for the tokenizer.json loader
 * (qn_tokenizer_parse_json). Any input must be accepted or refused without a
 * crash or sanitizer report; an accepted tokenizer must encode and decode a
 * fixed text and the input itself, and write a tokenizer.json that loads
 * back with the same merge count. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/tokenizer/tokenizer.h"

static void exercise(const qn_tokenizer *t, const char *text, size_t len) {
    qn_token_ids ids = {0};
    if (qn_tokenizer_encode(t, text, len, NULL, &ids) == QN_OK) {
        char *back;
        size_t bl;
        if (qn_tokenizer_decode(t, ids.ids, ids.n, false, &back, &bl) != QN_OK) abort();
        free(back);
    }
    qn_token_ids_free(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qn_tokenizer *t;
    if (qn_tokenizer_parse_json((const char *)data, size, "<fuzz>", &t) != QN_OK) return 0;
    static const char sample[] = "Hello, world! 你好 🦙 123 <|im_end|>\n\n";
    exercise(t, sample, sizeof sample - 1);
    exercise(t, (const char *)data, size > 4096 ? 4096 : size);
    char path[64];
    snprintf(path, sizeof path, "/tmp/qn-fuzz-tok-%d.json", (int)getpid());
    if (qn_tokenizer_save_json(t, path) == QN_OK) {
        qn_tokenizer *back;
        if (qn_tokenizer_load_json(path, NULL, &back) != QN_OK) abort();
        if (qn_tokenizer_merge_count(back) != qn_tokenizer_merge_count(t)) abort();
        qn_tokenizer_free(back);
    }
    unlink(path);
    qn_tokenizer_free(t);
    return 0;
}
