#!/usr/bin/env bash
# test_model_info.sh — `quench model-info` prints the parsed GLM-4.5
# config.json as JSON (defaults applied, derived fields present), and
# reports usage errors (exit 2) and bad configs (exit 1) naming the problem.
set -u
Q=${QN_BIN:?QN_BIN must name the quench binary}
FX=${QN_FIXTURES:?QN_FIXTURES must name the fixtures folder}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }

cfg="$FX/glm45_config_rtpllm/config.json"
"$Q" model-info --config "$cfg" >"$tmp/out" 2>"$tmp/err" || fail "model-info exits $? ($(cat "$tmp/err"))"
for want in '"model_type":	"glm4_moe"' '"hidden_size":	5120' '"num_hidden_layers":	92' \
            '"n_routed_experts":	160' '"rotary_dim":	64' '"scoring_func":	"sigmoid"' \
            '"moe_layer_count":	89' '"routed_scaling_factor":	2.5' '"head_dim":	128'; do
  grep -qF "$want" "$tmp/out" || fail "output lacks $want"
done

"$Q" model-info --config "$cfg" --compact >"$tmp/one" 2>&1 || fail "--compact exits $?"
[ "$(wc -l <"$tmp/one")" -eq 1 ] || fail "--compact printed $(wc -l <"$tmp/one") lines"
grep -qF '"first_k_dense_replace":3' "$tmp/one" || fail "--compact output lacks first_k_dense_replace"

# usage error: no --config
"$Q" model-info >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] || fail "without --config: exit $rc, want 2"
grep -q -- '--config' "$tmp/err" || fail "without --config: message does not name --config: $(cat "$tmp/err")"

# a bad config: top-k larger than the expert count
sed 's/"num_experts_per_tok": 8/"num_experts_per_tok": 500/' "$cfg" >"$tmp/bad.json"
"$Q" model-info --config "$tmp/bad.json" >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] || fail "bad config: exit $rc, want 1"
grep -q "bad.json: field 'num_experts_per_tok'" "$tmp/err" || fail "bad config message: $(cat "$tmp/err")"

"$Q" model-info --config "$tmp/missing.json" >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] || fail "missing file: exit $rc, want 1"
grep -q "missing.json" "$tmp/err" || fail "missing file message: $(cat "$tmp/err")"

echo "model-info checks done; failures: $fails"
[ $fails -eq 0 ]
