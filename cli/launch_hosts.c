/* launch_hosts.c — see launch_hosts.h.
 *
 * Both parsers work on the input in place with explicit lengths (no
 * strtok, no copies of the whole text) and check every bound before they
 * allocate, so that a fuzzer cannot make them allocate without limit. The
 * node list is parsed into a small description of each item first and
 * expanded second, so the name count is known and capped before any name
 * is built. Duplicates in a node list are found by sorting pointers
 * (O(n log n)) because a list may hold QN_HOSTS_MAX names; a hostfile keeps
 * a hash index of the names seen, since a repeat changes the earlier entry
 * and is found while parsing. */
#include "cli/launch_hosts.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void qn_host_list_free(qn_host_list *l) {
    if (!l) return;
    for (size_t i = 0; i < l->n; i++)
        free(l->hosts[i].name);
    free(l->hosts);
    memset(l, 0, sizeof *l);
}

uint32_t qn_host_list_total_slots(const qn_host_list *l) {
    uint64_t sum = 0;
    for (size_t i = 0; l && i < l->n; i++) {
        sum += l->hosts[i].slots;
        if (sum >= UINT32_MAX) return UINT32_MAX;
    }
    return (uint32_t)sum;
}

/* Appends a copy of name[0..len) with the given slots. */
static qn_status list_push(qn_host_list *l, const char *name, size_t len, uint32_t slots,
                           uint32_t max_slots) {
    if (l->n >= QN_HOSTS_MAX)
        return qn_fail(QN_ERR_TOO_LARGE, "more than %u hosts", QN_HOSTS_MAX);
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        qn_host *h = realloc(l->hosts, cap * sizeof *h);
        if (!h) return qn_fail(QN_ERR_NOMEM, "host list of %zu entries", cap);
        l->hosts = h;
        l->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy) return qn_fail(QN_ERR_NOMEM, "host name of %zu bytes", len);
    memcpy(copy, name, len);
    copy[len] = '\0';
    l->hosts[l->n++] = (qn_host){.name = copy, .slots = slots, .max_slots = max_slots};
    return QN_OK;
}

static bool is_name_char(char c, bool hostfile) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    if (c == '.' || c == '-' || c == '_') return true;
    return hostfile && (c == ':' || c == '@');
}

/* Decimal digits s[0..len) as a value in [lo, hi]; false otherwise. */
static bool parse_uint(const char *s, size_t len, uint64_t lo, uint64_t hi, uint64_t *out) {
    if (len == 0 || len > 10) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v < lo || v > hi) return false;
    *out = v;
    return true;
}

/* ---- hostfile ---------------------------------------------------------- */

