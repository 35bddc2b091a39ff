#!/usr/bin/env bash
# test_generate.sh — `quench generate` on a random tiny GLM-4.5-style MoE
# (tests/ref/configs/tiny_glm45.json, made with `quench init-model`):
#  1. mixed good and bad lines: one output line per input line, in order;
#     the bad ones (empty prompt, prompt longer than --context-len, negative
#     max_new_tokens, top_p 1.5, broken JSON, token id outside the
#     vocabulary) carry an error naming the problem, the good ones carry
#     tokens with finite log-probs; exit status 3; a missing model is a fatal
#     error (exit 1, no output file);
#  2. --n-samples-per-prompt 4 gives 4 samples per line, and a line's
#     sampling_params.n overrides it;
#  3. batch invariance: a seeded sampled request gives the same tokens run
#     alone and inside a batch of 64 requests of mixed lengths whose tiny
#     --kv-cache-tokens forces preemptions (the stderr summary says how many,
#     and it must be > 0); log-probs within 1e-5;
#  4. --quantize fp8 runs and produces tokens (the FP8-vs-fp32 log-prob
#     deviation of the common greedy prefix is printed for information);
#  5. with a tokenizer (the Qwen2 fixture, on a random tiny Qwen3 with its
#     vocabulary): a {"text"} prompt is encoded and the output decoded; a stop
#     string taken from the middle of the greedy text ends the same request
#     there with finish_reason "stop", the text cut where the match begins
#     and the ids a prefix of the unstopped run's.
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

set +e
"$Q" generate --model "$TMP/missing" --input "$TMP/mixed.jsonl" --output "$TMP/fatal.out" \
    2>"$TMP/fatal.err"
rc=$?
set -e
[ $rc -eq 1 ] || fail "a missing model exits $rc, expected 1"
[ ! -e "$TMP/fatal.out" ] || fail "a fatal error left an output file"
grep -q "missing/config.json" "$TMP/fatal.err" || fail "the fatal error does not name the file"

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
echo "== 5. text prompts, stop strings, decoded text (Qwen2 tokenizer fixture)"
FX=${QN_FIXTURES:-$SRC/../shared/fixtures}
TOKDIR=$FX/qwen2_tokenizer_rtpllm
[ -f "$TOKDIR/vocab.json" ] || fail "fixture $TOKDIR missing (QN_FIXTURES)"
$PY - "$SRC/tests/ref/configs/tiny_qwen3_tied.json" "$TMP/qcfg.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["vocab_size"] = 151646  # the Qwen2 fixture: 151643 BPE ids + 3 added tokens
json.dump(c, open(sys.argv[2], "w"))
EOF
"$Q" init-model --config "$TMP/qcfg.json" --out "$TMP/q" --seed 4 --init-std 0.5 >/dev/null
printf '%s\n' '{"text":"The quick brown fox jumps over the lazy dog.","sampling_params":{"temperature":0,"max_new_tokens":24}}' >"$TMP/t.jsonl"
"$Q" generate --model "$TMP/q" --tokenizer "$TOKDIR" --input "$TMP/t.jsonl" --output "$TMP/t.out" \
    --ignore-eos 2>"$TMP/t.err" || { cat "$TMP/t.err"; fail "text prompt run"; }
# a stop string taken from the middle of the greedy text: the same request with it must stop
# there, with the text cut where the match begins and the ids a prefix of the first run's
$PY - "$TMP/t.out" "$TMP/t.jsonl" "$TMP/ts.jsonl" "$TOKDIR" <<'EOF'
import json, sys
o = json.loads(open(sys.argv[1]).readline())
assert len(o["output_ids"]) == 24 and isinstance(o.get("text"), str), o
text = o["text"]
assert text.strip() and o["prompt_tokens"] > 5, (text, o["prompt_tokens"])
# the shortest substring starting in the second half that occurs only once (so the
# match position is known) and has no U+FFFD (a replaced partial character)
best = None
for i in range(len(text) // 2, len(text)):
    for n in range(2, 8):
        s = text[i:i + n]
        if len(s) == n and "\ufffd" not in s and text.find(s) == i:
            best = (i, s)
            break
    if best:
        break
assert best, f"no usable stop string in {text!r}"
r = json.loads(open(sys.argv[2]).readline())
r["sampling_params"]["stop"] = [best[1]]
open(sys.argv[3], "w").write(json.dumps(r) + "\n")
json.dump({"at": best[0], "stop": best[1], "text": text, "ids": o["output_ids"]},
          open(sys.argv[3] + ".want", "w"))
print(f"greedy text {text!r}; stop string {best[1]!r} at char {best[0]}")
EOF
"$Q" generate --model "$TMP/q" --tokenizer "$TOKDIR" --input "$TMP/ts.jsonl" --output "$TMP/ts.out" \
    --ignore-eos 2>"$TMP/ts.err" || { cat "$TMP/ts.err"; fail "stop string run"; }
$PY - "$TMP/ts.out" "$TMP/ts.jsonl.want" <<'EOF'
import json, sys
o = json.loads(open(sys.argv[1]).readline())
w = json.load(open(sys.argv[2]))
assert o["finish_reason"] == "stop", f"finish {o['finish_reason']}, want stop"
assert o["text"] == w["text"][:w["at"]], f"text {o['text']!r}, want {w['text'][:w['at']]!r}"
n = len(o["output_ids"])
assert 0 < n < 24 and o["output_ids"] == w["ids"][:n], (o["output_ids"], w["ids"])
print(f"stop string: {n} tokens, text cut at char {w['at']}")
EOF
echo "test_generate: OK"
