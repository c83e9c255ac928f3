#!/usr/bin/env bash
# Tensor parallelism with real processes under `cairn run`: tp2, tp2 with sequence parallelism
# and dp2 x tp2 (ZeRO-1; ZeRO-2 with sequence parallelism; ZeRO-3) follow the one-process run on the KJV corpus (loss per step and
# validation loss to 1e-5 relative); a tp2 checkpoint resumes in one process and a one-process
# checkpoint at tp2, dp2 x tp2 at dp4 and dp4 at dp2 x tp2 with ZeRO-3, all continuing like the
# uninterrupted run; the tp2 checkpoint holds each rank's slices (no gather) and exports to
# HuggingFace with the same model digest; a tp2 job whose worker is
# killed restarts from shared memory and ends byte-identical to an uninterrupted one; layouts
# that cannot be built stop at start with a message naming one that fits. Usage: tp_cli_test.sh CAIRN_BINARY
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

for layout in "2 parallel.tp=2" "2 parallel.tp=2 parallel.sequence_parallel=true" \
              "4 parallel.tp=2 parallel.zero_stage=1" \
              "4 parallel.tp=2 parallel.zero_stage=2 parallel.sequence_parallel=true" \
              "4 parallel.tp=2 parallel.zero_stage=3"; do
  set -- $layout
  world=$1; shift
  name="w$world-$(echo "$*" | tr ' =.' '_-_')"
  sets=(); for kv in "$@"; do sets+=(--set "$kv"); done
  echo "-- world $world: $*"
  "$cairn" run --nproc-per-node "$world" --run-dir "$work/$name" -- \
    "$cairn" train "$work/tiny.yaml" --no-progress "${sets[@]}" > "$work/$name.out" 2>&1 ||
    { tail -30 "$work/$name.out"; fail "world $world $* failed"; }
  compare "$work/one" "$work/$name" || fail "world $world $* does not match one process"
  grep -q '"tp":2' "$work/$name/events.jsonl" || fail "the start event's plan lacks tp 2"
done

echo "-- a tp2 checkpoint of step 6 resumes in one process like the uninterrupted run"
"$cairn" run --nproc-per-node 2 --run-dir "$work/half" -- "$cairn" train "$work/tiny.yaml" \
  --no-progress --stop-after 6 --set parallel.tp=2 > "$work/half.out" 2>&1 ||
  { tail -20 "$work/half.out"; fail "tp2 first half failed"; }
[ "$(cat "$work/half/ckpt/latest")" = "step-00000006" ] || fail "no checkpoint at step 6"
cp -r "$work/half" "$work/half-tp2"
echo "-- the tp2 checkpoint holds each rank's slices (no gather), and exports to HuggingFace"
# (the output is read whole first: grep -q quitting early would break inspect's pipe)
inspected=$("$cairn" ckpt inspect "$work/half-tp2/ckpt") || fail "ckpt inspect of the tp2 checkpoint failed"
grep -q "tp=2" <<< "$inspected" || fail "inspect does not show tp=2: $inspected"
/usr/bin/python3 - "$work/half-tp2/ckpt/step-00000006/manifest.json" <<'PY' || fail "the tp2 checkpoint is not saved as slices"
import json, sys
m = json.load(open(sys.argv[1]))
t = {e["name"]: e for e in m["tensors"]}
qkv = t["model.h.0.attn.c_attn.weight"]["shards"]
# q, k and v are each split over the two ranks: six row ranges, three in each rank's file
assert len(qkv) == 6, len(qkv)
assert sorted(s["file"] for s in qkv) == ["rank-00000.bin"] * 3 + ["rank-00001.bin"] * 3, qkv
rows = sorted(tuple(s["slice"][0]) for s in qkv)
assert rows == [(i * 16, i * 16 + 16) for i in range(6)], rows
wte = t["model.wte.weight"]["shards"]
assert [s["slice"][0] for s in wte] in ([[0, 25129], [25129, 50257]], [[25129, 50257], [0, 25129]]), wte
PY
"$cairn" ckpt export --format hf --ckpt "$work/half-tp2/ckpt" --out "$work/hf-tp2" 2> "$work/export.err" ||
  { cat "$work/export.err"; fail "HF export of a tp2 checkpoint failed"; }
"$cairn" ckpt import --format hf --in "$work/hf-tp2" --out "$work/imported-tp2" 2> "$work/import.err" ||
  { cat "$work/import.err"; fail "HF import failed"; }
