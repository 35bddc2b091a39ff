/* test_codec.c — the wire codec (net/codec.h) and the weight checksum:
 * round trip of every Envelope body, every prefix of every encoded body,
 * oversized input (refused before a byte is read), memory floods, wrong
 * protocol versions, garbage, one case per semantic rule, and XXH64 against
 * published vectors. Also checks (and with QN_WRITE_SEEDS=<dir>, writes)
 * the fuzz seed corpus tests/fuzz/corpus/envelope/<body>.pb. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "net/codec.h"
#include "tests/test_util.h"

/* ------------------------------------------------------------ sample bodies
 * Each builder refills its static storage, so a test may mutate what it
 * gets and the next call starts clean. Every field is set to a non-default
 * value where the rules allow, so the round trip covers it. */

static Quench__Prompt *fill_prompt(void) {
    static Quench__Prompt p;
    static int32_t tokens[4];
    const int32_t t[4] = {1, 17, 4242, 151000};
    memcpy(tokens, t, sizeof t);
    quench__prompt__init(&p);
    p.prompt_id = 9;
    p.epoch = 1;
    p.n_tokens = 4;
    p.tokens = tokens;
    p.text = "What is 2+2? \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"; /* multi-byte UTF-8 */
    p.label = "4";
    p.metadata_json = "{\"k\":1}";
    return &p;
}

static Quench__Envelope build_prompt(void) { return qn_envelope_prompt(fill_prompt()); }

static Quench__Envelope build_generate_request(void) {
    static Quench__GenerateRequest r;
    static Quench__SamplingParams sp;
    static int32_t ids[4], stop_ids[2], prefix[3];
    static float prefix_lp[3];
    static uint64_t prefix_ver[3];
    static char *stop[2];
    const int32_t a[4] = {1, 17, 4242, 151000}, b[2] = {2, 151329}, c[3] = {5, 6, 7};
    const float d[3] = {-0.5f, -2.0f, -0.125f};
    const uint64_t v[3] = {3, 3, 4};
    memcpy(ids, a, sizeof a);
    memcpy(stop_ids, b, sizeof b);
    memcpy(prefix, c, sizeof c);
    memcpy(prefix_lp, d, sizeof d);
    memcpy(prefix_ver, v, sizeof v);
    stop[0] = "</s>";
    stop[1] = "\n\n";
    quench__sampling_params__init(&sp);
    sp.temperature = 0.7f;
    sp.top_p = 0.9f;
    sp.top_k = 50;
    sp.min_p = 0.05f;
    sp.max_new_tokens = 128;
    sp.n_stop_token_ids = 2;
    sp.stop_token_ids = stop_ids;
    sp.n_stop = 2;
    sp.stop = stop;
    sp.seed = 1234;
    sp.has_seed = 1;
    sp.n = 4;
    quench__generate_request__init(&r);
    r.group_id = 42;
    r.sample_index = 3;
    r.n_input_ids = 4;
    r.input_ids = ids;
    r.params = &sp;
    r.return_logprob = 1;
    r.n_prefix_output_ids = 3;
    r.prefix_output_ids = prefix;
    r.n_prefix_output_logprobs = 3;
    r.prefix_output_logprobs = prefix_lp;
    r.n_prefix_weight_versions = 3;
    r.prefix_weight_versions = prefix_ver;
    r.min_weight_version = 3;
    return qn_envelope_generate_request(&r);
}

static Quench__Envelope build_generate_result(void) {
    static Quench__GenerateResult r;
    static int32_t ids[3];
    static float lp[3];
    static uint64_t ver[3];
    const int32_t a[3] = {7, 8, 9};
    const float b[3] = {-0.5f, -1.25f, -0.0f};
    const uint64_t c[3] = {3, 3, 4};
    memcpy(ids, a, sizeof a);
    memcpy(lp, b, sizeof b);
    memcpy(ver, c, sizeof c);
    quench__generate_result__init(&r);
    r.group_id = 42;
    r.sample_index = 3;
    r.n_output_ids = 3;
    r.output_ids = ids;
    r.n_output_logprobs = 3;
    r.output_logprobs = lp;
    r.n_weight_versions = 3;
    r.weight_versions = ver;
    r.finish_reason = QUENCH__FINISH_REASON__FINISH_REASON_STOP;
    r.error = "partial: engine draining";
    r.engine_id = "engine:0";
    r.prompt_tokens = 4;
    r.cached_tokens = 2;
    r.latency_s = 0.125;
    return qn_envelope_generate_result(&r);
}

static Quench__Envelope build_abort_request(void) {
    static Quench__AbortRequest a;
    static uint64_t ids[3];
    ids[0] = 5, ids[1] = 6, ids[2] = UINT64_MAX;
    quench__abort_request__init(&a);
    a.n_request_ids = 3;
    a.request_ids = ids;
    return qn_envelope_abort_request(&a);
}

static Quench__Envelope build_train_batch(void) {
    static Quench__TrainBatch b;
    static Quench__TrainSample s0, s1;
    static Quench__TrainSample *samples[2];
    static int32_t t0[6], t1[3];
    static float lp0[2];
    static uint32_t mask0[2];
    const int32_t a[6] = {1, 2, 3, 4, 50, 60}, c[3] = {1, 2, 3};
    memcpy(t0, a, sizeof a);
    memcpy(t1, c, sizeof c);
    lp0[0] = -0.25f, lp0[1] = -3.5f;
    mask0[0] = 1, mask0[1] = 0;
    quench__train_sample__init(&s0);
    s0.n_tokens = 6;
    s0.tokens = t0;
    s0.response_start = 4;
    s0.group_id = 42;
    s0.reward = 1.0;
    s0.advantage = 0.5;
    s0.n_rollout_logprobs = 2;
    s0.rollout_logprobs = lp0;
    s0.n_loss_mask = 2;
    s0.loss_mask = mask0;
    quench__train_sample__init(&s1); /* empty response: response_start == len(tokens) */
    s1.n_tokens = 3;
    s1.tokens = t1;
    s1.response_start = 3;
    s1.group_id = 43;
    s1.reward = -1.0;
    s1.advantage = -0.5;
    samples[0] = &s0, samples[1] = &s1;
    quench__train_batch__init(&b);
    b.rollout_id = 7;
    b.rank = 1;
    b.world_size = 2;
    b.n_samples = 2;
    b.samples = samples;
    b.data_cursor = 1234;
    return qn_envelope_train_batch(&b);
}

static Quench__Envelope build_train_batch_ack(void) {
    static Quench__TrainBatchAck a;
    quench__train_batch_ack__init(&a);
    a.rollout_id = 7;
    a.rank = 1;
    a.checkpoint_step = 70;
    a.checkpointed = 1;
    return qn_envelope_train_batch_ack(&a);
}

static Quench__Envelope build_train_batch_request(void) {
    static Quench__TrainBatchRequest r;
    quench__train_batch_request__init(&r);
    r.rollout_id = 7;
    r.rank = 1;
    r.world_size = 2;
    return qn_envelope_train_batch_request(&r);
}

static Quench__WeightManifest *fill_manifest(void) {
    static Quench__WeightManifest m;
    static Quench__TensorInfo t0, t1;
    static Quench__TensorInfo *tensors[2];
    static uint64_t shape0[2], shape1[1];
    shape0[0] = 4, shape0[1] = 8, shape1[0] = 8;
    quench__tensor_info__init(&t0);
    t0.name = "model.embed_tokens.weight";
    t0.dtype = QUENCH__DTYPE__DTYPE_BF16;
    t0.n_shape = 2;
    t0.shape = shape0;
    t0.offset = 0;
    t0.nbytes = 64;
    t0.checksum = 0x1122334455667788ull;
    quench__tensor_info__init(&t1);
    t1.name = "model.norm.weight";
    t1.dtype = QUENCH__DTYPE__DTYPE_F32;
    t1.n_shape = 1;
    t1.shape = shape1;
    t1.offset = 64;
    t1.nbytes = 32;
    t1.checksum = 0x8877665544332211ull;
    tensors[0] = &t0, tensors[1] = &t1;
    quench__weight_manifest__init(&m);
    m.version = 5;
    m.n_tensors = 2;
    m.tensors = tensors;
    m.total_bytes = 96;
    m.chunk_bytes = 48;
    m.transport = QUENCH__WEIGHT_TRANSPORT__WEIGHT_TRANSPORT_ZMQ_PULL;
    m.server_endpoint = "tcp://10.0.0.1:5601";
    m.bucket_bytes = 1 << 20;
    return &m;
}

