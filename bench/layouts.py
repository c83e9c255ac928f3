"""Parallel layouts on this machine: for world 2 (and 4 with --world4), the demo-sized GPT-2
trained by cairn as data parallelism (ZeRO-0..3), tensor parallelism (tp), tp with sequence
parallelism and dp x tp, each with its step time, tokens/s, the peak RSS of its largest worker
and its bytes per parameter per rank against the formula; the PyTorch peer's DDP at the same
world (Debian's PyTorch 1.13 has no tensor-parallel API, so DDP is the only peer layout) as the
reference line, in one invocation.

  /usr/bin/python3 bench/layouts.py --cairn build/bin/cairn --data data/kjv
  /usr/bin/python3 bench/layouts.py --long-only    # just the context-parallel rows
  /usr/bin/python3 bench/layouts.py --long-only --peer-only   # just cairn vs the peer at --peer-seq

With --long (or --long-only), context parallelism on configs/gpt-kjv-long.yaml (the same model,
one sequence of --long-seq tokens per step, activation checkpointing off): one process (cp 1),
cp 2 and cp 4 with each kind (ring, ulysses, 2d), each row with its step time, the peak RSS of
its largest worker, the seconds per step a rank was blocked on cp communication and what it
sent; ring rows run again with parallel.cp_overlap=false, so that the blocked time with and
without overlap shows how much of the ring's communication the block computations hide. The
PyTorch peer (naive attention, full T x T scores) runs one process at --peer-seq, beside
cairn's one process at the same length (the peer has no context parallelism; at the long length
its scores alone would take 3 x 4 x T^2 x 4 bytes per layer).

Every worker of both sides gets OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = --threads (default:
cores / world, at least 1), cairn's also train.threads; both sides use cairn's allocator
settings and passive OpenMP waiting. Same model (GPT-2, 4 layers, d=192, 4 heads, vocabulary
50304, sequences of 128), same global batch (16 sequences), fp32, same steps. Timed: the mean
step time of --steps steps after --warmup.
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
from ddp import free_port  # noqa: E402

N_LAYER, N_HEAD, N_EMBD, VOCAB, SEQ, BATCH = 4, 4, 192, 50304, 128, 16


def flops_per_token():
    c = N_EMBD
    return 6 * (N_LAYER * 12 * c * c + VOCAB * c) + 12 * N_LAYER * SEQ * c


def whole_fraction():
    """Fraction of the parameters every tp rank holds whole (position table, norms, the biases
    of the row-parallel projections)."""
    c = N_EMBD
    total = VOCAB * c + SEQ * c + N_LAYER * (12 * c * c + 13 * c) + 2 * c
    whole = SEQ * c + N_LAYER * (4 * c + 2 * c) + 2 * c
    return whole / total


def formula(dp, tp, zero):
    """Bytes per parameter per rank (fp32 Adam: 4 params + 4 grads + 8 moments)."""
    w = whole_fraction()
    split = (1 - w) / tp + w  # the share of the parameters a rank holds
    p, g, o = 4 * split, 4 * split, 8 * split
    if zero >= 1:
        o /= dp
    if zero >= 2:
        g /= dp
    if zero >= 3:
        p /= dp
    return p + g + o


def run_cairn(a, world, dp, tp, sp, zero, tmp, env):
    name = f"w{world}-dp{dp}-tp{tp}{'-sp' if sp else ''}-z{zero}"
    cfg = os.path.join(tmp, name + ".yaml")
    micro = BATCH // dp
    with open(cfg, "w") as f:
        f.write(f"""model: {{arch: gpt2, n_layer: {N_LAYER}, n_head: {N_HEAD}, n_embd: {N_EMBD},
        vocab_size: {VOCAB}, block_size: {SEQ}}}
train: {{micro_batch_size: {micro}, global_batch_size: {BATCH}, seq_len: {SEQ},
        max_steps: {a.steps + a.warmup}, eval_interval: 0, eval_batches: 1, warmup_steps: 2,
        threads: {a.threads}}}
