/* mock_cuda.c — a host imitation of the CUDA context (cuda_ctx.h, cuda_rt.h)
 * and of the elementwise ops (elementwise.h), for test_ops_emulated: it lets
 * the op harness (harness.c) and the elementwise family's case bodies
 * (ops_elementwise.c) run end to end on a machine without a GPU, so their
 * bookkeeping, buffer sizes, aliasing, guard and NaN checks and the CPU
 * reference calls are exercised here, under the sanitizers in ASan builds.
 *
 * The "device" is host memory (one malloc'd arena), transfers are memcpy, and
 * each op converts its dt inputs to fp32, calls the CPU op of
 * core/ops/cpu/ops.h (AdamW: trainer/optimizer.c's arithmetic) and converts
 * back. It checks nothing about the CUDA kernels themselves: only a GPU run
 * of qn_test_ops does. Linked instead of libquench_core (see
 * tests/CMakeLists.txt), never into quench. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/ops/cpu/ops.h"
#include "core/ops/cuda/cuda_ctx.h"
#include "core/ops/cuda/cuda_rt.h"
#include "core/ops/cuda/elementwise.h"

#define MOCK_ARENA_MAX ((size_t)1 << 30)

struct qn_cuda_ctx {
    char *arena;
    size_t cap, used, peak;
    double ev_ms[8];
};

int qn_cuda_device_count(void) {
    return 1;
}

qn_status qn_cuda_device_describe(int device, char *buf, size_t cap) {
    snprintf(buf, cap, "host mock (tests/gpu/emu/mock_cuda.c)");
    return QN_OK;
}

qn_status qn_cuda_f32_to_bf16(const float *in, uint16_t *out, size_t n) {
    for (size_t i = 0; i < n; i++)
        out[i] = qn_f32_to_bf16(in[i]);
    return QN_OK;
}

qn_status qn_cuda_ctx_create(const qn_cuda_ctx_params *p, qn_cuda_ctx **out) {
    *out = NULL;
    if (p->arena_bytes > MOCK_ARENA_MAX) /* makes the harness halve its request */
        return qn_fail(QN_ERR_NOMEM, "mock: arena of %zu bytes", p->arena_bytes);
    qn_cuda_ctx *c = calloc(1, sizeof *c);
    if (!c || !(c->arena = malloc(p->arena_bytes ? p->arena_bytes : 1))) {
        free(c);
        return qn_fail(QN_ERR_NOMEM, "mock: arena of %zu bytes", p->arena_bytes);
    }
    c->cap = p->arena_bytes;
    *out = c;
    return QN_OK;
}

void qn_cuda_ctx_free(qn_cuda_ctx *c) {
    if (!c) return;
    free(c->arena);
    free(c);
}

void *qn_cuda_ctx_stream(const qn_cuda_ctx *c) {
    return NULL;
}
void *qn_cuda_ctx_blaslt(const qn_cuda_ctx *c) {
    return NULL;
}
void *qn_cuda_ctx_workspace(const qn_cuda_ctx *c, size_t *bytes) {
    if (bytes) *bytes = 0;
    return NULL;
}
int qn_cuda_ctx_device(const qn_cuda_ctx *c) {
    return 0;
}
int qn_cuda_ctx_sm_count(const qn_cuda_ctx *c) {
    return 1;
}

void *qn_cuda_alloc(qn_cuda_ctx *c, size_t bytes) {
    size_t off = (c->used + 255) & ~(size_t)255;
    if (off > c->cap || bytes > c->cap - off) return NULL;
    c->used = off + bytes;
    if (c->used > c->peak) c->peak = c->used;
    return c->arena + off;
}
size_t qn_cuda_mark(const qn_cuda_ctx *c) {
    return c->used;
}
void qn_cuda_reset(qn_cuda_ctx *c, size_t mark) {
    if (mark <= c->used) c->used = mark;
}
size_t qn_cuda_arena_used(const qn_cuda_ctx *c) {
    return c->used;
}
size_t qn_cuda_arena_peak(const qn_cuda_ctx *c) {
    return c->peak;
}
size_t qn_cuda_arena_cap(const qn_cuda_ctx *c) {
    return c->cap;
}

qn_status qn_cuda_upload(qn_cuda_ctx *c, void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);
    return QN_OK;
}
qn_status qn_cuda_download(qn_cuda_ctx *c, void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);
    return QN_OK;
}
qn_status qn_cuda_copy(qn_cuda_ctx *c, void *dst, const void *src, size_t bytes) {
    if (bytes) memmove(dst, src, bytes);
    return QN_OK;
}
qn_status qn_cuda_memset(qn_cuda_ctx *c, void *dst, int byte, size_t bytes) {
    if (bytes) memset(dst, byte, bytes);
    return QN_OK;
}
qn_status qn_cuda_sync(qn_cuda_ctx *c) {
    return QN_OK;
}

