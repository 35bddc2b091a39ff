/* infer.c — incremental forward over a paged KV cache (see infer.h), and the
 * FP8 copies of the projection matrices it can multiply by.
 *
 * Per layer, for all chunks at once: x += o(attn(rope(qk_norm(qkv(rms(x))))));
 * x += mlp(rms(x)). The K/V of the chunk tokens are written to their cache
 * slots before attention, so a token attends to the chunk's earlier tokens
 * through the cache exactly as to older ones.
 *
 * Speed notes (2-core CPU). A single-token decode is GEMV-bound: every weight
 * byte is read once per step, so at T = 1 the projections go through
 * cblas_sgemv split by output rows over the OpenMP threads (OpenBLAS's sgemm
 * with M = 1 packs the weight first, reading it twice). Routed experts run one
 * per thread (dynamic schedule) on single-threaded BLAS, each writing its own
 * output rows, and are combined per token in a fixed order, so a token's
 * result does not depend on which other tokens share the step. Paged attention
 * takes each (token, kv head) pair as a task and walks the block table a block
 * at a time with an online softmax; its dot products and value updates are
 * `omp simd` loops (GCC at -O2 does not vectorise float reductions by itself).
 *
 * Leaves out: see infer.h. */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/io/safetensors.h"
#include "core/model/infer.h"
#include "core/model/router_cfg.h"
#include "core/ops/cpu/ops.h"
#include "core/quant/fp8.h"

#define QN_MAX_THREADS 256

/* ------------------------------------------------------------------ FP8 weights */

typedef struct fp8_mat {
    size_t offset; /* of the fp32 copy in qn_model.w: the lookup key */
    qn_fp8_shape sh;
    uint8_t *q;
    float *s;
} fp8_mat;

struct qn_model_fp8 {
    fp8_mat *mats; /* sorted by offset (the parameter table is in offset order) */
    size_t n;
    int32_t bm, bn;
    size_t bytes;
};

static int is_projection(const qn_param_info *p) {
    size_t n = strlen(p->name);
    static const char suffix[] = "_proj.weight";
    return p->ndim == 2 && n > sizeof suffix - 1 &&
           strcmp(p->name + n - (sizeof suffix - 1), suffix) == 0;
}

static qn_status fp8_alloc(qn_model_fp8 **out, const qn_model *m, int32_t bm, int32_t bn) {
    *out = NULL;
    if (bm < 1 || bn < 1)
        return qn_fail(QN_ERR_INVALID, "fp8: block size %dx%d must be positive", bm, bn);
    qn_model_fp8 *f = calloc(1, sizeof *f);
    if (!f) return qn_fail(QN_ERR_NOMEM, "fp8 weights");
    f->bm = bm;
    f->bn = bn;
    size_t n = 0;
    for (size_t i = 0; i < m->n_params; i++) n += is_projection(&m->params[i]);
    f->mats = calloc(n ? n : 1, sizeof *f->mats);
    if (!f->mats) {
        free(f);
        return qn_fail(QN_ERR_NOMEM, "fp8 weights");
    }
    for (size_t i = 0; i < m->n_params; i++) {
        const qn_param_info *p = &m->params[i];
        if (!is_projection(p)) continue;
        fp8_mat *x = &f->mats[f->n++];
        x->offset = p->offset;
        x->sh = (qn_fp8_shape){.rows = p->shape[0], .cols = p->shape[1], .block_rows = bm,
                               .block_cols = bn};
        size_t ns = (size_t)(qn_fp8_scale_rows(&x->sh) * qn_fp8_scale_cols(&x->sh));
        x->q = malloc(p->numel ? p->numel : 1);
        x->s = malloc(ns * sizeof(float));
        if (!x->q || !x->s) {
            qn_model_fp8_free(f);
            return qn_fail(QN_ERR_NOMEM, "fp8 weights: tensor '%s'", p->name);
        }
        f->bytes += p->numel + ns * sizeof(float);
        if (i > 0 && f->n > 1 && x[-1].offset >= x->offset) {
            qn_model_fp8_free(f);
            return qn_fail(QN_ERR_INTERNAL, "fp8 weights: parameter table not in offset order");
        }
    }
    *out = f;
    return QN_OK;
}

void qn_model_fp8_free(qn_model_fp8 *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n; i++) {
        free(f->mats[i].q);
        free(f->mats[i].s);
    }
    free(f->mats);
    free(f);
}

size_t qn_model_fp8_bytes(const qn_model_fp8 *f) { return f ? f->bytes : 0; }
size_t qn_model_fp8_count(const qn_model_fp8 *f) { return f ? f->n : 0; }

qn_status qn_model_fp8_quantize(qn_model_fp8 **out, const qn_model *m, int32_t bm, int32_t bn) {
    QN_CHECK(fp8_alloc(out, m, bm, bn));
    qn_model_fp8 *f = *out;
    size_t k = 0;
    for (size_t i = 0; i < m->n_params; i++) {
        const qn_param_info *p = &m->params[i];
        if (!is_projection(p)) continue;
        fp8_mat *x = &f->mats[k++];
        qn_status s = qn_fp8_quantize(&x->sh, m->w + p->offset, x->q, x->s, p->name);
        if (s != QN_OK) {
            qn_model_fp8_free(f);
            *out = NULL;
            return s;
        }
    }
    return QN_OK;
}

