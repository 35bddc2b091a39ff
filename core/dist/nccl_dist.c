/* nccl_dist.c — NCCL groups formed through Redis (see nccl_dist.h). */
#include "core/dist/nccl_dist.h"

#include <stdio.h>
#include <stdlib.h>

#ifdef QN_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#include <time.h>

#include "core/clock.h"
#include "core/dist/rendezvous.h"

struct qn_nccl {
    ncclComm_t comm;
    cudaStream_t stream;
    int rank, world, device;
    uint32_t timeout_ms;
    int aborted;
};

static qn_status nccl_err(const char *what, ncclResult_t r) {
    return qn_fail(r == ncclRemoteError || r == ncclSystemError ? QN_ERR_NET : QN_ERR_CUDA,
                   "nccl: %s: %s", what, ncclGetErrorString(r));
}

static void nap_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Polls a non-blocking communicator until it leaves ncclInProgress. */
static qn_status comm_settle(qn_nccl *n, const char *what) {
    double deadline = qn_now_s() + n->timeout_ms / 1000.0;
    for (;;) {
        ncclResult_t st = ncclSuccess;
        ncclResult_t r = ncclCommGetAsyncError(n->comm, &st);
        if (r != ncclSuccess) return nccl_err(what, r);
        if (st == ncclSuccess) return QN_OK;
        if (st != ncclInProgress) {
            ncclCommAbort(n->comm);
            n->aborted = 1;
            return nccl_err(what, st);
        }
        if (qn_now_s() > deadline) {
            ncclCommAbort(n->comm);
            n->aborted = 1;
            return qn_fail(QN_ERR_TIMEOUT, "nccl: %s did not finish within %u ms (a rank "
                           "missing or dead?)", what, n->timeout_ms);
        }
        nap_ms(1);
    }
}

qn_status qn_nccl_init(const qn_dist_config *cfg, int device, void *stream, qn_nccl **out) {
    *out = NULL;
    if (!cfg || cfg->world_size < 1 || cfg->rank < 0 || cfg->rank >= cfg->world_size)
        return qn_fail(QN_ERR_INVALID, "nccl: rank %d of %d is not a valid member",
                       cfg ? cfg->rank : -1, cfg ? cfg->world_size : 0);
    cudaError_t ce = cudaSetDevice(device);
    if (ce != cudaSuccess)
        return qn_fail(QN_ERR_NO_DEVICE, "nccl: CUDA device %d: %s", device,
                       cudaGetErrorString(ce));
    qn_nccl *n = calloc(1, sizeof *n);
    if (!n) return qn_fail(QN_ERR_NOMEM, "nccl: out of memory");
    n->rank = cfg->rank;
    n->world = cfg->world_size;
    n->device = device;
    n->stream = (cudaStream_t)stream;
    n->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 300000;

    ncclUniqueId id;
    qn_status s = QN_OK;
    ncclResult_t r;
    qn_rdv_key key = {cfg->redis_url, cfg->job ? cfg->job : "default",
                      cfg->group ? cfg->group : "nccl", "nccl_id"};
    if (n->rank == 0) {
        r = ncclGetUniqueId(&id);
        if (r != ncclSuccess) {
            s = nccl_err("ncclGetUniqueId", r);
            goto fail;
        }
        if (n->world > 1 && (s = qn_rdv_publish(&key, &id, sizeof id, NULL)) != QN_OK) goto fail;
    } else {
        /* Epoch 0: any publication. A reader that comes up before rank 0 of a re-formed
         * group could read the old id; NCCL's init then fails or times out, and the
         * launcher's restart forms the group again. */
        if ((s = qn_rdv_fetch(&key, 0, &id, sizeof id, n->timeout_ms, NULL)) != QN_OK) goto fail;
    }
    ncclConfig_t conf = NCCL_CONFIG_INITIALIZER;
    conf.blocking = 0;
    r = ncclCommInitRankConfig(&n->comm, n->world, id, n->rank, &conf);
    if (r != ncclSuccess && r != ncclInProgress) {
        s = nccl_err("ncclCommInitRankConfig", r);
        goto fail;
    }
    if ((s = comm_settle(n, "communicator init")) != QN_OK) goto fail;
    *out = n;
    return QN_OK;
fail:
    if (n->comm && !n->aborted) ncclCommAbort(n->comm);
    free(n);
    return s;
}

void qn_nccl_free(qn_nccl *n) {
    if (!n) return;
    if (n->comm && !n->aborted) {
        /* bounded: a collective stuck on a dead peer aborts the communicator here
         * instead of hanging in cudaStreamSynchronize */
        qn_nccl_wait(n);
    }
    if (n->comm && !n->aborted) {
        ncclCommFinalize(n->comm);
        comm_settle(n, "finalize");
        if (!n->aborted) ncclCommDestroy(n->comm);
    }
    free(n);
}

int qn_nccl_rank(const qn_nccl *n) { return n->rank; }
int qn_nccl_world_size(const qn_nccl *n) { return n->world; }

