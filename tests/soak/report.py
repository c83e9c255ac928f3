#!/usr/bin/env python3
"""The soak test's bookkeeping over its work directory WORK (runs WORK/ref, WORK/det, WORK/dyn).

  report.py merge DIR                 DIR/merged/{metrics,samples}.jsonl: rank 0's rows of both
                                      hosts (rank 0 may move between them) in the order trained
  report.py check WORK STEPS SAMPLES  every step trained, every fault recovered, run 2 trained
                                      every sample exactly once; exits 1 naming what is wrong
  report.py summary WORK STEPS SAMPLES SEED DIGEST SECONDS
                                      the summary table (markdown) on stdout

The step at a fault is that of the newest step row before it; its stall is from its injection
to the first step row 2 steps past that (the step in flight when it hit does not count); its recovery is from the moment the
environment was whole again (the node's agent or the master restarted, the link up, /dev/shm
freed, storage writable; the injection itself for a kill or a SIGSTOP) to that row.
"""
import json
import os
import statistics
import sys

FAULT_FIELDS = ["run", "index", "kind", "node", "variant", "ms", "planned", "injected", "healed",
                "recovered", "note"]
KINDS = ["worker", "node", "master", "hang", "shm_full", "ckpt_ro", "ckpt_corrupt", "partition"]


def jsonl(path):
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a line cut by a kill -9 of its writer
    return out


def host_logs(d):
    """(metrics rows, samples lines) of each host's run directory."""
    return {h: (jsonl(f"{d}/{h}/metrics.jsonl"), jsonl(f"{d}/{h}/samples.jsonl")) for h in "ab"}


