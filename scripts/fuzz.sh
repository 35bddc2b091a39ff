#!/usr/bin/env bash
# fuzz.sh — builds the libFuzzer targets with clang into build-fuzz/ and runs
# one of them on its seed corpus (copied to build-fuzz/corpus/<name>, so the
# committed seeds are not mixed with what the fuzzer finds).
#   scripts/fuzz.sh safetensors            # 1,000,000 runs
#   scripts/fuzz.sh envelope -runs=100000  # extra args go to libFuzzer
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: scripts/fuzz.sh <target> [libFuzzer args]}
shift
scripts/install-deps.sh
# Libraries get coverage instrumentation and ASan/UBSan too (QN_SANITIZE), not just the target.
BUILD_DIR=build-fuzz CC=clang scripts/build.sh -DQN_FUZZ=ON -DQN_CUDA=OFF -DCMAKE_C_COMPILER=clang \
  -DQN_SANITIZE=ON -DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link >/dev/null
mkdir -p build-fuzz/corpus/$name
cp -n tests/fuzz/corpus/$name/* build-fuzz/corpus/$name/ 2>/dev/null || true
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(-runs=1000000)
# Crash reproducers go to build-fuzz/, not the source tree.
exec build-fuzz/tests/fuzz_$name "${args[@]}" -print_final_stats=1 -artifact_prefix=build-fuzz/ \
  build-fuzz/corpus/$name
