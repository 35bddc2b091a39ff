/* engine.c — the rollout engine's scheduler (see engine.h for the contract).
 *
 * State. A request owns n sequences (its samples). A sequence is in one of:
 *   FORK_WAIT  sample i > 0 before sample 0 has finished the prompt;
 *   WAITING    in the waiting queue (new, preempted, or a fork that did not fit),
 *              all of its tokens (prompt + output so far) to be admitted;
 *   RUNNING    holding a KV slot and blocks; `computed` tokens are cached;
 *   DONE       finished (stop, length or abort); holds nothing.
 * A RUNNING sequence has len - computed >= 1 tokens to process: exactly 1 when
 * decoding (the newest sampled token), more while (re)prefilling.
 *
 * KV slots: the cache's sequence ids 0..max_running-1, taken from a free
 * stack on admission or fork and returned on release.
 *
 * Order: requests are numbered on submit; the waiting queue is kept sorted by
 * (request number, sample), so preempted sequences go back ahead of newer
 * ones, and "youngest" for preemption means the largest (request number,
 * sample) among running sequences.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/tokenizer/tokenizer.h"
#include "rollout/engine.h"
#include "rollout/kv_cache.h"
#include "core/clock.h"

enum { SEQ_FORK_WAIT = 0, SEQ_WAITING = 1, SEQ_RUNNING = 2, SEQ_DONE = 3 };

typedef struct ereq ereq;

typedef struct eseq {
    ereq *req;
    int32_t sample;
    int state;
    int32_t slot; /* KV sequence id while RUNNING, else -1 */
    int32_t *tokens; /* prompt + output */
    float *logprobs; /* [output] */
    int64_t *versions;
    int64_t len, cap;
    int64_t computed;
    qn_finish_reason finish;
    int32_t stop_match_at;
    size_t text_len; /* bytes of the output decoded at the last token (stop strings only) */
    /* this step */
    int32_t chunk;
    int32_t logit_row;
    int admitted_now;
} eseq;

struct ereq {
    uint64_t id, order;
    void *user;
    int32_t n_prompt;
    qn_sampling_params params;
    int32_t *stop_ids;
    char **stop_strs;
    int32_t n;
    eseq *seqs;
    int32_t n_done;
    int first_sampled;
    int cached_counted;
    int64_t cached_tokens;
    double t_submit, t_first, t_finish;
    qn_engine_sample *out;
    ereq *next; /* all-requests list */
};

struct qn_engine {
    const qn_model *m;
    const qn_model_fp8 *f8;
    qn_engine_params p;
    int32_t *eos;
    const qn_tokenizer *tok;
    int64_t context_len;
    int32_t vocab;
    qn_kv_cache *kv;
    qn_kv_plan plan;
    qn_kv_op *ops;
    qn_infer_ws *ws;
    float *logits; /* [max_running, V] */
    qn_sampler **samplers; /* [n_threads] */
    int n_samplers;
    qn_sample_result *results; /* [max_running] */
    /* slots */
    int32_t *free_slots, n_free_slots;
    eseq **slot_seq; /* [max_running] */
    /* waiting queue, sorted by (order, sample) */
    eseq **waiting;
    int32_t n_waiting, cap_waiting;
    /* step scratch */
    eseq **batch;
    int32_t n_batch;
    eseq **fork_cand; /* [max_running] */
    int32_t *step_tokens;
    qn_infer_chunk *chunks;
    /* requests */
    ereq *reqs;       /* every request not yet collected, newest first */
    ereq *collected;  /* the last popped, freed on the next pop */
    uint64_t next_id, next_order;
    int64_t version;
    qn_engine_stats st;
};

static uint64_t splitmix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

qn_engine_params qn_engine_params_default(void) {
    qn_engine_params p = {0};
    p.max_running = 256;
    p.kv_cache_tokens = 65536;
    p.block_size = 16;
    p.max_prefill_tokens = 2048;
    return p;
}

/* ------------------------------------------------------------------ lifecycle */

static void req_free(ereq *r) {
    if (!r) return;
    for (int32_t i = 0; i < r->n; i++) {
        free(r->seqs[i].tokens);
        free(r->seqs[i].logprobs);
        free(r->seqs[i].versions);
    }
    free(r->seqs);
    free(r->stop_ids);
    if (r->stop_strs)
        for (int32_t i = 0; i < r->params.n_stop; i++) free(r->stop_strs[i]);
    free(r->stop_strs);
    free(r->out);
    free(r);
}

void qn_engine_free(qn_engine *e) {
    if (!e) return;
    for (ereq *r = e->reqs, *nx; r; r = nx) {
        nx = r->next;
        req_free(r);
    }
    req_free(e->collected);
    qn_kv_cache_free(e->kv);
    qn_kv_plan_free(&e->plan);
    qn_infer_ws_free(e->ws);
    for (int i = 0; i < e->n_samplers; i++) qn_sampler_free(e->samplers[i]);
    free(e->samplers);
    free(e->ops);
    free(e->eos);
    free(e->logits);
    free(e->results);
    free(e->free_slots);
    free(e->slot_seq);
    free(e->waiting);
    free(e->batch);
    free(e->fork_cand);
    free(e->step_tokens);
    free(e->chunks);
    free(e);
}