static bool is_blank(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Index from host name to position in the list, so that a repeated host is
 * found in O(1): open addressing, linear probing, slots hold position + 1
 * (0 = empty), kept at most half full. */
typedef struct hf_index {
    size_t *slot;
    size_t cap; /* a power of two */
} hf_index;

static uint64_t hf_hash(const char *s, size_t len) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

/* Position of name[0..len) in l, or SIZE_MAX. */
static size_t hf_find(const hf_index *ix, const qn_host_list *l, const char *name, size_t len) {
    if (!ix->cap) return SIZE_MAX;
    for (size_t k = hf_hash(name, len) & (ix->cap - 1);; k = (k + 1) & (ix->cap - 1)) {
        size_t v = ix->slot[k];
        if (!v) return SIZE_MAX;
        const char *other = l->hosts[v - 1].name;
        if (strncmp(other, name, len) == 0 && other[len] == '\0') return v - 1;
    }
}

/* Records l->hosts[pos] (just appended), growing the table first when needed. */
static qn_status hf_add(hf_index *ix, const qn_host_list *l, size_t pos) {
    if (2 * l->n > ix->cap) {
        size_t cap = ix->cap ? ix->cap * 2 : 64;
        while (2 * l->n > cap) cap *= 2;
        size_t *slot = calloc(cap, sizeof *slot);
        if (!slot) return qn_fail(QN_ERR_NOMEM, "hostfile index of %zu entries", cap);
        free(ix->slot);
        ix->slot = slot;
        ix->cap = cap;
        for (size_t i = 0; i < l->n; i++) {
            const char *nm = l->hosts[i].name;
            size_t k = hf_hash(nm, strlen(nm)) & (cap - 1);
            while (slot[k]) k = (k + 1) & (cap - 1);
            slot[k] = i + 1;
        }
        return QN_OK; /* pos was rehashed with the rest */
    }
    const char *nm = l->hosts[pos].name;
    size_t k = hf_hash(nm, strlen(nm)) & (ix->cap - 1);
    while (ix->slot[k]) k = (k + 1) & (ix->cap - 1);
    ix->slot[k] = pos + 1;
    return QN_OK;
}

/* One line without its '\n' and comment. */
static qn_status hostfile_line(const char *s, size_t len, const char *path, size_t lineno,
                               qn_host_list *out, hf_index *ix) {
    size_t i = 0;
    while (i < len && is_blank(s[i])) i++;
    if (i == len) return QN_OK; /* blank or comment-only */
    const char *name = s + i;
    size_t name_len = 0;
    while (i < len && !is_blank(s[i])) i++, name_len++;
    if (name_len > QN_HOST_NAME_MAX)
        return qn_fail(QN_ERR_FORMAT, "%s:%zu: host name longer than %u characters", path,
                       lineno, QN_HOST_NAME_MAX);
    if (name[0] == '-')
        return qn_fail(QN_ERR_FORMAT,
                       "%s:%zu: host '%.*s': a host name may not start with '-' (ssh would read "
                       "it as an option)",
                       path, lineno, (int)(name_len > 64 ? 64 : name_len), name);
    for (size_t k = 0; k < name_len; k++)
        if (!is_name_char(name[k], true))
            return qn_fail(QN_ERR_FORMAT,
                           "%s:%zu: host '%.*s': character 0x%02x is not allowed in a host "
                           "name (letters, digits, . - _ : @)",
                           path, lineno, (int)name_len, name, (unsigned char)name[k]);

    uint64_t slots = 0, max_slots = 0;
    bool has_slots = false, has_max = false;
    while (i < len) {
        while (i < len && is_blank(s[i])) i++;
        if (i == len) break;
        const char *tok = s + i;
        size_t tlen = 0;
        while (i < len && !is_blank(s[i])) i++, tlen++;
        const char *eq = memchr(tok, '=', tlen);
        if (!eq)
            return qn_fail(QN_ERR_FORMAT,
                           "%s:%zu: '%.*s': expected slots=N or max_slots=N after the host name",
                           path, lineno, (int)(tlen > 64 ? 64 : tlen), tok);
        size_t klen = (size_t)(eq - tok);
        const char *val = eq + 1;
        size_t vlen = tlen - klen - 1;
        bool is_slots = klen == 5 && memcmp(tok, "slots", 5) == 0;
        bool is_max = klen == 9 && (memcmp(tok, "max_slots", 9) == 0 ||
                                    memcmp(tok, "max-slots", 9) == 0);
        if (!is_slots && !is_max)
            return qn_fail(QN_ERR_FORMAT,
                           "%s:%zu: unknown key '%.*s' (expected slots or max_slots)", path,
                           lineno, (int)(klen > 64 ? 64 : klen), tok);
        if ((is_slots && has_slots) || (is_max && has_max))
            return qn_fail(QN_ERR_FORMAT, "%s:%zu: %.*s given twice", path, lineno, (int)klen,
                           tok);
        uint64_t v;
        if (!parse_uint(val, vlen, 1, QN_HOST_SLOTS_MAX, &v))
            return qn_fail(QN_ERR_FORMAT, "%s:%zu: %.*s: expected an integer in [1, %u]", path,
                           lineno, (int)(tlen > 64 ? 64 : tlen), tok, QN_HOST_SLOTS_MAX);
        if (is_slots) {
            slots = v;
            has_slots = true;
        } else {
            max_slots = v;
            has_max = true;
        }
    }
    if (has_max && has_slots && max_slots < slots)
        return qn_fail(QN_ERR_FORMAT, "%s:%zu: host '%.*s': max_slots=%llu is below slots=%llu",
                       path, lineno, (int)name_len, name, (unsigned long long)max_slots,
                       (unsigned long long)slots);
    if (!has_slots) slots = has_max ? max_slots : 1;

    size_t at = hf_find(ix, out, name, name_len);
    if (at != SIZE_MAX) {
        qn_host *prev = &out->hosts[at];
        if (has_slots || has_max)
            return qn_fail(QN_ERR_FORMAT,
                           "%s:%zu: host '%s' is listed again with slots/max_slots (a repeated "
                           "host may only be named bare, which adds one slot)",
                           path, lineno, prev->name);
        if (prev->slots >= QN_HOST_SLOTS_MAX)
            return qn_fail(QN_ERR_FORMAT, "%s:%zu: host '%s' has more than %u slots", path,
                           lineno, prev->name, QN_HOST_SLOTS_MAX);
        if (prev->max_slots && prev->slots + 1 > prev->max_slots)
            return qn_fail(QN_ERR_FORMAT,
                           "%s:%zu: host '%s' listed again: %u slots would exceed its "
                           "max_slots=%u",
                           path, lineno, prev->name, prev->slots + 1, prev->max_slots);
        prev->slots++;
        return QN_OK;
    }
    qn_status st = list_push(out, name, name_len, (uint32_t)slots, (uint32_t)max_slots);
    if (st == QN_ERR_TOO_LARGE)
        return qn_fail(st, "%s:%zu: more than %u hosts", path, lineno, QN_HOSTS_MAX);
    if (st != QN_OK) return st;
    return hf_add(ix, out, out->n - 1);
}

qn_status qn_hostfile_parse(const char *text, size_t len, const char *path, qn_host_list *out) {
    if (!out) return qn_fail(QN_ERR_INVALID, "qn_hostfile_parse: no output list");
    memset(out, 0, sizeof *out);
    if (!path) path = "hostfile";
    if (!text && len) return qn_fail(QN_ERR_INVALID, "%s: no text", path);
    size_t pos = 0, lineno = 0;
    hf_index ix = {0};
    qn_status st = QN_OK;
    while (pos < len) {
        lineno++;
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t llen = nl ? (size_t)(nl - line) : len - pos;
        pos += llen + (nl ? 1 : 0);
        if (memchr(line, '\0', llen)) {
            st = qn_fail(QN_ERR_FORMAT, "%s:%zu: NUL byte in the line", path, lineno);
            break;
        }
        const char *hash = memchr(line, '#', llen);
        if (hash) llen = (size_t)(hash - line);
        st = hostfile_line(line, llen, path, lineno, out, &ix);
        if (st != QN_OK) break;
    }
    if (st == QN_OK && out->n == 0)
        st = qn_fail(QN_ERR_FORMAT, "%s: no hosts (only blank lines and comments)", path);
    free(ix.slot);
    if (st != QN_OK) qn_host_list_free(out);
    return st;
}

/* ---- Slurm node lists -------------------------------------------------- */

/* LO-HI printed with at least `width` digits. */
typedef struct nl_range {
    uint32_t lo, hi, width;
} nl_range;

/* One item of a node list: literal pieces and bracket groups in turn,
 * lit[0] grp[0] lit[1] grp[1] ... lit[n_groups]. */
typedef struct nl_item {
    const char *text;     /* the item in the list (for messages) */
    size_t text_len;
    size_t n_groups;
    size_t *lit_off, *lit_len; /* n_groups + 1 each */
    size_t *grp_first, *grp_count; /* ranges of each group in `ranges` */
    uint64_t *grp_size;   /* names each group produces */
} nl_item;

typedef struct nl_parse {
    const char *list;
    nl_range *ranges;
    size_t n_ranges, cap_ranges;
} nl_parse;

static void nl_item_free(nl_item *it) {
    free(it->lit_off);
    free(it->lit_len);
    free(it->grp_first);
    free(it->grp_count);
    free(it->grp_size);
    memset(it, 0, sizeof *it);
}

#define NL_ITEM_FMT "'%.*s'"
#define NL_ITEM_ARG(it) (int)((it)->text_len > 80 ? 80 : (it)->text_len), (it)->text

static qn_status nl_push_range(nl_parse *p, nl_range r) {
    if (p->n_ranges == p->cap_ranges) {
        size_t cap = p->cap_ranges ? p->cap_ranges * 2 : 16;
        nl_range *nr = realloc(p->ranges, cap * sizeof *nr);
        if (!nr) return qn_fail(QN_ERR_NOMEM, "node list: %zu ranges", cap);
        p->ranges = nr;
        p->cap_ranges = cap;
    }
    p->ranges[p->n_ranges++] = r;
    return QN_OK;
}

/* The inside of one bracket group, s[0..len): "1-3,07". Appends its ranges
 * and returns the number of names it produces in *size. */
static qn_status nl_group(nl_parse *p, const nl_item *it, const char *s, size_t len,
                          uint64_t *size) {
    if (len == 0)
        return qn_fail(QN_ERR_FORMAT, "node list: " NL_ITEM_FMT ": empty brackets",
                       NL_ITEM_ARG(it));
    *size = 0;
    size_t i = 0;
    while (i <= len) {
        size_t start = i;
        while (i < len && s[i] != ',') i++;
        const char *r = s + start;
        size_t rlen = i - start;
        i++; /* past the comma (or the end) */
        const char *dash = memchr(r, '-', rlen);
        const char *lo_s = r, *hi_s = r;
        size_t lo_len = rlen, hi_len = rlen;
        if (dash) {
            lo_len = (size_t)(dash - r);
            hi_s = dash + 1;
            hi_len = rlen - lo_len - 1;
        }
        if (lo_len == 0 || hi_len == 0)
            return qn_fail(QN_ERR_FORMAT, "node list: " NL_ITEM_FMT ": empty range '%.*s'",
                           NL_ITEM_ARG(it), (int)(rlen > 40 ? 40 : rlen), r);
        uint64_t lo, hi;
        if (lo_len > 9 || hi_len > 9 || !parse_uint(lo_s, lo_len, 0, 999999999, &lo) ||
            !parse_uint(hi_s, hi_len, 0, 999999999, &hi))
            return qn_fail(QN_ERR_FORMAT,
                           "node list: " NL_ITEM_FMT ": range '%.*s': expected N or LO-HI with "
                           "decimal numbers of at most 9 digits",
                           NL_ITEM_ARG(it), (int)(rlen > 40 ? 40 : rlen), r);
        if (lo > hi)
            return qn_fail(QN_ERR_FORMAT, "node list: " NL_ITEM_FMT ": range %.*s is reversed",
                           NL_ITEM_ARG(it), (int)rlen, r);
        QN_CHECK(nl_push_range(p, (nl_range){(uint32_t)lo, (uint32_t)hi, (uint32_t)lo_len}));
        *size += hi - lo + 1; /* <= 1e9 per range; capped below */
        if (*size > QN_HOSTS_MAX)
            return qn_fail(QN_ERR_TOO_LARGE, "node list: " NL_ITEM_FMT ": more than %u names",
                           NL_ITEM_ARG(it), QN_HOSTS_MAX);
    }
    return QN_OK;
}

/* One item s[0..len) into *it; its name count in *count. */
static qn_status nl_parse_item(nl_parse *p, const char *s, size_t len, nl_item *it,
                               uint64_t *count) {
    memset(it, 0, sizeof *it);
    it->text = s;
    it->text_len = len;
    if (len == 0) return qn_fail(QN_ERR_FORMAT, "node list '%s': empty name", p->list);
    size_t n_open = 0;
    for (size_t i = 0; i < len; i++) n_open += s[i] == '[';
    size_t slots = n_open + 1;
    it->lit_off = calloc(slots, sizeof(size_t));
    it->lit_len = calloc(slots, sizeof(size_t));
    it->grp_first = calloc(slots, sizeof(size_t));
    it->grp_count = calloc(slots, sizeof(size_t));
    it->grp_size = calloc(slots, sizeof(uint64_t));
    if (!it->lit_off || !it->lit_len || !it->grp_first || !it->grp_count || !it->grp_size)
        return qn_fail(QN_ERR_NOMEM, "node list: item of %zu bytes", len);
    size_t i = 0;
    *count = 1;
    for (;;) {
        size_t start = i;
        while (i < len && s[i] != '[') {
            if (s[i] == ']')
                return qn_fail(QN_ERR_FORMAT, "node list: " NL_ITEM_FMT ": ']' without '['",
                               NL_ITEM_ARG(it));
            if (!is_name_char(s[i], false))
                return qn_fail(QN_ERR_FORMAT,
                               "node list: " NL_ITEM_FMT ": character 0x%02x is not allowed in "
                               "a host name (letters, digits, . - _)",
                               NL_ITEM_ARG(it), (unsigned char)s[i]);
            i++;
        }
        it->lit_off[it->n_groups] = start;
        it->lit_len[it->n_groups] = i - start;
        if (i == len) break;
        size_t open = ++i;
        while (i < len && s[i] != ']') {
            if (s[i] == '[')
                return qn_fail(QN_ERR_FORMAT, "node list: " NL_ITEM_FMT ": nested '['",
                               NL_ITEM_ARG(it));
            i++;
        }
        if (i == len)
            return qn_fail(QN_ERR_FORMAT, "node list: " NL_ITEM_FMT ": '[' without ']'",
                           NL_ITEM_ARG(it));
        size_t g = it->n_groups;
        it->grp_first[g] = p->n_ranges;
        QN_CHECK(nl_group(p, it, s + open, i - open, &it->grp_size[g]));
        it->grp_count[g] = p->n_ranges - it->grp_first[g];
        *count *= it->grp_size[g];
        it->n_groups++;
        if (*count > QN_HOSTS_MAX)
            return qn_fail(QN_ERR_TOO_LARGE, "node list: " NL_ITEM_FMT ": more than %u names",
                           NL_ITEM_ARG(it), QN_HOSTS_MAX);
        i++; /* past ']' */
    }
    if (s[0] == '-')
        return qn_fail(QN_ERR_FORMAT,
                       "node list: " NL_ITEM_FMT ": a host name may not start with '-' (ssh "
                       "and srun would read it as an option)",
                       NL_ITEM_ARG(it));
    return QN_OK;
}

/* Names of one item, first group slowest (an odometer over the groups). */
static qn_status nl_expand_item(const nl_parse *p, const nl_item *it, qn_host_list *out) {
    uint64_t idx[QN_HOST_NAME_MAX + 1] = {0}; /* n_groups <= len/2 < this */
    char name[QN_HOST_NAME_MAX + 1];
    if (it->n_groups > QN_HOST_NAME_MAX)
        return qn_fail(QN_ERR_FORMAT, "node list: " NL_ITEM_FMT ": too many bracket groups",
                       NL_ITEM_ARG(it));
    for (;;) {
        size_t n = 0;
        for (size_t g = 0; g <= it->n_groups; g++) {
            size_t ll = it->lit_len[g];
            if (n + ll > QN_HOST_NAME_MAX) goto too_long;
            memcpy(name + n, it->text + it->lit_off[g], ll);
            n += ll;
            if (g == it->n_groups) break;
            /* idx[g] counts through the group's ranges in order */
            uint64_t k = idx[g];
            const nl_range *r = &p->ranges[it->grp_first[g]];
            while (k > (uint64_t)(r->hi - r->lo)) {
                k -= (uint64_t)(r->hi - r->lo) + 1;
                r++;
            }
            char num[16];
            int w = snprintf(num, sizeof num, "%0*u", (int)r->width, r->lo + (uint32_t)k);
            if (w < 0 || n + (size_t)w > QN_HOST_NAME_MAX) goto too_long;
            memcpy(name + n, num, (size_t)w);
            n += (size_t)w;
        }
        if (n == 0)
            return qn_fail(QN_ERR_FORMAT, "node list: " NL_ITEM_FMT ": empty name",
                           NL_ITEM_ARG(it));
        QN_CHECK(list_push(out, name, n, 1, 0));
        size_t g = it->n_groups;
        while (g > 0) {
            g--;
            if (++idx[g] < it->grp_size[g]) break;
            idx[g] = 0;
            if (g == 0) return QN_OK;
        }
        if (it->n_groups == 0) return QN_OK;
    }
too_long:
    return qn_fail(QN_ERR_FORMAT, "node list: " NL_ITEM_FMT ": a name is longer than %u",
                   NL_ITEM_ARG(it), QN_HOST_NAME_MAX);
}

static int cmp_name_ptr(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static qn_status nl_check_unique(const qn_host_list *l) {
    if (l->n < 2) return QN_OK;
    char **names = malloc(l->n * sizeof *names);
    if (!names) return qn_fail(QN_ERR_NOMEM, "node list: %zu names", l->n);
    for (size_t i = 0; i < l->n; i++) names[i] = l->hosts[i].name;
    qsort(names, l->n, sizeof *names, cmp_name_ptr);
    qn_status st = QN_OK;
    for (size_t i = 1; i < l->n; i++)
        if (strcmp(names[i - 1], names[i]) == 0) {
            st = qn_fail(QN_ERR_FORMAT, "node list: host '%s' is listed twice", names[i]);
            break;
        }
    free(names);
    return st;
}

qn_status qn_slurm_nodelist_expand(const char *list, qn_host_list *out) {
    if (!out) return qn_fail(QN_ERR_INVALID, "qn_slurm_nodelist_expand: no output list");
    memset(out, 0, sizeof *out);
    if (!list || !list[0]) return qn_fail(QN_ERR_FORMAT, "node list: empty");
    size_t len = strlen(list);
    nl_parse p = {.list = list};
    /* the same rule as the split below: a comma inside brackets is a range separator */
    size_t n_items = 1;
    bool in_brackets = false;
    for (size_t i = 0; i < len; i++) {
        if (list[i] == '[') in_brackets = true;
        else if (list[i] == ']') in_brackets = false;
        else if (list[i] == ',' && !in_brackets) n_items++;
    }
    nl_item *items = calloc(n_items, sizeof *items);
    if (!items) return qn_fail(QN_ERR_NOMEM, "node list: %zu items", n_items);
    qn_status st = QN_OK;
    uint64_t total = 0;
    size_t done = 0, pos = 0;
    while (done < n_items) {
        size_t start = pos;
        bool in = false;
        while (pos < len && (in || list[pos] != ',')) {
            if (list[pos] == '[') in = true;
            else if (list[pos] == ']') in = false;
            pos++;
        }
        uint64_t count = 0;
        st = nl_parse_item(&p, list + start, pos - start, &items[done], &count);
        done++;
        if (st != QN_OK) goto out;
        total += count;
        if (total > QN_HOSTS_MAX) {
            st = qn_fail(QN_ERR_TOO_LARGE, "node list: more than %u names", QN_HOSTS_MAX);
            goto out;
        }
        pos++; /* past the comma */
    }
    for (size_t i = 0; i < n_items && st == QN_OK; i++) st = nl_expand_item(&p, &items[i], out);
    if (st == QN_OK) st = nl_check_unique(out);
out:
    for (size_t i = 0; i < done; i++) nl_item_free(&items[i]);
    free(items);
    free(p.ranges);
    if (st != QN_OK) qn_host_list_free(out);
    return st;
}

/* ---- SLURM_TASKS_PER_NODE ---------------------------------------------- */

qn_status qn_slurm_tasks_per_node(const char *spec, uint32_t **counts, size_t *n_nodes) {
    if (!counts || !n_nodes) return qn_fail(QN_ERR_INVALID, "qn_slurm_tasks_per_node: no output");
    *counts = NULL;
    *n_nodes = 0;
    if (!spec || !spec[0]) return qn_fail(QN_ERR_FORMAT, "SLURM_TASKS_PER_NODE: empty");
    /* first pass: validate and count, so that one allocation suffices */
    uint64_t total = 0;
    for (int pass = 0; pass < 2; pass++) {
        const char *s = spec;
        size_t at = 0;
        for (;;) {
            const char *item = s;
            size_t nlen = strspn(s, "0123456789");
            uint64_t n, rep = 1;
            if (!parse_uint(s, nlen, 0, QN_HOST_SLOTS_MAX, &n))
                return qn_fail(QN_ERR_FORMAT,
                               "SLURM_TASKS_PER_NODE '%s': at '%.20s': expected a task count in "
                               "[0, %u]",
                               spec, item, QN_HOST_SLOTS_MAX);
            s += nlen;
            if (s[0] == '(') {
                if (s[1] != 'x')
                    return qn_fail(QN_ERR_FORMAT,
                                   "SLURM_TASKS_PER_NODE '%s': at '%.20s': expected (xR)", spec,
                                   item);
                s += 2;
                size_t rlen = strspn(s, "0123456789");
                if (!parse_uint(s, rlen, 1, QN_HOSTS_MAX, &rep) || s[rlen] != ')')
                    return qn_fail(QN_ERR_FORMAT,
                                   "SLURM_TASKS_PER_NODE '%s': at '%.20s': expected (xR) with R "
                                   "in [1, %u]",
                                   spec, item, QN_HOSTS_MAX);
                s += rlen + 1;
            }
            if (pass == 0) {
                total += rep;
                if (total > QN_HOSTS_MAX)
                    return qn_fail(QN_ERR_TOO_LARGE,
                                   "SLURM_TASKS_PER_NODE '%.40s': more than %u nodes", spec,
                                   QN_HOSTS_MAX);
            } else {
                for (uint64_t r = 0; r < rep; r++) (*counts)[at++] = (uint32_t)n;
            }
            if (s[0] == '\0') break;
            if (s[0] != ',')
                return qn_fail(QN_ERR_FORMAT,
                               "SLURM_TASKS_PER_NODE '%s': at '%.20s': expected ',' or the end",
                               spec, s);
            s++;
        }
        if (pass == 0) {
            *counts = malloc((size_t)total * sizeof **counts);
            if (!*counts) return qn_fail(QN_ERR_NOMEM, "SLURM_TASKS_PER_NODE: %llu nodes",
                                         (unsigned long long)total);
        }
    }
    *n_nodes = (size_t)total;
    return QN_OK;
}
