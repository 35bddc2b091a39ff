/* test_png.c — core/io/png.h: images written to a file decode back, with an
 * independent reader here (bitwise CRC-32, zlib inflate, filter 0..4), to
 * the same size, colour type and every pixel; chunk CRCs are checked;
 * bad inputs are refused. Also the raster pieces of core/io/chart.h that a
 * PNG test can see: clipped lines stay inside their rectangle and text
 * puts ink where the glyph is. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "core/io/chart.h"
#include "core/io/png.h"
#include "tests/test_util.h"

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* CRC-32 (ISO 3309, reflected 0xEDB88320), one bit at a time: written here
 * so that the test does not share the encoder's implementation. */
static uint32_t crc32_bitwise(const uint8_t *a, size_t na, const uint8_t *b, size_t nb) {
    uint32_t c = 0xffffffffu;
    for (size_t part = 0; part < 2; part++) {
        const uint8_t *p = part ? b : a;
        size_t n = part ? nb : na;
        for (size_t i = 0; i < n; i++) {
            c ^= p[i];
            for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
        }
    }
    return c ^ 0xffffffffu;
}

typedef struct decoded {
    uint32_t w, h;
    int color_type;
    uint8_t *pixels; /* RGB or indices */
    uint8_t plte[768];
    uint32_t n_plte;
    int n_chunks;
} decoded;

static int paeth(int a, int b, int c) {
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/* A strict reader for what png.c writes: fails the test on anything wrong. */
static void decode(const uint8_t *f, size_t n, decoded *d) {
    static const uint8_t sig[8] = {0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a};
    memset(d, 0, sizeof *d);
    assert_true(n >= 8);
    assert_memory_equal(f, sig, 8);
    size_t pos = 8;
    uint8_t *idat = NULL;
    size_t idat_n = 0;
    int seen_ihdr = 0, seen_iend = 0;
    while (pos < n) {
        assert_true(pos + 12 <= n);
        uint32_t len = rd32(f + pos);
        assert_true(pos + 12 + len <= n);
        const uint8_t *type = f + pos + 4, *data = f + pos + 8;
        uint32_t crc = rd32(data + len);
        assert_int_equal(crc, crc32_bitwise(type, 4, data, len));
        d->n_chunks++;
        if (memcmp(type, "IHDR", 4) == 0) {
            assert_int_equal(d->n_chunks, 1);
            assert_int_equal(len, 13);
            d->w = rd32(data);
            d->h = rd32(data + 4);
            assert_int_equal(data[8], 8);
            d->color_type = data[9];
            assert_int_equal(data[10], 0);
            assert_int_equal(data[11], 0);
            assert_int_equal(data[12], 0);
            seen_ihdr = 1;
        } else if (memcmp(type, "PLTE", 4) == 0) {
            assert_true(len % 3 == 0 && len <= 768 && len > 0);
            memcpy(d->plte, data, len);
            d->n_plte = len / 3;
        } else if (memcmp(type, "IDAT", 4) == 0) {
            idat = realloc(idat, idat_n + len + 1);
            memcpy(idat + idat_n, data, len);
            idat_n += len;
        } else if (memcmp(type, "IEND", 4) == 0) {
            assert_int_equal(len, 0);
            seen_iend = 1;
            pos += 12;
            break;
        } else {
            fail_msg("unexpected chunk %.4s", (const char *)type);
        }
        pos += 12 + len;
    }
    assert_true(seen_ihdr && seen_iend);
    assert_int_equal(pos, n); /* nothing after IEND */
    assert_true(d->color_type == 2 || d->color_type == 3);
    if (d->color_type == 3) assert_true(d->n_plte > 0);
    size_t bpp = d->color_type == 2 ? 3 : 1, row = d->w * bpp;
    uLongf raw_n = (uLongf)((row + 1) * d->h);
    uint8_t *raw = malloc(raw_n + 1);
    uLongf got = raw_n + 1;
    assert_int_equal(uncompress(raw, &got, idat, (uLong)idat_n), Z_OK);
    assert_int_equal(got, raw_n);
    d->pixels = malloc(row * d->h);
    for (size_t y = 0; y < d->h; y++) {
        int ft = raw[y * (row + 1)];
        assert_true(ft >= 0 && ft <= 4);
        const uint8_t *src = raw + y * (row + 1) + 1;
        uint8_t *dst = d->pixels + y * row;
        const uint8_t *up = y ? d->pixels + (y - 1) * row : NULL;
        for (size_t i = 0; i < row; i++) {
            int a = i >= bpp ? dst[i - bpp] : 0, b = up ? up[i] : 0;
            int c = (up && i >= bpp) ? up[i - bpp] : 0;
            int pred = ft == 0   ? 0
                       : ft == 1 ? a
                       : ft == 2 ? b
                       : ft == 3 ? (a + b) / 2
                                 : paeth(a, b, c);
            dst[i] = (uint8_t)(src[i] + pred);
        }
    }
    free(raw);
    free(idat);
}

static uint8_t *read_all(const char *path, size_t *n) {
    return (uint8_t *)qn_test_read_file(path, n);
}

static void test_rgb_roundtrip(void **state) {
    enum { W = 37, H = 11 };
    uint8_t px[W * H * 3];
    for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)(i * 7 + (i / 3) * 13);
    qn_png_image img = {.width = W, .height = H, .format = QN_PNG_RGB8, .pixels = px};
    const char *path = qn_test_path("rgb.png");
    assert_int_equal(qn_png_write(path, &img), QN_OK);
    size_t n;
    uint8_t *f = read_all(path, &n);
    decoded d;
    decode(f, n, &d);
    assert_int_equal(d.w, W);
    assert_int_equal(d.h, H);
    assert_int_equal(d.color_type, 2);
    for (size_t i = 0; i < sizeof px; i++)
        if (d.pixels[i] != px[i]) fail_msg("byte %zu: got %u want %u", i, d.pixels[i], px[i]);
    free(d.pixels);
    free(f);
}

