#!/usr/bin/env bash
# test_train_loop.sh — `quench train`, the long-running trainer rank, with
# real processes: redis-server (unix socket), `quench router`, one
# `quench rollout` engine on a random tiny GLM-4.5-style model, and
# `quench buffer` (token-id prompts, reward f1, fixed --rollout-seed,
# --max-rollouts-ahead 1, --num-rollout 3). Every run gets a fresh router
# and engine, so all runs start from the same weights and see the same
# rollouts.
#   A: `quench train --num-rollout 3` trains rollouts 0..2: a step metrics
#      line and a perf line per rollout, checkpoints after every rollout, the
#      engine ends at weight_version 3, the buffer exits 0 after the acks.
#   B: the same job stopped after rollout 1 (`--num-rollout 2`), then
#      `quench train --load` trains only rollout 2 and its final weights are
#      bit-identical (cmp) to A's.
#   C: `quench train-step` replays A's rollouts (--dump-batches) one after
#      the other (--load chaining) and ends with A's weights, bit for bit: the
#      loop runs train-step's code.
#   E: a mid-batch checkpoint (train-step --max-steps 1 on rollout 1) makes
#      `quench train --load` re-request rollout 1 and take only its second
#      step: A's weights after rollout 1, bit for bit.
#   F: two data-parallel ranks (QN_WORLD_SIZE=2) train the job: each fetches
#      every share, acks its own; the buffer exits 0, rank 0 alone reports.
#   G: --save-interval 2 without --router (the engine can be stopped to hold
#      the next rollout back): a trainer killed after acking rollout 0,
#      which no checkpoint holds, is replaced by one that starts over and is
#      served rollout 0 again (the buffer keeps it); that one checkpoints
#      rollout 1 but its ack is lost with the buffer (SIGSTOP, then both
#      kill -9): the restarted buffer waits for that ack (sync mode), the
#      resumed trainer sends it again and trains rollout 2; both exit 0 and
#      no rollout is left in Redis.
#   D: with no buffer the request is resent; SIGTERM before the last rollout
#      exits 1. A deleted rollout (B) is a fatal error naming it.
# Every process is killed and reaped on exit; every wait is bounded.
set -u
Q=${QN_BIN:?QN_BIN not set}
SRC=${QN_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
PY=/usr/bin/python3
TMP=$(mktemp -d)
PIDS=()
REDIS_PID=
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    [ -n "$REDIS_PID" ] && kill -9 "$REDIS_PID" 2>/dev/null
    for p in "${PIDS[@]}" $REDIS_PID; do wait "$p" 2>/dev/null; done
    [ -n "${KEEP_TMP:-}" ] && echo "kept $TMP" || rm -rf "$TMP"
}
trap cleanup EXIT
export OMP_NUM_THREADS=1
unset QN_WORLD_SIZE QN_RANK QN_REDIS_URL
fail() {
    echo "FAIL: $*"
    for f in "$TMP"/*.log "$TMP"/*/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -15 "$f"; }; done
    exit 1
}
command -v redis-server >/dev/null || { echo "SKIP: no redis-server"; exit 77; }

CFG=$SRC/tests/ref/configs/tiny_glm45.json
"$Q" init-model --config "$CFG" --out "$TMP/m" --seed 5 --init-std 0.2 >/dev/null || fail init-model
# 6 distinct token-id prompts; labels are 8 token ids so that f1 varies within a group
# (and --dynamic-sampling-filter nonzero_std keeps only groups that carry a gradient)
$PY - "$TMP/data.jsonl" <<'EOF' || fail "data"
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(6):
        toks = [1 + i] + [(i * 31 + k * 17) % 90 + 5 for k in range(1, 3 + i % 3)]
        label = " ".join(str((i * 7 + k * 13) % 97) for k in range(8))
        f.write(json.dumps({"tokens": toks, "label": label}) + "\n")
EOF

redis-server --port 0 --unixsocket "$TMP/redis.sock" --dir "$TMP" --save "" --appendonly no \
    --logfile "$TMP/redis.log" &
