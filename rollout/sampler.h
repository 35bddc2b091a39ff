/* sampler.h — per-request token sampling from one logits row, and the stop
 * conditions of a request.
 *
 * Legend: V vocabulary size.
 *
 * Sampling a row (qn_sampler_sample):
 *   temperature 0 (greedy): the argmax, ties to the lowest token id; the
 *     other filters are ignored.
 *   temperature T > 0: p = softmax(logits / T) over the FULL vocabulary, in
 *     double. Then top-k, top-p and min-p are all evaluated on that same p and
 *     intersected (SGLang's semantics: its torch path and flashinfer's "joint"
 *     order): with the tokens sorted by p descending (ties: lower id first),
 *       top-k keeps the first k;
 *       top-p keeps token j iff the mass of the tokens before j is < top_p
 *         (the smallest prefix whose mass reaches top_p; SGLang's torch path
 *         compares with <=, which differs only on exact ties);
 *       min-p keeps tokens with p >= min_p * max(p).
 *     Each keeps a prefix of the sorted order, so the order in which they are
 *     applied does not matter and the top token always survives. Tokens with
 *     p = 0 (logit -inf, or exp underflow) are never kept. The kept
 *     tokens are renormalised and one is drawn by inverse CDF. (vLLM differs:
 *     it computes top-p on the distribution already renormalised after
 *     min-p/top-k, so the same params can keep more tokens there.)
 *
 * Randomness: the draw for output step t (0 for the first generated token)
 * of sample i (the i-th of the n samples of a prompt) of a request with seed
 * s is a 53-bit uniform built from the Philox words
 *     qn_rng_u32(s, QN_SAMPLER_STREAM(i), 2t) and (.., 2t + 1)
 * (core/rng.h), so a request's tokens depend only on (logits, params, s, i,
 * t), never on the batch it ran in or on the order rows are sampled. The
 * engine assigns a seed to requests that come without one.
 *
 * Log-prob: the returned logprob is log softmax(logits / T)[token] over the
 * full vocabulary, without top-k/top-p/min-p renormalisation (the quantity
 * the trainer recomputes), computed stably in double. For greedy it is taken
 * at T = 1: SGLang turns temperature 0 into temperature 1 with top_k = 1,
 * and its all-greedy path returns log_softmax(logits), so the trainer
 * (which divides by --rollout-temperature) matches when that is 1.
 *
 * Logits must be finite or -inf (a masked token); NaN or +inf is an error,
 * and so is a row with no finite logit.
 *
 * Stop conditions (checked by the engine after each sampled token, in this
 * order): a stop token id -> "stop" (the token is part of the output); a
 * stop string that ends inside the text the token added -> "stop" (the
 * engine cuts the text at the match); max_new_tokens reached -> "length".
 * "abort" is set by the engine. The EOS token is one of the stop token ids
 * unless the request ignores EOS; that is the engine's decision.
 *
 * Not here: repetition/frequency/presence penalties, logit bias, grammar
 * masks, top logprobs, beam search, GPU sampling kernels. */
#ifndef QN_ROLLOUT_SAMPLER_H
#define QN_ROLLOUT_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "quench/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The Philox stream of sample i: a tag in the high 32 bits keeps sampling draws apart from
 * other users of a seed. i must be < 2^32. */
#define QN_SAMPLER_STREAM(i) ((UINT64_C(0x53414d50) << 32) | (uint64_t)(uint32_t)(i))

typedef enum qn_finish_reason {
    QN_FINISH_NONE = 0,   /* still running */
    QN_FINISH_STOP = 1,   /* stop token id or stop string */
    QN_FINISH_LENGTH = 2, /* max_new_tokens (or the context) reached */
    QN_FINISH_ABORT = 3,  /* aborted by the client or the engine */
} qn_finish_reason;

/* "stop", "length", "abort"; "" for QN_FINISH_NONE and unknown values. */
const char *qn_finish_reason_str(qn_finish_reason r);

typedef struct qn_sampling_params {
    float temperature;      /* >= 0, finite; 0 = greedy */
    float top_p;            /* (0, 1]; 1 = off */
    int32_t top_k;          /* -1 = off, or >= 1 (0 is refused, as in SGLang) */
    float min_p;            /* [0, 1]; 0 = off */
    int32_t max_new_tokens; /* >= 0 */
    uint64_t seed;
    const int32_t *stop_token_ids; /* [n_stop_token_ids], each in [0, V) */
    int32_t n_stop_token_ids;
    const char *const *stop; /* [n_stop] non-empty NUL-terminated stop strings */
    int32_t n_stop;
} qn_sampling_params;

