/* checkpoint.c — Hugging Face checkpoints for the model: load safetensors
 * (single or sharded; F32/BF16/F16 converted to fp32, F8_E4M3 projections of
 * FP8 checkpoints dequantised with their weight_scale_inv), save safetensors
 * plus config.json, and write gradients as fp32 safetensors.
 *
 * Leaves out: MTP tensors (ignored on load, never written), sharded writing
 * of weights, writing FP8 (that is `quench convert`).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/dtype.h"
#include "core/io/safetensors.h"
#include "core/model/infer.h"
#include "core/model/model.h"
#include "core/quant/fp8.h"

static char *read_file_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n >= 0 && n < (1L << 24) && fseek(f, 0, SEEK_SET) == 0) {
            buf = malloc((size_t)n + 1);
            if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
                free(buf);
                buf = NULL;
            }
            if (buf) buf[n] = '\0';
        }
    }
    fclose(f);
    return buf;
}

qn_status qn_model_load_dir(qn_model *m, const char *dir) {
    int is_fp8 = 0;
    int32_t bm = QN_FP8_BLOCK_DEFAULT, bn = QN_FP8_BLOCK_DEFAULT;
    char cfg[4096];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    FILE *probe = fopen(cfg, "rb");
    if (probe) { /* a bare safetensors folder (tests) has no config: not FP8 */
        fclose(probe);
        QN_CHECK(qn_model_fp8_config(dir, &is_fp8, &bm, &bn));
    }
    qn_st_model *st = NULL;
    QN_CHECK(qn_st_model_open(dir, &st));
    qn_status s = QN_OK;
    for (size_t i = 0; i < m->n_params; i++) {
        const qn_param_info *p = &m->params[i];
        const qn_st_tensor *t = NULL;
        s = qn_st_model_get(st, p->name, &t);
        if (s != QN_OK) {
            if (s == QN_ERR_NOT_FOUND)
                s = qn_fail(QN_ERR_NOT_FOUND, "%s: tensor '%s' is missing from the checkpoint",
                            dir, p->name);
            goto done;
        }
        int f8 = t->dtype == QN_DTYPE_F8_E4M3 && is_fp8;
        if (t->dtype != QN_DTYPE_F32 && t->dtype != QN_DTYPE_BF16 && t->dtype != QN_DTYPE_F16 &&
            !f8) {
            s = qn_fail(QN_ERR_FORMAT, "%s: tensor '%s' has dtype %s; expected F32, BF16 or F16%s",
                        dir, p->name, qn_dtype_name(t->dtype),
                        t->dtype == QN_DTYPE_F8_E4M3 ? " (F8_E4M3 needs a quantization_config "
                                                        "in config.json)" : "");
            goto done;
        }
        int ok = t->ndim == p->ndim && t->shape[0] == p->shape[0] &&
                 (p->ndim == 1 || t->shape[1] == p->shape[1]);
        if (!ok) {
            char got[128] = "", want[64];
            size_t off = 0;
            for (int k = 0; k < t->ndim && off < sizeof got - 24; k++)
                off += (size_t)snprintf(got + off, sizeof got - off, "%s%lld", k ? ", " : "",
                                        (long long)t->shape[k]);
            if (p->ndim == 1)
                snprintf(want, sizeof want, "%lld", (long long)p->shape[0]);
            else
                snprintf(want, sizeof want, "%lld, %lld", (long long)p->shape[0],
                         (long long)p->shape[1]);
            s = qn_fail(QN_ERR_FORMAT, "%s: tensor '%s' has shape [%s]; the config needs [%s]",
                        dir, p->name, got, want);
            goto done;
        }
        if (f8)
            s = qn_fp8_load_f32(st, p->name, bm, bn, m->w + p->offset, p->numel);
        else
            s = qn_dtype_to_f32(t->dtype, t->data, m->w + p->offset, p->numel);
        if (s != QN_OK) {
            s = qn_fail(s, "%s: tensor '%s': cannot convert: %s", dir, p->name, qn_last_error());
            goto done;
        }
    }
done:
    qn_st_model_close(st);
    return s;
}

