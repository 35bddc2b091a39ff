/* cuda_ctx.h — one GPU's working context: a stream, a device memory arena
 * reserved once, and a cuBLASLt handle with its workspace.
 *
 * Every CUDA op takes a qn_cuda_ctx and runs asynchronously on its stream;
 * nothing on a step's path allocates: tensors come from the arena (bump
 * allocation, released by mark/reset, like core/arena.h on the host), so a
 * step that fits once fits every time. Launch errors are caught at each
 * launch (cudaGetLastError) and returned as QN_ERR_CUDA with the op's name;
 * faults inside a kernel surface at the next qn_cuda_sync, which names the
 * CUDA error.
 *
 * Storage dtypes: QN_DTYPE_F32 or QN_DTYPE_BF16 for activations and weights
 * (bf16 storage, fp32 accumulation in every reduction and GEMM); optimizer
 * master weights and moments are fp32. Ops that take a `qn_dtype dt` refuse
 * others with QN_ERR_UNSUPPORTED.
 *
 * Callable from C in any build: without CUDA (QN_CUDA=OFF) or without a
 * device, qn_cuda_ctx_create returns QN_ERR_NO_DEVICE (cuda_ctx_stub.c) and
 * callers take their CPU path or skip.
 *
 * Leaves out: several streams per context (copy/compute overlap comes with
 * the engine's GPU path), multi-GPU contexts (one process per GPU), memory
 * pools that grow. */
#ifndef QN_CORE_OPS_CUDA_CTX_H
#define QN_CORE_OPS_CUDA_CTX_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "quench/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qn_cuda_ctx qn_cuda_ctx;

typedef struct qn_cuda_ctx_params {
    int device;                  /* CUDA ordinal */
    size_t arena_bytes;          /* device arena, reserved by one cudaMalloc */
    size_t blas_workspace_bytes; /* cuBLASLt workspace; 0 = 64 MiB */
} qn_cuda_ctx_params;

/* Selects the device, creates a non-blocking stream, reserves the arena and
 * the cuBLASLt workspace. QN_ERR_NO_DEVICE without a usable GPU, QN_ERR_NOMEM
 * naming the size when the arena does not fit. */
qn_status qn_cuda_ctx_create(const qn_cuda_ctx_params *p, qn_cuda_ctx **out);
/* Waits for the stream, then releases everything; NULL is fine. */
void qn_cuda_ctx_free(qn_cuda_ctx *c);

/* The raw handles, as void * so that C callers need no CUDA headers:
 * cudaStream_t, cublasLtHandle_t, and the workspace (device pointer). */
void *qn_cuda_ctx_stream(const qn_cuda_ctx *c);
void *qn_cuda_ctx_blaslt(const qn_cuda_ctx *c);
void *qn_cuda_ctx_workspace(const qn_cuda_ctx *c, size_t *bytes);
int qn_cuda_ctx_device(const qn_cuda_ctx *c);
/* Streaming multiprocessors of the device (grid sizing). */
int qn_cuda_ctx_sm_count(const qn_cuda_ctx *c);

/* ---- device arena: 256-byte aligned blocks, released together ---- */

/* A device block of `bytes` (not zeroed); NULL when the arena is full (the
 * arena is left unchanged). */
void *qn_cuda_alloc(qn_cuda_ctx *c, size_t bytes);
size_t qn_cuda_mark(const qn_cuda_ctx *c);
/* Releases every block allocated after `mark`. Work already queued on the
 * stream that uses those blocks is fine: later work is ordered after it. */
void qn_cuda_reset(qn_cuda_ctx *c, size_t mark);
/* Bytes in use now, and the most ever in use (sizing the arena). */
size_t qn_cuda_arena_used(const qn_cuda_ctx *c);
size_t qn_cuda_arena_peak(const qn_cuda_ctx *c);
size_t qn_cuda_arena_cap(const qn_cuda_ctx *c);

/* ---- transfers and synchronisation (all on the context's stream) ---- */

/* Host to device, queued on the stream; src must stay valid until the next
 * qn_cuda_sync (pageable memory makes the copy synchronous anyway). */
qn_status qn_cuda_upload(qn_cuda_ctx *c, void *dst_dev, const void *src_host, size_t bytes);
/* Device to host; returns when the bytes are on the host (syncs the stream). */
qn_status qn_cuda_download(qn_cuda_ctx *c, void *dst_host, const void *src_dev, size_t bytes);
qn_status qn_cuda_copy(qn_cuda_ctx *c, void *dst_dev, const void *src_dev, size_t bytes);
qn_status qn_cuda_memset(qn_cuda_ctx *c, void *dst_dev, int byte, size_t bytes);
/* Waits for everything queued; a fault in any earlier kernel becomes
 * QN_ERR_CUDA here, with CUDA's error string. */
qn_status qn_cuda_sync(qn_cuda_ctx *c);

/* ---- timing (the op harness's perf mode and the benchmarks) ---- */

/* Records an event on the stream; qn_cuda_elapsed_ms waits for `end` and
 * returns the milliseconds between two recorded events. Events are owned by
 * the context (a small ring), so nothing is allocated per call. */
qn_status qn_cuda_event_record(qn_cuda_ctx *c, int slot /* 0..7 */);
qn_status qn_cuda_elapsed_ms(qn_cuda_ctx *c, int start_slot, int end_slot, float *ms);

#ifdef __cplusplus
}
#endif
#endif /* QN_CORE_OPS_CUDA_CTX_H */
