#!/usr/bin/env bash
# prepare.sh — the examples/arith job up to GRPO: the data, a randomly
# initialised tiny GLM-4.5-style MoE, and its SFT warm start.
#
#   examples/arith/prepare.sh RUN_DIR      (SEED=1 by default)
#
# Writes RUN_DIR/data/{train,eval,sft}.jsonl, RUN_DIR/init (random weights)
# and RUN_DIR/sft (the warm-started policy, an HF folder), and prints the
# SFT's last loss. Settings: examples/arith/recipe.sh.
set -euo pipefail
RUN=${1:?usage: examples/arith/prepare.sh RUN_DIR}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
EX=$ROOT/examples/arith
BIN=${QN_BIN_DIR:-$ROOT/build/bin}
SEED=${SEED:-1}
. "$EX/recipe.sh"
mkdir -p "$RUN/data"
"$BIN/quench-arith-gen" --tokenizer "$EX" --out-dir "$RUN/data" --seed "$SEED" "${ARITH_GEN_ARGS[@]}"
"$BIN/quench" init-model --config "$EX/config.json" --out "$RUN/init" --seed "$SEED" >/dev/null
t0=$(date +%s)
"$BIN/quench" train-step --model "$RUN/init" --batch "$RUN/data/sft.jsonl" --out "$RUN/sft" \
    "${SFT_ARGS[@]}" --threads "${THREADS:-2}" >"$RUN/sft-metrics.jsonl" 2>"$RUN/sft.log"
echo "arith: SFT warm start: $(wc -l <"$RUN/sft-metrics.jsonl") steps in $(($(date +%s) - t0)) s," \
    "last $(tail -1 "$RUN/sft-metrics.jsonl" | grep -o '"train/loss": *[-0-9.e+]*')"
