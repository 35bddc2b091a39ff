#!/usr/bin/env bash
# test_eval.sh — `quench eval` with real processes: a private redis-server
# (unix socket), `quench router` with it, one `quench rollout` engine serving
# a random tiny GLM-4.5-style model at version 0.
#  1. --num-rollout 0, started before the engine (it waits for one): the
#     held-out file has 4 token-id prompts whose labels are the greedy
#     answers `quench generate` gives for 2 of them and wrong ones for the
#     other 2, plus one malformed line (skipped); with the exact reward the
#     accuracy must be exactly 0.5 over 4 samples; then it exits 0.
#  2. --eval-interval 2 --num-rollout 3: weight_version is set by hand to 1,
#     2, 3; it evaluates 0, 2 and 3 (not 1) and exits 0. The engines still
#     serve version 0, so every evaluation measured version 0 (the rule of
#     docs/services.md: most tokens are not of the polled version).
#  3. SIGTERM while waiting for the next version: exit 0 within seconds.
#  4. Redis unreachable: retried with logged backoff, no exit; SIGTERM exits 0.
#  5. --on-bad-data fail: exit 1 naming file:line.
# Every process is killed and reaped on exit; every wait is bounded.
set -u
Q=${QN_BIN:?QN_BIN not set}
SRC=${QN_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
PY=/usr/bin/python3
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
export OMP_NUM_THREADS=1
unset QN_WORLD_SIZE QN_RANK QN_REDIS_URL
fail() {
    echo "FAIL: $*"
    for f in "$TMP"/*.log; do echo "--- $f"; tail -15 "$f"; done
    exit 1
}
# wait_exit PID SECONDS -> the exit status, or 124 after killing it
wait_exit() {
    local i
    for i in $(seq 1 $(($2 * 10))); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$1" 2>/dev/null; then
        kill -9 "$1" 2>/dev/null
        wait "$1" 2>/dev/null
        return 124
    fi
    wait "$1"
}
# lines FILE -> its line count (0 when absent)
lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }
# wait_lines FILE N SECONDS
wait_lines() {
    for _ in $(seq 1 $(($3 * 10))); do [ "$(lines "$1")" -ge "$2" ] && return 0; sleep 0.1; done
    return 1
}

command -v redis-server >/dev/null || fail "redis-server not installed"
SOCK=$TMP/redis.sock
redis-server --port 0 --unixsocket "$SOCK" --save '' --appendonly no >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do redis-cli -s "$SOCK" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -s "$SOCK" ping >/dev/null 2>&1 || fail "redis-server did not start"
REDIS=unix://$SOCK
JOB=evaltest
rset() { redis-cli -s "$SOCK" SET "quench:$JOB:weight_version" "$1" >/dev/null || fail "redis SET"; }

CFG=$SRC/tests/ref/configs/tiny_glm45.json
"$Q" init-model --config "$CFG" --out "$TMP/m" --seed 5 --init-std 0.2 >/dev/null || fail init-model

# the greedy answers of 4 prompts, by quench generate
LEN=6
cat >"$TMP/g.jsonl" <<'EOF'
{"tokens":[3,14,15,92,65,35,8]}
{"tokens":[7,1,8,2,8,1]}
{"tokens":[27,18,28,18,28]}
{"tokens":[50,40,30,20,10,5,4]}
EOF
"$Q" generate --model "$TMP/m" --input "$TMP/g.jsonl" --output "$TMP/g.out" --temperature 0 \
    --max-new-tokens $LEN 2>"$TMP/generate.log" || fail "quench generate"
# held-out data: prompts 0 and 2 labelled with their greedy answer (as the
# reward sees it without a tokenizer: ids joined by spaces), 1 and 3 with a
# wrong one; a malformed line 3 in between
$PY - "$TMP/g.jsonl" "$TMP/g.out" "$TMP/eval.jsonl" <<'EOF' || fail "eval data"
import json, sys
ps = [json.loads(l)["tokens"] for l in open(sys.argv[1])]
outs = [json.loads(l)["output_ids"] for l in open(sys.argv[2])]
assert len(ps) == len(outs) == 4, (len(ps), len(outs))
with open(sys.argv[3], "w") as f:
    for i, (p, o) in enumerate(zip(ps, outs)):
        assert len(o) > 0
        ans = " ".join(str(t) for t in o)
        if i % 2: ans += " 99999"  # wrong: one token more than greedy gives
        f.write(json.dumps({"prompt": p, "label": ans}) + "\n")
        if i == 1: f.write("{not json\n")
EOF

"$Q" router --listen 'tcp://127.0.0.1:*' --http-port 0 --port-file "$TMP/ports" \
    --heartbeat-ms 200 --redis "$REDIS" --job $JOB >"$TMP/router.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do [ -s "$TMP/ports" ] && break; sleep 0.1; done
[ -s "$TMP/ports" ] || fail "router wrote no port file"
ZMQ=$(sed -n 's/^zmq=//p' "$TMP/ports")

EV=("$Q" eval --router "$ZMQ" --redis "$REDIS" --job $JOB --eval-prompt-data "$TMP/eval.jsonl"
    --eval-reward exact --eval-max-response-len $LEN --poll-interval-s 0.2)

echo "== 1. version 0, started before any engine: accuracy exactly 0.5"
"${EV[@]}" --num-rollout 0 --metrics-file "$TMP/m1.jsonl" >"$TMP/eval1.log" 2>&1 &
E1=$!
PIDS+=($E1)
for _ in $(seq 1 300); do grep -q "no rollout engine registered" "$TMP/eval1.log" && break; sleep 0.1; done
grep -q "no rollout engine registered" "$TMP/eval1.log" || fail "eval did not say it waits for an engine"
"$Q" rollout --router "$ZMQ" --model "$TMP/m" --engine-id e0 --threads 1 >"$TMP/engine.log" 2>&1 &
PIDS+=($!)
wait_exit $E1 120
rc=$?
[ $rc = 0 ] || fail "eval --num-rollout 0 exited $rc"
cat "$TMP/m1.jsonl"
[ "$(lines "$TMP/m1.jsonl")" = 1 ] || fail "expected one metrics line"
$PY - "$TMP/m1.jsonl" <<'EOF' || fail "metrics of version 0"
import json, math, sys
m = json.loads(open(sys.argv[1]).readline())
def eq(k, v):
    x = m[k]
    assert isinstance(x, (int, float)) and math.isfinite(x) and x == v, (k, x, v)
eq("rollout_id", 0); eq("eval/weight_version", 0); eq("eval/accuracy", 0.5)
eq("eval/reward", 0.5); eq("eval/samples", 4); eq("eval/mixed_version_samples", 0)
assert 0 < m["eval/response_len/mean"] <= 6, m
assert 0 <= m["eval/truncated_ratio"] <= 1 and m["perf/eval_time"] >= 0, m
EOF
grep -q "eval at weight version 0: accuracy 0.5000 (4 samples)" "$TMP/eval1.log" ||
    fail "no INFO line for the evaluation"
grep -q "eval.jsonl:3: not valid JSON; line skipped" "$TMP/eval1.log" || fail "bad line not reported"

echo "== 2. --eval-interval 2 --num-rollout 3: versions 0, 2, 3"
"${EV[@]}" --eval-interval 2 --num-rollout 3 --metrics-file "$TMP/m2.jsonl" >"$TMP/eval2.log" 2>&1 &
E2=$!
PIDS+=($E2)
wait_lines "$TMP/m2.jsonl" 1 60 || fail "version 0 not evaluated"
rset 1
sleep 1.5 # several polls: version 1 is not an evaluation point
[ "$(lines "$TMP/m2.jsonl")" = 1 ] || fail "version 1 was evaluated: $(cat "$TMP/m2.jsonl")"
rset 2
wait_lines "$TMP/m2.jsonl" 2 60 || fail "version 2 not evaluated"
kill -0 $E2 2>/dev/null || fail "eval exited before the final version"
rset 3
wait_exit $E2 60
rc=$?
[ $rc = 0 ] || fail "eval exited $rc after the final version"
$PY - "$TMP/m2.jsonl" <<'EOF' || fail "metrics of the interval run: $(cat "$TMP/m2.jsonl")"
import json, sys
ms = [json.loads(l) for l in open(sys.argv[1])]
assert [m["rollout_id"] for m in ms] == [0, 2, 3], [m["rollout_id"] for m in ms]
# the engines never left version 0: every evaluation measured version 0
assert [m["eval/weight_version"] for m in ms] == [0, 0, 0], ms
assert all(m["eval/accuracy"] == 0.5 and m["eval/mixed_version_samples"] == 0 for m in ms), ms
EOF
echo "evaluated: $($PY -c 'import json,sys; print(*[json.loads(l)["rollout_id"] for l in open(sys.argv[1])])' "$TMP/m2.jsonl")"

echo "== 3. SIGTERM between evaluations: exit 0"
"${EV[@]}" --eval-interval 1 --num-rollout 100 --metrics-file "$TMP/m3.jsonl" >"$TMP/eval3.log" 2>&1 &
E3=$!
PIDS+=($E3)
wait_lines "$TMP/m3.jsonl" 1 60 || fail "no evaluation at the current version"
grep -q '"rollout_id":3' "$TMP/m3.jsonl" || fail "the first evaluation is not the current version 3"
kill -TERM $E3
wait_exit $E3 10
rc=$?
[ $rc = 0 ] || fail "SIGTERM: exit $rc"

echo "== 4. Redis unreachable: retried with backoff, SIGTERM exits 0"
"$Q" eval --router "$ZMQ" --redis redis://127.0.0.1:1 --job $JOB --eval-prompt-data "$TMP/eval.jsonl" \
    --eval-reward exact --num-rollout 0 >"$TMP/eval4.log" 2>&1 &
E4=$!
PIDS+=($E4)
for _ in $(seq 1 300); do [ "$(grep -c 'retrying in' "$TMP/eval4.log")" -ge 2 ] && break; sleep 0.1; done
[ "$(grep -c 'retrying in' "$TMP/eval4.log")" -ge 2 ] || fail "no retry messages for Redis"
kill -0 $E4 2>/dev/null || fail "eval exited while Redis is unreachable"
kill -TERM $E4
wait_exit $E4 10
rc=$?
[ $rc = 0 ] || fail "SIGTERM while Redis is unreachable: exit $rc"

echo "== 5. --on-bad-data fail"
out=$(timeout 30 "$Q" eval --router "$ZMQ" --redis "$REDIS" --eval-prompt-data "$TMP/eval.jsonl" \
    --on-bad-data fail 2>&1)
rc=$?
[ $rc = 1 ] || fail "--on-bad-data fail: exit $rc"
echo "$out" | grep -q "eval.jsonl:3: not valid JSON" || fail "message: $out"
echo "PASS"
