# Shared pieces of the shell integration tests. Source it after setting `work` (a temporary
# directory) and `cairn` (the binary).

fail() { echo "FAIL: $*" >&2; exit 1; }

# prepare_kjv BYTES: the first BYTES of the KJV text tokenized into $work/data (5% validation).
prepare_kjv() {
  bible -f "Genesis 1:1-Revelation 22:21" > "$work/full.txt"
  head -c "$1" "$work/full.txt" > "$work/kjv.txt"
  "$cairn" data prepare --input "$work/kjv.txt" --out "$work/data" --val-fraction 0.05 2>/dev/null
}

# flash_config STEPS [CKPT]: $work/tiny.yaml, the small GPT-2 of the flash-checkpoint, hang and
# chaos tests (d=64, 2 layers, global batch 8 in micro-batches of 4) trained STEPS steps on
# $work/data, with `ckpt: CKPT` (default: an in-memory checkpoint every step).
flash_config() {
  cat > "$work/tiny.yaml" <<YAML
model: {arch: gpt2, n_layer: 2, n_head: 2, n_embd: 64, vocab_size: 50304, block_size: 32}
train: {micro_batch_size: 4, global_batch_size: 8, seq_len: 32, max_steps: $1, lr: 3.0e-3,
        warmup_steps: 5, eval_interval: 0, eval_batches: 2}
ckpt: ${2:-{memory_interval: 1\}}
data: {path: $work/data}
YAML
}

# wait_rows RUN_DIR N [PID]: waits (at most 60 s) until RUN_DIR/metrics.jsonl has N rows, or
# until process PID (the run's `cairn run`) has exited.
wait_rows() {
  for _ in $(seq 1 600); do
    [ -f "$1/metrics.jsonl" ] && [ "$(wc -l < "$1/metrics.jsonl")" -ge "$2" ] && return 0
    [ -z "${3:-}" ] || kill -0 "$3" 2>/dev/null || return 0
    sleep 0.1
  done
  return 0  # the caller's next check reports what is missing
}

# worker_pids RUN_DIR: the live workers of the newest round of `cairn run --run-dir RUN_DIR`,
# as its workers_started event names them (a warm standby beside them is not one of them, and
# an activated standby's /proc/PID/environ has no RANK).
worker_pids() {
  local p
  for p in $(grep '"event":"workers_started"' "$1/events.jsonl" 2>/dev/null | tail -n 1 |
             grep -o '"pids":{[^}]*}' | grep -o ':[0-9]*' | tr -d ':'); do
    kill -0 "$p" 2>/dev/null && echo "$p"
  done
  return 0
}

# kill_tree PID: kill -9 the workers, the agent and timeout itself (for a test's cleanup).
kill_tree() {
  for p in $(pgrep -P "$(pgrep -P "$1" | head -n 1)" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
  pkill -9 -P "$1" 2>/dev/null || true
  kill -9 "$1" 2>/dev/null || true
}
