/* attention_plan.c — host-side planning and validation for the CUDA
 * attention ops (attention.h): which compiled head-dim path runs, grid and
 * shared-memory sizes, flash-decoding split counts, scratch bytes, and the
 * refusal of bad shapes before anything touches a device. Plain C in every
 * build (with and without CUDA), so it is unit-tested on machines without a
 * GPU (tests/unit/test_cuda_attention_plan.c). The shared-memory formulas
 * here are the ones attention.cu launches with: change both together. */
#include <stdint.h>

#include "core/ops/cuda/attention.h"

enum { GRID_YZ_MAX = 65535 };

static qn_status check_dtype_hd(const char *op, qn_dtype dt, int HD, int *path) {
    if (dt != QN_DTYPE_F32 && dt != QN_DTYPE_BF16)
        return qn_fail(QN_ERR_UNSUPPORTED, "%s: dtype %s (only F32 and BF16 storage)", op,
                       qn_dtype_name(dt));
    if (HD < 8 || HD > QN_CUDA_ATT_MAX_HD || HD % 8 != 0)
        return qn_fail(QN_ERR_UNSUPPORTED,
                       "%s: head_dim %d (supported: multiples of 8 from 8 to %d; 64 and 128 "
                       "have dedicated paths)",
                       op, HD, QN_CUDA_ATT_MAX_HD);
    *path = (HD == 64 || HD == 128) ? HD : 0;
    return QN_OK;
}

/* Q tile [BQ][HD], K tile [BK][HD+1] (odd stride: a lane per key row reads
 * without bank conflicts), V tile [BK][HD]. */
static size_t smem_fwd(int HD) {
    return sizeof(float) * ((size_t)QN_CUDA_ATT_BQ * HD + (size_t)QN_CUDA_ATT_BK * (HD + 1) +
                            (size_t)QN_CUDA_ATT_BK * HD);
}

qn_status qn_cuda_attention_plan(qn_dtype dt, int S, int T, int NH, int NKV, int HD,
                                 int max_seqlen, qn_cuda_att_plan *p) {
    const char *op = "cuda attention";
    int path = 0;
    QN_CHECK(check_dtype_hd(op, dt, HD, &path));
    if (S < 1 || S > GRID_YZ_MAX)
        return qn_fail(QN_ERR_INVALID, "%s: S = %d sequences (1 .. %d)", op, S, GRID_YZ_MAX);
    if (T < 0) return qn_fail(QN_ERR_INVALID, "%s: T = %d tokens is negative", op, T);
    if (NH < 1 || NKV < 1 || NH > GRID_YZ_MAX)
        return qn_fail(QN_ERR_INVALID, "%s: NH = %d, NKV = %d (both >= 1, NH <= %d)", op, NH,
                       NKV, GRID_YZ_MAX);
    if (NH % NKV != 0)
        return qn_fail(QN_ERR_INVALID, "%s: NKV = %d does not divide NH = %d", op, NKV, NH);
    if (max_seqlen < 0 || max_seqlen > T || (T > 0 && max_seqlen < 1))
        return qn_fail(QN_ERR_INVALID, "%s: max_seqlen = %d outside [1, T = %d]", op, max_seqlen,
                       T);
    if ((int64_t)T * NH * HD > INT64_MAX / 4)
        return qn_fail(QN_ERR_INVALID, "%s: T*NH*HD overflows", op);
    qn_cuda_att_plan r = {0};
    r.hd_path = path;
    r.q_tiles = (max_seqlen + QN_CUDA_ATT_BQ - 1) / QN_CUDA_ATT_BQ;
    r.k_tiles = r.q_tiles;
    r.smem_fwd = smem_fwd(HD);
    /* dq: Q and dO tiles [BQ][HD]; K and V tiles [BK][HD+1] (read by key row
     * for the scores and by column for dq). */
    r.smem_dq = sizeof(float) * (2 * (size_t)QN_CUDA_ATT_BQ * HD +
                                 2 * (size_t)QN_CUDA_ATT_BK * (HD + 1));
    /* dk/dv: K and V tiles [BQ][HD]; Q and dO tiles [BK][HD+1]; lse and D of
     * the BK queries. */
    r.smem_dkv = sizeof(float) * (2 * (size_t)QN_CUDA_ATT_BQ * HD +
                                  2 * (size_t)QN_CUDA_ATT_BK * (HD + 1) + 2 * QN_CUDA_ATT_BK);
    r.bwd_scratch_bytes = sizeof(float) * (size_t)T * (size_t)NH;
    *p = r;
    return QN_OK;
}

