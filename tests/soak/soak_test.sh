#!/usr/bin/env bash
# Soak test: a 2-node elastic job (each node a network namespace on a bridge, the master alone in
# a third; mutual TLS) of the small GPT-2 with an in-memory checkpoint every step, trained through
# a seeded schedule of faults: kill -9 of a worker, of a whole node (its agent restarted after a
# pause, its /dev/shm kept or lost), of the master (restarted from its journal), SIGSTOP of a
# worker (the hang detector restarts it), a full /dev/shm, the checkpoint directory read-only for
# a while, the newest persisted checkpoint corrupted (then a node's memory lost, so that the
# restart must read storage) and a network partition (a node's link down for a few seconds).
#  run 1, deterministic sharding: the final parameters are bit-identical (digest) to an
#         uninterrupted run of the same steps at the same world, the losses the same;
#  run 2, dynamic sharding (the master's shard service): one epoch, every sample trained once.
# After each run: no process left, /dev/shm empty, the final checkpoint verifies. At the end it
# prints (and writes to $work/summary.md) the recovery time per fault kind, the goodput and the
# seed.
# Everything runs in a private mount namespace with its own small tmpfs on /dev/shm, so a full
# /dev/shm costs little memory and touches no other process of the machine.
# Needs root (mount and network namespaces). Not part of the default ctest run (make soak).
# Usage: soak_test.sh CAIRN
#   CAIRN_SOAK_SEED=N    replays the schedule printed as "seed N"
#   CAIRN_SOAK_FAULTS=N  faults over both runs (default 110: 6/11 in run 1, the rest in run 2)
#   CAIRN_SOAK_STEPS=N   about the steps of each run (default 22 per fault of run 1 + 100;
#                        the data is one epoch of them)
#   KEEP=1               keep the work directory
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cairn=$(readlink -f "$1")

# Into a private mount namespace first (the same script again, as the same process).
if [ "${CAIRN_SOAK_MOUNTNS:-}" != 1 ]; then
  [ "$(id -u)" = 0 ] || { echo "FAIL: the soak test needs root (mount and network namespaces)" >&2; exit 1; }
  command -v unshare > /dev/null || { echo "FAIL: unshare is not installed" >&2; exit 1; }
  CAIRN_SOAK_MOUNTNS=1 exec unshare --mount --propagation private "$BASH" "$0" "$@"
fi

t_start=$(date +%s)
work=$(mktemp -d /tmp/cairn-soak.XXXXXX)
ns=sk$$
source "$here/../lib.sh"
require ip mount umount nsenter fallocate
[ "$(readlink /proc/self/ns/mnt)" != "$(readlink /proc/1/ns/mnt)" ] ||
  fail "not in a mount namespace of its own"

shm_mb=192  # the private /dev/shm: each run's slots take ~110 MB (2 ranks x 2 slots)
mount -t tmpfs -o size=${shm_mb}m,mode=1777 soak-shm /dev/shm
# $work is a mount point of its own, shared: what is mounted below it later (the read-only
# checkpoint directory) reaches the namespaces `ip netns exec` makes (slaves of this one).
mount --bind "$work" "$work"
mount --make-shared "$work"

cleanup() {
  local rc=$? summary=
  set +e
  for h in m a b; do ip netns pids $ns$h 2>/dev/null | xargs -r kill -9 2>/dev/null; done
  while grep -q " $work/" /proc/self/mounts; do  # a read-only bind left by a failure
    umount -l "$(grep " $work/" /proc/self/mounts | tail -n 1 | cut -d' ' -f2)" || break
  done
  rm -f /dev/shm/soak-fill
  [ -f "$work/summary.md" ] && summary=$(cat "$work/summary.md")
  test_cleanup $rc > /dev/null 2>&1  # every other process, the slots; $work unless KEEP
  if [ -n "${KEEP:-}" ]; then
    echo "cleanup: kept $work" >&2
  else
    umount -l "$work" 2>/dev/null; rm -rf "$work"
    # The summary outlives the rest of the work directory.
    [ -z "$summary" ] || { mkdir -p "$work"; printf '%s\n' "$summary" > "$work/summary.md"; }
  fi
  for h in m a b; do ip netns del $ns$h 2>/dev/null; done
  return $rc
}
trap cleanup EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export CAIRN_JOB_TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')

