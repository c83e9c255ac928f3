#!/usr/bin/env bash
# cairn on a real Slurm cluster built on this machine: Debian's munged, slurmctld and two
# slurmd (nodes n1 and n2, on loopback ports of their own), in a private mount namespace whose
# /etc/hosts names the nodes. deploy/slurm/cairn.sbatch runs the small GPT-2 on the KJV corpus
# as a 2-node job (cairn run --rdzv-backend slurm: node 0's agent runs the elastic master):
#   1. uninterrupted, to the end;
#   2. sent SIGUSR1 mid-run (scancel --batch, as --signal=B:USR1@N does before the time limit):
#      the workers checkpoint and stop, the script requeues the job, the second run
#      (SLURM_RESTART_COUNT 1) resumes from that checkpoint and finishes;
# and checks that both end with the same model (digest of the final checkpoint) and the same
# loss at every step;
#   3. with `sbatch --no-kill` and `--nnodes 1:2`, node n2's agent and worker killed mid-run:
#      the master drops n2 and n1 finishes the job alone (world size 1) from the checkpoint.
# Everything it starts is stopped at the end (scontrol shutdown, then
# lib.sh's cleanup of every process naming the test's directory).
# Usage: slurm_test.sh CAIRN_BINARY (as root: slurmd and the mount namespace need it)
set -euo pipefail
if [ -z "${CAIRN_SLURM_NAMESPACE:-}" ]; then
  [ "$(id -u)" = 0 ] || { echo "FAIL: the Slurm test runs as root (slurmd, mount namespace)" >&2; exit 1; }
  exec unshare --mount --propagation private env CAIRN_SLURM_NAMESPACE=1 bash "$0" "$@"
fi
cairn=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
agent=
source "$src/tests/lib.sh"
slurm_cleanup() {
  local rc=$?
  if [ -f "$work/slurm.conf" ]; then
    SLURM_CONF=$work/slurm.conf timeout 10 scancel --full --quiet --user root 2> /dev/null || true
    SLURM_CONF=$work/slurm.conf timeout 10 scontrol shutdown 2> /dev/null || true
    sleep 1
  fi
  # slurmstepd's command line does not name $work: its job's processes do, and it exits with them.
  test_cleanup "$rc"
}
trap slurm_cleanup EXIT
# A command that fails outside `fail` (set -e) still says where, and what Slurm and the jobs
# said: the test once ended silently right after a requeue.
slurm_err() {
  local rc=$? line=$1 cmd=$2
  echo "FAIL: line $line: '$cmd' exited $rc" >&2
  [ -n "${job:-}" ] && scontrol show job "$job" >&2 2> /dev/null
  for f in "$work"/*/slurm.out "$work"/log/slurm*.log; do
    [ -f "$f" ] && { echo "== $f" >&2; tail -n 20 "$f" >&2; }
  done
  return 0
}
trap 'slurm_err "$LINENO" "$BASH_COMMAND"' ERR
require munged slurmctld slurmd sbatch scontrol sinfo scancel getent mount
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

printf '127.0.0.1 localhost\n127.0.0.1 n1\n127.0.0.1 n2\n' > "$work/hosts"
mount --bind "$work/hosts" /etc/hosts
getent hosts n2 > /dev/null || fail "the namespace's /etc/hosts does not name n2"

echo "-- a Slurm cluster: munged, slurmctld, slurmd n1 and n2"
mkdir -p "$work/state" "$work/spool" "$work/log"
head -c 1024 /dev/urandom > "$work/munge.key"
chmod 600 "$work/munge.key"
munged --force --socket="$work/munge.sock" --key-file="$work/munge.key" \
  --pid-file="$work/munged.pid" --log-file="$work/log/munged.log" --seed-file="$work/munge.seed"
ctld_port=$(free_port); d_port=$(free_port); n1_port=$(free_port); n2_port=$(free_port)
cat > "$work/slurm.conf" <<CONF
ClusterName=cairntest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
AuthType=auth/munge
AuthInfo=socket=$work/munge.sock
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool/%n
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd-%n.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd-%n.log
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/linear
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SlurmdParameters=config_overrides
KillWait=10
NodeName=n1 NodeHostname=localhost NodeAddr=127.0.0.1 Port=$n1_port CPUs=2 RealMemory=4000
NodeName=n2 NodeHostname=localhost NodeAddr=127.0.0.1 Port=$n2_port CPUs=2 RealMemory=4000
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$work/slurm.conf
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF" -N n1
slurmd -f "$SLURM_CONF" -N n2
# both_idle: waits (30 s at most) until both nodes are idle (a finished job's nodes are
# 'completing' for a moment).
both_idle() {
  for _ in $(seq 1 150); do
    [ "$(sinfo -h -o '%T %D' 2> /dev/null)" = "idle 2" ] && return 0
    sleep 0.2
  done
  sinfo; tail "$work"/log/*.log; fail "the 2 nodes are not idle"
}
both_idle
sinfo

prepare_kjv 200000
flash_config 150 "{memory_interval: 5, persist_interval: 50}"
export CAIRN=$cairn NPROC=1 MAX_RESTARTS=1
# Parts 1 and 2 with mutual TLS between the nodes and node 0's master; part 3 in plaintext.
make_certs "$work/tls" DNS:n1 DNS:n2
export CAIRN_TLS_DIR=$work/tls

# submit NAME [EXTRA sbatch FLAGS]: submits the job from $work/NAME; prints its id.
submit() {
  local name=$1
  shift
  mkdir -p "$work/$name"
  (cd "$work/$name" && sbatch --parsable --nodes=2 --output="$work/$name/slurm.out" "$@" \
     "$src/deploy/slurm/cairn.sbatch" "$work/tiny.yaml")
}
state() { scontrol show job "$1" 2> /dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'; }
# wait_state JOB STATE SECONDS
wait_state() {
  for _ in $(seq 1 $(($3 * 5))); do
    [ "$(state "$1")" = "$2" ] && return 0
    sleep 0.2
  done
  scontrol show job "$1"
  for f in "$work"/*/slurm.out; do echo "== $f"; tail -n 30 "$f"; done
  for f in "$work"/log/slurm*.log; do echo "== $f"; tail -n 15 "$f"; done
  fail "job $1 is $(state "$1"), not $2, after $3 s"
}
final_digest() {  # final_digest CKPT_DIR: the model digest of its step-150 checkpoint
  "$cairn" ckpt inspect "$1/step-00000150" --digest | sed -n 's/^digest *//p'
}

