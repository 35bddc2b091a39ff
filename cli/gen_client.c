/* gen_client.c — the buffer's and eval's router client (contract in
 * cli/gen_client.h). Leaves out: what gen_client.h leaves to the callers. */
#include "cli/gen_client.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/tokenizer/tokenizer.h"
#include "net/zchan.h"

#define MAX_LOG_GAP_S 60.0

bool qn_log_backoff_due(qn_log_backoff *l, double *gap) {
    double t = qn_now_s();
    if (t < l->next_at) return false;
    *gap = l->n >= 6 ? MAX_LOG_GAP_S : (double)(1u << l->n);
    l->n++;
    l->next_at = t + *gap;
    return true;
}

/* ------------------------------------------------------------------ the connection */

qn_status qn_gen_client_open(qn_gen_client *c, void *ctx, const char *who, const char *router,
                             const char *job) {
    memset(c, 0, sizeof *c);
    c->who = who;
    c->router = router;
    snprintf(c->identity, sizeof c->identity, "%s-%s-%d", who, job, (int)getpid());
    QN_CHECK(qn_zsock_open(ctx, ZMQ_DEALER, router, false, c->identity, &c->dealer));
    char mon_ep[96];
    snprintf(mon_ep, sizeof mon_ep, "inproc://qn-%s-monitor", who);
    if (zmq_socket_monitor(c->dealer, mon_ep,
                           ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED |
                               ZMQ_EVENT_CONNECT_RETRIED) != 0)
        return qn_fail(QN_ERR_NET, "zmq_socket_monitor: %s", zmq_strerror(errno));
    c->mon = zmq_socket(ctx, ZMQ_PAIR);
    if (!c->mon || zmq_connect(c->mon, mon_ep) != 0)
        return qn_fail(QN_ERR_NET, "monitor socket: %s", zmq_strerror(errno));
    return QN_OK;
}

void qn_gen_client_close(qn_gen_client *c) {
    if (c->dealer) zmq_socket_monitor(c->dealer, NULL, 0);
    if (c->mon) zmq_close(c->mon);
    qn_zsock_close(c->dealer);
    c->mon = c->dealer = NULL;
}

bool qn_gen_client_on_monitor(qn_gen_client *c) {
    bool back = false;
    zmq_msg_t m1, m2;
    zmq_msg_init(&m1);
    zmq_msg_init(&m2);
    if (zmq_msg_recv(&m1, c->mon, ZMQ_DONTWAIT) < 0) goto done;
    if (zmq_msg_more(&m1)) zmq_msg_recv(&m2, c->mon, 0);
    if (zmq_msg_size(&m1) < 6) goto done;
    uint16_t evt;
    memcpy(&evt, zmq_msg_data(&m1), 2);
    double gap;
    if (evt == ZMQ_EVENT_CONNECTED) {
        if (!c->up && c->unreachable.n > 0)
            QN_LOG_INFO("%s: router %s reachable", c->who, c->router);
        c->up = true;
        c->unreachable = (qn_log_backoff){0};
        back = c->lost;
        c->lost = false;
    } else if (evt == ZMQ_EVENT_DISCONNECTED) {
        c->up = false;
        c->lost = true;
        c->unreachable = (qn_log_backoff){.n = 1, .next_at = qn_now_s() + 1.0};
        QN_LOG_WARN("%s: router %s: connection lost; reconnecting (requests in flight will "
                    "be sent again)",
                    c->who, c->router);
    } else if (evt == ZMQ_EVENT_CONNECT_RETRIED && !c->up &&
               qn_log_backoff_due(&c->unreachable, &gap)) {
        QN_LOG_WARN("%s: router %s unreachable; retrying (next message in %.0f s)", c->who,
                    c->router, gap);
    }
done:
    zmq_msg_close(&m1);
    zmq_msg_close(&m2);
    return back;
}

qn_status qn_gen_client_recv(qn_gen_client *c, Quench__Envelope **out) {
    *out = NULL;
    qn_zmsg m = {0};
    qn_status st = qn_zrecv(c->dealer, false, 0, &m);
    if (st == QN_ERR_TIMEOUT) return st;
    if (st != QN_OK) {
        QN_LOG_WARN("%s: bad message from the router: %s", c->who, qn_last_error());
        return QN_OK;
    }
    Quench__Envelope *env = m.env;
    if (env->body_case == QUENCH__ENVELOPE__BODY_GENERATE_RESULT) {
        *out = env;
        return QN_OK;
    }
    if (env->body_case == QUENCH__ENVELOPE__BODY_ERROR)
        QN_LOG_WARN("%s: router: %s", c->who, env->error->message);
    qn_envelope_free(env);
    return QN_OK;
}

