/* ops_attention.c — the attention family of the CUDA op harness: the packed
 * causal forward (out, lse) and backward (dq, dk, dv) of
 * core/ops/cuda/attention.h against qn_attention_forward/_backward, and the
 * paged-KV attention against the same CPU forward run on K/V gathered out of
 * the paged arena.
 *
 * Why the paged reference is qn_attention_forward and not the engine's own
 * loop (static paged_attention in core/model/infer.c): a token at position p
 * attending to positions 0..p of its sequence through a block table is, by
 * construction, row p of causal attention over the sequence's gathered
 * contiguous K/V. So each sequence's K/V are gathered from the arena through
 * its (shuffled) block table, the chunk's queries are placed at their
 * positions in an otherwise random query matrix, and the rows at those
 * positions of the CPU forward are the reference. No edit to infer.c is
 * needed, and the block-table addressing is checked independently of the
 * engine's code (the gather here is written from kv_cache.h's layout).
 *
 * Sweeps: sequence sets with lengths 1, 17, 64, 129, 1000 (single and
 * packed, tails that are not multiples of the 16-row or 32-key tiles),
 * NH:NKV 1:1, 4:1, 8:2, HD 64 and 128 (fast paths) plus 8, 96, 256
 * (generic path), f32 and bf16; paged decode and chunked prefill with block
 * sizes 16 and 64, shuffled block tables, a long context that is split
 * (flash-decoding combine), and bad block ids that must give NaN.
 * Perf: forward and backward at T = 8 x 4096, NH 32, NKV 8, HD 128 (checked
 * against the CPU on the first sequence only, to keep the CPU time
 * bounded), TFLOP/s with flops = 4 * sum(len^2 / 2) * NH * HD for the
 * forward and 2.5x that for the backward (the usual flash-attention count;
 * the dq / dk-dv split recomputes more than that). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/ops/cpu/ops.h"
#include "core/ops/cuda/attention.h"
#include "tests/gpu/ops/families.h"
#include "tests/gpu/ops/harness.h"

#define MAX_SEQS 8

typedef struct seqset {
    const char *name;
    int S;
    int lens[MAX_SEQS];
} seqset;

static const seqset k_sets[] = {
    {"1", 1, {1}},
    {"17", 1, {17}},
    {"64", 1, {64}},
    {"129", 1, {129}},
    {"1000", 1, {1000}},
    {"17,1,129,64", 4, {17, 1, 129, 64}},
    {"1000,64,17", 3, {1000, 64, 17}},
};

static const int k_heads[][2] = {{1, 1}, {4, 1}, {8, 2}};

/* Rounds host values to what dt stores (bf16), so the CPU sees the GPU's
 * inputs exactly. */
static void round_to(qn_dtype dt, float *x, size_t n) {
    if (dt != QN_DTYPE_BF16) return;
    for (size_t i = 0; i < n; i++) x[i] = qn_bf16_to_f32(qn_f32_to_bf16(x[i]));
}

static int build_cu(const int *lens, int S, int32_t *cu) {
    cu[0] = 0;
    for (int s = 0; s < S; s++) cu[s + 1] = cu[s] + lens[s];
    return cu[S];
}

static double fwd_flops(const int *lens, int S, int NH, int HD) {
    double f = 0.0;
    for (int s = 0; s < S; s++) f += 4.0 * ((double)lens[s] * lens[s] / 2.0) * NH * HD;
    return f;
}

/* Compares the first n_cmp of n_all downloaded elements (isfinite first,
 * then the normalised error), for outputs checked on a slice only. */
