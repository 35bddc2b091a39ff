/* test_ops_grad.c — the CPU ops (core/ops/cpu/ops.h) against naive double
 * implementations written here from the semantics, and every backward
 * against central finite differences of a scalar loss L = sum(G * out) with
 * a random G.
 *
 * FD is done in fp32 (the ops are fp32) with step H on inputs of size ~1;
 * the check is on the whole gradient: ||fd - an|| / ||an|| <= FD_RTOL and
 * every element within FD_ATOL_FRAC * max|an| + FD_RTOL * |an|. A wrong
 * backward term moves the relative error to O(0.1..1); test_fd_rejects
 * shows that the checker fails on gradients 5% off or with one term wrong.
 * Where the forward is piecewise (router selection), perturbations that
 * change the selection are skipped (with a smaller step), and the test
 * asserts that at most half were.
 * Shapes hit every branch: partial rotary 0.5 and 1.0, GQA ratios 1 and 2,
 * sequences of lengths 1 .. >64 (several query blocks), parallel and serial
 * task paths, group-limited and plain top-k, sigmoid and softmax, renorm
 * on/off, vocabulary chunks not dividing V, several row blocks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/ops/cpu/ops.h"

#define FD_H 1e-2f
static float g_fd_h = FD_H; /* step in use; the router test lowers it */
#define FD_RTOL 1e-2
#define FD_ATOL_FRAC 2e-2

/* ------------------------------------------------------------- utilities */

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform in [-1, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((g_rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
static int irand(int n) {
    float u = (frand() + 1.0f) * 0.5f;
    int v = (int)(u * n);
    return v >= n ? n - 1 : v;
}
static float *rnd(size_t n, float scale) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = frand() * scale;
    return p;
}
static float *zeros(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    assert_non_null(p);
    return p;
}
static double dot_gf(const float *g, const float *x, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)g[i] * x[i];
    return s;
}

/* Compares got (fp32) with want (double): all finite, max |diff| <= tol *
 * max(1, max|want|). */
static void check_close(const char *what, const float *got, const double *want, size_t n,
                        double tol) {
    double mx = 1.0, worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) || !isfinite(want[i])) {
            fail_msg("%s: non-finite at %zu: got %g want %g", what, i, got[i], want[i]);
        }
        if (fabs(want[i]) > mx) mx = fabs(want[i]);
    }
    for (size_t i = 0; i < n; i++) {
        double d = fabs(got[i] - want[i]);
        if (d > worst) worst = d;
    }
    if (worst > tol * mx) fail_msg("%s: max |diff| %.3g > %.3g", what, worst, tol * mx);
}

typedef double (*loss_fn)(void *ctx);
static int g_skip; /* set by a loss when the perturbation crossed a discontinuity */

/* Returns 0 when the analytic gradient agrees with central differences on
 * `count` elements (every element if count >= n, else a random subset),
 * else 1 with a message printed. skipped counts discontinuous elements. */
static int fd_compare(const char *name, float *param, size_t n, const float *an, loss_fn f,
                      void *ctx, size_t count, int *skipped, int quiet) {
    double maxan = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(an[i])) {
            if (!quiet) print_message("%s: analytic gradient non-finite at %zu\n", name, i);
            return 1;
        }
        if (fabs(an[i]) > maxan) maxan = fabs(an[i]);
    }
    size_t m = count < n ? count : n;
    double dn = 0.0, an2 = 0.0;
    int bad = 0, skip = 0;
    for (size_t c = 0; c < m; c++) {
        size_t i = m == n ? c : (size_t)irand((int)n);
        float v = param[i];
        g_skip = 0;
        param[i] = v + g_fd_h;
        double lp = f(ctx);
        param[i] = v - g_fd_h;
        double lm = f(ctx);
        param[i] = v;
        if (g_skip) {
            skip++;
            continue;
        }
        double fd = (lp - lm) / (2.0 * g_fd_h);
        if (!isfinite(fd)) {
            if (!quiet) print_message("%s[%zu]: FD non-finite\n", name, i);
            return 1;
        }
        double d = fd - an[i];
        dn += d * d;
        an2 += (double)an[i] * an[i];
        if (fabs(d) > FD_ATOL_FRAC * maxan + FD_RTOL * fabs(an[i]) + 1e-4) {
            if (!quiet && bad < 5)
                print_message("%s[%zu]: fd %.6g analytic %.6g\n", name, i, fd, (double)an[i]);
            bad++;
        }
    }
    f(ctx); /* leave the context's outputs as of the unperturbed inputs */
    if (skipped) *skipped = skip;
    double rel = sqrt(dn) / (sqrt(an2) > 1e-12 ? sqrt(an2) : 1e-12);
    if (an2 == 0.0 && dn < 1e-8) rel = 0.0;
    if (rel > FD_RTOL || bad) {
        if (!quiet) print_message("%s: relative error %.3g, %d bad of %zu\n", name, rel, bad, m);
        return 1;
    }
    return 0;
}

static void fd_check(const char *name, float *param, size_t n, const float *an, loss_fn f,
                     void *ctx, size_t count) {
    int skipped = 0;
    if (fd_compare(name, param, n, an, f, ctx, count, &skipped, 0))
        fail_msg("%s: gradient does not match finite differences", name);
    size_t m = count < n ? count : n;
    if ((size_t)skipped * 2 > m) fail_msg("%s: %d of %zu FD points skipped", name, skipped, m);
}

/* ------------------------------------------------------------------ gemm */

/* Large enough to be split over threads (by rows, then by columns), with
 * every transpose combination and leading dimensions wider than the rows. */
