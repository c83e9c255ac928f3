"""The planner's predictions against measurements on this machine: for every layout of the demo
GPT-2 (configs/gpt-kjv.yaml: 4 blocks, d=192, micro-batch 8 (4 at dp=4, which 16 sequences a
step allow), global batch 16, sequences of 128) at world 2 (and 4 with --world4), the step time and memory per rank `cairn plan --evaluate`
predicts next to what `cairn run ... cairn train` measures, the errors, and the layout the
planner chooses, its micro-batch size its own (`cairn plan --prefer-simpler 0.05`; `--plan
auto` plans so at the job's micro-batch size, on which the data order depends), measured
against the best measured layout of the table, the two in turns.

  /usr/bin/python3 bench/planner.py --cairn build/bin/cairn --data data/kjv [--world4]
      [--config configs/llama-kjv.yaml]

How: `cairn plan profile-hw --ranks W` measures the machine (collectives over loopback, how
much of an all-reduce hides behind compute running on every rank, the resident memory of a
process before any tensor) and `cairn plan profile-model --ranks W` times the model's
embedding, one block and head forward and backward on W threads at once (one thread each, as
the workers run; the median of repetitions), fitted in tokens and sequence length. Its three
rounds are spread over the runs (one before the first layout, one amid, one after the last;
`profile-model --merge` makes them one profile, each point the median of the three), so a
while the shared machine was slow or fast moves one round, not every prediction; the errors
of each round alone are printed too. `cairn plan
--evaluate --model-profile` then predicts each layout from those two files alone: nothing is
calibrated on a training run. Measured: the median step time of --steps steps after --warmup
and the peak resident memory of the fullest rank while it trained (metrics.jsonl's
mem_peak_mb: the kernel's high-water mark, max over ranks; the prediction counts the
profile's runtime memory plus parameters, gradients, optimizer state, activations and
buffers). "end GiB" is the largest worker's peak over its whole life (rusage), which adds the
final validation and the final checkpoint copied into shared memory (host memory beside the
device's on a GPU machine; not what the planner budgets). "GEMM" is the fp32 GFLOP/s the
run's ranks measured together as it started (metrics' MFU divides by it): how fast the shared
machine was during that run, beside the profile's "GEMM ... per rank, all at once" (times the
ranks), which the predictions rest on; a step time error follows a drift between the two. Every worker runs with OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = train.threads =
1, cairn's allocator settings, fp32, one layout at a time.

There is no peer in this bench: the planners cairn is measured against (Galvatron's search,
ATorch's auto_accelerate) cannot be installed here; their published search times and
accuracies are in the project's references, not re-measured.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import benchlib  # noqa: E402

GPT = os.path.join(HERE, "..", "configs", "gpt-kjv.yaml")

# (label, --set keys) per world; dp fills what the model-parallel axes leave.
LAYOUTS = {
    2: [("dp=2", {}),
        ("dp=2 ZeRO-1", {"parallel.zero_stage": 1}),
        ("dp=2 ZeRO-2", {"parallel.zero_stage": 2}),
        ("dp=2 ZeRO-3", {"parallel.zero_stage": 3}),
        ("tp=2", {"parallel.tp": 2}),
        ("tp=2 sp", {"parallel.tp": 2, "parallel.sequence_parallel": "true"}),
        ("cp=2 ring", {"parallel.cp": 2}),
        ("cp=2 ulysses", {"parallel.cp": 2, "parallel.cp_kind": "ulysses"}),
        ("pp=2 1f1b", {"parallel.pp": 2}),
        ("pp=2 gpipe", {"parallel.pp": 2, "parallel.pp_schedule": "gpipe"}),
        ("pp=2 zb-h1", {"parallel.pp": 2, "parallel.pp_schedule": "zb-h1"})],
    4: [("dp=2 tp=2", {"parallel.tp": 2}),
        ("dp=2 cp=2 ring", {"parallel.cp": 2}),
        ("pp=2 dp=2 1f1b", {"parallel.pp": 2}),
        ("tp=4", {"parallel.tp": 4}),
        ("pp=2 tp=2", {"parallel.pp": 2, "parallel.tp": 2}),
        ("pp=4 1f1b", {"parallel.pp": 4}),
        ("tp=2 cp=2 ring", {"parallel.tp": 2, "parallel.cp": 2}),
        ("cp=4 ring", {"parallel.cp": 4}),
        ("dp=4 mb4", {"train.micro_batch_size": 4}),
        ("dp=4 ZeRO-1 mb4", {"parallel.zero_stage": 1, "train.micro_batch_size": 4}),
        ("dp=4 ZeRO-2 mb4", {"parallel.zero_stage": 2, "train.micro_batch_size": 4}),
        ("dp=4 ZeRO-3 mb4", {"parallel.zero_stage": 3, "train.micro_batch_size": 4}),
        ("dp=2 tp=2 ZeRO-1", {"parallel.tp": 2, "parallel.zero_stage": 1}),
        ("dp=2 tp=2 sp", {"parallel.tp": 2, "parallel.sequence_parallel": "true"}),
        ("cp=4 ulysses", {"parallel.cp": 4, "parallel.cp_kind": "ulysses"}),
        ("cp=4 2d", {"parallel.cp": 4, "parallel.cp_kind": "2d", "parallel.cp_ulysses": 2}),
        ("tp=2 cp=2 ulysses", {"parallel.tp": 2, "parallel.cp": 2, "parallel.cp_kind": "ulysses"}),
        ("pp=2 cp=2 ring", {"parallel.pp": 2, "parallel.cp": 2}),
        ("pp=2 dp=2 zb-h1", {"parallel.pp": 2, "parallel.pp_schedule": "zb-h1"}),
        ("pp=2 dp=2 interl.", {"parallel.pp": 2, "parallel.pp_schedule": "interleaved",
                               "parallel.pp_virtual": 2, "train.micro_batch_size": 4})],
}


def sets_args(sets):
    out = []
    for k, v in sets.items():
        out += ["--set", f"{k}={v}"]
    return out


def evaluate(a, cluster, model, world, sets):
    """cairn plan --evaluate: {term: seconds}, step s, memory GiB; or None, why not, None."""
    out = subprocess.run([a.cairn, "plan", a.config, "--cluster", cluster, "--model-profile", model,
                          "--evaluate", "--world", str(world)] + sets_args(sets), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    if out.returncode:
        return None, out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "no output", None
    terms = {}
    for line in out.stdout.splitlines():
        m = re.match(r"^  ([a-z ]+?)\s+([0-9.e+-]+) s", line)
        if m:
            terms[m.group(1)] = float(m.group(2))
    mem = float(re.search(r"memory per device\s+([0-9.]+) GiB", out.stdout).group(1))
    return terms, terms["step"], mem


def measure(a, world, sets, tmp, name, env, plan_file=None):
    """cairn run ... cairn train: (median step s, training peak GiB, whole-life peak GiB)."""
    run = os.path.join(tmp, name)
    keys = dict(sets, **{"train.max_steps": a.steps + a.warmup, "train.eval_interval": 0,
                         "train.threads": 1, "ckpt.persist_interval": 0,
                         "ckpt.memory_interval": 0, "data.path": os.path.abspath(a.data)})
    cmd = [a.cairn, "run", "--nproc-per-node", str(world), "--run-dir", run, "--", a.cairn,
           "--log-level", "warn", "train", a.config, "--no-progress"] + sets_args(keys)
    if plan_file:
        cmd += ["--plan", plan_file]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rc, rss_mb = benchlib.wait_rusage(proc)
    if rc:
        raise SystemExit(f"cairn {name} failed (exit {rc}); see {run}")
    rows = [r for r in benchlib.read_jsonl(os.path.join(run, "metrics.jsonl")) if "step_time" in r]
    times = [r["step_time"] for r in rows[a.warmup:]]
    peak_mb = max(r["mem_peak_mb"] for r in rows)
    # The GEMM peak the run measured at its start: how fast the shared machine was meanwhile.
    starts = [r for r in benchlib.read_jsonl(os.path.join(run, "events.jsonl"))
              if r.get("event") == "start"]
    gemm = starts[-1].get("peak_flops", 0) / 1e9 if starts else 0
    # What the run was (its plan, shapes and settings), without what varies between runs.
    what = {k: v for k, v in (starts[-1] if starts else {}).items()
            if k not in ("peak_flops", "build_ms", "time")}
    return statistics.median(times), peak_mb * 1e6 / 2**30, rss_mb * 1e6 / 2**30, gemm, what


def profile(a, world, tmp, env, cmd):
    """cairn plan <cmd>: its output lines (raises on failure)."""
    prof = subprocess.run([a.cairn, "plan"] + cmd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    if prof.returncode:
        raise SystemExit(f"cairn plan {cmd[0]} failed:\n{prof.stdout}")
    return prof.stdout.splitlines()


def print_profile(lines):
    for line in lines:
        if line.startswith(("GEMM", "memory copy", "all-reduce fit", "all-reduce hidden",
                            "code the kernels", "heap its", "fit ")):
            print("profile: " + line)


def world_section(a, world, tmp, env):
    print(f"\n== world {world}: {world} workers on {benchlib.cores()} cores")
    hw = os.path.join(tmp, f"here-{world}.json")
    print_profile(profile(a, world, tmp, env, ["profile-hw", "--ranks", str(world), "--seconds",
                                               "0.3", "--out", hw]))
    # The model profile's rounds spread over the runs: one round before the first layout, one
    # after half of them, one after the last (each with a third of profile-model's default
    # time a point, so the three are one default profile's measuring), merged into one profile,
    # each point the median of the three. A shared machine slow for minutes moves the one
    # round it slowed, where one profile taken before the runs carried it into every
    # prediction, and fast for minutes the same.
    rounds = []

    def model_round():
        path = os.path.join(tmp, f"model-{world}-{len(rounds)}.json")
        profile(a, world, tmp, env, ["profile-model", a.config, "--ranks", str(world),
                                     "--rounds", "1", "--seconds", f"{0.2 / 3:.4f}",
                                     "--out", path])
        rounds.append(path)

    model_round()
    layouts = []  # (label, sets, run) of every layout the model takes
    for label, sets in LAYOUTS[world]:
        terms, why, _ = evaluate(a, hw, rounds[0], world, sets)
        if terms is None:  # a layout this model cannot take (e.g. tp above its kv heads)
            print(f"  {label:16s} not a layout of this model: {why}")
            continue
        layouts.append((label, sets))
    runs = []
    for i, (label, sets) in enumerate(layouts):
        if i == len(layouts) // 2:
            model_round()
        runs.append(measure(a, world, sets, tmp, f"w{world}-{i}", env))
        print(f"  measured {label}: {runs[-1][0]:.3f} s/step", file=sys.stderr)
    model_round()
    model = os.path.join(tmp, f"model-{world}.json")
    print_profile(profile(a, world, tmp, env, ["profile-model", a.config, "--merge"] + rounds
                          + ["--out", model]))
    print(f"  {'layout':16s} {'pred s':>8s} {'meas s':>8s} {'err':>7s} {'pred GiB':>9s} "
          f"{'meas GiB':>9s} {'err':>7s} {'end GiB':>8s} {'GEMM':>6s}  "
          f"largest term besides compute (predicted)")
    results = []
    for (label, sets), (meas_s, meas_mem, end_mem, gemm, _) in zip(layouts, runs):
        terms, pred_s, pred_mem = evaluate(a, hw, model, world, sets)
        t_err = pred_s / meas_s - 1
        m_err = pred_mem / meas_mem - 1
        big = max((k for k in terms if k not in ("step", "compute")), key=lambda k: terms[k])
        results.append((label, pred_s, meas_s, t_err, pred_mem, meas_mem, m_err))
        print(f"  {label:16s} {pred_s:8.3f} {meas_s:8.3f} {100 * t_err:+6.1f}% {pred_mem:9.3f} "
              f"{meas_mem:9.3f} {100 * m_err:+6.1f}% {end_mem:8.3f} {gemm:6.0f}  {big} "
              f"{terms[big]:.3f} s")
    print(f"median |time error| {100 * statistics.median(abs(r[3]) for r in results):.1f}% "
          f"(max {100 * max(abs(r[3]) for r in results):.1f}%); memory: median error "
          f"{100 * statistics.median(r[6] for r in results):+.1f}%, most under "
          f"{100 * min(r[6] for r in results):+.1f}%, most over "
          f"{100 * max(r[6] for r in results):+.1f}% over {len(results)} layouts")
    # What each round alone would have predicted: the machine's drift over the runs.
    alone = []
    for path in rounds:
        errs = [evaluate(a, hw, path, world, sets)[1] / run[0] - 1
                for (_, sets), run in zip(layouts, runs)]
        alone.append(f"{100 * statistics.median(abs(e) for e in errs):.1f}% "
                     f"(mean error {100 * statistics.mean(errs):+.1f}%)")
    print("each round alone (before, amid, after the runs): median |time error| "
          + ", ".join(alone))
    sys.stdout.flush()
    # The planner's choice, its micro-batch size its own (as the table's dp=4 rows), measured.
    plan = os.path.join(tmp, f"plan-{world}.json")
    out = subprocess.run([a.cairn, "plan", a.config, "--cluster", hw, "--model-profile", model,
                          "--world", str(world), "--prefer-simpler", "0.05",
                          "--top", "3", "--out", plan],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if out.returncode:
        raise SystemExit(f"cairn plan failed:\n{out.stdout}")
    row = next(l for l in out.stdout.splitlines() if l.startswith("| 1 |"))
    chosen, chosen_mb = row.split("|")[2].strip(), int(row.split("|")[3])
    # Against the best measured layout of the table, both measured again in turns (a shared
    # machine drifts by more than the differences between the fastest layouts).
    best = min(results, key=lambda r: r[2])
    best_sets = dict(LAYOUTS[world])[best[0]]
    chosen_s, best_s = [], []
    for i in range(a.rounds):
        got = measure(a, world, {"train.micro_batch_size": chosen_mb}, tmp,
                      f"w{world}-chosen-{i}", env, plan_file=plan)
        chosen_s.append(got[0])
        chosen_run = got[4]
        got = measure(a, world, best_sets, tmp, f"w{world}-best-{i}", env)
        best_s.append(got[0])
        best_run = got[4]
    c, b = statistics.median(chosen_s), statistics.median(best_s)
    print(f"planner's choice: {chosen}, micro-batch {chosen_mb}: {c:.3f} s/step; the best "
          f"measured layout of the table, {best[0]}: {b:.3f} s/step (each the median of "
          f"{a.rounds} runs in turns): the choice is {100 * (c / b - 1):+.1f}%"
          + (" (the two ran the same plan, shapes and settings: the difference is the machine's "
             "spread between runs)" if chosen_run == best_run else ""))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cairn", default="build/bin/cairn")
    p.add_argument("--data", default="data/kjv")
    p.add_argument("--config", default=GPT,
                   help="the model (e.g. configs/llama-kjv.yaml); a layout it cannot take is "
                        "named and skipped")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=3,
                   help="steps not timed (a ZeRO-1 worker's third step is still 8%% slow)")
    p.add_argument("--world4", action="store_true", help="also world 4 (oversubscribes 2 cores)")
    p.add_argument("--rounds", type=int, default=3,
                   help="runs each of the planner's choice and the best layout, in turns (the "
                        "same layout measured twice here differs by up to 7%% between runs)")
    a = p.parse_args()
    env = benchlib.side_env(1, benchlib.CAIRN_TUNING_ENV)
    print(benchlib.machine_line())
    print(f"cairn: {benchlib.describe_env(env)}, train.threads=1, fp32; "
          f"{os.path.relpath(a.config)}; "
          f"median of {a.steps} steps after {a.warmup}; no peer (see the docstring)")
    with tempfile.TemporaryDirectory() as tmp:
        world_section(a, 2, tmp, env)
        if a.world4:
            world_section(a, 4, tmp, env)


if __name__ == "__main__":
    main()