echo "-- 1. the uninterrupted job"
ref=$(submit ref)
wait_state "$ref" COMPLETED 240
grep -q "exited 0\|all 1 worker" "$work/ref/runs/slurm-$ref/n1/logs/agent.log" || fail "no clean end"
grep -q "client certificates required" "$work/ref/runs/slurm-$ref/n1/logs/agent.log" ||
  fail "node 0's master did not serve mutual TLS"
ref_digest=$(final_digest "$work/ref/runs/slurm-$ref/ckpt")
[ -n "$ref_digest" ] || fail "no digest of the reference's final checkpoint"
echo "reference: $ref_digest"

echo "-- 2. SIGUSR1 mid-run: checkpoint, requeue, resume"
both_idle
job=$(submit pre)
run=$work/pre/runs/slurm-$job
wait_state "$job" RUNNING 60
wait_rows "$run/n1" 40 || fail "job $job trained no 40 steps"
scancel --batch --signal=USR1 "$job"
for _ in $(seq 1 300); do
  [ "$(scontrol show job "$job" | sed -n 's/.*Restarts=\([0-9]*\).*/\1/p')" -ge 1 ] && break
  sleep 0.2
done
[ "$(scontrol show job "$job" | sed -n 's/.*Restarts=\([0-9]*\).*/\1/p')" -ge 1 ] ||
  { tail -n 20 "$work/pre/slurm.out"; fail "the job was not requeued"; }
stopped=$(last_step "$run/n1")
[ "$stopped" -lt 150 ] || fail "the job ended before the signal could stop it"
grep -q '"event":"agent_end"' "$run/n1/events.jsonl" || fail "node 0's agent did not end"
grep '"event":"agent_end"' "$run/n1/events.jsonl" | tail -n 1 | grep -q '"signal":"SIGUSR1"' ||
  fail "node 0's agent did not stop for SIGUSR1"
# A requeued job waits 2 minutes before it may start again; the test does not, but it waits
# until the first run is gone from both nodes and 3 s more: slurmd revokes the first run's
# credential with a time in whole seconds, and a launch within that second (or while a node still
# tore the run down) is refused ("Job credential revoked", "already killed, do not launch batch
# job") and the job fails. (One that started again already refuses the update: harmless, the
# wait below judges the job.)
wait_state "$job" PENDING 60
both_idle
sleep 3
scontrol update JobId="$job" StartTime=now 2> /dev/null || true
wait_state "$job" COMPLETED 240
grep -q "run 1," "$work/pre/slurm.out" || { cat "$work/pre/slurm.out"; fail "no second run (SLURM_RESTART_COUNT 1)"; }
resumed=$(start_step "$run/n1")
newest_before=$stopped
[ "$resumed" = "$newest_before" ] ||
  fail "the second run resumed from step $resumed, the first stopped at $stopped"
echo "stopped at step $stopped, requeued, resumed from step $resumed"
digest=$(final_digest "$run/ckpt")
[ "$digest" = "$ref_digest" ] || fail "final model $digest differs from the uninterrupted $ref_digest"
compare "$work/ref/runs/slurm-$ref/n1" "$run/n1" || fail "the losses differ from the uninterrupted run"
echo "same final model ($digest) and losses as the uninterrupted job"

echo "-- 3. a node lost under --no-kill: the job goes on at the smaller world"
both_idle
export CAIRN_RUN_FLAGS="--nnodes 1:2 --heartbeat-timeout 3 --rdzv-wait 1"
unset CAIRN_TLS_DIR
job=$(submit lost --no-kill)
run=$work/lost/runs/slurm-$job
wait_state "$job" RUNNING 60
wait_rows "$run/n1" 40 || fail "job $job trained no 40 steps"
# Node n2 dies: its agent and its worker, at once.
victims=$(worker_pids "$run/n2")
[ -n "$victims" ] || fail "no worker on n2"
victims="$victims $(ps -o ppid= -p $victims | tr -d ' ')"
kill -9 $victims
# The job ends FAILED or COMPLETED (srun reports the killed task's exit); the work must be done.
for _ in $(seq 1 1200); do
  case "$(state "$job")" in COMPLETED | FAILED) break ;; esac
  sleep 0.2
done
agent_end=$(grep '"event":"agent_end"' "$run/n1/events.jsonl" | tail -n 1)
echo "$agent_end" | grep -q '"exit_code":0' || fail "node n1's agent did not finish the job: $agent_end"
[ "$(last_step "$run/n1")" = 150 ] ||
  fail "the job did not reach step 150 on the remaining node"
grep '"event":"workers_started"' "$run/n1/events.jsonl" | tail -n 1 | grep -q '"world_size":1' ||
  fail "node n1 did not go on at world size 1"
grep '"event":"master_node_removed"' "$run/n1/events.jsonl" | grep -q '"node_id":"n2"' ||
  fail "the master did not drop n2"
resumed=$(start_step "$run/n1")
echo "n2 lost after step 40; n1 resumed alone from step $resumed and finished step 150 (job $(state "$job"))"
echo PASS