REDIS_PID=$!
for _ in $(seq 1 100); do [ -S "$TMP/redis.sock" ] && break; sleep 0.05; done
[ -S "$TMP/redis.sock" ] || fail "redis-server did not start"
REDIS=unix://$TMP/redis.sock

# start_stack NAME: a fresh router + engine (weights version 0) and a buffer
# for job NAME; sets ZMQ, URL, ENG_PID, BUF, BUF_PID
start_stack() {
    local d=$TMP/$1
    mkdir -p "$d"
    "$Q" router --listen 'tcp://127.0.0.1:*' --http-port 0 --port-file "$d/ports" \
        --heartbeat-ms 200 >"$d/router.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 100); do [ -s "$d/ports" ] && break; sleep 0.05; done
    [ -s "$d/ports" ] || fail "$1: router wrote no port file"
    ZMQ=$(sed -n 's/^zmq=//p' "$d/ports")
    URL=http://127.0.0.1:$(sed -n 's/^http=//p' "$d/ports")
    "$Q" rollout --router "$ZMQ" --model "$TMP/m" --engine-id "e-$1" --threads 1 \
        --max-running-requests 16 --kv-cache-tokens 1024 --block-size 8 --context-len 64 \
        >"$d/engine.log" 2>&1 &
    ENG_PID=$!
    PIDS+=($ENG_PID)
    for _ in $(seq 1 100); do [ "$(health engines)" = 1 ] && break; sleep 0.05; done
    [ "$(health engines)" = 1 ] || fail "$1: the engine did not register"
    start_buffer "$1"
}
# start_buffer NAME: a buffer for job NAME on the router ZMQ (appends to its
# log; a restart resumes the job from Redis); sets BUF, BUF_PID
start_buffer() {
    local d=$TMP/$1
    rm -f "$d/buf.port"
    "$Q" buffer --prompt-data "$TMP/data.jsonl" --input-key tokens --redis "$REDIS" --job "$1" \
        --router "$ZMQ" --listen 'tcp://127.0.0.1:*' --port-file "$d/buf.port" \
        --n-samples-per-prompt 4 --rollout-batch-size 2 --rollout-max-response-len 6 \
        --reward f1 --reward-isolation inline --dynamic-sampling-filter nonzero_std --rollout-seed 3 --max-rollouts-ahead 1 \
        --num-rollout 3 --metrics-file "$d/buffer_metrics.jsonl" >>"$d/buffer.log" 2>&1 &
    BUF_PID=$!
    PIDS+=($BUF_PID)
    for _ in $(seq 1 100); do [ -s "$d/buf.port" ] && break; sleep 0.05; done
    BUF=$(sed -n 's/^zmq=//p' "$d/buf.port")
    [ -n "$BUF" ] || fail "$1: buffer wrote no port file"
}
health() {
    curl -s --max-time 5 "$URL/health" |
        $PY -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1]))' "$1" 2>/dev/null || echo none
}
# forget PID: it was reaped, so cleanup must not signal that number again
forget() {
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" != "$1" ] && keep+=("$p"); done
    PIDS=("${keep[@]}")
}
# wait_exit PID SECONDS -> its exit status, or 124
wait_exit() {
    local rc
    for _ in $(seq 1 $(($2 * 20))); do
        if ! kill -0 "$1" 2>/dev/null; then
            wait "$1"
            rc=$?
            forget "$1"
            return $rc
        fi
        sleep 0.05
    done
    return 124
}
# final DIR -> the model file of the checkpoint DIR/latest names
final() { echo "$1/$(cat "$1/latest")/model.safetensors"; }
# two optimizer steps per rollout (8 samples, --global-batch-size 4)
TRAIN=(--lr 0.02 --global-batch-size 4 --threads 1 --request-timeout-s 2 --update-weights-timeout 60)

