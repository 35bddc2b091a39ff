/* seqs.c — sequences for the logprobs/grad tools: JSONL reading, greedy
 * packing into micro-batches, and running forward (and backward) over them.
 *
 * Input lines: {"tokens":[...], "response_start":k} (1 <= k <= len), plus
 * "dlogp":[...] and "dentropy":[...] of length len-k when gradients are
 * asked for. Outputs are per response position t = k..len-1, predicted from
 * the hidden state at t-1.
 *
 * Leaves out: tokenisation, padding-based batching (never used).
 */
#include "core/model/seqs.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/io/jsonl.h"

void qn_seqs_free(qn_seqs *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->v[i].tokens);
        free(s->v[i].dlogp);
        free(s->v[i].dent);
    }
    free(s->v);
    memset(s, 0, sizeof *s);
}

static qn_status read_floats(const cJSON *arr, const char *key, int64_t want, const char *path,
                             long line, float **out) {
    if (!cJSON_IsArray(arr))
        return qn_fail(QN_ERR_FORMAT, "%s:%ld: \"%s\" must be an array of numbers", path, line, key);
    int64_t n = cJSON_GetArraySize(arr);
    if (n != want)
        return qn_fail(QN_ERR_FORMAT, "%s:%ld: \"%s\" has %lld values; expected len - "
                       "response_start = %lld", path, line, key, (long long)n, (long long)want);
    float *v = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!v) return qn_fail(QN_ERR_NOMEM, "%s:%ld", path, line);
    int64_t i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble)) {
            free(v);
            return qn_fail(QN_ERR_FORMAT, "%s:%ld: \"%s\"[%lld] is not a finite number", path,
                           line, key, (long long)i);
        }
        v[i++] = (float)it->valuedouble;
    }
    *out = v;
    return QN_OK;
}

static qn_status parse_line(const char *text, const char *path, long line, int with_grads,
                            int64_t vocab, qn_seq *q) {
    memset(q, 0, sizeof *q);
    cJSON *o = cJSON_Parse(text);
    qn_status s = QN_OK;
    if (!cJSON_IsObject(o)) {
        s = qn_fail(QN_ERR_FORMAT, "%s:%ld: not a JSON object", path, line);
        goto done;
    }
    const cJSON *toks = cJSON_GetObjectItemCaseSensitive(o, "tokens");
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(o, "response_start");
    if (!cJSON_IsArray(toks) || cJSON_GetArraySize(toks) < 1) {
        s = qn_fail(QN_ERR_FORMAT, "%s:%ld: \"tokens\" must be a non-empty array", path, line);
        goto done;
    }
    q->len = cJSON_GetArraySize(toks);
    if (!cJSON_IsNumber(rs) || rs->valuedouble != floor(rs->valuedouble) || rs->valuedouble < 1 ||
        rs->valuedouble > (double)q->len) {
        s = qn_fail(QN_ERR_RANGE, "%s:%ld: \"response_start\" must be an integer in [1, %lld]",
                    path, line, (long long)q->len);
        goto done;
    }
    q->k = (int64_t)rs->valuedouble;
    q->tokens = malloc((size_t)q->len * sizeof(int32_t));
    if (!q->tokens) {
        s = qn_fail(QN_ERR_NOMEM, "%s:%ld", path, line);
        goto done;
    }
    int64_t i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, toks) {
        double x = cJSON_IsNumber(it) ? it->valuedouble : -1.0;
        if (x != floor(x) || x < 0 || x >= (double)vocab) {
            s = qn_fail(QN_ERR_RANGE, "%s:%ld: tokens[%lld] is not a token id in [0, %lld)", path,
                        line, (long long)i, (long long)vocab);
            goto done;
        }
        q->tokens[i++] = (int32_t)x;
    }
    if (with_grads) {
        QN_CHECK_GOTO(read_floats(cJSON_GetObjectItemCaseSensitive(o, "dlogp"), "dlogp",
                                  q->len - q->k, path, line, &q->dlogp), s, done);
        QN_CHECK_GOTO(read_floats(cJSON_GetObjectItemCaseSensitive(o, "dentropy"), "dentropy",
                                  q->len - q->k, path, line, &q->dent), s, done);
    }
