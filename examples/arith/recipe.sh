# recipe.sh — the settings of the examples/arith job, sourced by
# examples/arith/prepare.sh, examples/arith/run.sh and scripts/bench-launch.sh
# (README.md here explains each choice and how it was found). Arrays of
# flags, in slime's grouping.

# data: 2-digit zero-padded additions; 4000 RL prompts, 500 held out for
# evaluation, 40,000 SFT samples from a teacher that forgets to carry 60% of
# the time (quench-arith-gen --help)
ARITH_GEN_ARGS=(--n-train 4000 --n-eval 500 --n-sft 40000 --sft-noise 0.6)

# SFT warm start (quench train-step): 5000 steps of 8 samples
SFT_ARGS=(--loss-type sft --global-batch-size 8 --micro-batch-size 8
          --lr 3e-3 --lr-warmup-iters 10 --lr-decay-style cosine --min-lr 1e-4 --weight-decay 0)

# GRPO (quench launch): 40 rollouts of 32 prompts x 8 samples, one optimizer step each
ROLLOUT_ARGS=(--input-key prompt --label-key label --reward math
              --rollout-batch-size 32 --n-samples-per-prompt 8
              --rollout-max-response-len 8 --rollout-temperature 1.0 --num-rollout 40)
GRPO_ARGS=(--global-batch-size 256 --lr 1e-4 --eps-clip 0.2 --eps-clip-high 0.28
           --weight-decay 0)
EVAL_ARGS=(--eval-interval 10 --eval-max-response-len 8)
