/* test_kv_cache.c — the paged KV cache block manager: arena layout, block accounting
 * invariants under random admit/reserve/commit/fork/release/preempt, prefix sharing for GRPO
 * groups (fork and prefix index), plan rejection leaving the state byte-for-byte unchanged,
 * hits pinned before allocations evict, and LRU eviction of cached prefixes.
 *
 * The invariants are recomputed here from the public views (not only qn_kv_cache_check):
 * every block is in exactly one state, its ref equals its occurrences in the block tables,
 * refs are never negative, the counters add up, and every computed position of every
 * sequence holds the token the test put there. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rollout/kv_cache.h"

static qn_kv_cache *make_cache(int32_t B, int32_t N, int32_t S, int32_t MB, int mem) {
    qn_kv_cache_params p = {.n_layers = 2,
                            .n_kv_heads = 2,
                            .head_dim = 3,
                            .block_size = B,
                            .n_blocks = N,
                            .max_seqs = S,
                            .max_blocks_per_seq = MB,
                            .alloc_memory = mem};
    qn_kv_cache *c = NULL;
    assert_int_equal(qn_kv_cache_init(&c, &p), QN_OK);
    return c;
}

/* Shadow of what each sequence holds, kept by the test. */
typedef struct shadow {
    int active;
    int32_t tokens[4096];
    int32_t n_known;
} shadow;

static void check_invariants(const qn_kv_cache *c, const shadow *sh) {
    const qn_kv_cache_params *p = qn_kv_cache_params_of(c);
    int32_t N = p->n_blocks, B = p->block_size;
    int32_t *occ = calloc((size_t)N, sizeof *occ);
    int32_t *in_lru = calloc((size_t)N, sizeof *in_lru);
    assert_non_null(occ);
    assert_non_null(in_lru);
    int32_t active = 0;
    for (int32_t s = 0; s < p->max_seqs; s++) {
        const int32_t *tab;
        int32_t nb = qn_kv_seq_blocks(c, s, &tab);
        if (!qn_kv_seq_active(c, s)) {
            assert_int_equal(nb, 0);
            if (sh) assert_false(sh[s].active);
            continue;
        }
        active++;
        if (sh) assert_true(sh[s].active);
        int64_t comp = qn_kv_seq_computed(c, s);
        assert_true(comp >= 0 && comp <= (int64_t)nb * B);
        for (int32_t i = 0; i < nb; i++) {
            assert_true(tab[i] >= 0 && tab[i] < N);
            occ[tab[i]]++;
            for (int32_t j = 0; j < i; j++)
                assert_int_not_equal(tab[i], tab[j]);
        }
        if (sh) {
            assert_true(comp <= sh[s].n_known);
            for (int64_t pos = 0; pos < comp; pos++)
                assert_int_equal(qn_kv_block_tokens(c, tab[pos / B])[pos % B], sh[s].tokens[pos]);
        }
    }
    int32_t lru[4096];
    int32_t n_lru = qn_kv_cache_lru(c, lru, 4096);
    assert_true(n_lru <= 4096);
    for (int32_t i = 0; i < n_lru; i++) {
        assert_true(lru[i] >= 0 && lru[i] < N);
        assert_int_equal(in_lru[lru[i]]++, 0); /* listed once */
    }
    int32_t used = 0, free_ = 0, cached = 0;
    for (int32_t b = 0; b < N; b++) {
        int32_t ref = qn_kv_block_ref(c, b);
        assert_true(ref >= 0);
        assert_int_equal(ref, occ[b]);
        qn_kv_block_state st = qn_kv_block_state_of(c, b);
        if (st == QN_KV_BLOCK_USED) {
            used++;
            assert_true(ref > 0);
            assert_int_equal(in_lru[b], 0);
        } else {
            assert_int_equal(ref, 0); /* never both free/cached and used */
            if (st == QN_KV_BLOCK_CACHED) {
                cached++;
                assert_int_equal(in_lru[b], 1);
            } else {
                assert_int_equal(st, QN_KV_BLOCK_FREE);
                free_++;
                assert_int_equal(in_lru[b], 0);
            }
        }
    }
    qn_kv_stats stt;
    qn_kv_cache_stats(c, &stt);
    assert_int_equal(used + free_ + cached, N); /* every block accounted for */
    assert_int_equal(stt.blocks_used, used);
    assert_int_equal(stt.blocks_free, free_);
    assert_int_equal(stt.blocks_cached, cached);
    assert_int_equal(n_lru, cached);
    assert_int_equal(stt.active_seqs, active);
    assert_true(stt.prefix_hit_tokens <= stt.prefix_query_tokens);
    qn_status cs = qn_kv_cache_check(c);
    if (cs != QN_OK) fail_msg("qn_kv_cache_check: %s", qn_last_error());
    free(occ);
    free(in_lru);
}

