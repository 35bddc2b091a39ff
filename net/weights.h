/* weights.h — moving a weight version from the trainer to rollout engines
 * over ZeroMQ (DESIGN.md, "Weight updates": the CPU path, late joiners and
 * engines outside the job's NCCL group).
 *
 * The trainer publishes version v: the server copies the tensors into one
 * contiguous blob (a stable snapshot: training may go on changing the live
 * weights) and returns the manifest — names, dtypes, shapes, offsets and an
 * XXH64 checksum per tensor — which the router hands to engines in
 * WeightUpdateBegin / RegisterAck. An engine pulls the blob in chunks with a
 * window of requests in flight, checks every chunk's checksum (the codec
 * does) and every tensor's checksum, retries chunks that time out, and only
 * then reports success: the caller applies a version completely or not at
 * all.
 *
 * The server keeps the two newest versions, so an engine that is still
 * pulling v when v+1 is published can finish; older versions are answered
 * with an error naming them as gone. */
#ifndef QN_NET_WEIGHTS_H
#define QN_NET_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "net/codec.h"
#include "quench/status.h"

typedef struct qn_weight_tensor {
    const char *name; /* Hugging Face name */
    qn_dtype dtype;
    int ndim;
    int64_t shape[8];
    const void *data; /* product(shape) * qn_dtype_size(dtype) bytes */
} qn_weight_tensor;

typedef struct qn_weight_server qn_weight_server;

/* Binds a ROUTER socket on `endpoint` ("tcp://0.0.0.0:5601", or
 * "tcp://127.0.0.1:*" for a free port) and starts the serving thread.
 * advertise (may be NULL) is the endpoint engines should connect to, put in
 * manifests; NULL uses the bound endpoint. chunk_bytes 0 means 4 MiB. */
qn_status qn_weight_server_start(void *zmq_ctx, const char *endpoint, const char *advertise,
                                 uint32_t chunk_bytes, qn_weight_server **out);

/* Snapshots `n` tensors as `version` (must be greater than every published
 * one) and returns its manifest in *manifest (owned by the caller: free with
 * qn_weight_manifest_free). */
qn_status qn_weight_server_publish(qn_weight_server *s, uint64_t version,
                                   const qn_weight_tensor *tensors, size_t n,
                                   Quench__WeightManifest **manifest);

/* Chunks served so far (for tests and metrics). */
uint64_t qn_weight_server_chunks_served(const qn_weight_server *s);

/* Stops the thread and frees everything; NULL is a no-op. */
void qn_weight_server_stop(qn_weight_server *s);

void qn_weight_manifest_free(Quench__WeightManifest *m);

/* Deep copy of a manifest (e.g. one inside a decoded envelope), so it can
 * outlive the envelope. */
qn_status qn_weight_manifest_copy(const Quench__WeightManifest *m, Quench__WeightManifest **out);

/* The manifest entry named `name`, or NULL. */
const Quench__TensorInfo *qn_weight_manifest_find(const Quench__WeightManifest *m, const char *name);

/* proto DType <-> qn_dtype. */
qn_status qn_dtype_from_proto(Quench__DType d, qn_dtype *out);
Quench__DType qn_dtype_to_proto(qn_dtype d);

typedef struct qn_weight_pull_opts {
    uint32_t window;          /* chunk requests in flight; 0: 8 */
    uint32_t chunk_timeout_ms; /* a chunk not answered in time is asked again; 0: 10000 */
    uint32_t max_retries;     /* per chunk; 0: 3 */
    const char *identity;     /* our name to the server (logs); may be NULL */
} qn_weight_pull_opts;

/* Pulls the whole version described by m into dest (m->total_bytes bytes,
 * caller-owned staging memory) from m->server_endpoint. QN_OK only when
 * every chunk arrived with a good checksum and every tensor's checksum
 * matches the manifest; otherwise an error naming the chunk or tensor, and
 * dest must be discarded. */
qn_status qn_weight_pull(void *zmq_ctx, const Quench__WeightManifest *m, uint8_t *dest,
                         const qn_weight_pull_opts *opts);

#endif
