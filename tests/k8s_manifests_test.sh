#!/usr/bin/env bash
# deploy/k8s validated offline (no cluster runs here): `kubectl kustomize` builds the CPU demo
# (and the base), every object is validated against the Kubernetes API schemas of
# kubernetes-models (tests/k8s/package-lock.json pins it; scripts/install-deps.sh installs it),
# and tests/k8s/validate.mjs checks what the manifests promise (the workers meet at the master's
# Service, the token from a Secret, /dev/shm in memory, liveness on /healthz, ports and node
# counts that agree). Broken copies must fail: a wrong type, a disk-backed /dev/shm, workers
# pointed at another Service, a token not from a Secret. Then the containers' command lines,
# as the manifests have them, run here on loopback: the master (its /healthz answers, as the
# liveness probe asks) and a worker node's `cairn run` joining it.
# Usage: k8s_manifests_test.sh CAIRN_BINARY
set -euo pipefail
cairn=$1
work=$(mktemp -d)
. "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT
require kubectl node
src=$(cd "$(dirname "$0")/.." && pwd)
modules=${CAIRN_CACHE:-$src/.cache}/k8s-test/node_modules
[ -d "$modules/kubernetes-models" ] || fail "kubernetes-models is not in $modules (scripts/install-deps.sh installs it)"
# ES modules resolve their imports from their own directory: the script goes beside the modules.
cp "$src/tests/k8s/validate.mjs" "$work/"
ln -s "$modules" "$work/node_modules"
validate() { node "$work/validate.mjs" "$@"; }

for k in base cpu-demo; do
  kubectl kustomize "$src/deploy/k8s/$k" > "$work/$k.yaml" 2> "$work/$k.err" ||
    { cat "$work/$k.err"; fail "kubectl kustomize deploy/k8s/$k"; }
done
echo "-- the CPU demo"
validate "$work/cpu-demo.yaml" --cairn cairn-demo || fail "deploy/k8s/cpu-demo is not valid"
echo "-- the base"
validate "$work/base.yaml" --cairn || fail "deploy/k8s/base is not valid"

echo "-- broken copies are caught"
broken() {  # broken NAME SED-EXPRESSION EXPECTED-MESSAGE
  sed -e "$2" "$work/cpu-demo.yaml" > "$work/$1.yaml"
  ! cmp -s "$work/cpu-demo.yaml" "$work/$1.yaml" || fail "$1: the edit changed nothing"
  rc=0; validate "$work/$1.yaml" --cairn cairn-demo > "$work/$1.out" 2>&1 || rc=$?
  [ $rc = 1 ] && grep -q "$3" "$work/$1.out" || { cat "$work/$1.out"; fail "$1 was not caught"; }
  echo "$1: $(grep -m1 PROBLEM "$work/$1.out")"
}
broken wrong-type 's/parallelism: 2/parallelism: two/' "parallelism must be integer"
broken disk-shm '/medium: Memory/d' "/dev/shm: an emptyDir in memory"
broken other-service 's/--rdzv-endpoint=cairn-master:29400/--rdzv-endpoint=elsewhere:29400/' \
  "the workers meet at the master's Service"
broken no-secret 's/secretKeyRef:/configMapKeyRef:/' "CAIRN_JOB_TOKEN from a Secret"
broken plaintext '/--tls-ca=/d' "TLS to the master"
broken http-probe '/scheme: HTTPS/d' "liveness on /healthz over HTTPS"
echo "-- the manifests' command lines run (as the pods would, on loopback)"
# Each container's command and args as the manifest has them, with the Service name and the
# shared volume mapped to this machine, and the training command replaced by /bin/true.
mapfile -t mcmd < <(validate "$work/cpu-demo.yaml" --command Deployment/cairn-master)
mapfile -t wcmd < <(validate "$work/cpu-demo.yaml" --command Job/cairn-workers)
[ "${mcmd[0]}" = cairn ] && [ "${wcmd[0]}" = cairn ] || fail "the containers do not run cairn"
export CAIRN_JOB_TOKEN=k8s-test-token NODE_INDEX=0 POD_IP=127.0.0.1
# The Secret cairn-tls as the README makes it: a certificate naming the Service (and loopback).
make_certs "$work/certs" DNS:cairn-master IP:127.0.0.1
mkdir -p "$work/tls"
cp "$work/certs/ca.pem" "$work/tls/ca.crt"; cp "$work/certs/node.pem" "$work/tls/tls.crt"
cp "$work/certs/node.key" "$work/tls/tls.key"
mport=$(free_port); dport=$(free_port); wport=$(free_port)
args=()
for a in "${mcmd[@]:1}"; do
  a=${a//\/shared/$work/shared}; a=${a//\/etc\/cairn\/tls/$work/tls}; a=${a/--port=29400/--port=$mport}; a=${a/--dashboard-port=8266/--dashboard-port=$dport}
  args+=("$a")
done
"$cairn" "${args[@]}" > "$work/master.out" 2>&1 &
for _ in $(seq 1 100); do grep -q "dashboard at" "$work/master.out" && break; sleep 0.1; done
/usr/bin/python3 -c "import ssl,urllib.request,sys; c=ssl.create_default_context(cafile='$work/tls/ca.crt'); sys.exit(urllib.request.urlopen('https://127.0.0.1:$dport/healthz', timeout=5, context=c).read() != b'ok\\n')" ||
  { cat "$work/master.out"; fail "the master's /healthz (its liveness probe) does not answer"; }
args=()
for a in "${wcmd[@]:1}"; do
  [ "$a" = "--" ] && break
  a=${a/cairn-master:29400/127.0.0.1:$mport}; a=${a/--dashboard-port=8265/--dashboard-port=$wport}
  a=${a/\$(NODE_INDEX)/$NODE_INDEX}; a=${a/\$(POD_IP)/$POD_IP}; a=${a//\/run\/cairn/$work/run}
  a=${a//\/etc\/cairn\/tls/$work/tls}
  args+=("$a")
done
timeout 60 "$cairn" "${args[@]}" -- /bin/sh -c 'echo "worker rank $RANK of $WORLD_SIZE"' \
  > "$work/worker.out" 2>&1 || { cat "$work/worker.out"; fail "the workers' cairn run failed"; }
grep -q "worker rank 1 of 2" "$work/worker.out" || { cat "$work/worker.out"; fail "no 2 workers"; }
grep -q "client certificates required" "$work/master.out" || fail "the master does not serve mutual TLS"
grep -q '"node_id":"worker-0"\|"id":"worker-0"' "$work/shared/master/run/events.jsonl" ||
  fail "the master did not see node worker-0"
echo PASS
