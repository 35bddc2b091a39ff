/* flags.c — the table-driven flag parser (see core/flags.h for the syntax and
 * the contracts): value parsing with bounds, environment overrides, help,
 * dumps as text and JSON, and the table checker.
 *
 * Left out on purpose: short options, prefix abbreviations, config files.
 * Values are parsed into a temporary first and stored only when valid, so a
 * rejected value never leaves a half-built list or a freed string behind. */
#include "core/flags.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "core/log.h"

typedef union flag_value {
    bool b;
    int64_t i;
    double d;
    char *s;
    int c;
    qn_int_list il;
    qn_float_list fl;
    qn_string_list sl;
} flag_value;

/* ---------------------------------------------------------------- helpers */

static void *field_ptr(void *cfg, const qn_flag *f) { return (char *)cfg + f->offset; }
static const void *field_cptr(const void *cfg, const qn_flag *f) {
    return (const char *)cfg + f->offset;
}

static bool is_list(qn_flag_type t) {
    return t == QN_FLAG_INT_LIST || t == QN_FLAG_FLOAT_LIST || t == QN_FLAG_STRING_LIST;
}

static size_t type_size(qn_flag_type t) {
    switch (t) {
    case QN_FLAG_BOOL: return sizeof(bool);
    case QN_FLAG_INT: return sizeof(int64_t);
    case QN_FLAG_FLOAT: return sizeof(double);
    case QN_FLAG_STRING: return sizeof(char *);
    case QN_FLAG_CHOICE: return sizeof(int);
    case QN_FLAG_INT_LIST: return sizeof(qn_int_list);
    case QN_FLAG_FLOAT_LIST: return sizeof(qn_float_list);
    case QN_FLAG_STRING_LIST: return sizeof(qn_string_list);
    }
    return 0;
}

static bool has_bounds(const qn_flag *f) { return !(f->min == 0 && f->max == 0); }

/* "QN_ROLLOUT_BATCH_SIZE" */
static void env_name(const qn_flag *f, char *buf, size_t cap) {
    size_t n = 0;
    const char *p = "QN_";
    while (*p && n + 1 < cap) buf[n++] = *p++;
    for (p = f->name; *p && n + 1 < cap; p++) {
        buf[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    }
    buf[n] = '\0';
}

/* Shortest %g form that reads back to the same double, so dumps re-parse
 * exactly and "0.8" stays "0.8". */
static void fmt_double(double v, char *buf, size_t cap) {
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) return;
    }
}

static void fmt_bounds(const qn_flag *f, char *buf, size_t cap) {
    char lo[40], hi[40];
    buf[0] = '\0';
    if (!has_bounds(f)) return;
    fmt_double(f->min, lo, sizeof lo);
    fmt_double(f->max, hi, sizeof hi);
    bool lo_open = isinf(f->min), hi_open = isinf(f->max);
    if (lo_open && hi_open) return;
    if (hi_open) snprintf(buf, cap, " >= %s", lo);
    else if (lo_open) snprintf(buf, cap, " <= %s", hi);
    else snprintf(buf, cap, " in [%s, %s]", lo, hi);
}

/* The accepted form, for messages and help: "an integer in [1, 1048576]". */
static void describe(const qn_flag *f, char *buf, size_t cap) {
    char b[100];
    fmt_bounds(f, b, sizeof b);
    switch (f->type) {
    case QN_FLAG_BOOL: snprintf(buf, cap, "true or false"); return;
    case QN_FLAG_INT: snprintf(buf, cap, "an integer%s", b); return;
    case QN_FLAG_FLOAT: snprintf(buf, cap, "a number%s", b); return;
    case QN_FLAG_STRING: snprintf(buf, cap, "a string"); return;
    case QN_FLAG_CHOICE: {
        size_t n = (size_t)snprintf(buf, cap, "one of ");
        for (const char *p = f->choices ? f->choices : ""; *p && n + 3 < cap; p++) {
            if (*p == '|') {
                buf[n++] = ',';
                buf[n++] = ' ';
            } else {
                buf[n++] = *p;
            }
        }
        buf[n < cap ? n : cap - 1] = '\0';
        return;
    }
    case QN_FLAG_INT_LIST:
        snprintf(buf, cap, "a list of integers%s (space- or comma-separated)", b);
        return;
    case QN_FLAG_FLOAT_LIST:
        snprintf(buf, cap, "a list of numbers%s (space- or comma-separated)", b);
        return;
    case QN_FLAG_STRING_LIST: snprintf(buf, cap, "a list of strings (space- or comma-separated)");
        return;
    }
    snprintf(buf, cap, "a value");
}

/* ------------------------------------------------------------- value parsing */

/* The error messages start with a label that says where the text came from:
 * "--x" (command line), "QN_X (--x)" (environment), "default of --x". */
static qn_status bad_value(qn_status s, const qn_flag *f, const char *label, const char *text,
                           const char *why) {
    char d[400];
    describe(f, d, sizeof d);
    return qn_fail(s, "%s expects %s, got '%s'%s", label, d, text, why ? why : "");
}

static bool in_bounds(const qn_flag *f, double v) {
    return !has_bounds(f) || (v >= f->min && v <= f->max);
}

