/* gen_client.h — the router client that `quench buffer` and `quench eval`
 * share: a DEALER to the router watched by a socket monitor (connection up,
 * lost, unreachable; logged with backoff), one GenerateRequest per sample
 * slot with its retry and timeout bookkeeping, AbortRequests in batches,
 * and what a GenerateResult becomes for the reward (the response text and
 * the qn_reward_sample).
 *
 * Leaves out: each service's policy. Which slots exist, when they are sent
 * again (qn_gen_slot_due says what is due), and what a sample refused for
 * good costs (the buffer drops its group, eval scores it 0) stay with the
 * callers. */
#ifndef QN_CLI_GEN_CLIENT_H
#define QN_CLI_GEN_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cli/buffer_data.h"
#include "net/codec.h"
#include "quench/status.h"
#include "rewards/rewards.h"

/* A sample refused (GenerateResult.error) this many times is given up. */
#define QN_GEN_MAX_SAMPLE_ERRORS 8

/* "...; next message in X s" bookkeeping of one unreachable thing. */
typedef struct qn_log_backoff {
    uint32_t n; /* messages so far */
    double next_at;
} qn_log_backoff;

/* Whether a message is due now (then *gap is the time to the next one);
 * spaces the messages 1, 2, 4 ... 32, 60, 60 ... s apart. Reset it with
 * (qn_log_backoff){0} once the thing is back. */
bool qn_log_backoff_due(qn_log_backoff *l, double *gap);

/* One sample's request to the router. */
typedef struct qn_gen_slot {
    uint64_t rid;    /* envelope id of the attempt in flight; 0: not sent */
    double sent_at;  /* when rid was sent */
    double retry_at; /* when rid == 0: send not before this */
    uint32_t errors; /* refusals so far */
} qn_gen_slot;

typedef struct qn_gen_client {
    const char *who;    /* "buffer", "eval": names the service in logs */
    const char *router; /* the endpoint, for logs */
    void *dealer, *mon;
    char identity[128];
    bool up;   /* connected now */
    bool lost; /* a connection was lost and has not come back yet */
    qn_log_backoff unreachable;
    uint64_t rid_counter; /* envelope ids: every message sent gets the next one */
} qn_gen_client;

/* Connects a DEALER (identity "<who>-<job>-<pid>") to router in ctx, with a
 * monitor on inproc://qn-<who>-monitor. who and router must outlive c. On
 * failure c holds what was made: qn_gen_client_close frees it. */
qn_status qn_gen_client_open(qn_gen_client *c, void *ctx, const char *who, const char *router,
                             const char *job);
/* Closes the sockets (not ctx). A zeroed c is fine. */
void qn_gen_client_close(qn_gen_client *c);

/* Reads one monitor event (call when c->mon is readable) and logs it.
 * Returns true when the connection came back after it had been lost: the
 * router may have restarted and forgotten what was in flight, so the caller
 * sends every unanswered request again (requests queued before the first
 * connection are still delivered). */
bool qn_gen_client_on_monitor(qn_gen_client *c);

/* Takes one message from the dealer without waiting. QN_ERR_TIMEOUT when
 * none is queued; otherwise QN_OK with *out a GenerateResult (the caller
 * owns it) or NULL when the message was something else (an Error is
 * logged, a malformed message too, and both are dropped). */
qn_status qn_gen_client_recv(qn_gen_client *c, Quench__Envelope **out);

/* Fills sp for one sample: temperature, top_p, max_new_tokens, n = 1 and a
 * seed made from (seed, group, sample), so that asking the same question
 * again draws the same answer. */
void qn_gen_sampling(Quench__SamplingParams *sp, double temperature, double top_p,
                     uint32_t max_new_tokens, uint64_t seed, uint64_t group, uint32_t sample);

/* Sends rq as the next attempt of slot s. When the socket refuses (its
 * queue is full: the router is away) s is due again in 0.5 s (rid 0). */
void qn_gen_client_send(qn_gen_client *c, qn_gen_slot *s, const Quench__GenerateRequest *rq);

typedef enum qn_gen_due {
    QN_GEN_WAIT,      /* nothing to do */
    QN_GEN_RETRY,     /* refused or never sent, and its retry time has come */
    QN_GEN_TIMED_OUT, /* sent, unanswered for longer than the timeout (worth a warning) */
    QN_GEN_RESEND,    /* sent and unanswered, and every such one is to go again (all) */
} qn_gen_due;

/* What is due for an unanswered slot at time now: all asks for every
 * request in flight (after the router connection came back). */
qn_gen_due qn_gen_slot_due(const qn_gen_slot *s, double now, bool all, double timeout_s);

/* Books a refusal of slot s's attempt: returns true when it has now been
 * refused QN_GEN_MAX_SAMPLE_ERRORS times (give it up); otherwise it is due
 * again after *delay seconds (0.2, 0.4 ... 12.8 s). */
bool qn_gen_slot_refused(qn_gen_slot *s, double *delay);

/* AbortRequests for many request ids, sent 256 ids a message. */
typedef struct qn_gen_aborts {
    uint64_t ids[256];
    size_t n;     /* ids not sent yet */
    size_t total; /* ids added in all */
} qn_gen_aborts;
void qn_gen_abort_add(qn_gen_client *c, qn_gen_aborts *a, uint64_t rid);
/* Sends what is left; returns the total of ids added. */
size_t qn_gen_abort_flush(qn_gen_client *c, qn_gen_aborts *a);

/* The response as text for the reward: decoded without special tokens with
 * tok, or the ids as decimal numbers separated by spaces without one; ""
 * when decoding fails. Caller frees; NULL only when out of memory. */
char *qn_gen_response_text(const qn_tokenizer *tok, const int32_t *ids, size_t n);

/* The reward's view of result g of prompt p with its response text
 * (group_index and sample_index 0: the caller sets them). Points into p, g
 * and response: they must outlive the scoring. */
qn_reward_sample qn_gen_reward_sample(const qn_bd_prompt *p, const Quench__GenerateResult *g,
                                      const char *response);

#endif
