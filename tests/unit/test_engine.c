/* test_engine.c — the rollout engine on random tiny models (GLM-4.5-style MoE and a dense
 * Qwen3-style model, tests/ref/configs):
 *   - greedy outputs agree with the model core's teacher-forced forward: every returned
 *     log-prob equals qn_model_forward's log-prob of that token (2e-5), and each token is the
 *     argmax of the full-sequence forward (checked through its log-prob being the largest);
 *   - chunked prefill (budget 3 tokens a step) gives the same tokens as one-shot prefill;
 *   - batch invariance: a seeded request gives the same tokens alone and inside a batch of 64
 *     mixed-length requests with a KV cache small enough to force preemption (counted), and
 *     log-probs within 1e-5;
 *   - prefix sharing: groups of n = 8 cost one prompt of prefill each (engine counters) and
 *     7 forks, the samples differ; the same prompt as 8 separate requests costs more;
 *   - bad requests are refused with a reason and the engine keeps serving;
 *   - abort at any time; stop token ids; max_new_tokens 0; the cache is consistent after
 *     every step (qn_engine_check);
 *   - FP8 weights: the engine on FP8 copies equals the fp32 engine on the dequantised
 *     weights (same products up to summation order). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/model/infer.h"
#include "core/model/model.h"
#include "core/rng.h"
#include "rollout/engine.h"

#define MAX_OUT 64

static void load_model(qn_model *m, const char *cfg, uint64_t seed) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/ref/configs/%s", QN_SOURCE_DIR, cfg);
    qn_model_desc d;
    assert_int_equal(qn_model_desc_load(path, &d), QN_OK);
    assert_int_equal(qn_model_init(m, &d), QN_OK);
    /* a larger std than training init so that outputs depend strongly on the context */
    assert_int_equal(qn_model_init_random(m, seed, 0.2f, 0.1f), QN_OK);
}

static void make_prompt(int32_t *p, int32_t n, uint64_t seed, int32_t vocab) {
    for (int32_t i = 0; i < n; i++) p[i] = (int32_t)(qn_rng_u32(seed, 7, (uint64_t)i) % (uint32_t)vocab);
}

typedef struct result {
    int32_t n_samples;
    int32_t n_out[8];
    int32_t ids[8][MAX_OUT];
    float lp[8][MAX_OUT];
    qn_finish_reason finish[8];
    int64_t cached;
    int found;
} result;

/* Steps the engine until idle, checking it after every step; outputs land in res[user]. */
static void drain(qn_engine *e, result *res) {
    int guard = 0;
    while (qn_engine_busy(e)) {
        assert_int_equal(qn_engine_step(e, NULL), QN_OK);
        assert_int_equal(qn_engine_check(e), QN_OK);
        qn_engine_output o;
        while (qn_engine_next_finished(e, &o)) {
            result *r = &res[(intptr_t)o.user];
            r->found = 1;
            r->n_samples = o.n_samples;
            r->cached = o.cached_tokens;
            for (int32_t s = 0; s < o.n_samples && s < 8; s++) {
                r->n_out[s] = o.samples[s].n_out;
                r->finish[s] = o.samples[s].finish;
                for (int32_t t = 0; t < o.samples[s].n_out && t < MAX_OUT; t++) {
                    r->ids[s][t] = o.samples[s].ids[t];
                    r->lp[s][t] = o.samples[s].logprobs[t];
                }
            }
        }
        assert_true(++guard < 100000);
    }
}

static qn_engine *make_engine(const qn_model *m, const qn_model_fp8 *f8, int32_t max_running,
                              int64_t kv_tokens, int32_t prefill, int32_t block) {
    qn_engine_params p = qn_engine_params_default();
    p.max_running = max_running;
    p.kv_cache_tokens = kv_tokens;
    p.max_prefill_tokens = prefill;
    p.block_size = block;
    p.context_len = 256;
    qn_engine *e = NULL;
    assert_int_equal(qn_engine_create(&e, m, f8, &p), QN_OK);
    return e;
}

static uint64_t submit(qn_engine *e, const int32_t *prompt, int32_t n, float temp, int32_t max_new,
                       uint64_t seed, int32_t n_samples, intptr_t user) {
    qn_engine_request r = {.prompt = prompt, .n_prompt = n, .n = n_samples, .has_seed = 1,
                           .user = (void *)user};
    r.params = qn_sampling_params_default();
    r.params.temperature = temp;
    r.params.max_new_tokens = max_new;
    r.params.seed = seed;
    uint64_t id = 0;
    assert_int_equal(qn_engine_submit(e, &r, &id), QN_OK);
    return id;
}

