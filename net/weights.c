/* weights.c — see weights.h. The server thread owns its ROUTER socket;
 * publish() only swaps blobs under a mutex, so the trainer never waits for
 * engines. */
#include "net/weights.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

#include "core/log.h"
#include "net/checksum.h"
#include "net/zchan.h"

#define KEEP_VERSIONS 2

typedef struct blob {
    uint64_t version;
    uint8_t *data;
    uint64_t size;
} blob;

struct qn_weight_server {
    void *sock;
    char advertise[256];
    uint32_t chunk_bytes;
    pthread_t thread;
    atomic_int stop;
    pthread_mutex_t mu;
    blob blobs[KEEP_VERSIONS]; /* [0] newest */
    atomic_uint_fast64_t served;
};

/* ------------------------------------------------------------ dtypes */

qn_status qn_dtype_from_proto(Quench__DType d, qn_dtype *out) {
    switch (d) {
    case QUENCH__DTYPE__DTYPE_F32: *out = QN_DTYPE_F32; return QN_OK;
    case QUENCH__DTYPE__DTYPE_BF16: *out = QN_DTYPE_BF16; return QN_OK;
    case QUENCH__DTYPE__DTYPE_F16: *out = QN_DTYPE_F16; return QN_OK;
    case QUENCH__DTYPE__DTYPE_F8_E4M3: *out = QN_DTYPE_F8_E4M3; return QN_OK;
    case QUENCH__DTYPE__DTYPE_F64: *out = QN_DTYPE_F64; return QN_OK;
    case QUENCH__DTYPE__DTYPE_I64: *out = QN_DTYPE_I64; return QN_OK;
    case QUENCH__DTYPE__DTYPE_I32: *out = QN_DTYPE_I32; return QN_OK;
    case QUENCH__DTYPE__DTYPE_U8: *out = QN_DTYPE_U8; return QN_OK;
    default: return qn_fail(QN_ERR_FORMAT, "unknown wire dtype %d", (int)d);
    }
}

Quench__DType qn_dtype_to_proto(qn_dtype d) {
    switch (d) {
    case QN_DTYPE_F32: return QUENCH__DTYPE__DTYPE_F32;
    case QN_DTYPE_BF16: return QUENCH__DTYPE__DTYPE_BF16;
    case QN_DTYPE_F16: return QUENCH__DTYPE__DTYPE_F16;
    case QN_DTYPE_F8_E4M3: return QUENCH__DTYPE__DTYPE_F8_E4M3;
    case QN_DTYPE_F64: return QUENCH__DTYPE__DTYPE_F64;
    case QN_DTYPE_I64: return QUENCH__DTYPE__DTYPE_I64;
    case QN_DTYPE_I32: return QUENCH__DTYPE__DTYPE_I32;
    case QN_DTYPE_U8: return QUENCH__DTYPE__DTYPE_U8;
    }
    return QUENCH__DTYPE__DTYPE_UNSPECIFIED;
}

/* ------------------------------------------------------------ manifests */

void qn_weight_manifest_free(Quench__WeightManifest *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_tensors; i++) {
        if (!m->tensors[i]) continue;
        free(m->tensors[i]->name);
        free(m->tensors[i]->shape);
        free(m->tensors[i]);
    }
    free(m->tensors);
    free(m->server_endpoint);
    free(m);
}

static char *dup_str(const char *s) {
    size_t n = strlen(s ? s : "");
    char *d = malloc(n + 1);
    if (d) memcpy(d, s ? s : "", n + 1);
    return d;
}

