#!/usr/bin/env bash
# check-hf.sh — quench's model core against Hugging Face transformers' own
# model classes (Glm4MoeForCausalLM, Qwen3MoeForCausalLM, Qwen3ForCausalLM,
# LlamaForCausalLM) loading the same random tiny checkpoints, at temperature
# 1.0 and 0.7: log-probs, entropies and every parameter gradient.
#
# Outside the default test suite because it installs torch and transformers
# from PyPI into a virtual environment ($BUILD_DIR/hf-venv, made on first use
# with Debian's /usr/bin/python3). Run after scripts/build.sh:
#   scripts/check-hf.sh            (BUILD_DIR=build by default)
# Tolerances are the issue's (as in tests/cli/test_model_ref.sh): |logprob|
# and |entropy| errors <= 2e-5, every gradient within 1e-4 relative. The
# model runs in float64 with eager attention and eager experts (transformers'
# grouped_mm experts take no float64). A checkpoint key that transformers does
# not load, or a parameter it has to initialise, fails the check.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
BUILD_DIR=${BUILD_DIR:-build}
Q=${QN_BIN:-$BUILD_DIR/bin/quench}
VENV=$BUILD_DIR/hf-venv
[ -x "$Q" ] || { echo "check-hf: $Q not found; run scripts/build.sh first" >&2; exit 1; }
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import transformers, torch' 2>/dev/null; then
    echo "check-hf: installing torch + transformers from PyPI into $VENV" >&2
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q torch transformers numpy
fi
PY=$VENV/bin/python
"$PY" -c 'import torch, transformers; print("check-hf: torch", torch.__version__, "transformers", transformers.__version__)'
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
status=0
for name in tiny_glm45 tiny_qwen3moe tiny_qwen3_tied tiny_llama_tied; do
    cfg=$SRC/tests/ref/configs/$name.json
    vocab=$("$PY" -c "import json,sys;print(json.load(open(sys.argv[1]))['vocab_size'])" "$cfg")
    std=0.3; [ "$name" = tiny_llama_tied ] && std=0.15
    "$Q" init-model --config "$cfg" --out "$TMP/$name" --seed 11 --init-std "$std" \
        --score-bias-std 0.02 >/dev/null
    "$PY" tests/ref/model_ref.py gen --vocab "$vocab" --seed 7 --lens 17,5,60,2,33 \
        --out "$TMP/$name.in.jsonl"
    cases=()
    for T in 1.0 0.7; do
        "$Q" logprobs --model "$TMP/$name" --input "$TMP/$name.in.jsonl" --temperature "$T" \
            --output "$TMP/$name.$T.lp.jsonl"
        "$Q" grad --model "$TMP/$name" --input "$TMP/$name.in.jsonl" --temperature "$T" \
            --output "$TMP/$name.$T.g.safetensors"
        cases+=(--case "$T" "$TMP/$name.$T.lp.jsonl" "$TMP/$name.$T.g.safetensors")
    done
    echo "== $name vs transformers"
    "$PY" tests/ref/model_ref.py check --hf --model "$TMP/$name" --input "$TMP/$name.in.jsonl" \
        "${cases[@]}" || status=1
done
[ $status -eq 0 ] && echo "check-hf: PASS" || echo "check-hf: FAIL"
exit $status
