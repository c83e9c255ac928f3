#!/usr/bin/env bash
# Chaos under `cairn run`: workers are killed with SIGKILL at random moments, at least 5 times
# (mid-step after the restarted group made progress, and sometimes while a restarted group is
# still starting up or loading); every failure is recorded and restarted, the restarts resume
# from the in-memory checkpoints, and the run ends with parameters byte-identical to an
# uninterrupted run at the same world size. Once (at the first mid-run kill from the third on)
# a warm standby is killed just before the worker: the agent must notice it is dead.
# Usage: chaos_test.sh CAIRN   (CAIRN_CHAOS_SEED=N replays the kill schedule printed as "seed N")
set -euo pipefail
cairn=$1
work=$(mktemp -d)
agent=
source "$(dirname "$0")/lib.sh"
trap test_cleanup EXIT  # kills the agent, its workers and standbys; removes B's slots
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
require pgrep

seed=${CAIRN_CHAOS_SEED:-$RANDOM}
RANDOM=$seed
echo "seed $seed (CAIRN_CHAOS_SEED=$seed replays this kill schedule)"

steps=200  # ~65 ms a step here: the kills and restarts fit with room to spare
nkills=7   # the first always mid-run; up to 2 of the others right after a restart
final=$(printf 'step-%08d' $steps)
prepare_kjv 200000 || fail "preparing the KJV data failed (bible, cairn data prepare, the GPT-2 tokenizer files)"
flash_config $steps

echo "-- uninterrupted run (A)"
timeout -k 5 150 "$cairn" run --nproc-per-node 2 --run-dir "$work/A" -- "$cairn" train "$work/tiny.yaml" \
  --no-progress > "$work/A.out" 2>&1 || { tail -20 "$work/A.out"; fail "the uninterrupted run failed"; }
[ -f "$work/A/ckpt/$final/rank-00000.bin" ] || fail "the uninterrupted run left no $final"

B=$work/B
events=$B/events.jsonl
count() {  # count EVENT: how many B/events.jsonl holds
  local n=
  [ -f "$events" ] && n=$(grep -c "\"event\":\"$1\"" "$events" || true)
  echo "${n:-0}"
}
last_step() {  # the newest step in B/metrics.jsonl (rank 0 appends a row per step), 0 if none
  local s=
  [ -f "$B/metrics.jsonl" ] && s=$(tail -n 1 "$B/metrics.jsonl" | sed -n 's/.*"step":\([0-9]*\).*/\1/p')
  echo "${s:-0}"
}
evidence() {  # what happened in B, for a failure report (never fails itself)
  set +e
  {
    echo "=== seed $seed (CAIRN_CHAOS_SEED=$seed reproduces the kill schedule); kills so far: ${kills:-0}"
    for k in $(seq 1 "${kills:-0}"); do echo "  kill $k: ${kill_note[$k]}"; done
    echo "=== B/events.jsonl (without checkpoint_saved/checkpoint_persisted)"
    grep -v -e '"event":"checkpoint_saved"' -e '"event":"checkpoint_persisted"' "$events" | tail -n 40
    echo "=== B/logs/agent.log (last 30 lines)"
    tail -n 30 "$B/logs/agent.log"
    echo "=== cairn run's output (last 20 lines)"
    tail -n 20 "$work/B.out"
    for f in "$B"/logs/worker-*.log; do
      [ -f "$f" ] && { echo "=== $f (last 15 lines)"; tail -n 15 "$f"; }
    done
  } >&2
  set -e
}
# wait_until SECONDS WHAT CMD...: poll CMD every 50 ms; fail when cairn run exits first or it times out.
wait_until() {
  local limit=$1 what=$2
  shift 2
  local end=$((SECONDS + limit))
  until "$@"; do
    kill -0 "$agent" 2>/dev/null || { evidence; fail "cairn run exited while waiting for $what"; }
    [ $SECONDS -lt $end ] || { evidence; fail "no $what within ${limit} s"; }
    sleep 0.05
  done
}
at_least() { [ "$(count "$1")" -ge "$2" ]; }
past() { [ "$(last_step)" -gt "$1" ]; }
has_standby() {  # sets standby to a warm standby of the agent, if there is one
  standby=$(pgrep -P "$agent" -x cairn-standby | head -n 1 || true)
  [ -n "$standby" ]
}

