/* tokenizer.h — byte-level BPE tokenizers as Hugging Face runs them, and
 * chat templates rendered in C.
 *
 * A qn_tokenizer is loaded from one of the three forms checkpoints ship:
 *   - tokenizer.json (the "fast" format);
 *   - vocab.json + merges.txt (the "slow" GPT-2 / Qwen2 format), with the
 *     pre-tokenizer regex of the family named by tokenizer_config.json;
 *   - tokenizer.model as a tiktoken ranks file (GLM-4, GLM-4.5), with merges
 *     derived from the ranks the way transformers' TikTokenConverter does,
 *     plus the added tokens of tokenizer_config.json.
 * Only byte-level BPE is supported (GPT-2, Qwen2/2.5/3, Llama-3, GLM-4.x,
 * DeepSeek-V3 style); SentencePiece/Unigram/WordPiece models are rejected with
 * QN_ERR_UNSUPPORTED. docs/tokenizer.md lists what is and is not covered.
 *
 * Thread safety: a loaded tokenizer is immutable except for its merge cache,
 * which is guarded by a mutex (a thread that finds it busy skips the cache),
 * so qn_tokenizer_encode/decode and every lookup may be called from any
 * number of threads at once on the same tokenizer. Loading and
 * qn_tokenizer_free must not race with other calls.
 *
 * Token ids are int32_t. Text is bytes: encode takes (pointer, length), so
 * NUL bytes and invalid UTF-8 are allowed (see qn_tokenizer_encode). */
#ifndef QN_CORE_TOKENIZER_H
#define QN_CORE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quench/status.h"

typedef struct cJSON cJSON;
typedef struct qn_tokenizer qn_tokenizer;

/* A growable array of token ids. Zero-initialise before first use; free the
 * storage with qn_token_ids_free. Functions that fill one append to it. */
typedef struct qn_token_ids {
    int32_t *ids;
    size_t n;
    size_t cap;
} qn_token_ids;

void qn_token_ids_free(qn_token_ids *v);
qn_status qn_token_ids_push(qn_token_ids *v, int32_t id);

/* Where a tokenizer came from. */
typedef enum qn_tokenizer_format {
    QN_TOKENIZER_FORMAT_JSON = 0,    /* tokenizer.json */
    QN_TOKENIZER_FORMAT_SLOW = 1,    /* vocab.json + merges.txt */
    QN_TOKENIZER_FORMAT_TIKTOKEN = 2 /* tokenizer.model (ranks) */
} qn_tokenizer_format;

/* Loads the tokenizer in directory dir, looking in this order for
 * tokenizer.json, vocab.json + merges.txt, and a tiktoken tokenizer.model;
 * tokenizer_config.json, when present, supplies added tokens (slow and
 * tiktoken forms), the special-token names (eos, bos, pad) and the chat
 * template. On success *out owns everything; free with qn_tokenizer_free.
 * On failure *out is NULL and qn_last_error() names the file and problem. */
qn_status qn_tokenizer_load(const char *dir, qn_tokenizer **out);

/* The single-form loaders behind qn_tokenizer_load. config_path (a
 * tokenizer_config.json) may be NULL. For the slow and tiktoken forms the
 * pre-tokenizer regex is the family's, chosen from the config's
 * tokenizer_class (Qwen2Tokenizer: Qwen2's regex and NFC; GPT2Tokenizer:
 * GPT-2's; ChatGLM4Tokenizer or no class with a ranks file: GLM-4's). */
qn_status qn_tokenizer_load_json(const char *json_path, const char *config_path,
                                 qn_tokenizer **out);
qn_status qn_tokenizer_load_slow(const char *vocab_path, const char *merges_path,
                                 const char *config_path, qn_tokenizer **out);
qn_status qn_tokenizer_load_tiktoken(const char *model_path, const char *config_path,
                                     qn_tokenizer **out);

/* Parses a tokenizer.json held in memory (used by the loader and the fuzz
 * target). name is used in error messages. */
qn_status qn_tokenizer_parse_json(const char *json, size_t len, const char *name,
                                  qn_tokenizer **out);
