#!/usr/bin/env bash
# test_bundle_deps.sh — scripts/bundle-deps.sh makes an offline bundle that
# quench builds and runs from, using nothing of this machine's but libc, the
# gcc runtime, the compiler and CMake (what a GPU machine has):
#   1. the bundle: env.sh, MANIFEST (every package of install-deps.sh --list
#      bundled or said to be left out), deps.tar.xz under 30 MiB;
#   2. `. env.sh` unpacks it and sets QN_DEPS_PREFIX, PATH, PKG_CONFIG,
#      PKG_CONFIG_PATH, CMAKE_PREFIX_PATH, and not LD_LIBRARY_PATH;
#   3. scripts/build.sh (-DQN_CUDA=OFF -DQN_BUILD_TESTS=OFF) with
#      PKG_CONFIG_LIBDIR = the bundle only: every Qn:: library, Gloo,
#      pkg-config and protoc-c in CMakeCache are the bundle's, and every
#      library on quench's link line and include directory is the bundle's
#      or the compiler's and glibc's;
#   4. quench runs without LD_LIBRARY_PATH (DT_RPATH into the bundle):
#      LD_DEBUG shows every library it loads coming from the bundle, except
#      glibc's and the gcc runtime's, libcurl's own dependency libnghttp2
#      included;
#   5. the bundle's redis-server starts (its executable and libjemalloc from
#      the bundle, per /proc/PID/maps) and the bundle's redis-cli gets PONG.
# QN_TEST_BUNDLE_BREAK=<file name pattern> deletes those files from the
# unpacked bundle before the build, to see this test fail on a broken bundle.
# Exits 77 (skipped) on a machine without dpkg. Takes about a minute.
set -u
SRC=${QN_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
command -v dpkg-query >/dev/null 2>&1 || { echo "skip: not a Debian system"; exit 77; }
TMP=$(mktemp -d)
RPID=
cleanup() {
    if [ -n "$RPID" ]; then kill -9 "$RPID" 2>/dev/null; wait "$RPID" 2>/dev/null; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
# Packages whose files may come from the system rather than the bundle:
# glibc, the gcc runtime and the compiler's own files.
system_owned() {
    local owner
    owner=$(dpkg-query -S "$1" 2>/dev/null | head -1 | cut -d: -f1)
    [ -z "$owner" ] && owner=$(dpkg-query -S "$(realpath "$1")" 2>/dev/null | head -1 | cut -d: -f1)
    case "$owner" in
        libc6|libc6-dev|libstdc++6|libgcc-s1|libgomp1|libatomic1|libgcc-*-dev|libstdc++-*-dev) return 0 ;;
    esac
    return 1
}

# ------------------------------------------------------------ 1. the bundle
t0=$(date +%s)
# XZ_LEVEL=1: the default 6 packs 5 MiB tighter, in several times the time
XZ_LEVEL=${XZ_LEVEL:-1} "$SRC/scripts/bundle-deps.sh" --out "$TMP/bundle" >"$TMP/bundle.out" 2>&1 ||
    { cat "$TMP/bundle.out"; fail "bundle-deps.sh"; }
cat "$TMP/bundle.out"
for f in env.sh MANIFEST deps.tar.xz; do
    [ -s "$TMP/bundle/$f" ] || fail "the bundle has no $f"
done
size=$(stat -c %s "$TMP/bundle/deps.tar.xz")
[ "$size" -lt $((30 * 1048576)) ] || fail "deps.tar.xz is $size bytes, over 30 MiB"
for p in $("$SRC/scripts/install-deps.sh" --list); do
    grep -qE "^$p |^# not bundled: $p:" "$TMP/bundle/MANIFEST" ||
        fail "MANIFEST says nothing of $p"
done
for p in libcjson1 libopenblas0-pthread libzmq5 libcurl4 libgloo0 libgfortran5 redis-tools; do
    grep -qE "^$p [^ ]+ " "$TMP/bundle/MANIFEST" || fail "MANIFEST lacks $p with its version"
done
if grep -qE '^(libc6|libstdc\+\+6|libgcc-s1) ' "$TMP/bundle/MANIFEST"; then
    fail "the bundle carries glibc or the gcc runtime"
fi

# ------------------------------------------------------------ 2. env.sh
unset QN_DEPS_PREFIX PKG_CONFIG PKG_CONFIG_PATH PKG_CONFIG_LIBDIR CMAKE_PREFIX_PATH LD_LIBRARY_PATH
export QN_DEPS_ROOT=$TMP/root
# shellcheck disable=SC1091
. "$TMP/bundle/env.sh" || fail "sourcing env.sh"
R=$QN_DEPS_PREFIX
[ "$R" = "$TMP/root" ] || fail "QN_DEPS_PREFIX is '$R', not $TMP/root"
[ -f "$R/quench-deps.cmake" ] || fail "env.sh did not unpack the bundle"
[ -z "${LD_LIBRARY_PATH:-}" ] || fail "env.sh set LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
for prog in redis-server redis-cli protoc-c pkg-config curl; do
    [ "$(command -v "$prog")" = "$R/bin/$prog" ] || fail "$prog is $(command -v "$prog"), not the bundle's"
done
[ "$PKG_CONFIG" = "$R/bin/pkg-config" ] || fail "PKG_CONFIG=$PKG_CONFIG"
case ":$CMAKE_PREFIX_PATH:" in *":$R/usr:"*) ;; *) fail "CMAKE_PREFIX_PATH=$CMAKE_PREFIX_PATH" ;; esac
# sourcing again changes nothing
before="$PATH|$PKG_CONFIG_PATH|$CMAKE_PREFIX_PATH"
# shellcheck disable=SC1091
. "$TMP/bundle/env.sh" || fail "sourcing env.sh twice"
[ "$before" = "$PATH|$PKG_CONFIG_PATH|$CMAKE_PREFIX_PATH" ] || fail "a second env.sh grew the paths"
if [ -n "${QN_TEST_BUNDLE_BREAK:-}" ]; then
    echo "breaking the bundle: deleting $QN_TEST_BUNDLE_BREAK"
    find "$R" -name "$QN_TEST_BUNDLE_BREAK" -print -delete
