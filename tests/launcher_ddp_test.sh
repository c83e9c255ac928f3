#!/usr/bin/env bash
# An unmodified PyTorch DDP script (gloo, env:// initialization) runs under `cairn run` exactly
# as under torchrun, on one node and across two static nodes.
# Usage: launcher_ddp_test.sh CAIRN_BINARY
set -euo pipefail
cairn=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
source "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT
python=/usr/bin/python3  # Debian's python3-torch belongs to the system interpreter
"$python" -c "import torch" || fail "$python cannot import torch (install python3-torch)"

for n in 2 3; do
  echo "-- $n ranks"
  rc=0
  timeout 120 "$cairn" run --nproc-per-node $n --run-dir "$work/run$n" -- \
    "$python" "$here/launcher_ddp_script.py" > "$work/out$n.txt" 2> "$work/err$n.txt" || rc=$?
  [ $rc -eq 0 ] || { cat "$work/out$n.txt" "$work/err$n.txt"; fail "DDP run with $n ranks exited $rc"; }
  for ((r = 0; r < n; r++)); do
    want="[rank $r] rank $r of $n: all_reduce sum $((n * (n + 1) / 2)) OK"
    grep -qxF "$want" "$work/out$n.txt" || { cat "$work/out$n.txt"; fail "missing '$want'"; }
    grep -q "step 4 loss" "$work/run$n/logs/worker-$r.log" || fail "rank $r log lacks the steps"
  done
done
echo "-- two agents as two static nodes on this machine (world of 4)"
port=$(free_port)
pids=()
for node in 0 1; do
  timeout 120 "$cairn" run --nnodes 2 --node-rank $node --rdzv-endpoint 127.0.0.1:$port \
    --nproc-per-node 2 --run-dir "$work/node$node" -- "$python" "$here/launcher_ddp_script.py" \
    > "$work/node$node.txt" 2> "$work/node$node.err" &
  pids+=($!)
done
for node in 0 1; do
  rc=0; wait "${pids[$node]}" || rc=$?
  [ $rc -eq 0 ] || { cat "$work/node$node.txt" "$work/node$node.err"; fail "node $node exited $rc"; }
done
for r in 0 1 2 3; do
  node=$((r / 2))
  want="[rank $r] rank $r of 4: all_reduce sum 10 OK"
  grep -qxF "$want" "$work/node$node.txt" || { cat "$work/node$node.txt"; fail "missing '$want'"; }
  [ -f "$work/node$node/logs/worker-$r.log" ] || fail "node $node should log rank $r"
done
echo PASS
