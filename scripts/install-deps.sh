#!/usr/bin/env bash
# install-deps.sh — the one list of Debian packages quench needs to build,
# test and run. Idempotent: when everything is installed it prints nothing
# and exits 0. Runs apt-get as root, or through sudo.
#   scripts/install-deps.sh            everything (build, run, tests, tools)
#   scripts/install-deps.sh --runtime  only what building and running quench
#                                      needs (scripts/quickstart.sh)
#   scripts/install-deps.sh --list     print every package, one a line, and
#                                      install nothing (scripts/bundle-deps.sh)
set -euo pipefail

RUNTIME=(
  # build
  build-essential cmake pkg-config git
  # libraries
  libcjson-dev          # JSON (config.json, safetensors headers, HTTP bodies)
  libprotobuf-c-dev protobuf-c-compiler  # wire protocol
  libopenblas-dev       # CPU GEMMs
  libzmq3-dev           # messaging between processes
  libuv1-dev            # event loops, HTTP server
  libhiredis-dev        # Redis client
  libpcre2-dev          # tokenizer pre-tokenizer regexes
  libutf8proc-dev       # Unicode normalisation
  libcurl4-openssl-dev  # remote reward services
  zlib1g-dev            # deflate for the PNG charts of `quench plot`
  libgloo-dev           # CPU collectives between trainer ranks
  redis-server          # the job's shared state (quench launch starts one), integration tests
)
TESTS=(
  # tests and tools
  libcmocka-dev         # unit tests
  clang libclang-rt-14-dev  # libFuzzer targets, sanitizers
  curl                  # HTTP tests
  openssh-server openssh-client  # tests/cli/sshd_local.sh: two "nodes" over real ssh for quench launch
  python3-torch python3-numpy  # tests/ref/*.py: PyTorch references (model core, loss, AdamW)
)

PACKAGES=("${RUNTIME[@]}")
case "${1:-}" in
  --runtime) ;;
  "") PACKAGES+=("${TESTS[@]}") ;;
  --list) printf '%s\n' "${RUNTIME[@]}" "${TESTS[@]}"; exit 0 ;;
  *) echo "usage: scripts/install-deps.sh [--runtime | --list]" >&2; exit 2 ;;
esac

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "install-deps: need root or sudo to install: ${missing[*]}" >&2
    exit 1
  fi
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done" >&2
