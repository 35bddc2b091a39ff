/* rendezvous.h — one rank publishes a small blob, the others of its group
 * fetch it, through the job's Redis.
 *
 * NCCL needs every rank to hold the same ncclUniqueId (128 bytes made by
 * rank 0) before ncclCommInitRank; the same pattern serves any "root makes,
 * everyone reads" value. Keys: quench:<job>:dist:<group>:<name>:<epoch>,
 * where epoch is the integer INCR'd by rank 0 at each qn_rdv_publish (so
 * that a group re-formed after a crash never reads the previous run's id:
 * rank 0 publishes epoch e, and the readers wait for the key named by the
 * current epoch counter to appear). Values expire after an hour so a dead
 * job leaves nothing behind for long.
 *
 * Failure model: a reader waits at most timeout_ms (polling every 20 ms)
 * and then fails with QN_ERR_TIMEOUT naming the key; Redis errors are
 * QN_ERR_NET with Redis's message.
 *
 * Leaves out: a barrier after the fetch (NCCL's init is itself collective),
 * blobs over 64 KiB. */
#ifndef QN_CORE_DIST_RENDEZVOUS_H
#define QN_CORE_DIST_RENDEZVOUS_H

#include <stddef.h>
#include <stdint.h>

#include "quench/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qn_rdv_key {
    const char *redis_url; /* net/redis.h forms: redis://host:port/db, unix:///path */
    const char *job;
    const char *group;
    const char *name; /* e.g. "nccl_id" */
} qn_rdv_key;

#define QN_RDV_MAX_BLOB 65536

/* Root side: bumps the epoch and stores blob under the new epoch. *epoch (may
 * be NULL) receives it. */
qn_status qn_rdv_publish(const qn_rdv_key *k, const void *blob, size_t len, int64_t *epoch);

/* Reader side: waits for an epoch newer than `after` (pass 0 the first
 * time; pass the last epoch read to wait for the next publication), then
 * reads exactly len bytes (a blob of another length is QN_ERR_FORMAT). */
qn_status qn_rdv_fetch(const qn_rdv_key *k, int64_t after, void *blob, size_t len,
                       uint32_t timeout_ms, int64_t *epoch);

#ifdef __cplusplus
}
#endif
#endif /* QN_CORE_DIST_RENDEZVOUS_H */
