// The elastic master's gRPC requests as the server decodes them: the bytes of each request
// message parsed as that message (what gRPC hands the handler), converted by rpc_convert.cpp and
// fed to what the handlers of master_server.cpp feed them to (the same checks first): the
// rendezvous state, the node-check coordinator and the shard service, with the ticker between
// calls. The answers go through the client's conversions, and every event the state emits is
// journaled and replayed into a second state (a restarted master), which must accept it and
// end in the same round.
//
// Input: calls, each [tag][length: 2 bytes, little-endian][message bytes]; tag % 16 picks the
// method (Join, Heartbeat, Leave, ReportFailure, GetStatus, CheckNode, CreateDataset, GetShards,
// ReleaseShards, GetShardSnapshot, RestoreShards, ExtendDataset; 12..15: the ticker alone) and
// tag / 16 the seconds that pass before it.
#include <google/protobuf/stubs/logging.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "cairn.pb.h"
#include "cairn/elastic/rdzv_codec.h"
#include "elastic/master/check_coordinator_impl.h"
#include "elastic/master/rpc_convert_impl.h"
#include "elastic/master/shard_service_impl.h"
#include "fuzz_check.h"

namespace {

using namespace cairn;
using namespace cairn::elastic;

enum Method {
  kJoin,
  kHeartbeat,
  kLeave,
  kReportFailure,
  kGetStatus,
  kCheckNode,
  kCreateDataset,
  kGetShards,
  kReleaseShards,
  kGetShardSnapshot,
  kRestoreShards,
  kExtendDataset,
};

RdzvParams Params() {
  RdzvParams p;
  p.min_nodes = 1;
  p.max_nodes = 3;
  p.wait_s = 2;
  p.heartbeat_timeout_s = 10;
  return p;
}

bool same_round(const Round& a, const Round& b) {
  if (a.number != b.number || a.world_size != b.world_size || a.master_addr != b.master_addr ||
      a.master_port != b.master_port || a.members.size() != b.members.size())
    return false;
  for (size_t i = 0; i < a.members.size(); ++i) {
    const RoundMember &x = a.members[i], &y = b.members[i];
    if (x.node_id != y.node_id || x.host != y.host || x.nproc != y.nproc ||
        x.node_rank != y.node_rank || x.rank_base != y.rank_base)
      return false;
  }
  return true;
}

// One master: what MasterServer::Impl holds, without the network, the journal file and the
// token check.
struct Master {
  RdzvState state{Params()};
  CheckCoordinator checks{true, NodeCheckParams{}};
  ShardService shards;
  RdzvState replayed{Params()};  // fed the journaled events, as a restarted master would be
  double now = 1000;

  // MasterServer::Impl::commit_locked: the new events, journaled (as JSON text) and replayed.
  void commit() {
    for (const RdzvEvent& e : state.take_events()) {
      const std::string line = event_to_json(e).dump();
      auto decoded = event_from_json(nlohmann::json::parse(line));
      FUZZ_CHECK(decoded.ok(), decoded.status().ToString() + ": " + line);
      const Status s = replayed.replay(*decoded, now);
      FUZZ_CHECK(s.ok(), "a journaled event does not replay: " + s.ToString() + ": " + line);
    }
    FUZZ_CHECK(same_round(state.round(), replayed.round()) && state.open() == replayed.open(),
               "the replayed state is in another round");
  }

  void tick() {
    state.tick(now);
    checks.tick(state, now);
    commit();
    shards.tick(now);
  }

  template <class Message>
  static bool parse(const std::string& bytes, Message* m) {
    return m->ParseFromString(bytes);
  }

