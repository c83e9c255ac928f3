#!/usr/bin/env bash
# Every C++ source under version control is formatted by clang-format with the repository's
# .clang-format; a file that is not fails the test with clang-format's own diagnostics.
# Fix with: git ls-files '*.cpp' '*.h' '*.cc' | xargs clang-format -i
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "FAIL: $*" >&2; exit 1; }
command -v clang-format > /dev/null || fail "clang-format is not installed (scripts/install-deps.sh installs it)"
command -v git > /dev/null || fail "git is not installed"
mapfile -t files < <(git ls-files '*.cpp' '*.h' '*.cc' '*.hpp')
[ "${#files[@]}" -gt 100 ] || fail "found only ${#files[@]} C++ files: not run from the source tree?"
if ! clang-format --dry-run -Werror "${files[@]}"; then
  fail "the files above are not formatted (clang-format $(clang-format --version | awk '{print $NF}'))"
fi
echo "ok: ${#files[@]} files formatted"