qn_status qn_cuda_event_record(qn_cuda_ctx *c, int slot) {
    if (slot < 0 || slot >= 8) return qn_fail(QN_ERR_INVALID, "mock: event slot %d", slot);
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    c->ev_ms[slot] = (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
    return QN_OK;
}
qn_status qn_cuda_elapsed_ms(qn_cuda_ctx *c, int a, int b, float *ms) {
    if (a < 0 || a >= 8 || b < 0 || b >= 8) return qn_fail(QN_ERR_INVALID, "mock: event slot");
    *ms = (float)(c->ev_ms[b] - c->ev_ms[a]);
    return QN_OK;
}

/* ---- ops: dt -> fp32, the CPU op, fp32 -> dt ---- */

static float *to_f32(qn_dtype dt, const void *p, size_t n) {
    float *f = malloc((n ? n : 1) * sizeof *f);
    if (!f) abort();
    if (n && qn_dtype_to_f32(dt, p, f, n) != QN_OK) abort();
    return f;
}
static void from_f32(qn_dtype dt, void *p, const float *f, size_t n) {
    if (n && qn_dtype_from_f32(dt, f, p, n) != QN_OK) abort();
}

#define MOCK_DTYPE(op, dt)                                                                         \
    do {                                                                                           \
        if ((dt) != QN_DTYPE_F32 && (dt) != QN_DTYPE_BF16)                                         \
            return qn_fail(QN_ERR_UNSUPPORTED, "%s: dtype", op);                                   \
    } while (0)
#define MOCK_REQUIRE(cond, op)                                                                     \
    do {                                                                                           \
        if (!(cond)) return qn_fail(QN_ERR_INVALID, "%s: bad arguments", op);                      \
    } while (0)

qn_status qn_cuda_embedding_forward(qn_cuda_ctx *c, qn_dtype dt, void *out, const int32_t *tokens,
                                    const void *wte, int T, int C, int V) {
    MOCK_DTYPE("embedding_forward", dt);
    MOCK_REQUIRE(out && tokens && wte, "embedding_forward");
    size_t TC = (size_t)T * C;
    float *w = to_f32(dt, wte, (size_t)V * C), *o = malloc((TC ? TC : 1) * sizeof *o);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < C; i++)
            o[(size_t)t * C + i] =
                tokens[t] >= 0 && tokens[t] < V ? w[(size_t)tokens[t] * C + i] : NAN;
    from_f32(dt, out, o, TC);
    free(w);
    free(o);
    return QN_OK;
}

qn_status qn_cuda_embedding_backward(qn_cuda_ctx *c, qn_dtype dt, float *dwte, const void *dout,
                                     const int32_t *tokens, int T, int C, int V) {
    MOCK_DTYPE("embedding_backward", dt);
    float *d = to_f32(dt, dout, (size_t)T * C);
    qn_embedding_backward(dwte, d, tokens, T, C);
    free(d);
    return QN_OK;
}

qn_status qn_cuda_rmsnorm_forward(qn_cuda_ctx *c, qn_dtype dt, void *out, float *rstd,
                                  const void *inp, const void *w, float eps, int N, int D) {
    MOCK_DTYPE("rmsnorm_forward", dt);
    MOCK_REQUIRE(D > 0 && N >= 0, "rmsnorm_forward");
    size_t n = (size_t)N * D;
    float *x = to_f32(dt, inp, n), *ww = to_f32(dt, w, (size_t)D);
    qn_rmsnorm_forward(x, rstd, x, ww, eps, N, D);
    from_f32(dt, out, x, n);
    free(x);
    free(ww);
    return QN_OK;
}

qn_status qn_cuda_rmsnorm_backward(qn_cuda_ctx *c, qn_dtype dt, void *dinp, float *dw,
                                   const void *dout, const void *inp, const void *w,
                                   const float *rstd, int N, int D, int accumulate) {
    MOCK_DTYPE("rmsnorm_backward", dt);
    size_t n = (size_t)N * D;
    float *x = to_f32(dt, inp, n), *ww = to_f32(dt, w, (size_t)D), *dy = to_f32(dt, dout, n);
    float *dx = dinp ? to_f32(dt, dinp, n) : NULL;
    qn_rmsnorm_backward(dx, dw, dy, x, ww, rstd, N, D, accumulate);
    if (dx) from_f32(dt, dinp, dx, n);
    free(x);
    free(ww);
    free(dy);
    free(dx);
    return QN_OK;
}

static qn_status mock_rope(qn_dtype dt, void *x, const int32_t *pos, const float *cos_t,
                           const float *sin_t, int P, int T, int NH, int HD, int R, int bwd) {
    MOCK_DTYPE("rope", dt);
    MOCK_REQUIRE(R >= 0 && R <= HD && R % 2 == 0, "rope");
    size_t n = (size_t)T * NH * HD;
    float *f = to_f32(dt, x, n);
    (bwd ? qn_rope_backward : qn_rope_forward)(f, pos, cos_t, sin_t, T, NH, HD, R);
    from_f32(dt, x, f, n);
    free(f);
    return QN_OK;
}
qn_status qn_cuda_rope_forward(qn_cuda_ctx *c, qn_dtype dt, void *x, const int32_t *pos,
                               const float *cos_t, const float *sin_t, int P, int T, int NH, int HD,
                               int R) {
    return mock_rope(dt, x, pos, cos_t, sin_t, P, T, NH, HD, R, 0);
}
qn_status qn_cuda_rope_backward(qn_cuda_ctx *c, qn_dtype dt, void *dx, const int32_t *pos,
                                const float *cos_t, const float *sin_t, int P, int T, int NH,
                                int HD, int R) {
    return mock_rope(dt, dx, pos, cos_t, sin_t, P, T, NH, HD, R, 1);
}