echo "== A: quench train --num-rollout 3"
start_stack A
timeout 120 "$Q" train --hf-checkpoint "$TMP/m" --buffer "$BUF" --router "$ZMQ" \
    --save "$TMP/A/save" --save-interval 2 --num-rollout 3 --metrics-file "$TMP/A/metrics.jsonl" \
    --dump-batches "$TMP/A/dump" "${TRAIN[@]}" >"$TMP/A/train.out" 2>"$TMP/A/train.log" ||
    fail "A: quench train exited $?"
wait_exit "$BUF_PID" 20
rc=$?
[ $rc = 0 ] || fail "A: the buffer exited $rc (expected 0 once all 3 rollouts were acked)"
$PY - "$TMP/A/metrics.jsonl" <<'EOF' || fail "A: metrics"
import json, math, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
perf = [l for l in lines if "perf/step_time" in l]
steps = [l for l in lines if "train/lr" in l]
assert [l["rollout_id"] for l in perf] == [0, 1, 2], perf
assert [l["rollout_id"] for l in steps] == [0, 0, 1, 1, 2, 2], steps
assert [l["step"] for l in steps] == [1, 2, 3, 4, 5, 6], steps
for l in perf:
    for k in ("perf/train_wait_time", "perf/train_time", "perf/update_weights_time",
              "perf/train_tokens_per_s"):
        assert math.isfinite(l[k]) and l[k] >= 0, (k, l)
    assert l["perf/train_tokens_per_s"] > 0 and l["perf/update_weights_time"] > 0, l
    s = l["perf/train_wait_time"] + l["perf/train_time"] + l["perf/update_weights_time"]
    assert abs(l["perf/step_time"] - s) < 1e-5, l
for l in steps:
    assert math.isfinite(l["train/grad_norm"]) and l["train/grad_norm"] > 0, l
print(len(perf), "rollouts,", len(steps), "steps; grad norms",
      [round(l["train/grad_norm"], 6) for l in steps])
EOF
[ -s "$TMP/A/train.out" ] && fail "A: stdout is not empty with --metrics-file: $(head -2 "$TMP/A/train.out")"
grep -q "rollout 2 of 3" "$TMP/A/train.log" || fail "A: no progress line for rollout 2"
[ "$(health weight_version)" = 3 ] || fail "A: the router is at weight_version $(health weight_version), not 3"
ver=$(curl -s --max-time 5 "$URL/workers" | $PY -c 'import json,sys; print(*[w["version"] for w in json.load(sys.stdin)])')
[ "$ver" = 3 ] || fail "A: GET /workers versions: '$ver' (expected 3)"
echo "engine version: $ver"
$PY - "$TMP/A/save" <<'EOF' || fail "A: checkpoints"
import json, os, sys
d = sys.argv[1]
# --save-interval 2: after rollout 1 (step 4) and the last one (step 6)
steps = sorted(x for x in os.listdir(d) if x.startswith("step-"))
assert steps == ["step-4", "step-6"], steps
st = json.load(open(os.path.join(d, open(os.path.join(d, "latest")).read().strip(), "trainer_state.json")))
assert st["rollout_id"] == 2 and st["batch_step"] == st["batch_steps"] == 2 and st["step"] == 6, st
st = json.load(open(os.path.join(d, "step-4", "trainer_state.json")))
assert st["rollout_id"] == 1 and st["batch_step"] == 2 and st["data_cursor"] > 0, st
EOF
# the rollouts carry signal: some advantage is non-zero (else the checks below are blind)
for r in 0 1 2; do
    grep -qE '"advantage":-?[0-9.]*[1-9]' "$TMP/A/dump/rollout-$r.jsonl" ||
        fail "A: every advantage of rollout $r is 0"
done
cmp -s "$TMP/m/model.safetensors" "$(final "$TMP/A/save")" && fail "A: training left the weights as they were"

echo "== B: stopped after rollout 1, resumed with --load"
start_stack B
timeout 120 "$Q" train --hf-checkpoint "$TMP/m" --buffer "$BUF" --router "$ZMQ" \
    --save "$TMP/B/save" --num-rollout 2 --metrics-file "$TMP/B/metrics1.jsonl" \
    --dump-batches "$TMP/B/dump" "${TRAIN[@]}" 2>"$TMP/B/train1.log" ||
    fail "B: first quench train exited $?"