static Quench__Envelope build_weight_update_begin(void) {
    static Quench__WeightUpdateBegin b;
    quench__weight_update_begin__init(&b);
    b.manifest = fill_manifest();
    return qn_envelope_weight_update_begin(&b);
}

static Quench__Envelope build_weight_update_ack(void) {
    static Quench__WeightUpdateAck a;
    quench__weight_update_ack__init(&a);
    a.version = 5;
    a.engine_id = "engine:0";
    a.ok = 1;
    a.error = "late by 2 s";
    a.phase = QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_APPLIED;
    return qn_envelope_weight_update_ack(&a);
}

static Quench__Envelope build_weight_update_status(void) {
    static Quench__WeightUpdateStatus s;
    static char *ok_ids[1], *failed_ids[1];
    ok_ids[0] = "engine:0";
    failed_ids[0] = "engine:1";
    quench__weight_update_status__init(&s);
    s.version = 5;
    s.phase = QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_READY;
    s.ok = 0;
    s.error = "engine:1 failed to load";
    s.n_engine_ids = 1;
    s.engine_ids = ok_ids;
    s.n_failed_engine_ids = 1;
    s.failed_engine_ids = failed_ids;
    return qn_envelope_weight_update_status(&s);
}

static Quench__Envelope build_weight_chunk_request(void) {
    static Quench__WeightChunkRequest r;
    quench__weight_chunk_request__init(&r);
    r.version = 5;
    r.offset = 48;
    r.length = 48;
    return qn_envelope_weight_chunk_request(&r);
}

static uint8_t g_chunk_data[48];

static Quench__Envelope build_weight_chunk(void) {
    static Quench__WeightChunk c;
    for (size_t i = 0; i < sizeof g_chunk_data; i++) g_chunk_data[i] = (uint8_t)(i * 37 + 11);
    quench__weight_chunk__init(&c);
    c.version = 5;
    c.offset = 48;
    c.data.len = sizeof g_chunk_data;
    c.data.data = g_chunk_data;
    c.checksum = qn_checksum64(g_chunk_data, sizeof g_chunk_data);
    return qn_envelope_weight_chunk(&c);
}

static Quench__Envelope build_register(void) {
    static Quench__Register r;
    static Quench__EngineInfo e;
    quench__engine_info__init(&e);
    e.engine_id = "engine:0";
    e.endpoint = "tcp://10.0.0.2:5700";
    e.host = "node1";
    e.device = "cuda:0";
    e.max_running_requests = 256;
    e.kv_cache_tokens = 1 << 20;
    e.fp8 = 1;
    quench__register__init(&r);
    r.engine = &e;
    return qn_envelope_register(&r);
}

static Quench__Envelope build_register_ack(void) {
    static Quench__RegisterAck a;
    quench__register_ack__init(&a);
    a.accepted = 1;
    a.error = "note: draining soon";
    a.weight_version = 5;
    a.manifest = fill_manifest();
    a.heartbeat_interval_ms = 1000;
    return qn_envelope_register_ack(&a);
}

static Quench__Envelope build_heartbeat(void) {
    static Quench__Heartbeat h;
    quench__heartbeat__init(&h);
    h.engine_id = "engine:0";
    h.weight_version = 5;
    h.running_requests = 12;
    h.queued_requests = 3;
    h.outstanding_tokens = 4096;
    h.free_kv_tokens = 100000;
    h.draining = 1;
    return qn_envelope_heartbeat(&h);
}

static Quench__Envelope build_heartbeat_ack(void) {
    static Quench__HeartbeatAck h;
    quench__heartbeat_ack__init(&h);
    h.registered = 1;
    h.weight_version = 5;
    return qn_envelope_heartbeat_ack(&h);
}

static Quench__Envelope build_drain(void) {
    static Quench__Drain d;
    quench__drain__init(&d);
    d.engine_id = "engine:0";
    return qn_envelope_drain(&d);
}

static Quench__Envelope build_metrics(void) {
    static Quench__MetricsReport r;
    static Quench__Metric m0, m1;
    static Quench__Metric *ms[2];
    quench__metric__init(&m0);
    m0.name = "train/pg_loss";
    m0.value = 0.25;
    quench__metric__init(&m1);
    m1.name = "train/grad_norm";
    m1.value = NAN; /* a diverged value is reported, not refused */
    ms[0] = &m0, ms[1] = &m1;
    quench__metrics_report__init(&r);
    r.source = "train:0";
    r.step = 12;
    r.unix_time = 1.7e9;
    r.n_metrics = 2;
    r.metrics = ms;
    return qn_envelope_metrics(&r);
}

static Quench__Envelope build_group(void) {
    static Quench__Group g;
    static Quench__Sample s0, s1;
    static Quench__Sample *samples[2];
    static int32_t prompt[2], resp0[3], resp1[2];
    static float lp0[3], lp1[2];
    static uint64_t ver0[3], ver1[2];
    static uint32_t mask0[3];
    prompt[0] = 1, prompt[1] = 17;
    resp0[0] = 5, resp0[1] = 6, resp0[2] = 2;
    resp1[0] = 9, resp1[1] = 2;
    lp0[0] = -0.1f, lp0[1] = -0.2f, lp0[2] = -0.3f;
    lp1[0] = -1.0f, lp1[1] = -2.0f;
    ver0[0] = ver0[1] = ver0[2] = 4;
    ver1[0] = 4, ver1[1] = 5;
    mask0[0] = 1, mask0[1] = 1, mask0[2] = 0;
    quench__sample__init(&s0);
    s0.group_id = 42;
    s0.index = 0;
    s0.n_prompt_tokens = 2;
    s0.prompt_tokens = prompt;
    s0.n_response_tokens = 3;
    s0.response_tokens = resp0;
    s0.n_rollout_logprobs = 3;
    s0.rollout_logprobs = lp0;
    s0.n_weight_versions = 3;
    s0.weight_versions = ver0;
    s0.n_loss_mask = 3;
    s0.loss_mask = mask0;
    s0.finish_reason = QUENCH__FINISH_REASON__FINISH_REASON_STOP;
    s0.reward = 1.0;
    s0.advantage = 0.7071;
    s0.response_text = "4";
    s0.reward_status = "ok";
    quench__sample__init(&s1);
    s1.group_id = 42;
    s1.index = 1;
    s1.n_prompt_tokens = 2;
    s1.prompt_tokens = prompt;
    s1.n_response_tokens = 2;
    s1.response_tokens = resp1;
    s1.n_rollout_logprobs = 2;
    s1.rollout_logprobs = lp1;
    s1.n_weight_versions = 2;
    s1.weight_versions = ver1;
    s1.finish_reason = QUENCH__FINISH_REASON__FINISH_REASON_LENGTH;
    s1.reward = NAN; /* failed reward: reason instead of a number */
    s1.advantage = NAN;
    s1.response_text = "five";
    s1.reward_status = "timeout after 30 s";
    samples[0] = &s0, samples[1] = &s1;
    quench__group__init(&g);
    g.group_id = 42;
    g.rollout_id = 7;
    g.prompt = fill_prompt();
    g.n_samples = 2;
    g.samples = samples;
    return qn_envelope_group(&g);
}

