/* codec.c — Envelope encode/decode with size limits, a decode memory
 * budget, and the semantic checks of codec.h.
 *
 * Validation has two layers: a generic walk over the protobuf-c descriptors
 * (every enum value known, every string valid UTF-8, no field number 0, in
 * every nested message) and one function per body for the rules that are
 * specific to it. Error
 * messages carry a path such as "TrainBatch.samples[3].loss_mask[7]".
 *
 * Leaves out: deduplication of request ids and any transport concern.
 */
#include "net/codec.h"

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ names */

const char *qn_proto_finish_name(Quench__FinishReason f) {
    switch (f) {
    case QUENCH__FINISH_REASON__FINISH_REASON_STOP:
        return "stop";
    case QUENCH__FINISH_REASON__FINISH_REASON_LENGTH:
        return "length";
    case QUENCH__FINISH_REASON__FINISH_REASON_ABORT:
        return "abort";
    default:
        return NULL;
    }
}

const char *qn_envelope_body_name(Quench__Envelope__BodyCase body_case) {
    switch (body_case) {
#define QN_BODY_NAME_(member, suffix, Type, CASE) \
    case QUENCH__ENVELOPE__BODY_##CASE:           \
        return #Type;
        QN_ENVELOPE_BODIES(QN_BODY_NAME_)
#undef QN_BODY_NAME_
    case QUENCH__ENVELOPE__BODY__NOT_SET:
        return "none";
    default:
        break;
    }
    return "unknown";
}

/* ------------------------------------------------------------ generic walk */

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
 * Returns the byte offset of the first bad sequence, or -1. */
static long utf8_bad_offset(const char *str) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (s[i]) {
        unsigned c = s[i];
        size_t n;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return (long)i;
        }
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return (long)i; /* also stops at the NUL */
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return (long)i;
        i += n + 1;
    }
    return -1;
}

/* Checks enum values and UTF-8 in msg and every message under it. `path` is
 * the message's name in errors; nested paths are built in a local buffer. */
/* protobuf-c keeps unknown fields (newer peers' additions) but accepts field
 * number 0 when its tag is a padded varint, and then cannot parse its own
 * re-encoding of it: refuse it. */
static qn_status check_unknown_fields(const ProtobufCMessage *msg, const char *path) {
    for (unsigned u = 0; u < msg->n_unknown_fields; u++)
        if (msg->unknown_fields[u].tag == 0)
            return qn_fail(QN_ERR_FORMAT, "%s: field number 0 is not a valid protobuf field",
                           path);
    return QN_OK;
}

static qn_status walk_message(const ProtobufCMessage *msg, const char *path) {
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    const char *base = (const char *)msg;
    QN_CHECK(check_unknown_fields(msg, path));
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_ENUM && f->type != PROTOBUF_C_TYPE_STRING &&
            f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            if (*(const uint32_t *)(base + f->quantifier_offset) != f->id) continue;
        }
        size_t count = 1;
        const char *values = base + f->offset;
        bool repeated = f->label == PROTOBUF_C_LABEL_REPEATED;
        if (repeated) {
            count = *(const size_t *)(base + f->quantifier_offset);
            values = *(const char *const *)(base + f->offset);
        }
        for (size_t k = 0; k < count; k++) {
            char sub[256];
            if (repeated)
                snprintf(sub, sizeof sub, "%s.%s[%zu]", path, f->name, k);
            else
                snprintf(sub, sizeof sub, "%s.%s", path, f->name);
            if (f->type == PROTOBUF_C_TYPE_ENUM) {
                int v = ((const int *)values)[k];
                if (!protobuf_c_enum_descriptor_get_value(f->descriptor, v))
                    return qn_fail(QN_ERR_RANGE, "%s: unknown %s value %d", sub,
                                   ((const ProtobufCEnumDescriptor *)f->descriptor)->name, v);
            } else if (f->type == PROTOBUF_C_TYPE_STRING) {
                const char *s = ((const char *const *)values)[k];
                long bad = s ? utf8_bad_offset(s) : -1;
                if (bad >= 0)
                    return qn_fail(QN_ERR_FORMAT, "%s: invalid UTF-8 at byte %ld", sub, bad);
            } else {
                const ProtobufCMessage *m = ((const ProtobufCMessage *const *)values)[k];
                if (m) QN_CHECK(walk_message(m, sub));
            }
        }
    }
    return QN_OK;
}

