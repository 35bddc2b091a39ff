#!/usr/bin/env bash
# test_launch.sh — `quench launch` as users meet it, with real processes:
#   1. the plan: --dry-run of a 2-node hostfile GPU job (decoupled and
#      colocated), a Slurm node list, flags routed to the right processes,
#      unknown / launcher-owned / mismatching model flags refused;
#   2. a local job whose engine is killed with -9 while it generates: the
#      launcher restarts it, the job finishes (exit 0), every rollout is
#      generated once and trained once, and nothing is left running;
#   3. SIGTERM to the launcher: everything is torn down, exit status 143;
#      a crash of a process other than an engine (the buffer, kill -9) stops
#      the job with the reason and the end of its log, exit status 1;
#   4. kill -9 of the launcher mid-job: its processes die with it; then
#      `quench launch --load RUN_DIR` resumes from Redis and the last
#      checkpoint and finishes: the checkpoints form one chain, optimizer
#      step k trained on rollout k-1 for every k, none skipped or repeated,
#      and the buffer drew every prompt once.
# Every wait is bounded; every process is killed on exit.
set -u
Q=${QN_BIN:?QN_BIN not set}
SRC=${QN_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
TMP=$(mktemp -d)
LPID=
cleanup() {
    [ -n "$LPID" ] && kill -9 "$LPID" 2>/dev/null
    pkill -9 -f "$TMP/" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
export OMP_NUM_THREADS=1
unset QN_WORLD_SIZE QN_RANK QN_REDIS_URL QN_JOB
fail() {
    echo "FAIL: $*"
    for f in "$TMP"/*.out "$TMP"/run*/logs/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -20 "$f"; }; done
    exit 1
}
# wait_for SECONDS CMD...: polls CMD until it succeeds
wait_for() {
    local t=$1
    shift
    for _ in $(seq 1 $((t * 10))); do "$@" && return 0; sleep 0.1; done
    return 1
}
left_running() { pgrep -f "$1" >/dev/null; }
none_running() { ! pgrep -f "$1" >/dev/null; }
exited() { ! kill -0 "$1" 2>/dev/null; }

"$Q" init-model --config "$SRC/tests/ref/configs/tiny_glm45.json" --out "$TMP/model" --seed 3 >/dev/null ||
    fail "init-model"
/usr/bin/python3 -c "
import json
for i in range(64): print(json.dumps({'prompt': [1 + i % 7, 2 + i % 5, 3 + i % 3], 'label': 'x'}))
" >"$TMP/prompts.jsonl"
COMMON=(--hf-checkpoint "$TMP/model" --prompt-data "$TMP/prompts.jsonl" --reward exact
        --rollout-batch-size 4 --n-samples-per-prompt 4 --global-batch-size 16
        --rollout-temperature 1.0 --threads 1 --engine-timeout-ms 3000)

# ---------------------------------------------------------------- 1. the plan
printf '10.0.0.1 slots=8\n10.0.0.2 slots=8  # second node\n' >"$TMP/hosts"
"$Q" launch "${COMMON[@]}" --num-rollout 5 --hostfile "$TMP/hosts" --actor-num-nodes 1 \
    --actor-num-gpus-per-node 8 --rollout-num-gpus 8 --rollout-num-gpus-per-engine 2 \
    --ssh-command "ssh -p 2222" --lr 1e-5 --dry-run >"$TMP/plan.out" 2>&1 || fail "dry-run failed"
grep -q "^node 1: 10.0.0.2, 8 GPUs" "$TMP/plan.out" || fail "plan: node 1"
grep -q "^\[trainer-7\] node 0 (10.0.0.1), GPUs 7$" "$TMP/plan.out" || fail "plan: trainer-7"
grep -q "^\[engine-3\] node 1 (10.0.0.2), GPUs 6,7$" "$TMP/plan.out" || fail "plan: engine-3"
grep -q "via: ssh -p 2222 10.0.0.2" "$TMP/plan.out" || fail "plan: engines go through ssh"
grep -A3 "^\[trainer-3\]" "$TMP/plan.out" | grep -q "QN_RANK=3 .*CUDA_VISIBLE_DEVICES=3 .* train .*--lr 1e-5" ||
    fail "plan: trainer-3's rank, GPU and --lr"
grep -A2 "^\[buffer\]" "$TMP/plan.out" | grep -q -- "--lr" && fail "plan: --lr reached the buffer"
grep -A2 "^\[buffer\]" "$TMP/plan.out" | grep -q -- "--max-rollouts-ahead=1" || fail "plan: sync buffer"
"$Q" launch "${COMMON[@]}" --num-rollout 5 --hostfile "$TMP/hosts" --actor-num-gpus-per-node 8 \
    --rollout-num-gpus 8 --rollout-num-gpus-per-engine 4 --colocate --async --dry-run \
    >"$TMP/plan2.out" 2>&1 || fail "colocated dry-run failed"
grep -q "^\[engine-1\] node 0 (10.0.0.1), GPUs 4,5,6,7$" "$TMP/plan2.out" || fail "plan: colocated engine-1"
grep -A2 "^\[buffer\]" "$TMP/plan2.out" | grep -q -- "--max-rollouts-ahead=2" || fail "plan: async buffer"
SLURM_JOB_NODELIST='gpu[07-08]' "$Q" launch "${COMMON[@]}" --num-rollout 5 --num-gpus-per-node 8 \
    --actor-num-gpus-per-node 8 --rollout-num-gpus 8 --rollout-num-gpus-per-engine 8 --dry-run \
    >"$TMP/plan3.out" 2>&1 || fail "slurm dry-run failed"
grep -q "^node 1: gpu08, 8 GPUs" "$TMP/plan3.out" || fail "plan: Slurm node list"
grep -q "via: srun --nodes=1 --ntasks=1 --nodelist=gpu08" "$TMP/plan3.out" || fail "plan: srun"
"$Q" launch "${COMMON[@]}" --num-rollout 5 --no-such-flag 1 --dry-run >"$TMP/e1.out" 2>&1
[ $? -eq 2 ] && grep -q "unknown flag --no-such-flag" "$TMP/e1.out" || fail "unknown flag not refused"
"$Q" launch "${COMMON[@]}" --num-rollout 5 --listen tcp://1.2.3.4:5 --dry-run >"$TMP/e2.out" 2>&1
[ $? -eq 2 ] && grep -q -- "--listen is set by the launcher" "$TMP/e2.out" || fail "--listen not refused"
"$Q" launch "${COMMON[@]}" --num-rollout 5 --num-layers 7 --dry-run >"$TMP/e3.out" 2>&1
[ $? -eq 2 ] && grep -q -- "--num-layers 7 but .*config.json has num_hidden_layers = 3" "$TMP/e3.out" ||
    fail "model flag mismatch not refused"
"$Q" launch "${COMMON[@]}" --num-rollout 5 --num-layers 3 --hidden-size 32 --dry-run \
    >"$TMP/e4.out" 2>&1 || fail "matching model flags refused"
grep -q "2 model flags checked" "$TMP/e4.out" || fail "model flags not reported as checked"
"$Q" launch "${COMMON[@]}" --num-rollout 5 --rollout-batch-size 0 --dry-run >"$TMP/e5.out" 2>&1
[ $? -eq 2 ] && grep -q "flags for \`quench buffer\`: --rollout-batch-size" "$TMP/e5.out" ||
    fail "a bad buffer flag is not caught before starting"
printf 'a slots=4\nb slots=4\nc slots=4\n' >"$TMP/hosts3"
"$Q" launch "${COMMON[@]}" --num-rollout 5 --hostfile "$TMP/hosts3" --actor-num-gpus-per-node 4 \
    --rollout-num-gpus-per-engine 8 --rollout-num-engines 2 --dry-run >"$TMP/e6.out" 2>&1
[ $? -eq 2 ] && grep -q "not enough GPUs for 2 engines of 8 GPUs" "$TMP/e6.out" ||
    fail "engines past the last node not refused: $(tail -1 "$TMP/e6.out")"
echo "ok 1: plans and flag routing"

# ---------------------------------------------------------------- 2. kill -9 of an engine
RUN=$TMP/run2
"$Q" launch "${COMMON[@]}" --num-rollout 4 --rollout-max-response-len 1500 --run-dir "$RUN" \
    --rollout-batch-size 2 --global-batch-size 8 \
    >"$TMP/run2.out" 2>&1 &
LPID=$!
# sync mode: rollout 2 is generated once rollout 1 is trained and acknowledged; 8 samples of
# 1500 tokens take seconds, so the kill lands while the engine has them in flight
wait_for 90 grep -q '"rollout_id": 1, "perf/train_wait_time"' "$RUN/metrics.jsonl" 2>/dev/null ||
    fail "rollout 1 not trained"
# this job's engine only: other tests running beside this one launch engines of the same name
EPID=$(for p in $(pgrep -f "engine-id=engine-0.0"); do
    tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q -- "$TMP/" && echo "$p"
done | head -1)
[ -n "$EPID" ] || fail "engine-0.0 not found"
kill -9 "$EPID"
wait_for 120 exited "$LPID" || fail "job did not end"
wait "$LPID"
RC=$?
LPID=
[ "$RC" -eq 0 ] || fail "job with a killed engine exited $RC"
grep -q "engine-0 killed by signal 9 (Killed); restarting it (1 of 3)" "$TMP/run2.out" ||
    fail "no restart reported"
[ "$(grep -c '==== quench launch: starting engine-0' "$RUN/logs/engine-0.log")" -eq 2 ] ||
    fail "engine-0 was not started twice"
grep -q "dropping engine engine-0.0 (.*); [1-9][0-9]* requests in flight on it are sent again" \
    "$RUN/logs/router.log" || fail "the engine was not killed with requests in flight"
# it rejoined with the current weights: registered as engine-0.1 while the job was at version
# >= 2 (rollouts 0 and 1 trained) and pulled that version from the trainer before serving
V=$(sed -n 's/.*engine engine-0.1 registered.*told to load version \([0-9]*\)$/\1/p' "$RUN/logs/router.log")
[ -n "$V" ] && [ "$V" -ge 2 ] || fail "the restarted engine did not register at the job's version"
grep -q "weight version 0 -> $V (applied" "$RUN/logs/engine-0.log" ||
    fail "the restarted engine did not pull version $V"
for r in 0 1 2 3; do
    [ "$(grep -c "\"rollout_id\":$r,\"rollout/raw_reward\"" "$RUN/metrics.jsonl")" -eq 1 ] ||
        fail "rollout $r not generated exactly once"
    [ "$(grep -c "\"rollout_id\": $r, \"perf/train_wait_time\"" "$RUN/metrics.jsonl")" -eq 1 ] ||
        fail "rollout $r not trained exactly once"
done
left_running "$RUN" && fail "processes of the job still run after it ended"
# the run directory holds a job now: a fresh launch into it is refused and changes nothing
cp "$RUN/launch.json" "$TMP/launch.json.before"
"$Q" launch "${COMMON[@]}" --num-rollout 4 --lr 0.5 --run-dir "$RUN" >"$TMP/again.out" 2>&1
[ $? -eq 1 ] && grep -q "holds a job already: \`quench launch --load $RUN\` resumes it" "$TMP/again.out" ||
    fail "a second launch into a used run directory was not refused: $(tail -1 "$TMP/again.out")"
cmp -s "$RUN/launch.json" "$TMP/launch.json.before" || fail "the refused launch changed launch.json"
echo "ok 2: engine killed with -9, restarted, job complete"

# ---------------------------------------------------------------- 3. SIGTERM tears down
RUN=$TMP/run3
"$Q" launch "${COMMON[@]}" --num-rollout 1000 --run-dir "$RUN" >"$TMP/run3.out" 2>&1 &
LPID=$!
wait_for 60 grep -q '"perf/train_wait_time"' "$RUN/metrics.jsonl" 2>/dev/null || fail "run3: nothing trained"
cp "$RUN/launch.json" "$TMP/launch3.before"
"$Q" launch --load "$RUN" --lr 0.5 >"$TMP/run3-second.out" 2>&1
[ $? -eq 1 ] && grep -q "is in use by another launcher (pid $LPID)" "$TMP/run3-second.out" ||
    fail "a second launcher on a running job was not refused: $(tail -1 "$TMP/run3-second.out")"
cmp -s "$RUN/launch.json" "$TMP/launch3.before" || fail "the refused launcher changed launch.json"
kill -TERM "$LPID"
wait_for 30 exited "$LPID" || fail "SIGTERM did not end the launcher in 30 s"
wait "$LPID"
RC=$?
LPID=
[ "$RC" -eq 143 ] || fail "SIGTERM: exit status $RC, expected 143"
wait_for 5 none_running "$RUN" || fail "processes left after SIGTERM"
echo "ok 3: SIGTERM stops everything (exit 143)"

# ---------------------------------------------------------------- 3b. any other crash stops the job
RUN=$TMP/run3b
"$Q" launch "${COMMON[@]}" --num-rollout 1000 --run-dir "$RUN" >"$TMP/run3b.out" 2>&1 &
LPID=$!
wait_for 60 grep -q '"perf/train_wait_time"' "$RUN/metrics.jsonl" 2>/dev/null || fail "run3b: nothing trained"
pkill -9 -f "quench buffer .*--run-dir=$RUN|quench buffer .*$RUN/ports/buffer"
wait_for 30 exited "$LPID" || fail "a killed buffer did not stop the job in 30 s"
wait "$LPID"
RC=$?
LPID=
[ "$RC" -eq 1 ] || fail "killed buffer: exit status $RC, expected 1"
grep -q "stopping the job: buffer killed by signal 9 (Killed)" "$TMP/run3b.out" ||
    fail "the reason is not given"
grep -q "last lines of $RUN/logs/buffer.log" "$TMP/run3b.out" || fail "the buffer's log is not shown"
wait_for 5 none_running "$RUN" || fail "processes left after the buffer crashed"
echo "ok 3b: a crashed buffer stops the job with the reason (exit 1)"

# ---------------------------------------------------------------- 4. kill -9 of the launcher, --load
# kill_and_resume RUN N TRAINED LAUNCH_FLAGS...: starts a job of N rollouts, kills the launcher
# with -9 once rollout TRAINED is trained, checks nothing outlives it, resumes with --load and
# checks the resumed job ends with status 0, every rollout generated once and every prompt drawn
# once, nothing left running
kill_and_resume() {
    local run=$1 n=$2 trained=$3
    shift 3
    "$Q" launch "${COMMON[@]}" --num-rollout "$n" --rollout-max-response-len 64 --run-dir "$run" \
        "$@" >"$run.first.out" 2>&1 &
    LPID=$!
    wait_for 90 grep -q "\"rollout_id\": $trained, \"perf/train_wait_time\"" "$run/metrics.jsonl" \
        2>/dev/null || fail "$run: rollout $trained not trained"
    kill -9 "$LPID"
    wait "$LPID" 2>/dev/null
    LPID=
    wait_for 10 none_running "$run" || fail "$run: processes outlived the killed launcher"
    "$Q" launch --load "$run" >"$run.resumed.out" 2>&1 &
    LPID=$!
    wait_for 120 exited "$LPID" || fail "$run: resumed job did not end"
    wait "$LPID"
    local rc=$?
    LPID=
    [ "$rc" -eq 0 ] || fail "$run: resumed job exited $rc"
    grep -q "resuming job quench" "$run.resumed.out" || fail "$run: not reported as a resume"
    for r in $(seq 0 $((n - 1))); do
        local c
        c=$(grep -c "\"rollout_id\":$r,\"rollout/raw_reward\"" "$run/metrics.jsonl")
        [ "$c" -eq 1 ] || fail "$run: rollout $r generated $c times"
    done
    grep "\"rollout_id\":$((n - 1)),\"rollout/raw_reward\"" "$run/metrics.jsonl" |
        grep -q "\"rollout/data_cursor\":$((n * 4))," || fail "$run: the buffer did not draw every prompt once"
    [ "$(cat "$run/checkpoints/latest")" = "step-$n" ] || fail "$run: latest is not step-$n"
    left_running "$run" && fail "$run: processes left after the resumed job"
    return 0
}
RUN=$TMP/run4
N=8
kill_and_resume "$RUN" $N 3
# one chain of checkpoints: step k holds rollout k-1, for every k up to N
for k in $(seq 1 $N); do
    st="$RUN/checkpoints/step-$k/trainer_state.json"
    [ -f "$st" ] || fail "checkpoint step-$k missing (a rollout skipped?)"
    grep -q "\"step\": $k, \"rollout_id\": $((k - 1)), \"batch_step\": 1" "$st" ||
        fail "step-$k does not hold rollout $((k - 1)): $(cat "$st")"
done
[ -e "$RUN/checkpoints/step-$((N + 1))" ] && fail "more optimizer steps than rollouts"
echo "ok 4: kill -9 of the launcher, --load resumes with nothing skipped or repeated"

# ---------------------------------------------------------------- 4b. the same, between checkpoints
# --save-interval 3: killed after rollout 1 is trained but before any checkpoint; the resumed
# trainer starts over from the initial weights and is served rollouts 0 and 1 again (the buffer
# keeps a rollout until it is in a checkpoint), then goes on
RUN=$TMP/run4c
kill_and_resume "$RUN" 6 1 --save-interval 3
grep -q '"step": 6, "rollout_id": 5, "batch_step": 1' "$RUN/checkpoints/step-6/trainer_state.json" ||
    fail "run4c: step-6 does not hold rollout 5"
[ -e "$RUN/checkpoints/step-1" ] && fail "run4c: a checkpoint between the save points"
echo "ok 4b: killed between checkpoints, --load trains the uncheckpointed rollouts again and goes on"
echo "PASS"
