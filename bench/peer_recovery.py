"""The PyTorch peer of bench/recovery.py: the GPT-2 of bench/peer_gpt.py trained with
DistributedDataParallel over Gloo, with a checkpoint (model + optimizer state + step) written
by rank 0 with torch.save every --save-every steps, fsynced and renamed into place, and loaded
with torch.load when the process starts and finds one. bench/recovery.py starts the ranks
and restarts them after a failure as torchrun's agent would: it hosts the TCPStore itself (in
its own process, for the whole job) and starts the ranks with WORLD_SIZE, RANK, MASTER_ADDR,
MASTER_PORT (the store's), TORCHELASTIC_USE_AGENT_STORE=True and TORCHELASTIC_RESTART_COUNT, so
that every rank, rank 0 too, connects to a store that is already up (torch's env:// rendezvous
then uses the prefix /worker/attempt_<restart count>). No rank waits out the store client's
retry for a rank 0 that has not started its store yet.

  # with a TCPStore(is_master=True) listening on port 29500:
  WORLD_SIZE=2 RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 TORCHELASTIC_USE_AGENT_STORE=True \\
      TORCHELASTIC_RESTART_COUNT=0 /usr/bin/python3 bench/peer_recovery.py --ckpt DIR/peer.pt --log DIR/peer.jsonl

--threads N sets torch's and OpenBLAS's threads as cairn's train.threads does. On the first
start (TORCHELASTIC_RESTART_COUNT 0) every rank measures its fp32 GEMM peak at once, summed
(cairn measures on its first start too, and its restarts reuse it); rank 0 logs it with the
process's thread and allocator settings in a `settings` event.

Rank 0 appends one JSON object per line to --log, each with "time" (unix seconds): events
(`process_start`, taken before torch is imported; `imported`, `group_ready`,
`checkpoint_loaded` with `duration_ms` and `step`, `start`) and one row per completed step
(`step`; `time`, when the optimizer step ended; `step_time`, forward to optimizer step;
`save_s`, the checkpoint written after it). The tokens are random, drawn
per step from a generator seeded by the step, so a restarted run sees the same batches.
"""
import time

PROCESS_START = time.time()  # before the imports: a restart pays for them too

import argparse
import datetime
import json
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from peer_gpt import GPT  # noqa: E402


class Log:
    def __init__(self, path, rank):
        self.path = path if rank == 0 else None

    def write(self, **fields):
        if self.path is None:
            return
        fields.setdefault("time", time.time())
        with open(self.path, "a") as f:
            f.write(json.dumps(fields) + "\n")


def save(state, path):
    """torch.save to a temporary file, fsync, rename over the previous checkpoint."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=8, help="global batch (sequences), split over ranks")
    p.add_argument("--max-steps", type=int, default=1000000)
    p.add_argument("--save-every", type=int, default=1, help="steps between checkpoints; 0 = never")
    p.add_argument("--ckpt", required=True, help="checkpoint file")
    p.add_argument("--log", required=True, help="JSON lines written by rank 0")
    p.add_argument("--threads", type=int, default=0,
                   help="torch and OpenBLAS threads (0: as OMP_NUM_THREADS / OPENBLAS_NUM_THREADS say)")
    a = p.parse_args()
    benchlib.set_threads(a.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    log = Log(a.log, rank)
    log.write(event="process_start", time=PROCESS_START)
    log.write(event="imported")
    if world > 1:
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    log.write(event="group_ready")
    if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
        if world > 1:
            dist.barrier()  # every rank measures at once, sharing the machine
        peak = torch.tensor([benchlib.gemm_peak()], dtype=torch.float64)
        if world > 1:
            dist.all_reduce(peak)
        settings = benchlib.peer_settings() if rank == 0 else {}
        log.write(event="settings", peak_flops=peak.item(), world=world, **settings)
    torch.manual_seed(0)
    model = GPT(a.n_layer, a.n_head, a.n_embd, a.vocab, a.seq_len)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    step = 0
    if os.path.exists(a.ckpt):
        t0 = time.perf_counter()
        state = torch.load(a.ckpt)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        step = state["step"]
        log.write(event="checkpoint_loaded", step=step, duration_ms=(time.perf_counter() - t0) * 1e3,
                  bytes=os.path.getsize(a.ckpt))
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    log.write(event="start", step=step)
    local = a.batch // world
    gen = torch.Generator()
    while step < a.max_steps:
        t0 = time.perf_counter()
        gen.manual_seed(1_000_003 + step)
        data = torch.randint(0, 50257, (a.batch, a.seq_len + 1), generator=gen)
        x = data[rank * local:(rank + 1) * local, :-1]
        y = data[rank * local:(rank + 1) * local, 1:]
        opt.zero_grad(set_to_none=True)
        loss = ddp(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        done, step_time = time.time(), time.perf_counter() - t0
        save_s = 0.0
        if rank == 0 and a.save_every > 0 and step % a.save_every == 0:
            ts = time.perf_counter()
            save({"model": model.state_dict(), "optim": opt.state_dict(), "step": step}, a.ckpt)
            save_s = time.perf_counter() - ts
        log.write(step=step, time=done, step_time=step_time, save_s=save_s, loss=loss.item())


if __name__ == "__main__":
    main()
