/* fuzz_envelope.c — the wire codec on arbitrary bytes: decode (size limit,
 * memory budget, version, body and semantic checks), then for anything
 * accepted re-encode, decode again and re-encode once more. Aborts when a
 * rejection carries no message, when an accepted message cannot be
 * re-encoded or re-decoded, or when the second encoding differs from the
 * first (the codec must be a fixed point after one normalising pass).
 * Leaves out transport framing (not part of the codec). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Quench__Envelope *env = NULL;
    qn_clear_error();
    if (qn_envelope_decode(data, size, 0, &env) != QN_OK) {
        if (env != NULL || qn_last_error()[0] == '\0') abort();
        return 0;
    }
    uint8_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    if (qn_envelope_encode_alloc(env, env->request_id, env->sender, &a, &na) != QN_OK) abort();
    Quench__Envelope *again = NULL;
    if (qn_envelope_decode(a, na, 0, &again) != QN_OK) abort();
    if (again->body_case != env->body_case || again->request_id != env->request_id) abort();
    if (qn_envelope_encode_alloc(again, again->request_id, again->sender, &b, &nb) != QN_OK)
        abort();
    if (na != nb || memcmp(a, b, na) != 0) abort();
    free(a);
    free(b);
    qn_envelope_free(again);
    qn_envelope_free(env);
    return 0;
}
