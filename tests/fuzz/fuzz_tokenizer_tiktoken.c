/* fuzz_tokenizer_tiktoken.c — libFuzzer target for the tiktoken ranks
 * loader (qn_tokenizer_parse_tiktoken, merges derived from ranks). Must not
 * crash; an accepted tokenizer has no normalizer, so decode(encode(x)) must
 * give x back for a fixed text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qn_tokenizer *t;
    if (qn_tokenizer_parse_tiktoken((const char *)data, size, "<fuzz>", NULL, &t) != QN_OK) return 0;
    static const char sample[] = "Hello, world! 你好 \xf0\x9f\xa6\x99 \xff\xfe 1234567\n\n  x";
    qn_token_ids ids = {0};
    if (qn_tokenizer_encode(t, sample, sizeof sample - 1, NULL, &ids) != QN_OK) abort();
    char *back;
    size_t bl;
    if (qn_tokenizer_decode(t, ids.ids, ids.n, false, &back, &bl) != QN_OK) abort();
    if (bl != sizeof sample - 1 || memcmp(back, sample, bl) != 0) abort();
    free(back);
    qn_token_ids_free(&ids);
    qn_tokenizer_free(t);
    return 0;
}
