/* math_grade.c — final-answer extraction and answer equivalence for math
 * rewards (math, deepscaler, dapo).
 *
 * Extraction: the content of the last \boxed{} / \fbox{} (braces balanced),
 * else the last number in the text. Normalisation removes what does not
 * change an answer: $ and spacing commands, \left/\right, \dfrac/\tfrac,
 * degree marks, percent signs, \text{} units (or \text{} wrappers around
 * a word answer), dollar signs, thousands separators, a leading "x =",
 * a trailing period. Two answers are then equal when both evaluate to
 * numbers that agree (integers exactly, others within a relative 1e-9),
 * using a small LaTeX expression evaluator (+ - * / ^, implicit products,
 * \frac, \sqrt, \pi, mixed numbers like 1\frac{4}{5}); or when tuples,
 * intervals, lists or matrices agree element-wise; or when the normalised
 * strings are identical.
 *
 * Left out: symbolic algebra (x+1 vs 1+x are different), units conversion,
 * complex-number arithmetic, sets written in different orders with braces.
 */
#include <ctype.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rewards/rewards.h"

enum { CAP = 1024 };

typedef struct sbuf {
    char s[CAP];
    size_t n;
} sbuf;

static void sb_set(sbuf *b, const char *s, size_t n) {
    if (n >= CAP) n = CAP - 1;
    memcpy(b->s, s, n);
    b->s[n] = '\0';
    b->n = n;
}

/* Replaces every occurrence of from with to (to no longer than from, so the
 * string never grows). */
static void sb_replace(sbuf *b, const char *from, const char *to) {
    size_t fl = strlen(from), tl = strlen(to);
    char out[CAP];
    size_t o = 0;
    for (size_t i = 0; i < b->n;) {
        if (strncmp(b->s + i, from, fl) == 0) {
            memcpy(out + o, to, tl);
            o += tl;
            i += fl;
        } else {
            out[o++] = b->s[i++];
        }
    }
    sb_set(b, out, o);
}

static void sb_trim(sbuf *b) {
    size_t a = 0, e = b->n;
    while (a < e && isspace((unsigned char)b->s[a]))
        a++;
    while (e > a && isspace((unsigned char)b->s[e - 1]))
        e--;
    memmove(b->s, b->s + a, e - a);
    b->n = e - a;
    b->s[b->n] = '\0';
}

/* Index just past the brace group starting at s[i] == '{', or 0 if
 * unbalanced. */
static size_t brace_end(const char *s, size_t n, size_t i) {
    int depth = 0;
    for (size_t j = i; j < n; j++) {
        if (s[j] == '{')
            depth++;
        else if (s[j] == '}' && --depth == 0)
            return j + 1;
    }
    return 0;
}

/* ---- extraction ---- */

static bool extract_boxed(const char *r, char *out, size_t cap) {
    const char *best = NULL;
    const char *keys[] = {"\\boxed", "\\fbox"};
    for (int k = 0; k < 2; k++) {
        for (const char *p = strstr(r, keys[k]); p; p = strstr(p + 1, keys[k]))
            if (!best || p > best) best = p;
    }
    if (!best) return false;
    const char *p = best + (strncmp(best, "\\boxed", 6) == 0 ? 6 : 5);
    size_t n = strlen(p);
    size_t i = 0;
    while (i < n && p[i] == ' ')
        i++;
    size_t a, e;
    if (i < n && p[i] == '{') {
        size_t end = brace_end(p, n, i);
        if (!end) return false;
        a = i + 1;
        e = end - 1;
    } else if (i > 0) { /* "\boxed 5" */
        a = i;
        e = i;
        while (e < n && p[e] != '$' && !isspace((unsigned char)p[e]))
            e++;
    } else {
        return false;
    }
    size_t len = e - a < cap - 1 ? e - a : cap - 1;
    memcpy(out, p + a, len);
    out[len] = '\0';
    return true;
}

