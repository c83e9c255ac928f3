#!/usr/bin/env bash
# HuggingFace interop end to end: tiny GPT-2 and LLaMA (grouped-query attention) models are
# trained, exported with `cairn ckpt export --format hf`, checked against an independent
# plain-PyTorch build of the HuggingFace module layout (tests/hf_reference.py), imported back
# (same model digest, same greedy text), and damaged exports are rejected clearly.
# Usage: hf_interop_test.sh CAIRN_BINARY
set -euo pipefail
cairn=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
source "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT
export OMP_NUM_THREADS=2

require bible
bible -f "Genesis 1:1-Revelation 22:21" > "$work/full.txt"
head -c 40000 "$work/full.txt" > "$work/kjv.txt"
"$cairn" data prepare --input "$work/kjv.txt" --out "$work/data" --val-fraction 0.1 2>/dev/null
train='train: {micro_batch_size: 4, global_batch_size: 4, seq_len: 32, max_steps: 40, lr: 1.0e-2,
        warmup_steps: 4, eval_interval: 0, eval_batches: 1}'
cat > "$work/gpt2.yaml" <<YAML
model: {arch: gpt2, n_layer: 2, n_head: 2, n_embd: 32, vocab_size: 50304, block_size: 32}
$train
data: {path: $work/data}
YAML
cat > "$work/llama.yaml" <<YAML
model: {arch: llama, n_layer: 2, n_head: 4, n_kv_head: 2, n_embd: 32, vocab_size: 50304,
        block_size: 32, norm_eps: 1.0e-6, rope_theta: 50000}
$train
data: {path: $work/data}
YAML
# "In the beginning God created the heaven and the earth. And the earth was without form,"
# plus ids from the far end of the vocabulary and a padding row.
real_ids="818 262 3726 1793 2727 262 11475 290 262 4534 13 843 262 4534 373 1231 1296 11 50000 50256"
ids="$real_ids 50300"

# The README's figure: the largest logit difference from the reference is below 3e-6 (2.4e-6
# measured for both architectures).
logit_tol=3e-6

digest() { "$cairn" ckpt inspect "$1" --digest | awk '$1 == "digest" { print $2 }'; }