/* ------------------------------------------------------------ shared rules */

static qn_status check_tokens(const char *where, const char *field, size_t n,
                              const int32_t *ids) {
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0)
            return qn_fail(QN_ERR_RANGE, "%s.%s[%zu]: token id %" PRId32 " is negative", where,
                           field, i, ids[i]);
    return QN_OK;
}

static qn_status check_nonempty_ids(const char *where, const char *field, size_t n,
                                    const int32_t *ids) {
    if (n == 0) return qn_fail(QN_ERR_FORMAT, "%s.%s: is empty (needs at least one token)",
                               where, field);
    return check_tokens(where, field, n, ids);
}

/* Per-token arrays either match their reference length or are absent. */
static qn_status check_parallel(const char *where, const char *field, size_t n,
                                const char *ref, size_t ref_n) {
    if (n != 0 && n != ref_n)
        return qn_fail(QN_ERR_FORMAT, "%s.%s: %zu entries for %zu %s (must be equal or empty)",
                       where, field, n, ref_n, ref);
    return QN_OK;
}

/* A log-prob of a sampled token is finite and <= 0 (log of a probability);
 * a NaN or -inf here would poison the importance ratios in training. */
static qn_status check_logprobs(const char *where, const char *field, size_t n,
                                const float *lp) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(lp[i]) || lp[i] > 0.0f)
            return qn_fail(QN_ERR_RANGE, "%s.%s[%zu]: log-prob %g is not finite and <= 0", where,
                           field, i, (double)lp[i]);
    return QN_OK;
}

static qn_status check_mask(const char *where, const char *field, size_t n,
                            const uint32_t *m) {
    for (size_t i = 0; i < n; i++)
        if (m[i] > 1)
            return qn_fail(QN_ERR_RANGE, "%s.%s[%zu]: %" PRIu32 " is not 0 or 1", where, field, i,
                           m[i]);
    return QN_OK;
}

static qn_status check_finite(const char *where, const char *field, double v) {
    if (!isfinite(v)) return qn_fail(QN_ERR_RANGE, "%s.%s: %g is not finite", where, field, v);
    return QN_OK;
}

static qn_status check_string(const char *where, const char *field, const char *s) {
    if (!s || !*s) return qn_fail(QN_ERR_FORMAT, "%s.%s: is empty", where, field);
    return QN_OK;
}

static qn_status check_present(const char *where, const char *field, const void *p) {
    if (!p) return qn_fail(QN_ERR_FORMAT, "%s.%s: is missing", where, field);
    return QN_OK;
}

static qn_status check_rank(const char *where, uint32_t rank, uint32_t world_size) {
    if (world_size == 0) return qn_fail(QN_ERR_RANGE, "%s.world_size: is 0", where);
    if (rank >= world_size)
        return qn_fail(QN_ERR_RANGE, "%s.rank: %" PRIu32 " is not below world_size %" PRIu32,
                       where, rank, world_size);
    return QN_OK;
}

/* ok = false must say why. */
static qn_status check_ok_error(const char *where, protobuf_c_boolean ok, const char *error) {
    if (!ok && (!error || !*error))
        return qn_fail(QN_ERR_FORMAT, "%s.error: is empty although ok is false", where);
    return QN_OK;
}

/* ------------------------------------------------------------ per body */

static qn_status check_prompt(const char *w, const Quench__Prompt *p) {
    return check_nonempty_ids(w, "tokens", p->n_tokens, p->tokens);
}

static qn_status check_sampling(const char *w, const Quench__SamplingParams *s) {
    if (!isfinite(s->temperature) || s->temperature < 0.0f)
        return qn_fail(QN_ERR_RANGE, "%s.temperature: %g is not finite and >= 0", w,
                       (double)s->temperature);
    if (!isfinite(s->top_p) || s->top_p < 0.0f || s->top_p > 1.0f)
        return qn_fail(QN_ERR_RANGE, "%s.top_p: %g is not in [0, 1]", w, (double)s->top_p);
    if (!isfinite(s->min_p) || s->min_p < 0.0f || s->min_p > 1.0f)
        return qn_fail(QN_ERR_RANGE, "%s.min_p: %g is not in [0, 1]", w, (double)s->min_p);
    if (s->max_new_tokens < 0)
        return qn_fail(QN_ERR_RANGE, "%s.max_new_tokens: %" PRId32 " is negative", w,
                       s->max_new_tokens);
    QN_CHECK(check_tokens(w, "stop_token_ids", s->n_stop_token_ids, s->stop_token_ids));
    for (size_t i = 0; i < s->n_stop; i++)
        if (!s->stop[i] || !*s->stop[i])
            return qn_fail(QN_ERR_FORMAT, "%s.stop[%zu]: is empty (would stop everywhere)", w, i);
    return QN_OK;
}