static bool extract_last_number(const char *r, char *out, size_t cap) {
    size_t n = strlen(r);
    size_t best_a = 0, best_e = 0;
    bool found = false;
    for (size_t i = 0; i < n; i++) {
        bool starts = isdigit((unsigned char)r[i]) ||
                      (r[i] == '.' && i + 1 < n && isdigit((unsigned char)r[i + 1]));
        if (!starts) continue;
        size_t a = i, e = i;
        while (e < n &&
               (isdigit((unsigned char)r[e]) ||
                ((r[e] == ',' || r[e] == '.') && e + 1 < n && isdigit((unsigned char)r[e + 1]))))
            e++;
        /* a minus sign belongs to the number unless it is a binary minus */
        if (a > 0 && r[a - 1] == '-' && (a < 2 || !isalnum((unsigned char)r[a - 2]))) a--;
        best_a = a;
        best_e = e;
        found = true;
        i = e;
    }
    if (!found) return false;
    size_t len = best_e - best_a < cap - 1 ? best_e - best_a : cap - 1;
    memcpy(out, r + best_a, len);
    out[len] = '\0';
    return true;
}

bool qn_math_extract_answer(const char *response, char *out, size_t cap) {
    if (!response || cap == 0) return false;
    if (extract_boxed(response, out, cap)) return true;
    return extract_last_number(response, out, cap);
}

/* ---- normalisation ---- */

static bool is_text_cmd(const char *p, size_t *cmd_len) {
    static const char *cmds[] = {"\\text{",   "\\textbf{", "\\textrm{", "\\mbox{",
                                 "\\mathrm{", "\\mathbf{", "\\textit{"};
    for (size_t k = 0; k < sizeof cmds / sizeof cmds[0]; k++) {
        size_t l = strlen(cmds[k]);
        if (strncmp(p, cmds[k], l) == 0) {
            *cmd_len = l - 1; /* up to, not including, '{' */
            return true;
        }
    }
    return false;
}

/* keep_content: unwrap \text{abc} to abc; otherwise drop the group and a
 * following exponent (the "^2" of "\text{cm}^2"). */
static void strip_text_groups(const sbuf *in, sbuf *out, bool keep_content) {
    char o[CAP];
    size_t k = 0;
    for (size_t i = 0; i < in->n;) {
        size_t cl;
        if (in->s[i] == '\\' && is_text_cmd(in->s + i, &cl)) {
            size_t end = brace_end(in->s, in->n, i + cl);
            if (end) {
                if (keep_content) {
                    for (size_t j = i + cl + 1; j + 1 < end; j++)
                        o[k++] = in->s[j];
                } else if (end < in->n && in->s[end] == '^') {
                    if (end + 1 < in->n && in->s[end + 1] == '{') {
                        size_t e2 = brace_end(in->s, in->n, end + 1);
                        end = e2 ? e2 : end;
                    } else if (end + 1 < in->n) {
                        end += 2;
                    }
                }
                i = end;
                continue;
            }
        }
        o[k++] = in->s[i++];
    }
    sb_set(out, o, k);
}

static bool has_digit(const char *s) {
    for (; *s; s++)
        if (isdigit((unsigned char)*s)) return true;
    return false;
}

/* Removes commas that separate thousands: "10,080" -> "10080", but not the
 * commas of "1,-2" or "(6,31,-1)". */
static void strip_thousands(sbuf *b) {
    char o[CAP];
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (b->s[i] == ',' && i > 0 && isdigit((unsigned char)b->s[i - 1]) && i + 3 < b->n + 1 &&
            isdigit((unsigned char)b->s[i + 1]) && isdigit((unsigned char)b->s[i + 2]) &&
            isdigit((unsigned char)b->s[i + 3]) &&
            (i + 4 >= b->n || !isdigit((unsigned char)b->s[i + 4]))) {
            /* the digit run before the comma must be 1-3 long */
            size_t j = i;
            while (j > 0 && isdigit((unsigned char)b->s[j - 1]))
                j--;
            bool lead_ok = i - j <= 3 && (j == 0 || b->s[j - 1] != '.');
            if (lead_ok) continue;
        }
        o[k++] = b->s[i];
    }
    sb_set(b, o, k);
}