def merge(d):
    """Rank 0's step rows of both hosts by time; a samples line takes the time of the row of
    its step that follows it in the same host's log (the row is written after the line)."""
    rows, samples = [], []
    for h, (m, s) in host_logs(d).items():
        rows += m
        # Match each samples line to the host's next metrics row of the same step.
        j = 0
        for line in s:
            while j < len(m) and m[j]["step"] != line["step"]:
                j += 1
            t = m[j]["time"] if j < len(m) else float("inf")  # trained, the row lost to a kill
            samples.append((t, line))
            j = j + 1 if j < len(m) else j
    rows.sort(key=lambda r: r["time"])
    samples.sort(key=lambda x: x[0])
    os.makedirs(f"{d}/merged", exist_ok=True)
    with open(f"{d}/merged/metrics.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    with open(f"{d}/merged/samples.jsonl", "w") as f:
        for _, line in samples:
            f.write(json.dumps(line) + "\n")
    return rows, [line for _, line in samples]


def faults(d):
    out = []
    path = f"{d}/faults.tsv"
    if os.path.exists(path):
        for line in open(path):
            v = line.rstrip("\n").split("\t")
            f = dict(zip(FAULT_FIELDS, v))
            for k in ("index", "ms", "planned"):
                f[k] = int(f[k])
            for k in ("injected", "healed", "recovered"):
                f[k] = float(f[k])
            out.append(f)
    return out


def recoveries(d):
    """Each fault with its stall and recovery seconds, from the merged step rows."""
    rows = jsonl(f"{d}/merged/metrics.jsonl")
    out = []
    for f in faults(d):
        # The step at the fault: the newest row before it (rows are in the order trained).
        f["step"] = next((r["step"] for r in reversed(rows) if r["time"] <= f["injected"]), 0)
        t = next((r["time"] for r in rows if r["time"] > f["injected"] and r["step"] >= f["step"] + 2),
                 None)
        f["stall_s"] = None if t is None else t - f["injected"]
        f["recovery_s"] = None if t is None else max(0.0, t - f["healed"])
        out.append(f)
    return out


# Failures the master charges to a node (elastic/rdzv_state.cpp failure_counts_against_node).
NOT_CHARGED = ("peer_lost", "master_lost", "killed", "user_error")
# The faults after which a node's own workers may fail in a way charged to it: its worker hung
# (SIGSTOP), or its /dev/shm was full when it had to create its slots again.
CHARGEABLE = ("hang", "shm_full")


def charged(work, run):
    """The master's failure reports of a run that count against a node, each with the fault on
    that node that explains it (None: charged to a node that was not at fault)."""
    fs = faults(f"{work}/{run}")
    out = []
    for e in jsonl(f"{work}/{run}/master/events.jsonl"):
        if e.get("event") != "master_failure" or e.get("diagnosis", "").startswith(NOT_CHARGED):
            continue
        why = next((f for f in fs if f["node"] == e["node_id"].removeprefix("host-")
                    and f["kind"] in CHARGEABLE and f["injected"] <= e["time"] <= f["recovered"] + 5),
                   None)
        out.append((e, why))
    return out


def check(work, steps, samples):
    problems = []
    for run in ("det", "dyn"):
        for e, why in charged(work, run):
            if why is None:
                problems.append(f"{run}: the master charged a failure to {e['node_id']} at "
                                f"{e['time']:.2f}, not at fault: {e['diagnosis'][:200]}")
    for run in ("ref", "det", "dyn"):
        d = f"{work}/{run}"
        rows = jsonl(f"{d}/merged/metrics.jsonl")
        trained = {r["step"] for r in rows}
        missing = [s for s in range(1, steps + 1) if s not in trained]
        if missing:
            problems.append(f"{run}: steps without a row: {missing[:10]}")
        for f in recoveries(d):
            if f["stall_s"] is None:
                problems.append(f"{run}: fault {f['index']} ({f['kind']}) has no step row after it")
    # Run 2: the last samples line of a step is the committed trajectory.
    committed = {}
    lines = jsonl(f"{work}/dyn/merged/samples.jsonl")
    for line in lines:
        committed[line["step"]] = line["sample_ids"]
    missing = [s for s in range(1, steps + 1) if s not in committed]
    ids = [i for s in range(1, steps + 1) for i in committed.get(s, [])]
    dup = len(ids) - len(set(ids))
    if missing:
        problems.append(f"dyn: steps without sample ids: {missing[:10]}")
    if any(len(v) != 8 for v in committed.values()):
        problems.append("dyn: a step without 8 samples")
    if dup:
        problems.append(f"dyn: {dup} sample ids appear more than once in the committed trajectory")
    if any(not 0 <= i < samples for i in ids):
        problems.append("dyn: a sample id outside the dataset")
    # One epoch: every sample, but for the fewer than 8 left over that no step takes.
    if len(set(ids)) != steps * 8 or samples - steps * 8 >= 8:
        problems.append(f"dyn: {len(set(ids))} of {samples} samples trained in {steps} steps")
    for p in problems:
        print("FAIL:", p, file=sys.stderr)
    if not problems:
        print(f"   dyn: {len(lines)} samples lines for {steps} steps ({len(lines) - steps} retrained "
              f"after rollbacks): {steps * 8} of {samples} samples, each exactly once "
              f"({samples - steps * 8} left over, fewer than a step)")
    return 1 if problems else 0


def stack_dumps(work):
    """Seconds the hang detector spent on each stack dump (gdb), from the agents' logs."""
    import datetime
    out = []
    for run in ("det", "dyn"):
        for h in "ab":
            path = f"{work}/{run}/{h}.out"
            if not os.path.exists(path):
                continue
            start = None
            for line in open(path, errors="replace"):
                if not line.startswith("[agent] "):
                    continue
                stamp = line[8:31]
                if "made no progress for" in line:
                    start = stamp
                elif "error stacks of rank" in line and start:
                    t = [datetime.datetime.strptime(x, "%Y-%m-%d %H:%M:%S.%f") for x in (start, stamp)]
                    out.append((t[1] - t[0]).total_seconds())
                    start = None
    return out


def wall(d):
    return float(open(f"{d}/t_end").read()) - float(open(f"{d}/t_start").read())


def fmt(x):
    return "-" if x is None else f"{x:.1f}"


def summary(work, steps, samples, seed, digest, seconds):
    ref_rows = jsonl(f"{work}/ref/merged/metrics.jsonl")
    step_s = statistics.median(r["step_time"] for r in ref_rows)
    ref_wall = wall(f"{work}/ref")
    all_faults = recoveries(f"{work}/det") + recoveries(f"{work}/dyn")
    out = ["# cairn soak test", "",
           f"seed {seed} (CAIRN_SOAK_SEED={seed} replays it); {len(all_faults)} faults; "
           f"total time {seconds // 60} min {seconds % 60} s", "",
           "| fault kind | count | stall median s | stall worst s | recovery median s | recovery worst s |",
           "|---|---|---|---|---|---|"]
    for kind in KINDS + ["all"]:
        fs = [f for f in all_faults if kind in ("all", f["kind"])]
        if not fs:
            continue
        st = [f["stall_s"] for f in fs if f["stall_s"] is not None]
        rc = [f["recovery_s"] for f in fs if f["recovery_s"] is not None]
        out.append(f"| {kind} | {len(fs)} | {fmt(statistics.median(st) if st else None)} | "
                   f"{fmt(max(st) if st else None)} | {fmt(statistics.median(rc) if rc else None)} | "
                   f"{fmt(max(rc) if rc else None)} |")
    out += ["", "stall: from the injection to the first step row 2 steps past the step at the fault; "
            "recovery: from the moment the environment was whole again (agent or master restarted, "
            "link up, /dev/shm freed, storage writable; a kill or SIGSTOP: the injection) to that row.",
            "",
            f"| run | faults | wall s | step rows (steps {steps}) | goodput (steps x {step_s * 1e3:.0f} ms / wall) "
            f"| goodput (uninterrupted wall / wall) |",
            "|---|---|---|---|---|---|"]
    for run, label in (("ref", "uninterrupted"), ("det", "1: deterministic"), ("dyn", "2: dynamic")):
        d = f"{work}/{run}"
        w = wall(d)
        n = len(jsonl(f"{d}/merged/metrics.jsonl"))
        out.append(f"| {label} | {len(faults(d))} | {w:.0f} | {n} | {100 * steps * step_s / w:.1f}% | "
                   f"{100 * ref_wall / w:.1f}% |")
    skipped = sum(1 for run in ("det", "dyn") for h in "ab"
                  for e in jsonl(f"{work}/{run}/{h}/events.jsonl") if e.get("event") == "checkpoint_skipped")
    corrupted = sum(1 for f in all_faults if f["kind"] == "ckpt_corrupt")
    blamed = [why["kind"] for run in ("det", "dyn") for _, why in charged(work, run)]
    ro = [f for run in ("det", "dyn") for f in faults(f"{work}/{run}") if f["kind"] == "ckpt_ro"]
    persist_failed = [e for run in ("det", "dyn") for h in "ab" for e in jsonl(f"{work}/{run}/{h}/events.jsonl")
                      if e.get("event") == "checkpoint_persist_failed"]
    dumps = stack_dumps(work)
    while_ro = [e for e in persist_failed if any(f["injected"] <= e["time"] <= f["healed"] + 1 for f in ro)]
    lines = len(jsonl(f"{work}/dyn/merged/samples.jsonl"))
    out += ["",
            f"- final parameters of run 1 bit-identical to the uninterrupted run's: yes ({digest}); "
            f"losses equal at every step",
            f"- run 2 (dynamic sharding, one epoch): {steps * 8} of {samples} samples trained, each exactly "
            f"once ({samples - steps * 8} left over, fewer than a step; {lines} samples lines for {steps} "
            f"steps, {lines - steps} retrained after rollbacks)",
            f"- corrupted checkpoints: {corrupted} corrupted, {skipped} skipped by a loading worker",
            f"- the hang detector dumped stacks (gdb) {len(dumps)} times, median "
            f"{fmt(statistics.median(dumps) if dumps else None)} s, worst {fmt(max(dumps) if dumps else None)} s "
            f"(part of the hang and long-partition recoveries)",
            f"- storage read-only {len(ro)} times: {len(while_ro)} persists failed meanwhile "
            f"({len(persist_failed)} in all), later steps persisted again",
            f"- failures the master charged to a node: {len(blamed)} ({blamed.count('hang')} after a hang, "
            f"{blamed.count('shm_full')} after a full /dev/shm), each to the node at fault",
            "- after each run: no process left, /dev/shm empty, the final checkpoint verifies",
            f"- seed {seed}; total time {seconds // 60} min {seconds % 60} s"]
    print("\n".join(out))


def main():
    cmd = sys.argv[1]
    if cmd == "merge":
        merge(sys.argv[2])
    elif cmd == "check":
        sys.exit(check(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    elif cmd == "summary":
        summary(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6],
                int(sys.argv[7]))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