seed=${CAIRN_SOAK_SEED:-$RANDOM}
nfaults=${CAIRN_SOAK_FAULTS:-110}
n1=$((nfaults * 6 / 11)); n2=$((nfaults - n1))
# About 22 steps per fault of run 1: a fault lets the job go on ~15 steps (while storage is
# read-only, a partition is short, /dev/shm is freed), plus the way to its planned step.
steps=${CAIRN_SOAK_STEPS:-$((n1 * 22 + 100))}
echo "seed $seed (CAIRN_SOAK_SEED=$seed replays this schedule); $nfaults faults: $n1 in run 1, $n2 in run 2"
echo "work directory $work"

echo "-- three hosts: $ns{m,a,b} on a bridge, 10.78.$(( $$ % 200 )).{1,2,3}"
net=10.78.$(( $$ % 200 ))
for h in m a b; do ip netns add $ns$h; ip -n $ns$h link set lo up; done
ip -n ${ns}m link add br0 type bridge
ip -n ${ns}m addr add $net.1/24 dev br0
ip -n ${ns}m link set br0 up
i=2
for h in a b; do
  ip link add v$ns$h type veth peer name b$ns$h
  ip link set v$ns$h netns $ns$h
  ip link set b$ns$h netns ${ns}m
  ip -n ${ns}m link set b$ns$h master br0
  ip -n ${ns}m link set b$ns$h up
  ip -n $ns$h addr add $net.$i/24 dev v$ns$h
  ip -n $ns$h link set v$ns$h up
  i=$((i + 1))
done
make_certs "$work/tls" IP:$net.1
tls=(--tls-ca "$work/tls/ca.pem" --tls-cert "$work/tls/node.pem" --tls-key "$work/tls/node.key")

# One epoch of the data is about CAIRN_SOAK_STEPS steps of 8 samples of 32 tokens; the runs
# train exactly one epoch (what dynamic sharding hands out once).
prepare_kjv $((steps * 8 * 32 * 4)) || fail "preparing the KJV data failed"
tokens=$(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['train']['tokens'])" "$work/data/meta.json")
samples=$(( (tokens - 1) / 32 ))
steps=$((samples / 8))
echo "   $samples samples of 32 tokens: one epoch is $steps steps of 8"

source "$here/faults.sh"

