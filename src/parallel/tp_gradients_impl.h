// The gradients of a model split over a tensor-parallel group, as the engines that hold tp
// slices need them (the tensor-parallel engine, a pipeline stage at tp > 1): which parameters
// are split and which every tp rank holds, the sum over tp of the gradients that are partial
// sums, and the clip norm's squares.
//
// Parameters by how the tp ranks hold them (by name, from the model's specs):
//   split   disjoint slices (column / row / vocabulary splits): gradients complete
//   whole   the same tensor on every rank (norms, row-parallel biases, the position table):
//           gradients complete, except under sequence parallelism, where each rank saw only
//           its chunk of the sequence and the gradients are partial sums over tp
//   kv      key/value heads replicated over tp_kv_replicas ranks: partial sums over them
#pragma once

#include <torch/types.h>

#include <functional>
#include <string>
#include <vector>

#include "cairn/model/config.h"
#include "cairn/model/param_specs.h"

namespace cairn::comm {
class Group;
}

namespace cairn::parallel {

class TpGradients {
 public:
  // This rank's gradient parts of the parameters `select` picks, in an order alike on every
  // tp rank (a DataParallel's grad_parts, or several concatenated).
  using Select = std::function<bool(const std::string&)>;
  using Parts = std::function<std::vector<torch::Tensor>(const Select&)>;

  TpGradients(const model::ModelConfig& config, comm::Group* tp, bool sequence_parallel);

  bool whole(const std::string& name) const;
  bool kv(const std::string& name) const;
  bool split(const std::string& name) const { return !whole(name) && !kv(name); }

  // Sums over tp the gradients that are partial sums (whole parameters under sequence
  // parallelism, replicated key/value heads over their replicas), in one all-reduce; nothing
  // when this rank holds none. Collective over tp.
  void sum_partial(const Parts& parts) const;
  // This rank's squared gradient norms {split parameters (a replicated key/value head counted
  // on its first replica only), whole parameters}, a (2) double tensor: the caller sums it
  // over the ranks holding other parts (dp shards, pipeline stages) and then calls norm().
  torch::Tensor squares(const Parts& parts) const;
  // The squared norm over the whole model's gradients from `squares` (collective over tp: the
  // split parameters' slices are disjoint, the whole ones count once).
  double total(const torch::Tensor& squares) const;

 private:
  model::ModelConfig config_;
  comm::Group* tp_;
  bool sp_;
  std::vector<model::ParamSpec> specs_;
};

}  // namespace cairn::parallel
