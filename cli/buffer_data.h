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

#include "core/flags.h"
#include "quench/status.h"

typedef struct qn_tokenizer qn_tokenizer;

/* The data flags that `quench buffer` and `quench eval` share, with the same
 * names and help in both: put QN_BD_FLAGS(its_cfg_type, member) into the
 * command's qn_flag array, member being a qn_bd_flags in its config. The
 * file flag itself (--prompt-data, --eval-prompt-data) stays the command's. */
typedef struct qn_bd_flags {
    char *input_key, *label_key, *tokenizer;
    bool apply_chat_template;
    int on_bad_data; /* 0: skip, 1: fail */
} qn_bd_flags;

#define QN_BD_FLAGS(T, M)                                                                         \
    QN_F_STRING(T, M.input_key, "input-key", "prompt",                                            \
                "field of the prompt: text, a token id array, or chat messages",                  \
                .metavar = "KEY"),                                                                \
    QN_F_STRING(T, M.label_key, "label-key", "label",                                             \
                "field of the reference answer given to the reward", .metavar = "KEY"),          \
    QN_F_BOOL(T, M.apply_chat_template, "apply-chat-template", "false",                           \
              "render prompts (text or messages) with the tokenizer's chat template"),            \
    QN_F_STRING(T, M.tokenizer, "tokenizer", NULL,                                                \
                "tokenizer folder (needed for text prompts; decodes responses for the reward)",   \
                .metavar = "DIR"),                                                                \
    QN_F_CHOICE(T, M.on_bad_data, "on-bad-data", "skip", "skip|fail",                             \
                "a bad data line is skipped with a warning naming file:line, or fatal")

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

/* What a service does at start: loads the tokenizer of tokenizer_dir (NULL:
 * none) into *tok, then the data with it (o->tok is set), and logs
 * "<who>: <path>: N prompts (M bad lines skipped)"; o->tok is ignored.
 * --apply-chat-template without a tokenizer is QN_ERR_INVALID. *tok is the caller's to free
 * (qn_tokenizer_free), also after a failure. */
qn_status qn_bd_open(qn_bd *d, const qn_bd_opts *o, const char *tokenizer_dir,
                     qn_tokenizer **tok);

/* The options the shared data flags give for the file path, the service
 * named in warnings being who (metadata_key, shuffle and seed: unset). */
qn_bd_opts qn_bd_flags_opts(const qn_bd_flags *f, const char *path, const char *who);

/* The dataset index drawn at cursor c (epoch c / n, shuffled order of that
 * epoch when shuffling). */
size_t qn_bd_index(qn_bd *d, uint64_t c);

#endif
