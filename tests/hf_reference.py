#!/usr/bin/python3
"""Independent reference of the HuggingFace module layouts cairn exports, in plain PyTorch.

usage: /usr/bin/python3 tests/hf_reference.py HF_DIR LOGITS.safetensors [TOLERANCE]

HF_DIR holds config.json and model.safetensors as written by `cairn ckpt export --format hf`.
LOGITS holds "ids" (1, T) int64 and "logits" (1, T, V') float32 computed by cairn from the
checkpoint that was exported (`cairn ckpt logits`). This script rebuilds the model the way
transformers' GPT2LMHeadModel (Conv1D weights (in, out): y = x @ W + b, tied head) and
LlamaForCausalLM (q/k/v/o, gate/up/down projections, rotate-half RoPE on the stored layout,
grouped-query attention by repeating key/value heads) read those files, computes the logits
in float64 and compares them with cairn's over the exported vocabulary. It also checks that
the file holds exactly the tensor names and shapes those classes expect. Exit status 0 when
the largest difference is below TOLERANCE (default 1e-5).

The safetensors format is parsed here directly (JSON header + raw little-endian bytes).
"""
import json
import math
import sys

import torch
import torch.nn.functional as F

from safetensors_file import read_safetensors

def gpt2_expected(cfg):
    """HuggingFace name -> shape for GPT2LMHeadModel (the tied lm_head is not stored)."""
    C, L, P, V = cfg["n_embd"], cfg["n_layer"], cfg["n_positions"], cfg["vocab_size"]
    inner = cfg.get("n_inner") or 4 * C
    out = {"transformer.wte.weight": [V, C], "transformer.wpe.weight": [P, C],
           "transformer.ln_f.weight": [C], "transformer.ln_f.bias": [C]}
    for i in range(L):
        p = f"transformer.h.{i}."
        out.update({p + "ln_1.weight": [C], p + "ln_1.bias": [C],
                    p + "attn.c_attn.weight": [C, 3 * C], p + "attn.c_attn.bias": [3 * C],
                    p + "attn.c_proj.weight": [C, C], p + "attn.c_proj.bias": [C],
                    p + "ln_2.weight": [C], p + "ln_2.bias": [C],
                    p + "mlp.c_fc.weight": [C, inner], p + "mlp.c_fc.bias": [inner],
                    p + "mlp.c_proj.weight": [inner, C], p + "mlp.c_proj.bias": [C]})
    return out


def llama_expected(cfg):
    C, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    H, K, I = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["intermediate_size"]
    D = C // H
    out = {"model.embed_tokens.weight": [V, C], "model.norm.weight": [C],
           "lm_head.weight": [V, C]}
    for i in range(L):
        p = f"model.layers.{i}."
        out.update({p + "input_layernorm.weight": [C], p + "post_attention_layernorm.weight": [C],
                    p + "self_attn.q_proj.weight": [H * D, C],
                    p + "self_attn.k_proj.weight": [K * D, C],
                    p + "self_attn.v_proj.weight": [K * D, C],
                    p + "self_attn.o_proj.weight": [C, H * D],
                    p + "mlp.gate_proj.weight": [I, C], p + "mlp.up_proj.weight": [I, C],
                    p + "mlp.down_proj.weight": [C, I]})
    return out


def causal_softmax_attention(q, k, v):
    """q, k, v (B, H, T, D) -> (B, H, T, D)."""
    T = q.shape[2]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    mask = torch.full((T, T), float("-inf"), dtype=q.dtype).triu(1)
    return torch.softmax(scores + mask, dim=-1) @ v