qn_status qn_engine_create(qn_engine **out, const qn_model *m, const qn_model_fp8 *f8,
                           const qn_engine_params *pp) {
    *out = NULL;
    qn_engine_params p = pp ? *pp : qn_engine_params_default();
    if (p.max_running < 1 || p.block_size < 1 || p.block_size > 64 || p.max_prefill_tokens < 1 ||
        p.kv_cache_tokens < 1 || p.context_len < 0 || p.n_eos < 0)
        return qn_fail(QN_ERR_INVALID, "engine: max_running (%d), block_size (%d, at most 64), "
                       "max_prefill_tokens (%d) and kv_cache_tokens (%lld) must be positive",
                       p.max_running, p.block_size, p.max_prefill_tokens,
                       (long long)p.kv_cache_tokens);
    qn_engine *e = calloc(1, sizeof *e);
    if (!e) return qn_fail(QN_ERR_NOMEM, "engine");
    e->m = m;
    e->f8 = f8;
    e->p = p;
    e->tok = p.tokenizer;
    e->vocab = (int32_t)m->d.vocab;
    e->next_id = 1;
    qn_status s = QN_OK;
    e->context_len = p.context_len ? p.context_len : m->d.max_position;
    if (e->context_len <= 0)
        return qn_engine_free(e),
               qn_fail(QN_ERR_INVALID, "engine: no context length (the config has no "
                       "max_position_embeddings and none was given)");
    if (p.n_eos > 0) {
        e->eos = malloc((size_t)p.n_eos * sizeof(int32_t));
        if (!e->eos) {
            s = qn_fail(QN_ERR_NOMEM, "engine");
            goto fail;
        }
        memcpy(e->eos, p.eos_ids, (size_t)p.n_eos * sizeof(int32_t));
        for (int32_t i = 0; i < p.n_eos; i++)
            if (e->eos[i] < 0 || e->eos[i] >= e->vocab) {
                s = qn_fail(QN_ERR_RANGE, "engine: eos id %d outside the vocabulary [0, %d)",
                            e->eos[i], e->vocab);
                goto fail;
            }
    }
    e->p.eos_ids = e->eos;
    int32_t B = p.block_size;
    int64_t nblocks = (p.kv_cache_tokens + B - 1) / B;
    if (nblocks > INT32_MAX / 2) {
        s = qn_fail(QN_ERR_RANGE, "engine: kv_cache_tokens %lld is too large",
                    (long long)p.kv_cache_tokens);
        goto fail;
    }
    qn_kv_cache_params kp = {.n_layers = (int32_t)m->d.n_layers,
                             .n_kv_heads = (int32_t)m->d.n_kv_heads,
                             .head_dim = (int32_t)m->d.head_dim,
                             .block_size = B,
                             .n_blocks = (int32_t)nblocks,
                             .max_seqs = p.max_running,
                             .max_blocks_per_seq = (int32_t)((e->context_len + B - 1) / B),
                             .alloc_memory = 1};
    QN_CHECK_GOTO(qn_kv_cache_init(&e->kv, &kp), s, fail);
    QN_CHECK_GOTO(qn_kv_plan_init(&e->plan, e->kv, 2 * p.max_running), s, fail);
    int64_t max_tokens = (int64_t)p.max_running + p.max_prefill_tokens;
    QN_CHECK_GOTO(qn_infer_ws_init(&e->ws, m, f8, max_tokens, p.max_running, e->context_len), s,
                  fail);
    e->n_samplers = omp_get_max_threads();
    e->samplers = calloc((size_t)e->n_samplers, sizeof *e->samplers);
    e->ops = calloc((size_t)(2 * p.max_running), sizeof *e->ops);
    e->logits = malloc((size_t)p.max_running * (size_t)e->vocab * sizeof(float));
    e->results = calloc((size_t)p.max_running, sizeof *e->results);
    e->free_slots = malloc((size_t)p.max_running * sizeof(int32_t));
    e->slot_seq = calloc((size_t)p.max_running, sizeof *e->slot_seq);
    e->batch = calloc((size_t)p.max_running, sizeof *e->batch);
    e->fork_cand = calloc((size_t)p.max_running, sizeof *e->fork_cand);
    e->step_tokens = malloc((size_t)max_tokens * sizeof(int32_t));
    e->chunks = calloc((size_t)p.max_running, sizeof *e->chunks);
    if (!e->samplers || !e->ops || !e->logits || !e->results || !e->free_slots ||
        !e->slot_seq || !e->batch || !e->fork_cand || !e->step_tokens || !e->chunks) {
        s = qn_fail(QN_ERR_NOMEM, "engine: buffers for %d running sequences", p.max_running);
        goto fail;
    }
    for (int i = 0; i < e->n_samplers; i++) QN_CHECK_GOTO(qn_sampler_init(&e->samplers[i], e->vocab), s, fail);
    for (int32_t i = 0; i < p.max_running; i++) e->free_slots[i] = p.max_running - 1 - i;
    e->n_free_slots = p.max_running;
    e->st.kv_blocks_total = nblocks;
    e->st.kv_bytes_per_token = qn_kv_bytes_per_token(&kp);
    *out = e;
    return QN_OK;
fail:
    qn_engine_free(e);
    return s;
}

