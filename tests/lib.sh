# Shared pieces of the shell integration tests. Source it after setting `work` (a temporary
# directory) and `cairn` (the binary), then `trap test_cleanup EXIT`.

fail() { echo "FAIL: $*" >&2; exit 1; }

# require TOOL...: fails naming the first TOOL that is not installed. A missing tool is a
# failure, never a skip: scripts/install-deps.sh (run by `make test`) installs every one.
require() {
  local t
  for t in "$@"; do
    command -v "$t" > /dev/null || fail "$t is not installed (scripts/install-deps.sh installs it)"
  done
}
# What these helpers and every test's cleanup use.
require ps awk /usr/bin/python3 timeout

# prepare_kjv BYTES: the first BYTES of the KJV text tokenized into $work/data (5% validation).
prepare_kjv() {
  require bible
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

# layout_config: $work/tiny.yaml, the small GPT-2 of the layout tests (d=32, 4 heads, 2 layers,
# global batch 8 in micro-batches of 2, 12 steps, validation at 6 and 12) on $work/data.
layout_config() {
  cat > "$work/tiny.yaml" <<YAML
model: {arch: gpt2, n_layer: 2, n_head: 4, n_embd: 32, vocab_size: 50257, block_size: 32}
train: {micro_batch_size: 2, global_batch_size: 8, seq_len: 32, max_steps: 12, lr: 3.0e-3,
        warmup_steps: 3, eval_interval: 6, eval_batches: 2}
parallel: {bucket_mb: 1}
data: {path: $work/data}
YAML
}

# compare RUN_A RUN_B [FIRST_STEP]: every step's loss (and validation loss) from FIRST_STEP on
# within 1e-5 relative.
compare() {
  /usr/bin/python3 - "$1/metrics.jsonl" "$2/metrics.jsonl" "${3:-1}" <<'PY'
import json, sys
first = int(sys.argv[3])
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
a = {r["step"]: r for r in a if r["step"] >= first}
b = {r["step"]: r for r in b if r["step"] >= first}
assert sorted(a) == sorted(b) and a, (sorted(a), sorted(b))
for s in sorted(a):
    x, y = a[s], b[s]
    rel = abs(x["loss"] - y["loss"]) / abs(x["loss"])
    assert rel < 1e-5, f"step {s}: {x['loss']} vs {y['loss']} (rel {rel:.2e})"
    if "val_loss" in x or "val_loss" in y:
        assert abs(x["val_loss"] - y["val_loss"]) / x["val_loss"] < 1e-5, f"val_loss at {s}"
PY
}

# free_port: a TCP port on 127.0.0.1 that the kernel reports free (bound to port 0, then
# closed), for a master or an agent the test starts next. Never invent one from $$: ports
# from 32768 up are the kernel's ephemeral range, handed to other tests' connections.
free_port() {
  /usr/bin/python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# http_request METHOD URL PATH CODE [HEADER]: the body of METHOD URL/PATH (a POST sends an empty
# body; HEADER as "Name: value"); fails naming the status and body unless it answers CODE.
http_request() {
  /usr/bin/python3 - "$@" <<'PY'
import sys, urllib.request, urllib.error
method, base, path, want = sys.argv[1], sys.argv[2].rstrip("/"), sys.argv[3], int(sys.argv[4])
req = urllib.request.Request(base + path, method=method, data=b"" if method == "POST" else None)
if len(sys.argv) > 5:
    k, v = sys.argv[5].split(": ", 1)
    req.add_header(k, v)
try:
    r = urllib.request.urlopen(req, timeout=10)
    code, body = r.status, r.read().decode()
except urllib.error.HTTPError as e:
    code, body = e.code, e.read().decode()
if code != want:
    sys.exit(f"{method} {path}: HTTP {code}, wanted {want}: {body[:300]}")
sys.stdout.write(body)
PY
}

# build_consumer PREFIX: builds tests/package_consumer against the cairn package installed
# under PREFIX (find_package(cairn)) in $work/consumer and checks what it prints.
build_consumer() {
  local out
  cp -r "$(dirname "${BASH_SOURCE[0]}")/package_consumer" "$work/consumer"
  cmake -S "$work/consumer" -B "$work/consumer/build" -G Ninja -DCMAKE_PREFIX_PATH="$1" \
    -DCMAKE_BUILD_TYPE=Release > "$work/configure.log" 2>&1 ||
    { cat "$work/configure.log"; fail "find_package(cairn) under $1"; }
  ninja -C "$work/consumer/build" > "$work/build.log" 2>&1 ||
    { cat "$work/build.log"; fail "building against the package under $1"; }
  out=$("$work/consumer/build/consumer")
  [ "$out" = "pp=1 dp=2 cp=1 tp=1, ZeRO-1, 4 blocks: valid" ] || fail "consumer printed: $out"
}

# start_dashboard RUN_DIR: starts `cairn dashboard RUN_DIR --port 0` in the background (its
# output in $work/dash.out) and sets `dash` to its pid and `url` to the address it printed.
start_dashboard() {
  "$cairn" dashboard "$1" --port 0 > "$work/dash.out" 2> "$work/dash.err" &
  dash=$!
  for _ in $(seq 1 100); do grep -q "^cairn dashboard: http" "$work/dash.out" && break; sleep 0.1; done
  url=$(sed -n 's/^cairn dashboard: \(http[^ ]*\) .*/\1/p' "$work/dash.out")
  [ -n "$url" ] || { cat "$work/dash.out" "$work/dash.err"; fail "the dashboard printed no address"; }
}

# wait_rows RUN_DIR N [PID]: waits (at most 60 s) until RUN_DIR/metrics.jsonl has N rows
# (returns 0), or until process PID (the run's `cairn run`) has exited (returns 0: the caller
# checks how it ended). On the timeout it says what it waited for and returns 1.
wait_rows() {
  local rows=0
  for _ in $(seq 1 600); do
    [ -f "$1/metrics.jsonl" ] && rows=$(wc -l < "$1/metrics.jsonl")
    [ "$rows" -ge "$2" ] && return 0
    [ -z "${3:-}" ] || kill -0 "$3" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "wait_rows: $1/metrics.jsonl has $rows row(s) after 60 s, waited for $2" >&2
  return 1
}

# last_step RUN_DIR: the step of RUN_DIR/metrics.jsonl's last row.
# start_step RUN_DIR: the step the newest start event of RUN_DIR/events.jsonl started from.
last_step() {
  tail -n 1 "$1/metrics.jsonl" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["step"])'
}
start_step() {
  grep '"event":"start"' "$1/events.jsonl" | tail -n 1 |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["step"])'
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

# kill_worker_and_finish RUN_DIR STEP OUT: once the run in RUN_DIR (its `cairn run` is $agent,
# its output OUT) has STEP metrics rows, SIGKILLs its newest worker and waits for the job; fails
# unless it then finishes with exit 0. Clears $agent.
kill_worker_and_finish() {
  local run=$1 step=$2 out=$3 victim rc=0
  wait_rows "$run" "$step" || { tail -n 30 "$out"; fail "no step $step to kill a worker at"; }
  victim=$(worker_pids "$run" | tail -n 1)
  [ -n "$victim" ] || fail "no worker to kill"
  kill -9 "$victim"
  wait "$agent" || rc=$?
  agent=
  [ $rc -eq 0 ] || { tail -30 "$out"; fail "the job should finish after the restart (exit $rc)"; }
}

# test_processes: the processes of this test, one pid per line: every process below this shell
# and any whose command line names $work/ (a worker whose agent died first). Use it as
# $(test_processes): the subshell that lists them, and what it runs, are left out.
test_processes() {
  ps -e -o pid=,ppid=,args= | awk -v root=$$ -v self="$BASHPID" -v w="${work:+$work/}" '
    $1 == self || $2 == self || $1 == root { next }
    { kids[$2] = kids[$2] " " $1 }
    w != "" && index($0, w) { print $1 }
    END {
      n = split(kids[root], q, " ")
      for (i = 1; i <= n; i++) { print q[i]; m = split(kids[q[i]], c, " "); for (j = 1; j <= m; j++) q[++n] = c[j] }
    }' | sort -u
}

# shm_segments DIR: the /dev/shm segments (flash-checkpoint slots /cairn-<hash>-r<rank>-<i> and
# progress pages /cairn-<hash>-p<rank>) of every run directory at or below DIR; <hash> is the
# FNV-1a hash of the directory's absolute path (elastic::flash_slot_name).
shm_segments() {
  /usr/bin/python3 - "$1" <<'PY'
import os, sys
prefixes = set()
for root, dirs, files in os.walk(sys.argv[1]):
    h = 1469598103934665603
    for c in os.path.normpath(os.path.abspath(root)).encode():
        h = ((h ^ c) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    prefixes.add("cairn-%012x-" % (h & 0xFFFFFFFFFFFF))
for name in sorted(os.listdir("/dev/shm")):
    if name[:19] in prefixes:
        print("/dev/shm/" + name)
PY
}

# test_cleanup [STATUS]: a test's EXIT trap. Kills every process the test started (everything
# below this shell, and anything whose command line names $work: a worker whose agent died
# first), removes the shared-memory segments of the run directories under $work (they outlive
# a killed agent), then $work itself unless KEEP is set. Returns STATUS (default: the exit
# status the trap was entered with), so the test keeps it.
test_cleanup() {
  local rc=${1:-$?} pids segs
  disown -a 2>/dev/null || true  # no "Killed" line per background job
  for _ in 1 2 3 4 5; do
    pids=$(test_processes || true)
    [ -n "$pids" ] || break
    kill -STOP $pids 2>/dev/null || true  # nobody forks, restarts or reaps meanwhile
    pids="$pids $(test_processes || true)"
    kill -9 $pids 2>/dev/null || true
    sleep 0.1
  done
  if [ -n "${work:-}" ] && [ -d "$work" ]; then
    segs=$(shm_segments "$work" 2>/dev/null || true)
    if [ -n "$segs" ]; then
      echo "cleanup: removing $(echo "$segs" | wc -l) shared-memory segment(s) of this test's runs:" $segs >&2
      rm -f $segs
    fi
    if [ -n "${KEEP:-}" ]; then echo "cleanup: kept $work" >&2; else rm -rf "$work"; fi
  fi
  return $rc
}

# make_certs DIR SAN...: a job CA (DIR/ca.pem, ca.key) and, signed by it, DIR/node.pem + node.key
# for the subject alternative names SAN... (e.g. IP:10.0.0.1 DNS:localhost), usable by the
# master (server) and by every node (client certificate for mutual TLS); DIR/other-ca.pem and
# DIR/other.pem + other.key from a second, unrelated CA.
make_certs() {
  local dir=$1; shift
  require openssl
  mkdir -p "$dir"
  local san; san=$(IFS=,; echo "$*")
  for ca in ca other-ca; do
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=cairn-test-$ca" \
      -keyout "$dir/$ca.key" -out "$dir/$ca.pem" 2>> "$dir/openssl.log"
  done
  printf 'subjectAltName=%s\n' "$san" > "$dir/san.ext"
  for leaf in node:ca other:other-ca; do
    local name=${leaf%%:*} ca=${leaf#*:}
    openssl req -newkey rsa:2048 -nodes -subj "/CN=cairn-test-$name" -keyout "$dir/$name.key" \
      -out "$dir/$name.csr" 2>> "$dir/openssl.log"
    openssl x509 -req -days 2 -in "$dir/$name.csr" -CA "$dir/$ca.pem" -CAkey "$dir/$ca.key" \
      -CAcreateserial -extfile "$dir/san.ext" -out "$dir/$name.pem" 2>> "$dir/openssl.log"
  done
  chmod 600 "$dir"/*.key
}