static qn_status check_generate_request(const char *w, const Quench__GenerateRequest *r) {
    QN_CHECK(check_nonempty_ids(w, "input_ids", r->n_input_ids, r->input_ids));
    QN_CHECK(check_tokens(w, "prefix_output_ids", r->n_prefix_output_ids, r->prefix_output_ids));
    QN_CHECK(check_parallel(w, "prefix_output_logprobs", r->n_prefix_output_logprobs,
                            "prefix_output_ids", r->n_prefix_output_ids));
    QN_CHECK(check_parallel(w, "prefix_weight_versions", r->n_prefix_weight_versions,
                            "prefix_output_ids", r->n_prefix_output_ids));
    QN_CHECK(check_logprobs(w, "prefix_output_logprobs", r->n_prefix_output_logprobs,
                            r->prefix_output_logprobs));
    if (r->params) {
        char sub[64];
        snprintf(sub, sizeof sub, "%s.params", w);
        QN_CHECK(check_sampling(sub, r->params));
    }
    return QN_OK;
}

static qn_status check_generate_result(const char *w, const Quench__GenerateResult *r) {
    QN_CHECK(check_tokens(w, "output_ids", r->n_output_ids, r->output_ids));
    QN_CHECK(check_parallel(w, "output_logprobs", r->n_output_logprobs, "output_ids",
                            r->n_output_ids));
    QN_CHECK(check_parallel(w, "weight_versions", r->n_weight_versions, "output_ids",
                            r->n_output_ids));
    QN_CHECK(check_logprobs(w, "output_logprobs", r->n_output_logprobs, r->output_logprobs));
    if (r->partial && r->error && *r->error)
        return qn_fail(QN_ERR_FORMAT, "%s.error: set in a partial (streaming) result", w);
    if (!r->partial && (!r->error || !*r->error) &&
        r->finish_reason == QUENCH__FINISH_REASON__FINISH_REASON_UNSPECIFIED)
        return qn_fail(QN_ERR_FORMAT,
                       "%s.finish_reason: is unspecified in a result without an error", w);
    if (r->cached_tokens > r->prompt_tokens)
        return qn_fail(QN_ERR_RANGE,
                       "%s.cached_tokens: %" PRIu32 " exceeds prompt_tokens %" PRIu32, w,
                       r->cached_tokens, r->prompt_tokens);
    if (!isfinite(r->latency_s) || r->latency_s < 0.0)
        return qn_fail(QN_ERR_RANGE, "%s.latency_s: %g is not finite and >= 0", w, r->latency_s);
    return QN_OK;
}

static qn_status check_abort(const char *w, const Quench__AbortRequest *a) {
    if (a->n_request_ids == 0) return qn_fail(QN_ERR_FORMAT, "%s.request_ids: is empty", w);
    return QN_OK;
}

static qn_status check_train_sample(const char *w, const Quench__TrainSample *s) {
    QN_CHECK(check_nonempty_ids(w, "tokens", s->n_tokens, s->tokens));
    /* Token 0 has no logit predicting it, so a response cannot start there. */
    if (s->response_start < 1 || s->response_start > s->n_tokens)
        return qn_fail(QN_ERR_RANGE,
                       "%s.response_start: %" PRIu32 " is not in [1, %zu] (len(tokens))", w,
                       s->response_start, s->n_tokens);
    size_t n_resp = s->n_tokens - s->response_start;
    QN_CHECK(check_parallel(w, "rollout_logprobs", s->n_rollout_logprobs, "response tokens",
                            n_resp));
    QN_CHECK(check_parallel(w, "loss_mask", s->n_loss_mask, "response tokens", n_resp));
    QN_CHECK(check_logprobs(w, "rollout_logprobs", s->n_rollout_logprobs, s->rollout_logprobs));
    QN_CHECK(check_mask(w, "loss_mask", s->n_loss_mask, s->loss_mask));
    QN_CHECK(check_finite(w, "reward", s->reward));
    return check_finite(w, "advantage", s->advantage);
}

