"""The PyTorch peer for cairn's benchmarks: a GPT-2 trained the usual way in plain PyTorch
(nn.Module with GPT-2's initialization, logits then F.cross_entropy, torch.optim.AdamW,
clip_grad_norm_), optionally with
DistributedDataParallel over Gloo when started with WORLD_SIZE > 1 (env:// rendezvous:
RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).

Run with Debian's /usr/bin/python3 (python3-torch). Rank 0 prints one JSON line with the
job's tokens/s; --batch is the global batch, split over ranks. The line also says what the
process ran with, measured inside it: its fp32 GEMM peak (every rank at once, summed, as
`cairn train` measures its own), torch's and OpenBLAS's thread counts, the allocator's
behaviour, the precision and the thread/allocator environment variables.

--threads N does what cairn's train.threads does (torch.set_num_threads and
openblas_set_num_threads); --precision bf16 runs the forward pass and the loss under
torch.autocast("cpu", dtype=torch.bfloat16), as cairn's train.precision=bf16 does.
"""
import os
import argparse
import json
import math
import time

import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402


class Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.ln_1 = nn.LayerNorm(d)
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.c_fc = nn.Linear(d, 4 * d)
        self.mlp_proj = nn.Linear(4 * d, d)

    def forward(self, x, mask):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q = q.view(B, T, self.h, C // self.h).transpose(1, 2)
        k = k.view(B, T, self.h, C // self.h).transpose(1, 2)
        v = v.view(B, T, self.h, C // self.h).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // self.h)
        att = att.masked_fill(mask[:T, :T] == 0, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, n_layer, n_head, d, vocab, block):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(block, d)
        self.h = nn.ModuleList([Block(d, n_head) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(d)
        self.register_buffer("mask", torch.tril(torch.ones(block, block)))
        self.init_gpt2(n_layer)

    def init_gpt2(self, n_layer, std=0.02):
        """GPT-2's initialization, as cairn's (model.init_std): weights normal(0, std), the
        projections into the residual stream normal(0, std / sqrt(2 n_layer)), biases 0,
        LayerNorm weights 1. PyTorch's defaults (embeddings normal(0, 1)) would give the tied
        head logits of about 16 standard deviations, a loss near 170 at the start, and
        softmax gradients full of subnormal floats that slow every GEMM of the backward pass
        several times over (measured here: steps of 8-14 s instead of 0.7 s)."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.startswith("ln_") or ".ln_" in name:
                    continue  # LayerNorm: weight 1, bias 0 (its default)
                if name.endswith("bias"):
                    p.zero_()
                elif name.endswith("c_proj.weight") or name.endswith("mlp_proj.weight"):
                    p.normal_(0.0, std / math.sqrt(2 * n_layer))
                else:
                    p.normal_(0.0, std)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for b in self.h:
            x = b(x, self.mask)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0,
                   help="torch and OpenBLAS threads (0: as OMP_NUM_THREADS / OPENBLAS_NUM_THREADS say)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--peak-seconds", type=float, default=0.5, help="GEMM peak measurement (0: skip)")
    a = p.parse_args()
    benchlib.set_threads(a.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        torch.distributed.init_process_group("gloo")
        torch.distributed.barrier()  # every rank measures at once, sharing the machine
    peak = benchlib.gemm_peak(seconds=a.peak_seconds) if a.peak_seconds > 0 else 0.0
    if world > 1:
        t = torch.tensor([peak], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        peak = t.item()
    torch.manual_seed(0)
    model = GPT(a.n_layer, a.n_head, a.n_embd, a.vocab, a.seq_len)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    local = a.batch // world
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    data = torch.randint(0, min(50257, a.vocab), (a.steps + a.warmup, a.batch, a.seq_len + 1))
    times, losses = [], []
    for s in range(a.steps + a.warmup):
        t0 = time.perf_counter()
        x = data[s, rank * local:(rank + 1) * local, :-1]
        y = data[s, rank * local:(rank + 1) * local, 1:]
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if s >= a.warmup:
            times.append(time.perf_counter() - t0)
    tps = a.batch * a.seq_len * len(times) / sum(times)
    if rank != 0:
        return
    out = {"tokens_per_s": tps, "step_s": sum(times) / len(times), "world": world, "loss": losses[-1],
           "peak_flops": peak}
    out.update(benchlib.peer_settings(a.precision))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
