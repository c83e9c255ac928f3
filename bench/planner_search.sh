#!/usr/bin/env bash
# How long `cairn plan` searches: a 32-block (d=4096, 32 heads, the LLaMA-2 7B shape as a GPT)
# and a 96-block (configs/gpt-96l.yaml, the GPT-3 175B shape) model on 8, 64, 1,024 and 4,096
# described A100 devices (8 per node), the search single-threaded. Prints each search's time,
# layouts costed and the winner.
# The peer, Galvatron's search, is not installable here (no PyPI); its times measured on a
# machine like this one are in the project's references: 264 s at 8 GPUs, 1,086 s at 128
# (llama2-7b profiles), about 40 minutes estimated at 1,024.
# Usage: bench/planner_search.sh [CAIRN_BINARY]
set -euo pipefail
cairn=${1:-build/bin/cairn}
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed 's/"nodes": 128/"nodes": 512/; s/128 nodes/512 nodes/' \
  "$here/configs/clusters/a100-128x8.json" > "$tmp/a100-512x8.json"
echo "| model | devices | search s | layouts costed | winner | predicted step s |"
echo "|---|---|---|---|---|---|"
for model in 32 96; do
  sets=()
  [ "$model" = 32 ] && sets=(--set model.n_layer=32 --set model.n_embd=4096 --set model.n_head=32
                            --set train.global_batch_size=512 --set train.seq_len=2048)
  for world in 8 64 1024 4096; do
    out=$("$cairn" plan "$here/configs/gpt-96l.yaml" --cluster "$tmp/a100-512x8.json" \
          --world "$world" --top 1 "${sets[@]}" 2>&1) || { echo "| $model blocks | $world | (no layout fits: ${out##*error: }) | | | |"; continue; }
    secs=$(sed -n 's/^searched \([0-9]*\) layouts in \([0-9.]*\) s.*/\2/p' <<< "$out")
    n=$(sed -n 's/^searched \([0-9]*\) layouts.*/\1/p' <<< "$out")
    row=$(grep '^| 1 |' <<< "$out")
    layout=$(cut -d'|' -f3 <<< "$row" | sed 's/, blocks per stage \[[^]]*\]//; s/^ *//; s/ *$//')
    step=$(cut -d'|' -f5 <<< "$row" | tr -d ' ')
    echo "| $model blocks | $world | $secs | $n | $layout | $step |"
  done
done
