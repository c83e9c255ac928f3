#!/usr/bin/env bash
# Context parallelism with real processes under `cairn run`: cp2 ring, cp2 Ulysses, 2D (2 x 2),
# dp2 x cp2 with ZeRO-1 and tp2 x cp2 follow the one-process run on the KJV corpus (loss per step
# and validation loss to 1e-5 relative); a cp2 checkpoint resumes in one process and a
# one-process checkpoint at cp4 (ring), both continuing like the uninterrupted run; a cp2 ring
# job whose worker is killed restarts from shared memory and ends byte-identical to an
# uninterrupted one; layouts that cannot be built stop at start naming what fits.
# Usage: cp_cli_test.sh CAIRN_BINARY
set -euo pipefail
cairn=$1
work=$(mktemp -d)
agent=
source "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

prepare_kjv 200000
layout_config

# job WORLD RUN ARGS...: a `cairn run` job of WORLD ranks in RUN; ARGS go to `cairn train`
# (--set KEY=VALUE pairs and flags).
job() {
  local world=$1 run=$2; shift 2
  "$cairn" run --nproc-per-node "$world" --run-dir "$work/$run" -- \
    "$cairn" train "$work/tiny.yaml" --no-progress "$@" > "$work/$run.out" 2>&1 ||
    { tail -30 "$work/$run.out"; fail "$run (world $world: $*) failed"; }
}

echo "-- one process"
"$cairn" train "$work/tiny.yaml" --run-dir "$work/one" --no-progress 2> "$work/one.err" ||
  { cat "$work/one.err"; fail "one-process run failed"; }

job 2 ring --set parallel.cp=2 --set parallel.cp_kind=ring
job 2 ulysses --set parallel.cp=2 --set parallel.cp_kind=ulysses
job 4 two-d --set parallel.cp=4 --set parallel.cp_kind=2d --set parallel.cp_ulysses=2
job 4 dp-cp --set parallel.cp=2 --set parallel.zero_stage=1
job 4 tp-cp --set parallel.cp=2 --set parallel.tp=2 --set parallel.sequence_parallel=true
for run in ring ulysses two-d dp-cp tp-cp; do
  echo "-- $run matches one process"
  compare "$work/one" "$work/$run" || fail "$run does not match one process"
done
grep -q '"cp":4' "$work/two-d/events.jsonl" || fail "the 2d start event's plan lacks cp 4"
grep -q '"cp_ulysses":2' "$work/two-d/events.jsonl" || fail "the 2d plan lacks cp_ulysses 2"
grep -q 'cp=2.*cp ring' "$work/ring.out" || fail "the ring job's log does not name its plan"
/usr/bin/python3 - "$work/ring/metrics.jsonl" <<'PY' || fail "the ring job's metrics lack its communication"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
# per layer of a micro-batch at cp 2: 1 key/value hop forward, 1 back and 2 gradient hops;
# 2 layers, 4 micro-batches a step (8 sequences, 2 at a time, dp 1)
assert all(r["cp_messages"] == 32 and r["cp_sent_mb"] > 0 and r["cp_comm_s"] >= 0 for r in rows), rows[0]
PY

echo "-- a cp2 checkpoint of step 6 resumes in one process, a one-process one at cp4 (ring)"
job 2 half --stop-after 6 --set parallel.cp=2
[ "$(cat "$work/half/ckpt/latest")" = "step-00000006" ] || fail "no checkpoint at step 6"
"$cairn" train "$work/tiny.yaml" --run-dir "$work/half" --resume --no-progress 2> "$work/resume1.err" ||
  { cat "$work/resume1.err"; fail "one-process resume of a cp2 checkpoint failed"; }
compare "$work/one" "$work/half" 7 || fail "cp2 -> one process does not continue like one process"
"$cairn" train "$work/tiny.yaml" --run-dir "$work/half1" --no-progress --stop-after 6 \
  2> "$work/half1.err" || { cat "$work/half1.err"; fail "one-process first half failed"; }
job 4 half1 --resume --set parallel.cp=4
compare "$work/one" "$work/half1" 7 || fail "one process -> cp4 does not continue like one process"

echo "-- cp2 ring through kill -9 of a worker: restarted from shared memory, byte-identical end"
flash=(--set train.max_steps=24 --set ckpt.memory_interval=1 --set parallel.cp=2)
job 2 cp-straight "${flash[@]}"
"$cairn" run --nproc-per-node 2 --max-restarts 2 --run-dir "$work/cp-kill" -- "$cairn" train \
  "$work/tiny.yaml" --no-progress --resume-or-start "${flash[@]}" > "$work/cp-kill.out" 2>&1 &
agent=$!
kill_worker_and_finish "$work/cp-kill" 10 "$work/cp-kill.out"
grep -q '"event":"restart"' "$work/cp-kill/events.jsonl" || fail "no restart event"
grep -q '"event":"checkpoint_loaded"' "$work/cp-kill/events.jsonl" || fail "the restart loaded no checkpoint"
for r in 0 1; do
  cmp "$work/cp-straight/ckpt/step-00000024/rank-0000$r.bin" "$work/cp-kill/ckpt/step-00000024/rank-0000$r.bin" ||
    fail "the restarted cp2 run's final state differs from the uninterrupted one (rank $r's part)"
done

echo "-- layouts that cannot be built stop at start, naming what fits"
expect_exit2() {  # expect_exit2 PATTERN WORLD SETS...
  local pattern=$1 world=$2; shift 2
  local sets=(); for kv in "$@"; do sets+=(--set "$kv"); done
  local rc=0
  "$cairn" run --nproc-per-node "$world" --run-dir "$work/bad" -- "$cairn" train \
    "$work/tiny.yaml" --no-progress "${sets[@]}" > "$work/bad.out" 2>&1 || rc=$?
  [ $rc -eq 2 ] || { tail -20 "$work/bad.out"; fail "$* at world $world should exit 2, got $rc"; }
  local out; out=$(cat "$work/bad.out")
  grep -q -- "$pattern" <<< "$out" || { tail -20 "$work/bad.out"; fail "no '$pattern' for $*"; }
  rm -rf "$work/bad"
}
expect_exit2 "train.seq_len: the sequence length 20 is not a multiple of 8" 4 parallel.cp=4 \
  parallel.cp_kind=ring train.seq_len=20
expect_exit2 "degrees that fit: 1, 2" 4 parallel.cp=4 parallel.cp_kind=ulysses parallel.tp=1 \
  model.n_head=2
expect_exit2 "parallel.cp_ulysses is for parallel.cp_kind 2d" 2 parallel.cp=2 parallel.cp_ulysses=2
echo "PASS"
