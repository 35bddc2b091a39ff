/* redis.h — the job's Redis connection: URL parsing, a per-job key prefix,
 * commands with one transparent reconnect, and retry backoff.
 *
 * Every quench process of a job shares one Redis (DESIGN.md, "Shared state
 * in Redis"), named by a URL (forms and parser: core/redis_url.h).
 * Keys of a job live under "quench:<job>:" (qn_redis_key).
 *
 * A connection belongs to one thread. Commands are synchronous with a
 * timeout; on an I/O error (Redis restarted, connection dropped) the
 * command reconnects once and is sent again, so callers must only send
 * commands that are safe to repeat or that they make idempotent (SET, HSET,
 * and Lua scripts keyed by request ids are; INCR is not — use
 * qn_redis_command_once for those). */
#ifndef QN_NET_REDIS_H
#define QN_NET_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "core/redis_url.h"
#include "quench/status.h"

typedef struct qn_redis qn_redis;

/* Connects (AUTH and SELECT included). job may be NULL (no prefix). The
 * timeout bounds connecting and every command. */
qn_status qn_redis_connect(const char *url, const char *job, uint32_t timeout_ms, qn_redis **out);
void qn_redis_free(qn_redis *r);

/* Runs a command (hiredis printf-style format). On success *reply (if not
 * NULL) gets the reply, which the caller frees with freeReplyObject; an
 * error reply from Redis becomes QN_ERR_NET with Redis's message. Retries
 * once after reconnecting when the connection failed. */
qn_status qn_redis_command(qn_redis *r, redisReply **reply, const char *fmt, ...);
/* Same, argv form (binary-safe arguments). */
qn_status qn_redis_command_argv(qn_redis *r, redisReply **reply, int argc, const char **argv,
                                const size_t *argvlen);
/* Same as qn_redis_command but never re-sent: for non-idempotent commands. */
qn_status qn_redis_command_once(qn_redis *r, redisReply **reply, const char *fmt, ...);

/* Writes "quench:<job>:<suffix>" into buf. Returns buf. */
const char *qn_redis_key(const qn_redis *r, char *buf, size_t cap, const char *suffix);

/* GET of the job key <suffix> holding a decimal count (rollout_next,
 * weight_version, ...): *found false (and *out untouched) when the key does
 * not exist. QN_ERR_FORMAT naming the key when the value is not plain
 * digits within uint64; the command's own error when Redis fails. */
qn_status qn_redis_get_u64(qn_redis *r, const char *suffix, uint64_t *out, bool *found);

/* Delay before retry `attempt` (0-based): base * 2^attempt capped at max,
 * then "full jitter" (uniform in [delay/2, delay]) from the given 64-bit
 * state, which is advanced. Deterministic for a given state. */
uint32_t qn_backoff_ms(uint32_t attempt, uint32_t base_ms, uint32_t max_ms, uint64_t *state);

#endif