static Quench__Envelope build_error(void) {
    static Quench__Error e;
    quench__error__init(&e);
    e.status = QN_ERR_TIMEOUT;
    e.message = "engine:0 timed out";
    return qn_envelope_error(&e);
}

typedef struct body_case {
    const char *suffix;
    Quench__Envelope__BodyCase body_case;
    Quench__Envelope (*build)(void);
} body_case;

#define BODY_ROW_(member, suffix, Type, CASE) \
    {#suffix, QUENCH__ENVELOPE__BODY_##CASE, build_##suffix},
static const body_case k_bodies[] = {QN_ENVELOPE_BODIES(BODY_ROW_)};
#undef BODY_ROW_
#define N_BODIES (sizeof k_bodies / sizeof k_bodies[0])

/* ------------------------------------------------------------ deep compare */

static size_t scalar_size(ProtobufCType t) {
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    default:
        return 4; /* 32-bit ints, float, enum, protobuf_c_boolean */
    }
}

/* Field-by-field equality through the descriptors (floats bit for bit, so
 * NaN equals NaN); on a difference writes the field path into why. */
static bool msg_equal(const ProtobufCMessage *a, const ProtobufCMessage *b, const char *path,
                      char *why, size_t why_len) {
    if (!a || !b) {
        if (a != b) snprintf(why, why_len, "%s: present on one side only", path);
        return a == b;
    }
    const ProtobufCMessageDescriptor *d = a->descriptor;
    if (d != b->descriptor) {
        snprintf(why, why_len, "%s: different types", path);
        return false;
    }
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *pa = (const char *)a, *pb = (const char *)b;
        char sub[256];
        snprintf(sub, sizeof sub, "%s.%s", path, f->name);
        size_t n = 1;
        const char *va = pa + f->offset, *vb = pb + f->offset;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t ca = *(const uint32_t *)(pa + f->quantifier_offset);
            uint32_t cb = *(const uint32_t *)(pb + f->quantifier_offset);
            if (ca != cb) {
                snprintf(why, why_len, "%s: oneof case %u vs %u", sub, ca, cb);
                return false;
            }
            if (ca != f->id) continue;
        } else if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t na = *(const size_t *)(pa + f->quantifier_offset);
            size_t nb = *(const size_t *)(pb + f->quantifier_offset);
            if (na != nb) {
                snprintf(why, why_len, "%s: %zu vs %zu entries", sub, na, nb);
                return false;
            }
            n = na;
            va = *(const char *const *)va;
            vb = *(const char *const *)vb;
        }
        size_t es = scalar_size(f->type);
        for (size_t k = 0; k < n; k++) {
            const char *ea = va + k * es, *eb = vb + k * es;
            bool same;
            if (f->type == PROTOBUF_C_TYPE_STRING) {
                same = strcmp(*(const char *const *)ea, *(const char *const *)eb) == 0;
            } else if (f->type == PROTOBUF_C_TYPE_BYTES) {
                const ProtobufCBinaryData *x = (const void *)ea, *y = (const void *)eb;
                same = x->len == y->len && (x->len == 0 || memcmp(x->data, y->data, x->len) == 0);
            } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
                if (!msg_equal(*(const ProtobufCMessage *const *)ea,
                               *(const ProtobufCMessage *const *)eb, sub, why, why_len))
                    return false;
                same = true;
            } else {
                same = memcmp(ea, eb, es) == 0;
            }
            if (!same) {
                snprintf(why, why_len, "%s[%zu]: differs", sub, k);
                return false;
            }
        }
    }
    return true;
}

/* ------------------------------------------------------------ helpers */

static Quench__Envelope *decode_ok(const uint8_t *buf, size_t len) {
    Quench__Envelope *env = NULL;
    qn_status s = qn_envelope_decode(buf, len, 0, &env);
    if (s != QN_OK) fail_msg("decode: %s: %s", qn_status_name(s), qn_last_error());
    assert_non_null(env);
    return env;
}

/* Decodes a private copy of exactly len bytes, so that ASan sees any read
 * past the end. */
static qn_status decode_copy(const uint8_t *buf, size_t len, size_t max_bytes) {
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len) memcpy(copy, buf, len);
    Quench__Envelope *env = (Quench__Envelope *)0x1; /* must be reset to NULL on failure */
    qn_status s = qn_envelope_decode(copy, len, max_bytes, &env);
    if (s != QN_OK) assert_null(env);
    qn_envelope_free(env);
    free(copy);
    return s;
}

/* Packs env as is (no stamping, no validation): what a buggy or hostile
 * peer could send. */
static uint8_t *pack_raw(const Quench__Envelope *env, size_t *len) {
    *len = quench__envelope__get_packed_size(env);
    uint8_t *buf = malloc(*len ? *len : 1);
    assert_non_null(buf);
    quench__envelope__pack(env, buf);
    return buf;
}

static void assert_error_contains(const char *needle) {
    if (!strstr(qn_last_error(), needle))
        fail_msg("error '%s' does not contain '%s'", qn_last_error(), needle);
}

/* ------------------------------------------------------------ tests */

static void test_every_body_has_a_case(void **state) {
    /* A body added to quench.proto without a row in QN_ENVELOPE_BODIES (and
     * so without a builder here) fails this test. */
    const ProtobufCMessageDescriptor *d = &quench__envelope__descriptor;
    size_t oneof_fields = 0;
    for (unsigned i = 0; i < d->n_fields; i++) {
        if (!(d->fields[i].flags & PROTOBUF_C_FIELD_FLAG_ONEOF)) continue;
        oneof_fields++;
        bool found = false;
        for (size_t k = 0; k < N_BODIES; k++)
            if ((unsigned)k_bodies[k].body_case == d->fields[i].id) found = true;
        if (!found) fail_msg("body %s has no row in QN_ENVELOPE_BODIES", d->fields[i].name);
        assert_string_not_equal(qn_envelope_body_name(d->fields[i].id), "unknown");
    }
    assert_int_equal(oneof_fields, N_BODIES);
    assert_string_equal(qn_envelope_body_name(QUENCH__ENVELOPE__BODY_GENERATE_RESULT),
                        "GenerateResult");
    assert_string_equal(qn_envelope_body_name(QUENCH__ENVELOPE__BODY__NOT_SET), "none");
}

static void test_round_trip_every_body(void **state) {
    for (size_t k = 0; k < N_BODIES; k++) {
        Quench__Envelope env = k_bodies[k].build();
        const char *sender_before = env.sender;
        uint8_t *buf = NULL;
        size_t len = 0;
        qn_status s = qn_envelope_encode_alloc(&env, 1000 + k, "router", &buf, &len);
        if (s != QN_OK) fail_msg("%s: encode: %s", k_bodies[k].suffix, qn_last_error());
        /* encoding stamps a copy, never the caller's envelope */
        assert_int_equal(env.protocol_version, 0);
        assert_ptr_equal(env.sender, sender_before);
        Quench__Envelope *got = decode_ok(buf, len);
        assert_int_equal(got->protocol_version, QN_PROTOCOL_VERSION);
        assert_int_equal(got->request_id, 1000 + k);
        assert_string_equal(got->sender, "router");
        assert_int_equal(got->body_case, k_bodies[k].body_case);
        assert_int_equal(qn_envelope_expect(got, k_bodies[k].body_case), QN_OK);
        /* compare against the stamped original, field by field */
        env.protocol_version = QN_PROTOCOL_VERSION;
        env.request_id = 1000 + k;
        env.sender = "router";
        char why[512] = "";
        if (!msg_equal(&env.base, &got->base, "Envelope", why, sizeof why))
            fail_msg("%s: round trip differs: %s", k_bodies[k].suffix, why);
        /* into a caller buffer: same bytes */
        uint8_t *buf2 = malloc(len);
        size_t len2 = 0;
        assert_int_equal(qn_envelope_encode(&env, 1000 + k, "router", buf2, len, &len2), QN_OK);
        assert_int_equal(len2, len);
        assert_memory_equal(buf2, buf, len);
        free(buf2);
        qn_envelope_free(got);
        free(buf);
    }
}

