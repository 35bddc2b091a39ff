/* buffer.c — the `quench buffer` service (contract in cli/buffer.h, protocol
 * and Redis keys in docs/services.md "Buffer").
 *
 * One thread, one zmq_poll loop: a DEALER to the router for generation, a
 * ROUTER (--listen) for trainer ranks, and a socket monitor that tells when
 * the router connection is up. Rollouts are made one at a time; a rollout is
 * persisted to Redis (one MSET: the rollout, rollout_next, data_cursor) before
 * any rank can see it, so a buffer killed at any moment loses at most the
 * rollout it was making, which a restart regenerates from the same cursor.
 *
 * With --partial-rollout the end of a rollout waits (at most DRAIN_S) for the
 * answers to its aborts, and the groups still unfinished go, with the tokens
 * their samples had, into the key `partial` written by the same MSET; the
 * next rollout continues them first (GenerateRequest.prefix_output_ids).
 * With --max-staleness K a complete group is checked against the job's
 * weight_version (read from Redis at most every VERSION_POLL_S).
 *
 * A rollout is acknowledged (flow control, --num-rollout) once every rank
 * acked it, and deleted only once every rank's checkpointed mark (hash
 * `ckpt`) is past it too: a trainer that dies before its next checkpoint
 * resumes from the last one and must be able to fetch the rollouts after it.
 *
 * Leaves out: pluggable filters beyond nonzero_std, and rollouts larger than
 * one 64 MiB message per rank. */
#include "cli/buffer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "cli/buffer_data.h"
#include "cli/gen_client.h"
#include "cli/stop_signal.h"
#include "core/clock.h"
#include "core/io/metrics_line.h"
#include "core/log.h"
#include "core/tokenizer/tokenizer.h"
#include "net/codec.h"
#include "net/redis.h"
#include "net/zchan.h"
#include "rewards/rewards.h"
#include "trainer/advantages.h"

#define BLOB_MAGIC "QNRB"
#define BLOB_VERSION 1u
#define MAX_WAITERS 4096
#define DRAIN_S 5.0
#define VERSION_POLL_S 0.5

typedef struct slot {
    qn_gen_slot g;
    Quench__Envelope *res;    /* the result, once it came */
    Quench__Envelope *prefix; /* partial rollout: the GenerateResult being continued */
} slot;

typedef struct grp {
    bool active;
    uint64_t gid; /* draw index of its prompt: the group id */
    size_t data_index;
    uint32_t n_done;
    slot *slots;
} grp;

typedef struct kept_group {
    uint8_t *bytes; /* encoded Envelope{Group} */
    size_t len;
} kept_group;

typedef struct waiter {
    uint8_t identity[QN_ZMQ_MAX_IDENTITY + 1];
    size_t identity_len;
    uint64_t rid, rollout_id;
    uint32_t rank, world_size;
} waiter;

typedef struct stats {
    double reward_sum, adv_sum;
    uint64_t samples, truncated, resp_tokens;
    uint64_t len_min, len_max;
    uint64_t filtered, reward_dropped, failed, aborted, launched;
    uint64_t stale, carried, continued;
} stats;

typedef struct buf {
    const qn_buffer_opts *o;
    qn_bd data;
    qn_tokenizer *tok;
    qn_reward *rw;
    qn_redis *redis;
    void *ctx, *listener;
    qn_gen_client gc;
    /* durable state (mirrors Redis) */
    uint64_t next;   /* rollout being made = rollouts persisted */
    uint64_t cursor; /* data cursor after the last persisted rollout */
    uint64_t floor;  /* lowest rollout not acknowledged by every rank */
    uint64_t low;    /* lowest rollout still in Redis: [low, next) are held */
    /* the rollout being made */
    bool making;
    uint64_t launch_cursor;
    double started, progress_at;
    grp *groups;
    size_t n_groups, cap_groups;
    kept_group *kept;
    size_t n_kept;
    /* partial rollout: unfinished groups (encoded Envelope{Group}) for the next rollout */
    kept_group *carry;
    size_t n_carry;
    bool draining; /* aborts sent, waiting for their answers */
    double drain_until;
    /* --max-staleness: the job's weight version, cached */
    uint64_t cur_version;
    bool have_version;
    double version_at, stale_log_at;
    uint64_t bad_msgs;
    double bad_log_at;
    stats st;
    waiter *waiters;
    size_t n_waiters;
    int metrics_fd; /* -1: stderr */
} buf;

/* ------------------------------------------------------------------ redis */

static qn_status redis_exists(buf *b, uint64_t r, bool *out) {
    char suffix[64], key[512];
    snprintf(suffix, sizeof suffix, "rollout:%" PRIu64, r);
    qn_redis_key(b->redis, key, sizeof key, suffix);
    redisReply *rep = NULL;
    QN_CHECK(qn_redis_command(b->redis, &rep, "EXISTS %s", key));
    *out = rep->type == REDIS_REPLY_INTEGER && rep->integer > 0;
    freeReplyObject(rep);
    return QN_OK;
}

/* Of the hash acks:<r>: the ranks below `world` that acked and `world` (0:
 * no rank has fetched r yet). */
static qn_status acks_of(buf *b, uint64_t r, uint64_t *ranks, uint64_t *world) {
    char sfx[64], key[512];
    snprintf(sfx, sizeof sfx, "acks:%" PRIu64, r);
    qn_redis_key(b->redis, key, sizeof key, sfx);
    redisReply *rep = NULL;
    QN_CHECK(qn_redis_command(b->redis, &rep, "HGETALL %s", key));
    *ranks = *world = 0;
    for (int pass = 0; pass < 2 && rep->type == REDIS_REPLY_ARRAY; pass++)
        for (size_t i = 0; i + 1 < rep->elements; i += 2) {
            const char *f = rep->element[i]->str, *v = rep->element[i + 1]->str;
            if (!f || !v) continue;
            if (pass == 0 && strcmp(f, "world") == 0)
                *world = strtoull(v, NULL, 10);
            else if (pass == 1 && strncmp(f, "rank:", 5) == 0 && strtoull(f + 5, NULL, 10) < *world)
                (*ranks)++;
        }
    freeReplyObject(rep);
    return QN_OK;
}

/* The lowest checkpointed mark (hash `ckpt`, `rank:<k>` = highest rollout in
 * a checkpoint of rank k, plus 1) over ranks 0..world-1; 0 while the world
 * is unknown or a rank has none. */
static qn_status durable_mark(buf *b, uint64_t *out) {
    char key[512];
    qn_redis_key(b->redis, key, sizeof key, "ckpt");
    redisReply *rep = NULL;
    QN_CHECK(qn_redis_command(b->redis, &rep, "HGETALL %s", key));
    *out = 0;
    uint64_t world = 0;
    if (rep->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i + 1 < rep->elements; i += 2)
            if (rep->element[i]->str && rep->element[i + 1]->str &&
                strcmp(rep->element[i]->str, "world") == 0)
                world = strtoull(rep->element[i + 1]->str, NULL, 10);
    if (world == 0 || world > 65536 || rep->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(rep);
        return QN_OK;
    }
    uint64_t *mark = calloc(world, sizeof *mark);
    if (!mark) {
        freeReplyObject(rep);
        return qn_fail(QN_ERR_NOMEM, "buffer: checkpoint marks");
    }
    for (size_t i = 0; i + 1 < rep->elements; i += 2) {
        const char *f = rep->element[i]->str, *v = rep->element[i + 1]->str;
        if (!f || !v || strncmp(f, "rank:", 5) != 0) continue;
        uint64_t k = strtoull(f + 5, NULL, 10);
        if (k < world) mark[k] = strtoull(v, NULL, 10);
    }
    freeReplyObject(rep);
    uint64_t m = mark[0];
    for (uint64_t k = 1; k < world; k++)
        if (mark[k] < m) m = mark[k];
    free(mark);
    *out = m;
    return QN_OK;
}

/* Moves the floor past the rollouts every rank acked, then deletes (in
 * order, one DEL each, so the held ones stay a contiguous range) the acked
 * rollouts below every rank's checkpointed mark. */