static void test_palette_roundtrip(void **state) {
    enum { W = 5, H = 4 };
    uint8_t pal[3 * 3] = {255, 255, 255, 10, 20, 30, 200, 100, 0};
    uint8_t px[W * H];
    for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)((i * 5 + i / W) % 3);
    qn_png_image img = {.width = W, .height = H, .format = QN_PNG_PALETTE8, .pixels = px,
                        .palette = pal, .n_palette = 3};
    uint8_t *f = NULL;
    size_t n = 0;
    assert_int_equal(qn_png_encode(&img, &f, &n), QN_OK);
    decoded d;
    decode(f, n, &d);
    assert_int_equal(d.color_type, 3);
    assert_int_equal(d.n_plte, 3);
    assert_memory_equal(d.plte, pal, sizeof pal);
    assert_int_equal(d.w, W);
    assert_int_equal(d.h, H);
    assert_memory_equal(d.pixels, px, sizeof px);
    free(d.pixels);
    free(f);
}

static void test_bad_images(void **state) {
    uint8_t px[4] = {0, 1, 2, 3}, pal[6] = {0};
    uint8_t *f = (uint8_t *)1;
    size_t n = 1;
    qn_png_image img = {.width = 0, .height = 1, .format = QN_PNG_RGB8, .pixels = px};
    assert_int_equal(qn_png_encode(&img, &f, &n), QN_ERR_INVALID);
    assert_null(f);
    img = (qn_png_image){.width = QN_PNG_MAX_SIDE + 1, .height = 1, .format = QN_PNG_RGB8,
                         .pixels = px};
    assert_int_equal(qn_png_encode(&img, &f, &n), QN_ERR_TOO_LARGE);
    /* index 2 and 3 are outside a 2-colour palette: the message names a pixel */
    img = (qn_png_image){.width = 4, .height = 1, .format = QN_PNG_PALETTE8, .pixels = px,
                         .palette = pal, .n_palette = 2};
    assert_int_equal(qn_png_encode(&img, &f, &n), QN_ERR_INVALID);
    assert_non_null(strstr(qn_last_error(), "(2, 0)"));
    img.n_palette = 0;
    assert_int_equal(qn_png_encode(&img, &f, &n), QN_ERR_INVALID);
    img = (qn_png_image){.width = 1, .height = 1, .format = QN_PNG_RGB8, .pixels = px};
    assert_int_equal(qn_png_write(qn_test_path("no/such/dir/x.png"), &img), QN_ERR_IO);
    assert_non_null(strstr(qn_last_error(), "no/such/dir/x.png"));
}

