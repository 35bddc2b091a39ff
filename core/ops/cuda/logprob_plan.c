/* logprob_plan.c — host-side planning and argument checks of the CUDA
 * log-prob op (logprob.h): row blocks, vocabulary chunks and the arena bytes
 * each direction takes. Plain C, built with or without CUDA, so the shape
 * logic is unit-tested on machines without a GPU (test_cuda_lpmoe_host.c).
 * The kernels themselves are in logprob.cu. */
#include <math.h>

#include "core/ops/cuda/logprob.h"

/* The arena hands out 256-byte aligned blocks (cuda_ctx.h). */
static size_t al256(size_t b) {
    return (b + 255) & ~(size_t)255;
}

qn_status qn_cuda_logprob_plan_make(qn_dtype dt, int N, int C, int V, float temperature, int chunk,
                                    qn_cuda_logprob_plan *out) {
    if (!out) return qn_fail(QN_ERR_INVALID, "logprob: NULL plan");
    if (dt != QN_DTYPE_F32 && dt != QN_DTYPE_BF16)
        return qn_fail(QN_ERR_UNSUPPORTED, "logprob: dtype %s not supported (f32, bf16)",
                       qn_dtype_name(dt));
    if (N < 0) return qn_fail(QN_ERR_INVALID, "logprob: N = %d must be >= 0", N);
    if (C <= 0) return qn_fail(QN_ERR_INVALID, "logprob: C = %d must be > 0", C);
    if (V <= 0) return qn_fail(QN_ERR_INVALID, "logprob: V = %d must be > 0", V);
    if (chunk <= 0 || chunk > QN_CUDA_LOGPROB_MAX_CHUNK)
        return qn_fail(QN_ERR_INVALID, "logprob: chunk = %d must lie in [1, %d]", chunk,
                       QN_CUDA_LOGPROB_MAX_CHUNK);
    if (!(temperature > 0) || !isfinite(temperature))
        return qn_fail(QN_ERR_INVALID, "logprob: temperature = %g must be finite and > 0",
                       (double)temperature);
    qn_cuda_logprob_plan p = {0};
    p.rows = N < QN_CUDA_LOGPROB_ROWS ? N : QN_CUDA_LOGPROB_ROWS;
    p.nblocks = p.rows > 0 ? (N + p.rows - 1) / p.rows : 0;
    p.chunk = chunk < V ? chunk : V;
    p.nchunks = (V + p.chunk - 1) / p.chunk;
    p.last_chunk = V - (p.nchunks - 1) * p.chunk;
    size_t zb = al256((size_t)p.rows * p.chunk * sizeof(float));
    /* per row: m, s, a, target logit (doubles) */
    p.fwd_bytes = zb + al256((size_t)p.rows * 4 * sizeof(double));
    p.bwd_bytes = zb;
    if (dt == QN_DTYPE_BF16) {
        /* d logits in bf16 for the GEMMs, and an fp32 dh accumulator */
        p.bwd_bytes += al256((size_t)p.rows * p.chunk * 2);
        p.bwd_bytes += al256((size_t)p.rows * C * sizeof(float));
    }
    if (N == 0) p.fwd_bytes = p.bwd_bytes = 0;
    *out = p;
    return QN_OK;
}
