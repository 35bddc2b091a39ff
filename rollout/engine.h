/* engine.h — the rollout engine: continuous batching over a paged KV cache on
 * the shared model core.
 *
 * One engine owns a model (fp32 or FP8 weights), a KV cache
 * (rollout/kv_cache.h), an incremental-forward workspace (core/model/infer.h)
 * and one sampler per thread. It is driven by one thread: submit requests,
 * call qn_engine_step() until idle, collect finished requests. Requests may be
 * submitted and aborted between any two steps (continuous batching).
 *
 * Requests and samples. A request is a prompt, sampling params and n >= 1:
 * it produces n samples (the GRPO group), sample i drawing its randomness from
 * Philox stream i of the request's seed (rollout/sampler.h), so a seeded
 * request's tokens depend only on (weights, prompt, params, seed), not on the
 * batch. The prompt is prefilled ONCE: sample 0 prefills it, the first token of
 * every sample is drawn from that last prompt position's logits, and samples
 * 1..n-1 are forked from sample 0 in the KV cache (full blocks shared by
 * reference, the partial last block copied). Across requests, full prompt
 * blocks are shared through the cache's prefix index.
 *
 * A step. (1) Running sequences are collected: one token each when decoding, a
 * chunk of the remaining prompt when prefilling; waiting sequences are
 * admitted oldest first while max_running and the per-step prefill budget
 * (max_prefill_tokens; decode tokens do not count) allow. (2) The KV plan for
 * the step is made; when blocks run out, the youngest running sequence is
 * preempted (its blocks released to the prefix cache, the sequence put back
 * at the head of the waiting queue with prompt + generated tokens, to be
 * recomputed, mostly from cached blocks) and the plan retried; admissions
 * that do not fit wait. (3) One model call, KV commits. (4) For every chunk
 * that reached the end of its sequence's tokens: sample, append, check stop
 * token / stop string / length / context; finished sequences release their
 * blocks. A single sequence whose tokens cannot fit in the whole cache
 * finishes with "length" (it is not preempted forever).
 *
 * Validation at submit (the request is refused with QN_ERR_RANGE or
 * QN_ERR_INVALID and a message; the engine keeps serving the rest): empty
 * prompt, token ids outside the vocabulary, prompt longer than the context
 * (or than the whole cache), sampling params out of range
 * (qn_sampling_params_validate: negative max_new_tokens, top_p outside (0, 1],
 * ...), n outside [1, max_running], stop strings without a tokenizer.
 * max_new_tokens is also capped so that prompt + output fits the context;
 * hitting that cap finishes with "length".
 *
 * Weight version. Every output token records the engine's weight version at
 * the step that produced it (qn_engine_set_weight_version; the services
 * change it between steps).
 *
 * Not here: the services (registration, heartbeats, weight pulls: net/ and
 * the rollout service), speculative decoding, beam search, CUDA. */
#ifndef QN_ROLLOUT_ENGINE_H
#define QN_ROLLOUT_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "core/model/infer.h"
#include "core/model/model.h"
#include "quench/status.h"
#include "rollout/sampler.h"

