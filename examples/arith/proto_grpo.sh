#!/usr/bin/env bash
# proto_grpo.sh — the examples/arith recipe run with the offline tools only
# (quench-arith-gen, init-model, train-step, generate, reward): data, a
# random tiny GLM-4.5-style MoE, a short SFT warm start, then a synchronous
# GRPO loop, with held-out greedy accuracy before and after. A research tool
# for finding and checking the recipe that `quench launch` runs as services;
# it is not how a real job runs (no buffer, router or engines, every step
# starts fresh processes). Needs jq and bc.
#
#   examples/arith/proto_grpo.sh [RUN_DIR]      (default runs/arith-proto)
#
# Every knob is an environment variable (defaults = the recipe in README.md):
#   SEED            data, init and sampling seed (default 1)
#   SFT_N SFT_BS SFT_LR   SFT samples, batch, peak lr
#   SFT_NOISE       chance that an SFT answer forgets every carry
#   ROLLOUTS        GRPO rollouts (one or more optimizer steps each)
#   PROMPTS SAMPLES prompts per rollout, samples per prompt
#   LR CLIP CLIP_HIGH STEPS_PER_ROLLOUT MAX_NEW TEMP   GRPO settings
#   EVAL_EVERY      greedy held-out eval every K rollouts (0: only at the end)
#   CONFIG          model config.json (default examples/arith/config.json)
#   QN_BIN_DIR      where quench and quench-arith-gen are (default build/bin)
#   OMP_NUM_THREADS threads of every quench process (default 2)
set -euo pipefail
cd "$(dirname "$0")/../.."
EX=examples/arith
RUN=${1:-runs/arith-proto}
BIN=${QN_BIN_DIR:-build/bin}
Q=$BIN/quench
SEED=${SEED:-1}
SFT_N=${SFT_N:-40000} SFT_BS=${SFT_BS:-8} SFT_LR=${SFT_LR:-3e-3} SFT_NOISE=${SFT_NOISE:-0.6}
ROLLOUTS=${ROLLOUTS:-40} PROMPTS=${PROMPTS:-32} SAMPLES=${SAMPLES:-8}
LR=${LR:-1e-4} CLIP=${CLIP:-0.2} CLIP_HIGH=${CLIP_HIGH:-0.28} STEPS_PER_ROLLOUT=${STEPS_PER_ROLLOUT:-1}
MAX_NEW=${MAX_NEW:-8} TEMP=${TEMP:-1.0} EVAL_EVERY=${EVAL_EVERY:-0}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$RUN"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$RUN/log.txt"; }
now() { date +%s.%N; }

# eval MODEL TAG: greedy answers to the held-out prompts, scored by the math
# reward (the fraction with reward 1 is the exact-match accuracy: the label
# and the trained answers are fixed-width).
eval_model() {
    local m=$1 tag=$2
    $Q generate --model "$m" --tokenizer $EX --input "$RUN/data/eval.jsonl" \
        --output "$RUN/eval-$tag.out.jsonl" --temperature 0 --max-new-tokens "$MAX_NEW" 2>/dev/null
    jq -c --slurpfile ev "$RUN/data/eval.jsonl" -n \
        '[inputs] | to_entries[] | {prompt: $ev[.key].prompt, label: $ev[.key].label,
          response: (.value.text | sub("<\\|endoftext\\|>$"; ""))}' \
        "$RUN/eval-$tag.out.jsonl" > "$RUN/eval-$tag.samples.jsonl"
    $Q reward --rm-type math --reward-isolation inline --input "$RUN/eval-$tag.samples.jsonl" \
        --output "$RUN/eval-$tag.rewards.jsonl" 2>/dev/null
    local acc
    acc=$(jq -s 'map(.reward // 0) | add / length' "$RUN/eval-$tag.rewards.jsonl")
    log "eval $tag: held-out greedy accuracy $acc"
    echo "$acc" > "$RUN/acc-$tag"
}

t0=$(now)
mkdir -p "$RUN/data"
$BIN/quench-arith-gen --tokenizer $EX --out-dir "$RUN/data" --seed "$SEED" --n-sft "$SFT_N" \
    --sft-noise "$SFT_NOISE"
$Q init-model --config "${CONFIG:-$EX/config.json}" --out "$RUN/init" --seed "$SEED" >/dev/null