static uint8_t *snapshot(const qn_kv_cache *c, size_t *len) {
    *len = qn_kv_cache_snapshot(c, NULL, 0);
    uint8_t *buf = malloc(*len);
    assert_non_null(buf);
    assert_int_equal(qn_kv_cache_snapshot(c, buf, *len), *len);
    return buf;
}

static void assert_same_state(const qn_kv_cache *c, const uint8_t *before, size_t len) {
    size_t len2;
    uint8_t *after = snapshot(c, &len2);
    assert_int_equal(len, len2);
    assert_memory_equal(before, after, len);
    free(after);
}

/* Plans and applies ops; expects success. */
static void step_ok(qn_kv_cache *c, qn_kv_plan *plan, const qn_kv_op *ops, int32_t n) {
    int r = qn_kv_plan_batch(c, ops, n, plan);
    if (r != 0) fail_msg("plan: %d %s", r, qn_last_error());
    r = qn_kv_apply(c, ops, n, plan);
    if (r != 0) fail_msg("apply: %d %s", r, qn_last_error());
}

static void fill_tokens(int32_t *t, int32_t n, int32_t base) {
    for (int32_t i = 0; i < n; i++)
        t[i] = base + i * 7 + 1;
}

static void test_layout_and_params(void **state) {
    qn_kv_cache_params p = {.n_layers = 3,
                            .n_kv_heads = 2,
                            .head_dim = 5,
                            .block_size = 4,
                            .n_blocks = 6,
                            .max_seqs = 2,
                            .max_blocks_per_seq = 3,
                            .alloc_memory = 1};
    assert_int_equal(qn_kv_bytes_per_token(&p), (size_t)2 * 3 * 2 * 5 * sizeof(float));
    qn_kv_cache *c = NULL;
    assert_int_equal(qn_kv_cache_init(&c, &p), QN_OK);
    size_t slab = 4 * 2 * 5;
    float *base = qn_kv_block_ptr(c, 0, 0, 0);
    assert_non_null(base);
    /* every (block, layer, k/v) slab is distinct and the slabs tile the arena */
    for (int32_t b = 0; b < 6; b++)
        for (int32_t l = 0; l < 3; l++)
            for (int kv = 0; kv < 2; kv++) {
                float *q = qn_kv_block_ptr(c, b, l, kv);
                assert_non_null(q);
                assert_int_equal((size_t)(q - base), (((size_t)b * 3 + l) * 2 + kv) * slab);
                for (size_t i = 0; i < slab; i++)
                    q[i] = (float)(b * 1000 + l * 10 + kv);
            }
    assert_true(qn_kv_block_ptr(c, 5, 2, 1)[slab - 1] == 5000.0f + 21.0f);
    assert_null(qn_kv_block_ptr(c, 6, 0, 0));
    assert_null(qn_kv_block_ptr(c, 0, 3, 0));
    assert_null(qn_kv_block_ptr(c, 0, 0, 2));
    assert_null(qn_kv_block_ptr(c, -1, 0, 0));
    /* prefix copy moves only the first n token rows of every layer's K and V */
    assert_int_equal(qn_kv_copy_block_prefix(c, 1, 2, 3), QN_OK);
    for (int32_t l = 0; l < 3; l++)
        for (int kv = 0; kv < 2; kv++) {
            float *q = qn_kv_block_ptr(c, 2, l, kv);
            assert_true(q[0] == (float)(1000 + l * 10 + kv));
            assert_true(q[3 * 10 - 1] == (float)(1000 + l * 10 + kv));
            assert_true(q[3 * 10] == (float)(2000 + l * 10 + kv));
        }
    assert_int_equal(qn_kv_copy_block_prefix(c, 1, 2, 5), QN_ERR_RANGE);
    qn_kv_cache_free(c);

    p.block_size = 0;
    assert_int_equal(qn_kv_cache_init(&c, &p), QN_ERR_RANGE);
    assert_null(c);
    assert_non_null(strstr(qn_last_error(), "block_size"));
    p.block_size = 4;
    p.n_blocks = -3;
    assert_int_equal(qn_kv_cache_init(&c, &p), QN_ERR_RANGE);
    assert_non_null(strstr(qn_last_error(), "n_blocks"));
    qn_kv_cache_free(NULL);
    qn_kv_plan_free(NULL);
}

/* A GRPO group of n = 8: the prompt is prefilled once, its full blocks are shared by all eight
 * samples, and the partially filled last block is copied into each child. */
