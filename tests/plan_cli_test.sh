#!/usr/bin/env bash
# `cairn plan` end to end: the small GPT-2 of the layout tests planned for one node of 4 described
# devices; the table, the explanation and the plan file are written; the plan trains under
# `cairn run` with 4 workers and follows the one-process run on the KJV corpus (loss per step
# and validation loss to 1e-5 relative), whatever layout won. `cairn plan profile-hw` measures
# this machine into a cluster file that plans; two short `profile-model`s merge into one that
# plans, and what cannot merge (one file, a cut one, other sizes) exits 2 naming why. The
# winner's picture (SVG) has each stage's time and memory; --evaluate costs the config's own
# layout. `cairn train --plan auto` profiles the machine once (cached), plans, trains like one
# process, checks its predictions against the steps, and a resume at another world re-plans
# and checks again (events.jsonl). Bad input stops with exit 2 naming what is wrong: a cluster
# file's unknown key or out-of-range value, more devices than the cluster has, a budget no
# layout fits (with the least any needs).
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
echo "-- the plan's picture: one time bar and one memory bar per pipeline stage"
/usr/bin/python3 - "$work/plan.svg" "$work/plan.json" <<'PY' || fail "the picture is wrong"
import json, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
pp = json.load(open(sys.argv[2]))["mesh"]["pp"]
groups = [g for g in root.iter("{http://www.w3.org/2000/svg}g")]
time = [g for g in groups if g.get("class") == "time"]
memory = [g for g in groups if g.get("class") == "memory"]
assert len(time) == pp and len(memory) == pp, (len(time), len(memory), pp)
assert all(float(g.get("data-step-s")) > 0 and len(g) > 0 for g in time)
assert all(float(g.get("data-gib")) > 0 and len(g) > 0 for g in memory)
PY

echo "-- --evaluate costs the config's own layout"
"$cairn" plan "$work/tiny.yaml" --cluster "$work/node4.json" --evaluate --world 2 \
  --set parallel.tp=2 > "$work/eval.out" 2>&1 || { cat "$work/eval.out"; fail "--evaluate failed"; }
cat "$work/eval.out"
grep -q "^pp=1 dp=1 cp=1 tp=2" "$work/eval.out" || fail "--evaluate did not cost the tp2 layout"
awk '$1 == "tp" && $2 == "communication" { exit !($3 > 0) }' "$work/eval.out" ||
  fail "--evaluate of tp2 has no tp communication"

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

echo "-- profile-model: two short profiles merged into one (each point the median); it plans"
for k in a b; do
  "$cairn" plan profile-model "$work/tiny.yaml" --ranks 2 --batch 1,2 --seconds 0.01 --rounds 1 \
    --out "$work/model-$k.json" > "$work/model-$k.out" 2>&1 ||
    { cat "$work/model-$k.out"; fail "profile-model failed"; }
done
"$cairn" plan profile-model "$work/tiny.yaml" --merge "$work/model-a.json" "$work/model-b.json" \
  --out "$work/model.json" > "$work/merge.out" 2>&1 ||
  { cat "$work/merge.out"; fail "profile-model --merge failed"; }
grep -q "^fit block  *tp2 " "$work/merge.out" || { cat "$work/merge.out"; fail "the merge printed no tp fit"; }
grep -q '"merged": 2' "$work/model.json" || fail "the merged profile does not say it was merged"
"$cairn" plan "$work/tiny.yaml" --cluster "$work/here.json" --model-profile "$work/model.json" \
  --top 1 > "$work/merged-plan.out" 2>&1 ||
  { cat "$work/merged-plan.out"; fail "planning with the merged profile failed"; }
merge_exit2() {  # merge_exit2 PATTERN ARGS...: profile-model exits 2 naming what is wrong
  local pattern=$1; shift
  local rc=0
  "$cairn" plan profile-model "$work/tiny.yaml" "$@" > "$work/bad.out" 2>&1 || rc=$?
  [ $rc -eq 2 ] || { cat "$work/bad.out"; fail "profile-model $* should exit 2, got $rc"; }
  grep -q -- "$pattern" "$work/bad.out" || { cat "$work/bad.out"; fail "no '$pattern' for $*"; }
}
merge_exit2 "needs at least two profiles, got 1" --merge "$work/model-a.json"
merge_exit2 "excludes" --merge "$work/model-a.json" "$work/model-b.json" --rounds 2
head -c 300 "$work/model-b.json" > "$work/cut.json"
merge_exit2 "cut.json: not a JSON object" --merge "$work/model-a.json" "$work/cut.json"
"$cairn" plan profile-model "$work/tiny.yaml" --ranks 2 --batch 1,4 --seconds 0.01 --rounds 1 \
  --out "$work/model-c.json" > "$work/model-c.out" 2>&1 ||
  { cat "$work/model-c.out"; fail "profile-model at other sizes failed"; }
merge_exit2 "model-c.json: no point .* at micro-batch 2 .*, which .*model-a.json has" \
  --merge "$work/model-a.json" "$work/model-c.json"

echo "-- --plan auto: profiles the machine once, plans, trains like one process; a resume at"
echo "   another world re-plans"
"$cairn" train "$work/tiny.yaml" --run-dir "$work/one2" --no-progress 2> "$work/one2.err" ||
  { cat "$work/one2.err"; fail "one-process run (micro-batch 2) failed"; }