/* ------------------------------------------------------------------ requests */

static qn_status seq_reserve(eseq *q, int64_t need) {
    if (need <= q->cap) return QN_OK;
    int64_t cap = q->cap ? q->cap : 16;
    while (cap < need) cap *= 2;
    int32_t *t = realloc(q->tokens, (size_t)cap * sizeof *t);
    if (!t) return qn_fail(QN_ERR_NOMEM, "engine: sequence tokens");
    q->tokens = t;
    float *lp = realloc(q->logprobs, (size_t)cap * sizeof *lp);
    if (!lp) return qn_fail(QN_ERR_NOMEM, "engine: sequence logprobs");
    q->logprobs = lp;
    int64_t *v = realloc(q->versions, (size_t)cap * sizeof *v);
    if (!v) return qn_fail(QN_ERR_NOMEM, "engine: sequence versions");
    q->versions = v;
    q->cap = cap;
    return QN_OK;
}

static int seq_before(const eseq *a, const eseq *b) {
    return a->req->order < b->req->order ||
           (a->req->order == b->req->order && a->sample < b->sample);
}

static qn_status waiting_push(qn_engine *e, eseq *q) {
    if (e->n_waiting == e->cap_waiting) {
        int32_t cap = e->cap_waiting ? 2 * e->cap_waiting : 64;
        eseq **w = realloc(e->waiting, (size_t)cap * sizeof *w);
        if (!w) return qn_fail(QN_ERR_NOMEM, "engine: waiting queue");
        e->waiting = w;
        e->cap_waiting = cap;
    }
    int32_t i = e->n_waiting;
    while (i > 0 && seq_before(q, e->waiting[i - 1])) {
        e->waiting[i] = e->waiting[i - 1];
        i--;
    }
    e->waiting[i] = q;
    e->n_waiting++;
    q->state = SEQ_WAITING;
    q->slot = -1;
    return QN_OK;
}

static void waiting_remove(qn_engine *e, eseq *q) {
    for (int32_t i = 0; i < e->n_waiting; i++)
        if (e->waiting[i] == q) {
            memmove(e->waiting + i, e->waiting + i + 1,
                    (size_t)(e->n_waiting - i - 1) * sizeof *e->waiting);
            e->n_waiting--;
            return;
        }
}

static void req_maybe_finished(qn_engine *e, ereq *r) {
    (void)e;
    if (r->n_done == r->n && r->t_finish == 0.0) r->t_finish = qn_now_s();
}

/* Ends q with reason f; a RUNNING sequence gives its blocks and slot back. */
static void seq_finish(qn_engine *e, eseq *q, qn_finish_reason f) {
    if (q->state == SEQ_DONE) return;
    if (q->state == SEQ_RUNNING) {
        qn_kv_release(e->kv, q->slot, 0);
        e->slot_seq[q->slot] = NULL;
        e->free_slots[e->n_free_slots++] = q->slot;
        q->slot = -1;
    } else if (q->state == SEQ_WAITING) {
        waiting_remove(e, q);
    }
    q->state = SEQ_DONE;
    q->finish = f;
    q->req->n_done++;
    req_maybe_finished(e, q->req);
}

