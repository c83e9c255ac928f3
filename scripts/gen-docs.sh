#!/usr/bin/env bash
# Makes, from a built cairn, its man page (help2man over `cairn --help`, with every command's
# --help in a COMMANDS section) as OUT/cairn.1.gz and its bash completion as OUT/cairn.bash.
# Run by the build (tools/cairn/CMakeLists.txt); the package installs both.
# Usage: gen-docs.sh CAIRN_BINARY OUT_DIR
set -euo pipefail
cairn=$1
out=$2
mkdir -p "$out"
"$cairn" completion bash > "$out/cairn.bash.new"
commands=$(sed -n 's/^    ":sub") echo "\(.*\)" ;;$/\1/p' "$out/cairn.bash.new")
[ -n "$commands" ] || { echo "gen-docs: no commands in the completion script" >&2; exit 1; }
{
  echo "[COMMANDS]"
  for c in $commands; do
    echo ".SS \"cairn $c\""
    echo ".nf"
    # roff: a backslash is \e; a line starting with . or ' would be a request.
    "$cairn" "$c" --help | sed -e 's/\\/\\e/g' -e "s/^\([.']\)/\\\\\&\1/"
    echo ".fi"
  done
  echo "[SEE ALSO]"
  echo "The README and docs/ of the source; /usr/share/cairn/configs and /usr/share/cairn/deploy."
} > "$out/commands.h2m"
help2man --no-info --no-discard-stderr --section 1 \
  --name "elastic, fault-tolerant, automatically parallelized training of transformer language models" \
  --include "$out/commands.h2m" --output "$out/cairn.1" "$cairn"
gzip -9nf "$out/cairn.1"
mv "$out/cairn.bash.new" "$out/cairn.bash"
