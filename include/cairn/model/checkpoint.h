// Activation checkpointing: run a block without keeping its intermediate activations and
// recompute them during backward.
#pragma once

#include <torch/types.h>

#include <functional>
#include <vector>

namespace cairn::model {

// A block's forward pass, x -> y. It may read parameters captured by the closure.
using BlockFn = std::function<torch::Tensor(const torch::Tensor&)>;

// Returns fn(x) computed without recording an autograd graph; only `x` (and references to
// `params`) are kept. In backward, fn is run again with gradients enabled on a detached copy
// of x and its gradient is propagated, so x and every tensor in `params` receive the same
// gradients as if fn had been called directly.
// REQUIRES: `params` lists every tensor requiring grad that fn reads besides x; fn is
// deterministic (no dropout or other sampling) and must not modify its inputs.
// Parameters must not be modified in place between forward and backward (checked).
torch::Tensor checkpoint(const BlockFn& fn, const torch::Tensor& x,
                         const std::vector<torch::Tensor>& params);

}  // namespace cairn::model
