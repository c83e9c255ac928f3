"""A plain PyTorch DDP program, as it would be launched by torchrun: it reads only torchrun's
environment (env:// initialization). `cairn run` must run it unmodified.

Each rank trains a small nn.Linear under DistributedDataParallel on its own data for a few
steps, then checks that (1) an all-reduce of rank+1 sums to world*(world+1)/2, (2) the
parameters are identical on every rank (DDP averaged the gradients), and (3) they equal a
single-process model trained on the mean of all ranks' gradients. Exits non-zero on mismatch.
"""
import os
import sys

import torch
import torch.distributed as dist
import torch.nn as nn


def batch_for(rank, step):
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randn(8, 4, generator=g)
    y = torch.randn(8, 2, generator=g)
    return x, y


def main():
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_RUN_ID"):
        if name not in os.environ:
            print(f"missing {name} in the environment", flush=True)
            return 3
    dist.init_process_group("gloo", init_method="env://")
    rank, world = dist.get_rank(), dist.get_world_size()
    assert rank == int(os.environ["RANK"]) and world == int(os.environ["WORLD_SIZE"])
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    reference = nn.Linear(4, 2)
    reference.load_state_dict(model.state_dict())
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    steps = 5
    for step in range(steps):
        x, y = batch_for(rank, step)
        opt.zero_grad()
        loss = nn.functional.mse_loss(ddp(x), y)
        loss.backward()
        opt.step()
        # The single-process reference: the mean of every rank's gradient.
        ref_opt.zero_grad()
        for r in range(world):
            rx, ry = batch_for(r, step)
            (nn.functional.mse_loss(reference(rx), ry) / world).backward()
        ref_opt.step()
        print(f"rank {rank} step {step} loss {loss.item():.6f}", flush=True)

    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)
    expected_sum = world * (world + 1) / 2
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    ref_flat = torch.cat([p.detach().flatten() for p in reference.parameters()])
    ok = True
    if total.item() != expected_sum:
        print(f"rank {rank}: all_reduce sum {total.item()} != {expected_sum}", flush=True)
        ok = False
    if not all(torch.equal(g, gathered[0]) for g in gathered):
        print(f"rank {rank}: parameters differ across ranks", flush=True)
        ok = False
    if not torch.allclose(flat, ref_flat, rtol=1e-5, atol=1e-6):
        print(f"rank {rank}: parameters differ from the single-process reference "
              f"(max diff {(flat - ref_flat).abs().max().item():.3g})", flush=True)
        ok = False
    print(f"rank {rank} of {world}: all_reduce sum {total.item():g} "
          f"{'OK' if ok else 'MISMATCH'}", flush=True)
    dist.barrier()
    dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
