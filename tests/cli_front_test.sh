#!/usr/bin/env bash
# The `cairn` users type is a front without libtorch: help, --version, data, master, the flags
# of train and ckpt, `train --describe` and `ckpt inspect` run in it; the commands that need
# torch are exec'd in cairn-torch beside it, with the same arguments.
set -euo pipefail
cairn=$1
work=$(mktemp -d)
. "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT
require ldd cp grep bible
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

# A torch command's help comes from the front (train, ckpt) or from cairn-torch (generate).
train_help=$("$cairn" train --help)
grep -q -- "--describe" <<< "$train_help" || fail "cairn train --help: $train_help"
train_help=$("$cairn" --log-level warn train --help)
grep -q -- "--resume-or-start" <<< "$train_help" || fail "cairn --log-level warn train --help"
grep -q -- "--max-tokens" <<< "$("$cairn" generate --help)" || fail "cairn generate --help"
"$cairn" generate --ckpt "$work/none" --prompt x 2> "$work/err" && fail "generate without a checkpoint succeeded"
grep -q "$work/none" "$work/err" || fail "generate without a checkpoint: $(cat "$work/err")"

# A small checkpoint (trained by cairn-torch through the front) to inspect.
prepare_kjv 20000
flash_config 2 "{persist_interval: 2}"
"$cairn" train "$work/tiny.yaml" --run-dir "$work/run" --no-progress > /dev/null 2>&1 \
  || fail "cairn train through the front"
[ -f "$work/run/ckpt/step-00000002/manifest.json" ] || fail "no checkpoint of step 2"
# A bad flag of a torch command is a usage error (2) from cairn-torch; an unknown command is
# the front's own usage error.
set +e
"$cairn" train --no-such-flag > /dev/null 2>&1; code=$?
"$cairn" bogus 2> "$work/bogus"; bogus=$?
set -e
[ "$code" = 2 ] || fail "cairn train --no-such-flag exited $code, not 2"
[ "$bogus" = 2 ] && grep -q "unknown command 'bogus'" "$work/bogus" || fail "cairn bogus: $(cat "$work/bogus")"

# A front without its cairn-torch: what needs torch says what is missing instead of crashing,
# while help, --describe and ckpt inspect (its checksums too) still work: they load no torch.
mkdir "$work/lonely"
cp "$cairn" "$work/lonely/cairn"
lonely=$work/lonely/cairn
for cmd in "train $work/tiny.yaml" "generate --help" "ckpt inspect --digest $work/run/ckpt"; do
  set +e
  $lonely $cmd > /dev/null 2> "$work/lonely.err"; code=$?
  set -e
  [ "$code" = 1 ] || fail "a front without cairn-torch: '$cmd' exited $code"
  grep -q "cannot run $work/lonely/cairn-torch" "$work/lonely.err" \
    || fail "'$cmd' without cairn-torch: $(cat "$work/lonely.err")"
done
"$lonely" data --help > /dev/null || fail "cairn data --help without cairn-torch"
grep -q -- "--resume-or-start" <<< "$("$lonely" train --help)" || fail "train --help without cairn-torch"
keys=$("$lonely" train --describe) || fail "train --describe without cairn-torch"
for k in model.n_layer train.lr ckpt.persist_duty parallel.pp_schedule; do
  grep -q "$k" <<< "$keys" || fail "train --describe lacks $k: $keys"
done
summary=$("$lonely" ckpt inspect --verify "$work/run/ckpt") || fail "ckpt inspect without cairn-torch"
grep -qE "^step +2$" <<< "$summary" || fail "ckpt inspect: $summary"
grep -qE "^  model.wte.weight +float32 +\[50304, 64\]" <<< "$summary" || fail "ckpt inspect has no tensor table: $summary"
# The digest (cairn-torch) of the same checkpoint.
"$cairn" ckpt inspect --digest "$work/run/ckpt" | grep -qE "^digest +xxh3-128:[0-9a-f]{32}$" \
  || fail "ckpt inspect --digest"
# A flipped byte is found by the front's --verify, with the loader's words and exit 2.
data=$work/run/ckpt/step-00000002/rank-00000.bin
printf '\x7f' | dd of="$data" bs=1 seek=100 conv=notrunc status=none
set +e
"$lonely" ckpt inspect --verify "$work/run/ckpt/step-00000002" > /dev/null 2> "$work/verify.err"; code=$?
set -e
[ "$code" = 2 ] || fail "inspect --verify of a damaged checkpoint exited $code"
grep -q "checksum mismatch in tensor" "$work/verify.err" || fail "inspect --verify: $(cat "$work/verify.err")"
"$lonely" ckpt inspect "$work/run/ckpt/step-00000002" > /dev/null \
  || fail "inspect without --verify reads no data, so it still describes the damaged step"

echo ok
