#!/usr/bin/env bash
# test_convert.sh — `quench convert` on a tiny random GLM-4.5-style MoE:
#  - --to fp8 gives exactly the expected tensor set: every q/k/v/o and
#    gate/up/down projection (experts and shared experts too) as F8_E4M3 with
#    a F32 weight_scale_inv of shape ceil(M/bm) x ceil(N/bn) whose values are
#    max(amax, 1e-12)/448 of the original tile (recomputed here in Python from
#    the original weights), every other tensor byte-identical, and config.json
#    with quantization_config (128x128 and 16x16 tiles, the latter with
#    partial edge tiles);
#  - --to fp32 back from FP8: each weight within the e4m3 bound of fp8.h
#    (2^-4 |w| + 2^-10 s), and the log-probs of the dequantised model versus
#    the original: the deviation is printed (docs/PERFORMANCE.md "FP8") and
#    must be non-zero and small;
#  - a sharded input gives a sharded output; tokenizer files are copied;
#  - errors: FP8 input to fp8, a missing scale, bad --block-size, no input.
set -u
Q=${QN_BIN:?QN_BIN must name the quench binary}
SRC=${QN_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
PY=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }

"$Q" init-model --config "$SRC/tests/ref/configs/tiny_glm45.json" --out "$tmp/orig" --seed 7 \
  >/dev/null 2>"$tmp/err" || { echo "FAIL: init-model: $(cat "$tmp/err")"; exit 1; }
echo '{"model":{"type":"BPE"}}' >"$tmp/orig/tokenizer.json"