static void test_group_fork_sharing(void **state) {
    const int32_t B = 16, P = 37, G = 8, GEN = 40;
    qn_kv_cache *c = make_cache(B, 64, 16, 16, 1);
    qn_kv_plan plan;
    assert_int_equal(qn_kv_plan_init(&plan, c, 16), QN_OK);
    static shadow sh[16];
    memset(sh, 0, sizeof sh);
    int32_t prompt[64];
    fill_tokens(prompt, P, 100);

    qn_kv_op ops[16];
    ops[0] = (qn_kv_op){.kind = QN_KV_OP_ADMIT, .seq = 0, .tokens = prompt, .n_tokens = P};
    ops[1] = (qn_kv_op){.kind = QN_KV_OP_RESERVE, .seq = 0, .n_tokens = P};
    step_ok(c, &plan, ops, 2);
    assert_int_equal(plan.need_blocks, 3);
    assert_int_equal(qn_kv_commit(c, 0, prompt, P), QN_OK);
    sh[0].active = 1;
    memcpy(sh[0].tokens, prompt, sizeof(int32_t) * P);
    sh[0].n_known = P;
    /* mark the partial block's KV so the fork copy can be checked */
    const int32_t *tab0;
    qn_kv_seq_blocks(c, 0, &tab0);
    int32_t partial = tab0[2];
    for (int32_t l = 0; l < 2; l++)
        for (int kv = 0; kv < 2; kv++) {
            float *q = qn_kv_block_ptr(c, partial, l, kv);
            for (int32_t i = 0; i < B * 2 * 3; i++)
                q[i] = (float)(i + 1 + 100 * l + 1000 * kv);
        }

    for (int32_t g = 1; g < G; g++)
        ops[g - 1] = (qn_kv_op){.kind = QN_KV_OP_FORK, .seq = g, .parent = 0};
    step_ok(c, &plan, ops, G - 1);
    assert_int_equal(plan.n_copies, G - 1);
    for (int32_t g = 1; g < G; g++) {
        sh[g] = sh[0];
        assert_int_equal(plan.copies[g - 1].src, partial);
        assert_int_equal(plan.copies[g - 1].n_tokens, P % B);
        int32_t dst = plan.copies[g - 1].dst;
        for (int32_t l = 0; l < 2; l++)
            for (int kv = 0; kv < 2; kv++) {
                const float *q = qn_kv_block_ptr(c, dst, l, kv);
                for (int32_t i = 0; i < (P % B) * 2 * 3; i++)
                    assert_true(q[i] == (float)(i + 1 + 100 * l + 1000 * kv));
            }
    }
    qn_kv_stats st;
    qn_kv_cache_stats(c, &st);
    /* prompt blocks once (2 full + 1 partial) + one copied partial block per child */
    assert_int_equal(st.blocks_used, 3 + (G - 1));
    for (int32_t b = 0; b < 2; b++)
        assert_int_equal(qn_kv_block_ref(c, tab0[b]), G);
    check_invariants(c, sh);

    /* decode GEN tokens for every sample, one batch per step */
    for (int32_t t = 0; t < GEN; t++) {
        for (int32_t g = 0; g < G; g++)
            ops[g] = (qn_kv_op){.kind = QN_KV_OP_RESERVE, .seq = g, .n_tokens = 1};
        step_ok(c, &plan, ops, G);
        for (int32_t g = 0; g < G; g++) {
            int32_t tok = 5000 + g * 100 + t;
            sh[g].tokens[sh[g].n_known++] = tok;
            assert_int_equal(qn_kv_commit(c, g, &tok, 1), QN_OK);
        }
    }
    check_invariants(c, sh);
    qn_kv_cache_stats(c, &st);
    int32_t full_prompt = P / B;
    int32_t per_sample = (P + GEN + B - 1) / B - full_prompt;
    assert_int_equal(st.blocks_used, full_prompt + G * per_sample);
    /* the prefill work is one prompt; everything else is decode */
    assert_int_equal(st.computed_tokens, P + G * GEN);
    assert_int_equal(st.fork_shared_tokens, (int64_t)(G - 1) * P);

    /* A second group with the same prompt admitted through the prefix index: all eight get
     * the two full blocks without computing them; the partial block is recomputed. */
    for (int32_t g = 0; g < G; g++)
        assert_int_equal(qn_kv_release(c, g, 0), QN_OK);
    memset(sh, 0, sizeof sh);
    qn_kv_cache_stats(c, &st);
    int64_t hits_before = st.prefix_hit_tokens;
    assert_int_equal(qn_kv_prefix_match(c, prompt, P), full_prompt * B);
    for (int32_t g = 0; g < G; g++) {
        ops[2 * g] =
            (qn_kv_op){.kind = QN_KV_OP_ADMIT, .seq = 8 + g, .tokens = prompt, .n_tokens = P};
        ops[2 * g + 1] =
            (qn_kv_op){.kind = QN_KV_OP_RESERVE, .seq = 8 + g, .n_tokens = P - full_prompt * B};
    }
    step_ok(c, &plan, ops, 2 * G);
    /* eight hits on the same two CACHED blocks revive them once */
    assert_int_equal(plan.revived_blocks, full_prompt);
    assert_int_equal(plan.need_blocks, G);
    for (int32_t g = 0; g < G; g++) {
        assert_int_equal(plan.op_hit_tokens[2 * g], full_prompt * B);
        assert_int_equal(qn_kv_seq_computed(c, 8 + g), full_prompt * B);
    }
    qn_kv_cache_stats(c, &st);
    assert_int_equal(st.prefix_hit_tokens - hits_before, (int64_t)G * full_prompt * B);
    assert_int_equal(st.blocks_used, full_prompt + G);
    for (int32_t g = 0; g < G; g++) {
        sh[8 + g].active = 1;
        memcpy(sh[8 + g].tokens, prompt, sizeof(int32_t) * P);
        sh[8 + g].n_known = P;
    }
    check_invariants(c, sh);
    qn_kv_plan_free(&plan);
    qn_kv_cache_free(c);
}

