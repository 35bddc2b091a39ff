/* rng.h — counter-based random numbers: Philox4x32-10.
 *
 * Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as
 * easy as 1, 2, 3", SC'11; the Random123 library) maps a 128-bit counter and
 * a 64-bit key to 128 random bits. Nothing is carried from one draw to the
 * next, so a number depends only on (seed, stream, index): CPU code, CUDA
 * kernels, any rank and any thread compute the same value for the same
 * triple without sharing state, and work can be split in any way without
 * changing what is drawn.
 *
 * How quench names a draw:
 *   key     = seed                   (key[0] low 32 bits, key[1] high 32 bits)
 *   counter = {block lo, block hi, stream lo, stream hi}, block = index >> 2
 *   word    = output word (index & 3) of that block
 * so four consecutive indices share one Philox block. A 64-bit index reaches
 * blocks 0 .. 2^62 - 1 of each stream (2^64 numbers); qn_rng_block reaches
 * all 2^64 blocks.
 *
 * Uniform: u = (word >> 8) * 2^-24, the top 24 bits as a float in [0, 1).
 * Every value is a multiple of 2^-24 and exactly representable, so the
 * uniform is bit-identical wherever it is computed.
 *
 * Normal (Box-Muller): normal index i uses the pair p = i >> 1 and the two
 * uniforms u1 = uniform(2p), u2 = uniform(2p + 1) of the same seed and
 * stream; with r = sqrt(-2 ln(1 - u1)) (1 - u1 is in (0, 1], so the log is
 * finite), even i gives r cos(2 pi u2) and odd i gives r sin(2 pi u2).
 * It is computed in float; CPU libm and CUDA's logf/sinf/cosf may differ in
 * the last ulp or two, so normals agree across devices to a few ulp, not
 * bit for bit. |normal| <= sqrt(48 ln 2) ~ 5.77.
 *
 * A stream should be used for one kind of draw: normal index i reads the
 * same Philox words as uniform indices 2(i & ~1) .. 2(i & ~1) + 1.
 *
 * The inline functions below are plain C with no globals and are marked
 * host+device under nvcc, so a kernel includes this header and calls them.
 * Not here: other distributions, 64-bit or double outputs, skip-ahead (not
 * needed: any index is directly addressable). */
#ifndef QN_CORE_RNG_H
#define QN_CORE_RNG_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__CUDACC__)
#define QN_RNG_FN static inline __host__ __device__
#else
#define QN_RNG_FN static inline
#endif

/* Philox4x32 constants (Salmon et al., table 2 and section 3.3). */
#define QN_PHILOX_M0 0xD2511F53u
#define QN_PHILOX_M1 0xCD9E8D57u
#define QN_PHILOX_W0 0x9E3779B9u /* golden ratio */
#define QN_PHILOX_W1 0xBB67AE85u /* sqrt(3) - 1 */

/* One Philox4x32 block with `rounds` rounds (10 is the standard, 7 the
 * smallest the authors found Crush-resistant): out = f(ctr, key). The key is
 * bumped by (W0, W1) before every round after the first. out may alias ctr. */
QN_RNG_FN void qn_philox4x32_r(int rounds, const uint32_t ctr[4], const uint32_t key[2],
                               uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < rounds; r++) {
        if (r > 0) {
            k0 += QN_PHILOX_W0;
            k1 += QN_PHILOX_W1;
        }
        uint64_t p0 = (uint64_t)QN_PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)QN_PHILOX_M1 * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* Philox4x32-10: the block function every quench draw goes through. */
QN_RNG_FN void qn_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    qn_philox4x32_r(10, ctr, key, out);
}

/* The four raw 32-bit words of block `block` of (seed, stream). */
QN_RNG_FN void qn_rng_block(uint64_t seed, uint64_t stream, uint64_t block, uint32_t out[4]) {
    const uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream,
                             (uint32_t)(stream >> 32)};
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    qn_philox4x32_10(ctr, key, out);
}

/* The raw 32-bit word for (seed, stream, index). */
QN_RNG_FN uint32_t qn_rng_u32(uint64_t seed, uint64_t stream, uint64_t index) {
    uint32_t w[4];
    qn_rng_block(seed, stream, index >> 2, w);
    return w[index & 3];
}

/* The documented bits -> float map: top 24 bits times 2^-24, in [0, 1). */
QN_RNG_FN float qn_rng_u32_to_uniform(uint32_t x) {
    return (float)(x >> 8) * (1.0f / 16777216.0f);
}

/* Uniform in [0, 1) for (seed, stream, index); identical on every device. */
QN_RNG_FN float qn_rng_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
    return qn_rng_u32_to_uniform(qn_rng_u32(seed, stream, index));
}

/* Box-Muller on two uniforms in [0, 1): r cos(2 pi u2) when `odd` is 0,
 * r sin(2 pi u2) otherwise, r = sqrt(-2 ln(1 - u1)). */
QN_RNG_FN float qn_rng_box_muller(float u1, float u2, int odd) {
    const float two_pi = 6.28318530717958647692f;
    float r = sqrtf(-2.0f * logf(1.0f - u1));
    float t = two_pi * u2;
    return odd ? r * sinf(t) : r * cosf(t);
}

/* Standard normal for (seed, stream, index); see the header comment for
 * which uniforms it uses. */
QN_RNG_FN float qn_rng_normal(uint64_t seed, uint64_t stream, uint64_t index) {
    uint64_t pair = index >> 1;
    float u1 = qn_rng_uniform(seed, stream, 2 * pair);
    float u2 = qn_rng_uniform(seed, stream, 2 * pair + 1);
    return qn_rng_box_muller(u1, u2, (int)(index & 1));
}

#undef QN_RNG_FN

/* Fills out[i] = qn_rng_uniform(seed, stream, offset + i) for i < n, one
 * Philox block per four values. */
void qn_rng_fill_uniform(uint64_t seed, uint64_t stream, uint64_t offset, float *out, size_t n);

/* Fills out[i] = qn_rng_normal(seed, stream, offset + i) for i < n. */
void qn_rng_fill_normal(uint64_t seed, uint64_t stream, uint64_t offset, float *out, size_t n);

/* A sequential view of one (seed, stream) for host code that just wants
 * "the next number": a value type, no allocation, nothing to free. The
 * k-th uniform drawn is qn_rng_uniform(seed, stream, k). A normal consumes
 * two uniform indices (k, k+1) and returns the cosine branch of
 * qn_rng_box_muller for them; so a mix of uniform and normal draws is
 * reproducible from (seed, stream) and the order of calls. */
typedef struct qn_rng {
    uint64_t seed;
    uint64_t stream;
    uint64_t index; /* next uniform index */
} qn_rng;

void qn_rng_init(qn_rng *rng, uint64_t seed, uint64_t stream);
uint32_t qn_rng_next_u32(qn_rng *rng);
float qn_rng_next_uniform(qn_rng *rng);
float qn_rng_next_normal(qn_rng *rng);
/* Uniform integer in [0, n) for n >= 1 (Lemire's multiply-and-reject, so
 * unbiased); draws one or more u32 words. Returns 0 for n == 0. */
uint32_t qn_rng_next_below(qn_rng *rng, uint32_t n);

#ifdef __cplusplus
}
#endif
#endif /* QN_CORE_RNG_H */
