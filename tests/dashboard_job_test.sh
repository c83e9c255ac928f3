#!/usr/bin/env bash
# The dashboard inside `cairn run` and `cairn master` (--dashboard-port), end to end.
# 1. A 2-worker job on the KJV corpus with rank 1 slowed 4x (--debug-slowdown): the dashboard
#    the agent serves names rank 1 the straggler from every rank's forward and backward time,
#    /metrics has the per-rank histogram and the rendezvous duration, and passes promtool.
# 2. --dashboard-control: a POST /api/stop without the header is refused (400); with it the job
#    stops cleanly: exit 143 like SIGTERM, a stop_requested event, and a checkpoint on disk at
#    the last step trained; the job resumed from it finishes at max_steps. A dashboard without
#    --dashboard-control refuses to stop a job (403).
# 3. `cairn master --run-dir D --dashboard-port 0` with two elastic nodes: its dashboard shows
#    both as members of a world of 4; one node's agent killed, the node is dropped and the next
#    round has a world of 2. --dashboard-port without --run-dir is a flag error (exit 2).
# Usage: dashboard_job_test.sh CAIRN_BINARY
set -euo pipefail
cairn=$1
work=$(mktemp -d)
agent=
source "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT
require promtool
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

prepare_kjv 200000
flash_config 300 "{memory_interval: 5, persist_interval: 100, dir: $work/ckpt}"

# get URL PATH [CODE] and post URL PATH CODE [HEADER]: lib.sh's http_request.
get() { http_request GET "$1" "$2" "${3:-200}"; }
post() { http_request POST "$@"; }
# dashboard_url FILE WHO: the address `WHO: dashboard at URL` printed in FILE (waits 20 s).
dashboard_url() {
  for _ in $(seq 1 200); do grep -q "^$2: dashboard at http" "$1" 2>/dev/null && break; sleep 0.1; done
  sed -n "s/^$2: dashboard at \(http[^ ]*\)$/\1/p" "$1" | head -n 1
}

echo "-- a job with a straggler, seen by the dashboard its agent serves"
"$cairn" run --nproc-per-node 2 --run-dir "$work/run" --dashboard-port 0 --dashboard-control -- \
  "$cairn" train "$work/tiny.yaml" --no-progress --resume-or-start --debug-slowdown 1:4 \
  > "$work/run.out" 2>&1 &
agent=$!
url=$(dashboard_url "$work/run.out" "cairn run")
[ -n "$url" ] || { cat "$work/run.out"; fail "cairn run printed no dashboard address"; }
echo "dashboard at $url"
wait_rows "$work/run" 15 "$agent" || fail "no 15 steps"
kill -0 "$agent" || { tail -n 30 "$work/run.out"; fail "the job ended early"; }
status=$(get "$url" /api/status)
echo "$status" | /usr/bin/python3 -c '
import json, sys
s = json.load(sys.stdin)
assert s["state"] == "running", s["state"]
assert s["control"] is True, s
assert s.get("straggler") == 1, ("rank 1 is slowed 4x", s.get("rank_compute_s"), s.get("slowest_ratio"))
assert s["slowest_ratio"] > 2, s["slowest_ratio"]
assert s["rendezvous_s"] >= 0, s' || fail "the straggler is not shown: $status"
get "$url" /metrics > "$work/metrics.txt"
promtool check metrics < "$work/metrics.txt" || fail "promtool rejects /metrics"
for want in 'cairn_step_compute_duration_seconds_count{rank="1"} ' \
            'cairn_rendezvous_duration_seconds_count 1$' 'cairn_rank_compute_imbalance_ratio '; do
  grep -q "^$want" "$work/metrics.txt" || fail "/metrics has no '$want'"
done

echo "-- stopping it from the dashboard"
post "$url" /api/stop 400 | grep -q "X-Cairn-Request: stop" || fail "a stop without the header"
post "$url" /api/stop 202 "X-Cairn-Request: stop" | grep -q '"stopping":true' || fail "stop refused"
rc=0; timeout 60 tail --pid="$agent" -f /dev/null || fail "the job did not stop within 60 s"
wait "$agent" || rc=$?
agent=
[ $rc = 143 ] || { tail -n 20 "$work/run.out"; fail "a stopped job exits 143 like SIGTERM, got $rc"; }
grep '"event":"stop_requested"' "$work/run/events.jsonl" | grep -q '"by":"dashboard"' ||
  fail "no stop_requested event"
