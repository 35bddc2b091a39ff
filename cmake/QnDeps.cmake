# QnDeps.cmake — every third-party library quench uses, found through
# pkg-config or CMake's own find modules. A missing one stops the configure
# step with the Debian package that provides it; scripts/install-deps.sh
# installs them all. Each becomes an imported target Qn::<name>.
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
find_package(Gloo CONFIG QUIET)
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

find_program(QN_PROTOC_C protoc-c)
if(NOT QN_PROTOC_C)
  message(FATAL_ERROR
    "quench needs protoc-c to generate its wire protocol (Debian package "
    "'protobuf-c-compiler'). Install it with scripts/install-deps.sh.")
endif()
