#!/usr/bin/env bash
# Pipeline parallelism with real processes under `cairn run`: pp2 (1f1b, gpipe, an explicit cut
# with the head alone), pp4 (1f1b, the default cut), pp2 interleaved, pp2 x dp2 zb-h1 with
# ZeRO-2, pp2 x dp2 with ZeRO-1, pp2 x tp2 with sequence parallelism and pp2 x cp2 (ring) follow the one-process run on
# the KJV corpus (loss per step and validation loss to 1e-5 relative); a pp2 checkpoint resumes
# in one process, and a one-process checkpoint at pp2, pp2 x dp2 at pp4, pp2 x tp2 at pp2 x cp2
# and pp2 on 3 ranks with parallel.pp_elastic (at pp3), all continuing like the uninterrupted
# run; a pp2 job whose worker is killed restarts from shared memory and ends byte-identical to
# an uninterrupted one; bad pipeline settings stop at start naming what fits.
# Usage: pp_cli_test.sh CAIRN_BINARY
set -euo pipefail
cairn=$1
work=$(mktemp -d)
agent=
source "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

prepare_kjv 200000
layout_config

echo "-- one process"
"$cairn" train "$work/tiny.yaml" --run-dir "$work/one" --no-progress 2> "$work/one.err" ||
  { cat "$work/one.err"; fail "one-process run failed"; }

for layout in "2 parallel.pp=2" "2 parallel.pp=2 parallel.pp_schedule=gpipe" \
              "2 parallel.pp=2 parallel.pp_layers=[2,0]" \
              "4 parallel.pp=4" \
              "2 parallel.pp=2 parallel.pp_schedule=interleaved" \
              "4 parallel.pp=2 parallel.pp_schedule=zb-h1 parallel.zero_stage=2" \
              "4 parallel.pp=2 parallel.zero_stage=1" \
              "4 parallel.pp=2 parallel.tp=2 parallel.sequence_parallel=true" \
              "4 parallel.pp=2 parallel.cp=2"; do
  set -- $layout
  world=$1; shift
  name="w$world-$(echo "$*" | tr -c 'a-z0-9\n' '_')"
  sets=(); for kv in "$@"; do sets+=(--set "$kv"); done
  echo "-- world $world: $*"
  "$cairn" run --nproc-per-node "$world" --run-dir "$work/$name" -- \
    "$cairn" train "$work/tiny.yaml" --no-progress "${sets[@]}" > "$work/$name.out" 2>&1 ||
    { tail -30 "$work/$name.out"; fail "world $world $* failed"; }
  compare "$work/one" "$work/$name" || fail "world $world $* does not match one process"
  grep -q "blocks per stage \[" "$work/$name.out" || fail "the cut is not printed at start"
done
echo "-- every stage's bubble and activation memory are in every step's metrics"
/usr/bin/python3 - "$work/w2-parallel_pp_2/metrics.jsonl" "$work/w4-parallel_pp_4/metrics.jsonl" <<'PY' ||
import json, sys
for path, stages in zip(sys.argv[1:], (2, 4)):
    rows = [json.loads(l) for l in open(path)]
    rows = [r for r in rows if "loss" in r]
    assert rows, path
    for r in rows:
        for s in range(stages):
            assert 0 <= r[f"pp_bubble_s{s}"] < 1, (path, r["step"], s, r[f"pp_bubble_s{s}"])
            assert r[f"pp_act_mb_s{s}"] > 0, (path, r["step"], f"stage {s} kept no activations")
PY
  fail "per-stage pipeline stats missing or empty"
grep -q "blocks per stage \[2, 0\]" "$work/w2-parallel_pp_2_parallel_pp_layers__2_0_.out" ||
  fail "pp_layers=[2,0] was not the cut"

