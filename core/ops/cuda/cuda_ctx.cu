// cuda_ctx.cu — the GPU working context of cuda_ctx.h: one non-blocking
// stream, one device arena (a single cudaMalloc, 256-byte aligned bump
// allocation with mark/reset), a cuBLASLt handle with its workspace, the
// transfers on the stream and a ring of 8 timing events.
//
// Leaves out: several streams, memory pools that grow, multi-GPU contexts
// (see cuda_ctx.h). The context never calls cudaSetDevice after creation: one
// process drives one GPU.
#include <stdlib.h>

#include "core/ops/cuda/cuda_common.cuh"
#include "core/ops/cuda/cuda_ctx.h"

enum { QN_CUDA_EVENTS = 8, QN_CUDA_ALIGN = 256 };

struct qn_cuda_ctx {
    int device;
    int sm_count;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *ws;
    size_t ws_bytes;
    char *arena;
    size_t cap, used, peak;
    cudaEvent_t ev[QN_CUDA_EVENTS];
};

static double mib(size_t b) {
    return (double)b / (1024.0 * 1024.0);
}

extern "C" qn_status qn_cuda_ctx_create(const qn_cuda_ctx_params *p, qn_cuda_ctx **out) {
    if (!p || !out) return qn_fail(QN_ERR_INVALID, "qn_cuda_ctx_create: NULL argument");
    *out = NULL;
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        cudaGetLastError(); // clear the "no driver / no device" error
        return qn_fail(QN_ERR_NO_DEVICE, "qn_cuda_ctx_create: no CUDA device");
    }
    if (p->device < 0 || p->device >= n)
        return qn_fail(QN_ERR_NO_DEVICE, "qn_cuda_ctx_create: device %d not present (%d devices)",
                       p->device, n);

    qn_cuda_ctx *c = (qn_cuda_ctx *)calloc(1, sizeof *c);
    if (!c) return qn_fail(QN_ERR_NOMEM, "qn_cuda_ctx_create: host allocation");
    c->device = p->device;
    qn_status s = QN_OK;
    cudaError_t e;
    cublasStatus_t bs;

#define CTX_STEP(call)                                                                             \
    do {                                                                                           \
        e = (call);                                                                                \
        if (e != cudaSuccess) {                                                                    \
            s = qn_fail(QN_ERR_CUDA, "qn_cuda_ctx_create: %s: %s", #call, cudaGetErrorString(e));  \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

    CTX_STEP(cudaSetDevice(c->device));
    CTX_STEP(cudaDeviceGetAttribute(&c->sm_count, cudaDevAttrMultiProcessorCount, c->device));
    CTX_STEP(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));

    c->cap = p->arena_bytes;
    if (c->cap > 0) {
        e = cudaMalloc((void **)&c->arena, c->cap);
        if (e != cudaSuccess) {
            cudaGetLastError();
            size_t free_b = 0, total_b = 0;
            cudaMemGetInfo(&free_b, &total_b);
            s = qn_fail(e == cudaErrorMemoryAllocation ? QN_ERR_NOMEM : QN_ERR_CUDA,
                        "qn_cuda_ctx_create: device arena of %zu bytes (%.1f MiB) on device %d: "
                        "%s (%.1f MiB free of %.1f MiB)",
                        c->cap, mib(c->cap), c->device, cudaGetErrorString(e), mib(free_b),
                        mib(total_b));
            c->arena = NULL;
            goto fail;
        }
    }

    c->ws_bytes = p->blas_workspace_bytes ? p->blas_workspace_bytes : (size_t)64 << 20;
    e = cudaMalloc(&c->ws, c->ws_bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();
        s = qn_fail(e == cudaErrorMemoryAllocation ? QN_ERR_NOMEM : QN_ERR_CUDA,
                    "qn_cuda_ctx_create: cuBLASLt workspace of %zu bytes: %s", c->ws_bytes,
                    cudaGetErrorString(e));
        c->ws = NULL;
        goto fail;
    }
    bs = cublasLtCreate(&c->lt);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        c->lt = NULL;
        s = qn_fail(QN_ERR_CUDA, "qn_cuda_ctx_create: cublasLtCreate: status %d (%s)", (int)bs,
                    cublasLtGetStatusString(bs));
        goto fail;
    }
    for (int i = 0; i < QN_CUDA_EVENTS; i++)
        CTX_STEP(cudaEventCreate(&c->ev[i]));
#undef CTX_STEP

    *out = c;
    return QN_OK;
fail:
    qn_cuda_ctx_free(c);
    return s;
}

extern "C" void qn_cuda_ctx_free(qn_cuda_ctx *c) {
    if (!c) return;
    // Errors are ignored on purpose: this runs on error paths too, and a
    // sticky fault has already been reported by qn_cuda_sync.
    if (c->stream) cudaStreamSynchronize(c->stream);
    for (int i = 0; i < QN_CUDA_EVENTS; i++)
        if (c->ev[i]) cudaEventDestroy(c->ev[i]);
    if (c->lt) cublasLtDestroy(c->lt);
    cudaFree(c->ws);
    cudaFree(c->arena);
    if (c->stream) cudaStreamDestroy(c->stream);
    cudaGetLastError();
    free(c);
}

