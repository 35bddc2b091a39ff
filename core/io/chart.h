/* chart.h — a small raster canvas and line charts drawn on it, for the PNG
 * charts of `quench plot` (written with core/io/png.h).
 *
 * The canvas is 8-bit RGB. It draws clipped lines (Bresenham, optionally 2
 * pixels thick), filled rectangles and text in a built-in 5x7 bitmap font
 * (digits, upper-case letters, a few symbols; lower case is drawn as upper
 * case, anything else as '?'), scaled by an integer factor, horizontal or
 * rotated a quarter turn. A chart is a title, an x and a y axis with "nice"
 * tick values (1, 2 or 5 times a power of ten) and grid lines, one
 * polyline per series (optionally with square markers), and a legend when
 * there are several series. Left out: anti-aliasing, fills under curves,
 * log axes, stacked areas. */
#ifndef QN_CORE_IO_CHART_H
#define QN_CORE_IO_CHART_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quench/status.h"

typedef struct qn_rgb {
    uint8_t r, g, b;
} qn_rgb;

typedef struct qn_canvas {
    int32_t w, h;
    uint8_t *rgb; /* h rows of w pixels, 3 bytes each */
} qn_canvas;

/* A rectangle [x0, x1) x [y0, y1) in pixels. */
typedef struct qn_rect {
    int32_t x0, y0, x1, y1;
} qn_rect;

/* Allocates a w x h canvas (1..8192 a side) filled with bg. */
qn_status qn_canvas_init(qn_canvas *c, int32_t w, int32_t h, qn_rgb bg);
void qn_canvas_free(qn_canvas *c); /* NULL ok */

/* Sets one pixel; outside the canvas nothing happens. */
void qn_canvas_put(qn_canvas *c, int32_t x, int32_t y, qn_rgb col);

/* Fills [x, x+w) x [y, y+h), clipped to the canvas. */
void qn_canvas_fill_rect(qn_canvas *c, int32_t x, int32_t y, int32_t w, int32_t h, qn_rgb col);

/* A straight line between two points in pixel coordinates (fractions are
 * rounded), clipped to clip (NULL: the canvas) before rasterising, so that
 * endpoints far outside (or non-finite: the line is dropped) cost nothing.
 * thick draws a 2x2 pen. */
void qn_canvas_line(qn_canvas *c, double x0, double y0, double x1, double y1, const qn_rect *clip,
                    qn_rgb col, bool thick);

/* Width and height in pixels of text drawn at scale (glyph cells are 6x8
 * units: 5x7 plus one spacing column and row). */
int32_t qn_canvas_text_width(const char *text, int32_t scale);
int32_t qn_canvas_text_height(int32_t scale);

/* Draws text with its top-left corner at (x, y). vertical turns it a
 * quarter turn counter-clockwise (reads bottom to top): (x, y) is then the
 * bottom-left corner. Clipped to the canvas. */
void qn_canvas_text(qn_canvas *c, int32_t x, int32_t y, const char *text, int32_t scale,
                    qn_rgb col, bool vertical);

typedef struct qn_chart_series {
    const char *name; /* legend text */
    const double *x, *y;
    size_t n;         /* non-finite points are skipped and break the line */
    qn_rgb color;
    bool markers;     /* square markers at the points as well as the line */
} qn_chart_series;

typedef struct qn_chart {
    const char *title;
    const char *x_label, *y_label; /* may be NULL */
    const qn_chart_series *series;
    size_t n_series;
    bool legend;      /* draw the legend (a box in the corner of the plot area that hides
                       * the fewest series pixels) */
    bool y_from_zero; /* the y axis includes 0 (durations, throughputs) */
} qn_chart;

/* Draws ch over the whole canvas (cleared to white first). The axes span
 * the finite points of all series, padded a little; a constant series gets
 * a range around its value. QN_ERR_INVALID when no series has a finite
 * point or the canvas is smaller than 160x120; QN_ERR_RANGE when the values
 * span more than a double holds (-1e308 .. 1e308). */
qn_status qn_chart_render(const qn_chart *ch, qn_canvas *c);

/* The tick values of an axis over [lo, hi] (lo < hi, both finite): about
 * `target` values k*step inside the range, step 1, 2 or 5 times a power of
 * ten and at least min_step (0: no minimum). Writes up to cap values to
 * ticks and returns how many; *step_out gets the step. */
size_t qn_chart_ticks(double lo, double hi, int target, double min_step, double *ticks, size_t cap,
                      double *step_out);

/* A tick label for v on an axis with the given step: fixed point with as
 * many decimals as the step needs ("0.25", "1200"), or 3 significant digits
 * with an exponent for very large or small magnitudes ("1.5e+07"). */
void qn_chart_format_tick(double v, double step, char *buf, size_t cap);

#endif
