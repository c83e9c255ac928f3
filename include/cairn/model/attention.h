// Causal self-attention kernels for CPU, with grouped-query attention (fewer key/value heads
// than query heads). Dimension keys: B batch, H query heads, K key/value heads, T sequence,
// D head size.
#pragma once

#include <torch/types.h>

namespace cairn::model {

// softmax(q k^T / sqrt(D) + causal mask) v, as one autograd operation.
// q (B, H, T, D); k, v (B, K, T, D) with H % K == 0: query head h reads key/value head
// h / (H / K). Returns (B, H, T, D) in q's dtype.
//
// Works on blocks of query rows, so each block multiplies only against the keys it may see
// (about half the work of the full T x T product) and softmaxes in place; key/value heads
// are shared by their query group without being copied. Saves the (block-triangular)
// attention probabilities for backward, roughly B*H*T*T/2 values.
// REQUIRES: floating dtype, equal devices, matching B, T, D.
torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v);

// The same function composed of plain torch ops (full (B, H, T, T) scores, boolean mask,
// softmax, key/value heads repeated). A reference for tests and benchmarks.
torch::Tensor naive_causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                                     const torch::Tensor& v);

}  // namespace cairn::model
