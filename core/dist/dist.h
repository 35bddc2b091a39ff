/* dist.h — collectives between the ranks of a process group.
 *
 * A group is `world_size` processes that find each other through the job's
 * Redis (rendezvous keys under quench:<job>:dist:<group>:) and then talk
 * directly: on the CPU through Gloo's TCP transport (Debian's libgloo); the
 * NCCL backend for GPUs comes with the CUDA work and will sit behind the
 * same functions. A group of one rank needs no Redis and every collective
 * is a no-op, so single-process tools use the same code path.
 *
 * All ranks must call the same collectives in the same order with the same
 * sizes (as with MPI/NCCL); a rank that dies makes the others' calls fail
 * with QN_ERR_NET/QN_ERR_TIMEOUT after the group's timeout instead of
 * hanging forever. A group belongs to one thread at a time.
 *
 * Results are bitwise identical on every rank (Gloo's ring allreduce
 * broadcasts each reduced segment), and deterministic for a given world
 * size. */
#ifndef QN_CORE_DIST_DIST_H
#define QN_CORE_DIST_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "quench/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qn_dist qn_dist;

typedef struct qn_dist_config {
    int rank;              /* 0 .. world_size-1 */
    int world_size;        /* >= 1 */
    int local_rank;        /* rank on this node (device selection); informational here */
    const char *redis_url; /* rendezvous (see net/redis.h for the forms); unused when world_size == 1 */
    const char *job;       /* key prefix quench:<job>: */
    const char *group;     /* e.g. "train"; distinct groups of one job do not mix */
    const char *host;      /* address this rank listens on; NULL: $QN_DIST_HOST or the hostname */
    uint32_t timeout_ms;   /* rendezvous and every collective; 0: 300000 */
} qn_dist_config;

/* Joins the group (blocks until every rank has joined or the timeout). */
qn_status qn_dist_init(const qn_dist_config *cfg, qn_dist **out);

/* Fills cfg from the launcher's environment: QN_RANK, QN_WORLD_SIZE,
 * QN_LOCAL_RANK (default 0), QN_REDIS_URL, QN_JOB (default "default"),
 * QN_DIST_HOST; group is the argument. Absent QN_WORLD_SIZE means a group of
 * one. Malformed values are errors naming the variable. The strings point
 * into the environment. */
qn_status qn_dist_config_from_env(const char *group, qn_dist_config *cfg);

void qn_dist_free(qn_dist *d);

int qn_dist_rank(const qn_dist *d);
int qn_dist_world_size(const qn_dist *d);

/* In-place sum over ranks. */
qn_status qn_dist_allreduce_sum_f32(qn_dist *d, float *buf, size_t n);
qn_status qn_dist_allreduce_sum_f64(qn_dist *d, double *buf, size_t n);
/* In-place max over ranks (e.g. agreeing on a micro-batch count). */
qn_status qn_dist_allreduce_max_i64(qn_dist *d, int64_t *buf, size_t n);
/* Copies root's bytes to every rank. */
qn_status qn_dist_broadcast(qn_dist *d, void *buf, size_t bytes, int root);
qn_status qn_dist_barrier(qn_dist *d);

#ifdef __cplusplus
}
#endif
#endif