/* whole: the full text, for context when an element of a list is bad. */
static qn_status parse_int(const qn_flag *f, const char *label, const char *s, const char *whole,
                           int64_t *out) {
    char ctx[300] = "";
    if (whole && strcmp(whole, s) != 0) snprintf(ctx, sizeof ctx, " in '%s'", whole);
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    if (!isdigit((unsigned char)*p)) return bad_value(QN_ERR_FORMAT, f, label, s, ctx);
    for (const char *q = p; *q; q++) {
        if (!isdigit((unsigned char)*q)) return bad_value(QN_ERR_FORMAT, f, label, s, ctx);
    }
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno == ERANGE) {
        char why[340];
        snprintf(why, sizeof why, "%s (beyond the 64-bit integer range)", ctx);
        return bad_value(QN_ERR_RANGE, f, label, s, why);
    }
    /* int64 values past 2^53 compare approximately; bounds are far below that. */
    if (!in_bounds(f, (double)v)) {
        char why[340];
        snprintf(why, sizeof why, "%s (out of range)", ctx);
        return bad_value(QN_ERR_RANGE, f, label, s, why);
    }
    *out = (int64_t)v;
    return QN_OK;
}

static qn_status parse_float(const qn_flag *f, const char *label, const char *s,
                             const char *whole, double *out) {
    char ctx[300] = "";
    if (whole && strcmp(whole, s) != 0) snprintf(ctx, sizeof ctx, " in '%s'", whole);
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    /* strtod would also take " 1", "inf", "nan"; a config value is none of those. */
    if (!isdigit((unsigned char)*p) && *p != '.') return bad_value(QN_ERR_FORMAT, f, label, s, ctx);
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0') return bad_value(QN_ERR_FORMAT, f, label, s, ctx);
    if (errno == ERANGE || !isfinite(v)) {
        char why[340];
        snprintf(why, sizeof why, "%s (beyond the range of a double)", ctx);
        return bad_value(QN_ERR_RANGE, f, label, s, why);
    }
    if (!in_bounds(f, v)) {
        char why[340];
        snprintf(why, sizeof why, "%s (out of range)", ctx);
        return bad_value(QN_ERR_RANGE, f, label, s, why);
    }
    *out = v;
    return QN_OK;
}

static qn_status parse_bool(const qn_flag *f, const char *label, const char *s, bool *out) {
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return QN_OK;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return QN_OK;
        }
    }
    return bad_value(QN_ERR_FORMAT, f, label, s, NULL);
}

static qn_status parse_choice(const qn_flag *f, const char *label, const char *s, int *out) {
    const char *p = f->choices ? f->choices : "";
    size_t len = strlen(s);
    for (int idx = 0;; idx++) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && strncmp(p, s, n) == 0 && len > 0) {
            *out = idx;
            return QN_OK;
        }
        if (!bar) break;
        p = bar + 1;
    }
    return bad_value(QN_ERR_FORMAT, f, label, s, NULL);
}

static void value_free(const qn_flag *f, flag_value *v) {
    switch (f->type) {
    case QN_FLAG_STRING: free(v->s); v->s = NULL; break;
    case QN_FLAG_INT_LIST: free(v->il.v); v->il = (qn_int_list){0}; break;
    case QN_FLAG_FLOAT_LIST: free(v->fl.v); v->fl = (qn_float_list){0}; break;
    case QN_FLAG_STRING_LIST:
        for (size_t i = 0; i < v->sl.n; i++) free(v->sl.v[i]);
        free(v->sl.v);
        v->sl = (qn_string_list){0};
        break;
    default: break;
    }
}

/* Appends one list element (text of length n) to v. */
static qn_status list_add(const qn_flag *f, const char *label, const char *elem, size_t n,
                          const char *whole, flag_value *v) {
    char tmp[256];
    char *e = n < sizeof tmp ? tmp : malloc(n + 1);
    if (!e) return qn_fail(QN_ERR_NOMEM, "%s: out of memory", label);
    memcpy(e, elem, n);
    e[n] = '\0';
    qn_status s = QN_OK;
    if (f->type == QN_FLAG_INT_LIST) {
        int64_t x;
        s = parse_int(f, label, e, whole, &x);
        if (s == QN_OK) {
            int64_t *nv = realloc(v->il.v, (v->il.n + 1) * sizeof *nv);
            if (!nv) s = qn_fail(QN_ERR_NOMEM, "%s: out of memory", label);
            else (v->il.v = nv)[v->il.n++] = x;
        }
    } else if (f->type == QN_FLAG_FLOAT_LIST) {
        double x;
        s = parse_float(f, label, e, whole, &x);
        if (s == QN_OK) {
            double *nv = realloc(v->fl.v, (v->fl.n + 1) * sizeof *nv);
            if (!nv) s = qn_fail(QN_ERR_NOMEM, "%s: out of memory", label);
            else (v->fl.v = nv)[v->fl.n++] = x;
        }
    } else {
        char **nv = realloc(v->sl.v, (v->sl.n + 1) * sizeof *nv);
        char *copy = strdup(e);
        if (!nv || !copy) {
            free(copy);
            if (nv) v->sl.v = nv;
            s = qn_fail(QN_ERR_NOMEM, "%s: out of memory", label);
        } else {
            (v->sl.v = nv)[v->sl.n++] = copy;
        }
    }
    if (e != tmp) free(e);
    return s;
}

