#!/usr/bin/env bash
# run-glm4.5-355B-A32B.sh — GRPO on GLM-4.5 (355B total, 32B active) over 64
# H100s: 8 nodes of 8 GPUs, trainer and rollout colocated, two rollout engines
# of 32 GPUs; slime's recipe for this model (its scripts/run-glm4.5-355B-A32B.sh)
# translated for `quench launch`, array by array.
#
# Usage, on the first node of the job:
#   HOSTFILE=hosts BASE_DIR=/data scripts/run-glm4.5-355B-A32B.sh [quench launch flags]
#   scripts/run-glm4.5-355B-A32B.sh --dry-run      # print the plan, start nothing
# Flags given to the script come last, so they override the recipe's.
#
# Environment:
#   BASE_DIR   folder every node can read (default /root) holding
#              GLM-4.5-355B-A32B/ (the Hugging Face checkpoint, zai-org/GLM-4.5),
#              dapo-math-17k/dapo-math-17k.jsonl and rl_data/aime-2024.jsonl
#   HOSTFILE   the 8 nodes, one "HOST slots=8" line each, this machine first
#              (MPI format; the other nodes are reached with ssh). Unset: under
#              Slurm the allocation is used; with --dry-run an example hostfile
#              (node0..node7) is written to a temporary folder and removed after;
#              otherwise the script stops with an error.
#   RUN_DIR    the job's folder (default $BASE_DIR/GLM-4.5-355B-A32B_quench): logs,
#              metrics.jsonl, checkpoints. When it already holds a job, the job
#              is resumed (quench launch --load), as slime resumes from --load.
#   QUENCH     the quench binary (default build/bin/quench of this checkout)
#
# What differs from slime's script:
#   - no Ray and no Megatron: `quench launch` starts every process itself;
#     the trainer starts from the Hugging Face folder (no torch_dist copy),
#     and --ref-load names that same folder;
#   - --rm-type deepscaler is --reward deepscaler (and --eval-reward for eval);
#     the dynamic-sampling filter path is --dynamic-sampling-filter nonzero_std;
#     --eval-prompt-data takes one file, not "NAME FILE";
#   - slime's --colocate gives the engines all the actor's GPUs; quench is told
#     (--rollout-num-gpus 64);
#   - slime's eval samples at the rollout temperature unless told otherwise,
#     quench's eval is greedy by default: --eval-temperature 0.8 keeps slime's;
#   - slime saves nothing in this recipe; quench always checkpoints into
#     RUN_DIR/checkpoints: every 20 rollouts here;
#   - SGLANG_ARGS is ROLLOUT_ENGINE_ARGS;
#   - slime flags quench does not have yet are in NOT_YET_SUPPORTED below; each
#     is reported on stderr as "not yet supported: FLAG (REASON)" and not passed
#     (quench launch would refuse it: "unknown flag", exit status 2).
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" &>/dev/null && pwd)"
# shellcheck source=scripts/models/glm4.5-355B-A32B.sh
source "${SCRIPT_DIR}/models/glm4.5-355B-A32B.sh"
# shellcheck source=scripts/launch-common.sh
source "${SCRIPT_DIR}/launch-common.sh"

BASE_DIR=${BASE_DIR:-/root}
QUENCH=${QUENCH:-$(cd -- "${SCRIPT_DIR}/.." && pwd)/build/bin/quench}
RUN_DIR=${RUN_DIR:-${BASE_DIR}/GLM-4.5-355B-A32B_quench}

CLUSTER_ARGS=(
   --actor-num-nodes 8
   --actor-num-gpus-per-node 8
   --num-gpus-per-node 8
   --colocate
   --rollout-num-gpus 64
   --job glm4.5-355B-A32B
)

CKPT_ARGS=(
   --hf-checkpoint "${BASE_DIR}/GLM-4.5-355B-A32B"
   --ref-load "${BASE_DIR}/GLM-4.5-355B-A32B"
   # slime reads the tokenizer from --hf-checkpoint; quench's buffer, eval and
   # router need it named (text prompts, the chat template, decoded answers)
   --tokenizer "${BASE_DIR}/GLM-4.5-355B-A32B"
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
   --rollout-batch-size 128
   --n-samples-per-prompt 8
   --rollout-max-response-len 32768
   --rollout-temperature 0.8

   --over-sampling-batch-size 256
   --dynamic-sampling-filter nonzero_std

   --num-steps-per-rollout 4
)