static void test_prefix_index_hits(void **state) {
    const int32_t B = 4;
    qn_kv_cache *c = make_cache(B, 16, 4, 8, 0);
    qn_kv_plan plan;
    assert_int_equal(qn_kv_plan_init(&plan, c, 4), QN_OK);
    int32_t a[12] = {0};
    fill_tokens(a, 10, 1);
    qn_kv_op ops[2] = {{.kind = QN_KV_OP_ADMIT, .seq = 0, .tokens = a, .n_tokens = 10},
                       {.kind = QN_KV_OP_RESERVE, .seq = 0, .n_tokens = 10}};
    step_ok(c, &plan, ops, 2);
    assert_int_equal(plan.op_hit_tokens[0], 0);
    /* nothing is indexed before it is committed */
    assert_int_equal(qn_kv_prefix_match(c, a, 10), 0);
    assert_int_equal(qn_kv_commit(c, 0, a, 6), QN_OK);
    assert_int_equal(qn_kv_prefix_match(c, a, 10), 4);
    assert_int_equal(qn_kv_commit(c, 0, a + 6, 4), QN_OK);
    assert_int_equal(qn_kv_prefix_match(c, a, 10), 8);
    /* at least the last prompt token is left to compute */
    assert_int_equal(qn_kv_prefix_match(c, a, 8), 4);
    assert_int_equal(qn_kv_prefix_match(c, a, 9), 8);
    assert_int_equal(qn_kv_prefix_match(c, a, 4), 0);
    /* chain hash: the same second block after a different first block does not match */
    int32_t b[12];
    memcpy(b, a, sizeof a);
    b[0] ^= 1;
    assert_int_equal(qn_kv_prefix_match(c, b, 10), 0);
    memcpy(b, a, sizeof a);
    b[5] += 3;
    assert_int_equal(qn_kv_prefix_match(c, b, 10), 4);
    /* release: full indexed blocks become CACHED, the partial one FREE */
    assert_int_equal(qn_kv_release(c, 0, 0), QN_OK);
    qn_kv_stats st;
    qn_kv_cache_stats(c, &st);
    assert_int_equal(st.blocks_cached, 2);
    assert_int_equal(st.blocks_free, 14);
    assert_int_equal(st.blocks_used, 0);
    /* a request sharing the prefix revives them */
    int32_t d[12];
    memcpy(d, a, sizeof a);
    d[9] = 999;
    ops[0] = (qn_kv_op){.kind = QN_KV_OP_ADMIT, .seq = 1, .tokens = d, .n_tokens = 11};
    ops[1] = (qn_kv_op){.kind = QN_KV_OP_RESERVE, .seq = 1, .n_tokens = 3};
    d[10] = 5;
    step_ok(c, &plan, ops, 2);
    assert_int_equal(plan.op_hit_tokens[0], 8);
    assert_int_equal(plan.revived_blocks, 2);
    assert_int_equal(plan.need_blocks, 1);
    qn_kv_cache_stats(c, &st);
    assert_int_equal(st.blocks_cached, 0);
    assert_int_equal(st.blocks_used, 3);
    assert_int_equal(st.prefix_hit_tokens, 8);
    assert_int_equal(st.prefix_query_tokens, 10 + 11);
    check_invariants(c, NULL);
    qn_kv_plan_free(&plan);
    qn_kv_cache_free(c);
}

