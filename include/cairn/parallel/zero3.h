// ZeRO-3: parameters, gradients and optimizer state all sharded over the data-parallel group.
// Each rank persistently holds only its 1/world slice (fp32) of every parameter, of the
// accumulated gradient and of both AdamW moments: 16 / world bytes per parameter (+ padding).
//
// The model is seen as a chain of stages (StagedModel). Every stage runs as an autograd node:
// forward all-gathers the stage's parameters, runs the stage without recording a graph and
// frees the parameters again (only the stage's input is kept); backward gathers them again,
// recomputes the stage with grad enabled, backpropagates, all-reduces the stage's parameter
// gradients (Gloo has no reduce-scatter; a rank keeps its slice) and frees everything but its
// shard. So at any time at most one stage's full parameters and gradients exist.
//
// Collective-ordering contract: the constructor, loss() (forward), the backward pass of its
// result, finish_backward, clip_grad_norm, gather_full_params and gather_state are collective
// over `group`. Every rank must run them in the same order, with the same number of
// micro-batches, and call backward() on every loss it computes. Stages form a chain, so the
// backward pass visits them in the same order (last to first) on every rank. step,
// zero_grad, load_state, load_params and memory_report involve no communication.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cairn/core/status.h"
#include "cairn/parallel/data_parallel.h"

namespace cairn::comm {
class Group;
}

namespace cairn::parallel {

// How ZeRO-3 sees a model: an ordered list of at least two stages, each with its own
// parameters. Stage 0 maps input ids to activations, stages 1..n-2 map activations to
// activations, the last stage maps activations (+ targets) to the scalar loss. A parameter may
// belong to several stages (a tied embedding used by the first and the last stage); it is
// recognized by tensor identity and named by its first occurrence.
//
// The functions must use only their stage's parameters (those listed for it) plus the input,
// must be deterministic (they run again in backward), and must not keep references to
// parameters between calls: outside its stage a parameter is an empty tensor.
struct StagedModel {
  using Params = std::vector<std::pair<std::string, torch::Tensor>>;
  std::vector<Params> stage_params;                                            // per stage
  std::function<torch::Tensor(const torch::Tensor& idx)> first;                // stage 0
  std::function<torch::Tensor(int64_t stage, const torch::Tensor& x)> middle;  // 1..n-2
  std::function<torch::Tensor(const torch::Tensor& x, const torch::Tensor& targets)> last;
};

class Zero3 {
 public:
  using NamedParams = std::vector<std::pair<std::string, torch::Tensor>>;
  using DecayFn = std::function<bool(const std::string&, const torch::Tensor&)>;

  // Takes over the parameters' storage: rank 0's values are broadcast, each rank keeps its
  // shard of every parameter, grouped in flat buffers per stage (a parameter shared by stages
  // lives in the first stage that uses it, in a buffer of its own), and every parameter
  // tensor is left empty (numel 0, same dtype) until a stage or gather_full_params needs it.
  // Parameters must be fp32 CPU leaves that require grad. `group` is the data-parallel group
  // or null (one process); it must outlive this object. Collective.
  Zero3(StagedModel model, DecayFn decays, comm::Group* group, AdamHyper adam);
  // Waits for outstanding reductions. Leaves the parameter tensors empty.
  ~Zero3();
  Zero3(const Zero3&) = delete;
  Zero3& operator=(const Zero3&) = delete;

  // Forward + loss for one micro-batch (idx and targets as the stage functions take them);
  // the caller calls backward() on the result (or a multiple of it). The backward pass adds
  // this rank's gradient shard into the accumulated gradients. Under torch::NoGradGuard no
  // graph is recorded (evaluation). bf16 autocast, when on, is captured at forward and used
  // again for the recomputation in backward. REQUIRES: full parameters not materialized.
  torch::Tensor loss(const torch::Tensor& idx, const torch::Tensor& targets);
  // Zeroes the accumulated gradient shards (waits for any reduction still in flight).
  void zero_grad();
  // After the last backward of a step: waits for outstanding reductions and averages the
  // gradients over ranks.
  void finish_backward();
  // Scales gradients so their global norm (over all shards) is at most max_norm, inside the
  // next step; returns the norm before. max_norm <= 0 only measures. Collective.
  double clip_grad_norm(double max_norm);
  // The same for a norm the caller computed over more than these gradients (tensor
  // parallelism), e.g. from grad_parts.
  void clip_to(double norm, double max_norm);
  // After finish_backward: the parts of the gradients of every parameter `select` picks (by
  // name) in this rank's shards (views: writing into them changes the gradients). The parts of
  // all ranks together are the whole gradients.
  std::vector<torch::Tensor> grad_parts(const std::function<bool(const std::string&)>& select);
  // One AdamW update (the same update as DataParallel and torch.optim.AdamW) of this rank's
  // shard, with learning rate `lr`. REQUIRES: full parameters not materialized.
  void step(double lr);
  int64_t step_count() const;

  // Points every parameter tensor at its full value so that the model can be evaluated or
  // saved as usual (collective); release_full_params() frees them again. The materialized
  // tensors are a read-only copy: changes to them are not kept (use load_params).
  void gather_full_params();
  void release_full_params();
  bool full_params_materialized() const;

  // The whole optimizer state, "<param>.exp_avg" / "<param>.exp_avg_sq" in parameter order,
  // gathered on every rank (collective).
  NamedParams gather_state();
  // Restores the optimizer state from whole tensors "<prefix><param>.exp_avg[_sq]" written at
  // any world size. Checks every tensor before changing anything.
  Status load_state(const std::map<std::string, torch::Tensor>& tensors, const std::string& prefix,
                    int64_t step_count);
  // Sets the parameters from whole tensors "<prefix><param>" (any world size wrote them): each
  // rank keeps its shard. Checks every tensor before changing anything.
  Status load_params(const std::map<std::string, torch::Tensor>& tensors,
                     const std::string& prefix);
  // Persistent bytes per parameter on this rank: 4 / world each for parameters and
  // gradients, 8 / world for the moments (+ padding to a multiple of world per buffer).
  // Transient full stage buffers are not counted.
  MemoryReport memory_report() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace cairn::parallel