echo "-- chaos run (B): $nkills x kill -9 of a random worker at random moments"
"$cairn" run --nproc-per-node 2 --max-restarts 10 --run-dir "$B" -- \
  "$cairn" train "$work/tiny.yaml" --no-progress --resume-or-start > "$work/B.out" 2>&1 &
agent=$!

kills=0
early=0
killed_standby=
prev=0  # step at the previous kill
declare -a kill_pid kill_step kill_note
for i in $(seq 1 $nkills); do
  # Round i-1 (restart i-1) is running once its workers_started event is written.
  wait_until 60 "workers of round $((i - 1))" at_least workers_started "$i"
  if [ "$i" -gt 1 ] && [ $early -lt $((nkills - 5)) ] && [ $((RANDOM % 3)) -eq 0 ]; then
    # Right after the restart: while the workers start, meet, or load the checkpoint.
    early=$((early + 1))
    ms=$((RANDOM % 2500))
    sleep "$(printf '0.%03d' $((ms % 1000)))"
    [ $ms -lt 1000 ] || sleep $((ms / 1000))
    how="$ms ms after restart $((i - 1)) started"
  else
    # Mid-run: once the group has trained past the previous kill, after 0.2-1.5 s (cut short
    # at a ceiling that spreads the kills over the run so that all of them fit).
    wait_until 60 "progress past step $prev after restart $((i - 1))" past "$prev"
    ms=$((200 + RANDOM % 1301))
    ceiling=$(((steps - 15) * i / nkills))
    t0=$(date +%s%3N)
    while [ $(($(date +%s%3N) - t0)) -lt $ms ] && [ "$(last_step)" -lt $ceiling ]; do sleep 0.02; done
    how="$(($(date +%s%3N) - t0)) ms after progress resumed"
    if [ "$i" -ge 3 ] && [ -z "$killed_standby" ]; then
      # Once, at the first mid-run kill from the third on: kill -9 one of the warm standbys
      # (the agent starts them once the round's workers finished a step; wait for one), then
      # the worker. A dead standby must not be activated: its rank starts afresh.
      wait_until 30 "a warm standby (cairn-standby) beside the workers of round $((i - 1))" has_standby
      kill -9 "$standby"
      killed_standby=$standby
      how="$how, standby $standby killed first"
    fi
  fi
  step=$(last_step)
  [ "$step" -lt $((steps - 5)) ] || { evidence; fail "kill $i: the run is at step $step of $steps already"; }
  # Workers only, not the warm standbys beside them.
  mapfile -t workers < <(worker_pids "$B")
  [ ${#workers[@]} -eq 2 ] || { evidence; fail "kill $i: expected 2 workers under cairn run, found: ${workers[*]:-none}"; }
  victim=${workers[$((RANDOM % 2))]}
  kill -9 "$victim"
  kills=$i
  kill_pid[$i]=$victim
  kill_note[$i]="pid $victim, $how"
  wait_until 60 "restart $i after kill $i" at_least restart "$i"
  step=$(last_step)  # the killed group's last row: it can log no step once a rank is gone
  kill_step[$i]=$step
  kill_note[$i]="pid $victim after step $step, $how"
  [ "$step" -gt "$prev" ] && prev=$step
done

echo "-- waiting for the run to finish"
end=$((SECONDS + 120))
while kill -0 "$agent" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.2; done
kill -0 "$agent" 2>/dev/null && { evidence; fail "the chaos run did not finish within 120 s of the last kill"; }
rc=0; wait "$agent" || rc=$?
agent=
[ $rc -eq 0 ] || { evidence; fail "the chaos run exited $rc, expected 0 after $kills restarts"; }

# One summary line per kill: where it hit, and what the restart after it resumed from.
# The restarted round's first checkpoint_loaded (the events are in order; "restart" starts a round).
loads=$(awk '/"event":"restart"/ { r++ } /"event":"checkpoint_loaded"/ && !(r in seen) { seen[r] = 1; print r, $0 }' "$events")
resumed_prev=-1
for i in $(seq 1 $kills); do
  failed=$(grep '"event":"worker_failed"' "$events" | grep "\"pid\":${kill_pid[$i]}[,}]" || true)
  [ -n "$failed" ] || { evidence; fail "kill $i (pid ${kill_pid[$i]}) has no worker_failed event"; }
  echo "$failed" | grep '"signal":"SIGKILL"' > /dev/null || { evidence; fail "kill $i: worker_failed without SIGKILL: $failed"; }
  rank=$(echo "$failed" | sed 's/.*"rank":\([0-9]*\).*/\1/')
  load=$(echo "$loads" | sed -n "s/^$i //p")
  if [ -n "$load" ]; then
    rstep=$(echo "$load" | sed 's/.*"step":\([0-9]*\).*/\1/')
    rsrc=$(echo "$load" | sed 's/.*"source":"\([a-z]*\)".*/\1/')
    resumed="resumed from step $rstep ($rsrc)"
    # Checkpoints are taken every step and never deleted under a restart: no restart may go
    # back before the previous one's resume point, nor past where it was killed.
    [ "$rstep" -ge $resumed_prev ] || { evidence; fail "restart $i resumed from step $rstep, before restart's $resumed_prev"; }
    [ "$rstep" -le $((${kill_step[$i]} + 1)) ] || { evidence; fail "restart $i resumed from step $rstep, after the kill at step ${kill_step[$i]}"; }
    resumed_prev=$rstep
  else
    resumed="killed again before it loaded a checkpoint"
  fi
  echo "   kill $i: rank $rank, ${kill_note[$i]} -> restart $i $resumed"
done

sigkills=$(grep '"event":"worker_failed"' "$events" | grep -c '"signal":"SIGKILL"' || true)
[ "$sigkills" -eq $kills ] || { evidence; fail "$sigkills worker_failed events with SIGKILL, expected $kills"; }
[ "$(count restart)" -eq $kills ] || { evidence; fail "$(count restart) restart events, expected $kills"; }
[ "$(count checkpoint_loaded)" -ge 5 ] || { evidence; fail "$(count checkpoint_loaded) checkpoint_loaded events, expected >= 5"; }
grep -q '"event":"agent_end","exit_code":0,"restarts":'$kills "$events" ||
  { evidence; fail "no agent_end with exit 0 after $kills restarts"; }
for r in 0 1; do
  cmp "$work/A/ckpt/$final/rank-0000$r.bin" "$B/ckpt/$final/rank-0000$r.bin" ||
    { evidence; fail "rank $r's final data file differs from the uninterrupted run's (seed $seed)"; }
done
da=$("$cairn" ckpt inspect "$work/A/ckpt" --digest | grep ^digest) || fail "no digest for A's checkpoint"
db=$("$cairn" ckpt inspect "$B/ckpt" --digest | grep ^digest) || fail "no digest for B's checkpoint"
[ -n "$da" ] && [ "$da" = "$db" ] || fail "parameter digests differ: A '$da', B '$db' (seed $seed)"
# Restarts after a mid-run kill activate the standbys started after the round's first step.
warm=$(grep '"event":"workers_started"' "$events" | grep -c '"from_standby":[12]' || true)
[ "$warm" -ge 1 ] || { evidence; fail "no restart started its workers from standbys"; }
[ -n "$killed_standby" ] || { evidence; fail "no standby was killed (kills 3-$nkills include a mid-run one)"; }
grep -q "the standby of local rank [01] (pid $killed_standby) had ended" "$B/logs/agent.log" ||
  { evidence; fail "the agent did not notice that standby $killed_standby was dead"; }
echo "   $kills kills ($early right after a restart), $warm restart(s) from standbys (standby $killed_standby killed), $(count checkpoint_loaded) checkpoints loaded, $da"
echo "PASS"