static void test_plan_rejection_unchanged(void **state) {
    const int32_t B = 4;
    qn_kv_cache *c = make_cache(B, 6, 4, 8, 1);
    qn_kv_plan plan;
    assert_int_equal(qn_kv_plan_init(&plan, c, 8), QN_OK);
    int32_t a[16], e[16];
    fill_tokens(a, 16, 3);
    fill_tokens(e, 16, 50);
    qn_kv_op ops[4] = {{.kind = QN_KV_OP_ADMIT, .seq = 0, .tokens = a, .n_tokens = 9},
                       {.kind = QN_KV_OP_RESERVE, .seq = 0, .n_tokens = 9}};
    step_ok(c, &plan, ops, 2);
    assert_int_equal(qn_kv_commit(c, 0, a, 9), QN_OK);
    for (int32_t i = 0; i < 3 * 2 * 2; i++)
        qn_kv_block_ptr(c, 2, 0, 0)[i] = 7.0f;
    /* 3 blocks used, 3 free: a step that needs 4 is rejected */
    size_t len;
    uint8_t *before = snapshot(c, &len);
    ops[0] = (qn_kv_op){.kind = QN_KV_OP_ADMIT, .seq = 1, .tokens = e, .n_tokens = 16};
    ops[1] = (qn_kv_op){.kind = QN_KV_OP_RESERVE, .seq = 1, .n_tokens = 16};
    assert_int_equal(qn_kv_plan_batch(c, ops, 2, &plan), QN_KV_NO_SPACE);
    assert_int_equal(plan.need_blocks, 4);
    assert_int_equal(plan.avail_blocks, 3);
    assert_same_state(c, before, len);
    /* applying a rejected plan is refused and changes nothing */
    assert_true(qn_kv_apply(c, ops, 2, &plan) < 0);
    assert_same_state(c, before, len);
    /* decode of seq 0 + a fork of it + a new request: 1 + 1 + 2 = 4 > 3 */
    ops[0] = (qn_kv_op){.kind = QN_KV_OP_RESERVE, .seq = 0, .n_tokens = 4};
    ops[1] = (qn_kv_op){.kind = QN_KV_OP_FORK, .seq = 2, .parent = 0};
    ops[2] = (qn_kv_op){.kind = QN_KV_OP_ADMIT, .seq = 1, .tokens = e, .n_tokens = 8};
    ops[3] = (qn_kv_op){.kind = QN_KV_OP_RESERVE, .seq = 1, .n_tokens = 8};
    assert_int_equal(qn_kv_plan_batch(c, ops, 4, &plan), QN_KV_NO_SPACE);
    assert_same_state(c, before, len);
    /* bad ops are errors (< 0), also with no change */
    qn_kv_op bad[3][2] = {
        {{.kind = QN_KV_OP_RESERVE, .seq = 3, .n_tokens = 1}},
        {{.kind = QN_KV_OP_ADMIT, .seq = 0, .tokens = e, .n_tokens = 3}},
        {{.kind = QN_KV_OP_RESERVE, .seq = 0, .n_tokens = 8 * 4}},
    };
    for (int i = 0; i < 3; i++) {
        int r = qn_kv_plan_batch(c, bad[i], 1, &plan);
        assert_true(r < 0);
        assert_true(strlen(qn_last_error()) > 0);
        assert_same_state(c, before, len);
    }
    ops[0] = (qn_kv_op){.kind = QN_KV_OP_FORK, .seq = 2, .parent = 3};
    assert_true(qn_kv_plan_batch(c, ops, 1, &plan) < 0);
    assert_same_state(c, before, len);
    /* commit/release errors leave it alone too */
    int32_t t = 1;
    assert_int_equal(qn_kv_commit(c, 0, a, 4), QN_ERR_RANGE); /* only 3 reserved slots left */
    assert_int_equal(qn_kv_commit(c, 3, &t, 1), QN_ERR_INVALID);
    assert_int_equal(qn_kv_release(c, 3, 0), QN_ERR_INVALID);
    assert_same_state(c, before, len);
    /* a plan applied with other ops is refused */
    ops[0] = (qn_kv_op){.kind = QN_KV_OP_RESERVE, .seq = 0, .n_tokens = 1};
    assert_int_equal(qn_kv_plan_batch(c, ops, 1, &plan), 0);
    ops[0].n_tokens = 3;
    assert_true(qn_kv_apply(c, ops, 1, &plan) < 0);
    assert_same_state(c, before, len);
    /* a stale plan (state changed after planning) is refused */
    ops[0] = (qn_kv_op){.kind = QN_KV_OP_RESERVE, .seq = 0, .n_tokens = 4};
    assert_int_equal(qn_kv_plan_batch(c, ops, 1, &plan), 0);
    assert_int_equal(qn_kv_commit(c, 0, a + 9, 1), QN_OK);
    free(before);
    before = snapshot(c, &len);
    assert_true(qn_kv_apply(c, ops, 1, &plan) < 0);
    assert_same_state(c, before, len);
    /* and a fitting step goes through */
    ops[0] = (qn_kv_op){.kind = QN_KV_OP_FORK, .seq = 2, .parent = 0};
    ops[1] = (qn_kv_op){.kind = QN_KV_OP_RESERVE, .seq = 2, .n_tokens = 2};
    ops[2] = (qn_kv_op){.kind = QN_KV_OP_ADMIT, .seq = 1, .tokens = e, .n_tokens = 4};
    ops[3] = (qn_kv_op){.kind = QN_KV_OP_RESERVE, .seq = 1, .n_tokens = 4};
    step_ok(c, &plan, ops, 4);
    assert_int_equal(plan.need_blocks, 2);
    check_invariants(c, NULL);
    /* a plan is good for one apply: the same plan again is stale */
    free(before);
    before = snapshot(c, &len);
    assert_true(qn_kv_apply(c, ops, 4, &plan) < 0);
    assert_same_state(c, before, len);
    free(before);
    qn_kv_plan_free(&plan);
    qn_kv_cache_free(c);
}

/* A step whose allocations must evict CACHED blocks while a later ADMIT of the same step hits
 * other CACHED blocks: the hits are pinned first, so the evictions take the others. */
