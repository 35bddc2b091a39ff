// attention.cu — causal attention kernels: packed variable-length forward,
// its flash-attention-2 style backward, and paged-KV (flash-decoding)
// attention. Contracts and tile constants in attention.h; launch sizes come
// from attention_plan.c.
//
// Thread layout shared by every kernel: a block of WARPS warps; each warp
// owns RW "rows" (query rows in fwd/dq, key rows in dk/dv, query heads of one
// token in the paged kernel). A streamed tile has BK = 32 entries, one per
// lane: lane j computes the full HD-long dot product of its entry with each
// of the warp's rows (reading its tile row with an odd shared-memory stride,
// HD+1, so the 32 lanes hit 32 banks), then the warp turns the 32 scores into
// softmax weights (warp shuffles) and accumulates weight * value with lanes
// spread over the head dim (lane owns dims lane, lane+32, ...). All
// arithmetic is fp32; scores are kept in log2 units (scale * log2(e) folded
// in) so the exponentials are exp2f.
//
// Masked scores are -inf and running maxima start at a finite NEG_INIT, so a
// row whose every score in a tile is masked gets exp2(-inf - m) = 0 weights
// and a correction exp2(NEG_INIT - NEG_INIT) = 1, never inf - inf = NaN.
//
// Speed notes (not done yet): tensor cores (mma.sync m16n8k16 bf16, later
// wgmma), sharing each K/V tile between the query heads of a GQA group in the
// packed kernels, 16-byte vector loads and cp.async double buffering,
// larger row counts per warp; the dq and dk/dv kernels each recompute the
// probabilities (the price of having no atomics).
#include <math.h>

#include "core/ops/cuda/attention.h"
#include "core/ops/cuda/cuda_common.cuh"

#include "core/ops/cuda/attention_kernels.cuh"

namespace {

// ------------------------------------------------------------------ launchers

// Raises a kernel's dynamic shared-memory limit when it needs more than the
// default 48 KiB (HD above ~128 on the generic path).
template <typename K>
qn_status smem_opt_in(K kernel, size_t bytes) {
    if (bytes > 48 * 1024)
        QN_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)bytes));
    return QN_OK;
}

template <typename T, int NE, int HDC>
qn_status launch_fwd(cudaStream_t st, const qn_cuda_att_plan &p, T *out, float *lse, const T *q,
                     const T *k, const T *v, const int32_t *cu, int S, int Ttot, int NH, int NKV,
                     int HD, int max_seqlen) {
    QN_CHECK(smem_opt_in(fwd_kernel<T, NE, HDC>, p.smem_fwd));
    dim3 grid((unsigned)p.q_tiles, (unsigned)NH, (unsigned)S);
    float scale_log2 = (float)(1.0 / sqrt((double)HD)) * LOG2E;
    fwd_kernel<T, NE, HDC><<<grid, NTHREADS, p.smem_fwd, st>>>(out, lse, q, k, v, cu, Ttot, NH,
                                                               NKV, HD, max_seqlen, scale_log2);
    QN_CUDA_LAUNCH_CHECK("qn_cuda_attention_forward");
    return QN_OK;
}

template <typename T, int NE, int HDC>
qn_status launch_bwd(cudaStream_t st, const qn_cuda_att_plan &p, float *D, T *dq, T *dk, T *dv,
                     const T *dout, const T *q, const T *k, const T *v, const T *o,
                     const float *lse, const int32_t *cu, int S, int Ttot, int NH, int NKV,
                     int HD, int max_seqlen) {
    size_t rows = (size_t)Ttot * NH;
    bwd_dot_kernel<T><<<(unsigned)((rows + 7) / 8), 256, 0, st>>>(D, dout, o, rows, HD);
    QN_CUDA_LAUNCH_CHECK("qn_cuda_attention_backward (D = rowsum(dout*out))");
    float scale = (float)(1.0 / sqrt((double)HD)), scale_log2 = scale * LOG2E;
    QN_CHECK(smem_opt_in(bwd_dq_kernel<T, NE, HDC>, p.smem_dq));
    dim3 gq((unsigned)p.q_tiles, (unsigned)NH, (unsigned)S);
    bwd_dq_kernel<T, NE, HDC><<<gq, NTHREADS, p.smem_dq, st>>>(
        dq, dout, q, k, v, lse, D, cu, Ttot, NH, NKV, HD, max_seqlen, scale_log2, scale);
    QN_CUDA_LAUNCH_CHECK("qn_cuda_attention_backward (dq)");
    QN_CHECK(smem_opt_in(bwd_dkv_kernel<T, NE, HDC>, p.smem_dkv));
    dim3 gk((unsigned)p.k_tiles, (unsigned)NKV, (unsigned)S);
    bwd_dkv_kernel<T, NE, HDC><<<gk, NTHREADS, p.smem_dkv, st>>>(
        dk, dv, dout, q, k, v, lse, D, cu, Ttot, NH, NKV, HD, max_seqlen, scale_log2, scale);
    QN_CUDA_LAUNCH_CHECK("qn_cuda_attention_backward (dk, dv)");
    return QN_OK;
}

