#!/usr/bin/python3
"""Independent reference of cairn's GPT-2 and LLaMA forward pass, in plain PyTorch.

usage: /usr/bin/python3 tests/model_ref.py IN.safetensors OUT.safetensors

IN holds the model weights under cairn's parameter names, the token ids "idx" (B, T) and
"targets" (B, T) (-1 = ignored), and the model configuration as "__metadata__" strings
(arch, n_layer, n_head, n_kv_head, n_embd, vocab_size, block_size, ffn_hidden, norm_eps,
rope_theta). OUT receives "logits" (B, T, V) float32 and "loss" () float32.

Everything is computed in float64 from the stored float32 weights. The safetensors format
is parsed and written here directly (JSON header + raw little-endian bytes) so the check does
not rely on cairn's own reader.
"""
import math
import sys

import torch
import torch.nn.functional as F

from safetensors_file import read_safetensors, write_safetensors

def causal_attention(q, k, v):
    """q (B, H, T, D), k and v (B, K, T, D); query head h uses key/value head h // (H / K)."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    T = q.shape[2]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    scores = scores.masked_fill(future, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def gpt2_hidden(w, cfg, idx):
    B, T = idx.shape
    C, H, L = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
    eps = cfg["norm_eps"]
    x = w["wte.weight"][idx] + w["wpe.weight"][:T]
    for i in range(L):
        p = f"h.{i}."
        a = F.layer_norm(x, (C,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        qkv = a @ w[p + "attn.c_attn.weight"].T + w[p + "attn.c_attn.bias"]
        q, k, v = (t.reshape(B, T, H, C // H).transpose(1, 2) for t in qkv.split(C, dim=-1))
        y = causal_attention(q, k, v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ w[p + "attn.c_proj.weight"].T + w[p + "attn.c_proj.bias"]
        m = F.layer_norm(x, (C,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        m = m @ w[p + "mlp.c_fc.weight"].T + w[p + "mlp.c_fc.bias"]
        m = 0.5 * m * (1 + torch.tanh(math.sqrt(2 / math.pi) * (m + 0.044715 * m**3)))
        x = x + m @ w[p + "mlp.c_proj.weight"].T + w[p + "mlp.c_proj.bias"]
    x = F.layer_norm(x, (C,), w["ln_f.weight"], w["ln_f.bias"], eps)
    return x, w["wte.weight"]


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def llama_hidden(w, cfg, idx):
    B, T = idx.shape
    C, H, L = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
    K = cfg["n_kv_head"] or H
    D = C // H
    eps = cfg["norm_eps"]
    inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    angles = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    cos, sin = angles.cos(), angles.sin()
    x = w["tok_embeddings.weight"][idx]
    for i in range(L):
        p = f"layers.{i}."
        a = rms_norm(x, w[p + "attention_norm.weight"], eps)
        q = (a @ w[p + "attention.wq.weight"].T).reshape(B, T, H, D).transpose(1, 2)
        k = (a @ w[p + "attention.wk.weight"].T).reshape(B, T, K, D).transpose(1, 2)
        v = (a @ w[p + "attention.wv.weight"].T).reshape(B, T, K, D).transpose(1, 2)
        y = causal_attention(rope(q, cos, sin), rope(k, cos, sin), v)
        x = x + y.transpose(1, 2).reshape(B, T, C) @ w[p + "attention.wo.weight"].T
        m = rms_norm(x, w[p + "ffn_norm.weight"], eps)
        gate = m @ w[p + "feed_forward.w1.weight"].T
        up = m @ w[p + "feed_forward.w3.weight"].T
        x = x + (gate * torch.sigmoid(gate) * up) @ w[p + "feed_forward.w2.weight"].T
    return rms_norm(x, w["norm.weight"], eps), w["output.weight"]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    tensors, meta = read_safetensors(sys.argv[1])
    cfg = {k: (float(v) if k in ("norm_eps", "rope_theta") else v) for k, v in meta.items()}
    for key in ("n_layer", "n_head", "n_kv_head", "n_embd", "vocab_size", "block_size"):
        cfg[key] = int(cfg[key])
    idx = tensors.pop("idx").long()
    targets = tensors.pop("targets").long()
    w = {name: t.to(torch.float64) for name, t in tensors.items()}
    with torch.no_grad():
        if cfg["arch"] == "gpt2":
            h, head = gpt2_hidden(w, cfg, idx)
        elif cfg["arch"] == "llama":
            h, head = llama_hidden(w, cfg, idx)
        else:
            sys.exit(f"unknown arch {cfg['arch']}")
        logits = h @ head.T
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                               ignore_index=-1)
    write_safetensors(sys.argv[2], {"logits": logits.float(), "loss": loss.float()})


if __name__ == "__main__":
    main()
