#!/usr/bin/env bash
# Compares `cairn data encode` id for id with the reference GPT-2 encoder (Encoder.js from npm
# gpt-3-encoder, run by node) on 200 KB of the King James Bible, on tokenizer_edge_cases.txt,
# on invalid UTF-8 and on an empty input.
# usage: tokenizer_matches_reference.sh <cairn binary>
set -euo pipefail
cairn=$1
here=$(cd "$(dirname "$0")" && pwd)
tokdir=${CAIRN_TOKENIZER_DIR:-$here/../.cache/gpt2}
# make test installs every prerequisite, so a missing one is a failure, not a skip.
missing() { echo "FAIL: missing prerequisite: $*" >&2; exit 1; }
command -v node >/dev/null || missing "node is not installed"
command -v bible >/dev/null || missing "bible (Debian package bible-kjv) is not installed"
[ -f "$tokdir/Encoder.js" ] || missing "no $tokdir/Encoder.js; run scripts/install-deps.sh"

tmp=$(mktemp -d)
work=$tmp
source "$here/lib.sh"
trap test_cleanup EXIT

bible -f "Genesis 1:1-Revelation 22:21" > "$tmp/kjv.txt"
head -c 200000 "$tmp/kjv.txt" | sed '$d' > "$tmp/kjv-200k.txt"  # cut at a line boundary
cp "$here/tokenizer_edge_cases.txt" "$tmp/edge-cases.txt"
: > "$tmp/empty.txt"
printf '\xef\xbb\xbfBOM, then bad bytes: \xff \xc3( \xed\xa0\x80 \xc0\xaf x\xe2\x82 \x80\x80 end\xf0\x9f\x98' \
  > "$tmp/invalid-utf8.txt"
printf 'CRLF\r\nlines\r\n\r\n  \r\n' > "$tmp/crlf.txt"

fail=0
for name in kjv-200k edge-cases empty invalid-utf8 crlf; do
  f=$tmp/$name.txt
  node "$here/tokenizer_reference.js" "$tokdir" "$f" > "$tmp/$name.ref"
  "$cairn" data encode --tokenizer "$tokdir" < "$f" > "$tmp/$name.cairn"
  if cmp -s "$tmp/$name.ref" "$tmp/$name.cairn"; then
    echo "ok   $name: $(wc -c < "$f") bytes, $(wc -w < "$tmp/$name.ref") ids identical"
  else
    fail=1
    echo "FAIL $name: ids differ from the reference"
    tr ' ' '\n' < "$tmp/$name.ref" > "$tmp/a"
    tr ' ' '\n' < "$tmp/$name.cairn" > "$tmp/b"
    diff "$tmp/a" "$tmp/b" | head -20 || true
  fi
done
# The comparison must be able to fail: a different text gives different ids.
printf 'In the beginning' > "$tmp/x.txt"
printf 'In the beginning.' | "$cairn" data encode --tokenizer "$tokdir" > "$tmp/x.cairn"
node "$here/tokenizer_reference.js" "$tokdir" "$tmp/x.txt" > "$tmp/x.ref"
if cmp -s "$tmp/x.ref" "$tmp/x.cairn"; then
  echo "FAIL: different texts compared equal"
  fail=1
fi
exit $fail
