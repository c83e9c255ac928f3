#!/usr/bin/env bash
# Elastic training across "hosts": three network namespaces on one bridge (the master alone in
# one, a cairn run agent in each of the other two), a shared checkpoint directory. Kill a whole
# host: the job shrinks to one node and goes on from the newest checkpoint; bring the host
# back: the job grows to two nodes again; it finishes with every step trained.
# With TP > 1 every host runs one tensor-parallel group of TP ranks (parallel.tp=TP): the world
# goes 2·TP -> TP -> 2·TP and the data-parallel size 2 -> 1 -> 2, resharded from the checkpoint.
# With PLAN=auto (parallel.plan=auto, TP ranks per host) the planner picks the layout at each
# start: the world's change is re-planned (events.jsonl "plan": replanned, the previous world's
# plan and the new one), the machine profiled once and the profile reused.
# With PLAN=pp (parallel.pp=2, TP ranks per host) each host holds a whole pipeline's stages or
# shares them with the other: pp2 x dp2 on 4 ranks, pp2 on the 2 left, pp2 x dp2 again, each
# start building its stage's part and loading its tensors from the same checkpoints.
# The master serves mutual TLS (every agent shows a certificate of the job's CA); an agent
# without one, or one that trusts another CA, is refused, and no log holds the job token.
# Needs root (ip netns). Usage: elastic_netns_test.sh CAIRN [TP [PLAN]]
set -euo pipefail
cairn=$1
tp=${2:-1}
plan=${3:-}
w1=$tp w2=$((2 * tp))
total=$((tp > 1 ? 150 : 240))  # steps: the tp variant's are slower (twice the processes)
last=$(printf "step-%08d" $total)
work=$(mktemp -d)
ns=cn$$
pids=()
source "$(dirname "$0")/lib.sh"
cleanup() {
  local rc=$?
  for h in m a b; do ip netns pids $ns$h 2>/dev/null | xargs -r kill -9 2>/dev/null || true; done
  test_cleanup $rc  # every other process of the test, the slots, $work
  for h in m a b; do ip netns del $ns$h 2>/dev/null || true; done
  return $rc
}
trap cleanup EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 CAIRN_JOB_TOKEN=netns-test-token
require ip
[ "$(id -u)" = 0 ] || fail "network namespaces need root"

echo "-- three hosts: $ns{m,a,b} on a bridge, 10.77.$(( $$ % 200 )).{1,2,3}"
net=10.77.$(( $$ % 200 ))
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

prepare_kjv 200000
cat > "$work/job.yaml" <<YAML
model: {arch: gpt2, n_layer: 2, n_head: 4, n_embd: 128, vocab_size: 50304, block_size: 64}
train: {micro_batch_size: 4, global_batch_size: 8, seq_len: 64, max_steps: $total, lr: 2.0e-3,
        warmup_steps: 10, eval_interval: 0, eval_batches: 2}
ckpt: {persist_interval: 10, memory_interval: 1, keep_last: 3, dir: $work/ckpt}
parallel: {tp: $tp}
data: {path: $work/data}
YAML
plan_flags=()
if [ "$plan" = pp ]; then
  sed -i 's/^parallel: .*$/parallel: {pp: 2}/' "$work/job.yaml"
fi
if [ "$plan" = auto ]; then
  sed -i 's/^parallel: .*$/parallel: {}/' "$work/job.yaml"
  plan_flags=(--plan auto --plan-cache "$work/cache")
fi

make_certs "$work/tls" IP:$net.1
tls=(--tls-ca "$work/tls/ca.pem" --tls-cert "$work/tls/node.pem" --tls-key "$work/tls/node.key")
start_master() {
  ip netns exec ${ns}m "$cairn" master --host $net.1 --port 29400 --nnodes 1:2 --rdzv-wait 2 \
    --heartbeat-timeout 5 --journal "$work/master.journal" --tls-cert "$work/tls/node.pem" \
    --tls-key "$work/tls/node.key" --tls-client-ca "$work/tls/ca.pem" >> "$work/master.out" 2>&1 &
  master=$!
  pids+=($master)
}
start_master
wait_master() {  # wait_master SECONDS PATTERN: waits until master.out has a line matching PATTERN
  for _ in $(seq 1 $(($1 * 10))); do grep -q "$2" "$work/master.out" && return 0; sleep 0.1; done
  cat "$work/master.out"; fail "the master did not log '$2' within $1 s"
}
wait_master 30 "serving on"
grep -q "client certificates required" "$work/master.out" || fail "the master does not ask for client certificates"

