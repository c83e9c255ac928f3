// A worker's side of the shard service: creates (or finds) its dataset on the master, hands out
// shards one at a time from a prefetched batch, and sends the completed ones with the next
// request. One per worker process; not thread-safe.
//
//   next() ── local queue empty? ──► GetShards(done so far, want = prefetch) ── shards ──► queue
//                                    none yet (others hold the rest) → poll until wait_timeout_s
//   done(shard) ── queued; sent with the next GetShards or by flush()
#pragma once

#include <deque>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cairn/core/status.h"
#include "cairn/elastic/master_client.h"
#include "cairn/elastic/shard_state.h"

namespace cairn::elastic {

struct ShardClientOptions {
  MasterClientOptions client;
  std::string dataset;  // REQUIRES: non-empty; the same on every worker of the job
  std::string worker;   // REQUIRES: non-empty; unique in the job (e.g. "rank-3")
  ShardParams params;   // the dataset's; every worker must pass the same
  int prefetch = 4;     // shards asked for per request, 1..1024
  double poll_interval_s = 0.02;
  double wait_timeout_s = 300;  // longest wait for a shard other workers hold
};

class ShardClient {
 public:
  static Result<std::unique_ptr<ShardClient>> Open(const ShardClientOptions& options);

  // The next shard; nullopt when the dataset is exhausted. kTimeout when other workers held the
  // remaining shards past wait_timeout_s.
  Result<std::optional<Shard>> next();
  // One shard for a training step under a step quota, no prefetch; nullopt when the step has
  // none left for this rank (or the dataset is exhausted).
  Result<std::optional<Shard>> next_for_step(const StepQuota& quota);
  // Marks `shard` DONE with the next request; `step` is the training step that trained it
  // (every shard of one request shares it: flush between steps).
  void done(const Shard& shard, int64_t step = -1) {
    done_.push_back(shard);
    done_step_ = step;
  }
  Status flush();
  // Flushes, then the master's snapshot of the dataset (max_step > 0: as of that step).
  Result<nlohmann::json> snapshot(int64_t max_step = 0);
  // Replaces the master's state with `snapshot` and drops the local queue.
  Status restore(const nlohmann::json& snapshot);
  // A streaming dataset's source holds `num_samples` now (finished: and is closed).
  Status extend(int64_t num_samples, bool finished) {
    return client_->extend_dataset(o_.dataset, num_samples, finished);
  }
  // Gives this worker's leased shards back (the local queue is dropped).
  Status release();
  const ShardStats& last_stats() const { return stats_; }
  int64_t requests() const { return requests_; }

 private:
  explicit ShardClient(ShardClientOptions options) : o_(std::move(options)) {}
  ShardClientOptions o_;
  std::unique_ptr<MasterClient> client_;
  std::deque<Shard> queue_;
  std::vector<Shard> done_;
  int64_t done_step_ = -1;
  bool exhausted_ = false;
  ShardStats stats_;
  int64_t requests_ = 0;
};

}  // namespace cairn::elastic
