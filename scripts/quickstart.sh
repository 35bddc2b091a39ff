#!/usr/bin/env bash
# quickstart.sh — from a fresh clone: installs what quench needs to build and
# run (Debian packages), builds it, and runs the main job, examples/arith: a
# tiny GLM-4.5-style MoE is warm-started with SFT on sloppy arithmetic, then
# trained with GRPO by `quench launch` (router, buffer, a rollout engine, the
# evaluator and the trainer as separate processes, async), and the run's
# charts are drawn. Takes a few minutes on a 2-core machine.
#
# The last line is
#   accuracy: <start> -> <end> (run: <run dir>)
# (held-out exact-match accuracy before and after GRPO, as fractions); the run
# directory holds metrics.jsonl, charts/*.png, the logs of every process and
# the checkpoints. RUN_DIR chooses it (default runs/quickstart-<date>-<time>).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --runtime
scripts/build.sh -DQN_BUILD_TESTS=OFF
echo "== quench is built: $(build/bin/quench --version | head -1)"
echo "== examples/arith: data, SFT warm start, GRPO with quench launch, charts"
exec examples/arith/run.sh "${RUN_DIR:-runs/quickstart-$(date +%Y%m%d-%H%M%S)}"