qn_status qn_engine_submit(qn_engine *e, const qn_engine_request *in, uint64_t *id) {
    e->st.requests_submitted++;
    qn_status s = QN_OK;
    ereq *r = NULL;
    qn_sampling_params sp = in->params;
    if (!in->prompt || in->n_prompt < 1) {
        s = qn_fail(QN_ERR_INVALID, "empty prompt");
        goto refuse;
    }
    for (int32_t i = 0; i < in->n_prompt; i++)
        if (in->prompt[i] < 0 || in->prompt[i] >= e->vocab) {
            s = qn_fail(QN_ERR_RANGE, "prompt token %d at position %d outside the vocabulary "
                        "[0, %d)", in->prompt[i], i, e->vocab);
            goto refuse;
        }
    if (in->n_prompt >= e->context_len) {
        s = qn_fail(QN_ERR_RANGE, "prompt of %d tokens does not fit the context of %lld tokens "
                    "(it needs room for at least one output token)", in->n_prompt,
                    (long long)e->context_len);
        goto refuse;
    }
    int64_t cache_tokens = e->st.kv_blocks_total * e->p.block_size;
    if (in->n_prompt + 1 > cache_tokens) {
        s = qn_fail(QN_ERR_RANGE, "prompt of %d tokens does not fit the KV cache of %lld tokens",
                    in->n_prompt, (long long)cache_tokens);
        goto refuse;
    }
    if (in->n < 1 || in->n > e->p.max_running) {
        s = qn_fail(QN_ERR_RANGE, "n = %d: must be in [1, %d] (max running requests)", in->n,
                    e->p.max_running);
        goto refuse;
    }
    if (sp.n_stop > 0 && !e->tok) {
        s = qn_fail(QN_ERR_INVALID, "stop strings need a tokenizer; the engine has none");
        goto refuse;
    }
    if (!in->has_seed) sp.seed = splitmix(e->p.seed ^ splitmix(e->next_id));
    s = qn_sampling_params_validate(&sp, e->vocab);
    if (s != QN_OK) goto refuse;
    r = calloc(1, sizeof *r);
    if (!r) {
        s = qn_fail(QN_ERR_NOMEM, "engine: request");
        goto refuse;
    }
    r->n = in->n;
    r->user = in->user;
    r->n_prompt = in->n_prompt;
    /* stop ids: the request's, then the engine's eos ids */
    int32_t nstop = sp.n_stop_token_ids + (in->ignore_eos ? 0 : e->p.n_eos);
    r->stop_ids = malloc((size_t)(nstop ? nstop : 1) * sizeof(int32_t));
    r->seqs = calloc((size_t)r->n, sizeof *r->seqs);
    r->out = calloc((size_t)r->n, sizeof *r->out);
    r->stop_strs = sp.n_stop ? calloc((size_t)sp.n_stop, sizeof(char *)) : NULL;
    if (!r->stop_ids || !r->seqs || !r->out || (sp.n_stop && !r->stop_strs)) {
        s = qn_fail(QN_ERR_NOMEM, "engine: request");
        goto refuse;
    }
    if (sp.n_stop_token_ids)
        memcpy(r->stop_ids, sp.stop_token_ids, (size_t)sp.n_stop_token_ids * sizeof(int32_t));
    if (!in->ignore_eos && e->p.n_eos)
        memcpy(r->stop_ids + sp.n_stop_token_ids, e->eos, (size_t)e->p.n_eos * sizeof(int32_t));
    for (int32_t i = 0; i < sp.n_stop; i++)
        if (!(r->stop_strs[i] = strdup(sp.stop[i]))) {
            s = qn_fail(QN_ERR_NOMEM, "engine: request");
            goto refuse;
        }
    r->params = sp;
    r->params.stop_token_ids = r->stop_ids;
    r->params.n_stop_token_ids = nstop;
    r->params.stop = (const char *const *)r->stop_strs;
    /* the output cannot run past the context */
    int64_t room = e->context_len - in->n_prompt;
    if (r->params.max_new_tokens > room) r->params.max_new_tokens = (int32_t)room;
    for (int32_t i = 0; i < r->n; i++) {
        eseq *q = &r->seqs[i];
        q->req = r;
        q->sample = i;
        q->slot = -1;
        q->stop_match_at = -1;
        s = seq_reserve(q, in->n_prompt + 1);
        if (s != QN_OK) goto refuse;
        memcpy(q->tokens, in->prompt, (size_t)in->n_prompt * sizeof(int32_t));
        q->len = in->n_prompt;
    }
    r->id = e->next_id++;
    r->order = e->next_order++;
    r->t_submit = qn_now_s();
    r->next = e->reqs;
    e->reqs = r;
    if (r->params.max_new_tokens == 0) {
        for (int32_t i = 0; i < r->n; i++) {
            r->seqs[i].state = SEQ_DONE;
            r->seqs[i].finish = QN_FINISH_LENGTH;
        }
        r->n_done = r->n;
        req_maybe_finished(e, r);
    } else {
        for (int32_t i = 1; i < r->n; i++) r->seqs[i].state = SEQ_FORK_WAIT;
        QN_CHECK(waiting_push(e, &r->seqs[0]));
    }
    *id = r->id;
    return QN_OK;
refuse:
    req_free(r);
    e->st.requests_refused++;
    return s;
}

static ereq *find_req(qn_engine *e, uint64_t id) {
    for (ereq *r = e->reqs; r; r = r->next)
        if (r->id == id) return r;
    return NULL;
}

qn_status qn_engine_abort(qn_engine *e, uint64_t id) {
    ereq *r = find_req(e, id);
    if (!r) return qn_fail(QN_ERR_NOT_FOUND, "engine: no request %llu (unknown or collected)",
                           (unsigned long long)id);
    if (r->n_done < r->n) e->st.requests_aborted++;
    for (int32_t i = 0; i < r->n; i++) seq_finish(e, &r->seqs[i], QN_FINISH_ABORT);
    return QN_OK;
}

