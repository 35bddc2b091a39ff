#!/usr/bin/env bash
# test_generate_ref.sh — `quench generate` greedy outputs against the
# independent PyTorch reference tests/ref/generate_ref.py (issue 5, "Greedy
# outputs"): on random tiny models (GLM-4.5-style MoE, Qwen3-MoE, dense
# Llama and Qwen3 with tied embeddings) the token ids must equal the
# reference's float64 full-recompute greedy decoding, and the returned
# log-probs its teacher-forced log-probs within 2e-5. Each model runs
#   a. plainly (one engine step budget large enough for every prompt);
#   b. under pressure: chunked prefill (--max-prefill-tokens 7), 4-token
#      blocks, a KV cache too small for all requests (preemption) and
#      --n-samples-per-prompt 3 (prefix sharing); every sample is checked
#      (and the stderr summary must report preemptions);
#   c. one request at a time (--max-running-requests 1), so that every
#      decode step is one token and takes the engine's GEMV path.
# Prompts: mixed lengths (1 to 70 tokens, some over the block and chunk
# sizes), a stop token id chosen so that some outputs end with it.
# The reference itself is tested in test_generate_ref_self.sh.
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
trap '[ -n "${KEEP_TMP:-}" ] && echo "kept $TMP" || rm -rf "$TMP"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
N=16

for spec in tiny_glm45:0.3 tiny_qwen3moe:0.3 tiny_llama_tied:0.15 tiny_qwen3_tied:0.3; do
    name=${spec%%:*}
    m=$TMP/$name
    echo "== $name"
    "$Q" init-model --config "$SRC/tests/ref/configs/$name.json" --out "$m" --seed 11 \
        --init-std "${spec##*:}" --score-bias-std 0.1 >/dev/null
    $PY - "$SRC/tests/ref/configs/$name.json" "$TMP/in.jsonl" <<'PYEOF'
import json, random, sys
V = json.load(open(sys.argv[1]))["vocab_size"]
r = random.Random(9)
with open(sys.argv[2], "w") as f:
    for L in (1, 6, 19, 3, 70, 9, 33, 2):
        f.write(json.dumps({"tokens": [r.randrange(V) for _ in range(L)]}) + "\n")
PYEOF
    # the stop id: the 4th output token of the first prompt, so that at
    # least that output stops early
    $PY "$REF" greedy --model "$m" --input "$TMP/in.jsonl" --max-new-tokens $N \
        --out "$TMP/nostop.jsonl"
    stop=$($PY -c 'import json,sys;print(json.loads(open(sys.argv[1]).readline())["output_ids"][3])' \
           "$TMP/nostop.jsonl")
    $PY "$REF" greedy --model "$m" --input "$TMP/in.jsonl" --max-new-tokens $N \
        --eos "$stop" --out "$TMP/ref.jsonl"

    echo "-- a. plain (stop id $stop)"
    "$Q" generate --model "$m" --input "$TMP/in.jsonl" --output "$TMP/a.jsonl" \
        --temperature 0 --max-new-tokens $N --stop-token-ids "$stop" 2>"$TMP/a.err" \
        || { cat "$TMP/a.err"; echo "FAIL: quench generate"; exit 1; }
    $PY "$REF" check --ref "$TMP/ref.jsonl" --got "$TMP/a.jsonl"

    echo "-- b. chunked prefill, small blocks, preemption, n = 3"
    "$Q" generate --model "$m" --input "$TMP/in.jsonl" --output "$TMP/b.jsonl" \
        --temperature 0 --max-new-tokens $N --stop-token-ids "$stop" \
        --max-prefill-tokens 7 --block-size 4 --kv-cache-tokens 160 \
        --n-samples-per-prompt 3 2>"$TMP/b.err" \
        || { cat "$TMP/b.err"; echo "FAIL: quench generate (pressure)"; exit 1; }
    tail -n 2 "$TMP/b.err"
    # every sample against the reference (preempted samples are recomputed
    # along other paths: float32 rounding may differ, ids may not)
    $PY - "$TMP/b.jsonl" "$TMP/b" <<'PYEOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
for j in range(3):
    with open(f"{sys.argv[2]}.{j}.jsonl", "w") as f:
        for i, l in enumerate(lines):
            s = l.get("samples")
            if not isinstance(s, list) or len(s) != 3:
                sys.exit(f"FAIL: line {i}: expected 3 samples")
            f.write(json.dumps(s[j]) + "\n")
PYEOF
    for j in 0 1 2; do
        $PY "$REF" check --ref "$TMP/ref.jsonl" --got "$TMP/b.$j.jsonl"
    done
    grep -q "preemptions [1-9]" "$TMP/b.err" || { echo "FAIL: no preemption in b"; exit 1; }

    echo "-- c. one request at a time (every decode step is a single token: the GEMV path)"
    "$Q" generate --model "$m" --input "$TMP/in.jsonl" --output "$TMP/c.jsonl" \
        --temperature 0 --max-new-tokens $N --stop-token-ids "$stop" \
        --max-running-requests 1 2>"$TMP/c.err" \
        || { cat "$TMP/c.err"; echo "FAIL: quench generate (one at a time)"; exit 1; }
    $PY "$REF" check --ref "$TMP/ref.jsonl" --got "$TMP/c.jsonl"
done
echo "PASS"