static qn_status settle(buf *b) {
    while (b->floor < b->next) {
        uint64_t ranks, world;
        QN_CHECK(acks_of(b, b->floor, &ranks, &world));
        if (world == 0 || ranks < world) break;
        b->floor++;
    }
    uint64_t upto;
    QN_CHECK(durable_mark(b, &upto));
    if (upto > b->floor) upto = b->floor;
    for (; b->low < upto; b->low++) {
        char sfx[64], k_roll[512], k_acks[512];
        snprintf(sfx, sizeof sfx, "rollout:%" PRIu64, b->low);
        qn_redis_key(b->redis, k_roll, sizeof k_roll, sfx);
        snprintf(sfx, sizeof sfx, "acks:%" PRIu64, b->low);
        qn_redis_key(b->redis, k_acks, sizeof k_acks, sfx);
        QN_CHECK(qn_redis_command(b->redis, NULL, "DEL %s %s", k_roll, k_acks));
    }
    return QN_OK;
}

static qn_status load_state(buf *b) {
    bool f1, f2, f3;
    uint64_t size = 0;
    QN_CHECK(qn_redis_get_u64(b->redis, "rollout_next", &b->next, &f1));
    QN_CHECK(qn_redis_get_u64(b->redis, "data_cursor", &b->cursor, &f2));
    QN_CHECK(qn_redis_get_u64(b->redis, "data_size", &size, &f3));
    if (!f1) b->next = 0;
    if (!f2) b->cursor = 0;
    if (f3 && size != b->data.n)
        QN_LOG_WARN(
            "buffer: %s has %zu usable prompts, the job's data cursor was made with %" PRIu64
            "; continuing at draw %" PRIu64 " (epochs are counted with the new size)",
            b->o->data.path, b->data.n, size, b->cursor);
    /* rollouts are deleted in order, so the held ones are a contiguous range */
    b->low = b->next;
    while (b->low > 0) {
        bool ex;
        QN_CHECK(redis_exists(b, b->low - 1, &ex));
        if (!ex) break;
        b->low--;
    }
    b->floor = b->low;
    QN_CHECK(settle(b)); /* also finishes deletions a kill interrupted */
    if (f1)
        QN_LOG_INFO("buffer: resuming job '%s': rollout %" PRIu64 ", data cursor %" PRIu64
                    " (epoch %" PRIu64 "), rollouts %" PRIu64 "..%" PRIu64 " held for trainers"
                    " (acknowledged below %" PRIu64 ")",
                    b->o->job, b->next, b->cursor, b->cursor / b->data.n, b->low, b->next,
                    b->floor);
    return QN_OK;
}

/* Writes the finished rollout, rollout_next and data_cursor (and with
 * --partial-rollout the unfinished groups) in one MSET: all of it is there or
 * none. */
static qn_status persist(buf *b, const uint8_t *blob, size_t len, const uint8_t *pblob,
                         size_t plen) {
    char k_roll[512], k_next[512], k_cur[512], k_size[512], k_part[512], sfx[64];
    snprintf(sfx, sizeof sfx, "rollout:%" PRIu64, b->next);
    qn_redis_key(b->redis, k_roll, sizeof k_roll, sfx);
    qn_redis_key(b->redis, k_next, sizeof k_next, "rollout_next");
    qn_redis_key(b->redis, k_cur, sizeof k_cur, "data_cursor");
    qn_redis_key(b->redis, k_size, sizeof k_size, "data_size");
    char v_next[32], v_cur[32], v_size[32];
    snprintf(v_next, sizeof v_next, "%" PRIu64, b->next + 1);
    snprintf(v_cur, sizeof v_cur, "%" PRIu64, b->launch_cursor);
    snprintf(v_size, sizeof v_size, "%zu", b->data.n);
    qn_redis_key(b->redis, k_part, sizeof k_part, "partial");
    const char *argv[] = {"MSET", k_roll, (const char *)blob, k_next, v_next, k_cur, v_cur, k_size,
                          v_size, k_part, (const char *)pblob};
    size_t lens[11];
    for (int i = 0; i < 9; i++)
        lens[i] = strlen(argv[i]);
    lens[2] = len;
    lens[9] = strlen(k_part);
    lens[10] = plen;
    redisReply *rep = NULL;
    qn_status st = qn_redis_command_argv(b->redis, &rep, pblob ? 11 : 9, argv, lens);
    if (rep) freeReplyObject(rep);
    if (st != QN_OK) {
        char why[512]; /* qn_fail formats into the buffer qn_last_error reads from */
        snprintf(why, sizeof why, "%s", qn_last_error());
        return qn_fail(st, "persisting rollout %" PRIu64 ": %s", b->next, why);
    }
    return QN_OK;
}

/* ------------------------------------------------------------------ rollout blobs */

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Layout: "QNRB" u32 version, u64 data cursor, u32 n groups, then per group
 * u32 length and an encoded Envelope{Group} (little endian). */
static qn_status blob_make(buf *b, const kept_group *v, size_t n, uint8_t **out, size_t *len) {
    size_t total = 4 + 4 + 8 + 4;
    for (size_t i = 0; i < n; i++)
        total += 4 + v[i].len;
    uint8_t *p = malloc(total);
    if (!p) return qn_fail(QN_ERR_NOMEM, "rollout %" PRIu64 ": %zu bytes", b->next, total);
    memcpy(p, BLOB_MAGIC, 4);
    put_u32(p + 4, BLOB_VERSION);
    put_u64(p + 8, b->launch_cursor);
    put_u32(p + 16, (uint32_t)n);
    size_t off = 20;
    for (size_t i = 0; i < n; i++) {
        put_u32(p + off, (uint32_t)v[i].len);
        memcpy(p + off + 4, v[i].bytes, v[i].len);
        off += 4 + v[i].len;
    }
    *out = p;
    *len = total;
    return QN_OK;
}

typedef struct parsed_blob {
    uint64_t cursor;
    Quench__Envelope **groups;
    size_t n;
} parsed_blob;

static void parsed_free(parsed_blob *pb) {
    for (size_t i = 0; i < pb->n; i++)
        qn_envelope_free(pb->groups[i]);
    free(pb->groups);
    memset(pb, 0, sizeof *pb);
}

static qn_status blob_parse(const uint8_t *p, size_t len, uint64_t r, parsed_blob *pb) {
    memset(pb, 0, sizeof *pb);
    if (len < 20 || memcmp(p, BLOB_MAGIC, 4) != 0 || get_u32(p + 4) != BLOB_VERSION)
        return qn_fail(QN_ERR_FORMAT, "redis rollout:%" PRIu64 ": not a rollout record", r);
    pb->cursor = get_u64(p + 8);
    uint32_t n = get_u32(p + 16);
    if (n > len / 4) return qn_fail(QN_ERR_FORMAT, "redis rollout:%" PRIu64 ": bad count", r);
    pb->groups = calloc(n ? n : 1, sizeof *pb->groups);
    if (!pb->groups) return qn_fail(QN_ERR_NOMEM, "rollout %" PRIu64, r);
    size_t off = 20;
    for (uint32_t i = 0; i < n; i++) {
        if (len - off < 4) goto bad;
        uint32_t gl = get_u32(p + off);
        if (len - off - 4 < gl) goto bad;
        Quench__Envelope *env = NULL;
        if (qn_envelope_decode(p + off + 4, gl, len, &env) != QN_OK ||
            env->body_case != QUENCH__ENVELOPE__BODY_GROUP) {
            qn_envelope_free(env);
            goto bad;
        }
        pb->groups[pb->n++] = env;
        off += 4 + gl;
    }
    return QN_OK;
bad:
    parsed_free(pb);
    return qn_fail(QN_ERR_FORMAT, "redis rollout:%" PRIu64 ": group record damaged", r);
}

static void carry_free(buf *b) {
    for (size_t i = 0; i < b->n_carry; i++)
        free(b->carry[i].bytes);
    free(b->carry);
    b->carry = NULL;
    b->n_carry = 0;
}

