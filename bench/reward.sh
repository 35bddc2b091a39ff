#!/usr/bin/env bash
# reward.sh — throughput of quench's reward layer, printed as the lines that
# docs/PERFORMANCE.md ("Rewards") quotes:
#   1. the math built-in, inline, on MATH-500 reference solutions (samples/s)
#   2. the same under process isolation with 1 and 2 workers, and the
#      per-sample overhead of isolation: (t_process - t_inline) / samples
#   3. remote_rm against tests/rewards/rm_server.py on loopback, 64 requests
#      in flight vs 1, with an instant service and one that takes 20 ms
# Usage: bench/reward.sh [path/to/quench]   (default build/bin/quench)
# Environment: QN_FIXTURES (default ../shared/fixtures), REPEAT (default 40).
set -euo pipefail
cd "$(dirname "$0")/.."
Q=${1:-build/bin/quench}
FIX=${QN_FIXTURES:-$(pwd)/../shared/fixtures}
REPEAT=${REPEAT:-40}
TMP=$(mktemp -d)
SERVER=""
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

/usr/bin/python3 - "$FIX/math500_hf_format/test.jsonl" "$TMP/math.jsonl" <<'PY'
import json, sys
with open(sys.argv[2], "w") as out:
    for line in open(sys.argv[1]):
        r = json.loads(line)
        out.write(json.dumps({"prompt": r["problem"], "response": r["solution"],
                              "label": r["answer"], "metadata": {}}) + "\n")
PY
N=$(wc -l <"$TMP/math.jsonl")
# "<samples/s> <wall us/sample> <cpu us/sample>" from a quench reward summary
rate() {
    local a b
    a=$(grep "scored" "$1" | sed 's/.*: \([0-9.]*\) samples\/s, \([0-9.]*\) us\/sample/\1 \2/')
    b=$(grep "cpu-us/sample" "$1" | sed 's/.*: \([0-9.]*\) cpu-us\/sample/\1/')
    echo "$a $b"
}

echo "math built-in, $N MATH-500 solutions x $REPEAT passes ($(nproc) cores)"
"$Q" reward --rm-type math --input "$TMP/math.jsonl" --reward-isolation inline \
    --repeat "$REPEAT" --output /dev/null 2>"$TMP/inline.txt"
read -r r_in us_in cpu_in < <(rate "$TMP/inline.txt")
echo "  inline:               $r_in samples/s ($us_in us/sample wall, $cpu_in us/sample cpu)"
for w in 1 2; do
    "$Q" reward --rm-type math --input "$TMP/math.jsonl" --reward-isolation process \
        --reward-workers $w --repeat "$REPEAT" --output /dev/null 2>"$TMP/proc$w.txt"
    read -r r_p us_p cpu_p < <(rate "$TMP/proc$w.txt")
    over=$(awk -v a="$us_p" -v b="$us_in" 'BEGIN { printf "%.1f", a - b }')
    over_cpu=$(awk -v a="$cpu_p" -v b="$cpu_in" 'BEGIN { printf "%.1f", a - b }')
    echo "  process, $w worker(s): $r_p samples/s ($us_p us/sample wall, $cpu_p us/sample cpu;" \
         "isolation overhead $over us wall, $over_cpu us cpu per sample)"
done

for delay in 0 0.02; do
    /usr/bin/python3 tests/rewards/rm_server.py --delay "$delay" --lifetime 600 >"$TMP/port" &
    SERVER=$!
    for _ in $(seq 50); do [ -s "$TMP/port" ] && break; sleep 0.1; done
    PORT=$(head -1 "$TMP/port")
    /usr/bin/python3 - "$TMP/remote.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as out:
    for i in range(1024):
        out.write(json.dumps({"prompt": "p%d" % i, "response": "r%d" % i, "label": "1"}) + "\n")
PY
    for conc in 1 64; do
        "$Q" reward --rm-type remote_rm --rm-url "http://127.0.0.1:$PORT/" \
            --rm-concurrency $conc --input "$TMP/remote.jsonl" --output /dev/null \
            2>"$TMP/remote.txt"
        read -r r_r us_r cpu_r < <(rate "$TMP/remote.txt")
        fails=$(grep -o "failed [0-9]*" "$TMP/remote.txt")
        echo "  remote_rm, service delay ${delay}s, $conc in flight: $r_r samples/s" \
             "($fails; client cpu $cpu_r us/sample)"
    done
    kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
done