static void test_sgemm(void **state) {
    (void)state;
    int shapes[][3] = {{200, 150, 40}, {20, 300, 100}, {3, 5, 7}};
    for (int si = 0; si < 3; si++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
                int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 2, ldc = N + 1;
                float *A = rnd((size_t)(ta ? K : M) * lda, 1.0f);
                float *B = rnd((size_t)(tb ? N : K) * ldb, 1.0f);
                float *Cm = rnd((size_t)M * ldc, 1.0f);
                double *want = calloc((size_t)M * ldc, sizeof(double));
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < ldc; j++) {
                        if (j >= N) {
                            want[(size_t)i * ldc + j] = Cm[(size_t)i * ldc + j]; /* untouched */
                            continue;
                        }
                        double acc = 0.0;
                        for (int k = 0; k < K; k++) {
                            double a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                            double b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                            acc += a * b;
                        }
                        want[(size_t)i * ldc + j] = 0.5 * acc + 2.0 * Cm[(size_t)i * ldc + j];
                    }
                qn_sgemm(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, 2.0f, Cm, ldc);
                check_close("qn_sgemm", Cm, want, (size_t)M * ldc, 1e-5);
                free(A), free(B), free(Cm), free(want);
            }
}

/* ------------------------------------------------------------- embedding */

typedef struct emb_ctx {
    int T, C, V;
    int32_t *tok;
    float *wte, *out, *G;
} emb_ctx;
static double emb_loss(void *vc) {
    emb_ctx *c = vc;
    qn_embedding_forward(c->out, c->tok, c->wte, c->T, c->C);
    return dot_gf(c->G, c->out, (size_t)c->T * c->C);
}

static void test_embedding(void **state) {
    (void)state;
    emb_ctx c = {.T = 11, .C = 5, .V = 7};
    int32_t tok[11] = {3, 0, 6, 3, 3, 1, 0, 2, 6, 5, 3};
    c.tok = tok;
    c.wte = rnd((size_t)c.V * c.C, 1.0f);
    c.out = zeros((size_t)c.T * c.C);
    c.G = rnd((size_t)c.T * c.C, 1.0f);
    emb_loss(&c);
    for (int t = 0; t < c.T; t++)
        for (int i = 0; i < c.C; i++)
            assert_true(c.out[t * c.C + i] == c.wte[tok[t] * c.C + i]);
    float *d = rnd((size_t)c.V * c.C, 1.0f), *d0 = malloc((size_t)c.V * c.C * sizeof(float));
    memcpy(d0, d, (size_t)c.V * c.C * sizeof(float));
    qn_embedding_backward(d, c.G, tok, c.T, c.C);
    for (int i = 0; i < c.V * c.C; i++)
        d[i] -= d0[i]; /* += rule: remove the prior content */
    fd_check("embedding dwte", c.wte, (size_t)c.V * c.C, d, emb_loss, &c, 1000);
    free(c.wte), free(c.out), free(c.G), free(d), free(d0);
}

/* ---------------------------------------------------------------- matmul */

typedef struct mm_ctx {
    int N, IC, OC;
    float *x, *w, *b, *out, *G;
} mm_ctx;
static double mm_loss(void *vc) {
    mm_ctx *c = vc;
    qn_matmul_forward(c->out, c->x, c->w, c->b, c->N, c->IC, c->OC);
    return dot_gf(c->G, c->out, (size_t)c->N * c->OC);
}

static void test_matmul(void **state) {
    (void)state;
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        mm_ctx c = {.N = 9, .IC = 7, .OC = 6};
        size_t nx = (size_t)c.N * c.IC, nw = (size_t)c.OC * c.IC, no = (size_t)c.N * c.OC;
        c.x = rnd(nx, 1.0f), c.w = rnd(nw, 1.0f), c.b = with_bias ? rnd(c.OC, 1.0f) : NULL;
        c.out = zeros(no), c.G = rnd(no, 1.0f);
        mm_loss(&c);
        double *want = calloc(no, sizeof(double));
        for (int n = 0; n < c.N; n++)
            for (int o = 0; o < c.OC; o++) {
                double s = c.b ? c.b[o] : 0.0;
                for (int i = 0; i < c.IC; i++)
                    s += (double)c.x[n * c.IC + i] * c.w[o * c.IC + i];
                want[n * c.OC + o] = s;
            }
        check_close("matmul forward", c.out, want, no, 1e-5);
        /* accumulate: dx starts with junk and must end as junk + grad */
        float *dx = rnd(nx, 1.0f), *dx0 = malloc(nx * sizeof(float));
        memcpy(dx0, dx, nx * sizeof(float));
        float *dw = rnd(nw, 1.0f), *dw0 = malloc(nw * sizeof(float));
        memcpy(dw0, dw, nw * sizeof(float));
        float *db = zeros(c.OC), *dx2 = rnd(nx, 1.0f);
        qn_matmul_backward(dx, dw, c.b ? db : NULL, c.G, c.x, c.w, c.N, c.IC, c.OC, 1);
        qn_matmul_backward(dx2, NULL, NULL, c.G, c.x, c.w, c.N, c.IC, c.OC, 0);
        for (size_t i = 0; i < nx; i++) {
            dx[i] -= dx0[i];
            assert_true(fabsf(dx[i] - dx2[i]) <= 1e-5f * (1.0f + fabsf(dx2[i])));
        }
        for (size_t i = 0; i < nw; i++)
            dw[i] -= dw0[i];
        fd_check("matmul dx", c.x, nx, dx2, mm_loss, &c, 1000);
        fd_check("matmul dw", c.w, nw, dw, mm_loss, &c, 1000);
        if (c.b) fd_check("matmul db", c.b, c.OC, db, mm_loss, &c, 1000);
        free(c.x), free(c.w), free(c.b), free(c.out), free(c.G), free(want);
        free(dx), free(dx0), free(dw), free(dw0), free(db), free(dx2);
    }
}

/* --------------------------------------------------------------- rmsnorm */

typedef struct rn_ctx {
    int N, D;
    float eps;
    float *x, *w, *out, *rstd, *G;
} rn_ctx;
static double rn_loss(void *vc) {
    rn_ctx *c = vc;
    qn_rmsnorm_forward(c->out, c->rstd, c->x, c->w, c->eps, c->N, c->D);
    return dot_gf(c->G, c->out, (size_t)c->N * c->D);
}