/* --partial-rollout: the unfinished groups persisted with the last rollout,
 * continued first by the rollout being made. */
static qn_status load_partial(buf *b) {
    char key[512];
    qn_redis_key(b->redis, key, sizeof key, "partial");
    redisReply *rep = NULL;
    QN_CHECK(qn_redis_command(b->redis, &rep, "GET %s", key));
    if (rep->type != REDIS_REPLY_STRING) {
        freeReplyObject(rep);
        return QN_OK;
    }
    parsed_blob pb;
    qn_status st = blob_parse((const uint8_t *)rep->str, rep->len, b->next, &pb);
    freeReplyObject(rep);
    if (st != QN_OK) return qn_fail(st, "redis %s: not a partial rollout record", key);
    b->carry = calloc(pb.n ? pb.n : 1, sizeof *b->carry);
    if (!b->carry) st = qn_fail(QN_ERR_NOMEM, "buffer: partial groups");
    for (size_t i = 0; st == QN_OK && i < pb.n; i++) {
        st = qn_envelope_encode_alloc(pb.groups[i], 0, "buffer", &b->carry[i].bytes,
                                      &b->carry[i].len);
        if (st == QN_OK) b->n_carry++;
    }
    if (st == QN_OK && pb.n)
        QN_LOG_INFO("buffer: %zu unfinished groups of the last rollout will be continued",
                    b->n_carry);
    parsed_free(&pb);
    return st;
}

/* ------------------------------------------------------------------ generation */

static void send_sample(buf *b, grp *g, uint32_t k) {
    const qn_bd_prompt *p = &b->data.v[g->data_index];
    /* seeded by (seed, group, sample): a regenerated rollout asks the same questions */
    Quench__SamplingParams sp;
    qn_gen_sampling(&sp, b->o->temperature, b->o->top_p, b->o->max_response_len,
                    b->o->data.seed, g->gid, k);
    Quench__GenerateRequest req = QUENCH__GENERATE_REQUEST__INIT;
    req.group_id = g->gid;
    req.sample_index = k;
    req.input_ids = (int32_t *)p->tokens;
    req.n_input_ids = p->n_tokens;
    req.params = &sp;
    req.return_logprob = true;
    if (g->slots[k].prefix) {
        /* continuation: the engine appends the prefix to the prompt and counts it against
         * max_new_tokens, so the request's budget stays the rollout's */
        const Quench__GenerateResult *pr = g->slots[k].prefix->generate_result;
        req.prefix_output_ids = pr->output_ids;
        req.n_prefix_output_ids = pr->n_output_ids;
        if (pr->n_output_logprobs == pr->n_output_ids) {
            req.prefix_output_logprobs = pr->output_logprobs;
            req.n_prefix_output_logprobs = pr->n_output_logprobs;
        }
        if (pr->n_weight_versions == pr->n_output_ids) {
            req.prefix_weight_versions = pr->weight_versions;
            req.n_prefix_weight_versions = pr->n_weight_versions;
        }
    }
    qn_gen_client_send(&b->gc, &g->slots[k].g, &req);
}

static grp *new_group(buf *b) {
    for (size_t i = 0; i < b->n_groups; i++)
        if (!b->groups[i].active) return &b->groups[i];
    if (b->n_groups == b->cap_groups) {
        size_t nc = b->cap_groups ? 2 * b->cap_groups : 64;
        grp *ng = realloc(b->groups, nc * sizeof *ng);
        if (!ng) return NULL;
        memset(ng + b->cap_groups, 0, (nc - b->cap_groups) * sizeof *ng);
        b->groups = ng;
        b->cap_groups = nc;
    }
    return &b->groups[b->n_groups++];
}

static void group_clear(grp *g, uint32_t n) {
    if (g->slots)
        for (uint32_t k = 0; k < n; k++) {
            qn_envelope_free(g->slots[k].res);
            qn_envelope_free(g->slots[k].prefix);
        }
    free(g->slots);
    memset(g, 0, sizeof *g);
}

static size_t active_groups(const buf *b) {
    size_t n = 0;
    for (size_t i = 0; i < b->n_groups; i++)
        n += b->groups[i].active;
    return n;
}

static qn_status launch(buf *b, uint32_t count) {
    uint32_t n = b->o->n_samples_per_prompt;
    for (uint32_t i = 0; i < count; i++) {
        grp *g = new_group(b);
        if (!g) return qn_fail(QN_ERR_NOMEM, "buffer: groups");
        g->slots = calloc(n, sizeof *g->slots);
        if (!g->slots) return qn_fail(QN_ERR_NOMEM, "buffer: groups");
        g->active = true;
        g->gid = b->launch_cursor++;
        g->data_index = qn_bd_index(&b->data, g->gid);
        b->st.launched++;
        if (g->gid % b->data.n == 0 && g->gid > 0)
            QN_LOG_INFO("buffer: epoch %" PRIu64 " of %s begins", g->gid / b->data.n,
                        b->o->data.path);
        for (uint32_t k = 0; k < n; k++)
            send_sample(b, g, k);
    }
    return QN_OK;
}

/* Sends AbortRequests for every sample in flight; returns how many. */
static size_t send_aborts(buf *b) {
    qn_gen_aborts ab = {0};
    for (size_t i = 0; i < b->n_groups; i++) {
        grp *g = &b->groups[i];
        if (!g->active) continue;
        for (uint32_t k = 0; k < b->o->n_samples_per_prompt; k++)
            if (g->slots[k].g.rid && !g->slots[k].res)
                qn_gen_abort_add(&b->gc, &ab, g->slots[k].g.rid);
    }
    return qn_gen_abort_flush(&b->gc, &ab);
}

static void abort_all(buf *b) {
    (void)send_aborts(b);
    for (size_t i = 0; i < b->n_groups; i++) {
        grp *g = &b->groups[i];
        if (!g->active) continue;
        b->st.aborted++;
        group_clear(g, b->o->n_samples_per_prompt);
    }
}

/* Samples sent and not answered. */
static size_t in_flight(const buf *b) {
    size_t m = 0;
    for (size_t i = 0; i < b->n_groups; i++) {
        const grp *g = &b->groups[i];
        if (!g->active) continue;
        for (uint32_t k = 0; k < b->o->n_samples_per_prompt; k++)
            m += g->slots[k].g.rid && !g->slots[k].res;
    }
    return m;
}

static void prompt_of(buf *b, const grp *g, Quench__Prompt *pr) {
    const qn_bd_prompt *p = &b->data.v[g->data_index];
    quench__prompt__init(pr);
    pr->prompt_id = g->data_index;
    pr->epoch = (uint32_t)(g->gid / b->data.n);
    pr->tokens = p->tokens;
    pr->n_tokens = p->n_tokens;
    pr->text = p->text;
    pr->label = p->label;
    pr->metadata_json = p->metadata;
}

/* --partial-rollout, at the end of a rollout (after the aborts were answered
 * or DRAIN_S passed): every group still active becomes an encoded
 * Envelope{Group} in b->carry. A sample keeps what it has: a finished result
 * as it is; an aborted one its tokens with finish reason abort (length when
 * it already has the whole budget); one without an answer its earlier prefix
 * or nothing. */
