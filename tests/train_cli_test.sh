#!/usr/bin/env bash
# End-to-end `cairn train` / `cairn generate` on a KJV slice: logs, checkpoints, Ctrl-C and
# resume, corrupt checkpoints, bad configs. Usage: train_cli_test.sh CAIRN_BINARY
set -euo pipefail
cairn=$1
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
source "$(dirname "$0")/lib.sh"
export OMP_NUM_THREADS=2

prepare_kjv 300000
cat > "$work/tiny.yaml" <<YAML
model: {arch: gpt2, n_layer: 2, n_head: 2, n_embd: 32, vocab_size: 50304, block_size: 32}
train: {micro_batch_size: 4, global_batch_size: 8, seq_len: 32, max_steps: 30, lr: 3.0e-3,
        warmup_steps: 5, eval_interval: 10, eval_batches: 2}
ckpt: {persist_interval: 10}
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

echo "-- Ctrl-C saves a checkpoint; --resume continues from it"
"$cairn" train "$work/tiny.yaml" --run-dir "$work/run2" --no-progress --max-steps 100000 \
  2> "$work/run2.err" &
pid=$!
wait_rows "$work/run2" 12
kill -INT $pid
rc=0; wait $pid || rc=$?
[ $rc -eq 1 ] || { cat "$work/run2.err"; fail "interrupted run should exit 1, got $rc"; }
grep -q "interrupted" "$work/run2.err" || fail "no interrupted message"
step=$(sed 's/step-0*//' "$work/run2/ckpt/latest")
[ "$step" -ge 12 ] || fail "interrupt checkpoint at step $step"
"$cairn" train "$work/tiny.yaml" --run-dir "$work/run2" --no-progress --resume \
  --max-steps $((step + 3)) 2> "$work/run2b.err" || { cat "$work/run2b.err"; fail "resume failed"; }
grep -q "resumed from .*step-0*$step (step $step)" "$work/run2b.err" || { cat "$work/run2b.err"; fail "did not resume from $step"; }
grep -q '"event":"checkpoint_loaded"' "$work/run2/events.jsonl" || fail "no checkpoint_loaded event"
[ "$(tail -n1 "$work/run2/metrics.jsonl" | sed 's/.*"step":\([0-9]*\).*/\1/')" -eq $((step + 3)) ] ||
  fail "last metrics row should be step $((step + 3))"

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
expect_error "choose one of deterministic | dynamic" train "$work/tiny.yaml" --set data.sharding=random
expect_error "expected RANK:FACTOR" train "$work/tiny.yaml" --debug-slowdown 1:0.5
expect_error "no checkpoint directory" generate --ckpt "$work/nothing" --prompt x
echo "PASS"
