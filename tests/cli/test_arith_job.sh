#!/usr/bin/env bash
# test_arith_job.sh — the quickstart's job (examples/arith/run.sh) end to end
# on this machine: data, SFT warm start, GRPO through `quench launch` (real
# redis-server, router, buffer, engine, evaluator and trainer processes,
# async), charts. Checks what scripts/quickstart.sh promises: the last line
# is `accuracy: <start> -> <end> (run: DIR)`, both numbers are eval/accuracy
# lines of DIR/metrics.jsonl (before any rollout, and after the last), the
# end is at least 0.15 above the start, every chart is a PNG, and the job
# left no process behind.
set -u
Q=${QN_BIN:?QN_BIN not set}
SRC=${QN_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
TMP=$(mktemp -d)
trap 'pkill -9 -f "$TMP/" 2>/dev/null; rm -rf "$TMP"' EXIT
unset QN_WORLD_SIZE QN_RANK QN_REDIS_URL QN_JOB
fail() {
    echo "FAIL: $*"
    tail -30 "$TMP/out.txt"
    exit 1
}
RUN=$TMP/run
QN_BIN_DIR=$(dirname "$Q") THREADS=1 timeout 900 "$SRC/examples/arith/run.sh" "$RUN" \
    >"$TMP/out.txt" 2>&1 || fail "examples/arith/run.sh exited $?"
last=$(tail -1 "$TMP/out.txt")
echo "$last"
echo "$last" | grep -Eq "^accuracy: [0-9.]+ -> [0-9.]+ \(run: $RUN\)$" || fail "last line: $last"
start=$(echo "$last" | sed 's/^accuracy: \([0-9.]*\) .*/\1/')
end=$(echo "$last" | sed 's/^accuracy: [0-9.]* -> \([0-9.]*\) .*/\1/')
grep -q "\"rollout_id\":0,\"eval/weight_version\":0,\"eval/accuracy\":$start," "$RUN/metrics.jsonl" ||
    fail "the start accuracy is not the eval of version 0 in metrics.jsonl"
grep -q "\"rollout_id\":40,\"eval/weight_version\":40,\"eval/accuracy\":$end," "$RUN/metrics.jsonl" ||
    fail "the end accuracy is not the eval of the final version 40 in metrics.jsonl"
awk -v s="$start" -v e="$end" 'BEGIN { exit !(e - s >= 0.15) }' ||
    fail "accuracy gained $start -> $end, less than 0.15"
for c in reward accuracy response_length kl entropy clip_fraction tokens_per_s step_time; do
    head -c 8 "$RUN/charts/$c.png" | od -An -tx1 | grep -q "89 50 4e 47 0d 0a 1a 0a" ||
        fail "charts/$c.png is not a PNG"
done
[ "$(cat "$RUN/checkpoints/latest")" = "step-40" ] || fail "not 40 optimizer steps"
pgrep -f "$RUN" >/dev/null && fail "processes of the job still run"
echo PASS
