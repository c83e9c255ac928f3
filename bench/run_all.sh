#!/usr/bin/env bash
# Runs every benchmark against its peer. Usage: bench/run_all.sh BUILD_DIR DATA_DIR
set -euo pipefail
build=${1:-build}
data=${2:-data/kjv}
cd "$(dirname "$0")/.."
echo "== training throughput (bench/train_throughput.py)"
/usr/bin/python3 bench/train_throughput.py --cairn "$build/bin/cairn" --data "$data"
echo "== data parallel (bench/ddp.py)"
/usr/bin/python3 bench/ddp.py --cairn "$build/bin/cairn" --data "$data"
echo "== flash checkpoints (bench/ckpt.py)"
/usr/bin/python3 bench/ckpt.py --cairn "$build/bin/cairn" --data "$data"
echo "== recovery and goodput (bench/recovery.py)"
/usr/bin/python3 bench/recovery.py --cairn "$build/bin/cairn" --data "$data"

for b in "$build"/bench/*_bench; do
  [ -x "$b" ] || continue
  [ "$(basename "$b")" = ckpt_bench ] && continue  # driven by bench/ckpt.py
  echo "== $(basename "$b")"
  "$b"
done
