// Linear projection + softmax cross-entropy fused over row chunks, so the (N, V) logits,
// log-probabilities and their gradients are never all in memory at once.
// Dimension keys: N rows (B*T tokens), C channels, V vocabulary.
#pragma once

#include <torch/types.h>

#include <cstdint>

namespace cairn::model {

// Mean over rows whose target is not `ignore_index` of -log softmax(h w^T)[row, target],
// identical in value and gradients to
//   torch::nn::functional::cross_entropy(h.matmul(w.t()), targets, ignore_index)
// (all rows ignored gives NaN, as there).
// h (N, C), w (V, C) of one floating dtype; targets (N) int64 with values in [0, V) or equal
// to ignore_index. Returns a float32 scalar.
//
// Autograd: when h or w requires grad, the forward pass already computes both gradients
// chunk by chunk (softmax - one_hot) and keeps them, (N, C) + (V, C); backward only scales
// them by the incoming gradient. Peak extra memory is one (chunk_rows, V) float32 block.
// REQUIRES: chunk_rows >= 1.
torch::Tensor fused_linear_cross_entropy(const torch::Tensor& h, const torch::Tensor& w,
                                         const torch::Tensor& targets, int64_t chunk_rows = 256,
                                         int64_t ignore_index = -1);

// One chunk of rows [r, r + n) of such a loss, backward: `g` (n, V') float32 holds the chunk's
// softmax - one_hot (overwritten: rows whose `valid` (n) is false are zeroed); adds it into the
// gradients, scaled by `inv` (1 / the valid rows of the whole batch): gh rows [r, r + n)
// = inv g w (written, when gh is defined) and gw += inv g^T hc (float32, when defined).
// hc (n, C) and w (V', C) are the chunk's inputs and the (local) head.
void add_chunk_gradients(torch::Tensor& g, const torch::Tensor& valid, const torch::Tensor& hc,
                         const torch::Tensor& w, torch::Tensor& gh, torch::Tensor& gw, int64_t r,
                         double inv);

}  // namespace cairn::model
