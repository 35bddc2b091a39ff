/* jsonl.c — see jsonl.h. */
#include "core/io/jsonl.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>

qn_status qn_jsonl_foreach(const char *path, qn_jsonl_line_fn fn, void *user) {
    FILE *f = fopen(path, "rb");
    if (!f) return qn_fail(QN_ERR_IO, "%s: cannot open", path);
    char *text = NULL;
    size_t cap = 0;
    ssize_t n;
    long line = 0;
    qn_status s = QN_OK;
    while ((n = getline(&text, &cap, f)) >= 0) {
        line++;
        while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r' || text[n - 1] == ' '))
            text[--n] = 0;
        if (n == 0) continue;
        s = fn(text, line, user);
        if (s != QN_OK) break;
    }
    if (s == QN_OK && ferror(f)) s = qn_fail(QN_ERR_IO, "%s: read error after line %ld", path, line);
    free(text);
    fclose(f);
    return s;
}
