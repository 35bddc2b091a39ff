/* test_cuda_lpmoe_host.c — the host-side logic of the CUDA log-prob, loss
 * and MoE ops, which runs without a GPU: vocabulary chunk planning and
 * scratch sizes (logprob_plan.c), the loss's configuration/argument checks
 * and error translation against trainer/loss.c's own (loss_host.c), router
 * and MoE shape checks, scratch sizes and the activation layout
 * (moe_plan.c), and, in CUDA builds, that the public ops refuse bad shapes
 * before touching a device (they are called with no context at all). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops/cuda/logprob.h"
#include "core/ops/cuda/loss.h"
#include "core/ops/cuda/moe.h"
#include "trainer/loss.h"

/* ------------------------------------------------------------- log-prob plan */

/* The plan's invariants for one shape, checked by walking the chunks the way
 * logprob.cu does. */
static void check_plan(qn_dtype dt, int N, int C, int V, int chunk) {
    qn_cuda_logprob_plan p;
    assert_int_equal(qn_cuda_logprob_plan_make(dt, N, C, V, 1.0f, chunk, &p), QN_OK);
    if (N == 0) {
        assert_int_equal(p.nblocks, 0);
        assert_true(p.fwd_bytes == 0 && p.bwd_bytes == 0);
        return;
    }
    assert_true(p.rows >= 1 && p.rows <= QN_CUDA_LOGPROB_ROWS && p.rows <= N);
    assert_true((long long)p.nblocks * p.rows >= N && (long long)(p.nblocks - 1) * p.rows < N);
    assert_true(p.chunk >= 1 && p.chunk <= chunk && p.chunk <= V);
    int cols = 0, seen = 0;
    for (int ci = 0; ci < p.nchunks; ci++) {
        int v0 = ci * p.chunk, vc = V - v0 < p.chunk ? V - v0 : p.chunk;
        assert_true(vc >= 1);
        cols += vc;
        seen++;
        if (ci == p.nchunks - 1) assert_int_equal(vc, p.last_chunk);
    }
    assert_int_equal(cols, V);
    assert_int_equal(seen, p.nchunks);
    int rows = 0;
    for (int b = 0; b < p.nblocks; b++) {
        int n0 = b * p.rows, nb = N - n0 < p.rows ? N - n0 : p.rows;
        assert_true(nb >= 1);
        rows += nb;
    }
    assert_int_equal(rows, N);
    /* scratch holds at least the logits block (and more for bf16's backward) */
    size_t z = (size_t)p.rows * p.chunk * sizeof(float);
    assert_true(p.fwd_bytes >= z + (size_t)p.rows * 4 * sizeof(double));
    assert_true(p.bwd_bytes >= z);
    if (dt == QN_DTYPE_BF16)
        assert_true(p.bwd_bytes >= z + (size_t)p.rows * p.chunk * 2 + (size_t)p.rows * C * 4);
    assert_int_equal(p.fwd_bytes % 256, 0);
    assert_int_equal(p.bwd_bytes % 256, 0);
}

static void test_logprob_plan(void **state) {
    const qn_dtype dts[] = {QN_DTYPE_F32, QN_DTYPE_BF16};
    for (int d = 0; d < 2; d++) {
        check_plan(dts[d], 1, 8, 100, 32);            /* V not a multiple of the chunk, N = 1 */
        check_plan(dts[d], 7, 16, 64, 64);            /* one exact chunk */
        check_plan(dts[d], 7, 16, 50, 64);            /* chunk larger than V */
        check_plan(dts[d], 0, 16, 50, 8);             /* N = 0 */
        check_plan(dts[d], 2500, 64, 1000, 7);        /* several row blocks, odd chunk */
        check_plan(dts[d], 4096, 4096, 151552, 8192); /* GLM-4.5-like */
        check_plan(dts[d], QN_CUDA_LOGPROB_ROWS, 8, 3, 1);
        check_plan(dts[d], QN_CUDA_LOGPROB_ROWS + 1, 8, 3, 2);
    }
}

