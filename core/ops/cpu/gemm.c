/* gemm.c — qn_sgemm: every matrix product of the CPU ops goes through here.
 *
 * Why not let OpenBLAS thread: Debian's OpenBLAS uses its own pthread pool,
 * and the ops also use OpenMP for elementwise work. The two pools spin-wait
 * on the same cores between calls and slow each other down badly (measured
 * on 2 cores: rmsnorm 6x and the vocabulary head 2.7x slower than with
 * OMP_WAIT_POLICY=passive). So OpenBLAS is set to one thread, once, and
 * qn_sgemm splits the output over OpenMP threads, each slice one
 * single-threaded cblas_sgemm. Inside an OpenMP parallel region (the
 * attention and expert tasks) it does not nest: the call runs on the caller's
 * thread. Left out: packing-aware tiling (OpenBLAS does that within a
 * slice).
 */
#include <cblas.h>
#include <omp.h>
#include <pthread.h>

#include "core/ops/cpu/ops.h"

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static void blas_single(void) {
    openblas_set_num_threads(1);
}

void qn_blas_init(void) {
    pthread_once(&g_once, blas_single);
}

/* Below this many multiply-adds a product stays on one thread. */
#define QN_GEMM_PAR_MIN (1 << 18)

void qn_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    qn_blas_init();
    if (M <= 0 || N <= 0) return;
    enum CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
    int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (nt <= 1 || (double)M * N * (K > 0 ? K : 1) < QN_GEMM_PAR_MIN) {
        cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    /* split the larger output dimension into nt slices of whole 16-blocks */
    int split_m = M >= N;
    int D = split_m ? M : N;
    int per = (D + nt - 1) / nt;
    per = (per + 15) / 16 * 16;
    int ns = (D + per - 1) / per;
#pragma omp parallel for schedule(static) num_threads(ns)
    for (int s = 0; s < ns; s++) {
        int d0 = s * per, d = D - d0 < per ? D - d0 : per;
        if (split_m) {
            const float *As = trans_a ? A + d0 : A + (size_t)d0 * lda;
            cblas_sgemm(CblasRowMajor, ta, tb, d, N, K, alpha, As, lda, B, ldb, beta,
                        C + (size_t)d0 * ldc, ldc);
        } else {
            const float *Bs = trans_b ? B + (size_t)d0 * ldb : B + d0;
            cblas_sgemm(CblasRowMajor, ta, tb, M, d, K, alpha, A, lda, Bs, ldb, beta, C + d0, ldc);
        }
    }
}
