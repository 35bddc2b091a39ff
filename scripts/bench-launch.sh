#!/usr/bin/env bash
# bench-launch.sh — whole-job figures of `quench launch` on this machine:
# rollout tokens/s with 2 engines against 1, and the time of one rollout step
# in async mode against sync mode, each measured in the same run of this
# script (ratios, not absolute numbers, are what carry over).
#
#   scripts/bench-launch.sh [WORK_DIR]          (default runs/bench-launch)
#
# Two jobs, each run three ways (1 engine sync, 2 engines sync, 1 engine
# async), every process with --threads 1 (one core per engine, as one GPU
# per engine on a cluster):
#   arith    the quickstart's job (examples/arith after its SFT warm start,
#            its 40 rollouts): 4-token answers, so a rollout is mostly
#            request overhead;
#   long     a random ~25M-parameter GLM-4.5-style MoE
#            (bench/configs/glm45_25m.json), LONG_ROLLOUTS rollouts of 8
#            prompts x 4 samples, 16-token prompts answered with RESPONSE_LEN
#            tokens at temperature 1: generation-bound.
# Figures (means over the rollouts after the first): perf/rollout_tokens_per_s
# and perf/rollout_time (buffer), perf/step_time (trainer rank 0: waiting for
# the batch + training + the weight update, i.e. the wall time of a step).
# Needs a quiet machine: other work on the cores skews every figure.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-runs/bench-launch}
Q=${QUENCH:-build/bin/quench}
LONG_ROLLOUTS=${LONG_ROLLOUTS:-5}
RESPONSE_LEN=${RESPONSE_LEN:-64}
export OMP_NUM_THREADS=1
mkdir -p "$WORK"

# mean KEY FILE: the mean of KEY over the lines that have it, the first skipped
mean() {
    grep -o "\"$1\": *[-0-9.e+]*" "$2" | sed 's/.*: *//' |
        awk 'NR > 1 { s += $1; n++ } END { if (n) printf "%.4g", s / n; else print "nan" }'
}

# job NAME ARGS...: one launch into WORK/NAME; prints the figures
job() {
    local name=$1
    shift
    rm -rf "${WORK:?}/$name"
    local t0 t1
    t0=$(date +%s.%N)
    "$Q" launch --threads 1 --run-dir "$WORK/$name" --stream none "$@" \
        >"$WORK/$name.out" 2>&1 || { echo "bench-launch: $name failed, see $WORK/$name.out" >&2; exit 1; }
    t1=$(date +%s.%N)
    local m=$WORK/$name/metrics.jsonl
    printf '%-14s %10s %10s %10s %8.1f\n' "$name" "$(mean perf/rollout_tokens_per_s "$m")" \
        "$(mean perf/rollout_time "$m")" "$(mean perf/step_time "$m")" \
        "$(echo "$t1 - $t0" | bc)"
    echo "$name $(mean perf/rollout_tokens_per_s "$m") $(mean perf/step_time "$m")" >>"$WORK/figures"
}

ratio() { # ratio NAME_A NAME_B COLUMN(2: tokens/s, 3: step time) -> A / B
    awk -v a="$1" -v b="$2" -v c="$3" '$1 == a { x = $c } $1 == b { y = $c }
        END { if (y > 0) printf "%.2f", x / y; else print "nan" }' "$WORK/figures"
}

: >"$WORK/figures"
# ---------------------------------------------------------------- the arith job
. examples/arith/recipe.sh # ROLLOUT_ARGS, GRPO_ARGS: the quickstart's settings
ARITH=$WORK/arith-prep
if [ ! -f "$ARITH/sft/model.safetensors" ]; then
    echo "== preparing examples/arith (data, SFT warm start) in $ARITH"
    examples/arith/prepare.sh "$ARITH" >"$WORK/arith-prep.out" 2>&1
fi
ARITH_ARGS=(--hf-checkpoint "$ARITH/sft" --tokenizer examples/arith
            --prompt-data "$ARITH/data/train.jsonl" --input-key prompt --label-key label
            "${ROLLOUT_ARGS[@]}" "${GRPO_ARGS[@]}")
# ---------------------------------------------------------------- the long-response job
LONG=$WORK/long-prep
if [ ! -f "$LONG/model/model.safetensors" ]; then
    mkdir -p "$LONG"
    "$Q" init-model --config bench/configs/glm45_25m.json --out "$LONG/model" --seed 1 >/dev/null
    awk 'BEGIN { for (i = 0; i < 1024; i++) { printf "{\"prompt\": ["; for (j = 0; j < 16; j++)
         printf "%s%d", j ? ", " : "", (i * 7 + j * 13) % 1000 + 1; print "], \"label\": \"x\"}" } }' \
        >"$LONG/prompts.jsonl"
fi
LONG_ARGS=(--hf-checkpoint "$LONG/model" --prompt-data "$LONG/prompts.jsonl" --reward exact
           --num-rollout "$LONG_ROLLOUTS" --rollout-batch-size 8 --n-samples-per-prompt 4
           --global-batch-size 32
           --rollout-max-response-len "$RESPONSE_LEN" --rollout-temperature 1.0)

printf '%-14s %10s %10s %10s %8s\n' job "tokens/s" "rollout s" "step s" "wall s"
job arith-sync-1 "${ARITH_ARGS[@]}"
job arith-sync-2 "${ARITH_ARGS[@]}" --rollout-num-engines 2
job arith-async-1 "${ARITH_ARGS[@]}" --async
job long-sync-1 "${LONG_ARGS[@]}"
job long-sync-2 "${LONG_ARGS[@]}" --rollout-num-engines 2
job long-async-1 "${LONG_ARGS[@]}" --async
echo
echo "2 engines / 1 engine, rollout tokens/s: arith $(ratio arith-sync-2 arith-sync-1 2)x, long $(ratio long-sync-2 long-sync-1 2)x"
echo "async / sync, step time:               arith $(ratio arith-async-1 arith-sync-1 3)x, long $(ratio long-async-1 long-sync-1 3)x"
