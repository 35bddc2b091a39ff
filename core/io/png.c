/* png.c — see png.h. The layout follows the PNG specification (ISO/IEC
 * 15948): big-endian lengths, chunk CRC-32 over type and data, zlib
 * (RFC 1950) stream in IDAT. Deflate and the CRC come from zlib. */
#include "core/io/png.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

static const uint8_t k_signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static int buf_put(buf *b, const void *data, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) return 0;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
    return 1;
}

static void be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* length, type, data, CRC-32 of type + data */
static int put_chunk(buf *b, const char type[4], const uint8_t *data, size_t n) {
    uint8_t hdr[8], crc_be[4];
    be32(hdr, (uint32_t)n);
    memcpy(hdr + 4, type, 4);
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, (const Bytef *)type, 4);
    if (n) crc = crc32(crc, data, (uInt)n);
    be32(crc_be, (uint32_t)crc);
    return buf_put(b, hdr, 8) && (n == 0 || buf_put(b, data, n)) && buf_put(b, crc_be, 4);
}

static qn_status check_image(const qn_png_image *img) {
    if (!img || !img->pixels) return qn_fail(QN_ERR_INVALID, "png: no pixels");
    if (img->width == 0 || img->height == 0)
        return qn_fail(QN_ERR_INVALID, "png: empty image %ux%u", img->width, img->height);
    if (img->width > QN_PNG_MAX_SIDE || img->height > QN_PNG_MAX_SIDE)
        return qn_fail(QN_ERR_TOO_LARGE, "png: image %ux%u exceeds %u pixels a side", img->width,
                       img->height, QN_PNG_MAX_SIDE);
    if (img->format == QN_PNG_RGB8) return QN_OK;
    if (img->format != QN_PNG_PALETTE8)
        return qn_fail(QN_ERR_INVALID, "png: unknown pixel format %d", (int)img->format);
    if (!img->palette || img->n_palette == 0 || img->n_palette > 256)
        return qn_fail(QN_ERR_INVALID, "png: palette of %u colours (want 1..256)", img->n_palette);
    for (uint32_t y = 0; y < img->height; y++)
        for (uint32_t x = 0; x < img->width; x++) {
            uint8_t v = img->pixels[(size_t)y * img->width + x];
            if (v >= img->n_palette)
                return qn_fail(QN_ERR_INVALID, "png: pixel (%u, %u) has index %u, palette has %u",
                               x, y, v, img->n_palette);
        }
    return QN_OK;
}

/* The filtered scanlines (a 0 filter byte before each row), deflated. */
static qn_status deflate_rows(const qn_png_image *img, uint8_t **out, size_t *out_len) {
    size_t bpp = img->format == QN_PNG_RGB8 ? 3 : 1;
    size_t row = (size_t)img->width * bpp;
    size_t raw_len = (row + 1) * img->height;
    uint8_t *raw = malloc(raw_len);
    if (!raw) return qn_fail(QN_ERR_NOMEM, "png: %zu bytes of scanlines", raw_len);
    for (size_t y = 0; y < img->height; y++) {
        raw[y * (row + 1)] = 0;
        memcpy(raw + y * (row + 1) + 1, img->pixels + y * row, row);
    }
    uLongf z_len = compressBound((uLong)raw_len);
    uint8_t *z = malloc(z_len);
    if (!z) {
        free(raw);
        return qn_fail(QN_ERR_NOMEM, "png: %lu bytes for deflate", (unsigned long)z_len);
    }
    int rc = compress2(z, &z_len, raw, (uLong)raw_len, Z_BEST_COMPRESSION);
    free(raw);
    if (rc != Z_OK) {
        free(z);
        return qn_fail(rc == Z_MEM_ERROR ? QN_ERR_NOMEM : QN_ERR_INTERNAL,
                       "png: zlib compress2 failed (%d)", rc);
    }
    *out = z;
    *out_len = z_len;
    return QN_OK;
}

qn_status qn_png_encode(const qn_png_image *img, uint8_t **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    QN_CHECK(check_image(img));
    uint8_t *z = NULL;
    size_t z_len = 0;
    QN_CHECK(deflate_rows(img, &z, &z_len));

    uint8_t ihdr[13];
    be32(ihdr, img->width);
    be32(ihdr + 4, img->height);
    ihdr[8] = 8;                                     /* bit depth */
    ihdr[9] = img->format == QN_PNG_RGB8 ? 2 : 3;    /* colour type: truecolour / indexed */
    ihdr[10] = 0;                                    /* compression: deflate */
    ihdr[11] = 0;                                    /* filter method 0 */
    ihdr[12] = 0;                                    /* no interlace */
    buf b = {0};
    int ok = buf_put(&b, k_signature, sizeof k_signature) && put_chunk(&b, "IHDR", ihdr, 13);
    if (ok && img->format == QN_PNG_PALETTE8)
        ok = put_chunk(&b, "PLTE", img->palette, (size_t)img->n_palette * 3);
    ok = ok && put_chunk(&b, "IDAT", z, z_len) && put_chunk(&b, "IEND", NULL, 0);
    free(z);
    if (!ok) {
        free(b.p);
        return qn_fail(QN_ERR_NOMEM, "png: out of memory assembling chunks");
    }
    *out = b.p;
    *out_len = b.n;
    return QN_OK;
}

qn_status qn_png_write(const char *path, const qn_png_image *img) {
    uint8_t *data = NULL;
    size_t len = 0;
    qn_status s = qn_png_encode(img, &data, &len);
    if (s != QN_OK) return qn_fail(s, "%s: %s", path, qn_last_error());
    size_t tn = strlen(path) + 16;
    char *tmp = malloc(tn);
    if (!tmp) {
        free(data);
        return qn_fail(QN_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(tmp, tn, "%s.tmp%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    int ok = f != NULL && fwrite(data, 1, len, f) == len;
    if (f && fclose(f) != 0) ok = 0;
    free(data);
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        free(tmp);
        return qn_fail(QN_ERR_IO, "%s: cannot write", path);
    }
    free(tmp);
    return QN_OK;
}