static void test_rmsnorm(void **state) {
    (void)state;
    /* (N, D): token rows, and QK-norm rows = tokens x heads over head_dim */
    int shapes[][2] = {{7, 16}, {5 * 3, 8}};
    for (int s = 0; s < 2; s++) {
        rn_ctx c = {.N = shapes[s][0], .D = shapes[s][1], .eps = 1e-5f};
        size_t n = (size_t)c.N * c.D;
        c.x = rnd(n, 1.0f), c.w = rnd(c.D, 1.0f), c.out = zeros(n), c.rstd = zeros(c.N);
        c.G = rnd(n, 1.0f);
        rn_loss(&c);
        double *want = calloc(n, sizeof(double));
        for (int r = 0; r < c.N; r++) {
            double ss = 0.0;
            for (int i = 0; i < c.D; i++)
                ss += (double)c.x[r * c.D + i] * c.x[r * c.D + i];
            double rs = 1.0 / sqrt(ss / c.D + c.eps);
            for (int i = 0; i < c.D; i++)
                want[r * c.D + i] = c.x[r * c.D + i] * rs * c.w[i];
        }
        check_close("rmsnorm forward", c.out, want, n, 1e-5);
        /* out may alias inp */
        float *xa = malloc(n * sizeof(float)), *ra = zeros(c.N);
        memcpy(xa, c.x, n * sizeof(float));
        qn_rmsnorm_forward(xa, ra, xa, c.w, c.eps, c.N, c.D);
        check_close("rmsnorm in place", xa, want, n, 1e-5);
        float *dx = zeros(n), *dw = rnd(c.D, 1.0f), *dw0 = malloc(c.D * sizeof(float));
        memcpy(dw0, dw, c.D * sizeof(float));
        qn_rmsnorm_backward(dx, dw, c.G, c.x, c.w, c.rstd, c.N, c.D, 0);
        for (int i = 0; i < c.D; i++)
            dw[i] -= dw0[i];
        fd_check("rmsnorm dx", c.x, n, dx, rn_loss, &c, 1000);
        fd_check("rmsnorm dw", c.w, c.D, dw, rn_loss, &c, 1000);
        /* dinp aliasing dout, and accumulate */
        float *da = malloc(n * sizeof(float));
        memcpy(da, c.G, n * sizeof(float));
        qn_rmsnorm_backward(da, NULL, da, c.x, c.w, c.rstd, c.N, c.D, 0);
        for (size_t i = 0; i < n; i++)
            assert_true(fabsf(da[i] - dx[i]) <= 1e-6f);
        float *acc = rnd(n, 1.0f), *acc0 = malloc(n * sizeof(float));
        memcpy(acc0, acc, n * sizeof(float));
        qn_rmsnorm_backward(acc, NULL, c.G, c.x, c.w, c.rstd, c.N, c.D, 1);
        for (size_t i = 0; i < n; i++)
            assert_true(fabsf(acc[i] - acc0[i] - dx[i]) <= 1e-5f);
        free(c.x), free(c.w), free(c.out), free(c.rstd), free(c.G), free(want), free(xa);
        free(ra), free(dx), free(dw), free(dw0), free(da), free(acc), free(acc0);
    }
}

/* ------------------------------------------------------------------ rope */

typedef struct rope_ctx {
    int T, NH, HD, R;
    int32_t *pos;
    float *cos_t, *sin_t, *x, *y, *G;
} rope_ctx;
static double rope_loss(void *vc) {
    rope_ctx *c = vc;
    size_t n = (size_t)c->T * c->NH * c->HD;
    memcpy(c->y, c->x, n * sizeof(float));
    qn_rope_forward(c->y, c->pos, c->cos_t, c->sin_t, c->T, c->NH, c->HD, c->R);
    return dot_gf(c->G, c->y, n);
}

static void test_rope(void **state) {
    (void)state;
    int32_t cu[4] = {0, 1, 6, 19}; /* lengths 1, 5, 13 */
    int S = 3, T = 19, P = 32;
    int32_t pos[19];
    qn_packed_positions(pos, cu, S);
    assert_int_equal(pos[0], 0);
    assert_int_equal(pos[1], 0);
    assert_int_equal(pos[5], 4);
    assert_int_equal(pos[18], 12);
    double factors[2] = {0.5, 1.0};
    for (int fi = 0; fi < 2; fi++) {
        rope_ctx c = {.T = T, .NH = 3, .HD = 8, .pos = pos};
        c.R = (int)(c.HD * factors[fi]);
        double theta = 10000.0;
        c.cos_t = zeros((size_t)P * c.R / 2), c.sin_t = zeros((size_t)P * c.R / 2);
        qn_rope_table(c.cos_t, c.sin_t, P, c.R, theta);
        size_t n = (size_t)T * c.NH * c.HD;
        c.x = rnd(n, 1.0f), c.y = zeros(n), c.G = rnd(n, 1.0f);
        rope_loss(&c);
        /* naive HF form: emb = cat(freqs, freqs) over R dims;
         * x_rot * cos + rotate_half(x_rot) * sin, rest passed through */
        double *want = calloc(n, sizeof(double));
        int h = c.R / 2;
        for (int t = 0; t < T; t++)
            for (int hd = 0; hd < c.NH; hd++) {
                const float *x = c.x + ((size_t)t * c.NH + hd) * c.HD;
                double *o = want + ((size_t)t * c.NH + hd) * c.HD;
                for (int d = 0; d < c.HD; d++) {
                    if (d >= c.R) {
                        o[d] = x[d];
                        continue;
                    }
                    int fidx = d % h;
                    double ang = pos[t] / pow(theta, 2.0 * fidx / c.R);
                    double rh = d < h ? -x[d + h] : x[d - h];
                    o[d] = x[d] * cos(ang) + rh * sin(ang);
                }
            }
        check_close("rope forward", c.y, want, n, 1e-5);
        float *dx = malloc(n * sizeof(float));
        memcpy(dx, c.G, n * sizeof(float));
        qn_rope_backward(dx, pos, c.cos_t, c.sin_t, T, c.NH, c.HD, c.R);
        fd_check("rope dx", c.x, n, dx, rope_loss, &c, 2000);
        free(c.cos_t), free(c.sin_t), free(c.x), free(c.y), free(c.G), free(want), free(dx);
    }
}