qn_status qn_model_open(qn_model *m, const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    qn_model_desc d;
    QN_CHECK(qn_model_desc_load(path, &d));
    QN_CHECK(qn_model_init(m, &d));
    qn_status s = qn_model_load_dir(m, dir);
    if (s != QN_OK) {
        qn_model_free(m);
        return s;
    }
    m->config_json = read_file_text(path);
    return QN_OK;
}

static qn_status ensure_dir(const char *dir) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return qn_fail(QN_ERR_IO, "%s: cannot create directory: %s", dir, strerror(errno));
    return QN_OK;
}

static qn_status write_params(const qn_model *m, const float *base, int trainable_only,
                              qn_dtype dt, const char *path) {
    qn_st_writer *w = NULL;
    void *conv = NULL;
    qn_status s;
    QN_CHECK_GOTO(qn_st_writer_init(&w, path), s, done);
    if (dt != QN_DTYPE_F32) {
        conv = malloc(m->n_floats * qn_dtype_size(dt));
        if (!conv) {
            s = qn_fail(QN_ERR_NOMEM, "%s: no memory to convert the weights", path);
            goto done;
        }
        QN_CHECK_GOTO(qn_dtype_from_f32(dt, base, conv, m->n_floats), s, done);
    }
    for (size_t i = 0; i < m->n_params; i++) {
        const qn_param_info *p = &m->params[i];
        if (trainable_only && !p->trainable) continue;
        /* router scores bias is a float32 buffer in HF whatever the dtype */
        qn_dtype pdt = p->trainable ? dt : QN_DTYPE_F32;
        const void *data = pdt == QN_DTYPE_F32
                               ? (const void *)(base + p->offset)
                               : (const void *)((const char *)conv + p->offset * qn_dtype_size(dt));
        QN_CHECK_GOTO(qn_st_writer_add(w, p->name, pdt, p->ndim, p->shape, data), s, done);
    }
    QN_CHECK_GOTO(qn_st_writer_set_metadata(w, "format", "pt"), s, done);
    QN_CHECK_GOTO(qn_st_writer_finish(w), s, done);
done:
    qn_st_writer_free(w);
    free(conv);
    return s;
}

qn_status qn_model_save_dir(const qn_model *m, const char *dir, const char *dtype) {
    qn_dtype dt;
    if (strcmp(dtype, "fp32") == 0 || strcmp(dtype, "F32") == 0)
        dt = QN_DTYPE_F32;
    else if (strcmp(dtype, "bf16") == 0 || strcmp(dtype, "BF16") == 0)
        dt = QN_DTYPE_BF16;
    else
        return qn_fail(QN_ERR_INVALID, "--dtype '%s': expected fp32 or bf16", dtype);
    if (!m->config_json)
        return qn_fail(QN_ERR_INVALID, "%s: the model has no config.json text to save", dir);
    QN_CHECK(ensure_dir(dir));
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    QN_CHECK(write_params(m, m->w, 0, dt, path));
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "wb");
    if (!f) return qn_fail(QN_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    size_t n = strlen(m->config_json);
    int ok = fwrite(m->config_json, 1, n, f) == n;
    ok = (fclose(f) == 0) && ok;
    return ok ? QN_OK : qn_fail(QN_ERR_IO, "%s: write failed", path);
}

qn_status qn_model_save_grads(const qn_model *m, const char *path) {
    if (!m->g) return qn_fail(QN_ERR_INVALID, "%s: the model has no gradients", path);
    return write_params(m, m->g, 1, QN_DTYPE_F32, path);
}

qn_status qn_model_set_config_json(qn_model *m, const char *text) {
    char *copy = strdup(text);
    if (!copy) return qn_fail(QN_ERR_NOMEM, "model: config.json copy");
    free(m->config_json);
    m->config_json = copy;
    return QN_OK;
}

qn_status qn_model_read_config_json(qn_model *m, const char *path) {
    char *text = read_file_text(path);
    if (!text) return qn_fail(QN_ERR_IO, "%s: cannot read", path);
    free(m->config_json);
    m->config_json = text;
    return QN_OK;
}
