/* fuzz_flags.c — libFuzzer target for the flag parser (core/flags.h). The
 * input is a command line, one argument per line; it is parsed against a
 * table that uses every flag type, and on success the result is checked
 * (values within bounds, choices valid) and dumped as text and JSON, then
 * freed. A crash, a leak (under ASan) or an abort is a bug. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/flags.h"

typedef struct fz_cfg {
    int64_t n;
    double t;
    bool b;
    int c;
    char *s;
    qn_int_list il;
    qn_float_list fl;
    qn_string_list sl;
    int64_t u;
} fz_cfg;

static const qn_flag k_flags[] = {
    QN_F_INT(fz_cfg, n, "rollout-batch-size", "32", 1, 1048576, "n"),
    QN_F_FLOAT(fz_cfg, t, "rollout-temperature", "1.0", 0, 10, "t"),
    QN_F_BOOL(fz_cfg, b, "use-kl-loss", NULL, "b"),
    QN_F_CHOICE(fz_cfg, c, "kl-loss-type", "k1", "k1|k2|k3|low_var_kl", "c"),
    QN_F_STRING(fz_cfg, s, "save", NULL, "s", .attrs = QN_FLAG_SECRET),
    QN_F_INT_LIST(fz_cfg, il, "block-size", "128,128", 1, 4096, "il"),
    QN_F_FLOAT_LIST(fz_cfg, fl, "weights", NULL, -1, 1, "fl"),
    QN_F_STRING_LIST(fz_cfg, sl, "rollout-stop", NULL, "sl"),
    QN_F_INT(fz_cfg, u, "seed", "0", 0, 0, "u"),
};
static const qn_flag_table k_table = {.command = "fuzz", .flags = k_flags,
                                      .n_flags = QN_FLAGS_COUNT(k_flags),
                                      .cfg_size = sizeof(fz_cfg)};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096) return 0;
    char *buf = malloc(size + 1);
    char **argv = malloc((size + 3) * sizeof *argv); /* name, size + 1 lines, NULL */
    if (!buf || !argv) abort();
    memcpy(buf, data, size);
    buf[size] = '\0';
    int argc = 0;
    argv[argc++] = "fuzz";
    for (char *p = buf, *nl; p; p = nl ? nl + 1 : NULL) {
        nl = memchr(p, '\n', (size_t)(buf + size - p));
        if (nl) *nl = '\0';
        argv[argc++] = p;
    }
    argv[argc] = NULL;
    fz_cfg c;
    qn_flags_parsed p;
    if (qn_flags_parse(&k_table, &c, argc, argv, &p) == QN_OK) {
        if (c.n < 1 || c.n > 1048576) abort();
        if (!isfinite(c.t) || c.t < 0 || c.t > 10) abort();
        if (c.c < 0 || c.c > 3) abort();
        for (size_t i = 0; i < c.il.n; i++) {
            if (c.il.v[i] < 1 || c.il.v[i] > 4096) abort();
        }
        for (size_t i = 0; i < c.fl.n; i++) {
            if (!(c.fl.v[i] >= -1 && c.fl.v[i] <= 1)) abort();
        }
        for (size_t i = 0; i < p.n_args; i++) {
            if (!p.args[i]) abort();
        }
        FILE *null = fopen("/dev/null", "w");
        if (null) {
            qn_flags_dump(&k_table, &c, &p, null);
            fclose(null);
        }
        char *js = NULL;
        if (qn_flags_to_json(&k_table, &c, &js) == QN_OK) free(js);
        qn_flags_parsed_free(&p);
        qn_flags_free(&k_table, &c);
    }
    free(argv);
    free(buf);
    return 0;
}
