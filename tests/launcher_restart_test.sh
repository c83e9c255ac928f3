#!/usr/bin/env bash
# A failing worker under `cairn run --max-restarts 2` is restarted exactly twice (the whole local
# group, with TORCHELASTIC_RESTART_COUNT incremented), then the agent exits with the worker's
# exit code and a summary naming the rank, the code and its last lines of output.
# Usage: launcher_restart_test.sh CAIRN_BINARY
set -euo pipefail
cairn=$1
work=$(mktemp -d)
source "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT

echo "-- rank 1 always fails"
rc=0
timeout 60 "$cairn" run --nproc-per-node 2 --max-restarts 2 --grace-period 2 --run-dir "$work/run" -- \
  /bin/sh -c 'echo "attempt $TORCHELASTIC_RESTART_COUNT of $TORCHELASTIC_MAX_RESTARTS";
              if [ "$RANK" = 1 ]; then echo "rank 1 is broken" >&2; exit 7; fi; sleep 30' \
  > "$work/out.txt" 2> "$work/err.txt" || rc=$?
[ $rc -eq 7 ] || { cat "$work/err.txt"; fail "agent should exit with the worker's code 7, got $rc"; }
for r in 0 1; do
  for a in 0 1 2; do
    [ "$(grep -c "^\[rank $r\] attempt $a of 2$" "$work/out.txt")" -eq 1 ] ||
      { cat "$work/out.txt"; fail "rank $r should run attempt $a exactly once"; }
  done
  grep -q "attempt 3" "$work/out.txt" && fail "a third restart happened"
  [ "$(grep -c '^attempt' "$work/run/logs/worker-$r.log")" -eq 3 ] || fail "worker-$r.log should hold 3 attempts"
done
ev() { grep -c "\"event\":\"$1\"" "$work/run/events.jsonl" || true; }
[ "$(ev workers_started)" -eq 3 ] || fail "3 rounds of workers expected, got $(ev workers_started)"
[ "$(ev restart)" -eq 2 ] || fail "2 restart events expected, got $(ev restart)"
[ "$(ev worker_failed)" -eq 3 ] || fail "3 worker_failed events expected, got $(ev worker_failed)"
grep '"event":"worker_failed"' "$work/run/events.jsonl" | grep -v '"rank":1' | grep . > /dev/null &&
  fail "only rank 1 failed"
grep '"event":"agent_end"' "$work/run/events.jsonl" | grep '"exit_code":7' > /dev/null || fail "agent_end should carry 7"
grep -q "worker rank 1 .*failed: exit code 7" "$work/err.txt" || { cat "$work/err.txt"; fail "summary lacks rank and code"; }
grep -q "no restarts left (2 of 2 used)" "$work/err.txt" || fail "summary lacks the restart count"
grep -q "^  rank 1 is broken$" "$work/err.txt" || fail "summary lacks the worker's last lines"
grep -q "worker-1.log" "$work/err.txt" || fail "summary should name the log file"

echo "-- a worker killed by a signal: exit 128+signal"
rc=0
timeout 60 "$cairn" run --run-dir "$work/run2" -- /bin/sh -c 'kill -KILL $$' 2> "$work/err2.txt" || rc=$?
[ $rc -eq 137 ] || fail "SIGKILLed worker should give 137, got $rc"
grep -q "SIGKILL" "$work/err2.txt" || fail "summary should name SIGKILL"

echo "-- a user error (bad config) stops the job at once instead of looping restarts"
printf 'model: {arch: gpt2}\ntrain: {lrr: 1}\ndata: {path: /nonexistent}\n' > "$work/bad.yaml"
rc=0
timeout 60 "$cairn" run --nproc-per-node 2 --max-restarts 3 --grace-period 2 --run-dir "$work/run4" -- \
  "$cairn" train "$work/bad.yaml" > /dev/null 2> "$work/err4.txt" || rc=$?
[ $rc -eq 2 ] || { cat "$work/err4.txt"; fail "a bad config should end the job with exit 2, got $rc"; }
[ "$(grep -c '"event":"workers_started"' "$work/run4/events.jsonl")" -eq 1 ] || fail "the job was restarted"
grep -q '"event":"job_stopped"' "$work/run4/events.jsonl" || fail "no job_stopped event"
grep '"event":"worker_failed"' "$work/run4/events.jsonl" | grep '"diagnosis":"user_error"' > /dev/null ||
  fail "the failure should be diagnosed as a user error"
grep -q "unknown key 'train.lrr'" "$work/err4.txt" || { cat "$work/err4.txt"; fail "summary should quote the error"; }
grep -q "not restarted" "$work/err4.txt" || fail "summary should say why it did not restart"

echo "-- a crash is restarted, and diagnosed"
rc=0
timeout 60 "$cairn" run --max-restarts 1 --run-dir "$work/run5" -- /bin/sh -c 'kill -SEGV $$' \
  2> "$work/err5.txt" || rc=$?
[ $rc -eq 139 ] || fail "SIGSEGV should give 139, got $rc"
[ "$(grep -c '"event":"restart"' "$work/run5/events.jsonl")" -eq 1 ] || fail "a crash should be restarted"
grep -q '"diagnosis":"crash"' "$work/run5/events.jsonl" || fail "no crash diagnosis"

echo "-- a restart that succeeds ends with 0"
timeout 60 "$cairn" run --nproc-per-node 2 --max-restarts 3 --run-dir "$work/run3" -- \
  /bin/sh -c '[ "$TORCHELASTIC_RESTART_COUNT" -ge 1 ] || exit 1' 2>/dev/null ||
  fail "second attempt succeeds, exit should be 0"
[ "$(grep -c '"event":"restart"' "$work/run3/events.jsonl")" -eq 1 ] || fail "exactly one restart expected"
echo PASS