static int is_col(const qn_canvas *c, int x, int y, qn_rgb k) {
    const uint8_t *p = c->rgb + ((size_t)y * c->w + x) * 3;
    return p[0] == k.r && p[1] == k.g && p[2] == k.b;
}

static void test_canvas_clip_and_text(void **state) {
    qn_canvas c;
    qn_rgb bg = {255, 255, 255}, ink = {1, 2, 3};
    assert_int_equal(qn_canvas_init(&c, 60, 40, bg), QN_OK);
    qn_rect r = {10, 10, 30, 20};
    /* a long diagonal and a far-away horizontal: ink only inside r */
    qn_canvas_line(&c, -1000, -1000, 1000, 1000, &r, ink, true);
    qn_canvas_line(&c, -5e9, 15, 5e9, 15, &r, ink, false);
    int inside = 0;
    for (int y = 0; y < c.h; y++)
        for (int x = 0; x < c.w; x++)
            if (is_col(&c, x, y, ink)) {
                if (x < r.x0 || x >= r.x1 || y < r.y0 || y >= r.y1)
                    fail_msg("ink outside the clip rectangle at (%d, %d)", x, y);
                inside++;
            }
    /* the horizontal covers the rectangle's width; the diagonal adds more */
    assert_true(inside > r.x1 - r.x0);
    for (int x = r.x0; x < r.x1; x++) assert_true(is_col(&c, x, 15, ink));
    qn_canvas_free(&c);

    /* "1" at scale 1: its stem is the middle column of the cell, its base
     * three wide; the cell to its right stays blank */
    assert_int_equal(qn_canvas_init(&c, 20, 10, bg), QN_OK);
    qn_canvas_text(&c, 0, 0, "1", 1, ink, false);
    for (int y = 0; y < 7; y++) assert_true(is_col(&c, 2, y, ink));
    assert_true(is_col(&c, 1, 6, ink) && is_col(&c, 3, 6, ink));
    assert_false(is_col(&c, 4, 3, ink));
    for (int y = 0; y < c.h; y++)
        for (int x = 5; x < c.w; x++) assert_false(is_col(&c, x, y, ink));
    assert_int_equal(qn_canvas_text_width("12", 2), 22);
    qn_canvas_free(&c);
}

static void test_ticks(void **state) {
    double t[64], step;
    size_t n = qn_chart_ticks(0.03, 0.97, 6, 0, t, 64, &step);
    assert_true(n >= 4 && n <= 8);
    for (size_t i = 0; i < n; i++) {
        assert_true(t[i] >= 0.03 && t[i] <= 0.97);
        if (i) assert_true(t[i] > t[i - 1]);
    }
    /* 1, 2 or 5 times a power of ten */
    double m = step / pow(10, floor(log10(step)));
    assert_true(fabs(m - 1) < 1e-9 || fabs(m - 2) < 1e-9 || fabs(m - 5) < 1e-9);
    /* integer x axes: a minimum step of 1 */
    n = qn_chart_ticks(-0.2, 2.2, 8, 1, t, 64, &step);
    assert_true(step >= 1);
    char buf[32];
    qn_chart_format_tick(0.25, 0.05, buf, sizeof buf);
    assert_string_equal(buf, "0.25");
    qn_chart_format_tick(1200, 200, buf, sizeof buf);
    assert_string_equal(buf, "1200");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rgb_roundtrip),
        cmocka_unit_test(test_palette_roundtrip),
        cmocka_unit_test(test_bad_images),
        cmocka_unit_test(test_canvas_clip_and_text),
        cmocka_unit_test(test_ticks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
