// The master's shard service for one dataset, as a pure state machine: the dataset's N samples
// are cut into shards of shard_size consecutive sample ids; every epoch hands its shards out in
// the order epoch_permutation(num_shards, seed, epoch) (data/local_sampler.h). No clock, no I/O:
// every call takes `now`.
//
//   TODO ──acquire(worker)──► DOING (leased to the worker until now + lease_s; renew() extends)
//   DOING ──complete(worker)──► DONE          (the step that trained it committed)
//   DOING ──release_worker / lease expired──► TODO, at the front, one attempt more; a shard that
//         ran out of attempts (max_attempts) is dropped and counted as failed
//
// An epoch's shards become available once the previous epoch has no TODO shard left (its last
// DOING shards may still finish). A streaming dataset (`streaming`) has one pass and no
// shuffle: shards are cut in file order as extend() reports more samples, and finish() cuts the
// last, shorter one.
//
// snapshot() captures what a checkpoint needs to give back exactly the consumption at its step:
// the DONE shards and the epoch; restore() makes every other shard TODO again (a shard DOING at
// the snapshot was not trained by a committed step), so a rollback to step S trains every
// sample not trained by step S exactly once more.
#pragma once

#include <climits>
#include <cstdint>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cairn/core/status.h"

namespace cairn::elastic {

struct ShardParams {
  int64_t num_samples = 0;  // for a streaming dataset: the samples known when it is created
  int64_t shard_size = 1;   // samples per shard (the last one of a pass may be shorter)
  uint64_t seed = 0;
  int64_t num_epochs = 1;  // >= 1
  double lease_s = 60;     // a DOING shard not completed or renewed this long goes back
  int max_attempts = 3;    // hand-outs per shard and epoch before it is dropped
  bool streaming = false;
};

inline constexpr int64_t kMaxShardsPerEpoch = int64_t(1) << 24;
inline constexpr int64_t kMaxSamples = int64_t(1) << 50;
inline constexpr int64_t kMaxEpochs = 1 << 20;

// kInvalidArgument naming the field.
Status validate_shard_params(const ShardParams& params);

// A shard: samples [start, end) of epoch `epoch`. `index` is its position in the dataset
// (start = index * shard_size).
struct Shard {
  int64_t epoch = 0;
  int64_t index = 0;
  int64_t start = 0;
  int64_t end = 0;

  int64_t size() const { return end - start; }
  bool operator<(const Shard& o) const {
    return epoch != o.epoch ? epoch < o.epoch : index < o.index;
  }
  bool operator==(const Shard& o) const {
    return epoch == o.epoch && index == o.index && start == o.start && end == o.end;
  }
};

struct AcquireResult {
  std::optional<Shard> shard;  // none: see `exhausted` and `reason`
  bool exhausted = false;      // every epoch is handed out (and, streaming, the file finished)
  std::string reason;          // why no shard (others hold the rest; the stream has no more yet)
};

struct ShardStats {
  int64_t epoch = 0;                                  // the epoch being handed out
  int64_t todo = 0, doing = 0, done = 0, failed = 0;  // shards of handed-out epochs
  int64_t done_samples = 0;
  int64_t handed_out = 0;  // acquisitions since creation or restore
  int64_t expired = 0;     // leases that ran out
  bool finished = false;   // every epoch done
};

class ShardState {
 public:
  // REQUIRES: validate_shard_params(params).ok().
  explicit ShardState(ShardParams params);

  // The next shard for `worker` (TODO → DOING), or why there is none.
  AcquireResult acquire(const std::string& worker, double now);
  // Like acquire, for training step `step` of a data-parallel world that takes `quota` shards
  // per step: at most `quota` shards go out for the step, and a rank that has one already gets
  // another only while enough are left for each rank without one (so every rank gets at least
  // one when quota >= world). `step_full` is set when the step has none left for this rank, also
  // when the dataset has nothing left to hand out but what ranks hold (the end of the last
  // epoch, a closed stream): the step goes on with fewer shards.
  // Steps older than the newest asked for minus 4 are forgotten; restore() forgets all.
  AcquireResult acquire_for_step(const std::string& worker, int64_t step, int rank, int world,
                                 int quota, double now, bool* step_full);
  // DOING → DONE. kFailedPrecondition when `worker` does not hold it (its lease ran out and the
  // shard went to someone else, or it was restored away); a shard already DONE is Ok.
  // `step` is the training step that trained it (-1: none), for snapshot(max_step).
  Status complete(const std::string& worker, const Shard& shard, int64_t step = -1);
  // Extends the leases of the worker's DOING shards.
  void renew(const std::string& worker, double now);
  // The worker is gone: its DOING shards go back to TODO.
  void release_worker(const std::string& worker);
  // Expired leases go back to TODO (or are dropped after max_attempts).
  void tick(double now);
  // More epochs (a resumed job trains longer); fewer are ignored. Capped at kMaxEpochs.
  void raise_epochs(int64_t num_epochs);
  // Streaming: the source now holds `num_samples` (a smaller figure than an earlier one is
  // stale and changes nothing). Complete shards are cut and queued.
  Status extend(int64_t num_samples);
  // Streaming: the source is closed at `num_samples`; the last partial shard is cut.
  Status finish(int64_t num_samples);

  // Shards completed by steps after `max_step` count as not done: a rollback to max_step trains
  // them again.
  nlohmann::json snapshot(int64_t max_step = INT64_MAX) const;
  // kCorrupt (naming what) when the snapshot does not fit these params.
  Status restore(const nlohmann::json& snapshot);

  ShardStats stats() const;
  const ShardParams& params() const { return params_; }
  std::vector<Shard> doing_of(const std::string& worker) const;

 private:
  // restore()'s "done" lists (by epoch) into shards and their sample count; kCorrupt naming
  // an epoch or shard that cannot be.
  Status parse_done_shards(const nlohmann::json& lists, int64_t epoch, int64_t n, int64_t cut,
                           int64_t known, std::map<Shard, int64_t>* done,
                           int64_t* done_samples) const;
  struct Lease {
    std::string worker;
    double deadline = 0;
  };
  void start_epoch(int64_t epoch);
  void cut_stream_shards(bool last);
  void back_to_todo(const Shard& shard);
  Shard shard_at(int64_t epoch, int64_t index) const;
  int64_t num_shards() const;

  ShardParams params_;
  int64_t epoch_ = 0;  // the epoch whose shards are being handed out
  int64_t cut_ = 0;    // streaming: shards cut so far
  bool stream_closed_ = false;
  std::deque<Shard> todo_;
  std::map<Shard, Lease> doing_;
  std::map<Shard, int64_t> done_;  // shard -> the step that completed it (-1: none given)
  struct StepTaken {
    int taken = 0;
    std::set<int> ranks;
  };
  std::map<int64_t, StepTaken> steps_;
  std::map<Shard, int> attempts_;
  int64_t known_samples_ = 0;  // streaming: grows with extend()
  int64_t failed_ = 0, done_samples_ = 0, handed_out_ = 0, expired_ = 0;
};

}  // namespace cairn::elastic
