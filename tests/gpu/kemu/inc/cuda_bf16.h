// cuda_bf16.h (kernel emulation): bf16 as 16 bits, converted with
// core/dtype.h's round-to-nearest-even, which tests/gpu/test_cuda_dtype.c
// checks against __float2bfloat16_rn on a GPU.
#pragma once
#include <stdint.h>

#include "core/dtype.h"

struct __nv_bfloat16 {
    uint16_t x;
};
static inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    __nv_bfloat16 b;
    b.x = qn_f32_to_bf16(f);
    return b;
}
static inline float __bfloat162float(__nv_bfloat16 b) { return qn_bf16_to_f32(b.x); }
