#!/usr/bin/env bash
# test_train_step.sh — `quench train-step` on a tiny Qwen3-MoE (tests/ref/configs):
#  1. invariance: the saved gradient (before clipping) is the same within 1e-5
#     relative for one micro-batch, many packed micro-batches
#     (--max-tokens-per-gpu 40), static micro-batches of one sample, and two
#     data-parallel ranks as real processes (Gloo, rendezvous on a private
#     redis-server on a unix socket); the updated models agree too;
#  2. slime's invariant: with --ref-load = --model, train/ppo_kl and
#     train/kl_loss are exactly 0 on the first step, also with k2 (lr^2/2, so
#     every recomputed log-prob equals its reference log-prob exactly);
#  3. bad batch lines are refused with the line number and the reason, exit 1,
#     nothing written;
#  4. end to end against the float64 PyTorch reference (model_ref + loss_ref,
#     chained by autograd): clip-higher with rollout log-probs, low_var_kl
#     against a different reference model, entropy bonus — every parameter
#     gradient within 1e-4 relative; a second variant with TIS, dual clip,
#     per-token reduction, k3, negative entropy coefficient, temperature 0.7
#     and recomputed old log-probs; the AdamW update equals torch.optim.AdamW's;
#  5. the optimizer state written to --out and resumed with --load: two chained
#     train-steps equal two consecutive torch.optim.AdamW steps (linear decay).
set -euo pipefail
Q=${QN_BIN:?QN_BIN not set}
SRC=${QN_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
REF=$SRC/tests/ref/train_step_ref.py
PY=/usr/bin/python3
if ! $PY -c 'import torch, numpy' 2>/dev/null; then
    echo "FAIL: $PY lacks torch/numpy; run scripts/install-deps.sh (python3-torch python3-numpy)"
    exit 1
fi
TMP=$(mktemp -d)
REDIS_PID=
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -n "$REDIS_PID" ]; then
        kill "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
unset QN_WORLD_SIZE QN_RANK QN_REDIS_URL

CFG=$SRC/tests/ref/configs/tiny_qwen3moe.json
VOCAB=$($PY -c "import json,sys;print(json.load(open(sys.argv[1]))['vocab_size'])" "$CFG")
"$Q" init-model --config "$CFG" --out "$TMP/m" --seed 11 --init-std 0.3 >/dev/null
"$Q" init-model --config "$CFG" --out "$TMP/r" --seed 12 --init-std 0.3 >/dev/null
$PY "$REF" gen --vocab "$VOCAB" --seed 3 --lens 12,30,7,25,40,9,18,33 "$TMP/b.jsonl"

LOSS=(--use-kl-loss --ref-load "$TMP/r" --kl-loss-coef 0.1 --kl-loss-type low_var_kl
      --entropy-coef 0.01 --use-rollout-logprobs --eps-clip-high 0.28 --lr 1e-3)
step() { # name [flags...]
    local name=$1
    shift
    "$Q" train-step --model "$TMP/m" --batch "$TMP/b.jsonl" --out "$TMP/$name.out" \
        --save-grads "$TMP/$name.g.safetensors" "${LOSS[@]}" "$@" >"$TMP/$name.json"
}

echo "== 1. gradient invariance: packing and data parallelism"
step one --use-dynamic-batch-size --max-tokens-per-gpu 100000
step packed --use-dynamic-batch-size --max-tokens-per-gpu 40
step static --micro-batch-size 1
redis-server --port 0 --unixsocket "$TMP/redis.sock" --save '' --appendonly no \
    --daemonize no >"$TMP/redis.log" 2>&1 &
REDIS_PID=$!
for _ in $(seq 100); do [ -S "$TMP/redis.sock" ] && break; sleep 0.05; done
if [ ! -S "$TMP/redis.sock" ]; then
    echo "FAIL: redis-server did not start"; cat "$TMP/redis.log"; exit 1
fi
export QN_REDIS_URL="unix://$TMP/redis.sock" QN_JOB="ts$$" QN_DIST_HOST=127.0.0.1
pids=()
for r in 0 1; do
    # timeout: a rank whose peer died must not hold the test for the 300 s group timeout
    QN_WORLD_SIZE=2 QN_RANK=$r timeout 120 "$Q" train-step --model "$TMP/m" --batch "$TMP/b.jsonl" \
        --out "$TMP/dp.out" --save-grads "$TMP/dp.g.safetensors" "${LOSS[@]}" \
        --use-dynamic-batch-size --max-tokens-per-gpu 40 >"$TMP/dp$r.json" 2>"$TMP/dp$r.err" &
    pids+=($!)
done
for i in 0 1; do
    if ! wait "${pids[$i]}"; then
        echo "FAIL: rank $i"; cat "$TMP/dp$i.err"; exit 1
    fi
