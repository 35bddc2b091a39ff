#!/usr/bin/env bash
# test_gpu_check.sh — scripts/gpu-check.sh on a machine without a GPU: it must
# say so and exit 77 (ctest: skipped) before building anything, never report
# a pass. (On a GPU machine the script itself is the check; see docs/cuda.md.)
set -euo pipefail
SRC=${QN_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    echo "SKIPPED: this machine has a GPU; run scripts/gpu-check.sh itself"
    exit 77
fi
set +e
OUT=$TMP/out BUILD_DIR=$TMP/build "$SRC/scripts/gpu-check.sh" >"$TMP/log" 2>&1
rc=$?
set -e
cat "$TMP/log"
[ "$rc" = 77 ] || { echo "FAIL: exit $rc without a GPU, expected 77"; exit 1; }
grep -q "^gpu: none" "$TMP/out/summary.txt" || { echo "FAIL: summary does not say there is no GPU"; exit 1; }
if grep -q "PASS" "$TMP/out/summary.txt"; then echo "FAIL: reported a pass without a GPU"; exit 1; fi
[ ! -e "$TMP/build" ] || { echo "FAIL: built without a GPU"; exit 1; }
echo PASS
