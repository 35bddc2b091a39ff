#!/usr/bin/env bash
# test_generate.sh — `quench generate` on a random tiny GLM-4.5-style MoE
# (tests/ref/configs/tiny_glm45.json, made with `quench init-model`):
#  1. mixed good and bad lines: one output line per input line, in order;
#     the bad ones (empty prompt, prompt longer than --context-len, negative
#     max_new_tokens, top_p 1.5, broken JSON, token id outside the
#     vocabulary) carry an error naming the problem, the good ones carry
#     tokens with finite log-probs; exit status 3;
#  2. --n-samples-per-prompt 4 gives 4 samples per line, and a line's
#     sampling_params.n overrides it;
#  3. batch invariance: a seeded sampled request gives the same tokens run
#     alone and inside a batch of 64 requests of mixed lengths whose tiny
#     --kv-cache-tokens forces preemptions (the stderr summary says how many,
#     and it must be > 0); log-probs within 1e-5;
#  4. --quantize fp8 runs and produces tokens (the FP8-vs-fp32 log-prob
#     deviation of the common greedy prefix is printed for information).
set -euo pipefail
Q=${QN_BIN:?QN_BIN not set}
SRC=${QN_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
PY=/usr/bin/python3
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
fail() { echo "FAIL: $*"; exit 1; }

"$Q" init-model --config "$SRC/tests/ref/configs/tiny_glm45.json" --out "$TMP/m" --seed 3 \
    --init-std 0.2 >/dev/null

echo "== 1. good and bad lines"
long=$($PY -c 'print(",".join(str(i % 90 + 1) for i in range(40)))')
cat >"$TMP/mixed.jsonl" <<EOF
{"tokens":[1,2,3,4,5],"sampling_params":{"seed":7}}
{"tokens":[]}
{"tokens":[$long]}
{"tokens":[1,2,3],"sampling_params":{"max_new_tokens":-1}}
{"tokens":[1,2,3],"sampling_params":{"top_p":1.5}}
{"tokens":[1,2,
{"tokens":[1,2,500]}
{"tokens":[7,8,9],"sampling_params":{"temperature":0}}
EOF
set +e
"$Q" generate --model "$TMP/m" --input "$TMP/mixed.jsonl" --output "$TMP/mixed.out" \
    --context-len 32 --max-new-tokens 8 --ignore-eos 2>"$TMP/mixed.err"
rc=$?
set -e
[ $rc -eq 3 ] || { cat "$TMP/mixed.err"; fail "exit status $rc, expected 3 (some lines refused)"; }
$PY - "$TMP/mixed.out" <<'EOF'
import json, math, re, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 8, f"{len(lines)} output lines for 8 input lines"
# what each bad line's error must name (case-insensitive regex)
want = {1: r"empty", 2: r"context", 3: r"max_new_tokens", 4: r"top_p", 5: r"json",
        6: r"vocab|token id"}
for i, l in enumerate(lines):
    assert l.get("index") == i, f"line {i} has index {l.get('index')}"
    if i in want:
        e = l.get("error")
        assert isinstance(e, str) and re.search(want[i], e, re.I), \
            f"line {i}: error {e!r} does not match /{want[i]}/"
        assert "output_ids" not in l, f"line {i}: refused but has output_ids"
        print(f"line {i} refused: {e}")
    else:
        assert "error" not in l, f"line {i}: unexpected error {l['error']!r}"
        ids, lps = l["output_ids"], l["output_logprobs"]
        assert len(ids) == 8 and len(lps) == 8, f"line {i}: {len(ids)} ids, {len(lps)} logprobs"
        assert all(isinstance(x, int) and 0 <= x < 97 for x in ids), f"line {i}: bad ids {ids}"
        assert all(x is not None and math.isfinite(x) and x <= 0 for x in lps), \
            f"line {i}: bad logprobs {lps}"
        assert l["finish_reason"] == "length", f"line {i}: finish {l['finish_reason']}"
        assert l["prompt_tokens"] in (3, 5), f"line {i}: prompt_tokens {l['prompt_tokens']}"
        t = l["time"]
        assert 0 <= t["first_token_s"] <= t["total_s"], f"line {i}: time {t}"
print("mixed: 8 lines in order, 6 refused with reasons, 2 generated")
EOF

echo "== 2. n samples per prompt"
cat >"$TMP/n.jsonl" <<EOF
{"tokens":[5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21]}
{"tokens":[30,31,32],"sampling_params":{"n":2}}
EOF
"$Q" generate --model "$TMP/m" --input "$TMP/n.jsonl" --output "$TMP/n.out" \
    --n-samples-per-prompt 4 --max-new-tokens 5 --ignore-eos --seed 9 2>"$TMP/n.err" ||
    { cat "$TMP/n.err"; fail "n samples run failed"; }
$PY - "$TMP/n.out" <<'EOF'
import json, math, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 2, f"{len(lines)} lines"
for i, want in enumerate((4, 2)):
    s = lines[i].get("samples")
    assert isinstance(s, list) and len(s) == want, f"line {i}: {len(s or [])} samples, want {want}"
    for j, x in enumerate(s):
        assert len(x["output_ids"]) == 5 == len(x["output_logprobs"]), f"line {i} sample {j}"
        assert all(math.isfinite(v) for v in x["output_logprobs"]), f"line {i} sample {j}"
        assert x["finish_reason"] == "length"
    assert "output_ids" not in lines[i], f"line {i}: output_ids outside samples"
    assert lines[i]["prompt_tokens"] in (17, 3)
print("n: 4 and 2 samples")
EOF

echo "== 3. batch invariance under preemption"
SEEDED='{"tokens":[11,22,33,44,55,66,77,88,1,2,3,4,5,6,7,8,9,10,12,13],"sampling_params":{"seed":1234,"temperature":0.8,"top_p":0.9,"top_k":40,"max_new_tokens":24}}'
echo "$SEEDED" >"$TMP/alone.jsonl"
$PY - "$TMP/batch.jsonl" "$SEEDED" <<'EOF'
import json, random, sys
rng = random.Random(5)
out = []
for i in range(64):
    if i == 37:
        out.append(sys.argv[2])
        continue
    n = rng.randint(3, 60)
    sp = {"max_new_tokens": rng.randint(8, 30), "temperature": 1.0}
    if i % 3 == 0:
        sp["seed"] = i
    out.append(json.dumps({"tokens": [rng.randrange(97) for _ in range(n)], "sampling_params": sp}))
open(sys.argv[1], "w").write("\n".join(out) + "\n")
EOF
"$Q" generate --model "$TMP/m" --input "$TMP/alone.jsonl" --output "$TMP/alone.out" \
    --ignore-eos 2>"$TMP/alone.err" || { cat "$TMP/alone.err"; fail "alone run failed"; }
"$Q" generate --model "$TMP/m" --input "$TMP/batch.jsonl" --output "$TMP/batch.out" \
    --ignore-eos --kv-cache-tokens 256 --block-size 4 --max-running-requests 32 \
    --max-prefill-tokens 64 2>"$TMP/batch.err" || { cat "$TMP/batch.err"; fail "batch run failed"; }
grep -E "preemptions [0-9]+" "$TMP/batch.err" || { cat "$TMP/batch.err"; fail "no preemption count"; }
npre=$(grep -oE "preemptions [0-9]+" "$TMP/batch.err" | tail -1 | awk '{print $2}')
[ "$npre" -gt 0 ] || fail "the small KV cache forced no preemption ($npre)"
$PY - "$TMP/alone.out" "$TMP/batch.out" <<'EOF'
import json, math, sys
a = json.loads(open(sys.argv[1]).readline())
b = [json.loads(l) for l in open(sys.argv[2])]
assert len(b) == 64, f"{len(b)} lines"
assert all(l.get("index") == i and "output_ids" in l for i, l in enumerate(b)), "batch lines"
g = b[37]
assert len(a["output_ids"]) == 24, f"alone: {len(a['output_ids'])} tokens"
assert a["output_ids"] == g["output_ids"], f"tokens differ:\n alone {a['output_ids']}\n batch {g['output_ids']}"
d = max(abs(x - y) for x, y in zip(a["output_logprobs"], g["output_logprobs"]))
assert math.isfinite(d) and d <= 1e-5, f"log-probs differ by {d:.3e}"
print(f"seeded request: 24 tokens equal alone and in a batch of 64, max |dlogp| {d:.1e}")
EOF

echo "== 4. --quantize fp8"
printf '{"tokens":[1,2,3,4,5,6,7,8],"sampling_params":{"temperature":0}}\n' >"$TMP/g.jsonl"
"$Q" generate --model "$TMP/m" --input "$TMP/g.jsonl" --output "$TMP/g32.out" \
    --max-new-tokens 12 --ignore-eos 2>"$TMP/g32.err" || { cat "$TMP/g32.err"; fail "fp32 run"; }
"$Q" generate --model "$TMP/m" --input "$TMP/g.jsonl" --output "$TMP/g8.out" \
    --max-new-tokens 12 --ignore-eos --quantize fp8 2>"$TMP/g8.err" ||
    { cat "$TMP/g8.err"; fail "fp8 run"; }
$PY - "$TMP/g32.out" "$TMP/g8.out" <<'EOF'
import json, math, sys
a = json.loads(open(sys.argv[1]).readline())
b = json.loads(open(sys.argv[2]).readline())
assert len(b["output_ids"]) == 12 and all(math.isfinite(x) for x in b["output_logprobs"]), b
n = 0
while n < 12 and a["output_ids"][n] == b["output_ids"][n]:
    n += 1
d = max([abs(x - y) for x, y in zip(a["output_logprobs"][:n], b["output_logprobs"][:n])] or [0])
print(f"fp8: 12 tokens; first {n} equal to fp32 greedy, max |dlogp| fp8 vs fp32 there {d:.2e}")
EOF
echo "test_generate: OK"