static qn_status carry_groups(buf *b) {
    uint32_t n = b->o->n_samples_per_prompt;
    Quench__Sample *smp = calloc(n, sizeof *smp);
    Quench__Sample **smpp = calloc(n, sizeof *smpp);
    qn_status st = QN_OK;
    if (!smp || !smpp) st = qn_fail(QN_ERR_NOMEM, "buffer: partial groups");
    for (size_t i = 0; st == QN_OK && i < b->n_groups; i++) {
        grp *g = &b->groups[i];
        if (!g->active) continue;
        for (uint32_t k = 0; k < n; k++) {
            quench__sample__init(&smp[k]);
            smp[k].group_id = g->gid;
            smp[k].index = k;
            smp[k].finish_reason = QUENCH__FINISH_REASON__FINISH_REASON_ABORT;
            const slot *sl = &g->slots[k];
            const Quench__Envelope *e = sl->res ? sl->res : sl->prefix;
            /* an abort answered by the router's queue has no tokens, not even the prefix */
            if (sl->res && sl->prefix &&
                sl->res->generate_result->finish_reason ==
                    QUENCH__FINISH_REASON__FINISH_REASON_ABORT &&
                sl->res->generate_result->n_output_ids < sl->prefix->generate_result->n_output_ids)
                e = sl->prefix;
            if (e) {
                const Quench__GenerateResult *r = e->generate_result;
                smp[k].response_tokens = r->output_ids;
                smp[k].n_response_tokens = r->n_output_ids;
                smp[k].rollout_logprobs = r->output_logprobs;
                smp[k].n_rollout_logprobs = r->n_output_logprobs;
                smp[k].weight_versions = r->weight_versions;
                smp[k].n_weight_versions = r->n_weight_versions;
                if (e == sl->res) smp[k].finish_reason = r->finish_reason;
                if (smp[k].finish_reason == QUENCH__FINISH_REASON__FINISH_REASON_ABORT &&
                    r->n_output_ids >= b->o->max_response_len)
                    smp[k].finish_reason = QUENCH__FINISH_REASON__FINISH_REASON_LENGTH;
            }
            smpp[k] = &smp[k];
        }
        Quench__Prompt pr;
        prompt_of(b, g, &pr);
        Quench__Group gr = QUENCH__GROUP__INIT;
        gr.group_id = g->gid;
        gr.rollout_id = b->next + 1;
        gr.prompt = &pr;
        gr.samples = smpp;
        gr.n_samples = n;
        Quench__Envelope env = qn_envelope_group(&gr);
        kept_group kg = {0};
        st = qn_envelope_encode_alloc(&env, 0, "buffer", &kg.bytes, &kg.len);
        if (st != QN_OK) break;
        kept_group *nc = realloc(b->carry, (b->n_carry + 1) * sizeof *nc);
        if (!nc) {
            free(kg.bytes);
            st = qn_fail(QN_ERR_NOMEM, "buffer: partial groups");
            break;
        }
        b->carry = nc;
        b->carry[b->n_carry++] = kg;
        b->st.carried++;
        group_clear(g, n);
    }
    free(smp);
    free(smpp);
    return st;
}

/* An owned copy of a GenerateResult made from a carried sample. */
static qn_status result_of(const Quench__Sample *sm, uint64_t gid, uint32_t k,
                           Quench__Envelope **out) {
    Quench__GenerateResult r = QUENCH__GENERATE_RESULT__INIT;
    r.group_id = gid;
    r.sample_index = k;
    r.output_ids = sm->response_tokens;
    r.n_output_ids = sm->n_response_tokens;
    r.output_logprobs = sm->rollout_logprobs;
    r.n_output_logprobs = sm->n_rollout_logprobs;
    r.weight_versions = sm->weight_versions;
    r.n_weight_versions = sm->n_weight_versions;
    r.finish_reason = sm->finish_reason;
    Quench__Envelope env = qn_envelope_generate_result(&r);
    uint8_t *bytes = NULL;
    size_t len = 0;
    QN_CHECK(qn_envelope_encode_alloc(&env, 0, "buffer", &bytes, &len));
    qn_status st = qn_envelope_decode(bytes, len, 0, out);
    free(bytes);
    return st;
}

/* Scores a complete group, computes advantages, filters it, and keeps it
 * (encoded) when it passes. Returns an error only for fatal conditions. */
static qn_status group_done(buf *b, grp *g) {
    uint32_t n = b->o->n_samples_per_prompt;
    const qn_bd_prompt *p = &b->data.v[g->data_index];
    qn_reward_sample *rs = calloc(n, sizeof *rs);
    qn_reward_score *sc = calloc(n, sizeof *sc);
    char **texts = calloc(n, sizeof *texts);
    double *rew = calloc(n, sizeof *rew), *adv = calloc(n, sizeof *adv);
    int64_t *gids = calloc(n, sizeof *gids);
    Quench__Sample *smp = calloc(n, sizeof *smp);
    Quench__Sample **smpp = calloc(n, sizeof *smpp);
    qn_status st = QN_OK;
    if (!rs || !sc || !texts || !rew || !adv || !gids || !smp || !smpp) {
        st = qn_fail(QN_ERR_NOMEM, "buffer: scoring group %" PRIu64, g->gid);
        goto out;
    }
    for (uint32_t k = 0; k < n; k++) {
        const Quench__GenerateResult *r = g->slots[k].res->generate_result;
        texts[k] = qn_gen_response_text(b->tok, r->output_ids, r->n_output_ids);
        if (!texts[k]) {
            st = qn_fail(QN_ERR_NOMEM, "buffer: scoring");
            goto out;
        }
        rs[k] = qn_gen_reward_sample(p, r, texts[k]);
        rs[k].sample_index = k;
    }
    uint32_t gsize = n;
    bool kept = true;
    qn_reward_batch batch = {.samples = rs,
                             .n_samples = n,
                             .group_sizes = &gsize,
                             .n_groups = 1,
                             .scores = sc,
                             .group_kept = &kept};
    st = qn_reward_score_batch(b->rw, &batch);
    if (st != QN_OK) goto out;
    if (!kept) {
        b->st.reward_dropped++;
        QN_LOG_WARN("buffer: group %" PRIu64 " (%s:%ld) dropped: reward failed (%s)", g->gid,
                    b->o->data.path, p->line, sc[0].message[0] ? sc[0].message : "see above");
        goto out;
    }
    bool all_equal = true;
    for (uint32_t k = 0; k < n; k++) {
        rew[k] = sc[k].value;
        gids[k] = 0;
        if (k && rew[k] != rew[0]) all_equal = false;
    }
    if (b->o->filter_nonzero_std && all_equal) {
        b->st.filtered++;
        goto out;
    }
    st = qn_adv_grpo(rew, gids, n, b->o->normalize_std, adv);
    if (st != QN_OK) goto out;
    if (b->n_kept >= b->o->rollout_batch_size) goto out; /* enough already */

    Quench__Prompt pr = QUENCH__PROMPT__INIT;
    pr.prompt_id = g->data_index;
    pr.epoch = (uint32_t)(g->gid / b->data.n);
    pr.tokens = p->tokens;
    pr.n_tokens = p->n_tokens;
    pr.text = p->text;
    pr.label = p->label;
    pr.metadata_json = p->metadata;
    for (uint32_t k = 0; k < n; k++) {
        const Quench__GenerateResult *r = g->slots[k].res->generate_result;
        quench__sample__init(&smp[k]);
        smp[k].group_id = g->gid;
        smp[k].index = k;
        smp[k].response_tokens = r->output_ids;
        smp[k].n_response_tokens = r->n_output_ids;
        smp[k].rollout_logprobs = r->output_logprobs;
        smp[k].n_rollout_logprobs = r->n_output_logprobs;
        smp[k].weight_versions = r->weight_versions;
        smp[k].n_weight_versions = r->n_weight_versions;
        smp[k].finish_reason = r->finish_reason;
        smp[k].reward = rew[k];
        smp[k].advantage = adv[k];
        smp[k].response_text = texts[k];
        smp[k].reward_status = (char *)qn_reward_status_str(sc[k].status);
        smpp[k] = &smp[k];
        uint64_t len = r->n_output_ids;
        b->st.reward_sum += rew[k];
        b->st.adv_sum += adv[k];
        b->st.resp_tokens += len;
        if (b->st.samples == 0 || len < b->st.len_min) b->st.len_min = len;
        if (len > b->st.len_max) b->st.len_max = len;
        b->st.samples++;
        if (r->finish_reason == QUENCH__FINISH_REASON__FINISH_REASON_LENGTH) b->st.truncated++;
    }
    Quench__Group gr = QUENCH__GROUP__INIT;
    gr.group_id = g->gid;
    gr.rollout_id = b->next;
    gr.prompt = &pr;
    gr.samples = smpp;
    gr.n_samples = n;
    Quench__Envelope env = qn_envelope_group(&gr);
    kept_group kg = {0};
    st = qn_envelope_encode_alloc(&env, 0, "buffer", &kg.bytes, &kg.len);
    if (st != QN_OK) goto out;
    kept_group *nk = realloc(b->kept, (b->n_kept + 1) * sizeof *nk);
    if (!nk) {
        free(kg.bytes);
        st = qn_fail(QN_ERR_NOMEM, "buffer: keeping group");
        goto out;
    }
    b->kept = nk;
    b->kept[b->n_kept++] = kg;
    double t = qn_now_s();
    if (b->n_kept == 1 || t - b->progress_at >= 5.0) {
        b->progress_at = t; /* first group, then every 5 s: long rollouts show they move */
        QN_LOG_INFO("buffer: rollout %" PRIu64 ": %zu/%u groups ready", b->next, b->n_kept,
                    b->o->rollout_batch_size);
    }
out:
    if (texts)
        for (uint32_t k = 0; k < n; k++)
            free(texts[k]);
    free(rs);
    free(sc);
    free(texts);
    free(rew);
    free(adv);
    free(gids);
    free(smp);
    free(smpp);
    group_clear(g, n);
    return st;
}

