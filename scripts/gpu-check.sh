#!/usr/bin/env bash
# gpu-check.sh — the first thing to run on a GPU machine, in one command: builds
# quench with CUDA (against the offline bundle .deps-bundle/ when it is there,
# see docs/cuda.md), then runs the GPU tests, the op harness family by family
# (so that one family's fault does not hide the next one's results), the perf
# cases, and `quench bench gemm --device cuda`. Everything goes to five files
# in OUT (default ./gpu-check-out): build.log, tests.log, ops.log, perf.log and
# summary.txt (pass/fail/skip counts per step; read it first).
#
#   scripts/bundle-deps.sh                 # here, once: makes .deps-bundle/
#   scripts/gpu-check.sh                   # there (carry .deps-bundle)
#
# Environment: OUT, BUILD_DIR (default build-gpu), JOBS (default all cores),
# QN_GPU_CHECK_PERF=0 to skip the perf cases. Exit status: 0 when every step
# that ran passed, 1 otherwise (a build failure stops at once), 77 without a
# GPU (nvidia-smi finds none; nothing is built).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
BUILD_DIR=${BUILD_DIR:-build-gpu}
mkdir -p "$OUT"
summary=$OUT/summary.txt
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }

if ! gpus=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1); then
    note "gpu: none (nvidia-smi: ${gpus:-not found}); nothing to check here"
    exit 77
fi
echo "$gpus" | sed 's/^/gpu: /' | tee -a "$summary"
if [ -f .deps-bundle/env.sh ]; then
    # shellcheck disable=SC1091
    . .deps-bundle/env.sh
    note "deps: the offline bundle ($QN_DEPS_PREFIX)"
else
    note "deps: the system's (no .deps-bundle/)"
fi

t0=$(date +%s)
if ! BUILD_DIR=$BUILD_DIR scripts/build.sh -DQN_CUDA=ON -DQN_BUILD_TESTS=ON >"$OUT/build.log" 2>&1; then
    note "build: FAILED after $(($(date +%s) - t0)) s (tail of build.log:)"
    tail -n 30 "$OUT/build.log" | tee -a "$summary"
    exit 1
fi
note "build: ok in $(($(date +%s) - t0)) s"
bin=$BUILD_DIR/tests
rc=0

# The GPU-labelled tests and the host-side tests of the CUDA code.
(cd "$BUILD_DIR" && ctest -L gpu --output-on-failure --timeout 1800 &&
    ctest -R 'harness_host|cuda_|attention_emu|ops_emulated|rendezvous|nccl' --output-on-failure) \
    >"$OUT/tests.log" 2>&1 || rc=1
note "ctest: $(grep -E 'tests passed|tests failed' "$OUT/tests.log" | tr '\n' ' ')"

# The op harness, one family prefix at a time, in the order the helpers' notes give.
: >"$OUT/ops.log"
for op in elementwise_refuse convert embedding rmsnorm rope swiglu adamw sumsq \
          gemm matmul fp8_quant_act fp8_requant fp8_gemm_layout fp8 \
          attention loss logprob router moe; do
    echo "== qn_test_ops --op $op" >>"$OUT/ops.log"
    "$bin/qn_test_ops" --op "$op" >>"$OUT/ops.log" 2>&1
    st=$?
    note "ops $op: exit $st, $(tail -n 1 "$OUT/ops.log")"
    [ $st -eq 0 ] || rc=1
done
note "ops: $(grep -c '^OK' "$OUT/ops.log") OK, $(grep -c '^FAIL' "$OUT/ops.log") FAIL lines in ops.log"

if [ "${QN_GPU_CHECK_PERF:-1}" != 0 ]; then
    : >"$OUT/perf.log"
    for op in gemm_perf attention logprob_fwd_glm moe_glm_air embedding rmsnorm; do
        echo "== qn_test_ops --op $op --perf" >>"$OUT/perf.log"
        "$bin/qn_test_ops" --op "$op" --perf >>"$OUT/perf.log" 2>&1 || rc=1
    done
    echo "== quench bench gemm --device cuda" >>"$OUT/perf.log"
    "$BUILD_DIR/bin/quench" bench gemm --device cuda >>"$OUT/perf.log" 2>&1 || rc=1
    note "perf: see perf.log ($(grep -c 'TFLOP/s\|GB/s' "$OUT/perf.log") timing lines)"
fi
note "gpu-check: $([ $rc -eq 0 ] && echo PASS || echo FAIL) ($(($(date +%s) - t0)) s)"
exit $rc
