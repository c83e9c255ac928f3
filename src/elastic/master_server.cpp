// The master's gRPC service: job-token check, one mutex around the rendezvous state, journal
// before reply, a ticker thread for heartbeat timeouts and round waits.
#include "cairn/elastic/master_server.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "cairn.grpc.pb.h"
#include "cairn/core/fs.h"
#include "cairn/elastic/journal.h"
#include "cairn/elastic/master_client.h"
#include "cairn/elastic/rdzv_codec.h"
#include "rpc_convert_impl.h"
#include "rpc_log_impl.h"

namespace cairn::elastic {
namespace {

double steady_now() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// Compares without an early exit, so the time taken does not reveal how much of a guess matched.
bool same_token(grpc::string_ref given, const std::string& token) {
  if (token.empty()) return false;
  unsigned char diff = given.size() == token.size() ? 0 : 1;
  for (size_t i = 0; i < given.size(); ++i)
    diff |= static_cast<unsigned char>(given.data()[i] ^ token[i % token.size()]);
  return diff == 0;
}

std::string describe(const RdzvEvent& event) {
  struct {
    std::string operator()(const NodeJoined& e) const {
      return "node " + e.node.node_id + " (" + e.node.host + ", " + std::to_string(e.node.nproc) +
             " workers) joined";
    }
    std::string operator()(const NodeRemoved& e) const {
      return "node " + e.node_id +
             (e.reason == RemoveReason::kLeft      ? " left"
              : e.reason == RemoveReason::kDropped ? " dropped: heartbeat timeout"
                                                   : " removed: excluded");
    }
    std::string operator()(const RoundOpened& e) const {
      return "round " + std::to_string(e.number) + " opened: " + e.reason;
    }
    std::string operator()(const RoundCompleted& e) const {
      std::string ids;
      for (const auto& m : e.round.members) ids += (ids.empty() ? "" : " ") + m.node_id;
      return "round " + std::to_string(e.round.number) +
             " completed: " + std::to_string(e.round.members.size()) + " nodes [" + ids +
             "], world size " + std::to_string(e.round.world_size) + ", store " +
             e.round.master_addr + ":" + std::to_string(e.round.master_port);
    }
    std::string operator()(const FailureReported& e) const {
      return "failure on node " + e.report.node_id + " rank " + std::to_string(e.report.rank) +
             ": " + e.report.exit.ToString() + (e.report.diagnosis.empty() ? "" : ": ") +
             e.report.diagnosis;
    }
    std::string operator()(const NodeExcluded& e) const {
      return "node " + e.node_id + " excluded: " + e.reason;
    }
  } visitor;
  return std::visit(visitor, event);
}

}  // namespace

struct MasterServer::Impl final : public v1::Master::Service {
  explicit Impl(const MasterServerOptions& o) : options(o), state(o.rdzv) {}

  // --- the service -----------------------------------------------------------------------
  grpc::Status Join(grpc::ServerContext* ctx, const v1::JoinRequest* req,
                    v1::JoinResponse* resp) override {
    return serve(ctx, "Join", [&]() -> grpc::Status {
      auto r = state.join(rpc::from_proto(req->node()), req->last_round(), steady_now());
      if (!r.ok()) return rpc::to_grpc(r.status());
      if (r->round) {
        rpc::to_proto(*r->round, resp->mutable_round());
      } else {
        v1::Waiting* w = resp->mutable_waiting();
        w->set_open_round(r->open_round);
        w->set_candidates(r->candidates);
        w->set_reason(r->reason);
      }
      return grpc::Status::OK;
    });
  }

  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                         v1::HeartbeatResponse* resp) override {
    return serve(ctx, "Heartbeat", [&] {
      HeartbeatResult r =
          state.heartbeat(req->node_id(), req->round(), req->last_step(), steady_now());
      resp->set_rejoin(r.rejoin);
      resp->set_latest_round(r.latest_round);
      resp->set_reason(r.reason);
      return grpc::Status::OK;
    });
  }

