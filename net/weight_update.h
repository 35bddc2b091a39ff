/* weight_update.h — the trainer's side of a weight update (docs/services.md,
 * "Weight updates"): publish a version on the trainer's weight server and
 * announce it to the router, then wait for the engines.
 *
 *   trainer -> router   WeightUpdateBegin{manifest of v}
 *   router  -> trainer  WeightUpdateStatus{v, READY}    engines paused
 *   router  -> trainer  WeightUpdateStatus{v, APPLIED}  engines serve v
 *
 * The weight server (net/weights.h) keeps serving chunks from its own thread
 * while we wait, so engines pull during the wait; it stays up until
 * qn_weight_publisher_stop, for engines that join later. A model's
 * parameters are published under their Hugging Face names in fp32, the form
 * `quench rollout` applies.
 *
 * Leaves out: the NCCL broadcast path (GPU; the manifest's transport field
 * leaves room for it), bucketing. */
#ifndef QN_NET_WEIGHT_UPDATE_H
#define QN_NET_WEIGHT_UPDATE_H

#include <stddef.h>
#include <stdint.h>

#include "core/model/model.h"
#include "net/weights.h"
#include "quench/status.h"

typedef struct qn_weight_publisher qn_weight_publisher;

/* Starts the weight server on `listen` ("tcp://127.0.0.1:*" picks a port;
 * advertise, may be NULL, is the endpoint engines are told) and connects a
 * DEALER named `identity` (e.g. "trainer") to the router at `router`. */
qn_status qn_weight_publisher_start(void *zmq_ctx, const char *router, const char *listen,
                                    const char *advertise, const char *identity,
                                    qn_weight_publisher **out);
void qn_weight_publisher_stop(qn_weight_publisher *p); /* NULL ok */

typedef struct qn_weight_update_report {
    uint64_t version;
    int ok;                   /* APPLIED with ok = true */
    uint32_t n_engines;       /* engines that reached APPLIED */
    uint32_t n_failed;        /* engines that failed (their ids in the log) */
    double publish_s, ready_s, applied_s; /* seconds from the start of the call */
    char error[256];          /* the router's error when !ok */
} qn_weight_update_report;

/* Publishes m's parameters as `version`, announces it and waits (at most
 * timeout_ms) for READY and APPLIED. QN_OK when the router answered APPLIED
 * (rep->ok tells whether every engine applied it); QN_ERR_TIMEOUT naming the
 * phase that did not come; QN_ERR_INVALID when the router refused the update
 * (rep->error says why: an older version, another update in progress). */
qn_status qn_weight_publisher_update(qn_weight_publisher *p, const qn_model *m, uint64_t version,
                                     int timeout_ms, qn_weight_update_report *rep);

#endif /* QN_NET_WEIGHT_UPDATE_H */
