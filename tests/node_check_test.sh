#!/usr/bin/env bash
# The node check (`cairn run --network-check`) with several agents on loopback, each a "node"
# with its own id and run directory, the master embedded in node a:
#  1. three nodes, c's check fails (CAIRN_DEBUG_NODE_CHECK=fail): c is excluded after two check
#     rounds and told why; a and b train the job to the end at world 2;
#  2. two nodes, b eight times slower at the matmul: reported as a straggler, both train;
#  3. the same with --exclude-straggler: b is excluded, a trains alone;
#  4. the check's flags are refused where they mean nothing.
# Usage: node_check_test.sh CAIRN
set -euo pipefail
cairn=$1
work=$(mktemp -d)
pids=()
source "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 CAIRN_JOB_TOKEN=node-check-test
prepare_kjv 200000
flash_config 10

# node CASE ID [FLAGS...]: start node ID's agent for CASE in the background (the first node of
# a case, which embeds the master, takes a new port from the kernel for the case).
node() {
  local case=$1 id=$2; shift 2
  [ "${port_case:-}" = "$case" ] || { port=$(free_port); port_case=$case; }
  timeout 120 "$cairn" run --rdzv-backend cairn --rdzv-endpoint 127.0.0.1:$port --nnodes "$nnodes" \
    --rdzv-wait 2 --node-id "$id" --node-host 127.0.0.1 --run-dir "$work/$case/$id" "$@" -- \
    "$cairn" train "$work/tiny.yaml" --no-progress --set "ckpt.dir=$work/$case/ckpt" \
    > "$work/$case-$id.out" 2>&1 &
  pids+=($!)
  eval "pid_$id=$!"
}
# ends ID CODE: node ID's agent exits with CODE.
ends() {
  local rc=0
  wait "$(eval echo "\$pid_$1")" || rc=$?
  [ "$rc" = "$2" ] || { tail -n 30 "$work/$case-$1.out"; fail "node $1 exited $rc, expected $2"; }
}
world_of() { grep -h '"event":"workers_started"' "$work/$case/$1/events.jsonl" | tail -n 1 |
             sed 's/.*"world_size":\([0-9]*\).*/\1/'; }

echo "-- 1. three nodes, c's check fails: c is excluded, a and b train at world 2"
case=broken nnodes=2:3
node $case a --embed-master --network-check --network-check-timeout 5
sleep 0.5
node $case b
CAIRN_DEBUG_NODE_CHECK=fail node $case c
ends c 1
ends a 0
ends b 0
grep "excluded from the job: failed the node check: round 1" "$work/$case-c.out" > /dev/null ||
  fail "c was not told why it was excluded"
grep "round 2 (with " "$work/$case-c.out" > /dev/null || fail "c was not checked a second time"
grep "master: node c excluded" "$work/$case-a.out" > /dev/null || fail "the master did not exclude c"
grep "2 of 3 node(s) passed" "$work/$case-a.out" > /dev/null || fail "the verdict is missing"
! grep -s '"event":"workers_started"' "$work/$case/c/events.jsonl" > /dev/null ||
  fail "the excluded node started workers"
[ "$(world_of a)" = 2 ] || fail "a trained at world $(world_of a), expected 2"
[ "$(cat "$work/$case/ckpt/latest")" = "step-00000010" ] || fail "the job did not finish"
ls "$work/$case/a/logs/"node-check-*.json > /dev/null || fail "no check result in a's logs"
echo "   $(grep -o 'node check [0-9.]*: 2 of 3 node(s) passed.*' "$work/$case-a.out" | head -n 1)"

echo "-- 2. b is 8x slower at the matmul: a straggler, reported; both train"
case=slow nnodes=1:2
node $case a --embed-master --network-check --network-check-timeout 5
sleep 0.5
CAIRN_DEBUG_NODE_CHECK=slow:8 node $case b
ends a 0
ends b 0
grep "node b is a straggler" "$work/$case-a.out" > /dev/null ||
  { grep "node check" "$work/$case-a.out" >&2; fail "b was not reported as a straggler"; }
! grep "master: node b excluded" "$work/$case-a.out" > /dev/null || fail "b was excluded"
[ "$(world_of a)" = 2 ] || fail "a trained at world $(world_of a), expected 2"
echo "   $(grep -o 'node check [0-9.]*: 2 of 2 node(s) passed.*' "$work/$case-a.out" | head -n 1)"

echo "-- 3. with --exclude-straggler b is excluded and a trains alone"
case=exclude nnodes=1:2
node $case a --embed-master --network-check --exclude-straggler --network-check-timeout 5
sleep 0.5
CAIRN_DEBUG_NODE_CHECK=slow:8 node $case b
ends b 1
ends a 0
grep "excluded from the job: straggler: its check took" "$work/$case-b.out" > /dev/null ||
  fail "b was not told it was excluded as a straggler"
[ "$(world_of a)" = 1 ] || fail "a trained at world $(world_of a), expected 1"
[ "$(cat "$work/$case/ckpt/latest")" = "step-00000010" ] || fail "the job did not finish"

echo "-- 4. flags where they mean nothing are refused"
rc=0; "$cairn" run --nproc-per-node 1 --network-check -- /bin/true > "$work/flag.out" 2>&1 || rc=$?
[ $rc = 2 ] || fail "--network-check without the elastic master exited $rc"
grep "use them with --rdzv-backend cairn --embed-master" "$work/flag.out" > /dev/null ||
  fail "the error does not say where --network-check belongs"
rc=0; "$cairn" master --exclude-straggler > "$work/flag.out" 2>&1 || rc=$?
[ $rc = 2 ] || fail "cairn master --exclude-straggler without --network-check exited $rc"
CAIRN_DEBUG_NODE_CHECK=bogus "$cairn" node-check > "$work/flag.out" 2>&1 && fail "a bad debug hook passed"
grep "expected fail or slow:F" "$work/flag.out" > /dev/null || fail "the bad hook is not named"
echo "PASS"
