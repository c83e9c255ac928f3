// The master's shard service without gRPC. See shard_service_impl.h.
#include <spdlog/spdlog.h>

#include <climits>

#include "elastic/master/shard_service_impl.h"

namespace cairn::elastic {

Result<ShardState*> ShardService::find(const std::string& dataset) const {
  auto it = datasets_.find(dataset);
  if (it == datasets_.end())
    return Status::NotFound("dataset " + dataset +
                            " is not known to the master (create it first; a restarted master "
                            "forgets datasets: the trainers restore them from their checkpoint)");
  return it->second.get();
}

Result<bool> ShardService::create(const std::string& dataset, const ShardParams& p) {
  if (dataset.empty() || dataset.size() > kMaxDatasetName)
    return Status::InvalidArgument("dataset name: 1 to " + std::to_string(kMaxDatasetName) +
                                   " characters");
  if (Status v = validate_shard_params(p); !v.ok()) return v.WithContext("dataset " + dataset);
  auto it = datasets_.find(dataset);
  if (it != datasets_.end()) {
    const ShardParams& q = it->second->params();
    auto describe = [](const ShardParams& s) {
      return std::to_string(s.num_samples) + " samples, shards of " + std::to_string(s.shard_size) +
             ", seed " + std::to_string(s.seed) + (s.streaming ? ", streaming" : "");
    };
    // A stream's size when each worker joins differs: it grows.
    if ((!p.streaming && q.num_samples != p.num_samples) || q.shard_size != p.shard_size ||
        q.seed != p.seed || q.streaming != p.streaming)
      return Status::FailedPrecondition("dataset " + dataset + " exists with other parameters (" +
                                        describe(q) + "; asked: " + describe(p) + ")");
    // A resumed job may train longer: more epochs.
    it->second->raise_epochs(p.num_epochs);
    return false;
  }
  if (datasets_.size() >= kMaxDatasets)
    return Status::FailedPrecondition("the master serves at most " + std::to_string(kMaxDatasets) +
                                      " datasets");
  datasets_.emplace(dataset, std::make_unique<ShardState>(p));
  spdlog::info("master: dataset {}: {} samples in shards of {}, {} epoch(s){}", dataset,
               p.num_samples, p.shard_size, p.num_epochs, p.streaming ? ", streaming" : "");
  return true;
}

Result<ShardReply> ShardService::get(const std::string& dataset, const ShardRequest& req,
                                     double now) {
  CAIRN_ASSIGN_OR_RETURN(ShardState * s, find(dataset));
  if (req.worker.empty() || req.worker.size() > kMaxWorkerName)
    return Status::InvalidArgument("worker name: 1 to " + std::to_string(kMaxWorkerName) +
                                   " characters");
  if (req.want < 0 || req.want > kMaxWant || req.done.size() > kMaxDone)
    return Status::InvalidArgument("want: 0 to " + std::to_string(kMaxWant) +
                                   " shards; done: at most " + std::to_string(kMaxDone));
  if (req.step < 0 ||
      (req.step > 0 && (req.world < 1 || req.world > INT_MAX || req.rank < 0 ||
                        req.rank >= req.world || req.step_quota < 1 || req.step_quota > INT_MAX)))
    return Status::InvalidArgument("step quota: step >= 1, 0 <= rank < world, step_quota >= 1");
  for (const Shard& d : req.done) CAIRN_RETURN_IF_ERROR(s->complete(req.worker, d, req.done_step));
  s->renew(req.worker, now);
  ShardReply reply;
  for (int64_t i = 0; i < req.want; ++i) {
    bool full = false;
    AcquireResult r = req.step > 0
                          ? s->acquire_for_step(req.worker, req.step, int(req.rank), int(req.world),
                                                int(req.step_quota), now, &full)
                          : s->acquire(req.worker, now);
    if (full) reply.step_full = true;
    if (!r.shard) {
      reply.exhausted = r.exhausted;
      reply.reason = r.reason;
      break;
    }
    reply.shards.push_back(*r.shard);
  }
  reply.stats = s->stats();
  return reply;
}

Status ShardService::release(const std::string& dataset, const std::string& worker) {
  CAIRN_ASSIGN_OR_RETURN(ShardState * s, find(dataset));
  s->release_worker(worker);
  return Status::Ok();
}

Result<nlohmann::json> ShardService::snapshot(const std::string& dataset, int64_t max_step) const {
  CAIRN_ASSIGN_OR_RETURN(ShardState * s, find(dataset));
  return s->snapshot(max_step > 0 ? max_step : INT64_MAX);
}

Status ShardService::restore(const std::string& dataset, const nlohmann::json& snapshot) {
  CAIRN_ASSIGN_OR_RETURN(ShardState * s, find(dataset));
  CAIRN_RETURN_IF_ERROR(s->restore(snapshot));
  spdlog::info("master: dataset {} restored: {} shards done", dataset, s->stats().done);
  return Status::Ok();
}

Status ShardService::extend(const std::string& dataset, int64_t num_samples, bool finished) {
  CAIRN_ASSIGN_OR_RETURN(ShardState * s, find(dataset));
  return finished ? s->finish(num_samples) : s->extend(num_samples);
}

void ShardService::tick(double now) {
  for (auto& [name, s] : datasets_) s->tick(now);
}

}  // namespace cairn::elastic