/* --max-staleness: whether a complete group has a token from a version older
 * than the job's current one minus K (the version read from Redis at most
 * every VERSION_POLL_S; no key: nothing is stale). *oldest: its oldest. */
static qn_status group_stale(buf *b, const grp *g, bool *stale, uint64_t *oldest) {
    *stale = false;
    if (b->o->max_staleness < 0) return QN_OK;
    double t = qn_now_s();
    if (t - b->version_at >= VERSION_POLL_S) {
        QN_CHECK(qn_redis_get_u64(b->redis, "weight_version", &b->cur_version, &b->have_version));
        b->version_at = t;
    }
    uint64_t k = (uint64_t)b->o->max_staleness;
    if (!b->have_version || b->cur_version <= k) return QN_OK;
    uint64_t min_ok = b->cur_version - k;
    for (uint32_t s = 0; s < b->o->n_samples_per_prompt; s++) {
        const Quench__GenerateResult *r = g->slots[s].res->generate_result;
        for (size_t i = 0; i < r->n_weight_versions; i++)
            if (r->weight_versions[i] < min_ok && (!*stale || r->weight_versions[i] < *oldest)) {
                *stale = true;
                *oldest = r->weight_versions[i];
            }
    }
    return QN_OK;
}

/* A group whose samples all answered: scored and kept, or with a stale token
 * generated again from scratch (a new attempt of the same draw). */
static qn_status group_complete(buf *b, grp *g) {
    bool stale;
    uint64_t oldest = 0;
    QN_CHECK(group_stale(b, g, &stale, &oldest));
    if (!stale) return group_done(b, g);
    b->st.stale++;
    double t = qn_now_s();
    if (t - b->stale_log_at >= 1.0) { /* at most a line a second: it can loop */
        b->stale_log_at = t;
        QN_LOG_WARN("buffer: group %" PRIu64 " is stale (a token of weight version %" PRIu64
                    ", the job is at %" PRIu64 ", --max-staleness %" PRId64
                    "); generating it again (%" PRIu64 " stale groups in this rollout)",
                    g->gid, oldest, b->cur_version, b->o->max_staleness, b->st.stale);
    }
    uint32_t n = b->o->n_samples_per_prompt;
    for (uint32_t k = 0; k < n; k++) {
        slot *s = &g->slots[k];
        qn_envelope_free(s->res);
        qn_envelope_free(s->prefix);
        memset(s, 0, sizeof *s);
    }
    g->n_done = 0;
    for (uint32_t k = 0; k < n; k++)
        send_sample(b, g, k);
    return QN_OK;
}

/* --partial-rollout, at the start of a rollout: the groups carried from the
 * last one are launched first; finished samples are kept, aborted ones are
 * sent again with their tokens as prefix_output_ids. */
static qn_status resume_carried(buf *b) {
    uint32_t n = b->o->n_samples_per_prompt;
    qn_status st = QN_OK;
    for (size_t i = 0; st == QN_OK && i < b->n_carry; i++) {
        Quench__Envelope *env = NULL;
        st = qn_envelope_decode(b->carry[i].bytes, b->carry[i].len, 0, &env);
        if (st != QN_OK) break;
        const Quench__Group *gr = env->group;
        if (env->body_case != QUENCH__ENVELOPE__BODY_GROUP || gr->n_samples != n) {
            QN_LOG_WARN("buffer: unfinished group %" PRIu64 " has %zu samples, not %u "
                        "(--n-samples-per-prompt changed); it is not continued",
                        gr ? gr->group_id : 0, gr ? gr->n_samples : 0, n);
            qn_envelope_free(env);
            continue;
        }
        grp *g = new_group(b);
        if (g) g->slots = calloc(n, sizeof *g->slots);
        if (!g || !g->slots) {
            qn_envelope_free(env);
            st = qn_fail(QN_ERR_NOMEM, "buffer: groups");
            break;
        }
        g->active = true;
        g->gid = gr->group_id;
        g->data_index = qn_bd_index(&b->data, g->gid);
        for (uint32_t k = 0; st == QN_OK && k < n; k++) {
            const Quench__Sample *sm = gr->samples[k];
            bool partial = sm->finish_reason == QUENCH__FINISH_REASON__FINISH_REASON_ABORT;
            if (partial && sm->n_response_tokens == 0) continue; /* from scratch */
            Quench__Envelope *r = NULL;
            st = result_of(sm, g->gid, k, &r);
            if (st != QN_OK) break;
            if (partial) {
                g->slots[k].prefix = r;
            } else {
                g->slots[k].res = r;
                g->n_done++;
            }
        }
        qn_envelope_free(env);
        if (st != QN_OK) break;
        if (g->n_done == n) {
            /* finished during the last drain: scored now unless the batch is full (then it
             * is carried on again when this rollout ends) */
            if (b->n_kept < b->o->rollout_batch_size) st = group_complete(b, g);
            continue;
        }
        if (b->n_kept >= b->o->rollout_batch_size) continue; /* carried on as it is */
        for (uint32_t k = 0; k < n; k++) {
            if (g->slots[k].res) continue;
            b->st.continued += g->slots[k].prefix != NULL;
            send_sample(b, g, k);
        }
    }
    carry_free(b);
    return st;
}

static qn_status on_result(buf *b, Quench__Envelope *env, uint64_t rid) {
    const Quench__GenerateResult *r = env->generate_result;
    uint32_t n = b->o->n_samples_per_prompt;
    grp *g = NULL;
    for (size_t i = 0; i < b->n_groups && !g; i++)
        if (b->groups[i].active && b->groups[i].gid == r->group_id) g = &b->groups[i];
    if (!g || r->sample_index >= n || g->slots[r->sample_index].g.rid != rid ||
        g->slots[r->sample_index].res) {
        qn_envelope_free(env); /* stale: an earlier attempt, an aborted group, a dead buffer's */
        return QN_OK;
    }
    slot *s = &g->slots[r->sample_index];
    if (r->error && r->error[0] && b->draining) {
        s->g.rid = 0; /* carried with what it had before */
        qn_envelope_free(env);
        return QN_OK;
    }
    if (r->error && r->error[0]) {
        double delay;
        if (qn_gen_slot_refused(&s->g, &delay)) {
            QN_LOG_WARN("buffer: group %" PRIu64 " sample %u refused %u times (last: %s); "
                        "group dropped",
                        g->gid, r->sample_index, s->g.errors, r->error);
            b->st.failed++;
            qn_envelope_free(env);
            group_clear(g, n);
            return QN_OK;
        }
        QN_LOG_WARN("buffer: group %" PRIu64 " sample %u refused (%s); retrying in %.1f s", g->gid,
                    r->sample_index, r->error, delay);
        qn_envelope_free(env);
        return QN_OK;
    }
    s->res = env;
    if (++g->n_done == n && !b->draining) return group_complete(b, g);
    return QN_OK;
}

