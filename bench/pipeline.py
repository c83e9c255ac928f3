"""Pipeline parallelism on this machine: a GPT-2 whose blocks outweigh its head (16 layers,
d=384), trained by cairn at pp 2 and pp 4 with each schedule (gpipe, 1f1b, interleaved with 2
chunks per rank, zb-h1) and pp 2 x tp 2 with sequence parallelism (1f1b), each row with its step time, the bubble cairn measured (the seconds each
stage was blocked on its neighbours / its step time, mean and worst stage) next to the
schedule's formula ((p-1)/(m+p-1) for gpipe and 1f1b, (p-1)/(v m+p-1) interleaved,
(p-1)/(3m+p-1) zb-h1, for m micro-batches), each stage's activation memory (the most its
allocator held during the step above what it held before) and the peak RSS of the largest worker.

Reference lines, in the same invocation: cairn in one process with the same micro-batches, and
the PyTorch peer in one process (bench/peer_gpt.py, the whole batch at once; Debian's PyTorch
1.13 has no pipeline-parallel training API, so the peer has no pipeline rows).

  /usr/bin/python3 bench/pipeline.py --cairn build/bin/cairn --data data/kjv

Every worker of both sides gets OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = train.threads = 1
(--threads): pp 2 uses the 2 cores, pp 4 oversubscribes them (two stages per core: a stage's
"blocked" time then includes waiting for a core). Both sides use cairn's allocator settings.
Same model, global batch of 16 sequences of 128 tokens, fp32. Timed: the mean step of --steps
steps after --warmup. The cut is cairn's default (balanced by estimated cost, the 50k-entry head
counted on the last stage), printed per row.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import benchlib  # noqa: E402

N_LAYER, N_HEAD, N_EMBD, VOCAB, SEQ, BATCH, MICRO = 16, 6, 384, 50304, 128, 16, 2


def formula(schedule, p, m, v):
    if schedule == "interleaved":
        return (p - 1) / (v * m + p - 1)
    if schedule == "zb-h1":
        return (p - 1) / (3 * m + p - 1)
    return (p - 1) / (m + p - 1)


def run_cairn(a, pp, schedule, tmp, env, tp=1):
    name = f"pp{pp}-tp{tp}-{schedule}"
    ranks = pp * tp
    cfg = os.path.join(tmp, name + ".yaml")
    with open(cfg, "w") as f:
        f.write(f"""model: {{arch: gpt2, n_layer: {N_LAYER}, n_head: {N_HEAD}, n_embd: {N_EMBD},
        vocab_size: {VOCAB}, block_size: {SEQ}}}
train: {{micro_batch_size: {MICRO}, global_batch_size: {BATCH}, seq_len: {SEQ},
        max_steps: {a.steps + a.warmup}, eval_interval: 0, eval_batches: 1, warmup_steps: 2,
        threads: {a.threads}}}
