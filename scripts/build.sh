#!/usr/bin/env bash
# build.sh — configures and builds quench into build/ (the binary is
# build/bin/quench). Extra arguments go to cmake's configure step, e.g.
#   scripts/build.sh -DQN_CUDA=OFF
# Environment: BUILD_DIR (default build), JOBS (default: all cores).
# In CI (CI=true) warnings are errors.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
extra=()
if [ "${CI:-}" = "true" ]; then extra+=(-DQN_WERROR=ON); fi
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} "${extra[@]}" "$@" >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS"