/* ------------------------------------------------------------- attention */

typedef struct att_ctx {
    int S, T, NH, NKV, HD;
    const int32_t *cu;
    float *q, *k, *v, *out, *lse, *G, *scratch;
} att_ctx;
static double att_loss(void *vc) {
    att_ctx *c = vc;
    qn_attention_forward(c->out, c->lse, c->q, c->k, c->v, c->cu, c->S, c->T, c->NH, c->NKV, c->HD,
                         c->scratch);
    return dot_gf(c->G, c->out, (size_t)c->T * c->NH * c->HD);
}

static void att_naive(const att_ctx *c, double *out, double *lse) {
    int rep = c->NH / c->NKV, HD = c->HD;
    double scale = 1.0 / sqrt((double)HD);
    double *sc = malloc((size_t)c->T * sizeof(double));
    for (int s = 0; s < c->S; s++)
        for (int t = c->cu[s]; t < c->cu[s + 1]; t++)
            for (int h = 0; h < c->NH; h++) {
                int g = h / rep;
                const float *q = c->q + ((size_t)t * c->NH + h) * HD;
                double m = -INFINITY;
                for (int u = c->cu[s]; u <= t; u++) {
                    const float *k = c->k + ((size_t)u * c->NKV + g) * HD;
                    double d = 0.0;
                    for (int i = 0; i < HD; i++)
                        d += (double)q[i] * k[i];
                    sc[u] = d * scale;
                    if (sc[u] > m) m = sc[u];
                }
                double z = 0.0;
                for (int u = c->cu[s]; u <= t; u++)
                    z += exp(sc[u] - m);
                lse[(size_t)t * c->NH + h] = m + log(z);
                double *o = out + ((size_t)t * c->NH + h) * HD;
                for (int i = 0; i < HD; i++)
                    o[i] = 0.0;
                for (int u = c->cu[s]; u <= t; u++) {
                    double p = exp(sc[u] - m) / z;
                    const float *v = c->v + ((size_t)u * c->NKV + g) * HD;
                    for (int i = 0; i < HD; i++)
                        o[i] += p * v[i];
                }
            }
    free(sc);
}

static void run_attention_case(const int32_t *cu, int S, int NH, int NKV, int HD, size_t nfd) {
    att_ctx c = {.S = S, .T = cu[S], .NH = NH, .NKV = NKV, .HD = HD, .cu = cu};
    size_t nq = (size_t)c.T * NH * HD, nk = (size_t)c.T * NKV * HD;
    c.q = rnd(nq, 1.0f), c.k = rnd(nk, 1.0f), c.v = rnd(nk, 1.0f);
    c.out = zeros(nq), c.lse = zeros((size_t)c.T * NH), c.G = rnd(nq, 1.0f);
    c.scratch = zeros(qn_attention_scratch_floats(cu, S, c.T, NH, NKV, HD));
    att_loss(&c);
    double *wo = calloc(nq, sizeof(double)), *wl = calloc((size_t)c.T * NH, sizeof(double));
    att_naive(&c, wo, wl);
    check_close("attention forward", c.out, wo, nq, 1e-5);
    check_close("attention lse", c.lse, wl, (size_t)c.T * NH, 1e-5);
    float *dq = rnd(nq, 1.0f), *dk = rnd(nk, 1.0f), *dv = rnd(nk, 1.0f); /* junk: must be written */
    qn_attention_backward(dq, dk, dv, c.G, c.q, c.k, c.v, c.out, c.lse, cu, S, c.T, NH, NKV, HD,
                          c.scratch);
    fd_check("attention dq", c.q, nq, dq, att_loss, &c, nfd);
    fd_check("attention dk", c.k, nk, dk, att_loss, &c, nfd);
    fd_check("attention dv", c.v, nk, dv, att_loss, &c, nfd);
    free(c.q), free(c.k), free(c.v), free(c.out), free(c.lse), free(c.G), free(c.scratch);
    free(wo), free(wl), free(dq), free(dk), free(dv);
}

static void test_attention(void **state) {
    (void)state;
    /* lengths 1, 5, 70 (two query blocks); GQA ratio 2 and 1 */
    int32_t cu3[4] = {0, 1, 6, 76};
    run_attention_case(cu3, 3, 4, 2, 8, 300);
    run_attention_case(cu3, 3, 2, 2, 4, 300);
    /* one sequence, one kv head: a single backward task (serial path) */
    int32_t cu1[2] = {0, 9};
    run_attention_case(cu1, 1, 3, 1, 4, 2000);
}

/* ---------------------------------------------------------------- swiglu */

typedef struct sw_ctx {
    int N, F;
    float *h, *out, *G; /* h [N, 2F]: gate | up */
} sw_ctx;
static double sw_loss(void *vc) {
    sw_ctx *c = vc;
    qn_swiglu_forward(c->out, c->h, c->h + c->F, c->N, c->F, 2 * c->F);
    return dot_gf(c->G, c->out, (size_t)c->N * c->F);
}

