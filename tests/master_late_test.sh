#!/usr/bin/env bash
# An agent started before its master (both launched at once, as a job script does) joins within
# a fraction of a second of the master coming up, not a whole call timeout later.
# Usage: master_late_test.sh CAIRN
set -euo pipefail
cairn=$1
work=$(mktemp -d)
pids=()
source "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT
export CAIRN_JOB_TOKEN=late-master-test
port=$(free_port)

timeout -k 5 60 "$cairn" run --rdzv-backend cairn --rdzv-endpoint 127.0.0.1:$port --nnodes 1 \
  --node-id late --run-dir "$work/run" -- /bin/true > "$work/agent.out" 2>&1 &
agent=$!
pids+=($agent)
sleep 0.5  # the agent's first calls are refused meanwhile
"$cairn" master --host 127.0.0.1 --port $port --nnodes 1 --rdzv-wait 0 > "$work/master.out" 2>&1 &
pids+=($!)
rc=0; wait "$agent" || rc=$?
[ $rc -eq 0 ] || { cat "$work/agent.out" "$work/master.out"; fail "the agent exited $rc"; }
ms() { grep -m1 "$1" "$2" | sed 's/.*\([0-9][0-9]\):\([0-9][0-9]\):\([0-9][0-9]\)\.\([0-9]\{3\}\).*/\1 \2 \3 \4/' |
       awk '{ print (($1 * 60 + $2) * 60 + $3) * 1000 + $4 }'; }
up=$(ms "serving on" "$work/master.out")
joined=$(ms "node late .* joined" "$work/master.out")
[ -n "$up" ] && [ -n "$joined" ] || { cat "$work/master.out"; fail "no 'serving on' / 'joined' in the master's log"; }
echo "   the agent joined $((joined - up)) ms after the master came up"
kill "${pids[1]}" 2>/dev/null || true
[ $((joined - up)) -lt 2500 ] || fail "the agent joined $((joined - up)) ms after the master came up (a call timeout is 5000)"
echo "PASS"
