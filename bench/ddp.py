"""Data-parallel throughput: cairn DP-2 vs PyTorch DDP-2 (Gloo), same model, global batch,
steps and machine, in one invocation; then cairn's bytes per parameter for each ZeRO stage.

  /usr/bin/python3 bench/ddp.py --cairn build/bin/cairn --data data/kjv

Both sides run 2 processes with OMP_NUM_THREADS=1 each. cairn's workers are started by
`cairn run`; the peer's by environment variables (its torchrun does not work on Python 3.11).
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_peer(a):
    port = str(free_port())
    procs = []
    for rank in range(a.world):
        env = dict(os.environ, WORLD_SIZE=str(a.world), RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=port, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(HERE, "peer_gpt.py"), "--n-layer", str(a.n_layer),
             "--n-embd", str(a.n_embd), "--seq-len", str(a.seq_len), "--batch", str(a.batch),
             "--steps", str(a.steps), "--warmup", str(a.warmup)],
            env=env, stdout=subprocess.PIPE, text=True))
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit("peer failed")
    return json.loads(outs[0].strip().splitlines()[-1])


def run_cairn(a, zero_stage, steps, tmp):
    cfg = os.path.join(tmp, f"ddp{zero_stage}.yaml")
    with open(cfg, "w") as f:
        f.write(f"""model: {{arch: gpt2, n_layer: {a.n_layer}, n_head: 4, n_embd: {a.n_embd},
        vocab_size: 50304, block_size: {a.seq_len}}}
train: {{micro_batch_size: {a.batch // a.world}, global_batch_size: {a.batch}, seq_len: {a.seq_len},
        max_steps: {steps}, eval_interval: 0, eval_batches: 1, warmup_steps: 2}}
parallel: {{zero_stage: {zero_stage}}}
data: {{path: {os.path.abspath(a.data)}}}
""")
    run = os.path.join(tmp, f"run{zero_stage}")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    subprocess.run([a.cairn, "run", "--nproc-per-node", str(a.world), "--run-dir", run, "--",
                    a.cairn, "--log-level", "warn", "train", cfg, "--no-progress"],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
    start = next(json.loads(l) for l in open(os.path.join(run, "events.jsonl"))
                 if json.loads(l)["event"] == "start")
    times = [r["step_time"] for r in rows[a.warmup:]]
    tps = a.batch * a.seq_len * len(times) / sum(times) if times else 0
    return tps, start["bytes_per_param"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cairn", default="build/bin/cairn")
    p.add_argument("--data", default="data/kjv")
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=8, help="global batch (sequences)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    a = p.parse_args()
    print(f"DP-{a.world}: GPT-2 {a.n_layer} layers, d={a.n_embd}, vocab 50304, global batch "
          f"{a.batch} x {a.seq_len}; {a.steps} timed steps after {a.warmup}")
    peer = run_peer(a)
    with tempfile.TemporaryDirectory() as tmp:
        ours, _ = run_cairn(a, 0, a.steps + a.warmup, tmp)
        print(f"  pytorch DDP: {peer['tokens_per_s']:8.0f} tokens/s")
        print(f"  cairn DDP  : {ours:8.0f} tokens/s")
        print(f"  ratio cairn/peer: {ours / peer['tokens_per_s']:.2f}x")
        print(f"bytes per parameter per rank at world {a.world} (fp32 Adam; formulas 16, 4+4+8/d, 4+4/d+8/d, 16/d):")
        for stage in (0, 1, 2, 3):
            _, mem = run_cairn(a, stage, 1, tmp)
            print(f"  ZeRO-{stage}: params {mem['params']:.2f} + grads {mem['grads']:.2f} + "
                  f"optimizer {mem['optimizer']:.2f} = {mem['total']:.2f}")


if __name__ == "__main__":
    main()