/* ------------------------------------------------------------------ the step */

static qn_status preempt(qn_engine *e, eseq *q) {
    qn_kv_release(e->kv, q->slot, 1);
    e->slot_seq[q->slot] = NULL;
    e->free_slots[e->n_free_slots++] = q->slot;
    q->computed = 0;
    e->st.preemptions++;
    return waiting_push(e, q);
}

/* The youngest RUNNING sequence, or NULL. */
static eseq *youngest_running(qn_engine *e) {
    eseq *y = NULL;
    for (int32_t s = 0; s < e->p.max_running; s++) {
        eseq *q = e->slot_seq[s];
        if (q && (!y || seq_before(y, q))) y = q;
    }
    return y;
}

static void batch_remove(qn_engine *e, eseq *q) {
    for (int32_t i = 0; i < e->n_batch; i++)
        if (e->batch[i] == q) {
            memmove(e->batch + i, e->batch + i + 1, (size_t)(e->n_batch - i - 1) * sizeof(eseq *));
            e->n_batch--;
            return;
        }
}

/* Fills e->ops for the batch (admissions first get ADMIT) and plans. */
static int plan_batch(qn_engine *e, int32_t *n_ops) {
    int32_t k = 0;
    for (int32_t i = 0; i < e->n_batch; i++) {
        eseq *q = e->batch[i];
        if (q->admitted_now)
            e->ops[k++] = (qn_kv_op){.kind = QN_KV_OP_ADMIT, .seq = q->slot, .tokens = q->tokens,
                                     .n_tokens = (int32_t)q->len};
        e->ops[k++] = (qn_kv_op){.kind = QN_KV_OP_RESERVE, .seq = q->slot, .n_tokens = q->chunk};
    }
    *n_ops = k;
    return qn_kv_plan_batch(e->kv, e->ops, k, &e->plan);
}

/* Chooses the step's sequences and makes room for them in the cache (preempting when needed). */
static qn_status schedule(qn_engine *e) {
    int32_t budget = e->p.max_prefill_tokens;
    e->n_batch = 0;
    /* running sequences, oldest first */
    for (int32_t s = 0; s < e->p.max_running; s++) {
        eseq *q = e->slot_seq[s];
        if (!q) continue;
        q->admitted_now = 0;
        int64_t need = q->len - q->computed;
        if (need == 1 && q->len > q->req->n_prompt) {
            q->chunk = 1;
        } else {
            if (budget == 0) continue;
            q->chunk = (int32_t)(need < budget ? need : budget);
            budget -= q->chunk;
        }
        e->batch[e->n_batch++] = q;
    }
    /* keep the batch in age order so preemption and logits rows are deterministic */
    for (int32_t i = 1; i < e->n_batch; i++) {
        eseq *q = e->batch[i];
        int32_t j = i;
        while (j > 0 && seq_before(q, e->batch[j - 1])) {
            e->batch[j] = e->batch[j - 1];
            j--;
        }
        e->batch[j] = q;
    }
    /* admissions from the waiting queue, oldest first */
    int32_t n_admit = 0;
    while (n_admit < e->n_waiting && e->n_free_slots > n_admit && budget > 0) {
        eseq *q = e->waiting[n_admit];
        int32_t hit = qn_kv_prefix_match(e->kv, q->tokens, (int32_t)q->len);
        int64_t rem = q->len - hit;
        q->chunk = (int32_t)(rem < budget ? rem : budget);
        budget -= q->chunk;
        q->slot = e->free_slots[e->n_free_slots - 1 - n_admit];
        q->admitted_now = 1;
        e->batch[e->n_batch++] = q;
        n_admit++;
    }
    for (;;) {
        int32_t n_ops;
        int rc = plan_batch(e, &n_ops);
        if (rc == 0) {
            rc = qn_kv_apply(e->kv, e->ops, n_ops, &e->plan);
            if (rc != 0) return qn_fail(QN_ERR_INTERNAL, "engine: KV apply failed: %s",
                                        qn_last_error());
            break;
        }
        if (rc < 0) return qn_fail(QN_ERR_INTERNAL, "engine: KV plan failed: %s", qn_last_error());
        /* out of blocks: drop the newest admission, else preempt the youngest running */
        if (n_admit > 0) {
            eseq *q = e->batch[e->n_batch - 1];
            q->admitted_now = 0;
            q->slot = -1;
            e->n_batch--;
            n_admit--;
            continue;
        }
        eseq *y = youngest_running(e);
        if (!y) { /* nothing to make room with: run nothing this step */
            e->n_batch = 0;
            break;
        }
        int32_t running = e->p.max_running - e->n_free_slots;
        if (running == 1) {
            /* it alone does not fit in the whole cache: it cannot grow any more */
            batch_remove(e, y);
            seq_finish(e, y, QN_FINISH_LENGTH);
            continue;
        }
        batch_remove(e, y);
        QN_CHECK(preempt(e, y));
    }
    /* admitted sequences take their slots off the free stack and leave the queue */
    for (int32_t i = 0; i < e->n_batch; i++) {
        eseq *q = e->batch[i];
        if (!q->admitted_now) continue;
        e->n_free_slots--;
        e->slot_seq[q->slot] = q;
        q->state = SEQ_RUNNING;
        q->computed = qn_kv_seq_computed(e->kv, q->slot);
        if (q->sample == 0 && !q->req->cached_counted) {
            q->req->cached_tokens += q->computed;
            q->req->cached_counted = 1;
        }
        waiting_remove(e, q);
    }
    /* the slot stack: admitted slots were taken from its top in order */
    return QN_OK;
}

