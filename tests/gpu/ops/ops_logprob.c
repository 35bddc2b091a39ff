/* ops_logprob.c — harness cases for core/ops/cuda/logprob.h (chunked
 * log-prob / entropy over the vocabulary, forward and backward) against
 * core/ops/cpu/logprob.c, and for core/ops/cuda/loss.h (the GRPO loss terms)
 * against trainer/loss.c's qn_loss_compute on the same inputs.
 *
 * Log-prob shapes reach: N = 1, a vocabulary that is not a multiple of the
 * chunk, one chunk covering V exactly, a chunk larger than V, more rows than
 * one row block (QN_CUDA_LOGPROB_ROWS), targets in the first and the last
 * column, temperatures != 1; the backward with both upstream gradients,
 * only dlogp (accumulating into dh), only dentropy, and dW alone. A
 * GLM-4.5-like vocabulary (V = 151552, C = 4096) runs with --perf.
 *
 * Loss cases: per-sample and per-token reduction, clip-higher, dual clip,
 * TIS, every KL estimator, entropy bonus, rollout log-probs as old, SFT,
 * masks with zeros and a fully masked sample, an empty sample, samples
 * longer than one CUDA block, exact max() ties (advantage 0); plus the error
 * record for a non-finite input and for a decreasing cu_tokens, compared
 * with the CPU's status and message. d_logp / d_entropy compare as floats,
 * the metrics field by field (relative 1e-9: both sum in double).
 *
 * Leaves out: NaN inside h or W (the CPU's max scan and the GPU's fmaxf
 * agree there, but nothing in quench feeds NaN on purpose). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/ops/cpu/ops.h"
#include "core/ops/cuda/logprob.h"
#include "core/ops/cuda/loss.h"
#include "tests/gpu/ops/families.h"
#include "trainer/loss.h"

static const qn_dtype k_dts[] = {QN_DTYPE_F32, QN_DTYPE_BF16};
#define N_DTS ((int)(sizeof k_dts / sizeof k_dts[0]))

/* ---------------------------------------------------------------- log-prob */

typedef struct {
    qn_cuda_ctx *c;
    qn_dtype dt;
    float *logp, *ent, *lse, *ez, *dw, *dlogp, *dent;
    void *h, *w, *dh;
    int32_t *tgt;
    int N, C, V, chunk, acc;
    float temp;
} lp_args;

static qn_status lp_fwd_launch(void *p) {
    lp_args *a = p;
    return qn_cuda_logprob_forward(a->c, a->dt, a->logp, a->ent, a->lse, a->ez, a->h, a->tgt, a->w,
                                   a->N, a->C, a->V, a->temp, a->chunk);
}
static qn_status lp_bwd_launch(void *p) {
    lp_args *a = p;
    return qn_cuda_logprob_backward(a->c, a->dt, a->dh, a->dw, a->dlogp, a->dent, a->lse, a->ez,
                                    a->h, a->tgt, a->w, a->N, a->C, a->V, a->temp, a->chunk,
                                    a->acc);
}

/* CPU reference forward into host arrays (4 x N floats). */
static void cpu_fwd(qn_harness *h, float *logp, float *ent, float *lse, float *ez, const float *hh,
                    const int32_t *tgt, const float *w, int N, int C, int V, float temp,
                    int chunk) {
    float *scr = qn_h_host(h, qn_logprob_scratch_floats(N, C, chunk) * sizeof(float));
    qn_logprob_forward(logp, ent, lse, ez, hh, tgt, w, N, C, V, temp, chunk, scr);
}

