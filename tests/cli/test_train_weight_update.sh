#!/usr/bin/env bash
# test_train_weight_update.sh — the trainer's side of a weight update, with
# real processes: `quench router` and two `quench rollout` engines serve a
# random tiny GLM-4.5-style model at version 0; `quench train-step --router`
# trains one batch, publishes the new weights on its weight server and
# announces version 1; it returns only once the router reports APPLIED.
# Then POST /generate through the router answers with weight_version 1 and
# exactly the greedy tokens `quench generate` gives on the trained
# checkpoint (train-step's --out), which differ from version 0's. An
# announce to a router that is not there fails with a timeout, naming the
# phase. Every process is killed and reaped on exit; every wait is bounded.
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

CFG=$SRC/tests/ref/configs/tiny_glm45.json
"$Q" init-model --config "$CFG" --out "$TMP/m" --seed 5 --init-std 0.2 >/dev/null || fail init-model
VOCAB=$($PY -c "import json,sys;print(json.load(open(sys.argv[1]))['vocab_size'])" "$CFG")
$PY "$SRC/tests/ref/train_step_ref.py" gen --vocab "$VOCAB" --seed 4 --lens 12,30,7,25 "$TMP/b.jsonl" || fail "batch"

"$Q" router --listen 'tcp://127.0.0.1:*' --http-port 0 --port-file "$TMP/ports" \
    --heartbeat-ms 200 >"$TMP/router.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do [ -s "$TMP/ports" ] && break; sleep 0.1; done
[ -s "$TMP/ports" ] || fail "router wrote no port file"
ZMQ=$(sed -n 's/^zmq=//p' "$TMP/ports")
URL=http://127.0.0.1:$(sed -n 's/^http=//p' "$TMP/ports")
for i in 0 1; do
    "$Q" rollout --router "$ZMQ" --model "$TMP/m" --engine-id "e$i" --threads 1 \
        >"$TMP/engine$i.log" 2>&1 &
    PIDS+=($!)
done
engines() { curl -s --max-time 5 "$URL/health" | $PY -c 'import json,sys; print(json.load(sys.stdin).get("engines", 0))' 2>/dev/null || echo 0; }
for _ in $(seq 1 100); do [ "$(engines)" = 2 ] && break; sleep 0.1; done
[ "$(engines)" = 2 ] || fail "the engines did not register"

PROMPT='[3,14,15,92,65,35,8]'
# gen_router -> "version ids..." of a greedy request through the router
gen_router() {
    curl -s --max-time 30 -X POST "$URL/generate" -H 'Content-Type: application/json' \
        --data-binary "{\"input_ids\":$PROMPT,\"sampling_params\":{\"max_new_tokens\":12,\"temperature\":0,\"ignore_eos\":true}}" |
        $PY -c 'import json,sys; r=json.load(sys.stdin); print(r["meta_info"]["weight_version"], *r["output_ids"])'
}
# gen_local DIR -> "ids..." of the same request by quench generate
gen_local() {
    echo "{\"tokens\":$PROMPT}" >"$TMP/p.jsonl"
    "$Q" generate --model "$1" --input "$TMP/p.jsonl" --output "$TMP/p.out" --temperature 0 \
        --max-new-tokens 12 --ignore-eos 2>/dev/null || fail "generate on $1"
    $PY -c 'import json,sys; print(*json.loads(open(sys.argv[1]).readline())["output_ids"])' "$TMP/p.out"
}

echo "== version 0"
v0=$(gen_router) || fail "generate through the router"
l0=$(gen_local "$TMP/m")
[ "$v0" = "0 $l0" ] || fail "version 0 through the router: '$v0', quench generate: '0 $l0'"
echo "router: $v0"

echo "== train-step --router publishes and announces version 1"
timeout 120 "$Q" train-step --model "$TMP/m" --batch "$TMP/b.jsonl" --out "$TMP/t" --lr 0.05 \
    --router "$ZMQ" --update-weights-timeout 60 >"$TMP/train.json" 2>"$TMP/train.log" ||
    fail "train-step --router: $(tail -3 "$TMP/train.log")"
grep -q '"weight_version": 1' "$TMP/train.json" || fail "no weight_version line: $(cat "$TMP/train.json")"
grep -q '"update_weights/engines": 2' "$TMP/train.json" || fail "not both engines applied it"
grep 'perf/update_weights_time' "$TMP/train.json"

v1=$(gen_router) || fail "generate through the router after the update"
l1=$(gen_local "$TMP/t")
echo "router: $v1"
[ "$v1" = "1 $l1" ] || fail "version 1 through the router: '$v1', quench generate on the trained model: '1 $l1'"
[ "$l1" != "$l0" ] || fail "training did not change the greedy tokens (the check would be blind)"

echo "== a router that is not there: a timeout naming the phase"
out=$(timeout 60 "$Q" train-step --model "$TMP/m" --batch "$TMP/b.jsonl" --out "$TMP/t2" \
    --router tcp://127.0.0.1:1 --update-weights-timeout 1 2>&1 >/dev/null)
rc=$?
[ $rc = 1 ] || fail "exit $rc for an absent router"
echo "$out" | grep -q "no READY from the router" || fail "message: $out"
echo "PASS"
