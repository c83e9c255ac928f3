#!/usr/bin/env bash
# Every sample exactly once: one epoch of a small KJV slice trained under `cairn run` with
# `data.log_sample_ids: true`, through kill -9 of workers (the agent restarts them from the
# in-memory checkpoints), a scale-down (world 2 -> 1, resumed from storage) and a scale-up
# (1 -> 2). samples.jsonl's last line per step is the committed trajectory: every step 1..E is
# there and no sample id appears twice (E = the steps of one epoch).
#  deterministic (default): the committed steps are also those of an uninterrupted run;
#  dynamic: the ranks take micro-batch shards from the master's shard service (embedded in the
#           agent, restarted with every phase: the trainers give it back its state from their
#           checkpoints).
# Usage: exactly_once_test.sh CAIRN [deterministic|dynamic]
set -euo pipefail
cairn=$1
mode=${2:-deterministic}
work=$(mktemp -d)
agent=
cleanup() {
  [ -z "$agent" ] || kill_tree "$agent"
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
source "$(dirname "$0")/lib.sh"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
prepare_kjv 60000
tokens=$(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['train']['tokens'])" "$work/data/meta.json")
samples=$(( (tokens - 1) / 32 ))
steps=$(( samples / 8 ))
echo "   $samples samples of 32 tokens: one epoch is $steps steps of 8 ($mode sharding)"
flash_config $steps "{memory_interval: 1, persist_interval: 4, keep_last: 2}"
run_dir=$work/run
launch=()
if [ "$mode" = dynamic ]; then
  export CAIRN_JOB_TOKEN=exactly-once-test
  launch=(--rdzv-backend cairn --rdzv-endpoint 127.0.0.1:$((20000 + $$ % 20000)) --embed-master
          --node-host 127.0.0.1 --rdzv-wait 0)
fi

# phase NPROC STOP_AFTER KILLS: one cairn run over the shared run directory, KILLS kill -9 of a
# random worker once it has trained a few more steps.
phase() {
  local nproc=$1 stop=$2 kills=$3 resume=${4:-}
  timeout -k 5 240 "$cairn" run "${launch[@]}" --nproc-per-node "$nproc" --max-restarts 10 \
    --run-dir "$run_dir" -- "$cairn" train "$work/tiny.yaml" --no-progress $resume --stop-after "$stop" \
    --set data.log_sample_ids=true --set data.sharding=$mode >> "$work/run.out" 2>&1 &
  agent=$!
  for k in $(seq 1 "$kills"); do
    local rows=0
    [ -f "$run_dir/metrics.jsonl" ] && rows=$(wc -l < "$run_dir/metrics.jsonl")
    wait_rows "$run_dir" $((rows + 2 + RANDOM % 3)) "$agent"
    local victims
    victims=$(worker_pids "$run_dir")
    [ -n "$victims" ] || break
    local v
    v=$(echo "$victims" | shuf -n 1)
    kill -9 "$v" 2>/dev/null || true
    echo "   kill -9 of worker pid $v at metrics row $(wc -l < "$run_dir/metrics.jsonl")"
    sleep 1
  done
  local rc=0
  wait "$agent" || rc=$?
  agent=
  [ $rc = 0 ] || { tail -n 30 "$work/run.out"; fail "cairn run (world $nproc) exited $rc"; }
}

third=$((steps / 3))
echo "-- world 2 to step $third, 3 workers killed on the way"
phase 2 "$third" 3 --resume  # restarts resume (from memory); the first start finds no checkpoint
echo "-- scale down: world 1 to step $((2 * third))"
phase 1 $((2 * third)) 0 --resume
echo "-- scale up: world 2 to the end of the epoch (step $steps), 2 workers killed"
phase 2 "$steps" 2 --resume
restarts=$(grep -c '"event":"restart"' "$run_dir/events.jsonl" || true)
[ "${restarts:-0}" -ge 3 ] || fail "only ${restarts:-0} restarts: the kills did not happen"

ref=
if [ "$mode" = deterministic ]; then
  echo "-- uninterrupted reference run"
  timeout -k 5 240 "$cairn" train "$work/tiny.yaml" --no-progress --run-dir "$work/ref" \
    --set data.log_sample_ids=true > "$work/ref.out" 2>&1 || { tail -n 20 "$work/ref.out"; fail "the reference run failed"; }
  ref=$work/ref/samples.jsonl
else
  grep '"micro_batches"' "$run_dir/metrics.jsonl" > /dev/null || fail "no micro_batches in the metrics"
  grep "dataset .* restored" "$work/run.out" > /dev/null || fail "no shard service was restored"
fi

/usr/bin/python3 - "$run_dir/samples.jsonl" "$ref" "$steps" "$samples" <<'PY'
import json, sys
path, ref_path, steps, samples = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lines = [json.loads(l) for l in open(path)]
committed = {}
for l in lines:
    committed[l["step"]] = l["sample_ids"]  # a step trained again after a rollback: the last counts
missing = [s for s in range(1, steps + 1) if s not in committed]
assert not missing, f"steps without sample ids: {missing[:10]}"
assert max(committed) == steps, f"steps beyond the epoch: {max(committed)}"
ids = [i for s in range(1, steps + 1) for i in committed[s]]
assert all(len(committed[s]) == 8 for s in committed), "a step without 8 samples"
dup = len(ids) - len(set(ids))
assert dup == 0, f"{dup} sample ids appear more than once in the committed trajectory"
assert all(0 <= i < samples for i in ids), "a sample id outside the dataset"
if ref_path:
    ref = {}
    for l in open(ref_path):
        j = json.loads(l)
        ref[j["step"]] = j["sample_ids"]
    assert ref == committed, "the committed trajectory differs from the uninterrupted run's"
print(f"   {len(lines)} lines for {steps} steps ({len(lines) - steps} retrained after rollbacks); "
      f"{len(ids)} of {samples} samples, each exactly once ({samples - len(ids)} left for the next step)")
PY
echo "PASS"