static void test_logprob(qn_harness *h) {
    static const struct {
        int N, C, V, chunk;
        float temp;
    } shapes[] = {
        {1, 16, 100, 32, 1.0f},     /* N = 1, V = 3 chunks + 4 */
        {7, 33, 257, 64, 0.7f},     /* odd C, tail chunk of 1 */
        {37, 64, 1000, 1000, 1.0f}, /* one chunk, exactly V */
        {5, 40, 50, 128, 1.0f},     /* chunk > V */
        {130, 96, 5000, 777, 1.3f},
        {QN_CUDA_LOGPROB_ROWS + 77, 48, 3001, 512, 1.0f}, /* two row blocks */
    };
    for (int di = 0; di < N_DTS; di++) {
        qn_dtype dt = k_dts[di];
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int N = shapes[s].N, C = shapes[s].C, V = shapes[s].V, chunk = shapes[s].chunk;
            float temp = shapes[s].temp, wr = 3.0f / sqrtf((float)C);
            size_t NC = (size_t)N * C, VC = (size_t)V * C;
            if (qn_h_case(h, "logprob_fwd", "N=%d C=%d V=%d chunk=%d T=%.1f %s", N, C, V, chunk,
                          temp, qn_h_dtname(dt))) {
                float *hh = qn_h_rand_dt(h, dt, NC, -1, 1);
                float *w = qn_h_rand_dt(h, dt, VC, -wr, wr);
                int32_t *tgt = qn_h_rand_ints(h, (size_t)N, V);
                tgt[0] = V - 1; /* the last column of the last chunk */
                if (N > 1) tgt[1] = 0;
                float *ref = qn_h_host(h, 4 * (size_t)N * sizeof(float));
                cpu_fwd(h, ref, ref + N, ref + 2 * N, ref + 3 * N, hh, tgt, w, N, C, V, temp,
                        chunk);
                lp_args a = {.c = qn_h_ctx(h),
                             .dt = dt,
                             .N = N,
                             .C = C,
                             .V = V,
                             .chunk = chunk,
                             .temp = temp};
                a.logp = qn_h_out(h, QN_DTYPE_F32, N);
                a.ent = qn_h_out(h, QN_DTYPE_F32, N);
                a.lse = qn_h_out(h, QN_DTYPE_F32, N);
                a.ez = qn_h_out(h, QN_DTYPE_F32, N);
                a.h = qn_h_in(h, dt, hh, NC);
                a.w = qn_h_in(h, dt, w, VC);
                a.tgt = qn_h_in_raw(h, tgt, (size_t)N * 4);
                QN_H_TRY(h, lp_fwd_launch(&a));
                /* per-row statistics are fp32 on every path; inputs are the
                 * same rounded values, so only the summation order differs */
                double tol = qn_h_tol(QN_DTYPE_F32, QN_H_TOL_REDUCE);
                qn_h_compare(h, "logp", QN_DTYPE_F32, ref, a.logp, N, tol);
                qn_h_compare(h, "entropy", QN_DTYPE_F32, ref + N, a.ent, N, tol);
                qn_h_compare(h, "lse", QN_DTYPE_F32, ref + 2 * N, a.lse, N, tol);
                qn_h_compare(h, "ez", QN_DTYPE_F32, ref + 3 * N, a.ez, N, tol);
                qn_h_perf(h, (double)(NC + VC) * qn_dtype_size(dt), 2.0 * N * V * C, lp_fwd_launch,
                          &a);
            }
            for (int mode = 0; mode < 4; mode++) {
                /* 0: dlogp + dentropy, dh and dW; 1: dlogp only, dh accumulated;
                 * 2: dentropy only; 3: dW only */
                if (!qn_h_case(h, "logprob_bwd", "N=%d C=%d V=%d chunk=%d T=%.1f mode=%d %s", N, C,
                               V, chunk, temp, mode, qn_h_dtname(dt)))
                    continue;
                float *hh = qn_h_rand_dt(h, dt, NC, -1, 1);
                float *w = qn_h_rand_dt(h, dt, VC, -wr, wr);
                int32_t *tgt = qn_h_rand_ints(h, (size_t)N, V);
                tgt[0] = V - 1;
                float *gl = qn_h_rand(h, (size_t)N, -1, 1);
                float *ge = qn_h_rand(h, (size_t)N, -1, 1);
                float *dh0 = qn_h_rand_dt(h, dt, NC, -1, 1);
                float *dw0 = qn_h_rand(h, VC, -1, 1);
                float *st = qn_h_host(h, 4 * (size_t)N * sizeof(float));
                cpu_fwd(h, st, st + N, st + 2 * N, st + 3 * N, hh, tgt, w, N, C, V, temp, chunk);
                const float *use_gl = mode == 2 ? NULL : gl, *use_ge = mode == 1 ? NULL : ge;
                int acc = mode == 1;
                float *rdh = qn_h_copy(h, dh0, NC), *rdw = qn_h_copy(h, dw0, VC);
                float *scr = qn_h_host(h, qn_logprob_scratch_floats(N, C, chunk) * sizeof(float));
                qn_logprob_backward(mode == 3 ? NULL : rdh, rdw, use_gl, use_ge, st + 2 * N,
                                    st + 3 * N, hh, tgt, w, N, C, V, temp, chunk, acc, scr);
                lp_args a = {.c = qn_h_ctx(h),
                             .dt = dt,
                             .N = N,
                             .C = C,
                             .V = V,
                             .chunk = chunk,
                             .temp = temp,
                             .acc = acc};
                a.h = qn_h_in(h, dt, hh, NC);
                a.w = qn_h_in(h, dt, w, VC);
                a.tgt = qn_h_in_raw(h, tgt, (size_t)N * 4);
                a.lse = qn_h_in(h, QN_DTYPE_F32, st + 2 * N, N);
                a.ez = qn_h_in(h, QN_DTYPE_F32, st + 3 * N, N);
                a.dlogp = use_gl ? qn_h_in(h, QN_DTYPE_F32, gl, N) : NULL;
                a.dent = use_ge ? qn_h_in(h, QN_DTYPE_F32, ge, N) : NULL;
                if (mode != 3) a.dh = acc ? qn_h_out_init(h, dt, dh0, NC) : qn_h_out(h, dt, NC);
                a.dw = qn_h_out_init(h, QN_DTYPE_F32, dw0, VC);
                QN_H_TRY(h, lp_bwd_launch(&a));
                double tol = qn_h_tol(dt, QN_H_TOL_GRAD);
                if (a.dh) qn_h_compare(h, "dh", dt, rdh, a.dh, NC, tol);
                qn_h_compare(h, "dw", QN_DTYPE_F32, rdw, a.dw, VC, tol);
                qn_h_perf(h, (double)(2 * NC + 2 * VC) * qn_dtype_size(dt) + 8.0 * VC,
                          6.0 * N * V * C, lp_bwd_launch, &a);
            }
        }
    }
}

