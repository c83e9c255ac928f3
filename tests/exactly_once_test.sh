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
source "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
require shuf
prepare_kjv 60000
tokens=$(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['train']['tokens'])" "$work/data/meta.json")
samples=$(( (tokens - 1) / 32 ))
steps=$(( samples / 8 ))
echo "   $samples samples of 32 tokens: one epoch is $steps steps of 8 ($mode sharding)"
flash_config $steps "{memory_interval: 1, persist_interval: 4, keep_last: 2}"
run_dir=$work/run
[ "$mode" != dynamic ] || export CAIRN_JOB_TOKEN=exactly-once-test

# phase NPROC STOP_AFTER KILLS: one cairn run over the shared run directory, KILLS kill -9 of a
# random worker once it has trained a few more steps. Every kill must happen, and must be
# recorded: one worker_failed event with SIGKILL for each victim's pid.
events=$run_dir/events.jsonl
sigkills() {  # worker_failed events of a SIGKILL so far
  local n=
  [ -f "$events" ] && n=$(grep '"event":"worker_failed"' "$events" | grep -c '"signal":"SIGKILL"' || true)
  echo "${n:-0}"
}
phase() {
  local nproc=$1 stop=$2 kills=$3 resume=${4:-}
  local before
  before=$(sigkills)
  local launch=()  # dynamic: the agent embeds the master, on a port the kernel gives this phase
  [ "$mode" != dynamic ] || launch=(--rdzv-backend cairn --rdzv-endpoint "127.0.0.1:$(free_port)"
                                    --embed-master --node-host 127.0.0.1 --rdzv-wait 0)
  timeout -k 5 240 "$cairn" run "${launch[@]}" --nproc-per-node "$nproc" --max-restarts 10 \
    --run-dir "$run_dir" -- "$cairn" train "$work/tiny.yaml" --no-progress $resume --stop-after "$stop" \
    --set data.log_sample_ids=true --set data.sharding=$mode >> "$work/run.out" 2>&1 &
  agent=$!
  local k victims v rows
  local -a killed=()
  for k in $(seq 1 "$kills"); do
    rows=0
    [ -f "$run_dir/metrics.jsonl" ] && rows=$(wc -l < "$run_dir/metrics.jsonl")
    wait_rows "$run_dir" $((rows + 1 + RANDOM % 2)) "$agent" || fail "world $nproc: no progress for kill $k"
    victims=$(worker_pids "$run_dir")
    [ -n "$victims" ] || { tail -n 30 "$work/run.out"; fail "world $nproc: cairn run ended (or has no workers) before kill $k of $kills"; }
    v=$(echo "$victims" | shuf -n 1)
    kill -9 "$v" || fail "world $nproc: worker $v exited before kill $k"
    killed+=("$v")
    echo "   kill -9 of worker pid $v at metrics row $(wc -l < "$run_dir/metrics.jsonl")"
    sleep 1
  done
  local rc=0
  wait "$agent" || rc=$?
  agent=
  [ $rc = 0 ] || { tail -n 30 "$work/run.out"; fail "cairn run (world $nproc) exited $rc"; }
  for v in "${killed[@]}"; do
    grep '"event":"worker_failed"' "$events" | grep "\"pid\":$v[,}]" | grep '"signal":"SIGKILL"' > /dev/null ||
      fail "world $nproc: the kill of pid $v has no worker_failed event with SIGKILL"
  done
  [ $(($(sigkills) - before)) -eq "$kills" ] ||
    fail "world $nproc: $(($(sigkills) - before)) worker_failed events with SIGKILL, expected $kills"
}

third=$((steps / 3))
echo "-- world 2 to step $third, 3 workers killed on the way"
phase 2 "$third" 3 --resume-or-start  # restarts resume (from memory); the first start finds no checkpoint
echo "-- scale down: world 1 to step $((2 * third))"
phase 1 $((2 * third)) 0 --resume-or-start
echo "-- scale up: world 2 to the end of the epoch (step $steps), 2 workers killed"
phase 2 "$steps" 2 --resume-or-start
# The README's claim: five kill -9 of workers over the epoch (3 at world 2, 2 after the scale-up).
[ "$(sigkills)" -eq 5 ] || fail "$(sigkills) worker_failed events with SIGKILL over the epoch, expected 5"
restarts=$(grep -c '"event":"restart"' "$events" || true)
[ "${restarts:-0}" -ge 5 ] || fail "only ${restarts:-0} restarts for 5 kills"
echo "   5 workers killed (worker_failed with SIGKILL: 3 at world 2, 2 after the scale-up), $restarts restarts"

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