echo "-- a pp2 checkpoint of step 6 resumes in one process like the uninterrupted run"
"$cairn" run --nproc-per-node 2 --run-dir "$work/half" -- "$cairn" train "$work/tiny.yaml" \
  --no-progress --stop-after 6 --set parallel.pp=2 > "$work/half.out" 2>&1 ||
  { tail -20 "$work/half.out"; fail "pp2 first half failed"; }
[ "$(cat "$work/half/ckpt/latest")" = "step-00000006" ] || fail "no checkpoint at step 6"
"$cairn" train "$work/tiny.yaml" --run-dir "$work/half" --resume --no-progress 2> "$work/resume1.err" ||
  { cat "$work/resume1.err"; fail "one-process resume of a pp2 checkpoint failed"; }
compare "$work/one" "$work/half" 7 || fail "pp2 -> one process does not continue like one process"

echo "-- a one-process checkpoint of step 6 resumes at pp2"
"$cairn" train "$work/tiny.yaml" --run-dir "$work/half1" --no-progress --stop-after 6 \
  2> "$work/half1.err" || { cat "$work/half1.err"; fail "one-process first half failed"; }
"$cairn" run --nproc-per-node 2 --run-dir "$work/half1" -- "$cairn" train "$work/tiny.yaml" \
  --resume --no-progress --set parallel.pp=2 > "$work/resume2.out" 2>&1 ||
  { tail -20 "$work/resume2.out"; fail "pp2 resume of a one-process checkpoint failed"; }
compare "$work/one" "$work/half1" 7 || fail "one process -> pp2 does not continue like one process"

echo "-- pp2 x dp2 (ZeRO-1) -> pp4: continues like one process"
"$cairn" run --nproc-per-node 4 --run-dir "$work/ppdp" -- "$cairn" train "$work/tiny.yaml" \
  --no-progress --stop-after 6 --set parallel.pp=2 --set parallel.zero_stage=1 > "$work/ppdp.out" 2>&1 ||
  { tail -20 "$work/ppdp.out"; fail "pp2 x dp2 first half failed"; }
"$cairn" run --nproc-per-node 4 --run-dir "$work/ppdp" -- "$cairn" train "$work/tiny.yaml" \
  --no-progress --resume --set parallel.pp=4 > "$work/ppdp2.out" 2>&1 ||
  { tail -20 "$work/ppdp2.out"; fail "pp4 resume failed"; }
compare "$work/one" "$work/ppdp" 7 || fail "pp2 x dp2 -> pp4 does not continue like one process"

echo "-- pp2 x tp2 (sequence parallel) -> pp2 x cp2: continues like one process"
"$cairn" run --nproc-per-node 4 --run-dir "$work/pptp" -- "$cairn" train "$work/tiny.yaml" \
  --no-progress --stop-after 6 --set parallel.pp=2 --set parallel.tp=2 \
  --set parallel.sequence_parallel=true > "$work/pptp.out" 2>&1 ||
  { tail -20 "$work/pptp.out"; fail "pp2 x tp2 first half failed"; }
"$cairn" run --nproc-per-node 4 --run-dir "$work/pptp" -- "$cairn" train "$work/tiny.yaml" \
  --no-progress --resume --set parallel.pp=2 --set parallel.cp=2 > "$work/pptp2.out" 2>&1 ||
  { tail -20 "$work/pptp2.out"; fail "pp2 x cp2 resume failed"; }
compare "$work/one" "$work/pptp" 7 || fail "pp2 x tp2 -> pp2 x cp2 does not continue like one process"

echo "-- parallel.pp_elastic: a pp2 checkpoint resumed on 3 ranks trains at pp3, re-cut"
"$cairn" run --nproc-per-node 2 --run-dir "$work/elastic" -- "$cairn" train "$work/tiny.yaml" \
  --no-progress --stop-after 6 --set parallel.pp=2 > "$work/elastic.out" 2>&1 ||
  { tail -20 "$work/elastic.out"; fail "pp2 first half failed"; }
