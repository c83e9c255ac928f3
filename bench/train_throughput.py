"""Training throughput: cairn vs the PyTorch peer, same model, batch and machine, one invocation.

Measures this machine's fp32 GEMM rate, trains a GPT-2 (default 4 layers, d=256, seq 256,
batch 8, vocab 50304) for a few steps with `cairn train` and with the plain-PyTorch peer
(bench/peer_gpt.py), and prints tokens/s, MFU and the ratio cairn/peer.

  /usr/bin/python3 bench/train_throughput.py --cairn build/bin/cairn --data data/kjv
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def gemm_peak(n=1024, seconds=1.0):
    a, b = torch.randn(n, n), torch.randn(n, n)
    c = a @ b
    t0, it = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b, out=c)
        it += 1
    return 2 * n ** 3 * it / (time.perf_counter() - t0)


def flops_per_token(a):
    c = a.n_embd
    n_matmul = a.n_layer * 12 * c * c + a.vocab * c
    return 6 * n_matmul + 12 * a.n_layer * a.seq_len * c


def run_cairn(a):
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "bench.yaml")
        with open(cfg, "w") as f:
            f.write(f"""model: {{arch: gpt2, n_layer: {a.n_layer}, n_head: {a.n_head}, n_embd: {a.n_embd},
        vocab_size: {a.vocab}, block_size: {a.seq_len}}}
train: {{micro_batch_size: {a.batch}, global_batch_size: {a.batch}, seq_len: {a.seq_len},
        max_steps: {a.steps + a.warmup}, eval_interval: 0, eval_batches: 1, warmup_steps: 2,
        precision: {a.precision}}}
data: {{path: {os.path.abspath(a.data)}}}
""")
        run = os.path.join(tmp, "run")
        subprocess.run([a.cairn, "--log-level", "warn", "train", cfg, "--run-dir", run,
                        "--no-progress"], check=True)
        rows = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
        times = [r["step_time"] for r in rows[a.warmup:]]
        return {"tokens_per_s": a.batch * a.seq_len * len(times) / sum(times),
                "step_s": sum(times) / len(times), "loss": rows[-1]["loss"]}


def run_peer(a):
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "peer_gpt.py"), "--n-layer", str(a.n_layer),
         "--n-head", str(a.n_head), "--n-embd", str(a.n_embd), "--vocab", str(a.vocab),
         "--seq-len", str(a.seq_len), "--batch", str(a.batch), "--steps", str(a.steps),
         "--warmup", str(a.warmup)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cairn", default="build/bin/cairn")
    p.add_argument("--data", default="data/kjv", help="token directory from `cairn data prepare`")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    a = p.parse_args()
    peak = gemm_peak()
    fpt = flops_per_token(a)
    print(f"machine: {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
          f"fp32 GEMM {peak / 1e9:.1f} GFLOP/s")
    print(f"model: GPT-2 {a.n_layer} layers, d={a.n_embd}, vocab {a.vocab}; batch {a.batch} x "
          f"{a.seq_len} tokens; {fpt / 1e6:.1f} MFLOP/token; {a.steps} timed steps after {a.warmup}")
    peer = run_peer(a)
    ours = run_cairn(a)
    for name, r in (("pytorch peer", peer), ("cairn", ours)):
        mfu = r["tokens_per_s"] * fpt / peak
        print(f"{name:>13}: {r['tokens_per_s']:8.0f} tokens/s  {r['step_s'] * 1e3:7.0f} ms/step  "
              f"MFU {100 * mfu:5.1f}%")
    print(f"ratio cairn/peer: {ours['tokens_per_s'] / peer['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
