#!/usr/bin/env bash
# In-memory checkpoints under `cairn run`: a worker killed with SIGKILL mid-run is restarted,
# every rank resumes from shared memory, and the run ends byte-identical to an uninterrupted
# one; with no restarts left the agent persists the in-memory checkpoint before exiting; the
# agent removes the segments when the job ends. Usage: flash_restart_test.sh CAIRN
set -euo pipefail
cairn=$1
work=$(mktemp -d)
agent=
source "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

prepare_kjv 200000
flash_config 60

echo "-- uninterrupted run"
"$cairn" run --nproc-per-node 2 --run-dir "$work/straight" -- "$cairn" train "$work/tiny.yaml" \
  --no-progress > "$work/straight.out" 2>&1 || { tail -20 "$work/straight.out"; fail "straight run failed"; }

echo "-- kill -9 one worker at step >= 20; the agent restarts the group"
"$cairn" run --nproc-per-node 2 --max-restarts 2 --run-dir "$work/run" -- \
  "$cairn" train "$work/tiny.yaml" --no-progress --resume-or-start > "$work/run.out" 2>&1 &
agent=$!
kill_worker_and_finish "$work/run" 20 "$work/run.out"
grep -q '"event":"worker_failed"' "$work/run/events.jsonl" || fail "no worker_failed event"
grep -q '"event":"restart"' "$work/run/events.jsonl" || fail "no restart event"
# The agent persisted the newest slot before restarting; the restarted ranks load the newest
# step they all hold in memory, or that persisted one when it is newer (the killed rank may
# have died in the middle of its last memory save).
grep -q '"event":"checkpoint_persisted"' "$work/run/events.jsonl" || fail "nothing persisted on failure"
loaded=$(grep '"event":"checkpoint_loaded"' "$work/run/events.jsonl" | head -n 1)
[ -n "$loaded" ] || { tail -40 "$work/run.out"; fail "the restart loaded no checkpoint"; }
step=$(echo "$loaded" | sed 's/.*"step":\([0-9]*\).*/\1/')
[ "$step" -ge 19 ] || fail "the restart resumed from step $step, expected >= 19"
echo "   restarted from step $step ($(echo "$loaded" | grep -o '"source":"[a-z]*"'))"
same_final() {  # same_final RUN: both ranks' data files equal the uninterrupted run's
  for r in 0 1; do
    cmp "$work/straight/ckpt/step-00000060/rank-0000$r.bin" "$1/ckpt/step-00000060/rank-0000$r.bin" || return 1
  done
}
same_final "$work/run" || fail "the restarted run's final state differs from the uninterrupted run"
echo "-- no restarts left: the agent persists the in-memory checkpoint before exiting"
"$cairn" run --nproc-per-node 2 --run-dir "$work/p" -- \
  "$cairn" train "$work/tiny.yaml" --no-progress --resume-or-start > "$work/p.out" 2>&1 &
agent=$!
wait_rows "$work/p" 20 || { tail -n 30 "$work/p.out"; fail "no step 20 to kill a worker at"; }
kill -9 "$(worker_pids "$work/p" | tail -n 1)"
rc=0; wait $agent || rc=$?
agent=
[ $rc -ne 0 ] || fail "the agent should report the failure"
grep -q '"event":"checkpoint_persisted"' "$work/p/events.jsonl" || { tail -20 "$work/p.out"; fail "nothing persisted"; }
step=$(sed 's/step-0*//' "$work/p/ckpt/latest")
[ "$step" -ge 19 ] || fail "persisted step $step, expected >= 19"
"$cairn" run --nproc-per-node 2 --run-dir "$work/p" -- "$cairn" train "$work/tiny.yaml" \
  --no-progress --resume > "$work/p2.out" 2>&1 || { tail -20 "$work/p2.out"; fail "resume failed"; }
grep -q "resumed from .*step-0*$step (step $step)" "$work/p2.out" || fail "did not resume from the persisted step"
same_final "$work/p" || fail "the run resumed from the persisted checkpoint differs from the uninterrupted run"

# Every slot the workers created is gone once the agent has exited.
slots=$(grep -ho "in-memory checkpoint slot /dev/shm/cairn-[0-9a-f]*-r[0-9]*-[0-9]" \
  "$work"/straight/logs/worker-*.log "$work"/run/logs/worker-*.log "$work"/p/logs/worker-*.log | sed 's/.* //' | sort -u)
[ "$(echo "$slots" | wc -l)" -ge 4 ] || fail "expected at least 4 slots in the logs, got: $slots"
for f in $slots; do [ ! -e "$f" ] || fail "segment left behind: $f"; done
echo "PASS"