/* Elements spanned by N rows of F with stride ld (not N*ld: the last row
 * may end before the buffer does, as with up = gate + F). */
static size_t span(int N, int F, int ld) {
    return N ? (size_t)(N - 1) * ld + F : 0;
}

qn_status qn_cuda_swiglu_forward(qn_cuda_ctx *c, qn_dtype dt, void *out, const void *gate,
                                 const void *up, int N, int F, int ld) {
    MOCK_DTYPE("swiglu_forward", dt);
    MOCK_REQUIRE(ld >= F, "swiglu_forward");
    size_t m = span(N, F, ld), NF = (size_t)N * F;
    float *g = to_f32(dt, gate, m), *u = to_f32(dt, up, m), *o = malloc((NF ? NF : 1) * 4);
    qn_swiglu_forward(o, g, u, N, F, ld);
    from_f32(dt, out, o, NF);
    free(g);
    free(u);
    free(o);
    return QN_OK;
}

qn_status qn_cuda_swiglu_backward(qn_cuda_ctx *c, qn_dtype dt, void *dgate, void *dup,
                                  const void *dout, const void *gate, const void *up, int N, int F,
                                  int ld) {
    MOCK_DTYPE("swiglu_backward", dt);
    MOCK_REQUIRE(ld >= F, "swiglu_backward");
    size_t m = span(N, F, ld), esz = qn_dtype_size(dt);
    float *g = to_f32(dt, gate, m), *u = to_f32(dt, up, m), *d = to_f32(dt, dout, (size_t)N * F);
    float *dg = malloc((m ? m : 1) * 4), *du = malloc((m ? m : 1) * 4);
    qn_swiglu_backward(dg, du, d, g, u, N, F, ld);
    for (int r = 0; r < N; r++) { /* only the F columns of each row, like the kernel */
        from_f32(dt, (char *)dgate + (size_t)r * ld * esz, dg + (size_t)r * ld, (size_t)F);
        from_f32(dt, (char *)dup + (size_t)r * ld * esz, du + (size_t)r * ld, (size_t)F);
    }
    free(g);
    free(u);
    free(d);
    free(dg);
    free(du);
    return QN_OK;
}

qn_status qn_cuda_adamw_step(qn_cuda_ctx *c, qn_dtype grad_dt, float *params, const void *grad,
                             float *m, float *v, void *params_bf16, int64_t n,
                             const qn_cuda_adamw_args *a) {
    MOCK_DTYPE("adamw_step", grad_dt);
    MOCK_REQUIRE(a && a->step >= 1, "adamw_step");
    float *g = to_f32(grad_dt, grad, (size_t)n);
    double bc1 = 1.0 - pow(a->beta1, (double)a->step);
    double sqrt_bc2 = sqrt(1.0 - pow(a->beta2, (double)a->step));
    double decay = a->lr * a->weight_decay;
    for (int64_t i = 0; i < n; i++) {
        double gi = (float)((double)g[i] * a->grad_scale);
        m[i] = (float)(a->beta1 * m[i] + (1.0 - a->beta1) * gi);
        v[i] = (float)(a->beta2 * v[i] + (1.0 - a->beta2) * gi * gi);
        double w = params[i];
        w -= decay * w;
        w -= a->lr * ((double)m[i] / bc1) / (sqrt((double)v[i]) / sqrt_bc2 + a->eps);
        params[i] = (float)w;
    }
    if (params_bf16) from_f32(QN_DTYPE_BF16, params_bf16, params, (size_t)n);
    free(g);
    return QN_OK;
}

qn_status qn_cuda_sumsq(qn_cuda_ctx *c, qn_dtype dt, const void *x, int64_t n, double *out_dev) {
    MOCK_DTYPE("sumsq", dt);
    float *f = to_f32(dt, x, (size_t)n);
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)f[i] * f[i];
    *out_dev = s;
    free(f);
    return QN_OK;
}

qn_status qn_cuda_convert(qn_cuda_ctx *c, qn_dtype dst_dt, void *dst, qn_dtype src_dt,
                          const void *src, int64_t n) {
    MOCK_DTYPE("convert", dst_dt);
    MOCK_DTYPE("convert", src_dt);
    float *f = to_f32(src_dt, src, (size_t)n);
    from_f32(dst_dt, dst, f, (size_t)n);
    free(f);
    return QN_OK;
}
