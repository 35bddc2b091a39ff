#!/usr/bin/env bash
# sanitize.sh — builds quench with AddressSanitizer + UndefinedBehaviorSanitizer
# into build-asan/ (CUDA off) and runs the unit tests there.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
BUILD_DIR=build-asan scripts/build.sh -DQN_SANITIZE=ON -DQN_CUDA=OFF -DCMAKE_BUILD_TYPE=Debug
cd build-asan
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --output-on-failure -j "$(nproc)" -L unit "$@"