/* Teacher-forced log-probs (T = 1) of out[0..n) after prompt, by the training forward. */
static void teacher_forced(const qn_model *m, const int32_t *prompt, int32_t np, const int32_t *out,
                           int32_t n, float *lp) {
    int32_t toks[512];
    memcpy(toks, prompt, (size_t)np * sizeof(int32_t));
    memcpy(toks + np, out, (size_t)n * sizeof(int32_t));
    int64_t T = np + n, cu[2] = {0, T}, rows[MAX_OUT];
    int32_t tg[MAX_OUT];
    for (int32_t i = 0; i < n; i++) {
        rows[i] = np - 1 + i;
        tg[i] = out[i];
    }
    qn_model_ws *ws = NULL;
    assert_int_equal(qn_model_ws_init(&ws, m, T, n), QN_OK);
    qn_batch b = {.tokens = toks, .n_tokens = T, .cu_seqlens = cu, .n_seqs = 1, .rows = rows,
                  .targets = tg, .n_rows = n};
    assert_int_equal(qn_model_forward(m, ws, &b, 1.0f, lp, NULL), QN_OK);
    qn_model_ws_free(ws);
}

static void check_greedy(const char *cfg) {
    qn_model m;
    load_model(&m, cfg, 11);
    int32_t V = (int32_t)m.d.vocab;
    const int32_t lens[] = {1, 5, 16, 17, 33};
    int32_t prompts[5][40];
    result res[5], res2[5];
    memset(res, 0, sizeof res);
    memset(res2, 0, sizeof res2);
    qn_engine *e = make_engine(&m, NULL, 8, 1024, 512, 4);
    qn_engine *e2 = make_engine(&m, NULL, 8, 1024, 3, 4); /* chunked prefill, 3 a step */
    for (int i = 0; i < 5; i++) {
        make_prompt(prompts[i], lens[i], 100 + (uint64_t)i, V);
        submit(e, prompts[i], lens[i], 0.0f, 12, 1, 1, i);
        submit(e2, prompts[i], lens[i], 0.0f, 12, 1, 1, i);
    }
    drain(e, res);
    drain(e2, res2);
    for (int i = 0; i < 5; i++) {
        assert_true(res[i].found);
        assert_int_equal(res[i].n_out[0], 12);
        assert_int_equal(res[i].finish[0], QN_FINISH_LENGTH);
        float ref[MAX_OUT];
        teacher_forced(&m, prompts[i], lens[i], res[i].ids[0], 12, ref);
        for (int t = 0; t < 12; t++) {
            assert_true(isfinite(res[i].lp[0][t]) && isfinite(ref[t]));
            if (fabsf(res[i].lp[0][t] - ref[t]) > 2e-5f)
                fail_msg("%s prompt %d token %d: engine logprob %.8f, forward %.8f", cfg, i, t,
                         (double)res[i].lp[0][t], (double)ref[t]);
            assert_int_equal(res2[i].ids[0][t], res[i].ids[0][t]);
            assert_true(fabsf(res2[i].lp[0][t] - res[i].lp[0][t]) <= 1e-5f);
        }
    }
    /* greedy: each chosen token has the largest log-prob of its row (checked by perturbing:
     * forcing any other token gives a smaller teacher-forced log-prob) */
    for (int i = 0; i < 2; i++) {
        int32_t alt[MAX_OUT];
        memcpy(alt, res[i].ids[0], sizeof alt);
        for (int t = 0; t < 3; t++) {
            float base[MAX_OUT], other[MAX_OUT];
            teacher_forced(&m, prompts[i], lens[i], res[i].ids[0], t + 1, base);
            alt[t] = (res[i].ids[0][t] + 1) % V;
            teacher_forced(&m, prompts[i], lens[i], alt, t + 1, other);
            assert_true(other[t] <= base[t]);
            alt[t] = res[i].ids[0][t];
        }
    }
    qn_engine_free(e);
    qn_engine_free(e2);
    qn_model_free(&m);
}

static void test_greedy_matches_forward_moe(void **state) {
    (void)state;
    check_greedy("tiny_glm45.json");
}

static void test_greedy_matches_forward_dense(void **state) {
    (void)state;
    check_greedy("tiny_qwen3_tied.json");
}

