#!/usr/bin/env bash
# End-to-end `cairn train` / `cairn generate` on a KJV slice: logs, checkpoints, Ctrl-C and
# resume, corrupt checkpoints, bad configs. Usage: train_cli_test.sh CAIRN_BINARY
set -euo pipefail
cairn=$1
work=$(mktemp -d)
source "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT
export OMP_NUM_THREADS=2

prepare_kjv 300000
cat > "$work/tiny.yaml" <<YAML
model: {arch: gpt2, n_layer: 2, n_head: 2, n_embd: 32, vocab_size: 50304, block_size: 32}
train: {micro_batch_size: 4, global_batch_size: 8, seq_len: 32, max_steps: 30, lr: 3.0e-3,
        warmup_steps: 5, eval_interval: 10, eval_batches: 2}
ckpt: {persist_interval: 10, persist_duty: 1}  # every interval on storage (the fallback below needs 20)
data: {path: $work/data}
YAML

echo "-- train 30 steps"
"$cairn" train "$work/tiny.yaml" --run-dir "$work/run" --no-progress 2> "$work/train.err" ||
  { cat "$work/train.err"; fail "train exited non-zero"; }
[ "$(wc -l < "$work/run/metrics.jsonl")" -eq 30 ] || fail "metrics.jsonl should have 30 rows"
[ "$(grep -c val_loss "$work/run/metrics.jsonl")" -eq 3 ] || fail "3 evaluations expected"
for e in start eval checkpoint_saved checkpoint_persisted end; do
  grep -q "\"event\":\"$e\"" "$work/run/events.jsonl" || fail "no $e event"
done
[ "$(cat "$work/run/ckpt/latest")" = "step-00000030" ] || fail "latest should be step 30"
grep '"event":"start"' "$work/run/events.jsonl" | grep -q '"omp_wait_policy":"PASSIVE"' \
  || fail "cairn train should run with passive OpenMP waiting: $(grep '"event":"start"' "$work/run/events.jsonl")"
grep -q "n_embd: 32" "$work/run/config.yaml" || fail "config.yaml lacks the resolved model"