/* Splits each token on commas (and, for numbers, on whitespace) and appends
 * the elements. An empty element ("1,,2") is an error; a single empty token
 * gives an empty list. */
static qn_status parse_list(const qn_flag *f, const char *label, const char *const *tok,
                            size_t ntok, flag_value *v) {
    bool numeric = f->type != QN_FLAG_STRING_LIST;
    if (ntok == 1 && tok[0][0] == '\0') return QN_OK;
    for (size_t t = 0; t < ntok; t++) {
        const char *p = tok[t];
        if (numeric) {
            while (isspace((unsigned char)*p)) p++;
            if (*p == '\0') return bad_value(QN_ERR_FORMAT, f, label, tok[t], " (empty element)");
        }
        for (;;) {
            size_t n = 0;
            while (p[n] && p[n] != ',' && !(numeric && isspace((unsigned char)p[n]))) n++;
            if (n == 0) return bad_value(QN_ERR_FORMAT, f, label, tok[t], " (empty element)");
            QN_CHECK(list_add(f, label, p, n, tok[t], v));
            p += n;
            if (numeric) while (isspace((unsigned char)*p)) p++;
            if (*p == '\0') break;
            if (*p == ',') {
                p++;
                if (numeric) while (isspace((unsigned char)*p)) p++;
                if (*p == '\0') {
                    return bad_value(QN_ERR_FORMAT, f, label, tok[t], " (empty element)");
                }
            }
        }
    }
    return QN_OK;
}

/* Parses text (one token; lists may pass several) into *v. On failure *v is
 * released and zero. */
static qn_status parse_value(const qn_flag *f, const char *label, const char *const *tok,
                             size_t ntok, flag_value *v) {
    memset(v, 0, sizeof *v);
    qn_status s = QN_OK;
    switch (f->type) {
    case QN_FLAG_BOOL: s = parse_bool(f, label, tok[0], &v->b); break;
    case QN_FLAG_INT: s = parse_int(f, label, tok[0], NULL, &v->i); break;
    case QN_FLAG_FLOAT: s = parse_float(f, label, tok[0], NULL, &v->d); break;
    case QN_FLAG_CHOICE: s = parse_choice(f, label, tok[0], &v->c); break;
    case QN_FLAG_STRING:
        v->s = strdup(tok[0]);
        if (!v->s) s = qn_fail(QN_ERR_NOMEM, "%s: out of memory", label);
        break;
    case QN_FLAG_INT_LIST:
    case QN_FLAG_FLOAT_LIST:
    case QN_FLAG_STRING_LIST: s = parse_list(f, label, tok, ntok, v); break;
    }
    if (s != QN_OK) value_free(f, v);
    return s;
}

/* Replaces the field's value with *v (taking ownership). */
static void store(const qn_flag *f, void *cfg, flag_value *v) {
    flag_value old;
    memcpy(&old, field_ptr(cfg, f), f->size);
    value_free(f, &old);
    memcpy(field_ptr(cfg, f), v, f->size);
}

/* ------------------------------------------------------------ table checks */

static bool valid_name(const char *n) {
    if (!n || !(islower((unsigned char)n[0]) || isdigit((unsigned char)n[0]))) return false;
    for (const char *p = n; *p; p++) {
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '-')) return false;
    }
    return n[strlen(n) - 1] != '-';
}

static qn_status check_choices(const qn_flag_table *t, const qn_flag *f) {
    if (!f->choices || !f->choices[0]) {
        return qn_fail(QN_ERR_INTERNAL, "flag table '%s': --%s: a choice flag needs choices",
                       t->command, f->name);
    }
    const char *p = f->choices;
    for (;;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == 0) {
            return qn_fail(QN_ERR_INTERNAL, "flag table '%s': --%s: empty item in choices '%s'",
                           t->command, f->name, f->choices);
        }
        /* compare with every later item */
        for (const char *q = bar ? bar + 1 : NULL; q;) {
            const char *b2 = strchr(q, '|');
            size_t m = b2 ? (size_t)(b2 - q) : strlen(q);
            if (m == n && strncmp(p, q, n) == 0) {
                return qn_fail(QN_ERR_INTERNAL,
                               "flag table '%s': --%s: duplicate item '%.*s' in choices",
                               t->command, f->name, (int)n, p);
            }
            q = b2 ? b2 + 1 : NULL;
        }
        if (!bar) break;
        p = bar + 1;
    }
    return QN_OK;
}

static qn_status check_default(const qn_flag_table *t, const qn_flag *f) {
    if (f->def) {
        if ((f->attrs & QN_FLAG_REQUIRED)) {
            return qn_fail(QN_ERR_INTERNAL,
                           "flag table '%s': --%s: a required flag cannot have a default",
                           t->command, f->name);
        }
        char label[160];
        snprintf(label, sizeof label, "default of --%s", f->name);
        flag_value v;
        qn_status s = parse_value(f, label, &f->def, 1, &v);
        if (s != QN_OK) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", qn_last_error());
            return qn_fail(QN_ERR_INTERNAL, "flag table '%s': %s", t->command, msg);
        }
        value_free(f, &v);
        return QN_OK;
    }
    if ((f->attrs & QN_FLAG_REQUIRED)) return QN_OK;
    if ((f->type == QN_FLAG_INT || f->type == QN_FLAG_FLOAT) && !in_bounds(f, 0.0)) {
        char d[400];
        describe(f, d, sizeof d);
        return qn_fail(QN_ERR_INTERNAL,
                       "flag table '%s': --%s has no default, and its zero value is not %s",
                       t->command, f->name, d);
    }
    return QN_OK;
}