template <typename T, int NE, int HDC>
qn_status launch_paged(cudaStream_t st, const qn_cuda_paged_plan &p, const qn_cuda_paged_attn *a,
                       float *scratch) {
    paged_args pa;
    pa.part_o = scratch;
    pa.part_ml = scratch + (size_t)a->T * a->NH * p.n_splits * a->HD;
    pa.T = a->T;
    pa.NH = a->NH;
    pa.NKV = a->NKV;
    pa.L = a->n_layers;
    pa.layer = a->layer;
    pa.B = a->block_size;
    pa.n_blocks = a->n_blocks;
    pa.n_seqs = a->n_seqs;
    pa.max_blocks = a->max_blocks;
    pa.max_context = a->max_context;
    pa.n_splits = p.n_splits;
    pa.split_keys = p.split_keys;
    pa.head_passes = p.head_passes;
    pa.scale_log2 = (float)(1.0 / sqrt((double)a->HD)) * LOG2E;
    QN_CHECK(smem_opt_in(paged_split_kernel<T, NE, HDC>, p.smem));
    dim3 grid((unsigned)(a->T * p.n_splits), (unsigned)(a->NKV * p.head_passes));
    paged_split_kernel<T, NE, HDC><<<grid, NTHREADS, p.smem, st>>>(
        pa, (const T *)a->q, (const T *)a->arena, a->pos, a->seq, a->tables, a->HD);
    QN_CUDA_LAUNCH_CHECK("qn_cuda_paged_attention_forward (splits)");
    int rows = a->T * a->NH;
    paged_combine_kernel<T><<<(unsigned)((rows + 7) / 8), 256, 0, st>>>(
        (T *)a->out, a->lse, pa.part_o, pa.part_ml, rows, p.n_splits, a->HD);
    QN_CUDA_LAUNCH_CHECK("qn_cuda_paged_attention_forward (combine)");
    return QN_OK;
}

// Picks the compiled head-dim path: 64 and 128 exactly, else the generic
// kernels with NE = 8 (any multiple of 8 up to 256) and a runtime HD.
#define QN_ATT_BY_PATH(path, launch, T, ...)                          \
    ((path) == 64    ? launch<T, 2, 64>(__VA_ARGS__)                  \
     : (path) == 128 ? launch<T, 4, 128>(__VA_ARGS__)                 \
                     : launch<T, 8, 0>(__VA_ARGS__))

}  // namespace

extern "C" qn_status qn_cuda_attention_forward(qn_cuda_ctx *c, qn_dtype dt, void *out,
                                               float *lse, const void *q, const void *k,
                                               const void *v, const int32_t *cu_seqlens, int S,
                                               int T, int NH, int NKV, int HD, int max_seqlen) {
    qn_cuda_att_plan p;
    QN_CHECK(qn_cuda_attention_plan(dt, S, T, NH, NKV, HD, max_seqlen, &p));
    QN_CUDA_REQUIRE(c, "qn_cuda_attention_forward: NULL context");
    if (T == 0) return QN_OK;
    QN_CUDA_REQUIRE(out && lse && q && k && v && cu_seqlens,
                    "qn_cuda_attention_forward: NULL tensor");
    cudaStream_t st = qn_cuda_stream(c);
    return qn_cuda_dispatch("qn_cuda_attention_forward", dt, [&](auto tag) {
        using E = decltype(tag);
        return QN_ATT_BY_PATH(p.hd_path, launch_fwd, E, st, p, (E *)out, lse, (const E *)q,
                              (const E *)k, (const E *)v, cu_seqlens, S, T, NH, NKV, HD,
                              max_seqlen);
    });
}