/* ------------------------------------------------------------------ requests */

void qn_gen_sampling(Quench__SamplingParams *sp, double temperature, double top_p,
                     uint32_t max_new_tokens, uint64_t seed, uint64_t group, uint32_t sample) {
    quench__sampling_params__init(sp);
    sp->temperature = (float)temperature;
    sp->top_p = (float)top_p;
    sp->max_new_tokens = (int32_t)max_new_tokens;
    sp->n = 1;
    sp->has_seed = true;
    sp->seed = seed * 0x9E3779B97F4A7C15ull ^ (group << 16) ^ sample;
}

void qn_gen_client_send(qn_gen_client *c, qn_gen_slot *s, const Quench__GenerateRequest *rq) {
    Quench__Envelope env = qn_envelope_generate_request((Quench__GenerateRequest *)rq);
    uint64_t rid = ++c->rid_counter;
    if (qn_zsend(c->dealer, NULL, 0, &env, rid, c->identity) != QN_OK) {
        s->rid = 0; /* the socket's queue is full (router away): try again shortly */
        s->retry_at = qn_now_s() + 0.5;
        return;
    }
    s->rid = rid;
    s->sent_at = qn_now_s();
}

qn_gen_due qn_gen_slot_due(const qn_gen_slot *s, double now, bool all, double timeout_s) {
    if (s->rid == 0) return now >= s->retry_at ? QN_GEN_RETRY : QN_GEN_WAIT;
    if (all) return QN_GEN_RESEND;
    return now - s->sent_at > timeout_s ? QN_GEN_TIMED_OUT : QN_GEN_WAIT;
}

bool qn_gen_slot_refused(qn_gen_slot *s, double *delay) {
    s->errors++;
    s->rid = 0;
    *delay = 0.1 * (double)(1u << (s->errors < 7 ? s->errors : 7));
    s->retry_at = qn_now_s() + *delay;
    return s->errors >= QN_GEN_MAX_SAMPLE_ERRORS;
}

static void abort_send(qn_gen_client *c, qn_gen_aborts *a) {
    Quench__AbortRequest ar = QUENCH__ABORT_REQUEST__INIT;
    ar.request_ids = a->ids;
    ar.n_request_ids = a->n;
    Quench__Envelope env = qn_envelope_abort_request(&ar);
    (void)qn_zsend(c->dealer, NULL, 0, &env, ++c->rid_counter, c->identity);
    a->n = 0;
}

void qn_gen_abort_add(qn_gen_client *c, qn_gen_aborts *a, uint64_t rid) {
    a->ids[a->n++] = rid;
    a->total++;
    if (a->n == sizeof a->ids / sizeof a->ids[0]) abort_send(c, a);
}

size_t qn_gen_abort_flush(qn_gen_client *c, qn_gen_aborts *a) {
    if (a->n) abort_send(c, a);
    return a->total;
}

/* ------------------------------------------------------------------ for the reward */

char *qn_gen_response_text(const qn_tokenizer *tok, const int32_t *ids, size_t n) {
    char *s = NULL;
    if (tok) {
        size_t len = 0;
        if (qn_tokenizer_decode_text(tok, ids, n, true, &s, &len) != QN_OK) s = NULL;
        return s ? s : calloc(1, 1); /* a response that does not decode scores as "" */
    }
    size_t cap = n * 12 + 1, k = 0;
    s = malloc(cap);
    if (!s) return NULL;
    s[0] = '\0';
    for (size_t i = 0; i < n; i++)
        k += (size_t)snprintf(s + k, cap - k, "%s%" PRId32, i ? " " : "", ids[i]);
    return s;
}

qn_reward_sample qn_gen_reward_sample(const qn_bd_prompt *p, const Quench__GenerateResult *g,
                                      const char *response) {
    const char *fr = qn_proto_finish_name(g->finish_reason);
    return (qn_reward_sample){.prompt = p->text,
                              .prompt_len = strlen(p->text),
                              .prompt_ids = p->tokens,
                              .n_prompt_ids = p->n_tokens,
                              .response = response,
                              .response_len = strlen(response),
                              .response_ids = g->output_ids,
                              .n_response_ids = g->n_output_ids,
                              .label = p->label,
                              .metadata_json = p->metadata,
                              .finish_reason = fr ? fr : ""};
}