qn_status qn_weight_manifest_copy(const Quench__WeightManifest *m, Quench__WeightManifest **out) {
    *out = NULL;
    Quench__WeightManifest *c = malloc(sizeof *c);
    if (!c) return qn_fail(QN_ERR_NOMEM, "weight manifest: out of memory");
    quench__weight_manifest__init(c);
    c->version = m->version;
    c->total_bytes = m->total_bytes;
    c->chunk_bytes = m->chunk_bytes;
    c->transport = m->transport;
    c->bucket_bytes = m->bucket_bytes;
    c->server_endpoint = dup_str(m->server_endpoint);
    c->tensors = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *c->tensors);
    if (!c->server_endpoint || !c->tensors) goto oom;
    c->n_tensors = m->n_tensors;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const Quench__TensorInfo *s = m->tensors[i];
        Quench__TensorInfo *t = malloc(sizeof *t);
        if (!t) goto oom;
        quench__tensor_info__init(t);
        c->tensors[i] = t;
        t->name = dup_str(s->name);
        t->shape = malloc((s->n_shape ? s->n_shape : 1) * sizeof *t->shape);
        if (!t->name || !t->shape) goto oom;
        memcpy(t->shape, s->shape, s->n_shape * sizeof *t->shape);
        t->n_shape = s->n_shape;
        t->dtype = s->dtype;
        t->offset = s->offset;
        t->nbytes = s->nbytes;
        t->checksum = s->checksum;
    }
    *out = c;
    return QN_OK;
oom:
    qn_weight_manifest_free(c);
    return qn_fail(QN_ERR_NOMEM, "weight manifest: out of memory");
}

const Quench__TensorInfo *qn_weight_manifest_find(const Quench__WeightManifest *m, const char *name) {
    for (size_t i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i]->name, name) == 0) return m->tensors[i];
    return NULL;
}

/* ------------------------------------------------------------ server */

static void reply_chunk(qn_weight_server *s, const qn_zmsg *req) {
    const Quench__WeightChunkRequest *r = req->env->weight_chunk_request;
    Quench__WeightChunk ch = QUENCH__WEIGHT_CHUNK__INIT;
    ch.version = r->version;
    ch.offset = r->offset;
    char err[256] = "";
    pthread_mutex_lock(&s->mu);
    const blob *b = NULL;
    for (int i = 0; i < KEEP_VERSIONS; i++)
        if (s->blobs[i].data && s->blobs[i].version == r->version) b = &s->blobs[i];
    if (!b) {
        snprintf(err, sizeof err, "weight version %llu is gone (the server has %llu)",
                 (unsigned long long)r->version, (unsigned long long)s->blobs[0].version);
    } else if (r->offset > b->size || r->length > b->size - r->offset) {
        snprintf(err, sizeof err, "chunk [%llu, +%u) is outside version %llu (%llu bytes)",
                 (unsigned long long)r->offset, r->length, (unsigned long long)r->version,
                 (unsigned long long)b->size);
    } else {
        ch.data.data = b->data + r->offset;
        ch.data.len = r->length;
        ch.checksum = qn_checksum64(ch.data.data, ch.data.len);
    }
    if (err[0]) ch.error = err;
    Quench__Envelope env = qn_envelope_weight_chunk(&ch);
    /* encoding copies the bytes, so the lock covers only this */
    qn_status st = qn_zsend(s->sock, req->identity, req->identity_len, &env, req->env->request_id,
                            "weights");
    pthread_mutex_unlock(&s->mu);
    if (st != QN_OK) QN_LOG_WARN("weight server: reply to '%s' failed: %s", req->identity, qn_last_error());
    else if (!err[0]) atomic_fetch_add(&s->served, 1);
}

static void *serve(void *arg) {
    qn_weight_server *s = arg;
    while (!atomic_load(&s->stop)) {
        qn_zmsg m;
        qn_status st = qn_zrecv(s->sock, true, 100, &m);
        if (st == QN_ERR_TIMEOUT) continue;
        if (st != QN_OK) {
            QN_LOG_WARN("weight server: dropped a bad message: %s", qn_last_error());
            qn_zmsg_clear(&m);
            continue;
        }
        if (m.env->body_case == QUENCH__ENVELOPE__BODY_WEIGHT_CHUNK_REQUEST) {
            reply_chunk(s, &m);
        } else {
            QN_LOG_WARN("weight server: '%s' sent a %s, not a WeightChunkRequest", m.identity,
                        qn_envelope_body_name(m.env->body_case));
        }
        qn_zmsg_clear(&m);
    }
    return NULL;
}