# checks an FP8 folder against the original; args: ORIG FP8 BM BN
check_fp8() {
  "$PY" - "$@" <<'EOF'
import json, math, os, struct, sys
orig, fp8, bm, bn = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def load_dir(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) \
        else ["model.safetensors"]
    out = {}
    for f in files:
        b = open(os.path.join(d, f), "rb").read()
        n = struct.unpack("<Q", b[:8])[0]
        for k, v in json.loads(b[8:8 + n]).items():
            if k == "__metadata__": continue
            s, e = v["data_offsets"]
            out[k] = (v["dtype"], v["shape"], b[8 + n + s:8 + n + e])
    return out
def f32s(raw): return struct.unpack("<%df" % (len(raw) // 4), raw)
projs = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
o, q = load_dir(orig), load_dir(fp8)
bad = []
want = set()
n_fp8 = 0
for name, (dt, shape, raw) in o.items():
    parts = name.split(".")
    if parts[-1] == "weight" and parts[-2] in projs:
        n_fp8 += 1
        want |= {name, name + "_scale_inv"}
        if name not in q or q[name][0] != "F8_E4M3" or q[name][1] != shape:
            bad.append("%s: not F8_E4M3 %s" % (name, shape)); continue
        sname = name + "_scale_inv"
        M, N = shape
        sr, sc = -(-M // bm), -(-N // bn)
        if sname not in q or q[sname][0] != "F32" or q[sname][1] != [sr, sc]:
            bad.append("%s: missing or not F32 [%d, %d]" % (sname, sr, sc)); continue
        w, s = f32s(raw), f32s(q[sname][2])
        for i in range(sr):
            for j in range(sc):
                amax = max(abs(w[r * N + c]) for r in range(i * bm, min(M, i * bm + bm))
                           for c in range(j * bn, min(N, j * bn + bn)))
                expect = struct.unpack("<f", struct.pack("<f", max(amax, 1e-12) / 448.0))[0]
                if s[i * sc + j] != expect:
                    bad.append("%s tile (%d,%d): %r != %r" % (sname, i, j, s[i * sc + j], expect))
    else:
        want.add(name)
        if q.get(name) != (dt, shape, raw): bad.append("%s: changed" % name)
extra = set(q) - want
missing = want - set(q)
if extra: bad.append("unexpected tensors: %s" % sorted(extra)[:5])
if missing: bad.append("missing tensors: %s" % sorted(missing)[:5])
cfg = json.load(open(os.path.join(fp8, "config.json")))
qc = cfg.get("quantization_config", {})
exp = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
       "weight_block_size": [bm, bn]}
for k, v in exp.items():
    if qc.get(k) != v: bad.append("quantization_config.%s = %r, want %r" % (k, qc.get(k), v))
keep = set(qc.get("modules_to_not_convert", []))
for k in ["lm_head", "model.embed_tokens", "model.layers.1.mlp.gate", "model.layers.2.mlp.gate"]:
    if k not in keep: bad.append("modules_to_not_convert lacks %s" % k)
for k in keep:
    if k + ".weight" not in o or o[k + ".weight"][0] != q[k + ".weight"][0]:
        bad.append("modules_to_not_convert lists %s, which is not a kept weight" % k)
oc = json.load(open(os.path.join(orig, "config.json")))
for k, v in oc.items():
    if cfg.get(k) != v: bad.append("config.json %s changed" % k)
if n_fp8 < 40: bad.append("only %d projection weights" % n_fp8)
for b in bad[:20]: print("FAIL:", b)
sys.exit(1 if bad else 0)
EOF
}

# dequantised weights within the e4m3 bound; args: ORIG BACK FP8 BM BN
check_back() {
  "$PY" - "$@" <<'EOF'
import json, struct, sys
orig, back, fp8, bm, bn = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
    h = {k: v for k, v in json.loads(b[8:8 + n]).items() if k != "__metadata__"}
    base = 8 + n
    return {k: (v["dtype"], v["shape"], b[base + v["data_offsets"][0]:base + v["data_offsets"][1]])
            for k, v in h.items()}
def f32s(raw): return struct.unpack("<%df" % (len(raw) // 4), raw)
o, r, q = load(orig + "/model.safetensors"), load(back + "/model.safetensors"), \
    load(fp8 + "/model.safetensors")
bad, worst, changed = [], 0.0, 0
if set(o) != set(r): bad.append("tensor sets differ: %s" % sorted(set(o) ^ set(r))[:5])
for name in o:
    if name not in r: continue
    if r[name][0] != "F32" or r[name][1] != o[name][1]: bad.append(name + ": not F32"); continue
    a, b = f32s(o[name][2]), f32s(r[name][2])
    if name + "_scale_inv" not in q:
        if a != b: bad.append(name + ": changed")
        continue
    s = f32s(q[name + "_scale_inv"][2]); N = o[name][1][1]; sc = -(-N // bn)
    for i, (x, y) in enumerate(zip(a, b)):
        st = s[(i // N) // bm * sc + (i % N) // bn]
        bound = abs(x) / 16 + st / 1024 + 4 * 2.0 ** -23 * abs(x)
        if not abs(x - y) <= bound:
            bad.append("%s[%d]: %r vs %r" % (name, i, x, y)); break
        if x != y: changed += 1
        if bound > 0: worst = max(worst, abs(x - y) / bound)
if changed == 0: bad.append("no weight changed: nothing was quantised")
for m in bad[:10]: print("FAIL:", m)
print("dequant: worst |err|/bound = %.3f" % worst)
sys.exit(1 if bad else 0)
EOF
}

for bs in "128 128" "16 16"; do
  set -- $bs
  d="$tmp/fp8_$1"
  "$Q" convert --to fp8 --block-size $bs "$tmp/orig" "$d" >"$tmp/out" 2>"$tmp/err" \
    || fail "convert --to fp8 --block-size $bs: exit $? ($(cat "$tmp/err"))"
  check_fp8 "$tmp/orig" "$d" "$1" "$2" || fail "fp8 checkpoint with block $bs"
  cmp -s "$tmp/orig/tokenizer.json" "$d/tokenizer.json" || fail "tokenizer.json not copied ($bs)"
  "$Q" convert --to fp32 "$d" "$tmp/back_$1" >"$tmp/out" 2>"$tmp/err" \
    || fail "convert --to fp32 from fp8 ($bs): exit $? ($(cat "$tmp/err"))"
  check_back "$tmp/orig" "$tmp/back_$1" "$d" "$1" "$2" || fail "dequantised weights, block $bs"
  grep -q quantization_config "$tmp/back_$1/config.json" && fail "back_$1 keeps quantization_config"
done

# log-probs: original vs the dequantised FP8 model
"$PY" -c '
import random; random.seed(5)
for i in range(8):
    n = random.randint(8, 40)
    toks = ",".join(str(random.randrange(97)) for _ in range(n))
    print("{\"tokens\":[%s],\"response_start\":1}" % toks)
' >"$tmp/in.jsonl"
"$Q" logprobs --model "$tmp/orig" --input "$tmp/in.jsonl" --output "$tmp/lp_orig.jsonl" \
  2>"$tmp/err" || fail "logprobs orig: $(cat "$tmp/err")"
"$Q" convert --to bf16 "$tmp/orig" "$tmp/orig_bf16" >/dev/null 2>"$tmp/err" \
  || fail "to bf16: $(cat "$tmp/err")"
for m in back_128 back_16 orig_bf16; do
  "$Q" logprobs --model "$tmp/$m" --input "$tmp/in.jsonl" --output "$tmp/lp_$m.jsonl" \
    2>"$tmp/err" || fail "logprobs $m: $(cat "$tmp/err")"
done
"$PY" - "$tmp" <<'EOF' || fail "log-prob deviation"
import json, math, sys
t = sys.argv[1]
def load(m): return [x for l in open("%s/lp_%s.jsonl" % (t, m)) for x in json.loads(l)["logprobs"]]
a = load("orig")
ok = True
for m, label in [("back_128", "FP8 128x128"), ("back_16", "FP8 16x16"), ("orig_bf16", "bf16")]:
    b = load(m)
    if len(a) != len(b) or not all(math.isfinite(x) for x in b):
        print("FAIL: %s lengths/NaN" % m)
        ok = False
        continue
    d = max(abs(x - y) for x, y in zip(a, b))
    print("max |logprob deviation| %s vs fp32 original: %.4g over %d tokens" % (label, d, len(a)))
    if m != "orig_bf16" and not (0 < d < 0.1):
        print("FAIL: %s deviation %g outside (0, 0.1)" % (m, d))
        ok = False
sys.exit(0 if ok else 1)
EOF

# sharded input -> sharded output
mkdir -p "$tmp/sh"
cp "$tmp/orig/config.json" "$tmp/orig/model.safetensors" "$tmp/sh/"
"$PY" - "$tmp/sh" <<'EOF'
import json, struct, sys
d = sys.argv[1]; b = open(d + "/model.safetensors", "rb").read(); n = struct.unpack("<Q", b[:8])[0]
names = [k for k in json.loads(b[8:8 + n]) if k != "__metadata__"]
json.dump({"metadata": {}, "weight_map": {k: "model.safetensors" for k in names}},
          open(d + "/model.safetensors.index.json", "w"))
EOF
"$Q" convert --to fp8 --max-shard-bytes 20000 "$tmp/sh" "$tmp/sh8" >/dev/null 2>"$tmp/err" \
  || fail "sharded convert: $(cat "$tmp/err")"
[ -f "$tmp/sh8/model.safetensors.index.json" ] || fail "sharded input gave no index"
nsh=$(ls "$tmp/sh8" | grep -c '^model-.*-of-.*\.safetensors$')
[ "$nsh" -ge 2 ] || fail "sharded output has $nsh shards, want >= 2"
check_fp8 "$tmp/orig" "$tmp/sh8" 128 128 || fail "sharded fp8 checkpoint"

# errors
"$Q" convert --to fp8 "$tmp/fp8_128" "$tmp/x" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] || fail "fp8 -> fp8: exit $rc, want 1"
grep -q "tensor '.*'.*already FP8" "$tmp/err" || fail "fp8 -> fp8 message: $(cat "$tmp/err")"
"$PY" - "$tmp/sh8" <<'EOF'
import json, sys
p = sys.argv[1] + "/model.safetensors.index.json"; j = json.load(open(p))
del j["weight_map"]["model.layers.0.self_attn.q_proj.weight_scale_inv"]
json.dump(j, open(p, "w"))
EOF
"$Q" convert --to fp32 "$tmp/sh8" "$tmp/x" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] || fail "missing scale: exit $rc, want 1"
grep -q "model.layers.0.self_attn.q_proj.weight_scale_inv" "$tmp/err" \
  || fail "missing scale message: $(cat "$tmp/err")"
"$Q" convert --to fp8 --block-size 128 "$tmp/orig" "$tmp/x" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] || fail "one block size: exit $rc, want 2"
grep -q -- "--block-size" "$tmp/err" || fail "block-size message: $(cat "$tmp/err")"
"$Q" convert --to fp8 "$tmp/nothere" "$tmp/x" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] || fail "missing input: exit $rc, want 1"
grep -q "nothere" "$tmp/err" || fail "missing input message: $(cat "$tmp/err")"

echo "convert checks done; failures: $fails"
[ $fails -eq 0 ]