echo "-- agents the master must refuse: plaintext, no client certificate, another CA"
refused() {  # refused NAME WHAT FLAGS...: an agent of host a with FLAGS exits 1, its log says WHAT
  local name=$1 what=$2; shift 2
  local rc=0
  timeout -k 5 60 ip netns exec ${ns}a "$cairn" run --rdzv-backend cairn \
    --rdzv-endpoint $net.1:29400 --node-id intruder "$@" --run-dir "$work/$name" -- true \
    > "$work/$name.out" 2>&1 || rc=$?
  [ $rc -ne 0 ] || fail "the agent with $name was let in"
  grep -q "$what" "$work/$name.out" || { cat "$work/$name.out"; fail "$name: no '$what' in its error"; }
}
if [ "$tp" = 1 ]; then  # once is enough: the tp variants run the same master
  refused plaintext "in plaintext" --nnodes 1:2
  refused wrong-ca "TLS handshake with the master" --nnodes 1:2 --tls-ca "$work/tls/other-ca.pem" \
    --tls-cert "$work/tls/node.pem" --tls-key "$work/tls/node.key"
  # The master closes the handshake: the agent waits (saying why) until --rdzv-timeout.
  refused no-client-cert "within 4 s: .*Socket closed" --nnodes 1:2 --rdzv-timeout 4 \
    --tls-ca "$work/tls/ca.pem"
  refused other-ca "within 4 s: .*Socket closed" --nnodes 1:2 --rdzv-timeout 4 \
    --tls-ca "$work/tls/ca.pem" --tls-cert "$work/tls/other.pem" --tls-key "$work/tls/other.key"
  ! grep -q "intruder" "$work/master.out" || fail "a refused agent reached the master's service"
fi

start_host() {  # start_host a|b: this host's agent in its namespace
  ip netns exec $ns$1 "$cairn" run --rdzv-backend cairn --rdzv-endpoint $net.1:29400 --nnodes 1:2 \
    "${tls[@]}" \
    --heartbeat-timeout 5 --node-id host-$1 --max-restarts 5 --grace-period 3 --run-dir "$work/$1" \
    --nproc-per-node $tp -- \
    "$cairn" train "$work/job.yaml" --no-progress --resume-or-start "${plan_flags[@]}" \
    >> "$work/$1.out" 2>&1 &
  pids+=($!)
  eval "agent_$1=$!"
}
# Host a joins first, so it is rank 0 (and writes metrics.jsonl) in every round: sorted ids
# in the first round if b makes it in time, a survivor's place otherwise.
start_host a
wait_master 30 "node host-a .* joined"
start_host b
# starts WORLD: how many times a worker group of WORLD ranks started, over both hosts' logs.
starts() { cat "$work"/a/events.jsonl "$work"/b/events.jsonl 2>/dev/null |
           grep '"event":"start"' | grep -c "\"world_size\":$1" || true; }
steps() { cat "$work"/a/metrics.jsonl 2>/dev/null | tail -n 1 | sed 's/.*"step":\([0-9]*\).*/\1/'; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local t=$1 what=$2; shift 2
  for _ in $(seq 1 $((t * 10))); do "$@" && return 0; sleep 0.1; done
  tail -n 20 "$work/a.out" "$work/b.out" "$work/master.out"; fail "timed out waiting for $what"
}
wait_for 120 "training at world $w2" sh -c "[ \$(cat $work/a/metrics.jsonl 2>/dev/null | wc -l) -ge 30 ]"
[ "$(starts $w2)" -ge 1 ] || fail "the job did not start at world $w2"
echo "   world $w2 at step $(steps)"

echo "-- kill host b (every process in its namespace)"
ip netns pids ${ns}b | xargs -r kill -9
at_kill=$(steps)
wait_for 120 "the job to shrink to world $w1" sh -c "[ \$(cat $work/a/events.jsonl | grep '\"event\":\"start\"' | grep -c '\"world_size\":$w1') -ge 1 ]"
wait_for 60 "progress at world 1" sh -c "[ \$(cat $work/a/metrics.jsonl | tail -n 1 | sed 's/.*\"step\":\([0-9]*\).*/\1/') -gt $at_kill ]"
echo "   killed at step $at_kill; world $w1 goes on at step $(steps)"
grep -q "node host-b dropped" "$work/master.out" || fail "the master did not drop host b"

echo "-- bring host b back"
start_host b
wait_for 120 "the job to grow to world $w2 again" sh -c "[ \$(cat $work/a/events.jsonl $work/b/events.jsonl | grep '\"event\":\"start\"' | grep -c '\"world_size\":$w2') -ge 2 ]"
echo "   world $w2 again at step $(steps)"

