/* cuda_ctx_stub.c — the context API of cuda_ctx.h for builds without CUDA
 * (QN_CUDA=OFF): creation reports no device, accessors answer NULL/0, the
 * arena has no room and transfers fail with QN_ERR_NO_DEVICE, so callers
 * link and take their CPU path. With CUDA, cuda_ctx.cu provides the real
 * functions and this file compiles to nothing. */
#ifndef QN_HAVE_CUDA
#include "core/ops/cuda/cuda_ctx.h"

#define QN_NO_CUDA_MSG "this quench was built without CUDA (QN_CUDA=OFF)"

qn_status qn_cuda_ctx_create(const qn_cuda_ctx_params *p, qn_cuda_ctx **out) {
    if (out) *out = NULL;
    return qn_fail(QN_ERR_NO_DEVICE, "qn_cuda_ctx_create: " QN_NO_CUDA_MSG);
}
void qn_cuda_ctx_free(qn_cuda_ctx *c) {}

void *qn_cuda_ctx_stream(const qn_cuda_ctx *c) {
    return NULL;
}
void *qn_cuda_ctx_blaslt(const qn_cuda_ctx *c) {
    return NULL;
}
void *qn_cuda_ctx_workspace(const qn_cuda_ctx *c, size_t *bytes) {
    if (bytes) *bytes = 0;
    return NULL;
}
int qn_cuda_ctx_device(const qn_cuda_ctx *c) {
    return -1;
}
int qn_cuda_ctx_sm_count(const qn_cuda_ctx *c) {
    return 0;
}

void *qn_cuda_alloc(qn_cuda_ctx *c, size_t bytes) {
    return NULL;
}
size_t qn_cuda_mark(const qn_cuda_ctx *c) {
    return 0;
}
void qn_cuda_reset(qn_cuda_ctx *c, size_t mark) {}
size_t qn_cuda_arena_used(const qn_cuda_ctx *c) {
    return 0;
}
size_t qn_cuda_arena_peak(const qn_cuda_ctx *c) {
    return 0;
}
size_t qn_cuda_arena_cap(const qn_cuda_ctx *c) {
    return 0;
}

qn_status qn_cuda_upload(qn_cuda_ctx *c, void *dst_dev, const void *src_host, size_t bytes) {
    return qn_fail(QN_ERR_NO_DEVICE, "qn_cuda_upload: " QN_NO_CUDA_MSG);
}
qn_status qn_cuda_download(qn_cuda_ctx *c, void *dst_host, const void *src_dev, size_t bytes) {
    return qn_fail(QN_ERR_NO_DEVICE, "qn_cuda_download: " QN_NO_CUDA_MSG);
}
qn_status qn_cuda_copy(qn_cuda_ctx *c, void *dst_dev, const void *src_dev, size_t bytes) {
    return qn_fail(QN_ERR_NO_DEVICE, "qn_cuda_copy: " QN_NO_CUDA_MSG);
}
qn_status qn_cuda_memset(qn_cuda_ctx *c, void *dst_dev, int byte, size_t bytes) {
    return qn_fail(QN_ERR_NO_DEVICE, "qn_cuda_memset: " QN_NO_CUDA_MSG);
}
qn_status qn_cuda_sync(qn_cuda_ctx *c) {
    return qn_fail(QN_ERR_NO_DEVICE, "qn_cuda_sync: " QN_NO_CUDA_MSG);
}
qn_status qn_cuda_event_record(qn_cuda_ctx *c, int slot) {
    return qn_fail(QN_ERR_NO_DEVICE, "qn_cuda_event_record: " QN_NO_CUDA_MSG);
}
qn_status qn_cuda_elapsed_ms(qn_cuda_ctx *c, int start_slot, int end_slot, float *ms) {
    return qn_fail(QN_ERR_NO_DEVICE, "qn_cuda_elapsed_ms: " QN_NO_CUDA_MSG);
}
#else
typedef int qn_cuda_ctx_stub_unused_; /* ISO C forbids an empty translation unit */
#endif
