#!/usr/bin/env bash
# Clang's thread-safety analysis over every source that takes a cairn mutex: each field a
# mutex guards (CAIRN_GUARDED_BY) is touched only with it held, each function that needs it
# held (CAIRN_REQUIRES) is called so. The sources are compiled with clang++ -fsyntax-only and
# the flags of their build (compile_commands.json), thread-safety warnings as errors. A mutex
# outside cairn::core::Mutex (std::mutex in a non-test source; tests' helper headers,
# *_testing_impl.h, are test sources) is refused: the analysis cannot
# see it. A seeded violation must be caught, or the check itself is broken.
# usage: thread_safety_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
command -v clang++ >/dev/null || { echo "FAIL: clang++ is not installed (scripts/install-deps.sh installs clang)"; exit 1; }
[ -f "$build/compile_commands.json" ] || { echo "FAIL: $build/compile_commands.json is missing"; exit 1; }
flags=(-fsyntax-only -Wno-everything -Wthread-safety -Werror=thread-safety)

# 1. The check catches a violation.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/seeded.cpp" <<'CPP'
#include "cairn/core/mutex.h"
struct Counter {
  cairn::core::Mutex mu;
  int n CAIRN_GUARDED_BY(mu) = 0;
  int unguarded_read() { return n; }
};
int main() { Counter c; return c.unguarded_read(); }
CPP
if clang++ -std=c++17 -I"$src/include" "${flags[@]}" "$tmp/seeded.cpp" 2>"$tmp/seeded.err"; then
  echo "FAIL: a read of a guarded field without its mutex was not reported"; exit 1
fi
grep -q "requires holding mutex 'mu'" "$tmp/seeded.err" || { echo "FAIL: unexpected diagnostics:"; cat "$tmp/seeded.err"; exit 1; }
echo "ok: a seeded violation is reported"

# 2. No mutex the analysis cannot see.
cd "$src"
raw=$(grep -rlnE --include='*.cpp' --include='*.h' \
        'std::(mutex|shared_mutex|recursive_mutex|timed_mutex)[[:space:]]+[A-Za-z_]+[[:space:]]*(;|\{|=)' \
        src include tools | grep -v -e '_test\.cpp$' -e '_testing_impl\.h$' \
        -e '^include/cairn/core/mutex\.h$' || true)
if [ -n "$raw" ]; then echo "FAIL: std::mutex outside tests (use cairn::core::Mutex):"; echo "$raw"; exit 1; fi
echo "ok: every mutex outside tests is a core::Mutex"

# 3. Every source that locks one passes the analysis.
mapfile -t files < <(grep -rlE --include='*.cpp' 'MutexLock|CAIRN_REQUIRES|CAIRN_GUARDED_BY|\.lock\(\)' src tools \
                     | grep -v '_test\.cpp$' | sort)
[ "${#files[@]}" -gt 0 ] || { echo "FAIL: no source locks a mutex: the search is broken"; exit 1; }
/usr/bin/python3 - "$build/compile_commands.json" "$src" "${files[@]}" > "$tmp/commands" <<'PY'
import json, os, shlex, sys
db, src, files = sys.argv[1], sys.argv[2], sys.argv[3:]
by_file = {}
for e in json.load(open(db)):
    by_file.setdefault(os.path.realpath(e["file"]), e)
for f in files:
    e = by_file.get(os.path.realpath(os.path.join(src, f)))
    if e is None:
        sys.exit(f"{f} is not in the compilation database")
    args = e.get("arguments") or shlex.split(e["command"])
    out, skip = ["clang++"], False
    for a in args[1:]:
        if skip: skip = False; continue
        if a in ("-o", "-c"): skip = a == "-o"; continue
        if a == "-include": skip = True; continue          # the gcc precompiled header
        if a.startswith("-Winvalid-pch") or a.endswith(".cpp") or a.endswith(".cc"): continue
        out.append(a)
    print(e["directory"] + "\t" + f + "\t" + shlex.join(out))
PY
failed=0
while IFS=$'\t' read -r dir file cmd; do
  start=$(date +%s)
  if (cd "$dir" && eval "$cmd ${flags[*]} $src/$file") >"$tmp/out" 2>&1; then
    echo "ok: $file ($(( $(date +%s) - start )) s)"
  else
    echo "FAIL: $file"; grep -E "error|warning" "$tmp/out" | head -20; failed=1
  fi
done < "$tmp/commands"
[ "$failed" = 0 ] && echo "PASS: ${#files[@]} sources checked"
exit $failed