qn_status qn_flags_validate_table(const qn_flag_table *t) {
    if (!t || !t->command || !t->command[0]) {
        return qn_fail(QN_ERR_INTERNAL, "flag table without a command name");
    }
    if (t->n_flags > 0 && !t->flags) {
        return qn_fail(QN_ERR_INTERNAL, "flag table '%s': n_flags %zu but no flags", t->command,
                       t->n_flags);
    }
    if (t->cfg_size == 0 && t->n_flags > 0) {
        return qn_fail(QN_ERR_INTERNAL, "flag table '%s': cfg_size is 0", t->command);
    }
    for (size_t i = 0; i < t->n_flags; i++) {
        const qn_flag *f = &t->flags[i];
        const char *cmd = t->command;
        if (!valid_name(f->name)) {
            return qn_fail(QN_ERR_INTERNAL,
                           "flag table '%s': entry %zu: name '%s' is not [a-z0-9][a-z0-9-]*",
                           cmd, i, f->name ? f->name : "(null)");
        }
        if (strcmp(f->name, "help") == 0 || strcmp(f->name, "print-config") == 0) {
            return qn_fail(QN_ERR_INTERNAL, "flag table '%s': --%s is reserved", cmd, f->name);
        }
        if ((unsigned)f->type > (unsigned)QN_FLAG_STRING_LIST) {
            return qn_fail(QN_ERR_INTERNAL, "flag table '%s': --%s: unknown type %d", cmd,
                           f->name, (int)f->type);
        }
        if (f->size != type_size(f->type)) {
            return qn_fail(QN_ERR_INTERNAL,
                           "flag table '%s': --%s: field is %zu bytes, its type needs %zu", cmd,
                           f->name, f->size, type_size(f->type));
        }
        if (f->offset > t->cfg_size || f->size > t->cfg_size - f->offset) {
            return qn_fail(QN_ERR_INTERNAL,
                           "flag table '%s': --%s: field [%zu, +%zu) lies outside the %zu-byte "
                           "config",
                           cmd, f->name, f->offset, f->size, t->cfg_size);
        }
        if ((f->attrs & ~(uint32_t)(QN_FLAG_REQUIRED | QN_FLAG_SECRET)) != 0) {
            return qn_fail(QN_ERR_INTERNAL, "flag table '%s': --%s: unknown attrs 0x%x", cmd,
                           f->name, (unsigned)f->attrs);
        }
        if (!f->help || !f->help[0]) {
            return qn_fail(QN_ERR_INTERNAL, "flag table '%s': --%s has no help text", cmd,
                           f->name);
        }
        bool numeric = f->type == QN_FLAG_INT || f->type == QN_FLAG_FLOAT ||
                       f->type == QN_FLAG_INT_LIST || f->type == QN_FLAG_FLOAT_LIST;
        if (isnan(f->min) || isnan(f->max) || (has_bounds(f) && f->min > f->max)) {
            return qn_fail(QN_ERR_INTERNAL, "flag table '%s': --%s: bad bounds [%g, %g]", cmd,
                           f->name, f->min, f->max);
        }
        if (!numeric && has_bounds(f)) {
            return qn_fail(QN_ERR_INTERNAL, "flag table '%s': --%s: bounds on a non-numeric flag",
                           cmd, f->name);
        }
        if (f->type == QN_FLAG_CHOICE) {
            QN_CHECK(check_choices(t, f));
        } else if (f->choices) {
            return qn_fail(QN_ERR_INTERNAL, "flag table '%s': --%s: choices on a non-choice flag",
                           cmd, f->name);
        }
        for (size_t j = 0; j < i; j++) {
            const qn_flag *g = &t->flags[j];
            if (strcmp(f->name, g->name) == 0) {
                return qn_fail(QN_ERR_INTERNAL, "flag table '%s': --%s is listed twice", cmd,
                               f->name);
            }
            /* "--no-x" must mean one thing: the negation of bool x or flag no-x. */
            const qn_flag *a = f, *b = g;
            for (int k = 0; k < 2; k++) {
                if (strncmp(a->name, "no-", 3) == 0 && strcmp(a->name + 3, b->name) == 0 &&
                    b->type == QN_FLAG_BOOL) {
                    return qn_fail(QN_ERR_INTERNAL,
                                   "flag table '%s': --%s clashes with the negation of bool --%s",
                                   cmd, a->name, b->name);
                }
                a = g;
                b = f;
            }
            if (f->offset < g->offset + g->size && g->offset < f->offset + f->size) {
                return qn_fail(QN_ERR_INTERNAL, "flag table '%s': --%s and --%s share a field",
                               cmd, g->name, f->name);
            }
        }
        QN_CHECK(check_default(t, f));
    }
    return QN_OK;
}

/* ----------------------------------------------------------------- parsing */

