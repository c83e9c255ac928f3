#!/usr/bin/env bash
# The dashboard in a real browser: headless Debian chromium, driven by puppeteer-core (pinned in
# tests/browser/package-lock.json; scripts/install-deps.sh installs it), opens the dashboard of a
# running 2-worker job on the KJV corpus, waits for the loss chart to draw at least 20 steps,
# and each rank's forward + backward time and the plan's picture (plan.svg) to show, then (after
# this script kills a worker) for the failure and the restart on the event timeline, and takes
# a screenshot, kept as BUILD/test-artifacts/dashboard.png. It fails on any
# JavaScript error, failed request or error banner on the page.
# Usage: dashboard_browser_test.sh CAIRN_BINARY
set -euo pipefail
cairn=$1
work=$(mktemp -d)
agent=
source "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT
require node /usr/bin/chromium
src=$(cd "$(dirname "$0")/.." && pwd)
modules=${CAIRN_CACHE:-$src/.cache}/browser-test/node_modules
[ -d "$modules/puppeteer-core" ] || fail "puppeteer-core is not in $modules (scripts/install-deps.sh installs it)"
artifacts=$(cd "$(dirname "$cairn")/.." && pwd)/test-artifacts
mkdir -p "$artifacts"
rm -f "$artifacts/dashboard.png"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

prepare_kjv 200000
flash_config 500 "{memory_interval: 5, persist_interval: 100}"
mkdir -p "$work/run"
# A plan's picture in the run directory (as parallel.plan=auto writes one): the page shows it.
"$cairn" plan "$work/tiny.yaml" --cluster "$src/configs/clusters/a100-128x8.json" --world 2 \
  --out "$work/run/plan.json" > "$work/plan.out" 2>&1 || { cat "$work/plan.out"; fail "cairn plan"; }
[ -s "$work/run/plan.svg" ] || fail "cairn plan --out wrote no plan.svg"
start_dashboard "$work/run"

"$cairn" run --nproc-per-node 2 --max-restarts 2 --run-dir "$work/run" -- \
  "$cairn" train "$work/tiny.yaml" --no-progress --resume-or-start > "$work/run.out" 2>&1 &
agent=$!
NODE_PATH=$modules timeout 240 node "$src/tests/browser/dashboard_page.js" "$url" \
  "$artifacts/dashboard.png" 20 200 > "$work/browser.out" 2>&1 &
browser=$!
# The page must chart 20 steps before the kill (it prints "charted N"), so that the kill is
# seen live, not read from a finished run.
for _ in $(seq 1 600); do
  grep -q "^charted" "$work/browser.out" && break
  kill -0 "$browser" 2>/dev/null || break
  sleep 0.1
done
grep -q "^charted" "$work/browser.out" || { cat "$work/browser.out"; fail "the page charted no steps"; }
kill_worker_and_finish "$work/run" 40 "$work/run.out"
rc=0; wait "$browser" || rc=$?
cat "$work/browser.out"
[ $rc = 0 ] || fail "the browser check failed (exit $rc)"
/usr/bin/python3 - "$artifacts/dashboard.png" <<'PY' || fail "no screenshot"
import struct, sys
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
w, h = struct.unpack(">II", data[16:24])
assert w >= 1000 and h >= 800, (w, h)
print(f"screenshot {w}x{h}, {len(data)} bytes")
PY
echo PASS
