/* test_nccl_dist.c — the NCCL backend (core/dist/nccl_dist.h) on real GPUs.
 *
 * One GPU: a group of one (no Redis) — all-reduce leaves f32 and bf16 data
 * as it was, broadcast from root 0 too, wait returns; a root out of range
 * and an unsupported dtype are refused. Two or more GPUs: two processes
 * (one per GPU) meet through a real redis-server, all-reduce f32 values
 * each computes itself and broadcast root 1's bytes, and every result is
 * checked on the host. (NCCL refuses two ranks on one GPU, so a one-GPU
 * machine checks the single-rank path only, and says so.)
 *
 * Prints "SKIPPED: ..." and exits 77 without a CUDA device or without NCCL
 * in the build. */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/dist/nccl_dist.h"
#include "core/dtype.h"
#include "core/ops/cuda/cuda_ctx.h"
#include "core/ops/cuda/cuda_rt.h"
#include "tests/test_util.h"

#define N 100003 /* not a multiple of anything NCCL chunks by */

static int fail(const char *what) {
    fprintf(stderr, "FAIL: %s: %s\n", what, qn_last_error());
    return 1;
}

static float val(int rank, size_t i) { return (float)(rank + 1) * 0.25f + (float)(i % 1000) * 1e-3f; }

/* One rank: returns 0 when every check passed. */
static int rank_main(int rank, int world, const char *url) {
    qn_cuda_ctx *c = NULL;
    qn_cuda_ctx_params p = {.device = rank, .arena_bytes = 64u << 20};
    if (qn_cuda_ctx_create(&p, &c) != QN_OK) return fail("ctx");
    qn_dist_config cfg = {.rank = rank, .world_size = world, .redis_url = url, .job = "t",
                          .group = "nccl", .timeout_ms = 60000};
    qn_nccl *n = NULL;
    if (qn_nccl_init(&cfg, rank, qn_cuda_ctx_stream(c), &n) != QN_OK) return fail("init");
    float *h = malloc(N * sizeof *h);
    float *dev = qn_cuda_alloc(c, N * sizeof *h);
    if (!h || !dev) return fail("alloc");
    for (size_t i = 0; i < N; i++) h[i] = val(rank, i);
    if (qn_cuda_upload(c, dev, h, N * sizeof *h) != QN_OK) return fail("upload");
    if (qn_nccl_allreduce_sum(n, dev, N, QN_DTYPE_F32) != QN_OK) return fail("allreduce");
    if (qn_nccl_wait(n) != QN_OK) return fail("wait");
    if (qn_cuda_download(c, h, dev, N * sizeof *h) != QN_OK) return fail("download");
    for (size_t i = 0; i < N; i++) {
        float want = 0;
        for (int r = 0; r < world; r++) want += val(r, i);
        if (!isfinite(h[i]) || fabsf(h[i] - want) > 1e-5f * fabsf(want)) {
            fprintf(stderr, "FAIL: rank %d: allreduce[%zu] = %g, want %g\n", rank, i, h[i], want);
            return 1;
        }
    }
    /* bf16 all-reduce of exactly representable values */
    uint16_t *hb = malloc(N * sizeof *hb);
    for (size_t i = 0; i < N; i++) hb[i] = qn_f32_to_bf16((float)(i % 64));
    if (qn_cuda_upload(c, dev, hb, N * sizeof *hb) != QN_OK) return fail("upload bf16");
    if (qn_nccl_allreduce_sum(n, dev, N, QN_DTYPE_BF16) != QN_OK) return fail("allreduce bf16");
    if (qn_nccl_wait(n) != QN_OK) return fail("wait bf16");
    if (qn_cuda_download(c, hb, dev, N * sizeof *hb) != QN_OK) return fail("download bf16");
    for (size_t i = 0; i < N; i++)
        if (qn_bf16_to_f32(hb[i]) != (float)(world * (int)(i % 64))) {
            fprintf(stderr, "FAIL: rank %d: bf16 allreduce[%zu] = %g\n", rank, i,
                    qn_bf16_to_f32(hb[i]));
            return 1;
        }
    /* broadcast from the last rank */
    int root = world - 1;
    unsigned char *b = (unsigned char *)h;
    for (size_t i = 0; i < N * sizeof *h; i++) b[i] = (unsigned char)(rank == root ? i * 7 : 0xEE);
    if (qn_cuda_upload(c, dev, h, N * sizeof *h) != QN_OK) return fail("upload bcast");
    if (qn_nccl_broadcast(n, dev, N * sizeof *h, root) != QN_OK) return fail("broadcast");
    if (qn_nccl_wait(n) != QN_OK) return fail("wait bcast");
    if (qn_cuda_download(c, h, dev, N * sizeof *h) != QN_OK) return fail("download bcast");
    for (size_t i = 0; i < N * sizeof *h; i++)
        if (b[i] != (unsigned char)(i * 7)) {
            fprintf(stderr, "FAIL: rank %d: broadcast byte %zu\n", rank, i);
            return 1;
        }
    if (qn_nccl_broadcast(n, dev, 4, world) != QN_ERR_INVALID) return fail("bad root accepted");
    if (qn_nccl_allreduce_sum(n, dev, 4, QN_DTYPE_I32) != QN_ERR_UNSUPPORTED)
        return fail("i32 accepted");
    qn_nccl_free(n);
    qn_cuda_ctx_free(c);
    free(h);
    free(hb);
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    /* a rank of the two-rank group, started below by fork + exec */
    if (argc == 4 && strcmp(argv[1], "--rank") == 0) return rank_main(atoi(argv[2]), 2, argv[3]);
    int ndev = qn_cuda_device_count();
    if (ndev == 0) {
        printf("SKIPPED: no CUDA device\n");
        return 77;
    }
    qn_nccl *probe = NULL;
    qn_dist_config one = {.rank = 0, .world_size = 1};
    if (qn_nccl_init(&one, 0, NULL, &probe) == QN_ERR_UNSUPPORTED) {
        printf("SKIPPED: %s\n", qn_nccl_describe());
        return 77;
    }
    qn_nccl_free(probe);
    printf("%s, %d GPU(s)\n", qn_nccl_describe(), ndev);
    if (rank_main(0, 1, NULL) != 0) return 1;
    printf("single rank: all-reduce f32/bf16, broadcast: ok\n");
    if (ndev < 2) {
        printf("two ranks: not run (one GPU; NCCL needs a GPU per rank)\n");
        return 0;
    }
    char url[512];
    pid_t redis = qn_test_redis_start(qn_test_tmpdir(), NULL, url, sizeof url);
    pid_t kids[2];
    for (int r = 0; r < 2; r++) {
        /* exec, not just fork: this process has initialised CUDA, and a forked child
         * cannot use CUDA (cudaErrorInitializationError) */
        char rank_s[8];
        snprintf(rank_s, sizeof rank_s, "%d", r);
        kids[r] = fork();
        if (kids[r] == 0) {
            execl("/proc/self/exe", argv[0], "--rank", rank_s, url, (char *)NULL);
            _exit(127);
        }
    }
    int bad = 0;
    for (int r = 0; r < 2; r++) {
        int st = 0;
        waitpid(kids[r], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) bad = 1;
    }
    qn_test_redis_stop(redis, 0);
    if (bad) {
        fprintf(stderr, "FAIL: a rank of the two-rank group failed\n");
        return 1;
    }
    printf("two ranks through Redis: all-reduce f32/bf16, broadcast: ok\n");
    return 0;
}
