#!/usr/bin/env bash
# run.sh — runs the log-prob, loss, router and MoE kernels on the CPU: the
# real device code of core/ops/cuda/{tiled_gemm,logprob,loss,moe}.cu,
# rewritten by rewrite.py (<<<...>>> launches into emu_launch calls) and
# compiled as host C++ against inc/ (a coroutine per CUDA thread, emu.cc),
# driven by the unchanged harness families tests/gpu/ops/ops_logprob.c and
# ops_moe.c through backend.c. It checks the kernels' indexing, barriers,
# reductions, tie rules and the host code around them against the CPU ops
# on a machine without a GPU. It cannot show races that lock-step
# coroutines hide, device expf/exp rounding, speed, or nvcc's code; the GPU
# harness (qn_test_ops --op logprob / loss / router / moe) is the real check.
#
# Usage: tests/gpu/kemu/run.sh BUILD_DIR [OP_PREFIX]
#   BUILD_DIR  a build of quench, preferably -DQN_CUDA=OFF (its
#              libquench_core.a / libquench_trainer.a are linked; the
#              emulated objects come first, so the archives' versions of
#              these ops are not used)
#   OP_PREFIX  as qn_test_ops --op (logprob, loss, router, moe, ...)
# Environment: KEMU_BLAS=1 sends plain GEMMs to a host qn_sgemm in place of
# cuBLASLt (otherwise they run on the emulated tiled kernel); KEMU_ASAN=1
# builds with AddressSanitizer. The full sweep takes ~5 minutes on one core.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../../.." && pwd)
build=$(cd "${1:?usage: run.sh BUILD_DIR [OP_PREFIX]}" && pwd)
out=$build/kemu
mkdir -p "$out"
san=()
if [ "${KEMU_ASAN:-0}" = 1 ]; then
    san=(-fsanitize=address -fno-omit-frame-pointer)
    # backend.c never frees; ASan warns once about the coroutine stacks
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
fi
inc=(-I"$here/inc" -I"$src" -I"$src/include")
for f in tiled_gemm logprob loss moe; do
    python3 "$here/rewrite.py" "$src/core/ops/cuda/$f.cu" "$out/$f.cc"
    g++ -std=c++17 -O2 -g -D_GNU_SOURCE -Wall -Wno-unused-parameter -Wno-unused-function -Wno-unknown-pragmas \
        "${san[@]}" "${inc[@]}" -c "$out/$f.cc" -o "$out/$f.o"
done
g++ -std=c++17 -O2 -g "${san[@]}" -I"$here/inc" -c "$here/emu.cc" -o "$out/emu.o"
for f in "$here/backend.c" "$src/tests/gpu/ops/ops_logprob.c" "$src/tests/gpu/ops/ops_moe.c" \
         "$src/tests/gpu/ops/harness_host.c"; do
    gcc -std=c11 -O2 -g -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -fopenmp "${san[@]}" \
        -I"$src" -I"$src/include" -c "$f" -o "$out/$(basename "$f" .c).o"
done
# the link line of the build's own qn_test_ops supplies the libraries
libs=$(sed -e 's/.* -o qn_test_ops //' "$build/tests/CMakeFiles/qn_test_ops.dir/link.txt")
(cd "$build/tests" && g++ -fopenmp "${san[@]}" "$out"/backend.o "$out"/emu.o "$out"/tiled_gemm.o \
    "$out"/logprob.o "$out"/loss.o "$out"/moe.o "$out"/ops_logprob.o "$out"/ops_moe.o \
    "$out"/harness_host.o -o "$out/kemu_test" $libs)
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$out/kemu_test" ${2:+"$2"}
