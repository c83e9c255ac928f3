// FlatAdamW: the one AdamW of the data-parallel engines, over flat buffers of which this rank
// updates a shard [lo, hi) (the whole buffer without sharding). DataParallel (DDP, ZeRO-1/2)
// and Zero3 keep their own parameter and gradient buffers and hand it views of their shards;
// the moments, the step count, the clipping factor and the moments' checkpoint form (whole
// tensors per parameter) live here once. Another optimizer over flat shards (e.g. a
// memory-light one) is another class with this shape.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "cairn/core/status.h"
#include "cairn/parallel/buckets.h"
#include "cairn/parallel/data_parallel.h"

namespace cairn::comm {
class Group;
}

namespace cairn::parallel {

// What the optimizer knows of a parameter (indexed by the buckets' slot.param).
struct FlatParam {
  std::string name;
  std::vector<int64_t> sizes;
  bool decay = false;
};

// This rank's shard of one flat buffer: positions [lo, hi) of a buffer laid out as `plan`.
struct FlatShard {
  const Bucket* plan = nullptr;
  int64_t lo = 0, hi = 0;
  torch::Tensor param;  // (hi - lo) fp32, contiguous: updated in place
  torch::Tensor grad;   // (hi - lo) fp32, contiguous: the averaged gradient of that range
};

// The parts of `shard` (positions [lo, hi) of a buffer laid out as `plan`) that belong to the
// parameters `select` picks (by index in the plan's slots), as views, in slot order.
std::vector<torch::Tensor> shard_parts(const Bucket& plan, int64_t lo, int64_t hi,
                                       const torch::Tensor& shard,
                                       const std::function<bool(int64_t param)>& select);

class FlatAdamW {
 public:
  // One pair of moments per shard, of each shard's size (hi - lo), zero, on `device` (the
  // shards' device: the CPU runs the fused kernel, another device tensor operations).
  FlatAdamW(AdamHyper hyper, std::vector<FlatParam> params,
            const std::vector<int64_t>& shard_numels, torch::Device device = torch::kCPU);

  // Norm of the gradients `grads` hold, summed over `sum_over` when each rank holds a disjoint
  // part (null: they are the whole). The factor that brings it to max_norm (when above it and
  // max_norm > 0) is applied inside the next step(). Collective over sum_over.
  double clip_grad_norm(const std::vector<torch::Tensor>& grads, comm::Group* sum_over,
                        double max_norm);
  // The same with the norm computed by the caller (tensor parallelism sums parts of it over
  // another group).
  void clip_to(double norm, double max_norm);
  // One update of every shard with learning rate lr. Runs of one parameter each (decay is per
  // parameter); the padding between and after them is updated without decay and stays zero
  // (its gradient is zero).
  void step(const std::vector<FlatShard>& shards, double lr);
  int64_t step_count() const { return steps_; }

  // The moments as whole tensors "<param>.exp_avg" / "<param>.exp_avg_sq", all-gathered over
  // `gather_over` when the shards split the buffers (null: they are whole). The tensors may be
  // views of the live moments. Collective over gather_over.
  std::vector<std::pair<std::string, torch::Tensor>> gather_state(
      const std::vector<FlatShard>& shards, comm::Group* gather_over) const;
  // Checks that `tensors` holds both moments of every parameter, fp32 of its shape, then loads
  // this rank's part of them (padding zero) and the step count. Changes nothing on error.
  Status load_state(const std::vector<FlatShard>& shards,
                    const std::map<std::string, torch::Tensor>& tensors, const std::string& prefix,
                    int64_t step_count);

  const std::vector<FlatParam>& params() const { return params_; }

 private:
  AdamHyper hyper_;
  std::vector<FlatParam> params_;
  std::vector<torch::Tensor> exp_avg_, exp_avg_sq_;  // per shard, (hi - lo)
  int64_t steps_ = 0;
  float grad_scale_ = 1.0f;
};

// Checks that `tensors` holds "<prefix><param><suffix>" for every parameter and suffix, fp32
// and of the parameter's shape; `what` names them in the error ("optimizer state").
Status check_whole_tensors(const std::vector<FlatParam>& params,
                           const std::map<std::string, torch::Tensor>& tensors,
                           const std::string& prefix, const std::vector<std::string>& suffixes,
                           const char* what);
// Copies this rank's part of whole tensors "<prefix><param><suffix>" into `dst[i]`, the shard
// [lo, hi) of shards[i]'s buffer; positions no parameter covers become zero.
// REQUIRES: check_whole_tensors passed.
void load_shard_parts(const std::vector<FlatParam>& params, const std::vector<FlatShard>& shards,
                      const std::map<std::string, torch::Tensor>& tensors,
                      const std::string& prefix, const std::string& suffix,
                      const std::vector<torch::Tensor>& dst);

}  // namespace cairn::parallel