done
unset QN_REDIS_URL QN_JOB QN_DIST_HOST
[ -s "$TMP/dp0.json" ] || { echo "FAIL: rank 0 printed no metrics"; exit 1; }
grep -h "micro-batches" "$TMP/dp0.err" "$TMP/dp1.err" | sed 's/^.*] /dp: /'
if [ -s "$TMP/dp1.json" ]; then echo "FAIL: rank 1 printed metrics too"; exit 1; fi
$PY "$REF" cmp --tol 1e-5 "$TMP/one.g.safetensors" "$TMP/packed.g.safetensors" \
    "$TMP/static.g.safetensors" "$TMP/dp.g.safetensors"
echo "updated weights:"
$PY "$REF" cmp --tol 1e-5 "$TMP/one.out/model.safetensors" "$TMP/packed.out/model.safetensors" \
    "$TMP/dp.out/model.safetensors"
$PY - "$TMP" <<'PYEOF'
import json, math, sys
t = sys.argv[1]
runs = {n: json.loads(open(f"{t}/{n}.json").read()) for n in ("one", "packed", "static", "dp0")}
for n, m in runs.items():
    for k in ("train/loss", "train/pg_loss", "train/pg_clipfrac", "train/ppo_kl", "train/kl_loss",
              "train/entropy_loss", "train/grad_norm"):
        a, b = runs["one"][k], m[k]
        if not (math.isfinite(b) and abs(a - b) <= 1e-5 * max(1.0, abs(a))):
            sys.exit(f"FAIL: {n}: {k} = {b}, one micro-batch gave {a}")
print("metrics agree:", json.dumps(runs["dp0"]))
PYEOF

echo "== 2. policy = reference: ppo_kl and kl_loss exactly 0"
"$Q" train-step --model "$TMP/m" --batch "$TMP/b.jsonl" --out "$TMP/same.out" \
    --use-kl-loss --ref-load "$TMP/m" --kl-loss-coef 0.1 --entropy-coef 0.01 \
    --use-dynamic-batch-size --max-tokens-per-gpu 40 >"$TMP/same.json"
$PY - "$TMP/same.json" <<'PYEOF'
import json, sys
m = json.loads(open(sys.argv[1]).read())
for k in ("train/ppo_kl", "train/kl_loss"):
    if k not in m or m[k] != 0.0:
        sys.exit(f"FAIL: {k} = {m.get(k)}, expected exactly 0")
if not m["train/grad_norm"] > 0:
    sys.exit("FAIL: zero gradient")
print("ok:", json.dumps(m))
PYEOF
# k2 = mean(lr^2/2) with lr = logp - ref_logp is exactly 0 only if EVERY recomputed
# log-prob equals its reference log-prob bit for bit (k1 could cancel out).
"$Q" train-step --model "$TMP/m" --batch "$TMP/b.jsonl" --out "$TMP/same2.out" \
    --use-kl-loss --ref-load "$TMP/m" --kl-loss-coef 0.1 --kl-loss-type k2 \
    --use-dynamic-batch-size --max-tokens-per-gpu 40 >"$TMP/same2.json"
$PY - "$TMP/same2.json" <<'PYEOF'
import json, sys
m = json.loads(open(sys.argv[1]).read())
for k in ("train/ppo_kl", "train/kl_loss"):
    if k not in m or m[k] != 0.0:
        sys.exit(f"FAIL: k2: {k} = {m.get(k)}, expected exactly 0 (recomputed != reference)")
print("ok: k2 kl_loss == 0 exactly: every recomputed log-prob equals the reference's")
PYEOF

echo "== 3. bad batch lines"
GOOD=$(head -n 1 "$TMP/b.jsonl")
bad_case() { # reason-pattern json-of-line-3 [flags...]
    local pat=$1 line=$2
    shift 2
    { echo "$GOOD"; echo; echo "$line"; } >"$TMP/bad.jsonl"
    rm -rf "$TMP/bad.out"
    local out rc=0
    out=$("$Q" train-step --model "$TMP/m" --batch "$TMP/bad.jsonl" --out "$TMP/bad.out" \
          --save-grads "$TMP/bad.g" "$@" 2>&1) || rc=$?
    if [ "$rc" != 1 ]; then echo "FAIL: exit $rc for '$line' (want 1): $out"; exit 1; fi
    if ! grep -q -- "bad.jsonl:3: .*$pat" <<<"$out"; then
        echo "FAIL: message for '$line' lacks line 3 / '$pat': $out"; exit 1
    fi
    if [ -e "$TMP/bad.out" ] || [ -e "$TMP/bad.g" ]; then echo "FAIL: output written"; exit 1; fi
    echo "ok: $out"
}
bad_case 'not a JSON object' '[1,2,3]'
bad_case 'missing field "tokens"' '{"response_start":1,"group":0,"reward":1}'
bad_case 'missing field "response_start"' '{"tokens":[1,2,3],"group":0,"reward":1}'
bad_case 'missing field "group"' '{"tokens":[1,2,3],"response_start":1,"reward":1}'
bad_case 'missing field "reward"' '{"tokens":[1,2,3],"response_start":1,"group":0}'
bad_case '"response_start" out of range' '{"tokens":[1,2,3],"response_start":3,"group":0,"reward":1}'
bad_case '"response_start" out of range' '{"tokens":[1,2,3],"response_start":0,"group":0,"reward":1}'
bad_case "tokens\\[2\\] is not a token id in \\[0, $VOCAB)" \
    "{\"tokens\":[1,2,$VOCAB],\"response_start\":1,\"group\":0,\"reward\":1}"
