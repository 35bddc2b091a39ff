/* codec.h — the wire codec: every message between quench processes is a
 * quench.Envelope (proto/quench.proto) encoded with protobuf-c. This layer
 * stamps the protocol version, request id and sender on the way out, and on
 * the way in enforces a size limit before parsing, a memory budget while
 * parsing, the protocol version, a body, and the rules protobuf cannot
 * express (parallel per-token arrays, index ranges, non-negative token ids,
 * finite log-probs, known enum values, valid UTF-8, chunk checksums, ...).
 * A message that passes qn_envelope_decode is safe to use field by field.
 *
 * Every rejection is a qn_status with a message that names the message type
 * and the field, e.g. "GenerateResult.output_logprobs: 3 entries for 4
 * output_ids (must be equal or empty)".
 *
 * Leaves out: transport (ZeroMQ framing, retries), compression, and talking
 * to peers of another protocol version (refused with QN_ERR_VERSION).
 *
 * Ownership: the protobuf-c structs are plain C. A message you build for
 * encoding is yours (stack or heap); encoding never keeps or frees it. A
 * decoded envelope is one protobuf-c tree allocated with malloc; free it
 * with qn_envelope_free (protobuf-c's free_unpacked with the default
 * allocator); never free its parts separately.
 */
#ifndef QN_NET_CODEC_H
#define QN_NET_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "net/checksum.h"
#include "proto/quench.pb-c.h"
#include "quench/status.h"

/* Bumped when a change to quench.proto is one old peers cannot ignore. */
#define QN_PROTOCOL_VERSION 1u

/* Largest encoded envelope produced or (by default) accepted: 64 MiB. Large
 * payloads are split: weight chunks (below), train batches per rank. */
#define QN_MAX_MESSAGE_BYTES ((size_t)64 << 20)

/* Largest WeightChunk.data, WeightChunkRequest.length and manifest
 * chunk_bytes: 32 MiB, so a chunk always fits in one message. */
#define QN_MAX_WEIGHT_CHUNK_BYTES ((size_t)32 << 20)

/* Decoding may allocate at most this many bytes per input byte (plus
 * 64 KiB): legitimate messages need < 10x (a 1-byte varint uint64 becomes 8
 * bytes); a flood of empty sub-messages would need 24x and more, so it is
 * refused instead of turning 64 MiB of input into gigabytes of memory. */
#define QN_DECODE_MEMORY_FACTOR 16u

/* The oneof bodies: X(member, function suffix, protobuf-c type, case).
 * `register` is a C keyword, hence protobuf-c's member name register_. */
#define QN_ENVELOPE_BODIES(X)                                                      \
    X(generate_request, generate_request, GenerateRequest, GENERATE_REQUEST)       \
    X(generate_result, generate_result, GenerateResult, GENERATE_RESULT)           \
    X(abort_request, abort_request, AbortRequest, ABORT_REQUEST)                   \
    X(train_batch, train_batch, TrainBatch, TRAIN_BATCH)                           \
    X(train_batch_ack, train_batch_ack, TrainBatchAck, TRAIN_BATCH_ACK)            \
    X(weight_update_begin, weight_update_begin, WeightUpdateBegin,                 \
      WEIGHT_UPDATE_BEGIN)                                                         \
    X(weight_update_ack, weight_update_ack, WeightUpdateAck, WEIGHT_UPDATE_ACK)    \
    X(weight_chunk_request, weight_chunk_request, WeightChunkRequest,              \
      WEIGHT_CHUNK_REQUEST)                                                        \
    X(weight_chunk, weight_chunk, WeightChunk, WEIGHT_CHUNK)                       \
    X(register_, register, Register, REGISTER)                                     \
    X(register_ack, register_ack, RegisterAck, REGISTER_ACK)                       \
    X(heartbeat, heartbeat, Heartbeat, HEARTBEAT)                                  \
    X(drain, drain, Drain, DRAIN)                                                  \
    X(metrics, metrics, MetricsReport, METRICS)                                    \
    X(group, group, Group, GROUP)                                                  \
    X(error, error, Error, ERROR)                                                  \
    X(prompt, prompt, Prompt, PROMPT)                                              \
    X(train_batch_request, train_batch_request, TrainBatchRequest,                 \
      TRAIN_BATCH_REQUEST)                                                         \
    X(weight_update_status, weight_update_status, WeightUpdateStatus,              \
      WEIGHT_UPDATE_STATUS)                                                        \
    X(heartbeat_ack, heartbeat_ack, HeartbeatAck, HEARTBEAT_ACK)