echo "-- kill -9 the master; restart it from its journal; training goes on"
kill -9 $master
sleep 1
before=$(steps)
start_master
wait_for 60 "the restarted master to replay its journal" grep -q "replayed" "$work/master.out"
wait_for 60 "progress after the master's restart" sh -c "[ \$(cat $work/a/metrics.jsonl | tail -n 1 | sed 's/.*\"step\":\([0-9]*\).*/\1/') -gt $before ]"
echo "   master restarted at step $before; training at step $(steps)"

rc=0; wait "$agent_a" || rc=$?
[ $rc -eq 0 ] || { tail -30 "$work/a.out"; fail "host a's agent exited $rc"; }
rc=0; wait "$agent_b" || rc=$?
[ $rc -eq 0 ] || { tail -30 "$work/b.out"; fail "host b's agent exited $rc"; }
[ "$(cat "$work/ckpt/latest")" = "$last" ] || fail "the job did not reach step $total"
"$cairn" ckpt inspect "$work/ckpt" --verify > /dev/null || fail "the final checkpoint does not verify"
! grep -rl "$CAIRN_JOB_TOKEN" "$work"/*.out "$work"/a "$work"/b || fail "the job token is in a log"
grep -q "\"rank-0000$((w2 - 1)).bin\"" "$work/ckpt/$last/manifest.json" ||
  fail "the last step was not trained at world $w2"
# Every step of the final trajectory was trained (rows of the surviving run, steps 1..total).
/usr/bin/python3 - "$work/a/metrics.jsonl" "$total" <<'PY'
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
total = int(sys.argv[2])
steps = {r["step"] for r in rows}
missing = [s for s in range(1, total + 1) if s not in steps]
assert not missing, f"steps never trained: {missing[:10]}"
assert all(math.isfinite(r["loss"]) for r in rows)
print(f"   {len(rows)} step rows for {total} steps ({len(rows) - total} trained again after rollbacks)")
PY
# Both hosts' events, for the checks of a planned or pipelined job.
cat "$work"/a/events.jsonl "$work"/b/events.jsonl > "$work/events.all"
if [ "$plan" = auto ]; then
  echo "-- every start planned for its world; each change of world re-planned"
  /usr/bin/python3 - "$work/events.all" "$w1" "$w2" <<'PY' || fail "the plans do not follow the world"
import json, sys
w1, w2 = int(sys.argv[2]), int(sys.argv[3])
ev = [json.loads(l) for l in open(sys.argv[1])]
plans = [e for e in ev if e.get("event") == "plan"]
starts = [e for e in ev if e.get("event") == "start"]
assert len(plans) >= 3, f"{len(plans)} plan events"
for e in plans:
    m = e["plan"]["plan"]["mesh"]
    assert m["pp"] * m["dp"] * m["cp"] * m["tp"] == e["world"], e
    assert e["plan"]["step_s"] > 0 and e["plan"]["memory_bytes"] > 0, e
shrink = [e for e in plans if e["replanned"] and e["world"] == w1 and e["previous"]["world"] == w2]
grow = [e for e in plans if e["replanned"] and e["world"] == w2 and e["previous"]["world"] == w1]
assert shrink and grow, [(e["world"], e["previous"] and e["previous"]["world"]) for e in plans]
for e in shrink + grow:
    assert e["plan"]["search_s"] < 1.0, e["plan"]["search_s"]
# The starts trained the plans chosen for them.
for s in starts:
    assert s["plan"]["mesh"] in [p["plan"]["plan"]["mesh"] for p in plans if p["world"] == s["world_size"]], s
profiled = [e for e in plans if e["plan"]["profile_s"] > 0]
assert len(profiled) == 1, f"the machine was profiled {len(profiled)} times"
print("   plans:", ", ".join(f'world {e["world"]}: {e["plan"]["summary"]}' for e in plans))
PY
fi
if [ "$plan" = pp ]; then
  echo "-- every start trained a 2-stage pipeline, data-parallel over what the world held"
  /usr/bin/python3 - "$work/events.all" "$w1" "$w2" <<'PY' || fail "the pipeline did not follow the world"
import json, sys
w1, w2 = int(sys.argv[2]), int(sys.argv[3])
starts = [json.loads(l) for l in open(sys.argv[1])]
starts = [e for e in starts if e.get("event") == "start"]
worlds = [s["world_size"] for s in starts]
assert w1 in worlds and w2 in worlds, worlds
for s in starts:
    m = s["plan"]["mesh"]
    assert m["pp"] == 2 and m["dp"] == s["world_size"] // 2, s["plan"]
print("   starts at worlds", worlds)
PY
fi
echo "PASS"
