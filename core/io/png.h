/* png.h — writing 8-bit RGB or palette images as PNG files.
 *
 * A minimal encoder for the charts of `quench plot`: signature, IHDR,
 * PLTE (palette images), one IDAT with the zlib stream of the filtered
 * scanlines, IEND, each chunk with its CRC-32. Every scanline uses filter
 * type 0 (None): chart images are flat colours that deflate compresses
 * well without prediction. Left out: decoding, alpha, 16-bit samples,
 * interlacing, ancillary chunks (gamma, text, time). */
#ifndef QN_CORE_IO_PNG_H
#define QN_CORE_IO_PNG_H

#include <stddef.h>
#include <stdint.h>

#include "quench/status.h"

typedef enum qn_png_format {
    QN_PNG_RGB8 = 0,     /* pixels: 3 bytes per pixel (r, g, b), row-major */
    QN_PNG_PALETTE8 = 1, /* pixels: 1 byte per pixel, an index into palette */
} qn_png_format;

typedef struct qn_png_image {
    uint32_t width, height; /* 1 .. QN_PNG_MAX_SIDE each */
    qn_png_format format;
    const uint8_t *pixels;  /* height rows of width pixels, no row padding */
    const uint8_t *palette; /* PALETTE8 only: n_palette (r, g, b) triples */
    uint32_t n_palette;     /* PALETTE8 only: 1 .. 256 */
} qn_png_image;

/* Larger sides are refused (QN_ERR_TOO_LARGE): a chart never needs more,
 * and it bounds the memory of one image to ~150 MiB. */
#define QN_PNG_MAX_SIDE 8192u

/* Encodes img as a complete PNG file in memory: *out is malloc'd (caller
 * frees) and *out_len its size. QN_ERR_INVALID for a bad size, format,
 * palette, or a palette index >= n_palette (naming the pixel);
 * QN_ERR_NOMEM / QN_ERR_INTERNAL when zlib fails. On failure *out is NULL. */
qn_status qn_png_encode(const qn_png_image *img, uint8_t **out, size_t *out_len);

/* qn_png_encode, then writes the bytes to path (replacing it, through a
 * temporary file in the same folder that is renamed, so a reader never
 * sees half a PNG). QN_ERR_IO naming path when it cannot be written. */
qn_status qn_png_write(const char *path, const qn_png_image *img);

#endif
