/* bigmem.h — large zeroed allocations on transparent huge pages.
 *
 * Weights, gradients, optimizer moments, the KV cache and activation arenas
 * are each one big block that every step streams through. On x86 a 4 KiB
 * page costs a TLB entry per 4 KiB read; under a hypervisor a TLB miss walks
 * two page tables. Backing these blocks with 2 MiB pages (THP through
 * madvise, which Debian's default "madvise" mode honours) raises the rate at
 * which a core streams memory: on the 2-core development VM a plain read
 * went from 22.7 to 25.5 GB/s (see docs/PERFORMANCE.md, rollout engine).
 *
 * Blocks of 2 MiB or more are mmap'd, 2 MiB-aligned and advised; smaller ones
 * come from calloc. The kernel may still back a block with small pages (THP
 * off, fragmented memory): the block is correct either way, only slower.
 * QN_NO_THP=1 in the environment skips the advice (to measure what it buys).
 */
#ifndef QN_CORE_BIGMEM_H
#define QN_CORE_BIGMEM_H

#include <stddef.h>

/* bytes zeroed bytes, 64-byte aligned (2 MiB aligned when bytes >= 2 MiB);
 * NULL when out of memory. A zero-byte request returns NULL. */
void *qn_big_alloc(size_t bytes);
/* Frees a block from qn_big_alloc; bytes must be the size it was asked for.
 * NULL is fine. */
void qn_big_free(void *p, size_t bytes);

#endif /* QN_CORE_BIGMEM_H */