  grpc::Status Leave(grpc::ServerContext* ctx, const v1::LeaveRequest* req,
                     v1::LeaveResponse* resp) override {
    return serve(ctx, "Leave", [&] {
      resp->set_was_known(state.leave(req->node_id(), steady_now()));
      return grpc::Status::OK;
    });
  }

  grpc::Status ReportFailure(grpc::ServerContext* ctx, const v1::ReportFailureRequest* req,
                             v1::ReportFailureResponse*) override {
    return serve(ctx, "ReportFailure", [&] {
      // A report names its node and how the worker ended; anything less is not journaled.
      if (req->node_id().empty())
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "ReportFailure: node_id is empty");
      if (req->exit_case() == v1::ReportFailureRequest::EXIT_NOT_SET)
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "ReportFailure: neither exit_code nor signal is set");
      if (req->rank() < -1)
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "ReportFailure: rank " + std::to_string(req->rank()) +
                                " (a global rank, or -1 for the whole node)");
      state.report_failure(rpc::from_proto(*req));
      return grpc::Status::OK;
    });
  }

  grpc::Status GetStatus(grpc::ServerContext* ctx, const v1::GetStatusRequest*,
                         v1::GetStatusResponse* resp) override {
    return serve(ctx, "GetStatus", [&] {
      rpc::to_proto(state.status(steady_now()), rejected.load(), resp);
      return grpc::Status::OK;
    });
  }

  grpc::Status CheckNode(grpc::ServerContext* ctx, const v1::CheckNodeRequest* req,
                         v1::CheckNodeResponse* resp) override {
    return serve(ctx, "CheckNode", [&] {
      CheckReply r = check_node_locked(*req, steady_now());
      switch (r.action) {
        case CheckAction::kRun:
          resp->set_action(v1::CheckNodeResponse::RUN);
          break;
        case CheckAction::kWait:
          resp->set_action(v1::CheckNodeResponse::WAIT);
          break;
        case CheckAction::kProceed:
          resp->set_action(v1::CheckNodeResponse::PROCEED);
          break;
        case CheckAction::kExcluded:
          resp->set_action(v1::CheckNodeResponse::EXCLUDED);
          break;
        case CheckAction::kRejoin:
          resp->set_action(v1::CheckNodeResponse::REJOIN);
          break;
      }
      resp->set_reason(r.reason);
      if (r.action == CheckAction::kRun) {
        resp->set_check_id(r.assignment.check_id);
        resp->set_check_round(r.assignment.check_round);
        resp->set_group_rank(r.assignment.group_rank);
        resp->set_timeout_s(r.assignment.timeout_s);
        for (const auto& m : r.assignment.group) {
          v1::CheckPeer* p = resp->add_group();
          p->set_node_id(m.node_id);
          p->set_host(m.host);
          p->set_store_port(m.store_port);
        }
      }
      return grpc::Status::OK;
    });
  }

  // --- the shard service ---------------------------------------------------------------------
  grpc::Status CreateDataset(grpc::ServerContext* ctx, const v1::CreateDatasetRequest* req,
                             v1::CreateDatasetResponse* resp) override {
    return serve_shards(ctx, "CreateDataset", [&]() -> grpc::Status {
      if (req->dataset().empty() || req->dataset().size() > kMaxDatasetName)
        return {grpc::StatusCode::INVALID_ARGUMENT,
                "dataset name: 1 to " + std::to_string(kMaxDatasetName) + " characters"};
      ShardParams p = rpc::from_proto(req->params());
      if (Status v = validate_shard_params(p); !v.ok())
        return rpc::to_grpc(v.WithContext("dataset " + req->dataset()));
      auto it = datasets.find(req->dataset());
      if (it != datasets.end()) {
        const ShardParams& q = it->second->params();
        // A stream's size when each worker joins differs: it grows.
        if ((!p.streaming && q.num_samples != p.num_samples) || q.shard_size != p.shard_size ||
            q.seed != p.seed || q.streaming != p.streaming)
          return {grpc::StatusCode::FAILED_PRECONDITION,
                  "dataset " + req->dataset() + " exists with other parameters (" +
                      std::to_string(q.num_samples) + " samples, shards of " +
                      std::to_string(q.shard_size) + ", seed " + std::to_string(q.seed) +
                      (q.streaming ? ", streaming" : "") +
                      "; asked: " + std::to_string(p.num_samples) + " samples, shards of " +
                      std::to_string(p.shard_size) + ", seed " + std::to_string(p.seed) +
                      (p.streaming ? ", streaming" : "") + ")"};
        // A resumed job may train longer: more epochs.
        it->second->raise_epochs(p.num_epochs);
        resp->set_created(false);
        return grpc::Status::OK;
      }
      if (datasets.size() >= kMaxDatasets)
        return {grpc::StatusCode::RESOURCE_EXHAUSTED,
                "the master serves at most " + std::to_string(kMaxDatasets) + " datasets"};
      datasets.emplace(req->dataset(), std::make_unique<ShardState>(p));
      spdlog::info("master: dataset {}: {} samples in shards of {}, {} epoch(s){}", req->dataset(),
                   p.num_samples, p.shard_size, p.num_epochs, p.streaming ? ", streaming" : "");
      resp->set_created(true);
      return grpc::Status::OK;
    });
  }

  grpc::Status GetShards(grpc::ServerContext* ctx, const v1::GetShardsRequest* req,
                         v1::GetShardsResponse* resp) override {
    return serve_shards(ctx, "GetShards", [&]() -> grpc::Status {
      ShardState* s = dataset_locked(req->dataset());
      if (!s) return unknown_dataset(req->dataset());
      if (req->worker().empty() || req->worker().size() > kMaxNodeIdLength + 16)
        return {grpc::StatusCode::INVALID_ARGUMENT, "worker name: 1 to 144 characters"};
      if (req->want() < 0 || req->want() > 1024 || req->done_size() > 4096)
        return {grpc::StatusCode::INVALID_ARGUMENT, "want: 0 to 1024 shards; done: at most 4096"};
      if (req->step() < 0 ||
          (req->step() > 0 && (req->world() < 1 || req->rank() < 0 || req->rank() >= req->world() ||
                               req->step_quota() < 1)))
        return {grpc::StatusCode::INVALID_ARGUMENT,
                "step quota: step >= 1, 0 <= rank < world, step_quota >= 1"};
      const double now = steady_now();
      const int64_t done_step = req->done_step() > 0 ? req->done_step() : -1;
      for (const auto& d : req->done())
        if (Status c = s->complete(req->worker(), rpc::from_proto(d), done_step); !c.ok())
          return rpc::to_grpc(c);
      s->renew(req->worker(), now);
      for (int i = 0; i < req->want(); ++i) {
        bool full = false;
        AcquireResult r = req->step() > 0
                              ? s->acquire_for_step(req->worker(), req->step(), req->rank(),
                                                    req->world(), req->step_quota(), now, &full)
                              : s->acquire(req->worker(), now);
        if (full) resp->set_step_full(true);
        if (!r.shard) {
          resp->set_exhausted(r.exhausted);
          resp->set_reason(r.reason);
          break;
        }
        rpc::to_proto(*r.shard, resp->add_shards());
      }
      ShardStats st = s->stats();
      v1::ShardStats* o = resp->mutable_stats();
      o->set_epoch(st.epoch);
      o->set_todo(st.todo);
      o->set_doing(st.doing);
      o->set_done(st.done);
      o->set_failed(st.failed);
      o->set_done_samples(st.done_samples);
      o->set_finished(st.finished);
      return grpc::Status::OK;
    });
  }

  grpc::Status ReleaseShards(grpc::ServerContext* ctx, const v1::ReleaseShardsRequest* req,
                             v1::ReleaseShardsResponse*) override {
    return serve_shards(ctx, "ReleaseShards", [&]() -> grpc::Status {
      ShardState* s = dataset_locked(req->dataset());
      if (!s) return unknown_dataset(req->dataset());
      s->release_worker(req->worker());
      return grpc::Status::OK;
    });
  }

  grpc::Status GetShardSnapshot(grpc::ServerContext* ctx, const v1::ShardSnapshotRequest* req,
                                v1::ShardSnapshot* resp) override {
    return serve_shards(ctx, "GetShardSnapshot", [&]() -> grpc::Status {
      ShardState* s = dataset_locked(req->dataset());
      if (!s) return unknown_dataset(req->dataset());
      return rpc::to_grpc(
          rpc::to_proto(s->snapshot(req->max_step() > 0 ? req->max_step() : INT64_MAX), resp));
    });
  }

  grpc::Status RestoreShards(grpc::ServerContext* ctx, const v1::RestoreShardsRequest* req,
                             v1::RestoreShardsResponse*) override {
    return serve_shards(ctx, "RestoreShards", [&]() -> grpc::Status {
      ShardState* s = dataset_locked(req->dataset());
      if (!s) return unknown_dataset(req->dataset());
      Status r = s->restore(rpc::from_proto(req->snapshot()));
      if (r.ok())
        spdlog::info("master: dataset {} restored: {} shards done", req->dataset(),
                     s->stats().done);
      return rpc::to_grpc(r);
    });
  }

  grpc::Status ExtendDataset(grpc::ServerContext* ctx, const v1::ExtendDatasetRequest* req,
                             v1::ExtendDatasetResponse*) override {
    return serve_shards(ctx, "ExtendDataset", [&]() -> grpc::Status {
      ShardState* s = dataset_locked(req->dataset());
      if (!s) return unknown_dataset(req->dataset());
      return rpc::to_grpc(req->finished() ? s->finish(req->num_samples())
                                          : s->extend(req->num_samples()));
    });
  }

  // REQUIRES: shard_mu held.
  ShardState* dataset_locked(const std::string& name) {
    auto it = datasets.find(name);
    return it == datasets.end() ? nullptr : it->second.get();
  }
  static grpc::Status unknown_dataset(const std::string& name) {
    return {grpc::StatusCode::NOT_FOUND,
            "dataset " + name +
                " is not known to the master (create it first; a restarted "
                "master forgets datasets: the trainers restore them from their checkpoint)"};
  }

  // Like serve() for the shard service: its own lock and nothing to journal.
  template <class Body>
  grpc::Status serve_shards(grpc::ServerContext* ctx, const char* method, Body&& body) {
    if (!token_ok(ctx, method))
      return {grpc::StatusCode::UNAUTHENTICATED,
              std::string("missing or wrong job token (metadata ") + kJobTokenMetadataKey + ")"};
    std::lock_guard<std::mutex> lock(shard_mu);
    try {
      return body();
    } catch (const std::exception& e) {
      spdlog::error("master: {} failed: {}", method, e.what());
      return {grpc::StatusCode::INTERNAL, std::string(method) + " failed: " + e.what()};
    }
  }

  bool token_ok(grpc::ServerContext* ctx, const char* method) {
    const auto& md = ctx->client_metadata();
    auto it = md.find(kJobTokenMetadataKey);
    if (it != md.end() && same_token(it->second, options.job_token)) return true;
    rejected.fetch_add(1);
    spdlog::warn("master: rejected {} from {}: {}", method, ctx->peer(),
                 it == md.end() ? "no job token" : "wrong job token");
    return false;
  }

  // --- the node check ----------------------------------------------------------------------
  // REQUIRES: mu held.
  CheckReply check_node_locked(const v1::CheckNodeRequest& req, double now) {
    CheckReply r;
    if (!options.network_check) {
      r.action = CheckAction::kProceed;
      r.reason = "no node check (the master runs without --network-check)";
      return r;
    }
    drop_stale_check_locked(now);
    // The verdict of this round's check stands after it changed the rendezvous (exclusions).
    if (check && check_for_round == req.round() && check->done())
      return check->poll(req.node_id(), std::nullopt, now);
    const Round& round = state.round();
    if (state.open() || req.round() != round.number || !round.find(req.node_id())) {
      r.action = CheckAction::kRejoin;
      r.reason = "round " + std::to_string(req.round()) + " is not the job's current round";
      return r;
    }
    if (check_for_round != round.number) start_check_locked(now);
    if (!check) {
      r.action = CheckAction::kProceed;
      r.reason = "every node of round " + std::to_string(round.number) + " passed a check before";
      return r;
    }
    std::optional<std::pair<int, NodeCheckResult>> report;
    if (req.has_result() && req.check_id() == check->check_id()) {
      NodeCheckResult res;
      res.ok = req.result().ok();
      res.matmul_s = req.result().matmul_s();
      res.allreduce_s = req.result().allreduce_s();
      res.error = req.result().error().substr(0, kMaxDiagnosisLength);
      report = std::make_pair(req.check_round(), std::move(res));
    }
    r = check->poll(req.node_id(), report, now);
    apply_verdict_locked(now);
    return r;
  }

  // A check whose round is over (a member was dropped or left meanwhile) tells nothing: forget
  // it, so that it neither times out nor excludes anyone. REQUIRES: mu held.
  void drop_stale_check_locked(double now) {
    if (!check || check->done()) return;
    if (!state.open() && state.round().number == check_for_round) return;
    spdlog::info("master: node check {} abandoned: round {} is over", check->check_id(),
                 check_for_round);
    check.reset();
    state.hold_growth(false, now);
  }

  // REQUIRES: mu held.
  void start_check_locked(double now) {
    const Round& round = state.round();
    check_for_round = round.number;
    check.reset();
    verdict_applied = false;
    std::vector<CheckMember> members;
    bool all_checked = true;
    for (const auto& m : round.members) {
      const NodeInfo* info = state.node(m.node_id);
      if (!info) continue;
      auto it = checked.find(m.node_id);
      all_checked = all_checked && it != checked.end() && it->second == info->incarnation;
      members.push_back({m.node_id, m.host, info->store_port});
    }
    if (all_checked) {
      state.hold_growth(false, now);
      return;
    }
    // Nodes that come meanwhile wait for the check to end instead of ending the round under it.
    state.hold_growth(true, now);
    const std::string id = std::to_string(round.number) + "." + std::to_string(++check_serial) +
                           "." + std::to_string(uint32_t(core::unix_time() * 1000));
    check.emplace(std::move(members), id, options.node_check, now);
    spdlog::info("master: node check {} of round {} begins ({} nodes)", id, round.number,
                 round.members.size());
  }

  // Once the check has a verdict: remembers who passed, excludes who did not. REQUIRES: mu held.
  void apply_verdict_locked(double now) {
    if (!check || !check->done() || verdict_applied) return;
    verdict_applied = true;
    const NodeCheckVerdict& v = check->verdict();
    spdlog::info("master: {}", v.summary);
    for (const auto& id : v.stragglers)
      spdlog::warn("master: node {} is a straggler (check time {:.3f} s){}", id, v.elapsed_s.at(id),
                   v.excluded.count(id) ? "; excluded" : "");
    for (const auto& [id, t] : v.elapsed_s)
      if (const NodeInfo* info = state.node(id); info && !v.excluded.count(id))
        checked[id] = info->incarnation;
    for (const auto& [id, why] : v.excluded) state.exclude(id, why, now);
    state.hold_growth(false, now);
  }

  // --- plumbing ----------------------------------------------------------------------------
  // Checks the token, runs `body` under the lock, journals what it changed before answering.
  template <class Body>
  grpc::Status serve(grpc::ServerContext* ctx, const char* method, Body&& body) {
    if (!token_ok(ctx, method))
      return {grpc::StatusCode::UNAUTHENTICATED,
              std::string("missing or wrong job token (metadata ") + kJobTokenMetadataKey + ")"};
    std::lock_guard<std::mutex> lock(mu);
    if (!journal_error.ok()) return unavailable();
    grpc::Status s = body();
    Status c = commit_locked();
    return c.ok() ? s : unavailable();
  }

  grpc::Status unavailable() const {
    return {grpc::StatusCode::UNAVAILABLE, "the master stopped serving after its journal failed (" +
                                               journal_error.message() + "); restart it"};
  }

  // Journals the state's new events. REQUIRES: mu held.
  Status commit_locked() {
    std::vector<RdzvEvent> events = state.take_events();
    if (events.empty()) return Status::Ok();
    std::vector<nlohmann::json> records;
    const double at = core::unix_time();
    for (const auto& e : events) {
      spdlog::info("master: {}", describe(e));
      nlohmann::json j = event_to_json(e);
      j["at"] = at;
      records.push_back(std::move(j));
    }
    if (!journal) return Status::Ok();
    Status s = journal->append(records);
    if (!s.ok()) {
      journal_error = s;
      spdlog::error("master: {}; refusing every call from now on", s.ToString());
    }
    return s;
  }

  void tick_loop() {
    std::unique_lock<std::mutex> lock(mu);
    while (!stopping) {
      cv.wait_for(lock, std::chrono::duration<double>(options.tick_interval_s));
      if (stopping || !journal_error.ok()) continue;
      const double now = steady_now();
      state.tick(now);
      drop_stale_check_locked(now);
      if (check) {
        check->tick(now);
        apply_verdict_locked(now);
      }
      (void)commit_locked();
      // The shard service has its own lock; rendezvous calls need not wait for it.
      lock.unlock();
      {
        std::lock_guard<std::mutex> shards(shard_mu);
        for (auto& [name, s] : datasets) s->tick(now);
      }
      lock.lock();
    }
  }

  MasterServerOptions options;
  mutable std::mutex mu;
  RdzvState state;  // guarded by mu
  // The node check of round check_for_round (none when its nodes were checked before).
  std::optional<NodeCheck> check;           // guarded by mu
  int64_t check_for_round = 0;              // guarded by mu
  bool verdict_applied = false;             // guarded by mu
  int64_t check_serial = 0;                 // guarded by mu
  std::map<std::string, uint64_t> checked;  // node id -> incarnation that passed; guarded by mu
  std::mutex shard_mu;
  std::map<std::string, std::unique_ptr<ShardState>> datasets;  // guarded by shard_mu
  static constexpr size_t kMaxDatasets = 64;
  static constexpr size_t kMaxDatasetName = 1024;
  std::unique_ptr<Journal> journal;  // guarded by mu
  Status journal_error;              // guarded by mu; set once
  bool stopping = false;             // guarded by mu
  std::condition_variable cv;
  std::atomic<int64_t> rejected{0};
  int64_t replayed = 0;
  int port = 0;
  std::string host;
  std::unique_ptr<grpc::Server> server;
  std::thread ticker;
};

