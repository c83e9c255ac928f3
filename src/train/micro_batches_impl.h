// MicroBatchSource: where one rank's micro-batches of a step come from, so that the training
// loop reads the same whatever the sharding: begin the step, take micro-batches until there
// are none, end the step, record what it consumed.
//   deterministic  micro-batch j of a global batch goes to rank j % world (the world need not
//                  divide them: the ranks left short run a zero-weight micro-batch)
//   dynamic        shards of sample ids from the master's service, as many as this rank asks
//                  for before the step's quota is used up (data.sharding: dynamic)
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "cairn/core/status.h"
#include "train/trainer_impl.h"

namespace cairn::train {

struct MicroBatch {
  torch::Tensor x, y;  // (B, T) inputs and targets
  // The loss is divided by `divide_by` and multiplied by `multiply_by` (each when not 1) before
  // backward: a share of the step's mean.
  double divide_by = 1, multiply_by = 1;
  bool padding = false;      // weight zero, not part of the step's loss
  std::optional<bool> last;  // whether it is the rank's last of the step, when known at forward
};

// What a step consumed, for metrics.jsonl and samples.jsonl.
struct StepRecord {
  std::vector<int64_t> micro_batches_per_rank;     // dynamic sharding only
  std::optional<std::vector<int64_t>> sample_ids;  // data.log_sample_ids: every rank's, in order
};

class MicroBatchSource {
 public:
  virtual ~MicroBatchSource() = default;
  // Starts step `step` (0-based). Collective under dynamic sharding, where false means every
  // rank's data is used up and the job ends.
  virtual Result<bool> begin_step(int64_t step) = 0;
  // This rank's next micro-batch of the step; nullopt when it has none left. The loop asks
  // for the following one after the current one's forward pass (under dynamic sharding, the
  // later a rank asks, the fairer the split) and before its backward.
  virtual Result<std::optional<MicroBatch>> next() = 0;
  // After this rank's last backward of the step, before the step's first blocking collective.
  virtual Status end_step() = 0;
  // After the optimizer step (collective when sample ids or counts are gathered).
  virtual Result<StepRecord> record() = 0;
};

std::unique_ptr<MicroBatchSource> make_deterministic_batches(Trainer::Impl& trainer);
std::unique_ptr<MicroBatchSource> make_dynamic_batches(Trainer::Impl& trainer);

}  // namespace cairn::train
