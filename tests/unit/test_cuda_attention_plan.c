/* test_cuda_attention_plan.c — the host side of the CUDA attention ops
 * (core/ops/cuda/attention.h), runnable without a GPU: which head dims and
 * dtypes are accepted, grid tile counts, shared-memory sizes against
 * Hopper's limits, flash-decoding split planning (coverage of the context,
 * split lengths, grid occupancy), scratch sizes, the cu_seqlens check, and
 * the public entry points refusing bad shapes before touching a device (in
 * CUDA and no-CUDA builds alike). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "core/ops/cuda/attention.h"

/* Opt-in shared memory per block on sm_90 (227 KiB) and the default limit. */
#define SMEM_MAX_SM90 (227u * 1024u)
#define SMEM_DEFAULT (48u * 1024u)

static void test_head_dims_and_dtypes(void **state) {
    qn_cuda_att_plan p;
    for (int hd = -8; hd <= 300; hd++) {
        qn_status s = qn_cuda_attention_plan(QN_DTYPE_BF16, 1, 64, 8, 2, hd, 64, &p);
        int ok = hd >= 8 && hd <= 256 && hd % 8 == 0;
        if (ok) {
            assert_int_equal(s, QN_OK);
            assert_int_equal(p.hd_path, (hd == 64 || hd == 128) ? hd : 0);
        } else {
            assert_int_equal(s, QN_ERR_UNSUPPORTED);
            assert_non_null(strstr(qn_last_error(), "head_dim"));
        }
    }
    assert_int_equal(qn_cuda_attention_plan(QN_DTYPE_F32, 1, 64, 8, 2, 128, 64, &p), QN_OK);
    const qn_dtype bad[] = {QN_DTYPE_F16, QN_DTYPE_F64, QN_DTYPE_F8_E4M3, QN_DTYPE_I32};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(qn_cuda_attention_plan(bad[i], 1, 64, 8, 2, 128, 64, &p),
                         QN_ERR_UNSUPPORTED);
        assert_non_null(strstr(qn_last_error(), "dtype"));
    }
}

static void test_bad_shapes(void **state) {
    qn_cuda_att_plan p;
    /* S, T, NH, NKV, HD, max_seqlen */
    const int bad[][6] = {
        {0, 64, 8, 2, 64, 64},     /* no sequences */
        {70000, 64, 8, 2, 64, 64}, /* S beyond grid.z */
        {1, -1, 8, 2, 64, 1},      /* negative T */
        {1, 64, 8, 3, 64, 64},     /* NKV does not divide NH */
        {1, 64, 0, 1, 64, 64},     /* no heads */
        {1, 64, 8, 0, 64, 64},     /* no kv heads */
        {1, 64, 8, 2, 64, 65},     /* max_seqlen > T */
        {1, 64, 8, 2, 64, 0},      /* max_seqlen 0 with tokens */
        {1, 64, 70000, 1, 64, 64}, /* NH beyond grid.y */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const int *b = bad[i];
        qn_status s = qn_cuda_attention_plan(QN_DTYPE_F32, b[0], b[1], b[2], b[3], b[4], b[5], &p);
        if (s != QN_ERR_INVALID) fail_msg("case %zu: status %d (%s)", i, s, qn_last_error());
        assert_true(strlen(qn_last_error()) > 0);
    }
    /* an empty batch is valid and launches nothing */
    assert_int_equal(qn_cuda_attention_plan(QN_DTYPE_F32, 3, 0, 8, 2, 64, 0, &p), QN_OK);
    assert_int_equal(p.q_tiles, 0);
}

static void test_tiles_and_smem(void **state) {
    qn_cuda_att_plan p;
    const int lens[] = {1, 15, 16, 17, 64, 129, 1000, 4096};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        int L = lens[i];
        assert_int_equal(qn_cuda_attention_plan(QN_DTYPE_BF16, 2, 2 * L, 32, 8, 128, L, &p), QN_OK);
        /* every query row is in exactly one tile */
        assert_true(p.q_tiles * QN_CUDA_ATT_BQ >= L);
        assert_true((p.q_tiles - 1) * QN_CUDA_ATT_BQ < L);
        assert_int_equal(p.k_tiles, p.q_tiles);
        assert_int_equal(p.bwd_scratch_bytes, sizeof(float) * 2 * L * 32);
    }
    size_t prev_f = 0, prev_q = 0, prev_k = 0;
    for (int hd = 8; hd <= 256; hd += 8) {
        assert_int_equal(qn_cuda_attention_plan(QN_DTYPE_F32, 1, 100, 4, 1, hd, 100, &p), QN_OK);
        assert_true(p.smem_fwd <= SMEM_MAX_SM90);
        assert_true(p.smem_dq <= SMEM_MAX_SM90);
        assert_true(p.smem_dkv <= SMEM_MAX_SM90);
        /* at least the Q tile and the K and V tiles in fp32 */
        assert_true(p.smem_fwd >= sizeof(float) * (size_t)hd *
                                      (QN_CUDA_ATT_BQ + 2 * QN_CUDA_ATT_BK));
        assert_true(p.smem_fwd > prev_f && p.smem_dq > prev_q && p.smem_dkv > prev_k);
        prev_f = p.smem_fwd, prev_q = p.smem_dq, prev_k = p.smem_dkv;
        if (hd <= 128) assert_true(p.smem_fwd <= SMEM_DEFAULT); /* the fast paths need no opt-in */
    }
}