namespace {

Status validate(const MasterServerOptions& o) {
  if (o.job_token.empty())
    return Status::InvalidArgument("the job token is empty; every call must carry one");
  const size_t colon = o.listen_address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == o.listen_address.size())
    return Status::InvalidArgument("listen address '" + o.listen_address +
                                   "' is not host:port (port 0 picks a free one)");
  if (!(o.node_check.timeout_s > 0))
    return Status::InvalidArgument("node check timeout " + std::to_string(o.node_check.timeout_s) +
                                   " s: must be > 0");
  if (!(o.node_check.straggler_ratio > 1))
    return Status::InvalidArgument("straggler ratio " +
                                   std::to_string(o.node_check.straggler_ratio) + ": must be > 1");
  if (o.tls_cert_path.empty() != o.tls_key_path.empty())
    return Status::InvalidArgument(
        "TLS needs both a certificate and a private key file (got only the " +
        std::string(o.tls_cert_path.empty() ? "key" : "certificate") + ")");
  if (!(o.tick_interval_s > 0) || !(o.shutdown_deadline_s >= 0) || o.max_message_bytes < 1024)
    return Status::InvalidArgument(
        "tick_interval_s must be > 0, shutdown_deadline_s >= 0, max_message_bytes >= 1024");
  return validate_rdzv_params(o.rdzv).WithContext("rendezvous parameters");
}

}  // namespace