/* A target outside [0, V) gives logp = NaN; the other rows are unaffected. */
static void test_logprob_badtarget(qn_harness *h) {
    int N = 3, C = 16, V = 40, chunk = 16;
    if (!qn_h_case(h, "logprob_fwd_badtgt", "N=%d C=%d V=%d", N, C, V)) return;
    float *hh = qn_h_rand(h, (size_t)N * C, -1, 1);
    float *w = qn_h_rand(h, (size_t)V * C, -1, 1);
    int32_t tgt[3] = {5, V, -1};
    int32_t ok[3] = {5, 0, 0};
    float *ref = qn_h_host(h, 4 * (size_t)N * sizeof(float));
    cpu_fwd(h, ref, ref + N, ref + 2 * N, ref + 3 * N, hh, ok, w, N, C, V, 1.0f, chunk);
    ref[1] = ref[2] = NAN;
    lp_args a = {
        .c = qn_h_ctx(h), .dt = QN_DTYPE_F32, .N = N, .C = C, .V = V, .chunk = chunk, .temp = 1.0f};
    a.logp = qn_h_out(h, QN_DTYPE_F32, N);
    a.ent = qn_h_out(h, QN_DTYPE_F32, N);
    a.lse = qn_h_out(h, QN_DTYPE_F32, N);
    a.ez = qn_h_out(h, QN_DTYPE_F32, N);
    a.h = qn_h_in(h, QN_DTYPE_F32, hh, (size_t)N * C);
    a.w = qn_h_in(h, QN_DTYPE_F32, w, (size_t)V * C);
    a.tgt = qn_h_in_raw(h, tgt, sizeof tgt);
    QN_H_TRY(h, lp_fwd_launch(&a));
    double tol = qn_h_tol(QN_DTYPE_F32, QN_H_TOL_REDUCE);
    qn_h_compare(h, "logp", QN_DTYPE_F32, ref, a.logp, N, tol);
    qn_h_compare(h, "entropy", QN_DTYPE_F32, ref + N, a.ent, N, tol);
}

