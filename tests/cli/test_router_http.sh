#!/usr/bin/env bash
# test_router_http.sh — the router's HTTP API with curl, in front of two
# real engines (`quench rollout`) serving a random tiny GLM-4.5-style model
# (tests/ref/configs/tiny_glm45.json):
#  1. POST /generate (SGLang's shape: input_ids, n > 1, text when a tokenizer
#     fixture is there), POST /v1/completions (OpenAI's shape, plain and
#     "stream": true as server-sent events), GET /health, GET /workers,
#     GET /metrics (every line Prometheus text) answer well-formed JSON/text;
#  2. bad JSON, wrong types and a missing prompt get 400 naming the problem,
#     a body over --max-body-bytes gets 413 or a dropped connection, and the
#     router still serves afterwards;
#  3. DELETE /workers/<id> marks the engine draining and work goes to the
#     other one; SIGTERM stops the router with exit status 0.
# Every process started here is killed and reaped on exit, pass or fail;
# every wait is bounded.
set -u
Q=${QN_BIN:?QN_BIN not set}
SRC=${QN_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
FIX=${QN_FIXTURES:-$SRC/../shared/fixtures}
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
fail() {
    echo "FAIL: $*"
    for f in "$TMP"/*.log; do echo "--- $f"; tail -20 "$f"; done
    exit 1
}

"$Q" init-model --config "$SRC/tests/ref/configs/tiny_glm45.json" --out "$TMP/m" --seed 3 \
    --init-std 0.2 >/dev/null || fail "init-model"
TOK=()
if [ -f "$FIX/glm4_9b_chat_tokenizer/tokenizer.model" ]; then
    TOK=(--tokenizer "$FIX/glm4_9b_chat_tokenizer")
else
    echo "note: no tokenizer fixture; text prompts are checked for their 400 only"
fi

"$Q" router --listen 'tcp://127.0.0.1:*' --http-port 0 --port-file "$TMP/ports" \
    --heartbeat-ms 200 --max-body-bytes 65536 "${TOK[@]}" >"$TMP/router.log" 2>&1 &
RPID=$!
PIDS+=($RPID)
for _ in $(seq 1 100); do [ -s "$TMP/ports" ] && break; sleep 0.1; done
[ -s "$TMP/ports" ] || fail "router wrote no port file"
ZMQ=$(sed -n 's/^zmq=//p' "$TMP/ports")
PORT=$(sed -n 's/^http=//p' "$TMP/ports")
URL=http://127.0.0.1:$PORT
for i in 0 1; do
    "$Q" rollout --router "$ZMQ" --model "$TMP/m" --engine-id "e$i" --threads 1 \
        --max-running-requests 8 >"$TMP/engine$i.log" 2>&1 &
    PIDS+=($!)
done

# req METHOD PATH [BODY] -> sets CODE and writes the body to $TMP/body
req() {
    local args=(-s -o "$TMP/body" -w '%{http_code}' --max-time 30 -X "$1" "$URL$2")
    [ $# -ge 3 ] && args+=(-H 'Content-Type: application/json' --data-binary "$3")
    CODE=$(curl "${args[@]}")
}
check() { $PY - "$TMP/body" "$@" || fail "$1: $(head -c 400 "$TMP/body")"; }

echo "== health until both engines can take work"
ok=0
for _ in $(seq 1 100); do
    req GET /health
    if [ "$CODE" = 200 ] && $PY -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["engines"] != 2)' "$TMP/body"; then
        ok=1; break
    fi
    sleep 0.1
done
[ $ok = 1 ] || fail "/health never reported 2 engines: $CODE $(cat "$TMP/body")"

echo "== 1. well-formed answers"
req POST /generate '{"input_ids":[1,2,3,4],"sampling_params":{"max_new_tokens":6,"temperature":0.7,"seed":5},"return_logprob":true}'
[ "$CODE" = 200 ] || fail "/generate: $CODE"
check generate <<'EOF'
import json, math, sys
o = json.load(open(sys.argv[1]))
ids, m = o["output_ids"], o["meta_info"]
assert isinstance(ids, list) and 1 <= len(ids) <= 6 and all(isinstance(i, int) for i in ids), ids
lp = m["output_token_logprobs"]
assert len(lp) == len(ids), (len(lp), len(ids))
for (l, t), i in zip(lp, ids):
    assert math.isfinite(l) and l <= 0 and t == i, (l, t, i)
assert m["finish_reason"]["type"] in ("stop", "length"), m["finish_reason"]
assert m["weight_version"] == 0 and m["prompt_tokens"] == 4 and m["completion_tokens"] == len(ids)
assert m["e2e_latency"] >= 0 and m["cached_tokens"] >= 0
EOF
req POST /generate '{"input_ids":[5,6],"sampling_params":{"max_new_tokens":3,"n":3}}'
[ "$CODE" = 200 ] || fail "/generate n=3: $CODE"
check "generate n=3" <<'EOF'
import json, sys
o = json.load(open(sys.argv[1]))
assert isinstance(o, list) and len(o) == 3, o
assert all("output_ids" in x and "meta_info" in x and "output_token_logprobs" not in x["meta_info"] for x in o)
EOF
if [ ${#TOK[@]} -gt 0 ]; then
    req POST /generate '{"text":"x?","sampling_params":{"max_new_tokens":4}}'
    [ "$CODE" = 200 ] || fail "/generate text: $CODE"
    check "generate text" <<'EOF'
import json, sys
o = json.load(open(sys.argv[1]))
assert isinstance(o["text"], str) and o["meta_info"]["prompt_tokens"] == 2, o
EOF
else
    req POST /generate '{"text":"x?"}'
    [ "$CODE" = 400 ] || fail "text without a tokenizer: $CODE"
fi
req POST /v1/completions '{"model":"tiny","prompt":[1,2,3],"max_tokens":5,"n":2,"logprobs":1,"seed":3}'
[ "$CODE" = 200 ] || fail "/v1/completions: $CODE"
check completions <<'EOF'
import json, math, sys
o = json.load(open(sys.argv[1]))
assert o["object"] == "text_completion" and o["model"] == "tiny" and o["id"].startswith("cmpl-")
assert isinstance(o["created"], int)
ch = o["choices"]
assert [c["index"] for c in ch] == [0, 1], ch
n = 0
for c in ch:
    assert isinstance(c["text"], str) and c["finish_reason"] in ("stop", "length")
    tl = c["logprobs"]["token_logprobs"]
    assert len(tl) == len(c["token_ids"]) and all(math.isfinite(x) and x <= 0 for x in tl)
    n += len(c["token_ids"])
u = o["usage"]
assert u["prompt_tokens"] == 3 and u["completion_tokens"] == n and u["total_tokens"] == 3 + n, u
EOF
echo "== 1b. token-by-token streaming"
req POST /v1/completions '{"prompt":[7,8,9],"max_tokens":8,"temperature":0,"logprobs":1}'
[ "$CODE" = 200 ] || fail "/v1/completions greedy: $CODE"
cp "$TMP/body" "$TMP/whole"
req POST /v1/completions '{"prompt":[7,8,9],"max_tokens":8,"temperature":0,"logprobs":1,"stream":true}'
[ "$CODE" = 200 ] || fail "/v1/completions stream: $CODE"
$PY - "$TMP/body" "$TMP/whole" <<'EOF' || fail "stream: $(head -c 1500 "$TMP/body")"
import json, math, sys
raw = open(sys.argv[1]).read()
whole = json.load(open(sys.argv[2]))["choices"][0]
assert raw.endswith("data: [DONE]\n\n"), raw[-80:]
events = raw.split("\n\n")[:-1]
assert events[-1] == "data: [DONE]", events
chunks = []
for e in events[:-1]:
    assert e.startswith("data: "), e
    o = json.loads(e[6:])
    assert o["object"] == "text_completion" and len(o["choices"]) == 1, o
    chunks.append(o["choices"][0])
# one engine step per token: more than one chunk of content
assert len(chunks) > 2, f"only {len(chunks)} events"
assert all(c["index"] == 0 for c in chunks)
assert all(c["finish_reason"] is None for c in chunks[:-1]), chunks
assert chunks[-1]["finish_reason"] == whole["finish_reason"], (chunks[-1], whole)
ids = [t for c in chunks for t in c["token_ids"]]
assert ids == whole["token_ids"], (ids, whole["token_ids"])
assert "".join(c["text"] for c in chunks) == whole["text"], chunks
lp = [x for c in chunks for x in c["logprobs"]["token_logprobs"]]
want = whole["logprobs"]["token_logprobs"]
assert len(lp) == len(want) and all(math.isfinite(a) and math.isfinite(b) and abs(a - b) < 1e-5
                                    for a, b in zip(lp, want)), (lp, want)
print(f"stream: {len(chunks)} events for {len(ids)} tokens")
EOF
req POST /v1/completions '{"prompt":[7,8,9],"max_tokens":4,"n":2,"stream":true}'
[ "$CODE" = 200 ] || fail "/v1/completions stream n=2: $CODE"
check "stream n=2" <<'EOF'
import json, sys
raw = open(sys.argv[1]).read()
events = raw.split("\n\n")[:-1]
assert events[-1] == "data: [DONE]", events
fin = {}
for e in events[:-1]:
    c = json.loads(e[6:])["choices"][0]
    assert c["index"] in (0, 1) and c["index"] not in fin, (c, fin)
    if c["finish_reason"] is not None:
        assert c["finish_reason"] in ("stop", "length")
        fin[c["index"]] = c
assert sorted(fin) == [0, 1], events
EOF
req POST /generate '{"input_ids":[7,8,9],"sampling_params":{"max_new_tokens":8,"temperature":0}}'
[ "$CODE" = 200 ] || fail "/generate greedy: $CODE"
cp "$TMP/body" "$TMP/whole"
req POST /generate '{"input_ids":[7,8,9],"sampling_params":{"max_new_tokens":8,"temperature":0},"stream":true}'
[ "$CODE" = 200 ] || fail "/generate stream: $CODE"
$PY - "$TMP/body" "$TMP/whole" <<'EOF' || fail "generate stream: $(head -c 1500 "$TMP/body")"
import json, sys
raw = open(sys.argv[1]).read()
whole = json.load(open(sys.argv[2]))
events = raw.split("\n\n")[:-1]
assert events[-1] == "data: [DONE]", events
objs = [json.loads(e[6:]) for e in events[:-1]]
assert len(objs) > 2, f"only {len(objs)} events"
for a, b in zip(objs, objs[1:]):  # SGLang's shape: the output so far, growing
    assert b["output_ids"][:len(a["output_ids"])] == a["output_ids"], (a, b)
    assert a["meta_info"]["finish_reason"] is None, a
assert objs[-1]["output_ids"] == whole["output_ids"], (objs[-1], whole)
assert objs[-1]["meta_info"]["finish_reason"] == whole["meta_info"]["finish_reason"]
assert objs[-1].get("text") == whole.get("text")
print(f"generate stream: {len(objs)} events")
EOF
req GET /workers
[ "$CODE" = 200 ] || fail "/workers: $CODE"
check workers <<'EOF'
import json, sys
w = json.load(open(sys.argv[1]))
assert sorted(x["id"] for x in w) == ["e0", "e1"], w
for x in w:
    assert x["version"] == 0 and x["draining"] is False and x["running"] >= 0
    assert x["outstanding_tokens"] >= 0 and 0 <= x["last_heartbeat_age_s"] < 5
assert sum(x["results"] for x in w) >= 8, w
EOF
req GET /metrics
[ "$CODE" = 200 ] || fail "/metrics: $CODE"
check metrics <<'EOF'
import re, sys
line_re = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? '
                     r'([-+]?[0-9.]+([eE][-+]?[0-9]+)?|NaN|[-+]Inf)$')
names = set()
for l in open(sys.argv[1]).read().splitlines():
    if l.startswith("# HELP ") or l.startswith("# TYPE "):
        continue
    assert line_re.match(l), f"not a Prometheus sample line: {l!r}"
    names.add(l.split("{")[0].split(" ")[0])
for n in ("quench_router_requests_total", "quench_router_requests_failed_total",
          "quench_router_requests_in_flight", "quench_router_engines",
          "quench_router_engine_outstanding_tokens", "quench_router_request_latency_seconds_bucket",
          "quench_router_weight_version"):
    assert n in names, f"{n} missing"
EOF

echo "== 2. bad requests"
bad() { # PATH BODY WORD
    req POST "$1" "$2"
    [ "$CODE" = 400 ] || fail "$2: status $CODE, expected 400"
    $PY - "$TMP/body" "$3" <<'EOF' || fail "$2: error does not name '$3': $(cat "$TMP/body")"
import json, sys
e = json.load(open(sys.argv[1]))["error"]
assert sys.argv[2] in e["message"], e
EOF
}
bad /generate '{"input_ids":[1,2' "not valid JSON"
bad /generate '{"input_ids":"12"}' "input_ids"
bad /generate '{"input_ids":[1,2.5]}' "input_ids[1]"
bad /generate '{"sampling_params":{"max_new_tokens":3}}' "missing prompt"
bad /generate '{"input_ids":[1],"sampling_params":{"temperature":"hot"}}' "sampling_params.temperature"
bad /v1/completions '{"prompt":[1],"max_tokens":-1}' "max_tokens"
bad /v1/completions '{"prompt":["a","b"]}' "batch"
bad /v1/completions '{"max_tokens":3}' "missing prompt"
# over --max-body-bytes (64 KiB): 413, or the connection is dropped
head -c 2000000 /dev/zero | tr '\0' ' ' >"$TMP/huge"
CODE=$(curl -s -o "$TMP/body" -w '%{http_code}' --max-time 30 -X POST --data-binary @"$TMP/huge" "$URL/generate")
[ "$CODE" = 413 ] || [ "$CODE" = 000 ] || fail "huge body: status $CODE"
req POST /generate '{"input_ids":[3,4],"sampling_params":{"max_new_tokens":2}}'
[ "$CODE" = 200 ] || fail "/generate after bad requests: $CODE"
kill -0 $RPID 2>/dev/null || fail "router died"

echo "== 3. drain one engine, then stop"
req DELETE /workers/e1
[ "$CODE" = 200 ] || fail "DELETE /workers/e1: $CODE"
req GET /workers
check "workers after drain" <<'EOF'
import json, sys
w = {x["id"]: x for x in json.load(open(sys.argv[1]))}
assert w["e1"]["draining"] is True and w["e0"]["draining"] is False, w
EOF
for i in 1 2 3 4; do
    req POST /generate '{"input_ids":[9,9],"sampling_params":{"max_new_tokens":2}}'
    [ "$CODE" = 200 ] || fail "/generate with e1 draining: $CODE"
    check "served by e0" <<'EOF'
import json, sys
assert json.load(open(sys.argv[1]))["meta_info"]["engine_id"] == "e0"
EOF
done
kill -TERM $RPID
rc=124
for _ in $(seq 1 100); do
    if ! kill -0 $RPID 2>/dev/null; then wait $RPID; rc=$?; break; fi
    sleep 0.1
done
[ $rc = 0 ] || fail "router exit status $rc after SIGTERM"
echo "router http test: ok"
