"""Flash checkpoints: cairn's training pause per memory save against a raw memcpy of the same
bytes and against torch.save (+ fsync) of the same state by PyTorch, and restore times from
shared memory and from disk, in one invocation.

  /usr/bin/python3 bench/ckpt.py --cairn build/bin/cairn --data data/kjv

The state is a GPT-2 of about 51M parameters (8 layers, d=512, vocab 50304) with its AdamW
moments: about 610 MB. cairn trains it under `cairn run` with an in-memory checkpoint every
step and a persisted one every 3 steps; the pauses (`duration_ms`) and the background copies
(`copy_ms`) come from the trainer's own `checkpoint_saved` events. Then a worker is killed with
SIGKILL and the restarted one restores from shared memory; then a fresh process restores from
the persisted checkpoint. The peer saves and loads the same tensors (names, shapes, dtypes
from cairn's manifest) to the same disk.

What a save costs training is not the pause alone: the copy runs on a background thread that
shares the cores with forward and backward. So the same training runs --rounds times without
checkpoints and with a memory save every step, alternately, and the added step time per save
(mean step time with saves minus without) is printed next to one single-threaded memcpy of the
same bytes (ckpt_bench), with their ratio; the worst pause is printed as well as the median.
A run of --persist-steps under `cairn run` with a persist asked for every 3 steps shows what
persisting costs: storage sets the pace (ckpt.persist_duty), so the bench prints how many were
done and deferred beside the mean step time. Restoring from memory is compared with one memcpy
plus building the model (build_ms of a fresh run's start event).

Settings: cairn's worker gets OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = --threads (default: every
core) and train.threads; the peer (this process: torch.save / torch.load) the same torch and
OpenBLAS thread counts and cairn's allocator settings (mallopt: mmap threshold 1 GiB, trim
threshold 2 GiB), applied here with mallopt before any tensor exists. Each side's GEMM peak is
measured in its own process.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402


def events(run, kind):
    path = os.path.join(run, "events.jsonl")
    if not os.path.exists(path):
        return []
    out = []
    for line in open(path):
        j = json.loads(line)
        if j["event"] == kind:
            out.append(j)
    return out


def write_config(a, tmp, max_steps, memory=1, persist=3):
    cfg = os.path.join(tmp, f"ckpt{memory}.yaml")
    with open(cfg, "w") as f:
        f.write(f"""model: {{arch: gpt2, n_layer: {a.n_layer}, n_head: 8, n_embd: {a.n_embd},
        vocab_size: 50304, block_size: 64}}
train: {{micro_batch_size: 1, global_batch_size: 1, seq_len: 64, max_steps: {max_steps},
        eval_interval: 0, eval_batches: 1, warmup_steps: 2, threads: {a.threads}}}