  void call(int method, const std::string& bytes);
  template <class Body>
  void serve_shards(Body&& body) {
    try {  // as MasterServer::Impl::serve_shards: an exception is an INTERNAL answer
      body();
    } catch (const std::exception&) {
    }
  }
};

void Master::call(int method, const std::string& bytes) {
  switch (method) {
    case kJoin: {
      v1::JoinRequest req;
      if (!parse(bytes, &req)) return;
      auto r = state.join(rpc::from_proto(req.node()), req.last_round(), now);
      if (r.ok() && r->round) {
        v1::JoinResponse resp;
        rpc::to_proto(*r->round, resp.mutable_round());
        FUZZ_CHECK(same_round(rpc::from_proto(resp.round()), *r->round), "Round conversion");
      }
      break;
    }
    case kHeartbeat: {
      v1::HeartbeatRequest req;
      if (!parse(bytes, &req)) return;
      (void)state.heartbeat(req.node_id(), req.round(), req.last_step(), now);
      break;
    }
    case kLeave: {
      v1::LeaveRequest req;
      if (!parse(bytes, &req)) return;
      (void)state.leave(req.node_id(), now);
      break;
    }
    case kReportFailure: {
      v1::ReportFailureRequest req;
      if (!parse(bytes, &req)) return;
      if (req.node_id().empty() || req.exit_case() == v1::ReportFailureRequest::EXIT_NOT_SET ||
          req.rank() < -1)
        return;  // INVALID_ARGUMENT
      state.report_failure(rpc::from_proto(req));
      break;
    }
    case kGetStatus: {
      v1::GetStatusRequest req;
      if (!parse(bytes, &req)) return;
      v1::GetStatusResponse resp;
      const RdzvStatus status = state.status(now);
      rpc::to_proto(status, 3, &resp);
      const MasterStatus back = rpc::from_proto(resp);
      FUZZ_CHECK(back.rejected_calls == 3 && back.rdzv.nodes.size() == status.nodes.size() &&
                     same_round(back.rdzv.round, status.round) &&
                     back.rdzv.recent_failures.size() == status.recent_failures.size(),
                 "GetStatusResponse conversion");
      break;
    }
    case kCheckNode: {
      v1::CheckNodeRequest req;
      if (!parse(bytes, &req)) return;
      CheckQuery q;
      q.node_id = req.node_id();
      q.round = req.round();
      q.check_id = req.check_id();
      q.check_round = req.check_round();
      if (req.has_result()) {
        NodeCheckResult res;
        res.ok = req.result().ok();
        res.matmul_s = req.result().matmul_s();
        res.allreduce_s = req.result().allreduce_s();
        res.error = req.result().error().substr(0, kMaxDiagnosisLength);
        q.result = std::move(res);
      }
      (void)checks.poll(state, q, now);
      break;
    }
    case kCreateDataset: {
      v1::CreateDatasetRequest req;
      if (!parse(bytes, &req)) return;
      serve_shards([&] { (void)shards.create(req.dataset(), rpc::from_proto(req.params())); });
      return;
    }
    case kGetShards: {
      v1::GetShardsRequest req;
      if (!parse(bytes, &req)) return;
      serve_shards([&] {
        ShardRequest q;
        q.worker = req.worker();
        q.want = req.want();
        if (req.done_size() > int(ShardService::kMaxDone)) return;  // INVALID_ARGUMENT
        for (const auto& d : req.done()) q.done.push_back(rpc::from_proto(d));
        q.done_step = req.done_step() > 0 ? req.done_step() : -1;
        q.step = req.step();
        q.rank = req.rank();
        q.world = req.world();
        q.step_quota = req.step_quota();
        auto reply = shards.get(req.dataset(), q, now);
        if (!reply.ok()) return;
        FUZZ_CHECK(int64_t(reply->shards.size()) <= std::max<int64_t>(q.want, 0),
                   "more shards than asked for");
        v1::GetShardsResponse resp;
        for (const Shard& shard : reply->shards) {
          FUZZ_CHECK(shard.start < shard.end, "an empty shard handed out");
          rpc::to_proto(shard, resp.add_shards());
        }
      });
      return;
    }
    case kReleaseShards: {
      v1::ReleaseShardsRequest req;
      if (!parse(bytes, &req)) return;
      serve_shards([&] { (void)shards.release(req.dataset(), req.worker()); });
      return;
    }
    case kGetShardSnapshot: {
      v1::ShardSnapshotRequest req;
      if (!parse(bytes, &req)) return;
      serve_shards([&] {
        auto snapshot = shards.snapshot(req.dataset(), req.max_step());
        if (!snapshot.ok()) return;
        v1::ShardSnapshot resp;
        const Status s = rpc::to_proto(*snapshot, &resp);
        FUZZ_CHECK(s.ok(), "the master's own snapshot does not convert: " + s.ToString());
      });
      return;
    }
    case kRestoreShards: {
      v1::RestoreShardsRequest req;
      if (!parse(bytes, &req)) return;
      serve_shards([&] { (void)shards.restore(req.dataset(), rpc::from_proto(req.snapshot())); });
      return;
    }
    case kExtendDataset: {
      v1::ExtendDatasetRequest req;
      if (!parse(bytes, &req)) return;
      serve_shards([&] { (void)shards.extend(req.dataset(), req.num_samples(), req.finished()); });
      return;
    }
    default:
      tick();
      return;
  }
  commit();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Quiet: protobuf logs every string field that is not UTF-8, the master every decision.
  google::protobuf::SetLogHandler(nullptr);
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Master master;
  size_t at = 0;
  while (at + 3 <= size) {
    const int tag = data[at];
    const size_t length = std::min<size_t>(data[at + 1] | (data[at + 2] << 8), size - at - 3);
    const std::string bytes(reinterpret_cast<const char*>(data) + at + 3, length);
    at += 3 + length;
    master.now += tag / 16;
    master.call(tag % 16, bytes);
  }
  master.tick();
  return 0;
}
