# sshd_local.sh — a private sshd on loopback, so that tests can treat this
# machine as two "nodes" (127.0.0.1 and 127.0.0.2) reached over real ssh,
# e.g. `quench launch --hostfile H --ssh-command "$SSHD_LOCAL_SSH"`.
# Source it from a bash test; it is a library, not a test (ctest runs only
# tests/cli/test_*.sh):
#
#   . "$SRC/tests/cli/sshd_local.sh"
#   sshd_local_start "$TMP/ssh" || exit $?    # 77: sshd not installed (SKIP)
#   "$SSHD_LOCAL_SSH" 127.0.0.2 'echo $((6*7))'
#   sshd_local_stop
#
# sshd_local_start DIR makes, under DIR (created if needed): a fresh host
# key, a fresh client key listed in DIR/authorized_keys, DIR/sshd_config
# (StrictModes no, keys only, no PAM, PermitRootLogin yes so that it also
# works as root, listening on 127.0.0.1 and 127.0.0.2 at one free port from
# 20000-59999), DIR/ssh_config for the hosts 127.0.0.1, 127.0.0.2 and
# localhost (that port, that key, that user, BatchMode, no host key checks,
# no known_hosts writes, a connect timeout) and DIR/ssh, a wrapper that runs
# `ssh -F DIR/ssh_config "$@"`. It starts sshd in the foreground mode (-D)
# as a child of the calling shell, logging to DIR/sshd.log, waits until a
# login works (at most ~10 s per port try, 3 tries) and sets:
#   SSHD_LOCAL_SSH   the wrapper; exit status is the remote command's
#                    (255 when ssh itself fails), as with plain ssh
#   SSHD_LOCAL_PORT  the port;  SSHD_LOCAL_PID  sshd's pid;  SSHD_LOCAL_DIR
# It returns 0, 77 after printing "SKIP: ..." when no sshd binary exists
# (package openssh-server, see scripts/install-deps.sh), or 1 after
# printing the sshd log when sshd does not come up.
#
# As root, sshd needs its privilege separation directory (/run/sshd); it is
# created when missing. Sessions run the user's login shell in $HOME with
# sshd's default environment, not the caller's: pass variables with
# `env A=B cmd`. A remote background job must let go of the session's
# stdin/stdout/stderr (`nohup cmd </dev/null >log 2>&1 &`), otherwise ssh
# waits for it, as it does with any sshd.
#
# sshd_local_stop kills the sshd started here (by its pid only) and waits
# for it; sessions already open keep running until they end. It leaves DIR
# to the caller. Calling it twice, or without a start, is harmless.

sshd_local_start() {
    local dir=${1:?usage: sshd_local_start DIR}
    local sshd
    sshd=$(command -v sshd 2>/dev/null || true)
    [ -z "$sshd" ] && [ -x /usr/sbin/sshd ] && sshd=/usr/sbin/sshd
    if [ -z "$sshd" ]; then
        echo "SKIP: sshd is not installed (Debian package openssh-server)" >&2
        return 77
    fi
    if ! command -v ssh >/dev/null 2>&1 || ! command -v ssh-keygen >/dev/null 2>&1; then
        echo "SKIP: ssh or ssh-keygen is not installed (Debian package openssh-client)" >&2
        return 77
    fi
    mkdir -p "$dir" || return 1
    dir=$(cd "$dir" && pwd) || return 1
    local user
    user=$(id -un) || return 1
    # sshd re-executes itself and refuses a relative path
    case $sshd in /*) ;; *) sshd=$(cd "$(dirname "$sshd")" && pwd)/$(basename "$sshd") ;; esac
    if [ "$(id -u)" -eq 0 ] && [ ! -d /run/sshd ]; then
        mkdir -p /run/sshd && chmod 755 /run/sshd || return 1
    fi

    rm -f "$dir/host_key" "$dir/host_key.pub" "$dir/client_key" "$dir/client_key.pub"
    ssh-keygen -q -t ed25519 -N '' -C sshd_local-host -f "$dir/host_key" || return 1
    ssh-keygen -q -t ed25519 -N '' -C sshd_local-client -f "$dir/client_key" || return 1
    cp "$dir/client_key.pub" "$dir/authorized_keys" && chmod 600 "$dir/authorized_keys" || return 1

    cat >"$dir/ssh" <<EOF
#!/bin/sh
# made by tests/cli/sshd_local.sh: ssh to its private sshd (port and key in ssh_config)
exec ssh -F '$dir/ssh_config' "\$@"
EOF
    chmod 755 "$dir/ssh" || return 1

    local try port
    for try in 1 2 3; do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        cat >"$dir/sshd_config" <<EOF
# made by tests/cli/sshd_local.sh for one test run
Port $port
ListenAddress 127.0.0.1
ListenAddress 127.0.0.2
HostKey $dir/host_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin yes
AllowUsers $user
PermitUserEnvironment no
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
PrintLastLog no
UseDNS no
MaxStartups 200
MaxSessions 200
LoginGraceTime 20
LogLevel VERBOSE
EOF
        cat >"$dir/ssh_config" <<EOF
# made by tests/cli/sshd_local.sh for one test run
Host 127.0.0.1 127.0.0.2 localhost
  Port $port
  User $user
  IdentityFile $dir/client_key
  IdentitiesOnly yes
  BatchMode yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  GlobalKnownHostsFile /dev/null
  CheckHostIP no
  LogLevel ERROR
  ConnectTimeout 10
  ServerAliveInterval 5
  ServerAliveCountMax 6
  PasswordAuthentication no
  KbdInteractiveAuthentication no
  ControlMaster no
  ForwardAgent no
  ForwardX11 no
EOF
        if ! "$sshd" -t -f "$dir/sshd_config" 2>"$dir/sshd.log"; then
            echo "sshd_local: sshd rejects the config:" >&2
            cat "$dir/sshd.log" >&2
            return 1
        fi
        "$sshd" -D -e -f "$dir/sshd_config" </dev/null >>"$dir/sshd.log" 2>&1 &
        SSHD_LOCAL_PID=$!
        SSHD_LOCAL_PORT=$port
        SSHD_LOCAL_DIR=$dir
        SSHD_LOCAL_SSH=$dir/ssh
        local i
        for i in $(seq 1 50); do
            if ! kill -0 "$SSHD_LOCAL_PID" 2>/dev/null; then
                break # exited: most likely the port was taken
            fi
            if "$dir/ssh" -o ConnectTimeout=2 127.0.0.1 true </dev/null >/dev/null 2>&1; then
                export SSHD_LOCAL_SSH SSHD_LOCAL_PORT SSHD_LOCAL_PID SSHD_LOCAL_DIR
                return 0
            fi
            sleep 0.2
        done
        sshd_local_stop
    done
    echo "sshd_local: sshd did not come up; its log:" >&2
    cat "$dir/sshd.log" >&2
    return 1
}

sshd_local_stop() {
    if [ -n "${SSHD_LOCAL_PID:-}" ]; then
        kill "$SSHD_LOCAL_PID" 2>/dev/null
        local i
        for i in $(seq 1 50); do
            kill -0 "$SSHD_LOCAL_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$SSHD_LOCAL_PID" 2>/dev/null
        wait "$SSHD_LOCAL_PID" 2>/dev/null
    fi
    SSHD_LOCAL_PID=
    return 0
}
