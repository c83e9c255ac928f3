// ShardClient: prefetching shards from the master's shard service.
#include <chrono>
#include <thread>

#include "cairn/elastic/shard_client.h"
#include "elastic/deadline_impl.h"

namespace cairn::elastic {

Result<std::unique_ptr<ShardClient>> ShardClient::Open(const ShardClientOptions& options) {
  if (options.dataset.empty() || options.worker.empty())
    return Status::InvalidArgument("the shard client needs a dataset and a worker name");
  if (options.prefetch < 1 || options.prefetch > 1024)
    return Status::InvalidArgument("prefetch " + std::to_string(options.prefetch) +
                                   ": must be 1..1024");
  CAIRN_RETURN_IF_ERROR(validate_shard_params(options.params));
  std::unique_ptr<ShardClient> c(new ShardClient(options));
  CAIRN_ASSIGN_OR_RETURN(c->client_, MasterClient::Open(options.client));
  CAIRN_ASSIGN_OR_RETURN(bool created, c->client_->create_dataset(options.dataset, options.params));
  (void)created;
  return c;
}

Result<std::optional<Shard>> ShardClient::next() {
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(o_.wait_timeout_s));
  while (queue_.empty()) {
    if (exhausted_ && done_.empty()) return std::optional<Shard>();
    CAIRN_ASSIGN_OR_RETURN(ShardBatch b, client_->get_shards(o_.dataset, o_.worker, done_,
                                                             o_.prefetch, -1, done_step_));
    ++requests_;
    done_.clear();
    stats_ = b.stats;
    for (const Shard& s : b.shards) queue_.push_back(s);
    exhausted_ = b.exhausted && b.shards.empty();
    if (!queue_.empty() || exhausted_) break;
    if (seconds_until(deadline) <= 0)
      return Status::Timeout("no shard of dataset " + o_.dataset + " within " +
                             std::to_string(o_.wait_timeout_s) + " s: " + b.reason);
    std::this_thread::sleep_for(std::chrono::duration<double>(o_.poll_interval_s));
  }
  if (queue_.empty()) return std::optional<Shard>();
  Shard s = queue_.front();
  queue_.pop_front();
  return std::optional<Shard>(s);
}

Result<std::optional<Shard>> ShardClient::next_for_step(const StepQuota& quota) {
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(o_.wait_timeout_s));
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(
        ShardBatch b, client_->get_shards(o_.dataset, o_.worker, done_, 1, -1, done_step_, &quota));
    ++requests_;
    done_.clear();
    stats_ = b.stats;
    if (!b.shards.empty()) return std::optional<Shard>(b.shards.front());
    if (b.step_full || b.exhausted) return std::optional<Shard>();
    // Others hold the rest of the dataset (their leases may run out): wait.
    if (seconds_until(deadline) <= 0)
      return Status::Timeout("no shard of dataset " + o_.dataset + " for step " +
                             std::to_string(quota.step) + " within " +
                             std::to_string(o_.wait_timeout_s) + " s: " + b.reason);
    std::this_thread::sleep_for(std::chrono::duration<double>(o_.poll_interval_s));
  }
}

Status ShardClient::flush() {
  if (done_.empty()) return Status::Ok();
  CAIRN_ASSIGN_OR_RETURN(ShardBatch b,
                         client_->get_shards(o_.dataset, o_.worker, done_, 0, -1, done_step_));
  ++requests_;
  done_.clear();
  stats_ = b.stats;
  return Status::Ok();
}

Result<nlohmann::json> ShardClient::snapshot(int64_t max_step) {
  CAIRN_RETURN_IF_ERROR(flush());
  return client_->shard_snapshot(o_.dataset, -1, max_step);
}

Status ShardClient::restore(const nlohmann::json& snapshot) {
  queue_.clear();
  done_.clear();
  exhausted_ = false;
  return client_->restore_shards(o_.dataset, snapshot);
}

Status ShardClient::release() {
  queue_.clear();
  exhausted_ = false;
  return client_->release_shards(o_.dataset, o_.worker);
}

}  // namespace cairn::elastic