static void test_batch_invariance_with_preemption(void **state) {
    (void)state;
    qn_model m;
    load_model(&m, "tiny_glm45.json", 5);
    int32_t V = (int32_t)m.d.vocab;
    int32_t probe[23];
    make_prompt(probe, 23, 999, V);
    result alone[1], mixed[65];
    memset(alone, 0, sizeof alone);
    memset(mixed, 0, sizeof mixed);
    qn_engine *e = make_engine(&m, NULL, 64, 4096, 256, 4);
    submit(e, probe, 23, 0.8f, 40, 42, 1, 0);
    drain(e, alone);
    qn_engine_free(e);
    /* 64 requests: the probe in the middle; 600 cache tokens cannot hold 64 sequences of
     * 10..60 prompt tokens growing by up to 40 */
    e = make_engine(&m, NULL, 64, 600, 128, 4);
    static int32_t prompts[64][64];
    for (int i = 0; i < 64; i++) {
        if (i == 31) {
            submit(e, probe, 23, 0.8f, 40, 42, 1, 64);
            continue;
        }
        int32_t n = 10 + (int32_t)(qn_rng_u32(3, 1, (uint64_t)i) % 50);
        make_prompt(prompts[i], n, 500 + (uint64_t)i, V);
        submit(e, prompts[i], n, 1.0f, 5 + i % 36, 1000 + (uint64_t)i, 1, i);
    }
    drain(e, mixed);
    qn_engine_stats st;
    qn_engine_get_stats(e, &st);
    assert_true(st.preemptions > 0);
    assert_true(mixed[64].found);
    assert_int_equal(mixed[64].n_out[0], alone[0].n_out[0]);
    for (int t = 0; t < alone[0].n_out[0]; t++) {
        assert_int_equal(mixed[64].ids[0][t], alone[0].ids[0][t]);
        assert_true(isfinite(mixed[64].lp[0][t]));
        if (fabsf(mixed[64].lp[0][t] - alone[0].lp[0][t]) > 1e-5f)
            fail_msg("token %d: logprob %.8f alone, %.8f in the batch", t,
                     (double)alone[0].lp[0][t], (double)mixed[64].lp[0][t]);
    }
    for (int i = 0; i < 64; i++) assert_true(mixed[i == 31 ? 64 : i].found);
    qn_engine_free(e);
    qn_model_free(&m);
}

static void test_prefix_sharing_groups(void **state) {
    (void)state;
    qn_model m;
    load_model(&m, "tiny_glm45.json", 9);
    int32_t V = (int32_t)m.d.vocab;
    qn_engine *e = make_engine(&m, NULL, 64, 4096, 1024, 4);
    int32_t prompts[4][40];
    const int32_t lens[4] = {13, 16, 30, 7};
    int64_t sum = 0;
    result res[4];
    memset(res, 0, sizeof res);
    for (int g = 0; g < 4; g++) {
        make_prompt(prompts[g], lens[g], 50 + (uint64_t)g, V);
        submit(e, prompts[g], lens[g], 1.0f, 10, 77 + (uint64_t)g, 8, g);
        sum += lens[g];
    }
    drain(e, res);
    qn_engine_stats st;
    qn_engine_get_stats(e, &st);
    /* the prompt of each group is computed once; every other token is a decode */
    assert_int_equal(st.prefill_tokens, sum);
    assert_int_equal(st.forks, 4 * 7);
    for (int g = 0; g < 4; g++) {
        assert_int_equal(res[g].n_samples, 8);
        assert_int_equal(res[g].cached, 7 * lens[g]);
        int differ = 0;
        for (int s = 1; s < 8; s++)
            differ += memcmp(res[g].ids[s], res[g].ids[0], 10 * sizeof(int32_t)) != 0;
        assert_true(differ > 0);
    }
    qn_engine_free(e);
    /* the same prompt as 8 separate requests (no fork) costs more than one prefill: the
     * counters are not blind; sample 0 of the group equals a lone request with its seed */
    e = make_engine(&m, NULL, 64, 4096, 1024, 4);
    result one[8];
    memset(one, 0, sizeof one);
    for (int s = 0; s < 8; s++) submit(e, prompts[0], lens[0], 1.0f, 10, 77, 1, s);
    drain(e, one);
    qn_engine_stats st2;
    qn_engine_get_stats(e, &st2);
    assert_true(st2.prefill_tokens > lens[0]);
    assert_int_equal(st2.forks, 0);
    for (int s = 0; s < 8; s++)
        assert_memory_equal(one[s].ids[0], res[0].ids[0], 10 * sizeof(int32_t));
    qn_engine_free(e);
    qn_model_free(&m);
}

