#!/usr/bin/env bash
# The `cairn` users type is a front without libtorch: help, --version, data and master run in
# it; the commands that need torch are exec'd in cairn-torch beside it, with the same arguments.
set -euo pipefail
cairn=$1
work=$(mktemp -d)
. "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT
require ldd cp grep
bin=$(dirname "$cairn")
[ -x "$bin/cairn-torch" ] || fail "$bin/cairn-torch is missing"

# The front loads no torch library; cairn-torch does. (Whole outputs, not pipes into grep -q:
# its early exit would fail ldd with SIGPIPE under pipefail.)
front_libs=$(ldd "$cairn")
torch_libs=$(ldd "$bin/cairn-torch")
if grep -E 'libtorch|libc10' <<< "$front_libs"; then fail "the front links libtorch"; fi
grep -q libtorch_cpu <<< "$torch_libs" || fail "cairn-torch does not link libtorch"

# The front's help lists every command, the torch ones included.
help=$("$cairn" --help)
for c in data train generate run master ckpt node-check plan; do
  grep -qE "^  $c( |$)" <<< "$help" || fail "cairn --help does not list '$c': $help"
done
grep -qx "cairn [0-9.]*" <<< "$("$cairn" --version)" || fail "cairn --version"

# A torch command is answered by cairn-torch.
train_help=$("$cairn" train --help)
grep -q -- "--describe" <<< "$train_help" || fail "cairn train --help did not reach cairn-torch"
train_help=$("$cairn" --log-level warn train --help)
grep -q -- "--resume-or-start" <<< "$train_help" \
  || fail "cairn --log-level warn train --help did not reach cairn-torch"
"$cairn" generate --ckpt "$work/none" --prompt x 2> "$work/err" && fail "generate without a checkpoint succeeded"
grep -q "$work/none" "$work/err" || fail "generate without a checkpoint: $(cat "$work/err")"

# A bad flag of a torch command is a usage error (2) from cairn-torch; an unknown command is
# the front's own usage error.
set +e
"$cairn" train --no-such-flag > /dev/null 2>&1; code=$?
"$cairn" bogus 2> "$work/bogus"; bogus=$?
set -e
[ "$code" = 2 ] || fail "cairn train --no-such-flag exited $code, not 2"
[ "$bogus" = 2 ] && grep -q "unknown command 'bogus'" "$work/bogus" || fail "cairn bogus: $(cat "$work/bogus")"

# A front without its cairn-torch says what is missing instead of crashing.
mkdir "$work/lonely"
cp "$cairn" "$work/lonely/cairn"
set +e
"$work/lonely/cairn" train --help > /dev/null 2> "$work/lonely.err"; code=$?
set -e
[ "$code" = 1 ] || fail "a front without cairn-torch exited $code"
grep -q "cannot run $work/lonely/cairn-torch" "$work/lonely.err" || fail "message: $(cat "$work/lonely.err")"
# ... while its torch-free commands still work.
"$work/lonely/cairn" data --help > /dev/null || fail "cairn data --help without cairn-torch"

echo ok
