/* served_model.h — what `quench generate` and `quench rollout` load before
 * they make an engine: the model (fp32, or dequantised from an FP8
 * checkpoint), its FP8 copies (the checkpoint's own e4m3 tensors, or
 * quantised on load with --quantize fp8, 128x128 tiles), the tokenizer (the
 * one named, else the model folder's when it has one) and the EOS ids
 * (config.json's eos_token_id, else the tokenizer's eos and stop ids). */
#ifndef QN_CLI_SERVED_MODEL_H
#define QN_CLI_SERVED_MODEL_H

#include <stdint.h>

#include "core/io/hf_config.h"
#include "core/model/infer.h"
#include "core/model/model.h"
#include "core/flags.h"
#include "core/tokenizer/tokenizer.h"
#include "quench/status.h"
#include "rollout/engine.h"

typedef struct qn_served_model {
    qn_model m;
    qn_model_fp8 *f8;      /* NULL: fp32 weights */
    int32_t fp8_bm, fp8_bn; /* tile of the FP8 copies */
    int fp8_checkpoint;     /* the folder holds an FP8 checkpoint */
    qn_tokenizer *tok;      /* NULL without one */
    const char *tok_dir;    /* where it came from (a caller's string or the model dir) */
    int32_t eos[QN_MODEL_MAX_EOS + 16];
    int32_t n_eos;
} qn_served_model;

/* Loads everything above from model_dir; tokenizer_dir NULL means the model
 * folder's tokenizer if it has one. On failure sm holds nothing. */
qn_status qn_served_model_load(qn_served_model *sm, const char *model_dir,
                               const char *tokenizer_dir, int quantize_fp8);
void qn_served_model_free(qn_served_model *sm);

/* The engine's sizing flags, shared by the commands that make an engine:
 *   typedef struct my_cfg { ...; qn_engine_flags eng; } my_cfg;
 *   static const qn_flag k_flags[] = { ..., QN_ENGINE_FLAGS(my_cfg, eng), ... }; */
typedef struct qn_engine_flags {
    int64_t max_running, kv_cache_tokens, max_prefill_tokens, block_size, context_len;
} qn_engine_flags;

#define QN_ENGINE_FLAGS(T, M)                                                                   \
    QN_F_INT(T, M.max_running, "max-running-requests", "256", 1, 1048576,                       \
             "sequences in the running batch"),                                                 \
        QN_F_INT(T, M.kv_cache_tokens, "kv-cache-tokens", "65536", 1, 1e12,                     \
                 "KV cache capacity in tokens (rounded up to whole blocks)"),                   \
        QN_F_INT(T, M.max_prefill_tokens, "max-prefill-tokens", "2048", 1, 1e9,                 \
                 "prompt tokens computed per step (chunked prefill budget)"),                   \
        QN_F_INT(T, M.block_size, "block-size", "16", 1, 64, "tokens per KV cache block"),      \
        QN_F_INT(T, M.context_len, "context-len", "0", 0, 1e12,                                 \
                 "positions per sequence; 0: the config's max_position_embeddings")

/* Engine parameters from the flags, with sm's EOS ids and tokenizer (sm must outlive the
 * engine) and the engine seed. */
qn_engine_params qn_served_engine_params(const qn_served_model *sm, const qn_engine_flags *f,
                                         uint64_t seed);

#endif