extern "C" qn_status qn_cuda_attention_backward(qn_cuda_ctx *c, qn_dtype dt, void *dq, void *dk,
                                                void *dv, const void *dout, const void *q,
                                                const void *k, const void *v, const void *out,
                                                const float *lse, const int32_t *cu_seqlens,
                                                int S, int T, int NH, int NKV, int HD,
                                                int max_seqlen) {
    qn_cuda_att_plan p;
    QN_CHECK(qn_cuda_attention_plan(dt, S, T, NH, NKV, HD, max_seqlen, &p));
    QN_CUDA_REQUIRE(c, "qn_cuda_attention_backward: NULL context");
    if (T == 0) return QN_OK;
    QN_CUDA_REQUIRE(dq && dk && dv && dout && q && k && v && out && lse && cu_seqlens,
                    "qn_cuda_attention_backward: NULL tensor");
    size_t mark = qn_cuda_mark(c);
    float *D = (float *)qn_cuda_alloc(c, p.bwd_scratch_bytes);
    if (!D)
        return qn_fail(QN_ERR_NOMEM,
                       "qn_cuda_attention_backward: %zu bytes of scratch (D [T, NH]) do not "
                       "fit the arena (%zu of %zu used)",
                       p.bwd_scratch_bytes, qn_cuda_arena_used(c), qn_cuda_arena_cap(c));
    cudaStream_t st = qn_cuda_stream(c);
    qn_status s = qn_cuda_dispatch("qn_cuda_attention_backward", dt, [&](auto tag) {
        using E = decltype(tag);
        return QN_ATT_BY_PATH(p.hd_path, launch_bwd, E, st, p, D, (E *)dq, (E *)dk, (E *)dv,
                              (const E *)dout, (const E *)q, (const E *)k, (const E *)v,
                              (const E *)out, lse, cu_seqlens, S, T, NH, NKV, HD, max_seqlen);
    });
    qn_cuda_reset(c, mark);  // queued kernels keep using D; later work is ordered after them
    return s;
}

extern "C" qn_status qn_cuda_paged_attention_forward(qn_cuda_ctx *c, qn_dtype dt,
                                                     const qn_cuda_paged_attn *a) {
    qn_cuda_paged_plan p;
    QN_CHECK(qn_cuda_paged_attention_plan(dt, a, 0, &p));  // shapes first, device untouched
    QN_CUDA_REQUIRE(c, "qn_cuda_paged_attention_forward: NULL context");
    QN_CHECK(qn_cuda_paged_attention_plan(dt, a, qn_cuda_ctx_sm_count(c), &p));
    if (a->T == 0) return QN_OK;
    QN_CUDA_REQUIRE(a->out && a->q && a->arena && a->pos && a->seq && a->tables,
                    "qn_cuda_paged_attention_forward: NULL tensor");
    size_t mark = qn_cuda_mark(c);
    float *scratch = (float *)qn_cuda_alloc(c, p.scratch_bytes);
    if (!scratch)
        return qn_fail(QN_ERR_NOMEM,
                       "qn_cuda_paged_attention_forward: %zu bytes of split partials do not fit "
                       "the arena (%zu of %zu used)",
                       p.scratch_bytes, qn_cuda_arena_used(c), qn_cuda_arena_cap(c));
    cudaStream_t st = qn_cuda_stream(c);
    qn_status s = qn_cuda_dispatch("qn_cuda_paged_attention_forward", dt, [&](auto tag) {
        using E = decltype(tag);
        return QN_ATT_BY_PATH(p.hd_path, launch_paged, E, st, p, a, scratch);
    });
    qn_cuda_reset(c, mark);
    return s;
}
