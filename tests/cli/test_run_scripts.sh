#!/usr/bin/env bash
# test_run_scripts.sh — the slime-shaped run scripts (scripts/run-*.sh) as a
# user runs them, with --dry-run (nothing is started):
#  1. GLM-4.5-355B-A32B: 64 trainer ranks on 8 nodes, rank k on node k/8 GPU
#     k%8 with the matching environment, 2 engines of 32 GPUs spanning 4 nodes
#     each; the model line's parameter counts equal a count made here from the
#     script's model flags and the same description comes from the real
#     config.json (whose checks pass); every flag reaches the processes it
#     belongs to and no other; the "not yet supported" lines are on stderr,
#     none of those flags is in the plan, and each one, passed anyway, is
#     refused by quench launch (exit status 2); the example hostfile is
#     removed; HOSTFILE unset without --dry-run is an error;
#  2. GLM-4.5-Air and Qwen3-4B: their placements, model lines and refusals;
#  3. the arguments the scripts hand to quench (a stub binary): HOSTFILE, the
#     resume of a RUN_DIR that holds a job, the caller's flags last.
set -u
Q=${QN_BIN:?QN_BIN not set}
SRC=${QN_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
FIX=${QN_FIXTURES:-$SRC/../shared/fixtures}
PY=/usr/bin/python3
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
[ -x "$PY" ] || { echo "SKIP: no $PY"; exit 77; }
unset HOSTFILE RUN_DIR SLURM_JOB_NODELIST
for v in $(env | grep -o '^QN_[A-Z_]*'); do unset "$v"; done
mkdir -p "$TMP/base" "$TMP/tmpdir"
export QUENCH=$Q BASE_DIR=$TMP/base TMPDIR=$TMP/tmpdir

# run NAME SCRIPT ARGS...: the script's plan in NAME.out, its stderr in NAME.err
# (bounded: a script that lost --dry-run would start a job)
run() {
    local name=$1 script=$2
    shift 2
    timeout 60 "$SRC/scripts/$script" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err"
}
# why NAME: the end of NAME.err without the "not yet supported" lines
why() { grep -v '^not yet supported: ' "$TMP/$1.err" | tail -3 | tr '\n' ' '; }
# block FILE PROC: the lines of the plan entry of PROC (its header excluded)
block() { awk -v h="[$2]" 'index($0, h " ") == 1 { p = 1; next } /^$/ { p = 0 } p' "$1"; }
# only_in FILE FLAGWORDS PROCS...: FLAGWORDS (e.g. "--lr 1e-6") is in the entry
# of every process named and in no other entry
only_in() {
    local f=$1 w=$2
    shift 2
    local p n=0 want=$#
    for p in "$@"; do
        block "$f" "$p" | grep -q -- " $w\( \|=\|$\)" || fail "$f: '$w' not given to $p"
    done
    n=$(grep -c -- " $w\( \|=\|$\)" "$f")
    [ "$n" -eq "$want" ] || fail "$f: '$w' given to $n processes, expected $want ($*)"
}
# params SCRIPT: "TOTAL ACTIVE" in units of 1e9, counted from the MODEL_ARGS of
# the model preset SCRIPT sources (embeddings, attention, MLPs, experts,
# routers, norms; the active count with --moe-router-topk experts per layer)
params() {
    local preset
    preset=$(grep -o 'models/[^"]*\.sh' "$SRC/scripts/$1" | head -1)
    bash -c 'set -eu; . "$1"; printf "%s\n" "${MODEL_ARGS[@]}"' _ "$SRC/scripts/$preset" |
        "$PY" -c '
import sys
a = sys.stdin.read().split("\n")[:-1]
f, i = {}, 0
while i < len(a):
    if i + 1 < len(a) and not a[i + 1].startswith("--"):
        f[a[i]] = a[i + 1]; i += 2
    else:
        f[a[i]] = True; i += 1
g = lambda k, d=None: int(f[k]) if k in f else d
H, L, V, nh = g("--hidden-size"), g("--num-layers"), g("--vocab-size"), g("--num-attention-heads")
kv = g("--num-query-groups", nh) if "--group-query-attention" in f else nh
D = g("--kv-channels", H // nh)
attn = H * nh * D + 2 * H * kv * D + nh * D * H + 2 * H
if "--add-qkv-bias" in f: attn += nh * D + 2 * kv * D
if "--qk-layernorm" in f: attn += 2 * D
moe = [0] * L
if "--moe-layer-freq" in f:
    moe = []
    for p in f["--moe-layer-freq"].split("+"):
        moe += [int(p[1:p.index("]")])] * int(p[p.index("]*") + 2:])
dense = 3 * H * g("--ffn-hidden-size")
tot = act = (2 if "--untie-embeddings-and-output-weights" in f else 1) * V * H + H
for m in moe:
    tot += attn; act += attn
    if not m:
        tot += dense; act += dense
        continue
    E, k, e = g("--num-experts"), g("--moe-router-topk"), 3 * H * g("--moe-ffn-hidden-size")
    fixed = E * H + E + 3 * H * g("--moe-shared-expert-intermediate-size", 0)
    tot += fixed + E * e; act += fixed + k * e
print(tot / 1e9, act / 1e9)
'
}
# check_model NAME SCRIPT LO_TOTAL HI_TOTAL LO_ACTIVE HI_ACTIVE: the plan's
# model line has the counts params() makes (to the printed 0.1B), inside the
# published size's range
check_model() {
    local line pt pa
    line=$(grep '^model: ' "$TMP/$1.out") || fail "$1: no model line"
    read -r pt pa < <(params "$2")
    [ -n "$pa" ] || fail "$1: no parameter count from the model flags"
    echo "$line" | grep -q "from the model flags: .*config.json not found" ||
        fail "$1: the model is not described from the flags: $line"
    "$PY" - "$line" "$pt" "$pa" "$3" "$4" "$5" "$6" <<'EOF' || fail "$1: $line"
import math, re, sys
line, want_t, want_a, lo_t, hi_t, lo_a, hi_a = sys.argv[1], *map(float, sys.argv[2:])
m = re.search(r"([0-9.]+)B parameters, ([0-9.]+)B active", line)
if not m: sys.exit("no parameter counts")
t, a = float(m.group(1)), float(m.group(2))
for got, want in ((t, want_t), (a, want_a)):
    if not (math.isfinite(got) and abs(got - want) <= 0.051):
        sys.exit(f"printed {got}B, counted {want:.3f}B from the model flags")
if not (lo_t <= t <= hi_t and lo_a <= a <= hi_a):
    sys.exit(f"{t}B / {a}B active is not the model's published size")
EOF
}
# check_refusals NAME SCRIPT: each "not yet supported" flag (with its value
# words, if any) is absent from the plan and, passed to the script anyway,
# makes quench launch exit with 2, naming it
check_refusals() {
    local n=0 words flag rc
    while IFS= read -r words; do
        flag=${words%% *}
        grep -q -- " $words\( \|=\|$\)" "$TMP/$1.out" && fail "$1: '$words' reached the plan"
        # shellcheck disable=SC2086 # the flag and its value words
        run "$1.refuse" "$2" --dry-run $words
        rc=$?
        [ "$rc" -eq 2 ] || fail "$1: '$words' passed anyway: exit $rc, not 2"
        grep -q "^quench launch: .*$flag" "$TMP/$1.refuse.err" ||
            fail "$1: '$words' not refused by name: $(tail -1 "$TMP/$1.refuse.err")"
        n=$((n + 1))
    done < <(sed -n 's/^not yet supported: \(--[^ ]*\( [^-(][^ ]*\)*\) (.*)$/\1/p' "$TMP/$1.err")
    [ "$n" -gt 0 ] || fail "$1: no 'not yet supported' lines"
    [ "$n" -eq "$(grep -c '^not yet supported: ' "$TMP/$1.err")" ] ||
        fail "$1: a 'not yet supported' line is not 'FLAG [VALUE...] (REASON)'"
}

# ------------------------------------------------------ 1. GLM-4.5-355B-A32B
S=run-glm4.5-355B-A32B.sh
run g355 $S --dry-run || fail "$S --dry-run: exit $?: $(why g355)"
P=$TMP/g355.out
grep -q "^  64 trainer ranks, 2 engines, colocated, sync, evaluation$" "$P" || fail "355B: job summary"
grep -q "^job glm4.5-355B-A32B: .* on 8 nodes (ssh)" "$P" || fail "355B: 8 nodes over ssh"
[ "$(grep -c '^\[trainer-' "$P")" -eq 64 ] || fail "355B: not 64 trainer ranks"
for k in $(seq 0 63); do
    nd=$((k / 8)) gpu=$((k % 8))
    grep -q "^\[trainer-$k\] node $nd (node$nd), GPUs $gpu$" "$P" || fail "355B: trainer-$k placement"
    block "$P" "trainer-$k" | grep -q "QN_WORLD_SIZE=64 QN_RANK=$k QN_LOCAL_RANK=$gpu .*QN_DIST_HOST=node$nd CUDA_VISIBLE_DEVICES=$gpu .* train " ||
        fail "355B: trainer-$k environment"
done
block "$P" trainer-63 | grep -q "^  via: ssh node7 " || fail "355B: trainer-63 not started on node7"
[ "$(grep -c '^\[engine-' "$P")" -eq 2 ] || fail "355B: not 2 engines"
grep -q "^\[engine-0\] node 0 (node0), GPUs nodes 0-3, all GPUs$" "$P" || fail "355B: engine-0 span"
grep -q "^\[engine-1\] node 4 (node4), GPUs nodes 4-7, all GPUs$" "$P" || fail "355B: engine-1 span"
block "$P" engine-1 | grep -q "^  via: ssh node4 " || fail "355B: engine-1 not started on node4"
for p in redis router buffer eval; do
    grep -q "^\[$p\] node 0 (node0), GPUs none$" "$P" || fail "355B: $p not on node 0"
done
check_model g355 $S 340 365 30 36
# the description from the flags is the one the real config.json gives
mkdir -p "$TMP/base/GLM-4.5-355B-A32B"
cp "$FIX/glm45_config_rtpllm/config.json" "$TMP/base/GLM-4.5-355B-A32B/" || fail "fixture config.json"
run g355cfg $S --dry-run || fail "$S with the real config.json: $(why g355cfg)"
grep -q "^model: .*config.json; [1-9][0-9]* model flags checked against it)$" "$TMP/g355cfg.out" ||
    fail "355B: the model flags are not checked against config.json"
[ "$(sed -n 's/ (.*//p' "$TMP/g355cfg.out" | head -1)" = "$(sed -n 's/ (.*//p' "$P" | head -1)" ] ||
    fail "355B: the flags describe another model than config.json"
rm -rf "$TMP/base/GLM-4.5-355B-A32B"
# flags reach their processes and only them
T64=()
for k in $(seq 0 63); do T64+=("trainer-$k"); done
E2=(engine-0 engine-1)
only_in "$P" "--lr 1e-6" "${T64[@]}"
only_in "$P" "--eps-clip 1e-4" "${T64[@]}"
only_in "$P" "--eps-clip-high 2e-4" "${T64[@]}"
only_in "$P" "--use-tis" "${T64[@]}"
only_in "$P" "--num-steps-per-rollout 4" "${T64[@]}"
only_in "$P" "--max-tokens-per-gpu 16384" "${T64[@]}"
only_in "$P" "--adam-beta2 0.98" "${T64[@]}"
only_in "$P" "--rollout-batch-size 128" buffer
only_in "$P" "--n-samples-per-prompt 8" buffer
only_in "$P" "--over-sampling-batch-size 256" buffer
only_in "$P" "--dynamic-sampling-filter nonzero_std" buffer
only_in "$P" "--reward deepscaler" buffer
only_in "$P" "--rollout-max-response-len 32768" buffer
only_in "$P" "--rollout-temperature 0.8" buffer "${T64[@]}"
only_in "$P" "--eval-interval 20" eval
only_in "$P" "--eval-reward deepscaler" eval
only_in "$P" "--eval-temperature 0.8" eval
only_in "$P" "--eval-prompt-data $TMP/base/rl_data/aime-2024.jsonl" eval
only_in "$P" "--apply-chat-template" buffer eval
only_in "$P" "--tokenizer $TMP/base/GLM-4.5-355B-A32B" router buffer eval "${E2[@]}"
only_in "$P" "--model=$TMP/base/GLM-4.5-355B-A32B" "${E2[@]}"
for w in --rollout-num-gpus-per-engine --rollout-num-gpus --colocate --actor-num-nodes --hostfile \
    --num-layers --moe-router-topk; do
    grep -q -- " $w\( \|=\|$\)" "$P" && fail "355B: launcher/model flag $w passed to a process"
done
# the not-yet-supported flags: reported, never passed; refused when passed anyway
for f in --tensor-model-parallel-size --pipeline-model-parallel-size --context-parallel-size \
    --expert-model-parallel-size --sequence-parallel --recompute-granularity \
    --optimizer-cpu-offload --sglang-mem-fraction-static --sglang-enable-dp-attention \
    --sglang-dp-size --rollout-stop-token-ids --balance-data "--advantage-estimator gspo" \
    --attention-dropout; do
    grep -q "^not yet supported: $f .*(.*)$\|^not yet supported: $f (.*)$" "$TMP/g355.err" ||
        fail "355B: no 'not yet supported: $f' line"
done
check_refusals g355 $S
[ -z "$(ls -A "$TMP/tmpdir")" ] || fail "355B: the example hostfile was left in TMPDIR"
grep -q "^HOSTFILE unset: planning with an example hostfile of 8 nodes" "$TMP/g355.err" ||
    fail "355B: the example hostfile is not announced"
# a real hostfile is used as given; without one and without --dry-run: an error
printf 'gpu-a%d slots=8\n' 0 1 2 3 4 5 6 7 >"$TMP/hosts"
HOSTFILE=$TMP/hosts run g355h $S --dry-run || fail "355B with HOSTFILE: exit $?"
grep -q "^node 7: gpu-a7, 8 GPUs$" "$TMP/g355h.out" || fail "355B: HOSTFILE not used"
grep -q "example hostfile" "$TMP/g355h.err" && fail "355B: example hostfile despite HOSTFILE"
run g355n $S
rc=$?
if [ "$rc" -ne 2 ] || ! grep -q "set HOSTFILE" "$TMP/g355n.err"; then
    fail "355B without HOSTFILE: exit $rc"
fi
echo "ok 1: GLM-4.5-355B-A32B"

# ------------------------------------------------------ 2. GLM-4.5-Air, Qwen3-4B
S=run-glm4.5-106B-A12B.sh
run air $S --dry-run || fail "$S --dry-run: exit $?: $(why air)"
P=$TMP/air.out
grep -q "^  32 trainer ranks, 4 engines, colocated, sync, evaluation$" "$P" || fail "Air: job summary"
grep -q "^\[trainer-31\] node 3 (node3), GPUs 7$" "$P" || fail "Air: trainer-31"
for k in 0 1 2 3; do
    grep -q "^\[engine-$k\] node $k (node$k), GPUs 0,1,2,3,4,5,6,7$" "$P" || fail "Air: engine-$k"
    block "$P" "engine-$k" | grep -q "CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 .* rollout " ||
        fail "Air: engine-$k CUDA_VISIBLE_DEVICES"
done
check_model air $S 100 112 11 15
only_in "$P" "--eps-clip 0.2" $(seq -f 'trainer-%g' 0 31)
check_refusals air $S

S=run-qwen3-4B.sh
run q4 $S --dry-run || fail "$S --dry-run: exit $?: $(why q4)"
P=$TMP/q4.out
grep -q "^job qwen3-4B: .* on 1 node (local)" "$P" || fail "Qwen3-4B: not a local job"
grep -q "^  8 trainer ranks, 4 engines, colocated, sync, evaluation$" "$P" || fail "Qwen3-4B: summary"
for k in 0 1 2 3; do
    g="$((2 * k)),$((2 * k + 1))"
    grep -q "^\[engine-$k\] node 0 (127.0.0.1), GPUs $g$" "$P" || fail "Qwen3-4B: engine-$k"
    block "$P" "engine-$k" | grep -q "CUDA_VISIBLE_DEVICES=$g .* rollout " ||
        fail "Qwen3-4B: engine-$k CUDA_VISIBLE_DEVICES"
done
grep -q "^\[trainer-7\] node 0 (127.0.0.1), GPUs 7$" "$P" || fail "Qwen3-4B: trainer-7"
check_model q4 $S 3.8 4.2 3.8 4.2
only_in "$P" "--global-batch-size 256" $(seq -f 'trainer-%g' 0 7)
only_in "$P" "--use-kl-loss" $(seq -f 'trainer-%g' 0 7)
only_in "$P" "--ref-load $TMP/base/Qwen3-4B" $(seq -f 'trainer-%g' 0 7)
only_in "$P" "--rollout-batch-size 32" buffer
only_in "$P" "--n-samples-per-eval-prompt 16" eval
check_refusals q4 $S
grep -q "example hostfile" "$TMP/q4.err" && fail "Qwen3-4B: a one-node job got an example hostfile"
echo "ok 2: GLM-4.5-Air and Qwen3-4B"

# ------------------------------------------------------ 3. what reaches quench
cat >"$TMP/stub" <<'EOF'
#!/usr/bin/env bash
printf '%s\n' "$@" >"$STUB_OUT"
EOF
chmod +x "$TMP/stub"
export STUB_OUT=$TMP/stub.args
HOSTFILE=$TMP/hosts QUENCH=$TMP/stub RUN_DIR=$TMP/job timeout 60 "$SRC/scripts/run-glm4.5-355B-A32B.sh" \
    --lr 3e-6 2>/dev/null || fail "stub run"
A=$(tr '\n' ' ' <"$STUB_OUT")
case $A in launch\ *) ;; *) fail "stub: not 'quench launch': $A" ;; esac
case $A in *" --hostfile $TMP/hosts "*) ;; *) fail "stub: HOSTFILE not passed: $A" ;; esac
case $A in *" --run-dir $TMP/job "*) ;; *) fail "stub: RUN_DIR not passed: $A" ;; esac
case $A in *" --lr 3e-6 ") ;; *) fail "stub: the caller's flags are not last: $A" ;; esac
mkdir -p "$TMP/job" && echo '{}' >"$TMP/job/launch.json"
QUENCH=$TMP/stub RUN_DIR=$TMP/job timeout 60 "$SRC/scripts/run-qwen3-4B.sh" 2>/dev/null || fail "stub run 2"
A=$(tr '\n' ' ' <"$STUB_OUT")
case $A in *" --load $TMP/job "*) ;; *) fail "stub: a RUN_DIR holding a job is not resumed: $A" ;; esac
case $A in *--run-dir*) fail "stub: --run-dir with --load: $A" ;; esac
case $A in *--hostfile*) fail "stub: a one-node job without HOSTFILE got --hostfile: $A" ;; esac
echo "ok 3: the arguments handed to quench"