/* temperature 1, top_p 1, top_k -1, min_p 0, max_new_tokens 128, seed 0, no stops. */
qn_sampling_params qn_sampling_params_default(void);

/* Checks every field against the ranges above for a vocabulary of vocab_size tokens.
 * QN_ERR_RANGE (or QN_ERR_INVALID for NULL pointers) with a message naming the field, its
 * value and the accepted range, e.g. "top_p = 1.5: must be in (0, 1]". */
qn_status qn_sampling_params_validate(const qn_sampling_params *p, int32_t vocab_size);

typedef struct qn_sample_result {
    int32_t token;
    double logprob; /* log softmax(logits / T)[token], T = 1 for greedy */
    int32_t n_kept; /* tokens left after top-k/top-p/min-p (1 for greedy) */
} qn_sample_result;

/* Scratch for sampling rows of V logits: O(V) memory allocated once, so sampling allocates
 * nothing. One sampler per thread. */
typedef struct qn_sampler qn_sampler;
qn_status qn_sampler_init(qn_sampler **out, int32_t vocab_size);
void qn_sampler_free(qn_sampler *s); /* NULL ok */

/* Samples one token from logits[0..V) with params p for sample index `sample_index` at output
 * step `step` (see the header comment for how the draw is keyed). Validates p. On error *out
 * is untouched. */
qn_status qn_sampler_sample(qn_sampler *s, const float *logits, const qn_sampling_params *p,
                            uint32_t sample_index, uint64_t step, qn_sample_result *out);

/* The same with the uniform u in [0, 1) given explicitly (tests, and engines that draw their
 * own numbers): the token is the first of the kept tokens, in sorted order when a filter is
 * on and in id order otherwise, whose cumulative renormalised mass exceeds u. */
qn_status qn_sampler_sample_u(qn_sampler *s, const float *logits, const qn_sampling_params *p,
                              double u, qn_sample_result *out);

/* The uniform qn_sampler_sample uses: 53 bits from two Philox words. */
double qn_sampler_uniform(uint64_t seed, uint32_t sample_index, uint64_t step);

/* One row per request: row r uses logits + r * V, *params[r], sample_index[r], step[r]. Each
 * row's result equals qn_sampler_sample on that row alone. Stops at the first failing row
 * (returning its error; earlier rows are filled). */
qn_status qn_sampler_sample_batch(qn_sampler *s, const float *logits, int32_t n_rows,
                                  const qn_sampling_params *const *params,
                                  const uint32_t *sample_index, const uint64_t *step,
                                  qn_sample_result *out);

/* 1 if token is one of p's stop token ids. */
int qn_sampler_is_stop_token(const qn_sampling_params *p, int32_t token);

/* Looks for a stop string that ENDS within the last new_len bytes of text[0..len) (the bytes
 * the latest token added to the decoded output; len may be just a tail of the output as long
 * as it keeps qn_stop_strings_tail_bytes(p) - 1 bytes before the new ones). Returns 1 and sets
 * *match_at to the offset in text where the earliest-ending match begins (the engine cuts the
 * output text there), else 0. */
int qn_stop_strings_find(const qn_sampling_params *p, const char *text, size_t len, size_t new_len,
                         size_t *match_at);

/* The longest stop string's length in bytes (0 without stop strings). */
size_t qn_stop_strings_tail_bytes(const qn_sampling_params *p);

/* The finish decision after a token: token is the sampled token, n_generated the number of
 * output tokens including it; text/len/new_len as for qn_stop_strings_find (text may be NULL
 * when p has no stop strings). Returns QN_FINISH_STOP, QN_FINISH_LENGTH or QN_FINISH_NONE
 * (stop token first, then stop string, then length); *match_at is set for a stop-string stop
 * (and left alone otherwise). */
qn_finish_reason qn_sampler_check_finish(const qn_sampling_params *p, int32_t token,
                                         int32_t n_generated, const char *text, size_t len,
                                         size_t new_len, size_t *match_at);

#ifdef __cplusplus
}
#endif
#endif /* QN_ROLLOUT_SAMPLER_H */