qn_status qn_weight_server_start(void *zmq_ctx, const char *endpoint, const char *advertise,
                                 uint32_t chunk_bytes, qn_weight_server **out) {
    *out = NULL;
    if (chunk_bytes == 0) chunk_bytes = 4u << 20;
    if (chunk_bytes > QN_MAX_WEIGHT_CHUNK_BYTES)
        return qn_fail(QN_ERR_RANGE, "weight server: chunk size %u is over the %zu-byte limit",
                       chunk_bytes, QN_MAX_WEIGHT_CHUNK_BYTES);
    qn_weight_server *s = calloc(1, sizeof *s);
    if (!s) return qn_fail(QN_ERR_NOMEM, "weight server: out of memory");
    s->chunk_bytes = chunk_bytes;
    pthread_mutex_init(&s->mu, NULL);
    qn_status st = qn_zsock_open(zmq_ctx, ZMQ_ROUTER, endpoint, true, NULL, &s->sock);
    if (st == QN_OK && advertise && *advertise) {
        snprintf(s->advertise, sizeof s->advertise, "%s", advertise);
    } else if (st == QN_OK) {
        st = qn_zsock_endpoint(s->sock, s->advertise, sizeof s->advertise);
    }
    if (st == QN_OK && pthread_create(&s->thread, NULL, serve, s) != 0)
        st = qn_fail(QN_ERR_INTERNAL, "weight server: cannot start its thread");
    if (st != QN_OK) {
        qn_zsock_close(s->sock);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return st;
    }
    *out = s;
    return QN_OK;
}

qn_status qn_weight_server_publish(qn_weight_server *s, uint64_t version,
                                   const qn_weight_tensor *tensors, size_t n,
                                   Quench__WeightManifest **manifest) {
    *manifest = NULL;
    if (s->blobs[0].data && version <= s->blobs[0].version)
        return qn_fail(QN_ERR_RANGE, "weight server: version %llu is not newer than %llu",
                       (unsigned long long)version, (unsigned long long)s->blobs[0].version);
    Quench__WeightManifest *m = malloc(sizeof *m);
    if (!m) return qn_fail(QN_ERR_NOMEM, "weight server: out of memory");
    quench__weight_manifest__init(m);
    m->tensors = calloc(n ? n : 1, sizeof *m->tensors);
    m->server_endpoint = dup_str(s->advertise);
    if (!m->tensors || !m->server_endpoint) {
        qn_weight_manifest_free(m);
        return qn_fail(QN_ERR_NOMEM, "weight server: out of memory");
    }
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const qn_weight_tensor *t = &tensors[i];
        if (t->ndim < 0 || t->ndim > 8) {
            qn_weight_manifest_free(m);
            return qn_fail(QN_ERR_INVALID, "weight server: tensor '%s' has %d dims", t->name, t->ndim);
        }
        uint64_t nb = qn_dtype_size(t->dtype);
        for (int k = 0; k < t->ndim; k++) nb *= (uint64_t)t->shape[k];
        Quench__TensorInfo *ti = malloc(sizeof *ti);
        if (!ti) {
            qn_weight_manifest_free(m);
            return qn_fail(QN_ERR_NOMEM, "weight server: out of memory");
        }
        quench__tensor_info__init(ti);
        m->tensors[m->n_tensors++] = ti;
        ti->name = dup_str(t->name);
        ti->shape = malloc((t->ndim ? (size_t)t->ndim : 1) * sizeof *ti->shape);
        if (!ti->name || !ti->shape) {
            qn_weight_manifest_free(m);
            return qn_fail(QN_ERR_NOMEM, "weight server: out of memory");
        }
        for (int k = 0; k < t->ndim; k++) ti->shape[k] = (uint64_t)t->shape[k];
        ti->n_shape = (size_t)t->ndim;
        ti->dtype = qn_dtype_to_proto(t->dtype);
        ti->offset = total;
        ti->nbytes = nb;
        ti->checksum = qn_checksum64(t->data, nb);
        total += nb;
    }
    uint8_t *data = malloc(total ? total : 1);
    if (!data) {
        qn_weight_manifest_free(m);
        return qn_fail(QN_ERR_NOMEM, "weight server: cannot snapshot %llu bytes of weights",
                       (unsigned long long)total);
    }
    for (size_t i = 0; i < n; i++) memcpy(data + m->tensors[i]->offset, tensors[i].data, m->tensors[i]->nbytes);
    m->version = version;
    m->total_bytes = total;
    m->chunk_bytes = s->chunk_bytes;
    m->transport = QUENCH__WEIGHT_TRANSPORT__WEIGHT_TRANSPORT_ZMQ_PULL;

    pthread_mutex_lock(&s->mu);
    free(s->blobs[KEEP_VERSIONS - 1].data);
    memmove(&s->blobs[1], &s->blobs[0], (KEEP_VERSIONS - 1) * sizeof s->blobs[0]);
    s->blobs[0] = (blob){.version = version, .data = data, .size = total};
    pthread_mutex_unlock(&s->mu);
    *manifest = m;
    return QN_OK;
}