# start_master DIR: the master in its namespace, journal DIR/master.journal (appended across
# its restarts); sets `master`. --max-node-failures 0: the schedule hangs the same nodes' workers
# again and again on purpose, and excluding a node of this 2:2 job would end it (that the master
# charges a failure only to the node whose worker hung is checked instead, by report.py).
start_master() {
  ip netns exec ${ns}m "$cairn" master --host $net.1 --port 29400 --nnodes 2:2 --rdzv-wait 2 \
    --heartbeat-timeout 5 --max-node-failures 0 --journal "$1/master.journal" --run-dir "$1/master" \
    --tls-cert "$work/tls/node.pem" --tls-key "$work/tls/node.key" \
    --tls-client-ca "$work/tls/ca.pem" >> "$1/master.out" 2>&1 &
  master=$!
}
# start_host DIR a|b: that node's agent in its namespace; sets agent_a / agent_b.
start_host() {
  ip netns exec $ns$2 "$cairn" run --rdzv-backend cairn --rdzv-endpoint $net.1:29400 \
    --nnodes 2:2 "${tls[@]}" --heartbeat-timeout 5 --node-id host-$2 --max-restarts 100000 \
    --hang-timeout 5 --grace-period 2 --run-dir "$1/$2" --nproc-per-node 1 -- \
    "$cairn" train "$1/job.yaml" --no-progress --resume-or-start "${train_args[@]}" \
    >> "$1/$2.out" 2>&1 &
  eval "agent_$2=$!"
}
wait_log() {  # wait_log SECONDS FILE PATTERN
  for _ in $(seq 1 $(($1 * 10))); do grep -q "$3" "$2" 2>/dev/null && return 0; sleep 0.1; done
  evidence; fail "no '$3' in $2 within $1 s"
}
# newest: the newest step row of the job (rank 0 appends them to its node's run directory, and
# rank 0 may be either node), as "STEP TIME"; "0 0" before the first. A line being appended
# (no closing brace yet) is not read.
newest() {
  local f best_t=0 best_s=0 line s t
  for f in "$dir"/a/metrics.jsonl "$dir"/b/metrics.jsonl; do
    [ -s "$f" ] || continue
    line=$(tail -n 2 "$f" | grep '}$' | tail -n 1)
    s=$(echo "$line" | sed -n 's/.*"step":\([0-9]*\).*/\1/p')
    t=$(echo "$line" | sed -n 's/.*"time":\([0-9.]*\).*/\1/p')
    [ -n "$s" ] && [ -n "$t" ] || continue
    if awk -v a="$t" -v b="$best_t" 'BEGIN { exit !(a > b) }'; then best_t=$t best_s=$s; fi
  done
  echo "$best_s $best_t"
}
newest_step() { local x; x=$(newest); echo "${x% *}"; }
# alive: both agents are running.
alive() { kill -0 "$agent_a" 2>/dev/null && kill -0 "$agent_b" 2>/dev/null; }
# leftovers: the processes below this shell or naming $work/, as "PID PPID ARGS" lines (lib.sh's
# test_processes, run in $(...), also lists the pipeline that lists them). Call it in this
# shell, not in $(...); the snapshot is taken first, so that what reads it is not in it.
leftovers() {
  ps -e -o pid=,ppid=,args= > "$work/ps.txt"
  awk -v root=$$ -v w="$work/" '
    $3 == "ps" && $4 == "-e" { next }
    { line[$1] = $0; kids[$2] = kids[$2] " " $1; if ($1 != root && index($0, w)) hit[$1] = 1 }
    END {
      n = split(kids[root], q, " ")
      for (i = 1; i <= n; i++) { hit[q[i]] = 1; m = split(kids[q[i]], c, " "); for (j = 1; j <= m; j++) q[++n] = c[j] }
      for (p in hit) print line[p]
    }' "$work/ps.txt"
}
evidence() {  # what happened in the current run, for a failure report (never fails itself)
  set +e
  {
    echo "=== seed $seed (CAIRN_SOAK_SEED=$seed replays the schedule), run $dir"
    tail -n 12 "$dir/faults.tsv" 2>/dev/null
    for h in a b; do
      echo "=== $h: events (without checkpoint_saved/persisted)"
      grep -v -e '"event":"checkpoint_saved"' -e '"event":"checkpoint_persisted"' "$dir/$h/events.jsonl" | tail -n 15
      echo "=== $h.out (last 25 lines)"; tail -n 25 "$dir/$h.out"
      for f in "$dir/$h"/logs/worker-*.log; do [ -f "$f" ] && { echo "=== $f"; tail -n 12 "$f"; }; done
    done
    echo "=== master.out (last 15 lines)"; tail -n 15 "$dir/master.out"
    echo "=== /dev/shm"; ls -la /dev/shm
  } >&2
  set -e
}

