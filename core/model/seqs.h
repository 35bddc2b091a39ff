/* seqs.h — whole sequences for `quench logprobs` / `quench grad`: read from
 * JSONL, packed greedily (in input order) into micro-batches of at most
 * max_tokens tokens, and run through the model.
 *
 * Leaves out: tokenisation and loss functions (trainer/). */
#ifndef QN_CORE_MODEL_SEQS_H
#define QN_CORE_MODEL_SEQS_H

#include <stdint.h>

#include "core/model/model.h"

typedef struct qn_seq {
    int32_t *tokens; /* [len] */
    int64_t len;
    int64_t k;       /* response_start: outputs for positions k..len-1 */
    float *dlogp;    /* [len-k] or NULL */
    float *dent;     /* [len-k] or NULL */
} qn_seq;

typedef struct qn_seqs {
    qn_seq *v;
    size_t n;
    int64_t n_out; /* sum of len - k */
} qn_seqs;

/* Reads one sequence per non-empty line of path. with_grads requires
 * "dlogp" and "dentropy". Token ids must be < vocab. Errors name the file,
 * the line and the field. */
qn_status qn_seqs_read_jsonl(const char *path, int with_grads, int64_t vocab, qn_seqs *out);
void qn_seqs_free(qn_seqs *s);

/* Runs forward over all sequences (micro-batches of at most max_tokens
 * tokens; a longer sequence gets a batch of its own), writing logp/ent for
 * every response position in input order ([n_out] each). With backward, the
 * gradient of sum(dlogp*logp + dent*ent) over all sequences is ADDED into
 * m->g (allocated if needed). */
qn_status qn_seqs_run(qn_model *m, const qn_seqs *seqs, float temperature, int64_t max_tokens,
                      int backward, float *logp, float *ent);

#endif