/* Parses tiktoken ranks held in memory; config may be NULL. */
qn_status qn_tokenizer_parse_tiktoken(const char *ranks, size_t len, const char *name,
                                      const cJSON *config, qn_tokenizer **out);
/* Parses vocab.json and merges.txt held in memory; config may be NULL. */
qn_status qn_tokenizer_parse_slow(const char *vocab, size_t vocab_len, const char *merges,
                                  size_t merges_len, const char *name, const cJSON *config,
                                  qn_tokenizer **out);

/* Writes the tokenizer as a Hugging Face tokenizer.json (model BPE with vocab
 * and merges, the pre-tokenizer, normalizer, added tokens, ByteLevel
 * decoder), which Hugging Face `tokenizers` and qn_tokenizer_load_json read
 * back to the same tokenizer. */
qn_status qn_tokenizer_save_json(const qn_tokenizer *tok, const char *path);

void qn_tokenizer_free(qn_tokenizer *tok);

typedef struct qn_encode_opts {
    /* false (the default): added/special tokens ("<|im_start|>") in the
     * text are matched before BPE, as Hugging Face does by default. true:
     * special ones are plain text (split_special_tokens=True). */
    bool split_special;
    /* Add the tokens the tokenizer's post-processor adds around a single
     * sequence (GLM: "[gMASK]<sop>" in front; Qwen: none). */
    bool add_special;
} qn_encode_opts;

/* The defaults, the same as a zeroed struct: split_special = false,
 * add_special = false. */
qn_encode_opts qn_encode_opts_default(void);

/* Encodes len bytes of text and appends the ids to *out. opts may be NULL
 * for the defaults. Added tokens are found first (leftmost, longest), the
 * rest is normalised (if the tokenizer has a normalizer), split by the
 * pre-tokenizer regex and merged by BPE. Invalid UTF-8 is accepted: the
 * regex never matches an invalid byte, so each run of them becomes a piece
 * of its own and is encoded as byte tokens; normalisation skips such runs.
 * Hence decode(encode(x)) == x for every byte string x when the tokenizer
 * has no normalizer (== NFC(x) for Qwen2's NFC). On failure *out may have
 * grown; the caller still frees it. */
qn_status qn_tokenizer_encode(const qn_tokenizer *tok, const char *text, size_t len,
                              const qn_encode_opts *opts, qn_token_ids *out);

/* Decodes ids to the exact bytes they stand for (a byte-level tokenizer can
 * split a UTF-8 character between tokens, so a prefix of a sequence may end
 * mid-character; nothing is replaced by U+FFFD here). Added tokens decode to
 * their content, or to nothing when skip_special is set and they are
 * special. *text is malloc'd and NUL-terminated (not counted in *len). An id
 * outside the vocabulary is QN_ERR_RANGE naming its position. */
qn_status qn_tokenizer_decode(const qn_tokenizer *tok, const int32_t *ids, size_t n,
                              bool skip_special, char **text, size_t *len);

/* As qn_tokenizer_decode, but the text is valid UTF-8 without NUL bytes:
 * each maximal subpart of an ill-formed sequence (and each NUL) becomes
 * U+FFFD, as Python's bytes.decode("utf-8", errors="replace") and so Hugging
 * Face's decode do. For text that goes into JSON or protobuf strings
 * (core/tokenizer/decode_text.c). */
qn_status qn_tokenizer_decode_text(const qn_tokenizer *tok, const int32_t *ids, size_t n,
                                   bool skip_special, char **text, size_t *len);

/* The replacement of qn_tokenizer_decode_text on len bytes of in; out holds
 * at least 3 * len + 1 bytes. Returns the length written (NUL-terminated). */
size_t qn_utf8_replace_invalid(const char *in, size_t len, char *out);

/* Number of ids (largest id + 1, counting added tokens). */
int32_t qn_tokenizer_vocab_size(const qn_tokenizer *tok);
/* Number of BPE merges. */
size_t qn_tokenizer_merge_count(const qn_tokenizer *tok);
qn_tokenizer_format qn_tokenizer_get_format(const qn_tokenizer *tok);

/* The bytes of token id (not NUL-terminated), or NULL for an unused id. */
const char *qn_tokenizer_id_to_bytes(const qn_tokenizer *tok, int32_t id, size_t *len);
/* The id of a token given by its exact bytes (vocabulary or added token),
 * or -1. */