static void test_swiglu(void **state) {
    (void)state;
    sw_ctx c = {.N = 6, .F = 7};
    size_t n = (size_t)c.N * c.F;
    c.h = rnd(2 * n, 3.0f), c.out = zeros(n), c.G = rnd(n, 1.0f);
    sw_loss(&c);
    double *want = calloc(n, sizeof(double));
    for (int r = 0; r < c.N; r++)
        for (int i = 0; i < c.F; i++) {
            double g = c.h[r * 2 * c.F + i], u = c.h[r * 2 * c.F + c.F + i];
            want[r * c.F + i] = g / (1.0 + exp(-g)) * u;
        }
    check_close("swiglu forward", c.out, want, n, 1e-5);
    float *dh = zeros(2 * n);
    qn_swiglu_backward(dh, dh + c.F, c.G, c.h, c.h + c.F, c.N, c.F, 2 * c.F);
    fd_check("swiglu dgate|dup", c.h, 2 * n, dh, sw_loss, &c, 1000);
    /* dgate aliasing dout with ld == F */
    float *g = rnd(n, 2.0f), *u = rnd(n, 2.0f), *d = malloc(n * sizeof(float)), *du = zeros(n);
    float *dg_ref = zeros(n), *du_ref = zeros(n);
    memcpy(d, c.G, n * sizeof(float));
    qn_swiglu_backward(dg_ref, du_ref, c.G, g, u, c.N, c.F, c.F);
    qn_swiglu_backward(d, du, d, g, u, c.N, c.F, c.F);
    for (size_t i = 0; i < n; i++)
        assert_true(d[i] == dg_ref[i] && du[i] == du_ref[i]);
    free(c.h), free(c.out), free(c.G), free(want), free(dh), free(g), free(u), free(d), free(du);
    free(dg_ref), free(du_ref);
}

/* ---------------------------------------------------------------- router */

typedef struct rt_ctx {
    qn_router_cfg cfg;
    int T, C;
    float *x, *w, *scores, *weight, *G;
    int32_t *idx, *idx_ref;
} rt_ctx;
static double rt_loss(void *vc) {
    rt_ctx *c = vc;
    qn_router_forward(&c->cfg, c->idx, c->weight, c->scores, c->x, c->w, c->T, c->C);
    size_t tk = (size_t)c->T * c->cfg.K;
    if (c->idx_ref && memcmp(c->idx, c->idx_ref, tk * sizeof(int32_t)) != 0) g_skip = 1;
    return dot_gf(c->G, c->weight, tk);
}

typedef struct pair {
    double v;
    int i;
} pair;
static int pair_desc(const void *a, const void *b) {
    const pair *x = a, *y = b;
    if (x->v != y->v) return x->v < y->v ? 1 : -1;
    return x->i - y->i;
}

/* Written from the HF description with sorts, in double. */
static void router_naive(const rt_ctx *c, int32_t *idx, double *wt) {
    int E = c->cfg.E, K = c->cfg.K;
    double *sc = malloc(E * sizeof(double)), *ch = malloc(E * sizeof(double));
    pair *pr = malloc(E * sizeof(pair));
    for (int t = 0; t < c->T; t++) {
        double mx = -INFINITY;
        for (int e = 0; e < E; e++) {
            double l = 0.0;
            for (int i = 0; i < c->C; i++)
                l += (double)c->x[t * c->C + i] * c->w[e * c->C + i];
            sc[e] = l;
            if (l > mx) mx = l;
        }
        if (c->cfg.score == QN_ROUTER_SOFTMAX) {
            double z = 0.0;
            for (int e = 0; e < E; e++)
                z += exp(sc[e] - mx);
            for (int e = 0; e < E; e++)
                sc[e] = exp(sc[e] - mx) / z;
        } else {
            for (int e = 0; e < E; e++)
                sc[e] = 1.0 / (1.0 + exp(-sc[e]));
        }
        for (int e = 0; e < E; e++)
            ch[e] = sc[e] + (c->cfg.bias ? c->cfg.bias[e] : 0.0);
        if (c->cfg.n_group > 1) {
            int G = c->cfg.n_group, gs = E / G;
            pair gp[64];
            for (int g = 0; g < G; g++) {
                for (int j = 0; j < gs; j++)
                    pr[j] = (pair){ch[g * gs + j], j};
                qsort(pr, gs, sizeof(pair), pair_desc);
                gp[g] = (pair){pr[0].v + pr[1].v, g};
            }
            qsort(gp, G, sizeof(pair), pair_desc);
            for (int r = c->cfg.topk_group; r < G; r++)
                for (int j = 0; j < gs; j++)
                    ch[gp[r].i * gs + j] = 0.0;
        }
        for (int e = 0; e < E; e++)
            pr[e] = (pair){ch[e], e};
        qsort(pr, E, sizeof(pair), pair_desc);
        double sum = 0.0;
        for (int k = 0; k < K; k++) {
            idx[t * K + k] = pr[k].i;
            sum += sc[pr[k].i];
        }
        for (int k = 0; k < K; k++) {
            double v = sc[pr[k].i];
            if (c->cfg.norm_topk_prob) v /= sum + 1e-20;
            wt[t * K + k] = v * c->cfg.routed_scaling_factor;
        }
    }
    free(sc), free(ch), free(pr);
}

