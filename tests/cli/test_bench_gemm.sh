#!/usr/bin/env bash
# test_bench_gemm.sh — `quench bench gemm`: refuses devices other than cuda,
# and without a CUDA device prints a clear "no CUDA device" error and exits 1
# (never a table of made-up figures). With a GPU present this test is
# skipped (77): the benchmark itself is run by hand (docs/cuda.md).
set -uo pipefail
Q=${QN_BIN:?QN_BIN not set}
out=$("$Q" bench gemm --device cpu 2>&1); rc=$?
echo "$out"
[ "$rc" -ne 0 ] || { echo "FAIL: --device cpu accepted"; exit 1; }
grep -q "only cuda" <<<"$out" || { echo "FAIL: no explanation for --device cpu"; exit 1; }
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then
    echo "SKIP: a GPU is present; run quench bench gemm --device cuda by hand"
    exit 77
fi
out=$("$Q" bench gemm --device cuda --m 64 2>&1); rc=$?
echo "$out"
[ "$rc" -eq 1 ] || { echo "FAIL: exit status $rc without a device, want 1"; exit 1; }
grep -q "no CUDA device" <<<"$out" || { echo "FAIL: no 'no CUDA device' message"; exit 1; }
grep -q "TF/s" <<<"$out" && { echo "FAIL: printed a table without a device"; exit 1; }
echo "PASS"