bad_case '"loss_mask" has 1 values; expected one per response position' \
    '{"tokens":[1,2,3],"response_start":1,"group":0,"reward":1,"loss_mask":[1]}'
bad_case '"loss_mask"\[1\] is not 0 or 1' \
    '{"tokens":[1,2,3],"response_start":1,"group":0,"reward":1,"loss_mask":[1,7]}'
bad_case '"rollout_logprobs" has 3 values; expected one per response position' \
    '{"tokens":[1,2,3],"response_start":1,"group":0,"reward":1,"rollout_logprobs":[-1,-1,-1]}'
bad_case 'missing field "rollout_logprobs" (needed by --use-tis)' \
    '{"tokens":[1,2,3],"response_start":1,"group":0,"reward":1}' --use-tis

flag_case() { # want-rc pattern [flags...]
    local want=$1 pat=$2 out rc=0
    shift 2
    rm -rf "$TMP/bad.out"
    out=$("$Q" train-step --model "$TMP/m" --batch "$TMP/b.jsonl" --out "$TMP/bad.out" "$@" 2>&1) \
        || rc=$?
    if [ "$rc" != "$want" ] || ! grep -q -- "$pat" <<<"$out" || [ -e "$TMP/bad.out" ]; then
        echo "FAIL: $* -> exit $rc (want $want), '$out' lacks '$pat' or output written"; exit 1
    fi
    echo "ok: $out"
}
flag_case 2 'needs --ref-load' --use-kl-loss
flag_case 1 'global-batch-size' --global-batch-size 3

echo "== 4. end to end against the PyTorch reference"
$PY "$REF" check --model "$TMP/m" --ref-load "$TMP/r" --batch "$TMP/b.jsonl" \
    --grads "$TMP/packed.g.safetensors" --new-model "$TMP/packed.out" \
    --metrics "$TMP/packed.json" --eps-clip-high 0.28 --kl-loss-coef 0.1 \
    --kl-loss-type low_var_kl --entropy-coef 0.01 --lr 1e-3 --use-rollout-logprobs
echo "-- TIS, dual clip, per-token reduction, k3, temperature 0.7, recomputed old log-probs"
V2=(--use-tis --tis-clip 1.5 --tis-clip-low 0.5 --eps-clip-c 3 --eps-clip 0.1
    --eps-clip-high 0.3 --kl-loss-coef 0.2 --kl-loss-type k3
    --entropy-coef -0.02 --lr 1e-3)
"$Q" train-step --model "$TMP/m" --batch "$TMP/b.jsonl" --out "$TMP/v2.out" \
    --save-grads "$TMP/v2.g.safetensors" --ref-load "$TMP/r" --use-kl-loss "${V2[@]}" \
    --calculate-per-token-loss --rollout-temperature 0.7 --use-dynamic-batch-size \
    --max-tokens-per-gpu 40 >"$TMP/v2.json"
grep -q '"train/tis"' "$TMP/v2.json" || { echo "FAIL: no train/tis with --use-tis"; exit 1; }
$PY "$REF" check --model "$TMP/m" --ref-load "$TMP/r" --batch "$TMP/b.jsonl" \
    --grads "$TMP/v2.g.safetensors" --new-model "$TMP/v2.out" --metrics "$TMP/v2.json" \
    "${V2[@]}" --per-token --temperature 0.7
echo "== 5. optimizer state: --out writes it, --load resumes it"
$PY "$REF" gen --vocab "$VOCAB" --seed 5 --lens 14,22,9,31 --group-size 4 "$TMP/b2.jsonl"
OPT=(--lr 1e-3 --min-lr 1e-4 --lr-decay-style linear --lr-decay-iters 4 --weight-decay 0.1
     --entropy-coef 0.01)
"$Q" train-step --model "$TMP/m" --batch "$TMP/b.jsonl" --out "$TMP/s1" \
    --save-grads "$TMP/s1.g.safetensors" "${OPT[@]}" >/dev/null
"$Q" train-step --model "$TMP/s1" --load "$TMP/s1" --rollout-id 1 --batch "$TMP/b2.jsonl" \
    --out "$TMP/s2" \
    --save-grads "$TMP/s2.g.safetensors" "${OPT[@]}" >"$TMP/s2.json"
grep -q '"train/lr": 0.00077500000000000' "$TMP/s2.json" \
    || { echo "FAIL: second step's lr is not the schedule's step 1: $(cat "$TMP/s2.json")"; exit 1; }
$PY "$REF" adamw2 --model "$TMP/m" --new-model "$TMP/s2" \
    --grads "$TMP/s1.g.safetensors" "$TMP/s2.g.safetensors" --style linear --decay-iters 4 \
    --min-lr 1e-4 --weight-decay 0.1
flag_case 1 'optimizer.safetensors' --load "$TMP/m"

echo "PASS"