/* GLM-4.5-like vocabulary and hidden size (bf16), with --perf only: the
 * CPU reference alone is a few TFLOP. */
static void test_logprob_glm(qn_harness *h) {
    if (!qn_h_perf_mode(h)) return;
    const qn_dtype dt = QN_DTYPE_BF16;
    int N = 512, C = 4096, V = 151552, chunk = 16384; /* 9 chunks + a 4096-column tail */
    float temp = 1.0f, wr = 3.0f / sqrtf((float)C);
    size_t NC = (size_t)N * C, VC = (size_t)V * C;
    if (qn_h_case(h, "logprob_fwd_glm", "N=%d C=%d V=%d chunk=%d bf16", N, C, V, chunk)) {
        float *hh = qn_h_rand_dt(h, dt, NC, -1, 1);
        float *w = qn_h_rand_dt(h, dt, VC, -wr, wr);
        int32_t *tgt = qn_h_rand_ints(h, (size_t)N, V);
        float *ref = qn_h_host(h, 4 * (size_t)N * sizeof(float));
        cpu_fwd(h, ref, ref + N, ref + 2 * N, ref + 3 * N, hh, tgt, w, N, C, V, temp, chunk);
        lp_args a = {
            .c = qn_h_ctx(h), .dt = dt, .N = N, .C = C, .V = V, .chunk = chunk, .temp = temp};
        a.logp = qn_h_out(h, QN_DTYPE_F32, N);
        a.ent = qn_h_out(h, QN_DTYPE_F32, N);
        a.lse = qn_h_out(h, QN_DTYPE_F32, N);
        a.ez = qn_h_out(h, QN_DTYPE_F32, N);
        a.h = qn_h_in(h, dt, hh, NC);
        a.w = qn_h_in(h, dt, w, VC);
        a.tgt = qn_h_in_raw(h, tgt, (size_t)N * 4);
        QN_H_TRY(h, lp_fwd_launch(&a));
        double tol = qn_h_tol(QN_DTYPE_F32, QN_H_TOL_REDUCE);
        qn_h_compare(h, "logp", QN_DTYPE_F32, ref, a.logp, N, tol);
        qn_h_compare(h, "entropy", QN_DTYPE_F32, ref + N, a.ent, N, tol);
        qn_h_perf(h, (double)(NC + VC) * 2, 2.0 * N * V * C, lp_fwd_launch, &a);

        /* backward timed on the same inputs (dW from zero; checked on the
         * small shapes above, here only for finiteness of dh) */
        a.dlogp = qn_h_in(h, QN_DTYPE_F32, qn_h_rand(h, (size_t)N, -1, 1), N);
        a.dent = qn_h_in(h, QN_DTYPE_F32, qn_h_rand(h, (size_t)N, -1, 1), N);
        a.dh = qn_h_out(h, dt, NC);
        float *z = qn_h_host(h, VC * sizeof(float));
        a.dw = qn_h_out_init(h, QN_DTYPE_F32, z, VC);
        QN_H_TRY(h, lp_bwd_launch(&a));
        float *dh = qn_h_fetch(h, dt, a.dh, NC);
        for (size_t i = 0; dh && i < NC; i++)
            if (!isfinite(dh[i])) {
                qn_h_fail(h, "dh[%zu] is not finite", i);
                break;
            }
        qn_h_perf(h, (double)(2 * NC + 2 * VC) * 2 + 8.0 * VC, 6.0 * N * V * C, lp_bwd_launch, &a);
    }
}