/* Removes spaces except where they end a control word before a letter
 * ("\pi r" stays "\pi r"). */
static void strip_spaces(sbuf *b) {
    char o[CAP];
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++) {
        char c = b->s[i];
        if (isspace((unsigned char)c)) {
            size_t j = k;
            while (j > 0 && isalpha((unsigned char)o[j - 1]))
                j--;
            bool after_cmd = j < k && j > 0 && o[j - 1] == '\\';
            bool before_letter = i + 1 < b->n && isalpha((unsigned char)b->s[i + 1]);
            if (after_cmd && before_letter && (k == 0 || o[k - 1] != ' ')) o[k++] = ' ';
            continue;
        }
        o[k++] = c;
    }
    sb_set(b, o, k);
}

/* "\ " (a LaTeX space) becomes " ", but the row break "\\" stays. */
static void strip_escaped_spaces(sbuf *b) {
    char o[CAP];
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (b->s[i] == '\\' && i + 1 < b->n && b->s[i + 1] == '\\') {
            o[k++] = b->s[i++];
            o[k++] = b->s[i];
            continue;
        }
        if (b->s[i] == '\\' && i + 1 < b->n && b->s[i + 1] == ' ') continue;
        o[k++] = b->s[i];
    }
    sb_set(b, o, k);
}

/* "4210_{5}" -> "4210_5": braces around a plain subscript change nothing. */
static void strip_subscript_braces(sbuf *b) {
    char o[CAP];
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (b->s[i] == '_' && i + 1 < b->n && b->s[i + 1] == '{') {
            size_t j = i + 2;
            while (j < b->n && isalnum((unsigned char)b->s[j]))
                j++;
            if (j < b->n && b->s[j] == '}' && j > i + 2) {
                o[k++] = '_';
                for (size_t t = i + 2; t < j; t++)
                    o[k++] = b->s[t];
                i = j;
                continue;
            }
        }
        o[k++] = b->s[i];
    }
    sb_set(b, o, k);
}

static void normalize(const char *in, sbuf *b) {
    sb_set(b, in, strlen(in));
    sb_trim(b);
    static const char *drop[] = {
        "\\left",    "\\right", "\\!",    "\\,",      "\\;", "\\:", "\\displaystyle",
        "^{\\circ}", "^\\circ", "\\circ", "\\degree", "°",   "\\%", "%",
        "\\$",       "$"};
    for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
        sb_replace(b, drop[i], "");
    sb_replace(b, "\\dfrac", "\\frac");
    sb_replace(b, "\\tfrac", "\\frac");
    strip_escaped_spaces(b);

    sbuf without;
    strip_text_groups(b, &without, false);
    sb_trim(&without);
    if (without.n > 0 && has_digit(without.s)) {
        *b = without;
    } else {
        sbuf unwrapped;
        strip_text_groups(b, &unwrapped, true);
        *b = unwrapped;
    }
    /* plain unit words after a number: "270/7 degrees" */
    static const char *units[] = {" degrees", " degree", " units", " unit", " cents", " dollars"};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        size_t l = strlen(units[i]);
        if (b->n > l && strcmp(b->s + b->n - l, units[i]) == 0) {
            b->n -= l;
            b->s[b->n] = '\0';
        }
    }
    strip_spaces(b);
    strip_subscript_braces(b);
    strip_thousands(b);
    while (b->n > 0 && (b->s[b->n - 1] == '.' || b->s[b->n - 1] == ' '))
        b->s[--b->n] = '\0';
    /* "x=5", "x\in[-2,7]": drop a single-letter variable and its relation */
    if (b->n > 2 && isalpha((unsigned char)b->s[0]) && b->s[1] == '=') {
        memmove(b->s, b->s + 2, b->n - 1);
        b->n -= 2;
    } else if (b->n > 4 && isalpha((unsigned char)b->s[0]) && strncmp(b->s + 1, "\\in", 3) == 0 &&
               !isalpha((unsigned char)b->s[4])) {
        memmove(b->s, b->s + 4, b->n - 3);
        b->n -= 4;
    }
}

