// The master's gRPC service: job-token check, one mutex around the rendezvous state, journal
// before reply, a ticker thread for heartbeat timeouts and round waits.
#include "cairn/elastic/master_server.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <thread>
#include <unordered_map>

#include "cairn.grpc.pb.h"
#include "cairn/core/fs.h"
#include "cairn/core/json_lines.h"
#include "cairn/core/mutex.h"
#include "cairn/core/net.h"
#include "cairn/core/secret.h"
#include "cairn/elastic/journal.h"
#include "cairn/elastic/master_client.h"
#include "cairn/elastic/rdzv_codec.h"
#include "elastic/master/check_coordinator_impl.h"
#include "elastic/master/rate_limit_impl.h"
#include "elastic/master/rpc_convert_impl.h"
#include "elastic/master/rpc_log_impl.h"
#include "elastic/master/shard_service_impl.h"

namespace cairn::elastic {
namespace {

double steady_now() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
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
      // The first members by name; a round of thousands is one line of reasonable length.
      constexpr size_t kNamed = 16;
      std::string ids;
      for (size_t i = 0; i < std::min(kNamed, e.round.members.size()); ++i)
        ids += (ids.empty() ? "" : " ") + e.round.members[i].node_id;
      if (e.round.members.size() > kNamed)
        ids += " and " + std::to_string(e.round.members.size() - kNamed) + " more";
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

struct MasterServer::Impl final : public v1::Master::CallbackService {
  explicit Impl(const MasterServerOptions& o)
      : options(o),
        state(o.rdzv),
        checks(o.network_check, o.node_check),
        call_budget({o.max_calls_per_s, 2.0 * o.max_calls_per_s, 4096}) {}

  // --- the service -----------------------------------------------------------------------
  grpc::ServerUnaryReactor* Join(grpc::CallbackServerContext* ctx, const v1::JoinRequest* req,
                                 v1::JoinResponse* resp) override {
    return serve(ctx, "Join", req->node().node_id(), [&]() CAIRN_REQUIRES(mu) -> Reply {
      auto r = state.join(rpc::from_proto(req->node()), req->last_round(), steady_now());
      if (!r.ok()) return rpc::to_grpc(r.status());
      if (r->round && req->only_self()) {
        rpc::to_proto_only(*r->round, state.member(req->node().node_id()), state.nproc_differs(),
                           resp->mutable_round());
      } else if (r->round) {
        rpc::to_proto(*r->round, resp->mutable_round());
      } else {
        v1::Waiting* w = resp->mutable_waiting();
        w->set_open_round(r->open_round);
        w->set_candidates(r->candidates);
        w->set_reason(r->reason);
      }
      return Reply{grpc::Status::OK, /*hands_round=*/r->round != nullptr};
    });
  }

  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx,
                                      const v1::HeartbeatRequest* req,
                                      v1::HeartbeatResponse* resp) override {
    return serve(ctx, "Heartbeat", req->node_id(), [&]() CAIRN_REQUIRES(mu) {
      HeartbeatResult r =
          state.heartbeat(req->node_id(), req->round(), req->last_step(), steady_now());
      resp->set_rejoin(r.rejoin);
      resp->set_latest_round(r.latest_round);
      resp->set_reason(r.reason);
      return grpc::Status::OK;
    });
  }

  grpc::ServerUnaryReactor* Leave(grpc::CallbackServerContext* ctx, const v1::LeaveRequest* req,
                                  v1::LeaveResponse* resp) override {
    return serve(ctx, "Leave", "", [&]() CAIRN_REQUIRES(mu) {
      resp->set_was_known(state.leave(req->node_id(), steady_now()));
      return grpc::Status::OK;
    });
  }

