/* decode_text.c — token ids to text that is valid UTF-8, for the places
 * where text goes into JSON or protobuf strings (the router's HTTP answers,
 * the buffer's and evaluator's response texts, prompt texts): a byte-level
 * tokenizer can cut a character between tokens, and a model can emit a lone
 * byte token. Invalid input is replaced the way Python's
 * bytes.decode("utf-8", errors="replace") does it, which is what Hugging
 * Face's decode returns: one U+FFFD per maximal subpart of an ill-formed
 * sequence (Unicode 15, section 3.9, "U+FFFD Substitution of Maximal
 * Subparts"). NUL bytes are replaced too: the texts are C strings. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/tokenizer/tokenizer.h"

/* Allowed range of the second byte after a lead byte (Table 3-7); later
 * continuation bytes are always 0x80..0xBF. Returns the sequence length, 0
 * for a byte that cannot start one. */
static size_t lead(unsigned c, unsigned *lo, unsigned *hi) {
    *lo = 0x80, *hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c == 0xE0) return *lo = 0xA0, 3;
    if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return 3;
    if (c == 0xED) return *hi = 0x9F, 3;
    if (c == 0xF0) return *lo = 0x90, 4;
    if (c >= 0xF1 && c <= 0xF3) return 4;
    if (c == 0xF4) return *hi = 0x8F, 4;
    return 0;
}

size_t qn_utf8_replace_invalid(const char *in, size_t len, char *out) {
    const unsigned char *s = (const unsigned char *)in;
    size_t k = 0;
    for (size_t i = 0; i < len;) {
        unsigned c = s[i];
        if (c > 0 && c < 0x80) {
            out[k++] = (char)c;
            i++;
            continue;
        }
        unsigned lo, hi;
        size_t need = c ? lead(c, &lo, &hi) : 0, j = 1;
        while (j < need && i + j < len && s[i + j] >= lo && s[i + j] <= hi) {
            j++;
            lo = 0x80, hi = 0xBF;
        }
        if (need && j == need) {
            memcpy(out + k, s + i, need);
            k += need;
        } else {
            memcpy(out + k, "\xEF\xBF\xBD", 3);
            k += 3;
        }
        i += j;
    }
    out[k] = 0;
    return k;
}

qn_status qn_tokenizer_decode_text(const qn_tokenizer *tok, const int32_t *ids, size_t n,
                                   bool skip_special, char **text, size_t *len) {
    char *raw = NULL;
    size_t rl = 0;
    *text = NULL;
    *len = 0;
    qn_status s = qn_tokenizer_decode(tok, ids, n, skip_special, &raw, &rl);
    if (s != QN_OK) {
        free(raw);
        return s;
    }
    char *out = malloc(rl * 3 + 1); /* every byte can become 3 */
    if (!out) {
        free(raw);
        return qn_fail(QN_ERR_NOMEM, "decode: %zu bytes", rl);
    }
    *len = qn_utf8_replace_invalid(raw, rl, out);
    free(raw);
    *text = out;
    return QN_OK;
}
