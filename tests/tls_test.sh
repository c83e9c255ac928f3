#!/usr/bin/env bash
# The control plane with mutual TLS, on loopback: an agent embeds the master (its certificate
# signed by the job's CA, client certificates required) and trains with data.sharding: dynamic,
# so the workers' own calls to the master (the shard service) go over TLS with the node's
# certificate too. Then the refusals a user gets, fast and named: a plaintext endpoint off
# loopback without --insecure, TLS flags that do not fit together, a master certificate that
# does not name the host the agent dials. No log holds the job token.
# Usage: tls_test.sh CAIRN
set -euo pipefail
cairn=$1
work=$(mktemp -d)
source "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export CAIRN_JOB_TOKEN=tls-test-$RANDOM$RANDOM$RANDOM
make_certs "$work/tls" IP:127.0.0.1 DNS:localhost
tls=(--tls-ca "$work/tls/ca.pem" --tls-cert "$work/tls/node.pem" --tls-key "$work/tls/node.key")
prepare_kjv 60000
flash_config 20

echo "-- a job over mutual TLS, the workers taking shards from the master over TLS"
rc=0
timeout -k 5 240 "$cairn" run --rdzv-backend cairn --rdzv-endpoint "127.0.0.1:$(free_port)" \
  --embed-master --node-host 127.0.0.1 --rdzv-wait 0 --nproc-per-node 2 "${tls[@]}" \
  --tls-verify-clients --run-dir "$work/run" -- "$cairn" train "$work/tiny.yaml" --no-progress \
  --set data.sharding=dynamic > "$work/run.out" 2>&1 || rc=$?
[ $rc = 0 ] || { tail -n 30 "$work/run.out"; fail "the TLS job exited $rc"; }
grep -q "client certificates required" "$work/run.out" || fail "the master did not require client certificates"
[ "$(last_step "$work/run")" = 20 ] || fail "the job did not train 20 steps"
grep -q '"sharding":"dynamic"\|data.sharding.*dynamic\|shard' "$work/run.out" "$work/run/events.jsonl" ||
  fail "the job did not take its data from the master's shard service"
! grep -rl "$CAIRN_JOB_TOKEN" "$work/run.out" "$work/run" || fail "the job token is in a log"
echo "   20 steps; the master required and verified client certificates"

# refused NAME EXIT WHAT ARGS...: `cairn ARGS` exits EXIT within 20 s and says WHAT.
refused() {
  local name=$1 want=$2 what=$3; shift 3
  local rc=0 t0=$SECONDS
  timeout -k 5 20 "$cairn" "$@" > "$work/$name.out" 2>&1 || rc=$?
  [ $rc = "$want" ] || { cat "$work/$name.out"; fail "$name: exit $rc, expected $want"; }
  grep -q -- "$what" "$work/$name.out" || { cat "$work/$name.out"; fail "$name: no '$what' in its error"; }
  echo "   $name: exit $rc after $((SECONDS - t0)) s: $(grep -m1 -o -- "$what.*" "$work/$name.out" | cut -c1-100)"
}
echo "-- refusals"
refused plaintext-agent 2 "in plaintext" run --rdzv-backend cairn --rdzv-endpoint 10.254.0.1:29400 \
  --run-dir "$work/r1" -- true
refused plaintext-master 2 "--insecure" master --host 0.0.0.0 --port 0
refused cert-without-ca 2 "needs --tls-ca" run --rdzv-backend cairn --rdzv-endpoint 127.0.0.1:1 \
  --tls-cert "$work/tls/node.pem" --tls-key "$work/tls/node.key" -- true
refused ca-and-insecure 2 "exclude each other" run --rdzv-backend cairn --rdzv-endpoint 127.0.0.1:1 \
  --tls-ca "$work/tls/ca.pem" --insecure -- true
refused master-missing-key 2 "key" master --host 127.0.0.1 --port 0 --tls-cert "$work/tls/node.pem"
# The master's certificate names 127.0.0.1 and localhost; dialled as 127.0.0.2 it is refused at
# once (no retries: a certificate does not fix itself).
port=$(free_port)
"$cairn" master --host 127.0.0.1 --port "$port" --tls-cert "$work/tls/node.pem" \
  --tls-key "$work/tls/node.key" > "$work/master.out" 2>&1 &
for _ in $(seq 1 100); do grep -q "serving on" "$work/master.out" && break; sleep 0.1; done
grep -q "serving on" "$work/master.out" || { cat "$work/master.out"; fail "the master did not start"; }
"$cairn" master --host 127.0.0.2 --port "$port" --tls-cert "$work/tls/node.pem" \
  --tls-key "$work/tls/node.key" > "$work/master2.out" 2>&1 &
for _ in $(seq 1 100); do grep -q "serving on" "$work/master2.out" && break; sleep 0.1; done
refused wrong-name 1 "TLS handshake with the master" run --rdzv-backend cairn \
  --rdzv-endpoint "127.0.0.2:$port" --tls-ca "$work/tls/ca.pem" --run-dir "$work/r2" -- true
refused wrong-ca 1 "TLS handshake with the master" run --rdzv-backend cairn \
  --rdzv-endpoint "127.0.0.1:$port" --tls-ca "$work/tls/other-ca.pem" --run-dir "$work/r3" -- true
echo PASS
