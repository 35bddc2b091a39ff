// loss.cu — the GRPO/PPO/KL/entropy/TIS/SFT loss terms on the GPU (loss.h),
// a line-by-line twin of trainer/loss.c's qn_loss_compute in double.
//
// Two kernels, no atomics:
//   loss_sample_kernel  one block per sample: the sample's mask sum (tree
//                       reduction), then every token's terms (threads stride
//                       over the tokens), d_logp / d_entropy written, the
//                       nine metric partials and the lowest error key reduced
//                       in a fixed tree into a per-sample record;
//   loss_final_kernel   one block: per-sample records summed in sample order
//                       (thread i takes samples i, i+256, ...; then a tree),
//                       the first error located and described.
// Error key of a token: global token index * 8 + what (QN_CUDA_LOSS_BAD_*).
// A sample whose mask holds a non-finite value reports that (the CPU checks
// the mask of a whole sample before its tokens); otherwise its lowest key.
// Sample ranges are disjoint and increasing once cu_tokens is valid, so the
// global minimum is the CPU's first error.
#include <math.h>

#include "core/ops/cuda/cuda_common.cuh"
#include "core/ops/cuda/loss.h"
#include "core/ops/cuda/reduce_det.cuh"

namespace {

enum { LS_THREADS = 256, LS_NM = 9 };
const long long LS_NONE = 0x7fffffffffffffffLL;

struct ls_args {
    qn_cuda_loss_cfg c;
    qn_cuda_loss_batch b;
    double norm_samples, norm_tokens;
    float *d_logp, *d_entropy;
    double *part;         // [n_samples, LS_NM]
    long long *key;       // [n_samples]: lowest error key, LS_NONE if none
    long long *cu_bad;    // [n_samples]: 1 when the sample's range is bad
};

__device__ __forceinline__ double dmax_grad(double a, double b, double da, double db) {
    return a > b ? da : (b > a ? db : 0.5 * (da + db));
}

__device__ __forceinline__ void bad(long long *k, long long t, int what) {
    long long v = t * 8 + what;
    if (v < *k) *k = v;
}

__global__ void __launch_bounds__(LS_THREADS) loss_sample_kernel(ls_args A) {
    __shared__ double shd[LS_THREADS];
    __shared__ long long shk[LS_THREADS];
    const qn_cuda_loss_cfg &c = A.c;
    const qn_cuda_loss_batch &b = A.b;
    const int tid = threadIdx.x;
    for (long long i = blockIdx.x; i < b.n_samples; i += gridDim.x) {
        const long long t0 = b.cu_tokens[i], t1 = b.cu_tokens[i + 1];
        const bool range_bad = (i == 0 && t0 != 0) || t0 < 0 || t1 < t0 || t1 > b.n_tokens;
        if (range_bad) {  // uniform over the block: nothing is touched
            if (tid == 0) {
                A.cu_bad[i] = 1;
                A.key[i] = LS_NONE;
                for (int m = 0; m < LS_NM; m++)
                    A.part[i * LS_NM + m] = 0.0;
            }
            continue;
        }
        // mask sum and the first non-finite mask value
        double msum = 0.0;
        long long mkey = LS_NONE;
        for (long long t = t0 + tid; t < t1; t += LS_THREADS) {
            double mk = b.loss_mask ? (double)b.loss_mask[t] : 1.0;
            if (!isfinite(mk)) bad(&mkey, t, QN_CUDA_LOSS_BAD_MASK);
            msum += mk;
        }
        msum = qn_block_reduce(msum, shd, qn_rd_sum());
        mkey = qn_block_reduce(mkey, shk, qn_rd_min_i64());
        const double scale = c.per_token_loss
                                 ? 1.0 / A.norm_tokens
                                 : 1.0 / ((msum > 1 ? msum : 1) * A.norm_samples);
        const bool sft = c.type == QN_CUDA_LOSS_SFT;
        const bool kl_grad = c.use_kl_loss && c.kl_loss_coef != 0;
        const double lo = 1.0 - c.eps_clip, hi = 1.0 + c.eps_clip_high;
        double acc[LS_NM];  // loss, pg, clipfrac, ppo_kl, kl, entropy, tis, tis_cf, absdiff
        for (int m = 0; m < LS_NM; m++)
            acc[m] = 0.0;
        long long tkey = LS_NONE;
        for (long long t = t0 + tid; t < t1; t += LS_THREADS) {
            const double w = (b.loss_mask ? (double)b.loss_mask[t] : 1.0) * scale;
            if (A.d_entropy && b.entropy) A.d_entropy[t] = 0.0f;
            A.d_logp[t] = 0.0f;
            if (w == 0) continue;
            const double logp = b.logp[t];
            if (!isfinite(logp)) {
                bad(&tkey, t, QN_CUDA_LOSS_BAD_LOGP);
                continue;
            }
            if (sft) {
                A.d_logp[t] = (float)-w;
                acc[0] += -w * logp;
                continue;
            }
            const double a = b.advantage[t];
            if (!isfinite(a)) {
                bad(&tkey, t, QN_CUDA_LOSS_BAD_ADVANTAGE);
                continue;
            }
            const double ent = b.entropy ? (double)b.entropy[t] : 0.0;
            if (!isfinite(ent)) {
                bad(&tkey, t, QN_CUDA_LOSS_BAD_ENTROPY);
                continue;
            }
            const double roll = b.rollout_logp ? (double)b.rollout_logp[t] : 0.0;
            if (!isfinite(roll)) {
                bad(&tkey, t, QN_CUDA_LOSS_BAD_ROLLOUT);
                continue;
            }
            const double recomputed_old = b.old_logp ? (double)b.old_logp[t] : logp;
            if (!isfinite(recomputed_old)) {
                bad(&tkey, t, QN_CUDA_LOSS_BAD_OLD);
                continue;
            }
            const double old = c.use_rollout_logprobs ? roll : recomputed_old;

            const double ratio = exp(logp - old);
            const double pg1 = -ratio * a, d1 = -ratio * a;
            const double cr = ratio < lo ? lo : (ratio > hi ? hi : ratio);
            const double dcr = (ratio >= lo && ratio <= hi) ? ratio : 0.0;
            const double pg2 = -cr * a, d2 = -dcr * a;
            double pg = pg1 > pg2 ? pg1 : pg2;
            double dpg = dmax_grad(pg1, pg2, d1, d2);
            const double clipped = pg2 > pg1 ? 1.0 : 0.0;
            if (c.eps_clip_c > 0 && a < 0) {
                const double pg3 = -c.eps_clip_c * a;
                dpg = -dmax_grad(-pg3, -pg, 0.0, -dpg);
                pg = pg3 < pg ? pg3 : pg;
            }
            if (c.use_tis) {
                const double raw = exp(recomputed_old - roll);
                double tw = raw < c.tis_clip_low ? c.tis_clip_low : raw;
                tw = tw > c.tis_clip ? c.tis_clip : tw;
                pg *= tw;
                dpg *= tw;
                acc[6] += w * raw;
                acc[7] += w * (tw != raw ? 1.0 : 0.0);
            }
            double kl = 0, dkl = 0;
            if (c.use_kl_loss) {
                const double ref = b.ref_logp[t];
                if (!isfinite(ref)) {
                    bad(&tkey, t, QN_CUDA_LOSS_BAD_REF);
                    continue;
                }
                const double lr = logp - ref;
                switch (c.kl_type) {
                case QN_CUDA_KL_K1: kl = lr, dkl = 1; break;
                case QN_CUDA_KL_K2: kl = 0.5 * lr * lr, dkl = lr; break;
                default: {  // k3, low_var_kl
                    const double e = exp(-lr);
                    kl = e - 1.0 + lr, dkl = 1.0 - e;
                    if (c.kl_type == QN_CUDA_KL_LOW_VAR) {
                        if (kl > 10 || kl < -10) dkl = 0;
                        kl = kl > 10 ? 10 : (kl < -10 ? -10 : kl);
                    }
                } break;
                }
                acc[4] += w * kl;
            }
            A.d_logp[t] = (float)(w * (dpg + (kl_grad ? c.kl_loss_coef * dkl : 0.0)));
            if (A.d_entropy && b.entropy) A.d_entropy[t] = (float)(-c.entropy_coef * w);
            acc[1] += w * pg;
            acc[2] += w * clipped;
            acc[3] += w * (old - logp);
            acc[5] += w * ent;
            acc[0] += w * (pg - c.entropy_coef * ent + (kl_grad ? c.kl_loss_coef * kl : 0.0));
            if (b.rollout_logp)
                acc[8] += w * fabs((c.use_rollout_logprobs ? logp : recomputed_old) - roll);
        }
        tkey = qn_block_reduce(tkey, shk, qn_rd_min_i64());
        for (int m = 0; m < LS_NM; m++) {
            double v = qn_block_reduce(acc[m], shd, qn_rd_sum());
            if (tid == 0) A.part[i * LS_NM + m] = v;
        }
        if (tid == 0) {
            A.cu_bad[i] = 0;
            A.key[i] = mkey != LS_NONE ? mkey : tkey;
        }
    }
}

__device__ double ls_value(const qn_cuda_loss_batch &b, long long t, int what) {
    switch (what) {
    case QN_CUDA_LOSS_BAD_MASK: return b.loss_mask ? b.loss_mask[t] : 1.0;
    case QN_CUDA_LOSS_BAD_LOGP: return b.logp[t];
    case QN_CUDA_LOSS_BAD_ADVANTAGE: return b.advantage[t];
    case QN_CUDA_LOSS_BAD_ENTROPY: return b.entropy[t];
    case QN_CUDA_LOSS_BAD_ROLLOUT: return b.rollout_logp[t];
    case QN_CUDA_LOSS_BAD_OLD: return b.old_logp[t];
    default: return b.ref_logp[t];
    }
}

__global__ void __launch_bounds__(LS_THREADS) loss_final_kernel(ls_args A, qn_cuda_loss_out *out) {
    __shared__ double shd[LS_THREADS];
    __shared__ long long shk[LS_THREADS];
    const int tid = threadIdx.x;
    const long long n = A.b.n_samples;
    long long cub = LS_NONE, key = LS_NONE;
    for (long long i = tid; i < n; i += LS_THREADS) {
        if (A.cu_bad[i] && i < cub) cub = i;
        if (A.key[i] < key) key = A.key[i];
    }
    cub = qn_block_reduce(cub, shk, qn_rd_min_i64());
    key = qn_block_reduce(key, shk, qn_rd_min_i64());
    double tot[LS_NM];
    for (int m = 0; m < LS_NM; m++) {
        double s = 0.0;
        for (long long i = tid; i < n; i += LS_THREADS)
            s += A.part[i * LS_NM + m];
        tot[m] = qn_block_reduce(s, shd, qn_rd_sum());
    }
    if (tid != 0) return;
    out->loss = tot[0];
    out->pg_loss = tot[1];
    out->pg_clipfrac = tot[2];
    out->ppo_kl = tot[3];
    out->kl_loss = tot[4];
    out->entropy_loss = tot[5];
    out->tis = tot[6];
    out->tis_clipfrac = tot[7];
    out->train_rollout_logprob_abs_diff = tot[8];
    out->bad_cu_sample = cub != LS_NONE ? cub : -1;
    out->bad_sample = -1;
    out->bad_token = -1;
    out->bad_what = -1;
    out->bad_value = 0.0;
    if (cub == LS_NONE && key != LS_NONE) {
        long long t = key / 8;
        int what = (int)(key % 8);
        // the sample holding token t: the largest i with cu[i] <= t
        long long lo = 0, hi = n - 1;
        while (lo < hi) {
            long long mid = lo + (hi - lo + 1) / 2;
            if (A.b.cu_tokens[mid] <= t) lo = mid;
            else hi = mid - 1;
        }
        out->bad_sample = lo;
        out->bad_token = t - A.b.cu_tokens[lo];
        out->bad_what = what;
        out->bad_value = ls_value(A.b, t, what);
    }
}

}  // namespace