static char *slurp(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    char *buf = NULL;
    if (fseek(fp, 0, SEEK_END) == 0) {
        long n = ftell(fp);
        if (n >= 0 && n < (1L << 24) && fseek(fp, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
            if (fread(buf, 1, (size_t)n, fp) != (size_t)n) {
                free(buf);
                buf = NULL;
            } else {
                buf[n] = '\0';
            }
        }
    }
    fclose(fp);
    return buf;
}

qn_status qn_model_fp8_config(const char *dir, int *is_fp8, int32_t *bm, int32_t *bn) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    *is_fp8 = 0;
    *bm = *bn = QN_FP8_BLOCK_DEFAULT;
    char *text = slurp(path);
    if (!text) return qn_fail(QN_ERR_IO, "%s: cannot read", path);
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root) return qn_fail(QN_ERR_FORMAT, "%s: not valid JSON", path);
    qn_status s = QN_OK;
    const cJSON *qc = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
    if (qc && !cJSON_IsNull(qc)) {
        const cJSON *meth = cJSON_GetObjectItemCaseSensitive(qc, "quant_method");
        const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(qc, "fmt");
        const cJSON *wbs = cJSON_GetObjectItemCaseSensitive(qc, "weight_block_size");
        if (!cJSON_IsString(meth) || strcmp(meth->valuestring, "fp8") != 0) {
            s = qn_fail(QN_ERR_UNSUPPORTED, "%s: quantization_config.quant_method must be \"fp8\"",
                        path);
        } else if (fmt && (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "e4m3") != 0)) {
            s = qn_fail(QN_ERR_UNSUPPORTED, "%s: quantization_config.fmt must be \"e4m3\"", path);
        } else if (!cJSON_IsArray(wbs) || cJSON_GetArraySize(wbs) != 2 ||
                   !cJSON_IsNumber(cJSON_GetArrayItem(wbs, 0)) ||
                   !cJSON_IsNumber(cJSON_GetArrayItem(wbs, 1)) ||
                   cJSON_GetArrayItem(wbs, 0)->valuedouble < 1 ||
                   cJSON_GetArrayItem(wbs, 1)->valuedouble < 1 ||
                   cJSON_GetArrayItem(wbs, 0)->valuedouble > 65536 ||
                   cJSON_GetArrayItem(wbs, 1)->valuedouble > 65536) {
            s = qn_fail(QN_ERR_FORMAT, "%s: quantization_config.weight_block_size must be two "
                        "positive integers", path);
        } else {
            *is_fp8 = 1;
            *bm = (int32_t)cJSON_GetArrayItem(wbs, 0)->valuedouble;
            *bn = (int32_t)cJSON_GetArrayItem(wbs, 1)->valuedouble;
        }
    }
    cJSON_Delete(root);
    return s;
}

qn_status qn_model_fp8_load_dir(qn_model_fp8 **out, const qn_model *m, const char *dir) {
    int is_fp8;
    int32_t bm, bn;
    *out = NULL;
    QN_CHECK(qn_model_fp8_config(dir, &is_fp8, &bm, &bn));
    qn_st_model *st = NULL;
    QN_CHECK(qn_st_model_open(dir, &st));
    qn_model_fp8 *f = NULL;
    qn_status s = fp8_alloc(&f, m, bm, bn);
    size_t k = 0;
    char sname[160];
    for (size_t i = 0; s == QN_OK && i < m->n_params; i++) {
        const qn_param_info *p = &m->params[i];
        if (!is_projection(p)) continue;
        fp8_mat *x = &f->mats[k++];
        const qn_st_tensor *t = NULL, *ts = NULL;
        s = qn_st_model_get(st, p->name, &t);
        if (s != QN_OK) {
            s = qn_fail(QN_ERR_NOT_FOUND, "%s: tensor '%s' is missing", dir, p->name);
            break;
        }
        if (t->dtype != QN_DTYPE_F8_E4M3) { /* a float tensor: m holds it, quantise */
            s = qn_fp8_quantize(&x->sh, m->w + p->offset, x->q, x->s, p->name);
            continue;
        }
        if (t->ndim != 2 || t->shape[0] != p->shape[0] || t->shape[1] != p->shape[1]) {
            s = qn_fail(QN_ERR_FORMAT, "%s: tensor '%s' does not have the config's shape [%lld, "
                        "%lld]", dir, p->name, (long long)p->shape[0], (long long)p->shape[1]);
            break;
        }
        snprintf(sname, sizeof sname, "%s_scale_inv", p->name);
        s = qn_st_model_get(st, sname, &ts);
        if (s != QN_OK) {
            s = qn_fail(QN_ERR_NOT_FOUND, "%s: tensor '%s' is F8_E4M3 but '%s' is missing", dir,
                        p->name, sname);
            break;
        }
        int64_t sr = qn_fp8_scale_rows(&x->sh), sc = qn_fp8_scale_cols(&x->sh);
        if (ts->ndim != 2 || ts->shape[0] != sr || ts->shape[1] != sc ||
            !(ts->dtype == QN_DTYPE_F32 || ts->dtype == QN_DTYPE_BF16 ||
              ts->dtype == QN_DTYPE_F16)) {
            s = qn_fail(QN_ERR_FORMAT, "%s: tensor '%s' must be a float [%lld, %lld] for block "
                        "%dx%d", dir, sname, (long long)sr, (long long)sc, bm, bn);
            break;
        }
        memcpy(x->q, t->data, p->numel);
        s = qn_dtype_to_f32(ts->dtype, ts->data, x->s, (size_t)(sr * sc));
    }
    qn_st_model_close(st);
    if (s != QN_OK) {
        qn_model_fp8_free(f);
        return s;
    }
    *out = f;
    return QN_OK;
}

