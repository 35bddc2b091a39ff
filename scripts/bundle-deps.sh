#!/usr/bin/env bash
# bundle-deps.sh — packs quench's build and run-time dependencies into an
# offline bundle for machines that have neither network access nor quench's
# Debian packages (the borrowed GPU machines: CUDA, CMake, a compiler, Python
# and PyTorch, nothing else). The bundle is made from the Debian packages
# INSTALLED HERE (their `dpkg -L` file lists), not downloaded: it needs no
# network and holds exactly the versions quench was built and tested with.
#   scripts/bundle-deps.sh [--out DIR]    (default .deps-bundle, git-ignored)
# XZ_LEVEL (default 6) trades the archive's size for time (1: +3 MiB, faster).
# DIR gets three files:
#   deps.tar.xz  the prefix: usr/{include,lib,share} laid out as Debian lays
#                it out, libexec/ (the programs), bin/ (a wrapper per
#                program that gives it the bundle's libraries) and
#                quench-deps.cmake (where things are, for cmake/QnDeps.cmake)
#   env.sh       `. DIR/env.sh` (bash) unpacks the prefix once, outside DIR,
#                and points PATH, pkg-config and CMake at it; see its header
#   MANIFEST     every Debian package that gave files, with its version
# Taken, from the packages of scripts/install-deps.sh --list and the
# installed packages of the same Debian source they depend on (libcurl4 for
# libcurl4-openssl-dev): headers; the pkg-config files of the modules that
# cmake/QnDeps.cmake asks for (rewritten relative to ${pcfiledir}) and the
# .so files they link; the CMake package files of its find_package(CONFIG)
# (Gloo; rewritten relative to their own directory); the programs protoc-c,
# redis-server, redis-cli, curl and pkg-config (pkgconf). Then every shared
# library those libraries and programs load (ldd) and their SONAME links,
# and the pkg-config files that Requires.private names, as stubs without
# Cflags.
# Left out: what the GPU machines have (libc, libstdc++, the gcc runtime,
# CUDA, Python and PyTorch, CMake, the compiler), what only this machine's
# tests use (clang, sshd), documentation, man pages and static libraries.

# shellcheck disable=SC2016,SC1091  # '$root' and '${CMAKE_CURRENT_LIST_DIR}' are written out as such
set -euo pipefail

OUT=.deps-bundle
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || { echo "bundle-deps: --out needs a directory" >&2; exit 2; }
           OUT=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "usage: scripts/bundle-deps.sh [--out DIR]" >&2; exit 2 ;;
  esac
done
OUT=$(realpath -m "$OUT")   # relative to the caller's directory
cd "$(dirname "$0")/.."

# The system's pkg-config on the system's files, also from a shell where a
# bundle's env.sh was sourced.
unset PKG_CONFIG_PATH PKG_CONFIG_LIBDIR PKG_CONFIG_SYSROOT_DIR
PKGCONF=/usr/bin/pkg-config
for tool in dpkg-query dpkg ldd readelf xz tar sha256sum realpath $PKGCONF; do
  command -v "$tool" >/dev/null || { echo "bundle-deps: needs $tool" >&2; exit 1; }
done
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT")" ] && [ ! -f "$OUT/MANIFEST" ]; then
  echo "bundle-deps: $OUT exists and is not a bundle; not overwriting it" >&2
  exit 1
fi

# Packages whose files the GPU machine already has, or that only this
# machine's tests and tools use.
skip_reason() {
  case "$1" in
    build-essential|cmake|git) echo "the GPU machine has a compiler, CMake and git" ;;
    clang|libclang-rt-*) echo "fuzzing and sanitizer builds run here only" ;;
    openssh-server|openssh-client) echo "the two-node ssh tests skip without sshd" ;;
    python3-*) echo "the GPU machine has Python and PyTorch" ;;
    *) return 1 ;;
  esac
}
# Shared libraries that come from these packages are the GPU machine's own
# (glibc, and the gcc runtime that every C compiler installation carries).
EXCLUDE_OWNERS=" libc6 libstdc++6 libgcc-s1 libgomp1 libatomic1 "
# Programs the build, `quench launch` and the tests run, by package file name.
WANT_BINS=" protoc-c redis-server redis-cli curl pkg-config "

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/quench-bundle.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
ROOT=$STAGE/root
mkdir -p "$ROOT/bin" "$ROOT/libexec"

