#!/usr/bin/env bash
# test_arith_gen.sh — examples/arith's pieces: quench-arith-gen (line counts,
# labels that are the sums of their prompts, held-out prompts disjoint from
# the training prompts and the SFT samples, SFT token ids that decode to
# prompt + answer + EOS, the carry-free answers of --sft-noise 1, same seed
# same files, flag errors), the task tokenizer through `quench tokenize`,
# and the model config through init-model + generate.
set -u
Q=${QN_BIN:?QN_BIN must name the quench binary}
S=${QN_SOURCE:?QN_SOURCE must name the source folder}
G=$(dirname "$Q")/quench-arith-gen
EX=$S/examples/arith
[ -x "$G" ] || { echo "SKIP: $G not built"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }

# prompts FILE: the "prompt" values, one per line
prompts() { sed -n 's/.*"prompt": "\([^"]*\)".*/\1/p' "$1"; }
# sft_texts FILE: each SFT line's ids as bytes (256 -> <eos>), "|" at response_start
sft_texts() {
    awk '{
        match($0, /"tokens": \[[^]]*\]/); s = substr($0, RSTART + 11, RLENGTH - 12);
        match($0, /"response_start": [0-9]+/); k = substr($0, RSTART + 18, RLENGTH - 18) + 0;
        n = split(s, t, ", "); out = "";
        for (i = 1; i <= n; i++) {
            if (i == k + 1) out = out "|";
            out = out (t[i] == 256 ? "<eos>" : sprintf("%c", t[i] + 0));
        }
        print out }' "$1"
}

# 1. counts and the held-out split
"$G" --tokenizer "$EX" --out-dir "$T" --seed 3 --n-train 300 --n-eval 200 --n-sft 400 \
    --sft-noise 0 || fail "generate"
[ "$(wc -l < "$T/train.jsonl")" -eq 300 ] || fail "train lines"
[ "$(wc -l < "$T/eval.jsonl")" -eq 200 ] || fail "eval lines"
[ "$(wc -l < "$T/sft.jsonl")" -eq 400 ] || fail "sft lines"
prompts "$T/eval.jsonl" | sort > "$T/eval.p"
prompts "$T/train.jsonl" | sort > "$T/train.p"
sft_texts "$T/sft.jsonl" > "$T/sft.t"
cut -d'|' -f1 "$T/sft.t" | sort -u > "$T/sft.p"
[ "$(sort -u "$T/eval.p" | wc -l)" -eq 200 ] || fail "eval prompts repeat"
[ "$(sort -u "$T/train.p" | wc -l)" -eq 300 ] || fail "train prompts repeat"
[ -z "$(comm -12 "$T/eval.p" "$T/train.p")" ] || fail "eval and train prompts overlap"
[ -z "$(comm -12 "$T/eval.p" "$T/sft.p")" ] || fail "eval and sft prompts overlap"

# 2. labels are the zero-padded sums of the prompts; "text" repeats the prompt
bad=$(awk -F'"' '{ split($4, ab, /[+=]/); want = sprintf("%03d", ab[1] + ab[2]);
                   if ($8 != $4 || $12 != want) print }' "$T/eval.jsonl" "$T/train.jsonl")
[ -z "$bad" ] || fail "labels: $(echo "$bad" | head -2)"

# 3. SFT samples (no noise): prompt | correct sum <eos>
bad=$(awk -F'|' '{ split($1, ab, /[+=]/); want = sprintf("%03d<eos>", ab[1] + ab[2]);
                   if ($1 !~ /^[0-9][0-9]\+[0-9][0-9]=$/ || $2 != want) print }' "$T/sft.t")
[ -z "$bad" ] || fail "sft answers: $(echo "$bad" | head -2)"

# 4. --sft-noise 1: every answer forgets every carry
"$G" --tokenizer "$EX" --out-dir "$T" --seed 3 --n-train 10 --n-eval 10 --n-sft 200 \
    --sft-noise 1 || fail "generate noisy"
bad=$(sft_texts "$T/sft.jsonl" | awk -F'|' '{ split($1, ab, /[+=]/); a = ab[1] + 0; b = ab[2] + 0;
        want = sprintf("0%d%d<eos>", (int(a / 10) + int(b / 10)) % 10, (a % 10 + b % 10) % 10);
        if ($2 != want) print }')
[ -z "$bad" ] || fail "carry-free answers: $(echo "$bad" | head -2)"
carries=$(sft_texts "$T/sft.jsonl" | awk -F'|' '{ split($1, ab, /[+=]/);
        if (sprintf("%03d<eos>", ab[1] + ab[2]) != $2) n++ } END { print n + 0 }')
[ "$carries" -gt 0 ] || fail "no sample needed a carry"

# 5. same seed, same files; another seed, other files
"$G" --tokenizer "$EX" --out-dir "$T" --seed 5 --n-sft 50 --sft-noise 0.5 && cp "$T/sft.jsonl" "$T/a"
cp "$T/eval.jsonl" "$T/ea"
"$G" --tokenizer "$EX" --out-dir "$T" --seed 5 --n-sft 50 --sft-noise 0.5
cmp -s "$T/a" "$T/sft.jsonl" && cmp -s "$T/ea" "$T/eval.jsonl" || fail "same seed differs"
"$G" --tokenizer "$EX" --out-dir "$T" --seed 6 --n-sft 50 --sft-noise 0.5
cmp -s "$T/ea" "$T/eval.jsonl" && fail "seed 6 gave seed 5's eval set"

# 6. flag errors
"$G" --tokenizer "$EX" --out-dir "$T" --digits 4 2>/dev/null; [ $? -eq 2 ] || fail "--digits 4"
"$G" --tokenizer "$EX" --out-dir "$T" --sft-noise 2 2>/dev/null; [ $? -eq 1 ] || fail "noise 2"
"$G" --tokenizer "$EX" --out-dir "$T" --n-eval 10000 2>/dev/null; [ $? -eq 1 ] || fail "n-eval"
"$G" --tokenizer "$EX" --bogus 1 2>/dev/null; [ $? -eq 2 ] || fail "unknown flag"
"$G" --out-dir "$T" 2>/dev/null; [ $? -eq 2 ] || fail "missing --tokenizer"
"$G" --tokenizer "$T/nowhere" --out-dir "$T" 2>/dev/null; [ $? -eq 1 ] || fail "bad tokenizer"

# 7. the task tokenizer: one token per byte, <|endoftext|> is the EOS
ids=$(printf '07+42=049<|endoftext|>' | "$Q" tokenize --tokenizer "$EX") || fail "tokenize"
[ "$ids" = "[48, 55, 43, 52, 50, 61, 48, 52, 57, 256]" ] || fail "ids: $ids"
txt=$(echo "$ids" | "$Q" tokenize --tokenizer "$EX" --decode) || fail "decode"
[ "$txt" = "07+42=049<|endoftext|>" ] || fail "decode: $txt"

# 8. the model config: random weights, and generate runs on a prompt file
"$Q" init-model --config "$EX/config.json" --out "$T/m" --seed 1 >/dev/null || fail "init-model"
head -3 "$T/eval.jsonl" > "$T/in.jsonl"
"$Q" generate --model "$T/m" --tokenizer "$EX" --input "$T/in.jsonl" --output "$T/out.jsonl" \
    --temperature 0 --max-new-tokens 4 2>/dev/null || fail "generate on eval prompts"
[ "$(grep -c '"output_ids"' "$T/out.jsonl")" -eq 3 ] || fail "generate output"

[ $fails -eq 0 ] && echo "ok" || echo "$fails failures"
exit $((fails > 0))
