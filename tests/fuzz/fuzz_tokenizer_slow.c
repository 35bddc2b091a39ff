/* fuzz_tokenizer_slow.c — libFuzzer target for the vocab.json + merges.txt
 * loader (qn_tokenizer_parse_slow). The input is the vocab.json text, a NUL
 * byte, then the merges.txt text. Must not crash; an accepted tokenizer must
 * encode and decode a fixed text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t vl = nul ? (size_t)(nul - data) : size;
    const char *merges = nul ? (const char *)nul + 1 : "";
    size_t ml = nul ? size - vl - 1 : 0;
    qn_tokenizer *t;
    if (qn_tokenizer_parse_slow((const char *)data, vl, merges, ml, "<fuzz>", NULL, &t) != QN_OK)
        return 0;
    static const char sample[] = "Hello, world! e\xcc\x81 \xff 123  \n";
    qn_token_ids ids = {0};
    if (qn_tokenizer_encode(t, sample, sizeof sample - 1, NULL, &ids) != QN_OK) abort();
    char *back;
    size_t bl;
    if (qn_tokenizer_decode(t, ids.ids, ids.n, false, &back, &bl) != QN_OK) abort();
    free(back);
    qn_token_ids_free(&ids);
    qn_tokenizer_free(t);
    return 0;
}