/* ---- evaluation ---- */

typedef struct parser {
    const char *s;
    size_t i, n;
    bool ok;
} parser;

static double p_expr(parser *p);

static void p_skip(parser *p) {
    while (p->i < p->n && p->s[p->i] == ' ')
        p->i++;
}

static bool p_lit(parser *p, const char *lit) {
    p_skip(p);
    size_t l = strlen(lit);
    if (p->i + l <= p->n && strncmp(p->s + p->i, lit, l) == 0) {
        /* a control word must not run on into more letters: \pi vs \pix */
        if (lit[0] == '\\' && isalpha((unsigned char)lit[l - 1]) && p->i + l < p->n &&
            isalpha((unsigned char)p->s[p->i + l]))
            return false;
        p->i += l;
        return true;
    }
    return false;
}

static double p_number(parser *p, bool *is_int) {
    size_t a = p->i;
    bool dot = false;
    while (p->i < p->n && (isdigit((unsigned char)p->s[p->i]) || (p->s[p->i] == '.' && !dot))) {
        if (p->s[p->i] == '.') dot = true;
        p->i++;
    }
    if (p->i == a || (p->i == a + 1 && dot)) {
        p->ok = false;
        return 0;
    }
    char tmp[64];
    size_t l = p->i - a < sizeof tmp - 1 ? p->i - a : sizeof tmp - 1;
    memcpy(tmp, p->s + a, l);
    tmp[l] = '\0';
    *is_int = !dot;
    return strtod(tmp, NULL);
}

/* A macro argument: {expr} or one character (digit). */
static double p_arg(parser *p) {
    p_skip(p);
    if (p->i < p->n && p->s[p->i] == '{') {
        p->i++;
        double v = p_expr(p);
        p_skip(p);
        if (p->i < p->n && p->s[p->i] == '}')
            p->i++;
        else
            p->ok = false;
        return v;
    }
    if (p->i < p->n && isdigit((unsigned char)p->s[p->i])) return p->s[p->i++] - '0';
    if (p_lit(p, "\\pi")) return M_PI;
    p->ok = false;
    return 0;
}

static bool p_starts_primary(parser *p) {
    p_skip(p);
    if (p->i >= p->n) return false;
    char c = p->s[p->i];
    if (isdigit((unsigned char)c) || c == '(' || c == '{' || c == '.') return true;
    return strncmp(p->s + p->i, "\\frac", 5) == 0 || strncmp(p->s + p->i, "\\sqrt", 5) == 0 ||
           strncmp(p->s + p->i, "\\pi", 3) == 0;
}

static double p_primary(parser *p, bool *is_int) {
    p_skip(p);
    *is_int = false;
    if (p->i >= p->n) {
        p->ok = false;
        return 0;
    }
    char c = p->s[p->i];
    if (c == '(' || c == '{') {
        char close = c == '(' ? ')' : '}';
        p->i++;
        double v = p_expr(p);
        p_skip(p);
        if (p->i < p->n && p->s[p->i] == close)
            p->i++;
        else
            p->ok = false;
        return v;
    }
    if (isdigit((unsigned char)c) || c == '.') return p_number(p, is_int);
    if (p_lit(p, "\\frac")) {
        double a = p_arg(p), b = p_arg(p);
        return a / b;
    }
    if (p_lit(p, "\\sqrt")) {
        double idx = 2;
        p_skip(p);
        if (p->i < p->n && p->s[p->i] == '[') {
            p->i++;
            idx = p_expr(p);
            if (p->i < p->n && p->s[p->i] == ']')
                p->i++;
            else
                p->ok = false;
        }
        double v = p_arg(p);
        return idx == 2 ? sqrt(v) : pow(v, 1.0 / idx);
    }
    if (p_lit(p, "\\pi")) return M_PI;
    p->ok = false;
    return 0;
}

