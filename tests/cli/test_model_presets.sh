#!/usr/bin/env bash
# test_model_presets.sh — scripts/models/*.sh against the rules of
# docs/launch-model-args.md:
#  1. every preset sources cleanly and defines a non-empty MODEL_ARGS of
#     known flags, each flag once; --moe-layer-freq lists --num-layers
#     entries; MoE flags come together;
#  2. the GLM-4.5 preset equals the GLM-4.5 config.json fixture
#     (glm45_config_rtpllm/config.json) flag by flag, and a preset with one
#     value changed is caught (the check can fail).
set -u
SRC=${QN_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
FIX=${QN_FIXTURES:-$SRC/../shared/fixtures}
PY=/usr/bin/python3
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
[ -x "$PY" ] || { echo "SKIP: no $PY"; exit 77; }

# MODEL_ARGS of a preset, one word per line
dump() { bash -c 'set -eu; . "$1"; printf "%s\n" "${MODEL_ARGS[@]}"' _ "$1"; }

CHECK=$(cat <<'PYEOF'
import json, sys
args = open(sys.argv[1]).read().split("\n")[:-1]
cfg = json.load(open(sys.argv[2])) if len(sys.argv) > 2 else None
VALUED = {"--num-layers", "--hidden-size", "--ffn-hidden-size", "--num-attention-heads",
          "--num-query-groups", "--kv-channels", "--normalization", "--norm-epsilon",
          "--position-embedding-type", "--rotary-percent", "--rotary-base", "--vocab-size",
          "--moe-layer-freq", "--num-experts", "--moe-ffn-hidden-size",
          "--moe-shared-expert-intermediate-size", "--moe-router-topk",
          "--moe-router-score-function", "--moe-router-topk-scaling-factor",
          "--moe-router-num-groups", "--moe-router-group-topk"}
SWITCH = {"--group-query-attention", "--swiglu", "--disable-bias-linear", "--add-qkv-bias",
          "--qk-layernorm", "--untie-embeddings-and-output-weights",
          "--moe-router-enable-expert-bias", "--moe-router-pre-softmax"}
f, i = {}, 0
while i < len(args):
    a = args[i]
    if a in f: sys.exit(f"{a} given twice")
    if a in VALUED:
        if i + 1 >= len(args): sys.exit(f"{a} without a value")
        f[a] = args[i + 1]; i += 2
    elif a in SWITCH:
        f[a] = True; i += 1
    else:
        sys.exit(f"unknown word {a!r}")
L = int(f["--num-layers"])
moe = "--num-experts" in f
if moe:
    freq = f.get("--moe-layer-freq")
    if not freq: sys.exit("MoE preset without --moe-layer-freq")
    # the only forms used: "[0]*k+[1]*m" and "[1]*m"
    parts = [p.strip() for p in freq.split("+")]
    lst = []
    for p in parts:
        if not (p.startswith("[") and "]*" in p): sys.exit(f"--moe-layer-freq {freq!r}")
        lst += [int(p[1:p.index("]")])] * int(p[p.index("]*") + 2:])
    if len(lst) != L: sys.exit(f"--moe-layer-freq has {len(lst)} entries, --num-layers {L}")
    for need in ("--moe-ffn-hidden-size", "--moe-router-topk", "--moe-router-score-function"):
        if need not in f: sys.exit(f"MoE preset without {need}")
elif any(k.startswith("--moe") for k in f):
    sys.exit("MoE flags in a dense preset")
if cfg is None: sys.exit(0)

def expect(flag, want):
    got = f.get(flag)
    if want is None or want is False:
        if got is not None: sys.exit(f"{flag} is given; config.json says absent")
        return
    if want is True:
        if got is not True: sys.exit(f"{flag} missing")
        return
    if got is None: sys.exit(f"{flag} missing; config.json wants {want}")
    if isinstance(want, float):
        import math
        g = float(got)
        if not (math.isfinite(g) and abs(g - want) <= 1e-12 * max(1.0, abs(want))):
            sys.exit(f"{flag} {got} != {want}")
    elif str(got) != str(want):
        sys.exit(f"{flag} {got} != {want}")

c = cfg
expect("--num-layers", c["num_hidden_layers"])
expect("--hidden-size", c["hidden_size"])
expect("--ffn-hidden-size", c["intermediate_size"])
expect("--num-attention-heads", c["num_attention_heads"])
expect("--group-query-attention", c["num_key_value_heads"] < c["num_attention_heads"])
expect("--num-query-groups", c["num_key_value_heads"])
expect("--kv-channels", c.get("head_dim", c["hidden_size"] // c["num_attention_heads"]))
expect("--norm-epsilon", float(c["rms_norm_eps"]))
expect("--rotary-base", float(c["rope_theta"]))
prf = float(c.get("partial_rotary_factor", 1.0))
expect("--rotary-percent", prf if prf != 1.0 else None)
expect("--vocab-size", c["vocab_size"])
expect("--untie-embeddings-and-output-weights", not c.get("tie_word_embeddings", True))
expect("--add-qkv-bias", bool(c.get("attention_bias", False)))
expect("--qk-layernorm", bool(c.get("use_qk_norm", False)))
expect("--swiglu", c["hidden_act"] == "silu")
k = c["first_k_dense_replace"]
expect("--moe-layer-freq", f"[0]*{k}+[1]*{L - k}")
expect("--num-experts", c["n_routed_experts"])
expect("--moe-ffn-hidden-size", c["moe_intermediate_size"])
expect("--moe-shared-expert-intermediate-size",
       c["n_shared_experts"] * c["moe_intermediate_size"] if c.get("n_shared_experts") else None)
expect("--moe-router-topk", c["num_experts_per_tok"])
expect("--moe-router-topk-scaling-factor", float(c["routed_scaling_factor"]))
g = c.get("n_group", 1)
expect("--moe-router-num-groups", g if g > 1 else None)
expect("--moe-router-group-topk", c.get("topk_group") if g > 1 else None)
if f.get("--moe-router-score-function") != "sigmoid": sys.exit("GLM-4.5 routes with sigmoid")
if f.get("--moe-router-enable-expert-bias") is not True: sys.exit("GLM-4.5 has expert bias")
PYEOF
)

# 1. every preset
n=0
for p in "$SRC"/scripts/models/*.sh; do
    dump "$p" >"$TMP/args" || fail "$(basename "$p") does not source cleanly"
    [ -s "$TMP/args" ] || fail "$(basename "$p"): empty MODEL_ARGS"
    msg=$("$PY" -c "$CHECK" "$TMP/args" 2>&1) || fail "$(basename "$p"): $msg"
    n=$((n + 1))
done
[ $n -ge 5 ] || fail "only $n presets"
echo "ok 1 $n presets are well formed"

# 2. GLM-4.5 against its config.json
CFG=$FIX/glm45_config_rtpllm/config.json
[ -f "$CFG" ] || { echo "SKIP: no fixture $CFG"; exit 77; }
dump "$SRC/scripts/models/glm4.5-355B-A32B.sh" >"$TMP/args" || fail "glm4.5 preset"
msg=$("$PY" -c "$CHECK" "$TMP/args" "$CFG" 2>&1) || fail "glm4.5-355B-A32B.sh vs config.json: $msg"
# one changed value must be caught
sed 's/^1536$/1537/' "$TMP/args" >"$TMP/bad"
cmp -s "$TMP/args" "$TMP/bad" && fail "mutation did not apply"
"$PY" -c "$CHECK" "$TMP/bad" "$CFG" >/dev/null 2>&1 && fail "a wrong --moe-ffn-hidden-size passed"
grep -v '^--qk-layernorm$' "$TMP/args" >"$TMP/bad"
"$PY" -c "$CHECK" "$TMP/bad" "$CFG" >/dev/null 2>&1 && fail "a missing --qk-layernorm passed"
echo "ok 2 glm4.5-355B-A32B.sh matches config.json; changed values are caught"
echo PASS