/* -------------------------------------------------------------------- loss */

typedef struct {
    qn_cuda_ctx *c;
    qn_cuda_loss_cfg cfg;
    qn_cuda_loss_batch b;
    double ns, nt;
    float *dl, *de;
    qn_cuda_loss_out *out;
} loss_args;

static qn_status loss_launch(void *p) {
    loss_args *a = p;
    return qn_cuda_loss_compute(a->c, &a->cfg, &a->b, a->ns, a->nt, a->dl, a->de, a->out);
}

static qn_cuda_loss_cfg to_cuda_cfg(const qn_loss_cfg *c) {
    qn_cuda_loss_cfg g = {.type = (int)c->type,
                          .eps_clip = c->eps_clip,
                          .eps_clip_high = c->eps_clip_high,
                          .eps_clip_c = c->eps_clip_c,
                          .use_kl_loss = c->use_kl_loss,
                          .kl_loss_coef = c->kl_loss_coef,
                          .kl_type = (int)c->kl_type,
                          .entropy_coef = c->entropy_coef,
                          .use_tis = c->use_tis,
                          .tis_clip = c->tis_clip,
                          .tis_clip_low = c->tis_clip_low,
                          .use_rollout_logprobs = c->use_rollout_logprobs,
                          .per_token_loss = c->per_token_loss};
    return g;
}

static int close_rel(double a, double b) {
    if (!isfinite(a) || !isfinite(b)) return 0;
    return fabs(a - b) <= 1e-9 * fmax(fabs(a), fabs(b)) + 1e-12;
}

/* One loss configuration: variant v picks the flags, S samples of random
 * lengths up to maxlen; bad = 1 puts a NaN in a logp, bad = 2 makes
 * cu_tokens decrease. */
