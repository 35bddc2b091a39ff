/* fuzz_safetensors.c — the safetensors reader on arbitrary bytes: open from
 * memory, walk every tensor and every metadata entry, read every data byte
 * and convert float tensors to fp32, so that any offset the validator lets
 * through is actually dereferenced (ASan catches reads outside the input).
 * Leaves out the file/mmap path and sharded indexes (same parser). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qn_st_file *f = NULL;
    if (qn_st_open_memory(data, size, "fuzz.safetensors", &f) != QN_OK) {
        /* every rejection must say which file */
        if (strstr(qn_last_error(), "fuzz.safetensors") == NULL) abort();
        return 0;
    }
    volatile uint8_t sink = 0;
    uint64_t total = 0;
    for (size_t i = 0; i < qn_st_count(f); i++) {
        const qn_st_tensor *t = qn_st_tensor_at(f, i);
        if (qn_st_find(f, t->name) != t) abort();
        if (qn_st_numel(t) * qn_dtype_size(t->dtype) != t->nbytes) abort();
        const uint8_t *p = t->data;
        if (t->nbytes && (p < data || p + t->nbytes > data + size)) abort();
        for (uint64_t k = 0; k < t->nbytes; k++)
            sink ^= p[k];
        total += t->nbytes;
        if (qn_dtype_is_float(t->dtype) && t->nbytes <= 1 << 16) {
            size_t n = (size_t)qn_st_numel(t);
            float *out = malloc((n ? n : 1) * sizeof *out);
            if (out && qn_dtype_to_f32(t->dtype, t->data, out, n) != QN_OK) abort();
            free(out);
        }
    }
    if (total > size) abort();
    for (size_t i = 0; i < qn_st_metadata_count(f); i++) {
        const char *k, *v;
        qn_st_metadata_at(f, i, &k, &v);
        if (qn_st_metadata_get(f, k) != v) abort();
    }
    (void)sink;
    qn_st_close(f);
    return 0;
}