echo "-- generate is deterministic at temperature 0"
g1=$("$cairn" generate --ckpt "$work/run/ckpt" --prompt "And God said" --max-tokens 12 --temperature 0 2>/dev/null)
g2=$("$cairn" generate --ckpt "$work/run/ckpt/step-00000030" --prompt "And God said" --max-tokens 12 --temperature 0 2>/dev/null)
[ "$g1" = "$g2" ] || fail "greedy generation differs: '$g1' vs '$g2'"
[ "${g1#And God said}" != "$g1" ] || fail "output should start with the prompt: $g1"
[ ${#g1} -gt 14 ] || fail "nothing was generated: '$g1'"

echo "-- a corrupt newest checkpoint falls back to the previous one"
f="$work/run/ckpt/step-00000030/rank-00000.bin"
printf '\xff\xff\xff\xff' | dd of="$f" bs=1 seek=200 conv=notrunc 2>/dev/null
"$cairn" generate --ckpt "$work/run/ckpt" --prompt "And" --max-tokens 2 --temperature 0 \
  > /dev/null 2> "$work/gen.err" || { cat "$work/gen.err"; fail "generate should fall back"; }
grep -q "checksum mismatch" "$work/gen.err" || fail "no warning about the corrupt checkpoint"
grep -q "step 20" "$work/gen.err" || fail "should have loaded step 20"
rc=0; "$cairn" generate --ckpt "$work/run/ckpt/step-00000030" --prompt "x" 2> "$work/gen.err" || rc=$?
[ $rc -ne 0 ] && grep -q "corrupt" "$work/gen.err" || fail "loading the corrupt step directly must fail clearly"

echo "-- Ctrl-C saves a checkpoint, exits 130; --resume continues it byte for byte"
"$cairn" train "$work/tiny.yaml" --run-dir "$work/straight" --no-progress --max-steps 40 \
  2> "$work/straight.err" || { cat "$work/straight.err"; fail "straight run failed"; }
# slow_run DIR: 40 steps in the background, rank 0 slowed 5x (timing only) so that a signal
# comes well before the end; sets $pid.
slow_run() {
  "$cairn" train "$work/tiny.yaml" --run-dir "$1" --no-progress --max-steps 40 \
    --debug-slowdown 0:5 2> "$1.err" &
  pid=$!
}
slow_run "$work/run2"
wait_rows "$work/run2" 10
kill -INT $pid
rc=0; wait $pid || rc=$?
[ $rc -eq 130 ] || { cat "$work/run2.err"; fail "a run stopped by SIGINT should exit 130, got $rc"; }
grep -q "interrupted: saved step" "$work/run2.err" || { cat "$work/run2.err"; fail "no interrupted message"; }
! grep -qi "error" "$work/run2.err" || { cat "$work/run2.err"; fail "an interrupt is not an error"; }
! grep -qF -- "-1.0" "$work/run2/events.jsonl" "$work/run2.err" || fail "a placeholder value was printed"
step=$(sed 's/step-0*//' "$work/run2/ckpt/latest")
[ "$step" -ge 10 ] && [ "$step" -lt 40 ] || fail "interrupt checkpoint at step $step"
"$cairn" train "$work/tiny.yaml" --run-dir "$work/run2" --no-progress --resume --max-steps 40 \
  2> "$work/run2b.err" || { cat "$work/run2b.err"; fail "resume failed"; }
grep -q "resumed from .*step-0*$step (step $step)" "$work/run2b.err" || { cat "$work/run2b.err"; fail "did not resume from $step"; }
grep -q '"event":"checkpoint_loaded"' "$work/run2/events.jsonl" || fail "no checkpoint_loaded event"
cmp "$work/straight/ckpt/step-00000040/rank-00000.bin" "$work/run2/ckpt/step-00000040/rank-00000.bin" ||
  fail "Ctrl-C + --resume differs from the uninterrupted run"

echo "-- SIGTERM: exit 143"
slow_run "$work/term"
wait_rows "$work/term" 3
kill -TERM $pid
rc=0; wait $pid || rc=$?
[ $rc -eq 143 ] || { cat "$work/term.err"; fail "a run stopped by SIGTERM should exit 143, got $rc"; }

# slots_of RUN_DIR PID: the slots of RUN_DIR that `cairn ckpt gc --dry-run` says belong to dead PID.
slots_of() { "$cairn" ckpt gc --dry-run --run-dir "$1" 2>/dev/null | grep "owner pid $2 is gone" || true; }

echo "-- kill -9, then --resume with nothing left to train: the in-memory state is persisted, not lost"
"$cairn" train "$work/tiny.yaml" --run-dir "$work/k9" --no-progress --max-steps 100000 \
  --set ckpt.memory_interval=1 --set ckpt.persist_interval=0 2> "$work/k9.err" &
pid=$!
wait_rows "$work/k9" 20
kill -9 $pid; wait $pid 2>/dev/null || true
[ "$(slots_of "$work/k9" $pid | wc -l)" -eq 2 ] || { "$cairn" ckpt gc --dry-run; fail "the killed run should leave 2 slots"; }
[ ! -e "$work/k9/ckpt/latest" ] || fail "nothing should be on storage yet"
"$cairn" train "$work/tiny.yaml" --run-dir "$work/k9" --no-progress --resume --max-steps 5 \
  > "$work/k9b.out" 2>&1 || { cat "$work/k9b.out"; fail "resume with nothing to train should exit 0"; }
mem=$(sed -n 's/.*resumed from shared memory (step \([0-9]*\)).*/\1/p' "$work/k9b.out")
[ -n "$mem" ] && [ "$mem" -ge 19 ] || { cat "$work/k9b.out"; fail "should resume from memory at step >= 19"; }
grep -q "nothing to train: the run is at step $mem" "$work/k9b.out" || { cat "$work/k9b.out"; fail "no 'nothing to train' warning"; }
grep -q "done: step $mem (no step trained); checkpoint of step $mem in" "$work/k9b.out" ||
  { cat "$work/k9b.out"; fail "the done line must name the checkpoint really written"; }
[ "$(cat "$work/k9/ckpt/latest")" = "$(printf 'step-%08d' "$mem")" ] || fail "step $mem must be on storage"
[ -z "$(slots_of "$work/k9" $pid)" ] || fail "the slots should be gone once persisted"
"$cairn" train "$work/tiny.yaml" --run-dir "$work/k9" --no-progress --resume --max-steps $((mem + 2)) \
  2> "$work/k9c.err" || { cat "$work/k9c.err"; fail "resume from the persisted state failed"; }
grep -q "resumed from .*step-0*$mem (step $mem)" "$work/k9c.err" || { cat "$work/k9c.err"; fail "did not resume at $mem"; }

echo "-- slots of a killed run: cairn ckpt gc persists and removes them; so does the next cairn train"
# orphan_run DIR: a run killed with -9 after 8 steps; prints its pid. The checks below need
# both of its slots complete, so a run whose kill landed during a save (that slot then holds
# no complete checkpoint, which gc handles too) is cleaned up and run again.
orphan_run() {
  local p attempt
  for attempt in 1 2 3 4 5; do
    rm -rf "$1"
    "$cairn" train "$work/tiny.yaml" --run-dir "$1" --no-progress --max-steps 100000 \
      --set ckpt.memory_interval=1 --set ckpt.persist_interval=0 > /dev/null 2>&1 &  # 2 slots
    p=$!
    wait_rows "$1" 8
    kill -9 $p; wait $p 2>/dev/null || true
    if ! slots_of "$1" $p | grep -q "step - "; then echo $p; return 0; fi
    echo "   (attempt $attempt was killed during a save; again)" >&2
    "$cairn" ckpt gc --run-dir "$1" > /dev/null 2>&1 || true
  done
  fail "5 runs in a row were killed during a save"
}
p1=$(orphan_run "$work/o1")
grep -q "to persist to $work/o1/ckpt" <<< "$(slots_of "$work/o1" $p1)" || { "$cairn" ckpt gc --dry-run; fail "gc --dry-run should offer to persist o1"; }
[ "$(slots_of "$work/o1" $p1 | wc -l)" -eq 2 ] || fail "a dry run removed something"
"$cairn" ckpt gc --run-dir "$work/o1" > "$work/gc.out" 2>&1 || { cat "$work/gc.out"; fail "cairn ckpt gc failed"; }
grep -q "removed: owner pid $p1 is gone; persisted step" "$work/gc.out" || { cat "$work/gc.out"; fail "gc did not persist o1"; }
grep -q "removed: owner pid $p1 is gone; storage holds step" "$work/gc.out" || { cat "$work/gc.out"; fail "the older slot should need no write"; }
[ -e "$work/o1/ckpt/latest" ] && [ -z "$(slots_of "$work/o1" $p1)" ] || fail "o1 should be on storage, its slots gone"
p2=$(orphan_run "$work/o2")
# Within the grace period the slots are left for the run's own restart; after it, collected.
"$cairn" train "$work/tiny.yaml" --run-dir "$work/other" --no-progress --max-steps 1 > "$work/other.out" 2>&1 ||
  { cat "$work/other.out"; fail "the next run failed"; }
[ "$(slots_of "$work/o2" $p2 | wc -l)" -eq 2 ] || fail "a fresh orphan was collected within its grace period"
sleep 3
CAIRN_ORPHAN_GRACE_S=2 "$cairn" train "$work/tiny.yaml" --run-dir "$work/other2" --no-progress --max-steps 1 \
  > "$work/other2.out" 2>&1 || { cat "$work/other2.out"; fail "the next run failed"; }
grep -q "orphaned in-memory checkpoint" "$work/other2.out" || { cat "$work/other2.out"; fail "the next run did not collect o2"; }
[ -e "$work/o2/ckpt/latest" ] && [ -z "$(slots_of "$work/o2" $p2)" ] || fail "o2 should be on storage, its slots gone"

echo "-- --resume needs something to resume; --resume-or-start starts fresh"
expect_resume_error() {  # expect_resume_error PATTERN RUN_DIR
  local rc=0
  "$cairn" train "$work/tiny.yaml" --run-dir "$2" --no-progress --resume > /dev/null 2> "$work/err" || rc=$?
  [ $rc -eq 2 ] && grep -q -- "$1" "$work/err" || { cat "$work/err"; fail "--resume in $2: expected exit 2 and '$1', got $rc"; }
}
expect_resume_error "run directory $work/none does not exist" "$work/none"
[ ! -e "$work/none" ] || fail "a failed --resume created its run directory"
mkdir -p "$work/empty"
expect_resume_error "nothing to resume" "$work/empty"
mkdir -p "$work/broken" && cp -r "$work/run/ckpt" "$work/broken/ckpt"
for f in "$work"/broken/ckpt/step-*/rank-00000.bin; do
  printf '\xff\xff\xff\xff' | dd of="$f" bs=1 seek=200 conv=notrunc 2>/dev/null
done
expect_resume_error "every checkpoint in .* is broken" "$work/broken"
"$cairn" train "$work/tiny.yaml" --run-dir "$work/fresh" --no-progress --resume-or-start --max-steps 2 \
  2> "$work/fresh.err" || { cat "$work/fresh.err"; fail "--resume-or-start should start from step 0"; }
grep -q "starting from step 0" "$work/fresh.err" || fail "--resume-or-start did not say it starts fresh"

echo "-- bad input gets clear errors and exit code 2"
expect_error() {  # expect_error PATTERN ARGS...
  local pattern=$1; shift
  local rc=0
  "$cairn" "$@" > /dev/null 2> "$work/err" || rc=$?
  [ $rc -eq 2 ] || { cat "$work/err"; fail "'$*' should exit 2, got $rc"; }
  grep -q -- "$pattern" "$work/err" || { cat "$work/err"; fail "'$*' error should mention '$pattern'"; }
}
expect_error "unknown key 'model.n_layers'" train "$work/tiny.yaml" --set model.n_layers=3
expect_error "model.n_layer: 'x' is not an integer" train "$work/tiny.yaml" --set model.n_layer=x
expect_error "choose one of gpt2 | llama" train "$work/tiny.yaml" --set model.arch=bert
expect_error "no such file" train "$work/missing.yaml"
expect_error "cairn data prepare" train "$work/tiny.yaml" --set data.path="$work/nothing"
expect_error "--resume needs --run-dir" train "$work/tiny.yaml" --resume
expect_error "CAIRN_MASTER_ADDR is not set" train "$work/tiny.yaml" --no-progress \
  --run-dir "$work/dyn" --set data.sharding=dynamic
expect_error "needs parallel.zero_stage 0 or 1" train "$work/tiny.yaml" --no-progress \
  --run-dir "$work/dyn" --set data.sharding=dynamic --set parallel.zero_stage=3
expect_error "train.device 'tpu': expected cpu, cuda or cuda:N" train "$work/tiny.yaml" --set train.device=tpu
expect_error "train.device cuda: this libtorch has no CUDA support" train "$work/tiny.yaml" --set train.device=cuda
expect_error "choose one of deterministic | dynamic" train "$work/tiny.yaml" --set data.sharding=random
expect_error "expected RANK:FACTOR" train "$work/tiny.yaml" --debug-slowdown 1:0.5
expect_error "no checkpoint directory" generate --ckpt "$work/nothing" --prompt x
expect_error "unknown command 'bogus'" bogus
expect_error "is a directory" train "$work"
expect_error "is out of range: allowed 1 to" train "$work/tiny.yaml" --set train.max_steps=-1
[ "$(wc -c < "$work/err")" -lt 400 ] || { cat "$work/err"; fail "a range error should be short"; }
echo "-- a failed start leaves no run directory behind"
expect_error "cairn data prepare" train "$work/tiny.yaml" --run-dir "$work/failed" --set data.path="$work/nothing"
[ ! -e "$work/failed" ] || fail "the failed run left $work/failed"
echo "-- a corrupt token file is bad input (exit 2: cairn run does not restart it)"
mkdir -p "$work/baddata" && cp "$work/data/"*.bin "$work/baddata/"
printf 'garbage' | dd of="$work/baddata/train.bin" bs=1 seek=100 conv=notrunc 2>/dev/null
expect_error "train.bin" train "$work/tiny.yaml" --run-dir "$work/bd" --set data.path="$work/baddata"
echo "-- a model too large for memory is refused at start with the estimate"
expect_error "does not fit in memory" train "$work/tiny.yaml" --run-dir "$work/huge" \
  --set model.n_layer=96 --set model.n_embd=12288 --set model.n_head=96 --set model.block_size=2048 \
  --set train.seq_len=2048
grep -q "is available" "$work/err" || fail "the memory error should name what is available"
echo "-- small CLI matters"
"$cairn" --version | grep -q "^cairn [0-9]" || fail "cairn --version"
"$cairn" data encode --log-level warn <<< "hello" > /dev/null || fail "--log-level after the subcommand"
"$cairn" train --describe | grep -q "0000000000000" && fail "--describe prints floats at full precision"
# Outputs are read whole before grep -q, which would otherwise break the writer's pipe.
help=$("$cairn" generate --help)
grep -q "max-tokens.*100" <<< "$help" || fail "generate --help shows no defaults"
"$cairn" generate --ckpt "$work/k9/ckpt" --prompt "$(printf 'In the beginning %.0s' $(seq 1 20))" \
  --max-tokens 2 --temperature 0 2>&1 >/dev/null | grep -q "longer than the model's context" ||
  fail "a prompt longer than the context should be warned about"
echo "PASS"