for arch in gpt2 llama; do
  echo "-- $arch: train, export, compare logits with the HuggingFace-layout reference"
  "$cairn" train "$work/$arch.yaml" --run-dir "$work/run-$arch" --no-progress 2> "$work/train.err" ||
    { cat "$work/train.err"; fail "$arch: train failed"; }
  ckpt="$work/run-$arch/ckpt"
  "$cairn" ckpt export --format hf --ckpt "$ckpt" --out "$work/hf-$arch" 2> "$work/export.err" ||
    { cat "$work/export.err"; fail "$arch: export failed"; }
  "$cairn" ckpt logits --ckpt "$ckpt" --ids "$ids" --out "$work/logits-$arch.safetensors" 2>/dev/null
  /usr/bin/python3 "$here/hf_reference.py" "$work/hf-$arch" "$work/logits-$arch.safetensors" "$logit_tol" ||
    fail "$arch: HuggingFace-layout reference disagrees"

  echo "-- $arch: the padded vocabulary can be cut with --vocab-size"
  "$cairn" ckpt export --ckpt "$ckpt" --out "$work/hf-$arch-50257" --vocab-size 50257 2>/dev/null
  grep -q '"vocab_size": 50257' "$work/hf-$arch-50257/config.json" || fail "vocab_size not cut"
  "$cairn" ckpt logits --ckpt "$ckpt" --ids "$real_ids" --out "$work/real-$arch.safetensors" 2>/dev/null
  /usr/bin/python3 "$here/hf_reference.py" "$work/hf-$arch-50257" "$work/real-$arch.safetensors" "$logit_tol" ||
    fail "$arch: reference disagrees on the cut vocabulary"

  echo "-- $arch: import gives back the same model"
  "$cairn" ckpt import --format hf --in "$work/hf-$arch" --out "$work/imported-$arch" 2>/dev/null
  d1=$(digest "$ckpt")
  d2=$(digest "$work/imported-$arch")
  [ -n "$d1" ] && [ "$d1" = "$d2" ] || fail "$arch: digest changed by export + import: $d1 vs $d2"
  g1=$("$cairn" generate --ckpt "$ckpt" --prompt "And God said" --max-tokens 16 --temperature 0 2>/dev/null)
  g2=$("$cairn" generate --ckpt "$work/imported-$arch" --prompt "And God said" --max-tokens 16 --temperature 0 2>/dev/null)
  [ "$g1" = "$g2" ] || fail "$arch: greedy text differs: '$g1' vs '$g2'"
  [ ${#g1} -gt 14 ] || fail "$arch: nothing was generated: '$g1'"
  echo "   $g1"
done

echo "-- import takes train/data keys from --config and refuses to overwrite a run"
"$cairn" ckpt import --in "$work/hf-llama" --out "$work/imported-cfg" --config "$work/llama.yaml" 2>/dev/null
"$cairn" ckpt inspect "$work/imported-cfg" --config > "$work/inspect.txt"
grep -q "path: \"$work/data\"" "$work/inspect.txt" || fail "--config data.path not kept"
grep -q 'n_kv_head: 2' "$work/inspect.txt" || fail "model keys not taken from config.json"
grep -q 'state.reason *import' "$work/inspect.txt" || fail "no import reason in the state"

echo "-- bad input gets clear errors"
expect_error() {  # expect_error CODE PATTERN ARGS...
  local code=$1 pattern=$2; shift 2
  local rc=0
  "$cairn" "$@" > /dev/null 2> "$work/err" || rc=$?
  [ $rc -eq "$code" ] || { cat "$work/err"; fail "'$*' should exit $code, got $rc"; }
  grep -q -- "$pattern" "$work/err" || { cat "$work/err"; fail "'$*' error should mention '$pattern'"; }
}
expect_error 1 "already holds checkpoints" ckpt import --in "$work/hf-gpt2" --out "$work/imported-gpt2"
cp -r "$work/hf-gpt2" "$work/bad"
head -c -1000 "$work/hf-gpt2/model.safetensors" > "$work/bad/model.safetensors"
expect_error 2 "corrupt: $work/bad/model.safetensors: tensor" ckpt import --in "$work/bad" --out "$work/x1"
cp "$work/hf-gpt2/model.safetensors" "$work/bad/model.safetensors"
sed -i 's/"n_positions": 32/"n_positions": 64/' "$work/bad/config.json"
expect_error 2 "tensor 'transformer.wpe.weight' has shape \[32, 32\] but config.json implies \[64, 32\]" \
  ckpt import --in "$work/bad" --out "$work/x2"
sed -i 's/"model_type": "gpt2"/"model_type": "bert"/' "$work/bad/config.json"
expect_error 2 "model_type 'bert'" ckpt import --in "$work/bad" --out "$work/x3"
[ ! -e "$work/x1" ] && [ ! -e "$work/x2" ] && [ ! -e "$work/x3" ] || fail "a failed import left output"
expect_error 2 "no such directory" ckpt import --in "$work/nothing" --out "$work/x4"
expect_error 2 "no checkpoint directory" ckpt export --ckpt "$work/nothing" --out "$work/x5"
expect_error 2 "outside \[1, 50304\]" ckpt export --ckpt "$work/run-gpt2/ckpt" --out "$work/x6" --vocab-size 60000
step=$(ls -d "$work"/run-gpt2/ckpt/step-* | tail -1)
printf '\xff\xff\xff\xff' | dd of="$step/rank-00000.bin" bs=1 seek=200 conv=notrunc 2>/dev/null
expect_error 2 "checksum mismatch in tensor 'model\." ckpt inspect "$step" --digest
expect_error 2 "no complete checkpoint" ckpt inspect "$work/run-gpt2/ckpt" --verify
for sub in export import inspect; do
  "$cairn" ckpt $sub --help | grep "cairn ckpt $sub" > /dev/null || fail "ckpt $sub --help has no example"
done
echo "PASS"