# SFT warm start: SFT_N / SFT_BS optimizer steps over the generated batch.
t_sft=$(now)
$Q train-step --model "$RUN/init" --batch "$RUN/data/sft.jsonl" --out "$RUN/sft" \
    --loss-type sft --global-batch-size "$SFT_BS" --micro-batch-size "$SFT_BS" \
    --lr "$SFT_LR" --lr-warmup-iters 10 --lr-decay-style cosine --min-lr 1e-4 \
    --weight-decay 0 2>/dev/null > "$RUN/sft-metrics.jsonl"
log "sft: $((SFT_N / SFT_BS)) steps in $(echo "$(now) - $t_sft" | bc) s, last loss $(tail -1 "$RUN/sft-metrics.jsonl" | jq '."train/loss"')"
eval_model "$RUN/sft" sft

# GRPO: rollout r takes PROMPTS consecutive training prompts, SAMPLES samples
# each at temperature TEMP, scores them with the math reward and takes
# STEPS_PER_ROLLOUT optimizer steps on the group-normalised advantages.
t_rl=$(now)
cur="$RUN/sft" load=()
n_train=$(wc -l < "$RUN/data/train.jsonl")
: > "$RUN/rl-metrics.jsonl"
for ((r = 0; r < ROLLOUTS; r++)); do
    d="$RUN/rollout"
    mkdir -p "$d"
    start=$(( (r * PROMPTS) % n_train ))
    sed -n "$((start + 1)),$((start + PROMPTS))p" "$RUN/data/train.jsonl" > "$d/prompts.jsonl"
    jq -c '{text}' "$d/prompts.jsonl" > "$d/in.jsonl"
    $Q generate --model "$cur" --tokenizer $EX --input "$d/in.jsonl" --output "$d/out.jsonl" \
        --temperature "$TEMP" --max-new-tokens "$MAX_NEW" --n-samples-per-prompt "$SAMPLES" \
        --seed "$((SEED * 7919 + r))" 2>/dev/null
    # one line per sample: prompt, response, label, and what the batch needs
    jq -c --slurpfile p "$d/prompts.jsonl" -n '
        [inputs] | to_entries[] | .key as $g | $p[$g] as $pr | .value.samples[] |
        {prompt: $pr.prompt, label: $pr.label, group: $g,
         response: (.text | sub("<\\|endoftext\\|>$"; "")),
         tokens: ($pr.prompt_ids + .output_ids), response_start: ($pr.prompt_ids | length),
         rollout_logprobs: .output_logprobs}' "$d/out.jsonl" > "$d/samples.jsonl"
    $Q reward --rm-type math --reward-isolation inline --input "$d/samples.jsonl" \
        --output "$d/rewards.jsonl" 2>/dev/null
    jq -c -n --slurpfile rw "$d/rewards.jsonl" \
        '[inputs] | to_entries[] | .value + {reward: ($rw[.key].reward // 0)} |
         {tokens, response_start, group, reward, rollout_logprobs}' \
        "$d/samples.jsonl" > "$d/batch.jsonl"
    mean=$(jq -s 'map(.reward) | add / length' "$d/batch.jsonl")
    nb=$(( PROMPTS * SAMPLES / STEPS_PER_ROLLOUT ))
    next="$RUN/policy-$((r % 2))"
    rm -rf "$next"
    $Q train-step --model "$cur" "${load[@]}" --batch "$d/batch.jsonl" --out "$next" \
        --rollout-id "$r" --global-batch-size "$nb" --micro-batch-size "$nb" \
        --lr "$LR" --eps-clip "$CLIP" --eps-clip-high "$CLIP_HIGH" --weight-decay 0 \
        --rollout-temperature "$TEMP" 2>/dev/null | tail -1 |
        jq -c --argjson r "$r" --argjson m "$mean" '{rollout: $r, "rollout/reward": $m} + .' \
        >> "$RUN/rl-metrics.jsonl"
    cur="$next" load=(--load "$next")
    log "rollout $r: mean reward $mean"
    if [ "$EVAL_EVERY" -gt 0 ] && [ $(( (r + 1) % EVAL_EVERY )) -eq 0 ]; then
        eval_model "$cur" "r$((r + 1))"
    fi
done
t_end=$(now)
log "grpo: $ROLLOUTS rollouts in $(echo "$t_end - $t_rl" | bc) s"
eval_model "$cur" final
log "total $(echo "$(now) - $t0" | bc) s; accuracy $(cat "$RUN/acc-sft") -> $(cat "$RUN/acc-final")"
