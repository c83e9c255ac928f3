// ShardService: the master's shard service without gRPC — the named datasets, each a
// ShardState, and the validation of every request. Not thread-safe: the server calls it under
// its own lock (the rendezvous lock is separate, so shard traffic never waits for a Join).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cairn/core/status.h"
#include "cairn/elastic/shard_state.h"

namespace cairn::elastic {

// A worker's GetShards: completes `done`, then asks for up to `want` shards. With step > 0 the
// shards are those of training step `step` for `rank` of `world` (at most step_quota per step
// over all ranks); with step 0, any shard.
struct ShardRequest {
  std::string worker;
  int64_t want = 0;
  std::vector<Shard> done;
  int64_t done_step = -1;  // the training step that trained `done` (-1: none)
  int64_t step = 0;
  int64_t rank = 0, world = 0, step_quota = 0;
};

struct ShardReply {
  std::vector<Shard> shards;
  bool step_full = false;  // the step's quota is handed out
  bool exhausted = false;  // every shard of every epoch is handed out
  std::string reason;      // why fewer than `want` came, when they did
  ShardStats stats;
};

class ShardService {
 public:
  static constexpr size_t kMaxDatasets = 64;
  static constexpr size_t kMaxDatasetName = 1024;
  static constexpr int64_t kMaxWant = 1024;
  static constexpr size_t kMaxDone = 4096;
  static constexpr size_t kMaxWorkerName = 144;

  // Creates `dataset`: true when new, false when it existed with the same parameters (a
  // resumed job may ask for more epochs; a stream's size may have grown). Other parameters:
  // kFailedPrecondition naming both; bad parameters or name: kInvalidArgument.
  Result<bool> create(const std::string& dataset, const ShardParams& params);
  // kNotFound for an unknown dataset (a restarted master forgets them), kInvalidArgument for
  // a malformed request, kFailedPrecondition when `done` names shards the worker does not hold.
  Result<ShardReply> get(const std::string& dataset, const ShardRequest& request, double now);
  // The worker is gone: its leased shards go back.
  Status release(const std::string& dataset, const std::string& worker);
  // What a checkpoint of step max_step needs to restore the consumption exactly.
  Result<nlohmann::json> snapshot(const std::string& dataset, int64_t max_step) const;
  Status restore(const std::string& dataset, const nlohmann::json& snapshot);
  // A stream grew to num_samples (finished: and ends there).
  Status extend(const std::string& dataset, int64_t num_samples, bool finished);
  // Expires leases of silent workers.
  void tick(double now);

  size_t datasets() const { return datasets_.size(); }

 private:
  Result<ShardState*> find(const std::string& dataset) const;
  std::map<std::string, std::unique_ptr<ShardState>> datasets_;
};

}  // namespace cairn::elastic
