/* nccl_dist.h — GPU collectives between the ranks of a group: NCCL, with the
 * ncclUniqueId passed through the job's Redis (core/dist/rendezvous.h).
 *
 * The trainer's data-parallel gradient all-reduce and the trainer-to-engine
 * weight broadcast on GPU clusters use this; the CPU backend (dist.h, Gloo)
 * keeps serving CPU runs and the control-plane collectives. Buffers are
 * device pointers; operations are queued on the caller's stream (the
 * qn_cuda_ctx stream) and complete in stream order.
 *
 * Failure model, as in dist.h: nothing hangs forever. The communicator is
 * created non-blocking (ncclConfig_t.blocking = 0); qn_nccl_wait polls the
 * stream and ncclCommGetAsyncError until the queued work is done, an error
 * is reported, or the group's timeout passes, and then aborts the
 * communicator (ncclCommAbort) so that a dead peer becomes QN_ERR_TIMEOUT /
 * QN_ERR_NET here instead of a stuck kernel. An aborted group cannot be
 * reused: free it and form a new one (the rendezvous epoch makes the new
 * group's id fresh).
 *
 * Built only when NCCL was found at configure time (QN_HAVE_NCCL); without
 * it (or without CUDA) qn_nccl_init returns QN_ERR_UNSUPPORTED naming why.
 *
 * Leaves out: reduce-scatter/all-gather (come with fully-sharded training),
 * several communicators sharing one rendezvous, CUDA graphs. */
#ifndef QN_CORE_DIST_NCCL_DIST_H
#define QN_CORE_DIST_NCCL_DIST_H

#include <stddef.h>

#include "core/dist/dist.h"
#include "core/dtype.h"
#include "quench/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qn_nccl qn_nccl;

/* Joins the group described by cfg (rank, world_size, redis_url, job, group,
 * timeout_ms as in dist.h) on CUDA device `device`, queuing its collectives
 * on `stream` (a cudaStream_t, NULL for the default stream). Rank 0 makes
 * the unique id and publishes it; the others fetch it (waiting up to the
 * timeout). A group of one needs no Redis. */
qn_status qn_nccl_init(const qn_dist_config *cfg, int device, void *stream, qn_nccl **out);
void qn_nccl_free(qn_nccl *n);

int qn_nccl_rank(const qn_nccl *n);
int qn_nccl_world_size(const qn_nccl *n);

/* In-place sum of n elements of dt (QN_DTYPE_F32 or QN_DTYPE_BF16) over the
 * ranks; queued, not waited for. */
qn_status qn_nccl_allreduce_sum(qn_nccl *n, void *dev_buf, size_t count, qn_dtype dt);
/* Root's bytes to every rank; queued. */
qn_status qn_nccl_broadcast(qn_nccl *n, void *dev_buf, size_t bytes, int root);
/* Waits for everything queued on the stream, with the group's timeout
 * (aborting the communicator on timeout or error, see above). */
qn_status qn_nccl_wait(qn_nccl *n);

/* "NCCL 2.28.9" or why there is none; never fails. */
const char *qn_nccl_describe(void);

#ifdef __cplusplus
}
#endif
#endif /* QN_CORE_DIST_NCCL_DIST_H */
