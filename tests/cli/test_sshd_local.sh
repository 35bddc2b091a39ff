#!/usr/bin/env bash
# test_sshd_local.sh — the two-node ssh rig of tests/cli/sshd_local.sh, as
# `quench launch --hostfile` tests will use it:
#  1. both "nodes" (127.0.0.1, 127.0.0.2) run a remote shell command through
#     $SSHD_LOCAL_SSH without prompts: 'echo $((6*7))' prints 42, and the
#     sshd saw a connection to each address;
#  2. exit statuses come back (exit 3 -> 3, exit 0 -> 0, a missing command
#     -> 127), and a dead sshd gives ssh's own 255 quickly instead of a hang;
#  3. a remote `nohup ... &` that lets go of its stdio survives the ssh that
#     started it, its pid comes back on stdout, and a second ssh kills it;
#  4. `env A=B cmd` passes variables (spaces and quotes intact);
#  5. stdin reaches the remote command.
# Exits 77 (ctest: skipped) when sshd is not installed. Every wait is
# bounded; sshd and the remote process are killed on exit, pass or fail.
set -u
SRC=${QN_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
TMP=$(mktemp -d)
REMOTE_PID=
cleanup() {
    if [ -n "$REMOTE_PID" ]; then kill -9 "$REMOTE_PID" 2>/dev/null; fi
    sshd_local_stop
    rm -rf "$TMP"
}
fail() {
    echo "FAIL: $*" >&2
    [ -f "$TMP/ssh/sshd.log" ] && tail -20 "$TMP/ssh/sshd.log" >&2
    exit 1
}
. "$SRC/tests/cli/sshd_local.sh"
trap cleanup EXIT
sshd_local_start "$TMP/ssh"
rc=$?
[ $rc -eq 77 ] && exit 77
[ $rc -eq 0 ] || fail "sshd_local_start returned $rc"
S=$SSHD_LOCAL_SSH
[ -x "$S" ] || fail "no wrapper at '$S'"
T() { timeout 30 "$S" "$@" </dev/null; }

# 1. both nodes
for h in 127.0.0.1 127.0.0.2; do
    out=$(T "$h" 'echo $((6*7))') || fail "$h: ssh failed (rc $?)"
    [ "$out" = 42 ] || fail "$h: printed '$out', want 42"
    # the server side sees the address that was dialled
    seen=$(T "$h" 'echo ${SSH_CONNECTION##* }' | head -1)
    [ "$seen" = "$SSHD_LOCAL_PORT" ] || fail "$h: SSH_CONNECTION ends in '$seen'"
    addr=$(T "$h" 'set -- $SSH_CONNECTION; echo $3')
    [ "$addr" = "$h" ] || fail "$h: sshd answered on '$addr'"
done
echo "ok 1 both nodes answer 42"

# 2. exit statuses
T 127.0.0.2 'exit 3'; rc=$?
[ $rc -eq 3 ] || fail "exit 3 came back as $rc"
T 127.0.0.1 'true'; rc=$?
[ $rc -eq 0 ] || fail "true came back as $rc"
T 127.0.0.1 'no_such_command_qn 2>/dev/null'; rc=$?
[ $rc -eq 127 ] || fail "a missing command came back as $rc"
T 127.0.0.1 'sh -c "kill -9 \$\$"'; rc=$?
[ $rc -ne 0 ] || fail "a command killed by a signal came back as 0"
echo "ok 2 exit statuses propagate (3, 0, 127, signal -> $rc)"

# 3. a background process outlives its ssh and is killed by pid over ssh
start=$(date +%s)
REMOTE_PID=$(T 127.0.0.2 "nohup sleep 300 </dev/null >'$TMP/bg.log' 2>&1 & echo \$!") ||
    fail "starting the background process failed"
took=$(($(date +%s) - start))
[ $took -lt 10 ] || fail "ssh waited ${took}s for the background process"
case $REMOTE_PID in '' | *[!0-9]*) fail "remote pid '$REMOTE_PID'" ;; esac
sleep 0.5
T 127.0.0.1 "kill -0 $REMOTE_PID" || fail "pid $REMOTE_PID died with its ssh session"
cmd=$(tr '\0' ' ' </proc/$REMOTE_PID/cmdline 2>/dev/null)
[ "$cmd" = "sleep 300 " ] || fail "pid $REMOTE_PID runs '$cmd', not the sleep"
T 127.0.0.1 "kill $REMOTE_PID" || fail "kill over ssh failed"
for i in $(seq 1 50); do
    kill -0 "$REMOTE_PID" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$REMOTE_PID" 2>/dev/null && fail "pid $REMOTE_PID still runs after kill over ssh"
REMOTE_PID=
echo "ok 3 nohup background process survives ssh and is killed by pid"

# 4. environment variables through env
out=$(T 127.0.0.2 "env QN_A=B 'QN_C=two words' \"QN_D=it's\" sh -c 'echo \"\$QN_A|\$QN_C|\$QN_D\"'")
[ "$out" = "B|two words|it's" ] || fail "env passed '$out'"
# and the caller's environment does not leak through
out=$(QN_LEAK=1 T 127.0.0.1 'echo "${QN_LEAK:-unset}"')
[ "$out" = unset ] || fail "the caller's environment reached the remote side: '$out'"
echo "ok 4 env A=B cmd passes variables"

# 5. stdin
out=$(printf 'line1\nline2\n' | timeout 30 "$S" 127.0.0.1 'wc -l')
[ "$out" = 2 ] || fail "stdin: wc -l printed '$out'"
echo "ok 5 stdin reaches the remote command"

# 2b. with sshd gone, ssh fails fast with 255 instead of hanging
sshd_local_stop
start=$(date +%s)
T 127.0.0.1 true 2>/dev/null; rc=$?
took=$(($(date +%s) - start))
[ $rc -eq 255 ] || fail "ssh to a stopped sshd returned $rc, want 255"
[ $took -lt 15 ] || fail "ssh to a stopped sshd took ${took}s"
echo "ok 6 a stopped sshd gives 255 in ${took}s"
echo "PASS"