kill -0 "$BUF_PID" 2>/dev/null || fail "B: the buffer ended before rollout 2 was acked"
# the same rollouts (an engine's log-probs may differ in the last bits with its
# batch composition; without TIS they feed only a metric)
for r in 0 1; do
    $PY - "$TMP/A/dump/rollout-$r.jsonl" "$TMP/B/dump/rollout-$r.jsonl" <<'EOF' ||
import json, sys
def load(p):
    out = []
    for l in open(p):
        o = json.loads(l)
        o.pop("rollout_logprobs", None)
        out.append(o)
    return out
sys.exit(load(sys.argv[1]) != load(sys.argv[2]))
EOF
        fail "B: rollout $r differs from A's (the rollouts are not deterministic)"
done
# a rollout the buffer no longer has (0, acked) is a fatal error naming it
out=$(timeout 60 "$Q" train --hf-checkpoint "$TMP/m" --buffer "$BUF" --save "$TMP/B/fresh" \
    --num-rollout 3 "${TRAIN[@]}" 2>&1 >/dev/null)
rc=$?
[ $rc = 1 ] || fail "B: exit $rc for a deleted rollout"
echo "$out" | grep -q "rollout 0 share 0/1: the buffer answered" || fail "B: message: $out"
timeout 120 "$Q" train --hf-checkpoint "$TMP/m" --buffer "$BUF" --router "$ZMQ" \
    --load "$TMP/B/save" --save "$TMP/B/save2" --num-rollout 3 \
    --metrics-file "$TMP/B/metrics2.jsonl" "${TRAIN[@]}" 2>"$TMP/B/train2.log" ||
    fail "B: resumed quench train exited $?"
wait_exit "$BUF_PID" 20
rc=$?
[ $rc = 0 ] || fail "B: the buffer exited $rc after the resumed run"
ids=$($PY -c 'import json,sys; print(*[json.loads(l)["rollout_id"] for l in open(sys.argv[1]) if "perf/step_time" in l])' "$TMP/B/metrics2.jsonl")
[ "$ids" = 2 ] || fail "B: the resumed run trained rollouts '$ids' (expected only 2)"
grep -q "resuming from .*step-4 (rollout 1, batch step 2 of 2): starting at rollout 2" \
    "$TMP/B/train2.log" || fail "B: no resume line"
[ "$(health weight_version)" = 3 ] || fail "B: the router is at weight_version $(health weight_version)"
cmp "$(final "$TMP/A/save")" "$(final "$TMP/B/save2")" ||
    fail "B: resumed final weights differ from the uninterrupted run's"
echo "resumed run: rollouts $ids, final weights identical to A's"

echo "== C: train-step replays A's rollouts"
prev=$TMP/m
for r in 0 1 2; do
    load=()
    [ $r -gt 0 ] && load=(--load "$prev")
    "$Q" train-step --model "$TMP/m" "${load[@]}" --batch "$TMP/A/dump/rollout-$r.jsonl" \
        --rollout-id $r --out "$TMP/C$r" --lr 0.02 --global-batch-size 4 --threads 1 \
        >"$TMP/C$r.json" 2>"$TMP/C$r.log" ||
        fail "C: train-step on rollout $r"
    prev=$TMP/C$r
done
cmp "$(final "$TMP/A/save")" "$TMP/C2/model.safetensors" ||
    fail "C: quench train's weights differ from train-step's on the same rollouts"
echo "train-step replay: identical weights"

echo "== E: resumed mid-batch (a train-step checkpoint after 1 of rollout 1's 2 steps)"
start_stack E
timeout 120 "$Q" train --hf-checkpoint "$TMP/m" --buffer "$BUF" --router "$ZMQ" \
    --save "$TMP/E/save" --num-rollout 1 --metrics-file "$TMP/E/metrics1.jsonl" "${TRAIN[@]}" \
    2>"$TMP/E/train1.log" || fail "E: first quench train exited $?"
