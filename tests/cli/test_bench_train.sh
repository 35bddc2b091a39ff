#!/usr/bin/env bash
# test_bench_train.sh — `quench bench train` on a tiny model: both kinds run,
# the packed step computes exactly the real tokens, the padded one more
# (padding is really fed to the model), and a finite positive ratio is printed.
set -euo pipefail
Q=${QN_BIN:?QN_BIN not set}
SRC=${QN_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
out=$("$Q" bench train --config "$SRC/tests/ref/configs/tiny_qwen3moe.json" --samples 16 \
      --max-len 128 --median-len 40 --threads 1)
echo "$out"
real=$(sed -n 's/.* samples: \([0-9]*\) real tokens.*/\1/p' <<<"$out")
packed=$(sed -n 's/^packed (.*(\([0-9]*\) computed).*/\1/p' <<<"$out")
padded=$(sed -n 's/^padded (.*(\([0-9]*\) computed,.*/\1/p' <<<"$out")
ratio=$(sed -n 's/^ratio packed \/ padded: \([0-9.]*\)x$/\1/p' <<<"$out")
[ -n "$real" ] && [ -n "$packed" ] && [ -n "$padded" ] && [ -n "$ratio" ] \
    || { echo "FAIL: output lacks a figure"; exit 1; }
[ "$packed" = "$real" ] || { echo "FAIL: packed computed $packed tokens, real $real"; exit 1; }
[ "$padded" -gt "$real" ] || { echo "FAIL: padded computed $padded <= real $real"; exit 1; }
awk -v r="$ratio" 'BEGIN { exit !(r > 0 && r < 1e6) }' || { echo "FAIL: ratio $ratio"; exit 1; }
echo "PASS"