static void compare_prefix(qn_harness *h, const char *what, qn_dtype dt, const float *ref,
                           const void *dev, size_t n_all, size_t n_cmp, double tol) {
    float *got = qn_h_fetch(h, dt, dev, n_all);
    if (!got) return;
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n_cmp; i++) {
        if (!isfinite(got[i]) && isfinite(ref[i])) {
            qn_h_fail(h, "%s[%zu] = %g, reference %g", what, i, got[i], ref[i]);
            return;
        }
        double d = (double)ref[i] - got[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    double err = sqrt(num / (den > 1e-30 ? den : 1e-30));
    if (!(err <= tol)) qn_h_fail(h, "%s: normalised error %.3g > %.3g", what, err, tol);
}

/* ------------------------------------------------------------ packed */

typedef struct att_launch {
    qn_cuda_ctx *c;
    qn_dtype dt;
    void *out, *dq, *dk, *dv;
    float *lse;
    const void *q, *k, *v, *dout, *o;
    const float *lse_in;
    const int32_t *cu;
    int S, T, NH, NKV, HD, max_seqlen;
} att_launch;

static qn_status launch_fwd(void *arg) {
    att_launch *a = arg;
    return qn_cuda_attention_forward(a->c, a->dt, a->out, a->lse, a->q, a->k, a->v, a->cu, a->S,
                                     a->T, a->NH, a->NKV, a->HD, a->max_seqlen);
}

static qn_status launch_bwd(void *arg) {
    att_launch *a = arg;
    return qn_cuda_attention_backward(a->c, a->dt, a->dq, a->dk, a->dv, a->dout, a->q, a->k, a->v,
                                      a->o, a->lse_in, a->cu, a->S, a->T, a->NH, a->NKV, a->HD,
                                      a->max_seqlen);
}

/* Host inputs of one packed case (case-owned buffers). */
typedef struct att_host {
    int32_t cu[MAX_SEQS + 1];
    int T, max_seqlen;
    float *q, *k, *v, *dout;
} att_host;

static void make_inputs(qn_harness *h, qn_dtype dt, const int *lens, int S, int NH, int NKV,
                        int HD, att_host *x) {
    x->T = build_cu(lens, S, x->cu);
    x->max_seqlen = 0;
    for (int s = 0; s < S; s++)
        if (lens[s] > x->max_seqlen) x->max_seqlen = lens[s];
    /* q, k in [-2, 2): scores of a few units, so the softmax is far from
     * uniform and the max-subtraction matters */
    x->q = qn_h_rand_dt(h, dt, (size_t)x->T * NH * HD, -2.0f, 2.0f);
    x->k = qn_h_rand_dt(h, dt, (size_t)x->T * NKV * HD, -2.0f, 2.0f);
    x->v = qn_h_rand_dt(h, dt, (size_t)x->T * NKV * HD, -1.0f, 1.0f);
    x->dout = qn_h_rand_dt(h, dt, (size_t)x->T * NH * HD, -1.0f, 1.0f);
}

/* CPU forward (and backward when dq != NULL) on sequences [0, S_ref) only:
 * they are the first rows, and independent of the later sequences. The
 * forward's out is rounded to dt before the backward, as the GPU stores it. */
static void cpu_reference(qn_harness *h, qn_dtype dt, const att_host *x, int S_ref, int NH,
                          int NKV, int HD, float *out, float *lse, float *dq, float *dk, float *dv) {
    int T = x->cu[S_ref];
    size_t sf = qn_attention_scratch_floats(x->cu, S_ref, T, NH, NKV, HD);
    float *scratch = qn_h_host(h, (sf ? sf : 1) * sizeof(float));
    qn_attention_forward(out, lse, x->q, x->k, x->v, x->cu, S_ref, T, NH, NKV, HD, scratch);
    round_to(dt, out, (size_t)T * NH * HD);
    if (dq)
        qn_attention_backward(dq, dk, dv, x->dout, x->q, x->k, x->v, out, lse, x->cu, S_ref, T, NH,
                              NKV, HD, scratch);
}

static void case_packed(qn_harness *h, qn_dtype dt, const seqset *ss, int NH, int NKV, int HD,
                        int backward) {
    const char *op = backward ? "attention_bwd" : "attention_fwd";
    if (!qn_h_case(h, op, "S=%d lens=%s NH=%d NKV=%d HD=%d %s", ss->S, ss->name, NH, NKV, HD,
                   qn_h_dtname(dt)))
        return;
    att_host x;
    make_inputs(h, dt, ss->lens, ss->S, NH, NKV, HD, &x);
    size_t nq = (size_t)x.T * NH * HD, nk = (size_t)x.T * NKV * HD, nl = (size_t)x.T * NH;
    float *out = qn_h_host(h, nq * sizeof(float)), *lse = qn_h_host(h, nl * sizeof(float));
    float *dq = NULL, *dk = NULL, *dv = NULL;
    if (backward) {
        dq = qn_h_host(h, nq * sizeof(float));
        dk = qn_h_host(h, nk * sizeof(float));
        dv = qn_h_host(h, nk * sizeof(float));
    }
    cpu_reference(h, dt, &x, ss->S, NH, NKV, HD, out, lse, dq, dk, dv);

    att_launch a = {.c = qn_h_ctx(h), .dt = dt, .S = ss->S, .T = x.T, .NH = NH, .NKV = NKV,
                    .HD = HD, .max_seqlen = x.max_seqlen};
    a.q = qn_h_in(h, dt, x.q, nq);
    a.k = qn_h_in(h, dt, x.k, nk);
    a.v = qn_h_in(h, dt, x.v, nk);
    a.cu = qn_h_in_raw(h, x.cu, (size_t)(ss->S + 1) * sizeof(int32_t));
    double flops = fwd_flops(ss->lens, ss->S, NH, HD);
    double esz = dt == QN_DTYPE_BF16 ? 2.0 : 4.0;
    if (!backward) {
        a.out = qn_h_out(h, dt, nq);
        a.lse = qn_h_out(h, QN_DTYPE_F32, nl);
        QN_H_TRY(h, launch_fwd(&a));
        qn_h_compare(h, "out", dt, out, a.out, nq, qn_h_tol(dt, QN_H_TOL_REDUCE));
        qn_h_compare(h, "lse", QN_DTYPE_F32, lse, a.lse, nl,
                     qn_h_tol(QN_DTYPE_F32, QN_H_TOL_REDUCE));
        qn_h_perf(h, esz * (2.0 * nq + 2.0 * nk) + 4.0 * nl, flops, launch_fwd, &a);
    } else {
        a.o = qn_h_in(h, dt, out, nq);
        a.lse_in = qn_h_in(h, QN_DTYPE_F32, lse, nl);
        a.dout = qn_h_in(h, dt, x.dout, nq);
        a.dq = qn_h_out(h, dt, nq);
        a.dk = qn_h_out(h, dt, nk);
        a.dv = qn_h_out(h, dt, nk);
        QN_H_TRY(h, launch_bwd(&a));
        double tol = qn_h_tol(dt, QN_H_TOL_GRAD);
        qn_h_compare(h, "dq", dt, dq, a.dq, nq, tol);
        qn_h_compare(h, "dk", dt, dk, a.dk, nk, tol);
        qn_h_compare(h, "dv", dt, dv, a.dv, nk, tol);
        qn_h_perf(h, esz * (5.0 * nq + 4.0 * nk) + 4.0 * nl, 2.5 * flops, launch_bwd, &a);
    }
    qn_h_end(h);
}

/* The backward twice into separate buffers: the bits must be identical (no
 * atomics, fixed summation order). */
static void case_bwd_determinism(qn_harness *h, qn_dtype dt) {
    const seqset *ss = &k_sets[6];
    const int NH = 8, NKV = 2, HD = 128;
    if (!qn_h_case(h, "attention_bwd_determinism", "S=%d lens=%s NH=%d NKV=%d HD=%d %s", ss->S,
                   ss->name, NH, NKV, HD, qn_h_dtname(dt)))
        return;
    att_host x;
    make_inputs(h, dt, ss->lens, ss->S, NH, NKV, HD, &x);
    size_t nq = (size_t)x.T * NH * HD, nk = (size_t)x.T * NKV * HD, nl = (size_t)x.T * NH;
    float *out = qn_h_host(h, nq * sizeof(float)), *lse = qn_h_host(h, nl * sizeof(float));
    cpu_reference(h, dt, &x, ss->S, NH, NKV, HD, out, lse, NULL, NULL, NULL);
    att_launch a = {.c = qn_h_ctx(h), .dt = dt, .S = ss->S, .T = x.T, .NH = NH, .NKV = NKV,
                    .HD = HD, .max_seqlen = x.max_seqlen};
    a.q = qn_h_in(h, dt, x.q, nq);
    a.k = qn_h_in(h, dt, x.k, nk);
    a.v = qn_h_in(h, dt, x.v, nk);
    a.o = qn_h_in(h, dt, out, nq);
    a.lse_in = qn_h_in(h, QN_DTYPE_F32, lse, nl);
    a.dout = qn_h_in(h, dt, x.dout, nq);
    a.cu = qn_h_in_raw(h, x.cu, (size_t)(ss->S + 1) * sizeof(int32_t));
    float *got[2][3];
    for (int run = 0; run < 2; run++) {
        a.dq = qn_h_out(h, dt, nq);
        a.dk = qn_h_out(h, dt, nk);
        a.dv = qn_h_out(h, dt, nk);
        QN_H_TRY(h, launch_bwd(&a));
        void *bufs[3] = {a.dq, a.dk, a.dv};
        size_t ns[3] = {nq, nk, nk};
        for (int i = 0; i < 3; i++) {
            got[run][i] = qn_h_fetch(h, dt, bufs[i], ns[i]);
            if (!got[run][i]) {
                qn_h_end(h);
                return;
            }
        }
    }
    const char *names[3] = {"dq", "dk", "dv"};
    size_t ns[3] = {nq, nk, nk};
    for (int i = 0; i < 3; i++)
        if (memcmp(got[0][i], got[1][i], ns[i] * sizeof(float)) != 0)
            qn_h_fail(h, "%s differs between two identical backward runs", names[i]);
    qn_h_end(h);
}

/* T = 8 x 4096, NH 32, NKV 8, HD 128: the perf shape; correctness is checked
 * on the first sequence's rows (its outputs do not depend on the others). */
static void case_perf_shape(qn_harness *h, qn_dtype dt, int backward) {
    enum { S = 8, LEN = 4096, NH = 32, NKV = 8, HD = 128 };
    const char *op = backward ? "attention_bwd" : "attention_fwd";
    if (!qn_h_case(h, op, "S=%d lens=%dx%d NH=%d NKV=%d HD=%d %s (checked: sequence 0)", S, S,
                   LEN, NH, NKV, HD, qn_h_dtname(dt)))
        return;
    int lens[S];
    for (int s = 0; s < S; s++) lens[s] = LEN;
    att_host x;
    make_inputs(h, dt, lens, S, NH, NKV, HD, &x);
    size_t nq = (size_t)x.T * NH * HD, nk = (size_t)x.T * NKV * HD, nl = (size_t)x.T * NH;
    size_t nq0 = (size_t)LEN * NH * HD, nk0 = (size_t)LEN * NKV * HD, nl0 = (size_t)LEN * NH;
    /* the backward's out/lse inputs need every row; the forward only sequence 0's */
    float *out = qn_h_host(h, (backward ? nq : nq0) * sizeof(float));
    float *lse = qn_h_host(h, (backward ? nl : nl0) * sizeof(float));
    float *dq = NULL, *dk = NULL, *dv = NULL;
    if (backward) {
        dq = qn_h_host(h, nq0 * sizeof(float));
        dk = qn_h_host(h, nk0 * sizeof(float));
        dv = qn_h_host(h, nk0 * sizeof(float));
    }
    cpu_reference(h, dt, &x, 1, NH, NKV, HD, out, lse, dq, dk, dv);
    att_launch a = {.c = qn_h_ctx(h), .dt = dt, .S = S, .T = x.T, .NH = NH, .NKV = NKV, .HD = HD,
                    .max_seqlen = LEN};
    a.q = qn_h_in(h, dt, x.q, nq);
    a.k = qn_h_in(h, dt, x.k, nk);
    a.v = qn_h_in(h, dt, x.v, nk);
    a.cu = qn_h_in_raw(h, x.cu, (size_t)(S + 1) * sizeof(int32_t));
    double flops = fwd_flops(lens, S, NH, HD), esz = dt == QN_DTYPE_BF16 ? 2.0 : 4.0;
    if (!backward) {
        a.out = qn_h_out(h, dt, nq);
        a.lse = qn_h_out(h, QN_DTYPE_F32, nl);
        QN_H_TRY(h, launch_fwd(&a));
        compare_prefix(h, "out", dt, out, a.out, nq, nq0, qn_h_tol(dt, QN_H_TOL_REDUCE));
        compare_prefix(h, "lse", QN_DTYPE_F32, lse, a.lse, nl, nl0,
                       qn_h_tol(QN_DTYPE_F32, QN_H_TOL_REDUCE));
        qn_h_perf(h, esz * (2.0 * nq + 2.0 * nk) + 4.0 * nl, flops, launch_fwd, &a);
    } else {
        /* rows past sequence 0 of out/lse: the GPU forward's own values, so
         * the backward sees a consistent (out, lse) everywhere */
        void *gout = qn_h_out(h, dt, nq);
        float *glse = qn_h_out(h, QN_DTYPE_F32, nl);
        a.out = gout;
        a.lse = glse;
        QN_H_TRY(h, launch_fwd(&a));
        float *fo = qn_h_fetch(h, dt, gout, nq), *fl = qn_h_fetch(h, QN_DTYPE_F32, glse, nl);
        if (fo && fl) {
            memcpy(out + nq0, fo + nq0, (nq - nq0) * sizeof(float));
            memcpy(lse + nl0, fl + nl0, (nl - nl0) * sizeof(float));
        }
        a.o = qn_h_in(h, dt, out, nq);
        a.lse_in = qn_h_in(h, QN_DTYPE_F32, lse, nl);
        a.dout = qn_h_in(h, dt, x.dout, nq);
        a.dq = qn_h_out(h, dt, nq);
        a.dk = qn_h_out(h, dt, nk);
        a.dv = qn_h_out(h, dt, nk);
        QN_H_TRY(h, launch_bwd(&a));
        double tol = qn_h_tol(dt, QN_H_TOL_GRAD);
        compare_prefix(h, "dq", dt, dq, a.dq, nq, nq0, tol);
        compare_prefix(h, "dk", dt, dk, a.dk, nk, nk0, tol);
        compare_prefix(h, "dv", dt, dv, a.dv, nk, nk0, tol);
        qn_h_perf(h, esz * (5.0 * nq + 4.0 * nk) + 4.0 * nl, 2.5 * flops, launch_bwd, &a);
    }
    qn_h_end(h);
}

/* ------------------------------------------------------------ paged */

typedef struct paged_seq {
    int pos0; /* tokens already cached before the chunk */
    int n;    /* chunk tokens (1 = decode) */
} paged_seq;

typedef struct paged_launch {
    qn_cuda_ctx *c;
    qn_dtype dt;
    qn_cuda_paged_attn a;
} paged_launch;

static qn_status launch_paged(void *arg) {
    paged_launch *l = arg;
    return qn_cuda_paged_attention_forward(l->c, l->dt, &l->a);
}

/* One paged case. bad_seq >= 0: that sequence's first table entry is an id
 * past n_blocks; its tokens must come back NaN and the others must still
 * match. n_ref > 0: only the first n_ref sequences get a CPU reference (the
 * perf shapes; their tokens come first in the batch). */
typedef struct paged_case {
    const char *what;
    const paged_seq *seqs;
    int S, NH, NKV, HD, B;
    int bad_seq; /* -1: none */
    int n_ref;   /* 0: all */
    int L;       /* layers in the arena; the last one is read */
} paged_case;

static void case_paged(qn_harness *h, qn_dtype dt, const paged_case *pc) {
    const paged_seq *ps = pc->seqs;
    const int S = pc->S, NH = pc->NH, NKV = pc->NKV, HD = pc->HD, B = pc->B;
    const int L = pc->L, layer = pc->L - 1;
    const int n_ref = pc->n_ref > 0 ? pc->n_ref : S;
    char desc[160];
    int off = 0, same = 1;
    for (int s = 1; s < S; s++) same &= ps[s].pos0 == ps[0].pos0 && ps[s].n == ps[0].n;
    if (same && S > 4)
        snprintf(desc, sizeof desc, "%dx(%d+%d)", S, ps[0].pos0, ps[0].n);
    else
        for (int s = 0; s < S && off < 100; s++)
            off += snprintf(desc + off, sizeof desc - (size_t)off, "%s%d+%d", s ? "," : "",
                            ps[s].pos0, ps[s].n);
    if (!qn_h_case(h, pc->bad_seq >= 0 ? "attention_paged_badblock" : "attention_paged",
                   "%s seqs=%s NH=%d NKV=%d HD=%d B=%d L=%d %s%s", pc->what, desc, NH, NKV, HD,
                   B, L, qn_h_dtname(dt), n_ref < S ? " (checked: sequence 0)" : ""))
        return;
    const int KD = NKV * HD, QD = NH * HD;
    /* block tables: every sequence's blocks drawn from a shuffled pool with a
     * few spare blocks, so neighbours in a table are far apart in the arena */
    int max_blocks = 1, total_blocks = 0, T = 0, T_ref = 0, max_ctx = 1;
    for (int s = 0; s < S; s++) {
        int ctx = ps[s].pos0 + ps[s].n, nb = (ctx + B - 1) / B;
        if (nb > max_blocks) max_blocks = nb;
        if (ctx > max_ctx) max_ctx = ctx;
        total_blocks += nb;
        T += ps[s].n;
        if (s < n_ref) T_ref += ps[s].n;
    }
    const int n_blocks = total_blocks + 7;
    int32_t *perm = qn_h_host(h, (size_t)n_blocks * sizeof(int32_t));
    float *u = qn_h_rand(h, (size_t)n_blocks, 0.0f, 1.0f);
    for (int i = 0; i < n_blocks; i++) perm[i] = i;
    for (int i = n_blocks - 1; i > 0; i--) {
        int j = (int)(u[i] * (float)(i + 1));
        if (j > i) j = i;
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    int32_t *tables = qn_h_host(h, (size_t)S * max_blocks * sizeof(int32_t));
    for (int s = 0, next = 0; s < S; s++) {
        int nb = (ps[s].pos0 + ps[s].n + B - 1) / B;
        for (int b = 0; b < max_blocks; b++)
            tables[(size_t)s * max_blocks + b] = b < nb ? perm[next++] : -1;
    }
    /* the whole arena random (unused slots and layers too: a stray read is a
     * wrong value, not a lucky zero) */
    size_t bf = (size_t)L * 2 * B * KD, narena = (size_t)n_blocks * bf;
    float *arena = qn_h_rand_dt(h, dt, narena, -2.0f, 2.0f);
    /* the batch: chunk tokens of every sequence, in sequence order */
    float *q = qn_h_rand_dt(h, dt, (size_t)T * QD, -2.0f, 2.0f);
    int32_t *pos = qn_h_host(h, (size_t)T * sizeof(int32_t));
    int32_t *seq = qn_h_host(h, (size_t)T * sizeof(int32_t));
    for (int s = 0, t = 0; s < S; s++)
        for (int i = 0; i < ps[s].n; i++, t++) pos[t] = ps[s].pos0 + i, seq[t] = s;
    /* CPU reference: per sequence, gather K/V of positions [0, ctx) of the
     * layer and run causal attention with the chunk's queries at their
     * positions (the other query rows are random and their outputs unused) */
    int32_t *cu = qn_h_host(h, (size_t)(n_ref + 1) * sizeof(int32_t));
    for (int s = 0; s < n_ref; s++) cu[s + 1] = cu[s] + ps[s].pos0 + ps[s].n;
    int Tfull = cu[n_ref];
    float *kf = qn_h_host(h, (size_t)Tfull * KD * sizeof(float));
    float *vf = qn_h_host(h, (size_t)Tfull * KD * sizeof(float));
    float *qf = qn_h_rand_dt(h, dt, (size_t)Tfull * QD, -2.0f, 2.0f);
    for (int s = 0; s < n_ref; s++)
        for (int p = 0; p < ps[s].pos0 + ps[s].n; p++) {
            int32_t blk = tables[(size_t)s * max_blocks + p / B];
            const float *base = arena + (size_t)blk * bf + (size_t)(p % B) * KD;
            memcpy(kf + (size_t)(cu[s] + p) * KD, base + (size_t)(2 * layer) * B * KD,
                   (size_t)KD * sizeof(float));
            memcpy(vf + (size_t)(cu[s] + p) * KD, base + (size_t)(2 * layer + 1) * B * KD,
                   (size_t)KD * sizeof(float));
        }
    for (int s = 0, t = 0; s < n_ref; s++)
        for (int i = 0; i < ps[s].n; i++, t++)
            memcpy(qf + (size_t)(cu[s] + ps[s].pos0 + i) * QD, q + (size_t)t * QD,
                   (size_t)QD * sizeof(float));
    float *of = qn_h_host(h, (size_t)Tfull * QD * sizeof(float));
    float *lf = qn_h_host(h, (size_t)Tfull * NH * sizeof(float));
    size_t sf = qn_attention_scratch_floats(cu, n_ref, Tfull, NH, NKV, HD);
    float *scratch = qn_h_host(h, (sf ? sf : 1) * sizeof(float));
    qn_attention_forward(of, lf, qf, kf, vf, cu, n_ref, Tfull, NH, NKV, HD, scratch);
    float *ref = qn_h_host(h, (size_t)T_ref * QD * sizeof(float));
    float *ref_lse = qn_h_host(h, (size_t)T_ref * NH * sizeof(float));
    for (int s = 0, t = 0; s < n_ref; s++)
        for (int i = 0; i < ps[s].n; i++, t++) {
            size_t row = (size_t)(cu[s] + ps[s].pos0 + i);
            memcpy(ref + (size_t)t * QD, of + row * QD, (size_t)QD * sizeof(float));
            memcpy(ref_lse + (size_t)t * NH, lf + row * NH, (size_t)NH * sizeof(float));
        }
    if (pc->bad_seq >= 0) tables[(size_t)pc->bad_seq * max_blocks] = n_blocks + 3;

    qn_cuda_paged_attn a = {0};
    a.T = T, a.NH = NH, a.NKV = NKV, a.HD = HD;
    a.n_layers = L, a.layer = layer, a.block_size = B, a.n_blocks = n_blocks;
    a.n_seqs = S, a.max_blocks = max_blocks, a.max_context = max_ctx;
    a.q = qn_h_in(h, dt, q, (size_t)T * QD);
    a.arena = qn_h_in(h, dt, arena, narena);
    a.pos = qn_h_in_raw(h, pos, (size_t)T * sizeof(int32_t));
    a.seq = qn_h_in_raw(h, seq, (size_t)T * sizeof(int32_t));
    a.tables = qn_h_in_raw(h, tables, (size_t)S * max_blocks * sizeof(int32_t));
    a.out = qn_h_out(h, dt, (size_t)T * QD);
    a.lse = qn_h_out(h, QN_DTYPE_F32, (size_t)T * NH);
    paged_launch pl = {.c = qn_h_ctx(h), .dt = dt, .a = a};
    QN_H_TRY(h, launch_paged(&pl));
    if (pc->bad_seq < 0) {
        double tol = qn_h_tol(dt, QN_H_TOL_REDUCE), tol_lse = qn_h_tol(QN_DTYPE_F32, QN_H_TOL_REDUCE);
        if (n_ref == S) {
            qn_h_compare(h, "out", dt, ref, a.out, (size_t)T * QD, tol);
            qn_h_compare(h, "lse", QN_DTYPE_F32, ref_lse, a.lse, (size_t)T * NH, tol_lse);
        } else {
            compare_prefix(h, "out", dt, ref, a.out, (size_t)T * QD, (size_t)T_ref * QD, tol);
            compare_prefix(h, "lse", QN_DTYPE_F32, ref_lse, a.lse, (size_t)T * NH,
                           (size_t)T_ref * NH, tol_lse);
        }
        double ctx_keys = 0.0;
        for (int t = 0; t < T; t++) ctx_keys += pos[t] + 1;
        double esz = dt == QN_DTYPE_BF16 ? 2.0 : 4.0;
        /* bytes: K and V rows read once per (token, kv head) plus q and out;
         * flops: 4 per (query head, key, dim) */
        qn_h_perf(h, esz * (ctx_keys * 2.0 * KD + 2.0 * T * QD), 4.0 * ctx_keys * NH * HD,
                  launch_paged, &pl);
    } else {
        float *got = qn_h_fetch(h, dt, a.out, (size_t)T * QD);
        float *got_lse = qn_h_fetch(h, QN_DTYPE_F32, a.lse, (size_t)T * NH);
        for (int t = 0; got && got_lse && t < T; t++) {
            int nan_row = isnan(got_lse[(size_t)t * NH]) != 0, finite_row = 1;
            double num = 0.0, den = 0.0;
            for (int e = 0; e < QD; e++) {
                float g = got[(size_t)t * QD + e], r = ref[(size_t)t * QD + e];
                nan_row |= isnan(g) != 0;
                finite_row &= isfinite(g) != 0;
                num += ((double)g - r) * ((double)g - r);
                den += (double)r * r;
            }
            if (seq[t] == pc->bad_seq && !nan_row)
                qn_h_fail(h, "token %d reads a block id past n_blocks but got no NaN", t);
            if (seq[t] != pc->bad_seq &&
                (!finite_row || !(sqrt(num / (den > 1e-30 ? den : 1e-30)) <=
                                  qn_h_tol(dt, QN_H_TOL_REDUCE))))
                qn_h_fail(h, "token %d (valid table) does not match the reference", t);
        }
    }
    qn_h_end(h);
}

void qn_ops_attention(qn_harness *h) {
    const qn_dtype dts[2] = {QN_DTYPE_F32, QN_DTYPE_BF16};
    for (int backward = 0; backward < 2; backward++)
        for (int di = 0; di < 2; di++) {
            for (size_t si = 0; si < sizeof k_sets / sizeof k_sets[0]; si++)
                for (int hi = 0; hi < 3; hi++)
                    for (int hd = 64; hd <= 128; hd += 64)
                        case_packed(h, dts[di], &k_sets[si], k_heads[hi][0], k_heads[hi][1], hd,
                                    backward);
            /* the generic head-dim path (and HD 256's opted-in shared memory) */
            const int generic[] = {8, 96, 256};
            for (int gi = 0; gi < 3; gi++)
                case_packed(h, dts[di], &k_sets[5], 8, 2, generic[gi], backward);
        }
    for (int di = 0; di < 2; di++) case_bwd_determinism(h, dts[di]);

    /* decode: one token per sequence; chunked prefill: several; a long
     * context split over many blocks (flash-decoding combine), 12:1 heads
     * as GLM-4.5-355B's 96:8 */
    const paged_seq decode[] = {{0, 1}, {16, 1}, {199, 1}, {999, 1}};
    const paged_seq chunks[] = {{0, 5}, {37, 16}, {300, 1}, {960, 40}};
    const paged_seq longctx[] = {{4999, 1}, {2999, 1}};
    for (int di = 0; di < 2; di++) {
        qn_dtype dt = dts[di];
        for (int B = 16; B <= 64; B *= 4) {
            const paged_case cs[] = {
                {"decode", decode, 4, 8, 2, 128, B, -1, 0, 2},
                {"decode", decode, 4, 4, 4, 64, B, -1, 0, 2},
                {"chunked", chunks, 4, 8, 2, 128, B, -1, 0, 2},
                {"chunked", chunks, 4, 40, 2, 64, B, -1, 0, 2}, /* 20:1, two head passes */
            };
            for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) case_paged(h, dt, &cs[i]);
        }
        const paged_case more[] = {
            {"decode", decode, 4, 8, 2, 96, 16, -1, 0, 2},   /* generic head dim */
            {"long", longctx, 2, 4, 2, 64, 16, -1, 0, 2},    /* split keys + combine */
            {"bad-block", decode, 4, 8, 2, 64, 16, 2, 0, 2}, /* NaN, not a fault */
        };
        for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) case_paged(h, dt, &more[i]);
    }
    /* decode perf shapes, GLM-4.5-like heads (96:8 scaled to 32:8), bf16:
     * batch 32 at 4096 tokens of context, batch 1 at 8192 (32 key splits) */
    static paged_seq batch32[32], batch1[1] = {{8191, 1}};
    for (int s = 0; s < 32; s++) batch32[s] = (paged_seq){4095, 1};
    const paged_case perf[] = {
        {"decode-perf", batch32, 32, 32, 8, 128, 16, -1, 1, 1},
        {"decode-perf", batch1, 1, 32, 8, 128, 16, -1, 1, 1},
    };
    for (size_t i = 0; i < sizeof perf / sizeof perf[0]; i++) case_paged(h, QN_DTYPE_BF16, &perf[i]);

    for (int backward = 0; backward < 2; backward++)
        case_perf_shape(h, QN_DTYPE_BF16, backward);
}