static qn_status seq_accept(qn_engine *e, eseq *q, const qn_sample_result *res);

/* After sample 0 got its first token: give every other sample its first token from the same
 * logits row and fork it from sample 0 where the cache allows; the rest wait for admission. */
static qn_status start_forks(qn_engine *e, ereq *r, const float *row) {
    eseq *parent = &r->seqs[0];
    qn_sampler *smp = e->samplers[0];
    int32_t n_fork = 0;
    for (int32_t i = 1; i < r->n; i++) {
        eseq *q = &r->seqs[i];
        if (q->state != SEQ_FORK_WAIT) continue;
        qn_sample_result res;
        QN_CHECK(qn_sampler_sample(smp, row, &r->params, (uint32_t)i, 0, &res));
        QN_CHECK(seq_accept(e, q, &res));
        if (q->finish != QN_FINISH_NONE) { /* done on its first token: nothing to fork */
            q->state = SEQ_DONE;
            r->n_done++;
            continue;
        }
        q->state = SEQ_WAITING; /* provisional: forked below or queued */
        n_fork++;
    }
    if (n_fork == 0) return QN_OK;
    /* fork as many as slots and blocks allow, in sample order */
    int32_t k = 0;
    eseq **cand = e->fork_cand;
    for (int32_t i = 1; i < r->n && k < e->n_free_slots; i++) {
        eseq *q = &r->seqs[i];
        if (q->state == SEQ_WAITING && parent->state == SEQ_RUNNING) cand[k++] = q;
    }
    while (k > 0) {
        for (int32_t j = 0; j < k; j++)
            e->ops[j] = (qn_kv_op){.kind = QN_KV_OP_FORK, .seq = e->free_slots[e->n_free_slots - 1 - j],
                                   .parent = parent->slot};
        int rc = qn_kv_plan_batch(e->kv, e->ops, k, &e->plan);
        if (rc == 0) {
            if (qn_kv_apply(e->kv, e->ops, k, &e->plan) != 0)
                return qn_fail(QN_ERR_INTERNAL, "engine: KV fork apply failed: %s",
                               qn_last_error());
            break;
        }
        if (rc < 0) return qn_fail(QN_ERR_INTERNAL, "engine: KV fork plan failed: %s",
                                   qn_last_error());
        k--;
    }
    for (int32_t j = 0; j < k; j++) {
        eseq *q = cand[j];
        q->slot = e->free_slots[e->n_free_slots - 1 - j];
        e->slot_seq[q->slot] = q;
        q->state = SEQ_RUNNING;
        q->computed = qn_kv_seq_computed(e->kv, q->slot);
        r->cached_tokens += q->computed;
        e->st.forks++;
    }
    e->n_free_slots -= k;
    for (int32_t i = 1; i < r->n; i++) {
        eseq *q = &r->seqs[i];
        if (q->state == SEQ_WAITING && q->slot < 0) {
            q->state = SEQ_FORK_WAIT; /* so waiting_push does not see it twice */
            QN_CHECK(waiting_push(e, q));
        }
    }
    return QN_OK;
}

/* Decoded output text of q (stop strings only). */
static qn_status seq_text(const qn_engine *e, const eseq *q, int64_t n_out, char **text,
                          size_t *len) {
    return qn_tokenizer_decode(e->tok, q->tokens + q->req->n_prompt, (size_t)n_out, false, text,
                               len);
}

