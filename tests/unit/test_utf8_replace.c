/* test_utf8_replace.c — qn_utf8_replace_invalid (core/tokenizer/decode_text.c)
 * against Python's bytes.decode("utf-8", errors="replace"): the expected
 * outputs below were printed by CPython 3.11 for these inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/tokenizer/tokenizer.h"

typedef struct vec {
    const char *in;
    size_t in_len;
    const char *want;
} vec;

#define V(in, want) {in, sizeof(in) - 1, want}

static const vec k_vecs[] = {
    V("abc", "abc"),
    V("\xe2\x82", "\xef\xbf\xbd"),             /* a cut 3-byte character: one U+FFFD */
    V("\xe2\x82" "A", "\xef\xbf\xbd" "A"),
    V("a\x80" "b", "a\xef\xbf\xbd" "b"),       /* a lone continuation byte */
    V("\xf0\x9f\x98", "\xef\xbf\xbd"),
    V("\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"), /* valid 4-byte character kept */
    V("\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"), /* a surrogate: 3 subparts */
    V("\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"),                 /* overlong */
    V("\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"), /* > U+10FFFF */
    V("\xe0\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"),
    V("\xff", "\xef\xbf\xbd"),
    V("\xe2\x82\xac\xe2", "\xe2\x82\xac\xef\xbf\xbd"),
};

static void test_vectors(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof k_vecs / sizeof k_vecs[0]; i++) {
        char out[64];
        size_t n = qn_utf8_replace_invalid(k_vecs[i].in, k_vecs[i].in_len, out);
        assert_int_equal(n, strlen(k_vecs[i].want));
        assert_memory_equal(out, k_vecs[i].want, n);
        assert_int_equal(out[n], 0);
    }
}

/* NUL bytes become U+FFFD (the texts are C strings). */
static void test_nul(void **state) {
    (void)state;
    char out[16];
    size_t n = qn_utf8_replace_invalid("a\0b", 3, out);
    assert_int_equal(n, 5);
    assert_memory_equal(out, "a\xef\xbf\xbd" "b", 5);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_nul),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
