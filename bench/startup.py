"""Start-up time of the commands that need no libtorch: the `cairn` front (no libtorch) against
the same commands run by `cairn-torch` (every command, libtorch loaded), and against the peer's
front, torchrun (`python3 -m torch.distributed.run --help`, which imports torch), in one
invocation.

  /usr/bin/python3 bench/startup.py --cairn build/bin/cairn --data data/kjv [--runs 7]

Each command runs --runs times, one at a time, output discarded; the wall time from fork to
exit is timed here (median and best are printed). The checkpoint that `ckpt inspect` reads is
made first by a 2-step `cairn train` of a small GPT-2 (2 layers, d=64) on --data. Both sides run
with the same environment (this script's, with OMP_NUM_THREADS=1 and OPENBLAS_NUM_THREADS=1).
The ratio is the cairn-torch (or peer) median over the front's median for the same work.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib


def timed(cmd, env, runs):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            sys.exit(f"startup: {' '.join(cmd)} exited {r.returncode}: {r.stderr.decode()[-500:]}")
    return statistics.median(times), min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cairn", default="build/bin/cairn")
    ap.add_argument("--data", default="data/kjv", help="a prepared data directory (cairn data prepare)")
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    cairn = os.path.abspath(a.cairn)
    torch_bin = os.path.join(os.path.dirname(cairn), "cairn-torch")
    for b in (cairn, torch_bin):
        if not os.access(b, os.X_OK):
            sys.exit(f"startup: {b} is not an executable (build it: ninja -C build)")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as work:
        cfg = os.path.join(work, "tiny.yaml")
        with open(cfg, "w") as f:
            f.write("model: {arch: gpt2, n_layer: 2, n_head: 2, n_embd: 64, vocab_size: 50304, "
                    "block_size: 32}\n"
                    "train: {micro_batch_size: 4, global_batch_size: 8, seq_len: 32, max_steps: 2, "
                    "eval_interval: 0, eval_batches: 1}\n"
                    f"data: {{path: {os.path.abspath(a.data)}}}\n")
        run = os.path.join(work, "run")
        r = subprocess.run([cairn, "train", cfg, "--run-dir", run, "--no-progress"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if r.returncode != 0:
            sys.exit(f"startup: the checkpoint's training failed: {r.stderr.decode()[-800:]}")
        ckpt = os.path.join(run, "ckpt")
        print(benchlib.machine_line())
        print(f"settings: both sides OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1; {a.runs} runs "
              f"each, wall time from fork to exit; peer: {sys.executable} with torch")
        rows = [
            ("help", [cairn, "--help"], [torch_bin, "--help"]),
            ("train --help", [cairn, "train", "--help"], [torch_bin, "train", "--help"]),
            ("train --describe", [cairn, "train", "--describe"],
             [torch_bin, "train", "--describe"]),
            ("ckpt inspect", [cairn, "ckpt", "inspect", ckpt],
             [torch_bin, "ckpt", "inspect", ckpt]),
            ("ckpt inspect --verify", [cairn, "ckpt", "inspect", "--verify", ckpt],
             [torch_bin, "ckpt", "inspect", "--verify", ckpt]),
        ]
        print(f"{'command':24} {'cairn (front)':>18} {'cairn-torch':>18} {'ratio':>7}")
        for name, front, full in rows:
            fm, fb = timed(front, env, a.runs)
            tm, tb = timed(full, env, a.runs)
            print(f"{name:24} {fm * 1e3:8.1f} ms (best {fb * 1e3:5.1f}) "
                  f"{tm * 1e3:7.1f} ms (best {tb * 1e3:6.1f}) {tm / fm:6.1f}x")
        fm, fb = timed([cairn, "run", "--help"], env, a.runs)
        pm, pb = timed([sys.executable, "-m", "torch.distributed.run", "--help"], env, a.runs)
        print(f"launcher --help: cairn run {fm * 1e3:.1f} ms (best {fb * 1e3:.1f}; execs "
              f"cairn-torch), torchrun {pm * 1e3:.1f} ms (best {pb * 1e3:.1f}): "
              f"{pm / fm:.1f}x")


if __name__ == "__main__":
    main()
