#!/usr/bin/env bash
# `cairn run` gives every worker torchrun's environment, captures its output into
# logs/worker-<rank>.log and echoes it with a rank prefix, journals events.jsonl, resolves a
# first word `cairn` to itself, and rejects bad flags with exit code 2.
# Usage: launcher_env_test.sh CAIRN_BINARY
set -euo pipefail
cairn=$1
work=$(mktemp -d)
source "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT
cd "$work"

echo "-- three workers see their own rank and the shared world"
unset OMP_NUM_THREADS
timeout 60 "$cairn" run --nproc-per-node 3 --run-dir "$work/run" --rdzv-id job42 -- /bin/sh -c \
  'echo "env $RANK $LOCAL_RANK $WORLD_SIZE $LOCAL_WORLD_SIZE $GROUP_RANK $ROLE_RANK $ROLE_WORLD_SIZE" \
        "$MASTER_ADDR $TORCHELASTIC_RESTART_COUNT $TORCHELASTIC_MAX_RESTARTS $TORCHELASTIC_RUN_ID" \
        "omp=$OMP_NUM_THREADS dir=$CAIRN_RUN_DIR port=$MASTER_PORT"; echo "to stderr $RANK" >&2' \
  > "$work/out.txt" 2> "$work/err.txt" || { cat "$work/err.txt"; fail "cairn run exited non-zero"; }
ports=""
for r in 0 1 2; do
  line=$(grep "^\[rank $r\] env " "$work/out.txt") || { cat "$work/out.txt"; fail "no output of rank $r"; }
  want="[rank $r] env $r $r 3 3 0 $r 3 127.0.0.1 0 0 job42 omp="
  [ "${line#"$want"}" != "$line" ] || fail "rank $r: got '$line', want prefix '$want'"
  omp=$(echo "$line" | sed 's/.*omp=\([0-9]*\).*/\1/')
  [ "$omp" -ge 1 ] || fail "OMP_NUM_THREADS should be at least 1: $line"
  echo "$line" | grep "dir=$work/run " > /dev/null || fail "CAIRN_RUN_DIR should be $work/run: $line"
  ports="$ports $(echo "$line" | sed 's/.*port=//')"
  grep -q "^\[rank $r\] to stderr $r$" "$work/err.txt" || fail "rank $r stderr not echoed with prefix"
  log="$work/run/logs/worker-$r.log"
  [ -f "$log" ] || fail "missing $log"
  grep -q "^env $r $r 3 " "$log" || fail "$log lacks the worker's stdout"
  grep -q "^to stderr $r$" "$log" || fail "$log lacks the worker's stderr"
  grep -q "\[rank" "$log" && fail "$log should hold the worker's lines without prefix"
done
[ "$(echo $ports | tr ' ' '\n' | sort -u | wc -l)" -eq 1 ] || fail "workers saw different MASTER_PORTs:$ports"
port=$(echo $ports | cut -d' ' -f1)
[ "$port" -gt 0 ] && [ "$port" -lt 65536 ] || fail "bad MASTER_PORT $port"
for e in agent_start workers_started agent_end; do
  grep -q "\"event\":\"$e\"" "$work/run/events.jsonl" || fail "events.jsonl lacks $e"
done
grep -q '"event":"agent_start".*' "$work/run/events.jsonl"
/usr/bin/python3 - "$work/run/events.jsonl" <<'PY' || fail "events.jsonl is not one JSON object per line"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
start = rows[0]
assert start["event"] == "agent_start" and start["nproc"] == 3 and start["world_size"] == 3, start
assert start["command"][0] == "/bin/sh", start
assert rows[-1]["event"] == "agent_end" and rows[-1]["exit_code"] == 0, rows[-1]
assert all(isinstance(r["time"], float) and r["time"] > 1.6e9 for r in rows)
PY

echo "-- a user's OMP_NUM_THREADS is kept"
out=$(OMP_NUM_THREADS=7 timeout 60 "$cairn" run --run-dir "$work/run2" -- /bin/sh -c 'echo omp=$OMP_NUM_THREADS' 2>/dev/null)
[ "$out" = "[rank 0] omp=7" ] || fail "OMP_NUM_THREADS=7 should pass through, got '$out'"

echo "-- 'cairn' as the first word is this binary, even without PATH"
out=$(timeout 60 env PATH=/nonexistent "$cairn" run --run-dir "$work/run3" --nproc_per_node=2 -- cairn run --help 2>/dev/null)
[ "$(echo "$out" | grep -c '^\[rank [01]\] Usage: .*cairn run ')" -eq 2 ] || { echo "$out"; fail "cairn did not run itself"; }

echo "-- default run directory is runs/<time>"
timeout 60 "$cairn" run -- /bin/true 2>/dev/null
ls runs/*/events.jsonl > /dev/null || fail "no runs/<time>/events.jsonl"

echo "-- bad flags exit 2 naming the flag"
expect_flag_error() {
  local flag=$1; shift
  local rc=0
  "$cairn" run --run-dir "$work/bad" "$@" > /dev/null 2> "$work/bad.err" || rc=$?
  [ $rc -eq 2 ] || fail "'$*' should exit 2, got $rc: $(cat "$work/bad.err")"
  grep -q -- "$flag" "$work/bad.err" || fail "'$*': message should name $flag: $(cat "$work/bad.err")"
}
expect_flag_error "after --" --nproc-per-node 2
expect_flag_error "after --" --nproc-per-node 2 --
expect_flag_error --nproc-per-node --nproc-per-node 0 -- /bin/true
expect_flag_error --nproc-per-node --nproc-per-node x -- /bin/true
expect_flag_error --nnodes --nnodes 3:2 -- /bin/true
expect_flag_error --nnodes --nnodes=a -- /bin/true
expect_flag_error --rdzv-endpoint --nnodes 2 --node-rank 1 -- /bin/true
expect_flag_error --rdzv-endpoint --nnodes 2 --rdzv-endpoint host:99999 -- /bin/true
expect_flag_error --node-rank --nnodes 2 --node-rank 2 --rdzv-endpoint host:29400 -- /bin/true
expect_flag_error --bogus --bogus -- /bin/true
expect_flag_error no-such-command-xyz -- no-such-command-xyz
[ ! -e "$work/bad" ] || fail "a rejected launch should not create the run directory"

echo "-- --help shows examples"
help=$("$cairn" run --help)
grep -q "cairn run --nproc-per-node 2 -- cairn train" <<< "$help" || fail "no example in --help"
echo PASS
