/* checksum.h — the 64-bit checksum of weight chunks and tensors.
 *
 * qn_checksum64 is XXH64 with seed 0, written from the published algorithm
 * description: four 64-bit lanes over 32-byte stripes, a merge, then the
 * tail in 8-, 4- and 1-byte steps and a final avalanche. It detects
 * corruption and truncation in transit; it is not a cryptographic hash and
 * says nothing about who sent the bytes. Bytes are read little-endian
 * regardless of the host, so every process agrees on the value.
 *
 * Leaves out: the streaming (update/digest) form and XXH3; a caller that
 * needs a hash of a blob in pieces hashes each piece (one per chunk/tensor).
 */
#ifndef QN_NET_CHECKSUM_H
#define QN_NET_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

/* XXH64(data[0..len), seed). data may be NULL when len is 0. */
uint64_t qn_xxh64(const void *data, size_t len, uint64_t seed);

/* The checksum carried in WeightChunk.checksum and TensorInfo.checksum:
 * XXH64 with seed 0. */
static inline uint64_t qn_checksum64(const void *data, size_t len) {
    return qn_xxh64(data, len, 0);
}

#endif /* QN_NET_CHECKSUM_H */