void qn_model_fp8_dequantize_into(const qn_model_fp8 *f, qn_model *m) {
    for (size_t i = 0; i < f->n; i++)
        qn_fp8_dequantize(&f->mats[i].sh, f->mats[i].q, f->mats[i].s, m->w + f->mats[i].offset);
}

static const fp8_mat *fp8_find(const qn_model_fp8 *f, size_t offset) {
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (f->mats[mid].offset < offset) lo = mid + 1;
        else hi = mid;
    }
    return lo < f->n && f->mats[lo].offset == offset ? &f->mats[lo] : NULL;
}

/* ------------------------------------------------------------------ workspace */

struct qn_infer_ws {
    int64_t max_tokens, max_context;
    int32_t max_chunks;
    size_t bytes;
    int nthreads;
    float *x, *h, *q, *k, *v, *att, *tmp; /* [T,H] [T,H] [T,QD] [T,KD] [T,KD] [T,QD] [T,H] */
    float *g, *u;                          /* [T, max(I, SHI)] */
    float *rope_cos, *rope_sin;            /* [max_context, rot/2] */
    int32_t *pos;                          /* [T] */
    int32_t *tok_chunk;                    /* [T] chunk of each token */
    float *hrows;                          /* [max_chunks, H] */
    /* MoE */
    float *scores, *wts;                   /* [T,E], [T,K] */
    int32_t *sel;                          /* [T,K] */
    int32_t *offsets, *slot_tok, *tok_slot; /* [E+1], [TK], [TK] */
    int32_t *active;                       /* [E] experts with tokens this step */
    float *xs, *ys;                        /* [TK,H] gathered inputs, expert outputs */
    float *eg, *eu;                        /* [TK,MI] */
    /* FP8 dequantisation scratch, one per thread */
    float *fp8_scratch;
    size_t fp8_scratch_floats;
};

static size_t walign(size_t n) { return (n + 15) & ~(size_t)15; }

qn_status qn_infer_ws_init(qn_infer_ws **out, const qn_model *m, const qn_model_fp8 *f8,
                           int64_t max_tokens, int32_t max_chunks, int64_t max_context) {
    *out = NULL;
    const qn_model_desc *d = &m->d;
    if (max_tokens < 1 || max_chunks < 1 || max_chunks > max_tokens || max_context < 1)
        return qn_fail(QN_ERR_INVALID, "infer workspace: bad sizes tokens=%lld chunks=%d "
                       "context=%lld", (long long)max_tokens, max_chunks, (long long)max_context);
    qn_infer_ws *ws = calloc(1, sizeof *ws);
    if (!ws) return qn_fail(QN_ERR_NOMEM, "infer workspace");
    qn_blas_init();
    ws->max_tokens = max_tokens;
    ws->max_chunks = max_chunks;
    ws->max_context = max_context;
    ws->nthreads = omp_get_max_threads();
    if (ws->nthreads > QN_MAX_THREADS) ws->nthreads = QN_MAX_THREADS;
    int64_t T = max_tokens, H = d->hidden, QD = d->n_heads * d->head_dim;
    int64_t KD = d->n_kv_heads * d->head_dim, SHI = d->moe_intermediate * d->n_shared_experts;
    int64_t W = d->intermediate > SHI ? d->intermediate : SHI;
    int64_t E = d->n_experts, K = d->top_k > 0 ? d->top_k : 1, TK = T * K;
    int moe = d->router != QN_MODEL_ROUTER_NONE;
    int64_t half = d->rot_dim / 2 > 0 ? d->rot_dim / 2 : 1;
    size_t f8s = 0;
    if (f8)
        for (size_t i = 0; i < f8->n; i++) {
            size_t need = qn_fp8_matmul_scratch_floats(&f8->mats[i].sh);
            if (need > f8s) f8s = need;
        }
    ws->fp8_scratch_floats = walign(f8s);
    size_t sizes[] = {
        (size_t)(T * H), (size_t)(T * H), (size_t)(T * QD), (size_t)(T * KD), (size_t)(T * KD),
        (size_t)(T * QD), (size_t)(T * H), (size_t)(T * (W > 0 ? W : 1)),
        (size_t)(T * (W > 0 ? W : 1)), (size_t)(max_context * half), (size_t)(max_context * half),
        (size_t)max_chunks * (size_t)H,
        moe ? (size_t)(T * E) : 0, moe ? (size_t)TK : 0,
        moe ? (size_t)(TK * H) : 0, moe ? (size_t)(TK * H) : 0,
        moe ? (size_t)(TK * d->moe_intermediate) : 0, moe ? (size_t)(TK * d->moe_intermediate) : 0,
        ws->fp8_scratch_floats * (size_t)ws->nthreads};
    float **ptrs[] = {&ws->x, &ws->h, &ws->q, &ws->k, &ws->v, &ws->att, &ws->tmp, &ws->g, &ws->u,
                      &ws->rope_cos, &ws->rope_sin, &ws->hrows, &ws->scores, &ws->wts, &ws->xs,
                      &ws->ys, &ws->eg, &ws->eu, &ws->fp8_scratch};
    size_t nf = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) nf += walign(sizes[i]);
    size_t ni = walign((size_t)T) * 2 + (moe ? walign((size_t)TK) * 3 + walign((size_t)E + 1) +
                                                   walign((size_t)E)
                                             : 0);
    ws->bytes = (nf + ni) * 4 + 64;
    char *mem = aligned_alloc(64, (ws->bytes + 63) & ~(size_t)63);
    if (!mem) {
        free(ws);
        return qn_fail(QN_ERR_NOMEM, "infer workspace: %.1f MiB", (double)(nf + ni) * 4 / 1048576);
    }
    /* the arena pointer is the first field we carve: keep it in x */
    float *fp = (float *)mem;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        *ptrs[i] = sizes[i] ? fp : NULL;
        fp += walign(sizes[i]);
    }
    int32_t *ip = (int32_t *)fp;
    ws->pos = ip, ip += walign((size_t)T);
    ws->tok_chunk = ip, ip += walign((size_t)T);
    if (moe) {
        ws->sel = ip, ip += walign((size_t)TK);
        ws->slot_tok = ip, ip += walign((size_t)TK);
        ws->tok_slot = ip, ip += walign((size_t)TK);
        ws->offsets = ip, ip += walign((size_t)E + 1);
        ws->active = ip, ip += walign((size_t)E);
    }
    if (d->rot_dim > 0)
        qn_rope_table(ws->rope_cos, ws->rope_sin, (int)max_context, (int)d->rot_dim,
                      d->rope_theta);
    *out = ws;
    return QN_OK;
}

