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

cp -r "$(dirname "$0")/package_consumer" "$work/consumer"
cmake -S "$work/consumer" -B "$work/consumer/build" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release > "$work/configure.log" 2>&1 || { cat "$work/configure.log"; fail "find_package(cairn)"; }
ninja -C "$work/consumer/build" > "$work/build.log" 2>&1 || { cat "$work/build.log"; fail "building against the package"; }
out=$("$work/consumer/build/consumer")
[ "$out" = "pp=1 dp=2 cp=1 tp=1, ZeRO-1, 4 blocks: valid" ] || fail "consumer printed: $out"
echo ok