const qn_flag *qn_flags_find(const qn_flag_table *t, const char *name) {
    for (size_t i = 0; i < t->n_flags; i++) {
        if (strcmp(t->flags[i].name, name) == 0) return &t->flags[i];
    }
    return NULL;
}

static const qn_flag *find_n(const qn_flag_table *t, const char *name, size_t n) {
    for (size_t i = 0; i < t->n_flags; i++) {
        if (strlen(t->flags[i].name) == n && strncmp(t->flags[i].name, name, n) == 0) {
            return &t->flags[i];
        }
    }
    return NULL;
}

static size_t edit_distance(const char *a, size_t na, const char *b) {
    size_t nb = strlen(b);
    if (na > 64 || nb > 64) return (size_t)-1;
    size_t row[65];
    for (size_t j = 0; j <= nb; j++) row[j] = j;
    for (size_t i = 1; i <= na; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= nb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[nb];
}

/* The known flag closest to a misspelt one, or NULL when none is close. */
static const qn_flag *closest(const qn_flag_table *t, const char *name, size_t n) {
    const qn_flag *best = NULL;
    size_t best_d = (size_t)-1;
    for (size_t i = 0; i < t->n_flags; i++) {
        const char *cand = t->flags[i].name;
        size_t d = edit_distance(name, n, cand);
        size_t cl = strlen(cand);
        /* a truncated name ("rollout-batch") is close however many chars are missing */
        if (n >= 3 && ((cl > n && strncmp(cand, name, n) == 0) ||
                       (n > cl && strncmp(cand, name, cl) == 0))) {
            d = d < 2 ? d : 2;
        }
        if (d < best_d) {
            best_d = d;
            best = &t->flags[i];
        }
    }
    size_t limit = n / 3 > 2 ? n / 3 : 2;
    return best_d <= limit ? best : NULL;
}

static qn_status unknown_flag(const qn_flag_table *t, const char *name, size_t n) {
    const qn_flag *c = closest(t, name, n);
    if (c) {
        return qn_fail(QN_ERR_INVALID,
                       "unknown flag --%.*s for '%s'; did you mean --%s? (quench help %s lists "
                       "the flags)",
                       (int)n, name, t->command, c->name, t->command);
    }
    return qn_fail(QN_ERR_INVALID, "unknown flag --%.*s for '%s' (quench help %s lists the flags)",
                   (int)n, name, t->command, t->command);
}

static bool looks_like_number(const char *s) {
    const char *p = s;
    if (*p == '-' || *p == '+') p++;
    if (!isdigit((unsigned char)*p) && *p != '.') return false;
    char *end;
    strtod(s, &end);
    return end != s && *end == '\0';
}

static bool is_flag_token(const char *s) { return s[0] == '-' && s[1] == '-'; }

qn_status qn_flags_defaults(const qn_flag_table *t, void *cfg) {
    QN_CHECK(qn_flags_validate_table(t));
    memset(cfg, 0, t->cfg_size);
    for (size_t i = 0; i < t->n_flags; i++) {
        const qn_flag *f = &t->flags[i];
        if (!f->def) continue;
        flag_value v;
        /* validated above, so this fails only for lack of memory */
        qn_status s = parse_value(f, f->name, &f->def, 1, &v);
        if (s != QN_OK) {
            qn_flags_free(t, cfg);
            return s;
        }
        store(f, cfg, &v);
    }
    return QN_OK;
}

static qn_status apply_env(const qn_flag_table *t, void *cfg, qn_flag_source *src) {
    for (size_t i = 0; i < t->n_flags; i++) {
        const qn_flag *f = &t->flags[i];
        char env[160], label[360];
        env_name(f, env, sizeof env);
        const char *val = getenv(env);
        if (!val) continue;
        snprintf(label, sizeof label, "%s (--%s)", env, f->name);
        flag_value v;
        QN_CHECK(parse_value(f, label, &val, 1, &v));
        store(f, cfg, &v);
        src[i] = QN_FLAG_FROM_ENV;
    }
    return QN_OK;
}

static qn_status missing_value(const qn_flag *f) {
    char d[400];
    describe(f, d, sizeof d);
    return qn_fail(QN_ERR_INVALID, "--%s expects a value (%s)", f->name, d);
}

static qn_status add_positional(const qn_flag_table *t, qn_flags_parsed *out, char *arg) {
    if (!out) {
        return qn_fail(QN_ERR_INVALID, "'%s' takes no positional arguments, got '%s'", t->command,
                       arg);
    }
    char **na = realloc(out->args, (out->n_args + 1) * sizeof *na);
    if (!na) return qn_fail(QN_ERR_NOMEM, "%s: out of memory", t->command);
    out->args = na;
    out->args[out->n_args++] = arg;
    return QN_OK;
}

static qn_status parse_cli(const qn_flag_table *t, void *cfg, int argc, char **argv,
                           qn_flags_parsed *out, qn_flag_source *src) {
    bool only_positional = false;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (only_positional || !(a[0] == '-' && a[1] != '\0') || looks_like_number(a)) {
            QN_CHECK(add_positional(t, out, a));
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_positional = true;
            continue;
        }
        if (!is_flag_token(a)) {
            return qn_fail(QN_ERR_INVALID,
                           "unknown flag %s for '%s' (flags are long, like --name; quench help %s "
                           "lists them)",
                           a, t->command, t->command);
        }
        const char *body = a + 2;
        const char *eq = strchr(body, '=');
        size_t n = eq ? (size_t)(eq - body) : strlen(body);
        if (n == strlen("print-config") && strncmp(body, "print-config", n) == 0) {
            if (eq) return qn_fail(QN_ERR_INVALID, "--print-config takes no value");
            if (out) out->print_config = true;
            continue;
        }
        const qn_flag *f = find_n(t, body, n);
        bool negated = false;
        if (!f && n > 3 && strncmp(body, "no-", 3) == 0) {
            const qn_flag *g = find_n(t, body + 3, n - 3);
            if (g && g->type == QN_FLAG_BOOL) {
                f = g;
                negated = true;
            }
        }
        if (!f) return unknown_flag(t, body, n);
        char label[200];
        snprintf(label, sizeof label, "--%s%s", negated ? "no-" : "", f->name);
        flag_value v;
        if (f->type == QN_FLAG_BOOL) {
            if (negated && eq) return qn_fail(QN_ERR_INVALID, "%s takes no value", label);
            memset(&v, 0, sizeof v);
            if (eq) QN_CHECK(parse_bool(f, label, eq + 1, &v.b));
            else v.b = !negated;
        } else if (is_list(f->type)) {
            if (eq) {
                const char *tok = eq + 1;
                QN_CHECK(parse_value(f, label, &tok, 1, &v));
            } else {
                int j = i + 1;
                while (j < argc && !is_flag_token(argv[j])) j++;
                if (j == i + 1) return missing_value(f);
                QN_CHECK(parse_value(f, label, (const char *const *)&argv[i + 1],
                                     (size_t)(j - i - 1), &v));
                i = j - 1;
            }
        } else {
            const char *val;
            if (eq) {
                val = eq + 1;
            } else {
                if (i + 1 >= argc || is_flag_token(argv[i + 1])) return missing_value(f);
                val = argv[++i];
            }
            QN_CHECK(parse_value(f, label, &val, 1, &v));
        }
        store(f, cfg, &v);
        src[f - t->flags] = QN_FLAG_FROM_CLI;
    }
    return QN_OK;
}