static void loss_case(qn_harness *h, const char *name, qn_loss_cfg cfg, int S, int maxlen,
                      int have_mask, int have_old, int bad) {
    if (!qn_h_case(h, "loss", "%s S=%d maxlen=%d%s%s%s", name, S, maxlen, have_mask ? " mask" : "",
                   have_old ? "" : " on-policy", bad == 1 ? " nan" : (bad == 2 ? " bad-cu" : "")))
        return;
    int64_t *cu = qn_h_host(h, (size_t)(S + 1) * sizeof *cu);
    float *u = qn_h_rand(h, (size_t)S, 0, 1);
    for (int i = 0; i < S; i++) {
        int len = (int)(u[i] * (float)(maxlen + 1));
        if (i == 1) len = 0;      /* an empty sample */
        if (i == 2) len = maxlen; /* the longest one */
        cu[i + 1] = cu[i] + (len > maxlen ? maxlen : len);
    }
    size_t T = (size_t)cu[S];
    if (T == 0) T = 1, cu[S] = 1;
    float *logp = qn_h_rand(h, T, -3, 0);
    float *noise = qn_h_rand(h, T, -0.4f, 0.4f);
    float *old = qn_h_host(h, T * sizeof(float)), *ref = qn_h_host(h, T * sizeof(float));
    float *roll = qn_h_host(h, T * sizeof(float));
    float *n2 = qn_h_rand(h, T, -0.3f, 0.3f), *n3 = qn_h_rand(h, T, -2.5f, 2.5f);
    for (size_t t = 0; t < T; t++) {
        old[t] = logp[t] + noise[t];
        roll[t] = old[t] + n2[t];
        ref[t] = logp[t] + n3[t]; /* wide: low_var_kl reaches its clamp */
    }
    float *ent = qn_h_rand(h, T, 0, 3);
    float *adv = qn_h_rand(h, T, -2, 2);
    float *mask = qn_h_host(h, T * sizeof(float));
    float *mu = qn_h_rand(h, T, 0, 1);
    for (size_t t = 0; t < T; t++) {
        mask[t] = mu[t] < 0.2f ? 0.0f : 1.0f;
        if (t % 17 == 3) adv[t] = 0.0f; /* pg1 == pg2: the tie split */
    }
    if (S > 3) /* sample 3 fully masked */
        for (int64_t t = cu[3]; t < cu[4]; t++)
            mask[t] = 0.0f;
    if (bad == 1) logp[T / 2] = NAN, mask[T / 2] = 1.0f;
    if (bad == 2 && S > 3) cu[3] = cu[2] - 1; /* sample 2 ends before it starts */

    qn_loss_batch b = {.n_samples = S,
                       .cu_tokens = cu,
                       .logp = logp,
                       .old_logp = have_old ? old : NULL,
                       .ref_logp = ref,
                       .rollout_logp = roll,
                       .entropy = ent,
                       .advantage = adv,
                       .loss_mask = have_mask ? mask : NULL};
    /* this micro-batch is a third of a global batch: the normalisers are
     * bigger than its own counts */
    qn_loss_norm nm = {0};
    if (bad != 2)
        qn_loss_count(&b, &nm);
    else
        nm.n_samples = S, nm.n_tokens = (double)T;
    nm.n_samples *= 3;
    nm.n_tokens *= 3;
    double *dl = qn_h_host(h, T * sizeof(double)), *de = qn_h_host(h, T * sizeof(double));
    qn_loss_metrics met = {0};
    qn_status want = qn_loss_compute(&cfg, &b, &nm, dl, de, &met);
    char want_msg[512];
    snprintf(want_msg, sizeof want_msg, "%s", qn_last_error());

    loss_args a = {
        .c = qn_h_ctx(h), .cfg = to_cuda_cfg(&cfg), .ns = nm.n_samples, .nt = nm.n_tokens};
    a.b.n_samples = S;
    a.b.n_tokens = (int64_t)T;
    a.b.cu_tokens = qn_h_in_raw(h, cu, (size_t)(S + 1) * sizeof *cu);
    a.b.logp = qn_h_in(h, QN_DTYPE_F32, logp, T);
    a.b.old_logp = have_old ? qn_h_in(h, QN_DTYPE_F32, old, T) : NULL;
    a.b.ref_logp = qn_h_in(h, QN_DTYPE_F32, ref, T);
    a.b.rollout_logp = qn_h_in(h, QN_DTYPE_F32, roll, T);
    a.b.entropy = qn_h_in(h, QN_DTYPE_F32, ent, T);
    a.b.advantage = qn_h_in(h, QN_DTYPE_F32, adv, T);
    a.b.loss_mask = have_mask ? qn_h_in(h, QN_DTYPE_F32, mask, T) : NULL;
    a.dl = qn_h_out(h, QN_DTYPE_F32, T);
    a.de = qn_h_out(h, QN_DTYPE_F32, T);
    qn_cuda_loss_out zero;
    memset(&zero, 0, sizeof zero);
    a.out = qn_h_in_raw(h, &zero, sizeof zero);
    QN_H_TRY(h, loss_launch(&a));
    qn_cuda_loss_out got;
    if (!a.out || qn_cuda_download(a.c, &got, a.out, sizeof got) != QN_OK) {
        qn_h_fail(h, "download of the loss record: %s", qn_last_error());
        return;
    }
    qn_status st = qn_cuda_loss_out_status(&got);
    if (st != want) {
        qn_h_fail(h, "status %s, CPU says %s (%s)", qn_status_name(st), qn_status_name(want),
                  want_msg);
        return;
    }
    if (want != QN_OK) {
        if (strcmp(qn_last_error(), want_msg) != 0)
            qn_h_fail(h, "message '%s', CPU says '%s'", qn_last_error(), want_msg);
        return; /* outputs are unspecified after an error */
    }
    float *rl = qn_h_host(h, T * sizeof(float)), *re = qn_h_host(h, T * sizeof(float));
    for (size_t t = 0; t < T; t++) {
        rl[t] = (float)dl[t];
        re[t] = (float)de[t];
    }
    double tol = qn_h_tol(QN_DTYPE_F32, QN_H_TOL_ELEMENTWISE);
    qn_h_compare(h, "d_logp", QN_DTYPE_F32, rl, a.dl, T, tol);
    qn_h_compare(h, "d_entropy", QN_DTYPE_F32, re, a.de, T, tol);
    const struct {
        const char *n;
        double c, g;
    } m[] = {{"loss", met.loss, got.loss},
             {"pg_loss", met.pg_loss, got.pg_loss},
             {"pg_clipfrac", met.pg_clipfrac, got.pg_clipfrac},
             {"ppo_kl", met.ppo_kl, got.ppo_kl},
             {"kl_loss", met.kl_loss, got.kl_loss},
             {"entropy_loss", met.entropy_loss, got.entropy_loss},
             {"tis", met.tis, got.tis},
             {"tis_clipfrac", met.tis_clipfrac, got.tis_clipfrac},
             {"train_rollout_logprob_abs_diff", met.train_rollout_logprob_abs_diff,
              got.train_rollout_logprob_abs_diff}};
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        if (!close_rel(m[i].c, m[i].g))
            qn_h_fail(h, "metric %s: CPU %.17g, GPU %.17g", m[i].n, m[i].c, m[i].g);
    qn_h_perf(h, (double)T * 4 * 9, 0, loss_launch, &a);
}

