# QnDeps.cmake — every third-party library quench uses, found through
# pkg-config or CMake's own find modules. A missing one stops the configure
# step with the Debian package that provides it; scripts/install-deps.sh
# installs them all. Each becomes an imported target Qn::<name>.

# An offline dependency bundle (scripts/bundle-deps.sh; sourcing its env.sh
# sets QN_DEPS_PREFIX, or pass -DQN_DEPS_PREFIX=<unpacked bundle>): every
# library, header, pkg-config file, Gloo and protoc-c then come from the
# bundle and nowhere else, and binaries get an RPATH into it. DT_RPATH, not
# RUNPATH: it also serves the bundled libraries' own dependencies (libcurl's
# libnghttp2), so that nothing needs LD_LIBRARY_PATH.
set(QN_DEPS_PREFIX "$ENV{QN_DEPS_PREFIX}" CACHE PATH
    "Unpacked dependency bundle from scripts/bundle-deps.sh (empty: the system's packages)")
set(QN_DEPS_FIND_OPTS)
set(QN_DEPS_PROGRAM_OPTS)
if(QN_DEPS_PREFIX)
  if(NOT EXISTS "${QN_DEPS_PREFIX}/quench-deps.cmake")
    message(FATAL_ERROR "QN_DEPS_PREFIX=${QN_DEPS_PREFIX} is not an unpacked dependency bundle "
      "(no quench-deps.cmake); source the env.sh of a bundle made by scripts/bundle-deps.sh.")
  endif()
  include("${QN_DEPS_PREFIX}/quench-deps.cmake")
  list(PREPEND CMAKE_PREFIX_PATH "${QN_DEPS_CMAKE_PREFIX}")
  set(PKG_CONFIG_EXECUTABLE "${QN_DEPS_BINDIR}/pkg-config" CACHE FILEPATH "pkg-config" FORCE)
  set(PKG_CONFIG_USE_CMAKE_PREFIX_PATH OFF)
  list(JOIN QN_DEPS_PKG_CONFIG_DIRS ":" _qn_pc_dirs)
  set(ENV{PKG_CONFIG_LIBDIR} "${_qn_pc_dirs}")
  set(ENV{PKG_CONFIG_PATH} "")
  list(APPEND CMAKE_BUILD_RPATH ${QN_DEPS_LIBDIRS})
  list(APPEND CMAKE_INSTALL_RPATH ${QN_DEPS_LIBDIRS})
  add_link_options("$<HOST_LINK:LINKER:--disable-new-dtags>")
  set(QN_DEPS_FIND_OPTS PATHS "${QN_DEPS_CMAKE_PREFIX}" NO_DEFAULT_PATH)
  set(QN_DEPS_PROGRAM_OPTS PATHS "${QN_DEPS_BINDIR}" NO_DEFAULT_PATH)
  message(STATUS "quench dependencies: the bundle in ${QN_DEPS_PREFIX}")
endif()

find_package(PkgConfig REQUIRED)

function(qn_require_pkg target module debian_pkg)
  pkg_check_modules(QN_PKG_${target} QUIET IMPORTED_TARGET GLOBAL ${module})
  if(NOT QN_PKG_${target}_FOUND)
    message(FATAL_ERROR
      "quench needs ${module} (Debian package '${debian_pkg}'), which pkg-config "
      "could not find. Install it with scripts/install-deps.sh "
      "(or: apt-get install ${debian_pkg}).")
  endif()
  add_library(Qn::${target} ALIAS PkgConfig::QN_PKG_${target})
endfunction()

qn_require_pkg(cjson libcjson libcjson-dev)
qn_require_pkg(protobuf_c libprotobuf-c libprotobuf-c-dev)
qn_require_pkg(openblas openblas libopenblas-dev)
qn_require_pkg(zmq libzmq libzmq3-dev)
qn_require_pkg(uv libuv libuv1-dev)
qn_require_pkg(hiredis hiredis libhiredis-dev)
qn_require_pkg(pcre2 libpcre2-8 libpcre2-dev)
qn_require_pkg(utf8proc libutf8proc libutf8proc-dev)
qn_require_pkg(curl libcurl libcurl4-openssl-dev)
qn_require_pkg(zlib zlib zlib1g-dev)
if(QN_BUILD_TESTS)
  qn_require_pkg(cmocka cmocka libcmocka-dev)
endif()

# Gloo (CPU collectives) ships a CMake package config, no pkg-config file.
find_package(Gloo CONFIG QUIET ${QN_DEPS_FIND_OPTS})
if(NOT TARGET gloo)
  message(FATAL_ERROR
    "quench needs Gloo for CPU collectives (Debian package 'libgloo-dev'). "
    "Install it with scripts/install-deps.sh (or: apt-get install libgloo-dev).")
endif()

find_package(OpenMP)
if(NOT OpenMP_C_FOUND)
  message(FATAL_ERROR "quench needs OpenMP for C (part of gcc; Debian package 'libgomp1').")
endif()
find_package(Threads REQUIRED)

find_program(QN_PROTOC_C protoc-c ${QN_DEPS_PROGRAM_OPTS})
if(NOT QN_PROTOC_C)
  message(FATAL_ERROR
    "quench needs protoc-c to generate its wire protocol (Debian package "
    "'protobuf-c-compiler'). Install it with scripts/install-deps.sh.")
endif()