static double p_power(parser *p, bool *is_int) {
    double base = p_primary(p, is_int);
    p_skip(p);
    if (p->ok && p->i < p->n && p->s[p->i] == '^') {
        p->i++;
        bool dummy;
        p_skip(p);
        double e = (p->i < p->n && p->s[p->i] == '{') ? p_arg(p) : p_primary(p, &dummy);
        *is_int = false;
        return pow(base, e);
    }
    return base;
}

static double p_unary(parser *p, bool *is_int) {
    p_skip(p);
    if (p->i < p->n && (p->s[p->i] == '-' || p->s[p->i] == '+')) {
        bool neg = p->s[p->i] == '-';
        p->i++;
        double v = p_unary(p, is_int);
        return neg ? -v : v;
    }
    return p_power(p, is_int);
}

static double p_term(parser *p) {
    bool is_int;
    double v = p_unary(p, &is_int);
    bool single_int = is_int; /* a lone integer so far: "1\frac45" is mixed */
    for (;;) {
        if (!p->ok) return v;
        if (p_lit(p, "*") || p_lit(p, "\\cdot") || p_lit(p, "\\times")) {
            v *= p_unary(p, &is_int);
        } else if (p_lit(p, "/") || p_lit(p, "\\div")) {
            v /= p_unary(p, &is_int);
        } else if (p_starts_primary(p)) {
            bool mixed = single_int && strncmp(p->s + p->i, "\\frac", 5) == 0;
            double f = p_power(p, &is_int);
            v = mixed ? (v < 0 ? v - f : v + f) : v * f;
        } else {
            return v;
        }
        single_int = false;
    }
}

static double p_expr(parser *p) {
    double v = p_term(p);
    for (;;) {
        if (!p->ok) return v;
        p_skip(p);
        if (p->i < p->n && p->s[p->i] == '+') {
            p->i++;
            v += p_term(p);
        } else if (p->i < p->n && p->s[p->i] == '-') {
            p->i++;
            v -= p_term(p);
        } else {
            return v;
        }
    }
}

static bool evaluate(const char *s, size_t n, double *out) {
    parser p = {.s = s, .i = 0, .n = n, .ok = true};
    if (n == 0) return false;
    double v = p_expr(&p);
    p_skip(&p);
    if (!p.ok || p.i != p.n || !isfinite(v)) return false;
    *out = v;
    return true;
}

/* Integers compare exactly (1450000 is not 1450001); other values within a
 * relative 1e-9, which absorbs rounding in the evaluator (\frac{1}{\sqrt3}
 * vs \frac{\sqrt3}{3}) but not a rounded decimal (4.67 vs 14/3). */
static bool values_close(double a, double b) {
    if (!isfinite(a) || !isfinite(b)) return false;
    if (a == b) return true;
    bool ia = a == floor(a) && fabs(a) < 9007199254740992.0;
    bool ib = b == floor(b) && fabs(b) < 9007199254740992.0;
    if (ia && ib) return false;
    double scale = fmax(fabs(a), fabs(b));
    return fabs(a - b) <= 1e-9 * scale;
}

/* ---- structure: tuples, intervals, lists, matrices ---- */

typedef struct span {
    size_t a, e;
} span;

/* Splits s[a,e) at depth-0 occurrences of sep (one or two chars). */
static size_t split_top(const char *s, size_t a, size_t e, const char *sep, span *parts,
                        size_t max) {
    size_t np = 0, start = a, sl = strlen(sep);
    int depth = 0;
    for (size_t i = a; i < e; i++) {
        char c = s[i];
        if (c == '(' || c == '[' || c == '{')
            depth++;
        else if (c == ')' || c == ']' || c == '}')
            depth--;
        else if (depth == 0 && i + sl <= e && strncmp(s + i, sep, sl) == 0) {
            if (np < max) parts[np++] = (span){start, i};
            start = i + sl;
            i += sl - 1;
        }
    }
    if (np < max) parts[np++] = (span){start, e};
    return np;
}

