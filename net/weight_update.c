/* weight_update.c — publish + announce + wait, the trainer's side of a
 * weight update (see weight_update.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "core/log.h"
#include "net/weight_update.h"
#include "net/zchan.h"
#include "core/clock.h"

struct qn_weight_publisher {
    qn_weight_server *server;
    void *sock; /* DEALER to the router */
    char identity[64];
    uint64_t next_request;
};

qn_status qn_weight_publisher_start(void *zmq_ctx, const char *router, const char *listen,
                                    const char *advertise, const char *identity,
                                    qn_weight_publisher **out) {
    *out = NULL;
    qn_weight_publisher *p = calloc(1, sizeof *p);
    if (!p) return qn_fail(QN_ERR_NOMEM, "weight publisher");
    snprintf(p->identity, sizeof p->identity, "%s", identity ? identity : "trainer");
    qn_status s = qn_weight_server_start(zmq_ctx, listen, advertise, 0, &p->server);
    if (s == QN_OK) s = qn_zsock_open(zmq_ctx, ZMQ_DEALER, router, false, p->identity, &p->sock);
    if (s != QN_OK) {
        qn_weight_publisher_stop(p);
        return s;
    }
    p->next_request = 1;
    *out = p;
    return QN_OK;
}

void qn_weight_publisher_stop(qn_weight_publisher *p) {
    if (!p) return;
    qn_zsock_close(p->sock);
    qn_weight_server_stop(p->server);
    free(p);
}

static const char *phase_name(int phase) {
    return phase == QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_READY     ? "READY"
           : phase == QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_APPLIED ? "APPLIED"
                                                                               : "?";
}

qn_status qn_weight_publisher_update(qn_weight_publisher *p, const qn_model *m, uint64_t version,
                                     int timeout_ms, qn_weight_update_report *rep) {
    memset(rep, 0, sizeof *rep);
    rep->version = version;
    double t0 = qn_now_s();
    qn_weight_tensor *t = calloc(m->n_params ? m->n_params : 1, sizeof *t);
    if (!t) return qn_fail(QN_ERR_NOMEM, "weight update: tensor list");
    for (size_t i = 0; i < m->n_params; i++) {
        const qn_param_info *pi = &m->params[i];
        t[i].name = pi->name;
        t[i].dtype = QN_DTYPE_F32;
        t[i].ndim = pi->ndim;
        for (int k = 0; k < pi->ndim; k++) t[i].shape[k] = pi->shape[k];
        t[i].data = m->w + pi->offset;
    }
    Quench__WeightManifest *mf = NULL;
    qn_status s = qn_weight_server_publish(p->server, version, t, m->n_params, &mf);
    free(t);
    if (s != QN_OK) return s;
    rep->publish_s = qn_now_s() - t0;
    Quench__WeightUpdateBegin b = QUENCH__WEIGHT_UPDATE_BEGIN__INIT;
    b.manifest = mf;
    Quench__Envelope env = qn_envelope_weight_update_begin(&b);
    s = qn_zsend(p->sock, NULL, 0, &env, p->next_request++, p->identity);
    qn_weight_manifest_free(mf);
    if (s != QN_OK) return s;
    QN_LOG_INFO("weight update: version %llu announced (%.3f s to publish)",
                (unsigned long long)version, rep->publish_s);
    int want = QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_READY;
    double deadline = t0 + timeout_ms / 1000.0;
    while (want != 0) {
        int left = (int)((deadline - qn_now_s()) * 1000.0);
        if (left <= 0)
            return qn_fail(QN_ERR_TIMEOUT, "weight update: version %llu: no %s from the router "
                           "within %d ms", (unsigned long long)version, phase_name(want),
                           timeout_ms);
        qn_zmsg msg = {0};
        s = qn_zrecv(p->sock, false, left, &msg);
        if (s == QN_ERR_TIMEOUT) continue;
        if (s != QN_OK) {
            QN_LOG_WARN("weight update: bad message from the router: %s", qn_last_error());
            continue;
        }
        const Quench__WeightUpdateStatus *st =
            msg.env->body_case == QUENCH__ENVELOPE__BODY_WEIGHT_UPDATE_STATUS
                ? msg.env->weight_update_status
                : NULL;
        if (!st || st->version != version) {
            qn_zmsg_clear(&msg);
            continue; /* not ours: an older update's late status, or another message */
        }
        if (!st->ok && (int)st->phase == QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_READY) {
            snprintf(rep->error, sizeof rep->error, "%s", st->error ? st->error : "");
            qn_zmsg_clear(&msg);
            return qn_fail(QN_ERR_INVALID, "weight update: version %llu refused: %s",
                           (unsigned long long)version, rep->error);
        }
        if ((int)st->phase == want) {
            if (want == QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_READY) {
                rep->ready_s = qn_now_s() - t0;
                want = QUENCH__WEIGHT_UPDATE_PHASE__WEIGHT_UPDATE_PHASE_APPLIED;
            } else {
                rep->applied_s = qn_now_s() - t0;
                rep->ok = st->ok;
                rep->n_engines = (uint32_t)st->n_engine_ids;
                rep->n_failed = (uint32_t)st->n_failed_engine_ids;
                if (!st->ok) snprintf(rep->error, sizeof rep->error, "%s", st->error ? st->error : "");
                for (size_t i = 0; i < st->n_failed_engine_ids; i++)
                    QN_LOG_WARN("weight update: version %llu: engine %s failed: %s",
                                (unsigned long long)version, st->failed_engine_ids[i],
                                rep->error);
                want = 0;
            }
        }
        qn_zmsg_clear(&msg);
    }
    QN_LOG_INFO("weight update: version %llu applied by %u engines (%u failed) in %.3f s",
                (unsigned long long)version, rep->n_engines, rep->n_failed, rep->applied_s);
    return QN_OK;
}
