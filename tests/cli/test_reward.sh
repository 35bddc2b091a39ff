#!/usr/bin/env bash
# test_reward.sh — `quench reward` end to end: the example plugin
# (examples/reward-plugin) is built out of tree against the installed
# reward.h (Makefile and CMake), loaded with --custom-rm-path, and scored;
# --reward-key, --rm-config, init failures, built-ins, bad input lines,
# failure statuses and policies, usage errors. Needs QN_BIN and QN_SOURCE (set by ctest).
set -euo pipefail
: "${QN_BIN:?}" "${QN_SOURCE:?}"
BUILD=$(cd "$(dirname "$QN_BIN")/.." && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# the header alone, installed where a plugin author would get it
cmake --install "$BUILD" --component reward-dev --prefix "$TMP/prefix" >/dev/null
test -f "$TMP/prefix/include/quench/reward.h" || fail "reward.h not installed"
test "$(find "$TMP/prefix" -type f | wc -l)" -eq 1 \
    || fail "reward-dev installs more than the header"

# out-of-tree builds: Makefile and CMake, nothing written into the source tree
make -s -C "$QN_SOURCE/examples/reward-plugin" QUENCH_PREFIX="$TMP/prefix" BUILD="$TMP/plugin" \
    || fail "example plugin Makefile build"
SO="$TMP/plugin/liblength_aware.so"
test -f "$SO" || fail "no $SO"
cmake -S "$QN_SOURCE/examples/reward-plugin" -B "$TMP/cmake" -DQUENCH_PREFIX="$TMP/prefix" \
    >/dev/null
cmake --build "$TMP/cmake" >/dev/null || fail "example plugin CMake build"
test -f "$TMP/cmake/liblength_aware.so" || fail "CMake build made no liblength_aware.so"

SAMPLES="$QN_SOURCE/examples/reward-plugin/samples.jsonl"
check() { # check <output file> <python expression over rows>
    /usr/bin/python3 - "$1" "$2" <<'PY' || fail "check failed: $2 on $(cat "$1")"
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert eval(sys.argv[2]), rows
PY
}

for iso in process inline; do
    "$QN_BIN" reward --custom-rm-path "$SO" --input "$SAMPLES" --reward-isolation "$iso" \
        >"$TMP/out.jsonl" 2>"$TMP/err.txt" || { cat "$TMP/err.txt"; fail "plugin run ($iso)"; }
    check "$TMP/out.jsonl" "len(rows) == 4 and all(r['status'] == 'ok' for r in rows)"
    check "$TMP/out.jsonl" "[r['reward'] for r in rows] == [1, 0, 0, 1]"
    check "$TMP/out.jsonl" "rows[0]['scores'] == {'match': 1, 'length_penalty': 0}"
done
grep -q "scored 4 samples" "$TMP/err.txt" || fail "no throughput line"

# the CMake-built copy, a config string, and --reward-key
"$QN_BIN" reward --custom-rm-path "$TMP/cmake/liblength_aware.so" --input "$SAMPLES" \
    --rm-config max_len=5 >"$TMP/out.jsonl" 2>/dev/null || fail "max_len run"
check "$TMP/out.jsonl" "abs(rows[0]['reward'] - (1 - 0.1 * (21 - 5) / 100)) < 1e-12"
"$QN_BIN" reward --custom-rm-path "$SO" --input "$SAMPLES" --rm-config max_len=5 \
    --reward-key match >"$TMP/out.jsonl" 2>/dev/null || fail "reward-key run"
check "$TMP/out.jsonl" "[r['reward'] for r in rows][:2] == [1, 0]"

# init failure is reported with the plugin's message, exit status 1
set +e
"$QN_BIN" reward --custom-rm-path "$SO" --input "$SAMPLES" --rm-config bogus \
    >/dev/null 2>"$TMP/err.txt"
rc=$?
set -e
test $rc -eq 1 || fail "bad config: exit $rc"
grep -q "max_len=<positive int>" "$TMP/err.txt" \
    || fail "init message missing: $(cat "$TMP/err.txt")"

# a built-in, with one bad line among good ones: all lines answered in order
cat >"$TMP/math.jsonl" <<'J'
{"prompt": "q", "response": "so \\boxed{\\dfrac{14}{3}}", "label": "\\frac{14}{3}"}
{"prompt": "q", "response": "The answer is 1,600 dollars.", "label": "1600"}
this line is not JSON
{"prompt": [{"role": "user", "content": "q"}], "response": "I get 27", "label": 27.0, "metadata": {"k": 1}}
{"prompt": "q", "response": "no idea", "label": "5"}
J
set +e
"$QN_BIN" reward --rm-type math --input "$TMP/math.jsonl" --output "$TMP/out.jsonl" 2>"$TMP/err.txt"
rc=$?
set -e
test $rc -eq 1 || fail "bad input line should give exit 1, got $rc"
grep -q "line 3" "$TMP/err.txt" || fail "bad line not named"
check "$TMP/out.jsonl" "[r['status'] for r in rows] == ['ok', 'ok', 'bad_input', 'ok', 'ok']"
check "$TMP/out.jsonl" "[r['reward'] for r in rows] == [1, 1, None, 1, 0]"

# failures in the output: a crashing plugin (built by the test build) with
# groups of two; drop marks the group, zero scores 0 but keeps the reason
CRASHY="$BUILD/lib/qn_testplug_segv.so"
cat >"$TMP/crash.jsonl" <<'J'
{"prompt": "p", "response": "a", "label": "ok"}
{"prompt": "p", "response": "b", "label": "crash"}
{"prompt": "p", "response": "c", "label": "ok"}
{"prompt": "p", "response": "d", "label": "ok"}
J
"$QN_BIN" reward --custom-rm-path "$CRASHY" --input "$TMP/crash.jsonl" --group-size 2 \
    >"$TMP/out.jsonl" 2>"$TMP/err.txt" || fail "crash run (drop)"
check "$TMP/out.jsonl" "[r['status'] for r in rows] == ['ok', 'crash', 'ok', 'ok']"
check "$TMP/out.jsonl" "rows[1]['reward'] is None and 'signal 11' in rows[1]['message']"
check "$TMP/out.jsonl" "[r.get('group_dropped', False) for r in rows] == [True, True, False, False]"
grep -q "crash=1; groups dropped 1/2; workers restarted 1" "$TMP/err.txt" \
    || fail "summary: $(cat "$TMP/err.txt")"
"$QN_BIN" reward --custom-rm-path "$CRASHY" --input "$TMP/crash.jsonl" --reward-failure zero \
    >"$TMP/out.jsonl" 2>/dev/null || fail "crash run (zero)"
check "$TMP/out.jsonl" "rows[1]['reward'] == 0 and rows[1]['status'] == 'crash'"
set +e
"$QN_BIN" reward --custom-rm-path "$CRASHY" --input "$TMP/crash.jsonl" --reward-failure fail \
    >"$TMP/out.jsonl" 2>"$TMP/err.txt"
rc=$?
set -e
test $rc -eq 1 && grep -q "sample 1 (group 1) failed: crash" "$TMP/err.txt" \
    || fail "fail policy: rc=$rc $(cat "$TMP/err.txt")"

# usage errors
set +e
"$QN_BIN" reward --input "$SAMPLES" >/dev/null 2>&1; rc1=$?
"$QN_BIN" reward --rm-type math --custom-rm-path "$SO" --input "$SAMPLES" >/dev/null 2>&1; rc2=$?
"$QN_BIN" reward --rm-type math --input "$SAMPLES" --reward-timeout 0 >/dev/null 2>&1; rc3=$?
"$QN_BIN" reward --rm-type nope --input "$SAMPLES" >/dev/null 2>"$TMP/err.txt"; rc4=$?
set -e
test $rc1 -eq 2 && test $rc2 -eq 2 && test $rc3 -eq 2 || fail "usage errors: $rc1 $rc2 $rc3"
test $rc4 -eq 1 && grep -q "math|deepscaler|dapo|exact|f1|remote_rm" "$TMP/err.txt" \
    || fail "unknown --rm-type: $rc4 $(cat "$TMP/err.txt")"
"$QN_BIN" reward --help | grep -q -- "--reward-isolation" || fail "help"
echo "test_reward.sh: ok"
