#!/usr/bin/env bash
# Runs every fuzz target built in BUILD_DIR (the *_fuzz of fuzz/CMakeLists.txt), one at a time,
# each over a fresh copy of its seed corpus (BUILD_DIR/corpus-run/<name>; fuzz/corpus itself is
# never written to).
#
#   fuzz/run.sh BUILD_DIR SECONDS   every target for SECONDS (tests/fuzz_test.sh: 20)
#   fuzz/run.sh BUILD_DIR full      every target for 1,000,000 executions or 10 minutes, whichever
#                                   comes first (make fuzz)
#
# Prints, per target, the executions, the seconds and the result. A crash, a leak, a sanitizer
# report, a failed FUZZ_CHECK, an input slower than 10 s or one over 2.5 GB fails the target:
# the report is printed with the reproducer libFuzzer saved (rerun it with
# BUILD_DIR/<name>_fuzz <reproducer>), the full log is in BUILD_DIR/logs/<name>.log, and the
# other targets still run. Exit status: 0 when every target passed.
set -euo pipefail

if [ $# -ne 2 ] || ! [[ $2 == full || $2 =~ ^[0-9]+$ ]]; then
  echo "usage: fuzz/run.sh BUILD_DIR SECONDS|full" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
if [ "$2" = full ]; then
  limits=(-runs=1000000 -max_total_time=600)
else
  limits=(-max_total_time="$2")
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

shopt -s nullglob
targets=("$build"/*_fuzz)
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz: no *_fuzz targets in $build (build them: ninja -C $build)" >&2
  exit 1
fi

failed=()
printf '%-16s %12s %9s  %s\n' target executions seconds result
for bin in "${targets[@]}"; do
  name=$(basename "$bin" _fuzz)
  corpus=$build/corpus-run/$name
  artifacts=$build/artifacts/$name
  log=$build/logs/$name.log
  rm -rf "$corpus" "$artifacts"
  mkdir -p "$corpus" "$artifacts" "$build/logs"
  seeds=("$here/corpus/$name"/*)
  [ ${#seeds[@]} -eq 0 ] || cp "${seeds[@]}" "$corpus/"

  # The target's dictionary (fuzz/dict/<name>.dict), with json.dict when its first line asks.
  dict=()
  if [ -f "$here/dict/$name.dict" ]; then
    cat "$here/dict/$name.dict" >"$build/logs/$name.dict"
    if head -1 "$here/dict/$name.dict" | grep -q '^# + json.dict'; then
      cat "$here/dict/json.dict" >>"$build/logs/$name.dict"
    fi
    dict=(-dict="$build/logs/$name.dict")
  fi

  start=$(date +%s.%N)
  rc=0
  "$bin" "${limits[@]}" "${dict[@]}" -timeout=10 -rss_limit_mb=2560 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1 || rc=$?
  seconds=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  # A run that died prints no final statistics: its last status line has the count.
  [ -n "$execs" ] || execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')

  reproducer=$(sed -n 's/.*Test unit written to //p' "$log" | tail -1)
  if [ "$rc" -eq 0 ] && [ -z "$reproducer" ]; then
    printf '%-16s %12s %9s  %s\n' "$name" "${execs:-?}" "$seconds" ok
    continue
  fi
  failed+=("$name")
  what=$(grep -m1 -o -E 'FUZZ_CHECK\(.*|ERROR: [A-Za-z]+Sanitizer: [a-z-]+|runtime error: .*|ERROR: libFuzzer: [a-z -]+' "$log" || true)
  printf '%-16s %12s %9s  %s\n' "$name" "${execs:-?}" "$seconds" "FAILED: ${what:-exit status $rc}"
  echo "  reproducer: ${reproducer:-none saved}"
  echo "  log: $log"
  # The report: from the first sanitizer or check line, without libFuzzer's own frames.
  awk '/FUZZ_CHECK|==ERROR|runtime error|ERROR: libFuzzer/ { on = 1 }
       on && !/in fuzzer::/ { print "  | " substr($0, 1, 200); if (++n == 40) exit }' "$log"
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: every target passed"