static void test_router(void **state) {
    (void)state;
    struct {
        qn_router_score score;
        int E, K, n_group, topk_group, norm, bias;
        float rsf;
    } cases[] = {
        {QN_ROUTER_SIGMOID, 16, 4, 4, 2, 1, 1, 2.5f}, /* GLM-4.5 style */
        {QN_ROUTER_SIGMOID, 16, 4, 4, 2, 0, 1, 1.5f}, /* no renorm */
        {QN_ROUTER_SIGMOID, 8, 3, 1, 1, 1, 0, 1.0f},  /* no groups */
        {QN_ROUTER_SOFTMAX, 12, 4, 1, 1, 1, 0, 1.0f}, /* Qwen3-MoE norm_topk_prob */
        {QN_ROUTER_SOFTMAX, 12, 4, 1, 1, 0, 0, 1.0f}, /* Qwen3-MoE without renorm */
        {QN_ROUTER_SIGMOID, 32, 6, 8, 3, 1, 1, 2.5f}, /* more groups */
        /* bias so negative that every kept expert's choice is < 0: HF's
         * masked_fill(0.0) then makes the masked experts win, tied at 0.0
         * (ties go to the lower index) */
        {QN_ROUTER_SIGMOID, 16, 4, 4, 1, 1, 2, 2.5f},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        rt_ctx c = {.T = 13, .C = 10};
        int E = cases[ci].E, K = cases[ci].K;
        float *bias = cases[ci].bias ? rnd(E, 0.3f) : NULL;
        if (cases[ci].bias == 2)
            for (int e = 0; e < E; e++)
                bias[e] = bias[e] - 2.0f;
        c.cfg = (qn_router_cfg){.E = E,
                                .K = K,
                                .n_group = cases[ci].n_group,
                                .topk_group = cases[ci].topk_group,
                                .score = cases[ci].score,
                                .norm_topk_prob = cases[ci].norm,
                                .routed_scaling_factor = cases[ci].rsf,
                                .bias = bias};
        size_t tk = (size_t)c.T * K;
        c.x = rnd((size_t)c.T * c.C, 1.0f), c.w = rnd((size_t)E * c.C, 1.0f);
        c.scores = zeros((size_t)c.T * E), c.weight = zeros(tk), c.G = rnd(tk, 1.0f);
        c.idx = calloc(tk, sizeof(int32_t));
        rt_loss(&c);
        int32_t *widx = calloc(tk, sizeof(int32_t));
        double *ww = calloc(tk, sizeof(double));
        router_naive(&c, widx, ww);
        for (size_t i = 0; i < tk; i++)
            if (widx[i] != c.idx[i])
                fail_msg("router case %zu: idx[%zu] %d want %d", ci, i, c.idx[i], widx[i]);
        check_close("router weights", c.weight, ww, tk, 1e-5);
        c.idx_ref = malloc(tk * sizeof(int32_t));
        memcpy(c.idx_ref, c.idx, tk * sizeof(int32_t));
        float *dx = zeros((size_t)c.T * c.C), *dw = zeros((size_t)E * c.C);
        float *scr = zeros((size_t)c.T * E);
        qn_router_backward(&c.cfg, dx, dw, c.G, c.idx, c.scores, c.x, c.w, c.T, c.C, 0, scr);
        /* a smaller step: a weight row moves every token's logits, and a
         * step that flips some token's selection is skipped */
        g_fd_h = 2e-3f;
        fd_check("router dx", c.x, (size_t)c.T * c.C, dx, rt_loss, &c, 1000);
        fd_check("router dw", c.w, (size_t)E * c.C, dw, rt_loss, &c, 1000);
        g_fd_h = FD_H;
        free(bias), free(c.x), free(c.w), free(c.scores), free(c.weight), free(c.G);
        free(c.idx), free(c.idx_ref), free(widx), free(ww), free(dx), free(dw), free(scr);
    }
}

/* ---------------------------------------------------------------- experts */

typedef struct moe_ctx {
    int T, C, F, E, K;
    int32_t *idx;
    float *x, *weight, *wg, *wu, *wd, *out, *G;
    qn_moe_acts acts;
} moe_ctx;
static double moe_loss(void *vc) {
    moe_ctx *c = vc;
    qn_moe_forward(c->out, &c->acts, c->x, c->idx, c->weight, c->wg, c->wu, c->wd, c->T, c->C, c->F,
                   c->E, c->K, 0);
    return dot_gf(c->G, c->out, (size_t)c->T * c->C);
}

static void run_moe_case(int T, int C, int F, int E, int K, size_t nfd) {
    moe_ctx c = {.T = T, .C = C, .F = F, .E = E, .K = K};
    size_t tk = (size_t)T * K, nx = (size_t)T * C, nge = (size_t)E * F * C;
    c.idx = malloc(tk * sizeof(int32_t));
    for (int t = 0; t < T; t++)
        for (int k = 0; k < K; k++) { /* K distinct experts per token */
            int e;
            int again;
            do {
                e = irand(E);
                again = 0;
                for (int j = 0; j < k; j++)
                    again |= c.idx[t * K + j] == e;
            } while (again);
            c.idx[t * K + k] = e;
        }
    c.x = rnd(nx, 1.0f), c.weight = rnd(tk, 1.0f);
    c.wg = rnd(nge, 0.5f), c.wu = rnd(nge, 0.5f), c.wd = rnd(nge, 0.5f);
    c.out = zeros(nx), c.G = rnd(nx, 1.0f);
    float *af = zeros(qn_moe_acts_floats(T, K, C, F));
    int32_t *ai = calloc(qn_moe_acts_ints(T, K, E), sizeof(int32_t));
    c.acts = (qn_moe_acts){.offsets = ai,
                           .slot_tok = ai + E + 1,
                           .tok_slot = ai + E + 1 + tk,
                           .xs = af,
                           .gate = af + tk * C,
                           .up = af + tk * C + tk * F,
                           .act = af + tk * C + 2 * tk * F,
                           .ys = af + tk * C + 3 * tk * F};
    moe_loss(&c);
    double *want = calloc(nx, sizeof(double)), *gg = calloc(F, sizeof(double));
    for (int t = 0; t < T; t++)
        for (int k = 0; k < K; k++) {
            int e = c.idx[t * K + k];
            const float *x = c.x + (size_t)t * C;
            for (int f = 0; f < F; f++) {
                double g = 0.0, u = 0.0;
                for (int i = 0; i < C; i++) {
                    g += (double)x[i] * c.wg[((size_t)e * F + f) * C + i];
                    u += (double)x[i] * c.wu[((size_t)e * F + f) * C + i];
                }
                gg[f] = g / (1.0 + exp(-g)) * u;
            }
            for (int i = 0; i < C; i++) {
                double y = 0.0;
                for (int f = 0; f < F; f++)
                    y += gg[f] * c.wd[((size_t)e * C + i) * F + f];
                want[(size_t)t * C + i] += c.weight[t * K + k] * y;
            }
        }
    check_close("moe forward", c.out, want, nx, 1e-5);
    float *dx = rnd(nx, 1.0f), *dwt = rnd(tk, 1.0f); /* junk: must be written */
    float *dwg = zeros(nge), *dwu = zeros(nge), *dwd = zeros(nge);
    float *scr = zeros(qn_moe_scratch_floats(T, K, C, F));
    qn_moe_backward(dx, dwt, dwg, dwu, dwd, c.G, &c.acts, c.weight, c.wg, c.wu, c.wd, T, C, F, E, K,
                    0, scr);
    fd_check("moe dx", c.x, nx, dx, moe_loss, &c, nfd);
    fd_check("moe dweight", c.weight, tk, dwt, moe_loss, &c, nfd);
    fd_check("moe dw_gate", c.wg, nge, dwg, moe_loss, &c, nfd);
    fd_check("moe dw_up", c.wu, nge, dwu, moe_loss, &c, nfd);
    fd_check("moe dw_down", c.wd, nge, dwd, moe_loss, &c, nfd);
    /* accumulate: forward adds to out, backward adds to dx */
    float *o2 = rnd(nx, 1.0f), *o20 = malloc(nx * sizeof(float));
    memcpy(o20, o2, nx * sizeof(float));
    qn_moe_forward(o2, &c.acts, c.x, c.idx, c.weight, c.wg, c.wu, c.wd, T, C, F, E, K, 1);
    for (size_t i = 0; i < nx; i++)
        assert_true(fabsf(o2[i] - o20[i] - c.out[i]) <= 1e-5f);
    free(c.idx), free(c.x), free(c.weight), free(c.wg), free(c.wu), free(c.wd), free(c.out);
    free(c.G), free(af), free(ai), free(want), free(gg), free(dx), free(dwt), free(dwg), free(dwu);
    free(dwd), free(scr), free(o2), free(o20);
}