void qn_infer_ws_free(qn_infer_ws *ws) {
    if (!ws) return;
    free(ws->x); /* the arena starts at x (first carved, never empty) */
    free(ws);
}

size_t qn_infer_ws_bytes(const qn_infer_ws *ws) { return ws ? ws->bytes : 0; }

size_t qn_infer_block_floats(const qn_model_desc *d, int32_t block_size) {
    return (size_t)d->n_layers * 2 * (size_t)block_size * (size_t)(d->n_kv_heads * d->head_dim);
}

/* ------------------------------------------------------------------ linear layers */

/* Rows per work unit of a single-token GEMV group: 64 rows x 768..5120 inputs is
 * 0.2-1.3 MB of weights, long enough for the hardware prefetcher to stream and
 * short enough that a thread slowed down by the host (a VM's noisy neighbour) hands
 * the rest of the step to the other threads instead of holding them at the barrier. */
#define QN_GEMV_UNIT_ROWS 64
#define QN_GEMV_MAX_JOBS 4

typedef struct gemv_job {
    const float *W; /* [O, IN] fp32 */
    int64_t O;
    float *y; /* [O] */
} gemv_job;

/* y_j = W_j x for jobs sharing x[IN], at T = 1: the GEMVs of one stage (q/k/v, or gate/up)
 * run as one parallel region whose units (row blocks of any job) are handed out
 * dynamically. Each output row is one dot product computed by one cblas_sgemv call on a
 * fixed 64-row block, so the result does not depend on which thread takes which unit (with
 * one thread the projections run as whole-matrix sgemv calls instead, see linear_group). */
static void gemv_group(const gemv_job *jobs, int n_jobs, int64_t IN, const float *x) {
    int64_t first[QN_GEMV_MAX_JOBS + 1]; /* first unit of each job */
    first[0] = 0;
    for (int j = 0; j < n_jobs; j++)
        first[j + 1] = first[j] + (jobs[j].O + QN_GEMV_UNIT_ROWS - 1) / QN_GEMV_UNIT_ROWS;
    const int64_t units = first[n_jobs];
    int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nt > 1 && units > 1)
    for (int64_t u = 0; u < units; u++) {
        int j = 0;
        while (u >= first[j + 1]) j++;
        int64_t r0 = (u - first[j]) * QN_GEMV_UNIT_ROWS;
        int64_t n = jobs[j].O - r0 < QN_GEMV_UNIT_ROWS ? jobs[j].O - r0 : QN_GEMV_UNIT_ROWS;
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n, (int)IN, 1.0f, jobs[j].W + r0 * IN,
                    (int)IN, x, 1, 0.0f, jobs[j].y + r0, 1);
    }
}

/* y[T,O] = x[T,IN] W^T, W fp32 [O,IN]: a GEMV group of one at T = 1. */
static void gemv_or_gemm(int64_t T, int64_t IN, int64_t O, const float *x, const float *W,
                         float *y) {
    if (T != 1) {
        qn_sgemm(0, 1, (int)T, (int)O, (int)IN, 1.0f, x, (int)IN, W, (int)IN, 0.0f, y, (int)O);
        return;
    }
    int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (nt <= 1 || O * IN < (1 << 16)) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)O, (int)IN, 1.0f, W, (int)IN, x, 1, 0.0f, y, 1);
        return;
    }
    gemv_group(&(gemv_job){W, O, y}, 1, IN, x);
}