static void test_round_trip_fields(void **state) {
    /* Explicit checks of a few fields, independent of the reflective compare. */
    Quench__Envelope env = build_generate_result();
    uint8_t *buf;
    size_t len;
    assert_int_equal(qn_envelope_encode_alloc(&env, 77, "engine:0", &buf, &len), QN_OK);
    Quench__Envelope *got = decode_ok(buf, len);
    const Quench__GenerateResult *r = got->generate_result;
    assert_int_equal(r->n_output_ids, 3);
    assert_int_equal(r->output_ids[2], 9);
    assert_true(r->output_logprobs[1] == -1.25f);
    assert_int_equal(r->weight_versions[2], 4);
    assert_int_equal(r->finish_reason, QUENCH__FINISH_REASON__FINISH_REASON_STOP);
    assert_string_equal(r->engine_id, "engine:0");
    assert_true(r->latency_s == 0.125);
    qn_envelope_free(got);
    free(buf);

    env = build_weight_chunk();
    assert_int_equal(qn_envelope_encode_alloc(&env, 78, NULL, &buf, &len), QN_OK);
    got = decode_ok(buf, len);
    assert_string_equal(got->sender, "");
    assert_int_equal(got->weight_chunk->data.len, sizeof g_chunk_data);
    assert_memory_equal(got->weight_chunk->data.data, g_chunk_data, sizeof g_chunk_data);
    qn_envelope_free(got);
    free(buf);

    env = build_train_batch();
    assert_int_equal(qn_envelope_encode_alloc(&env, 79, "buffer", &buf, &len), QN_OK);
    got = decode_ok(buf, len);
    assert_int_equal(got->train_batch->n_samples, 2);
    assert_int_equal(got->train_batch->samples[0]->response_start, 4);
    assert_int_equal(got->train_batch->samples[0]->loss_mask[1], 0);
    assert_true(got->train_batch->samples[1]->advantage == -0.5);
    assert_int_equal(qn_envelope_expect(got, QUENCH__ENVELOPE__BODY_HEARTBEAT), QN_ERR_FORMAT);
    assert_error_contains("expected Heartbeat, got TrainBatch");
    qn_envelope_free(got);
    free(buf);
}

static void test_compare_can_fail(void **state) {
    /* The reflective compare must notice a change in a nested repeated field. */
    Quench__Envelope a = build_group();
    uint8_t *buf;
    size_t len;
    assert_int_equal(qn_envelope_encode_alloc(&a, 1, "x", &buf, &len), QN_OK);
    Quench__Envelope *got = decode_ok(buf, len);
    a.protocol_version = QN_PROTOCOL_VERSION;
    a.request_id = 1;
    a.sender = "x";
    char why[512] = "";
    assert_true(msg_equal(&a.base, &got->base, "Envelope", why, sizeof why));
    got->group->samples[1]->rollout_logprobs[1] = -2.5f;
    assert_false(msg_equal(&a.base, &got->base, "Envelope", why, sizeof why));
    assert_non_null(strstr(why, "samples.rollout_logprobs"));
    qn_envelope_free(got);
    free(buf);
}

static void test_every_prefix_rejected(void **state) {
    /* Every proper prefix of every encoded body must be refused cleanly: cut
     * inside the body the protobuf parse fails; cut before it, the envelope
     * has no body. */
    size_t total = 0, format = 0, version = 0;
    for (size_t k = 0; k < N_BODIES; k++) {
        Quench__Envelope env = k_bodies[k].build();
        uint8_t *buf;
        size_t len;
        assert_int_equal(qn_envelope_encode_alloc(&env, 5, "router", &buf, &len), QN_OK);
        for (size_t p = 0; p < len; p++) {
            qn_status s = decode_copy(buf, p, 0);
            if (s == QN_OK) fail_msg("%s: prefix of %zu/%zu bytes accepted", k_bodies[k].suffix, p,
                                     len);
            total++;
            format += s == QN_ERR_FORMAT;
            version += s == QN_ERR_VERSION;
        }
        assert_int_equal(decode_copy(buf, len, 0), QN_OK);
        free(buf);
    }
    /* A one-byte prefix is 0x08 with no version: the rest are format errors. */
    print_message("prefixes: %zu refused (%zu format, %zu version)\n", total, format, version);
    assert_int_equal(format + version, total);
}