/* Appends a sampled token to q and decides whether q is finished. */
static qn_status seq_accept(qn_engine *e, eseq *q, const qn_sample_result *res) {
    ereq *r = q->req;
    QN_CHECK(seq_reserve(q, q->len + 1));
    int64_t n_out = q->len - r->n_prompt;
    q->tokens[q->len] = res->token;
    q->logprobs[n_out] = (float)res->logprob;
    q->versions[n_out] = e->version;
    q->len++;
    n_out++;
    e->st.generated_tokens++;
    qn_finish_reason f;
    size_t at = 0;
    if (r->params.n_stop > 0) {
        /* byte-level decoding is the concatenation of the tokens' bytes, so the bytes this
         * token added are those past the previous decode's length */
        char *now = NULL;
        size_t ln = 0;
        QN_CHECK(seq_text(e, q, n_out, &now, &ln));
        size_t new_len = ln >= q->text_len ? ln - q->text_len : 0;
        q->text_len = ln;
        f = qn_sampler_check_finish(&r->params, res->token, (int32_t)n_out, now, ln, new_len,
                                    &at);
        free(now);
    } else {
        f = qn_sampler_check_finish(&r->params, res->token, (int32_t)n_out, NULL, 0, 0, NULL);
    }
    if (f == QN_FINISH_NONE && q->len >= e->context_len) f = QN_FINISH_LENGTH;
    if (f != QN_FINISH_NONE) {
        if (f == QN_FINISH_STOP && r->params.n_stop > 0 &&
            !qn_sampler_is_stop_token(&r->params, res->token))
            q->stop_match_at = (int32_t)at;
        q->finish = f; /* seq_finish is called by the caller after forks */
    }
    return QN_OK;
}

qn_status qn_engine_step(qn_engine *e, int64_t *n_tokens) {
    if (n_tokens) *n_tokens = 0;
    QN_CHECK(schedule(e));
    if (e->n_batch == 0) return QN_OK;
    int64_t T = 0;
    int32_t rows = 0;
    for (int32_t i = 0; i < e->n_batch; i++) {
        eseq *q = e->batch[i];
        memcpy(e->step_tokens + T, q->tokens + q->computed, (size_t)q->chunk * sizeof(int32_t));
        T += q->chunk;
        const int32_t *table = NULL;
        qn_kv_seq_blocks(e->kv, q->slot, &table);
        int last = q->computed + q->chunk == q->len;
        e->chunks[i] = (qn_infer_chunk){.pos0 = q->computed, .n = q->chunk, .blocks = table,
                                        .logits = last};
        q->logit_row = last ? rows++ : -1;
    }
    QN_CHECK(qn_model_infer(e->m, e->f8, e->ws,
                            &(qn_kv_view){.arena = qn_kv_block_ptr(e->kv, 0, 0, 0),
                                          .block_size = e->p.block_size,
                                          .n_blocks = (int32_t)e->st.kv_blocks_total},
                            e->step_tokens, T, e->chunks, e->n_batch, e->logits));
    for (int32_t i = 0; i < e->n_batch; i++) {
        eseq *q = e->batch[i];
        QN_CHECK(qn_kv_commit(e->kv, q->slot, q->tokens + q->computed, q->chunk));
        int decode = q->chunk == 1 && q->len > q->req->n_prompt && q->computed == q->len - 1;
        if (decode) e->st.decode_tokens++;
        else e->st.prefill_tokens += q->chunk;
        q->computed += q->chunk;
    }
    e->st.steps++;
    if (n_tokens) *n_tokens = T;
    /* sample every row, in parallel; each draw is keyed by (seed, sample, step) */
    qn_status s = QN_OK;
#pragma omp parallel for schedule(dynamic, 1) if (rows > 1)
    for (int32_t i = 0; i < e->n_batch; i++) {
        eseq *q = e->batch[i];
        if (q->logit_row < 0) continue;
        int tid = omp_get_thread_num();
        if (tid >= e->n_samplers) tid = 0;
        qn_status si = qn_sampler_sample(e->samplers[tid],
                                         e->logits + (size_t)q->logit_row * (size_t)e->vocab,
                                         &q->req->params, (uint32_t)q->sample,
                                         (uint64_t)(q->len - q->req->n_prompt),
                                         &e->results[q->logit_row]);
        if (si != QN_OK) {
#pragma omp critical
            s = si;
        }
    }
    QN_CHECK(s);
    for (int32_t i = 0; i < e->n_batch; i++) {
        eseq *q = e->batch[i];
        if (q->logit_row < 0) continue;
        ereq *r = q->req;
        QN_CHECK(seq_accept(e, q, &e->results[q->logit_row]));
        if (q->sample == 0 && !r->first_sampled) {
            r->first_sampled = 1;
            r->t_first = qn_now_s();
            if (r->n > 1)
                QN_CHECK(start_forks(e, r, e->logits + (size_t)q->logit_row * (size_t)e->vocab));
        }
    }
    for (int32_t i = 0; i < e->n_batch; i++) {
        eseq *q = e->batch[i];
        if (q->state == SEQ_RUNNING && q->finish != QN_FINISH_NONE) {
            qn_finish_reason f = q->finish;
            q->finish = QN_FINISH_NONE;
            seq_finish(e, q, f);
        }
    }
    /* forked children finished on their first token (ids/length) were counted there */
    for (ereq *r = e->reqs; r; r = r->next) req_maybe_finished(e, r);
    return QN_OK;
}

int qn_engine_busy(const qn_engine *e) { return e->reqs != NULL; }

