#!/usr/bin/env bash
# run-qwen3-4B.sh — GRPO on Qwen3-4B on one node of 8 GPUs, trainer and rollout
# colocated, four rollout engines of 2 GPUs; slime's recipe for this model (its
# scripts/run-qwen3-4B.sh) translated for `quench launch`, array by array.
#
# Usage:
#   BASE_DIR=/data scripts/run-qwen3-4B.sh [quench launch flags]
#   scripts/run-qwen3-4B.sh --dry-run      # print the plan, start nothing
# Flags given to the script come last, so they override the recipe's.
#
# Environment:
#   BASE_DIR   folder (default /root) holding Qwen3-4B/ (the Hugging Face
#              checkpoint, Qwen/Qwen3-4B), dapo-math-17k/dapo-math-17k.jsonl and
#              aime-2024/aime-2024.jsonl
#   HOSTFILE   optional: a one-line hostfile ("HOST slots=8") to run the job on
#              another machine; unset, the job runs on this one
#   RUN_DIR    the job's folder (default $BASE_DIR/Qwen3-4B_quench): logs,
#              metrics.jsonl, checkpoints (slime's --save folder). When it
#              already holds a job, the job is resumed (quench launch --load),
#              as slime resumes from --load.
#   QUENCH     the quench binary (default build/bin/quench of this checkout)
#
# What differs from slime's script (more in scripts/run-glm4.5-355B-A32B.sh):
#   - --rm-type deepscaler is --reward deepscaler (and --eval-reward for eval);
#     --eval-prompt-data takes one file, not "NAME FILE";
#   - --load/--save FOLDER is RUN_DIR (checkpoints in RUN_DIR/checkpoints);
#   - the trainer starts from the Hugging Face folder, and --ref-load names it;
#   - slime's --colocate gives the engines all the actor's GPUs; quench is told
#     (--rollout-num-gpus 8);
#   - slime's eval samples at the rollout temperature unless told otherwise,
#     quench's eval is greedy by default: --eval-temperature 0.8 keeps slime's;
#   - SGLANG_ARGS is ROLLOUT_ENGINE_ARGS;
#   - slime flags quench does not have yet are in NOT_YET_SUPPORTED below; each
#     is reported on stderr as "not yet supported: FLAG (REASON)" and not passed
#     (quench launch would refuse it: "unknown flag", exit status 2).
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" &>/dev/null && pwd)"
# shellcheck source=scripts/models/qwen3-4B.sh
source "${SCRIPT_DIR}/models/qwen3-4B.sh"
# shellcheck source=scripts/launch-common.sh
source "${SCRIPT_DIR}/launch-common.sh"

BASE_DIR=${BASE_DIR:-/root}
QUENCH=${QUENCH:-$(cd -- "${SCRIPT_DIR}/.." && pwd)/build/bin/quench}
RUN_DIR=${RUN_DIR:-${BASE_DIR}/Qwen3-4B_quench}

CLUSTER_ARGS=(
   --actor-num-nodes 1
   --actor-num-gpus-per-node 8
   --num-gpus-per-node 8
   --colocate
   --rollout-num-gpus 8
   --job qwen3-4B
)

CKPT_ARGS=(
   --hf-checkpoint "${BASE_DIR}/Qwen3-4B"
   --ref-load "${BASE_DIR}/Qwen3-4B"
   # slime reads the tokenizer from --hf-checkpoint; quench's buffer, eval and
   # router need it named (text prompts, the chat template, decoded answers)
   --tokenizer "${BASE_DIR}/Qwen3-4B"
   --save-interval 20
)

ROLLOUT_ARGS=(
   --prompt-data "${BASE_DIR}/dapo-math-17k/dapo-math-17k.jsonl"
   --input-key prompt
   --label-key label
   --apply-chat-template
   --rollout-shuffle
   --reward deepscaler
   --num-rollout 3000
   --rollout-batch-size 32
   --n-samples-per-prompt 8
   --rollout-max-response-len 8192
   --rollout-temperature 0.8

   --global-batch-size 256
)

EVAL_ARGS=(
   --eval-interval 20
   --eval-prompt-data "${BASE_DIR}/aime-2024/aime-2024.jsonl"
   --eval-reward deepscaler
   --n-samples-per-eval-prompt 16
   --eval-max-response-len 16384
   --eval-temperature 0.8
   --eval-top-p 0.7
)

PERF_ARGS=(
   --use-dynamic-batch-size
   --max-tokens-per-gpu 9216
)

GRPO_ARGS=(
   --advantage-estimator grpo
   --use-kl-loss
   --kl-loss-coef 0.00
   --kl-loss-type low_var_kl
   --entropy-coef 0.00
   --eps-clip 0.2
   --eps-clip-high 0.28
)

OPTIMIZER_ARGS=(
   --lr 1e-6
   --lr-decay-style constant
   --weight-decay 0.1
   --adam-beta1 0.9
   --adam-beta2 0.98
)

ROLLOUT_ENGINE_ARGS=(
   --rollout-num-gpus-per-engine 2
)

MISC_ARGS=(
   # slime's are Megatron knobs (dropout, fp32 softmax, attention backend):
   # see NOT_YET_SUPPORTED
)

# shellcheck disable=SC2034 # read by qn_report_not_yet_supported
NOT_YET_SUPPORTED=(
   "--tensor-model-parallel-size 2"     "trainer ranks are data-parallel only: no tensor parallelism yet"
   "--sequence-parallel"                "comes with tensor parallelism"
   "--pipeline-model-parallel-size 1"   "no pipeline parallelism yet; 1 is what quench does"
   "--context-parallel-size 1"          "no context parallelism yet; 1 is what quench does"
   "--expert-model-parallel-size 1"     "no expert parallelism yet; 1 is what quench does"
   "--expert-tensor-parallel-size 1"    "no expert parallelism yet; 1 is what quench does"
   "--recompute-granularity full"       "no activation recomputation yet"
   "--recompute-method uniform"         "no activation recomputation yet"
   "--recompute-num-layers 1"           "no activation recomputation yet"
   "--balance-data"                     "the trainer balances tokens over ranks when it packs micro-batches; no flag"
   "--optimizer adam"                   "the trainer always uses Adam with decoupled weight decay; no flag"
   "--sglang-mem-fraction-static 0.7"   "not SGLang: the engine's KV cache is sized with --kv-cache-tokens"
   "--attention-dropout 0.0"            "quench has no dropout; 0 is what it does"
   "--hidden-dropout 0.0"               "quench has no dropout; 0 is what it does"
   "--accumulate-allreduce-grads-in-fp32" "a Megatron knob: gradients are reduced in fp32 anyway"
   "--attention-softmax-in-fp32"        "a Megatron knob: attention softmax is fp32 anyway"
   "--attention-backend flash"          "a Megatron knob: quench has one attention implementation per device"
)

qn_report_not_yet_supported
qn_hostfile_args 1 8 "$@"
qn_run_dir_args "$RUN_DIR"

qn_launch \
   "${CLUSTER_ARGS[@]}" \
   "${HOSTFILE_ARGS[@]}" \
   "${RUN_DIR_ARGS[@]}" \
   "${MODEL_ARGS[@]}" \
   "${CKPT_ARGS[@]}" \
   "${ROLLOUT_ARGS[@]}" \
   "${OPTIMIZER_ARGS[@]}" \
   "${GRPO_ARGS[@]}" \
   "${PERF_ARGS[@]}" \
   "${EVAL_ARGS[@]}" \
   "${ROLLOUT_ENGINE_ARGS[@]}" \
   "${MISC_ARGS[@]}" \
   "$@"