static void test_seqlens(void **state) {
    int m = -1;
    const int32_t cu[] = {0, 17, 17, 81, 1081};
    assert_int_equal(qn_cuda_attention_seqlens(cu, 4, 1081, &m), QN_OK);
    assert_int_equal(m, 1000);
    assert_int_equal(qn_cuda_attention_seqlens(cu, 4, 1080, &m), QN_ERR_INVALID);
    const int32_t nz[] = {1, 5};
    assert_int_equal(qn_cuda_attention_seqlens(nz, 1, 5, &m), QN_ERR_INVALID);
    const int32_t dec[] = {0, 9, 4};
    assert_int_equal(qn_cuda_attention_seqlens(dec, 2, 4, &m), QN_ERR_INVALID);
    assert_non_null(strstr(qn_last_error(), "cu_seqlens[2]"));
    assert_int_equal(qn_cuda_attention_seqlens(NULL, 1, 0, &m), QN_ERR_INVALID);
}

static qn_cuda_paged_attn paged_shape(int T, int NH, int NKV, int HD, int B, int max_context) {
    qn_cuda_paged_attn a = {0};
    a.T = T, a.NH = NH, a.NKV = NKV, a.HD = HD;
    a.n_layers = 4, a.layer = 3, a.block_size = B, a.n_blocks = 1000;
    a.n_seqs = T > 0 ? T : 1;
    a.max_blocks = (max_context + B - 1) / B;
    a.max_context = max_context;
    return a;
}

static void check_paged_invariants(const qn_cuda_paged_attn *a, int sm, const qn_cuda_paged_plan *p) {
    int G = a->NH / a->NKV;
    assert_true(p->n_splits >= 1 && p->n_splits <= QN_CUDA_ATT_MAX_SPLITS);
    assert_int_equal(p->split_keys % QN_CUDA_ATT_BK, 0);
    /* the splits cover the context, and none is empty at the longest context */
    assert_true((int64_t)p->n_splits * p->split_keys >= a->max_context);
    assert_true((int64_t)(p->n_splits - 1) * p->split_keys < a->max_context);
    if (p->n_splits > 1) assert_true(p->split_keys >= QN_CUDA_ATT_MIN_SPLIT);
    assert_int_equal(p->head_passes, (G + QN_CUDA_ATT_BQ - 1) / QN_CUDA_ATT_BQ);
    assert_true(p->head_passes * QN_CUDA_ATT_BQ >= G);
    /* splitting stops once the grid has ~2 blocks per SM */
    int64_t blocks = (int64_t)a->T * a->NKV * p->head_passes;
    if (p->n_splits > 1) assert_true(blocks * (p->n_splits - 1) < 2 * (int64_t)sm);
    assert_int_equal(p->scratch_bytes, sizeof(float) * (size_t)a->T * a->NH * p->n_splits *
                                           (size_t)(a->HD + 2));
    assert_true(p->smem <= SMEM_MAX_SM90);
}

static void test_paged_plan(void **state) {
    qn_cuda_paged_plan p;
    /* GLM-4.5-355B: 96 heads over 8 kv heads, HD 128; decode at batch 1 over a long context:
     * the few blocks are split over the keys */
    qn_cuda_paged_attn a = paged_shape(1, 96, 8, 128, 16, 32768);
    assert_int_equal(qn_cuda_paged_attention_plan(QN_DTYPE_BF16, &a, 132, &p), QN_OK);
    assert_true(p.n_splits > 8);
    check_paged_invariants(&a, 132, &p);
    /* a large batch needs no split */
    a = paged_shape(256, 96, 8, 128, 16, 4096);
    assert_int_equal(qn_cuda_paged_attention_plan(QN_DTYPE_BF16, &a, 132, &p), QN_OK);
    assert_int_equal(p.n_splits, 1);
    check_paged_invariants(&a, 132, &p);
    /* short contexts are never split below MIN_SPLIT keys */
    a = paged_shape(1, 8, 8, 64, 16, 100);
    assert_int_equal(qn_cuda_paged_attention_plan(QN_DTYPE_F32, &a, 132, &p), QN_OK);
    assert_int_equal(p.n_splits, 1);
    check_paged_invariants(&a, 132, &p);
    /* a sweep of shapes and SM counts keeps every invariant */
    const int Ts[] = {1, 3, 64, 300}, Gs[] = {1, 4, 12, 17, 64}, ctx[] = {1, 31, 257, 5000, 131072};
    const int sms[] = {1, 78, 132};
    for (size_t i = 0; i < 4; i++)
        for (size_t j = 0; j < 5; j++)
            for (size_t k = 0; k < 5; k++)
                for (size_t s = 0; s < 3; s++) {
                    a = paged_shape(Ts[i], Gs[j] * 2, 2, 96, 64, ctx[k]);
                    assert_int_equal(qn_cuda_paged_attention_plan(QN_DTYPE_BF16, &a, sms[s], &p),
                                     QN_OK);
                    check_paged_invariants(&a, sms[s], &p);
                }
    /* sm_count <= 0 plans as for 132 SMs */
    qn_cuda_paged_plan p0;
    a = paged_shape(2, 32, 8, 128, 16, 20000);
    assert_int_equal(qn_cuda_paged_attention_plan(QN_DTYPE_BF16, &a, 0, &p0), QN_OK);
    assert_int_equal(qn_cuda_paged_attention_plan(QN_DTYPE_BF16, &a, 132, &p), QN_OK);
    assert_int_equal(p0.n_splits, p.n_splits);
    assert_int_equal(p0.split_keys, p.split_keys);
}

