/* bigmem.c — see bigmem.h. */
#include "core/bigmem.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#define QN_HUGE ((size_t)2 << 20)

static size_t round_huge(size_t bytes) {
    return (bytes + QN_HUGE - 1) & ~(QN_HUGE - 1);
}

void *qn_big_alloc(size_t bytes) {
    if (bytes == 0) return NULL;
    if (bytes < QN_HUGE) {
        void *p = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
        if (p) __builtin_memset(p, 0, bytes);
        return p;
    }
    size_t len = round_huge(bytes);
    if (len < bytes || len > SIZE_MAX - QN_HUGE) return NULL;
    /* Over-reserve by one huge page, then trim both ends so that exactly
     * [aligned, aligned + len) stays mapped and qn_big_free can unmap it by
     * size alone. */
    unsigned char *raw =
        mmap(NULL, len + QN_HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    uintptr_t a = ((uintptr_t)raw + QN_HUGE - 1) & ~(uintptr_t)(QN_HUGE - 1);
    unsigned char *p = (unsigned char *)a;
    size_t head = (size_t)(p - raw), tail = QN_HUGE - head;
    if (head) munmap(raw, head);
    if (tail) munmap(p + len, tail);
#ifdef MADV_HUGEPAGE
    if (!getenv("QN_NO_THP")) madvise(p, len, MADV_HUGEPAGE); /* advice only: a refusal leaves small pages */
#endif
    return p; /* anonymous pages read as zero */
}

void qn_big_free(void *p, size_t bytes) {
    if (!p) return;
    if (bytes < QN_HUGE) {
        free(p);
        return;
    }
    munmap(p, round_huge(bytes));
}