/* y = x W^T (+ b) where W is the fp32 parameter at W (FP8 copy used when f8 has one). */
static void linear(const qn_model *m, const qn_model_fp8 *f8, qn_infer_ws *ws, int64_t T,
                   int64_t IN, int64_t O, const float *x, const float *W, const float *b,
                   float *y) {
    const fp8_mat *q8 = f8 ? fp8_find(f8, (size_t)(W - m->w)) : NULL;
    if (q8) {
        int tid = omp_in_parallel() ? omp_get_thread_num() : 0;
        qn_fp8_matmul(&q8->sh, x, T, q8->q, q8->s, y,
                      ws->fp8_scratch + (size_t)tid * ws->fp8_scratch_floats);
    } else {
        gemv_or_gemm(T, IN, O, x, W, y);
    }
    if (b)
        for (int64_t t = 0; t < T; t++)
            for (int64_t o = 0; o < O; o++) y[t * O + o] += b[o];
}

/* The projections of one stage that read the same input (q/k/v; gate/up): at T = 1 with
 * fp32 weights one GEMV group, otherwise one linear() each. */
static void linear_group(const qn_model *m, const qn_model_fp8 *f8, qn_infer_ws *ws, int64_t T,
                         int64_t IN, const float *x, int n, const float *const *W,
                         const float *const *b, const int64_t *O, float *const *y) {
    int grouped = T == 1 && !omp_in_parallel() && omp_get_max_threads() > 1;
    for (int i = 0; i < n && grouped; i++)
        if (f8 && fp8_find(f8, (size_t)(W[i] - m->w))) grouped = 0;
    if (!grouped) {
        for (int i = 0; i < n; i++) linear(m, f8, ws, T, IN, O[i], x, W[i], b[i], y[i]);
        return;
    }
    gemv_job jobs[QN_GEMV_MAX_JOBS];
    for (int i = 0; i < n; i++) jobs[i] = (gemv_job){W[i], O[i], y[i]};
    gemv_group(jobs, n, IN, x);
    for (int i = 0; i < n; i++)
        if (b[i])
            for (int64_t o = 0; o < O[i]; o++) y[i][o] += b[i][o];
}

/* ------------------------------------------------------------------ paged attention */

/* One task of paged_attention: the G query heads of kv head gk for token t, over positions
 * 0..last through the block table. Built twice (target_clones): for x86-64-v3 (AVX2 + FMA:
 * 8-wide dot products and value updates) and for the baseline the binary targets; the
 * loader picks one per machine, so a machine always computes the same bits. */
__attribute__((target_clones("arch=x86-64-v3", "default"))) static void
attend_task(const float *qg, const float *kbase, const float *vbase, size_t bf,
            const int32_t *blocks, int64_t last, int64_t G, int64_t HD, int64_t KD, int64_t B,
            float scale, float *out) {
    float mx[64], den[64], sc[64 * 64];
    float acc[64 * 256];
    /* G <= 64 and HD <= 256 are checked at workspace time (qn_model_infer) */
    for (int64_t g = 0; g < G; g++) {
        mx[g] = -INFINITY;
        den[g] = 0.0f;
        memset(acc + g * HD, 0, (size_t)HD * sizeof(float));
    }
    for (int64_t p0 = 0; p0 <= last; p0 += B) {
        int64_t n = last - p0 + 1 < B ? last - p0 + 1 : B;
        size_t blk = (size_t)blocks[p0 / B];
        const float *kb = kbase + blk * bf;
        const float *vb = vbase + blk * bf;
        for (int64_t g = 0; g < G; g++) {
            const float *qh = qg + g * HD;
            float bmax = -INFINITY;
            for (int64_t j = 0; j < n; j++) {
                const float *kr = kb + j * KD;
                float s = 0.0f;
#pragma omp simd reduction(+ : s)
                for (int64_t e = 0; e < HD; e++) s += qh[e] * kr[e];
                s *= scale;
                sc[g * 64 + j] = s;
                if (s > bmax) bmax = s;
            }
            float nm = bmax > mx[g] ? bmax : mx[g];
            float corr = expf(mx[g] - nm); /* exp(-inf) = 0 on the first block */
            den[g] *= corr;
            float *ah = acc + g * HD;
#pragma omp simd
            for (int64_t e = 0; e < HD; e++) ah[e] *= corr;
            for (int64_t j = 0; j < n; j++) {
                float w = expf(sc[g * 64 + j] - nm);
                den[g] += w;
                const float *vr = vb + j * KD;
#pragma omp simd
                for (int64_t e = 0; e < HD; e++) ah[e] += w * vr[e];
            }
            mx[g] = nm;
        }
    }
    for (int64_t g = 0; g < G; g++)
        for (int64_t e = 0; e < HD; e++) out[g * HD + e] = acc[g * HD + e] / den[g];
}