static void test_hits_pinned_before_eviction(void **state) {
    const int32_t B = 4;
    qn_kv_cache *c = make_cache(B, 4, 4, 4, 0);
    qn_kv_plan plan;
    assert_int_equal(qn_kv_plan_init(&plan, c, 4), QN_OK);
    int32_t a[9], d[8], x[1] = {4242};
    fill_tokens(a, 9, 10);
    fill_tokens(d, 8, 90);
    qn_kv_op ops[4] = {{.kind = QN_KV_OP_ADMIT, .seq = 0, .tokens = a, .n_tokens = 8},
                       {.kind = QN_KV_OP_RESERVE, .seq = 0, .n_tokens = 8},
                       {.kind = QN_KV_OP_ADMIT, .seq = 1, .tokens = d, .n_tokens = 8},
                       {.kind = QN_KV_OP_RESERVE, .seq = 1, .n_tokens = 8}};
    step_ok(c, &plan, ops, 4);
    assert_int_equal(qn_kv_commit(c, 0, a, 8), QN_OK);
    assert_int_equal(qn_kv_commit(c, 1, d, 8), QN_OK);
    const int32_t *t;
    qn_kv_seq_blocks(c, 0, &t);
    int32_t a0 = t[0], a1 = t[1];
    assert_int_equal(qn_kv_release(c, 0, 0), QN_OK);
    assert_int_equal(qn_kv_release(c, 1, 1), QN_OK);
    int32_t lru[8];
    assert_int_equal(qn_kv_cache_lru(c, lru, 8), 4);
    assert_int_equal(lru[0], a1); /* a prefix's tail goes first */
    assert_int_equal(lru[1], a0);
    /* The revived blocks are not available for allocation: with 4 CACHED blocks of which
     * the step revives 2, a step needing 3 new blocks does not fit. */
    ops[0] = (qn_kv_op){.kind = QN_KV_OP_ADMIT, .seq = 2, .tokens = x, .n_tokens = 1};
    ops[1] = (qn_kv_op){.kind = QN_KV_OP_RESERVE, .seq = 2, .n_tokens = 5};
    ops[2] = (qn_kv_op){.kind = QN_KV_OP_ADMIT, .seq = 3, .tokens = a, .n_tokens = 9};
    ops[3] = (qn_kv_op){.kind = QN_KV_OP_RESERVE, .seq = 3, .n_tokens = 1};
    size_t len;
    uint8_t *before = snapshot(c, &len);
    assert_int_equal(qn_kv_plan_batch(c, ops, 4, &plan), QN_KV_NO_SPACE);
    assert_int_equal(plan.need_blocks, 3);
    assert_int_equal(plan.avail_blocks, 2);
    assert_same_state(c, before, len);
    free(before);
    /* new request x needs 1 block, then a's prompt + 1 token hits a0, a1 and needs 1 more */
    ops[0] = (qn_kv_op){.kind = QN_KV_OP_ADMIT, .seq = 2, .tokens = x, .n_tokens = 1};
    ops[1] = (qn_kv_op){.kind = QN_KV_OP_RESERVE, .seq = 2, .n_tokens = 1};
    ops[2] = (qn_kv_op){.kind = QN_KV_OP_ADMIT, .seq = 3, .tokens = a, .n_tokens = 9};
    ops[3] = (qn_kv_op){.kind = QN_KV_OP_RESERVE, .seq = 3, .n_tokens = 1};
    step_ok(c, &plan, ops, 4);
    assert_int_equal(plan.revived_blocks, 2);
    assert_int_equal(plan.evict_blocks, 2);
    qn_kv_seq_blocks(c, 3, &t);
    assert_int_equal(t[0], a0);
    assert_int_equal(t[1], a1);
    qn_kv_stats st;
    qn_kv_cache_stats(c, &st);
    assert_int_equal(st.evictions, 2);
    assert_int_equal(st.preemptions, 1);
    assert_int_equal(st.blocks_used, 4);
    assert_int_equal(qn_kv_prefix_match(c, d, 8), 0); /* d's blocks were the ones evicted */
    check_invariants(c, NULL);
    qn_kv_plan_free(&plan);
    qn_kv_cache_free(c);
}

static int32_t admit_prompt(qn_kv_cache *c, qn_kv_plan *plan, int32_t seq, const int32_t *tok,
                            int32_t n) {
    qn_kv_op ops[2] = {{.kind = QN_KV_OP_ADMIT, .seq = seq, .tokens = tok, .n_tokens = n},
                       {.kind = QN_KV_OP_RESERVE, .seq = seq, .n_tokens = 0}};
    int32_t hit = qn_kv_prefix_match(c, tok, n);
    ops[1].n_tokens = n - hit;
    step_ok(c, plan, ops, 2);
    assert_int_equal(plan->op_hit_tokens[0], hit);
    assert_int_equal(qn_kv_commit(c, seq, tok + hit, n - hit), QN_OK);
    return hit;
}