ckpt: {{persist_interval: 0, memory_interval: 0}}
parallel: {{pp: {pp}, pp_schedule: {schedule}, tp: {tp}, sequence_parallel: {str(tp > 1).lower()}}}
data: {{path: {os.path.abspath(a.data)}}}
""")
    run = os.path.join(tmp, name)
    train = [a.cairn, "--log-level", "warn", "train", cfg, "--no-progress"]
    args = train + ["--run-dir", run] if ranks == 1 else \
        [a.cairn, "run", "--nproc-per-node", str(ranks), "--run-dir", run, "--"] + train
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rc, rss_mb = benchlib.wait_rusage(proc)
    if rc:
        raise SystemExit(f"cairn {name} failed (exit {rc}); see {run}")
    rows = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))][a.warmup:]
    mean = lambda key: sum(r.get(key, 0.0) for r in rows) / len(rows)  # noqa: E731
    start = benchlib.start_event(run)
    out = {"step": mean("step_time"), "rss": rss_mb, "start": start,
           "bubble": mean("pp_bubble"), "bubble_max": mean("pp_bubble_max"),
           "act": [mean(f"pp_act_mb_s{s}") for s in range(pp)] if pp > 1 else []}
    return out


def run_peer(a, env):
    p = subprocess.run([a.python, os.path.join(HERE, "peer_gpt.py"), "--n-layer", str(N_LAYER),
                        "--n-head", str(N_HEAD), "--n-embd", str(N_EMBD), "--vocab", str(VOCAB),
                        "--seq-len", str(SEQ), "--batch", str(BATCH), "--steps", str(a.steps),
                        "--warmup", str(a.warmup), "--threads", str(a.threads)],
                       env=env, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def blocks_per_stage(start):
    """The cut a run's start event reports, as blocks per (virtual) stage: "[9,7]"."""
    cuts = start.get("plan", {}).get("pipeline", {}).get("cuts", [])
    edges = [0] + cuts + [N_LAYER]
    return "[" + ",".join(str(edges[i + 1] - edges[i]) for i in range(len(edges) - 1)) + "]"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cairn", default="build/bin/cairn")
    p.add_argument("--data", default="data/kjv")
    p.add_argument("--python", default=benchlib.python_with_torch(), help="the peer's interpreter")
    p.add_argument("--threads", type=int, default=1, help="threads per worker, both sides")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--pp", default="2,4", help="pipeline sizes")
    p.add_argument("--schedules", default="gpipe,1f1b,interleaved,zb-h1")
    p.add_argument("--tp", default="2", help="tensor-parallel sizes of the pp2 1f1b rows with tp "
                   "(sequence parallelism on), '' for none")
    a = p.parse_args()
    env = benchlib.side_env(a.threads, benchlib.CAIRN_TUNING_ENV)
    print(benchlib.machine_line())
    print(f"GPT-2 {N_LAYER} layers, d={N_EMBD}, {N_HEAD} heads, vocab {VOCAB}; global batch {BATCH} x "
          f"{SEQ} in micro-batches of {MICRO}; fp32; mean of {a.steps} timed steps after {a.warmup}; "
          f"{a.threads} thread(s) per worker, both sides")
    with tempfile.TemporaryDirectory() as tmp:
        peer = run_peer(a, env)
        print(benchlib.peer_side_line(peer, env))
        one = run_cairn(a, 1, "1f1b", tmp, env)
        print(benchlib.cairn_side_line(one["start"], env, "fp32"))
        base = one["step"]
        print(f"  {'layout':26s} {'blocks/stage':>14s} {'step s':>7s} {'vs 1 proc':>9s} {'bubble':>7s}"
              f" {'worst':>6s} {'formula':>8s} {'activation MB per stage':>26s} {'peak RSS MB':>12s}")
        print(f"  {'pytorch, one process':26s} {'':>14s} {BATCH * SEQ / peer['tokens_per_s']:7.3f}")
        print(f"  {'cairn, one process':26s} {'':>14s} {base:7.3f} {1:8.2f}x {'':>7s} {'':>6s} {'':>8s}"
              f" {'':>26s} {one['rss']:12.0f}")
        sys.stdout.flush()
        for pp in [int(x) for x in a.pp.split(",")]:
            m = BATCH // MICRO
            for schedule in a.schedules.split(","):
                r = run_cairn(a, pp, schedule, tmp, env)
                v = r["start"].get("plan", {}).get("pipeline", {}).get("virtual_stages", 1)
                act = " ".join(f"{x:.0f}" for x in r["act"])
                label = f"pp{pp} {schedule}" + (f" (v={v})" if v > 1 else "")
                print(f"  {label:26s} {blocks_per_stage(r['start']):>14s} {r['step']:7.3f}"
                      f" {base / r['step']:8.2f}x {100 * r['bubble']:6.1f}% {100 * r['bubble_max']:5.1f}%"
                      f" {100 * formula(schedule, pp, m, v):7.1f}% {act:>26s} {r['rss']:12.0f}")
                sys.stdout.flush()
        for tp in [int(x) for x in a.tp.split(",") if x]:
            r = run_cairn(a, 2, "1f1b", tmp, env, tp)
            act = " ".join(f"{x:.0f}" for x in r["act"])
            label = f"pp2 x tp{tp} (sp) 1f1b"
            print(f"  {label:26s} {blocks_per_stage(r['start']):>14s} {r['step']:7.3f}"
                  f" {base / r['step']:8.2f}x {100 * r['bubble']:6.1f}% {100 * r['bubble_max']:5.1f}%"
                  f" {100 * formula('1f1b', 2, BATCH // MICRO, 1):7.1f}% {act:>26s} {r['rss']:12.0f}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
