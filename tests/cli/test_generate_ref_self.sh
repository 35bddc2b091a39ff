#!/usr/bin/env bash
# test_generate_ref_self.sh — self-test of the rollout reference tests/ref/generate_ref.py
# (issue 5) on random tiny models made by `quench init-model`; it does not run
# `quench generate` (that comparison belongs to the generate test). Checks:
#   greedy        runs; its per-step log-probs agree with one teacher-forced
#                 pass (checked inside greedy); an eos id cuts the output just
#                 after its first occurrence with finish_reason "stop"
#   check         accepts the reference itself (also wrapped in "samples");
#                 rejects a changed id, a log-prob off by 3e-5, a NaN, a short
#                 output, a wrong finish_reason, a missing line; names a
#                 near-tie when the reference margin there is < 1e-6
#   bench         --verify: the float32 KV-cache loop (batched prefill, GQA,
#                 MoE) gives greedy's tokens; a short timed run prints JSON
set -euo pipefail
Q=${QN_BIN:?QN_BIN not set}
SRC=${QN_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
REF=$SRC/tests/ref/generate_ref.py
PY=/usr/bin/python3
if ! $PY -c 'import torch, numpy' 2>/dev/null; then
    echo "FAIL: $PY lacks torch/numpy; run scripts/install-deps.sh (python3-torch python3-numpy)"
    exit 1
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

expect_fail() { # what pattern cmd...
    local what=$1 pat=$2 out
    shift 2
    if out=$("$@" 2>&1); then
        echo "FAIL: $what: check passed"; echo "$out"; exit 1
    fi
    if ! grep -q -- "$pat" <<<"$out"; then
        echo "FAIL: $what: output lacks '$pat':"; echo "$out"; exit 1
    fi
    echo "ok ($what): $(tail -n 1 <<<"$out")"
}

for spec in tiny_glm45:0.3 tiny_qwen3moe:0.3 tiny_llama_tied:0.15; do
    name=${spec%%:*}
    echo "== $name"
    "$Q" init-model --config "$SRC/tests/ref/configs/$name.json" --out "$TMP/$name" --seed 11 \
        --init-std "${spec##*:}" --score-bias-std 0.1 >/dev/null
    $PY - "$SRC/tests/ref/configs/$name.json" "$TMP/in.jsonl" <<'PYEOF'
import json, random, sys
V = json.load(open(sys.argv[1]))["vocab_size"]
r = random.Random(5)
with open(sys.argv[2], "w") as f:
    for L in (1, 6, 19, 3, 33):
        f.write(json.dumps({"tokens": [r.randrange(V) for _ in range(L)]}) + "\n")
PYEOF
    $PY "$REF" greedy --model "$TMP/$name" --input "$TMP/in.jsonl" --max-new-tokens 12 \
        --out "$TMP/ref.jsonl"
    # eos: the third token of prompt 0's output
    eos=$($PY -c 'import json,sys;print(json.loads(open(sys.argv[1]).readline())["output_ids"][2])' \
          "$TMP/ref.jsonl")
    $PY "$REF" greedy --model "$TMP/$name" --input "$TMP/in.jsonl" --max-new-tokens 12 \
        --out "$TMP/ref_eos.jsonl" --eos "$eos"
    $PY - "$TMP/ref.jsonl" "$TMP/ref_eos.jsonl" "$eos" <<'PYEOF'
import json, sys
full = [json.loads(l) for l in open(sys.argv[1])]
cut = [json.loads(l) for l in open(sys.argv[2])]
eos = int(sys.argv[3])
for f, c in zip(full, cut):
    ids = f["output_ids"]
    n = ids.index(eos) + 1 if eos in ids else len(ids)
    want_reason = "stop" if eos in ids else "length"
    if c["output_ids"] != ids[:n] or c["finish_reason"] != want_reason \
            or c["output_logprobs"] != f["output_logprobs"][:n] or len(c["margins"]) != n:
        sys.exit(f"FAIL: eos {eos}: {c} vs full {ids}")
    if f["finish_reason"] != "length" or len(ids) != 12:
        sys.exit(f"FAIL: no eos given but {f['finish_reason']} after {len(ids)} tokens")
print(f"ok (eos {eos} cuts the outputs)")
PYEOF
    $PY "$REF" check --ref "$TMP/ref.jsonl" --got "$TMP/ref.jsonl"
    $PY - "$TMP/ref.jsonl" "$TMP" <<'PYEOF'
import copy, json, sys
refs = [json.loads(l) for l in open(sys.argv[1])]
tmp = sys.argv[2]
def w(name, rows):
    with open(f"{tmp}/{name}.jsonl", "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
got = [{"output_ids": r["output_ids"], "output_logprobs": r["output_logprobs"],
        "finish_reason": r["finish_reason"], "timing": {"total_s": 0.1}} for r in refs]
w("samples", [{"samples": [g, {"output_ids": [0], "output_logprobs": [0.0]}]} for g in got])
b = copy.deepcopy(got); b[2]["output_ids"][5] = (b[2]["output_ids"][5] + 1) % 90; w("id", b)
b = copy.deepcopy(got); b[4]["output_logprobs"][7] += 3e-5; w("lp", b)
b = copy.deepcopy(got); b[1]["output_logprobs"][0] = float("nan"); w("nan", b)
b = copy.deepcopy(got); b[3]["output_ids"].pop(); b[3]["output_logprobs"].pop(); w("short", b)
b = copy.deepcopy(got); b[0]["finish_reason"] = "stop"; w("reason", b)
w("missing", got[:-1])
r2 = copy.deepcopy(refs); r2[2]["margins"][5] = 4e-7; w("tie_ref", r2)
PYEOF
    $PY "$REF" check --ref "$TMP/ref.jsonl" --got "$TMP/samples.jsonl"
    expect_fail "changed id" "ids differ at step 5" \
        $PY "$REF" check --ref "$TMP/ref.jsonl" --got "$TMP/id.jsonl"
    expect_fail "log-prob off by 3e-5" "dlogp" \
        $PY "$REF" check --ref "$TMP/ref.jsonl" --got "$TMP/lp.jsonl"
    expect_fail "NaN log-prob" "non-finite" \
        $PY "$REF" check --ref "$TMP/ref.jsonl" --got "$TMP/nan.jsonl"
    expect_fail "short output" "ids differ at step 11" \
        $PY "$REF" check --ref "$TMP/ref.jsonl" --got "$TMP/short.jsonl"
    expect_fail "finish_reason" "finish_reason" \
        $PY "$REF" check --ref "$TMP/ref.jsonl" --got "$TMP/reason.jsonl"
    expect_fail "missing line" "4 lines" \
        $PY "$REF" check --ref "$TMP/ref.jsonl" --got "$TMP/missing.jsonl"
    expect_fail "near-tie" "NEAR-TIE" \
        $PY "$REF" check --ref "$TMP/tie_ref.jsonl" --got "$TMP/id.jsonl"
    $PY "$REF" bench --model "$TMP/$name" --prompt-len 9 --decode-steps 11 --threads 2 \
        --verify --verify-prompts 3 --seed 1
done

echo "== bench prints one JSON line"
out=$($PY "$REF" bench --model "$TMP/tiny_glm45" --batch 4 --prompt-len 8 --decode-steps 3 \
      --threads 2 --repeats 1)
$PY -c 'import json,math,sys
d = json.loads(sys.argv[1])
for k in ("prefill_tokens_per_s", "decode_tokens_per_s"):
    assert math.isfinite(d[k]) and d[k] > 0, (k, d)
assert d["batch"] == 4 and d["threads"] == 2, d' "$out"
echo "ok: $out"
echo "PASS"