extern "C" qn_status qn_cuda_loss_compute(qn_cuda_ctx *ctx, const qn_cuda_loss_cfg *c,
                                          const qn_cuda_loss_batch *b, double norm_samples,
                                          double norm_tokens, float *d_logp, float *d_entropy,
                                          qn_cuda_loss_out *out) {
    const char *op = "qn_cuda_loss_compute";
    QN_CHECK(qn_cuda_loss_check(c, b, norm_samples, norm_tokens));
    QN_CUDA_REQUIRE(ctx && out, "%s: NULL context or output record", op);
    QN_CUDA_REQUIRE(b->n_tokens == 0 || d_logp, "%s: NULL d_logp", op);
    size_t n = (size_t)b->n_samples;
    size_t mark = qn_cuda_mark(ctx);
    qn_status st = QN_OK;
    ls_args A = {};
    A.c = *c;
    A.b = *b;
    A.norm_samples = norm_samples;
    A.norm_tokens = norm_tokens;
    A.d_logp = d_logp;
    A.d_entropy = d_entropy;
    size_t nb = n > 0 ? n : 1;
    A.part = (double *)qn_cuda_alloc(ctx, nb * LS_NM * sizeof(double));
    A.key = (long long *)qn_cuda_alloc(ctx, nb * sizeof(long long));
    A.cu_bad = (long long *)qn_cuda_alloc(ctx, nb * sizeof(long long));
    if (!A.part || !A.key || !A.cu_bad) {
        qn_cuda_reset(ctx, mark);
        return qn_fail(QN_ERR_NOMEM, "%s: %zu bytes of scratch do not fit in the device arena",
                       op, nb * (LS_NM + 2) * 8);
    }
    cudaStream_t s = qn_cuda_stream(ctx);
    if (n > 0) {
        unsigned grid = n < 65535 ? (unsigned)n : 65535u;
        loss_sample_kernel<<<grid, LS_THREADS, 0, s>>>(A);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) st = qn_fail(QN_ERR_CUDA, "%s: %s", op, cudaGetErrorString(e));
    }
    if (st == QN_OK) {
        loss_final_kernel<<<1, LS_THREADS, 0, s>>>(A, out);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) st = qn_fail(QN_ERR_CUDA, "%s: %s", op, cudaGetErrorString(e));
    }
    qn_cuda_reset(ctx, mark);
    return st;
}
