/* arena.c — bump allocator (see arena.h). Uses aligned_alloc once per init. */
#include "core/arena.h"

#include <stdint.h>
#include <stdlib.h>

qn_status qn_arena_init(qn_arena *a, size_t cap) {
    a->base = NULL;
    a->cap = 0;
    a->used = 0;
    a->peak = 0;
    cap = qn_arena_round(cap);
    if (cap == 0) return QN_OK;
    a->base = aligned_alloc(64, cap);
    if (!a->base) return qn_fail(QN_ERR_NOMEM, "arena: cannot reserve %zu bytes", cap);
    a->cap = cap;
    return QN_OK;
}

void qn_arena_free(qn_arena *a) {
    if (!a) return;
    free(a->base);
    a->base = NULL;
    a->cap = a->used = a->peak = 0;
}

void *qn_arena_alloc(qn_arena *a, size_t bytes) {
    if (!a->base) return NULL;
    size_t need = qn_arena_round(bytes);
    if (need < bytes || need > a->cap - a->used) return NULL;
    void *p = a->base + a->used;
    a->used += need;
    if (a->used > a->peak) a->peak = a->used;
    return p;
}

float *qn_arena_floats(qn_arena *a, size_t n) {
    if (n > SIZE_MAX / sizeof(float)) return NULL;
    return qn_arena_alloc(a, n * sizeof(float));
}

int32_t *qn_arena_ints(qn_arena *a, size_t n) {
    if (n > SIZE_MAX / sizeof(int32_t)) return NULL;
    return qn_arena_alloc(a, n * sizeof(int32_t));
}

void qn_arena_reset(qn_arena *a, size_t mark) {
    if (mark <= a->used) a->used = mark;
}
