#!/usr/bin/env bash
# `cairn dashboard` end to end: the dashboard of a 2-worker `cairn run` job on the KJV corpus,
# started before the job (an empty run directory), follows it: /api/status turns running, the
# metrics rows grow, /metrics passes `promtool check metrics`, and Debian's Prometheus server
# scraping it sees cairn_tokens_total increase. A worker killed mid-run appears as a failure and
# a restart (status and events). Bad input gets clear errors: bad query parameters (400), an
# unknown path or log (404), a truncated JSON line (counted, the rest served), a missing run
# directory and a non-loopback address without the job's token (exit 2), a port in use (exit 1).
# SIGTERM stops it with exit 0.
# Usage: dashboard_cli_test.sh CAIRN_BINARY
set -euo pipefail
cairn=$1
work=$(mktemp -d)
agent=
source "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT
require prometheus promtool
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

prepare_kjv 200000
flash_config 400 "{memory_interval: 5, persist_interval: 50}"
mkdir -p "$work/run"

# get PATH [CODE]: the dashboard's response body; fails unless it answers CODE (default 200).
get() { http_request GET "$url" "$1" "${2:-200}"; }
json_field() { /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

echo "-- the dashboard of a run directory still empty"
start_dashboard "$work/run"
echo "dashboard at $url"
[ "$(get /api/status | json_field '["state"]')" = waiting ] || fail "an empty run is not 'waiting'"
get / | grep -q "<title>cairn dashboard</title>" || fail "no page at /"

echo "-- Prometheus scrapes it"
prom_port=$(free_port)
dash_port=${url##*:}
dash_port=${dash_port%/}
cat > "$work/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: cairn
    static_configs: [{targets: ["127.0.0.1:$dash_port"]}]
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" > "$work/prometheus.log" 2>&1 &
prom_query() {  # prom_query EXPR: the value of the query's first sample, empty if none
  /usr/bin/python3 - "$prom_port" "$1" <<'PY'
import json, sys, urllib.parse, urllib.request
q = urllib.parse.quote(sys.argv[2])
try:
    r = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/v1/query?query={q}", timeout=5))
    res = r["data"]["result"]
    print(res[0]["value"][1] if res else "")
except Exception:
    print("")
PY
}

echo "-- a 2-worker job; the dashboard follows it"
"$cairn" run --nproc-per-node 2 --max-restarts 2 --run-dir "$work/run" -- \
  "$cairn" train "$work/tiny.yaml" --no-progress --resume-or-start > "$work/run.out" 2>&1 &
agent=$!
wait_rows "$work/run" 20 "$agent" || fail "no 20 steps"
status=$(get /api/status)
[ "$(echo "$status" | json_field '["state"]')" = running ] || fail "a training job is not 'running': $status"
[ "$(echo "$status" | json_field '["world_size"]')" = 2 ] || fail "world size: $status"
rows=$(get "/api/metrics?since=0" | json_field '["total"]')
[ "$rows" -ge 20 ] || fail "the API has $rows rows, the run 20 or more"
get /metrics > "$work/metrics.txt"
promtool check metrics < "$work/metrics.txt" || fail "promtool rejects /metrics"
grep -q '^cairn_tokens_total ' "$work/metrics.txt" || fail "no cairn_tokens_total"

first=""
for _ in $(seq 1 300); do
  v=$(prom_query cairn_tokens_total)
  if [ -n "$v" ]; then
    if [ -z "$first" ]; then first=$v
    elif /usr/bin/python3 -c "import sys; sys.exit(0 if float('$v') > float('$first') else 1)"; then
      break
    fi
  fi
  sleep 0.2
done
[ -n "$first" ] || { tail -n 20 "$work/prometheus.log"; fail "Prometheus never scraped cairn_tokens_total"; }
/usr/bin/python3 -c "import sys; sys.exit(0 if float('$v') > float('$first') else 1)" ||
  fail "cairn_tokens_total did not increase in Prometheus ($first, then $v)"
echo "Prometheus: cairn_tokens_total $first, then $v"

echo "-- a worker killed: a failure and a restart on the dashboard"
kill_worker_and_finish "$work/run" 60 "$work/run.out"
status=$(get /api/status)
echo "$status"
[ "$(echo "$status" | json_field '["state"]')" = ended ] || fail "the finished job is not 'ended'"
[ "$(echo "$status" | json_field '["failures"]')" -ge 1 ] || fail "no failure counted"
[ "$(echo "$status" | json_field '["restarts"]')" -ge 1 ] || fail "no restart counted"
[ "$(echo "$status" | json_field '["step"]')" = 400 ] || fail "the last step is not 400"
events=$(get "/api/events?limit=100000")
echo "$events" | /usr/bin/python3 -c '
import json, sys
starts = [e for e in json.load(sys.stdin)["rows"] if e["event"] == "start"]
assert len(starts) == 2 and starts[1]["step"] > 0, [s["step"] for s in starts]' ||
  fail "the restarted workers did not resume from the checkpoint"
for kind in worker_failed restart checkpoint_persisted agent_end; do
  echo "$events" | grep -q "\"event\":\"$kind\"" || fail "no $kind event in /api/events"
done
get /metrics | grep -q '^cairn_restarts_total{reason="killed"} [1-9]' || fail "cairn_restarts_total{reason=killed} is not above 0"
get /api/logs | grep -q '"logs/agent.log"' || fail "the agent's log is not listed"
get "/api/log?name=logs/agent.log&lines=5" | grep -q . || fail "the agent's log tail is empty"

echo "-- bad requests"
get "/api/metrics?since=abc" 400 | grep -q "since: 'abc' is not a whole number" || fail "bad since"
get "/api/events?limit=1&bogus=2" 400 | grep -q "unknown parameter 'bogus'" || fail "unknown parameter"
get "/api/log?name=../../../etc/passwd" 404 | grep -q "no log" || fail "a path outside the run"
get "/no/such/page" 404 | grep -q "no such path" || fail "unknown path"
printf '{"step": 401, "loss": 1.0' >> "$work/run/metrics.jsonl"   # a writer killed mid-line
printf '\n' >> "$work/run/metrics.jsonl"
get /api/status | json_field '["unreadable_lines"]["metrics.jsonl"]' | grep -qx 1 ||
  fail "a truncated line is not counted"
get /metrics | promtool check metrics || fail "/metrics after a truncated line"

echo "-- bad flags and addresses"
rc=0; "$cairn" dashboard "$work/nope" > "$work/e1" 2>&1 || rc=$?
[ $rc = 2 ] && grep -q "does not exist" "$work/e1" || { cat "$work/e1"; fail "missing run dir: exit $rc"; }
rc=0; env -u CAIRN_JOB_TOKEN "$cairn" dashboard "$work/run" --bind 0.0.0.0 > "$work/e2" 2>&1 || rc=$?
[ $rc = 2 ] && grep -q "CAIRN_JOB_TOKEN" "$work/e2" || { cat "$work/e2"; fail "no token: exit $rc"; }
rc=0; CAIRN_JOB_TOKEN=t "$cairn" dashboard "$work/run" --bind 0.0.0.0 > "$work/e4" 2>&1 || rc=$?
[ $rc = 2 ] && grep -q -- "--dashboard-insecure\|plain HTTP" "$work/e4" || { cat "$work/e4"; fail "token over plain HTTP: exit $rc"; }
rc=0; timeout 10 "$cairn" dashboard "$work/run" --port "$dash_port" > "$work/e3" 2>&1 || rc=$?
[ $rc = 1 ] && grep -q "cannot listen" "$work/e3" || { cat "$work/e3"; fail "port in use: exit $rc"; }

echo "-- SIGTERM stops it"
kill -TERM "$dash"
rc=0; wait "$dash" || rc=$?
[ $rc = 0 ] || { cat "$work/dash.err"; fail "the dashboard exited $rc on SIGTERM"; }
echo "PASS"