done:
    cJSON_Delete(o);
    if (s != QN_OK) {
        free(q->tokens);
        free(q->dlogp);
        free(q->dent);
        memset(q, 0, sizeof *q);
    }
    return s;
}

typedef struct read_ctx {
    const char *path;
    int with_grads;
    int64_t vocab;
    qn_seqs *out;
    size_t cap;
} read_ctx;

static qn_status read_one(const char *text, long line, void *user) {
    read_ctx *c = user;
    qn_seqs *out = c->out;
    if ((size_t)out->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        qn_seq *nv = realloc(out->v, c->cap * sizeof *nv);
        if (!nv) return qn_fail(QN_ERR_NOMEM, "%s: out of memory at line %ld", c->path, line);
        out->v = nv;
    }
    QN_CHECK(parse_line(text, c->path, line, c->with_grads, c->vocab, &out->v[out->n]));
    out->n_out += out->v[out->n].len - out->v[out->n].k;
    out->n++;
    return QN_OK;
}

qn_status qn_seqs_read_jsonl(const char *path, int with_grads, int64_t vocab, qn_seqs *out) {
    memset(out, 0, sizeof *out);
    read_ctx c = {.path = path, .with_grads = with_grads, .vocab = vocab, .out = out};
    qn_status s = qn_jsonl_foreach(path, read_one, &c);
    if (s != QN_OK) qn_seqs_free(out);
    return s;
}

qn_status qn_seqs_run(qn_model *m, const qn_seqs *seqs, float temperature, int64_t max_tokens,
                      int backward, float *logp, float *ent) {
    int64_t longest = 1;
    for (size_t i = 0; i < seqs->n; i++)
        if (seqs->v[i].len > longest) longest = seqs->v[i].len;
    if (max_tokens < longest) max_tokens = longest;
    int64_t total = 0;
    for (size_t i = 0; i < seqs->n; i++) total += seqs->v[i].len;
    if (max_tokens > total) max_tokens = total > 0 ? total : 1;
    qn_model_ws *ws = NULL;
    QN_CHECK(qn_model_ws_init(&ws, m, max_tokens, max_tokens));
    qn_status s = QN_OK;
    int32_t *tokens = malloc((size_t)max_tokens * sizeof(int32_t));
    int32_t *targets = malloc((size_t)max_tokens * sizeof(int32_t));
    int64_t *rows = malloc((size_t)max_tokens * sizeof(int64_t));
    int64_t *cu = malloc((size_t)(max_tokens + 1) * sizeof(int64_t));
    float *dl = malloc((size_t)max_tokens * sizeof(float));
    float *de = malloc((size_t)max_tokens * sizeof(float));
    if (!tokens || !targets || !rows || !cu || !dl || !de) {
        s = qn_fail(QN_ERR_NOMEM, "model: packing buffers");
        goto done;
    }
    if (backward) QN_CHECK_GOTO(qn_model_alloc_grads(m), s, done);
    size_t i = 0;
    int64_t out_pos = 0;
    while (i < seqs->n) {
        /* pack whole sequences greedily, in input order */
        int64_t T = 0, R = 0, ns = 0;
        int64_t out0 = out_pos;
        cu[0] = 0;
        while (i < seqs->n && T + seqs->v[i].len <= max_tokens) {
            const qn_seq *q = &seqs->v[i];
            memcpy(tokens + T, q->tokens, (size_t)q->len * sizeof(int32_t));
            for (int64_t t = q->k; t < q->len; t++) {
                rows[R] = T + t - 1;
                targets[R] = q->tokens[t];
                if (backward) {
                    dl[R] = q->dlogp[t - q->k];
                    de[R] = q->dent[t - q->k];
                }
                R++;
            }
            T += q->len;
            cu[++ns] = T;
            i++;
        }
        qn_batch b = {.tokens = tokens, .n_tokens = T, .cu_seqlens = cu, .n_seqs = ns,
                      .rows = rows, .targets = targets, .n_rows = R};
        QN_CHECK_GOTO(qn_model_forward(m, ws, &b, temperature, logp + out0, ent + out0), s, done);
        if (backward) QN_CHECK_GOTO(qn_model_backward(m, ws, &b, dl, de), s, done);
        out_pos += R;
    }
done:
    free(tokens);
    free(targets);
    free(rows);
    free(cu);
    free(dl);
    free(de);
    qn_model_ws_free(ws);
    return s;
}