static qn_status check_train_batch(const char *w, const Quench__TrainBatch *b) {
    QN_CHECK(check_rank(w, b->rank, b->world_size));
    for (size_t i = 0; i < b->n_samples; i++) {
        char sub[64];
        snprintf(sub, sizeof sub, "%s.samples[%zu]", w, i);
        QN_CHECK(check_present(w, "samples[]", b->samples[i]));
        QN_CHECK(check_train_sample(sub, b->samples[i]));
    }
    return QN_OK;
}

static size_t dtype_size(Quench__DType t) {
    switch (t) {
    case QUENCH__DTYPE__DTYPE_F64:
    case QUENCH__DTYPE__DTYPE_I64:
        return 8;
    case QUENCH__DTYPE__DTYPE_F32:
    case QUENCH__DTYPE__DTYPE_I32:
        return 4;
    case QUENCH__DTYPE__DTYPE_BF16:
    case QUENCH__DTYPE__DTYPE_F16:
        return 2;
    case QUENCH__DTYPE__DTYPE_F8_E4M3:
    case QUENCH__DTYPE__DTYPE_U8:
        return 1;
    default:
        return 0;
    }
}

static int cmp_tensor_name(const void *a, const void *b) {
    const Quench__TensorInfo *x = *(const Quench__TensorInfo *const *)a;
    const Quench__TensorInfo *y = *(const Quench__TensorInfo *const *)b;
    return strcmp(x->name, y->name);
}

static qn_status check_tensor(const char *w, const Quench__TensorInfo *t) {
    QN_CHECK(check_string(w, "name", t->name));
    size_t esize = dtype_size(t->dtype);
    if (esize == 0) return qn_fail(QN_ERR_FORMAT, "%s.dtype: is unspecified", w);
    uint64_t n = esize;
    for (size_t d = 0; d < t->n_shape; d++) {
        if (t->shape[d] != 0 && n > UINT64_MAX / t->shape[d])
            return qn_fail(QN_ERR_RANGE, "%s.shape: size overflows 64 bits", w);
        n *= t->shape[d];
    }
    if (n != t->nbytes)
        return qn_fail(QN_ERR_FORMAT,
                       "%s.nbytes: %" PRIu64 " but shape and dtype give %" PRIu64, w, t->nbytes,
                       n);
    return QN_OK;
}

static qn_status check_manifest(const char *w, const Quench__WeightManifest *m) {
    uint64_t end = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        char sub[64];
        snprintf(sub, sizeof sub, "%s.tensors[%zu]", w, i);
        QN_CHECK(check_present(w, "tensors[]", m->tensors[i]));
        const Quench__TensorInfo *t = m->tensors[i];
        QN_CHECK(check_tensor(sub, t));
        if (t->offset < end)
            return qn_fail(QN_ERR_FORMAT,
                           "%s.offset: %" PRIu64 " overlaps or precedes the previous tensor "
                           "(ends at %" PRIu64 ")",
                           sub, t->offset, end);
        if (t->nbytes > m->total_bytes || t->offset > m->total_bytes - t->nbytes)
            return qn_fail(QN_ERR_RANGE,
                           "%s.offset: [%" PRIu64 ", +%" PRIu64 ") is past total_bytes %" PRIu64,
                           sub, t->offset, t->nbytes, m->total_bytes);
        end = t->offset + t->nbytes;
    }
    if (m->n_tensors > 1) {
        /* Names must be unique; sorting is O(n log n) for 100k-tensor models. */
        const Quench__TensorInfo **sorted = malloc(m->n_tensors * sizeof *sorted);
        if (!sorted) return qn_fail(QN_ERR_NOMEM, "%s.tensors: out of memory", w);
        memcpy(sorted, m->tensors, m->n_tensors * sizeof *sorted);
        qsort(sorted, m->n_tensors, sizeof *sorted, cmp_tensor_name);
        qn_status s = QN_OK;
        for (size_t i = 1; i < m->n_tensors && s == QN_OK; i++)
            if (strcmp(sorted[i - 1]->name, sorted[i]->name) == 0)
                s = qn_fail(QN_ERR_FORMAT, "%s.tensors: name '%s' appears more than once", w,
                            sorted[i]->name);
        free(sorted);
        QN_CHECK(s);
    }
    switch (m->transport) {
    case QUENCH__WEIGHT_TRANSPORT__WEIGHT_TRANSPORT_ZMQ_PULL:
        QN_CHECK(check_string(w, "server_endpoint", m->server_endpoint));
        if (m->chunk_bytes == 0 || m->chunk_bytes > QN_MAX_WEIGHT_CHUNK_BYTES)
            return qn_fail(QN_ERR_RANGE, "%s.chunk_bytes: %" PRIu32 " is not in [1, %zu]", w,
                           m->chunk_bytes, QN_MAX_WEIGHT_CHUNK_BYTES);
        break;
    case QUENCH__WEIGHT_TRANSPORT__WEIGHT_TRANSPORT_NCCL_BROADCAST:
        if (m->bucket_bytes == 0) return qn_fail(QN_ERR_RANGE, "%s.bucket_bytes: is 0", w);
        break;
    default:
        return qn_fail(QN_ERR_FORMAT, "%s.transport: is unspecified", w);
    }
    return QN_OK;
}

