// ZeRO-3 internals: the flat-buffer layout (pure arithmetic) and the state shared by the stage
// autograd nodes, the optimizer and checkpoint code.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "cairn/comm/group.h"
#include "cairn/parallel/buckets.h"
#include "cairn/parallel/zero3.h"
#include "parallel/flat_adamw_impl.h"

namespace cairn::parallel {

// Where every distinct parameter lives. A parameter is owned by the first stage that uses it.
// Each stage owns one flat buffer with its parameters used by no other stage, then one
// buffer per shared parameter it owns (so that another stage using it gathers only that
// parameter). Slots are in parameter order; every buffer is padded to a multiple of `shards`.
struct Zero3Layout {
  std::vector<Bucket> flats;                  // slot.param indexes the distinct parameters
  std::vector<int> param_flat;                // per parameter: the buffer holding it
  std::vector<BucketSlot> param_slot;         // per parameter: its place in that buffer
  std::vector<std::vector<int>> stage_flats;  // per stage: the buffers it gathers, ascending
};

// stage_uses[s]: the distinct parameter indices stage s uses; numels: per parameter.
// REQUIRES: shards >= 1, every parameter used by at least one stage, indices in range.
Zero3Layout plan_zero3_layout(const std::vector<std::vector<int>>& stage_uses,
                              const std::vector<int64_t>& numels, int shards);

struct Zero3::Impl {
  struct Param {
    std::string name;
    torch::Tensor tensor;  // the model's tensor: empty, or a view of a gathered buffer
    std::vector<int64_t> sizes;
    bool decay = false;
    int flat = 0;
    BucketSlot slot;
  };
  struct Flat {  // this rank's shard [lo, hi) of one padded flat buffer
    Bucket plan;
    int64_t lo = 0, hi = 0;
    torch::Tensor param, grad;  // (hi - lo) each
  };
  struct InFlight {  // a stage's gradients being all-reduced
    int flat = 0;
    torch::Tensor buffer;  // (plan.numel)
    comm::Pending work;
  };
  // Full gradient buffers being reduced at once; more wait for the oldest to finish.
  static constexpr size_t kMaxInFlight = 2;

  StagedModel model;
  comm::Group* group = nullptr;
  torch::TensorOptions buffers = torch::kFloat;  // fp32 on the parameters' device
  std::vector<Param> params;                     // distinct parameters, first-use order
  std::vector<std::vector<int>> stage_params;    // per stage: distinct parameter indices
  std::vector<Flat> flats;
  std::vector<std::vector<int>> stage_flats;
  std::deque<InFlight> in_flight;
  bool full_params = false;              // gather_full_params() until release_full_params()
  std::unique_ptr<FlatAdamW> optimizer;  // the moments of this rank's shards

  int world() const { return group ? group->size() : 1; }
  int rank() const { return group ? group->rank() : 0; }
  int64_t num_stages() const { return int64_t(stage_params.size()); }
  // This rank's shard of every buffer, as the optimizer updates it.
  std::vector<FlatShard> shards() {
    std::vector<FlatShard> out;
    for (Flat& fl : flats) out.push_back({&fl.plan, fl.lo, fl.hi, fl.param, fl.grad});
    return out;
  }

  // Runs stage s's function. REQUIRES: its parameters are gathered.
  torch::Tensor run(int64_t s, const torch::Tensor& x, const torch::Tensor& targets) const;
  // The full flat buffer `f` (collective for world > 1; the shard itself for world 1).
  torch::Tensor gather(int f) const;
  // Points the parameters of buffer `f` at views of `full`, or (undefined) at empty tensors.
  void point(int f, const torch::Tensor& full);
  // Adds stage s's parameter gradients (grads[i] for stage_params[s][i], undefined = none)
  // to the shards: all-reduces each of the stage's buffers (asynchronously when world > 1).
  void reduce(int64_t s, const std::vector<torch::Tensor>& grads);
  // Waits until at most `keep` reductions are in flight, adding the finished ones' slices.
  void drain(size_t keep);
};

}  // namespace cairn::parallel