parallel: {{zero_stage: {zero}, tp: {tp}, sequence_parallel: {'true' if sp else 'false'}}}
data: {{path: {os.path.abspath(a.data)}}}
""")
    run = os.path.join(tmp, name)
    proc = subprocess.Popen([a.cairn, "run", "--nproc-per-node", str(world), "--run-dir", run,
                             "--", a.cairn, "--log-level", "warn", "train", cfg, "--no-progress"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rc, rss_mb = benchlib.wait_rusage(proc)
    if rc:
        raise SystemExit(f"cairn {name} failed (exit {rc}); see {run}/logs")
    rows = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
    times = [r["step_time"] for r in rows[a.warmup:]]
    step = sum(times) / len(times)
    return step, BATCH * SEQ / step, rss_mb, benchlib.start_event(run)


def run_peer(a, world, env):
    port = str(free_port())
    procs = []
    for rank in range(world):
        wenv = dict(env, WORLD_SIZE=str(world), RANK=str(rank), MASTER_ADDR="127.0.0.1",
                    MASTER_PORT=port)
        procs.append(subprocess.Popen(
            [a.python, os.path.join(HERE, "peer_gpt.py"), "--n-layer", str(N_LAYER), "--n-head",
             str(N_HEAD), "--n-embd", str(N_EMBD), "--vocab", str(VOCAB), "--seq-len", str(SEQ),
             "--batch", str(BATCH), "--steps", str(a.steps), "--warmup", str(a.warmup),
             "--threads", str(a.threads)], env=wenv, stdout=subprocess.PIPE, text=True))
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit("peer failed")
    return json.loads(outs[0].strip().splitlines()[-1])


def run_long(a, world, cp, kind, ulysses, overlap, seq, tmp, env):
    """cairn on configs/gpt-kjv-long.yaml at `seq` tokens: (step s, tokens/s, peak RSS MB,
    blocked s per step, sent MB per step, start event)."""
    name = f"long-cp{cp}-{kind}{ulysses or ''}-{'ov' if overlap else 'wait'}-{seq}"
    sets = {"model.block_size": seq, "train.seq_len": seq, "train.max_steps": a.long_steps + 1,
            "train.eval_interval": 0, "train.threads": a.threads, "data.path": os.path.abspath(a.data),
            "ckpt.persist_interval": 0, "ckpt.memory_interval": 0, "parallel.cp": cp}
    if cp > 1:
        sets["parallel.cp_kind"] = kind
        sets["parallel.cp_overlap"] = "true" if overlap else "false"
        if kind == "2d":
            sets["parallel.cp_ulysses"] = ulysses
    run = os.path.join(tmp, name)
    args = [a.cairn, "--log-level", "warn", "train", os.path.join(HERE, "..", "configs", "gpt-kjv-long.yaml"),
            "--no-progress"]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    if world > 1:
        args = [a.cairn, "run", "--nproc-per-node", str(world), "--run-dir", run, "--"] + args
    else:
        args += ["--run-dir", run]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rc, rss_mb = benchlib.wait_rusage(proc)
    if rc:
        raise SystemExit(f"cairn {name} failed (exit {rc}); see {run}")
    rows = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))][1:]  # after 1 warmup
    mean = lambda key: sum(r.get(key, 0.0) for r in rows) / len(rows)  # noqa: E731
    step = mean("step_time")
    return step, seq / step, rss_mb, mean("cp_comm_s"), mean("cp_sent_mb"), benchlib.start_event(run)


def long_section(a):
    seq = a.long_seq
    print(f"\ncontext parallelism: configs/gpt-kjv-long.yaml (GPT-2 {N_LAYER} layers, d={N_EMBD}, "
          f"{N_HEAD} heads), one sequence of {seq} tokens per step, fp32, activation checkpointing "
          f"off; mean of {a.long_steps} steps after 1")
    with tempfile.TemporaryDirectory() as tmp:
        # The peer and cairn's one process at a length the peer's full scores fit.
        threads = a.threads or benchlib.cores()
        env = benchlib.side_env(threads, benchlib.CAIRN_TUNING_ENV)
        a.threads = threads
        wenv = dict(env, WORLD_SIZE="1", RANK="0")
        out = subprocess.run(
            [a.python, os.path.join(HERE, "peer_gpt.py"), "--n-layer", str(N_LAYER), "--n-head",
             str(N_HEAD), "--n-embd", str(N_EMBD), "--vocab", str(VOCAB), "--seq-len", str(a.peer_seq),
             "--batch", "1", "--steps", str(a.long_steps), "--warmup", "1", "--threads", str(threads)],
            env=wenv, stdout=subprocess.PIPE, text=True)
        if out.returncode:
            raise SystemExit("peer failed")
        peer = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"one process at {a.peer_seq} tokens, {threads} thread(s) for OpenMP and OpenBLAS, both sides")
        print(benchlib.peer_side_line(peer, env))
        step, tps, rss, _, _, start = run_long(a, 1, 1, "ring", 0, True, a.peer_seq, tmp, env)
        print(benchlib.cairn_side_line(start, env, "fp32", 1))
        print(f"  {'side':28s} {'step s':>7s} {'tokens/s':>9s} {'vs peer':>8s}")
        print(f"  {'pytorch (peer)':28s} {peer['step_s']:7.3f} {peer['tokens_per_s']:9.0f} {1:8.2f}x")
        print(f"  {'cairn':28s} {step:7.3f} {tps:9.0f} {tps / peer['tokens_per_s']:7.2f}x")
        sys.stdout.flush()
        if a.peer_only:
            return
        print(f"\ncairn at {seq} tokens (world = cp; cp 4 runs four workers on {benchlib.cores()} cores)")
        print(f"  {'layout':28s} {'threads':>7s} {'step s':>7s} {'tokens/s':>9s} {'peak RSS MB':>12s}"
              f" {'vs cp1':>7s} {'cp wait s':>10s} {'sent MB':>8s}")
        base_rss = None
        layouts = [(1, "ring", 0, True), (2, "ring", 0, True), (2, "ring", 0, False), (2, "ulysses", 0, True),
                   (4, "ring", 0, True), (4, "ring", 0, False), (4, "ulysses", 0, True), (4, "2d", 2, True)]
        for cp, kind, ulysses, overlap in layouts:
            threads = max(1, benchlib.cores() // cp)
            a.threads = threads
            env = benchlib.side_env(threads, benchlib.CAIRN_TUNING_ENV)
            step, tps, rss, wait, sent, _ = run_long(a, cp, cp, kind, ulysses, overlap, seq, tmp, env)
            base_rss = base_rss or rss
            label = "one process" if cp == 1 else (
                f"cp{cp} {kind}" + (f" ({ulysses} x {cp // ulysses})" if kind == "2d" else "") +
                ("" if overlap else ", no overlap"))
            print(f"  {label:28s} {threads:7d} {step:7.3f} {tps:9.0f} {rss:12.0f} {rss / base_rss:6.2f}x"
                  f" {wait:10.3f} {sent:8.1f}")
            sys.stdout.flush()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cairn", default="build/bin/cairn")
    p.add_argument("--data", default="data/kjv")
    p.add_argument("--python", default=benchlib.python_with_torch(), help="the peer's interpreter")
    p.add_argument("--threads", type=int, default=0, help="threads per worker (default: cores / world)")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--world4", action="store_true", help="also world 4 (oversubscribes 2 cores)")
    p.add_argument("--long", action="store_true", help="also the context-parallel rows")
    p.add_argument("--long-only", action="store_true", help="only the context-parallel rows")
    p.add_argument("--long-seq", type=int, default=16384, help="the context-parallel rows' length")
    p.add_argument("--long-steps", type=int, default=2, help="timed steps per context-parallel row")
    p.add_argument("--peer-seq", type=int, default=4096, help="the length of the one-process comparison")
    p.add_argument("--peer-only", action="store_true",
                   help="with --long-only: only the one-process comparison with the peer")
    a = p.parse_args()
    if a.long_only:
        print(benchlib.machine_line())
        long_section(a)
        return
    worlds = [2, 4] if a.world4 else [2]
    print(benchlib.machine_line())
    print(f"GPT-2 {N_LAYER} layers, d={N_EMBD}, {N_HEAD} heads, vocab {VOCAB}, global batch {BATCH} x "
          f"{SEQ}; fp32; {flops_per_token() / 1e6:.1f} MFLOP/token; mean of {a.steps} timed steps "
          f"after {a.warmup}; {100 * whole_fraction():.2f}% of the parameters are whole on every tp rank")
    with tempfile.TemporaryDirectory() as tmp:
        for world in worlds:
            threads = a.threads or max(1, benchlib.cores() // world)
            a.threads = threads
            env = benchlib.side_env(threads, benchlib.CAIRN_TUNING_ENV)
            print(f"\nworld {world}: {threads} thread(s) per worker for OpenMP and OpenBLAS, both sides")
            peer = run_peer(a, world, env)
            print(benchlib.peer_side_line(peer, env))
            base = peer["tokens_per_s"]
            print(f"  {'layout':28s} {'step s':>7s} {'tokens/s':>9s} {'vs peer':>8s} {'peak RSS MB':>12s}"
                  f" {'bytes/param':>12s} {'formula':>8s}")
            print(f"  {'pytorch DDP (peer)':28s} {BATCH * SEQ / base:7.3f} {base:9.0f} {1:8.2f}x")
            layouts = [(world, 1, False, z) for z in (0, 1, 2, 3)]
            layouts += [(world // tp, tp, sp, z) for tp in (2, 4) if tp <= world and world % tp == 0
                        and N_HEAD % tp == 0 for sp in (False, True) for z in ((0, 1) if world // tp > 1 else (0,))]
            first = True
            for dp, tp, sp, zero in layouts:
                step, tps, rss, start = run_cairn(a, world, dp, tp, sp, zero, tmp, env)
                if first:
                    print(benchlib.cairn_side_line(start, env, "fp32", world))
                    first = False
                mem = start.get("bytes_per_param", {})
                label = f"dp{dp} x tp{tp}{' + sp' if sp else ''}, ZeRO-{zero}"
                print(f"  {label:28s} {step:7.3f} {tps:9.0f} {tps / base:7.2f}x {rss:12.0f}"
                      f" {mem.get('total', float('nan')):12.2f} {formula(dp, tp, zero):8.2f}")
                sys.stdout.flush()
    if a.long:
        a.threads = 0
        long_section(a)


if __name__ == "__main__":
    main()
