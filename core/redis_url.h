/* redis_url.h — parsing the Redis URL that names a job's shared state.
 *
 * Two forms (the ones redis-cli and most clients accept):
 *   redis://[[user]:password@]host[:port][/db]     (port 6379, db 0 by default)
 *   unix:///path/to/redis.sock[?db=N]
 * Lives in core because both the Redis client (net/redis.h) and the
 * collectives' rendezvous (core/dist) connect to the same URL. */
#ifndef QN_CORE_REDIS_URL_H
#define QN_CORE_REDIS_URL_H

#include "quench/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qn_redis_url {
    char host[256];      /* empty for a unix socket */
    int port;
    char unix_path[256]; /* empty for TCP */
    int db;
    char user[64];
    char password[128];
} qn_redis_url;

/* Parses a Redis URL into *out; errors (QN_ERR_INVALID) name the URL and
 * what is wrong with it. */
qn_status qn_redis_url_parse(const char *url, qn_redis_url *out);

#ifdef __cplusplus
}
#endif
#endif