qn_status qn_nccl_allreduce_sum(qn_nccl *n, void *dev_buf, size_t count, qn_dtype dt) {
    if (n->aborted) return qn_fail(QN_ERR_CLOSED, "nccl: the group was aborted; form a new one");
    ncclDataType_t t;
    if (dt == QN_DTYPE_F32)
        t = ncclFloat32;
    else if (dt == QN_DTYPE_BF16)
        t = ncclBfloat16;
    else
        return qn_fail(QN_ERR_UNSUPPORTED, "nccl: all-reduce of %s", qn_dtype_name(dt));
    ncclResult_t r = ncclAllReduce(dev_buf, dev_buf, count, t, ncclSum, n->comm, n->stream);
    if (r != ncclSuccess && r != ncclInProgress) return nccl_err("ncclAllReduce", r);
    /* Non-blocking communicator: ncclInProgress means the collective may not be on the
     * stream yet (e.g. the first one, which connects the ranks). Work the caller queues
     * next, and qn_nccl_wait's stream query, must come after it: settle first. */
    if (r == ncclInProgress) return comm_settle(n, "ncclAllReduce (enqueue)");
    return QN_OK;
}

qn_status qn_nccl_broadcast(qn_nccl *n, void *dev_buf, size_t bytes, int root) {
    if (n->aborted) return qn_fail(QN_ERR_CLOSED, "nccl: the group was aborted; form a new one");
    if (root < 0 || root >= n->world)
        return qn_fail(QN_ERR_INVALID, "nccl: broadcast root %d of %d ranks", root, n->world);
    ncclResult_t r = ncclBroadcast(dev_buf, dev_buf, bytes, ncclUint8, root, n->comm, n->stream);
    if (r != ncclSuccess && r != ncclInProgress) return nccl_err("ncclBroadcast", r);
    if (r == ncclInProgress) return comm_settle(n, "ncclBroadcast (enqueue)"); /* see above */
    return QN_OK;
}

qn_status qn_nccl_wait(qn_nccl *n) {
    if (n->aborted) return qn_fail(QN_ERR_CLOSED, "nccl: the group was aborted; form a new one");
    double deadline = qn_now_s() + n->timeout_ms / 1000.0;
    for (;;) {
        cudaError_t q = cudaStreamQuery(n->stream);
        if (q == cudaSuccess) return comm_settle(n, "collective");
        if (q != cudaErrorNotReady)
            return qn_fail(QN_ERR_CUDA, "nccl: stream: %s", cudaGetErrorString(q));
        ncclResult_t st = ncclSuccess;
        ncclCommGetAsyncError(n->comm, &st);
        if (st != ncclSuccess && st != ncclInProgress) {
            ncclCommAbort(n->comm);
            n->aborted = 1;
            return nccl_err("collective", st);
        }
        if (qn_now_s() > deadline) {
            ncclCommAbort(n->comm);
            n->aborted = 1;
            return qn_fail(QN_ERR_TIMEOUT, "nccl: collective did not finish within %u ms (a "
                           "rank missing or dead?)", n->timeout_ms);
        }
        nap_ms(1);
    }
}

const char *qn_nccl_describe(void) {
    static char buf[64];
    int v = 0;
    if (ncclGetVersion(&v) != ncclSuccess) return "NCCL (version unknown)";
    snprintf(buf, sizeof buf, "NCCL %d.%d.%d", v / 10000, (v / 100) % 100, v % 100);
    return buf;
}

#else /* !QN_HAVE_NCCL */

qn_status qn_nccl_init(const qn_dist_config *cfg, int device, void *stream, qn_nccl **out) {
    (void)cfg, (void)device, (void)stream;
    *out = NULL;
    return qn_fail(QN_ERR_UNSUPPORTED, "nccl: %s", qn_nccl_describe());
}
void qn_nccl_free(qn_nccl *n) { (void)n; }
int qn_nccl_rank(const qn_nccl *n) { (void)n; return 0; }
int qn_nccl_world_size(const qn_nccl *n) { (void)n; return 1; }
qn_status qn_nccl_allreduce_sum(qn_nccl *n, void *b, size_t c, qn_dtype dt) {
    (void)n, (void)b, (void)c, (void)dt;
    return qn_fail(QN_ERR_UNSUPPORTED, "nccl: %s", qn_nccl_describe());
}
qn_status qn_nccl_broadcast(qn_nccl *n, void *b, size_t bytes, int root) {
    (void)n, (void)b, (void)bytes, (void)root;
    return qn_fail(QN_ERR_UNSUPPORTED, "nccl: %s", qn_nccl_describe());
}
qn_status qn_nccl_wait(qn_nccl *n) {
    (void)n;
    return qn_fail(QN_ERR_UNSUPPORTED, "nccl: %s", qn_nccl_describe());
}
const char *qn_nccl_describe(void) {
#ifdef QN_HAVE_CUDA
    return "this quench was built without NCCL (not found at configure time; set QN_NCCL_ROOT)";
#else
    return "this quench was built without CUDA (QN_CUDA=OFF), so without NCCL";
#endif
}

#endif /* QN_HAVE_NCCL */