extern "C" void *qn_cuda_ctx_stream(const qn_cuda_ctx *c) {
    return c ? (void *)c->stream : NULL;
}
extern "C" void *qn_cuda_ctx_blaslt(const qn_cuda_ctx *c) {
    return c ? (void *)c->lt : NULL;
}
extern "C" void *qn_cuda_ctx_workspace(const qn_cuda_ctx *c, size_t *bytes) {
    if (bytes) *bytes = c ? c->ws_bytes : 0;
    return c ? c->ws : NULL;
}
extern "C" int qn_cuda_ctx_device(const qn_cuda_ctx *c) {
    return c ? c->device : -1;
}
extern "C" int qn_cuda_ctx_sm_count(const qn_cuda_ctx *c) {
    return c ? c->sm_count : 0;
}

// ---- arena ----

extern "C" void *qn_cuda_alloc(qn_cuda_ctx *c, size_t bytes) {
    if (!c || !c->arena) return NULL;
    size_t off = (c->used + (QN_CUDA_ALIGN - 1)) & ~(size_t)(QN_CUDA_ALIGN - 1);
    if (off > c->cap || bytes > c->cap - off) return NULL;
    c->used = off + bytes;
    if (c->used > c->peak) c->peak = c->used;
    return c->arena + off;
}

extern "C" size_t qn_cuda_mark(const qn_cuda_ctx *c) {
    return c ? c->used : 0;
}

extern "C" void qn_cuda_reset(qn_cuda_ctx *c, size_t mark) {
    if (c && mark <= c->used) c->used = mark;
}

extern "C" size_t qn_cuda_arena_used(const qn_cuda_ctx *c) {
    return c ? c->used : 0;
}
extern "C" size_t qn_cuda_arena_peak(const qn_cuda_ctx *c) {
    return c ? c->peak : 0;
}
extern "C" size_t qn_cuda_arena_cap(const qn_cuda_ctx *c) {
    return c ? c->cap : 0;
}

// ---- transfers ----

extern "C" qn_status qn_cuda_upload(qn_cuda_ctx *c, void *dst_dev, const void *src_host,
                                    size_t bytes) {
    if (bytes == 0) return QN_OK;
    if (!c || !dst_dev || !src_host)
        return qn_fail(QN_ERR_INVALID, "qn_cuda_upload: NULL argument");
    QN_CUDA_TRY(cudaMemcpyAsync(dst_dev, src_host, bytes, cudaMemcpyHostToDevice, c->stream));
    return QN_OK;
}

extern "C" qn_status qn_cuda_download(qn_cuda_ctx *c, void *dst_host, const void *src_dev,
                                      size_t bytes) {
    if (!c) return qn_fail(QN_ERR_INVALID, "qn_cuda_download: NULL context");
    if (bytes > 0) {
        if (!dst_host || !src_dev)
            return qn_fail(QN_ERR_INVALID, "qn_cuda_download: NULL argument");
        QN_CUDA_TRY(cudaMemcpyAsync(dst_host, src_dev, bytes, cudaMemcpyDeviceToHost, c->stream));
    }
    return qn_cuda_sync(c);
}

extern "C" qn_status qn_cuda_copy(qn_cuda_ctx *c, void *dst_dev, const void *src_dev,
                                  size_t bytes) {
    if (bytes == 0) return QN_OK;
    if (!c || !dst_dev || !src_dev) return qn_fail(QN_ERR_INVALID, "qn_cuda_copy: NULL argument");
    QN_CUDA_TRY(cudaMemcpyAsync(dst_dev, src_dev, bytes, cudaMemcpyDeviceToDevice, c->stream));
    return QN_OK;
}

extern "C" qn_status qn_cuda_memset(qn_cuda_ctx *c, void *dst_dev, int byte, size_t bytes) {
    if (bytes == 0) return QN_OK;
    if (!c || !dst_dev) return qn_fail(QN_ERR_INVALID, "qn_cuda_memset: NULL argument");
    QN_CUDA_TRY(cudaMemsetAsync(dst_dev, byte, bytes, c->stream));
    return QN_OK;
}

extern "C" qn_status qn_cuda_sync(qn_cuda_ctx *c) {
    if (!c) return qn_fail(QN_ERR_INVALID, "qn_cuda_sync: NULL context");
    cudaError_t e = cudaStreamSynchronize(c->stream);
    if (e == cudaSuccess) e = cudaGetLastError();
    if (e != cudaSuccess)
        return qn_fail(QN_ERR_CUDA,
                       "CUDA error on device %d (from a kernel or copy queued "
                       "before this sync): %s: %s",
                       c->device, cudaGetErrorName(e), cudaGetErrorString(e));
    return QN_OK;
}

// ---- events ----

extern "C" qn_status qn_cuda_event_record(qn_cuda_ctx *c, int slot) {
    if (!c || slot < 0 || slot >= QN_CUDA_EVENTS)
        return qn_fail(QN_ERR_INVALID, "qn_cuda_event_record: slot %d (0..%d)", slot,
                       QN_CUDA_EVENTS - 1);
    QN_CUDA_TRY(cudaEventRecord(c->ev[slot], c->stream));
    return QN_OK;
}

extern "C" qn_status qn_cuda_elapsed_ms(qn_cuda_ctx *c, int start_slot, int end_slot, float *ms) {
    if (!c || !ms || start_slot < 0 || start_slot >= QN_CUDA_EVENTS || end_slot < 0 ||
        end_slot >= QN_CUDA_EVENTS)
        return qn_fail(QN_ERR_INVALID, "qn_cuda_elapsed_ms: slots %d, %d (0..%d)", start_slot,
                       end_slot, QN_CUDA_EVENTS - 1);
    QN_CUDA_TRY(cudaEventSynchronize(c->ev[end_slot]));
    QN_CUDA_TRY(cudaEventElapsedTime(ms, c->ev[start_slot], c->ev[end_slot]));
    return QN_OK;
}