qn_status qn_flags_parse(const qn_flag_table *t, void *cfg, int argc, char **argv,
                         qn_flags_parsed *out) {
    if (out) memset(out, 0, sizeof *out);
    QN_CHECK(qn_flags_defaults(t, cfg));
    qn_flag_source *src = calloc(t->n_flags ? t->n_flags : 1, sizeof *src);
    if (!src) {
        qn_flags_free(t, cfg);
        return qn_fail(QN_ERR_NOMEM, "%s: out of memory", t->command);
    }
    qn_status s = apply_env(t, cfg, src);
    if (s == QN_OK) s = parse_cli(t, cfg, argc, argv, out, src);
    for (size_t i = 0; s == QN_OK && i < t->n_flags; i++) {
        const qn_flag *f = &t->flags[i];
        if ((f->attrs & QN_FLAG_REQUIRED) && src[i] == QN_FLAG_FROM_DEFAULT) {
            char d[400], env[160];
            describe(f, d, sizeof d);
            env_name(f, env, sizeof env);
            s = qn_fail(QN_ERR_INVALID, "--%s is required (%s); give it on the command line or "
                        "as %s", f->name, d, env);
        }
    }
    if (s != QN_OK) {
        free(src);
        qn_flags_free(t, cfg);
        if (out) qn_flags_parsed_free(out);
        return s;
    }
    if (out) out->sources = src;
    else free(src);
    return QN_OK;
}

qn_status qn_flags_set(const qn_flag_table *t, void *cfg, const char *name, const char *value) {
    const qn_flag *f = qn_flags_find(t, name);
    if (!f) return qn_fail(QN_ERR_NOT_FOUND, "'%s' has no flag --%s", t->command, name);
    char label[200];
    snprintf(label, sizeof label, "--%s", f->name);
    flag_value v;
    QN_CHECK(parse_value(f, label, &value, 1, &v));
    store(f, cfg, &v);
    return QN_OK;
}

void qn_flags_free(const qn_flag_table *t, void *cfg) {
    if (!cfg || !t) return;
    for (size_t i = 0; i < t->n_flags; i++) {
        const qn_flag *f = &t->flags[i];
        if (f->type != QN_FLAG_STRING && !is_list(f->type)) continue;
        if (f->size != type_size(f->type)) continue; /* invalid table: do not touch */
        flag_value v;
        memcpy(&v, field_ptr(cfg, f), f->size);
        value_free(f, &v);
        memset(field_ptr(cfg, f), 0, f->size);
    }
}

void qn_flags_parsed_free(qn_flags_parsed *p) {
    if (!p) return;
    free(p->args);
    free(p->sources);
    memset(p, 0, sizeof *p);
}

const char *qn_flags_choice_name(const qn_flag *f, int index, char *buf, size_t cap) {
    if (cap == 0) return buf;
    buf[0] = '\0';
    if (!f || f->type != QN_FLAG_CHOICE || !f->choices || index < 0) return buf;
    const char *p = f->choices;
    for (int i = 0; i < index; i++) {
        p = strchr(p, '|');
        if (!p) return buf;
        p++;
    }
    const char *bar = strchr(p, '|');
    size_t n = bar ? (size_t)(bar - p) : strlen(p);
    if (n >= cap) n = cap - 1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    return buf;
}