int qn_engine_next_finished(qn_engine *e, qn_engine_output *out) {
    /* the oldest finished request: requests are kept newest first */
    ereq **pp = NULL, *best = NULL;
    for (ereq **it = &e->reqs; *it; it = &(*it)->next)
        if ((*it)->n_done == (*it)->n && (!best || (*it)->t_finish <= best->t_finish)) {
            best = *it;
            pp = it;
        }
    if (!best) return 0;
    *pp = best->next;
    req_free(e->collected);
    e->collected = best;
    ereq *r = best;
    for (int32_t i = 0; i < r->n; i++) {
        eseq *q = &r->seqs[i];
        r->out[i] = (qn_engine_sample){.ids = q->tokens + r->n_prompt,
                                       .logprobs = q->logprobs,
                                       .versions = q->versions,
                                       .n_out = (int32_t)(q->len - r->n_prompt),
                                       .finish = q->finish,
                                       .stop_match_at = q->stop_match_at};
    }
    e->st.requests_finished++;
    *out = (qn_engine_output){.id = r->id,
                              .user = r->user,
                              .n_prompt = r->n_prompt,
                              .cached_tokens = r->cached_tokens,
                              .n_samples = r->n,
                              .samples = r->out,
                              .t_submit = r->t_submit,
                              .t_first_token = r->t_first,
                              .t_finish = r->t_finish,
                              .seed = r->params.seed};
    return 1;
}

qn_status qn_engine_peek(const qn_engine *e, uint64_t id, int32_t sample, qn_engine_sample *out) {
    const ereq *r = NULL;
    for (const ereq *it = e->reqs; it && !r; it = it->next)
        if (it->id == id) r = it;
    if (!r && e->collected && e->collected->id == id) r = e->collected;
    if (!r || sample < 0 || sample >= r->n)
        return qn_fail(QN_ERR_NOT_FOUND, "engine: no request %llu sample %d",
                       (unsigned long long)id, sample);
    const eseq *q = &r->seqs[sample];
    *out = (qn_engine_sample){.ids = q->tokens + r->n_prompt,
                              .logprobs = q->logprobs,
                              .versions = q->versions,
                              .n_out = (int32_t)(q->len - r->n_prompt),
                              .finish = q->state == SEQ_DONE ? q->finish : QN_FINISH_NONE,
                              .stop_match_at = q->stop_match_at};
    return QN_OK;
}

qn_status qn_engine_set_fp8(qn_engine *e, const qn_model_fp8 *f8) {
    if ((e->f8 == NULL) != (f8 == NULL))
        return qn_fail(QN_ERR_INVALID, "engine: FP8 weights can only replace FP8 weights");
    e->f8 = f8;
    return QN_OK;
}

qn_status qn_engine_flush_prefix_cache(qn_engine *e) { return qn_kv_cache_flush_prefix(e->kv); }

void qn_engine_set_weight_version(qn_engine *e, int64_t version) { e->version = version; }
int64_t qn_engine_weight_version(const qn_engine *e) { return e->version; }

void qn_engine_get_stats(const qn_engine *e, qn_engine_stats *out) {
    *out = e->st;
    qn_kv_stats ks;
    qn_kv_cache_stats(e->kv, &ks);
    out->running = e->p.max_running - e->n_free_slots;
    out->waiting = e->n_waiting;
    out->kv_blocks_used = ks.blocks_used;
    out->prefix_hit_tokens = ks.prefix_hit_tokens;
}

qn_status qn_engine_check(const qn_engine *e) {
    QN_CHECK(qn_kv_cache_check(e->kv));
    int32_t running = 0;
    for (int32_t s = 0; s < e->p.max_running; s++) {
        const eseq *q = e->slot_seq[s];
        if (!q) continue;
        running++;
        if (q->state != SEQ_RUNNING || q->slot != s)
            return qn_fail(QN_ERR_INTERNAL, "engine: slot %d holds a sequence in state %d", s,
                           q->state);
        if (qn_kv_seq_computed(e->kv, s) != q->computed)
            return qn_fail(QN_ERR_INTERNAL, "engine: slot %d: cache has %lld tokens, engine "
                           "thinks %lld", s, (long long)qn_kv_seq_computed(e->kv, s),
                           (long long)q->computed);
        if (q->len - q->computed < 1)
            return qn_fail(QN_ERR_INTERNAL, "engine: slot %d has nothing left to compute", s);
    }
    if (running + e->n_free_slots != e->p.max_running)
        return qn_fail(QN_ERR_INTERNAL, "engine: %d running + %d free slots != %d", running,
                       e->n_free_slots, e->p.max_running);
    for (int32_t i = 0; i < e->n_waiting; i++)
        if (e->waiting[i]->state != SEQ_WAITING)
            return qn_fail(QN_ERR_INTERNAL, "engine: waiting sequence in state %d",
                           e->waiting[i]->state);
    return QN_OK;
}
