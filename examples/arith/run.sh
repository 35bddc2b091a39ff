#!/usr/bin/env bash
# run.sh — the examples/arith job end to end: data and SFT warm start
# (prepare.sh), then GRPO with `quench launch` (router, buffer, one engine,
# the evaluator and the trainer on this machine, decoupled, async: rollout
# k+1 is generated while the trainer trains on k), then charts.
#
#   examples/arith/run.sh [RUN_DIR] [more quench launch flags]
#
# RUN_DIR (default runs/arith-<date>-<time>) ends up holding data/, init/,
# sft/, the job's logs/, checkpoints/ and metrics.jsonl, and charts/*.png.
# The last line is `accuracy: <start> -> <end> (run: RUN_DIR)`: held-out
# exact-match accuracy of greedy answers before GRPO (the SFT policy) and
# after the last rollout, as fractions, from the eval lines of
# metrics.jsonl. Exit status 1 when the job or the charts fail.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
EX=$ROOT/examples/arith
BIN=${QN_BIN_DIR:-$ROOT/build/bin}
RUN=${1:-runs/arith-$(date +%Y%m%d-%H%M%S)}
shift $(($# > 0 ? 1 : 0))
. "$EX/recipe.sh"
mkdir -p "$RUN"
RUN=$(cd "$RUN" && pwd)
"$EX/prepare.sh" "$RUN"
# 2 cores: the engine and the trainer get one each (they run at the same time in async mode)
"$BIN/quench" launch --hf-checkpoint "$RUN/sft" --tokenizer "$EX" --run-dir "$RUN" \
    --prompt-data "$RUN/data/train.jsonl" "${ROLLOUT_ARGS[@]}" "${GRPO_ARGS[@]}" \
    --eval-prompt-data "$RUN/data/eval.jsonl" "${EVAL_ARGS[@]}" \
    --async --threads 1 "$@"
"$BIN/quench" plot "$RUN"
acc=$(grep -o '"eval/accuracy":[0-9.]*' "$RUN/metrics.jsonl" | cut -d: -f2)
echo "accuracy: $(echo "$acc" | head -1) -> $(echo "$acc" | tail -1) (run: $RUN)"
