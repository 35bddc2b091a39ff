/* buffer_data.h — the prompt dataset of `quench buffer` (and of `quench eval`,
 * which reads its held-out prompts with it): a JSONL file read
 * whole at start into token ids, text, label and metadata per line, and the
 * data cursor that walks it epoch after epoch (shuffled per epoch when
 * asked).
 *
 * The cursor is one number: the count of prompts drawn since the job
 * started. Draw c is epoch c / N, position c % N of that epoch's order (N =
 * good lines), so a cursor persisted in Redis is all a restarted buffer
 * needs to continue where it stopped, and a draw index is a stable id for
 * the prompt it drew (the buffer uses it as the group id).
 *
 * Leaves out: streaming files larger than memory, multiple files, and
 * truncating prompts that are too long (the engine refuses those). */
#ifndef QN_CLI_BUFFER_DATA_H
#define QN_CLI_BUFFER_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quench/status.h"

typedef struct qn_tokenizer qn_tokenizer;

typedef struct qn_bd_prompt {
    int32_t *tokens;
    size_t n_tokens;
    char *text;     /* rendered prompt text ("" for token-id prompts without a tokenizer) */
    char *label;    /* "" when the line has none */
    char *metadata; /* JSON object text, "{}" when none */
    long line;      /* 1-based line in the file */
} qn_bd_prompt;

typedef struct qn_bd_opts {
    const char *path;
    const char *input_key;    /* text, a token id array, or chat messages */
    const char *label_key;    /* may be NULL */
    const char *metadata_key; /* may be NULL */
    bool apply_chat_template;
    const qn_tokenizer *tok; /* NULL: only token id prompts are accepted */
    bool skip_bad;           /* false: the first bad line is fatal */
    bool shuffle;
    uint64_t seed;
    const char *who; /* service named in warnings ("buffer", "eval"); NULL: "buffer" */
} qn_bd_opts;

typedef struct qn_bd {
    qn_bd_prompt *v;
    size_t n;
    size_t n_bad; /* lines skipped */
    bool shuffle;
    uint64_t seed;
    uint64_t perm_epoch; /* epoch whose order is in perm */
    uint32_t *perm;      /* NULL until first use when shuffling */
} qn_bd;

/* Reads the file. A bad line (not JSON, not an object, no input, a text
 * prompt without --tokenizer, messages without --apply-chat-template, an
 * empty prompt, a negative or out-of-vocabulary id) is QN_ERR_FORMAT naming
 * "file:line: reason", or with skip_bad a warning with the same text. No
 * good line at all is QN_ERR_FORMAT. */
qn_status qn_bd_load(qn_bd *d, const qn_bd_opts *o);
void qn_bd_free(qn_bd *d);

/* The dataset index drawn at cursor c (epoch c / n, shuffled order of that
 * epoch when shuffling). */
size_t qn_bd_index(qn_bd *d, uint64_t c);

#endif