/* att[t] for every chunk token: causal attention of q[t] over positions [0, pos[t]] of its
 * sequence, K/V read through the block table. Task = (token, kv head); the NH/NKV query
 * heads of the group share each K/V row read. */
static void paged_attention(const qn_model_desc *d, const qn_kv_view *kv, int64_t layer,
                            const qn_infer_ws *ws, const qn_infer_chunk *chunks, int64_t T,
                            float *att) {
    const int64_t NH = d->n_heads, NKV = d->n_kv_heads, HD = d->head_dim, G = NH / NKV;
    const int64_t KD = NKV * HD, QD = NH * HD, B = kv->block_size;
    const size_t bf = qn_infer_block_floats(d, kv->block_size);
    const float *kbase = kv->arena + (size_t)(2 * layer) * (size_t)(B * KD);
    const float *vbase = kbase + (size_t)(B * KD);
    const float scale = 1.0f / sqrtf((float)HD);
    const int64_t ntask = T * NKV;
#pragma omp parallel for schedule(dynamic, 1) if (ntask > 1)
    for (int64_t task = 0; task < ntask; task++) {
        int64_t t = task / NKV, gk = task % NKV;
        const qn_infer_chunk *c = &chunks[ws->tok_chunk[t]];
        attend_task(ws->q + t * QD + gk * G * HD, kbase + gk * HD, vbase + gk * HD, bf,
                    c->blocks, ws->pos[t], G, HD, KD, B, scale, att + t * QD + gk * G * HD);
    }
}

/* ------------------------------------------------------------------ MLP and MoE */

static void swiglu_rows(int64_t n, const float *g, const float *u, float *out) {
    qn_swiglu_forward(out, g, u, 1, (int)n, (int)n);
}

/* out[T,H] (=) dense SwiGLU of h */
static void mlp(const qn_model *m, const qn_model_fp8 *f8, qn_infer_ws *ws, int64_t T, int64_t H,
                int64_t NI, const float *h, const float *Wg, const float *Wu, const float *Wd,
                float *g, float *u, float *out) {
    linear_group(m, f8, ws, T, H, h, 2, (const float *const[]){Wg, Wu},
                 (const float *const[]){NULL, NULL}, (const int64_t[]){NI, NI},
                 (float *const[]){g, u});
    swiglu_rows(T * NI, g, u, g);
    linear(m, f8, ws, T, NI, H, g, Wd, NULL, out);
}

/* out[T,H] (=) shared experts + routed experts of h */
static void moe(const qn_model *m, const qn_model_fp8 *f8, qn_infer_ws *ws,
                const qn_layer_params *p, int64_t T, const float *h, float *out) {
    const qn_model_desc *d = &m->d;
    const int64_t H = d->hidden, MI = d->moe_intermediate, E = d->n_experts, K = d->top_k;
    const int64_t SHI = MI * d->n_shared_experts;
    qn_router_cfg rc = qn_model_router_cfg(d, p);
    qn_router_forward(&rc, ws->sel, ws->wts, ws->scores, h, p->router, (int)T, (int)H);
    /* counting sort of the (token, k) slots by expert, tokens in order within an expert */
    memset(ws->offsets, 0, (size_t)(E + 1) * sizeof(int32_t));
    for (int64_t i = 0; i < T * K; i++) ws->offsets[ws->sel[i] + 1]++;
    for (int64_t e = 0; e < E; e++) ws->offsets[e + 1] += ws->offsets[e];
    int32_t na = 0;
    for (int64_t e = 0; e < E; e++)
        if (ws->offsets[e + 1] > ws->offsets[e]) ws->active[na++] = (int32_t)e;
    {
        int32_t *fill = ws->tok_slot; /* reuse as cursor first, then the map */
        int32_t cur[1024];
        for (int64_t e = 0; e < E; e++) cur[e] = ws->offsets[e];
        for (int64_t i = 0; i < T * K; i++) {
            int32_t slot = cur[ws->sel[i]]++;
            ws->slot_tok[slot] = (int32_t)(i / K);
            fill[i] = slot;
        }
    }
    for (int64_t s = 0; s < T * K; s++)
        memcpy(ws->xs + s * H, h + (int64_t)ws->slot_tok[s] * H, (size_t)H * sizeof(float));
    /* experts: one per thread when there are several, each on single-threaded BLAS. For a
     * single token the shared expert is one more task of the same loop (its GEMVs are as
     * small as a routed expert's; a parallel region of its own would cost more than it
     * reads); for a batch it runs after, on threaded GEMMs. */
    int shared_in_loop = SHI > 0 && T == 1;
    int32_t ntask = na + shared_in_loop;
    int par = ntask > 1 && omp_get_max_threads() > 1;
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int32_t a = 0; a < ntask; a++) {
        if (a == na) {
            mlp(m, f8, ws, T, H, SHI, h, p->s_gate, p->s_up, p->s_down, ws->g, ws->u, out);
            continue;
        }
        int64_t e = ws->active[a];
        int64_t s0 = ws->offsets[e], n = ws->offsets[e + 1] - s0;
        const float *Wg = p->e_gate + e * MI * H, *Wu = p->e_up + e * MI * H;
        const float *Wd = p->e_down + e * H * MI;
        mlp(m, f8, ws, n, H, MI, ws->xs + s0 * H, Wg, Wu, Wd, ws->eg + s0 * MI, ws->eu + s0 * MI,
            ws->ys + s0 * H);
    }
    if (SHI > 0 && !shared_in_loop)
        mlp(m, f8, ws, T, H, SHI, h, p->s_gate, p->s_up, p->s_down, ws->g, ws->u, out);
    else if (SHI == 0)
        memset(out, 0, (size_t)(T * H) * sizeof(float));
    for (int64_t t = 0; t < T; t++) {
        float *o = out + t * H;
        for (int64_t k = 0; k < K; k++) {
            float w = ws->wts[t * K + k];
            const float *y = ws->ys + (int64_t)ws->tok_slot[t * K + k] * H;
            for (int64_t c = 0; c < H; c++) o[c] += w * y[c];
        }
    }
}