/* Sends what is due: samples waiting for a retry, and ones not answered
 * within --request-timeout-s (or all unanswered ones after the router came
 * back: it forgot them). */
static void resend_due(buf *b, bool all) {
    double t = qn_now_s();
    for (size_t i = 0; i < b->n_groups; i++) {
        grp *g = &b->groups[i];
        if (!g->active) continue;
        for (uint32_t k = 0; k < b->o->n_samples_per_prompt; k++) {
            const slot *s = &g->slots[k];
            if (s->res) continue;
            qn_gen_due d = qn_gen_slot_due(&s->g, t, all, b->o->request_timeout_s);
            if (d == QN_GEN_TIMED_OUT)
                QN_LOG_WARN("buffer: group %" PRIu64 " sample %u: no answer in %.0f s; "
                            "sending it again",
                            g->gid, k, t - s->g.sent_at);
            if (d != QN_GEN_WAIT) send_sample(b, g, k);
        }
    }
}

static void emit_metrics(buf *b, double secs) {
    cJSON *j = cJSON_CreateObject();
    const stats *s = &b->st;
    double ns = s->samples ? (double)s->samples : 1.0;
    cJSON_AddNumberToObject(j, "rollout_id", (double)b->next);
    cJSON_AddNumberToObject(j, "rollout/raw_reward", s->reward_sum / ns);
    cJSON_AddNumberToObject(j, "rollout/advantages", s->adv_sum / ns);
    cJSON_AddNumberToObject(j, "rollout/response_len/mean", (double)s->resp_tokens / ns);
    cJSON_AddNumberToObject(j, "rollout/response_len/max", (double)s->len_max);
    cJSON_AddNumberToObject(j, "rollout/response_len/min", (double)s->len_min);
    cJSON_AddNumberToObject(j, "rollout/truncated_ratio", (double)s->truncated / ns);
    cJSON_AddNumberToObject(j, "rollout/samples", (double)s->samples);
    cJSON_AddNumberToObject(j, "rollout/sampled_groups", (double)s->launched);
    cJSON_AddNumberToObject(j, "rollout/dynamic_filter/dropped_groups", (double)s->filtered);
    cJSON_AddNumberToObject(j, "rollout/reward_failed_groups", (double)s->reward_dropped);
    cJSON_AddNumberToObject(j, "rollout/generate_failed_groups", (double)s->failed);
    cJSON_AddNumberToObject(j, "rollout/aborted_groups", (double)s->aborted);
    cJSON_AddNumberToObject(j, "rollout/stale_groups", (double)s->stale);
    if (b->o->partial_rollout) {
        cJSON_AddNumberToObject(j, "rollout/partial_rollout/carried_groups", (double)s->carried);
        cJSON_AddNumberToObject(j, "rollout/partial_rollout/continued_samples",
                                (double)s->continued);
    }
    cJSON_AddNumberToObject(j, "rollout/data_cursor", (double)b->launch_cursor);
    cJSON_AddNumberToObject(j, "rollout/epoch", (double)(b->launch_cursor / b->data.n));
    cJSON_AddNumberToObject(j, "perf/rollout_time", secs);
    cJSON_AddNumberToObject(j, "perf/rollout_tokens_per_s",
                            secs > 0 ? (double)s->resp_tokens / secs : 0.0);
    if (qn_metrics_write_json(b->metrics_fd >= 0 ? b->metrics_fd : STDERR_FILENO, j) != QN_OK)
        QN_LOG_WARN("buffer: writing the metrics line to %s: %s",
                    b->o->metrics_file ? b->o->metrics_file : "stderr", qn_last_error());
    cJSON_Delete(j);
}

/* ------------------------------------------------------------------ trainers */

static void send_error(buf *b, const uint8_t *id, size_t idlen, uint64_t rid, qn_status code,
                       const char *msg) {
    Quench__Error e = QUENCH__ERROR__INIT;
    e.status = code;
    e.message = (char *)msg;
    Quench__Envelope env = qn_envelope_error(&e);
    if (qn_zsend(b->listener, id, idlen, &env, rid, "buffer") != QN_OK)
        QN_LOG_WARN("buffer: answering a trainer: %s", qn_last_error());
}

static qn_status redis_hset_world(buf *b, uint64_t r, uint32_t world) {
    char sfx[64], key[512], k_ckpt[512];
    snprintf(sfx, sizeof sfx, "acks:%" PRIu64, r);
    qn_redis_key(b->redis, key, sizeof key, sfx);
    qn_redis_key(b->redis, k_ckpt, sizeof k_ckpt, "ckpt");
    QN_CHECK(qn_redis_command(b->redis, NULL, "HSET %s world %u", key, world));
    return qn_redis_command(b->redis, NULL, "HSET %s world %u", k_ckpt, world);
}

/* Answers one rank's request for a persisted rollout, from Redis. */
static qn_status serve(buf *b, const waiter *w) {
    char sfx[64], key[512];
    snprintf(sfx, sizeof sfx, "rollout:%" PRIu64, w->rollout_id);
    qn_redis_key(b->redis, key, sizeof key, sfx);
    redisReply *rep = NULL;
    QN_CHECK(qn_redis_command(b->redis, &rep, "GET %s", key));
    if (rep->type != REDIS_REPLY_STRING) {
        freeReplyObject(rep);
        char msg[256];
        snprintf(msg, sizeof msg,
                 "rollout %" PRIu64 " is no longer held: every rank acknowledged it and "
                 "has it in a checkpoint",
                 w->rollout_id);
        send_error(b, w->identity, w->identity_len, w->rid, QN_ERR_NOT_FOUND, msg);
        return QN_OK;
    }
    parsed_blob pb;
    qn_status st = blob_parse((const uint8_t *)rep->str, rep->len, w->rollout_id, &pb);
    freeReplyObject(rep);
    if (st != QN_OK) {
        QN_LOG_ERROR("buffer: %s", qn_last_error());
        send_error(b, w->identity, w->identity_len, w->rid, st, qn_last_error());
        return QN_OK;
    }
    size_t total = 0;
    for (size_t i = 0; i < pb.n; i++)
        total += pb.groups[i]->group->n_samples;
    /* contiguous shares in group order: rank k gets [k*T/W, (k+1)*T/W) */
    size_t lo = (size_t)((uint64_t)total * w->rank / w->world_size);
    size_t hi = (size_t)((uint64_t)total * (w->rank + 1) / w->world_size);
    size_t m = hi - lo;
    Quench__TrainSample *ts = calloc(m ? m : 1, sizeof *ts);
    Quench__TrainSample **tsp = calloc(m ? m : 1, sizeof *tsp);
    int32_t **toks = calloc(m ? m : 1, sizeof *toks);
    if (!ts || !tsp || !toks) {
        st = qn_fail(QN_ERR_NOMEM, "buffer: serving rollout %" PRIu64, w->rollout_id);
        goto out;
    }
    size_t idx = 0, j = 0;
    for (size_t i = 0; i < pb.n; i++) {
        const Quench__Group *gr = pb.groups[i]->group;
        for (size_t k = 0; k < gr->n_samples; k++, idx++) {
            if (idx < lo || idx >= hi) continue;
            const Quench__Sample *s = gr->samples[k];
            size_t np = gr->prompt->n_tokens, nr = s->n_response_tokens;
            toks[j] = malloc((np + nr) * sizeof **toks);
            if (!toks[j]) {
                st = qn_fail(QN_ERR_NOMEM, "buffer: serving");
                goto out;
            }
            memcpy(toks[j], gr->prompt->tokens, np * sizeof **toks);
            if (nr) memcpy(toks[j] + np, s->response_tokens, nr * sizeof **toks);
            quench__train_sample__init(&ts[j]);
            ts[j].tokens = toks[j];
            ts[j].n_tokens = np + nr;
            ts[j].response_start = (uint32_t)np;
            ts[j].group_id = s->group_id;
            ts[j].reward = s->reward;
            ts[j].advantage = s->advantage;
            if (s->n_rollout_logprobs == nr) {
                ts[j].rollout_logprobs = s->rollout_logprobs;
                ts[j].n_rollout_logprobs = s->n_rollout_logprobs;
            }
            tsp[j] = &ts[j];
            j++;
        }
    }
    Quench__TrainBatch tb = QUENCH__TRAIN_BATCH__INIT;
    tb.rollout_id = w->rollout_id;
    tb.rank = w->rank;
    tb.world_size = w->world_size;
    tb.samples = tsp;
    tb.n_samples = m;
    tb.data_cursor = pb.cursor;
    Quench__Envelope env = qn_envelope_train_batch(&tb);
    st = redis_hset_world(b, w->rollout_id, w->world_size);
    if (st != QN_OK) goto out;
    if (qn_zsend(b->listener, w->identity, w->identity_len, &env, w->rid, "buffer") != QN_OK)
        QN_LOG_WARN("buffer: sending rollout %" PRIu64 " to rank %u: %s", w->rollout_id, w->rank,
                    qn_last_error());
out:
    if (toks)
        for (size_t i = 0; i < m; i++)
            free(toks[i]);
    free(toks);
    free(ts);
    free(tsp);
    parsed_free(&pb);
    return st;
}

