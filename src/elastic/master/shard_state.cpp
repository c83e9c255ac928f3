// The shard service's queues. See cairn/elastic/shard_state.h.
#include "cairn/elastic/shard_state.h"

#include <algorithm>

#include "cairn/data/local_sampler.h"

namespace cairn::elastic {

Status validate_shard_params(const ShardParams& p) {
  if (p.shard_size < 1 || p.shard_size > kMaxSamples)
    return Status::InvalidArgument("shard_size " + std::to_string(p.shard_size) + ": must be 1.." +
                                   std::to_string(kMaxSamples));
  if (p.num_samples > kMaxSamples)
    return Status::InvalidArgument("num_samples " + std::to_string(p.num_samples) + ": at most " +
                                   std::to_string(kMaxSamples));
  if (p.num_epochs > kMaxEpochs)
    return Status::InvalidArgument("num_epochs " + std::to_string(p.num_epochs) + ": at most " +
                                   std::to_string(kMaxEpochs));
  if (p.num_samples < 0 || (!p.streaming && p.num_samples < 1))
    return Status::InvalidArgument("num_samples " + std::to_string(p.num_samples) +
                                   ": a dataset needs at least one sample");
  if (!p.streaming && (p.num_samples + p.shard_size - 1) / p.shard_size > kMaxShardsPerEpoch)
    return Status::InvalidArgument(std::to_string(p.num_samples) + " samples in shards of " +
                                   std::to_string(p.shard_size) + " are more than " +
                                   std::to_string(kMaxShardsPerEpoch) +
                                   " shards per epoch; use a larger shard_size");
  if (p.num_epochs < 1)
    return Status::InvalidArgument("num_epochs " + std::to_string(p.num_epochs) + ": must be >= 1");
  if (p.streaming && p.num_epochs != 1)
    return Status::InvalidArgument("a streaming dataset has one pass (num_epochs 1), not " +
                                   std::to_string(p.num_epochs));
  if (!(p.lease_s > 0)) return Status::InvalidArgument("lease_s must be > 0");
  if (p.max_attempts < 1)
    return Status::InvalidArgument("max_attempts " + std::to_string(p.max_attempts) +
                                   ": must be >= 1");
  return Status::Ok();
}

ShardState::ShardState(ShardParams params) : params_(params), known_samples_(params.num_samples) {
  start_epoch(0);
}

int64_t ShardState::num_shards() const {
  if (params_.streaming) return cut_;
  return (params_.num_samples + params_.shard_size - 1) / params_.shard_size;
}

Shard ShardState::shard_at(int64_t epoch, int64_t index) const {
  Shard s;
  s.epoch = epoch;
  s.index = index;
  s.start = index * params_.shard_size;
  s.end = std::min(s.start + params_.shard_size, known_samples_);
  return s;
}

void ShardState::start_epoch(int64_t epoch) {
  epoch_ = epoch;
  if (params_.streaming) {
    cut_stream_shards(false);
    return;
  }
  for (int64_t idx : data::epoch_permutation(num_shards(), params_.seed, epoch)) {
    Shard s = shard_at(epoch, idx);
    if (!done_.count(s)) todo_.push_back(s);
  }
}

void ShardState::cut_stream_shards(bool last) {
  while (cut_ < known_samples_ / params_.shard_size) todo_.push_back(shard_at(0, cut_++));
  if (last && cut_ * params_.shard_size < known_samples_) todo_.push_back(shard_at(0, cut_++));
}

void ShardState::raise_epochs(int64_t num_epochs) {
  if (!params_.streaming && num_epochs > params_.num_epochs)
    params_.num_epochs = std::min(num_epochs, kMaxEpochs);
}

void ShardState::back_to_todo(const Shard& shard) {
  if (attempts_[shard] >= params_.max_attempts) {
    ++failed_;
    attempts_.erase(shard);
    return;
  }
  todo_.push_front(shard);
}

AcquireResult ShardState::acquire(const std::string& worker, double now) {
  tick(now);
  AcquireResult r;
  if (todo_.empty() && !params_.streaming && epoch_ + 1 < params_.num_epochs)
    start_epoch(epoch_ + 1);
  if (!todo_.empty()) {
    Shard s = todo_.front();
    todo_.pop_front();
    doing_[s] = {worker, now + params_.lease_s};
    ++attempts_[s];
    ++handed_out_;
    r.shard = s;
    return r;
  }
  if (!doing_.empty()) {
    r.reason = "the remaining " + std::to_string(doing_.size()) +
               " shard(s) are held by workers; some may come back";
  } else if (params_.streaming && !stream_closed_) {
    r.reason = "the stream has no complete shard yet (" + std::to_string(known_samples_) +
               " samples so far)";
  } else {
    r.exhausted = true;
    r.reason =
        "every shard of the " + std::to_string(params_.num_epochs) + " epoch(s) is handed out";
  }
  return r;
}

Status ShardState::complete(const std::string& worker, const Shard& shard, int64_t step) {
  if (done_.count(shard)) return Status::Ok();
  auto it = doing_.find(shard);
  if (it == doing_.end() || it->second.worker != worker)
    return Status::FailedPrecondition(
        "shard " + std::to_string(shard.index) + " of epoch " + std::to_string(shard.epoch) +
        " is not held by " + worker +
        (it == doing_.end() ? "" : " (its lease went to " + it->second.worker + ")"));
  const Shard held = it->first;  // its bounds are the service's, not the caller's
  doing_.erase(it);
  attempts_.erase(held);
  done_[held] = step;
  done_samples_ += held.size();
  return Status::Ok();
}

AcquireResult ShardState::acquire_for_step(const std::string& worker, int64_t step, int rank,
                                           int world, int quota, double now, bool* step_full) {
  *step_full = false;
  StepTaken& t = steps_[step];
  while (!steps_.empty() && steps_.begin()->first < step - 4) steps_.erase(steps_.begin());
  const int left = quota - t.taken;
  const int without = std::max(0, world - int(t.ranks.size()) - (t.ranks.count(rank) ? 0 : 1));
  if (left <= 0 || (t.ranks.count(rank) && left <= without)) {
    *step_full = true;
    AcquireResult r;
    r.reason = "step " + std::to_string(step) + " has no shard left for rank " +
               std::to_string(rank) + " (" + std::to_string(t.taken) + " of " +
               std::to_string(quota) + " taken)";
    return r;
  }
  AcquireResult r = acquire(worker, now);
  if (r.shard) {
    ++t.taken;
    t.ranks.insert(rank);
  } else if (params_.streaming ? stream_closed_ : epoch_ + 1 >= params_.num_epochs) {
    // Nothing more can come for this step: what is left is held by ranks of this step, which
    // complete it at the step's end. Waiting for it would wait for ourselves.
    *step_full = true;
    r.reason = "step " + std::to_string(step) + ": " + r.reason;
  }
  return r;
}

void ShardState::renew(const std::string& worker, double now) {
  for (auto& [s, lease] : doing_)
    if (lease.worker == worker) lease.deadline = now + params_.lease_s;
}

void ShardState::release_worker(const std::string& worker) {
  std::vector<Shard> back;
  for (auto it = doing_.begin(); it != doing_.end();)
    if (it->second.worker == worker) {
      back.push_back(it->first);
      it = doing_.erase(it);
    } else {
      ++it;
    }
  for (auto it = back.rbegin(); it != back.rend(); ++it) back_to_todo(*it);
}

void ShardState::tick(double now) {
  std::vector<Shard> back;
  for (auto it = doing_.begin(); it != doing_.end();)
    if (it->second.deadline <= now) {
      back.push_back(it->first);
      it = doing_.erase(it);
      ++expired_;
    } else {
      ++it;
    }
  for (auto it = back.rbegin(); it != back.rend(); ++it) back_to_todo(*it);
}

Status ShardState::extend(int64_t num_samples) {
  if (!params_.streaming) return Status::FailedPrecondition("the dataset is not streaming");
  if (stream_closed_) return Status::FailedPrecondition("the stream is finished");
  if (num_samples > kMaxSamples || num_samples / params_.shard_size > kMaxShardsPerEpoch)
    return Status::InvalidArgument("the stream's " + std::to_string(num_samples) +
                                   " samples are more shards than the service keeps (" +
                                   std::to_string(kMaxShardsPerEpoch) + ")");
  // Several workers report what they saw; an older, smaller figure changes nothing.
  if (num_samples <= known_samples_) return Status::Ok();
  known_samples_ = num_samples;
  cut_stream_shards(false);
  return Status::Ok();
}

Status ShardState::finish(int64_t num_samples) {
  if (stream_closed_ && num_samples == known_samples_) return Status::Ok();  // told twice
  if (num_samples < known_samples_)
    return Status::InvalidArgument("the stream closed at " + std::to_string(num_samples) +
                                   " samples, but " + std::to_string(known_samples_) +
                                   " were reported before");
  CAIRN_RETURN_IF_ERROR(extend(num_samples));
  stream_closed_ = true;
  cut_stream_shards(true);
  return Status::Ok();
}

nlohmann::json ShardState::snapshot(int64_t max_step) const {
  nlohmann::json done = nlohmann::json::object();
  std::map<int64_t, std::vector<int64_t>> by_epoch;
  for (const auto& [s, step] : done_)
    if (step <= max_step) by_epoch[s.epoch].push_back(s.index);
  for (auto& [e, idx] : by_epoch) done[std::to_string(e)] = idx;
  return {{"version", 1},
          {"shard_size", params_.shard_size},
          {"seed", params_.seed},
          {"num_epochs", params_.num_epochs},
          {"streaming", params_.streaming},
          {"num_samples", known_samples_},
          {"epoch", epoch_},
          {"cut", cut_},
          {"closed", stream_closed_},
          {"failed", failed_},
          {"done", done}};
}

Status ShardState::parse_done_shards(const nlohmann::json& lists, int64_t epoch, int64_t n,
                                     int64_t cut, int64_t known, std::map<Shard, int64_t>* done,
                                     int64_t* done_samples) const {
  for (const auto& [key, list] : lists.items()) {
    const int64_t e = std::stoll(key);
    if (e < 0 || e > epoch) return Status::Corrupt("shard state: done shards of epoch " + key);
    for (const auto& v : list) {
      const int64_t idx = v.get<int64_t>();
      const int64_t limit = params_.streaming ? cut : num_shards();
      if (idx < 0 || idx >= limit)
        return Status::Corrupt("shard state: shard " + std::to_string(idx) + " of epoch " + key +
                               " does not exist");
      Shard s;
      s.epoch = e;
      s.index = idx;
      s.start = idx * params_.shard_size;
      s.end = std::min(s.start + params_.shard_size, params_.streaming ? n : known);
      *done_samples += s.size();
      (*done)[s] = -1;
    }
  }
  return Status::Ok();
}

Status ShardState::restore(const nlohmann::json& j) {
  try {
    if (!j.is_object() || j.value("version", 0) != 1)
      return Status::Corrupt("shard state: not a version-1 snapshot");
    if (j.at("shard_size").get<int64_t>() != params_.shard_size ||
        j.at("seed").get<uint64_t>() != params_.seed ||
        j.at("streaming").get<bool>() != params_.streaming)
      return Status::Corrupt(
          "shard state: the snapshot was taken with other shard_size, seed "
          "or streaming than this dataset's");
    const int64_t n = j.at("num_samples").get<int64_t>();
    if (n < 0 || n > kMaxSamples ||
        (params_.streaming && n / params_.shard_size > kMaxShardsPerEpoch))
      return Status::Corrupt("shard state: " + std::to_string(n) + " samples is out of range");
    if (!params_.streaming && n != params_.num_samples)
      return Status::Corrupt("shard state: the snapshot's dataset has " + std::to_string(n) +
                             " samples, this one " + std::to_string(params_.num_samples));
    const int64_t epoch = j.at("epoch").get<int64_t>();
    if (epoch < 0 || epoch >= params_.num_epochs)
      return Status::Corrupt("shard state: epoch " + std::to_string(epoch) + " out of range (" +
                             std::to_string(params_.num_epochs) + " epochs)");
    const int64_t cut = j.at("cut").get<int64_t>();
    if (params_.streaming && (cut < 0 || cut > (n + params_.shard_size - 1) / params_.shard_size))
      return Status::Corrupt("shard state: " + std::to_string(cut) + " shards cut of " +
                             std::to_string(n) + " samples");
    std::map<Shard, int64_t> done;
    int64_t done_samples = 0;
    const int64_t known = params_.streaming ? std::max(n, known_samples_) : n;
    CAIRN_RETURN_IF_ERROR(
        parse_done_shards(j.at("done"), epoch, n, cut, known, &done, &done_samples));
    // The snapshot fits: replace the state.
    todo_.clear();
    doing_.clear();
    attempts_.clear();
    steps_.clear();
    done_ = std::move(done);
    done_samples_ = done_samples;
    failed_ = j.value("failed", int64_t(0));
    handed_out_ = expired_ = 0;
    if (params_.streaming) {
      known_samples_ = n;
      stream_closed_ = j.at("closed").get<bool>();
      cut_ = 0;
      cut_stream_shards(false);
      while (cut_ < cut) todo_.push_back(shard_at(0, cut_++));  // the closed stream's last one
      todo_.erase(std::remove_if(todo_.begin(), todo_.end(),
                                 [&](const Shard& s) { return done_.count(s) > 0; }),
                  todo_.end());
      epoch_ = 0;
      if (known > n && !stream_closed_) {
        known_samples_ = known;
        cut_stream_shards(false);
      }
      return Status::Ok();
    }
    for (int64_t e = 0; e <= epoch; ++e) {
      epoch_ = e;
      for (int64_t idx : data::epoch_permutation(num_shards(), params_.seed, e)) {
        Shard s = shard_at(e, idx);
        if (!done_.count(s)) todo_.push_back(s);
      }
    }
    return Status::Ok();
  } catch (const std::exception& e) {
    return Status::Corrupt(std::string("shard state: ") + e.what());
  }
}

ShardStats ShardState::stats() const {
  ShardStats st;
  st.epoch = epoch_;
  st.todo = int64_t(todo_.size());
  st.doing = int64_t(doing_.size());
  st.done = int64_t(done_.size());
  st.failed = failed_;
  st.done_samples = done_samples_;
  st.handed_out = handed_out_;
  st.expired = expired_;
  st.finished = todo_.empty() && doing_.empty() &&
                (params_.streaming ? stream_closed_ : epoch_ + 1 >= params_.num_epochs);
  return st;
}

std::vector<Shard> ShardState::doing_of(const std::string& worker) const {
  std::vector<Shard> out;
  for (const auto& [s, lease] : doing_)
    if (lease.worker == worker) out.push_back(s);
  return out;
}

}  // namespace cairn::elastic
