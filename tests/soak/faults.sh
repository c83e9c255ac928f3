# The soak test's faults: the seeded schedule and one injector per kind. Sourced by
# soak_test.sh, which provides `dir` (the current job's directory), `ns`, `work`, start_master,
# start_host, newest_step, alive and evidence.

fault_kinds=(worker node master hang shm_full ckpt_ro ckpt_corrupt partition)

# make_schedule RUN N FIRST LAST: N faults of run RUN (a line each on stdout: run, index, kind,
# node, variant, milliseconds, planned step), spread over steps FIRST..LAST. Every kind comes
# N/8 times, the rest drawn, then the order shuffled; all of it from $RANDOM alone, so a seed
# gives back the same schedule.
make_schedule() {
  local run=$1 n=$2 first=$3 last=$4 i j t k
  local -a kinds=()
  for k in "${fault_kinds[@]}"; do
    for _ in $(seq 1 $((n / ${#fault_kinds[@]}))); do kinds+=("$k"); done
  done
  while [ ${#kinds[@]} -lt "$n" ]; do kinds+=("${fault_kinds[$((RANDOM % ${#fault_kinds[@]}))]}"); done
  for ((i = n - 1; i > 0; i--)); do  # Fisher-Yates
    j=$((RANDOM % (i + 1)))
    t=${kinds[$i]} kinds[$i]=${kinds[$j]} kinds[$j]=$t
  done
  # No $RANDOM inside $(...): a subshell draws from a sequence of its own.
  local span=$(((last - first) / n)) node variant ms
  local -a nodes=(a b) memory=(kept lost)
  for ((i = 0; i < n; i++)); do
    node=${nodes[$((RANDOM % 2))]}
    variant=-
    case ${kinds[$i]} in
      node) ms=$((1000 + RANDOM % 3001)); variant=${memory[$((RANDOM % 2))]} ;;
      master) ms=$((RANDOM % 3001)) ;;
      shm_full) ms=$((2000 + RANDOM % 2001)); variant=${memory[$((RANDOM % 3 == 0))]} ;;
      ckpt_ro) ms=$((2000 + RANDOM % 3001)) ;;
      ckpt_corrupt) ms=$((1000 + RANDOM % 2001)) ;;
      partition) ms=$((2000 + RANDOM % 8001)) ;;
      *) ms=0 ;;
    esac
    printf '%s\t%d\t%s\t%s\t%s\t%d\t%d\n' "$run" $((i + 1)) "${kinds[$i]}" "$node" "$variant" "$ms" \
      $((first + i * span + RANDOM % (span / 2 + 1)))
  done
}

sleep_ms() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }
# mark: the moment of the injection (the fault's first disruptive action comes right after).
mark() { injected=$EPOCHREALTIME; }

# wait_until SECONDS WHAT CMD...: polls CMD every 0.1 s; fails when an agent exited or on the
# timeout, with the evidence.
wait_until() {
  local limit=$1 what=$2
  shift 2
  local end=$((SECONDS + limit))
  until "$@"; do
    alive || { evidence; fail "an agent exited while waiting for $what"; }
    [ $SECONDS -lt $end ] || { evidence; fail "no $what within $limit s"; }
    sleep 0.1
  done
}
at_step() { [ "$(newest_step)" -ge "$1" ]; }
has_worker() { [ -n "$(worker_pids "$dir/$1")" ]; }

