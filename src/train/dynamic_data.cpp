// DynamicData: step-quota shards from the master for the trainer's micro-batches.
#include <torch/torch.h>

#include <chrono>
#include <thread>

#include "cairn/comm/group.h"
#include "cairn/elastic/shard_state.h"
#include "train/dynamic_data_impl.h"

namespace cairn::train {
namespace {

// Rank 0's string on every rank (two broadcasts: length, bytes).
std::string broadcast_string(const std::string& s, comm::Group* group) {
  if (!group || group->size() == 1) return s;
  auto n = torch::tensor({int64_t(s.size())}, torch::kLong);
  group->broadcast(n, 0);
  auto bytes = torch::zeros({n.item<int64_t>()}, torch::kUInt8);
  if (group->rank() == 0) std::memcpy(bytes.data_ptr(), s.data(), s.size());
  if (bytes.numel() > 0) group->broadcast(bytes, 0);
  return std::string(reinterpret_cast<const char*>(bytes.data_ptr()), size_t(bytes.numel()));
}

}  // namespace

Result<std::unique_ptr<DynamicData>> DynamicData::Open(const DynamicDataOptions& o) {
  if (o.client.address.empty())
    return Status::InvalidArgument(
        "data.sharding: dynamic takes its shards from the elastic master, and this worker knows "
        "none (CAIRN_MASTER_ADDR is not set): run it under `cairn run --rdzv-backend cairn`");
  std::unique_ptr<DynamicData> d(new DynamicData());
  d->o_ = o;
  d->quota_ = int(o.global_batch_size / o.micro_batch_size);
  d->params_.shard_size = o.micro_batch_size;
  d->params_.seed = o.seed;
  d->params_.lease_s = 600;
  d->params_.max_attempts = 1000;
  if (o.stream) {
    CAIRN_ASSIGN_OR_RETURN(d->params_.num_samples, o.stream->samples(o.seq_len));
    d->params_.num_epochs = 1;
    d->params_.streaming = true;
  } else {
    const int64_t usable = o.num_samples / o.micro_batch_size * o.micro_batch_size;
    if (usable < o.global_batch_size)
      return Status::InvalidArgument("data.sharding: dynamic: the train file holds " +
                                     std::to_string(o.num_samples) +
                                     " samples, fewer than one global batch");
    d->params_.num_samples = usable;
    // Enough epochs for max_steps, and one more for the steps trained again after rollbacks.
    d->params_.num_epochs = (o.max_steps * o.global_batch_size + usable - 1) / usable + 1;
  }
  elastic::ShardClientOptions co;
  co.client = o.client;
  co.dataset = o.dataset;
  co.worker = "rank-" + std::to_string(o.rank);
  co.params = d->params_;
  co.prefetch = 1;
  if (o.stream) co.wait_timeout_s = 0;  // next() waits itself, growing the stream meanwhile
  CAIRN_ASSIGN_OR_RETURN(d->client_, elastic::ShardClient::Open(co));
  return d;
}

Result<std::optional<elastic::Shard>> DynamicData::next(int64_t step) {
  elastic::StepQuota q;
  q.step = step;
  q.rank = o_.rank;
  q.world = o_.world;
  q.quota = quota_;
  if (!o_.stream) return client_->next_for_step(q);
  // A stream: no shard yet means the writer has not written enough, or the service has not
  // heard how far it got: tell it what the stream holds now (any rank may: the others may be
  // waiting in a collective for this one), and ask again.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3600);
  for (;;) {
    auto r = client_->next_for_step(q);
    if (r.ok() || r.status().code() != StatusCode::kTimeout) return r;
    if (std::chrono::steady_clock::now() > until)
      return Status::Timeout("the stream " + o_.stream->dir() + "/" + data::kStreamFile +
                             " gave no shard for step " + std::to_string(step) + " in an hour");
    CAIRN_RETURN_IF_ERROR(refresh_stream());
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

Status DynamicData::refresh_stream() {
  CAIRN_ASSIGN_OR_RETURN(bool closed, o_.stream->closed());
  CAIRN_ASSIGN_OR_RETURN(int64_t n, o_.stream->samples(o_.seq_len));
  if (told_closed_ || (n == told_samples_ && closed == told_closed_)) return Status::Ok();
  CAIRN_RETURN_IF_ERROR(client_->extend(n, closed).WithContext("growing the stream's dataset"));
  told_samples_ = n;
  told_closed_ = closed;
  return Status::Ok();
}

Status DynamicData::complete(const std::vector<elastic::Shard>& shards, int64_t step) {
  for (const auto& s : shards) client_->done(s, step);
  return client_->flush();
}

Result<nlohmann::json> DynamicData::snapshot(int64_t step, comm::Group* group) {
  std::string text;
  if (o_.rank == 0) {
    auto snap = client_->snapshot(step);
    // Every rank must take part in the broadcast; a failure travels as an empty string.
    text = snap.ok() ? snap->dump() : std::string();
    if (!snap.ok()) {
      broadcast_string(text, group);
      return snap.status().WithContext("shard service snapshot");
    }
  }
  text = broadcast_string(text, group);
  if (text.empty()) return Status::PeerLost("rank 0 could not take the shard service's snapshot");
  return nlohmann::json::parse(text);
}

Status DynamicData::restore(const nlohmann::json& snapshot, comm::Group* group) {
  Status s = Status::Ok();
  if (o_.rank == 0) {
    nlohmann::json snap = snapshot.is_null() ? elastic::ShardState(params_).snapshot() : snapshot;
    s = client_->restore(snap);
  }
  double ok = s.ok() ? 1.0 : 0.0;
  if (group && group->size() > 1) {
    auto t = torch::tensor({ok}, torch::kDouble);
    group->allreduce(t);
    ok = t.item<double>() == double(group->size()) ? 1.0 : 0.0;
  }
  if (!s.ok()) return s.WithContext("restoring the shard service");
  if (ok == 0) return Status::PeerLost("rank 0 could not restore the shard service");
  return Status::Ok();
}

}  // namespace cairn::train
