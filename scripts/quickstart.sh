#!/usr/bin/env bash
# quickstart.sh — installs dependencies, builds quench, and runs the most
# end-to-end thing that exists today.
#
# The GRPO job on a tiny model (examples/arith, started by `quench launch`)
# does not exist yet: it needs the rollout engine loop, the services and the
# launcher, which come with later issues. Until then this script builds
# everything and walks through the stages of one GRPO step that do work on
# their own: the model description, a tiny GLM-4.5-style model's log-probs
# and gradients, the GLM-4.5 tokenizer and chat template, and a reward.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
Q=build/bin/quench
FIX=../shared/fixtures
RUN=${RUN_DIR:-runs/quickstart}
mkdir -p "$RUN"

echo
echo "== quench is built: $($Q --version)"
echo "== note: the end-to-end GRPO job is not implemented yet; showing the stages that are."

echo
echo "== 1. GLM-4.5-355B-A32B's config.json as quench reads it (parameter counts, not allocated)"
$Q model-info --config $FIX/glm45_config_rtpllm/config.json | grep -E '"(total|active|summary)"'

echo
echo "== 2. a tiny GLM-4.5-style MoE: random init, log-probs and entropies of two packed sequences"
$Q init-model --config tests/ref/configs/tiny_glm45.json --out "$RUN/tiny-glm45" --seed 1
cat > "$RUN/seqs.jsonl" <<'JSONL'
{"tokens": [1, 5, 9, 13, 2, 7, 11], "response_start": 4}
{"tokens": [3, 8, 8, 1, 4], "response_start": 2}
JSONL
$Q logprobs --model "$RUN/tiny-glm45" --input "$RUN/seqs.jsonl" --output "$RUN/logprobs.jsonl" --temperature 0.7
cat "$RUN/logprobs.jsonl"

echo
echo "== 3. the GLM-4.5 tokenizer and chat template on a math prompt"
TOK="$RUN/glm45-tokenizer"
mkdir -p "$TOK"
ln -sf "$(realpath $FIX/glm4_9b_chat_tokenizer/tokenizer.model)" "$TOK/"
for f in tokenizer_config.json generation_config.json chat_template.jinja; do
  ln -sf "$(realpath $FIX/glm45_config_rtpllm/$f)" "$TOK/"
done
MSG='[{"role":"user","content":"What is 17 * 23? Put the answer in \\boxed{}."}]'
echo "$MSG" | $Q tokenize --tokenizer "$TOK" --chat --render
echo
echo "$MSG" | $Q tokenize --tokenizer "$TOK" --chat

echo
echo "== 4. the math reward on three answers to that prompt (process-isolated workers)"
cat > "$RUN/samples.jsonl" <<'JSONL'
{"prompt": "What is 17 * 23?", "response": "17*23 = 391, so \\boxed{391}", "label": "391"}
{"prompt": "What is 17 * 23?", "response": "I think it is 381.", "label": "391"}
{"prompt": "What is 17 * 23?", "response": "The product is 391.0", "label": "391"}
JSONL
$Q reward --rm-type math --input "$RUN/samples.jsonl"

echo
echo "quickstart: done (outputs in $RUN)"