last=$(last_step "$work/run")
newest=$(ls "$work/ckpt" | sed -n 's/^step-0*\([0-9][0-9]*\)$/\1/p' | sort -n | tail -n 1)
[ "$last" -lt 300 ] || fail "the job was not stopped before its end (step $last)"
[ "$newest" = "$last" ] || { ls "$work/ckpt"; fail "newest checkpoint $newest, last step trained $last"; }
echo "stopped at step $last with its checkpoint on disk"
"$cairn" run --nproc-per-node 2 --run-dir "$work/run" -- \
  "$cairn" train "$work/tiny.yaml" --no-progress --resume-or-start > "$work/run2.out" 2>&1 ||
  { tail -n 20 "$work/run2.out"; fail "the resumed job failed"; }
[ "$(start_step "$work/run")" = "$last" ] ||
  fail "the resumed job did not start from step $last"
[ "$(last_step "$work/run")" = 300 ] || fail "not at 300"

echo "-- a dashboard without --dashboard-control only reads"
"$cairn" run --nproc-per-node 1 --run-dir "$work/ro" --dashboard-port 0 -- /bin/sleep 30 \
  > "$work/ro.out" 2>&1 &
agent=$!
url=$(dashboard_url "$work/ro.out" "cairn run")
[ -n "$url" ] || { cat "$work/ro.out"; fail "no dashboard address"; }
post "$url" /api/stop 403 "X-Cairn-Request: stop" | grep -q -- "--dashboard-control" ||
  fail "a read-only dashboard did not refuse to stop"
kill -TERM "$agent"; wait "$agent" || true; agent=

echo "-- the master's dashboard: membership over time"
rc=0; "$cairn" master --port 0 --dashboard-port 0 > "$work/m0.out" 2>&1 || rc=$?
[ $rc = 2 ] && grep -q -- "--run-dir" "$work/m0.out" || { cat "$work/m0.out"; fail "no --run-dir: exit $rc"; }
export CAIRN_JOB_TOKEN=dashboard-test-token
mport=$(free_port)
"$cairn" master --host 127.0.0.1 --port "$mport" --nnodes 1:2 --rdzv-wait 2 --heartbeat-timeout 3 \
  --run-dir "$work/master" --dashboard-port 0 > "$work/master.out" 2>&1 &
master=$!
murl=$(dashboard_url "$work/master.out" "cairn master")
[ -n "$murl" ] || { cat "$work/master.out"; fail "cairn master printed no dashboard address"; }
for n in a b; do
  "$cairn" run --rdzv-backend cairn --rdzv-endpoint "127.0.0.1:$mport" --nnodes 1:2 \
    --node-id "node-$n" --nproc-per-node 2 --max-restarts 3 --run-dir "$work/node-$n" \
    --monitor-interval 0.2 -- /bin/sleep 120 > "$work/node-$n.out" 2>&1 &
  eval "node_$n=\$!"
done
members() { get "$murl" /api/status | /usr/bin/python3 -c '
import json, sys
s = json.load(sys.stdin)
print(s.get("world_size", 0), " ".join(n["id"] + ":" + n["state"] for n in s.get("nodes", [])))'; }
# until_members WANT SECONDS: waits until members prints WANT.
until_members() {
  local seen=""
  for _ in $(seq 1 $(($2 * 5))); do
    seen=$(members)
    [ "$seen" = "$1" ] && return 0
    sleep 0.2
  done
  fail "the master's dashboard shows '$seen', not '$1'"
}
until_members "4 node-a:member node-b:member" 30
{ kill -9 "$node_b"; wait "$node_b"; } 2> /dev/null || true
until_members "2 node-a:member node-b:dropped" 40
get "$murl" /metrics > "$work/mmetrics.txt"
promtool check metrics < "$work/mmetrics.txt" || fail "promtool rejects the master's /metrics"
grep -q '^cairn_nodes{state="dropped"} 1$' "$work/mmetrics.txt" || fail "no dropped node in /metrics"
grep -q '^cairn_rounds 2$' "$work/mmetrics.txt" || fail "not 2 rounds in /metrics"
grep -q '^cairn_rendezvous_duration_seconds_count 2$' "$work/mmetrics.txt" ||
  fail "no 2 rendezvous durations in the master's /metrics"
kill -TERM "$node_a" "$master"
rc=0; wait "$master" || rc=$?
[ $rc = 0 ] || fail "the master exited $rc on SIGTERM"
echo "PASS"