Result<std::unique_ptr<MasterServer>> MasterServer::Start(const MasterServerOptions& options) {
  CAIRN_RETURN_IF_ERROR(validate(options));
  rpc::route_grpc_logs();
  auto impl = std::make_unique<Impl>(options);
  impl->host = options.listen_address.substr(0, options.listen_address.rfind(':'));
  // A master that cannot start leaves no journal it created behind.
  std::error_code ec;
  const bool journal_existed =
      options.journal_path.empty() || std::filesystem::exists(options.journal_path, ec);
  if (!options.journal_path.empty()) {
    const double now = steady_now();
    CAIRN_ASSIGN_OR_RETURN(
        impl->journal,
        Journal::Open(options.journal_path, [&](const nlohmann::json& record) -> Status {
          CAIRN_ASSIGN_OR_RETURN(RdzvEvent event, event_from_json(record));
          return impl->state.replay(event, now);
        }));
    impl->replayed = impl->journal->replayed();
    if (impl->replayed > 0)
      spdlog::info("master: replayed {} journal records from {}: round {}, {} nodes known{}",
                   impl->replayed, options.journal_path, impl->state.round().number,
                   impl->state.status(now).nodes.size(),
                   impl->state.open() ? ", next round open" : "");
  }

  std::shared_ptr<grpc::ServerCredentials> creds;
  if (!options.tls_cert_path.empty()) {
    auto cert = core::read_file(options.tls_cert_path);
    if (!cert.ok()) return cert.status().WithContext("TLS certificate");
    auto key = core::read_file(options.tls_key_path);
    if (!key.ok()) return key.status().WithContext("TLS private key");
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    creds = grpc::SslServerCredentials(ssl);
  } else {
    creds = grpc::InsecureServerCredentials();
  }
  grpc::ServerBuilder builder;
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);  // a second master must fail to bind
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.AddListeningPort(options.listen_address, creds, &impl->port);
  builder.RegisterService(impl.get());
  impl->server = builder.BuildAndStart();
  if (!impl->server || impl->port == 0) {
    if (!journal_existed) {
      impl->journal.reset();
      std::filesystem::remove(options.journal_path, ec);
    }
    return Status::FailedPrecondition("cannot listen on " + options.listen_address +
                                      " (port in use, or not an address of this machine?)");
  }
  impl->ticker = std::thread([p = impl.get()] { p->tick_loop(); });
  spdlog::info("master: serving on {}:{}{}", impl->host, impl->port,
               options.tls_cert_path.empty() ? " (plaintext)" : " (TLS)");
  return std::unique_ptr<MasterServer>(new MasterServer(std::move(impl)));
}

MasterServer::MasterServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

MasterServer::~MasterServer() {
  impl_->server->Shutdown(std::chrono::system_clock::now() +
                          std::chrono::duration_cast<std::chrono::system_clock::duration>(
                              std::chrono::duration<double>(impl_->options.shutdown_deadline_s)));
  impl_->server->Wait();
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  impl_->ticker.join();
}

int MasterServer::port() const { return impl_->port; }

std::string MasterServer::address() const {
  return impl_->host + ":" + std::to_string(impl_->port);
}

RdzvStatus MasterServer::status() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->state.status(steady_now());
}

int64_t MasterServer::rejected_calls() const { return impl_->rejected.load(); }

int64_t MasterServer::replayed_records() const { return impl_->replayed; }

}  // namespace cairn::elastic