static void test_moe_experts(void **state) {
    (void)state;
    run_moe_case(9, 6, 5, 4, 2, 1000); /* few rows per expert: parallel experts */
    run_moe_case(70, 4, 3, 2, 2, 300); /* many rows per expert: serial, BLAS-threaded */
    run_moe_case(5, 4, 3, 8, 3, 1000); /* some experts get no tokens */
}

/* -------------------------------------------------------------- logprob */

typedef struct lp_ctx {
    int N, C, V, chunk;
    float temp, *h, *w, *logp, *ent, *lse, *ez, *ga, *gb, *scratch;
    int32_t *tgt;
} lp_ctx;
static double lp_loss(void *vc) {
    lp_ctx *c = vc;
    qn_logprob_forward(c->logp, c->ent, c->lse, c->ez, c->h, c->tgt, c->w, c->N, c->C, c->V,
                       c->temp, c->chunk, c->scratch);
    return dot_gf(c->ga, c->logp, c->N) + dot_gf(c->gb, c->ent, c->N);
}

static void run_logprob_case(int N, int C, int V, int chunk, float temp, size_t nfd) {
    lp_ctx c = {.N = N, .C = C, .V = V, .chunk = chunk, .temp = temp};
    c.h = rnd((size_t)N * C, 1.0f), c.w = rnd((size_t)V * C, 1.0f);
    c.logp = zeros(N), c.ent = zeros(N), c.lse = zeros(N), c.ez = zeros(N);
    c.ga = rnd(N, 1.0f), c.gb = rnd(N, 1.0f);
    c.scratch = zeros(qn_logprob_scratch_floats(N, C, chunk));
    c.tgt = malloc(N * sizeof(int32_t));
    for (int n = 0; n < N; n++)
        c.tgt[n] = irand(V);
    c.tgt[0] = V - 1; /* the last, partial chunk */
    lp_loss(&c);
    double *wl = calloc(N, sizeof(double)), *we = calloc(N, sizeof(double));
    double *z = malloc(V * sizeof(double));
    for (int n = 0; n < N; n++) {
        double m = -INFINITY;
        for (int v = 0; v < V; v++) {
            double s = 0.0;
            for (int i = 0; i < C; i++)
                s += (double)c.h[n * C + i] * c.w[(size_t)v * C + i];
            z[v] = s / temp;
            if (z[v] > m) m = z[v];
        }
        double zs = 0.0;
        for (int v = 0; v < V; v++)
            zs += exp(z[v] - m);
        double lz = m + log(zs), h = 0.0;
        for (int v = 0; v < V; v++) {
            double p = exp(z[v] - lz);
            h -= p * (z[v] - lz);
        }
        wl[n] = z[c.tgt[n]] - lz;
        we[n] = h;
    }
    check_close("logprob", c.logp, wl, N, 2e-6);
    check_close("entropy", c.ent, we, N, 2e-6);
    float *dh = rnd((size_t)N * C, 1.0f), *dw = zeros((size_t)V * C);
    qn_logprob_backward(dh, dw, c.ga, c.gb, c.lse, c.ez, c.h, c.tgt, c.w, N, C, V, temp, chunk, 0,
                        c.scratch);
    fd_check("logprob dh", c.h, (size_t)N * C, dh, lp_loss, &c, nfd);
    fd_check("logprob dw", c.w, (size_t)V * C, dw, lp_loss, &c, nfd);
    /* only dlogp, only dentropy (NULL for the other) */
    float *dh1 = zeros((size_t)N * C), *dh2 = zeros((size_t)N * C);
    qn_logprob_backward(dh1, NULL, c.ga, NULL, c.lse, c.ez, c.h, c.tgt, c.w, N, C, V, temp, chunk,
                        0, c.scratch);
    qn_logprob_backward(dh2, NULL, NULL, c.gb, c.lse, c.ez, c.h, c.tgt, c.w, N, C, V, temp, chunk,
                        0, c.scratch);
    for (size_t i = 0; i < (size_t)N * C; i++)
        assert_true(fabsf(dh1[i] + dh2[i] - dh[i]) <= 1e-5f * (1.0f + fabsf(dh[i])));
    /* run to run, the same bits */
    float *dh4 = zeros((size_t)N * C), *dw4 = zeros((size_t)V * C);
    float *dw5 = zeros((size_t)V * C);
    qn_logprob_backward(dh4, dw4, c.ga, c.gb, c.lse, c.ez, c.h, c.tgt, c.w, N, C, V, temp, chunk, 0,
                        c.scratch);
    qn_logprob_backward(dh1, dw5, c.ga, c.gb, c.lse, c.ez, c.h, c.tgt, c.w, N, C, V, temp, chunk, 0,
                        c.scratch);
    assert_memory_equal(dh4, dh1, (size_t)N * C * sizeof(float));
    assert_memory_equal(dw4, dw5, (size_t)V * C * sizeof(float));
    free(dh4), free(dw4), free(dw5);
    /* accumulate adds into dh */
    float *dh3 = rnd((size_t)N * C, 1.0f), *dh30 = malloc((size_t)N * C * sizeof(float));
    memcpy(dh30, dh3, (size_t)N * C * sizeof(float));
    qn_logprob_backward(dh3, NULL, c.ga, c.gb, c.lse, c.ez, c.h, c.tgt, c.w, N, C, V, temp, chunk,
                        1, c.scratch);
    for (size_t i = 0; i < (size_t)N * C; i++)
        assert_true(fabsf(dh3[i] - dh30[i] - dh[i]) <= 1e-5f * (1.0f + fabsf(dh[i])));
    free(dh3), free(dh30);
    free(c.h), free(c.w), free(c.logp), free(c.ent), free(c.lse), free(c.ez), free(c.ga);
    free(c.gb), free(c.scratch), free(c.tgt), free(wl), free(we), free(z), free(dh), free(dw);
    free(dh1), free(dh2);
}

