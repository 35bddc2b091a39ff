/* tok_internal.h — the inside of a qn_tokenizer, shared by the loaders, the
 * encoder and the tokenizer.json writer. Not for use outside core/tokenizer.
 *
 * Tokens are kept as raw bytes: loaders undo the byte-level character
 * mapping (GPT-2's bytes_to_unicode) once, so BPE works on bytes and decode
 * is a concatenation. Merges are a hash from the id pair to (rank, result). */
#ifndef QN_CORE_TOKENIZER_INTERNAL_H
#define QN_CORE_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>

#include "core/tokenizer/tokenizer.h"

#define QN_TOK_MAX_REGEX 4
/* Largest token id accepted (the id table is dense): 16x the largest real
 * vocabularies (~256K), small enough that a hostile file cannot make the
 * loader allocate gigabytes. */
#define QN_TOK_MAX_ID (1 << 22)
#define QN_TOK_MAX_AFFIX 8
#define QN_TOK_CACHE_SLOTS 65536
#define QN_TOK_CACHE_MAX_KEY 64

typedef enum qn_tok_norm {
    QN_TOK_NORM_NONE = 0,
    QN_TOK_NORM_NFC,
    QN_TOK_NORM_NFD,
    QN_TOK_NORM_NFKC,
    QN_TOK_NORM_NFKD,
} qn_tok_norm;

typedef struct qn_tok_added {
    char *content;
    size_t len;
    int32_t id;
    bool special, lstrip, rstrip, single_word, normalized;
} qn_tok_added;

typedef struct qn_tok_merge_slot {
    uint64_t key; /* (left << 32) | right; UINT64_MAX = empty */
    uint32_t rank;
    int32_t result;
} qn_tok_merge_slot;

typedef struct qn_tok_cache_entry {
    uint64_t hash;
    char *key;
    int32_t *ids;
    uint32_t key_len, n_ids;
} qn_tok_cache_entry;

struct qn_tokenizer {
    qn_tokenizer_format format;
    int32_t n_ids; /* largest id + 1 */

    /* id -> bytes: tok_off/tok_len index blob; tok_len = UINT32_MAX: no token. */
    char *blob;
    size_t blob_len, blob_cap;
    uint64_t *tok_off;
    uint32_t *tok_len;
    uint8_t *tok_flags; /* QN_TOK_FLAG_* */
    size_t id_cap;

    /* model vocabulary bytes -> id (open addressing, -1 empty) */
    int32_t *vhash;
    size_t vhash_cap, n_vocab;
    int32_t byte_id[256];

    qn_tok_merge_slot *merges;
    size_t merge_cap, n_merges;
    int32_t (*merge_list)[2]; /* in rank order, for export */
    size_t merge_list_cap;

    qn_tok_added *added;
    size_t n_added;
    /* added tokens by first byte, longest first: indices into added */
    uint32_t *added_by_byte;
    uint32_t added_start[257];

    qn_tok_norm norm;
    pcre2_code *re[QN_TOK_MAX_REGEX];
    char *re_src[QN_TOK_MAX_REGEX];
    int n_re;
    bool add_prefix_space;
    bool ignore_merges;

    int32_t prefix[QN_TOK_MAX_AFFIX], suffix[QN_TOK_MAX_AFFIX];
    int n_prefix, n_suffix;

    qn_special_ids special;
    char *chat_template;

    pthread_mutex_t cache_mu;
    qn_tok_cache_entry *cache;
};

enum { QN_TOK_FLAG_ADDED = 1, QN_TOK_FLAG_SPECIAL = 2, QN_TOK_FLAG_MODEL = 4 };

/* Pre-tokenizer regexes of the families whose slow/tiktoken files carry none. */
extern const char *const QN_TOK_RE_GPT2;
extern const char *const QN_TOK_RE_QWEN2;
extern const char *const QN_TOK_RE_GLM4;

/* Fresh empty tokenizer (no ids, no merges). */
qn_status qn_tok_new(qn_tokenizer **out);
/* Sets id's bytes and makes it a model-vocabulary token (hashed for BPE).
 * A duplicate id or duplicate bytes is QN_ERR_FORMAT. */
qn_status qn_tok_set_vocab(qn_tokenizer *t, int32_t id, const char *bytes, size_t len);

/* Loads a byte-level vocabulary object {"<mapped token>": id, ...} (the
 * `model.vocab` of tokenizer.json, or vocab.json) into t. Errors name
 * `name` (the file) and `what` (where in it) and the token. */
struct cJSON;
qn_status qn_tok_load_vocab_object(qn_tokenizer *t, const struct cJSON *vocab, const char *name,
                                   const char *what);
/* Looks up model-vocabulary bytes; -1 when absent. */
int32_t qn_tok_vocab_find(const qn_tokenizer *t, const char *bytes, size_t len);
/* Appends a merge with the next rank; the result must be in the vocabulary. */
qn_status qn_tok_add_merge(qn_tokenizer *t, int32_t left, int32_t right);
/* Adds an added token (content copied). If id already holds a vocabulary
 * token with other bytes it is QN_ERR_FORMAT. */
qn_status qn_tok_add_added(qn_tokenizer *t, const qn_tok_added *a);
/* Compiles a pre-tokenizer regex (appended to the chain). */
qn_status qn_tok_add_regex(qn_tokenizer *t, const char *pattern, const char *where);
/* Builds the byte table, the added-token index and the cache; checks that
 * every byte has a token. Call once after all of the above. */
qn_status qn_tok_finish(qn_tokenizer *t, const char *where);

/* GPT-2 byte-level mapping. */
void qn_tok_byte_to_unicode(uint8_t b, char out[3], size_t *len);
/* Undoes the byte-level mapping of a token string; a character outside the
 * mapping is kept as its UTF-8 bytes (added tokens such as "<|im_end|>"). */
qn_status qn_tok_unmap_bytes(const char *s, size_t len, char **out, size_t *out_len);

/* Applies tokenizer_config.json: added_tokens_decoder, eos/bos/pad/unk
 * names, chat_template. */
qn_status qn_tok_apply_config(qn_tokenizer *t, const cJSON *config, const char *where);
/* Resolves eos/bos/pad/unk names of the config; call after every token is
 * known. */
qn_status qn_tok_apply_config_names(qn_tokenizer *t, const cJSON *config);
/* Id of a token given as a C string (vocabulary or added), or -1. */
int32_t qn_tok_lookup_token(const qn_tokenizer *t, const char *s);

/* Reads a whole file (NUL-terminated). */
qn_status qn_tok_read_file(const char *path, char **data, size_t *len);

#endif