/* qn_envelope_<suffix>(body): an envelope holding `body` (borrowed, not
 * copied), ready for qn_envelope_encode:
 *     Quench__Envelope env = qn_envelope_heartbeat(&hb);
 *     QN_CHECK(qn_envelope_encode_alloc(&env, id, "engine:3", &buf, &len)); */
#define QN_ENVELOPE_WRAP_(member, suffix, Type, CASE)                              \
    static inline Quench__Envelope qn_envelope_##suffix(Quench__##Type *body) {    \
        Quench__Envelope env = QUENCH__ENVELOPE__INIT;                             \
        env.body_case = QUENCH__ENVELOPE__BODY_##CASE;                             \
        env.member = body;                                                         \
        return env;                                                                \
    }
QN_ENVELOPE_BODIES(QN_ENVELOPE_WRAP_)
#undef QN_ENVELOPE_WRAP_

/* "stop", "length" or "abort" (the names SGLang and OpenAI answers use); NULL for
 * FINISH_REASON_UNSPECIFIED and unknown values. */
const char *qn_proto_finish_name(Quench__FinishReason f);

/* "GenerateResult" for a body case; "none" for NOT_SET, "unknown" otherwise. */
const char *qn_envelope_body_name(Quench__Envelope__BodyCase body_case);

/* Encodes env into buf[0..cap) with protocol_version = QN_PROTOCOL_VERSION
 * and the given request id and sender (NULL = ""); env itself is not
 * modified. The message is validated first (qn_envelope_validate), so a
 * sender's bug is reported at the sender. *len receives the encoded size,
 * also when it does not fit: QN_ERR_TOO_LARGE if it exceeds cap or
 * QN_MAX_MESSAGE_BYTES. */
qn_status qn_envelope_encode(const Quench__Envelope *env, uint64_t request_id,
                             const char *sender, uint8_t *buf, size_t cap, size_t *len);

/* Same, into a malloc'd buffer *out (caller frees with free()). On failure
 * *out is NULL. */
qn_status qn_envelope_encode_alloc(const Quench__Envelope *env, uint64_t request_id,
                                   const char *sender, uint8_t **out, size_t *len);

/* Decodes data[0..len) into a new envelope *out (free with qn_envelope_free).
 * max_bytes is this call's size limit (0 = QN_MAX_MESSAGE_BYTES); a longer
 * input is refused with QN_ERR_TOO_LARGE before a byte of it is read.
 * Then: QN_ERR_VERSION when the version is not QN_PROTOCOL_VERSION (checked
 * first from the leading field, so a peer of another version gets that
 * message even if the rest does not parse), QN_ERR_TOO_LARGE when parsing
 * would exceed the memory budget, QN_ERR_FORMAT for bytes that are not an
 * Envelope, and whatever qn_envelope_validate reports. On failure *out is
 * NULL and nothing is left allocated. */
qn_status qn_envelope_decode(const uint8_t *data, size_t len, size_t max_bytes,
                             Quench__Envelope **out);

/* Frees a decoded envelope and everything in it; NULL is a no-op. Only for
 * envelopes from qn_envelope_decode. */
void qn_envelope_free(Quench__Envelope *env);

/* Checks everything protobuf cannot: the protocol version, that a body is
 * present, known enum values and valid UTF-8 in every field, and per body
 * the rules documented next to each message in quench.proto (e.g.
 * GenerateResult's per-token arrays have output_ids' length or are empty;
 * TrainSample 1 <= response_start <= len(tokens); WeightChunk.checksum
 * matches its data). QN_ERR_VERSION, QN_ERR_FORMAT or QN_ERR_RANGE with a
 * message naming the message type and field. */
qn_status qn_envelope_validate(const Quench__Envelope *env);

/* QN_OK when env carries the expected body; otherwise QN_ERR_FORMAT naming
 * both ("expected GenerateResult, got Heartbeat"), for services that accept
 * one kind of message on a socket. */
qn_status qn_envelope_expect(const Quench__Envelope *env, Quench__Envelope__BodyCase body_case);

#endif /* QN_NET_CODEC_H */
