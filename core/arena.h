/* arena.h — a bump allocator for activations and scratch: reserve once,
 * allocate by bumping an offset, release everything (or back to a mark) at
 * once. Nothing is freed individually, so the step path never calls malloc.
 *
 * Leaves out: growth (an arena that runs out fails instead of reallocating,
 * because pointers into it must stay valid) and thread safety (one owner).
 */
#ifndef QN_CORE_ARENA_H
#define QN_CORE_ARENA_H

#include <stddef.h>
#include <stdint.h>

#include "quench/status.h"

typedef struct qn_arena {
    unsigned char *base; /* owned; 64-byte aligned */
    size_t cap;          /* bytes reserved */
    size_t used;         /* bytes handed out, including alignment padding */
    size_t peak;         /* largest `used` seen since init */
} qn_arena;

/* Reserves cap bytes (64-byte aligned). QN_ERR_NOMEM names the size. An arena
 * of cap 0 is valid and can only hand out zero-byte blocks. */
qn_status qn_arena_init(qn_arena *a, size_t cap);
/* Releases the reservation; a zeroed or already freed arena is fine. */
void qn_arena_free(qn_arena *a);

/* A block of `bytes`, 64-byte aligned, not zeroed; NULL when it does not fit
 * or the arena has no reservation (the arena is left unchanged). */
void *qn_arena_alloc(qn_arena *a, size_t bytes);
/* Typed helpers: n floats / n int32. */
float *qn_arena_floats(qn_arena *a, size_t n);
int32_t *qn_arena_ints(qn_arena *a, size_t n);

/* mark/reset: everything allocated after the mark is released at once. */
static inline size_t qn_arena_mark(const qn_arena *a) {
    return a->used;
}
void qn_arena_reset(qn_arena *a, size_t mark);

/* Bytes needed to hand out blocks of these sizes in order (alignment
 * included), so callers can size an arena with the same arithmetic. */
static inline size_t qn_arena_round(size_t bytes) {
    return (bytes + 63) & ~(size_t)63;
}

#endif /* QN_CORE_ARENA_H */