static qn_status check_weight_update_begin(const char *w, const Quench__WeightUpdateBegin *b) {
    QN_CHECK(check_present(w, "manifest", b->manifest));
    char sub[64];
    snprintf(sub, sizeof sub, "%s.manifest", w);
    return check_manifest(sub, b->manifest);
}

static qn_status check_phase(const char *w, Quench__WeightUpdatePhase phase) {
    if (phase == QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_UNSPECIFIED)
        return qn_fail(QN_ERR_FORMAT, "%s.phase: is unspecified", w);
    return QN_OK;
}

static qn_status check_weight_update_ack(const char *w, const Quench__WeightUpdateAck *a) {
    QN_CHECK(check_string(w, "engine_id", a->engine_id));
    QN_CHECK(check_phase(w, a->phase));
    return check_ok_error(w, a->ok, a->error);
}

static qn_status check_weight_update_status(const char *w, const Quench__WeightUpdateStatus *s) {
    QN_CHECK(check_phase(w, s->phase));
    return check_ok_error(w, s->ok, s->error);
}

static qn_status check_chunk_range(const char *w, const char *field, uint64_t offset,
                                   size_t length) {
    if (length > QN_MAX_WEIGHT_CHUNK_BYTES)
        return qn_fail(QN_ERR_RANGE, "%s.%s: %zu bytes exceeds the chunk limit %zu", w, field,
                       length, QN_MAX_WEIGHT_CHUNK_BYTES);
    if (offset > UINT64_MAX - length)
        return qn_fail(QN_ERR_RANGE, "%s.offset: %" PRIu64 " + %zu overflows", w, offset, length);
    return QN_OK;
}

static qn_status check_chunk_request(const char *w, const Quench__WeightChunkRequest *r) {
    if (r->length == 0) return qn_fail(QN_ERR_RANGE, "%s.length: is 0", w);
    return check_chunk_range(w, "length", r->offset, r->length);
}

static qn_status check_chunk(const char *w, const Quench__WeightChunk *c) {
    if (c->error && *c->error) {
        if (c->data.len != 0)
            return qn_fail(QN_ERR_FORMAT, "%s.data: %zu bytes in a refused chunk (error '%s')",
                           w, c->data.len, c->error);
        return QN_OK;
    }
    if (c->data.len == 0) return qn_fail(QN_ERR_FORMAT, "%s.data: is empty", w);
    QN_CHECK(check_chunk_range(w, "data", c->offset, c->data.len));
    uint64_t sum = qn_checksum64(c->data.data, c->data.len);
    if (sum != c->checksum)
        return qn_fail(QN_ERR_FORMAT,
                       "%s.checksum: %016" PRIx64 " but the %zu data bytes at offset %" PRIu64
                       " hash to %016" PRIx64 " (corrupted)",
                       w, c->checksum, c->data.len, c->offset, sum);
    return QN_OK;
}

