#!/usr/bin/env bash
# test_flag_tables.sh — every command's flag table is valid. The tables live
# in cli/cmd_*.c, which only the quench binary links, so this drives the
# binary: `quench help <cmd>` prints the table through qn_flags_print_help,
# which validates it first (core/flags.h qn_flags_validate_table) and reports
# a bad table — a default out of range, a duplicate name, a field of the
# wrong size — as "internal error: flag table ..." on stderr. Every command
# listed by `quench help` is checked; a new command is covered automatically.
set -u
Q=${QN_BIN:?QN_BIN must name the quench binary}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
"$Q" help >"$tmp/overview" 2>&1 || { echo "FAIL: quench help"; exit 1; }
cmds=$(awk '/^commands:/{f=1;next} f&&/^  [a-z]/{print $1} f&&/^$/{exit}' "$tmp/overview")
[ -n "$cmds" ] || { echo "FAIL: quench help lists no commands"; exit 1; }
with_flags=0
for c in $cmds; do
  "$Q" help "$c" >"$tmp/out" 2>"$tmp/err"
  rc=$?
  if [ $rc -ne 0 ]; then echo "FAIL: quench help $c exits $rc"; fails=$((fails+1)); fi
  if grep -q "internal error" "$tmp/err"; then
    echo "FAIL: quench help $c: $(cat "$tmp/err")"; fails=$((fails+1))
  fi
  # a command with a flag table documents the environment override of each flag
  if grep -q "^flags:" "$tmp/out"; then
    with_flags=$((with_flags+1))
    n_flags=$(grep -c '^  --' "$tmp/out")
    n_env=$(grep -c '; env QN_' "$tmp/out")
    if [ "$n_flags" != "$n_env" ]; then
      echo "FAIL: quench help $c: $n_flags flags but $n_env env lines"; fails=$((fails+1))
    fi
  fi
done
# the command references in docs/CONFIGURATION.md are generated from the
# same help output and must still match it
SRC=${QN_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
if ! /usr/bin/python3 "$SRC/scripts/config_docs.py" "$Q"; then fails=$((fails+1)); fi
echo "checked $(echo $cmds | wc -w) commands ($with_flags with flag tables); failures: $fails"
[ $fails -eq 0 ]
