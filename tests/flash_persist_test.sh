#!/usr/bin/env bash
# Background persisting under `cairn run`: each rank's part goes to storage while training
# goes on and one commit per step follows; retention; SIGTERM to the agent persists the step
# the workers stopped at; a /dev/shm too small for the slots gives a clear error (memory
# checkpoints asked for) or direct storage writes (only persisted ones asked for).
# Usage: flash_persist_test.sh CAIRN
set -euo pipefail
cairn=$1
work=$(mktemp -d)
agent=
source "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
require unshare mount

prepare_kjv 200000
# persist_duty 1: every interval persisted (storage's pace is the trainer unit test's)
flash_config 20 '{persist_interval: 4, memory_interval: 1, keep_last: 2, keep_every: 8, persist_duty: 1}'
count() { grep -c "$1" "$2" || true; }

echo "-- world 2: the agent persists both ranks' parts in the background, one commit per step"
"$cairn" run --nproc-per-node 2 --run-dir "$work/a" -- "$cairn" train "$work/tiny.yaml" \
  --no-progress > "$work/a.out" 2>&1 || { tail -20 "$work/a.out"; fail "run failed"; }
ev="$work/a/events.jsonl"
# Steps 4, 8, 12, 16 and the end (20): two parts each, the second one commits.
[ "$(count '"event":"checkpoint_persisted"' "$ev")" -eq 10 ] || { grep persist "$ev"; fail "expected 10 persisted parts"; }
[ "$(count '"committed":true' "$ev")" -eq 5 ] || { grep persist "$ev"; fail "expected 5 commits"; }
grep '"event":"checkpoint_saved"' "$ev" | grep '"duration_ms"' > /dev/null || fail "saves carry no pause"
ls "$work/a/ckpt" | grep '^step-' > /dev/null || fail "no checkpoint"
[ "$(ls -d "$work"/a/ckpt/step-* | xargs -n1 basename | tr '\n' ' ')" = "step-00000008 step-00000016 step-00000020 " ] ||
  fail "retention (keep_last 2, keep_every 8) kept: $(ls "$work/a/ckpt")"
[ "$(cat "$work/a/ckpt/latest")" = "step-00000020" ] || fail "latest is not step 20"
grep -q '"rank-00000.bin"' "$work/a/ckpt/step-00000020/manifest.json" &&
  grep -q '"rank-00001.bin"' "$work/a/ckpt/step-00000020/manifest.json" || fail "one data file per rank expected"
"$cairn" ckpt inspect "$work/a/ckpt" --verify > /dev/null || fail "the committed checkpoint does not verify"
[ -z "$(ls -A "$work/a/ckpt" | grep '^\.parts-' || true)" ] || fail "unfinished parts left behind"

echo "-- SIGTERM to the agent: the workers stop at a step boundary, that step is persisted"
cfg_long="$work/long.yaml"
sed 's/max_steps: 20/max_steps: 100000/' "$work/tiny.yaml" > "$cfg_long"
"$cairn" run --nproc-per-node 2 --run-dir "$work/b" -- "$cairn" train "$cfg_long" --no-progress \
  > "$work/b.out" 2>&1 &
agent=$!
wait_rows "$work/b" 10 || { tail -n 30 "$work/b.out"; fail "no step 10 to stop the run at"; }
kill -TERM $agent
rc=0; wait $agent || rc=$?
agent=
[ $rc -eq 143 ] || { tail -20 "$work/b.out"; fail "cairn run should exit 143 after SIGTERM, got $rc"; }
last=$(tail -n1 "$work/b/metrics.jsonl" | sed 's/.*"step":\([0-9]*\).*/\1/')
[ "$(sed 's/step-0*//' "$work/b/ckpt/latest")" -eq "$last" ] || fail "latest is not the last trained step $last"
grep -q '"reason":"interrupted"' "$work/b/events.jsonl" || fail "no interrupted save"
! grep "error:" "$work/b.out" | grep -v "failed precondition: interrupted" | grep . > /dev/null ||
  { grep "error:" "$work/b.out"; fail "a worker failed while stopping"; }
"$cairn" run --nproc-per-node 2 --run-dir "$work/b" -- "$cairn" train "$cfg_long" --no-progress \
  --resume --max-steps $((last + 2)) > "$work/b2.out" 2>&1 || { tail -20 "$work/b2.out"; fail "resume failed"; }
grep -q "resumed from .*(step $last)" "$work/b2.out" || { tail -20 "$work/b2.out"; fail "did not resume from step $last"; }

echo "-- /dev/shm of 2 MB (a container's default is 64 MB): clear error, or direct writes"
small() { unshare -m sh -c 'mount -t tmpfs -o size=2m tmpfs /dev/shm && exec "$@"' sh "$@"; }
rc=0
small "$cairn" train "$work/tiny.yaml" --run-dir "$work/c" --no-progress > "$work/c.out" 2>&1 || rc=$?
[ $rc -ne 0 ] || fail "memory checkpoints cannot fit in 2 MB: the run should fail"
grep -q "bytes free but the checkpoint slot .* needs" "$work/c.out" || { cat "$work/c.out"; fail "no clear /dev/shm message"; }
small "$cairn" train "$work/tiny.yaml" --run-dir "$work/d" --no-progress --set ckpt.memory_interval=0 \
  > "$work/d.out" 2>&1 || { tail -20 "$work/d.out"; fail "persist-only run should fall back to direct writes"; }
grep -q "writing checkpoints to storage directly" "$work/d.out" || fail "no fallback warning"
[ "$(cat "$work/d/ckpt/latest")" = "step-00000020" ] || fail "direct writes did not reach step 20"
echo "PASS"
