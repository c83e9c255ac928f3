#!/usr/bin/env bash
# Runs after every integration test (the cleanup test of their ctest fixture `cairn_shm`) and
# fails when a /dev/shm/cairn* segment was left behind: flash-checkpoint slots
# (cairn-<hash>-r<rank>-<i>), progress pages (cairn-<hash>-p<rank>) or a unit test's segments
# (cairn-test-<pid>-..., cairn-persist-<pid>-...). A test's EXIT trap removes its own; what is
# left comes from a test killed outright (a ctest timeout) or from a leak.
#
# Unit tests may run beside it (`ctest -j2`) and hold segments of their own, named like the
# integration tests' ones (a hash of a run directory). So a segment is a leftover only if, for
# 5 s, no live process maps it or has it open, and (for names that carry one) its creator's
# pid is gone. A unit test's segment is unheld only for the moments between creating, mapping
# and removing it. Leftovers are listed, not removed: they may be another job's orphaned
# checkpoint, which the next cairn process persists and removes (`cairn ckpt gc` lists them).
#
# Segments that were there before the tests began are not theirs (a run killed earlier on a
# machine whose /dev/shm outlives it): the fixture's setup test `shm_baseline` records them
# (name, inode, modification time) with --record FILE, and --check FILE names them apart,
# uncounted, unless one was written again since.
# Usage: shm_leftovers_test.sh --record FILE | --check FILE
set -euo pipefail
if [[ $# -ne 2 || ( "$1" != --record && "$1" != --check ) ]]; then
  echo "usage: $0 --record FILE | --check FILE" >&2
  exit 2
fi
exec /usr/bin/python3 - "$1" "$2" <<'PY'
import json, os, re, sys, time

SHM = "/dev/shm/"
MODE, BASELINE = sys.argv[1], sys.argv[2]


def identity(name):
    st = os.stat(SHM + name)
    return [st.st_ino, st.st_mtime_ns]


def segments():
    return {n for n in os.listdir(SHM) if n.startswith("cairn")}


def held():
    """Names under /dev/shm that a live process maps or has open."""
    out = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    i = line.find(SHM)
                    if i >= 0:
                        out.add(line[i + len(SHM):].rstrip("\n").replace(" (deleted)", ""))
        except OSError:
            pass
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(SHM):
                out.add(target[len(SHM):].replace(" (deleted)", ""))
    return out


def creator_alive(name):
    """Unit tests put their pid in their segments' names: cairn-test-<pid>-..., cairn-persist-<pid>-..."""
    m = re.match(r"cairn-[a-z]+-(\d+)-", name)
    return bool(m) and os.path.exists(f"/proc/{m.group(1)}")


if MODE == "--record":
    before = {}
    for n in segments():
        try:
            before[n] = identity(n)
        except FileNotFoundError:
            pass
    tmp = BASELINE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(before, f)
    os.replace(tmp, BASELINE)
    print(f"{len(before)} /dev/shm/cairn* segment(s) there before the tests: {BASELINE}")
    sys.exit(0)

try:
    with open(BASELINE) as f:
        before = json.load(f)
except FileNotFoundError:
    print(f"no baseline {BASELINE} (shm_baseline did not run): every segment counts")
    before = {}


def preexisting(name):
    try:
        return before.get(name) == identity(name)
    except FileNotFoundError:
        return False


old = sorted(n for n in segments() if preexisting(n))
if old:
    print(f"{len(old)} segment(s) there before the tests began, not counted: " + ", ".join(old))

suspects = None
for _ in range(11):  # 5 s
    now = {n for n in segments() - held() if not creator_alive(n) and not preexisting(n)}
    suspects = now if suspects is None else suspects & now
    if not suspects:
        print("no /dev/shm/cairn* segment left behind")
        sys.exit(0)
    time.sleep(0.5)

print(f"FAIL: {len(suspects)} /dev/shm/cairn* segment(s) left behind, held by no process for 5 s:",
      file=sys.stderr)
for n in sorted(suspects):
    try:
        st = os.stat(SHM + n)
        print(f"  {SHM}{n}: {st.st_size} bytes, last written "
              f"{time.strftime('%H:%M:%S', time.localtime(st.st_mtime))} "
              f"({time.time() - st.st_mtime:.0f} s ago)", file=sys.stderr)
    except FileNotFoundError:
        pass
print("(cairn-<hash>-r*/-p* belong to the run directory whose absolute path hashes to <hash>, "
      "see elastic::flash_slot_name)", file=sys.stderr)
sys.exit(1)
PY
