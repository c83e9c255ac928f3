#!/usr/bin/env bash
# `cairn data prepare` + `decode` round trip on a slice of the King James Bible, and the errors
# for a missing input, an empty input, a bad --val-fraction, bad ids and damaged token files.
# usage: data_prepare_cli_test.sh <cairn binary>
set -euo pipefail
cairn=$1
here=$(cd "$(dirname "$0")" && pwd)
tokdir=${CAIRN_TOKENIZER_DIR:-$here/../.cache/gpt2}
export CAIRN_TOKENIZER_DIR=$tokdir
# make test installs every prerequisite, so a missing one is a failure, not a skip.
missing() { echo "FAIL: missing prerequisite: $*" >&2; exit 1; }
command -v bible >/dev/null || missing "bible (Debian package bible-kjv) is not installed"
[ -f "$tokdir/encoder.json" ] || missing "no $tokdir/encoder.json; run scripts/install-deps.sh"

tmp=$(mktemp -d)
work=$tmp
source "$here/lib.sh"
trap test_cleanup EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# expect_error <exit code> <text the error must contain> <command...>
expect_error() {
  local want=$1 pattern=$2 rc=0
  shift 2
  "$@" > "$tmp/cmd.out" 2> "$tmp/cmd.err" || rc=$?
  if [ "$rc" -ne "$want" ]; then
    fail "'$*' exited $rc, expected $want; stderr: $(cat "$tmp/cmd.err")"
  elif ! grep -q -- "$pattern" "$tmp/cmd.err"; then
    fail "'$*' error lacks \"$pattern\": $(cat "$tmp/cmd.err")"
  else
    echo "ok   error ($rc): $(head -c 160 "$tmp/cmd.err")"
  fi
}

# flip_byte <file> <offset>: changes one byte in place.
flip_byte() {
  local old
  old=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  printf "\\$(printf %03o $(((old + 1) % 256)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

bible -f "Genesis 1:1-Revelation 22:21" > "$tmp/kjv.txt"
head -c 1000000 "$tmp/kjv.txt" | sed '$d' > "$tmp/slice.txt"

# Round trip: train.bin + val.bin decode to the input, and equal a one-shot encode.
"$cairn" data prepare --input "$tmp/slice.txt" --out "$tmp/out" --val-fraction 0.01 2> "$tmp/log"
cat "$tmp/log"
grep -q "tokens" "$tmp/log" || fail "no summary line"
for f in train.bin val.bin meta.json; do [ -s "$tmp/out/$f" ] || fail "missing $f"; done
{ "$cairn" data decode --input "$tmp/out/train.bin"
  "$cairn" data decode --input "$tmp/out/val.bin"; } > "$tmp/decoded.txt"
cmp -s "$tmp/slice.txt" "$tmp/decoded.txt" && echo "ok   decode(train) + decode(val) == input" ||
  fail "decoded text differs from the input"
"$cairn" data encode < "$tmp/slice.txt" > "$tmp/ids.txt"
n=$(wc -w < "$tmp/ids.txt")
grep -q "\"tokens\": $n," "$tmp/out/meta.json" && echo "ok   meta.json counts $n tokens" ||
  fail "meta.json does not count $n tokens: $(cat "$tmp/out/meta.json")"
grep -q '"vocab_size": 50257' "$tmp/out/meta.json" || fail "meta.json lacks the vocab size"
"$cairn" data decode < "$tmp/ids.txt" | cmp -s - "$tmp/slice.txt" && echo "ok   encode | decode" ||
  fail "encode | decode differs from the input"

# Same input from standard input, one thread: byte-identical files.
"$cairn" data prepare --input - --out "$tmp/out2" --val-fraction 0.01 --threads 1 \
  < "$tmp/slice.txt" 2> /dev/null
cmp -s "$tmp/out/train.bin" "$tmp/out2/train.bin" && cmp -s "$tmp/out/val.bin" "$tmp/out2/val.bin" &&
  echo "ok   stdin and one thread give identical token files" || fail "token files differ"

# Errors.
expect_error 2 "$tmp/nope.txt" "$cairn" data prepare --input "$tmp/nope.txt" --out "$tmp/o3"
expect_error 2 "val-fraction" "$cairn" data prepare --input "$tmp/slice.txt" --out "$tmp/o3" --val-fraction 0
expect_error 2 "val-fraction" "$cairn" data prepare --input "$tmp/slice.txt" --out "$tmp/o3" --val-fraction 0.7
: > "$tmp/empty.txt"
expect_error 2 "empty" "$cairn" data prepare --input "$tmp/empty.txt" --out "$tmp/o3"
[ ! -e "$tmp/o3" ] || fail "a failed prepare left $tmp/o3 behind"
expect_error 2 "outside the vocabulary" sh -c "echo 15496 50257 | '$cairn' data decode"
expect_error 2 "not a token id" sh -c "echo 15496 hello | '$cairn' data decode"
expect_error 2 "no such token file" "$cairn" data decode --input "$tmp/none.bin"
expect_error 2 "encoder.json" "$cairn" data encode --tokenizer "$tmp/no-tokenizer" < /dev/null

cp "$tmp/out/val.bin" "$tmp/flipped.bin"
flip_byte "$tmp/flipped.bin" 100
expect_error 2 "checksum mismatch" "$cairn" data decode --input "$tmp/flipped.bin"
head -c 90 "$tmp/out/val.bin" > "$tmp/truncated.bin"
expect_error 2 "truncated" "$cairn" data decode --input "$tmp/truncated.bin"
cp "$tmp/out/val.bin" "$tmp/magic.bin"
flip_byte "$tmp/magic.bin" 0
expect_error 2 "bad magic" "$cairn" data decode --input "$tmp/magic.bin"
cp "$tmp/out/val.bin" "$tmp/version.bin"
flip_byte "$tmp/version.bin" 8
expect_error 2 "version 2" "$cairn" data decode --input "$tmp/version.bin"

# --help carries a copy-pasteable example.
for sub in encode decode prepare; do
  "$cairn" data $sub --help | grep "cairn data $sub" > /dev/null || fail "data $sub --help has no example"
done

[ "$failures" -eq 0 ] && echo "all data CLI checks passed" || echo "$failures check(s) failed"
exit $((failures > 0))
