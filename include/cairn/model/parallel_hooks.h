// The seam through which tensor and context parallelism reach a model that is written once for
// one process.

// --- tensor parallelism ---------------------------------------------------------------------
// Without hooks (the default) every call below is the one-process computation. With
// hooks, the model's parameters hold this rank's slices (parallel::shard_for_tensor_parallel
// slices them from the outside, by their specs) and the architectures call the hooks where a
// tensor-parallel region begins and ends:
//
//   embed    tokens = embed_tokens(idx, table) [+ position table at positions(T)]
//   block    x + attention(enter(norm(x)))   then   h + mlp(enter(norm(h))), where attention
//            and mlp end in a row-parallel projection: leave(x W^T) + b
//   head     head_loss(final_norm(x), head, targets)   or   logits(final_norm(x), head)
//
// Between enter and leave the projections see a share of the heads and of the MLP width (their
// widths say how much, so the math is the same code); outside, the residual stream is either
// whole on every rank or, with sequence parallelism, this rank's chunk of the sequence.
// Dimension keys: B batch, T sequence (T' what this rank holds of it), C channels, V vocabulary.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace cairn::model {

class TensorParallelHooks {
 public:
  virtual ~TensorParallelHooks() = default;
  // The residual stream (B, T', C) -> the input of the column-parallel projections (B, T, C).
  virtual torch::Tensor enter(const torch::Tensor& x) = 0;
  // The row-parallel projection's partial sums (B, T, C) -> the residual stream (B, T', C).
  virtual torch::Tensor leave(const torch::Tensor& y) = 0;
  // idx (B, T) with this rank's rows of the token table (Vl, C) -> (B, T', C).
  virtual torch::Tensor embed_tokens(const torch::Tensor& idx, const torch::Tensor& table) = 0;
  // The positions of the T' tokens of the residual stream this rank holds, of a sequence of T.
  virtual torch::Tensor positions(int64_t T, const torch::TensorOptions& options) = 0;
  // Mean next-token loss of h (B, T', C) with this rank's rows of the head (Vl, C) against
  // targets (B, T) (the whole sequence). A float32 scalar, the same on every rank.
  virtual torch::Tensor head_loss(const torch::Tensor& h, const torch::Tensor& head,
                                  const torch::Tensor& targets) = 0;
  // Full logits (B, T, V) on every rank.
  virtual torch::Tensor logits(const torch::Tensor& h, const torch::Tensor& head) = 0;
};

// --- context parallelism --------------------------------------------------------------------
// Every micro-batch's sequence of T tokens is split over the cp ranks: each holds T' = T / cp of
// them (which ones, and in what order, is the hooks' choice: contiguous, or two chunks for a
// balanced causal ring) from the embedding to the loss. Attention is the only place where
// tokens meet across the split, so it is the only call that communicates; positions are each
// token's place in the whole sequence (GPT-2's position table, LLaMA's rotations).
class ContextParallelHooks {
 public:
  virtual ~ContextParallelHooks() = default;
  // The positions in the whole sequence of the T' tokens this rank holds, (T') int64.
  virtual torch::Tensor positions(int64_t T_local, const torch::TensorOptions& options) = 0;
  // Causal attention of this rank's queries over the whole sequence: q (B, H', T', D), k, v
  // (B, K', T', D) -> (B, H', T', D), the rows causal_attention on the unsplit sequence gives
  // for this rank's tokens.
  virtual torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k,
                                  const torch::Tensor& v) = 0;
};

// --- split backward (zero-bubble pipelines) --------------------------------------------------
// A zero-bubble pipeline splits a stage's backward pass in two: the input gradient first (what
// the previous stage waits for), the weight gradients later, where the schedule has a bubble.
// With a store installed in the seam, the blocks' projections (x W^T + b) compute only their
// input gradient in backward and keep what their weight gradient needs (x and the output's
// gradient); run() computes those weight gradients into the weights' .grad. Everything else
// (norms, embeddings, the head) gets its gradient in the first pass as usual.
class WeightGradStore {
 public:
  // Where the next backward's kept work goes (e.g. a micro-batch and model chunk).
  void set_key(int64_t key) { key_ = key; }
  // From a projection's backward: gy (..., out) the output's gradient, x (..., in) its input.
  void push(torch::Tensor x, torch::Tensor gy, torch::Tensor weight, torch::Tensor bias);
  // Adds the weight (and bias) gradients kept under `key` to .grad and drops them (none kept:
  // nothing to do).
  void run(int64_t key);
  // Kept entries over all keys (tests: nothing is left after a step).
  size_t pending() const;

 private:
  struct Entry {
    torch::Tensor x, gy, weight, bias;
  };
  int64_t key_ = 0;
  std::vector<std::pair<int64_t, std::vector<Entry>>> kept_;
};

// What the blocks hold: the model's hooks, or none. Shared by the model and its blocks, so
// that installing hooks after construction reaches every block.
struct ParallelSeam {
  TensorParallelHooks* hooks = nullptr;     // tensor parallelism
  ContextParallelHooks* cp = nullptr;       // context parallelism
  WeightGradStore* weight_grads = nullptr;  // split backward: projections defer weight gradients
  torch::Tensor enter(const torch::Tensor& x) const { return hooks ? hooks->enter(x) : x; }
  // causal_attention (attention.h), or its context-parallel form.
  torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k,
                          const torch::Tensor& v) const;
  // Positions in the whole sequence of the T tokens of a micro-batch this rank holds (what
  // attention sees): 0..T-1 without context parallelism. int64 on options' device.
  torch::Tensor sequence_positions(int64_t T, const torch::TensorOptions& options) const;
  // Positions of the residual stream's tokens (of those T): the sequence positions, narrowed
  // to this rank's chunk under sequence parallelism.
  torch::Tensor stream_positions(int64_t T, const torch::TensorOptions& options) const;
  // A block's projection x W^T + b (bias may be undefined), its weight gradient deferred to
  // weight_grads when one is installed.
  torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight,
                       const torch::Tensor& bias) const;
  // The projection that leaves a tensor-parallel region: x W^T + b, with the partial products
  // summed over the group before the bias is added once. bias may be undefined.
  torch::Tensor row(const torch::Tensor& x, const torch::Tensor& weight,
                    const torch::Tensor& bias) const;
};

}  // namespace cairn::model