static qn_status check_engine(const char *w, const Quench__EngineInfo *e) {
    QN_CHECK(check_string(w, "engine_id", e->engine_id));
    QN_CHECK(check_string(w, "endpoint", e->endpoint));
    if (e->max_running_requests == 0)
        return qn_fail(QN_ERR_RANGE, "%s.max_running_requests: is 0", w);
    return QN_OK;
}

static qn_status check_register(const char *w, const Quench__Register *r) {
    QN_CHECK(check_present(w, "engine", r->engine));
    char sub[64];
    snprintf(sub, sizeof sub, "%s.engine", w);
    return check_engine(sub, r->engine);
}

static qn_status check_register_ack(const char *w, const Quench__RegisterAck *a) {
    if (!a->accepted) return check_ok_error(w, a->accepted, a->error);
    if (a->heartbeat_interval_ms == 0)
        return qn_fail(QN_ERR_RANGE, "%s.heartbeat_interval_ms: is 0", w);
    if (a->manifest) {
        char sub[64];
        snprintf(sub, sizeof sub, "%s.manifest", w);
        QN_CHECK(check_manifest(sub, a->manifest));
        if (a->manifest->version != a->weight_version)
            return qn_fail(QN_ERR_FORMAT,
                           "%s.manifest.version: %" PRIu64 " but weight_version is %" PRIu64, w,
                           a->manifest->version, a->weight_version);
    }
    return QN_OK;
}

static qn_status check_heartbeat(const char *w, const Quench__Heartbeat *h) {
    return check_string(w, "engine_id", h->engine_id);
}

static qn_status check_heartbeat_ack(const char *w, const Quench__HeartbeatAck *h) {
    return QN_OK;
}

static qn_status check_drain(const char *w, const Quench__Drain *d) {
    return check_string(w, "engine_id", d->engine_id);
}

static qn_status check_metrics(const char *w, const Quench__MetricsReport *m) {
    QN_CHECK(check_string(w, "source", m->source));
    QN_CHECK(check_finite(w, "unix_time", m->unix_time));
    /* Values may be NaN or inf: reporting a diverged loss is the point. */
    for (size_t i = 0; i < m->n_metrics; i++) {
        char sub[64];
        snprintf(sub, sizeof sub, "%s.metrics[%zu]", w, i);
        QN_CHECK(check_present(w, "metrics[]", m->metrics[i]));
        QN_CHECK(check_string(sub, "name", m->metrics[i]->name));
    }
    return QN_OK;
}

static qn_status check_sample(const char *w, const Quench__Sample *s, uint64_t group_id) {
    if (s->group_id != group_id)
        return qn_fail(QN_ERR_FORMAT, "%s.group_id: %" PRIu64 " in group %" PRIu64, w,
                       s->group_id, group_id);
    QN_CHECK(check_tokens(w, "prompt_tokens", s->n_prompt_tokens, s->prompt_tokens));
    QN_CHECK(check_tokens(w, "response_tokens", s->n_response_tokens, s->response_tokens));
    size_t n = s->n_response_tokens;
    QN_CHECK(check_parallel(w, "rollout_logprobs", s->n_rollout_logprobs, "response_tokens", n));
    QN_CHECK(check_parallel(w, "weight_versions", s->n_weight_versions, "response_tokens", n));
    QN_CHECK(check_parallel(w, "loss_mask", s->n_loss_mask, "response_tokens", n));
    QN_CHECK(check_logprobs(w, "rollout_logprobs", s->n_rollout_logprobs, s->rollout_logprobs));
    QN_CHECK(check_mask(w, "loss_mask", s->n_loss_mask, s->loss_mask));
    /* A failed reward carries its reason, not a number (never silently 0). */
    bool reward_ok = !s->reward_status || !*s->reward_status ||
                     strcmp(s->reward_status, "ok") == 0;
    if (reward_ok) {
        QN_CHECK(check_finite(w, "reward", s->reward));
        QN_CHECK(check_finite(w, "advantage", s->advantage));
    }
    return QN_OK;
}

