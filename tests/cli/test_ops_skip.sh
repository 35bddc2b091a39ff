#!/usr/bin/env bash
# test_ops_skip.sh — the CUDA op harness (build/tests/qn_test_ops) on a machine
# without a GPU: every case is reported as SKIPPED, none as OK or FAIL, the
# summary counts them, the exit status is 77 (skipped, never "passed"), and
# --list / --op / bad arguments behave. On a machine with a GPU this script
# skips itself (the harness then runs for real as ctest's test_backend_ops).
set -u
Q=${QN_BIN:?QN_BIN must name the quench binary}
H=$(dirname "$(dirname "$Q")")/tests/qn_test_ops
[ -x "$H" ] || { echo "SKIP: $H not built"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }

"$H" > "$T/out" 2> "$T/err"
rc=$?
if [ $rc -ne 77 ]; then
    if grep -q '^device: ' "$T/out"; then echo "SKIP: a CUDA device is present"; exit 77; fi
    fail "exit status $rc without a device (expected 77)"
fi
n_skip=$(grep -c '^SKIPPED ' "$T/out")
[ "$n_skip" -gt 0 ] || fail "no SKIPPED lines"
grep -qE '^(OK|FAIL|PERF) ' "$T/out" && fail "a case reported OK/FAIL/PERF without a device"
tail -1 "$T/out" | grep -qx "$n_skip cases skipped: no CUDA device" ||
    fail "summary: '$(tail -1 "$T/out")' (expected '$n_skip cases skipped: no CUDA device')"

# --list prints the same cases, runs nothing, exits 0
"$H" --list > "$T/list"; rc=$?
[ $rc -eq 0 ] || fail "--list exit $rc"
diff <(sed -n 's/^SKIPPED //p' "$T/out") <(sed '$d' "$T/list") > /dev/null ||
    fail "--list and the skipped cases differ"
tail -1 "$T/list" | grep -qx "$n_skip cases" || fail "--list summary: $(tail -1 "$T/list")"

# --op keeps only matching cases
"$H" --op rmsnorm_fwd > "$T/op"; rc=$?
[ $rc -eq 77 ] || fail "--op exit $rc"
n_op=$(grep -c '^SKIPPED ' "$T/op")
[ "$n_op" -gt 0 ] || fail "--op rmsnorm_fwd matched nothing"
[ "$(grep -c '^SKIPPED rmsnorm_fwd ' "$T/op")" -eq "$n_op" ] || fail "--op let other ops through"

# bad arguments: exit 2 with a message naming the argument
"$H" --seed abc > /dev/null 2> "$T/bad"; rc=$?
[ $rc -eq 2 ] || fail "--seed abc exit $rc"
grep -q -- "--seed 'abc'" "$T/bad" || fail "--seed abc message: $(cat "$T/bad")"

[ $fails -eq 0 ] && echo "ok: $n_skip cases skipped, $n_op for --op rmsnorm_fwd"
[ $fails -eq 0 ]