EVAL_ARGS=(
   --eval-interval 20
   --eval-prompt-data "${BASE_DIR}/rl_data/aime-2024.jsonl"
   --eval-reward deepscaler
   --n-samples-per-eval-prompt 8
   --eval-max-response-len 32768
   --eval-temperature 0.8
   --eval-top-p 0.7
)

PERF_ARGS=(
   # a sample longer than this (up to 32768 response tokens) gets a
   # micro-batch of its own; slime splits it over its 2 context-parallel ranks
   --use-dynamic-batch-size
   --max-tokens-per-gpu 16384
)

GRPO_ARGS=(
   # slime trains this recipe with GSPO (not in quench yet, see below); the
   # clip range is slime's, which GSPO applies to a sequence-level ratio and
   # grpo here to each token's ratio
   --advantage-estimator grpo
   --kl-loss-coef 0.00
   --kl-loss-type low_var_kl
   --entropy-coef 0.00
   --eps-clip 1e-4
   --eps-clip-high 2e-4

   --use-tis
)

OPTIMIZER_ARGS=(
   --lr 1e-6
   --lr-decay-style constant
   --weight-decay 0.1
   --adam-beta1 0.9
   --adam-beta2 0.98
)

ROLLOUT_ENGINE_ARGS=(
   --rollout-num-gpus-per-engine 32
)

MISC_ARGS=(
   # slime's are Megatron knobs (dropout, fp32 softmax, attention backend):
   # see NOT_YET_SUPPORTED
)

# shellcheck disable=SC2034 # read by qn_report_not_yet_supported
NOT_YET_SUPPORTED=(
   "--tensor-model-parallel-size 8"     "trainer ranks are data-parallel only: no tensor parallelism yet"
   "--sequence-parallel"                "comes with tensor parallelism"
   "--pipeline-model-parallel-size 4"   "no pipeline parallelism yet"
   "--context-parallel-size 2"          "no context parallelism yet: a sequence stays on one GPU"
   "--expert-model-parallel-size 16"    "no expert parallelism in the trainer yet"
   "--expert-tensor-parallel-size 1"    "no expert parallelism in the trainer yet; 1 is what quench does"
   "--recompute-granularity full"       "no activation recomputation yet"
   "--recompute-method uniform"         "no activation recomputation yet"
   "--recompute-num-layers 1"           "no activation recomputation yet"
   "--balance-data"                     "the trainer balances tokens over ranks when it packs micro-batches; no flag"
   "--rollout-stop-token-ids 151329 151336 151338" "engines stop at generation_config.json's eos_token_id, GLM-4.5's are these three; no flag for more"
   "--advantage-estimator gspo"         "only grpo, which this script trains with"
   "--kl-coef 0.00"                     "no KL penalty in the reward; 0 is what quench does"
   "--optimizer adam"                   "the trainer always uses Adam with decoupled weight decay; no flag"
   "--optimizer-cpu-offload"            "optimizer states stay on the GPU"
   "--overlap-cpu-optimizer-d2h-h2d"    "comes with optimizer CPU offload"
   "--use-precision-aware-optimizer"    "optimizer states are fp32; no lower-precision states yet"
   "--sglang-mem-fraction-static 0.7"   "not SGLang: the engine's KV cache is sized with --kv-cache-tokens"
   "--sglang-enable-dp-attention"       "no data-parallel attention in the engine yet"
   "--sglang-dp-size 4"                 "no data-parallel attention in the engine yet"
   "--attention-dropout 0.0"            "quench has no dropout; 0 is what it does"
   "--hidden-dropout 0.0"               "quench has no dropout; 0 is what it does"
   "--accumulate-allreduce-grads-in-fp32" "a Megatron knob: gradients are reduced in fp32 anyway"
   "--attention-softmax-in-fp32"        "a Megatron knob: attention softmax is fp32 anyway"
   "--attention-backend flash"          "a Megatron knob: quench has one attention implementation per device"
   "--save-debug-rollout-data data.pt"  "no rollout dump in slime's format; the trainer's --dump-batches DIR writes JSONL"
)

qn_report_not_yet_supported
qn_hostfile_args 8 8 "$@"
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