static qn_status check_group(const char *w, const Quench__Group *g) {
    QN_CHECK(check_present(w, "prompt", g->prompt));
    char sub[64];
    snprintf(sub, sizeof sub, "%s.prompt", w);
    QN_CHECK(check_prompt(sub, g->prompt));
    for (size_t i = 0; i < g->n_samples; i++) {
        snprintf(sub, sizeof sub, "%s.samples[%zu]", w, i);
        QN_CHECK(check_present(w, "samples[]", g->samples[i]));
        QN_CHECK(check_sample(sub, g->samples[i], g->group_id));
    }
    return QN_OK;
}

static qn_status check_error(const char *w, const Quench__Error *e) {
    if (e->status >= 0)
        return qn_fail(QN_ERR_RANGE, "%s.status: %" PRId32 " is not an error status (< 0)", w,
                       e->status);
    return check_string(w, "message", e->message);
}

static qn_status check_train_batch_request(const char *w, const Quench__TrainBatchRequest *r) {
    return check_rank(w, r->rank, r->world_size);
}

static qn_status check_train_batch_ack(const char *w, const Quench__TrainBatchAck *a) {
    return QN_OK;
}

/* Maps each body to its checker: X(member, suffix, Type, CASE) -> check_<suffix>
 * where the names differ. */
#define check_abort_request check_abort
#define check_weight_chunk_request check_chunk_request
#define check_weight_chunk check_chunk

/* ------------------------------------------------------------ envelope */

