// protobuf <-> struct conversions and status mapping for the master's RPCs.
#include "elastic/master/rpc_convert_impl.h"

namespace cairn::elastic::rpc {

void to_proto(const NodeInfo& in, v1::NodeSpec* out) {
  out->set_node_id(in.node_id);
  out->set_host(in.host);
  out->set_nproc(in.nproc);
  out->set_store_port(in.store_port);
  out->set_incarnation(in.incarnation);
}

NodeInfo from_proto(const v1::NodeSpec& in) {
  return {in.node_id(), in.host(), in.nproc(), in.store_port(), in.incarnation()};
}

void to_proto(const Round& in, v1::Round* out) {
  out->set_number(in.number);
  for (const auto& m : in.members) {
    v1::Member* p = out->add_members();
    p->set_node_id(m.node_id);
    p->set_host(m.host);
    p->set_nproc(m.nproc);
    p->set_node_rank(m.node_rank);
    p->set_rank_base(m.rank_base);
  }
  out->set_world_size(in.world_size);
  out->set_master_addr(in.master_addr);
  out->set_master_port(in.master_port);
  out->set_num_members(in.size());
  out->set_nproc_differs(in.nproc_differs);
}

void to_proto_only(const Round& in, const RoundMember* self, const std::string& nproc_differs,
                   v1::Round* out) {
  Round r;
  r.number = in.number;
  if (self) r.members.push_back(*self);
  r.world_size = in.world_size;
  r.master_addr = in.master_addr;
  r.master_port = in.master_port;
  r.num_members = in.size();
  r.nproc_differs = nproc_differs;
  to_proto(r, out);
}

Round from_proto(const v1::Round& in) {
  Round r;
  r.number = in.number();
  for (const auto& m : in.members())
    r.members.push_back({m.node_id(), m.host(), m.nproc(), m.node_rank(), m.rank_base()});
  r.world_size = in.world_size();
  r.master_addr = in.master_addr();
  r.master_port = in.master_port();
  r.num_members = in.num_members();
  r.nproc_differs = in.nproc_differs();
  return r;
}

void to_proto(const FailureReport& in, v1::ReportFailureRequest* out) {
  out->set_node_id(in.node_id);
  out->set_rank(in.rank);
  if (in.exit.signaled)
    out->set_signal(in.exit.code);
  else
    out->set_exit_code(in.exit.code);
  out->set_diagnosis(in.diagnosis);
}

FailureReport from_proto(const v1::ReportFailureRequest& in) {
  FailureReport f;
  f.node_id = in.node_id();
  f.rank = in.rank();
  f.exit = in.exit_case() == v1::ReportFailureRequest::kSignal ? ExitStatus::Signaled(in.signal())
                                                               : ExitStatus::Exited(in.exit_code());
  f.diagnosis = in.diagnosis();
  return f;
}

void to_proto(const RdzvStatus& in, int64_t rejected_calls, v1::GetStatusResponse* out) {
  v1::RdzvParams* p = out->mutable_params();
  p->set_min_nodes(in.params.min_nodes);
  p->set_max_nodes(in.params.max_nodes);
  p->set_node_unit(in.params.node_unit);
  p->set_wait_s(in.params.wait_s);
  p->set_heartbeat_timeout_s(in.params.heartbeat_timeout_s);
  to_proto(in.round, out->mutable_round());
  out->set_open(in.open);
  out->set_open_round(in.open_round);
  out->set_open_reason(in.open_reason);
  for (const auto& n : in.nodes) {
    v1::NodeStatus* s = out->add_nodes();
    to_proto(n.node, s->mutable_node());
    s->set_silent_s(n.silent_s);
    s->set_last_step(n.last_step);
    s->set_in_round(n.in_round);
    s->set_candidate(n.candidate);
  }
  v1::Counters* c = out->mutable_counters();
  c->set_nodes_joined(in.counters.nodes_joined);
  c->set_nodes_left(in.counters.nodes_left);
  c->set_nodes_dropped(in.counters.nodes_dropped);
  c->set_rounds_completed(in.counters.rounds_completed);
  c->set_restarts_requested(in.counters.restarts_requested);
  c->set_failures_reported(in.counters.failures_reported);
  c->set_rejected_calls(rejected_calls);
  for (const auto& f : in.recent_failures) to_proto(f, out->add_recent_failures());
  out->set_next_after(in.next_after);
}

MasterStatus from_proto(const v1::GetStatusResponse& in) {
  MasterStatus out;
  RdzvStatus& s = out.rdzv;
  s.params = {in.params().min_nodes(), in.params().max_nodes(), in.params().node_unit(),
              in.params().wait_s(), in.params().heartbeat_timeout_s()};
  s.round = from_proto(in.round());
  s.open = in.open();
  s.open_round = in.open_round();
  s.open_reason = in.open_reason();
  for (const auto& n : in.nodes())
    s.nodes.push_back(
        {from_proto(n.node()), n.silent_s(), n.last_step(), n.in_round(), n.candidate()});
  const v1::Counters& c = in.counters();
  s.counters = {c.nodes_joined(),     c.nodes_left(),         c.nodes_dropped(),
                c.rounds_completed(), c.restarts_requested(), c.failures_reported()};
  out.rejected_calls = c.rejected_calls();
  for (const auto& f : in.recent_failures()) s.recent_failures.push_back(from_proto(f));
  s.next_after = in.next_after();
  return out;
}

void to_proto(const ShardParams& in, v1::DatasetParams* out) {
  out->set_num_samples(in.num_samples);
  out->set_shard_size(in.shard_size);
  out->set_seed(in.seed);
  out->set_num_epochs(in.num_epochs);
  out->set_lease_s(in.lease_s);
  out->set_max_attempts(in.max_attempts);
  out->set_streaming(in.streaming);
}

ShardParams from_proto(const v1::DatasetParams& in) {
  ShardParams p;
  p.num_samples = in.num_samples();
  p.shard_size = in.shard_size();
  p.seed = in.seed();
  p.num_epochs = in.num_epochs();
  p.lease_s = in.lease_s();
  p.max_attempts = in.max_attempts();
  p.streaming = in.streaming();
  return p;
}

void to_proto(const Shard& in, v1::ShardRef* out) {
  out->set_epoch(in.epoch);
  out->set_index(in.index);
  out->set_start(in.start);
  out->set_end(in.end);
}

Shard from_proto(const v1::ShardRef& in) {
  Shard s;
  s.epoch = in.epoch();
  s.index = in.index();
  s.start = in.start();
  s.end = in.end();
  return s;
}

Status to_proto(const nlohmann::json& in, v1::ShardSnapshot* out) {
  try {
    out->set_shard_size(in.at("shard_size").get<int64_t>());
    out->set_seed(in.at("seed").get<uint64_t>());
    out->set_num_epochs(in.at("num_epochs").get<int64_t>());
    out->set_streaming(in.at("streaming").get<bool>());
    out->set_num_samples(in.at("num_samples").get<int64_t>());
    out->set_epoch(in.at("epoch").get<int64_t>());
    out->set_cut(in.at("cut").get<int64_t>());
    out->set_closed(in.at("closed").get<bool>());
    out->set_failed(in.at("failed").get<int64_t>());
    for (const auto& [epoch, list] : in.at("done").items()) {
      v1::EpochShards* e = out->add_done();
      e->set_epoch(std::stoll(epoch));
      for (const auto& v : list) e->add_index(v.get<int64_t>());
    }
  } catch (const std::exception& e) {
    return Status::Corrupt(std::string("shard snapshot: ") + e.what());
  }
  return Status::Ok();
}

nlohmann::json from_proto(const v1::ShardSnapshot& in) {
  nlohmann::json done = nlohmann::json::object();
  for (const auto& e : in.done())
    done[std::to_string(e.epoch())] = std::vector<int64_t>(e.index().begin(), e.index().end());
  return {{"version", 1},
          {"shard_size", in.shard_size()},
          {"seed", in.seed()},
          {"num_epochs", in.num_epochs()},
          {"streaming", in.streaming()},
          {"num_samples", in.num_samples()},
          {"epoch", in.epoch()},
          {"cut", in.cut()},
          {"closed", in.closed()},
          {"failed", in.failed()},
          {"done", done}};
}

grpc::Status to_grpc(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk:
      return grpc::Status::OK;
    case StatusCode::kInvalidArgument:
      return {grpc::StatusCode::INVALID_ARGUMENT, s.message()};
    case StatusCode::kFailedPrecondition:
      return {grpc::StatusCode::FAILED_PRECONDITION, s.message()};
    case StatusCode::kNotFound:
      return {grpc::StatusCode::NOT_FOUND, s.message()};
    default:
      return {grpc::StatusCode::INTERNAL, s.ToString()};
  }
}

Status from_grpc(const grpc::Status& s, const std::string& what, const std::string& address) {
  const std::string at = what + " at master " + address + ": ";
  switch (s.error_code()) {
    case grpc::StatusCode::OK:
      return Status::Ok();
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      return Status::InvalidArgument(
          at + "the master rejected the job token (UNAUTHENTICATED: " + s.error_message() +
          "); every node and the master need the same token");
    case grpc::StatusCode::INVALID_ARGUMENT:
      return Status::InvalidArgument(at + "request rejected: " + s.error_message());
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return Status::FailedPrecondition(at + s.error_message());
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return Status::Timeout(at + "no answer before the deadline (" + s.error_message() + ")");
    case grpc::StatusCode::UNAVAILABLE:
      return Status::PeerLost(at + "unavailable: " + s.error_message());
    default:
      return Status::Internal(at + "gRPC status " + std::to_string(int(s.error_code())) + ": " +
                              s.error_message());
  }
}

}  // namespace cairn::elastic::rpc