# run_job NAME FAULTS [TRAIN_ARGS...]: one job of `steps` steps under FAULTS faults of the
# schedule (0: uninterrupted). The job's directory is $work/NAME (`dir`); its faults are in
# $dir/faults.tsv. Checks that it finished, left no process and nothing in /dev/shm.
run_job() {
  local name=$1 n=$2
  dir=$work/$1
  shift 2
  train_args=("$@")
  mkdir -p "$dir"
  flash_config "$steps" "{memory_interval: 1, persist_interval: 10, keep_last: 3, dir: $dir/ckpt}"
  mv "$work/tiny.yaml" "$dir/job.yaml"
  date +%s.%N > "$dir/t_start"
  start_master "$dir"
  wait_log 30 "$dir/master.out" "serving on"
  start_host "$dir" a  # host a joins first: rank 0 in the first round
  wait_log 30 "$dir/master.out" "node host-a .* joined"
  start_host "$dir" b
  [ "$n" -eq 0 ] || run_faults "$n"
  # The end: both agents exit 0 (the last of each host's agents).
  local end=$((SECONDS + 300)) rc
  while { kill -0 "$agent_a" 2>/dev/null || kill -0 "$agent_b" 2>/dev/null; } && [ $SECONDS -lt $end ]; do
    sleep 0.5
  done
  if kill -0 "$agent_a" 2>/dev/null || kill -0 "$agent_b" 2>/dev/null; then
    evidence; fail "$name: the job did not finish within 300 s of its last fault"
  fi
  date +%s.%N > "$dir/t_end"
  for h in a b; do
    rc=0; wait "$(eval echo \$agent_$h)" || rc=$?
    [ $rc -eq 0 ] || { evidence; fail "$name: host $h's agent exited $rc"; }
  done
  kill -TERM "$master" 2>/dev/null || true
  rc=0; wait "$master" || rc=$?
  [ "$(cat "$dir/ckpt/latest")" = "$(printf 'step-%08d' "$steps")" ] || fail "$name: the job did not reach step $steps"
  "$cairn" ckpt inspect "$dir/ckpt" --verify > "$dir/verify.out" || fail "$name: the final checkpoint does not verify"
  /usr/bin/python3 "$here/report.py" merge "$dir"
  echo "   $name: finished in $(awk -v a="$(cat "$dir/t_start")" -v b="$(cat "$dir/t_end")" 'BEGIN { printf "%.0f", b - a }') s, $(wc -l < "$dir/merged/metrics.jsonl") step rows; the final checkpoint verifies"
  sleep 1
  leftovers > "$dir/left.txt"  # not in $(...): that subshell would be below this shell
  [ ! -s "$dir/left.txt" ] || { cat "$dir/left.txt" >&2; fail "$name: processes left behind"; }
  for h in m a b; do
    [ -z "$(ip netns pids $ns$h)" ] || fail "$name: processes left in namespace $ns$h: $(ip netns pids $ns$h | tr '\n' ' ')"
  done
  local left
  left=$(ls -A /dev/shm)
  [ -z "$left" ] || { ls -la /dev/shm >&2; fail "$name: left in /dev/shm: $left"; }
  echo "   $name: no process left, /dev/shm empty"
}

RANDOM=$seed  # the schedule is drawn from the seed alone
{ make_schedule det "$n1" 30 $((steps - 60)); make_schedule dyn "$n2" 30 $((steps - 60)); } > "$work/schedule.tsv"
echo "   schedule: $(cut -f3 "$work/schedule.tsv" | sort | uniq -c | awk '{ printf "%s%s %d", (NR > 1 ? ", " : ""), $2, $1 }')"

echo "-- reference: $steps steps uninterrupted (2 nodes, deterministic sharding)"
run_job ref 0
echo "-- run 1: $steps steps, $n1 faults (deterministic sharding)"
run_job det "$n1"
compare "$work/ref/merged" "$work/det/merged" || fail "run 1's losses differ from the uninterrupted run's (seed $seed)"
echo "   run 1's loss at every step equals the uninterrupted run's"
echo "-- run 2: $steps steps = one epoch, $n2 faults (dynamic sharding)"
run_job dyn "$n2" --set data.sharding=dynamic --set data.log_sample_ids=true

echo "-- checks"
/usr/bin/python3 "$here/report.py" check "$work" "$steps" "$samples" || fail "see above (seed $seed)"
da=$("$cairn" ckpt inspect "$work/ref/ckpt" --digest | sed -n 's/^digest *//p')
db=$("$cairn" ckpt inspect "$work/det/ckpt" --digest | sed -n 's/^digest *//p')
[ -n "$da" ] && [ "$da" = "$db" ] || fail "parameter digests differ: uninterrupted '$da', run 1 '$db' (seed $seed)"
echo "   run 1's final parameters equal the uninterrupted run's: $db"
/usr/bin/python3 "$here/report.py" summary "$work" "$steps" "$samples" "$seed" "$db" \
  $(( $(date +%s) - t_start )) > "$work/summary.md" || fail "no summary"
cat "$work/summary.md"
echo "summary written to $work/summary.md (kept when the rest of $work is removed)"
echo "PASS"
