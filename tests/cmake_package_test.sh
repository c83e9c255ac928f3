#!/usr/bin/env bash
# The installed tree is a CMake package: `cmake --install` into a temporary prefix, then a
# separate project does find_package(cairn), links cairn::cairn_parallel, builds and runs a
# program that lays out a plan; the installed binaries run from the prefix.
set -euo pipefail
cairn=$1
work=$(mktemp -d)
. "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT
require cmake ninja c++
build=$(cd "$(dirname "$cairn")/.." && pwd)
prefix=$work/prefix

cmake --install "$build" --prefix "$prefix" > "$work/install.log" || { cat "$work/install.log"; fail "cmake --install"; }
for f in bin/cairn bin/cairn-torch include/cairn/parallel/plan.h lib/cmake/cairn/cairnConfig.cmake \
         lib/cmake/cairn/cairnTargets.cmake lib/libcairn_parallel.a; do
  [ -e "$prefix/$f" ] || fail "not installed: $f"
done
"$prefix/bin/cairn" --version | grep -qx "cairn [0-9.]*" || fail "the installed cairn does not run"

build_consumer "$prefix"
echo ok
