#!/usr/bin/env bash
# The fuzz targets (fuzz/): configures and builds them with clang in FUZZ_BUILD_DIR, then runs
# every target for SECONDS (20) over its seed corpus through fuzz/run.sh. Fails on any crash,
# leak, sanitizer report, failed FUZZ_CHECK, slow input or memory blow-up, naming the target and
# the reproducer; fails too (never skips) when clang or its fuzzer runtime is missing.
#   tests/fuzz_test.sh CAIRN SOURCE_DIR FUZZ_BUILD_DIR [SECONDS]
# (CAIRN, the binary every integration test is given, is not used.)
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 CAIRN SOURCE_DIR FUZZ_BUILD_DIR [SECONDS]" >&2; exit 2; }
src=$2
out=$3
seconds=${4:-20}
fail() { echo "FAIL: $*" >&2; exit 1; }
install="scripts/install-deps.sh installs clang and its fuzzer runtime (libclang-rt-14-dev)"

command -v clang++ >/dev/null || fail "clang++ is not installed; $install"
rt=$(clang++ -print-file-name="libclang_rt.fuzzer-$(uname -m).a")
[ -f "$rt" ] || fail "clang's libFuzzer runtime ($rt) is not installed; $install"

mkdir -p "$out"
cmake -S "$src/fuzz" -B "$out" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang \
  >"$out/configure.log" 2>&1 || { cat "$out/configure.log" >&2; fail "cannot configure $src/fuzz"; }
ninja -C "$out" >"$out/build.log" 2>&1 || { tail -50 "$out/build.log" >&2; fail "cannot build the fuzz targets"; }
"$src/fuzz/run.sh" "$out" "$seconds" || fail "a fuzz target failed (above: the target, its report and reproducer)"
echo "ok: every fuzz target ran ${seconds} s without a finding"