static void test_oversized_refused_before_reading(void **state) {
    /* A region one byte over the limit that cannot be read at all: any
     * access would crash, so TOO_LARGE proves the length is checked first. */
    size_t n = QN_MAX_MESSAGE_BYTES + 1;
    void *p = mmap(NULL, n, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    Quench__Envelope *env = NULL;
    assert_int_equal(qn_envelope_decode(p, n, 0, &env), QN_ERR_TOO_LARGE);
    assert_null(env);
    assert_error_contains("67108865 bytes exceeds the 67108864-byte limit");
    munmap(p, n);

    /* per-call limit: exactly the size passes, one byte less does not */
    Quench__Envelope e = build_group();
    uint8_t *buf;
    size_t len;
    assert_int_equal(qn_envelope_encode_alloc(&e, 1, "b", &buf, &len), QN_OK);
    assert_int_equal(decode_copy(buf, len, len), QN_OK);
    assert_int_equal(decode_copy(buf, len, len - 1), QN_ERR_TOO_LARGE);
    assert_error_contains("-byte limit");
    free(buf);
}

static void test_encode_limits(void **state) {
    Quench__Envelope env = build_heartbeat();
    size_t need = 0;
    uint8_t small[8];
    assert_int_equal(qn_envelope_encode(&env, 1, "e", small, sizeof small, &need),
                     QN_ERR_TOO_LARGE);
    assert_true(need > sizeof small);
    assert_error_contains("Envelope(Heartbeat): needs");
    uint8_t *exact = malloc(need);
    size_t got = 0;
    assert_int_equal(qn_envelope_encode(&env, 1, "e", exact, need, &got), QN_OK);
    assert_int_equal(got, need);
    free(exact);

    /* a message over QN_MAX_MESSAGE_BYTES is never produced */
    static Quench__GenerateResult big;
    quench__generate_result__init(&big);
    big.n_output_ids = QN_MAX_MESSAGE_BYTES / 4 + 1;
    big.output_ids = calloc(big.n_output_ids, sizeof(int32_t));
    for (size_t i = 0; i < big.n_output_ids; i++) big.output_ids[i] = 1 << 21; /* 4-byte varints */
    big.finish_reason = QUENCH__FINISH_REASON__FINISH_REASON_LENGTH;
    Quench__Envelope benv = qn_envelope_generate_result(&big);
    uint8_t *out = (uint8_t *)0x1;
    assert_int_equal(qn_envelope_encode_alloc(&benv, 1, "e", &out, &need), QN_ERR_TOO_LARGE);
    assert_null(out);
    assert_true(need > QN_MAX_MESSAGE_BYTES);
    assert_error_contains("Envelope(GenerateResult):");
    free(big.output_ids);
}

static void test_large_message_within_budget(void **state) {
    /* A legitimate 1M-token result (1-byte varints expanding 8x for the
     * uint64 versions) decodes within the memory budget. */
    size_t n = 1 << 20;
    static Quench__GenerateResult r;
    quench__generate_result__init(&r);
    r.n_output_ids = r.n_output_logprobs = r.n_weight_versions = n;
    r.output_ids = malloc(n * sizeof(int32_t));
    r.output_logprobs = malloc(n * sizeof(float));
    r.weight_versions = malloc(n * sizeof(uint64_t));
    for (size_t i = 0; i < n; i++) {
        r.output_ids[i] = (int32_t)(i % 100);
        r.output_logprobs[i] = -(float)(i % 7);
        r.weight_versions[i] = 3;
    }
    r.finish_reason = QUENCH__FINISH_REASON__FINISH_REASON_LENGTH;
    Quench__Envelope env = qn_envelope_generate_result(&r);
    uint8_t *buf;
    size_t len;
    assert_int_equal(qn_envelope_encode_alloc(&env, 1, "e", &buf, &len), QN_OK);
    Quench__Envelope *got = decode_ok(buf, len);
    assert_int_equal(got->generate_result->n_weight_versions, n);
    assert_int_equal(got->generate_result->output_ids[n - 1], (int32_t)((n - 1) % 100));
    qn_envelope_free(got);
    free(buf);
    free(r.output_ids);
    free(r.output_logprobs);
    free(r.weight_versions);
}

/* Appends a varint. */
static size_t put_varint(uint8_t *p, uint64_t v) {
    size_t n = 0;
    do {
        p[n++] = (uint8_t)((v & 0x7F) | (v > 0x7F ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

static void test_memory_flood_refused(void **state) {
    /* MetricsReport with 100k empty Metric entries: 2 input bytes each, ~48
     * bytes of structs each. Refused while parsing, not after. */
    size_t count = 100000, body = 2 * count;
    uint8_t *buf = malloc(body + 32);
    size_t n = 0;
    buf[n++] = 0x08; /* protocol_version */
    buf[n++] = QN_PROTOCOL_VERSION;
    n += put_varint(buf + n, (23u << 3) | 2); /* Envelope.metrics */
    n += put_varint(buf + n, body);
    for (size_t i = 0; i < count; i++) buf[n++] = 0x22, buf[n++] = 0x00; /* metrics {} */
    assert_int_equal(decode_copy(buf, n, 0), QN_ERR_TOO_LARGE);
    assert_error_contains("bytes of memory");
    /* The same shape with few entries gets past the budget to validation. */
    n = 0;
    buf[n++] = 0x08;
    buf[n++] = QN_PROTOCOL_VERSION;
    n += put_varint(buf + n, (23u << 3) | 2);
    n += put_varint(buf + n, 2 * 10);
    for (size_t i = 0; i < 10; i++) buf[n++] = 0x22, buf[n++] = 0x00;
    assert_int_equal(decode_copy(buf, n, 0), QN_ERR_FORMAT);
    assert_error_contains("MetricsReport.source: is empty");
    free(buf);
}

static void test_wrong_version(void **state) {
    Quench__Envelope env = build_heartbeat();
    env.protocol_version = 2;
    size_t len;
    uint8_t *buf = pack_raw(&env, &len);
    assert_int_equal(decode_copy(buf, len, 0), QN_ERR_VERSION);
    assert_error_contains("Envelope.protocol_version: peer speaks version 2, this build speaks "
                          "version 1");
    free(buf);

    /* version 2 followed by bytes this build cannot parse: still a version error */
    const uint8_t future[] = {0x08, 0x02, 0xff, 0xff, 0xff, 0x07};
    assert_int_equal(decode_copy(future, sizeof future, 0), QN_ERR_VERSION);
    assert_error_contains("version 2");

    /* missing version (proto3 omits 0) */
    env.protocol_version = 0;
    buf = pack_raw(&env, &len);
    assert_int_equal(decode_copy(buf, len, 0), QN_ERR_VERSION);
    assert_error_contains("peer speaks version 0");
    free(buf);

    /* validate on a hand-built envelope */
    env.protocol_version = 7;
    assert_int_equal(qn_envelope_validate(&env), QN_ERR_VERSION);
}

static void test_missing_body(void **state) {
    Quench__Envelope env = QUENCH__ENVELOPE__INIT;
    env.protocol_version = QN_PROTOCOL_VERSION;
    env.request_id = 3;
    size_t len;
    uint8_t *buf = pack_raw(&env, &len);
    assert_int_equal(decode_copy(buf, len, 0), QN_ERR_FORMAT);
    assert_error_contains("Envelope.body: not set");
    free(buf);
    uint8_t *out;
    assert_int_equal(qn_envelope_encode_alloc(&env, 1, "x", &out, &len), QN_ERR_FORMAT);
    /* a body from a newer peer (unknown field 99) is kept as unknown: no body */
    const uint8_t newer[] = {0x08, 0x01, 0x9a, 0x06, 0x00};
    assert_int_equal(decode_copy(newer, sizeof newer, 0), QN_ERR_FORMAT);
    assert_error_contains("does not know");
    /* field number 0 (tag as a padded varint, which protobuf-c accepts but
     * cannot re-read once re-encoded; found by fuzz_envelope) */
    const uint8_t field0[] = {0x85, 0x00, 0x08, 0x72, 0x01, 0x00, 0x08, 0x01, 0x72, 0x00};
    assert_int_equal(decode_copy(field0, sizeof field0, 0), QN_ERR_FORMAT);
    assert_error_contains("Envelope: field number 0");
    const uint8_t nested0[] = {0x08, 0x01, 0xaa, 0x01, 0x09, /* Envelope.heartbeat, 9 bytes: */
                               0x85, 0x00, 1, 2, 3, 4, 0x0a, 0x01, 'e'};
    assert_int_equal(decode_copy(nested0, sizeof nested0, 0), QN_ERR_FORMAT);
    assert_error_contains("Heartbeat: field number 0");
    /* empty input */
    assert_int_equal(decode_copy(newer, 0, 0), QN_ERR_FORMAT);
    assert_error_contains("empty message");
}

static void test_garbage(void **state) {
    uint64_t x = 0x9E3779B97F4A7C15ull;
    size_t counts[3] = {0};
    uint8_t buf[512];
    for (int iter = 0; iter < 3000; iter++) {
        size_t len = 1 + (size_t)(iter % 500);
        for (size_t i = 0; i < len; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            buf[i] = (uint8_t)(x >> 56);
        }
        if (iter % 3 == 1) buf[0] = 0x08, buf[1] = QN_PROTOCOL_VERSION; /* past the peek */
        qn_status s = decode_copy(buf, len, 0);
        if (s == QN_OK) fail_msg("garbage of %zu bytes accepted (iteration %d)", len, iter);
        counts[s == QN_ERR_FORMAT ? 0 : s == QN_ERR_VERSION ? 1 : 2]++;
    }
    memset(buf, 0xff, 64);
    assert_int_equal(decode_copy(buf, 64, 0), QN_ERR_FORMAT);
    print_message("garbage: %zu format, %zu version, %zu other\n", counts[0], counts[1],
                  counts[2]);
}

/* ------------------------------------------------------------ semantic rules
 * X(name, body, mutation, expected status, expected message fragment).
 * Mutations are single statements or ;-separated (no commas). */
#define MUTATIONS(X)                                                                          \
    X(result_logprobs_len, generate_result, e->generate_result->n_output_logprobs = 2,       \
      QN_ERR_FORMAT, "GenerateResult.output_logprobs: 2 entries for 3 output_ids")            \
    X(result_versions_len, generate_result, e->generate_result->n_weight_versions = 4,       \
      QN_ERR_FORMAT, "GenerateResult.weight_versions: 4 entries for 3 output_ids")            \
    X(result_arrays_empty_ok, generate_result,                                                \
      e->generate_result->n_output_logprobs = 0; e->generate_result->n_weight_versions = 0,  \
      QN_OK, "")                                                                              \
    X(result_negative_token, generate_result, e->generate_result->output_ids[1] = -5,        \
      QN_ERR_RANGE, "GenerateResult.output_ids[1]: token id -5 is negative")                  \
    X(result_nan_logprob, generate_result, e->generate_result->output_logprobs[0] = NAN,     \
      QN_ERR_RANGE, "GenerateResult.output_logprobs[0]: log-prob")                            \
    X(result_positive_logprob, generate_result,                                               \
      e->generate_result->output_logprobs[2] = 0.5f, QN_ERR_RANGE,                            \
      "GenerateResult.output_logprobs[2]: log-prob 0.5")                                      \
    X(result_no_finish, generate_result,                                                      \
      e->generate_result->finish_reason = 0; e->generate_result->error = "", QN_ERR_FORMAT,  \
      "GenerateResult.finish_reason: is unspecified")                                         \
    X(result_partial_no_finish_ok, generate_result,                                           \
      e->generate_result->finish_reason = 0; e->generate_result->error = "";                 \
      e->generate_result->partial = 1, QN_OK, "")                                             \
    X(result_partial_error, generate_result,                                                  \
      e->generate_result->partial = 1; e->generate_result->error = "boom", QN_ERR_FORMAT,    \
      "GenerateResult.error: set in a partial")                                               \
    X(result_unknown_finish, generate_result,                                                 \
      e->generate_result->finish_reason = (Quench__FinishReason)99, QN_ERR_RANGE,             \
      "GenerateResult.finish_reason: unknown quench.FinishReason value 99")                   \
    X(result_cached, generate_result, e->generate_result->cached_tokens = 5, QN_ERR_RANGE,   \
      "GenerateResult.cached_tokens: 5 exceeds prompt_tokens 4")                              \
    X(result_latency, generate_result, e->generate_result->latency_s = -1.0, QN_ERR_RANGE,   \
      "GenerateResult.latency_s")                                                             \
    X(request_no_input, generate_request, e->generate_request->n_input_ids = 0,              \
      QN_ERR_FORMAT, "GenerateRequest.input_ids: is empty")                                   \
    X(request_negative_input, generate_request, e->generate_request->input_ids[3] = -1,      \
      QN_ERR_RANGE, "GenerateRequest.input_ids[3]: token id -1")                              \
    X(request_prefix_versions, generate_request,                                              \
      e->generate_request->n_prefix_weight_versions = 2, QN_ERR_FORMAT,                       \
      "GenerateRequest.prefix_weight_versions: 2 entries for 3 prefix_output_ids")            \
    X(request_prefix_logprob_inf, generate_request,                                           \
      e->generate_request->prefix_output_logprobs[1] = -INFINITY, QN_ERR_RANGE,               \
      "GenerateRequest.prefix_output_logprobs[1]")                                            \
    X(request_top_p, generate_request, e->generate_request->params->top_p = 1.5f,            \
      QN_ERR_RANGE, "GenerateRequest.params.top_p: 1.5 is not in [0, 1]")                     \
    X(request_temperature_nan, generate_request,                                              \
      e->generate_request->params->temperature = NAN, QN_ERR_RANGE,                           \
      "GenerateRequest.params.temperature")                                                   \
    X(request_empty_stop, generate_request, e->generate_request->params->stop[1] = "",       \
      QN_ERR_FORMAT, "GenerateRequest.params.stop[1]: is empty")                              \
    X(request_negative_stop_id, generate_request,                                             \
      e->generate_request->params->stop_token_ids[0] = -2, QN_ERR_RANGE,                      \
      "GenerateRequest.params.stop_token_ids[0]: token id -2")                                \
    X(request_no_params_ok, generate_request, e->generate_request->params = NULL, QN_OK, "") \
    X(batch_response_start_past_end, train_batch,                                             \
      e->train_batch->samples[0]->response_start = 7, QN_ERR_RANGE,                           \
      "TrainBatch.samples[0].response_start: 7 is not in [1, 6]")                             \
    X(batch_response_start_zero, train_batch, e->train_batch->samples[1]->response_start = 0,\
      QN_ERR_RANGE, "TrainBatch.samples[1].response_start: 0 is not in [1, 3]")               \
    X(batch_logprobs_len, train_batch, e->train_batch->samples[0]->n_rollout_logprobs = 1,   \
      QN_ERR_FORMAT,                                                                          \
      "TrainBatch.samples[0].rollout_logprobs: 1 entries for 2 response tokens")              \
    X(batch_logprobs_len_after_start_change, train_batch,                                     \
      e->train_batch->samples[0]->response_start = 3, QN_ERR_FORMAT,                          \
      "TrainBatch.samples[0].rollout_logprobs: 2 entries for 3 response tokens")              \
    X(batch_mask_len, train_batch, e->train_batch->samples[0]->n_loss_mask = 1,              \
      QN_ERR_FORMAT, "TrainBatch.samples[0].loss_mask: 1 entries for 2 response tokens")      \
    X(batch_mask_value, train_batch, e->train_batch->samples[0]->loss_mask[1] = 2,           \
      QN_ERR_RANGE, "TrainBatch.samples[0].loss_mask[1]: 2 is not 0 or 1")                    \
    X(batch_negative_token, train_batch, e->train_batch->samples[0]->tokens[2] = -3,         \
      QN_ERR_RANGE, "TrainBatch.samples[0].tokens[2]: token id -3")                           \
    X(batch_advantage_inf, train_batch, e->train_batch->samples[1]->advantage = INFINITY,    \
      QN_ERR_RANGE, "TrainBatch.samples[1].advantage: inf is not finite")                     \
    X(batch_rank, train_batch, e->train_batch->rank = 2, QN_ERR_RANGE,                       \
      "TrainBatch.rank: 2 is not below world_size 2")                                         \
    X(batch_request_world, train_batch_request, e->train_batch_request->world_size = 0,      \
      QN_ERR_RANGE, "TrainBatchRequest.world_size: is 0")                                     \
    X(chunk_checksum, weight_chunk, g_chunk_data[17] ^= 0x01, QN_ERR_FORMAT,                 \
      "WeightChunk.checksum: ")                                                               \
    X(chunk_refused_with_data, weight_chunk, e->weight_chunk->error = "version 4 is gone",   \
      QN_ERR_FORMAT, "WeightChunk.data: 48 bytes in a refused chunk")                         \
    X(chunk_refused_ok, weight_chunk,                                                         \
      e->weight_chunk->error = "version 4 is gone"; e->weight_chunk->data.len = 0, QN_OK, "")\
    X(chunk_empty, weight_chunk, e->weight_chunk->data.len = 0, QN_ERR_FORMAT,               \
      "WeightChunk.data: is empty")                                                           \
    X(chunk_request_zero, weight_chunk_request, e->weight_chunk_request->length = 0,         \
      QN_ERR_RANGE, "WeightChunkRequest.length: is 0")                                        \
    X(chunk_request_huge, weight_chunk_request,                                               \
      e->weight_chunk_request->length = (1u << 25) + 1, QN_ERR_RANGE,                         \
      "WeightChunkRequest.length: 33554433 bytes exceeds the chunk limit")                    \
    X(manifest_missing, weight_update_begin, e->weight_update_begin->manifest = NULL,        \
      QN_ERR_FORMAT, "WeightUpdateBegin.manifest: is missing")                                \
    X(manifest_nbytes, weight_update_begin,                                                   \
      e->weight_update_begin->manifest->tensors[1]->nbytes = 16, QN_ERR_FORMAT,               \
      "WeightUpdateBegin.manifest.tensors[1].nbytes: 16 but shape and dtype give 32")         \
    X(manifest_overlap, weight_update_begin,                                                  \
      e->weight_update_begin->manifest->tensors[1]->offset = 60, QN_ERR_FORMAT,               \
      "WeightUpdateBegin.manifest.tensors[1].offset: 60 overlaps")                            \
    X(manifest_past_total, weight_update_begin,                                               \
      e->weight_update_begin->manifest->total_bytes = 90, QN_ERR_RANGE,                       \
      "WeightUpdateBegin.manifest.tensors[1].offset: [64, +32) is past total_bytes 90")       \
    X(manifest_duplicate, weight_update_begin,                                                \
      e->weight_update_begin->manifest->tensors[1]->name = "model.embed_tokens.weight";      \
      e->weight_update_begin->manifest->tensors[1]->dtype = QUENCH__DTYPE__DTYPE_BF16;        \
      e->weight_update_begin->manifest->tensors[1]->nbytes = 16, QN_ERR_FORMAT,               \
      "WeightUpdateBegin.manifest.tensors: name 'model.embed_tokens.weight' appears more")    \
    X(manifest_unknown_dtype, weight_update_begin,                                            \
      e->weight_update_begin->manifest->tensors[0]->dtype = (Quench__DType)42, QN_ERR_RANGE,  \
      "WeightUpdateBegin.manifest.tensors[0].dtype: unknown quench.DType value 42")           \
    X(manifest_unspecified_dtype, weight_update_begin,                                        \
      e->weight_update_begin->manifest->tensors[0]->dtype = 0, QN_ERR_FORMAT,                 \
      "WeightUpdateBegin.manifest.tensors[0].dtype: is unspecified")                          \
    X(manifest_empty_name, weight_update_begin,                                               \
      e->weight_update_begin->manifest->tensors[0]->name = "", QN_ERR_FORMAT,                 \
      "WeightUpdateBegin.manifest.tensors[0].name: is empty")                                 \
    X(manifest_transport, weight_update_begin,                                                \
      e->weight_update_begin->manifest->transport = 0, QN_ERR_FORMAT,                         \
      "WeightUpdateBegin.manifest.transport: is unspecified")                                 \
    X(manifest_endpoint, weight_update_begin,                                                 \
      e->weight_update_begin->manifest->server_endpoint = "", QN_ERR_FORMAT,                  \
      "WeightUpdateBegin.manifest.server_endpoint: is empty")                                 \
    X(manifest_chunk_bytes, weight_update_begin,                                              \
      e->weight_update_begin->manifest->chunk_bytes = 0, QN_ERR_RANGE,                        \
      "WeightUpdateBegin.manifest.chunk_bytes: 0 is not in")                                  \
    X(manifest_nccl_bucket, weight_update_begin,                                              \
      e->weight_update_begin->manifest->transport =                                           \
          QUENCH__WEIGHT_TRANSPORT__WEIGHT_TRANSPORT_NCCL_BROADCAST;                          \
      e->weight_update_begin->manifest->bucket_bytes = 0, QN_ERR_RANGE,                       \
      "WeightUpdateBegin.manifest.bucket_bytes: is 0")                                        \
    X(ack_no_error, weight_update_ack,                                                        \
      e->weight_update_ack->ok = 0; e->weight_update_ack->error = "", QN_ERR_FORMAT,         \
      "WeightUpdateAck.error: is empty although ok is false")                                 \
    X(ack_phase, weight_update_ack, e->weight_update_ack->phase = 0, QN_ERR_FORMAT,          \
      "WeightUpdateAck.phase: is unspecified")                                                \
    X(ack_engine, weight_update_ack, e->weight_update_ack->engine_id = "", QN_ERR_FORMAT,    \
      "WeightUpdateAck.engine_id: is empty")                                                  \
    X(status_no_error, weight_update_status, e->weight_update_status->error = "",            \
      QN_ERR_FORMAT, "WeightUpdateStatus.error: is empty although ok is false")               \
    X(register_missing_engine, register, e->register_->engine = NULL, QN_ERR_FORMAT,         \
      "Register.engine: is missing")                                                          \
    X(register_endpoint, register, e->register_->engine->endpoint = "", QN_ERR_FORMAT,       \
      "Register.engine.endpoint: is empty")                                                   \
    X(register_capacity, register, e->register_->engine->max_running_requests = 0,           \
      QN_ERR_RANGE, "Register.engine.max_running_requests: is 0")                             \
    X(register_ack_version, register_ack, e->register_ack->weight_version = 4,               \
      QN_ERR_FORMAT, "RegisterAck.manifest.version: 5 but weight_version is 4")               \
    X(register_ack_bad_manifest, register_ack,                                                \
      e->register_ack->manifest->tensors[0]->nbytes = 1, QN_ERR_FORMAT,                       \
      "RegisterAck.manifest.tensors[0].nbytes")                                               \
    X(register_ack_rejected, register_ack,                                                    \
      e->register_ack->accepted = 0; e->register_ack->error = "", QN_ERR_FORMAT,             \
      "RegisterAck.error: is empty")                                                          \
    X(heartbeat_engine, heartbeat, e->heartbeat->engine_id = "", QN_ERR_FORMAT,              \
      "Heartbeat.engine_id: is empty")                                                        \
    X(heartbeat_bad_utf8, heartbeat, e->heartbeat->engine_id = "eng\xff", QN_ERR_FORMAT,     \
      "Heartbeat.engine_id: invalid UTF-8 at byte 3")                                         \
    X(heartbeat_overlong_utf8, heartbeat, e->heartbeat->engine_id = "\xc0\xaf", QN_ERR_FORMAT,\
      "Heartbeat.engine_id: invalid UTF-8 at byte 0")                                         \
    X(heartbeat_surrogate_utf8, heartbeat, e->heartbeat->engine_id = "a\xed\xa0\x80",        \
      QN_ERR_FORMAT, "Heartbeat.engine_id: invalid UTF-8 at byte 1")                          \
    X(heartbeat_truncated_utf8, heartbeat, e->heartbeat->engine_id = "ab\xe2\x82",           \
      QN_ERR_FORMAT, "Heartbeat.engine_id: invalid UTF-8 at byte 2")                          \
    X(drain_engine, drain, e->drain->engine_id = "", QN_ERR_FORMAT,                          \
      "Drain.engine_id: is empty")                                                            \
    X(metrics_name, metrics, e->metrics->metrics[1]->name = "", QN_ERR_FORMAT,               \
      "MetricsReport.metrics[1].name: is empty")                                              \
    X(metrics_source, metrics, e->metrics->source = "", QN_ERR_FORMAT,                       \
      "MetricsReport.source: is empty")                                                       \
    X(group_sample_group, group, e->group->samples[0]->group_id = 41, QN_ERR_FORMAT,         \
      "Group.samples[0].group_id: 41 in group 42")                                            \
    X(group_versions_len, group, e->group->samples[1]->n_weight_versions = 1, QN_ERR_FORMAT, \
      "Group.samples[1].weight_versions: 1 entries for 2 response_tokens")                    \
    X(group_mask_len, group, e->group->samples[0]->n_loss_mask = 2, QN_ERR_FORMAT,           \
      "Group.samples[0].loss_mask: 2 entries for 3 response_tokens")                          \
    X(group_reward_nan, group, e->group->samples[0]->reward = NAN, QN_ERR_RANGE,             \
      "Group.samples[0].reward: nan is not finite")                                           \
    X(group_failed_reward_nan_ok, group, e->group->samples[1]->reward_status = "crashed",    \
      QN_OK, "")                                                                              \
    X(group_negative_response, group, e->group->samples[1]->response_tokens[0] = -9,         \
      QN_ERR_RANGE, "Group.samples[1].response_tokens[0]: token id -9")                       \
    X(group_finish_unknown, group,                                                            \
      e->group->samples[1]->finish_reason = (Quench__FinishReason)4, QN_ERR_RANGE,            \
      "Group.samples[1].finish_reason: unknown")                                              \
    X(group_text_utf8, group, e->group->samples[1]->response_text = "\xf8\x88\x80\x80\x80",  \
      QN_ERR_FORMAT, "Group.samples[1].response_text: invalid UTF-8")                         \
    X(group_prompt_missing, group, e->group->prompt = NULL, QN_ERR_FORMAT,                   \
      "Group.prompt: is missing")                                                             \
    X(group_prompt_empty, group, e->group->prompt->n_tokens = 0, QN_ERR_FORMAT,              \
      "Group.prompt.tokens: is empty")                                                        \
    X(prompt_empty, prompt, e->prompt->n_tokens = 0, QN_ERR_FORMAT,                          \
      "Prompt.tokens: is empty")                                                              \
    X(prompt_negative, prompt, e->prompt->tokens[0] = -1, QN_ERR_RANGE,                      \
      "Prompt.tokens[0]: token id -1")                                                        \
    X(error_status, error, e->error->status = 0, QN_ERR_RANGE,                               \
      "Error.status: 0 is not an error status")                                               \
    X(error_message, error, e->error->message = "", QN_ERR_FORMAT, "Error.message: is empty")\
    X(abort_empty, abort_request, e->abort_request->n_request_ids = 0, QN_ERR_FORMAT,        \
      "AbortRequest.request_ids: is empty")

#define MUT_FN_(name, body, stmt, st, msg) \
    static void mut_##name(Quench__Envelope *e) { stmt; }
MUTATIONS(MUT_FN_)
#undef MUT_FN_

typedef struct mutation {
    const char *name;
    Quench__Envelope (*build)(void);
    void (*mutate)(Quench__Envelope *);
    qn_status expect;
    const char *message;
} mutation;

#define MUT_ROW_(name, body, stmt, st, msg) {#name, build_##body, mut_##name, st, msg},
static const mutation k_mutations[] = {MUTATIONS(MUT_ROW_)};
#undef MUT_ROW_

static void check_rejection(const mutation *m, const char *how, qn_status got) {
    if (got != m->expect)
        fail_msg("%s (%s): got %s (%s), expected %s", m->name, how, qn_status_name(got),
                 qn_last_error(), qn_status_name(m->expect));
    if (m->expect != QN_OK && !strstr(qn_last_error(), m->message))
        fail_msg("%s (%s): message '%s' lacks '%s'", m->name, how, qn_last_error(), m->message);
}

static void test_semantic_rules(void **state) {
    size_t n = sizeof k_mutations / sizeof k_mutations[0];
    for (size_t i = 0; i < n; i++) {
        const mutation *m = &k_mutations[i];
        /* the unmutated body is valid, so the rule alone makes the difference */
        Quench__Envelope env = m->build();
        env.protocol_version = QN_PROTOCOL_VERSION;
        qn_clear_error();
        assert_int_equal(qn_envelope_validate(&env), QN_OK);

        env = m->build();
        m->mutate(&env);
        env.protocol_version = QN_PROTOCOL_VERSION;
        qn_clear_error();
        check_rejection(m, "validate", qn_envelope_validate(&env));

        /* the sender refuses to encode it */
        uint8_t *out = NULL;
        size_t len;
        qn_clear_error();
        check_rejection(m, "encode", qn_envelope_encode_alloc(&env, 9, "s", &out, &len));
        free(out);

        /* and a receiver refuses it when a peer packs it anyway */
        uint8_t *raw = pack_raw(&env, &len);
        qn_clear_error();
        check_rejection(m, "decode", decode_copy(raw, len, 0));
        free(raw);
    }
    print_message("semantic rules: %zu cases\n", n);
}

/* ------------------------------------------------------------ checksum */

static void test_xxh64_vectors(void **state) {
    /* Published XXH64 values (seed 0) and, for the longer and seeded inputs,
     * the reference implementation's output (xxhsum 0.8.1 / libxxhash). */
    static const struct {
        const char *s;
        uint64_t h;
    } v[] = {
        {"", 0xEF46DB3751D8E999ull},
        {"a", 0xD24EC4F1A98C6E5Bull},
        {"abc", 0x44BC2CF5AD770999ull},
        {"hello", 0x26C7827D889F6DA3ull},
        {"Nobody inspects the spammish repetition", 0xFBCEA83C8A378BF1ull},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint64_t h = qn_checksum64(v[i].s, strlen(v[i].s));
        if (h != v[i].h)
            fail_msg("XXH64(\"%s\") = %016llx, expected %016llx", v[i].s, (unsigned long long)h,
                     (unsigned long long)v[i].h);
    }
    assert_true(qn_checksum64(NULL, 0) == 0xEF46DB3751D8E999ull);
    /* 1000 bytes (i*31+7) mod 256: every stripe/tail path; also unaligned */
    uint8_t *buf = malloc(1001);
    for (size_t i = 0; i < 1000; i++) buf[i + 1] = (uint8_t)(i * 31 + 7);
    assert_true(qn_checksum64(buf + 1, 1000) == 0x99594F4828043D35ull);
    assert_true(qn_xxh64(buf + 1, 1000, 0x9E3779B97F4A7C15ull) == 0xDA717F741F399F3Full);
    assert_true(qn_xxh64("abc", 3, 1) == 0xBEA9CA8199328908ull);
    assert_true(qn_xxh64("", 0, 1) == 0xD5AFBA1336A3BE4Bull);
    /* one flipped bit changes the value */
    buf[500] ^= 0x10;
    assert_true(qn_checksum64(buf + 1, 1000) != 0x99594F4828043D35ull);
    free(buf);
}

/* ------------------------------------------------------------ seed corpus */

static void test_seed_corpus(void **state) {
    /* Each body's encoding is a seed of tests/fuzz/corpus/envelope. With
     * QN_WRITE_SEEDS=<dir> they are (re)written there; otherwise the
     * committed ones must still decode to the right body. */
    const char *write_dir = getenv("QN_WRITE_SEEDS");
    for (size_t k = 0; k < N_BODIES; k++) {
        char path[1024];
        if (write_dir) {
            Quench__Envelope env = k_bodies[k].build();
            uint8_t *buf;
            size_t len;
            assert_int_equal(qn_envelope_encode_alloc(&env, 100 + k, "seed", &buf, &len), QN_OK);
            snprintf(path, sizeof path, "%s/%s.pb", write_dir, k_bodies[k].suffix);
            qn_test_write_file(path, buf, len);
            free(buf);
        }
        snprintf(path, sizeof path, "%s/tests/fuzz/corpus/envelope/%s.pb", QN_SOURCE_DIR,
                 k_bodies[k].suffix);
        FILE *f = fopen(path, "rb");
        if (!f)
            fail_msg("missing seed %s: regenerate the corpus with "
                     "QN_WRITE_SEEDS=tests/fuzz/corpus/envelope <build>/tests/test_codec",
                     path);
        fclose(f);
        size_t len;
        char *data = qn_test_read_file(path, &len);
        Quench__Envelope *env = NULL;
        qn_status s = qn_envelope_decode((const uint8_t *)data, len, 0, &env);
        if (s != QN_OK)
            fail_msg("seed %s no longer decodes (%s); regenerate with QN_WRITE_SEEDS", path,
                     qn_last_error());
        assert_int_equal(env->body_case, k_bodies[k].body_case);
        qn_envelope_free(env);
        free(data);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_body_has_a_case),
        cmocka_unit_test(test_round_trip_every_body),
        cmocka_unit_test(test_round_trip_fields),
        cmocka_unit_test(test_compare_can_fail),
        cmocka_unit_test(test_every_prefix_rejected),
        cmocka_unit_test(test_oversized_refused_before_reading),
        cmocka_unit_test(test_encode_limits),
        cmocka_unit_test(test_large_message_within_budget),
        cmocka_unit_test(test_memory_flood_refused),
        cmocka_unit_test(test_wrong_version),
        cmocka_unit_test(test_missing_body),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_semantic_rules),
        cmocka_unit_test(test_xxh64_vectors),
        cmocka_unit_test(test_seed_corpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
