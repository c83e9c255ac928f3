#!/usr/bin/env bash
# Signals to `cairn run` reach every worker (each runs in its own process group, so only the
# agent forwards them); workers that ignore SIGTERM are killed after --grace-period; the agent
# exits 128+signal and leaves no process behind.
# Usage: launcher_signal_test.sh CAIRN_BINARY
set -euo pipefail
cairn=$1
work=$(mktemp -d)
source "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT

# Waits (at most 20 s) until `file` has `n` lines.
wait_lines() {
  for _ in $(seq 1 200); do
    [ -f "$1" ] && [ "$(wc -l < "$1")" -ge "$2" ] && return 0
    sleep 0.1
  done
  fail "timed out waiting for $2 lines in $1"
}
gone() { ! kill -0 "$1" 2>/dev/null || grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

for sig in TERM INT; do
  echo "-- SIG$sig to the agent reaches the workers"
  run="$work/run-$sig"
  "$cairn" run --nproc-per-node 3 --run-dir "$run" -- /bin/sh -c \
    "trap 'echo got $sig; touch $work/\$RANK.$sig; exit 0' $sig; echo \$\$ >> $work/pids.$sig;
     while :; do sleep 0.05; done" > "$work/out.$sig" 2> "$work/err.$sig" &
  agent=$!
  wait_lines "$work/pids.$sig" 3
  kill -$sig $agent
  rc=0; timeout 30 tail --pid=$agent -f /dev/null || fail "agent did not exit after SIG$sig"
  wait $agent || rc=$?
  want=$([ $sig = TERM ] && echo 143 || echo 130)
  [ $rc -eq $want ] || { cat "$work/err.$sig"; fail "agent should exit $want after SIG$sig, got $rc"; }
  for r in 0 1 2; do
    [ -f "$work/$r.$sig" ] || fail "rank $r did not receive SIG$sig"
    grep -q "^\[rank $r\] got $sig$" "$work/out.$sig" || fail "rank $r output not forwarded"
  done
  while read -r pid; do gone "$pid" || fail "worker $pid still running"; done < "$work/pids.$sig"
  grep '"event":"agent_end"' "$run/events.jsonl" | grep "\"exit_code\":$want" > /dev/null || fail "agent_end should carry $want"
done

echo "-- a worker ignoring SIGTERM is killed after the grace period"
"$cairn" run --nproc-per-node 2 --grace-period 1 --run-dir "$work/run-stubborn" -- /bin/sh -c \
  "trap '' TERM; echo \$\$ >> $work/pids.stubborn; while :; do sleep 0.05; done" 2> "$work/err.stubborn" &
agent=$!
wait_lines "$work/pids.stubborn" 2
start=$(date +%s%N)
kill -TERM $agent
timeout 30 tail --pid=$agent -f /dev/null || fail "agent did not exit"
rc=0; wait $agent || rc=$?
took_ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ $rc -eq 143 ] || fail "expected 143, got $rc"
[ $took_ms -ge 900 ] && [ $took_ms -lt 10000 ] || fail "grace period not honoured: took $took_ms ms"
grep -q "SIGKILL" "$work/err.stubborn" || fail "the agent should report the SIGKILL"
while read -r pid; do gone "$pid" || fail "worker $pid survived"; done < "$work/pids.stubborn"

echo "-- a second Ctrl-C kills at once"
"$cairn" run --grace-period 60 --run-dir "$work/run-twice" -- /bin/sh -c \
  "trap '' INT; echo \$\$ >> $work/pids.twice; while :; do sleep 0.05; done" 2>/dev/null &
agent=$!
wait_lines "$work/pids.twice" 1
kill -INT $agent; sleep 0.3; kill -INT $agent
timeout 15 tail --pid=$agent -f /dev/null || fail "second SIGINT should end the agent quickly"
rc=0; wait $agent || rc=$?
[ $rc -eq 130 ] || fail "expected 130, got $rc"
echo PASS
