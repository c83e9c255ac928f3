#!/usr/bin/env bash
# The Debian packages: cpack builds cairn_*.deb and cairn-dev_*.deb from the build tree; their
# control fields are checked (cairn's Depends computed by dpkg-shlibdeps from the binaries,
# naming libtorch); both are unpacked into an empty root (dpkg -x, no container) and what they
# hold runs from there: `cairn --version` (version, commit, libtorch, build type), the man page
# (help2man, every command's help), the bash completion (completes commands and flags), the
# example configs, `cairn data prepare` and `cairn train` on a tiny config for a few steps, and
# a program built with find_package(cairn) against the unpacked cairn-dev.
# Usage: deb_package_test.sh CAIRN_BINARY
set -euo pipefail
cairn=$1
work=$(mktemp -d)
. "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT
require cpack dpkg-deb dpkg-shlibdeps cmake ninja c++ gzip bible
build=$(cd "$(dirname "$cairn")/.." && pwd)
root=$work/root

echo "-- cpack"
(cd "$build" && cpack -G DEB -B "$work/pkg") > "$work/cpack.log" 2>&1 || { cat "$work/cpack.log"; fail "cpack"; }
deb=$(ls "$work"/pkg/cairn_*_amd64.deb)
dev=$(ls "$work"/pkg/cairn-dev_*_amd64.deb)
[ "$(dpkg-deb -f "$deb" Package)" = cairn ] || fail "the runtime package is not named cairn"
[ "$(dpkg-deb -f "$dev" Package)" = cairn-dev ] || fail "the dev package is not named cairn-dev"
depends=$(dpkg-deb -f "$deb" Depends)
echo "cairn depends on: $depends"
for lib in libtorch libgrpc++ libyaml-cpp libstdc++6; do
  echo "$depends" | grep -q "$lib" || fail "cairn's Depends has no $lib"
done
dpkg-deb -f "$dev" Depends | grep -q "libtorch-dev" || fail "cairn-dev's Depends has no libtorch-dev"

echo "-- unpacked into an empty root"
dpkg -x "$deb" "$root"
dpkg -x "$dev" "$root"
for f in usr/bin/cairn usr/bin/cairn-torch usr/share/man/man1/cairn.1.gz \
         usr/share/bash-completion/completions/cairn usr/share/cairn/configs/gpt-kjv.yaml \
         usr/share/cairn/deploy/slurm/cairn.sbatch usr/include/cairn/parallel/plan.h \
         usr/lib/cmake/cairn/cairnConfig.cmake usr/lib/libcairn_train.a; do
  [ -e "$root/$f" ] || fail "not in the packages: $f"
done
[ -x "$root/usr/share/cairn/deploy/slurm/cairn.sbatch" ] || fail "the sbatch script lost its x bit"
"$root/usr/bin/cairn" --version > "$work/version"
cat "$work/version"
grep -qx "cairn [0-9][0-9.]*" "$work/version" || fail "no version line"
grep -qx "commit [0-9a-f]\{12\}\(-dirty\)\?" "$work/version" || fail "no commit line"
grep -qx "libtorch [0-9][0-9.]*" "$work/version" || fail "no libtorch line"
grep -qx "build [A-Za-z]*" "$work/version" || fail "no build type line"

zcat "$root/usr/share/man/man1/cairn.1.gz" > "$work/cairn.1"
grep -q '^\.TH CAIRN "1"' "$work/cairn.1" || fail "the man page has no .TH CAIRN 1"
for c in train run master dashboard plan ckpt completion; do
  grep -q "^\.SS \"cairn $c\"" "$work/cairn.1" || fail "the man page has no section for cairn $c"
done

completes() {  # completes WORD...: what the packaged completion offers for the last word
  bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _cairn
           printf "%s\n" "${COMPREPLY[@]}"' _ "$root/usr/share/bash-completion/completions/cairn" "$@"
}
completes cairn tra | grep -qx train || fail "completion: cairn tra"
completes cairn run --nproc | grep -qx -- --nproc-per-node || fail "completion: cairn run --nproc"
completes cairn plan profile-hw --ra | grep -qx -- --ranks || fail "completion: cairn plan profile-hw --ra"

echo "-- the packaged cairn trains"
bible -f "Genesis 1:1-3:24" > "$work/kjv.txt"
"$root/usr/bin/cairn" data prepare --input "$work/kjv.txt" --out "$work/data" --val-fraction 0.05 \
  > "$work/prepare.log" 2>&1 || { cat "$work/prepare.log"; fail "cairn data prepare"; }
cat > "$work/tiny.yaml" <<YAML
model: {arch: gpt2, n_layer: 2, n_head: 2, n_embd: 32, vocab_size: 50304, block_size: 32}
train: {micro_batch_size: 2, global_batch_size: 2, seq_len: 32, max_steps: 5, lr: 1.0e-3,
        warmup_steps: 1, eval_interval: 0, eval_batches: 1}
data: {path: $work/data}
YAML
"$root/usr/bin/cairn" train "$work/tiny.yaml" --run-dir "$work/run" --no-progress \
  > "$work/train.log" 2>&1 || { tail -n 20 "$work/train.log"; fail "cairn train from the package"; }
[ "$(wc -l < "$work/run/metrics.jsonl")" = 5 ] || fail "the packaged cairn did not train 5 steps"

echo "-- find_package(cairn) against the unpacked cairn-dev"
build_consumer "$root/usr"
echo PASS