declare -A SEEN_PKG=() ROLE=() OWNER=() BLOB=() SRC_OF=() DEPS_OF=() VERSION_OF=()
PKGS=() COPIED=()

# One look at dpkg's database: source, version and Depends of every
# installed package.
while IFS=$'\t' read -r name src version status deps; do
  [ "$status" = "install ok installed" ] || continue
  SRC_OF[$name]=${src:-$name}
  VERSION_OF[$name]=$version
  DEPS_OF[$name]=$deps
done < <(dpkg-query -W -f='${Package}\t${source:Package}\t${Version}\t${Status}\t${Depends}\n')
installed() { [ -n "${SRC_OF[$1]:-}" ]; }

add_role() {  # package role
  case " ${ROLE[$1]:-} " in *" $2 "*) ;; *) ROLE[$1]="${ROLE[$1]:+${ROLE[$1]} }$2" ;; esac
}

# The package and, recursively, the installed packages of the same Debian
# source it depends on (libopenblas-dev -> libopenblas-pthread-dev,
# redis-server -> redis-tools, pkg-config -> pkgconf -> pkgconf-bin).
expand_pkg() {
  local p=$1 src dep alts
  [ -z "${SEEN_PKG[$p]:-}" ] || return 0
  SEEN_PKG[$p]=1
  PKGS+=("$p")
  src=${SRC_OF[$p]}
  IFS=',|' read -ra alts <<< "${DEPS_OF[$p]}"
  for dep in "${alts[@]}"; do
    dep=${dep%%(*}; dep=${dep%%:*}; dep=${dep//[[:space:]]/}
    if installed "$dep" && [ "${SRC_OF[$dep]}" = "$src" ]; then
      expand_pkg "$dep"
    fi
  done
}

# Where a system path goes in the bundle: Debian 12 has merged /usr, and its
# packages list files under /lib or /usr/lib alike.
map_path() {
  case "$1" in
    /lib/*|/lib64/*|/bin/*|/sbin/*) echo "/usr$1" ;;
    *) echo "$1" ;;
  esac
}

# The packages that own files, into OWNER[path]; the dpkg lists may spell a
# path /lib or /usr/lib, so each spelling is tried, one dpkg-query -S call
# (it reads every file list) per spelling for all paths at once.
owners_of() {
  local p q line o spelling
  local -A want=() asked=()
  for p; do [ -n "${OWNER[$p]:-}" ] || want[$p]=1; done
  for spelling in as-is no-usr usr real real-no-usr; do
    [ ${#want[@]} -gt 0 ] || return 0
    asked=()
    for p in "${!want[@]}"; do
      case $spelling in
        as-is) q=$p ;;
        no-usr) q=${p#/usr} ;;
        usr) q=/usr$p ;;
        real) q=$(realpath "$p") ;;
        real-no-usr) q=$(realpath "$p"); q=${q#/usr} ;;
      esac
      asked[$q]=$p
    done
    while IFS= read -r line; do
      [[ $line == *": /"* ]] || continue          # not "diversion by ..."
      o=${line%%: /*}; o=${o%%,*}; o=${o%%:*}
      q=/${line#*: /}
      p=${asked[$q]:-}
      if [ -n "$p" ] && [ -n "${want[$p]:-}" ]; then OWNER[$p]=$o; unset "want[$p]"; fi
    done < <(dpkg-query -S "${!asked[@]}" 2>/dev/null || true)
  done
  if [ ${#want[@]} -gt 0 ]; then
    echo "bundle-deps: no installed package owns ${!want[*]}" >&2
    exit 1
  fi
}

# usr/ of the bundle as seen from directory $1 of the bundle.
rel_to_usr() { realpath -m --relative-to="$1" "$ROOT/usr"; }

# pkg-config file: /usr becomes ${pcfiledir}/<path to the bundle's usr>.
copy_pc() {
  local src=$1 dst=$2 rel
  rel=$(rel_to_usr "$(dirname "$dst")")
  sed -E "s#(^|[=[:space:]\"]|-I|-L|-isystem)/usr(/|[[:space:]]|\$)#\1\${pcfiledir}/$rel\2#g" \
    "$src" > "$dst"
  if grep -qE '(^|[=[:space:]]|-I|-L|-isystem)/(usr|lib|lib64)(/|[[:space:]]|$)' "$dst"; then
    echo "bundle-deps: $src: an absolute path is left after rewriting:" >&2
    grep -nE '(^|[=[:space:]]|-I|-L|-isystem)/(usr|lib|lib64)(/|[[:space:]]|$)' "$dst" >&2
    exit 1
  fi
}

# CMake package file: /usr becomes ${CMAKE_CURRENT_LIST_DIR}/<path to usr>.
copy_cmake() {
  local src=$1 dst=$2 rel
  rel=$(rel_to_usr "$(dirname "$dst")")
  sed -E "s#([\"[:space:](;])/usr(/|\"|[[:space:]]|\\)|\$)#\1\${CMAKE_CURRENT_LIST_DIR}/$rel\2#g" \
    "$src" > "$dst"
}

# Any other file; identical contents are stored once (hard links), so
# OpenBLAS's three names for one 36 MB library cost 36 MB.
copy_blob() {
  local src=$1 dst=$2 sum
  sum=$(sha256sum < "$src" | cut -c1-64)
  if [ -n "${BLOB[$sum]:-}" ]; then
    ln "${BLOB[$sum]}" "$dst"
  else
    cp -p "$src" "$dst"
    BLOB[$sum]=$dst
    COPIED+=("$src")
  fi
}

# Copies system file $1 to its place in the bundle ($2 overrides the place),
# symlinks as relative symlinks to the bundled target. Links through
# /etc/alternatives (OpenBLAS) are followed; a .pc file is always a copy,
# since ${pcfiledir} is where the file is found.
put_file() {
  local src=$1 dst=${2:-$ROOT$(map_path "$1")} tgt
  { [ -e "$dst" ] || [ -L "$dst" ]; } && return 0
  mkdir -p "$(dirname "$dst")"
  if [ -L "$src" ]; then
    if [[ $src == *.pc ]]; then
      copy_pc "$(realpath "$src")" "$dst"
      return 0
    fi
    tgt=$(readlink "$src")
    if [[ $tgt == /* ]]; then
      tgt=$(realpath "$src")            # absolute: resolve all the way
    else
      tgt=$(realpath -ms "$(dirname "$src")/$tgt")
    fi
    if [ -n "${2:-}" ]; then            # a program: keep the chain beside it
      put_file "$tgt" "$(dirname "$dst")/$(basename "$tgt")"
      ln -sr "$(dirname "$dst")/$(basename "$tgt")" "$dst"
    else
      put_file "$tgt"
      ln -sr "$ROOT$(map_path "$tgt")" "$dst"
    fi
  elif [ -f "$src" ]; then
    case "$src" in
      *.pc) copy_pc "$src" "$dst" ;;
      *.cmake) copy_cmake "$src" "$dst" ;;
      *) copy_blob "$src" "$dst" ;;
    esac
  else
    echo "bundle-deps: $src is missing" >&2
    exit 1
  fi
}

# A program: the real file goes to libexec/, a wrapper to bin/.
put_prog() {
  local src=$1 name
  name=$(basename "$src")
  put_file "$src" "$ROOT/libexec/$name"
  cat > "$ROOT/bin/$name" <<EOF
#!/bin/sh
# quench dependency bundle: runs $name with the bundle's libraries (set for it
# alone, so that the rest of the shell keeps the machine's own).
root=\$(cd "\$(dirname "\$0")/.." && pwd -P)
LD_LIBRARY_PATH="@LIBDIRS@\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$root/libexec/$name" "\$@"
EOF
  chmod +x "$ROOT/bin/$name"
}

# 1. The packages and their files.
mapfile -t LISTED < <(scripts/install-deps.sh --list)
SKIPPED=()
for p in "${LISTED[@]}"; do
  if why=$(skip_reason "$p"); then SKIPPED+=("$p: $why"); continue; fi
  installed "$p" || {
    echo "bundle-deps: $p is not installed here; run scripts/install-deps.sh first" >&2
    exit 1
  }
  expand_pkg "$p"
done

# What the build looks up (cmake/QnDeps.cmake): pkg-config modules, CMake
# packages, and the libraries those modules link (-l).
MODULES=" $(grep -oE '^[[:space:]]*qn_require_pkg\([^)]*\)' cmake/QnDeps.cmake |
            awk '{print $2}' | tr '\n' ' ')"
CMAKE_PKGS=" $(grep -oE 'find_package\([A-Za-z0-9_]+ CONFIG' cmake/QnDeps.cmake |
               sed -E 's/find_package\(([^ ]+) CONFIG/\1/' | tr '\n' ' ')"
LINK_LIBS=" "
for m in $MODULES; do
  l=$($PKGCONF --libs-only-l "$m") || { echo "bundle-deps: pkg-config cannot find $m" >&2; exit 1; }
  for w in $l; do LINK_LIBS+="lib${w#-l}.so "; done
done

found_bins=" "
for p in "${PKGS[@]}"; do
  while IFS= read -r f; do
    [ -d "$f" ] && [ ! -L "$f" ] && continue
    name=$(basename "$f")
    took=1
    case "$f" in
      /usr/share/doc/*|/usr/share/man/*|/usr/share/info/*|/usr/share/lintian/*) took= ;;
      */include/*) put_file "$f" ;;
      */pkgconfig/*.pc)
        if [[ $MODULES == *" ${name%.pc} "* ]]; then put_file "$f"; else took=; fi ;;
      */cmake/*/*.cmake)
        d=$(basename "$(dirname "$f")")
        if [[ $CMAKE_PKGS == *" $d "* ]]; then
          put_file "$f"
          # the libraries an imported target names (IMPORTED_LOCATION)
          for lib in $(grep -oE '"/[^"]*\.so[.0-9]*"' "$f" | tr -d '"' | sort -u); do
            put_file "$lib"
          done
        else
          took=
        fi ;;
      */lib/*.so)
        if [[ $LINK_LIBS == *" $name "* ]]; then put_file "$f"; else took=; fi ;;
      /usr/bin/*|/bin/*|/usr/sbin/*)
        if [[ $WANT_BINS == *" $name "* ]]; then
          put_prog "$f"
          found_bins+="$name "
        else
          took=
        fi ;;
      *) took= ;;
    esac
    if [ -n "$took" ]; then add_role "$p" files; fi
  done < <(dpkg -L "$p")
done
for b in $WANT_BINS; do
  [[ $found_bins == *" $b "* ]] || { echo "bundle-deps: no package gave $b" >&2; exit 1; }
done
for m in $MODULES; do
  [ -n "$(find "$ROOT/usr" -name "$m.pc" -print -quit)" ] ||
    { echo "bundle-deps: no bundled package gave pkg-config module $m" >&2; exit 1; }
done
for c in $CMAKE_PKGS; do
  [ -n "$(find "$ROOT/usr" -path "*/cmake/$c/*" -print -quit)" ] ||
    { echo "bundle-deps: no bundled package gave CMake package $c" >&2; exit 1; }
done

# 2. pkg-config modules that the bundled ones require. Requires.private ones
# (zmq's libsodium, krb5-gssapi, ...) and what they require matter only to
# static linking, but pkg-config refuses a module whose requirements it
# cannot find: they become stubs without Cflags (no headers are bundled).
while :; do
  added=0
  while IFS= read -r pc; do
    mod=$(basename "$pc" .pc)
    for kind in requires requires-private; do
      while read -r req _; do
        [ -n "$req" ] || continue
        [ -z "$(find "$ROOT" -name "$req.pc" -print -quit)" ] || continue
        src=$($PKGCONF --path "$req") || { echo "bundle-deps: $mod needs $req" >&2; exit 1; }
        [ "$kind" = requires-private ] || grep -q '^# quench bundle: a stub' "$pc" || {
          echo "bundle-deps: $mod requires $req publicly; add its -dev package to install-deps.sh" >&2
          exit 1
        }
        dst=$ROOT$(map_path "$src")
        put_file "$src"
        sed -i -e '1i # quench bundle: a stub for Requires.private only (no headers, no static library)' \
               -e 's/^Cflags:.*/Cflags:/' "$dst"
        owners_of "$src"
        add_role "${OWNER[$src]}" pc-stub
        added=1
      done < <($PKGCONF --print-"$kind" "$mod" 2>/dev/null)
    done
  done < <(find "$ROOT/usr" -name '*.pc')
  [ $added -eq 1 ] || break
done

# 3. Every shared library the bundled libraries and programs load, except
# the GPU machine's own (EXCLUDE_OWNERS).
declare -A SCANNED=()
while :; do
  needed=()
  while IFS= read -r f; do
    [ -z "${SCANNED[$f]:-}" ] || continue
    SCANNED[$f]=1
    readelf -h "$f" >/dev/null 2>&1 || continue
    while read -r soname arrow path _; do
      [ "$arrow" = "=>" ] || continue
      if [ "$path" = "not" ]; then echo "bundle-deps: $f: $soname not found" >&2; exit 1; fi
      needed+=("$path")
    done < <(ldd "$f" 2>/dev/null)
  done < <(find "$ROOT/usr" "$ROOT/libexec" -type f \( -name '*.so*' -o -perm -u+x \))
  [ ${#needed[@]} -gt 0 ] || break
  owners_of "${needed[@]}"
  for path in "${needed[@]}"; do
    [[ $EXCLUDE_OWNERS == *" ${OWNER[$path]} "* ]] && continue
    put_file "$path"
  done
done

# 4. Debian alternatives (OpenBLAS): /usr/lib/<arch>/libopenblas.so.0 and
# pkgconfig/openblas.pc are links through /etc/alternatives, made by
# update-alternatives and in no package's file list.
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
for d in /usr/lib/$multiarch /usr/lib/$multiarch/pkgconfig /usr/include /usr/include/$multiarch; do
  [ -d "$d" ] || continue
  while IFS= read -r l; do
    final=$(realpath "$l")
    if [ -e "$ROOT$(map_path "$final")" ]; then put_file "$l"; fi
  done < <(find "$d" -maxdepth 1 -type l -lname '/etc/alternatives/*')
done

# ldconfig's job: each shared library is loaded by its SONAME, a link that
# the -dev packages' links skip (libpcre2-8.so -> libpcre2-8.so.0.11.2).
while IFS= read -r f; do
  soname=$(readelf -d "$f" 2>/dev/null | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
  if [ -n "$soname" ] && [ ! -e "$(dirname "$f")/$soname" ]; then
    ln -s "$(basename "$f")" "$(dirname "$f")/$soname"
  fi
done < <(find "$ROOT/usr" -type f -name '*.so*')

# 5. Each module's -l libraries must be in its -L directories: the linker
# finds them nowhere else in the bundle (Debian's hiredis.pc says /usr/lib,
# but the library is in /usr/lib/<arch>, where the system's linker looks
# anyway). A missing one gets a link there to the bundled library.
pc_libdir=$(find "$ROOT/usr" -name '*.pc' -printf '%h\n' | sort -u | tr '\n' ':')
for m in $MODULES; do
  Ldirs=$(PKG_CONFIG_LIBDIR=$pc_libdir $PKGCONF --libs-only-L "$m")
  first=
  for w in $Ldirs; do first=${first:-${w#-L}}; done
  for w in $(PKG_CONFIG_LIBDIR=$pc_libdir $PKGCONF --libs-only-l "$m"); do
    lib=lib${w#-l}.so
    case "$lib" in libm.so|libdl.so|libpthread.so|librt.so|libc.so) continue ;; esac
    ok=
    for d in $Ldirs; do if [ -e "${d#-L}/$lib" ]; then ok=1; fi; done
    [ -z "$ok" ] || continue
    if [ -n "$first" ] && [ -e "$ROOT/usr/lib/$multiarch/$lib" ]; then
      ln -sr "$ROOT/usr/lib/$multiarch/$lib" "$first/$lib"
    else
      echo "bundle-deps: pkg-config module $m links $w, which is not in the bundle" >&2
      exit 1
    fi
  done
done

# 6. Where things are: library and pkg-config directories, in the wrappers,
# in quench-deps.cmake (cmake/QnDeps.cmake) and in env.sh.
libdirs=$(cd "$ROOT" && find usr -name '*.so*' \( -type f -o -type l \) -printf '%h\n' | sort -u |
          awk -v m="usr/lib/$multiarch" '{print ($0==m ? 0 : 1) "\t" $0}' | sort | cut -f2)
pcdirs=$(cd "$ROOT" && for d in usr/lib/$multiarch/pkgconfig usr/lib/pkgconfig usr/share/pkgconfig; do
           if [ -d "$d" ]; then echo "$d"; fi; done)
join_root() {  # words, prefix -> "prefix/w1:prefix/w2"
  local w out=
  for w in $1; do out+="${out:+:}$2/$w"; done
  echo "$out"
}
ld_wrap=$(join_root "$libdirs" '$root')
sed -i "s#@LIBDIRS@#$ld_wrap#" "$ROOT"/bin/*
{
  echo "# quench-deps.cmake — made by scripts/bundle-deps.sh; read by cmake/QnDeps.cmake."
  echo "# Paths inside this bundle; the bundle may be moved as a whole."
  printf 'set(QN_DEPS_LIBDIRS'
  for d in $libdirs; do printf ' "${CMAKE_CURRENT_LIST_DIR}/%s"' "$d"; done; echo ')'
  printf 'set(QN_DEPS_PKG_CONFIG_DIRS'
  for d in $pcdirs; do printf ' "${CMAKE_CURRENT_LIST_DIR}/%s"' "$d"; done; echo ')'
  echo 'set(QN_DEPS_CMAKE_PREFIX "${CMAKE_CURRENT_LIST_DIR}/usr")'
  echo 'set(QN_DEPS_BINDIR "${CMAKE_CURRENT_LIST_DIR}/bin")'
} > "$ROOT/quench-deps.cmake"

# 7. The manifest: which package each copied file came from.
owners_of "${COPIED[@]}"
for f in "${COPIED[@]}"; do
  o=${OWNER[$f]}
  [[ " ${ROLE[$o]:-} " == *" files "* ]] || add_role "$o" lib
done
for p in "${PKGS[@]}"; do [ -n "${ROLE[$p]:-}" ] || add_role "$p" meta; done
{
  echo "# quench offline dependency bundle: Debian packages, versions and what was taken"
  echo "# (files: headers, pkg-config/CMake files, .so links, programs from its file list;"
  echo "# lib: what those link to or load, found through symlinks and ldd;"
  echo "# pc-stub: a pkg-config file needed only to resolve Requires.private;"
  echo "# meta: reached from the list but gave no files: a metapackage, or libraries"
  echo "# that nothing bundled loads)."
  echo "# made $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(. /etc/os-release && echo "$PRETTY_NAME"),"
  echo "# $(ldd --version | head -1 | sed 's/^ldd //'), from the installed packages"
  echo "# left to the GPU machine: libraries of${EXCLUDE_OWNERS% }"
  for s in "${SKIPPED[@]}"; do echo "# not bundled: $s"; done
  for p in "${!ROLE[@]}"; do
    printf '%s %s %s\n' "$p" "${VERSION_OF[$p]}" "${ROLE[$p]// /,}"
  done | sort
} > "$STAGE/MANIFEST"

# 8. The archive and env.sh.
tar -C "$ROOT" --owner=0 --group=0 --numeric-owner --sort=name -cf - . |
  xz -T2 "-${XZ_LEVEL:-6}" > "$STAGE/deps.tar.xz"
id=$(sha256sum < "$STAGE/deps.tar.xz" | cut -c1-16)
env_libdirs=$(join_root "$libdirs" '$root')
env_pcdirs=$(join_root "$pcdirs" '$root')
cat > "$STAGE/env.sh" <<EOF
# env.sh — quench's offline dependency bundle $id, made by
# scripts/bundle-deps.sh from the Debian packages in MANIFEST. From bash:
#   . .deps-bundle/env.sh && BUILD_DIR=build-gpu scripts/build.sh
# The first time, it unpacks deps.tar.xz outside the bundle, so that what is
# carried stays small: into \$QN_DEPS_ROOT, default
# \${TMPDIR:-/tmp}/quench-deps-$id. Then it sets
#   QN_DEPS_PREFIX    that directory: cmake/QnDeps.cmake takes every library,
#                     header, pkg-config file, Gloo and protoc-c from it only,
#                     and links quench with an RPATH into it
#   PATH              + its bin/: protoc-c, redis-server, redis-cli, curl,
#                     pkg-config, each a wrapper giving the program the
#                     bundle's libraries
#   PKG_CONFIG, PKG_CONFIG_PATH, CMAKE_PREFIX_PATH  the bundle's
#   QN_DEPS_LIBDIRS   its library directories, ':'-separated
# It leaves LD_LIBRARY_PATH alone: binaries built against the bundle find its
# libraries through their RPATH, and an LD_LIBRARY_PATH holding Debian 12's
# libssl, libz, libsystemd... would reach every other program of the shell
# (Python, git, ssh). For a program that needs it anyway:
#   LD_LIBRARY_PATH=\$QN_DEPS_LIBDIRS program
qn_deps_env() {
  local dir id=$id root tmp
  dir=\$(cd "\$(dirname "\${BASH_SOURCE[0]}")" && pwd -P) || return 1
  root=\${QN_DEPS_ROOT:-\${TMPDIR:-/tmp}/quench-deps-\$id}
  if [ "\$(cat "\$root/.bundle-id" 2>/dev/null)" != "\$id" ]; then
    if [ ! -f "\$dir/deps.tar.xz" ]; then
      echo "env.sh: \$dir/deps.tar.xz is missing" >&2; return 1
    fi
    mkdir -p "\$(dirname "\$root")" && tmp=\$(mktemp -d "\$root.XXXXXX") || return 1
    if command -v xz >/dev/null 2>&1; then
      xz -dc "\$dir/deps.tar.xz" | tar -C "\$tmp" -xf -
    else  # no xz program: Python's tarfile reads xz itself
      python3 -c 'import sys, tarfile
t = tarfile.open(sys.argv[1])
t.extractall(sys.argv[2], **({"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}))' \\
        "\$dir/deps.tar.xz" "\$tmp"
    fi
    if [ ! -f "\$tmp/quench-deps.cmake" ]; then
      rm -rf "\$tmp"; echo "env.sh: cannot unpack \$dir/deps.tar.xz" >&2; return 1
    fi
    echo "\$id" > "\$tmp/.bundle-id"
    rm -rf "\$root"
    mv -T "\$tmp" "\$root" 2>/dev/null || rm -rf "\$tmp"  # another shell was first
  fi
  export QN_DEPS_PREFIX=\$root
  export QN_DEPS_LIBDIRS="$env_libdirs"
  export PKG_CONFIG="\$root/bin/pkg-config"
  case ":\${PATH:-}:" in *":\$root/bin:"*) ;; *) export PATH="\$root/bin\${PATH:+:\$PATH}" ;; esac
  case ":\${PKG_CONFIG_PATH:-}:" in *":\$root/usr/"*) ;;
    *) export PKG_CONFIG_PATH="$env_pcdirs\${PKG_CONFIG_PATH:+:\$PKG_CONFIG_PATH}" ;; esac
  case ":\${CMAKE_PREFIX_PATH:-}:" in *":\$root/usr:"*) ;;
    *) export CMAKE_PREFIX_PATH="\$root/usr\${CMAKE_PREFIX_PATH:+:\$CMAKE_PREFIX_PATH}" ;; esac
}
if qn_deps_env; then unset -f qn_deps_env; else unset -f qn_deps_env; false; fi
EOF

# 9. Replace the old bundle.
mkdir -p "$OUT"
rm -f "$OUT/deps.tar.xz" "$OUT/env.sh" "$OUT/MANIFEST"
mv "$STAGE/deps.tar.xz" "$STAGE/env.sh" "$STAGE/MANIFEST" "$OUT/"
unpacked=$(du -sb "$ROOT" | cut -f1)
packed=$(stat -c %s "$OUT/deps.tar.xz")
echo "bundle-deps: $OUT: $(grep -vc '^#' "$OUT/MANIFEST") packages," \
     "$((unpacked / 1048576)) MiB unpacked, $((packed / 1048576)).$(( (packed % 1048576) * 10 / 1048576 )) MiB to carry (deps.tar.xz)"
