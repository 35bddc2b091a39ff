#!/usr/bin/env bash
# test_model_ref.sh — quench's model core against the independent PyTorch
# float64 reference (tests/ref/model_ref.py) on random tiny models:
#   tiny_glm45       GLM-4.5-style MoE: qkv bias, QK-norm, partial RoPE 0.5,
#                    sigmoid router with a non-zero e_score_correction_bias,
#                    n_group 4 / topk_group 2, shared expert, dense first layer
#   tiny_qwen3moe    Qwen3-MoE softmax router, GQA 4:1
#   tiny_qwen3_tied  dense Qwen3, tied embeddings, vocab over one head chunk
#   tiny_llama_tied  dense Llama, tied embeddings, qkv bias, no QK-norm
# For each: `quench init-model`, then at temperature 1.0 and 0.7
# `quench logprobs` (packed into micro-batches of <= 50 tokens) and
# `quench grad` (packed batches of <= 8192 tokens) on mixed-length sequences; the reference
# runs every sequence alone. Tolerances (issue 3): |logprob err| <= 2e-5,
# |entropy err| <= 2e-5, every parameter grad within 1e-4 relative.
# Also: a bf16 checkpoint loads, and broken checkpoints fail naming the tensor.
set -euo pipefail
Q=${QN_BIN:?QN_BIN not set}
SRC=${QN_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
REF=$SRC/tests/ref/model_ref.py
PY=/usr/bin/python3
if ! $PY -c 'import torch, numpy' 2>/dev/null; then
    echo "FAIL: $PY lacks torch/numpy; run scripts/install-deps.sh (python3-torch python3-numpy)"
    exit 1
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

run_model() { # name init_std lengths
    local name=$1 std=$2 lens=$3 cfg=$SRC/tests/ref/configs/$1.json
    local vocab
    vocab=$($PY -c "import json,sys;print(json.load(open(sys.argv[1]))['vocab_size'])" "$cfg")
    "$Q" init-model --config "$cfg" --out "$TMP/$name" --seed 11 --init-std "$std" \
        --score-bias-std 0.1 >/dev/null
    $PY "$REF" gen --vocab "$vocab" --seed 7 --lens "$lens" --out "$TMP/$name.in.jsonl"
    local cases=()
    for T in 1.0 0.7; do
        "$Q" logprobs --model "$TMP/$name" --input "$TMP/$name.in.jsonl" --temperature "$T" \
            --max-tokens 50 --output "$TMP/$name.$T.lp.jsonl"
        "$Q" grad --model "$TMP/$name" --input "$TMP/$name.in.jsonl" --temperature "$T" \
            --output "$TMP/$name.$T.g.safetensors"
        cases+=(--case "$T" "$TMP/$name.$T.lp.jsonl" "$TMP/$name.$T.g.safetensors")
    done
    $PY "$REF" check --model "$TMP/$name" --input "$TMP/$name.in.jsonl" "${cases[@]}"
}

# lengths: mixed; the GLM set has sequences longer than the attention query
# block (64), than --max-tokens 50 (a batch of their own) and more response
# rows than the head's row block (256)
run_model tiny_glm45 0.3 17,5,140,2,33,9,230
run_model tiny_qwen3moe 0.3 17,5,40,2,33,9,70
run_model tiny_qwen3_tied 0.3 17,5,40,2,33,9
run_model tiny_llama_tied 0.15 17,5,40,2,33,9

echo "== bf16 checkpoint"
"$Q" init-model --config "$SRC/tests/ref/configs/tiny_glm45.json" --out "$TMP/bf" --seed 11 \
    --init-std 0.3 --score-bias-std 0.1 --dtype bf16 >/dev/null
"$Q" logprobs --model "$TMP/bf" --input "$TMP/tiny_glm45.in.jsonl" --output "$TMP/bf.lp.jsonl"
"$Q" grad --model "$TMP/bf" --input "$TMP/tiny_glm45.in.jsonl" --output "$TMP/bf.g.safetensors"
$PY "$REF" check --model "$TMP/bf" --input "$TMP/tiny_glm45.in.jsonl" \
    --logprobs "$TMP/bf.lp.jsonl" --grads "$TMP/bf.g.safetensors"

echo "== broken checkpoints name the tensor"
expect_fail() { # dir pattern
    local out
    if out=$("$Q" logprobs --model "$1" --input "$TMP/tiny_glm45.in.jsonl" \
             --output "$TMP/x.jsonl" 2>&1); then
        echo "FAIL: loading $1 succeeded"; exit 1
    fi
    if ! grep -q -- "$2" <<<"$out"; then
        echo "FAIL: error for $1 does not mention '$2': $out"; exit 1
    fi
    echo "ok: $out"
}
$PY - "$TMP/tiny_glm45" "$TMP" <<'PYEOF'
import json, os, shutil, struct, sys
src, tmp = sys.argv[1], sys.argv[2]
raw = open(os.path.join(src, "model.safetensors"), "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n]); data = raw[8 + n:]
def write(name, h, d):
    os.makedirs(os.path.join(tmp, name), exist_ok=True)
    shutil.copy(os.path.join(src, "config.json"), os.path.join(tmp, name, "config.json"))
    hb = json.dumps(h).encode(); hb += b" " * ((8 - len(hb) % 8) % 8)
    open(os.path.join(tmp, name, "model.safetensors"), "wb").write(struct.pack("<Q", len(hb)) + hb + d)
victim = "model.layers.1.mlp.experts.3.up_proj.weight"
# missing: drop the victim and re-tile the data
h2, parts, off = {}, [], 0
for k, v in sorted(((k, v) for k, v in hdr.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0]):
    if k == victim: continue
    b, e = v["data_offsets"]; parts.append(data[b:e])
    h2[k] = dict(v, data_offsets=[off, off + e - b]); off += e - b
write("missing", h2, b"".join(parts))
# wrong shape: same bytes, transposed shape
h3 = {k: dict(v) for k, v in hdr.items()}
h3[victim]["shape"] = h3[victim]["shape"][::-1]
write("shape", h3, data)
# wrong dtype: the same bytes called I32
h4 = {k: dict(v) for k, v in hdr.items()}
h4[victim]["dtype"] = "I32"
write("dtype", h4, data)
# truncated: the file cut short
write("trunc", hdr, data[: len(data) - 100])
PYEOF
expect_fail "$TMP/missing" "model.layers.1.mlp.experts.3.up_proj.weight"
expect_fail "$TMP/shape" "model.layers.1.mlp.experts.3.up_proj.weight"
expect_fail "$TMP/dtype" "model.layers.1.mlp.experts.3.up_proj.weight"
expect_fail "$TMP/trunc" "model.safetensors"
echo "PASS"