ckpt: {{memory_interval: {memory}, persist_interval: {persist}, keep_last: 2}}
data: {{path: {os.path.abspath(a.data)}}}
""")
    return cfg


def cairn_side(a, tmp):
    """Pauses while training; restore from memory after a kill; restore from disk."""
    cfg = write_config(a, tmp, a.steps + 100)
    run = os.path.join(tmp, "run")
    env = benchlib.side_env(a.threads)
    agent = subprocess.Popen(
        [a.cairn, "run", "--nproc-per-node", "1", "--max-restarts", "1", "--run-dir", run, "--",
         a.cairn, "--log-level", "warn", "train", cfg, "--no-progress", "--resume-or-start",
         "--stop-after", str(a.steps + 4)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 900
    while len(events(run, "checkpoint_saved")) < a.steps and time.time() < deadline:
        time.sleep(0.05)
    saves = events(run, "checkpoint_saved")
    if len(saves) < a.steps:
        agent.kill()
        raise SystemExit("cairn did not reach the memory saves in time")
    # Kill the worker right after a memory save; the agent restarts it and it restores.
    started = events(run, "workers_started")  # names the worker's pid (not a standby's)
    os.kill(int(started[-1]["pids"]["0"]), signal.SIGKILL)
    if agent.wait(timeout=900) != 0:
        raise SystemExit("cairn run failed after the restart")
    loaded = [e for e in events(run, "checkpoint_loaded") if e.get("source") == "memory"]
    persisted = [e for e in events(run, "checkpoint_persisted") if e.get("committed")]
    # A fresh process, no memory left (the agent removed the segments): restore from disk.
    subprocess.run([a.cairn, "--log-level", "warn", "train", cfg, "--no-progress", "--resume",
                    "--run-dir", run, "--stop-after", str(a.steps + 5)],
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from_disk = [e for e in events(run, "checkpoint_loaded") if e.get("source") == "storage"]
    return saves, loaded, persisted, from_disk, run


def step_times(run, first, last):
    """step_time of steps first..last, first occurrence of each (a restart repeats steps)."""
    seen = {}
    for line in open(os.path.join(run, "metrics.jsonl")):
        r = json.loads(line)
        if first <= r["step"] <= last and r["step"] not in seen:
            seen[r["step"]] = r["step_time"]
    return list(seen.values())


def plain_run(a, tmp, memory, round_):
    """The same training without persists: step times with a memory save every `memory` steps
    (0: no checkpoints at all), and its memory saves."""
    cfg = write_config(a, tmp, a.timed_steps + 4, memory=memory, persist=0)
    run = os.path.join(tmp, f"plain{memory}-{round_}")
    subprocess.run([a.cairn, "--log-level", "warn", "train", cfg, "--no-progress", "--run-dir", run],
                   env=benchlib.side_env(a.threads), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return step_times(run, 5, a.timed_steps + 4), events(run, "checkpoint_saved")


def persist_run(a, tmp):
    """Under `cairn run` (its agent persists): a memory save every step and a persist asked for
    every 3 steps, paced by storage (ckpt.persist_duty, default). Step times, the saves, and the
    persists done and deferred."""
    cfg = write_config(a, tmp, a.persist_steps + 2, memory=1, persist=3)
    run = os.path.join(tmp, "paced")
    subprocess.run([a.cairn, "run", "--nproc-per-node", "1", "--run-dir", run, "--",
                    a.cairn, "--log-level", "warn", "train", cfg, "--no-progress"],
                   env=benchlib.side_env(a.threads), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = a.persist_steps + 2
    persisted = [e for e in events(run, "checkpoint_persisted")
                 if e.get("committed") and e["step"] < last]
    deferred = [e for e in events(run, "checkpoint_persist_deferred") if e["step"] < last]
    saves = [e for e in events(run, "checkpoint_saved") if e["step"] < last]
    return step_times(run, 5, last - 1), persisted, deferred, saves


def peer_side(manifest, tmp, repeats):
    """torch.save + fsync and torch.load of tensors like the checkpoint's."""
    state = {}
    for t in manifest["tensors"]:
        dtype = getattr(torch, t["dtype"])  # cairn's dtype names are torch's
        state[t["name"]] = (torch.randn(t["shape"]).to(dtype) if dtype.is_floating_point
                            else torch.zeros(t["shape"], dtype=dtype))
    path = os.path.join(tmp, "peer.pt")
    save_s, load_s = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with open(path, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        save_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        torch.load(path)
        load_s.append(time.perf_counter() - t0)
        os.remove(path)
    return min(save_s), min(load_s)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cairn", default="build/bin/cairn")
    p.add_argument("--ckpt-bench", default=None, help="default: <cairn's build>/bench/ckpt_bench")
    p.add_argument("--data", default="data/kjv")
    p.add_argument("--n-layer", type=int, default=8)
    p.add_argument("--n-embd", type=int, default=512)
    p.add_argument("--steps", type=int, default=8, help="memory saves timed before the kill")
    p.add_argument("--timed-steps", type=int, default=24,
                   help="steps whose times are compared with and without memory saves (from step 5: "
                        "the slots are prepared during the first steps, once)")
    p.add_argument("--persist-steps", type=int, default=60,
                   help="steps of the run with a persist asked for every 3 steps")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2,
                   help="runs without and with a memory save every step, alternately, each")
    p.add_argument("--threads", type=int, default=benchlib.cores(),
                   help="threads of cairn's worker and of the peer, OpenMP and OpenBLAS (default: every core)")
    a = p.parse_args()
    # The peer is this process: the same threads and allocator settings as cairn's worker.
    malloc_ok = benchlib.keep_freed_memory()
    benchlib.set_threads(a.threads)
    peer_peak = benchlib.gemm_peak()
    print(benchlib.machine_line() + f"; cairn: 1 worker; {a.threads} thread(s) per side for OpenMP and OpenBLAS")
    sys.stdout.flush()
    bench = a.ckpt_bench or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(a.cairn))),
                                         "bench", "ckpt_bench")
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(a.data))) as tmp:
        saves, loaded, persisted, from_disk, run = cairn_side(a, tmp)
        with_persists, paced_persisted, paced_deferred, paced_saves = persist_run(a, tmp)
        without, with_saves, plain_saves, build_ms = [], [], [], []
        for r in range(a.rounds):  # alternately, so that the machine's drift hits both alike
            for memory in ((0, 1) if r % 2 == 0 else (1, 0)):
                times, saved = plain_run(a, tmp, memory, r)
                (with_saves if memory else without).extend(times)
                plain_saves += saved
                fresh = benchlib.start_event(os.path.join(tmp, f"plain{memory}-{r}"))
                if "build_ms" in fresh:
                    build_ms.append(fresh["build_ms"])
        start = benchlib.start_event(run)
        step_dir = os.path.join(run, "ckpt", open(os.path.join(run, "ckpt", "latest")).read().strip())
        floor = json.loads(subprocess.run([bench, step_dir, str(a.repeats)], check=True,
                                          capture_output=True, text=True).stdout)
        manifest = json.load(open(os.path.join(step_dir, "manifest.json")))
        peer_save, peer_load = peer_side(manifest, tmp, a.repeats)

    mb = floor["bytes"] / 1e6
    every_save = saves + plain_saves + paced_saves  # slots are prepared before the first save
    # The last save of a run is not overlapped with a step (the run waits for it, then persists).
    final = [s for s in every_save if s.get("reason") in ("end", "stop", "interrupted")]
    steady_saves = [s for s in every_save if s not in final]
    steady = [s["duration_ms"] for s in steady_saves]
    worst = max(steady_saves, key=lambda s: s["duration_ms"])
    copies = [s["copy_ms"] for s in steady_saves if "copy_ms" in s]
    pause = statistics.median(steady)
    memcpy_ms = floor["memcpy_s"] * 1e3
    cairn_env = benchlib.side_env(a.threads)
    print(benchlib.cairn_side_line(start, cairn_env))
    print(benchlib.peer_side_line(
        dict(benchlib.peer_settings(), peak_flops=peer_peak), None,
        f"this process (torch.save / torch.load), set_num_threads({a.threads}), "
        f"openblas_set_num_threads({a.threads}), mallopt as cairn's" + ("" if malloc_ok else " REFUSED")))
    print(f"state: {mb:.0f} MB in {floor['tensors']} tensors (GPT-2 {a.n_layer} layers, d={a.n_embd}, "
          f"+ AdamW moments + RNG)")
    print(f"  raw memcpy, one thread, same bytes : {memcpy_ms:8.1f} ms  ({mb / floor['memcpy_s'] / 1e3:.1f} GB/s)")
    print(f"  cairn memory save, training pause  : {pause:8.1f} ms  median of {len(steady)} "
          f"(min {min(steady):.1f}; every save of the runs below)")
    print(f"  ... worst pause                    : {max(steady):8.1f} ms  (step {worst['step']}, "
          f"{worst.get('reason')}, waited {worst.get('waited_ms', 0):.0f} ms for a slot)")
    if final:
        print(f"  final saves (the run waits)        : {statistics.median(s['duration_ms'] for s in final):8.1f} ms"
              f"  median of {len(final)}, max {max(s['duration_ms'] for s in final):.1f}")
    if copies:
        print(f"  cairn background copy (copy_ms)    : {statistics.median(copies):8.1f} ms  median of "
              f"{len(copies)}, max {max(copies):.1f} (a thread of its own, overlapping forward and backward)")
    base = statistics.mean(without) * 1e3
    added = statistics.mean(with_saves) * 1e3 - base
    print(f"  training step, no checkpoints      : {base:8.1f} ms  (mean of {len(without)} steps, "
          f"{a.rounds} run(s); median {statistics.median(without) * 1e3:.1f})")
    print(f"  ... with a memory save every step  : {statistics.mean(with_saves) * 1e3:8.1f} ms  "
          f"(mean of {len(with_saves)}; median {statistics.median(with_saves) * 1e3:.1f})")
    print(f"  overhead: added step time per save : {added:8.1f} ms  ({added / base:+.1%} of a step)")
    paced = statistics.mean(with_persists) * 1e3
    print(f"  ... and a persist asked every 3    : {paced:8.1f} ms  (mean of {len(with_persists)}; "
          f"{paced / base - 1:+.1%} vs no checkpoints, {paced / (base + added) - 1:+.1%} vs memory saves only; "
          f"target +10%)")
    print(f"      persists done / deferred       : {len(paced_persisted)} / {len(paced_deferred)} in "
          f"{a.persist_steps} steps (ckpt.persist_duty 0.2: storage writes at most a fifth of the time; "
          f"one every {a.persist_steps / max(1, len(paced_persisted)):.1f} steps)")
    print(f"  torch.save + fsync (python3-torch) : {peer_save * 1e3:8.1f} ms")
    if persisted:
        print(f"  cairn persist in the background    : {statistics.median(p['duration_ms'] for p in persisted):8.1f} ms"
              f"  median of {len(persisted)} (training went on meanwhile)")
    print(f"  ratio added step time / one memcpy : {added / memcpy_ms:8.2f}x  (what a save costs training, "
          f"in single-threaded memcpys of the same bytes)")
    print(f"  ratio pause / memcpy               : {pause / memcpy_ms:8.2f}x  (target <= 1.2; the pause alone)")
    print(f"  ratio torch.save / pause           : {peer_save * 1e3 / pause:8.1f}x  (target >= 20)")
    if loaded:
        print(f"  cairn restore from shared memory   : {loaded[0]['duration_ms']:8.1f} ms  (restarted worker, into the model)")
        if build_ms:
            b = statistics.median(build_ms)
            print(f"  ... building the model, fresh run  : {b:8.1f} ms  (median of {len(build_ms)}: engine and "
                  f"initialization, build_ms of the start event)")
            print(f"  ratio restore / (memcpy + build)   : {loaded[0]['duration_ms'] / (memcpy_ms + b):8.2f}x  (target <= 2)")
    print(f"  cairn restore from disk            : {from_disk[-1]['duration_ms']:8.1f} ms  (verified, xxh3 per shard)"
          if from_disk else "  cairn restore from disk: not observed")
    print(f"  torch.load (python3-torch)         : {peer_load * 1e3:8.1f} ms")
    if loaded and from_disk:
        print(f"  ratio disk / memory restore        : {from_disk[-1]['duration_ms'] / loaded[0]['duration_ms']:8.1f}x")


if __name__ == "__main__":
    main()
