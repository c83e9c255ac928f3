#!/usr/bin/env bash
# Runs every benchmark against its peer, one at a time (`make bench`), with the flags that
# reproduce every figure README.md quotes; the comment above each command names the figure.
# Every bench prints the machine, both sides' settings (threads, allocator, precision, GEMM
# peak measured inside each side's processes) and the ratio.
# Usage: bench/run_all.sh BUILD_DIR DATA_DIR
#   RECOVERY_RUNS=N   runs of bench/recovery.py (default 5, as the README's ranges)
set -euo pipefail
build=${1:-build}
data=${2:-data/kjv}
cd "$(dirname "$0")/.."
py=/usr/bin/python3  # Debian's python3-torch: the PyTorch of every peer
cairn="$build/bin/cairn"
runs=${RECOVERY_RUNS:-5}

echo "== training throughput (bench/train_throughput.py)"
# (a shorter sequence: cairn vs the peer and the allocator setting at batch 8 x 128, not quoted)
"$py" bench/train_throughput.py --cairn "$cairn" --data "$data" --seq-len 128 --batch 8
# README (cairn train and the allocator): "Steps ... go from 1,004-1,011 to 891-893 ms with it;
# peak RSS from 1,125 to 1,310 MB": the line "cairn's allocator setting".
# README (Benchmarks): "cairn 2,293-2,299 tokens/s ... against PyTorch's 1,815-1,816 ... with
# cairn's settings ...: 1.26-1.27x ...; 1.77-1.79x against PyTorch on its defaults": the default
# model (4 layers, d=256, batch 8x256), lines "cairn", "peer, cairn's settings", the ratios.
"$py" bench/train_throughput.py --cairn "$cairn" --data "$data"

echo "== data parallel (bench/ddp.py)"
# README (Data parallelism and ZeRO): the table's bytes/parameter/rank at world 2 (16,
# 4+4+8/d, 4+4/d+8/d, 16/d); "cairn 2,182 and 2,238 tokens/s against PyTorch's 1,334 and 1,317
# ...: 1.64x and 1.70x": the lines "cairn DDP", "pytorch DDP, cairn's allocator" and the ratios.
"$py" bench/ddp.py --cairn "$cairn" --data "$data" --world 2

echo "== parallel layouts (bench/layouts.py)"
# README (Tensor parallelism): each layout's step time, tokens/s, peak RSS and bytes per
# parameter against its formula at world 2; "PyTorch DDP 1,870 and 1,377 tokens/s ..., cairn
# dp2 2,741 and 2,930 (1.47x and 2.13x)" and the other layouts' ratios: the "vs peer" column.
"$py" bench/layouts.py --cairn "$cairn" --data "$data" --world4

echo "== context parallelism (bench/layouts.py --long-only)"
# README (Context parallelism): the table of step time, tokens/s, peak RSS per rank, blocked
# seconds and MB sent per step for one process, cp2/cp4 ring (with and without overlap),
# ulysses and 2d at 16,384 tokens; "4.87 and 4.69 s per step for the peer against 2.28 and
# 2.36 s for cairn (2.13x and 1.98x)": the 4,096-token lines "pytorch (peer)" and "cairn"
# (`--peer-only` runs just those). Needs a validation split of at least one sequence.
if [ ! -f "${data}-long/val.bin" ]; then
  "$cairn" data prepare --input "$(dirname "$data")/kjv.txt" --out "${data}-long" --val-fraction 0.05
fi
"$py" bench/layouts.py --cairn "$cairn" --data "${data}-long" --long-only

echo "== planner search time (bench/planner_search.sh)"
# README (Automatic parallelism): the search-time table.
bash bench/planner_search.sh "$cairn"

echo "== planner predictions against measurements (bench/planner.py)"
# README (Automatic parallelism): the predicted-against-measured table and figures (median time
# error, memory error range, the planner's choice against the best measured layout, in turns)
# at world 2 and 4.
"$py" bench/planner.py --cairn "$cairn" --data "$data" --world4