static void test_logprob_plan_refuses(void **state) {
    qn_cuda_logprob_plan p;
    assert_int_equal(qn_cuda_logprob_plan_make(QN_DTYPE_F16, 4, 8, 16, 1.0f, 4, &p),
                     QN_ERR_UNSUPPORTED);
    assert_non_null(strstr(qn_last_error(), "F16"));
    assert_int_equal(qn_cuda_logprob_plan_make(QN_DTYPE_F8_E4M3, 4, 8, 16, 1.0f, 4, &p),
                     QN_ERR_UNSUPPORTED);
    struct {
        int N, C, V, chunk;
        float temp;
        const char *word;
    } bad[] = {
        {-1, 8, 16, 4, 1.0f, "N"},
        {4, 0, 16, 4, 1.0f, "C"},
        {4, 8, 0, 4, 1.0f, "V"},
        {4, 8, 16, 0, 1.0f, "chunk"},
        {4, 8, 16, -3, 1.0f, "chunk"},
        {4, 8, 16, QN_CUDA_LOGPROB_MAX_CHUNK + 1, 1.0f, "chunk"},
        {4, 8, 16, 4, 0.0f, "temperature"},
        {4, 8, 16, 4, -1.0f, "temperature"},
        {4, 8, 16, 4, NAN, "temperature"},
        {4, 8, 16, 4, INFINITY, "temperature"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(qn_cuda_logprob_plan_make(QN_DTYPE_F32, bad[i].N, bad[i].C, bad[i].V,
                                                   bad[i].temp, bad[i].chunk, &p),
                         QN_ERR_INVALID);
        assert_non_null(strstr(qn_last_error(), bad[i].word));
    }
    assert_int_equal(qn_cuda_logprob_plan_make(QN_DTYPE_F32, 4, 8, 16, 1.0f, 4, NULL),
                     QN_ERR_INVALID);
}

/* --------------------------------------------------------------------- loss */

static qn_cuda_loss_cfg to_cuda(const qn_loss_cfg *c) {
    qn_cuda_loss_cfg g = {
        .type = (int)c->type,
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
        .per_token_loss = c->per_token_loss,
    };
    return g;
}

static qn_loss_cfg base_cfg(void) {
    qn_loss_cfg c = {.type = QN_LOSS_POLICY,
                     .eps_clip = 0.2,
                     .eps_clip_high = 0.28,
                     .kl_type = QN_KL_LOW_VAR,
                     .tis_clip = 2.0,
                     .tis_clip_low = 0.0};
    return c;
}

static void test_loss_enums_match(void **state) {
    assert_int_equal(QN_CUDA_LOSS_POLICY, QN_LOSS_POLICY);
    assert_int_equal(QN_CUDA_LOSS_SFT, QN_LOSS_SFT);
    assert_int_equal(QN_CUDA_KL_K1, QN_KL_K1);
    assert_int_equal(QN_CUDA_KL_K2, QN_KL_K2);
    assert_int_equal(QN_CUDA_KL_K3, QN_KL_K3);
    assert_int_equal(QN_CUDA_KL_LOW_VAR, QN_KL_LOW_VAR);
}

/* Every configuration is accepted or refused exactly as the CPU does, with
 * the same message. */
static void test_loss_cfg_check_matches_cpu(void **state) {
    qn_loss_cfg cs[32];
    int n = 0;
    cs[n++] = base_cfg();
    for (int i = 0; i < 14; i++) {
        qn_loss_cfg c = base_cfg();
        switch (i) {
        case 0:
            c.eps_clip = -0.1;
            break;
        case 1:
            c.eps_clip = 1.5;
            break;
        case 2:
            c.eps_clip = NAN;
            break;
        case 3:
            c.eps_clip_high = -1;
            break;
        case 4:
            c.eps_clip_high = INFINITY;
            break;
        case 5:
            c.eps_clip_c = 0.5;
            break;
        case 6:
            c.eps_clip_c = 3.0;
            break;
        case 7:
            c.kl_loss_coef = NAN;
            break;
        case 8:
            c.entropy_coef = INFINITY;
            break;
        case 9:
            c.kl_type = (qn_kl_type)9;
            break;
        case 10:
            c.use_tis = true, c.tis_clip_low = 3.0;
            break;
        case 11:
            c.use_tis = true, c.tis_clip = INFINITY;
            break;
        case 12:
            c.type = (qn_loss_type)5;
            break;
        case 13:
            c.use_tis = true, c.tis_clip_low = 0.5;
            break;
        }
        cs[n++] = c;
    }
    int refused = 0;
    for (int i = 0; i < n; i++) {
        qn_status want = qn_loss_cfg_check(&cs[i]);
        char msg[512];
        snprintf(msg, sizeof msg, "%s", qn_last_error());
        qn_cuda_loss_cfg g = to_cuda(&cs[i]);
        qn_clear_error();
        qn_status got = qn_cuda_loss_cfg_check(&g);
        assert_int_equal(got, want);
        if (want != QN_OK) {
            assert_string_equal(qn_last_error(), msg);
            refused++;
        }
    }
    assert_true(refused >= 10); /* the variations really were bad ones */
}

/* Missing arrays and bad normalisers: the same refusals as qn_loss_compute. */
static void test_loss_check_matches_cpu(void **state) {
    int64_t cu[3] = {0, 2, 3};
    float v[3] = {-0.5f, -1.0f, -0.25f}, adv[3] = {1, 1, -1};
    for (int i = 0; i < 7; i++) {
        qn_loss_cfg c = base_cfg();
        qn_loss_batch b = {.n_samples = 2, .cu_tokens = cu, .logp = v, .advantage = adv};
        qn_loss_norm nm = {.n_samples = 2, .n_tokens = 3};
        switch (i) {
        case 0:
            break;
        case 1:
            b.advantage = NULL;
            break;
        case 2:
            c.use_kl_loss = true;
            break;
        case 3:
            c.use_tis = true;
            break;
        case 4:
            c.use_rollout_logprobs = true;
            break;
        case 5:
            c.entropy_coef = 0.01;
            break;
        case 6:
            nm.n_samples = 0;
            break;
        }
        double dl[3];
        qn_status want = qn_loss_compute(&c, &b, &nm, dl, NULL, NULL);
        char msg[512];
        snprintf(msg, sizeof msg, "%s", qn_last_error());
        qn_cuda_loss_cfg g = to_cuda(&c);
        qn_cuda_loss_batch gb = {.n_samples = b.n_samples,
                                 .n_tokens = 3,
                                 .cu_tokens = b.cu_tokens,
                                 .logp = b.logp,
                                 .advantage = b.advantage};
        qn_clear_error();
        qn_status got = qn_cuda_loss_check(&g, &gb, nm.n_samples, nm.n_tokens);
        assert_int_equal(got, want);
        if (want != QN_OK) assert_string_equal(qn_last_error(), msg);
    }
    /* SFT needs no advantages; per-token loss checks the token count */
    qn_cuda_loss_cfg g = to_cuda(&(qn_loss_cfg){.type = QN_LOSS_SFT, .per_token_loss = true});
    qn_cuda_loss_batch gb = {.n_samples = 2, .n_tokens = 3, .cu_tokens = cu, .logp = v};
    assert_int_equal(qn_cuda_loss_check(&g, &gb, 2, 3), QN_OK);
    assert_int_equal(qn_cuda_loss_check(&g, &gb, 2, 0), QN_ERR_INVALID);
    gb.n_tokens = -1;
    assert_int_equal(qn_cuda_loss_check(&g, &gb, 2, 3), QN_ERR_INVALID);
}

/* The device's error record becomes the CPU's status and message. */
static void test_loss_out_status_matches_cpu(void **state) {
    qn_cuda_loss_out o;
    memset(&o, 0, sizeof o);
    o.bad_cu_sample = o.bad_sample = o.bad_token = o.bad_what = -1;
    assert_int_equal(qn_cuda_loss_out_status(&o), QN_OK);

    /* a NaN advantage at sample 1, token 2 */
    int64_t cu[3] = {0, 2, 5};
    float lp[5] = {-1, -1, -1, -1, -1}, adv[5] = {1, 1, 1, 1, 1};
    adv[4] = NAN;
    qn_loss_cfg c = base_cfg();
    qn_loss_batch b = {.n_samples = 2, .cu_tokens = cu, .logp = lp, .advantage = adv};
    qn_loss_norm nm = {.n_samples = 2, .n_tokens = 5};
    double dl[5];
    assert_int_equal(qn_loss_compute(&c, &b, &nm, dl, NULL, NULL), QN_ERR_RANGE);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", qn_last_error());
    o.bad_sample = 1;
    o.bad_token = 2;
    o.bad_what = QN_CUDA_LOSS_BAD_ADVANTAGE;
    o.bad_value = NAN;
    assert_int_equal(qn_cuda_loss_out_status(&o), QN_ERR_RANGE);
    assert_string_equal(qn_last_error(), msg);

    /* a decreasing cu_tokens at sample 1 */
    int64_t cu2[3] = {0, 3, 2};
    b.cu_tokens = cu2;
    adv[4] = 1;
    assert_int_equal(qn_loss_compute(&c, &b, &nm, dl, NULL, NULL), QN_ERR_INVALID);
    snprintf(msg, sizeof msg, "%s", qn_last_error());
    memset(&o, 0, sizeof o);
    o.bad_sample = o.bad_token = o.bad_what = -1;
    o.bad_cu_sample = 1;
    assert_int_equal(qn_cuda_loss_out_status(&o), QN_ERR_INVALID);
    assert_string_equal(qn_last_error(), msg);
    assert_int_equal(qn_cuda_loss_out_status(NULL), QN_ERR_INVALID);
}

/* ---------------------------------------------------------------- router/MoE */

static void test_router_check(void **state) {
    qn_router_cfg glm = {.E = 128,
                         .K = 8,
                         .n_group = 1,
                         .topk_group = 1,
                         .score = QN_ROUTER_SIGMOID,
                         .norm_topk_prob = 1,
                         .routed_scaling_factor = 1.0f};
    assert_int_equal(qn_cuda_router_check(&glm, 4096), QN_OK);
    qn_router_cfg dsv3 = glm;
    dsv3.E = 256, dsv3.n_group = 8, dsv3.topk_group = 4, dsv3.routed_scaling_factor = 2.5f;
    assert_int_equal(qn_cuda_router_check(&dsv3, 1), QN_OK);
    qn_router_cfg qwen = glm;
    qwen.score = QN_ROUTER_SOFTMAX, qwen.norm_topk_prob = 0;
    assert_int_equal(qn_cuda_router_check(&qwen, 0), QN_OK);
    for (int i = 0; i < 12; i++) {
        qn_router_cfg c = dsv3;
        int T = 3;
        const char *word = "";
        switch (i) {
        case 0:
            c.E = 0, word = "E";
            break;
        case 1:
            c.E = QN_ROUTER_MAX_E + 8, c.n_group = 1, word = "E";
            break;
        case 2:
            c.K = 0, word = "K";
            break;
        case 3:
            c.E = 4, c.n_group = 1, c.K = 5, word = "K";
            break;
        case 4:
            c.K = QN_ROUTER_MAX_K + 1, word = "K";
            break;
        case 5:
            c.n_group = 7, word = "n_group";
            break;
        case 6:
            c.n_group = 256, word = "n_group";
            break; /* groups of 1 */
        case 7:
            c.topk_group = 0, word = "topk_group";
            break;
        case 8:
            c.topk_group = 9, word = "topk_group";
            break;
        case 9:
            c.score = (qn_router_score)3, word = "scoring";
            break;
        case 10:
            c.routed_scaling_factor = NAN, word = "routed_scaling_factor";
            break;
        case 11:
            T = -1, word = "T";
            break;
        }
        assert_int_equal(qn_cuda_router_check(&c, T), QN_ERR_INVALID);
        assert_non_null(strstr(qn_last_error(), word));
    }
    assert_int_equal(qn_cuda_router_check(NULL, 1), QN_ERR_INVALID);
    assert_true(qn_cuda_router_scratch_bytes(QN_DTYPE_F32, 10, 16) >= 10 * 16 * 4);
    assert_true(qn_cuda_router_scratch_bytes(QN_DTYPE_BF16, 10, 16) >= 10 * 16 * 2);
    assert_int_equal(qn_cuda_router_scratch_bytes(QN_DTYPE_F32, 0, 16), 0);
}

static void test_moe_check(void **state) {
    assert_int_equal(qn_cuda_moe_check(QN_DTYPE_BF16, 4096, 4096, 1408, 128, 8), QN_OK);
    assert_int_equal(qn_cuda_moe_check(QN_DTYPE_F32, 0, 8, 8, 4, 2), QN_OK);
    assert_int_equal(qn_cuda_moe_check(QN_DTYPE_F16, 4, 8, 8, 4, 2), QN_ERR_UNSUPPORTED);
    assert_int_equal(qn_cuda_moe_check(QN_DTYPE_F32, -1, 8, 8, 4, 2), QN_ERR_INVALID);
    assert_int_equal(qn_cuda_moe_check(QN_DTYPE_F32, 4, 0, 8, 4, 2), QN_ERR_INVALID);
    assert_int_equal(qn_cuda_moe_check(QN_DTYPE_F32, 4, 8, 0, 4, 2), QN_ERR_INVALID);
    assert_int_equal(qn_cuda_moe_check(QN_DTYPE_F32, 4, 8, 8, 0, 1), QN_ERR_INVALID);
    assert_int_equal(qn_cuda_moe_check(QN_DTYPE_F32, 4, 8, 8, 4, 5), QN_ERR_INVALID);
    assert_int_equal(qn_cuda_moe_check(QN_DTYPE_F32, 4, 8, 8, 4, 0), QN_ERR_INVALID);
    assert_int_equal(qn_cuda_moe_check(QN_DTYPE_F32, 1 << 30, 8, 8, 64, 8), QN_ERR_INVALID);
    assert_non_null(strstr(qn_last_error(), "T*K"));
}

static void test_moe_layout(void **state) {
    const qn_dtype dts[] = {QN_DTYPE_F32, QN_DTYPE_BF16};
    const int shapes[][5] = {
        {1, 1, 8, 8, 4}, {5, 2, 24, 40, 8}, {37, 8, 64, 48, 128}, {4096, 8, 4096, 1408, 128}};
    for (int d = 0; d < 2; d++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int T = shapes[s][0], K = shapes[s][1], C = shapes[s][2], F = shapes[s][3];
            int E = shapes[s][4];
            size_t es = dts[d] == QN_DTYPE_BF16 ? 2 : 4, TK = (size_t)T * K;
            size_t bytes = qn_cuda_moe_acts_bytes(dts[d], T, K, C, F, E);
            char *base = (char *)(uintptr_t)0x100000; /* an address, never dereferenced */
            qn_cuda_moe_acts a;
            assert_int_equal(qn_cuda_moe_acts_carve(dts[d], base, bytes - 1, T, K, C, F, E, &a),
                             QN_ERR_INVALID);
            assert_int_equal(qn_cuda_moe_acts_carve(dts[d], base, bytes, T, K, C, F, E, &a), QN_OK);
            /* fields in order, aligned, each large enough, all inside the block */
            char *p[8] = {(char *)a.offsets, (char *)a.slot_tok, (char *)a.tok_slot, (char *)a.xs,
                          (char *)a.gate,    (char *)a.up,       (char *)a.act,      (char *)a.ys};
            size_t need[8] = {(size_t)(E + 1) * 4, TK * 4,      TK * 4,      TK * C * es,
                              TK * F * es,         TK * F * es, TK * F * es, TK * C * es};
            for (int i = 0; i < 8; i++) {
                assert_int_equal(((uintptr_t)p[i] - (uintptr_t)base) % 256, 0);
                char *end = i < 7 ? p[i + 1] : base + bytes;
                assert_true(p[i] + need[i] <= end);
            }
            size_t f = qn_cuda_moe_fwd_scratch_bytes(dts[d], T, K, C, F, E);
            size_t b = qn_cuda_moe_bwd_scratch_bytes(dts[d], T, K, C, F, E);
            /* the tile table: at most ceil(TK/64) + E tiles, two ints each */
            assert_true(f >= 2 * ((TK + 63) / 64 + (size_t)E) * 4);
            assert_true(b >= f + TK * C * (es + 4) + TK * F * (4 + 2 * es));
        }
    }
    qn_cuda_moe_acts a;
    assert_int_equal(qn_cuda_moe_acts_carve(QN_DTYPE_F32, NULL, 1 << 20, 1, 1, 8, 8, 4, &a),
                     QN_ERR_INVALID);
    assert_int_equal(qn_cuda_moe_fwd_scratch_bytes(QN_DTYPE_F32, 0, 8, 8, 8, 4), 0);
}

