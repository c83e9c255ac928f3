#!/usr/bin/env bash
# `cairn plan` end to end: the small GPT-2 of the layout tests planned for one node of 4 described
# devices; the table, the explanation and the plan file are written; the plan trains under
# `cairn run` with 4 workers and follows the one-process run on the KJV corpus (loss per step
# and validation loss to 1e-5 relative), whatever layout won. `cairn plan profile-hw` measures
# this machine into a cluster file that plans. Bad input stops with exit 2 naming
# what is wrong: a cluster file's unknown key or out-of-range value, more devices than the
# cluster has, a budget no layout fits (with the least any needs).
# Usage: plan_cli_test.sh CAIRN_BINARY
set -euo pipefail
cairn=$1
work=$(mktemp -d)
agent=
source "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

prepare_kjv 200000
layout_config
cat > "$work/node4.json" <<'JSON'
{"name": "one node of 4 (test)", "source": "made up for the test", "nodes": 1,
 "devices_per_node": 4, "memory_gb": 1, "peak_tflops": 0.1, "efficiency": 0.5,
 "intra": {"gb_per_s": 2, "latency_us": 20}, "inter": {"gb_per_s": 1, "latency_us": 50}}
JSON

echo "-- plan: a table, the winner's breakdown, its plan file"
"$cairn" plan "$work/tiny.yaml" --cluster "$work/node4.json" --top 3 --explain \
  --out "$work/plan.json" > "$work/plan.out" 2>&1 || { cat "$work/plan.out"; fail "cairn plan failed"; }
cat "$work/plan.out"
grep -q "^| 1 | pp=" "$work/plan.out" || fail "no table row for the winner"
[ "$(grep -c '^| [0-9] |' "$work/plan.out")" = 3 ] || fail "--top 3 did not print 3 layouts"
grep -q "^  pipeline bubble " "$work/plan.out" || fail "--explain printed no breakdown"
grep -q "memory per device" "$work/plan.out" || fail "--explain printed no memory"
/usr/bin/python3 -c "import json,sys; p=json.load(open(sys.argv[1])); m=p['mesh']; \
assert m['pp']*m['dp']*m['cp']*m['tp'] == 4, m" "$work/plan.json" || fail "the plan is not of 4 devices"
micro=$(sed -n 's/.*--set train.micro_batch_size=\([0-9]*\)$/\1/p' "$work/plan.out")
[ -n "$micro" ] || fail "no micro-batch size printed with the plan"

echo "-- the plan trains under cairn run like one process"
# (validation takes eval_batches micro-batches: the same micro-batch size on both sides)
"$cairn" train "$work/tiny.yaml" --run-dir "$work/one" --no-progress \
  --set train.micro_batch_size="$micro" 2> "$work/one.err" ||
  { cat "$work/one.err"; fail "one-process run failed"; }
# The plan carries the layout, parallel.bucket_mb included: the config leaves parallel out.
grep -v '^parallel:' "$work/tiny.yaml" > "$work/planned.yaml"
grep -q '"bucket_mb": 1' "$work/plan.json" || fail "the plan does not carry the config's parallel.bucket_mb"
"$cairn" run --nproc-per-node 4 --run-dir "$work/planned" -- "$cairn" train "$work/planned.yaml" \
  --no-progress --set parallel.plan="$work/plan.json" --set train.micro_batch_size="$micro" \
  > "$work/planned.out" 2>&1 || { tail -30 "$work/planned.out"; fail "the planned run failed"; }
compare "$work/one" "$work/planned" || fail "the planned layout does not match one process"

echo "-- profile-hw measures this machine as a cluster file the planner takes"
"$cairn" plan profile-hw --ranks 2 --seconds 0.05 --out "$work/here.json" > "$work/hw.out" 2>&1 ||
  { cat "$work/hw.out"; fail "profile-hw failed"; }
grep -q "^all-reduce fit: " "$work/hw.out" || fail "profile-hw printed no all-reduce fit"
grep -q '"collectives"' "$work/here.json" || fail "the cluster file keeps no measured table"
"$cairn" plan "$work/tiny.yaml" --cluster "$work/here.json" --top 2 > "$work/here.out" 2>&1 ||
  { cat "$work/here.out"; fail "planning on the measured cluster failed"; }
grep -q "on 2 devices of this machine, 2 ranks (measured)" "$work/here.out" ||
  { cat "$work/here.out"; fail "the measured cluster was not used"; }
rc=0; "$cairn" plan profile-hw --ranks 1 > "$work/bad.out" 2>&1 || rc=$?
[ $rc -eq 2 ] || fail "profile-hw --ranks 1 should exit 2, got $rc"

echo "-- bad input exits 2 naming what is wrong"
expect_exit2() {  # expect_exit2 PATTERN ARGS...
  local pattern=$1; shift
  local rc=0
  "$cairn" plan "$work/tiny.yaml" "$@" > "$work/bad.out" 2>&1 || rc=$?
  [ $rc -eq 2 ] || { cat "$work/bad.out"; fail "$* should exit 2, got $rc"; }
  grep -q -- "$pattern" "$work/bad.out" || { cat "$work/bad.out"; fail "no '$pattern' for $*"; }
}
sed 's/"latency_us": 20/"latncy_us": 20/' "$work/node4.json" > "$work/typo.json"
expect_exit2 "typo.json.intra.latncy_us: unknown key" --cluster "$work/typo.json"
sed 's/"efficiency": 0.5/"efficiency": 2/' "$work/node4.json" > "$work/range.json"
expect_exit2 "range.json.efficiency: 2 is outside" --cluster "$work/range.json"
expect_exit2 "8 devices asked of one node of 4 (test), which has 4" --cluster "$work/node4.json" --world 8
expect_exit2 "no layout of 4 devices fits 0.0010 GiB per device (the least any needs:" \
  --cluster "$work/node4.json" --memory-gb 0.001
expect_exit2 "no such file" --cluster "$work/missing.json"
echo "PASS"
