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
#include "core/tokenizer/tokenizer.h"
#include "quench/status.h"

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

#endif
