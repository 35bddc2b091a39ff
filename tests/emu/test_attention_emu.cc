// test_attention_emu.cc — runs the CUDA attention kernels' device code
// (core/ops/cuda/attention_kernels.cuh) on the CPU and compares it with the
// CPU reference ops, so the kernels' indexing, masking, tiling, online
// softmax, split/combine and NaN poisoning are tested on machines without a
// GPU.
//
// The emulation: every CUDA thread of a block is an OS thread (a pool per
// launch that walks the grid block by block); __syncthreads is a barrier of
// the block, warp shuffles and __any_sync exchange through a per-warp slot
// array between two barriers of the warp; dynamic shared memory is one
// static array filled with NaN before each block (a read of a slot the
// kernel never loaded shows up as NaN). Storage is f32 only (the bf16
// instantiations differ only in qn_ld/qn_st). What it cannot show: races
// that the lock-step barriers hide, speed, register or shared-memory limits,
// and anything about nvcc's code generation; the GPU harness
// (tests/gpu/ops/ops_attention.c) is the real check.
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "core/ops/cpu/ops.h"
#include "core/ops/cuda/attention.h"

// ---- the CUDA built-ins the kernels use ----
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __shared__

namespace {

struct emu_dim3 {
    unsigned x = 1, y = 1, z = 1;
};
thread_local emu_dim3 threadIdx, blockIdx;
emu_dim3 blockDim, gridDim;

constexpr int EMU_MAX_WARPS = 8;
std::barrier<> *g_block_bar;
std::barrier<> *g_warp_bar[EMU_MAX_WARPS];
float g_slot_f[EMU_MAX_WARPS][32];
int g_slot_i[EMU_MAX_WARPS][32];

void __syncthreads() { g_block_bar->arrive_and_wait(); }

float emu_shfl(float v, int src) {
    int w = threadIdx.x / 32, l = threadIdx.x % 32;
    g_slot_f[w][l] = v;
    g_warp_bar[w]->arrive_and_wait();
    float r = g_slot_f[w][src & 31];
    g_warp_bar[w]->arrive_and_wait();
    return r;
}
float __shfl_sync(unsigned, float v, int j) { return emu_shfl(v, j); }
float __shfl_xor_sync(unsigned, float v, int o) { return emu_shfl(v, (int)(threadIdx.x % 32) ^ o); }
bool __any_sync(unsigned, bool b) {
    int w = threadIdx.x / 32, l = threadIdx.x % 32;
    g_slot_i[w][l] = b;
    g_warp_bar[w]->arrive_and_wait();
    int any = 0;
    for (int i = 0; i < 32; i++) any |= g_slot_i[w][i];
    g_warp_bar[w]->arrive_and_wait();
    return any != 0;
}
inline float qn_ld(const float *p) { return *p; }
inline void qn_st(float *p, float v) { *p = v; }
using std::isnan;
using std::min;

float smem[1 << 16];  // 256 KiB: more than any sm_90 block can have

}  // namespace

#define QN_UNROLL
#include "core/ops/cuda/attention_kernels.cuh"

namespace {

// Runs kernel() for every block of grid with `threads` threads per block.
void emu_launch(emu_dim3 grid, unsigned threads, size_t smem_bytes,
                const std::function<void()> &kernel) {
    if (smem_bytes > sizeof smem || threads % 32 || threads > 32 * EMU_MAX_WARPS) {
        fprintf(stderr, "emu_launch: bad launch (%zu bytes of shared memory, %u threads)\n",
                smem_bytes, threads);
        exit(1);
    }
    std::barrier<> block_bar((std::ptrdiff_t)threads);
    std::vector<std::barrier<> *> warp_bars;
    for (unsigned w = 0; w < threads / 32; w++) warp_bars.push_back(new std::barrier<>(32));
    g_block_bar = &block_bar;
    for (unsigned w = 0; w < threads / 32; w++) g_warp_bar[w] = warp_bars[w];
    blockDim = {threads, 1, 1};
    gridDim = grid;
    const size_t nblocks = (size_t)grid.x * grid.y * grid.z;
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; t++)
        pool.emplace_back([&, t] {
            threadIdx = {t, 0, 0};
            for (size_t b = 0; b < nblocks; b++) {
                blockIdx = {(unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y),
                            (unsigned)(b / ((size_t)grid.x * grid.y))};
                if (t == 0)
                    for (size_t i = 0; i < sizeof smem / sizeof smem[0]; i++) smem[i] = NAN;
                block_bar.arrive_and_wait();  // shared memory poisoned
                kernel();
                block_bar.arrive_and_wait();  // every thread done with this block
            }
        });
    for (auto &th : pool) th.join();
    for (auto *b : warp_bars) delete b;
}