/* The public ops refuse bad shapes before touching a device: called with no
 * context, they must answer the shape error (CUDA builds) or "no device"
 * (QN_CUDA=OFF), never crash. */
static void test_ops_refuse_without_device(void **state) {
    float f[4] = {0};
    int32_t t[4] = {0};
    qn_router_cfg rc = {.E = 4, .K = 5, .score = QN_ROUTER_SIGMOID, .routed_scaling_factor = 1};
#ifdef QN_HAVE_CUDA
    const qn_status inval = QN_ERR_INVALID, unsup = QN_ERR_UNSUPPORTED;
#else
    const qn_status inval = QN_ERR_NO_DEVICE, unsup = QN_ERR_NO_DEVICE;
#endif
    assert_int_equal(
        qn_cuda_logprob_forward(NULL, QN_DTYPE_F32, f, f, f, f, f, t, f, 1, 4, 0, 1.0f, 4), inval);
    assert_int_equal(
        qn_cuda_logprob_forward(NULL, QN_DTYPE_F16, f, f, f, f, f, t, f, 1, 4, 4, 1.0f, 4), unsup);
    assert_int_equal(qn_cuda_logprob_backward(NULL, QN_DTYPE_F32, f, f, f, f, f, f, f, t, f, 1, 4,
                                              4, 0.0f, 4, 0),
                     inval);
    /* valid shapes, no context: refused as invalid, not dereferenced */
    assert_int_equal(
        qn_cuda_logprob_forward(NULL, QN_DTYPE_F32, f, f, f, f, f, t, f, 1, 4, 4, 1.0f, 4), inval);
    assert_int_equal(qn_cuda_router_forward(NULL, QN_DTYPE_F32, &rc, t, f, f, f, f, 1, 4), inval);
    assert_int_equal(qn_cuda_router_select(NULL, &rc, t, f, f, 1), inval);
    qn_cuda_moe_acts a = {0};
    assert_int_equal(
        qn_cuda_moe_forward(NULL, QN_DTYPE_F32, f, &a, f, t, f, f, f, f, 1, 4, 4, 4, 5, 0), inval);
    assert_int_equal(
        qn_cuda_moe_forward(NULL, QN_DTYPE_F32, f, &a, f, t, f, f, f, f, 1, 4, 4, 4, 2, 0),
        inval); /* acts not laid out / no context */
    qn_cuda_loss_cfg lc = {.type = QN_CUDA_LOSS_SFT, .eps_clip = 2.0};
    int64_t cu[2] = {0, 1};
    qn_cuda_loss_batch lb = {.n_samples = 1, .n_tokens = 1, .cu_tokens = cu, .logp = f};
#ifdef QN_HAVE_CUDA
    assert_int_equal(qn_cuda_loss_compute(NULL, &lc, &lb, 1, 1, f, NULL, NULL), QN_ERR_RANGE);
#else
    assert_int_equal(qn_cuda_loss_compute(NULL, &lc, &lb, 1, 1, f, NULL, NULL), QN_ERR_NO_DEVICE);
#endif
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logprob_plan),
        cmocka_unit_test(test_logprob_plan_refuses),
        cmocka_unit_test(test_loss_enums_match),
        cmocka_unit_test(test_loss_cfg_check_matches_cpu),
        cmocka_unit_test(test_loss_check_matches_cpu),
        cmocka_unit_test(test_loss_out_status_matches_cpu),
        cmocka_unit_test(test_router_check),
        cmocka_unit_test(test_moe_check),
        cmocka_unit_test(test_moe_layout),
        cmocka_unit_test(test_ops_refuse_without_device),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
