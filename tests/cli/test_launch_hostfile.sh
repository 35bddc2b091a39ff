#!/usr/bin/env bash
# test_launch_hostfile.sh — `quench launch --hostfile` with two "nodes" on
# this machine (127.0.0.1 and 127.0.0.2) and real ssh (tests/cli/
# sshd_local.sh): node 0 runs Redis, the router, the buffer and the trainer;
# the engine is placed on node 1 and started through ssh.
#   1. the job finishes (exit 0); the engine ran under sshd (not as the
#      launcher's child) and served the job (it registered, its log is in
#      RUN_DIR/logs like the others); nothing is left running;
#   2. kill -9 of the launcher: the remote engine ends too (its ssh session
#      closes), so nothing is left running on either "node".
# Exits 77 (skipped) when sshd is not installed.
set -u
Q=${QN_BIN:?QN_BIN not set}
SRC=${QN_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
TMP=$(mktemp -d)
LPID=
. "$SRC/tests/cli/sshd_local.sh"
cleanup() {
    [ -n "$LPID" ] && kill -9 "$LPID" 2>/dev/null
    pkill -9 -f "$TMP/run" 2>/dev/null
    sshd_local_stop
    rm -rf "$TMP"
}
trap cleanup EXIT
export OMP_NUM_THREADS=1
unset QN_WORLD_SIZE QN_RANK QN_REDIS_URL QN_JOB
fail() {
    echo "FAIL: $*"
    for f in "$TMP"/*.out "$TMP"/run*/logs/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -15 "$f"; }; done
    exit 1
}
wait_for() {
    local t=$1
    shift
    for _ in $(seq 1 $((t * 10))); do "$@" && return 0; sleep 0.1; done
    return 1
}
exited() { ! kill -0 "$1" 2>/dev/null; }
none_running() { ! pgrep -f "$1" >/dev/null; }

sshd_local_start "$TMP/ssh" || exit $?
"$Q" init-model --config "$SRC/tests/ref/configs/tiny_glm45.json" --out "$TMP/model" --seed 3 >/dev/null ||
    fail "init-model"
/usr/bin/python3 -c "
import json
for i in range(32): print(json.dumps({'prompt': [1 + i % 7, 2 + i % 5, 3], 'label': 'x'}))
" >"$TMP/prompts.jsonl"
# node 0 by name (resolved to its address for binding), node 1 by address
printf 'localhost slots=1\n127.0.0.2 slots=1\n' >"$TMP/hosts"
ARGS=(--hf-checkpoint "$TMP/model" --prompt-data "$TMP/prompts.jsonl" --reward exact
      --rollout-batch-size 2 --n-samples-per-prompt 4 --global-batch-size 8 --threads 1
      --hostfile "$TMP/hosts" --ssh-command "$SSHD_LOCAL_SSH" --engine-timeout-ms 3000)

# ---------------------------------------------------------------- 1. a job over two nodes
"$Q" launch "${ARGS[@]}" --num-rollout 4 --dry-run >"$TMP/plan.out" 2>&1 || fail "dry run"
grep -q "^\[engine-0\] node 1 (127.0.0.2)" "$TMP/plan.out" || fail "engine not placed on node 1"
grep -q "^\[trainer-0\] node 0 (localhost)" "$TMP/plan.out" || fail "trainer not on node 0"
grep -q "^node 0: localhost (127.0.0.1)" "$TMP/plan.out" || fail "node 0's name not resolved"
RUN=$TMP/run1
"$Q" launch "${ARGS[@]}" --num-rollout 4 --rollout-max-response-len 600 --run-dir "$RUN" \
    >"$TMP/run1.out" 2>&1 &
LPID=$!
wait_for 60 grep -q "registered" "$RUN/logs/router.log" 2>/dev/null || fail "no engine registered"
EPID=$(pgrep -f "quench rollout .*--model=$TMP/model" | head -1)
[ -n "$EPID" ] || fail "no engine process"
PP=$(ps -o ppid= -p "$EPID" | tr -d ' ')
[ "$PP" != "$LPID" ] || fail "the engine is the launcher's own child, not started over ssh"
ANC=$PP
UNDER_SSHD=0
for _ in 1 2 3 4 5 6; do
    case "$(ps -o comm= -p "$ANC" 2>/dev/null)" in sshd*) UNDER_SSHD=1; break ;; esac
    ANC=$(ps -o ppid= -p "$ANC" 2>/dev/null | tr -d ' ')
    [ -n "$ANC" ] && [ "$ANC" -gt 1 ] || break
done
[ "$UNDER_SSHD" -eq 1 ] || fail "the engine does not run under sshd"
wait_for 120 exited "$LPID" || fail "the job did not end"
wait "$LPID"
RC=$?
LPID=
[ "$RC" -eq 0 ] || fail "two-node job exited $RC"
grep -q "engine engine-0.0 registered" "$RUN/logs/router.log" || fail "router log"
grep -q "applied" "$RUN/logs/engine-0.log" || fail "the remote engine's log is not in RUN_DIR/logs"
[ "$(cat "$RUN/checkpoints/latest")" = "step-4" ] || fail "not 4 rollouts trained"
wait_for 10 none_running "$RUN" || fail "processes left after the job"
wait_for 10 none_running "quench rollout .*--model=$TMP/model" || fail "remote engine left running"
echo "ok 1: a job over two nodes, the engine started through ssh"

# ---------------------------------------------------------------- 2. kill -9 of the launcher
RUN=$TMP/run2
"$Q" launch "${ARGS[@]}" --num-rollout 1000 --run-dir "$RUN" >"$TMP/run2.out" 2>&1 &
LPID=$!
wait_for 60 grep -q '"perf/train_wait_time"' "$RUN/metrics.jsonl" 2>/dev/null || fail "run2: nothing trained"
pgrep -f "quench rollout .*--model=$TMP/model" >/dev/null || fail "run2: no engine"
kill -9 "$LPID"
wait "$LPID" 2>/dev/null
LPID=
wait_for 15 none_running "quench rollout .*--model=$TMP/model" ||
    fail "the remote engine outlived the killed launcher"
wait_for 10 none_running "$RUN" || fail "processes outlived the killed launcher"
echo "ok 2: kill -9 of the launcher ends the remote engine too"
echo "PASS"