static void test_lru_eviction(void **state) {
    const int32_t B = 4;
    qn_kv_cache *c = make_cache(B, 7, 4, 4, 0); /* 6 blocks for 3 prompts + 1 spare */
    qn_kv_plan plan;
    assert_int_equal(qn_kv_plan_init(&plan, c, 4), QN_OK);
    int32_t p[3][9];
    int32_t blk[3][2];
    for (int i = 0; i < 3; i++) {
        fill_tokens(p[i], 9, 1000 * (i + 1));
        admit_prompt(c, &plan, i, p[i], 8);
        const int32_t *t;
        qn_kv_seq_blocks(c, i, &t);
        blk[i][0] = t[0];
        blk[i][1] = t[1];
    }
    for (int i = 0; i < 3; i++)
        assert_int_equal(qn_kv_release(c, i, 0), QN_OK);
    int32_t lru[8];
    assert_int_equal(qn_kv_cache_lru(c, lru, 8), 6);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(lru[2 * i], blk[i][1]);
        assert_int_equal(lru[2 * i + 1], blk[i][0]);
    }
    /* using prompt 1 again moves its blocks to the most recently used end */
    assert_int_equal(admit_prompt(c, &plan, 0, p[1], 9), 8);
    assert_int_equal(qn_kv_release(c, 0, 0), QN_OK);
    assert_int_equal(qn_kv_cache_lru(c, lru, 8), 6);
    int32_t want[6] = {blk[0][1], blk[0][0], blk[2][1], blk[2][0], blk[1][1], blk[1][0]};
    /* the 9-token prompt's partial block (the spare) went back to FREE */
    qn_kv_stats st;
    qn_kv_cache_stats(c, &st);
    assert_int_equal(st.blocks_cached, 6);
    assert_memory_equal(lru, want, sizeof want);
    assert_int_equal(st.blocks_free, 1);
    assert_int_equal(st.evictions, 0);
    /* a new 12-token request takes the free block and evicts the two least recently used */
    int32_t q[12];
    fill_tokens(q, 12, 77777);
    admit_prompt(c, &plan, 1, q, 12);
    qn_kv_cache_stats(c, &st);
    assert_int_equal(st.evictions, 2);
    assert_int_equal(qn_kv_prefix_match(c, p[0], 9), 0);
    assert_int_equal(qn_kv_prefix_match(c, p[1], 9), 8);
    assert_int_equal(qn_kv_prefix_match(c, p[2], 9), 8);
    /* the next eviction takes prompt 2's tail block first, so its head still hits */
    int32_t r[4];
    fill_tokens(r, 4, 555);
    admit_prompt(c, &plan, 2, r, 4);
    assert_int_equal(qn_kv_prefix_match(c, p[2], 9), 4);
    assert_int_equal(qn_kv_prefix_match(c, p[1], 9), 8);
    qn_kv_cache_stats(c, &st);
    assert_int_equal(st.evictions, 3);
    check_invariants(c, NULL);
    qn_kv_plan_free(&plan);
    qn_kv_cache_free(c);
}

/* Random admit / chunked prefill / decode / fork / release / preempt with the invariants and
 * the token content checked after every operation, and every rejected plan checked to leave
 * the state byte-for-byte unchanged. */