static void test_loss(qn_harness *h) {
    qn_loss_cfg base = {.type = QN_LOSS_POLICY,
                        .eps_clip = 0.2,
                        .eps_clip_high = 0.28,
                        .kl_type = QN_KL_K1,
                        .tis_clip = 2.0,
                        .tis_clip_low = 0.0};
    static const int sizes[][2] = {{1, 5}, {6, 40}, {40, 700}}; /* S, maxlen (> 256 threads) */
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int S = sizes[si][0], L = sizes[si][1];
        qn_loss_cfg c = base;
        loss_case(h, "grpo", c, S, L, 1, 1, 0);
        loss_case(h, "grpo", c, S, L, 0, 0, 0);
        c.per_token_loss = true;
        loss_case(h, "grpo-per-token", c, S, L, 1, 1, 0);
        c = base;
        c.eps_clip_c = 3.0;
        loss_case(h, "dual-clip", c, S, L, 1, 1, 0);
        c = base;
        c.use_tis = true, c.tis_clip_low = 0.5;
        loss_case(h, "tis", c, S, L, 1, 1, 0);
        c.use_rollout_logprobs = true;
        loss_case(h, "tis-rollout-old", c, S, L, 1, 1, 0);
        for (int k = QN_KL_K1; k <= QN_KL_LOW_VAR; k++) {
            c = base;
            c.use_kl_loss = true, c.kl_loss_coef = 0.05, c.kl_type = (qn_kl_type)k;
            char nm[32];
            snprintf(nm, sizeof nm, "kl-%d", k);
            loss_case(h, nm, c, S, L, 1, 1, 0);
        }
        c = base;
        c.entropy_coef = 0.01, c.use_kl_loss = true, c.kl_loss_coef = 0.0;
        loss_case(h, "entropy-kl0", c, S, L, 1, 1, 0);
        c = base;
        c.type = QN_LOSS_SFT;
        loss_case(h, "sft", c, S, L, 1, 0, 0);
    }
    qn_loss_cfg c = base;
    c.use_kl_loss = true, c.kl_loss_coef = 0.01, c.kl_type = QN_KL_LOW_VAR;
    loss_case(h, "grpo-kl", c, 8, 100, 1, 1, 1); /* NaN logp: the CPU's error */
    loss_case(h, "grpo-kl", c, 8, 100, 1, 1, 2); /* decreasing cu_tokens */
    if (qn_h_perf_mode(h)) loss_case(h, "grpo-kl", c, 4096, 2000, 1, 1, 0);
}

void qn_ops_logprob(qn_harness *h) {
    test_logprob(h);
    test_logprob_badtarget(h);
    test_logprob_glm(h);
    test_loss(h);
}