/* -------------------------------------------------------------- output */

static const char *metavar(const qn_flag *f) {
    if (f->metavar) return f->metavar;
    switch (f->type) {
    case QN_FLAG_BOOL: return "";
    case QN_FLAG_INT: return "N";
    case QN_FLAG_FLOAT: return "X";
    case QN_FLAG_STRING: return "STR";
    case QN_FLAG_CHOICE: return f->choices;
    case QN_FLAG_INT_LIST: return "N [N ...]";
    case QN_FLAG_FLOAT_LIST: return "X [X ...]";
    case QN_FLAG_STRING_LIST: return "STR [STR ...]";
    }
    return "";
}

static const char *zero_default(const qn_flag *f) {
    switch (f->type) {
    case QN_FLAG_BOOL: return "false";
    case QN_FLAG_INT:
    case QN_FLAG_FLOAT: return "0";
    case QN_FLAG_STRING: return "unset";
    case QN_FLAG_CHOICE: return NULL; /* the first choice, printed by the caller */
    default: return "empty";
    }
}

void qn_flags_print_help(const qn_flag_table *t, FILE *out) {
    if (qn_flags_validate_table(t) != QN_OK) {
        fprintf(stderr, "internal error: %s\n", qn_last_error());
    }
    if (!t) return;
    fprintf(out, "usage: %s\n", t->usage ? t->usage : t->command);
    if (t->summary && t->summary[0]) fprintf(out, "\n%s\n", t->summary);
    if (t->n_flags) fprintf(out, "\nflags:\n");
    for (size_t i = 0; i < t->n_flags; i++) {
        const qn_flag *f = &t->flags[i];
        const char *mv = metavar(f);
        char d[400], env[160], defbuf[128];
        describe(f, d, sizeof d);
        env_name(f, env, sizeof env);
        const char *def = f->def;
        if (!def) def = zero_default(f);
        if (!def) def = qn_flags_choice_name(f, 0, defbuf, sizeof defbuf);
        if (f->type == QN_FLAG_BOOL) {
            fprintf(out, "  --%s, --no-%s\n", f->name, f->name);
        } else {
            fprintf(out, "  --%s %s\n", f->name, mv ? mv : "");
        }
        fprintf(out, "      %s\n", f->help ? f->help : "");
        if (f->attrs & QN_FLAG_REQUIRED) {
            fprintf(out, "      %s; required; env %s\n", d, env);
        } else {
            fprintf(out, "      %s; default %s; env %s\n", d, def, env);
        }
    }
    fprintf(out,
            "\nEvery flag can also be set as QN_<FLAG> in the environment (upper case, '-' as\n"
            "'_'); the command line wins over the environment, which wins over the default.\n"
            "Values: --name value or --name=value; lists take several values or commas\n"
            "(--x 1 2, --x 1,2); a repeated flag keeps the last value. --print-config shows\n"
            "the effective configuration and exits.\n");
}

void qn_flags_write_quoted(FILE *out, const char *s) {
    bool plain = s[0] != '\0';
    for (const char *p = s; *p; p++) {
        if (!(isalnum((unsigned char)*p) || strchr("_./:,@%+=-", *p))) plain = false;
    }
    if (plain) {
        fputs(s, out);
        return;
    }
    fputc('\'', out);
    for (const char *p = s; *p; p++) {
        if (*p == '\'') fputs("'\\''", out);
        else fputc(*p, out);
    }
    fputc('\'', out);
}

/* The value in command-line syntax (unquoted); lists comma-joined. */
static void write_value(FILE *out, const qn_flag *f, const void *fp) {
    char buf[64];
    switch (f->type) {
    case QN_FLAG_BOOL: fputs(*(const bool *)fp ? "true" : "false", out); break;
    case QN_FLAG_INT: fprintf(out, "%" PRId64, *(const int64_t *)fp); break;
    case QN_FLAG_FLOAT:
        fmt_double(*(const double *)fp, buf, sizeof buf);
        fputs(buf, out);
        break;
    case QN_FLAG_STRING: fputs(*(char *const *)fp ? *(char *const *)fp : "", out); break;
    case QN_FLAG_CHOICE: {
        char cb[128];
        fputs(qn_flags_choice_name(f, *(const int *)fp, cb, sizeof cb), out);
        break;
    }
    case QN_FLAG_INT_LIST: {
        const qn_int_list *l = fp;
        for (size_t i = 0; i < l->n; i++) fprintf(out, "%s%" PRId64, i ? "," : "", l->v[i]);
        break;
    }
    case QN_FLAG_FLOAT_LIST: {
        const qn_float_list *l = fp;
        for (size_t i = 0; i < l->n; i++) {
            fmt_double(l->v[i], buf, sizeof buf);
            fprintf(out, "%s%s", i ? "," : "", buf);
        }
        break;
    }
    case QN_FLAG_STRING_LIST: {
        const qn_string_list *l = fp;
        for (size_t i = 0; i < l->n; i++) fprintf(out, "%s%s", i ? "," : "", l->v[i]);
        break;
    }
    }
}