int32_t qn_tokenizer_token_to_id(const qn_tokenizer *tok, const char *bytes, size_t len);
/* Whether id is an added token marked special. */
bool qn_tokenizer_is_special(const qn_tokenizer *tok, int32_t id);

/* Special-token ids named by tokenizer_config.json (or the family defaults:
 * GLM's eos is <|endoftext|>). -1 when the tokenizer has none. */
typedef struct qn_special_ids {
    int32_t eos, bos, pad, unk;
    /* Further ids that end a generation (GLM-4.5: <|user|>, <|observation|>
     * from generation_config.json / the family), up to 8. */
    int32_t stop[8];
    int n_stop;
} qn_special_ids;
const qn_special_ids *qn_tokenizer_special_ids(const qn_tokenizer *tok);

/* The chat_template string from tokenizer_config.json (or the directory's
 * chat_template.jinja), or NULL. */
const char *qn_tokenizer_chat_template(const qn_tokenizer *tok);

/* ---- chat templates ------------------------------------------------- */

typedef enum qn_chat_kind {
    QN_CHAT_RAW = 0,   /* message contents joined, no markup */
    QN_CHAT_CHATML = 1, /* <|im_start|>role\n...<|im_end|>\n (Qwen2.5, Qwen3) */
    QN_CHAT_GLM45 = 2  /* [gMASK]<sop><|user|>\n... (GLM-4.5, GLM-4.6) */
} qn_chat_kind;

typedef struct qn_chat_template {
    qn_chat_kind kind;
    /* ChatML only: system prompt inserted when the conversation has none
     * (Qwen2.5's "You are Qwen, created by Alibaba Cloud. ..."), or NULL. */
    const char *default_system;
    /* ChatML only: Qwen3's <think> handling of assistant turns after the
     * last user query and of enable_thinking=false. */
    bool qwen3_think;
} qn_chat_template;

/* "glm45", "chatml", "raw" (also "qwen2.5", "qwen3" for the ChatML
 * variants) -> template. QN_ERR_INVALID naming the accepted names otherwise. */
qn_status qn_chat_template_parse(const char *name, qn_chat_template *out);

/* Recognises a Jinja chat template string as one of the kinds above (by its
 * markers: "[gMASK]<sop>" and "<|assistant|>" -> glm45; "<|im_start|>" ->
 * chatml, with Qwen2.5's default system prompt or Qwen3's think handling
 * when the template has them). QN_ERR_UNSUPPORTED when it is none of them. */
qn_status qn_chat_template_detect(const char *jinja, qn_chat_template *out);

typedef struct qn_chat_opts {
    bool add_generation_prompt;
    /* -1: not given (the template's default), 0: false, 1: true. */
    int enable_thinking;
    /* A JSON array of tool schemas, or NULL. */
    const cJSON *tools;
} qn_chat_opts;

/* Renders messages (a JSON array of {"role", "content", optional
 * "reasoning_content", "tool_calls"}) into the prompt text the Hugging Face
 * template would produce. content may be a string or a list of
 * {"type":"text","text":...} parts. *text is malloc'd, NUL-terminated.
 * A malformed message is QN_ERR_FORMAT naming its index. */
qn_status qn_chat_render(const qn_chat_template *tpl, const cJSON *messages,
                         const qn_chat_opts *opts, char **text, size_t *len);

/* The template named by `name` (as qn_chat_template_parse), or, when name is
 * NULL or "auto", the one recognised from the tokenizer's own chat_template.
 * This is what `--chat-template` / `--apply-chat-template` resolve through. */
qn_status qn_chat_template_for(const qn_tokenizer *tok, const char *name, qn_chat_template *out);

/* Renders messages with tpl and appends the prompt's ids to *ids (special
 * tokens in the rendered text are matched; nothing else is added, as
 * apply_chat_template(tokenize=True) does). */
qn_status qn_chat_encode(const qn_tokenizer *tok, const qn_chat_template *tpl,
                         const cJSON *messages, const qn_chat_opts *opts, qn_token_ids *ids);

#endif /* QN_CORE_TOKENIZER_H */