uint64_t qn_weight_server_chunks_served(const qn_weight_server *s) {
    return atomic_load(&((qn_weight_server *)s)->served);
}

void qn_weight_server_stop(qn_weight_server *s) {
    if (!s) return;
    atomic_store(&s->stop, 1);
    pthread_join(s->thread, NULL);
    qn_zsock_close(s->sock);
    for (int i = 0; i < KEEP_VERSIONS; i++) free(s->blobs[i].data);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ------------------------------------------------------------ client */

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

enum { CH_PENDING, CH_INFLIGHT, CH_DONE };

qn_status qn_weight_pull(void *zmq_ctx, const Quench__WeightManifest *m, uint8_t *dest,
                         const qn_weight_pull_opts *opts) {
    qn_weight_pull_opts o = opts ? *opts : (qn_weight_pull_opts){0};
    if (!o.window) o.window = 8;
    if (!o.chunk_timeout_ms) o.chunk_timeout_ms = 10000;
    if (!o.max_retries) o.max_retries = 3;
    if (!m->server_endpoint || !*m->server_endpoint)
        return qn_fail(QN_ERR_INVALID, "weight version %llu: the manifest names no server",
                       (unsigned long long)m->version);
    if (m->chunk_bytes == 0 || m->chunk_bytes > QN_MAX_WEIGHT_CHUNK_BYTES)
        return qn_fail(QN_ERR_RANGE, "weight version %llu: chunk size %u is out of range",
                       (unsigned long long)m->version, m->chunk_bytes);
    for (size_t i = 0; i < m->n_tensors; i++) {
        const Quench__TensorInfo *t = m->tensors[i];
        if (t->offset > m->total_bytes || t->nbytes > m->total_bytes - t->offset)
            return qn_fail(QN_ERR_RANGE, "weight version %llu: tensor '%s' lies outside the %llu-byte blob",
                           (unsigned long long)m->version, t->name, (unsigned long long)m->total_bytes);
    }
    uint64_t chunk = m->chunk_bytes;
    size_t n_chunks = (size_t)((m->total_bytes + chunk - 1) / chunk);
    uint8_t *state = calloc(n_chunks ? n_chunks : 1, 1);
    uint32_t *tries = calloc(n_chunks ? n_chunks : 1, sizeof *tries);
    uint64_t *sent_at = calloc(n_chunks ? n_chunks : 1, sizeof *sent_at);
    void *sock = NULL;
    qn_status st = QN_OK;
    if (!state || !tries || !sent_at) {
        st = qn_fail(QN_ERR_NOMEM, "weight pull: out of memory");
        goto done;
    }
    QN_CHECK_GOTO(qn_zsock_open(zmq_ctx, ZMQ_DEALER, m->server_endpoint, false, o.identity, &sock), st, done);

    size_t done_count = 0, next = 0, inflight = 0;
    while (done_count < n_chunks) {
        /* fill the window: new chunks first, then ones whose answer timed out */
        uint64_t now = now_ms();
        for (size_t c = 0; c < n_chunks; c++) {
            if (state[c] == CH_INFLIGHT && now - sent_at[c] > o.chunk_timeout_ms) {
                state[c] = CH_PENDING;
                inflight--;
            }
        }
        for (size_t i = 0; i < n_chunks && inflight < o.window; i++) {
            size_t c = (next + i) % n_chunks;
            if (state[c] != CH_PENDING) continue;
            if (tries[c] > o.max_retries) {
                st = qn_fail(QN_ERR_TIMEOUT,
                             "weight version %llu: chunk at offset %llu: no good answer from %s after %u tries",
                             (unsigned long long)m->version, (unsigned long long)(c * chunk),
                             m->server_endpoint, tries[c]);
                goto done;
            }
            Quench__WeightChunkRequest req = QUENCH__WEIGHT_CHUNK_REQUEST__INIT;
            req.version = m->version;
            req.offset = c * chunk;
            uint64_t left = m->total_bytes - req.offset;
            req.length = (uint32_t)(left < chunk ? left : chunk);
            Quench__Envelope env = qn_envelope_weight_chunk_request(&req);
            QN_CHECK_GOTO(qn_zsend(sock, NULL, 0, &env, c, o.identity), st, done);
            state[c] = CH_INFLIGHT;
            sent_at[c] = now;
            tries[c]++;
            inflight++;
        }
        next = (next + 1) % (n_chunks ? n_chunks : 1);

        qn_zmsg msg;
        qn_status rs = qn_zrecv(sock, false, 50, &msg);
        if (rs == QN_ERR_TIMEOUT) continue;
        if (rs != QN_OK) {
            /* a corrupted or malformed chunk: its request times out and is re-sent */
            QN_LOG_WARN("weight pull: ignoring a bad reply: %s", qn_last_error());
            qn_zmsg_clear(&msg);
            continue;
        }
        if (msg.env->body_case != QUENCH__ENVELOPE__BODY_WEIGHT_CHUNK) {
            qn_zmsg_clear(&msg);
            continue;
        }
        const Quench__WeightChunk *ch = msg.env->weight_chunk;
        if (ch->error && ch->error[0]) {
            st = qn_fail(QN_ERR_NOT_FOUND, "weight version %llu: server %s refused: %s",
                         (unsigned long long)m->version, m->server_endpoint, ch->error);
            qn_zmsg_clear(&msg);
            goto done;
        }
        size_t c = (size_t)(ch->offset / chunk);
        uint64_t want = m->total_bytes - c * chunk < chunk ? m->total_bytes - c * chunk : chunk;
        if (ch->version == m->version && ch->offset % chunk == 0 && c < n_chunks &&
            ch->data.len == want && state[c] != CH_DONE) {
            memcpy(dest + ch->offset, ch->data.data, ch->data.len);
            if (state[c] == CH_INFLIGHT) inflight--;
            state[c] = CH_DONE;
            done_count++;
        }
        qn_zmsg_clear(&msg);
    }
    for (size_t i = 0; i < m->n_tensors; i++) {
        const Quench__TensorInfo *t = m->tensors[i];
        if (qn_checksum64(dest + t->offset, t->nbytes) != t->checksum) {
            st = qn_fail(QN_ERR_FORMAT, "weight version %llu: tensor '%s' does not match its checksum",
                         (unsigned long long)m->version, t->name);
            goto done;
        }
    }
done:
    qn_zsock_close(sock);
    free(state);
    free(tries);
    free(sent_at);
    return st;
}
