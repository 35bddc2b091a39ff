/* chart.c — see chart.h. The glyphs below were drawn for quench on a 5x7
 * grid ('#' = ink); they are data, looked up by character. */
#include "core/io/chart.h"

#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct glyph {
    char ch;
    const char *rows[7];
} glyph;

static const glyph k_font[] = {
    {' ', {".....", ".....", ".....", ".....", ".....", ".....", "....."}},
    {'0', {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."}},
    {'1', {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."}},
    {'2', {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"}},
    {'3', {"#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."}},
    {'4', {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."}},
    {'5', {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."}},
    {'6', {"..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."}},
    {'7', {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."}},
    {'8', {".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."}},
    {'9', {".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."}},
    {'A', {".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"}},
    {'B', {"####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."}},
    {'C', {".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."}},
    {'D', {"###..", "#..#.", "#...#", "#...#", "#...#", "#..#.", "###.."}},
    {'E', {"#####", "#....", "#....", "####.", "#....", "#....", "#####"}},
    {'F', {"#####", "#....", "#....", "####.", "#....", "#....", "#...."}},
    {'G', {".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"}},
    {'H', {"#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"}},
    {'I', {".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."}},
    {'J', {"..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."}},
    {'K', {"#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"}},
    {'L', {"#....", "#....", "#....", "#....", "#....", "#....", "#####"}},
    {'M', {"#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"}},
    {'N', {"#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"}},
    {'O', {".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."}},
    {'P', {"####.", "#...#", "#...#", "####.", "#....", "#....", "#...."}},
    {'Q', {".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"}},
    {'R', {"####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"}},
    {'S', {".####", "#....", "#....", ".###.", "....#", "....#", "####."}},
    {'T', {"#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."}},
    {'U', {"#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."}},
    {'V', {"#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."}},
    {'W', {"#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."}},
    {'X', {"#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"}},
    {'Y', {"#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."}},
    {'Z', {"#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"}},
    {'.', {".....", ".....", ".....", ".....", ".....", ".##..", ".##.."}},
    {',', {".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."}},
    {'-', {".....", ".....", ".....", ".###.", ".....", ".....", "....."}},
    {'+', {".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."}},
    {'/', {"....#", "....#", "...#.", "..#..", ".#...", "#....", "#...."}},
    {'_', {".....", ".....", ".....", ".....", ".....", ".....", "#####"}},
    {'(', {"...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."}},
    {')', {".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."}},
    {':', {".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."}},
    {'%', {"##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"}},
    {'=', {".....", ".....", "#####", ".....", "#####", ".....", "....."}},
    {'?', {".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."}},
};

static const glyph *find_glyph(char ch) {
    char up = (char)toupper((unsigned char)ch);
    const glyph *unknown = NULL;
    for (size_t i = 0; i < sizeof k_font / sizeof k_font[0]; i++) {
        if (k_font[i].ch == up) return &k_font[i];
        if (k_font[i].ch == '?') unknown = &k_font[i];
    }
    return unknown;
}

enum { GLYPH_W = 5, GLYPH_H = 7, CELL_W = 6, CELL_H = 8 };

qn_status qn_canvas_init(qn_canvas *c, int32_t w, int32_t h, qn_rgb bg) {
    memset(c, 0, sizeof *c);
    if (w < 1 || h < 1 || w > 8192 || h > 8192)
        return qn_fail(QN_ERR_INVALID, "canvas: size %dx%d outside 1..8192", (int)w, (int)h);
    c->rgb = malloc((size_t)w * (size_t)h * 3);
    if (!c->rgb) return qn_fail(QN_ERR_NOMEM, "canvas: %dx%d pixels", (int)w, (int)h);
    c->w = w;
    c->h = h;
    qn_canvas_fill_rect(c, 0, 0, w, h, bg);
    return QN_OK;
}

void qn_canvas_free(qn_canvas *c) {
    if (!c) return;
    free(c->rgb);
    memset(c, 0, sizeof *c);
}

void qn_canvas_put(qn_canvas *c, int32_t x, int32_t y, qn_rgb col) {
    if (x < 0 || y < 0 || x >= c->w || y >= c->h) return;
    uint8_t *p = c->rgb + ((size_t)y * (size_t)c->w + (size_t)x) * 3;
    p[0] = col.r;
    p[1] = col.g;
    p[2] = col.b;
}

void qn_canvas_fill_rect(qn_canvas *c, int32_t x, int32_t y, int32_t w, int32_t h, qn_rgb col) {
    int64_t x0 = x < 0 ? 0 : x, y0 = y < 0 ? 0 : y;
    int64_t x1 = (int64_t)x + w, y1 = (int64_t)y + h;
    if (x1 > c->w) x1 = c->w;
    if (y1 > c->h) y1 = c->h;
    for (int64_t yy = y0; yy < y1; yy++)
        for (int64_t xx = x0; xx < x1; xx++) qn_canvas_put(c, (int32_t)xx, (int32_t)yy, col);
}

/* Liang-Barsky: shrinks the parametric segment to the part inside
 * [xmin, xmax] x [ymin, ymax]; false when nothing is left. */
static bool clip_segment(double *x0, double *y0, double *x1, double *y1, double xmin, double ymin,
                         double xmax, double ymax) {
    double dx = *x1 - *x0, dy = *y1 - *y0, t0 = 0, t1 = 1;
    double p[4] = {-dx, dx, -dy, dy};
    double q[4] = {*x0 - xmin, xmax - *x0, *y0 - ymin, ymax - *y0};
    for (int i = 0; i < 4; i++) {
        if (p[i] == 0) {
            if (q[i] < 0) return false;
            continue;
        }
        double t = q[i] / p[i];
        if (p[i] < 0) {
            if (t > t1) return false;
            if (t > t0) t0 = t;
        } else {
            if (t < t0) return false;
            if (t < t1) t1 = t;
        }
    }
    double ax = *x0, ay = *y0;
    *x0 = ax + t0 * dx;
    *y0 = ay + t0 * dy;
    *x1 = ax + t1 * dx;
    *y1 = ay + t1 * dy;
    return true;
}

static bool in_rect(const qn_rect *r, int32_t x, int32_t y) {
    return x >= r->x0 && x < r->x1 && y >= r->y0 && y < r->y1;
}

void qn_canvas_line(qn_canvas *c, double x0, double y0, double x1, double y1, const qn_rect *clip,
                    qn_rgb col, bool thick) {
    if (!isfinite(x0) || !isfinite(y0) || !isfinite(x1) || !isfinite(y1)) return;
    qn_rect r = clip ? *clip : (qn_rect){0, 0, c->w, c->h};
    if (r.x0 < 0) r.x0 = 0;
    if (r.y0 < 0) r.y0 = 0;
    if (r.x1 > c->w) r.x1 = c->w;
    if (r.y1 > c->h) r.y1 = c->h;
    if (r.x0 >= r.x1 || r.y0 >= r.y1) return;
    if (!clip_segment(&x0, &y0, &x1, &y1, r.x0, r.y0, r.x1 - 1, r.y1 - 1)) return;
    int32_t ax = (int32_t)lround(x0), ay = (int32_t)lround(y0);
    int32_t bx = (int32_t)lround(x1), by = (int32_t)lround(y1);
    int32_t dx = abs(bx - ax), dy = -abs(by - ay);
    int32_t sx = ax < bx ? 1 : -1, sy = ay < by ? 1 : -1;
    int32_t err = dx + dy;
    for (;;) {
        if (in_rect(&r, ax, ay)) qn_canvas_put(c, ax, ay, col);
        if (thick) {
            if (in_rect(&r, ax + 1, ay)) qn_canvas_put(c, ax + 1, ay, col);
            if (in_rect(&r, ax, ay + 1)) qn_canvas_put(c, ax, ay + 1, col);
            if (in_rect(&r, ax + 1, ay + 1)) qn_canvas_put(c, ax + 1, ay + 1, col);
        }
        if (ax == bx && ay == by) break;
        int32_t e2 = 2 * err;
        if (e2 >= dy) {
            err += dy;
            ax += sx;
        }
        if (e2 <= dx) {
            err += dx;
            ay += sy;
        }
    }
}

int32_t qn_canvas_text_width(const char *text, int32_t scale) {
    size_t n = strlen(text);
    return n == 0 ? 0 : (int32_t)(n * CELL_W - 1) * scale;
}

int32_t qn_canvas_text_height(int32_t scale) { return GLYPH_H * scale; }

void qn_canvas_text(qn_canvas *c, int32_t x, int32_t y, const char *text, int32_t scale,
                    qn_rgb col, bool vertical) {
    for (size_t i = 0; text[i]; i++) {
        const glyph *g = find_glyph(text[i]);
        int32_t cell = (int32_t)i * CELL_W * scale;
        for (int32_t gy = 0; gy < GLYPH_H; gy++)
            for (int32_t gx = 0; gx < GLYPH_W; gx++) {
                if (g->rows[gy][gx] != '#') continue;
                /* a quarter turn counter-clockwise: glyph x runs up the
                 * canvas, glyph y runs right */
                int32_t px = vertical ? x + gy * scale : x + cell + gx * scale;
                int32_t py = vertical ? y - cell - (gx + 1) * scale : y + gy * scale;
                qn_canvas_fill_rect(c, px, py, scale, scale, col);
            }
    }
}

size_t qn_chart_ticks(double lo, double hi, int target, double min_step, double *ticks, size_t cap,
                      double *step_out) {
    if (target < 2) target = 2;
    double raw = (hi - lo) / (target - 1);
    if (!(raw > 0) || !isfinite(raw)) raw = 1;
    double mag = pow(10, floor(log10(raw)));
    double step = mag * 10;
    static const double k_mult[] = {1, 2, 5, 10};
    for (size_t i = 0; i < 4; i++)
        if (raw <= k_mult[i] * mag) {
            step = k_mult[i] * mag;
            break;
        }
    if (min_step > 0 && step < min_step) step = min_step;
    *step_out = step;
    size_t n = 0;
    double k0 = ceil(lo / step - 1e-9);
    for (double k = k0; n < cap; k += 1) {
        double v = k * step;
        if (v > hi + step * 1e-9) break;
        ticks[n++] = fabs(v) < step * 1e-9 ? 0.0 : v; /* no "-0" label */
    }
    return n;
}

void qn_chart_format_tick(double v, double step, char *buf, size_t cap) {
    double mag = fabs(v) > step ? fabs(v) : step;
    if (mag >= 1e6 || step < 1e-4) {
        snprintf(buf, cap, "%.3g", v);
        return;
    }
    int decimals = 0;
    if (step < 1) decimals = (int)ceil(-log10(step) - 1e-9);
    /* 2.5 is not a step this axis makes, but 0.25 rounding must not drop
     * a digit a user needs: one more decimal when step is not a power of 10 */
    double scaled = step * pow(10, decimals);
    if (fabs(scaled - lround(scaled)) > 1e-6) decimals++;
    snprintf(buf, cap, "%.*f", decimals, v);
}

/* Colours of the frame; series colours come from the caller. */
static const qn_rgb k_white = {255, 255, 255};
static const qn_rgb k_black = {0, 0, 0};
static const qn_rgb k_axis = {64, 64, 64};
static const qn_rgb k_grid = {226, 226, 226};
static const qn_rgb k_legend_border = {160, 160, 160};

typedef struct range {
    double lo, hi;
} range;

static bool data_range(const qn_chart *ch, bool want_x, range *out) {
    bool any = false;
    for (size_t s = 0; s < ch->n_series; s++) {
        const qn_chart_series *se = &ch->series[s];
        for (size_t i = 0; i < se->n; i++) {
            if (!isfinite(se->x[i]) || !isfinite(se->y[i])) continue;
            double v = want_x ? se->x[i] : se->y[i];
            if (!any) {
                out->lo = out->hi = v;
                any = true;
            } else {
                if (v < out->lo) out->lo = v;
                if (v > out->hi) out->hi = v;
            }
        }
    }
    return any;
}

static void pad_range(range *r, double frac) {
    double span = r->hi - r->lo;
    if (!(span > 0) || !isfinite(span)) {
        double d = fabs(r->lo) > 0 ? fabs(r->lo) * 0.1 : 1;
        r->lo -= d;
        r->hi += d;
        return;
    }
    r->lo -= span * frac;
    r->hi += span * frac;
}

static size_t count_series_pixels(const qn_canvas *c, const qn_chart *ch, int32_t x0, int32_t y0,
                                  int32_t w, int32_t h) {
    size_t n = 0;
    for (int32_t y = y0 < 0 ? 0 : y0; y < y0 + h && y < c->h; y++)
        for (int32_t x = x0 < 0 ? 0 : x0; x < x0 + w && x < c->w; x++) {
            const uint8_t *p = c->rgb + ((size_t)y * (size_t)c->w + (size_t)x) * 3;
            for (size_t s = 0; s < ch->n_series; s++) {
                qn_rgb k = ch->series[s].color;
                if (p[0] == k.r && p[1] == k.g && p[2] == k.b) {
                    n++;
                    break;
                }
            }
        }
    return n;
}

qn_status qn_chart_render(const qn_chart *ch, qn_canvas *c) {
    if (c->w < 160 || c->h < 120)
        return qn_fail(QN_ERR_INVALID, "chart: canvas %dx%d is smaller than 160x120", (int)c->w,
                       (int)c->h);
    range xr, yr;
    if (!data_range(ch, true, &xr) || !data_range(ch, false, &yr))
        return qn_fail(QN_ERR_INVALID, "chart '%s': no finite point", ch->title ? ch->title : "");
    if (ch->y_from_zero) {
        if (yr.lo > 0) yr.lo = 0;
        if (yr.hi < 0) yr.hi = 0;
    }
    pad_range(&xr, 0.02);
    pad_range(&yr, 0.06);
    if (ch->y_from_zero && yr.lo < 0 && yr.lo + (yr.hi - yr.lo) * 0.06 >= -1e-300) yr.lo = 0;
    if (!isfinite(xr.hi - xr.lo) || !isfinite(yr.hi - yr.lo))
        return qn_fail(QN_ERR_RANGE, "chart '%s': values span more than a double holds",
                       ch->title ? ch->title : "");

    int32_t sc = c->w >= 480 && c->h >= 300 ? 2 : 1; /* text scale */
    int32_t th = qn_canvas_text_height(sc);
    double xt[64], yt[64], xstep, ystep;
    size_t nxt = qn_chart_ticks(xr.lo, xr.hi, 8, 1, xt, 64, &xstep);
    size_t nyt = qn_chart_ticks(yr.lo, yr.hi, 6, 0, yt, 64, &ystep);
    char lbl[64];
    int32_t ylw = 0;
    for (size_t i = 0; i < nyt; i++) {
        qn_chart_format_tick(yt[i], ystep, lbl, sizeof lbl);
        int32_t w = qn_canvas_text_width(lbl, sc);
        if (w > ylw) ylw = w;
    }

    qn_rect plot;
    plot.x0 = 8 + (ch->y_label ? th + 8 : 0) + ylw + 8;
    plot.x1 = c->w - 16;
    plot.y0 = 8 + th + 12;
    plot.y1 = c->h - (8 + th + 6 + (ch->x_label ? th + 6 : 0));
    if (plot.x1 - plot.x0 < 40 || plot.y1 - plot.y0 < 40)
        return qn_fail(QN_ERR_INVALID, "chart: canvas %dx%d leaves no room to plot", (int)c->w,
                       (int)c->h);
    double pw = plot.x1 - 1 - plot.x0, ph = plot.y1 - 1 - plot.y0;
#define PX(v) (plot.x0 + ((v) - xr.lo) / (xr.hi - xr.lo) * pw)
#define PY(v) (plot.y1 - 1 - ((v) - yr.lo) / (yr.hi - yr.lo) * ph)

    qn_canvas_fill_rect(c, 0, 0, c->w, c->h, k_white);
    /* grid and ticks */
    for (size_t i = 0; i < nyt; i++) {
        double py = PY(yt[i]);
        qn_canvas_line(c, plot.x0, py, plot.x1 - 1, py, &plot, k_grid, false);
        qn_canvas_line(c, plot.x0 - 5, py, plot.x0 - 1, py, NULL, k_axis, false);
        qn_chart_format_tick(yt[i], ystep, lbl, sizeof lbl);
        int32_t w = qn_canvas_text_width(lbl, sc);
        qn_canvas_text(c, plot.x0 - 8 - w, (int32_t)lround(py) - th / 2, lbl, sc, k_black, false);
    }
    for (size_t i = 0; i < nxt; i++) {
        double px = PX(xt[i]);
        qn_canvas_line(c, px, plot.y0, px, plot.y1 - 1, &plot, k_grid, false);
        qn_canvas_line(c, px, plot.y1, px, plot.y1 + 4, NULL, k_axis, false);
        qn_chart_format_tick(xt[i], xstep, lbl, sizeof lbl);
        int32_t w = qn_canvas_text_width(lbl, sc);
        qn_canvas_text(c, (int32_t)lround(px) - w / 2, plot.y1 + 7, lbl, sc, k_black, false);
    }
    /* frame */
    qn_canvas_line(c, plot.x0 - 1, plot.y0, plot.x0 - 1, plot.y1, NULL, k_axis, false);
    qn_canvas_line(c, plot.x0 - 1, plot.y1, plot.x1, plot.y1, NULL, k_axis, false);
    qn_canvas_line(c, plot.x0 - 1, plot.y0 - 1, plot.x1, plot.y0 - 1, NULL, k_grid, false);
    qn_canvas_line(c, plot.x1, plot.y0 - 1, plot.x1, plot.y1, NULL, k_grid, false);
    /* titles */
    if (ch->title) {
        int32_t w = qn_canvas_text_width(ch->title, sc);
        qn_canvas_text(c, (c->w - w) / 2, 8, ch->title, sc, k_black, false);
    }
    if (ch->x_label) {
        int32_t w = qn_canvas_text_width(ch->x_label, sc);
        qn_canvas_text(c, plot.x0 + (plot.x1 - plot.x0 - w) / 2, c->h - 8 - th, ch->x_label, sc,
                       k_black, false);
    }
    if (ch->y_label) {
        int32_t w = qn_canvas_text_width(ch->y_label, sc);
        qn_canvas_text(c, 8, plot.y0 + (plot.y1 - plot.y0 + w) / 2, ch->y_label, sc, k_black,
                       true);
    }
    /* series: lines, then markers on top */
    for (size_t s = 0; s < ch->n_series; s++) {
        const qn_chart_series *se = &ch->series[s];
        bool have_prev = false;
        double ppx = 0, ppy = 0;
        for (size_t i = 0; i < se->n; i++) {
            if (!isfinite(se->x[i]) || !isfinite(se->y[i])) {
                have_prev = false;
                continue;
            }
            double px = PX(se->x[i]), py = PY(se->y[i]);
            if (have_prev) qn_canvas_line(c, ppx, ppy, px, py, &plot, se->color, true);
            if (se->n == 1 || se->markers)
                for (int32_t d = -3; d <= 3; d++)
                    qn_canvas_line(c, px - 3, py + d, px + 3, py + d, &plot, se->color, false);
            ppx = px;
            ppy = py;
            have_prev = true;
        }
    }
#undef PX
#undef PY
    /* legend: a swatch and the name per series, in a box at the top left */
    if (ch->legend && ch->n_series > 0) {
        int32_t lw = 0;
        for (size_t s = 0; s < ch->n_series; s++) {
            int32_t w = qn_canvas_text_width(ch->series[s].name ? ch->series[s].name : "", sc);
            if (w > lw) lw = w;
        }
        int32_t row = th + 6, sw = 12 * sc;
        int32_t bw = 8 + sw + 6 + lw + 8, bh = 6 + (int32_t)ch->n_series * row;
        /* the corner of the plot area where the box hides the fewest
         * pixels of the series already drawn */
        int32_t cx[4] = {plot.x0 + 8, plot.x1 - 8 - bw, plot.x0 + 8, plot.x1 - 8 - bw};
        int32_t cy[4] = {plot.y0 + 8, plot.y0 + 8, plot.y1 - 8 - bh, plot.y1 - 8 - bh};
        int32_t bx = cx[0], by = cy[0];
        size_t best = SIZE_MAX;
        for (int k = 0; k < 4; k++) {
            size_t hidden = count_series_pixels(c, ch, cx[k], cy[k], bw, bh);
            if (hidden < best) {
                best = hidden;
                bx = cx[k];
                by = cy[k];
            }
        }
        qn_canvas_fill_rect(c, bx, by, bw, bh, k_white);
        qn_rect box = {bx, by, bx + bw, by + bh};
        qn_canvas_line(c, box.x0, box.y0, box.x1 - 1, box.y0, NULL, k_legend_border, false);
        qn_canvas_line(c, box.x0, box.y1 - 1, box.x1 - 1, box.y1 - 1, NULL, k_legend_border, false);
        qn_canvas_line(c, box.x0, box.y0, box.x0, box.y1 - 1, NULL, k_legend_border, false);
        qn_canvas_line(c, box.x1 - 1, box.y0, box.x1 - 1, box.y1 - 1, NULL, k_legend_border, false);
        for (size_t s = 0; s < ch->n_series; s++) {
            int32_t ty = by + 6 + (int32_t)s * row;
            qn_canvas_fill_rect(c, bx + 8, ty + th / 2 - 2, sw, 4, ch->series[s].color);
            qn_canvas_text(c, bx + 8 + sw + 6, ty, ch->series[s].name ? ch->series[s].name : "",
                           sc, k_black, false);
        }
    }
    return QN_OK;
}