#ifdef __cplusplus
extern "C" {
#endif

struct qn_tokenizer;

typedef struct qn_engine qn_engine;

typedef struct qn_engine_params {
    int32_t max_running;        /* sequences in the running batch (>= 1) */
    int64_t kv_cache_tokens;    /* KV cache capacity in tokens (rounded up to whole blocks) */
    int32_t block_size;         /* tokens per KV block (>= 1; 16) */
    int32_t max_prefill_tokens; /* prefill tokens per step, summed over sequences (>= 1) */
    int64_t context_len;        /* positions per sequence; 0 = the config's
                                 * max_position_embeddings */
    const int32_t *eos_ids;     /* added to every request's stop ids unless ignore_eos */
    int32_t n_eos;
    const struct qn_tokenizer *tokenizer; /* optional: stop strings need it */
    uint64_t seed;              /* seeds of requests submitted without one come from here */
} qn_engine_params;

/* max_running 256, kv_cache_tokens 65536, block_size 16, max_prefill_tokens 2048,
 * context_len 0, no eos, no tokenizer, seed 0. */
qn_engine_params qn_engine_params_default(void);

/* Creates an engine on model m (kept, not copied: it must outlive the engine;
 * the engine only reads it) with optional FP8 weights f8 (NULL: fp32). */
qn_status qn_engine_create(qn_engine **out, const qn_model *m, const qn_model_fp8 *f8,
                           const qn_engine_params *p);
void qn_engine_free(qn_engine *e); /* NULL ok */

typedef struct qn_engine_request {
    const int32_t *prompt; /* copied at submit */
    int32_t n_prompt;
    qn_sampling_params params; /* copied at submit (stop ids and strings included) */
    int has_seed;              /* 0: the engine picks params.seed */
    int ignore_eos;            /* 1: the engine's eos ids are not added to the stop ids */
    int32_t n;                 /* samples, >= 1 */
    void *user;                /* returned with the output */
} qn_engine_request;

/* Validates and queues a request; *id is its engine-unique id (>= 1). On
 * refusal nothing is queued and qn_last_error() gives the reason. */
qn_status qn_engine_submit(qn_engine *e, const qn_engine_request *r, uint64_t *id);

/* Ends every unfinished sample of request id with finish reason "abort" (their
 * tokens so far are kept); the request then comes out of
 * qn_engine_next_finished. QN_ERR_NOT_FOUND for an unknown or already
 * collected id. */
qn_status qn_engine_abort(qn_engine *e, uint64_t id);

/* Runs one step (see above). *n_tokens (may be NULL) is the number of tokens
 * the model processed (0 when idle). Errors are internal failures (the model
 * call); the engine is then unusable. */
qn_status qn_engine_step(qn_engine *e, int64_t *n_tokens);

/* 1 while any request is queued, running or finished but not collected. */
int qn_engine_busy(const qn_engine *e);

typedef struct qn_engine_sample {
    const int32_t *ids;        /* [n_out] generated tokens (stop token included) */
    const float *logprobs;     /* [n_out] log softmax(logits / T)[token], T = 1 for greedy */
    const int64_t *versions;   /* [n_out] weight version that produced each token */
    int32_t n_out;
    qn_finish_reason finish;
    int32_t stop_match_at;     /* stop-string stop: byte offset in the decoded output text
                                * where the match begins (the text is cut there); else -1 */
} qn_engine_sample;

typedef struct qn_engine_output {
    uint64_t id;
    void *user;
    int32_t n_prompt;
    int64_t cached_tokens;     /* prompt tokens served from the prefix cache or by fork */
    int32_t n_samples;
    const qn_engine_sample *samples; /* [n_samples] */
    double t_submit, t_first_token, t_finish; /* seconds, CLOCK_MONOTONIC */
    uint64_t seed;
} qn_engine_output;

/* Pops the oldest finished request into *out (valid until the next call of
 * this function or qn_engine_free) and returns 1; 0 when none is finished. */
int qn_engine_next_finished(qn_engine *e, qn_engine_output *out);

/* Output so far of sample `sample` of an unfinished or uncollected request (for
 * streaming): ids/logprobs/versions valid until the next step, submit or collect.
 * QN_ERR_NOT_FOUND for an unknown id or sample. */
qn_status qn_engine_peek(const qn_engine *e, uint64_t id, int32_t sample, qn_engine_sample *out);

/* Weight updates, between steps: the caller rewrites the model's weights in place (the
 * engine only reads them during a step), swaps the FP8 copies (NULL for fp32; the engine does
 * not own them), flushes the prefix cache (cached K/V belong to the old weights; sequences in
 * flight keep theirs) and sets the version recorded with every later token. An engine made
 * with FP8 weights swaps to other FP8 copies of the same model; one made without cannot take
 * any (QN_ERR_INVALID). */
qn_status qn_engine_set_fp8(qn_engine *e, const qn_model_fp8 *f8); /* FP8 <-> FP8 only */
qn_status qn_engine_flush_prefix_cache(qn_engine *e);
void qn_engine_set_weight_version(qn_engine *e, int64_t version);
int64_t qn_engine_weight_version(const qn_engine *e);

typedef struct qn_engine_stats {
    int64_t steps;
    int64_t prefill_tokens;   /* tokens computed in chunks that were not single-token decodes */
    int64_t decode_tokens;    /* single-token decode computations */
    int64_t generated_tokens; /* tokens sampled */
    int64_t preemptions;
    int64_t forks;            /* samples started by FORK from their request's first sample */
    int64_t requests_submitted, requests_refused, requests_finished, requests_aborted;
    int32_t running, waiting;
    int64_t kv_blocks_total, kv_blocks_used;
    int64_t prefix_hit_tokens; /* from the KV cache's prefix index */
    size_t kv_bytes_per_token;
} qn_engine_stats;
void qn_engine_get_stats(const qn_engine *e, qn_engine_stats *out);

/* Checks the KV cache's internal consistency (qn_kv_cache_check) and that
 * every running sequence's cached length matches the engine's view. */
qn_status qn_engine_check(const qn_engine *e);

#ifdef __cplusplus
}
#endif
#endif /* QN_ROLLOUT_ENGINE_H */