"$cairn" run --nproc-per-node 2 --run-dir "$work/auto" -- "$cairn" train "$work/tiny.yaml" \
  --no-progress --plan auto --plan-cache "$work/cache" --stop-after 6 > "$work/auto.out" 2>&1 ||
  { tail -30 "$work/auto.out"; fail "--plan auto at 2 ranks failed"; }
grep -q "profiled this machine" "$work/auto.out" || fail "the first auto start did not profile"
grep -q "parallel.plan=auto on 2 ranks: pp=" "$work/auto.out" || fail "the plan was not printed"
ls "$work/cache"/hw-*-2ranks.json > /dev/null || fail "the profile was not cached"
grep -q '<g class="time" data-stage="0"' "$work/auto/plan.svg" || fail "no picture of the auto plan"
"$cairn" run --nproc-per-node 4 --run-dir "$work/auto" -- "$cairn" train "$work/tiny.yaml" \
  --no-progress --plan auto --plan-cache "$work/cache" --resume > "$work/auto4.out" 2>&1 ||
  { tail -30 "$work/auto4.out"; fail "--plan auto resume at 4 ranks failed"; }
grep -q "re-planned for 4 ranks (was 2 ranks: pp=" "$work/auto4.out" || fail "no re-plan at 4 ranks"
compare "$work/one2" "$work/auto" || fail "the auto plans do not follow the one-process run"
/usr/bin/python3 - "$work/auto/events.jsonl" <<'PY' || fail "events.jsonl does not record the plans"
import json, sys
plans = [e for e in map(json.loads, open(sys.argv[1])) if e.get("event") == "plan"]
assert [e["world"] for e in plans] == [2, 4], plans
assert plans[0]["previous"] is None and not plans[0]["replanned"]
assert plans[1]["replanned"] and plans[1]["previous"]["world"] == 2
assert plans[1]["previous"]["summary"] == plans[0]["plan"]["summary"]
assert plans[0]["plan"]["profile_s"] > 0 and plans[1]["plan"]["profile_s"] > 0  # 2, then 4 ranks
# Each start checked its plan at its last step: steps 4-6 of 1-6, then 10-12 of 7-12.
checks = [e for e in map(json.loads, open(sys.argv[1])) if e.get("event") == "plan_check"]
assert [c["world"] for c in checks] == [2, 4], checks
assert [(c["first_step"], c["last_step"]) for c in checks] == [(4, 6), (10, 12)], checks
for c, p in zip(checks, plans):
    assert c["summary"] == p["plan"]["summary"] and c["predicted_step_s"] == p["plan"]["step_s"]
    assert c["predicted_memory_bytes"] == p["plan"]["memory_bytes"] and c["memory_bytes"] > 0
    assert c["step_s"] > 0 and abs(c["step_error"] - (c["predicted_step_s"] / c["step_s"] - 1)) < 1e-9
PY
grep -q "parallel.plan=auto: steps 4-6 took .* s/step (the median; predicted" "$work/auto.out" ||
  { tail -30 "$work/auto.out"; fail "the plan's check was not printed"; }
"$cairn" run --nproc-per-node 2 --run-dir "$work/auto2" -- "$cairn" train "$work/tiny.yaml" \
  --no-progress --plan auto --plan-cache "$work/cache" --max-steps 1 > "$work/auto2.out" 2>&1 ||
  { tail -30 "$work/auto2.out"; fail "a second --plan auto at 2 ranks failed"; }
grep -q "profiled this machine" "$work/auto2.out" && fail "the cached profile was not reused"
rc=0
"$cairn" train "$work/tiny.yaml" --run-dir "$work/autobad" --plan auto --set parallel.tp=2 \
  > "$work/autobad.out" 2>&1 || rc=$?
[ $rc -eq 2 ] && grep -q "parallel.tp is set while parallel.plan=auto" "$work/autobad.out" ||
  { cat "$work/autobad.out"; fail "--plan auto with parallel.tp should exit 2 naming the key"; }
echo "broken" > "$work/cache/$(basename "$(ls "$work/cache"/hw-*-2ranks.json)")"
"$cairn" run --nproc-per-node 2 --run-dir "$work/auto3" -- "$cairn" train "$work/tiny.yaml" \
  --no-progress --plan auto --plan-cache "$work/cache" --max-steps 1 > "$work/auto3.out" 2>&1 ||
  { tail -30 "$work/auto3.out"; fail "--plan auto with a broken cached profile failed"; }
grep -q "profiling the machine again" "$work/auto3.out" || fail "a broken profile was not replaced"
# A profile written before the overlap was measured (no dp_overlap) is measured again too.
hw=$(ls "$work/cache"/hw-*-2ranks.json)
/usr/bin/python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert "dp_overlap" in j; del j["dp_overlap"]; json.dump(j, open(sys.argv[1], "w"))' "$hw"
"$cairn" run --nproc-per-node 2 --run-dir "$work/auto4" -- "$cairn" train "$work/tiny.yaml" \
  --no-progress --plan auto --plan-cache "$work/cache" --max-steps 1 > "$work/auto4.out" 2>&1 ||
  { tail -30 "$work/auto4.out"; fail "--plan auto with a profile without dp_overlap failed"; }
grep -q "a measured profile without dp_overlap .*; profiling the machine again" "$work/auto4.out" ||
  fail "a profile without a measured overlap was not measured again"
grep -q '"dp_overlap"' "$hw" || fail "the new profile has no dp_overlap"

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
