#!/usr/bin/env bash
# test.sh — installs dependencies, builds, and runs the whole test suite
# through ctest, then (where nvcc is) builds the CUDA backend too and runs its
# tests (skipped without a GPU). Exits non-zero on any failure. Extra arguments
# go to the first ctest (e.g. scripts/test.sh -L unit); QN_TEST_NO_CUDA=1 skips
# the CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh -DQN_BUILD_TESTS=ON
(cd "${BUILD_DIR:-build}" && ctest --output-on-failure -j "$(nproc)" "$@")
# The CUDA build, where nvcc is: every .cu file must compile (sm_90), and its GPU
# tests must report themselves skipped without a GPU, with the CUDA code's host-side
# tests passing (the full suite runs in the CPU build above).
if [ -z "${QN_TEST_NO_CUDA:-}" ] && { command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; }; then
    BUILD_DIR=${BUILD_DIR:-build}-cuda scripts/build.sh -DQN_CUDA=ON -DQN_BUILD_TESTS=ON
    (cd "${BUILD_DIR:-build}-cuda" && ctest --output-on-failure -j "$(nproc)" \
        -R 'test_cuda_|test_nccl|test_backend_ops|harness_host|ops_skip|bench_gemm|gpu_check')
fi