static void test_paged_refusals(void **state) {
    qn_cuda_paged_plan p;
    qn_cuda_paged_attn a = paged_shape(4, 32, 8, 128, 16, 1000);
    assert_int_equal(qn_cuda_paged_attention_plan(QN_DTYPE_BF16, &a, 132, &p), QN_OK);
    qn_cuda_paged_attn b = a;
    b.layer = 4;
    assert_int_equal(qn_cuda_paged_attention_plan(QN_DTYPE_BF16, &b, 132, &p), QN_ERR_INVALID);
    assert_non_null(strstr(qn_last_error(), "layer"));
    b = a, b.max_context = a.max_blocks * a.block_size + 1;
    assert_int_equal(qn_cuda_paged_attention_plan(QN_DTYPE_BF16, &b, 132, &p), QN_ERR_INVALID);
    assert_non_null(strstr(qn_last_error(), "max_context"));
    b = a, b.block_size = 0;
    assert_int_equal(qn_cuda_paged_attention_plan(QN_DTYPE_BF16, &b, 132, &p), QN_ERR_INVALID);
    b = a, b.NKV = 5;
    assert_int_equal(qn_cuda_paged_attention_plan(QN_DTYPE_BF16, &b, 132, &p), QN_ERR_INVALID);
    b = a, b.HD = 260;
    assert_int_equal(qn_cuda_paged_attention_plan(QN_DTYPE_BF16, &b, 132, &p), QN_ERR_UNSUPPORTED);
    b = a, b.T = -1;
    assert_int_equal(qn_cuda_paged_attention_plan(QN_DTYPE_BF16, &b, 132, &p), QN_ERR_INVALID);
    b = a, b.n_blocks = 2000000000, b.n_layers = 2000000000, b.layer = 0;
    assert_int_equal(qn_cuda_paged_attention_plan(QN_DTYPE_BF16, &b, 132, &p), QN_ERR_INVALID);
    assert_int_equal(qn_cuda_paged_attention_plan(QN_DTYPE_F16, &a, 132, &p), QN_ERR_UNSUPPORTED);
    assert_int_equal(qn_cuda_paged_attention_plan(QN_DTYPE_BF16, NULL, 132, &p), QN_ERR_INVALID);
}

/* The public entry points validate shapes before looking at the context or
 * the pointers (no device is touched: everything here is NULL). */
static void test_entry_points_refuse(void **state) {
    int32_t dummy = 0;
    assert_int_equal(qn_cuda_attention_forward(NULL, QN_DTYPE_F16, NULL, NULL, NULL, NULL, NULL,
                                               &dummy, 1, 16, 8, 2, 64, 16),
                     QN_ERR_UNSUPPORTED);
    assert_int_equal(qn_cuda_attention_forward(NULL, QN_DTYPE_BF16, NULL, NULL, NULL, NULL, NULL,
                                                &dummy, 1, 16, 8, 3, 64, 16),
                     QN_ERR_INVALID);
    assert_non_null(strstr(qn_last_error(), "NKV"));
    assert_int_equal(qn_cuda_attention_backward(NULL, QN_DTYPE_BF16, NULL, NULL, NULL, NULL, NULL,
                                                 NULL, NULL, NULL, NULL, &dummy, 1, 16, 8, 2, 100,
                                                 16),
                     QN_ERR_UNSUPPORTED);
    qn_cuda_paged_attn a = paged_shape(4, 32, 8, 128, 16, 1000);
    a.layer = -1;
    assert_int_equal(qn_cuda_paged_attention_forward(NULL, QN_DTYPE_BF16, &a), QN_ERR_INVALID);
    /* a valid shape without a context is refused too (INVALID with CUDA, NO_DEVICE without) */
    qn_status s = qn_cuda_attention_forward(NULL, QN_DTYPE_BF16, NULL, NULL, NULL, NULL, NULL,
                                            &dummy, 1, 16, 8, 2, 64, 16);
    assert_true(s == QN_ERR_INVALID || s == QN_ERR_NO_DEVICE);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head_dims_and_dtypes), cmocka_unit_test(test_bad_shapes),
        cmocka_unit_test(test_tiles_and_smem),       cmocka_unit_test(test_seqlens),
        cmocka_unit_test(test_paged_plan),           cmocka_unit_test(test_paged_refusals),
        cmocka_unit_test(test_entry_points_refuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
