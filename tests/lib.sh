# Shared pieces of the shell integration tests. Source it after setting `work` (a temporary
# directory) and `cairn` (the binary).

fail() { echo "FAIL: $*" >&2; exit 1; }

# prepare_kjv BYTES: the first BYTES of the KJV text tokenized into $work/data (5% validation).
prepare_kjv() {
  bible -f "Genesis 1:1-Revelation 22:21" > "$work/full.txt"
  head -c "$1" "$work/full.txt" > "$work/kjv.txt"
  "$cairn" data prepare --input "$work/kjv.txt" --out "$work/data" --val-fraction 0.05 2>/dev/null
}