static void test_logprob(void **state) {
    (void)state;
    run_logprob_case(5, 6, 37, 8, 1.0f, 1000);  /* chunk does not divide V */
    run_logprob_case(5, 6, 37, 8, 0.7f, 1000);  /* temperature */
    run_logprob_case(4, 5, 29, 64, 0.7f, 1000); /* one chunk larger than V */
    run_logprob_case(300, 4, 19, 5, 1.3f, 400); /* several row blocks */
}

/* ------------------------------------------------ the checker can fail */

static void test_fd_rejects(void **state) {
    (void)state;
    rn_ctx c = {.N = 4, .D = 8, .eps = 1e-5f};
    size_t n = (size_t)c.N * c.D;
    c.x = rnd(n, 1.0f), c.w = rnd(c.D, 1.0f), c.out = zeros(n), c.rstd = zeros(c.N);
    c.G = rnd(n, 1.0f);
    rn_loss(&c);
    float *dx = zeros(n), *bad = zeros(n);
    qn_rmsnorm_backward(dx, NULL, c.G, c.x, c.w, c.rstd, c.N, c.D, 0);
    assert_int_equal(fd_compare("ok", c.x, n, dx, rn_loss, &c, n, NULL, 1), 0);
    for (size_t i = 0; i < n; i++)
        bad[i] = dx[i] * 1.05f; /* 5% too large */
    assert_int_equal(fd_compare("scaled", c.x, n, bad, rn_loss, &c, n, NULL, 1), 1);
    /* the rstd^3 term left out: a plausible bug */
    for (int r = 0; r < c.N; r++)
        for (int i = 0; i < c.D; i++)
            bad[r * c.D + i] = c.rstd[r] * c.w[i] * c.G[r * c.D + i];
    assert_int_equal(fd_compare("missing term", c.x, n, bad, rn_loss, &c, n, NULL, 1), 1);
    memcpy(bad, dx, n * sizeof(float));
    bad[3] += 0.2f; /* one element wrong */
    assert_int_equal(fd_compare("one element", c.x, n, bad, rn_loss, &c, n, NULL, 1), 1);
    bad[3] = NAN;
    assert_int_equal(fd_compare("nan", c.x, n, bad, rn_loss, &c, n, NULL, 1), 1);
    free(c.x), free(c.w), free(c.out), free(c.rstd), free(c.G), free(dx), free(bad);
}

/* ------------------------------------------------------------------ arena */

static void test_arena(void **state) {
    (void)state;
    qn_arena a;
    assert_int_equal(qn_arena_init(&a, 1000), QN_OK);
    float *p = qn_arena_floats(&a, 10);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 64, 0);
    size_t mark = qn_arena_mark(&a);
    int32_t *q = qn_arena_ints(&a, 100);
    assert_non_null(q);
    assert_int_equal((uintptr_t)q % 64, 0);
    assert_null(qn_arena_alloc(&a, 2000)); /* does not fit: arena unchanged */
    assert_int_equal(qn_arena_mark(&a), mark + qn_arena_round(400));
    qn_arena_reset(&a, mark);
    assert_ptr_equal(qn_arena_ints(&a, 1), q);
    assert_true(a.peak >= mark + 400);
    qn_arena_free(&a);
    qn_arena_free(&a);
    qn_arena z;
    assert_int_equal(qn_arena_init(&z, 0), QN_OK);
    assert_null(qn_arena_alloc(&z, 1));
    qn_arena_free(&z);
}

int main(void) {
    /* QN_TEST_SEED varies the random inputs (the default is fixed) */
    const char *seed = getenv("QN_TEST_SEED");
    if (seed && *seed)
        g_rng = 0x9e3779b97f4a7c15ull ^ (strtoull(seed, NULL, 10) * 0x2545f4914f6cdd1dull);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fd_rejects), cmocka_unit_test(test_sgemm),
        cmocka_unit_test(test_embedding),  cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_rmsnorm),    cmocka_unit_test(test_rope),
        cmocka_unit_test(test_attention),  cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_router),     cmocka_unit_test(test_moe_experts),
        cmocka_unit_test(test_logprob),    cmocka_unit_test(test_arena),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
