// AdamW with decoupled weight decay, numerically the same update as torch.optim.AdamW
// (non-fused, non-amsgrad), over named parameters so that its state can be checkpointed by name.
#pragma once

#include <torch/types.h>

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "cairn/core/status.h"

namespace cairn::train {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;  // applied only to parameters the `decays` predicate selects
};

class AdamW {
 public:
  using NamedParams = std::vector<std::pair<std::string, torch::Tensor>>;
  // `decays(name, param)` says whether weight decay applies to a parameter.
  AdamW(NamedParams params, std::function<bool(const std::string&, const torch::Tensor&)> decays,
        AdamWOptions options);

  // One update with learning rate `lr` from the parameters' .grad(). Parameters without a
  // gradient are skipped (as torch does).
  void step(double lr);
  // Drops every gradient (sets .grad() undefined).
  void zero_grad();
  int64_t step_count() const { return step_; }

  // State as named tensors: "<param>.exp_avg", "<param>.exp_avg_sq"; plus step_count().
  std::vector<std::pair<std::string, torch::Tensor>> state() const;
  // Restores state saved by state(). Checks every name and shape before changing anything.
  Status load_state(const std::map<std::string, torch::Tensor>& tensors, const std::string& prefix,
                    int64_t step_count);

  // The standard rule: decay matrices (dim >= 2) except the positional table `wpe.weight`;
  // never norms or biases.
  static bool default_decay(const std::string& name, const torch::Tensor& p);

 private:
  struct Slot {
    std::string name;
    torch::Tensor param, exp_avg, exp_avg_sq;
    bool decay;
  };
  std::vector<Slot> slots_;
  AdamWOptions options_;
  int64_t step_ = 0;
};

}  // namespace cairn::train