static void test_bad_requests_refused(void **state) {
    (void)state;
    qn_model m;
    load_model(&m, "tiny_glm45.json", 2);
    qn_engine *e = make_engine(&m, NULL, 8, 1024, 256, 4);
    int32_t good[5] = {1, 2, 3, 4, 5}, big[300], bad_tok[2] = {1, 97};
    for (int i = 0; i < 300; i++) big[i] = i % 90;
    qn_engine_request r = {.prompt = good, .n_prompt = 5, .n = 1};
    r.params = qn_sampling_params_default();
    uint64_t id;
    struct {
        const int32_t *p;
        int32_t n;
        float top_p;
        int32_t max_new;
        int32_t n_samples;
        const char *want;
    } cases[] = {
        {good, 0, 1.0f, 8, 1, "empty prompt"},
        {big, 300, 1.0f, 8, 1, "context"},
        {good, 5, 1.0f, -1, 1, "max_new_tokens"},
        {good, 5, 1.5f, 8, 1, "top_p"},
        {good, 5, 0.0f, 8, 1, "top_p"},
        {bad_tok, 2, 1.0f, 8, 1, "vocabulary"},
        {good, 5, 1.0f, 8, 0, "n = 0"},
    };
    result res[2];
    memset(res, 0, sizeof res);
    submit(e, good, 5, 0.0f, 6, 1, 1, 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        r.prompt = cases[i].p;
        r.n_prompt = cases[i].n;
        r.params.top_p = cases[i].top_p;
        r.params.max_new_tokens = cases[i].max_new;
        r.n = cases[i].n_samples;
        assert_int_not_equal(qn_engine_submit(e, &r, &id), QN_OK);
        if (!strstr(qn_last_error(), cases[i].want))
            fail_msg("case %zu: message '%s' does not mention '%s'", i, qn_last_error(),
                     cases[i].want);
        /* serve one step between refusals */
        assert_int_equal(qn_engine_step(e, NULL), QN_OK);
    }
    submit(e, good, 5, 0.0f, 6, 1, 1, 1);
    drain(e, res);
    assert_true(res[0].found && res[1].found);
    assert_int_equal(res[0].n_out[0], 6);
    assert_memory_equal(res[0].ids[0], res[1].ids[0], 6 * sizeof(int32_t));
    qn_engine_stats st;
    qn_engine_get_stats(e, &st);
    assert_int_equal(st.requests_refused, (int64_t)(sizeof cases / sizeof cases[0]));
    qn_engine_free(e);
    qn_model_free(&m);
}

static void test_abort_stop_and_zero(void **state) {
    (void)state;
    qn_model m;
    load_model(&m, "tiny_glm45.json", 3);
    int32_t V = (int32_t)m.d.vocab;
    qn_engine *e = make_engine(&m, NULL, 8, 1024, 4, 4);
    int32_t p[20];
    make_prompt(p, 20, 1, V);
    result res[4];
    memset(res, 0, sizeof res);
    uint64_t a = submit(e, p, 20, 1.0f, 50, 1, 4, 0); /* aborted mid-prefill */
    submit(e, p, 20, 0.0f, 0, 1, 1, 1);               /* max_new_tokens 0 */
    assert_int_equal(qn_engine_step(e, NULL), QN_OK);
    assert_int_equal(qn_engine_abort(e, a), QN_OK);
    assert_int_equal(qn_engine_check(e), QN_OK);
    /* greedy run to learn a token, then stop on it */
    submit(e, p, 20, 0.0f, 8, 1, 1, 2);
    drain(e, res);
    assert_int_equal(res[0].finish[0], QN_FINISH_ABORT);
    assert_int_equal(res[0].n_samples, 4);
    assert_int_equal(res[1].n_out[0], 0);
    assert_int_equal(res[1].finish[0], QN_FINISH_LENGTH);
    assert_int_equal(res[2].n_out[0], 8);
    assert_int_not_equal(qn_engine_abort(e, a), QN_OK); /* already collected */
    int32_t stop = res[2].ids[0][3];
    qn_engine_request r = {.prompt = p, .n_prompt = 20, .n = 1, .has_seed = 1,
                           .user = (void *)(intptr_t)3};
    r.params = qn_sampling_params_default();
    r.params.temperature = 0.0f;
    r.params.max_new_tokens = 8;
    r.params.stop_token_ids = &stop;
    r.params.n_stop_token_ids = 1;
    uint64_t id;
    assert_int_equal(qn_engine_submit(e, &r, &id), QN_OK);
    drain(e, res);
    assert_int_equal(res[3].finish[0], QN_FINISH_STOP);
    /* it stops at the first occurrence of the stop token, which is included */
    int first = 0;
    while (res[2].ids[0][first] != stop) first++;
    assert_int_equal(res[3].n_out[0], first + 1);
    /* abort while running decodes */
    result r2[1];
    memset(r2, 0, sizeof r2);
    uint64_t b = submit(e, p, 20, 1.0f, 50, 1, 2, 0);
    for (int i = 0; i < 12; i++) assert_int_equal(qn_engine_step(e, NULL), QN_OK);
    assert_int_equal(qn_engine_abort(e, b), QN_OK);
    drain(e, r2);
    assert_int_equal(r2[0].finish[0], QN_FINISH_ABORT);
    assert_true(r2[0].n_out[0] > 0 && r2[0].n_out[0] < 50);
    qn_engine_stats st;
    qn_engine_get_stats(e, &st);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.kv_blocks_used, 0);
    qn_engine_free(e);
    qn_model_free(&m);
}