echo "== pipeline parallelism (bench/pipeline.py)"
# README (Pipeline parallelism): the table of step time, measured bubble (mean and worst stage)
# against the schedule's formula, activation MB per stage and peak RSS for pp2 and pp4 with
# gpipe, 1f1b, interleaved and zb-h1, against cairn's one process; "PyTorch's one process 6.76
# and 6.65 s per step against cairn's 5.61 and 5.50 s (1.21x)": the lines "pytorch, one
# process" and "cairn, one process" (`--pp 2 --schedules 1f1b --tp ''` runs just those and pp2).
"$py" bench/pipeline.py --cairn "$cairn" --data "$data"

echo "== flash checkpoints (bench/ckpt.py)"
# README (Flash checkpoints, How it works): "pause 2.2 ms median of 123 saves, worst 2.4-2.7
# ms; the background copy 95-104 ms ... against 85-86 ms for one memcpy; a save every step adds
# 61-67 ms ..., 0.71-0.79x a memcpy; a persist ... +2.2% to +3.4%; restore from memory ...
# 0.29-0.30x ...; from disk 354-384 ms": the lines "training pause", "worst pause", "raw
# memcpy", "background copy", "training step", "overhead", "... and a persist every 3",
# "restore" and "ratio".
"$py" bench/ckpt.py --cairn "$cairn" --data "$data"

echo "== recovery and goodput (bench/recovery.py, $runs runs)"
# README (Flash checkpoints, How it works): "from kill -9 of a worker to the first step the
# restarted workers finish, a median over 5 kills of 0.87 s against 2.02 s for PyTorch DDP
# ... (2.32x)", the per-kill phases ("detecting the exit 0.03 s, ...") and the step time with
# and without checkpoints: the "recovery median", phase and "without kills" lines of each run.
for i in $(seq 1 $((runs - 1))); do
  echo "-- run $i of $runs"
  "$py" bench/recovery.py --cairn "$cairn" --data "$data" --kills 5 --duration 0
done
echo "-- run $runs of $runs, with the goodput run"
# ... and "A 10-minute run with a worker killed every minute (9 kills, 1,135 steps ...):
# goodput 97.0% as logged and 96.6% against a run without checkpoints ..., 0.59 s of downtime
# per kill": the goodput lines of this last run.
"$py" bench/recovery.py --cairn "$cairn" --data "$data" --kills 5 --duration 600 --kill-every 60
echo "-- on a loaded machine: two busy-looping processes beside the workers"
# README: "On a loaded machine (--hogs 2 ...) cairn's median was 1.36 s against 2.93 s for the
# peer": the recovery median line.
"$py" bench/recovery.py --cairn "$cairn" --data "$data" --kills 5 --duration 0 --hogs 2 --baseline-steps 0

echo "== shard service (shard_bench)"
# README (Data sharding): "the master serves 13,400-14,600 shard requests/s from 4-16 clients
# (7,700/s from one, 126 us p50 latency per fetch), 84,000-141,000 shards/s when a request takes
# 16": table 1; table 2 is the step-quota path training takes.
"$build/bench/shard_bench" 3

echo "== the master at scale (control_plane)"
# README (The master at scale): the table of first round, re-form after a loss, heartbeats/s
# at 1 and 4 Hz, shard calls/s, the master's CPU seconds, peak MB and SIGTERM time for 256 to
# 8,192 simulated nodes: its three tables.
"$build/bench/control_plane" --cairn "$cairn" --heartbeat-s 5

echo "== tokenizer (tokenizer_bench)"
# Not quoted in the README: cairn's encoder vs Encoder.js, best of 3 each.
kjv="$(dirname "$data")/kjv.txt"
if [ -f "$kjv" ]; then "$build/bench/tokenizer_bench" "$kjv"; else "$build/bench/tokenizer_bench"; fi

echo "== start-up of the commands without libtorch (bench/startup.py)"
# README (Development): "32-35 ms against 0.71-0.79 s" (front against cairn-torch for help,
# train --help, train --describe, ckpt inspect) and torchrun's --help.
"$py" bench/startup.py --cairn "$cairn" --data "$data"

echo "== fused kernels (model_bench)"
# Not quoted in the README: fused loss and attention kernels vs plain torch compositions.
"$build/bench/model_bench"
# ckpt_bench is driven by bench/ckpt.py.
