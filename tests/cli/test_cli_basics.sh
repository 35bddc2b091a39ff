#!/usr/bin/env bash
# test_cli_basics.sh — the quench binary's dispatch: --version, help, help
# <command> for every listed command, unknown command and exit codes.
set -u
Q=${QN_BIN:?QN_BIN must name the quench binary}
fails=0
check() { # check <description> <expected-exit> <cmd...>
  local desc=$1 want=$2; shift 2
  "$@" >/tmp/qn-cli-out.$$ 2>&1
  local got=$?
  if [ "$got" != "$want" ]; then
    echo "FAIL: $desc: exit $got, wanted $want"; cat /tmp/qn-cli-out.$$; fails=$((fails+1))
  fi
}
check "--version" 0 "$Q" --version
grep -q '^quench [0-9]' /tmp/qn-cli-out.$$ || { echo "FAIL: --version output"; fails=$((fails+1)); }
check "no args is a usage error" 2 "$Q"
check "unknown command" 2 "$Q" frobnicate
grep -q "unknown command 'frobnicate'" /tmp/qn-cli-out.$$ || { echo "FAIL: unknown command message"; fails=$((fails+1)); }
check "help" 0 "$Q" help
cmds=$(awk '/^commands:/{f=1;next} f&&/^  [a-z]/{print $1} f&&/^$/{exit}' /tmp/qn-cli-out.$$)
[ -n "$cmds" ] || { echo "FAIL: help lists no commands"; fails=$((fails+1)); }
for c in $cmds; do
  check "help $c" 0 "$Q" help "$c"
  grep -qi 'usage' /tmp/qn-cli-out.$$ || { echo "FAIL: help $c prints no usage"; fails=$((fails+1)); }
  check "$c --help" 0 "$Q" "$c" --help
done
check "help of unknown command" 2 "$Q" help frobnicate
rm -f /tmp/qn-cli-out.$$
echo "checked $(echo $cmds | wc -w) commands; failures: $fails"
[ $fails -eq 0 ]