digest() { "$cairn" ckpt inspect "$1" --digest | awk '$1 == "digest" { print $2 }'; }
d1=$(digest "$work/half-tp2/ckpt"); d2=$(digest "$work/imported-tp2")
[ -n "$d1" ] && [ "$d1" = "$d2" ] || fail "the model digest changed through HF export + import: '$d1' vs '$d2'"
"$cairn" train "$work/tiny.yaml" --run-dir "$work/half" --resume --no-progress 2> "$work/resume1.err" ||
  { cat "$work/resume1.err"; fail "one-process resume of a tp2 checkpoint failed"; }
compare "$work/one" "$work/half" 7 || fail "tp2 -> one process does not continue like one process"

echo "-- a one-process checkpoint of step 6 resumes at tp2"
"$cairn" train "$work/tiny.yaml" --run-dir "$work/half1" --no-progress --stop-after 6 \
  2> "$work/half1.err" || { cat "$work/half1.err"; fail "one-process first half failed"; }
"$cairn" run --nproc-per-node 2 --run-dir "$work/half1" -- "$cairn" train "$work/tiny.yaml" \
  --resume --no-progress --set parallel.tp=2 > "$work/resume2.out" 2>&1 ||
  { tail -20 "$work/resume2.out"; fail "tp2 resume of a one-process checkpoint failed"; }
compare "$work/one" "$work/half1" 7 || fail "one process -> tp2 does not continue like one process"

echo "-- dp2 x tp2 -> dp4 and dp4 -> dp2 x tp2 with ZeRO-3: each continues like one process"
# world4 RUN FLAG KEY=VALUE...: a world-4 job in RUN with one train flag and the keys set
world4() {
  local run=$1 flag=$2; shift 2
  local sets=(); for kv in "$@"; do sets+=(--set "$kv"); done
  "$cairn" run --nproc-per-node 4 --run-dir "$work/$run" -- "$cairn" train "$work/tiny.yaml" \
    --no-progress $flag "${sets[@]}" > "$work/$run.out" 2>&1 ||
    { tail -20 "$work/$run.out"; fail "$run ($flag $*) failed"; }
}
world4 dptp "--stop-after=6" parallel.tp=2 parallel.zero_stage=1
world4 dptp --resume parallel.zero_stage=1
compare "$work/one" "$work/dptp" 7 || fail "dp2 x tp2 -> dp4 does not continue like one process"
world4 dp4 "--stop-after=6"
world4 dp4 --resume parallel.tp=2 parallel.zero_stage=3
compare "$work/one" "$work/dp4" 7 || fail "dp4 -> dp2 x tp2 (ZeRO-3) does not continue like one process"

echo "-- tp2 through kill -9 of a worker: restarted from shared memory, byte-identical end"
flash=(--set train.max_steps=24 --set ckpt.memory_interval=1 --set parallel.tp=2)
"$cairn" run --nproc-per-node 2 --run-dir "$work/tp-straight" -- "$cairn" train "$work/tiny.yaml" \
  --no-progress "${flash[@]}" > "$work/tp-straight.out" 2>&1 ||
  { tail -20 "$work/tp-straight.out"; fail "uninterrupted tp2 run failed"; }
"$cairn" run --nproc-per-node 2 --max-restarts 2 --run-dir "$work/tp-kill" -- "$cairn" train \
  "$work/tiny.yaml" --no-progress --resume-or-start "${flash[@]}" > "$work/tp-kill.out" 2>&1 &
agent=$!
kill_worker_and_finish "$work/tp-kill" 10 "$work/tp-kill.out"
grep -q '"event":"restart"' "$work/tp-kill/events.jsonl" || fail "no restart event"
grep -q '"event":"checkpoint_loaded"' "$work/tp-kill/events.jsonl" || fail "the restart loaded no checkpoint"
for r in 0 1; do
  cmp "$work/tp-straight/ckpt/step-00000024/rank-0000$r.bin" "$work/tp-kill/ckpt/step-00000024/rank-0000$r.bin" ||
    fail "the restarted tp2 run's final state differs from the uninterrupted one (rank $r's part)"
done

echo "-- layouts that cannot be built stop at start, naming what fits"
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
expect_exit2 "parallel.tp 2 does not divide the 3 ranks: run 2, 4, 6, 8 ranks" 3 parallel.tp=2
expect_exit2 "model.n_head 4 is not divisible by tp 3" 3 parallel.tp=3
expect_exit2 "needs parallel.tp > 1" 1 parallel.sequence_parallel=true
echo "PASS"