  grpc::ServerUnaryReactor* ReportFailure(grpc::CallbackServerContext* ctx,
                                          const v1::ReportFailureRequest* req,
                                          v1::ReportFailureResponse*) override {
    return serve(ctx, "ReportFailure", "", [&]() CAIRN_REQUIRES(mu) {
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

  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* ctx,
                                      const v1::GetStatusRequest* req,
                                      v1::GetStatusResponse* resp) override {
    return serve(ctx, "GetStatus", "", [&]() CAIRN_REQUIRES(mu) {
      if (req->page_size() < 0 || req->page_size() > kMaxStatusPage)
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "GetStatus: page_size " + std::to_string(req->page_size()) +
                                " (0 for the default, at most " + std::to_string(kMaxStatusPage) +
                                ")");
      const size_t page = req->page_size() > 0 ? size_t(req->page_size()) : kStatusPage;
      rpc::to_proto(state.status(steady_now(), req->after(), page), rejected.load(), resp);
      return grpc::Status::OK;
    });
  }

  grpc::ServerUnaryReactor* CheckNode(grpc::CallbackServerContext* ctx,
                                      const v1::CheckNodeRequest* req,
                                      v1::CheckNodeResponse* resp) override {
    return serve(ctx, "CheckNode", "", [&]() CAIRN_REQUIRES(mu) {
      CheckQuery q;
      q.node_id = req->node_id();
      q.round = req->round();
      q.check_id = req->check_id();
      q.check_round = req->check_round();
      if (req->has_result()) {
        NodeCheckResult res;
        res.ok = req->result().ok();
        res.matmul_s = req->result().matmul_s();
        res.allreduce_s = req->result().allreduce_s();
        res.error = req->result().error().substr(0, kMaxDiagnosisLength);
        q.result = std::move(res);
      }
      CheckReply r = checks.poll(state, q, steady_now());
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

  // --- the shard service (ShardService; this only converts) -----------------------------
  grpc::ServerUnaryReactor* CreateDataset(grpc::CallbackServerContext* ctx,
                                          const v1::CreateDatasetRequest* req,
                                          v1::CreateDatasetResponse* resp) override {
    return serve_shards(ctx, "CreateDataset", [&]() CAIRN_REQUIRES(shard_mu) -> grpc::Status {
      auto created = shards.create(req->dataset(), rpc::from_proto(req->params()));
      if (!created.ok()) return rpc::to_grpc(created.status());
      resp->set_created(*created);
      return grpc::Status::OK;
    });
  }

  grpc::ServerUnaryReactor* GetShards(grpc::CallbackServerContext* ctx,
                                      const v1::GetShardsRequest* req,
                                      v1::GetShardsResponse* resp) override {
    return serve_shards(ctx, "GetShards", [&]() CAIRN_REQUIRES(shard_mu) -> grpc::Status {
      ShardRequest q;
      q.worker = req->worker();
      q.want = req->want();
      if (req->done_size() > int(ShardService::kMaxDone))
        return rpc::to_grpc(Status::InvalidArgument(
            "done: at most " + std::to_string(ShardService::kMaxDone) + " shards"));
      for (const auto& d : req->done()) q.done.push_back(rpc::from_proto(d));
      q.done_step = req->done_step() > 0 ? req->done_step() : -1;
      q.step = req->step();
      q.rank = req->rank();
      q.world = req->world();
      q.step_quota = req->step_quota();
      auto reply = shards.get(req->dataset(), q, steady_now());
      if (!reply.ok()) return rpc::to_grpc(reply.status());
      for (const Shard& shard : reply->shards) rpc::to_proto(shard, resp->add_shards());
      if (reply->step_full) resp->set_step_full(true);
      resp->set_exhausted(reply->exhausted);
      resp->set_reason(reply->reason);
      const ShardStats& st = reply->stats;
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

  grpc::ServerUnaryReactor* ReleaseShards(grpc::CallbackServerContext* ctx,
                                          const v1::ReleaseShardsRequest* req,
                                          v1::ReleaseShardsResponse*) override {
    return serve_shards(ctx, "ReleaseShards", [&]() CAIRN_REQUIRES(shard_mu) -> grpc::Status {
      return rpc::to_grpc(shards.release(req->dataset(), req->worker()));
    });
  }

  grpc::ServerUnaryReactor* GetShardSnapshot(grpc::CallbackServerContext* ctx,
                                             const v1::ShardSnapshotRequest* req,
                                             v1::ShardSnapshot* resp) override {
    return serve_shards(ctx, "GetShardSnapshot", [&]() CAIRN_REQUIRES(shard_mu) -> grpc::Status {
      auto snapshot = shards.snapshot(req->dataset(), req->max_step());
      if (!snapshot.ok()) return rpc::to_grpc(snapshot.status());
      return rpc::to_grpc(rpc::to_proto(*snapshot, resp));
    });
  }

  grpc::ServerUnaryReactor* RestoreShards(grpc::CallbackServerContext* ctx,
                                          const v1::RestoreShardsRequest* req,
                                          v1::RestoreShardsResponse*) override {
    return serve_shards(ctx, "RestoreShards", [&]() CAIRN_REQUIRES(shard_mu) -> grpc::Status {
      return rpc::to_grpc(shards.restore(req->dataset(), rpc::from_proto(req->snapshot())));
    });
  }

  grpc::ServerUnaryReactor* ExtendDataset(grpc::CallbackServerContext* ctx,
                                          const v1::ExtendDatasetRequest* req,
                                          v1::ExtendDatasetResponse*) override {
    return serve_shards(ctx, "ExtendDataset", [&]() CAIRN_REQUIRES(shard_mu) -> grpc::Status {
      return rpc::to_grpc(shards.extend(req->dataset(), req->num_samples(), req->finished()));
    });
  }

  // Like serve() for the shard service: its own lock and nothing to journal.
  template <class Body>
  grpc::ServerUnaryReactor* serve_shards(grpc::CallbackServerContext* ctx, const char* method,
                                         Body&& body) {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    grpc::Status s = admit(ctx, method);
    if (s.ok()) {
      core::MutexLock lock(shard_mu);
      try {
        s = body();
      } catch (const std::exception& e) {
        spdlog::error("master: {} failed: {}", method, e.what());
        s = {grpc::StatusCode::INTERNAL, std::string(method) + " failed: " + e.what()};
      }
    }
    reactor->Finish(s);
    return reactor;
  }

  // The token check and the caller's call budget. OK to serve; UNAUTHENTICATED for a missing or
  // wrong token (logged at most once per 10 s per address, with the count since, so that a
  // flood of bad calls cannot flood the log); RESOURCE_EXHAUSTED with a retry hint
  // (kRetryAfterMetadataKey, milliseconds) for an address over its rate.
  grpc::Status admit(grpc::ServerContextBase* ctx, const char* method) {
    const auto& md = ctx->client_metadata();
    auto it = md.find(kJobTokenMetadataKey);
    const bool token_ok =
        it != md.end() && core::same_secret(std::string_view(it->second.data(), it->second.size()),
                                            options.job_token);
    const std::string peer = peer_host(ctx->peer());
    const double now = steady_now();
    if (!token_ok) {
      rejected.fetch_add(1);
      int64_t quiet = 0;
      bool log = false;
      {
        core::MutexLock lock(limits_mu);
        log = rejected_log.allow(peer, now);
        int64_t& n = rejected_since_log[peer];
        if (log) {
          quiet = n;
          rejected_since_log.erase(peer);
        } else if (rejected_since_log.size() <= 4096) {
          ++n;
        }
      }
      if (log)
        spdlog::warn("master: rejected {} from {}: {}{}", method, ctx->peer(),
                     it == md.end() ? "no job token" : "wrong job token",
                     quiet ? " (and " + std::to_string(quiet) + " calls since the last message)"
                           : std::string());
      return {grpc::StatusCode::UNAUTHENTICATED,
              std::string("missing or wrong job token (metadata ") + kJobTokenMetadataKey + ")"};
    }
    double retry_s = 0;
    bool allowed = false;
    {
      core::MutexLock lock(limits_mu);
      allowed = call_budget.allow(peer, now, &retry_s);
    }
    if (!allowed) {
      throttled.fetch_add(1);
      const int retry_ms = std::max(1, int(retry_s * 1000));
      ctx->AddTrailingMetadata(kRetryAfterMetadataKey, std::to_string(retry_ms));
      return {grpc::StatusCode::RESOURCE_EXHAUSTED,
              "rate limit: more than " + std::to_string(options.max_calls_per_s) +
                  " calls per second from " + peer + "; retry after " + std::to_string(retry_ms) +
                  " ms"};
    }
    return grpc::Status::OK;
  }

  // --- plumbing ----------------------------------------------------------------------------
  // Replays the journal at `path` into the state; before the server starts.
  Status open_journal(const std::string& path) CAIRN_EXCLUDES(mu) {
    core::MutexLock lock(mu);
    const double now = steady_now();
    CAIRN_ASSIGN_OR_RETURN(
        journal,
        Journal::Open(path, [&](const nlohmann::json& record) CAIRN_REQUIRES(mu) -> Status {
          CAIRN_ASSIGN_OR_RETURN(RdzvEvent event, event_from_json(record));
          return state.replay(event, now);
        }));
    replayed = journal->replayed();
    commits = std::make_unique<GroupCommit>(journal.get());
    if (replayed > 0)
      spdlog::info("master: replayed {} journal records from {}: round {}, {} nodes known{}",
                   replayed, path, state.round().number, state.status(now).nodes.size(),
                   state.open() ? ", next round open" : "");
    return Status::Ok();
  }

  void close_journal() CAIRN_EXCLUDES(mu) {
    core::MutexLock lock(mu);
    commits.reset();
    journal.reset();
  }

  // What a call's body answers: its status, and whether the reply hands out a round.
  struct Reply {
    Reply(grpc::Status s, bool h = false) : status(std::move(s)), hands_round(h) {}  // NOLINT
    grpc::Status status;
    bool hands_round;
  };

  // Checks the token, runs `body` under the lock and queues what it changed for the journal;
  // answers once its own records are on disk and, when it hands out a round, that round's
  // record too (a group commit: concurrent calls share one write and fsync, none waits for the
  // disk while holding the lock). A reply that changed nothing and hands out no round (a
  // heartbeat acknowledged, "still waiting") does not wait: should the master crash before
  // records it reflects are written, the restarted master's answers only make a node join
  // again, which it does after any restart of the master.
  //
  // Served on gRPC's callback threads without blocking one: the reply is finished here, or by
  // the journal's writer once the records it waits for are written.
  //
  // `node_id` names the node calling, when the call is one (Join, Heartbeat): refused because
  // the master is busy, the call still shows the node alive, so waiting on a busy master does
  // not count against it.
  template <class Body>
  grpc::ServerUnaryReactor* serve(grpc::CallbackServerContext* ctx, const char* method,
                                  const std::string& node_id, Body&& body) {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    if (grpc::Status a = admit(ctx, method); !a.ok()) {
      if (a.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED && !node_id.empty()) {
        core::MutexLock lock(mu);
        state.touch(node_id, steady_now());
      }
      reactor->Finish(a);
      return reactor;
    }
    grpc::Status s;
    uint64_t ticket = 0;
    bool to_log = false;
    {
      core::MutexLock lock(mu);
      if (Status e = commits->error(); !e.ok()) {
        reactor->Finish(unavailable(e));
        return reactor;
      }
      Reply reply = body();
      s = std::move(reply.status);
      ticket = queue_locked();
      if (reply.hands_round) ticket = std::max(ticket, round_ticket);
      to_log = !log_pending.empty();
    }
    if (to_log) flush_log();
    commits->when_durable(
        ticket, [reactor, s](const Status& c) { reactor->Finish(c.ok() ? s : unavailable(c)); });
    return reactor;
  }

  static grpc::Status unavailable(const Status& journal_error) {
    return {grpc::StatusCode::UNAVAILABLE, "the master stopped serving after its journal failed (" +
                                               journal_error.message() + "); restart it"};
  }

  // Queues the state's new events for the journal; returns the ticket to wait for before
  // answering (0, nothing to wait for, when there were none).
  uint64_t queue_locked() CAIRN_REQUIRES(mu) {
    std::vector<RdzvEvent> events = state.take_events();
    if (events.empty()) return 0;
    bool completes = false;
    std::vector<nlohmann::json> records;
    const double at = core::unix_time();
    for (const auto& e : events) {
      nlohmann::json j = event_to_json(e);
      j["at"] = at;
      log_pending.push_back({describe(e), j});
      records.push_back(std::move(j));
      completes = completes || std::holds_alternative<RoundCompleted>(e);
    }
    const uint64_t ticket = commits->enqueue(std::move(records));
    if (completes) round_ticket = ticket;
    return ticket;
  }

  // Writes the log lines and events.jsonl lines queued so far, in the order they were queued,
  // without holding `mu`: a slow log or run directory does not hold up the rendezvous.
  void flush_log() CAIRN_EXCLUDES(mu, log_mu) {
    core::MutexLock out(log_mu);
    std::vector<LogLine> lines;
    {
      core::MutexLock lock(mu);
      lines.swap(log_pending);
    }
    for (const LogLine& l : lines) {
      spdlog::info("master: {}", l.text);
      if (!event_log) continue;
      nlohmann::json fields = l.record;
      fields.erase("type");
      fields.erase("at");
      fields["time"] = l.record["at"];
      event_log->write("master_" + l.record.value("type", std::string("unknown")), fields);
    }
  }

  void tick_loop() {
    core::MutexLock lock(mu);
    while (!stopping) {
      const double due = steady_now() + options.tick_interval_s;
      cv.wait_for(mu, std::chrono::duration<double>(options.tick_interval_s));
      if (stopping || !commits->error().ok()) continue;
      const double now = steady_now();
      // A tick later than one more interval means the master could not run (no CPU, its lock
      // held): nodes could not be heard meanwhile either, and that time is not their silence.
      if (now - due > options.tick_interval_s) {
        state.add_stall(now - due);
        spdlog::warn(
            "master: stalled for {:.2f} s (its ticker ran late); heartbeat timeouts do "
            "not count that time",
            now - due);
      }
      state.tick(now);
      checks.tick(state, now);
      const uint64_t ticket = queue_locked();
      const bool to_log = !log_pending.empty();
      // The journal write and the shard service (its own lock): rendezvous calls need not wait.
      mu.unlock();
      if (to_log) flush_log();
      (void)commits->wait(ticket);
      {
        core::MutexLock shard_lock(shard_mu);
        shards.tick(now);
      }
      mu.lock();
    }
  }

  MasterServerOptions options;
  mutable core::Mutex mu;
  RdzvState state CAIRN_GUARDED_BY(mu);
  CheckCoordinator checks CAIRN_GUARDED_BY(mu);
  core::Mutex shard_mu;
  ShardService shards CAIRN_GUARDED_BY(shard_mu);
  std::unique_ptr<Journal> journal CAIRN_GUARDED_BY(mu);
  // Set before the server and the ticker start (over `journal`, or writing nothing without one);
  // destroyed before it.
  std::unique_ptr<GroupCommit> commits;
  uint64_t round_ticket CAIRN_GUARDED_BY(mu) = 0;  // covers the latest RoundCompleted record
  // The state's events for the log and events.jsonl, queued under `mu` in the state's order;
  // flush_log() writes them. `log_mu` is taken before `mu`.
  struct LogLine {
    std::string text;       // for the log
    nlohmann::json record;  // the journal record: type, at and the event's fields
  };
  std::vector<LogLine> log_pending CAIRN_GUARDED_BY(mu);
  core::Mutex log_mu;
  // options.events_path, when given; set before the server and the ticker start.
  std::unique_ptr<core::EventLog> event_log;
  bool stopping CAIRN_GUARDED_BY(mu) = false;
  core::CondVar cv;
  std::atomic<int64_t> rejected{0};
  std::atomic<int64_t> throttled{0};
  core::Mutex limits_mu;
  RateLimiter call_budget CAIRN_GUARDED_BY(limits_mu);
  // One log line per address per 10 s for rejected tokens; the calls in between are counted.
  RateLimiter rejected_log CAIRN_GUARDED_BY(limits_mu){{0.1, 1, 4096}};
  std::unordered_map<std::string, int64_t> rejected_since_log CAIRN_GUARDED_BY(limits_mu);
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
  if (!o.tls_client_ca_path.empty() && o.tls_cert_path.empty())
    return Status::InvalidArgument(
        "client certificates (mutual TLS) need the master to serve TLS: give its certificate and "
        "key too");
  if (o.tls_cert_path.empty() && !o.insecure &&
      !core::is_loopback_host(core::host_of(o.listen_address)))
    return Status::InvalidArgument(
        "serving plaintext on " + o.listen_address +
        " lets job tokens cross the network in the clear: give a TLS certificate and key "
        "(--tls-cert, --tls-key), listen on loopback, or pass --insecure to accept that");
  if (!(o.tick_interval_s > 0) || !(o.shutdown_deadline_s >= 0) || o.max_message_bytes < 1024)
    return Status::InvalidArgument(
        "tick_interval_s must be > 0, shutdown_deadline_s >= 0, max_message_bytes >= 1024");
  if (!(o.max_calls_per_s >= 1) || o.max_streams_per_connection < 1 ||
      !(o.handshake_timeout_s > 0) || !(o.max_connection_idle_s > 0))
    return Status::InvalidArgument(
        "limits: max_calls_per_s >= 1, max_streams_per_connection >= 1, "
        "handshake_timeout_s > 0, max_connection_idle_s > 0");
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
  if (!options.journal_path.empty())
    CAIRN_RETURN_IF_ERROR(impl->open_journal(options.journal_path));
  else
    impl->commits = std::make_unique<GroupCommit>(nullptr);

  if (!options.events_path.empty()) {
    impl->event_log = std::make_unique<core::EventLog>(options.events_path);
    impl->event_log->write("master_start", {{"min_nodes", options.rdzv.min_nodes},
                                            {"max_nodes", options.rdzv.max_nodes},
                                            {"node_unit", options.rdzv.node_unit},
                                            {"journal", options.journal_path}});
  }
  std::shared_ptr<grpc::ServerCredentials> creds;
  if (!options.tls_cert_path.empty()) {
    auto cert = core::read_file(options.tls_cert_path);
    if (!cert.ok()) return cert.status().WithContext("TLS certificate");
    auto key = core::read_file(options.tls_key_path);
    if (!key.ok()) return key.status().WithContext("TLS private key");
    grpc::SslServerCredentialsOptions ssl(
        options.tls_client_ca_path.empty()
            ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
            : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    if (!options.tls_client_ca_path.empty()) {
      auto roots = core::read_file(options.tls_client_ca_path);
      if (!roots.ok()) return roots.status().WithContext("TLS client CA certificates");
      ssl.pem_root_certs = std::move(roots).value();
    }
    creds = grpc::SslServerCredentials(ssl);
  } else {
    if (!core::is_loopback_host(impl->host))
      spdlog::warn(
          "master: serving plaintext on {} (--insecure): job tokens cross the network "
          "unencrypted",
          options.listen_address);
    creds = grpc::InsecureServerCredentials();
  }
  grpc::ServerBuilder builder;
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);  // a second master must fail to bind
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  // Limits that keep one client from starving the others: concurrent calls on one connection,
  // a connection's time to finish its handshake (one that sends nothing or garbage is closed),
  // and connections idle for long. Calls are served with the callback API: no thread per call,
  // so a burst of thousands of calls queues instead of being refused for want of threads.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_streams_per_connection);
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                             int(options.handshake_timeout_s * 1000));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                             int(options.max_connection_idle_s * 1000));
  builder.AddListeningPort(options.listen_address, creds, &impl->port);
  builder.RegisterService(impl.get());
  impl->server = builder.BuildAndStart();
  if (!impl->server || impl->port == 0) {
    if (!journal_existed) {
      impl->close_journal();
      std::filesystem::remove(options.journal_path, ec);
    }
    return Status::FailedPrecondition("cannot listen on " + options.listen_address +
                                      " (port in use, or not an address of this machine?)");
  }
  impl->ticker = std::thread([p = impl.get()] { p->tick_loop(); });
  spdlog::info("master: serving on {}:{}{}", impl->host, impl->port,
               options.tls_cert_path.empty()        ? " (plaintext)"
               : options.tls_client_ca_path.empty() ? " (TLS)"
                                                    : " (TLS, client certificates required)");
  return std::unique_ptr<MasterServer>(new MasterServer(std::move(impl)));
}

MasterServer::MasterServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

MasterServer::~MasterServer() {
  impl_->server->Shutdown(std::chrono::system_clock::now() +
                          std::chrono::duration_cast<std::chrono::system_clock::duration>(
                              std::chrono::duration<double>(impl_->options.shutdown_deadline_s)));
  impl_->server->Wait();
  {
    core::MutexLock lock(impl_->mu);
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
  core::MutexLock lock(impl_->mu);
  return impl_->state.status(steady_now());
}

int64_t MasterServer::rejected_calls() const { return impl_->rejected.load(); }
int64_t MasterServer::throttled_calls() const { return impl_->throttled.load(); }

int64_t MasterServer::replayed_records() const { return impl_->replayed; }

}  // namespace cairn::elastic
