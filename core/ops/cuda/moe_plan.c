/* moe_plan.c — host-side checks, scratch sizes and the activation layout of
 * the CUDA router and MoE ops (moe.h). Plain C, built with or without CUDA,
 * so this logic is unit-tested without a GPU (test_cuda_lpmoe_host.c). The
 * kernels are in moe.cu; the tile-table size repeats tiled_gemm.cuh's
 * qn_tg_tiles_ints (64-row tiles), which moe.cu checks against at compile
 * time. */
#include <math.h>

#include "core/ops/cuda/moe.h"

enum { TILE_ROWS = 64 };

static size_t al256(size_t b) {
    return (b + 255) & ~(size_t)255;
}

static size_t dsize(qn_dtype dt) {
    return dt == QN_DTYPE_BF16 ? 2 : 4;
}

static size_t tiles_bytes(size_t TK, int E) {
    return al256(2 * ((TK + TILE_ROWS - 1) / TILE_ROWS + (size_t)E) * sizeof(int32_t));
}

qn_status qn_cuda_router_check(const qn_router_cfg *cfg, int T) {
    if (!cfg) return qn_fail(QN_ERR_INVALID, "router: NULL configuration");
    if (T < 0) return qn_fail(QN_ERR_INVALID, "router: T = %d must be >= 0", T);
    if (cfg->E < 1 || cfg->E > QN_ROUTER_MAX_E)
        return qn_fail(QN_ERR_INVALID, "router: E = %d must lie in [1, %d]", cfg->E,
                       QN_ROUTER_MAX_E);
    int kmax = cfg->E < QN_ROUTER_MAX_K ? cfg->E : QN_ROUTER_MAX_K;
    if (cfg->K < 1 || cfg->K > kmax)
        return qn_fail(QN_ERR_INVALID, "router: K = %d must lie in [1, %d]", cfg->K, kmax);
    if (cfg->n_group > 1) {
        if (cfg->E % cfg->n_group != 0 || cfg->E / cfg->n_group < 2)
            return qn_fail(QN_ERR_INVALID,
                           "router: n_group = %d must divide E = %d into groups of >= 2",
                           cfg->n_group, cfg->E);
        if (cfg->topk_group < 1 || cfg->topk_group > cfg->n_group)
            return qn_fail(QN_ERR_INVALID, "router: topk_group = %d must lie in [1, n_group = %d]",
                           cfg->topk_group, cfg->n_group);
    }
    if (cfg->score != QN_ROUTER_SIGMOID && cfg->score != QN_ROUTER_SOFTMAX)
        return qn_fail(QN_ERR_INVALID, "router: unknown scoring function %d", (int)cfg->score);
    if (!isfinite(cfg->routed_scaling_factor))
        return qn_fail(QN_ERR_INVALID, "router: routed_scaling_factor must be finite");
    return QN_OK;
}

size_t qn_cuda_router_scratch_bytes(qn_dtype dt, int T, int E) {
    if (T <= 0 || E <= 0) return 0;
    return al256((size_t)T * E * dsize(dt));
}

qn_status qn_cuda_moe_check(qn_dtype dt, int T, int C, int F, int E, int K) {
    if (dt != QN_DTYPE_F32 && dt != QN_DTYPE_BF16)
        return qn_fail(QN_ERR_UNSUPPORTED, "moe: dtype %s not supported (f32, bf16)",
                       qn_dtype_name(dt));
    if (T < 0) return qn_fail(QN_ERR_INVALID, "moe: T = %d must be >= 0", T);
    if (C <= 0 || F <= 0)
        return qn_fail(QN_ERR_INVALID, "moe: C = %d and F = %d must be > 0", C, F);
    if (E < 1 || E > QN_ROUTER_MAX_E)
        return qn_fail(QN_ERR_INVALID, "moe: E = %d must lie in [1, %d]", E, QN_ROUTER_MAX_E);
    int kmax = E < QN_ROUTER_MAX_K ? E : QN_ROUTER_MAX_K;
    if (K < 1 || K > kmax)
        return qn_fail(QN_ERR_INVALID, "moe: K = %d must lie in [1, %d]", K, kmax);
    if ((int64_t)T * K > INT32_MAX)
        return qn_fail(QN_ERR_INVALID, "moe: T*K = %lld slots exceed the int32 slot index",
                       (long long)T * K);
    /* the GEMM grid takes output columns in 64-wide tiles, at most 65535 */
    if (C > 65535 * 64 || F > 65535 * 64)
        return qn_fail(QN_ERR_INVALID, "moe: C = %d or F = %d too large for the GEMM grid", C, F);
    return QN_OK;
}

size_t qn_cuda_moe_acts_bytes(qn_dtype dt, int T, int K, int C, int F, int E) {
    size_t TK = (size_t)(T > 0 ? T : 0) * (size_t)(K > 0 ? K : 0), es = dsize(dt);
    return al256((size_t)(E + 1) * sizeof(int32_t)) + 2 * al256(TK * sizeof(int32_t)) +
           2 * al256(TK * C * es) + 3 * al256(TK * F * es);
}

qn_status qn_cuda_moe_acts_carve(qn_dtype dt, void *base, size_t bytes, int T, int K, int C, int F,
                                 int E, qn_cuda_moe_acts *out) {
    QN_CHECK(qn_cuda_moe_check(dt, T, C, F, E, K));
    if (!out) return qn_fail(QN_ERR_INVALID, "moe: NULL acts");
    size_t need = qn_cuda_moe_acts_bytes(dt, T, K, C, F, E);
    if (!base || bytes < need)
        return qn_fail(QN_ERR_INVALID, "moe: activation block of %zu bytes, %zu needed", bytes,
                       need);
    size_t TK = (size_t)T * K, es = dsize(dt);
    char *p = (char *)base;
    out->offsets = (int32_t *)p;
    p += al256((size_t)(E + 1) * sizeof(int32_t));
    out->slot_tok = (int32_t *)p;
    p += al256(TK * sizeof(int32_t));
    out->tok_slot = (int32_t *)p;
    p += al256(TK * sizeof(int32_t));
    out->xs = p;
    p += al256(TK * C * es);
    out->gate = p;
    p += al256(TK * F * es);
    out->up = p;
    p += al256(TK * F * es);
    out->act = p;
    p += al256(TK * F * es);
    out->ys = p;
    return QN_OK;
}

size_t qn_cuda_moe_fwd_scratch_bytes(qn_dtype dt, int T, int K, int C, int F, int E) {
    if (T <= 0) return 0;
    return tiles_bytes((size_t)T * K, E);
}

size_t qn_cuda_moe_bwd_scratch_bytes(qn_dtype dt, int T, int K, int C, int F, int E) {
    if (T <= 0) return 0;
    size_t TK = (size_t)T * K, es = dsize(dt);
    /* dys (dt), dxs (fp32), d act (fp32), dg and du (dt), tile table */
    return al256(TK * C * es) + al256(TK * C * 4) + al256(TK * F * 4) + 2 * al256(TK * F * es) +
           tiles_bytes(TK, E);
}