static void test_random_operations(void **state) {
    const int32_t B = 4, N = 48, S = 12, MB = 40;
    qn_kv_cache *c = make_cache(B, N, S, MB, 0);
    qn_kv_plan plan;
    assert_int_equal(qn_kv_plan_init(&plan, c, S), QN_OK);
    static shadow sh[12];
    memset(sh, 0, sizeof sh);
    int32_t bases[3][16];
    for (int i = 0; i < 3; i++)
        fill_tokens(bases[i], 16, 10000 * (i + 1));
    uint64_t rs = 12345;
#define RND(n) ((int32_t)((rs = rs * 6364136223846793005ull + 1442695040888963407ull) >> 33) % (n))
    int rejected = 0, preempted = 0, forks = 0, admits = 0;
    for (int it = 0; it < 4000; it++) {
        int act = RND(10);
        int32_t s = RND(S);
        qn_kv_op ops[12];
        int32_t n_ops = 0;
        if (act <= 2 && !sh[s].active) { /* admit with a shared base prefix */
            shadow *h = &sh[s];
            int32_t base = RND(3), nb = RND(17), suf = RND(8);
            h->n_known = 0;
            for (int32_t i = 0; i < nb; i++)
                h->tokens[h->n_known++] = bases[base][i];
            for (int32_t i = 0; i < suf; i++)
                h->tokens[h->n_known++] = RND(50);
            if (h->n_known == 0) h->tokens[h->n_known++] = 7;
            int32_t hit = qn_kv_prefix_match(c, h->tokens, h->n_known);
            int32_t chunk = 1 + RND(h->n_known - hit);
            ops[n_ops++] = (qn_kv_op){
                .kind = QN_KV_OP_ADMIT, .seq = s, .tokens = h->tokens, .n_tokens = h->n_known};
            ops[n_ops++] = (qn_kv_op){.kind = QN_KV_OP_RESERVE, .seq = s, .n_tokens = chunk};
        } else if (act <= 5) { /* one step for every active sequence: prefill chunk or decode */
            for (int32_t q = 0; q < S; q++) {
                if (!sh[q].active) continue;
                int64_t comp = qn_kv_seq_computed(c, q);
                int32_t n = comp < sh[q].n_known ? 1 + RND((int32_t)(sh[q].n_known - comp)) : 1;
                if (comp + n > (int64_t)MB * B) continue;
                ops[n_ops++] = (qn_kv_op){.kind = QN_KV_OP_RESERVE, .seq = q, .n_tokens = n};
            }
        } else if (act == 6 && sh[s].active && qn_kv_seq_computed(c, s) > 0) { /* fork */
            int32_t child = RND(S);
            if (sh[child].active) continue;
            ops[n_ops++] = (qn_kv_op){.kind = QN_KV_OP_FORK, .seq = child, .parent = s};
        } else if (act >= 7 && sh[s].active) { /* finish, or preempt */
            int pre = act == 9;
            assert_int_equal(qn_kv_release(c, s, pre), QN_OK);
            sh[s].active = 0;
            preempted += pre;
            check_invariants(c, sh);
            continue;
        }
        if (n_ops == 0) continue;
        int r = qn_kv_plan_batch(c, ops, n_ops, &plan);
        if (r == QN_KV_NO_SPACE) {
            size_t len;
            uint8_t *before = snapshot(c, &len);
            assert_int_equal(qn_kv_plan_batch(c, ops, n_ops, &plan), QN_KV_NO_SPACE);
            assert_true(plan.need_blocks > plan.avail_blocks);
            assert_same_state(c, before, len);
            free(before);
            rejected++;
            /* preempt the highest-numbered active sequence, as an engine would the youngest */
            for (int32_t q = S - 1; q >= 0; q--)
                if (sh[q].active) {
                    assert_int_equal(qn_kv_release(c, q, 1), QN_OK);
                    sh[q].active = 0;
                    preempted++;
                    break;
                }
            check_invariants(c, sh);
            continue;
        }
        if (r != 0) fail_msg("it %d: plan %d: %s", it, r, qn_last_error());
        assert_int_equal(qn_kv_apply(c, ops, n_ops, &plan), 0);
        for (int32_t i = 0; i < n_ops; i++) {
            const qn_kv_op *op = &ops[i];
            if (op->kind == QN_KV_OP_ADMIT) {
                sh[op->seq].active = 1;
                admits++;
            } else if (op->kind == QN_KV_OP_FORK) {
                shadow *ch = &sh[op->seq];
                ch->active = 1;
                ch->n_known = (int32_t)qn_kv_seq_computed(c, op->parent);
                memcpy(ch->tokens, sh[op->parent].tokens, sizeof(int32_t) * ch->n_known);
                forks++;
            }
        }
        check_invariants(c, sh);
        /* write what was reserved */
        for (int32_t i = 0; i < n_ops; i++) {
            const qn_kv_op *op = &ops[i];
            if (op->kind != QN_KV_OP_RESERVE) continue;
            shadow *h = &sh[op->seq];
            int64_t comp = qn_kv_seq_computed(c, op->seq);
            while (h->n_known < comp + op->n_tokens)
                h->tokens[h->n_known++] = RND(50);
            assert_int_equal(qn_kv_commit(c, op->seq, h->tokens + comp, op->n_tokens), QN_OK);
        }
        check_invariants(c, sh);
    }
#undef RND
    qn_kv_stats st;
    qn_kv_cache_stats(c, &st);
    print_message("random ops: admits %d forks %d rejected %d preempted %d; hit tokens %lld of "
                  "%lld, evictions %lld\n",
                  admits, forks, rejected, preempted, (long long)st.prefix_hit_tokens,
                  (long long)st.prefix_query_tokens, (long long)st.evictions);
    /* the run must actually have exercised every path */
    assert_true(admits > 50 && forks > 20 && rejected > 5 && preempted > 20);
    assert_true(st.prefix_hit_tokens > 0 && st.evictions > 0);
    for (int32_t q = 0; q < S; q++)
        if (sh[q].active) assert_int_equal(qn_kv_release(c, q, 0), QN_OK);
    qn_kv_cache_stats(c, &st);
    assert_int_equal(st.blocks_used, 0);
    assert_int_equal(st.blocks_free + st.blocks_cached, N);
    check_invariants(c, NULL);
    qn_kv_plan_free(&plan);
    qn_kv_cache_free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_and_params),
        cmocka_unit_test(test_group_fork_sharing),
        cmocka_unit_test(test_prefix_index_hits),
        cmocka_unit_test(test_plan_rejection_unchanged),
        cmocka_unit_test(test_hits_pinned_before_eviction),
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_random_operations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
