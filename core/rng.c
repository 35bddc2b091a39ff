/* rng.c — the out-of-line parts of core/rng.h: array fills and the
 * sequential wrapper. The numbers themselves come from the inline functions
 * in the header, so these never define a value the pure functions do not. */
#include "core/rng.h"

void qn_rng_fill_uniform(uint64_t seed, uint64_t stream, uint64_t offset, float *out, size_t n) {
    size_t i = 0;
    /* Head: up to the next block boundary, one word at a time. */
    while (i < n && ((offset + i) & 3) != 0) {
        out[i] = qn_rng_uniform(seed, stream, offset + i);
        i++;
    }
    /* Body: whole blocks. */
    uint32_t w[4];
    while (n - i >= 4) {
        qn_rng_block(seed, stream, (offset + i) >> 2, w);
        for (int k = 0; k < 4; k++)
            out[i + (size_t)k] = qn_rng_u32_to_uniform(w[k]);
        i += 4;
    }
    while (i < n) {
        out[i] = qn_rng_uniform(seed, stream, offset + i);
        i++;
    }
}

void qn_rng_fill_normal(uint64_t seed, uint64_t stream, uint64_t offset, float *out, size_t n) {
    for (size_t i = 0; i < n; i++)
        out[i] = qn_rng_normal(seed, stream, offset + i);
}

void qn_rng_init(qn_rng *rng, uint64_t seed, uint64_t stream) {
    rng->seed = seed;
    rng->stream = stream;
    rng->index = 0;
}

uint32_t qn_rng_next_u32(qn_rng *rng) {
    return qn_rng_u32(rng->seed, rng->stream, rng->index++);
}

float qn_rng_next_uniform(qn_rng *rng) {
    return qn_rng_uniform(rng->seed, rng->stream, rng->index++);
}

float qn_rng_next_normal(qn_rng *rng) {
    float u1 = qn_rng_uniform(rng->seed, rng->stream, rng->index);
    float u2 = qn_rng_uniform(rng->seed, rng->stream, rng->index + 1);
    rng->index += 2;
    return qn_rng_box_muller(u1, u2, 0);
}

uint32_t qn_rng_next_below(qn_rng *rng, uint32_t n) {
    if (n == 0) return 0;
    uint64_t m = (uint64_t)qn_rng_next_u32(rng) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        /* 2^32 mod n: the number of products that would over-represent
         * small results; reject them. */
        uint32_t threshold = (uint32_t)(-n) % n;
        while (low < threshold) {
            m = (uint64_t)qn_rng_next_u32(rng) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}