"$cairn" run --nproc-per-node 3 --run-dir "$work/elastic" -- "$cairn" train "$work/tiny.yaml" \
  --no-progress --resume --set parallel.pp=2 --set parallel.pp_elastic=true > "$work/elastic2.out" 2>&1 ||
  { tail -20 "$work/elastic2.out"; fail "the pp_elastic resume on 3 ranks failed"; }
grep -q "parallel.pp_elastic: 3 ranks do not fit parallel.pp 2: training at pp=3" "$work/elastic2.out" ||
  { tail -20 "$work/elastic2.out"; fail "no pp3 re-cut reported"; }
compare "$work/one" "$work/elastic" 7 || fail "pp2 -> pp3 (elastic) does not continue like one process"

echo "-- pp2 through kill -9 of a worker: restarted from shared memory, byte-identical end"
flash=(--set train.max_steps=24 --set ckpt.memory_interval=1 --set parallel.pp=2)
"$cairn" run --nproc-per-node 2 --run-dir "$work/pp-straight" -- "$cairn" train "$work/tiny.yaml" \
  --no-progress "${flash[@]}" > "$work/pp-straight.out" 2>&1 ||
  { tail -20 "$work/pp-straight.out"; fail "uninterrupted pp2 run failed"; }
"$cairn" run --nproc-per-node 2 --max-restarts 2 --run-dir "$work/pp-kill" -- "$cairn" train \
  "$work/tiny.yaml" --no-progress --resume-or-start "${flash[@]}" > "$work/pp-kill.out" 2>&1 &
agent=$!
kill_worker_and_finish "$work/pp-kill" 10 "$work/pp-kill.out"
grep -q '"event":"restart"' "$work/pp-kill/events.jsonl" || fail "no restart event"
grep -q '"event":"checkpoint_loaded"' "$work/pp-kill/events.jsonl" || fail "the restart loaded no checkpoint"
for r in 0 1; do
  cmp "$work/pp-straight/ckpt/step-00000024/rank-0000$r.bin" "$work/pp-kill/ckpt/step-00000024/rank-0000$r.bin" ||
    fail "the restarted pp2 run's final state differs from the uninterrupted one (rank $r's part)"
done

echo "-- bad pipeline settings stop at start, naming what fits"
expect_exit2() {  # expect_exit2 PATTERN WORLD SETS...
  local pattern=$1 world=$2; shift 2
  local sets=(); for kv in "$@"; do sets+=(--set "$kv"); done
  local rc=0
  "$cairn" run --nproc-per-node "$world" --run-dir "$work/bad" -- "$cairn" train \
    "$work/tiny.yaml" --no-progress "${sets[@]}" > "$work/bad.out" 2>&1 || rc=$?
  [ $rc -eq 2 ] || { tail -20 "$work/bad.out"; fail "$* at world $world should exit 2, got $rc"; }
  grep -q -- "$pattern" "$work/bad.out" || { tail -20 "$work/bad.out"; fail "no '$pattern' for $*"; }
  rm -rf "$work/bad"
}
expect_exit2 "needs 2 entries (parallel.pp) summing to model.n_layer 2, got 2 summing to 3" 2 \
  parallel.pp=2 "parallel.pp_layers=[2,1]"
expect_exit2 "parallel.pp_layers: '\[2, x\]' is not a list of integers" 2 parallel.pp=2 \
  "parallel.pp_layers=[2, x]"
expect_exit2 "parallel.pp 3 does not divide the 4 ranks" 4 parallel.pp=3
expect_exit2 "stages for model.n_layer 2 blocks" 5 parallel.pp=5
expect_exit2 "ZeRO-3 with pipeline stages" 2 parallel.pp=2 parallel.zero_stage=3
expect_exit2 "3 micro-batches is not a multiple of pp 2" 2 parallel.pp=2 parallel.pp_schedule=interleaved \
  train.global_batch_size=6
echo "PASS"
