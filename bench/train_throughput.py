"""Training throughput: cairn vs the PyTorch peer, same model, batch, threads, allocator and
precision, on this machine, in one invocation.

Trains a GPT-2 (default 4 layers, d=256, seq 256, batch 8, vocab 50304) for a few steps with
`cairn train` and with the plain-PyTorch peer (bench/peer_gpt.py), one process each, and prints
tokens/s, ms/step, MFU, peak RSS and the ratio cairn/peer.

  /usr/bin/python3 bench/train_throughput.py --cairn build/bin/cairn --data data/kjv

Same conditions on both sides:
- threads: both processes get OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = --threads (default:
  every core), cairn also train.threads, the peer --threads (torch.set_num_threads and
  openblas_set_num_threads). Each side prints the thread counts its process ended up with
  (cairn: `threads` and `blas_threads` of its `start` event; the peer: torch.get_num_threads()
  and openblas_get_num_threads() of its loaded OpenBLAS).
- GEMM peak and MFU: each side measures its fp32 GEMM peak inside its own process with its own
  thread settings (cairn: `peak_flops` of its `start` event; the peer: the same 1024^3 torch.mm
  loop), and its MFU is against that peak, the peak of the cores it actually uses. Both use this
  script's FLOP count per token.
- allocator and OpenMP: cairn keeps freed blocks in its heap (mallopt: mmap threshold 1 GiB,
  trim threshold 2 GiB) and trains with OMP_WAIT_POLICY=PASSIVE (set by the `cairn` front). The
  peer runs twice: with the same settings (MALLOC_MMAP_THRESHOLD_=1073741824,
  MALLOC_TRIM_THRESHOLD_=2147483648, OMP_WAIT_POLICY=PASSIVE) and with the defaults; both
  ratios are printed. cairn also runs with glibc's allocator defaults (CAIRN_MALLOC_DEFAULTS=1):
  what its allocator setting is worth.
- precision: --precision bf16 applies to both (cairn train.precision=bf16; the peer
  torch.autocast("cpu", dtype=torch.bfloat16) around forward and loss).
- timed: the mean step time of --steps steps after --warmup, forward to optimizer step.
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


def flops_per_token(a):
    c = a.n_embd
    n_matmul = a.n_layer * 12 * c * c + a.vocab * c
    return 6 * n_matmul + 12 * a.n_layer * a.seq_len * c


def run_cairn(a, env):
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "bench.yaml")
        with open(cfg, "w") as f:
            f.write(f"""model: {{arch: gpt2, n_layer: {a.n_layer}, n_head: {a.n_head}, n_embd: {a.n_embd},
        vocab_size: {a.vocab}, block_size: {a.seq_len}}}
train: {{micro_batch_size: {a.batch}, global_batch_size: {a.batch}, seq_len: {a.seq_len},
        max_steps: {a.steps + a.warmup}, eval_interval: 0, eval_batches: 1, warmup_steps: 2,
        precision: {a.precision}, threads: {a.threads}}}
