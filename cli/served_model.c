/* served_model.c — model, FP8 copies, tokenizer and EOS ids for the engine
 * commands (see served_model.h). */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/served_model.h"

static int dir_has_tokenizer(const char *dir) {
    static const char *const names[] = {"tokenizer.json", "vocab.json", "tokenizer.model"};
    char path[4096];
    struct stat st;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (stat(path, &st) == 0) return 1;
    }
    return 0;
}

static qn_status collect_eos(qn_served_model *sm, const char *model_dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", model_dir);
    qn_model_config mc;
    QN_CHECK(qn_hf_config_load(path, &mc));
    const int32_t cap = (int32_t)(sizeof sm->eos / sizeof sm->eos[0]);
    sm->n_eos = 0;
    for (int64_t i = 0; i < mc.n_eos && sm->n_eos < cap; i++)
        if (mc.eos_token_ids[i] >= 0) sm->eos[sm->n_eos++] = (int32_t)mc.eos_token_ids[i];
    if (sm->n_eos == 0 && sm->tok) {
        const qn_special_ids *sp = qn_tokenizer_special_ids(sm->tok);
        if (sp->eos >= 0) sm->eos[sm->n_eos++] = sp->eos;
        for (int i = 0; i < sp->n_stop && sm->n_eos < cap; i++) sm->eos[sm->n_eos++] = sp->stop[i];
    }
    return QN_OK;
}

qn_status qn_served_model_load(qn_served_model *sm, const char *model_dir,
                               const char *tokenizer_dir, int quantize_fp8) {
    memset(sm, 0, sizeof *sm);
    QN_CHECK(qn_model_open(&sm->m, model_dir));
    qn_status s;
    sm->fp8_bm = sm->fp8_bn = 128;
    QN_CHECK_GOTO(qn_model_fp8_config(model_dir, &sm->fp8_checkpoint, &sm->fp8_bm, &sm->fp8_bn),
                  s, fail);
    if (sm->fp8_checkpoint) {
        QN_CHECK_GOTO(qn_model_fp8_load_dir(&sm->f8, &sm->m, model_dir), s, fail);
    } else if (quantize_fp8) {
        sm->fp8_bm = sm->fp8_bn = 128;
        QN_CHECK_GOTO(qn_model_fp8_quantize(&sm->f8, &sm->m, sm->fp8_bm, sm->fp8_bn), s, fail);
    }
    sm->tok_dir = tokenizer_dir ? tokenizer_dir : (dir_has_tokenizer(model_dir) ? model_dir : NULL);
    if (sm->tok_dir) QN_CHECK_GOTO(qn_tokenizer_load(sm->tok_dir, &sm->tok), s, fail);
    QN_CHECK_GOTO(collect_eos(sm, model_dir), s, fail);
    return QN_OK;
fail:
    qn_served_model_free(sm);
    return s;
}

void qn_served_model_free(qn_served_model *sm) {
    qn_tokenizer_free(sm->tok);
    qn_model_fp8_free(sm->f8);
    qn_model_free(&sm->m);
    memset(sm, 0, sizeof *sm);
}

qn_engine_params qn_served_engine_params(const qn_served_model *sm, const qn_engine_flags *f,
                                         uint64_t seed) {
    qn_engine_params ep = qn_engine_params_default();
    ep.max_running = (int32_t)f->max_running;
    ep.kv_cache_tokens = f->kv_cache_tokens;
    ep.block_size = (int32_t)f->block_size;
    ep.max_prefill_tokens = (int32_t)f->max_prefill_tokens;
    ep.context_len = f->context_len;
    ep.eos_ids = sm->eos;
    ep.n_eos = sm->n_eos;
    ep.tokenizer = sm->tok;
    ep.seed = seed;
    return ep;
}