"$Q" train-step --model "$TMP/m" --load "$TMP/E/save" --batch "$TMP/A/dump/rollout-1.jsonl" \
    --rollout-id 1 --max-steps 1 --save "$TMP/E/mid" --out "$TMP/E/mid_out" --lr 0.02 \
    --global-batch-size 4 --threads 1 >/dev/null 2>"$TMP/E/mid.log" || fail "E: train-step --max-steps 1"
timeout 120 "$Q" train --hf-checkpoint "$TMP/m" --buffer "$BUF" --router "$ZMQ" \
    --load "$TMP/E/mid" --save "$TMP/E/save2" --num-rollout 2 \
    --metrics-file "$TMP/E/metrics2.jsonl" "${TRAIN[@]}" 2>"$TMP/E/train2.log" ||
    fail "E: resumed quench train exited $?"
grep -q "batch step 1 of 2): starting at rollout 1" "$TMP/E/train2.log" || fail "E: no resume line"
steps=$($PY -c 'import json,sys; print(*[json.loads(l)["step"] for l in open(sys.argv[1]) if "train/lr" in l])' "$TMP/E/metrics2.jsonl")
[ "$steps" = 4 ] || fail "E: the resumed run took optimizer steps '$steps' (expected only 4)"
cmp "$TMP/A/save/step-4/model.safetensors" "$(final "$TMP/E/save2")" ||
    fail "E: weights after the mid-batch resume differ from A's after rollout 1"
echo "mid-batch resume: step $steps only, weights identical to A's step-4"

echo "== F: two data-parallel ranks"
start_stack F
pids=()
for r in 0 1; do
    dump=()
    [ $r = 0 ] && dump=(--dump-batches "$TMP/F/dump")
    QN_WORLD_SIZE=2 QN_RANK=$r QN_REDIS_URL=$REDIS QN_JOB=F$$ QN_DIST_HOST=127.0.0.1 \
        timeout 120 "$Q" train --hf-checkpoint "$TMP/m" --buffer "$BUF" --router "$ZMQ" \
        --save "$TMP/F/save$r" --num-rollout 3 --metrics-file "$TMP/F/metrics.jsonl" \
        "${dump[@]}" "${TRAIN[@]}" 2>"$TMP/F/train$r.log" &
    pids+=($!)
done
for r in 0 1; do wait "${pids[$r]}" || fail "F: rank $r exited $?"; done
wait_exit "$BUF_PID" 20
rc=$?
[ $rc = 0 ] || fail "F: the buffer exited $rc (both ranks must ack every rollout)"
# rank 0 alone writes metrics and checkpoints; every rank saw the whole rollout
n=$(grep -c '"train/lr"' "$TMP/F/metrics.jsonl")
[ "$n" = 6 ] || fail "F: $n step lines (expected 6, from rank 0 only)"
[ -e "$TMP/F/save1" ] && fail "F: rank 1 wrote a checkpoint"
grep -q "rank 1/2: .* of 8 samples" "$TMP/F/train1.log" || fail "F: rank 1 did not see the whole rollout"
[ "$(health weight_version)" = 3 ] || fail "F: the router is at weight_version $(health weight_version)"
echo "two ranks: 3 rollouts acked by both, $n step lines"

echo "== G: --save-interval 2: killed after an unsaved rollout, then after a lost ack"
# wait_for N FILE PATTERN SECONDS: until PATTERN is on N lines of FILE
wait_for() {
    for _ in $(seq 1 $(($4 * 20))); do
        [ "$(grep -c -- "$3" "$2" 2>/dev/null)" -ge "$1" ] && return 0
        sleep 0.05
    done
    return 1
}
rcli() { redis-cli -s "$TMP/redis.sock" "$@"; }
start_stack G
GT=(--hf-checkpoint "$TMP/m" --save "$TMP/G/save" --save-interval 2 --num-rollout 3 "${TRAIN[@]}")
wait_for 1 "$TMP/G/buffer.log" "rollout 0 persisted" 60 || fail "G: rollout 0 was not made"
kill -STOP "$ENG_PID" # rollout 1 cannot be made
"$Q" train "${GT[@]}" --buffer "$BUF" --dump-batches "$TMP/G/dump1" >/dev/null \
    2>"$TMP/G/train1.log" &