qn_status qn_cuda_attention_seqlens(const int32_t *cu, int S, int T, int *max_seqlen) {
    if (!cu || S < 1)
        return qn_fail(QN_ERR_INVALID, "cu_seqlens: %s", !cu ? "NULL" : "S < 1 sequences");
    if (cu[0] != 0) return qn_fail(QN_ERR_INVALID, "cu_seqlens[0] = %d, must be 0", cu[0]);
    int m = 0;
    for (int s = 0; s < S; s++) {
        if (cu[s + 1] < cu[s])
            return qn_fail(QN_ERR_INVALID, "cu_seqlens[%d] = %d < cu_seqlens[%d] = %d", s + 1,
                           cu[s + 1], s, cu[s]);
        int len = cu[s + 1] - cu[s];
        if (len > m) m = len;
    }
    if (cu[S] != T)
        return qn_fail(QN_ERR_INVALID, "cu_seqlens[%d] = %d, must equal T = %d", S, cu[S], T);
    *max_seqlen = m;
    return QN_OK;
}

static int mul_ok(size_t *acc, int64_t f) {
    if (f < 0) return 0;
    if (f != 0 && *acc > SIZE_MAX / (size_t)f) return 0;
    *acc *= (size_t)f;
    return 1;
}

qn_status qn_cuda_paged_attention_plan(qn_dtype dt, const qn_cuda_paged_attn *a, int sm_count,
                                       qn_cuda_paged_plan *p) {
    const char *op = "cuda paged attention";
    if (!a || !p) return qn_fail(QN_ERR_INVALID, "%s: NULL arguments", op);
    int path = 0;
    QN_CHECK(check_dtype_hd(op, dt, a->HD, &path));
    if (a->T < 0) return qn_fail(QN_ERR_INVALID, "%s: T = %d tokens is negative", op, a->T);
    if (a->NH < 1 || a->NKV < 1 || a->NH % a->NKV != 0)
        return qn_fail(QN_ERR_INVALID, "%s: NH = %d, NKV = %d (NKV >= 1 must divide NH)", op,
                       a->NH, a->NKV);
    if (a->n_layers < 1 || a->layer < 0 || a->layer >= a->n_layers)
        return qn_fail(QN_ERR_INVALID, "%s: layer %d outside [0, n_layers = %d)", op, a->layer,
                       a->n_layers);
    if (a->block_size < 1 || a->n_blocks < 1 || a->n_seqs < 1 || a->max_blocks < 1)
        return qn_fail(QN_ERR_INVALID,
                       "%s: block_size %d, n_blocks %d, n_seqs %d, max_blocks %d (all >= 1)", op,
                       a->block_size, a->n_blocks, a->n_seqs, a->max_blocks);
    if (a->max_context < 1 || (int64_t)a->max_context > (int64_t)a->max_blocks * a->block_size)
        return qn_fail(QN_ERR_INVALID, "%s: max_context %d outside [1, max_blocks*block_size = %lld]",
                       op, a->max_context, (long long)a->max_blocks * a->block_size);
    size_t arena = 1;
    if (!mul_ok(&arena, a->n_blocks) || !mul_ok(&arena, a->n_layers) || !mul_ok(&arena, 2) ||
        !mul_ok(&arena, a->block_size) || !mul_ok(&arena, a->NKV) || !mul_ok(&arena, a->HD) ||
        !mul_ok(&arena, 4))
        return qn_fail(QN_ERR_INVALID, "%s: arena size overflows", op);
    int G = a->NH / a->NKV;
    qn_cuda_paged_plan r = {0};
    r.hd_path = path;
    r.head_passes = (G + QN_CUDA_ATT_BQ - 1) / QN_CUDA_ATT_BQ;
    if ((int64_t)a->NKV * r.head_passes > GRID_YZ_MAX)
        return qn_fail(QN_ERR_INVALID, "%s: NKV = %d too many kv heads for the grid", op, a->NKV);
    int64_t base = (int64_t)a->T * a->NKV * r.head_passes;
    int64_t target = 2 * (int64_t)(sm_count > 0 ? sm_count : 132);
    int64_t want = base > 0 ? (target + base - 1) / base : 1;
    /* floor, so that every split of a max_context-long row keeps >= MIN_SPLIT keys */
    int64_t by_len = (int64_t)a->max_context / QN_CUDA_ATT_MIN_SPLIT;
    int64_t n = want < by_len ? want : by_len;
    if (n > QN_CUDA_ATT_MAX_SPLITS) n = QN_CUDA_ATT_MAX_SPLITS;
    if (n < 1) n = 1;
    int64_t per = ((int64_t)a->max_context + n - 1) / n;
    per = (per + QN_CUDA_ATT_BK - 1) / QN_CUDA_ATT_BK * QN_CUDA_ATT_BK;
    r.split_keys = (int)per;
    r.n_splits = (int)(((int64_t)a->max_context + per - 1) / per);
    if ((int64_t)a->T * r.n_splits > INT32_MAX)
        return qn_fail(QN_ERR_INVALID, "%s: T = %d too many tokens for the grid", op, a->T);
    r.smem = smem_fwd(a->HD);
    size_t scratch = sizeof(float);
    if (!mul_ok(&scratch, a->T) || !mul_ok(&scratch, a->NH) || !mul_ok(&scratch, r.n_splits) ||
        !mul_ok(&scratch, a->HD + 2))
        return qn_fail(QN_ERR_INVALID, "%s: scratch size overflows", op);
    r.scratch_bytes = scratch;
    *p = r;
    return QN_OK;
}