static void dump_line(FILE *out, const qn_flag_table *t, const qn_flag *f, const void *cfg,
                      const qn_flags_parsed *p) {
    char *val = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&val, &len);
    bool unset = f->type == QN_FLAG_STRING && !*(char *const *)field_cptr(cfg, f);
    if (mem) {
        if (unset) fprintf(mem, "# --%s (unset)", f->name);
        else {
            fprintf(mem, "--%s=", f->name);
            if (f->attrs & QN_FLAG_SECRET) {
                fputs("<hidden>", mem);
            } else {
                char *raw = NULL;
                size_t rl = 0;
                FILE *rm = open_memstream(&raw, &rl);
                if (rm) {
                    write_value(rm, f, field_cptr(cfg, f));
                    fclose(rm);
                    qn_flags_write_quoted(mem, raw);
                }
                free(raw);
            }
        }
        fclose(mem);
    }
    if (p && p->sources) fprintf(out, "  %-44s", val ? val : "");
    else fprintf(out, "  %s", val ? val : "");
    if (p && p->sources) {
        size_t i = (size_t)(f - t->flags);
        char env[160];
        switch (p->sources[i]) {
        case QN_FLAG_FROM_DEFAULT: fprintf(out, " # default"); break;
        case QN_FLAG_FROM_ENV:
            env_name(f, env, sizeof env);
            fprintf(out, " # env %s", env);
            break;
        case QN_FLAG_FROM_CLI: fprintf(out, " # cli"); break;
        }
    }
    fputc('\n', out);
    free(val);
}

void qn_flags_dump(const qn_flag_table *t, const void *cfg, const qn_flags_parsed *p,
                   FILE *out) {
    for (size_t i = 0; i < t->n_flags; i++) dump_line(out, t, &t->flags[i], cfg, p);
}

void qn_flags_log(const qn_flag_table *t, const void *cfg, const qn_flags_parsed *p) {
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    if (!mem) return;
    qn_flags_dump(t, cfg, p, mem);
    fclose(mem);
    QN_LOG_INFO("%s configuration:", t->command);
    for (char *line = buf; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        QN_LOG_INFO("%s", line);
        line = nl ? nl + 1 : NULL;
    }
    free(buf);
}

qn_status qn_flags_to_json(const qn_flag_table *t, const void *cfg, char **json) {
    *json = NULL;
    cJSON *o = cJSON_CreateObject();
    if (!o) return qn_fail(QN_ERR_NOMEM, "%s: out of memory", t->command);
    bool ok = true;
    for (size_t i = 0; ok && i < t->n_flags; i++) {
        const qn_flag *f = &t->flags[i];
        const void *fp = field_cptr(cfg, f);
        cJSON *v = NULL;
        bool unset = f->type == QN_FLAG_STRING && !*(char *const *)fp;
        if ((f->attrs & QN_FLAG_SECRET) && !unset) {
            v = cJSON_CreateString("<hidden>");
        } else {
            switch (f->type) {
            case QN_FLAG_BOOL: v = cJSON_CreateBool(*(const bool *)fp); break;
            /* JSON numbers are doubles: integers past 2^53 lose precision here */
            case QN_FLAG_INT: v = cJSON_CreateNumber((double)*(const int64_t *)fp); break;
            case QN_FLAG_FLOAT: v = cJSON_CreateNumber(*(const double *)fp); break;
            case QN_FLAG_STRING: {
                const char *s = *(char *const *)fp;
                v = s ? cJSON_CreateString(s) : cJSON_CreateNull();
                break;
            }
            case QN_FLAG_CHOICE: {
                char cb[128];
                v = cJSON_CreateString(qn_flags_choice_name(f, *(const int *)fp, cb, sizeof cb));
                break;
            }
            case QN_FLAG_INT_LIST: {
                const qn_int_list *l = fp;
                v = cJSON_CreateArray();
                for (size_t k = 0; v && k < l->n; k++) {
                    cJSON *e = cJSON_CreateNumber((double)l->v[k]);
                    if (!e || !cJSON_AddItemToArray(v, e)) ok = false;
                }
                break;
            }
            case QN_FLAG_FLOAT_LIST: {
                const qn_float_list *l = fp;
                v = cJSON_CreateArray();
                for (size_t k = 0; v && k < l->n; k++) {
                    cJSON *e = cJSON_CreateNumber(l->v[k]);
                    if (!e || !cJSON_AddItemToArray(v, e)) ok = false;
                }
                break;
            }
            case QN_FLAG_STRING_LIST: {
                const qn_string_list *l = fp;
                v = cJSON_CreateArray();
                for (size_t k = 0; v && k < l->n; k++) {
                    cJSON *e = cJSON_CreateString(l->v[k]);
                    if (!e || !cJSON_AddItemToArray(v, e)) ok = false;
                }
                break;
            }
            }
        }
        if (!v || !cJSON_AddItemToObject(o, f->name, v)) {
            cJSON_Delete(v);
            ok = false;
        }
    }
    if (ok) *json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!*json) return qn_fail(QN_ERR_NOMEM, "%s: out of memory writing the configuration",
                               t->command);
    return QN_OK;
}
