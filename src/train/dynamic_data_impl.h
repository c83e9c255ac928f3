// DynamicData: the trainer's side of dynamic sharding (`data.sharding: dynamic`). Each step's
// global batch is `quota` micro-batches, each one shard of micro_batch_size consecutive samples
// handed out by the master's shard service; a rank takes its next micro-batch when it finishes
// the previous one, so faster ranks take more of the step (every rank at least one).
//
//   step S: next_for_step ── shard ──► (fetch the following one first: is this the last?) ──►
//           forward/backward (gradients synced on the last) ──► done(shard, S) ──► flush
//           before the step's collective, so every rank's completions are in before rank 0
//           snapshots the service for the checkpoint of step S
//   checkpoint S: rank 0 snapshot(S) ── broadcast ──► every rank's state JSON "shards"
//   restore: rank 0 pushes the checkpoint's snapshot (or a fresh one) back; others wait
#pragma once

#include <torch/types.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cairn/core/status.h"
#include "cairn/data/token_stream.h"
#include "cairn/elastic/shard_client.h"

namespace cairn::comm {
class Group;
}

namespace cairn::train {

struct DynamicDataOptions {
  // The elastic master: address, token and TLS files (elastic::master_client_from_env).
  elastic::MasterClientOptions client;
  std::string dataset;      // the train file's path
  int64_t num_samples = 0;  // of the train file; the tail short of a micro-batch is left out
  int64_t micro_batch_size = 1;
  int64_t global_batch_size = 1;
  int64_t max_steps = 1;
  uint64_t seed = 0;
  int rank = 0, world = 1;
  // data.stream: the growing source (num_samples is read from it); a rank that finds no shard
  // tells the service how far it has grown.
  const data::TokenStream* stream = nullptr;
  int64_t seq_len = 0;
};

class DynamicData {
 public:
  static Result<std::unique_ptr<DynamicData>> Open(const DynamicDataOptions& options);

  // The next micro-batch of training step `step` (1-based) for this rank, nullopt when the
  // step has none left for it.
  Result<std::optional<elastic::Shard>> next(int64_t step);
  // The step's shards this rank trained are complete; sends them (call before the step's
  // first collective after its backward passes).
  Status complete(const std::vector<elastic::Shard>& shards, int64_t step);
  // Collective: rank 0's snapshot of the service as of `step`, on every rank.
  Result<nlohmann::json> snapshot(int64_t step, comm::Group* group);
  // Collective: rank 0 puts `snapshot` back (null: the dataset's initial state), then all wait.
  Status restore(const nlohmann::json& snapshot, comm::Group* group);

  int quota() const { return quota_; }
  int64_t samples_per_epoch() const { return params_.num_samples; }

 private:
  DynamicDataOptions o_;
  elastic::ShardParams params_;
  // Streaming: tells the service the stream's current size (and its end).
  Status refresh_stream();
  int quota_ = 1;
  int64_t told_samples_ = -1;
  bool told_closed_ = false;
  std::unique_ptr<elastic::ShardClient> client_;
};

}  // namespace cairn::train