def gpt2_logits(w, cfg, ids):
    B, T = ids.shape
    C, H, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    assert cfg["activation_function"] == "gelu_new"
    conv1d = lambda x, name: x @ w[name + ".weight"] + w[name + ".bias"]  # noqa: E731
    h = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][torch.arange(T)]
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        a = F.layer_norm(h, (C,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        q, k, v = conv1d(a, p + "attn.c_attn").split(C, dim=2)
        heads = lambda t: t.view(B, T, H, C // H).permute(0, 2, 1, 3)  # noqa: E731
        y = causal_softmax_attention(heads(q), heads(k), heads(v))
        h = h + conv1d(y.permute(0, 2, 1, 3).reshape(B, T, C), p + "attn.c_proj")
        m = F.layer_norm(h, (C,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        m = conv1d(m, p + "mlp.c_fc")
        m = 0.5 * m * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (m + 0.044715 * m.pow(3))))
        h = h + conv1d(m, p + "mlp.c_proj")
    h = F.layer_norm(h, (C,), w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], eps)
    return h @ w["transformer.wte.weight"].T  # tied head


def llama_rms_norm(x, weight, eps):
    variance = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def llama_logits(w, cfg, ids):
    B, T = ids.shape
    C, H, K = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D, eps = C // H, cfg["rms_norm_eps"]
    assert cfg["hidden_act"] == "silu" and not cfg.get("rope_scaling")
    inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    freqs = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, None], emb.sin()[None, None]  # (1, 1, T, D)
    h = w["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        lin = lambda x, name: x @ w[p + name + ".weight"].T  # noqa: E731
        a = llama_rms_norm(h, w[p + "input_layernorm.weight"], eps)
        q = lin(a, "self_attn.q_proj").view(B, T, H, D).transpose(1, 2)
        k = lin(a, "self_attn.k_proj").view(B, T, K, D).transpose(1, 2)
        v = lin(a, "self_attn.v_proj").view(B, T, K, D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = H // K  # repeat_kv: kv head j serves query heads j*rep .. j*rep+rep-1
        k = k[:, :, None].expand(B, K, rep, T, D).reshape(B, H, T, D)
        v = v[:, :, None].expand(B, K, rep, T, D).reshape(B, H, T, D)
        y = causal_softmax_attention(q, k, v).transpose(1, 2).reshape(B, T, H * D)
        h = h + lin(y, "self_attn.o_proj")
        m = llama_rms_norm(h, w[p + "post_attention_layernorm.weight"], eps)
        h = h + lin(F.silu(lin(m, "mlp.gate_proj")) * lin(m, "mlp.up_proj"), "mlp.down_proj")
    h = llama_rms_norm(h, w["model.norm.weight"], eps)
    return h @ w["lm_head.weight"].T


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    hf_dir, logits_path = sys.argv[1], sys.argv[2]
    tolerance = float(sys.argv[3]) if len(sys.argv) == 4 else 1e-5
    with open(hf_dir + "/config.json") as f:
        cfg = json.load(f)
    weights, meta = read_safetensors(hf_dir + "/model.safetensors")
    if meta.get("format") != "pt":
        sys.exit(f"FAIL: __metadata__ format is {meta.get('format')!r}, transformers wants 'pt'")
    kind = cfg["model_type"]
    arch = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}[kind]
    if cfg["architectures"] != [arch]:
        sys.exit(f"FAIL: architectures {cfg['architectures']} for model_type {kind}")
    expected = gpt2_expected(cfg) if kind == "gpt2" else llama_expected(cfg)
    got = {name: list(t.shape) for name, t in weights.items()}
    if got != expected:
        extra = sorted(set(got) - set(expected))
        missing = sorted(set(expected) - set(got))
        wrong = sorted(n for n in set(got) & set(expected) if got[n] != expected[n])
        sys.exit(f"FAIL: tensors differ from {arch}'s: extra {extra}, missing {missing}, "
                 f"wrong shape {[(n, got[n], expected[n]) for n in wrong]}")
    if any(t.dtype != torch.float32 for t in weights.values()):
        sys.exit("FAIL: weights should be float32")

    cairn, _ = read_safetensors(logits_path)
    ids = cairn["ids"].long()
    w = {name: t.to(torch.float64) for name, t in weights.items()}
    with torch.no_grad():
        ref = gpt2_logits(w, cfg, ids) if kind == "gpt2" else llama_logits(w, cfg, ids)
    V = cfg["vocab_size"]
    mine = cairn["logits"].to(torch.float64)[..., :V]
    if mine.shape != ref.shape:
        sys.exit(f"FAIL: cairn logits {list(mine.shape)} vs reference {list(ref.shape)}")
    diff = (mine - ref).abs().max().item()
    scale = ref.abs().max().item()
    print(f"{kind}: {arch} reference vs cairn over {ids.shape[1]} tokens, vocab {V}: "
          f"max |logit diff| {diff:.3g} (max |logit| {scale:.3g})")
    if scale < 0.5:
        sys.exit("FAIL: logits too small to test anything")
    if not diff < tolerance:
        sys.exit(f"FAIL: max |logit diff| {diff:.3g} >= {tolerance}")


if __name__ == "__main__":
    main()