qn_status qn_envelope_validate(const Quench__Envelope *env) {
    if (!env) return qn_fail(QN_ERR_INVALID, "Envelope: is NULL");
    if (env->protocol_version != QN_PROTOCOL_VERSION)
        return qn_fail(QN_ERR_VERSION,
                       "Envelope.protocol_version: peer speaks version %" PRIu32
                       ", this build speaks version %u",
                       env->protocol_version, QN_PROTOCOL_VERSION);
    QN_CHECK(check_unknown_fields(&env->base, "Envelope"));
    const char *name = qn_envelope_body_name(env->body_case);
    switch (env->body_case) {
#define QN_BODY_CHECK_(member, suffix, Type, CASE)                                    \
    case QUENCH__ENVELOPE__BODY_##CASE:                                               \
        if (!env->member) return qn_fail(QN_ERR_FORMAT, "Envelope.%s: is NULL", #member); \
        QN_CHECK(walk_message(&env->member->base, #Type));                            \
        return check_##suffix(#Type, env->member);
        QN_ENVELOPE_BODIES(QN_BODY_CHECK_)
#undef QN_BODY_CHECK_
    default:
        break;
    }
    return qn_fail(QN_ERR_FORMAT,
                   "Envelope.body: %s (missing, or a body type this build does not know)",
                   env->body_case == QUENCH__ENVELOPE__BODY__NOT_SET ? "not set" : name);
}

qn_status qn_envelope_expect(const Quench__Envelope *env, Quench__Envelope__BodyCase body_case) {
    if (env && env->body_case == body_case) return QN_OK;
    return qn_fail(QN_ERR_FORMAT, "Envelope.body: expected %s, got %s",
                   qn_envelope_body_name(body_case),
                   env ? qn_envelope_body_name(env->body_case) : "no envelope");
}

/* The stamped copy that is actually packed; env is never written. */
static qn_status stamp(const Quench__Envelope *env, uint64_t request_id, const char *sender,
                       Quench__Envelope *out, size_t *len) {
    if (!env) return qn_fail(QN_ERR_INVALID, "Envelope: is NULL");
    *out = *env;
    out->protocol_version = QN_PROTOCOL_VERSION;
    out->request_id = request_id;
    out->sender = (char *)(sender ? sender : "");
    QN_CHECK(qn_envelope_validate(out));
    *len = quench__envelope__get_packed_size(out);
    if (*len > QN_MAX_MESSAGE_BYTES)
        return qn_fail(QN_ERR_TOO_LARGE, "Envelope(%s): %zu bytes exceeds the %zu-byte limit",
                       qn_envelope_body_name(env->body_case), *len, QN_MAX_MESSAGE_BYTES);
    return QN_OK;
}

qn_status qn_envelope_encode(const Quench__Envelope *env, uint64_t request_id,
                             const char *sender, uint8_t *buf, size_t cap, size_t *len) {
    Quench__Envelope e;
    size_t n = 0;
    qn_status s = stamp(env, request_id, sender, &e, &n);
    if (len) *len = n;
    QN_CHECK(s);
    if (n > cap || !buf)
        return qn_fail(QN_ERR_TOO_LARGE, "Envelope(%s): needs %zu bytes, buffer has %zu",
                       qn_envelope_body_name(env->body_case), n, buf ? cap : 0);
    quench__envelope__pack(&e, buf);
    return QN_OK;
}

qn_status qn_envelope_encode_alloc(const Quench__Envelope *env, uint64_t request_id,
                                   const char *sender, uint8_t **out, size_t *len) {
    *out = NULL;
    Quench__Envelope e;
    size_t n = 0;
    qn_status s = stamp(env, request_id, sender, &e, &n);
    if (len) *len = n;
    QN_CHECK(s);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return qn_fail(QN_ERR_NOMEM, "Envelope: cannot allocate %zu bytes", n);
    quench__envelope__pack(&e, buf);
    *out = buf;
    return QN_OK;
}

/* Counts what protobuf-c allocates while unpacking and refuses past the
 * budget. Memory comes from malloc, so the tree is later freed with the
 * default allocator (qn_envelope_free). */
typedef struct decode_budget {
    size_t used, limit;
    bool exceeded;
} decode_budget;

static void *budget_alloc(void *data, size_t size) {
    decode_budget *b = data;
    if (size > b->limit - b->used) {
        b->exceeded = true;
        return NULL;
    }
    b->used += size;
    return malloc(size ? size : 1);
}

static void budget_free(void *data, void *ptr) { free(ptr); }

/* Reads the leading protocol_version field (tag 0x08, varint) if the
 * encoder put it first, as protobuf-c does. Returns false when absent. */
static bool peek_version(const uint8_t *p, size_t len, uint64_t *version) {
    if (len < 2 || p[0] != 0x08) return false;
    uint64_t v = 0;
    for (size_t i = 1; i < len && i <= 10; i++) {
        v |= (uint64_t)(p[i] & 0x7F) << (7 * (i - 1));
        if (!(p[i] & 0x80)) {
            *version = v;
            return true;
        }
    }
    return false;
}

qn_status qn_envelope_decode(const uint8_t *data, size_t len, size_t max_bytes,
                             Quench__Envelope **out) {
    *out = NULL;
    size_t limit = max_bytes ? max_bytes : QN_MAX_MESSAGE_BYTES;
    if (len > limit)
        return qn_fail(QN_ERR_TOO_LARGE, "Envelope: %zu bytes exceeds the %zu-byte limit", len,
                       limit);
    if (len == 0 || !data) return qn_fail(QN_ERR_FORMAT, "Envelope: empty message");
    uint64_t peeked;
    if (peek_version(data, len, &peeked) && peeked != QN_PROTOCOL_VERSION)
        return qn_fail(QN_ERR_VERSION,
                       "Envelope.protocol_version: peer speaks version %" PRIu64
                       ", this build speaks version %u",
                       peeked, QN_PROTOCOL_VERSION);
    decode_budget budget = {
        .used = 0,
        .limit = (len > (SIZE_MAX >> 5) ? SIZE_MAX >> 1 : len * QN_DECODE_MEMORY_FACTOR) +
                 ((size_t)64 << 10), /* saturates for absurd per-call limits */
        .exceeded = false,
    };
    ProtobufCAllocator alloc = {.alloc = budget_alloc, .free = budget_free,
                                .allocator_data = &budget};
    Quench__Envelope *env = quench__envelope__unpack(&alloc, len, data);
    if (!env) {
        if (budget.exceeded)
            return qn_fail(QN_ERR_TOO_LARGE,
                           "Envelope: decoding %zu bytes needs more than %zu bytes of memory "
                           "(flood of empty sub-messages?)",
                           len, budget.limit);
        return qn_fail(QN_ERR_FORMAT, "Envelope: %zu bytes are not a valid protobuf Envelope "
                                      "(truncated or corrupt)",
                       len);
    }
    qn_status s = qn_envelope_validate(env);
    if (s != QN_OK) {
        qn_status_trace(__FILE__, __LINE__, s);
        qn_envelope_free(env);
        return s;
    }
    *out = env;
    return QN_OK;
}

void qn_envelope_free(Quench__Envelope *env) {
    if (env) quench__envelope__free_unpacked(env, NULL);
}
