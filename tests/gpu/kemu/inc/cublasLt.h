// cublasLt.h (kernel emulation): the names cuda_common.cuh mentions. There is
// no cuBLASLt here; backend.c's qn_cuda_gemm_ex stands in for gemm.h.
#pragma once
typedef int cublasStatus_t;
enum { CUBLAS_STATUS_SUCCESS = 0 };
static inline const char *cublasGetStatusString(cublasStatus_t s) { return "emulated"; }
typedef void *cublasLtHandle_t;
