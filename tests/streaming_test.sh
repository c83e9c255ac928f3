#!/usr/bin/env bash
# A streaming source: `cairn data stream` appends the KJV text's tokens to train.stream a piece
# at a time while two workers train on it (data.sharding: dynamic, data.stream: true); one
# worker is killed with -9 on the way. Asserted: training began before the writer closed the
# stream, it stopped by itself when the closed stream was used up (max_steps is far away), and
# every sample of the stream was trained exactly once in the committed trajectory.
# Usage: streaming_test.sh CAIRN
set -euo pipefail
cairn=$1
work=$(mktemp -d)
agent=
source "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 CAIRN_JOB_TOKEN=streaming-test
require shuf
prepare_kjv 60000  # val.bin for validation; the stream is the same text again
mkdir -p "$work/feed"
cp "$work/data/val.bin" "$work/feed/"
cat > "$work/job.yaml" <<YAML
model: {arch: gpt2, n_layer: 2, n_head: 2, n_embd: 64, vocab_size: 50304, block_size: 32}
train: {micro_batch_size: 2, global_batch_size: 8, seq_len: 32, max_steps: 100000, lr: 3.0e-3,
        warmup_steps: 5, eval_interval: 0, eval_batches: 2}
ckpt: {memory_interval: 1, persist_interval: 10}
data: {path: $work/feed, sharding: dynamic, stream: true, log_sample_ids: true}
YAML
echo "-- the writer appends 6 pieces of 10 KB, one every 1.5 s"
( for i in 1 2 3 4 5 6; do head -c $((i * 10000)) "$work/kjv.txt" | tail -c 10000; sleep 1.5; done ) |
  "$cairn" data stream --out "$work/feed" 2> "$work/writer.err" &
writer=$!
timeout -k 5 240 "$cairn" run --rdzv-backend cairn --rdzv-endpoint "127.0.0.1:$(free_port)" \
  --embed-master --node-host 127.0.0.1 --rdzv-wait 0 --nproc-per-node 2 --max-restarts 3 \
  --run-dir "$work/run" -- "$cairn" train "$work/job.yaml" --no-progress --resume-or-start > "$work/run.out" 2>&1 &
agent=$!
wait_rows "$work/run" 8 || { tail -n 30 "$work/run.out"; fail "no 8 steps to kill a worker at"; }
victim=$(worker_pids "$work/run" | shuf -n 1)
[ -n "$victim" ] || fail "no worker to kill"
kill -9 "$victim"
echo "   kill -9 of worker pid $victim at metrics row $(wc -l < "$work/run/metrics.jsonl")"
rc=0; wait "$agent" || rc=$?
agent=
[ $rc = 0 ] || { tail -n 30 "$work/run.out"; fail "cairn run exited $rc"; }
wait "$writer" || fail "the writer failed: $(cat "$work/writer.err")"
[ -f "$work/feed/train.stream.done" ] || fail "the writer did not close the stream"
grep "the data is used up (every sample of the closed stream trained)" "$work/run.out" > /dev/null ||
  fail "training did not stop at the end of the stream"
grep '"event":"restart"' "$work/run/events.jsonl" > /dev/null || fail "the kill caused no restart"
/usr/bin/python3 - "$work" <<'PY'
import json, os, sys
work = sys.argv[1]
done = json.load(open(f"{work}/feed/train.stream.done"))
samples = (done["tokens"] - 1) // 32
committed = {}
lines = 0
for l in open(f"{work}/run/samples.jsonl"):
    j = json.loads(l)
    committed[j["step"]] = j["sample_ids"]
    lines += 1
steps = sorted(committed)
assert steps == list(range(1, len(steps) + 1)), "a step is missing"
ids = [i for s in steps for i in committed[s]]
assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} samples trained twice"
assert sorted(ids) == list(range(samples)), f"trained {len(ids)} of the stream's {samples} samples"
first_row = json.loads(open(f"{work}/run/metrics.jsonl").readline())["time"]
closed_at = os.path.getmtime(f"{work}/feed/train.stream.done")
assert first_row < closed_at, "training began only after the stream was closed"
print(f"   {samples} samples of the stream in {len(steps)} steps, each exactly once "
      f"({lines - len(steps)} step(s) retrained after the kill); the first step {closed_at - first_row:.1f} s "
      f"before the writer closed the stream")
PY
echo "PASS"