static void test_fp8_engine_matches_dequantised(void **state) {
    (void)state;
    qn_model m;
    load_model(&m, "tiny_glm45.json", 4);
    int32_t V = (int32_t)m.d.vocab;
    qn_model_fp8 *f8 = NULL;
    assert_int_equal(qn_model_fp8_quantize(&f8, &m, 8, 8), QN_OK);
    assert_true(qn_model_fp8_count(f8) > 0);
    qn_model_fp8_dequantize_into(f8, &m);
    int32_t p[9];
    make_prompt(p, 9, 4, V);
    result a[1], b[1];
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    qn_engine *e = make_engine(&m, f8, 4, 512, 64, 4);
    submit(e, p, 9, 0.0f, 16, 1, 1, 0);
    drain(e, a);
    qn_engine_free(e);
    e = make_engine(&m, NULL, 4, 512, 64, 4);
    submit(e, p, 9, 0.0f, 16, 1, 1, 0);
    drain(e, b);
    qn_engine_free(e);
    assert_memory_equal(a[0].ids[0], b[0].ids[0], 16 * sizeof(int32_t));
    for (int t = 0; t < 16; t++) assert_true(fabsf(a[0].lp[0][t] - b[0].lp[0][t]) <= 1e-5f);
    qn_model_fp8_free(f8);
    qn_model_free(&m);
}

/* A prompt served twice hits the prefix cache; after a flush (weight update) it does not,
 * and the peeked output of a running request grows step by step. */
static void test_prefix_cache_flush_and_peek(void **state) {
    (void)state;
    qn_model m;
    load_model(&m, "tiny_glm45.json", 8);
    int32_t p[17];
    make_prompt(p, 17, 8, (int32_t)m.d.vocab);
    qn_engine *e = make_engine(&m, NULL, 4, 512, 64, 4);
    result res[3];
    memset(res, 0, sizeof res);
    submit(e, p, 17, 0.0f, 4, 1, 1, 0);
    drain(e, res);
    submit(e, p, 17, 0.0f, 4, 1, 1, 1);
    drain(e, res);
    assert_int_equal(res[0].cached, 0);
    assert_int_equal(res[1].cached, 16);
    assert_int_equal(qn_engine_flush_prefix_cache(e), QN_OK);
    assert_int_equal(qn_engine_check(e), QN_OK);
    uint64_t id = submit(e, p, 17, 0.0f, 4, 1, 1, 2);
    int32_t seen = 0;
    while (seen < 4) {
        assert_int_equal(qn_engine_step(e, NULL), QN_OK);
        qn_engine_sample smp;
        assert_int_equal(qn_engine_peek(e, id, 0, &smp), QN_OK);
        assert_true(smp.n_out == seen || smp.n_out == seen + 1);
        seen = smp.n_out;
    }
    qn_engine_sample smp;
    assert_int_not_equal(qn_engine_peek(e, id, 1, &smp), QN_OK);
    drain(e, res);
    assert_int_equal(res[2].cached, 0);
    assert_memory_equal(res[2].ids[0], res[0].ids[0], 4 * sizeof(int32_t));
    assert_int_not_equal(qn_engine_set_fp8(e, (const qn_model_fp8 *)&m), QN_OK);
    qn_engine_free(e);
    qn_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_matches_forward_moe),
        cmocka_unit_test(test_greedy_matches_forward_dense),
        cmocka_unit_test(test_batch_invariance_with_preemption),
        cmocka_unit_test(test_prefix_sharing_groups),
        cmocka_unit_test(test_bad_requests_refused),
        cmocka_unit_test(test_abort_stop_and_zero),
        cmocka_unit_test(test_fp8_engine_matches_dequantised),
        cmocka_unit_test(test_prefix_cache_flush_and_peek),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
