#!/usr/bin/env bash
# test.sh — installs dependencies, builds, and runs the whole test suite
# through ctest. Exits non-zero on any failure. Extra arguments go to ctest
# (e.g. scripts/test.sh -L unit).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh -DQN_BUILD_TESTS=ON
cd "${BUILD_DIR:-build}"
ctest --output-on-failure -j "$(nproc)" "$@"