# the_worker NODE: the pid of the node's worker (waits for one, at most 60 s).
the_worker() {
  wait_until 60 "a worker on host $1" has_worker "$1"
  worker_pids "$dir/$1" | head -n 1
}
# kill_node NODE kept|lost: kill -9 of every process in the node's namespace; `lost` also
# removes its /dev/shm segments (a machine that went down loses its memory).
kill_node() {
  ip netns pids $ns$1 | xargs -r kill -9
  disown "$(eval echo \$agent_$1)" 2>/dev/null || true
  for _ in $(seq 1 50); do [ -z "$(ip netns pids $ns$1)" ] && break; sleep 0.1; done
  [ "$2" = kept ] || shm_segments "$dir/$1" | xargs -r rm -f
}
# fill_shm: /dev/shm/soak-fill takes every free byte (again: what was freed since is taken too).
fill_shm() {
  local free size=0
  free=$(df --output=avail -B1 /dev/shm | tail -n 1)
  [ -f /dev/shm/soak-fill ] && size=$(stat -c %s /dev/shm/soak-fill)
  [ "$free" -eq 0 ] || fallocate -l $((size + free)) /dev/shm/soak-fill
}
# hold_full MS: keeps /dev/shm full for MS milliseconds, then frees it.
hold_full() {
  local end=$((${EPOCHREALTIME/./} / 1000 + $1))
  while [ $((${EPOCHREALTIME/./} / 1000)) -lt $end ]; do fill_shm; sleep 0.05; done
  rm -f /dev/shm/soak-fill
}
# node_mount_pids: a pid in each mount namespace of the nodes' processes (one per `ip netns
# exec`: an agent and its workers share it).
node_mount_pids() {
  local p m seen=" "
  for p in $(ip netns pids ${ns}a) $(ip netns pids ${ns}b); do
    m=$(readlink "/proc/$p/ns/mnt" 2>/dev/null) || continue
    case $seen in *" $m "*) continue ;; esac
    seen="$seen$m "
    echo "$p"
  done
}
# corrupt_newest NODE: flips 64 bytes in the middle of a data file (rank 0's for host a, rank
# 1's for b) of the newest committed checkpoint; prints its step.
corrupt_newest() {
  local latest file
  latest=$(cat "$dir/ckpt/latest")
  file=$dir/ckpt/$latest/rank-0000$([ "$1" = a ] && echo 0 || echo 1).bin
  /usr/bin/python3 - "$file" <<'PY' || return 1
import os, sys
with open(sys.argv[1], "r+b") as f:
    n = os.fstat(f.fileno()).st_size
    f.seek(n // 2)
    b = f.read(64)
    f.seek(n // 2)
    f.write(bytes(x ^ 0xFF for x in b))
PY
  echo "${latest#step-}" | sed 's/^0*//'
}

# inject KIND NODE VARIANT MS: one fault; sets `injected` (just before its first disruptive
# action), `healed` (when the environment was whole again) and `note`.
inject() {
  local kind=$1 node=$2 variant=$3 ms=$4 pid step
  note=
  case $kind in
    worker)
      pid=$(the_worker "$node"); mark; kill -9 "$pid"; note="pid $pid" ;;
    node)
      mark; kill_node "$node" "$variant"; sleep_ms "$ms"; start_host "$dir" "$node"
      note="memory $variant, down $ms ms" ;;
    master)
      mark; kill -9 "$master"; disown "$master" 2>/dev/null || true
      sleep_ms "$ms"; start_master "$dir"; note="down $ms ms" ;;
    hang)
      pid=$(the_worker "$node"); mark; kill -STOP "$pid"; note="pid $pid stopped" ;;
    shm_full)
      # The worker is restarted while /dev/shm is full; `lost`: its node's segments are gone
      # too, so the restarted worker must create them anew (the space they freed is taken).
      pid=$(the_worker "$node")
      mark; fill_shm
      [ "$variant" = kept ] || shm_segments "$dir/$node" | xargs -r rm -f
      kill -9 "$pid"
      hold_full "$ms"
      note="full $ms ms, worker $pid killed, memory $variant" ;;
    ckpt_ro)
      # The bind reaches the nodes' mount namespaces (`ip netns exec` makes slaves of this one)
      # read-write: each is remounted read-only in place.
      mark; mount --bind -o ro "$dir/ckpt" "$dir/ckpt"
      local n=0 try
      for pid in $(node_mount_pids); do
        # EBUSY while a file there is open for writing (a persist under way): again.
        for try in $(seq 1 100); do
          nsenter --mount="/proc/$pid/ns/mnt" mount -o remount,bind,ro "$dir/ckpt" 2>/dev/null &&
            { n=$((n + 1)); break; }
          sleep 0.05
        done
      done
      sleep_ms "$ms"
      umount "$dir/ckpt" 2>/dev/null || { sleep 1; umount "$dir/ckpt" 2>/dev/null; } || umount -l "$dir/ckpt"
      note="read-only $ms ms (in this and $n node mount namespaces)" ;;
    ckpt_corrupt)
      mark; step=$(corrupt_newest "$node") || step=$(corrupt_newest "$node")  # retention raced it: again
      kill_node "$node" lost; sleep_ms "$ms"; start_host "$dir" "$node"
      echo "$step" >> "$dir/corrupted"
      note="step $step corrupted, host $node lost, down $ms ms" ;;
    partition)
      mark; ip -n $ns$node link set v$ns$node down
      sleep_ms "$ms"
      ip -n $ns$node link set v$ns$node up
      note="link down $ms ms" ;;
    *) fail "unknown fault kind $kind" ;;
  esac
  healed=$EPOCHREALTIME
}

# run_faults N: this run's N faults of the schedule, each once training reached its planned step
# and recovered from the previous one (2 steps past the newest step seen after the injection).
# Appends run, index, kind, node, variant, ms, planned, injected, healed, recovered (when this
# loop saw it), note to $dir/faults.tsv (report.py derives the step at the fault and the
# recovery from the step rows' times).
run_faults() {
  local run kind node variant ms planned idx s line
  while IFS=$'\t' read -r -u 3 run idx kind node variant ms planned; do
    wait_until 300 "step $planned (before fault $idx, $kind)" at_step "$planned"
    # Training goes on during some faults (read-only storage, a short partition): a run that
    # reached its end before its last fault had too few steps for its schedule.
    s=$(newest_step)
    [ "$s" -lt $((steps - 20)) ] ||
      fail "$(basename "$dir") is at step $s of $steps before fault $idx of $1: too few steps for the schedule (CAIRN_SOAK_STEPS)"
    inject "$kind" "$node" "$variant" "$ms"
    s=$(newest_step)
    wait_until 300 "recovery from fault $idx ($kind, host $node, after step $s)" at_step $((s + 2))
    line=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$run" "$idx" "$kind" "$node" \
      "$variant" "$ms" "$planned" "$injected" "$healed" "$EPOCHREALTIME" "$note")
    echo "$line" >> "$dir/faults.tsv"
    printf '   %3d %-12s host %s  step %5d  %s\n' "$idx" "$kind" "$node" "$s" "$note"
  done 3< <(grep "^$(basename "$dir")	" "$work/schedule.tsv" | head -n "$1")
}
