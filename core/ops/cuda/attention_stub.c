/* attention_stub.c — the CUDA attention ops of attention.h for builds
 * without CUDA (QN_CUDA=OFF): arguments are validated exactly as with CUDA
 * (so a bad shape is reported as such in every build), then the call
 * returns QN_ERR_NO_DEVICE. With CUDA, attention.cu provides the functions
 * and this file compiles to nothing. The planning functions live in
 * attention_plan.c, built in both configurations. */
#ifndef QN_HAVE_CUDA
#include "core/ops/cuda/attention.h"

#define QN_NO_CUDA_MSG "this quench was built without CUDA (QN_CUDA=OFF)"

qn_status qn_cuda_attention_forward(qn_cuda_ctx *c, qn_dtype dt, void *out, float *lse,
                                    const void *q, const void *k, const void *v,
                                    const int32_t *cu_seqlens, int S, int T, int NH, int NKV,
                                    int HD, int max_seqlen) {
    qn_cuda_att_plan p;
    QN_CHECK(qn_cuda_attention_plan(dt, S, T, NH, NKV, HD, max_seqlen, &p));
    return qn_fail(QN_ERR_NO_DEVICE, "qn_cuda_attention_forward: " QN_NO_CUDA_MSG);
}

qn_status qn_cuda_attention_backward(qn_cuda_ctx *c, qn_dtype dt, void *dq, void *dk, void *dv,
                                     const void *dout, const void *q, const void *k,
                                     const void *v, const void *out, const float *lse,
                                     const int32_t *cu_seqlens, int S, int T, int NH, int NKV,
                                     int HD, int max_seqlen) {
    qn_cuda_att_plan p;
    QN_CHECK(qn_cuda_attention_plan(dt, S, T, NH, NKV, HD, max_seqlen, &p));
    return qn_fail(QN_ERR_NO_DEVICE, "qn_cuda_attention_backward: " QN_NO_CUDA_MSG);
}

qn_status qn_cuda_paged_attention_forward(qn_cuda_ctx *c, qn_dtype dt,
                                          const qn_cuda_paged_attn *a) {
    qn_cuda_paged_plan p;
    QN_CHECK(qn_cuda_paged_attention_plan(dt, a, 0, &p));
    return qn_fail(QN_ERR_NO_DEVICE, "qn_cuda_paged_attention_forward: " QN_NO_CUDA_MSG);
}
#else
typedef int qn_cuda_attention_stub_unused_; /* ISO C forbids an empty translation unit */
#endif