/* ------------------------------------------------------------------ driver */

static qn_status check_call(const qn_model *m, const qn_infer_ws *ws, const qn_kv_view *kv,
                            const int32_t *tokens, int64_t T, const qn_infer_chunk *chunks,
                            int32_t n_chunks) {
    const qn_model_desc *d = &m->d;
    if (T < 1 || T > ws->max_tokens || n_chunks < 1 || n_chunks > ws->max_chunks)
        return qn_fail(QN_ERR_RANGE, "infer: %lld tokens in %d chunks exceed the workspace "
                       "(%lld, %d)", (long long)T, n_chunks, (long long)ws->max_tokens,
                       ws->max_chunks);
    if (d->n_heads / d->n_kv_heads > 64 || d->head_dim > 256 || d->n_experts > 1024)
        return qn_fail(QN_ERR_UNSUPPORTED, "infer: more than 64 query heads per kv head, head "
                       "dim > 256 or > 1024 experts");
    if (!kv || !kv->arena || kv->block_size < 1 || kv->block_size > 64)
        return qn_fail(QN_ERR_INVALID, "infer: KV view without memory or block size outside "
                       "[1, 64]");
    int64_t sum = 0;
    for (int32_t c = 0; c < n_chunks; c++) {
        const qn_infer_chunk *ch = &chunks[c];
        if (ch->n < 1 || ch->pos0 < 0 || ch->pos0 + ch->n > ws->max_context || !ch->blocks)
            return qn_fail(QN_ERR_RANGE, "infer: chunk %d (positions %lld..%lld) outside the "
                           "context of %lld", c, (long long)ch->pos0,
                           (long long)(ch->pos0 + ch->n - 1), (long long)ws->max_context);
        int64_t nb = (ch->pos0 + ch->n + kv->block_size - 1) / kv->block_size;
        for (int64_t b = 0; b < nb; b++)
            if (ch->blocks[b] < 0 || ch->blocks[b] >= kv->n_blocks)
                return qn_fail(QN_ERR_RANGE, "infer: chunk %d: block %d outside the cache", c,
                               ch->blocks[b]);
        sum += ch->n;
    }
    if (sum != T)
        return qn_fail(QN_ERR_INVALID, "infer: chunks hold %lld tokens, not %lld",
                       (long long)sum, (long long)T);
    for (int64_t t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= d->vocab)
            return qn_fail(QN_ERR_RANGE, "infer: token %d outside the vocabulary [0, %lld)",
                           tokens[t], (long long)d->vocab);
    return QN_OK;
}