data: {{path: {os.path.abspath(a.data)}}}
""")
        run = os.path.join(tmp, "run")
        proc = subprocess.Popen([a.cairn, "--log-level", "warn", "train", cfg, "--run-dir", run,
                                 "--no-progress"], env=env)
        rc, rss = benchlib.wait_rusage(proc)
        if rc != 0:
            raise SystemExit(f"cairn train failed ({rc})")
        rows = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
        times = [r["step_time"] for r in rows[a.warmup:]]
        start = benchlib.start_event(run)
        return {"tokens_per_s": a.batch * a.seq_len * len(times) / sum(times),
                "step_s": sum(times) / len(times), "loss": rows[-1]["loss"], "rss_mb": rss,
                "peak_flops": start.get("peak_flops", 0), "start": start}


def run_peer(a, env):
    proc = subprocess.Popen(
        [a.python, os.path.join(HERE, "peer_gpt.py"), "--n-layer", str(a.n_layer),
         "--n-head", str(a.n_head), "--n-embd", str(a.n_embd), "--vocab", str(a.vocab),
         "--seq-len", str(a.seq_len), "--batch", str(a.batch), "--steps", str(a.steps),
         "--warmup", str(a.warmup), "--threads", str(a.threads), "--precision", a.precision],
        env=env, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    rc, rss = benchlib.wait_rusage(proc)
    if rc != 0:
        raise SystemExit(f"the peer failed ({rc})")
    r = json.loads(out.strip().splitlines()[-1])
    r["rss_mb"] = rss
    return r


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cairn", default="build/bin/cairn")
    p.add_argument("--data", default="data/kjv", help="token directory from `cairn data prepare`")
    p.add_argument("--python", default=benchlib.python_with_torch(), help="the peer's interpreter")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=benchlib.cores(),
                   help="threads of each process, for OpenMP and for OpenBLAS (default: every core)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="both sides (cairn train.precision; the peer torch.autocast cpu bf16)")
    a = p.parse_args()
    if a.steps < 1:
        raise SystemExit("--steps must be at least 1")
    fpt = flops_per_token(a)
    cairn_env = benchlib.side_env(a.threads)
    cairn_glibc_env = dict(cairn_env, CAIRN_MALLOC_DEFAULTS="1")
    peer_tuned_env = benchlib.side_env(a.threads, benchlib.CAIRN_TUNING_ENV)
    peer_glibc_env = benchlib.side_env(a.threads)
    print(benchlib.machine_line() + f"; one process per side, {a.threads} thread(s) each for OpenMP and OpenBLAS")
    print(f"model: GPT-2 {a.n_layer} layers, d={a.n_embd}, vocab {a.vocab}; batch {a.batch} x "
          f"{a.seq_len} tokens; {fpt / 1e6:.1f} MFLOP/token (both sides); precision {a.precision}; "
          f"mean of {a.steps} timed steps after {a.warmup}")
    sys.stdout.flush()
    ours = run_cairn(a, cairn_env)
    peer_tuned = run_peer(a, peer_tuned_env)
    peer_glibc = run_peer(a, peer_glibc_env)
    ours_glibc = run_cairn(a, cairn_glibc_env)
    print(benchlib.cairn_side_line(ours["start"], cairn_env, a.precision))
    print(benchlib.peer_side_line(peer_tuned, peer_tuned_env))
    print(benchlib.peer_side_line(peer_glibc, peer_glibc_env))
    print(benchlib.cairn_side_line(ours_glibc["start"], cairn_glibc_env, a.precision))
    rows = (("cairn", ours), ("peer, cairn's settings", peer_tuned),
            ("peer, defaults", peer_glibc), ("cairn, glibc's allocator", ours_glibc))
    for name, r in rows:
        peak = r.get("peak_flops") or 0
        mfu = f"{100 * r['tokens_per_s'] * fpt / peak:5.1f}% of its {peak / 1e9:5.1f} GFLOP/s" if peak else "  n/a"
        print(f"  {name:>33}: {r['tokens_per_s']:8.0f} tokens/s  {r['step_s'] * 1e3:7.0f} ms/step  "
              f"MFU {mfu}  peak RSS {r['rss_mb']:6.0f} MB")
    print(f"ratio cairn/peer, same settings (allocator, OpenMP waiting): {ours['tokens_per_s'] / peer_tuned['tokens_per_s']:.2f}x")
    print(f"ratio cairn/peer, peer on defaults                         : {ours['tokens_per_s'] / peer_glibc['tokens_per_s']:.2f}x")
    print(f"ratio cairn/peer, both on glibc's allocator                : {ours_glibc['tokens_per_s'] / peer_glibc['tokens_per_s']:.2f}x")
    print(f"cairn's allocator setting: {ours_glibc['step_s'] * 1e3:.0f} -> {ours['step_s'] * 1e3:.0f} ms/step, "
          f"peak RSS {ours_glibc['rss_mb']:.0f} -> {ours['rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
