/* infer.h — the model's incremental forward for generation: chunks of new
 * tokens of many sequences at once, attending to K/V kept in a paged cache.
 *
 * A step of the rollout engine is one call: every running sequence brings a
 * chunk (one token when decoding, up to the prefill budget when prefilling)
 * that starts at position pos0, right after the pos0 tokens whose K/V are
 * already in the cache. Each layer writes the chunk's K and V (after QK-norm
 * and RoPE) into the sequence's cache slots, then every chunk token attends
 * causally to positions [0, its own] of its sequence, read through the block
 * table. Nothing is kept for a backward pass. The result is, per chunk that
 * asks for it, the full logits row (V floats) of the chunk's last token.
 *
 * Cache layout (rollout/kv_cache.h's arena): block b holds, for every layer
 * l, the K rows then the V rows of its block_size token slots,
 *     arena + b * L*2*B*NKV*HD + (2*l + kv) * B*NKV*HD + slot * NKV*HD.
 *
 * Linear layers use fp32 weights from the qn_model, or FP8 e4m3 block-scaled
 * copies (qn_model_fp8) of every q/k/v/o and gate/up/down projection (dense,
 * routed and shared experts), multiplied tile by tile through core/quant's
 * qn_fp8_matmul (never a whole dequantised matrix). Embeddings, norms, the
 * router and the LM head stay fp32 (the modules_to_not_convert of FP8
 * checkpoints).
 *
 * Results depend on which other chunks share the call only through fp32
 * summation order in the GEMMs (last bits), never through the values of
 * other sequences: attention and the KV writes are per sequence.
 *
 * Leaves out: sliding windows, attention sinks, MTP speculative decoding,
 * bf16 compute on the CPU, CUDA (core/ops/cuda), CPU offload of the cache. */
#ifndef QN_CORE_MODEL_INFER_H
#define QN_CORE_MODEL_INFER_H

#include <stddef.h>
#include <stdint.h>

#include "core/model/model.h"
#include "quench/status.h"

/* The paged cache as the forward sees it. */
typedef struct qn_kv_view {
    float *arena;       /* see the layout above */
    int32_t block_size; /* B */
    int32_t n_blocks;   /* ids in block tables are checked against this */
} qn_kv_view;

/* Floats per block for model description d and block size B: L*2*B*NKV*HD. */
size_t qn_infer_block_floats(const qn_model_desc *d, int32_t block_size);

typedef struct qn_infer_chunk {
    int64_t pos0;          /* first position of the chunk = tokens already cached */
    int32_t n;             /* tokens in the chunk, >= 1 */
    const int32_t *blocks; /* block table covering positions [0, pos0 + n) */
    int logits;            /* 1: write the logits row of the chunk's last token */
} qn_infer_chunk;

/* ---------------------------------------------------------------- FP8 weights */

typedef struct qn_model_fp8 qn_model_fp8;

/* Quantises every projection matrix of m (see above) with bm x bn tiles
 * (core/quant/fp8.h convention). */
qn_status qn_model_fp8_quantize(qn_model_fp8 **out, const qn_model *m, int32_t bm, int32_t bn);
/* Takes the F8_E4M3 projections and their weight_scale_inv tensors of an FP8
 * checkpoint in dir as they are (no requantisation), with the block size of
 * its config.json quantization_config.weight_block_size; projections stored
 * in a float dtype are quantised. m gives the shapes (loaded from the same
 * dir with qn_model_open). Errors name the tensor and the file. */
qn_status qn_model_fp8_load_dir(qn_model_fp8 **out, const qn_model *m, const char *dir);
void qn_model_fp8_free(qn_model_fp8 *f); /* NULL ok */
/* Bytes of e4m3 data plus scales; number of quantised matrices. */
size_t qn_model_fp8_bytes(const qn_model_fp8 *f);
size_t qn_model_fp8_count(const qn_model_fp8 *f);
/* Rewrites m's fp32 copy of every quantised matrix with its dequantised
 * value, so that fp32 consumers (tests, a trainer-side check) see exactly
 * what the FP8 engine multiplies by. */
void qn_model_fp8_dequantize_into(const qn_model_fp8 *f, qn_model *m);

/* Reads quantization_config.weight_block_size of DIR/config.json: 1 and the
 * block when the checkpoint is FP8, 0 when it has no quantization_config. */
qn_status qn_model_fp8_config(const char *dir, int *is_fp8, int32_t *bm, int32_t *bn);

/* ---------------------------------------------------------------- forward */

typedef struct qn_infer_ws qn_infer_ws;

/* Workspace for calls of up to max_tokens tokens in up to max_chunks chunks,
 * at positions < max_context; f8 may be NULL. Reserved once; qn_model_infer
 * allocates nothing. */
qn_status qn_infer_ws_init(qn_infer_ws **out, const qn_model *m, const qn_model_fp8 *f8,
                           int64_t max_tokens, int32_t max_chunks, int64_t max_context);
void qn_infer_ws_free(qn_infer_ws *ws); /* NULL ok */
size_t qn_infer_ws_bytes(const qn_infer_ws *ws);

/* Runs chunks[0..n_chunks) whose tokens are tokens[0..T) back to back (chunk c
 * owns the next chunks[c].n of them), writes their K/V into the cache and the
 * logits rows asked for, in chunk order, into logits (one V-float row per
 * chunk with logits = 1). f8 NULL: fp32 weights. Errors (QN_ERR_RANGE):
 * sizes beyond the workspace, token ids outside the vocabulary, positions
 * beyond max_context, block ids outside the view; nothing is written then. */
qn_status qn_model_infer(const qn_model *m, const qn_model_fp8 *f8, qn_infer_ws *ws,
                         const qn_kv_view *kv, const int32_t *tokens, int64_t T,
                         const qn_infer_chunk *chunks, int32_t n_chunks, float *logits);

/* Bytes of weights one decode step reads for a batch that routes to `experts_touched`
 * distinct routed experts per MoE layer (top_k for batch 1; n_experts once the batch is
 * large): every projection (fp32 4 bytes, or FP8 1 byte plus scales when f8 = 1), norms,
 * router, the LM head, and one embedding row per token of the batch. The numerator of the
 * bandwidth bound. */
double qn_infer_weight_bytes(const qn_model_desc *d, int fp8, int32_t bm, int32_t bn,
                             int64_t experts_touched, int64_t batch);

#endif /* QN_CORE_MODEL_INFER_H */