static qn_status on_ack(buf *b, const qn_zmsg *msg) {
    const Quench__TrainBatchAck *a = msg->env->train_batch_ack;
    uint64_t r = a->rollout_id;
    if (a->checkpointed) { /* the mark only grows: acks may come again after a resume */
        char k_ckpt[512];
        qn_redis_key(b->redis, k_ckpt, sizeof k_ckpt, "ckpt");
        redisReply *rep = NULL;
        QN_CHECK(qn_redis_command(b->redis, &rep, "HGET %s rank:%u", k_ckpt, a->rank));
        uint64_t mark = rep->type == REDIS_REPLY_STRING ? strtoull(rep->str, NULL, 10) : 0;
        freeReplyObject(rep);
        if (mark < r + 1)
            QN_CHECK(qn_redis_command(b->redis, NULL, "HSET %s rank:%u %" PRIu64, k_ckpt, a->rank,
                                      r + 1));
    }
    if (r >= b->low && r < b->next) { /* held: an ack for a deleted one makes no acks:<r> */
        char sfx[64], k_acks[512];
        snprintf(sfx, sizeof sfx, "acks:%" PRIu64, r);
        qn_redis_key(b->redis, k_acks, sizeof k_acks, sfx);
        QN_CHECK(qn_redis_command(b->redis, NULL, "HSET %s rank:%u %" PRIu64, k_acks, a->rank,
                                  a->checkpoint_step));
        uint64_t ranks, world;
        QN_CHECK(acks_of(b, r, &ranks, &world));
        QN_LOG_INFO("buffer: rollout %" PRIu64 ": rank %u acknowledged (step %" PRIu64
                    "%s; %" PRIu64 "/%" PRIu64 " ranks)",
                    r, a->rank, a->checkpoint_step, a->checkpointed ? ", checkpointed" : "", ranks,
                    world);
    } else {
        QN_LOG_INFO("buffer: rollout %" PRIu64 " (not held): rank %u acknowledged (step %" PRIu64
                    "%s)",
                    r, a->rank, a->checkpoint_step, a->checkpointed ? ", checkpointed" : "");
    }
    QN_CHECK(settle(b));
    /* confirm: the ack is recorded */
    Quench__TrainBatchAck echo = *a;
    Quench__Envelope env = qn_envelope_train_batch_ack(&echo);
    (void)qn_zsend(b->listener, msg->identity, msg->identity_len, &env, msg->env->request_id,
                   "buffer");
    return QN_OK;
}

static qn_status on_trainer(buf *b, const qn_zmsg *msg) {
    const Quench__Envelope *env = msg->env;
    if (env->body_case == QUENCH__ENVELOPE__BODY_TRAIN_BATCH_ACK) return on_ack(b, msg);
    if (env->body_case != QUENCH__ENVELOPE__BODY_TRAIN_BATCH_REQUEST) {
        char m[128];
        snprintf(m, sizeof m, "the buffer takes TrainBatchRequest and TrainBatchAck, not %s",
                 qn_envelope_body_name(env->body_case));
        send_error(b, msg->identity, msg->identity_len, env->request_id, QN_ERR_UNSUPPORTED, m);
        return QN_OK;
    }
    const Quench__TrainBatchRequest *q = env->train_batch_request;
    if (q->world_size == 0 || q->rank >= q->world_size) { /* the codec refuses these too */
        char m[128];
        snprintf(m, sizeof m, "rank %u is not below world_size %u", q->rank, q->world_size);
        send_error(b, msg->identity, msg->identity_len, env->request_id, QN_ERR_RANGE, m);
        return QN_OK;
    }
    waiter w = {.identity_len = msg->identity_len,
                .rid = env->request_id,
                .rollout_id = q->rollout_id,
                .rank = q->rank,
                .world_size = q->world_size};
    memcpy(w.identity, msg->identity, msg->identity_len);
    if (q->rollout_id < b->next) return serve(b, &w);
    if (b->o->num_rollout && q->rollout_id >= b->o->num_rollout) {
        char m[160];
        snprintf(m, sizeof m, "rollout %" PRIu64 " will not be made (--num-rollout %" PRIu64 ")",
                 q->rollout_id, b->o->num_rollout);
        send_error(b, msg->identity, msg->identity_len, env->request_id, QN_ERR_RANGE, m);
        return QN_OK;
    }
    if (b->n_waiters >= MAX_WAITERS) {
        send_error(b, msg->identity, msg->identity_len, env->request_id, QN_ERR_TOO_LARGE,
                   "too many trainer requests waiting");
        return QN_OK;
    }
    b->waiters[b->n_waiters++] = w;
    return QN_OK;
}

static qn_status answer_waiters(buf *b) {
    size_t j = 0;
    for (size_t i = 0; i < b->n_waiters; i++) {
        if (b->waiters[i].rollout_id < b->next)
            QN_CHECK(serve(b, &b->waiters[i]));
        else
            b->waiters[j++] = b->waiters[i];
    }
    b->n_waiters = j;
    return QN_OK;
}

/* ------------------------------------------------------------------ the loop */

static qn_status finish_rollout(buf *b) {
    uint8_t *pblob = NULL;
    size_t plen = 0;
    if (b->o->partial_rollout) {
        /* the aborted samples answer with the tokens they have: wait for them (bounded) */
        if (!b->draining) {
            b->draining = true;
            b->drain_until = qn_now_s() + DRAIN_S;
            size_t m = send_aborts(b);
            if (m)
                QN_LOG_INFO("buffer: rollout %" PRIu64 ": %zu samples aborted, waiting for "
                            "their partial outputs",
                            b->next, m);
        }
        size_t m = in_flight(b);
        if (m && qn_now_s() < b->drain_until) return QN_OK;
        if (m)
            QN_LOG_WARN("buffer: rollout %" PRIu64 ": %zu aborted samples did not answer in "
                        "%.0f s; they keep what they had before",
                        b->next, m, DRAIN_S);
        b->draining = false;
        QN_CHECK(carry_groups(b));
        QN_CHECK(blob_make(b, b->carry, b->n_carry, &pblob, &plen));
    } else {
        abort_all(b);
    }
    uint8_t *blob = NULL;
    size_t len = 0;
    qn_status st = blob_make(b, b->kept, b->n_kept, &blob, &len);
    if (st == QN_OK) st = persist(b, blob, len, pblob, plen);
    free(blob);
    free(pblob);
    if (st != QN_OK) return st;
    double secs = qn_now_s() - b->started;
    QN_LOG_INFO("buffer: rollout %" PRIu64 " persisted: %zu groups, data cursor %" PRIu64
                ", %.2f s",
                b->next, b->n_kept, b->launch_cursor, secs);
    emit_metrics(b, secs);
    for (size_t i = 0; i < b->n_kept; i++)
        free(b->kept[i].bytes);
    b->n_kept = 0;
    b->cursor = b->launch_cursor;
    b->next++;
    b->making = false;
    return answer_waiters(b);
}