T=$!
PIDS+=($T)
wait_for 1 "$TMP/G/buffer.log" "rollout 0: rank 0 acknowledged" 60 || fail "G: rollout 0 was not acked"
kill -9 "$T"
{ wait "$T"; } 2>/dev/null
forget "$T"
[ -e "$TMP/G/save/latest" ] && fail "G: a checkpoint after rollout 0 with --save-interval 2"
[ "$(rcli EXISTS quench:G:rollout:0)" = 1 ] || fail "G: rollout 0 is gone, no checkpoint holds it"
# no checkpoint: the next trainer starts over and is served rollout 0 again
"$Q" train "${GT[@]}" --buffer "$BUF" --dump-batches "$TMP/G/dump2" >/dev/null \
    2>"$TMP/G/train2.log" &
T=$!
PIDS+=($T)
wait_for 2 "$TMP/G/buffer.log" "rollout 0: rank 0 acknowledged" 60 ||
    fail "G: the second trainer did not ack rollout 0"
cmp "$TMP/G/dump1/rollout-0.jsonl" "$TMP/G/dump2/rollout-0.jsonl" ||
    fail "G: rollout 0 was not served as it was the first time"
# it gets rollout 1, checkpoints it, and its ack is lost with the buffer
kill -STOP "$T"
kill -CONT "$ENG_PID"
wait_for 1 "$TMP/G/buffer.log" "rollout 1 persisted" 60 || fail "G: rollout 1 was not made"
sleep 0.5 # the batch leaves the buffer's socket
kill -STOP "$BUF_PID"
kill -CONT "$T"
wait_for 1 "$TMP/G/train2.log" "ack of rollout 1: no answer" 60 || fail "G: rollout 1 was not acked"
[ -e "$TMP/G/save/step-4" ] || fail "G: no checkpoint of rollout 1 (step 4)"
kill -9 "$T" "$BUF_PID"
{ wait "$T" "$BUF_PID"; } 2>/dev/null
forget "$T"
forget "$BUF_PID"
[ "$(rcli HEXISTS quench:G:acks:1 rank:0)" = 0 ] || fail "G: the ack of rollout 1 was recorded"
start_buffer G
timeout 60 "$Q" train "${GT[@]}" --buffer "$BUF" >/dev/null 2>"$TMP/G/train3.log" ||
    fail "G: the resumed trainer exited $? (124: it waited for a rollout never made)"
grep -q "resuming from .*step-4 (rollout 1, batch step 2 of 2): starting at rollout 2" \
    "$TMP/G/train3.log" || fail "G: no resume line"
wait_exit "$BUF_PID" 20
rc=$?
[ $rc = 0 ] || fail "G: the buffer exited $rc after the resumed run"
left=$(rcli KEYS 'quench:G:rollout:*'; rcli KEYS 'quench:G:acks:*')
[ -z "$left" ] || fail "G: left in Redis: $left"
echo "resumed twice: rollout 0 served again, rollout 1 acked again, nothing left in Redis"

echo "== D: no buffer: requests are resent; SIGTERM before the last rollout exits 1"
"$Q" train --hf-checkpoint "$TMP/m" --buffer tcp://127.0.0.1:1 --save "$TMP/D" --num-rollout 1 \
    --request-timeout-s 0.2 --threads 1 >/dev/null 2>"$TMP/D.log" &
D_PID=$!
PIDS+=($D_PID)
for _ in $(seq 1 100); do grep -q "sending again" "$TMP/D.log" && break; sleep 0.05; done
grep -q "sending again" "$TMP/D.log" || fail "D: no resend"
kill -TERM $D_PID
wait_exit $D_PID 5
rc=$?
[ $rc = 1 ] || fail "D: exit $rc after SIGTERM (expected 1: the last rollout was not trained)"
grep -q "interrupted by a signal" "$TMP/D.log" || fail "D: no interruption message"
echo "PASS"