qn_status qn_model_infer(const qn_model *m, const qn_model_fp8 *f8, qn_infer_ws *ws,
                         const qn_kv_view *kv, const int32_t *tokens, int64_t T,
                         const qn_infer_chunk *chunks, int32_t n_chunks, float *logits) {
    QN_CHECK(check_call(m, ws, kv, tokens, T, chunks, n_chunks));
    const qn_model_desc *d = &m->d;
    const int64_t H = d->hidden, NH = d->n_heads, NKV = d->n_kv_heads, HD = d->head_dim;
    const int64_t QD = NH * HD, KD = NKV * HD, B = kv->block_size;
    const size_t bf = qn_infer_block_floats(d, kv->block_size);
    int64_t t = 0;
    for (int32_t c = 0; c < n_chunks; c++)
        for (int32_t i = 0; i < chunks[c].n; i++, t++) {
            ws->pos[t] = (int32_t)(chunks[c].pos0 + i);
            ws->tok_chunk[t] = c;
        }
    float *x = ws->x;
    for (t = 0; t < T; t++)
        memcpy(x + t * H, m->gw.embed + (int64_t)tokens[t] * H, (size_t)H * sizeof(float));
    for (int64_t l = 0; l < d->n_layers; l++) {
        const qn_layer_params *p = &m->lw[l];
        /* ws->att doubles as the rstd buffer of the norms before it is written */
        qn_rmsnorm_forward(ws->h, ws->att, x, p->in_norm, (float)d->rms_eps, (int)T, (int)H);
        linear_group(m, f8, ws, T, H, ws->h, 3, (const float *const[]){p->wq, p->wk, p->wv},
                     (const float *const[]){p->bq, p->bk, p->bv},
                     (const int64_t[]){QD, KD, KD}, (float *const[]){ws->q, ws->k, ws->v});
        if (d->qk_norm) {
            /* in place: rmsnorm reads a row fully before writing it */
            qn_rmsnorm_forward(ws->q, ws->att, ws->q, p->q_norm, (float)d->rms_eps,
                               (int)(T * NH), (int)HD);
            qn_rmsnorm_forward(ws->k, ws->att, ws->k, p->k_norm, (float)d->rms_eps,
                               (int)(T * NKV), (int)HD);
        }
        if (d->rot_dim > 0) {
            qn_rope_forward(ws->q, ws->pos, ws->rope_cos, ws->rope_sin, (int)T, (int)NH, (int)HD,
                            (int)d->rot_dim);
            qn_rope_forward(ws->k, ws->pos, ws->rope_cos, ws->rope_sin, (int)T, (int)NKV,
                            (int)HD, (int)d->rot_dim);
        }
        /* K/V of the chunk tokens into their slots */
        for (t = 0; t < T; t++) {
            const qn_infer_chunk *c = &chunks[ws->tok_chunk[t]];
            int64_t pos = ws->pos[t];
            size_t blk = (size_t)c->blocks[pos / B];
            float *kb = kv->arena + blk * bf + (size_t)(2 * l) * (size_t)(B * KD);
            memcpy(kb + (pos % B) * KD, ws->k + t * KD, (size_t)KD * sizeof(float));
            memcpy(kb + B * KD + (pos % B) * KD, ws->v + t * KD, (size_t)KD * sizeof(float));
        }
        paged_attention(d, kv, l, ws, chunks, T, ws->att);
        linear(m, f8, ws, T, QD, H, ws->att, p->wo, p->bo, ws->tmp);
        for (int64_t i = 0; i < T * H; i++) x[i] += ws->tmp[i];
        qn_rmsnorm_forward(ws->h, ws->att, x, p->post_norm, (float)d->rms_eps, (int)T, (int)H);
        if (qn_model_layer_is_moe(d, l))
            moe(m, f8, ws, p, T, ws->h, ws->tmp);
        else
            mlp(m, f8, ws, T, H, d->intermediate, ws->h, p->w_gate, p->w_up, p->w_down, ws->g,
                ws->u, ws->tmp);
        for (int64_t i = 0; i < T * H; i++) x[i] += ws->tmp[i];
    }
    /* final norm and the head, only at the rows asked for */
    int64_t R = 0, end = 0;
    for (int32_t c = 0; c < n_chunks; c++) {
        end += chunks[c].n;
        if (chunks[c].logits)
            memcpy(ws->hrows + (R++) * H, x + (end - 1) * H, (size_t)H * sizeof(float));
    }
    if (R == 0) return QN_OK;
    qn_rmsnorm_forward(ws->hrows, ws->att, ws->hrows, m->gw.final_norm, (float)d->rms_eps, (int)R,
                       (int)H);
    const float *head = m->gw.lm_head ? m->gw.lm_head : m->gw.embed;
    gemv_or_gemm(R, H, d->vocab, ws->hrows, head, logits);
    return QN_OK;
}

/* ------------------------------------------------------------------ bytes per step */

double qn_infer_weight_bytes(const qn_model_desc *d, int fp8, int32_t bm, int32_t bn,
                             int64_t experts_touched, int64_t batch) {
    const double H = (double)d->hidden, QD = (double)(d->n_heads * d->head_dim);
    const double KD = (double)(d->n_kv_heads * d->head_dim);
    /* bytes of a projection [r, c]: fp32, or e4m3 plus the fp32 tile scales */
#define PROJ(r, c)                                                                              \
    (fp8 ? (double)(r) * (double)(c) +                                                         \
               4.0 * ceil((double)(r) / (bm > 0 ? bm : 1)) * ceil((double)(c) / (bn > 0 ? bn : 1)) \
         : 4.0 * (double)(r) * (double)(c))
    double bytes = 0;
    for (int64_t l = 0; l < d->n_layers; l++) {
        bytes += 4.0 * 2 * H; /* the two norms */
        bytes += PROJ(QD, H) + 2 * PROJ(KD, H) + PROJ(H, QD);
        if (d->qkv_bias) bytes += 4.0 * (QD + 2 * KD);
        if (d->o_bias) bytes += 4.0 * H;
        if (d->qk_norm) bytes += 4.0 * 2 * (double)d->head_dim;
        if (qn_model_layer_is_moe(d, l)) {
            double MI = (double)d->moe_intermediate, SHI = MI * (double)d->n_shared_experts;
            int64_t ex = experts_touched < d->n_experts ? experts_touched : d->n_experts;
            bytes += 4.0 * (double)d->n_experts * H; /* router */
            if (d->has_score_bias) bytes += 4.0 * (double)d->n_experts;
            bytes += (double)ex * 3 * PROJ(MI, H);
            if (SHI > 0) bytes += 3 * PROJ(SHI, H);
        } else {
            bytes += 3 * PROJ((double)d->intermediate, H);
        }
    }
#undef PROJ
    bytes += 4.0 * H;                           /* final norm */
    bytes += 4.0 * (double)d->vocab * H;        /* LM head (or the tied embedding) */
    bytes += 4.0 * (double)batch * H;           /* embedding rows */
    return bytes;
}