/* Whether s[0] opens a bracket that closes exactly at s[n-1]. */
static bool wrapped(const char *s, size_t n) {
    if (n < 2 || (s[0] != '(' && s[0] != '[') || (s[n - 1] != ')' && s[n - 1] != ']')) return false;
    int depth = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '(' || s[i] == '[' || s[i] == '{')
            depth++;
        else if (s[i] == ')' || s[i] == ']' || s[i] == '}') {
            if (--depth == 0 && i != n - 1) return false;
        }
    }
    return depth == 0;
}

static bool atoms_equal(const char *a, size_t an, const char *b, size_t bn) {
    double x, y;
    if (evaluate(a, an, &x) && evaluate(b, bn, &y)) return values_close(x, y);
    return an == bn && memcmp(a, b, an) == 0;
}

enum { MAX_PARTS = 64 };

static bool lists_equal(const char *a, const span *pa, size_t na, const char *b, const span *pb,
                        size_t nb, bool ordered) {
    if (na != nb) return false;
    if (ordered) {
        for (size_t i = 0; i < na; i++)
            if (!atoms_equal(a + pa[i].a, pa[i].e - pa[i].a, b + pb[i].a, pb[i].e - pb[i].a))
                return false;
        return true;
    }
    bool used[MAX_PARTS] = {false};
    for (size_t i = 0; i < na; i++) {
        bool found = false;
        for (size_t j = 0; j < nb && !found; j++) {
            if (used[j]) continue;
            if (atoms_equal(a + pa[i].a, pa[i].e - pa[i].a, b + pb[j].a, pb[j].e - pb[j].a)) {
                used[j] = found = true;
            }
        }
        if (!found) return false;
    }
    return true;
}

static bool matrix_parts(const char *s, size_t n, span *parts, size_t *np) {
    const char *beg = "\\begin{pmatrix}", *end = "\\end{pmatrix}";
    size_t bl = strlen(beg), el = strlen(end);
    if (n < bl + el || strncmp(s, beg, bl) != 0 || strncmp(s + n - el, end, el) != 0) return false;
    span rows[MAX_PARTS];
    size_t nr = split_top(s, bl, n - el, "\\\\", rows, MAX_PARTS);
    *np = 0;
    for (size_t r = 0; r < nr; r++) {
        span cells[MAX_PARTS];
        size_t nc = split_top(s, rows[r].a, rows[r].e, "&", cells, MAX_PARTS);
        for (size_t c = 0; c < nc && *np < MAX_PARTS; c++)
            parts[(*np)++] = cells[c];
    }
    return true;
}

bool qn_math_answers_equal(const char *given, const char *truth) {
    if (!given || !truth) return false;
    sbuf a, b;
    normalize(given, &a);
    normalize(truth, &b);
    if (a.n == 0 || b.n == 0) return false;
    if (a.n == b.n && memcmp(a.s, b.s, a.n) == 0) return true;

    span pa[MAX_PARTS], pb[MAX_PARTS];
    size_t na, nb;
    if (matrix_parts(a.s, a.n, pa, &na) && matrix_parts(b.s, b.n, pb, &nb))
        return lists_equal(a.s, pa, na, b.s, pb, nb, true);

    bool wa = wrapped(a.s, a.n), wb = wrapped(b.s, b.n);
    if (wa && wb) {
        /* tuple or interval: the bracket kinds must agree, then elements */
        if (a.s[0] != b.s[0] || a.s[a.n - 1] != b.s[b.n - 1]) return false;
        na = split_top(a.s, 1, a.n - 1, ",", pa, MAX_PARTS);
        nb = split_top(b.s, 1, b.n - 1, ",", pb, MAX_PARTS);
        if (na > 1 || nb > 1) return lists_equal(a.s, pa, na, b.s, pb, nb, true);
    }
    na = split_top(a.s, 0, a.n, ",", pa, MAX_PARTS);
    nb = split_top(b.s, 0, b.n, ",", pb, MAX_PARTS);
    if (na > 1 || nb > 1) return lists_equal(a.s, pa, na, b.s, pb, nb, false);
    return atoms_equal(a.s, a.n, b.s, b.n);
}
