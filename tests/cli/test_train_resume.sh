#!/usr/bin/env bash
# test_train_resume.sh — `quench train-step` with several optimizer steps per
# batch, checkpoints (--save/--save-interval) and resume (--load):
#  1. a batch of 8 samples with --global-batch-size 2 makes 4 optimizer steps;
#     run once straight through, and once stopped after 2 (--max-steps 2,
#     checkpoint every 2 steps) then resumed with --load from the save dir:
#     the final weights and optimizer state are byte-identical (cmp; the
#     safetensors writer is deterministic) and so are the metrics of steps 3-4;
#     resuming from the step dir itself gives the same bytes too;
#  2. the checkpoint layout: DIR/latest names the newest step dir, a partial
#     .tmp-step-* left by a crash is ignored by --load and replaced,
#     trainer_state.json records the steps and samples;
#  3. step 1's train/ppo_kl is exactly 0, step 2's is not (its old log-probs
#     are those of the batch's start, as in slime);
#  4. a checkpoint with a missing file is refused, naming the file; a
#     finished batch is refused ("nothing to do");
#  5. two data-parallel ranks (Gloo, private redis): stopped after 2 steps and
#     resumed equals their straight run bit for bit, and agrees with the one-
#     rank run within 1e-5 (the old log-probs are gathered over the ranks).
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
cleanup() {
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
$PY "$REF" gen --vocab "$VOCAB" --seed 3 --lens 12,30,7,25,40,9,18,33 --group-size 4 \
    "$TMP/b.jsonl"
OPT=(--global-batch-size 2 --lr 1e-2 --min-lr 1e-3 --lr-decay-style linear
     --lr-decay-iters 6 --weight-decay 0.1 --entropy-coef 0.01 --eps-clip-high 0.28
     --use-dynamic-batch-size --max-tokens-per-gpu 40)
ts() { "$Q" train-step --model "$TMP/m" --batch "$TMP/b.jsonl" "${OPT[@]}" "$@"; }

echo "== 1. straight vs stopped after 2 steps and resumed"
ts --out "$TMP/full" >"$TMP/full.json"
ts --out "$TMP/part" --save "$TMP/ck" --save-interval 2 --max-steps 2 >"$TMP/part.json"
# a crash while writing step 4 leaves a partial .tmp-step-4 and latest = step-2
mkdir "$TMP/ck/.tmp-step-4"
echo partial >"$TMP/ck/.tmp-step-4/model.safetensors"
[ "$(cat "$TMP/ck/latest")" = step-2 ] || { echo "FAIL: latest = $(cat "$TMP/ck/latest")"; exit 1; }
ts --out "$TMP/res" --load "$TMP/ck" --save "$TMP/ck" --save-interval 2 >"$TMP/res.json"
ts --out "$TMP/res2" --load "$TMP/ck/step-2" >/dev/null
lines() { # file want what
    local n
    n=$(wc -l <"$1")
    [ "$n" = "$2" ] || { echo "FAIL: $3 printed $n metric lines, want $2"; cat "$1"; exit 1; }
}
lines "$TMP/full.json" 4 "the straight run"
lines "$TMP/part.json" 2 "--max-steps 2"
lines "$TMP/res.json" 2 "the resumed run"
for f in model.safetensors optimizer.safetensors; do
    for d in res res2 ck/step-4; do
        cmp "$TMP/full/$f" "$TMP/$d/$f" \
            || { echo "FAIL: $d/$f differs from the straight run"; exit 1; }
    done
done
cmp <(head -n 2 "$TMP/full.json") "$TMP/part.json" \
    || { echo "FAIL: steps 1-2 metrics differ"; exit 1; }
cmp <(tail -n 2 "$TMP/full.json") "$TMP/res.json" \
    || { echo "FAIL: steps 3-4 metrics differ"; exit 1; }
if cmp -s "$TMP/m/model.safetensors" "$TMP/full/model.safetensors" \
    || cmp -s "$TMP/ck/step-2/model.safetensors" "$TMP/full/model.safetensors"; then
    echo "FAIL: the steps did not change the weights"; exit 1
fi
echo "ok: final weights and optimizer state bit-identical" \
    "($(stat -c %s "$TMP/full/model.safetensors") bytes of weights)"

echo "== 2. layout"
[ "$(cat "$TMP/ck/latest")" = step-4 ] \
    || { echo "FAIL: latest = $(cat "$TMP/ck/latest")"; exit 1; }
if ls -A "$TMP/ck" | grep -q '^\.tmp'; then
    echo "FAIL: tmp dir left: $(ls -A "$TMP/ck")"; exit 1
fi
$PY - "$TMP/ck" <<'PYEOF'
import json, os, sys
ck = sys.argv[1]
for d, want in (("step-2", {"step": 2, "batch_step": 2, "batch_steps": 4, "samples_consumed": 4}),
                ("step-4", {"step": 4, "batch_step": 4, "batch_steps": 4, "samples_consumed": 8})):
    st = json.load(open(f"{ck}/{d}/trainer_state.json"))
    for k, v in want.items():
        if st.get(k) != v:
            sys.exit(f"FAIL: {d}/trainer_state.json: {k} = {st.get(k)}, want {v}")
    for f in ("config.json", "model.safetensors", "optimizer.safetensors"):
        if not os.path.isfile(f"{ck}/{d}/{f}"):
            sys.exit(f"FAIL: {d} lacks {f}")
if not os.path.isfile(f"{ck}/step-2/old_logprobs.safetensors"):
    sys.exit("FAIL: the mid-batch checkpoint lacks old_logprobs.safetensors")
print("ok:", sorted(os.listdir(ck)), json.load(open(f"{ck}/step-2/trainer_state.json")))
PYEOF

echo "== 3. old log-probs from the batch's start"
$PY - "$TMP/full.json" <<'PYEOF'
import json, math, sys
m = [json.loads(l) for l in open(sys.argv[1])]
if m[0]["train/ppo_kl"] != 0.0:
    sys.exit(f"FAIL: step 1 ppo_kl = {m[0]['train/ppo_kl']}, want exactly 0")
if not (math.isfinite(m[1]["train/ppo_kl"]) and m[1]["train/ppo_kl"] != 0.0):
    sys.exit(f"FAIL: step 2 ppo_kl = {m[1]['train/ppo_kl']}: old log-probs not from the start")
print("ok: ppo_kl per step:", [x["train/ppo_kl"] for x in m])
PYEOF

echo "== 4. refused checkpoints"
refuse() { # pattern dir
    local out rc=0
    out=$(ts --out "$TMP/bad.out" --load "$2" 2>&1) || rc=$?
    if [ "$rc" != 1 ] || ! grep -q -- "$1" <<<"$out" || [ -e "$TMP/bad.out" ]; then
        echo "FAIL: --load $2: exit $rc, '$out' lacks '$1' or output written"; exit 1
    fi
    echo "ok: $out"
}
for f in model.safetensors optimizer.safetensors trainer_state.json config.json \
         old_logprobs.safetensors; do
    rm -rf "$TMP/bad"
    cp -r "$TMP/ck/step-2" "$TMP/bad"
    rm "$TMP/bad/$f"
    refuse "$f" "$TMP/bad"
done
refuse 'nothing to do' "$TMP/ck"

echo "== 5. two data-parallel ranks"
redis-server --port 0 --unixsocket "$TMP/redis.sock" --save '' --appendonly no \
    --daemonize no >"$TMP/redis.log" 2>&1 &
REDIS_PID=$!
for _ in $(seq 100); do [ -S "$TMP/redis.sock" ] && break; sleep 0.05; done
if [ ! -S "$TMP/redis.sock" ]; then
    echo "FAIL: redis-server did not start"; cat "$TMP/redis.log"; exit 1
fi
dp() { # name [flags...]: both ranks, rank 0's metrics in name.json
    local name=$1 pids=() r
    shift
    for r in 0 1; do
        QN_REDIS_URL="unix://$TMP/redis.sock" QN_JOB="tr$$$name" QN_DIST_HOST=127.0.0.1 \
            QN_WORLD_SIZE=2 QN_RANK=$r timeout 120 "$Q" train-step --model "$TMP/m" \
            --batch "$TMP/b.jsonl" "${OPT[@]}" --out "$TMP/$name" "$@" \
            >"$TMP/$name.$r.json" 2>"$TMP/$name.$r.err" &
        pids+=($!)
    done
    for r in 0 1; do
        wait "${pids[$r]}" || { echo "FAIL: $name rank $r"; cat "$TMP/$name.$r.err"; exit 1; }
    done
}
dp dpfull
dp dppart --save "$TMP/ckdp" --save-interval 2 --max-steps 2
dp dpres --load "$TMP/ckdp"
for f in model.safetensors optimizer.safetensors; do
    cmp "$TMP/dpfull/$f" "$TMP/dpres/$f" || { echo "FAIL: dp resumed $f differs"; exit 1; }
done
cmp <(tail -n 2 "$TMP/dpfull.0.json") "$TMP/dpres.0.json" \
    || { echo "FAIL: dp metrics differ"; exit 1; }
$PY "$REF" cmp --tol 1e-5 "$TMP/full/model.safetensors" "$TMP/dpfull/model.safetensors"
echo "PASS"