static qn_status start_rollout(buf *b) {
    b->making = true;
    b->launch_cursor = b->cursor;
    b->started = qn_now_s();
    memset(&b->st, 0, sizeof b->st);
    QN_LOG_INFO("buffer: rollout %" PRIu64 ": generating from data cursor %" PRIu64, b->next,
                b->cursor);
    return resume_carried(b);
}

static qn_status write_port_file(buf *b) {
    if (!b->o->port_file) return QN_OK;
    char ep[256], tmp[1024];
    QN_CHECK(qn_zsock_endpoint(b->listener, ep, sizeof ep));
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", b->o->port_file, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return qn_fail(QN_ERR_IO, "%s: %s", tmp, strerror(errno));
    fprintf(f, "zmq=%s\n", ep);
    if (fclose(f) != 0 || rename(tmp, b->o->port_file) != 0)
        return qn_fail(QN_ERR_IO, "%s: %s", b->o->port_file, strerror(errno));
    return QN_OK;
}

static qn_status setup(buf *b) {
    const qn_buffer_opts *o = b->o;
    QN_CHECK(qn_bd_open(&b->data, &o->data, o->tokenizer_dir, &b->tok));
    qn_reward_config rc = qn_reward_config_default();
    rc.rm_type = o->reward;
    rc.failure = QN_REWARD_FAILURE_DROP;
    rc.timeout_s = o->reward_timeout_s;
    rc.n_workers = (int32_t)o->reward_workers;
    QN_CHECK(qn_reward_isolation_parse(o->reward_isolation, &rc.isolation));
    QN_CHECK(qn_reward_init(&b->rw, &rc));
    /* Redis errors name the URL already ("Redis unix:///...: cannot connect: ...") */
    QN_CHECK(qn_redis_connect(o->redis_url, o->job, 5000, &b->redis));
    QN_CHECK(load_state(b));
    if (o->partial_rollout) QN_CHECK(load_partial(b));
    if (o->metrics_file) QN_CHECK(qn_metrics_open_append(o->metrics_file, &b->metrics_fd));
    b->waiters = calloc(MAX_WAITERS, sizeof *b->waiters);
    if (!b->waiters) return qn_fail(QN_ERR_NOMEM, "buffer");
    b->ctx = zmq_ctx_new();
    if (!b->ctx) return qn_fail(QN_ERR_NET, "zmq_ctx_new: %s", zmq_strerror(errno));
    QN_CHECK(qn_zsock_open(b->ctx, ZMQ_ROUTER, o->listen, true, NULL, &b->listener));
    QN_CHECK(qn_gen_client_open(&b->gc, b->ctx, "buffer", o->router, o->job));
    return write_port_file(b);
}

static void teardown(buf *b) {
    if (b->groups)
        for (size_t i = 0; i < b->n_groups; i++)
            if (b->groups[i].active) group_clear(&b->groups[i], b->o->n_samples_per_prompt);
    free(b->groups);
    for (size_t i = 0; i < b->n_kept; i++)
        free(b->kept[i].bytes);
    free(b->kept);
    carry_free(b);
    free(b->waiters);
    qn_gen_client_close(&b->gc);
    qn_zsock_close(b->listener);
    if (b->ctx) zmq_ctx_term(b->ctx);
    if (b->metrics_fd >= 0) close(b->metrics_fd);
    qn_redis_free(b->redis);
    qn_reward_free(b->rw);
    qn_bd_free(&b->data);
    qn_tokenizer_free(b->tok);
}

static bool may_start(const buf *b) {
    if (b->o->num_rollout && b->next >= b->o->num_rollout) return false;
    if (b->o->max_rollouts_ahead && b->next >= b->floor + b->o->max_rollouts_ahead) return false;
    return true;
}

static qn_status step(buf *b) {
    if (!b->making && may_start(b)) QN_CHECK(start_rollout(b));
    if (b->making && b->n_kept >= b->o->rollout_batch_size) QN_CHECK(finish_rollout(b));
    if (b->making && !b->draining) {
        /* keep enough groups going that the batch can still fill */
        while (b->n_kept + active_groups(b) < b->o->rollout_batch_size)
            QN_CHECK(launch(b, b->o->over_sampling_batch_size));
        resend_due(b, false);
    }
    zmq_pollitem_t items[3] = {{b->gc.dealer, 0, ZMQ_POLLIN, 0},
                               {b->listener, 0, ZMQ_POLLIN, 0},
                               {b->gc.mon, 0, ZMQ_POLLIN, 0}};
    if (zmq_poll(items, 3, 100) < 0) {
        if (errno == EINTR) return QN_OK;
        return qn_fail(QN_ERR_NET, "zmq_poll: %s", zmq_strerror(errno));
    }
    /* after a lost connection the router may have restarted and forgotten what was in flight */
    if ((items[2].revents & ZMQ_POLLIN) && qn_gen_client_on_monitor(&b->gc) && b->making &&
        !b->draining)
        resend_due(b, true);
    for (int i = 0; i < 256 && (items[0].revents & ZMQ_POLLIN); i++) {
        Quench__Envelope *env = NULL;
        if (qn_gen_client_recv(&b->gc, &env) == QN_ERR_TIMEOUT) break;
        if (env && b->making)
            QN_CHECK(on_result(b, env, env->request_id));
        else
            qn_envelope_free(env);
        if (b->making && b->n_kept >= b->o->rollout_batch_size) QN_CHECK(finish_rollout(b));
    }
    for (int i = 0; i < 64 && (items[1].revents & ZMQ_POLLIN); i++) {
        qn_zmsg m = {0};
        qn_status st = qn_zrecv(b->listener, true, 0, &m);
        if (st == QN_ERR_TIMEOUT) break;
        if (st != QN_OK) {
            /* garbage, a truncated envelope, a request the codec refuses (rank >=
             * world_size): answered with an Error under request id 0 (its own cannot be
             * trusted) when the sender is known, logged at most once a second */
            char why[256];
            snprintf(why, sizeof why, "malformed message: %s", qn_last_error());
            b->bad_msgs++;
            double t = qn_now_s();
            if (t - b->bad_log_at >= 1.0) {
                b->bad_log_at = t;
                QN_LOG_WARN("buffer: bad message from trainer '%s' (%" PRIu64 " so far): %s",
                            (char *)m.identity, b->bad_msgs, why);
            }
            if (m.identity_len > 0)
                send_error(b, m.identity, m.identity_len, 0, st < 0 ? st : QN_ERR_FORMAT, why);
            continue;
        }
        st = on_trainer(b, &m);
        qn_zmsg_clear(&m);
        QN_CHECK(st);
    }
    return QN_OK;
}

qn_status qn_buffer_run(const qn_buffer_opts *o) {
    buf b;
    memset(&b, 0, sizeof b);
    b.o = o;
    b.metrics_fd = -1;
    qn_stop_signal_catch();
    qn_status st = setup(&b);
    if (st == QN_OK)
        QN_LOG_INFO("buffer: job '%s', router %s, trainers at %s, %u groups x %u samples per "
                    "rollout",
                    o->job, o->router, o->listen, o->rollout_batch_size, o->n_samples_per_prompt);
    while (st == QN_OK && !qn_stop_signal_seen()) {
        st = step(&b);
        if (o->num_rollout && b.floor >= o->num_rollout) {
            QN_LOG_INFO("buffer: %" PRIu64 " rollouts made and acknowledged; exiting",
                        o->num_rollout);
            break;
        }
    }
    if (st == QN_OK && qn_stop_signal_seen())
        QN_LOG_INFO("buffer: stopping; rollout %" PRIu64 " will be regenerated on restart", b.next);
    teardown(&b);
    return st;
}
