#!/usr/bin/env bash
# Hang detection under `cairn run`: a worker that stops making progress (SIGSTOP) is found
# after --hang-timeout, its threads' stacks are written to the log, the group is restarted
# from the in-memory checkpoint and the run ends byte-identical to an uninterrupted one.
# Usage: hang_test.sh CAIRN
set -euo pipefail
cairn=$1
work=$(mktemp -d)
agent=
source "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
require gdb

prepare_kjv 200000
flash_config 50

"$cairn" run --nproc-per-node 2 --run-dir "$work/straight" -- "$cairn" train "$work/tiny.yaml" \
  --no-progress > "$work/straight.out" 2>&1 || { tail -20 "$work/straight.out"; fail "straight run failed"; }

echo "-- SIGSTOP one worker at step >= 15; --hang-timeout 3"
"$cairn" run --nproc-per-node 2 --max-restarts 1 --hang-timeout 3 --grace-period 2 --run-dir "$work/run" -- \
  "$cairn" train "$work/tiny.yaml" --no-progress --resume-or-start > "$work/run.out" 2>&1 &
agent=$!
wait_rows "$work/run" 15 || { tail -n 30 "$work/run.out"; fail "no step 15 to stop a worker at"; }
victim=$(worker_pids "$work/run" | tail -n 1)
[ -n "$victim" ] || fail "no worker to stop"
kill -STOP "$victim"
t0=$(date +%s)
rc=0; wait $agent || rc=$?
agent=
[ $rc -eq 0 ] || { tail -30 "$work/run.out"; fail "the job should finish after the restart (exit $rc)"; }
grep -q '"event":"hang"' "$work/run/events.jsonl" || fail "no hang event"
grep '"event":"worker_failed"' "$work/run/events.jsonl" | grep '"diagnosis":"hang"' > /dev/null || fail "not diagnosed as a hang"
grep -q "made no progress for" "$work/run/logs/agent.log" || fail "the agent log does not report the hang"
stacks=$(ls "$work"/run/logs/hang-rank-*.txt | head -n 1)
grep -q "^Thread " "$stacks" || { cat "$stacks"; fail "no thread stacks in $stacks"; }
grep -q "cairn::" "$stacks" || { cat "$stacks"; fail "the stacks do not show cairn's frames"; }
grep -q '"event":"restart"' "$work/run/events.jsonl" || fail "no restart"
# The job's goodput, with the hang's downtime charged to the restart.
gp=$(grep '"event":"goodput"' "$work/run/events.jsonl") || fail "no goodput event"
echo "$gp" | grep '"failures":1' > /dev/null || fail "goodput should count one failure: $gp"
grep -q "goodput [0-9.]*% (productive" "$work/run.out" || fail "cairn run did not print the goodput"
echo "   $(grep -o 'goodput [0-9.]*% (productive.*' "$work/run.out")"
for r in 0 1; do
  cmp "$work/straight/ckpt/step-00000050/rank-0000$r.bin" "$work/run/ckpt/step-00000050/rank-0000$r.bin" ||
    fail "the run restarted after the hang differs from the uninterrupted run"
done
echo "PASS"
