#!/usr/bin/env bash
# test_tokenize.sh — `quench tokenize` end to end on the fixture tokenizers:
# ids of stdin and --input text (byte for byte, trailing newline kept),
# --decode back to the same bytes, --chat --render / --chat ids for GLM-4.5
# (its template recognised from chat_template.jinja) and ChatML, the
# GLM-4.5 form of a tokenizer dir (ranks + GLM-4.5 config), tokenizer.json
# export read back by the same command, and usage/input errors.
set -u
Q=${QN_BIN:?QN_BIN must name the quench binary}
F=${QN_FIXTURES:?QN_FIXTURES must name the fixtures folder}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }
QWEN=$F/qwen2_tokenizer_rtpllm
GLM=$T/glm45
mkdir -p "$GLM"
ln -s "$F/glm4_9b_chat_tokenizer/tokenizer.model" "$GLM/"
for f in tokenizer_config.json generation_config.json chat_template.jinja; do
  ln -s "$F/glm45_config_rtpllm/$f" "$GLM/"
done

# 1. encode: stdin and --input agree; the trailing newline is a token
printf 'Hello world\n' > "$T/in.txt"
a=$("$Q" tokenize --tokenizer "$QWEN" < "$T/in.txt") || fail "encode stdin"
b=$("$Q" tokenize --tokenizer "$QWEN" --input "$T/in.txt") || fail "encode --input"
[ "$a" = "$b" ] || fail "stdin and --input differ: $a vs $b"
[ "$a" = "[9707, 1879, 198]" ] || fail "Hello world ids: $a"

# 2. the first llama.cpp text, cross-checked against the .out file
first_text=$(awk 'BEGIN{RS="\n__ggml_vocab_test__\n"} NR==1{printf "%s", $0; exit}' \
  "$F/llamacpp_vocab_tests/ggml-vocab-qwen2.gguf.inp")
printf '%s' "$first_text" > "$T/first.txt"
got=$("$Q" tokenize --tokenizer "$QWEN" --input "$T/first.txt" | tr -d '[],')
want=$(head -1 "$F/llamacpp_vocab_tests/ggml-vocab-qwen2.gguf.out" | sed 's/^ *//')
[ "$got" = "$want" ] || fail "llama.cpp text 1: got '$got' want '$want'"

# 3. decode inverts encode, byte for byte (CJK, emoji, invalid UTF-8)
printf '中文 👨‍👩‍👧 e\xcc\x81 \xff\xfe end\n\n' > "$T/rt.txt"
for tok in "$QWEN" "$GLM"; do
  "$Q" tokenize --tokenizer "$tok" --input "$T/rt.txt" > "$T/ids.json" || fail "encode rt ($tok)"
  "$Q" tokenize --tokenizer "$tok" --decode --input "$T/ids.json" > "$T/back.txt" || fail "decode ($tok)"
  if [ "$tok" = "$GLM" ]; then cmp -s "$T/rt.txt" "$T/back.txt" || fail "GLM round trip differs"; fi
done

# 4. GLM-4.5: the vector "[gMASK]<sop><|user|>\n你好<|assistant|>" and the chat template
printf '[gMASK]<sop><|user|>\n你好<|assistant|>' > "$T/glm.txt"
got=$("$Q" tokenize --tokenizer "$GLM" --input "$T/glm.txt")
[ "$got" = "[151331, 151333, 151336, 198, 109377, 151337]" ] || fail "GLM ids: $got"
echo '[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello, how are you?"}]' > "$T/msgs.json"
got=$("$Q" tokenize --tokenizer "$GLM" --chat --render --enable-thinking false --input "$T/msgs.json")
want=$(printf '[gMASK]<sop><|system|>\nYou are a helpful assistant.<|user|>\nHello, how are you?/nothink<|assistant|>\n<think></think>')
[ "$got" = "$want" ] || fail "GLM render: $got"
ids=$("$Q" tokenize --tokenizer "$GLM" --chat --enable-thinking false --input "$T/msgs.json")
case "$ids" in "[151331, 151333, 151335, 198,"*) ;; *) fail "GLM chat ids: $ids" ;; esac
printf '%s' "$want" > "$T/want.txt"
ids2=$("$Q" tokenize --tokenizer "$GLM" --input "$T/want.txt")
[ "$ids" = "$ids2" ] || fail "--chat ids differ from encoding the rendered text"

# 5. ChatML with an explicit template
got=$(echo '[{"role":"user","content":"hi"}]' | "$Q" tokenize --tokenizer "$QWEN" --chat --render --chat-template qwen3)
[ "$got" = "$(printf '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n')" ] || fail "chatml render: $got"

# 6. tokenizer.json export, loaded back by the tokenizer.json path
mkdir -p "$T/fast"
"$Q" tokenize --tokenizer "$QWEN" --export-json "$T/fast/tokenizer.json" || fail "export"
a=$("$Q" tokenize --tokenizer "$QWEN" --input "$T/rt.txt")
b=$("$Q" tokenize --tokenizer "$T/fast" --input "$T/rt.txt")
[ -n "$a" ] && [ "$a" = "$b" ] || fail "exported tokenizer.json encodes differently"

# 7. errors
"$Q" tokenize --input "$T/in.txt" >/dev/null 2>&1; [ $? = 2 ] || fail "missing --tokenizer is not a usage error"
"$Q" tokenize --tokenizer "$T/nothing" --input "$T/in.txt" >/dev/null 2>"$T/err"; [ $? = 1 ] || fail "missing dir exit"
grep -q "no tokenizer.json" "$T/err" || fail "missing dir message: $(cat "$T/err")"
echo '[1, "x"]' | "$Q" tokenize --tokenizer "$QWEN" --decode >/dev/null 2>"$T/err"; [ $? = 1 ] || fail "bad decode input"
echo '[99999999]' | "$Q" tokenize --tokenizer "$QWEN" --decode >/dev/null 2>"$T/err"; [ $? = 1 ] || fail "out-of-range id"
grep -q "position 0" "$T/err" || fail "out-of-range message: $(cat "$T/err")"
echo 'not json' | "$Q" tokenize --tokenizer "$QWEN" --chat >/dev/null 2>&1; [ $? = 1 ] || fail "bad chat input"
"$Q" tokenize --tokenizer "$QWEN" --render </dev/null >/dev/null 2>&1; [ $? = 2 ] || fail "--render without --chat"

echo "test_tokenize: failures: $fails"
[ "$fails" = 0 ]