uint64_t g_rng = 0x9E3779B97F4A7C15ull;
float urand(float lo, float hi) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return lo + (hi - lo) * (float)((double)(g_rng >> 40) / 16777216.0);
}
std::vector<float> rnd(size_t n, float lo, float hi) {
    std::vector<float> v(n);
    for (auto &x : v) x = urand(lo, hi);
    return v;
}

// Normalised error; infinite when got has a non-finite value where ref is finite.
double nerr(const float *ref, const float *got, size_t n) {
    double a = 0, b = 0;
    for (size_t i = 0; i < n; i++) {
        if (std::isfinite(ref[i]) && !std::isfinite(got[i])) return INFINITY;
        double d = (double)ref[i] - got[i];
        a += d * d, b += (double)ref[i] * ref[i];
    }
    return std::sqrt(a / (b > 1e-30 ? b : 1e-30));
}

int g_fail = 0;
void check(const char *what, double err, double tol) {
    bool ok = err <= tol;  // false for NaN
    if (!ok) g_fail++;
    printf("  %-5s err %.2e (tol %.0e) %s\n", what, err, tol, ok ? "ok" : "FAIL");
}

constexpr float LOG2E_ = 1.4426950408889634f;

template <int NE, int HDC>
void run_packed(std::vector<int> lens, int NH, int NKV, int HD, int max_seqlen_extra) {
    int S = (int)lens.size();
    std::vector<int32_t> cu(S + 1, 0);
    for (int s = 0; s < S; s++) cu[s + 1] = cu[s] + lens[s];
    int T = cu[S], ms = 0;
    if (qn_cuda_attention_seqlens(cu.data(), S, T, &ms) != QN_OK) exit(1);
    ms = std::min(T, ms + max_seqlen_extra);  // a generous max_seqlen is allowed
    qn_cuda_att_plan p;
    if (qn_cuda_attention_plan(QN_DTYPE_F32, S, T, NH, NKV, HD, ms, &p) != QN_OK) {
        fprintf(stderr, "plan: %s\n", qn_last_error());
        exit(1);
    }
    printf("packed S=%d T=%d NH=%d NKV=%d HD=%d path=%d max_seqlen=%d\n", S, T, NH, NKV, HD,
           p.hd_path, ms);
    size_t nq = (size_t)T * NH * HD, nk = (size_t)T * NKV * HD, nl = (size_t)T * NH;
    auto q = rnd(nq, -2, 2), k = rnd(nk, -2, 2), v = rnd(nk, -1, 1), dout = rnd(nq, -1, 1);
    std::vector<float> out(nq), lse(nl), dq(nq), dk(nk), dv(nk);
    std::vector<float> scr(qn_attention_scratch_floats(cu.data(), S, T, NH, NKV, HD) + 1);
    qn_attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), cu.data(), S, T,
                         NH, NKV, HD, scr.data());
    qn_attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(),
                          v.data(), out.data(), lse.data(), cu.data(), S, T, NH, NKV, HD,
                          scr.data());
    std::vector<float> gout(nq, NAN), glse(nl, NAN), gdq(nq, NAN), gdk(nk, NAN), gdv(nk, NAN);
    std::vector<float> D(nl, NAN);
    const float scale = (float)(1.0 / std::sqrt((double)HD)), sl2 = scale * LOG2E_;
    const unsigned nt = QN_CUDA_ATT_WARPS * 32;
    emu_launch({(unsigned)p.q_tiles, (unsigned)NH, (unsigned)S}, nt, p.smem_fwd, [&] {
        fwd_kernel<float, NE, HDC>(gout.data(), glse.data(), q.data(), k.data(), v.data(),
                                   cu.data(), T, NH, NKV, HD, ms, sl2);
    });
    check("out", nerr(out.data(), gout.data(), nq), 2e-5);
    check("lse", nerr(lse.data(), glse.data(), nl), 2e-5);
    emu_launch({(unsigned)((nl + 7) / 8), 1, 1}, 256, 0, [&] {
        bwd_dot_kernel<float>(D.data(), dout.data(), out.data(), nl, HD);
    });
    std::vector<float> Dref(nl);
    for (size_t r = 0; r < nl; r++) {
        double s = 0;
        for (int d = 0; d < HD; d++) s += (double)dout[r * HD + d] * out[r * HD + d];
        Dref[r] = (float)s;
    }
    check("D", nerr(Dref.data(), D.data(), nl), 2e-5);
    emu_launch({(unsigned)p.q_tiles, (unsigned)NH, (unsigned)S}, nt, p.smem_dq, [&] {
        bwd_dq_kernel<float, NE, HDC>(gdq.data(), dout.data(), q.data(), k.data(), v.data(),
                                      lse.data(), D.data(), cu.data(), T, NH, NKV, HD, ms, sl2,
                                      scale);
    });
    check("dq", nerr(dq.data(), gdq.data(), nq), 1e-4);
    emu_launch({(unsigned)p.k_tiles, (unsigned)NKV, (unsigned)S}, nt, p.smem_dkv, [&] {
        bwd_dkv_kernel<float, NE, HDC>(gdk.data(), gdv.data(), dout.data(), q.data(), k.data(),
                                       v.data(), lse.data(), D.data(), cu.data(), T, NH, NKV, HD,
                                       ms, sl2, scale);
    });
    check("dk", nerr(dk.data(), gdk.data(), nk), 1e-4);
    check("dv", nerr(dv.data(), gdv.data(), nk), 1e-4);
}

