#!/usr/bin/env bash
# fuzz.sh — builds the libFuzzer targets with clang into build-fuzz/ and runs
# one of them on its seed corpus (copied to build-fuzz/corpus/<name>, so the
# committed seeds are not mixed with what the fuzzer finds).
#   scripts/fuzz.sh safetensors            # 1,000,000 runs
#   scripts/fuzz.sh envelope -runs=100000  # extra args go to libFuzzer
# FUZZ_BUILD_DIR (default build-fuzz) lets parallel runs use separate build trees.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: scripts/fuzz.sh <target> [libFuzzer args]}
shift
bd=${FUZZ_BUILD_DIR:-build-fuzz}
scripts/install-deps.sh
# Libraries get coverage instrumentation and ASan/UBSan too (QN_SANITIZE), not just the target.
# clang++ too: a C++ object in a library makes CMake link the fuzzer with the C++ compiler.
CC=clang CXX=clang++ cmake -S . -B "$bd" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQN_FUZZ=ON \
  -DQN_CUDA=OFF -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DQN_SANITIZE=ON \
  -DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link -DCMAKE_CXX_FLAGS=-fsanitize=fuzzer-no-link >/dev/null
# Only the target being fuzzed (and what it links): quicker than the whole tree.
cmake --build "$bd" --target fuzz_$name -j "${JOBS:-$(nproc)}" >/dev/null
mkdir -p "$bd/corpus/$name"
cp -n tests/fuzz/corpus/$name/* "$bd/corpus/$name/" 2>/dev/null || true
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(-runs=1000000)
# Crash reproducers go to build-fuzz/, not the source tree.
exec "$bd/tests/fuzz_$name" "${args[@]}" -print_final_stats=1 -artifact_prefix="$bd/" \
  "$bd/corpus/$name"