fi

# ------------------------------------------------------------ 3. the build
t1=$(date +%s)
B=$TMP/build
PKG_CONFIG_LIBDIR=$PKG_CONFIG_PATH BUILD_DIR=$B JOBS=2 \
    "$SRC/scripts/build.sh" -DQN_CUDA=OFF -DQN_BUILD_TESTS=OFF >"$TMP/build.out" 2>&1 ||
    { tail -30 "$TMP/build.out"; fail "scripts/build.sh against the bundle"; }
t2=$(date +%s)
cache=$B/CMakeCache.txt
grep -qx "QN_DEPS_PREFIX:PATH=$R" "$cache" || fail "CMakeCache has no QN_DEPS_PREFIX=$R"
for var in PKG_CONFIG_EXECUTABLE QN_PROTOC_C Gloo_DIR; do
    v=$(sed -n "s/^$var:[A-Z]*=//p" "$cache")
    case "$v" in "$R"/*) ;; *) fail "$var is '$v', not in the bundle" ;; esac
done
# every Qn:: pkg-config target: its libraries are the bundle's (glibc's -ldl etc. aside)
targets=$(grep -oE '^[[:space:]]*qn_require_pkg\([a-z0-9_]+ ' "$SRC/cmake/QnDeps.cmake" |
          sed -E 's/.*\(//; s/ $//')
checked=0
for t in $targets; do
    libs=$(sed -n "s/^pkgcfg_lib_QN_PKG_${t}_[^:]*:FILEPATH=//p" "$cache")
    if [ -z "$libs" ]; then
        [ "$t" = cmocka ] && continue   # a test dependency; the tests are off
        fail "CMakeCache has no library for Qn::$t"
    fi
    for l in $libs; do
        case "$l" in "$R"/*) checked=$((checked + 1)); continue ;; esac
        system_owned "$l" || fail "Qn::$t links $l, which is not in the bundle"
    done
done
[ "$checked" -ge 10 ] || fail "only $checked Qn:: libraries are the bundle's"
link=$B/cli/CMakeFiles/quench.dir/link.txt
grep -q -- "--disable-new-dtags" "$link" || fail "quench is not linked with DT_RPATH"
for l in $(tr ' ' '\n' <"$link" | grep -E '^/.*\.(so|a)(\.[0-9.]+)?$'); do
    case "$l" in "$R"/*|"$B"/*) continue ;; esac
    system_owned "$l" || fail "quench's link line has $l, outside the bundle"
done
grep -q "$R/.*/libgloo\.so" "$link" || fail "quench does not link the bundle's Gloo"
for inc in $(grep -hE '^(C|CXX)_INCLUDES' "$B"/core/CMakeFiles/quench_core.dir/flags.make |
             tr ' ' '\n' | grep '^/'); do
    case "$inc" in "$R"/*|"$SRC"|"$SRC"/*|"$B"/*) ;; *) fail "include directory $inc is outside the bundle" ;; esac
done

# ------------------------------------------------------------ 4. quench runs
Q=$B/bin/quench
readelf -d "$Q" | grep -q "(RPATH).*$R/usr/lib" || fail "quench has no RPATH into the bundle"
env -u LD_LIBRARY_PATH LD_DEBUG=files LD_DEBUG_OUTPUT="$TMP/ld" "$Q" --version >"$TMP/version.out" ||
    fail "quench --version: $(cat "$TMP/version.out")"
grep -q '^quench ' "$TMP/version.out" || fail "quench --version printed $(cat "$TMP/version.out")"
loaded=$(cat "$TMP"/ld.* | sed -n 's/.*calling init: //p' | sort -u)
n_bundle=0
for so in $loaded; do
    case "$so" in "$R"/*) n_bundle=$((n_bundle + 1)); continue ;; esac
    system_owned "$so" || fail "quench loaded $so, not the bundle's"
done
for want in libcjson.so libopenblas libzmq.so libcurl.so libnghttp2.so libgloo.so libhiredis.so \
            libprotobuf-c.so libuv.so libutf8proc.so libpcre2-8.so libz.so libgfortran.so; do
    echo "$loaded" | grep -q "^$R/.*/$want" || fail "quench did not load $want from the bundle"
done
echo "quench loaded $n_bundle libraries from the bundle"

# ------------------------------------------------------------ 5. redis-server
sock=$TMP/redis.sock
redis-server --port 0 --unixsocket "$sock" --save '' --appendonly no --dir "$TMP" \
    >"$TMP/redis.out" 2>&1 &
RPID=$!
pong=
for _ in $(seq 1 100); do
    pong=$(redis-cli -s "$sock" ping 2>/dev/null) && [ "$pong" = PONG ] && break
    sleep 0.1
done
[ "$pong" = PONG ] || { cat "$TMP/redis.out"; fail "the bundle's redis-server did not answer PING"; }
exe=$(readlink "/proc/$RPID/exe")
case "$exe" in "$R"/*) ;; *) fail "redis-server runs $exe, not the bundle's" ;; esac
grep -q "$R/.*libjemalloc" "/proc/$RPID/maps" || fail "redis-server did not map the bundle's libjemalloc"
redis-cli -s "$sock" shutdown nosave >/dev/null 2>&1
wait "$RPID" 2>/dev/null
RPID=
echo "redis-server $exe: PONG"
echo "PASS (bundle $((t1 - t0)) s, build $((t2 - t1)) s, all $(($(date +%s) - t0)) s)"
