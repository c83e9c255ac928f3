"""Data-parallel throughput: cairn DP-2 vs PyTorch DDP-2 (Gloo), same model, global batch,
steps, threads, allocator and machine, in one invocation; then cairn's bytes per parameter for
each ZeRO stage.

  /usr/bin/python3 bench/ddp.py --cairn build/bin/cairn --data data/kjv

Both sides run --world processes with --threads threads each (default: the cores divided by
the processes, 1 on 2 cores): every worker of both sides gets OMP_NUM_THREADS =
OPENBLAS_NUM_THREADS = --threads, cairn's also train.threads, the peer's --threads
(torch.set_num_threads and openblas_set_num_threads). cairn's workers are started by
`cairn run` (which passes OMP_NUM_THREADS on as set); the peer's by environment variables (its
torchrun does not work on Python 3.11). Each side measures its GEMM peak inside its workers,
all at once, and its MFU is against that. The peer runs with cairn's allocator settings
(MALLOC_MMAP_THRESHOLD_=1073741824, MALLOC_TRIM_THRESHOLD_=2147483648) and with glibc's
defaults; both ratios are printed. Timed: the mean step time of --steps steps after --warmup.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import benchlib  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flops_per_token(a):
    c = a.n_embd
    return 6 * (a.n_layer * 12 * c * c + 50304 * c) + 12 * a.n_layer * a.seq_len * c


def run_peer(a, env):
    port = str(free_port())
    procs = []
    for rank in range(a.world):
        wenv = dict(env, WORLD_SIZE=str(a.world), RANK=str(rank), MASTER_ADDR="127.0.0.1",
                    MASTER_PORT=port)
        procs.append(subprocess.Popen(
            [a.python, os.path.join(HERE, "peer_gpt.py"), "--n-layer", str(a.n_layer),
             "--n-embd", str(a.n_embd), "--seq-len", str(a.seq_len), "--batch", str(a.batch),
             "--steps", str(a.steps), "--warmup", str(a.warmup), "--threads", str(a.threads)],
            env=wenv, stdout=subprocess.PIPE, text=True))
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit("peer failed")
    return json.loads(outs[0].strip().splitlines()[-1])


def run_cairn(a, zero_stage, steps, tmp, env):
    cfg = os.path.join(tmp, f"ddp{zero_stage}.yaml")
    with open(cfg, "w") as f:
        f.write(f"""model: {{arch: gpt2, n_layer: {a.n_layer}, n_head: 4, n_embd: {a.n_embd},
        vocab_size: 50304, block_size: {a.seq_len}}}
train: {{micro_batch_size: {a.batch // a.world}, global_batch_size: {a.batch}, seq_len: {a.seq_len},
        max_steps: {steps}, eval_interval: 0, eval_batches: 1, warmup_steps: 2,
        threads: {a.threads}}}
parallel: {{zero_stage: {zero_stage}}}
data: {{path: {os.path.abspath(a.data)}}}
""")
    run = os.path.join(tmp, f"run{zero_stage}")
    subprocess.run([a.cairn, "run", "--nproc-per-node", str(a.world), "--run-dir", run, "--",
                    a.cairn, "--log-level", "warn", "train", cfg, "--no-progress"],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
    start = benchlib.start_event(run)
    times = [r["step_time"] for r in rows[a.warmup:]]
    tps = a.batch * a.seq_len * len(times) / sum(times) if times else 0
    return tps, start


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cairn", default="build/bin/cairn")
    p.add_argument("--data", default="data/kjv")
    p.add_argument("--python", default=benchlib.python_with_torch(), help="the peer's interpreter")
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--threads", type=int, default=0,
                   help="threads per worker, both sides (default: cores / world, at least 1)")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=8, help="global batch (sequences)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    a = p.parse_args()
    a.threads = a.threads or max(1, benchlib.cores() // a.world)
    fpt = flops_per_token(a)
    cairn_env = benchlib.side_env(a.threads)
    peer_tuned_env = benchlib.side_env(a.threads, benchlib.CAIRN_TUNING_ENV)
    peer_glibc_env = benchlib.side_env(a.threads)
    print(benchlib.machine_line() + f"; {a.world} workers per side, {a.threads} thread(s) each for "
          f"OpenMP and OpenBLAS")
    print(f"DP-{a.world}: GPT-2 {a.n_layer} layers, d={a.n_embd}, vocab 50304, global batch "
          f"{a.batch} x {a.seq_len}; fp32; {fpt / 1e6:.1f} MFLOP/token; mean of {a.steps} timed "
          f"steps after {a.warmup}")
    sys.stdout.flush()
    with tempfile.TemporaryDirectory() as tmp:
        ours, start = run_cairn(a, 0, a.steps + a.warmup, tmp, cairn_env)
        peer_tuned = run_peer(a, peer_tuned_env)
        peer_glibc = run_peer(a, peer_glibc_env)
        print(benchlib.cairn_side_line(start, cairn_env, "fp32", a.world))
        print(benchlib.peer_side_line(peer_tuned, peer_tuned_env))
        print(benchlib.peer_side_line(peer_glibc, peer_glibc_env))

        def mfu(tps, peak):
            return f"MFU {100 * tps * fpt / peak:5.1f}% of its {peak / 1e9:.1f} GFLOP/s" if peak else ""

        print(f"  cairn DDP                         : {ours:8.0f} tokens/s  {mfu(ours, start.get('peak_flops'))}")
        for name, r in (("pytorch DDP, cairn's allocator", peer_tuned), ("pytorch DDP, glibc's defaults", peer_glibc)):
            print(f"  {name:34s}: {r['tokens_per_s']:8.0f} tokens/s  {mfu(r['tokens_per_s'], r.get('peak_flops'))}")
        print(f"  ratio cairn/peer, same allocator settings : {ours / peer_tuned['tokens_per_s']:.2f}x")
        print(f"  ratio cairn/peer, peer on glibc's defaults: {ours / peer_glibc['tokens_per_s']:.2f}x")
        print(f"bytes per parameter per rank at world {a.world} (fp32 Adam; formulas 16, 4+4+8/d, 4+4/d+8/d, 16/d):")
        for stage in (0, 1, 2, 3):
            _, st = run_cairn(a, stage, 1, tmp, cairn_env)
            mem = st["bytes_per_param"]
            print(f"  ZeRO-{stage}: params {mem['params']:.2f} + grads {mem['grads']:.2f} + "
                  f"optimizer {mem['optimizer']:.2f} = {mem['total']:.2f}")


if __name__ == "__main__":
    main()