// A sequence of the paged batch: pos0 tokens cached, then a chunk of n.
struct pseq {
    int pos0, n;
};

template <int NE, int HDC>
void run_paged(std::vector<pseq> seqs, int NH, int NKV, int HD, int B, int sm_count, int bad_seq) {
    const int L = 2, layer = 1, KD = NKV * HD, QD = NH * HD;
    const int S = (int)seqs.size();
    int max_blocks = 1, total = 0, T = 0, max_ctx = 1;
    for (auto &sq : seqs) {
        int ctx = sq.pos0 + sq.n, nb = (ctx + B - 1) / B;
        max_blocks = std::max(max_blocks, nb), max_ctx = std::max(max_ctx, ctx);
        total += nb, T += sq.n;
    }
    const int n_blocks = total + 5;
    std::vector<int32_t> perm(n_blocks), tables((size_t)S * max_blocks, -1);
    for (int i = 0; i < n_blocks; i++) perm[i] = i;
    for (int i = n_blocks - 1; i > 0; i--)
        std::swap(perm[i], perm[std::min(i, (int)(urand(0, 1) * (float)(i + 1)))]);
    for (int s = 0, next = 0; s < S; s++)
        for (int b = 0; b < (seqs[s].pos0 + seqs[s].n + B - 1) / B; b++)
            tables[(size_t)s * max_blocks + b] = perm[next++];
    const size_t bf = (size_t)L * 2 * B * KD;
    auto arena = rnd((size_t)n_blocks * bf, -2, 2);
    // reference: gathered K/V, queries at their positions, CPU causal forward
    std::vector<int32_t> cu(S + 1, 0);
    for (int s = 0; s < S; s++) cu[s + 1] = cu[s] + seqs[s].pos0 + seqs[s].n;
    const int Tf = cu[S];
    std::vector<float> kf((size_t)Tf * KD), vf((size_t)Tf * KD);
    auto qf = rnd((size_t)Tf * QD, -2, 2);
    for (int s = 0; s < S; s++)
        for (int p = 0; p < cu[s + 1] - cu[s]; p++) {
            const float *slot = arena.data() + (size_t)tables[(size_t)s * max_blocks + p / B] * bf +
                                (size_t)(p % B) * KD;
            memcpy(&kf[(size_t)(cu[s] + p) * KD], slot + (size_t)(2 * layer) * B * KD,
                   sizeof(float) * KD);
            memcpy(&vf[(size_t)(cu[s] + p) * KD], slot + (size_t)(2 * layer + 1) * B * KD,
                   sizeof(float) * KD);
        }
    std::vector<float> of((size_t)Tf * QD), lf((size_t)Tf * NH);
    std::vector<float> scr(qn_attention_scratch_floats(cu.data(), S, Tf, NH, NKV, HD) + 1);
    qn_attention_forward(of.data(), lf.data(), qf.data(), kf.data(), vf.data(), cu.data(), S, Tf,
                         NH, NKV, HD, scr.data());
    std::vector<float> q((size_t)T * QD), ref((size_t)T * QD), rlse((size_t)T * NH);
    std::vector<int32_t> pos(T), seq(T);
    for (int s = 0, t = 0; s < S; s++)
        for (int i = 0; i < seqs[s].n; i++, t++) {
            size_t row = (size_t)cu[s] + seqs[s].pos0 + i;
            memcpy(&q[(size_t)t * QD], &qf[row * QD], sizeof(float) * QD);
            memcpy(&ref[(size_t)t * QD], &of[row * QD], sizeof(float) * QD);
            memcpy(&rlse[(size_t)t * NH], &lf[row * NH], sizeof(float) * NH);
            pos[t] = seqs[s].pos0 + i, seq[t] = s;
        }
    if (bad_seq >= 0) tables[(size_t)bad_seq * max_blocks] = n_blocks + 3;
    qn_cuda_paged_attn a = {};
    a.T = T, a.NH = NH, a.NKV = NKV, a.HD = HD, a.n_layers = L, a.layer = layer;
    a.block_size = B, a.n_blocks = n_blocks, a.n_seqs = S, a.max_blocks = max_blocks;
    a.max_context = max_ctx;
    qn_cuda_paged_plan p;
    if (qn_cuda_paged_attention_plan(QN_DTYPE_F32, &a, sm_count, &p) != QN_OK) {
        fprintf(stderr, "paged plan: %s\n", qn_last_error());
        exit(1);
    }
    printf("paged T=%d NH=%d NKV=%d HD=%d B=%d splits=%dx%d passes=%d%s\n", T, NH, NKV, HD, B,
           p.n_splits, p.split_keys, p.head_passes, bad_seq >= 0 ? " bad-block" : "");
    std::vector<float> scratch(p.scratch_bytes / sizeof(float), NAN);
    std::vector<float> out((size_t)T * QD, NAN), lse((size_t)T * NH, NAN);
    paged_args pa;
    pa.part_o = scratch.data();
    pa.part_ml = scratch.data() + (size_t)T * NH * p.n_splits * HD;
    pa.T = T, pa.NH = NH, pa.NKV = NKV, pa.L = L, pa.layer = layer, pa.B = B;
    pa.n_blocks = n_blocks, pa.n_seqs = S, pa.max_blocks = max_blocks, pa.max_context = max_ctx;
    pa.n_splits = p.n_splits, pa.split_keys = p.split_keys, pa.head_passes = p.head_passes;
    pa.scale_log2 = (float)(1.0 / std::sqrt((double)HD)) * LOG2E_;
    emu_launch({(unsigned)(T * p.n_splits), (unsigned)(NKV * p.head_passes), 1},
               QN_CUDA_ATT_WARPS * 32, p.smem, [&] {
                   paged_split_kernel<float, NE, HDC>(pa, q.data(), arena.data(), pos.data(),
                                                      seq.data(), tables.data(), HD);
               });
    const int rows = T * NH;
    emu_launch({(unsigned)((rows + 7) / 8), 1, 1}, 256, 0, [&] {
        paged_combine_kernel<float>(out.data(), lse.data(), pa.part_o, pa.part_ml, rows,
                                    p.n_splits, HD);
    });
    if (bad_seq < 0) {
        check("out", nerr(ref.data(), out.data(), out.size()), 2e-5);
        check("lse", nerr(rlse.data(), lse.data(), lse.size()), 2e-5);
        return;
    }
    int bad_ok = 1, good_ok = 1;
    for (int t = 0; t < T; t++) {
        bool any_nan = false;
        for (int e = 0; e < QD; e++) any_nan |= std::isnan(out[(size_t)t * QD + e]);
        if (seq[t] == bad_seq) bad_ok &= any_nan && std::isnan(lse[(size_t)t * NH]);
        else good_ok &= nerr(&ref[(size_t)t * QD], &out[(size_t)t * QD], QD) <= 2e-5;
    }
    printf("  bad table -> NaN: %s; other tokens: %s\n", bad_ok ? "ok" : "FAIL",
           good_ok ? "ok" : "FAIL");
    g_fail += !bad_ok + !good_ok;
}

}  // namespace

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    // packed: GQA 2:1 with lengths across tile tails (1, 17, 40), 64 path
    run_packed<2, 64>({17, 1, 40}, 4, 2, 64, 0);
    run_packed<4, 128>({33, 2}, 2, 1, 128, 9);  // 128 path, max_seqlen above the longest
    run_packed<8, 0>({17, 5}, 3, 3, 24, 0);     // generic path, HD 24
    run_packed<8, 0>({9}, 2, 1, 256, 0);        // generic path at the largest HD
    // paged: decode over block-size tails; chunked prefill with 20:1 heads (2 head passes);
    // a split context (the second token's later split is empty); a bad block id
    run_paged<2, 64>({{0, 1}, {16, 1}, {70, 1}, {130, 1}}, 8, 2, 64, 16, 132, -1);
    run_paged<2, 64>({{0, 5}, {37, 3}, {90, 1}}, 40, 2, 64, 16, 132, -1);
    run_paged<8, 0>({{520, 1}, {200, 1}}, 4, 2, 40, 16, 500, -1);
    run_paged<4, 128>({{0, 1}, {16, 1}, {70, 1}}, 4, 1, 128, 64, 132, 1);
    printf("%s\n", g_fail ? "FAILED" : "all kernels match the CPU reference");
    return g_fail ? 1 : 0;
}
