// The rendezvous state machine: decisions in join/heartbeat/leave/tick, every durable change
// expressed as an RdzvEvent and applied through apply(), which replay() shares.
#include "cairn/elastic/rdzv_state.h"

#include <algorithm>
#include <type_traits>

namespace cairn::elastic {
namespace {

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

bool has_control_chars(const std::string& s) {
  return std::any_of(s.begin(), s.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

Status check_text(const std::string& what, const std::string& value, size_t max_length) {
  if (value.empty()) return Status::InvalidArgument(what + " is empty");
  if (value.size() > max_length)
    return Status::InvalidArgument(what + " has " + std::to_string(value.size()) +
                                   " characters; at most " + std::to_string(max_length) +
                                   " are allowed");
  if (has_control_chars(value))
    return Status::InvalidArgument(what + " '" + value + "' contains control characters");
  return Status::Ok();
}

}  // namespace

bool failure_counts_against_node(const std::string& diagnosis) {
  for (const char* kind : {"peer_lost", "master_lost", "killed", "user_error"})
    if (diagnosis.rfind(kind, 0) == 0) return false;
  return true;
}

Status validate_rdzv_params(const RdzvParams& p) {
  if (p.max_node_failures < 0)
    return Status::InvalidArgument("max_node_failures " + std::to_string(p.max_node_failures) +
                                   ": must be >= 0");
  if (p.min_nodes < 1)
    return Status::InvalidArgument("min_nodes " + std::to_string(p.min_nodes) +
                                   ": must be at least 1");
  if (p.max_nodes < p.min_nodes)
    return Status::InvalidArgument("max_nodes " + std::to_string(p.max_nodes) +
                                   ": must be at least min_nodes (" + std::to_string(p.min_nodes) +
                                   ")");
  if (p.node_unit < 1)
    return Status::InvalidArgument("node_unit " + std::to_string(p.node_unit) +
                                   ": must be at least 1");
  if (p.max_nodes / p.node_unit * p.node_unit < p.min_nodes)
    return Status::InvalidArgument(
        "node_unit " + std::to_string(p.node_unit) + ": no multiple of it lies between min_nodes " +
        std::to_string(p.min_nodes) + " and max_nodes " + std::to_string(p.max_nodes));
  if (!(p.wait_s >= 0))
    return Status::InvalidArgument("wait_s " + std::to_string(p.wait_s) + ": must be >= 0");
  if (!(p.heartbeat_timeout_s > 0))
    return Status::InvalidArgument("heartbeat_timeout_s " + std::to_string(p.heartbeat_timeout_s) +
                                   ": must be > 0");
  return Status::Ok();
}

Status validate_node_info(const NodeInfo& n) {
  CAIRN_RETURN_IF_ERROR(check_text("node id", n.node_id, kMaxNodeIdLength));
  CAIRN_RETURN_IF_ERROR(check_text("host of node " + n.node_id, n.host, kMaxHostLength));
  if (n.nproc < 1 || n.nproc > 1024)
    return Status::InvalidArgument("nproc " + std::to_string(n.nproc) + " of node " + n.node_id +
                                   ": must be in 1..1024");
  if (n.store_port < 1 || n.store_port > 65535)
    return Status::InvalidArgument("store_port " + std::to_string(n.store_port) + " of node " +
                                   n.node_id + ": must be in 1..65535");
  return Status::Ok();
}

const RoundMember* RdzvState::member(const std::string& node_id) const {
  auto it = member_index_.find(node_id);
  return it == member_index_.end() ? nullptr : &round_.members[it->second];
}

const RoundMember* Round::find(const std::string& node_id) const {
  for (const auto& m : members)
    if (m.node_id == node_id) return &m;
  return nullptr;
}

RdzvState::RdzvState(RdzvParams params) : params_(params) {}

size_t RdzvState::max_known_nodes() const {
  return size_t(std::max(2 * params_.max_nodes, params_.max_nodes + 64));
}

int RdzvState::usable(int count) const {
  return std::min(count, params_.max_nodes) / params_.node_unit * params_.node_unit;
}

void RdzvState::emit(RdzvEvent event, double now) {
  apply(event, now);
  events_.push_back(std::move(event));
}

std::vector<RdzvEvent> RdzvState::take_events() { return std::exchange(events_, {}); }

void RdzvState::apply(const RdzvEvent& event, double now) {
  std::visit(
      Overloaded{
          [&](const NodeJoined& e) {
            auto [it, inserted] = nodes_.try_emplace(e.node.node_id);
            if (inserted) ++counters_.nodes_joined;
            if (!it->second.candidate) {
              ++candidates_;
              if (!inserted && is_member(e.node.node_id)) --members_away_;
            }
            it->second.info = e.node;
            seen(it->second, now);
            it->second.candidate = true;
          },
          [&](const NodeRemoved& e) {
            if (auto it = nodes_.find(e.node_id); it != nodes_.end()) {
              if (it->second.candidate)
                --candidates_;
              else if (is_member(e.node_id))
                --members_away_;
              nodes_.erase(it);
            }
            ++(e.reason == RemoveReason::kLeft ? counters_.nodes_left : counters_.nodes_dropped);
          },
          [&](const RoundOpened& e) {
            open_ = true;
            open_since_ = now;
            open_reason_ = e.reason;
            min_since_.reset();
            if (e.restart) ++counters_.restarts_requested;
          },
          [&](const RoundCompleted& e) {
            round_ = e.round;
            shared_round_ = std::make_shared<const Round>(round_);
            open_ = false;
            open_reason_.clear();
            min_since_.reset();
            member_index_.clear();
            nproc_differs_.clear();
            members_away_ = 0;
            for (size_t i = 0; i < round_.members.size(); ++i) {
              const RoundMember& m = round_.members[i];
              member_index_[m.node_id] = i;
              const RoundMember& first = round_.members[0];
              if (nproc_differs_.empty() && m.nproc != first.nproc)
                nproc_differs_ = "node " + m.node_id + " runs " + std::to_string(m.nproc) +
                                 " workers and node " + first.node_id + " " +
                                 std::to_string(first.nproc);
              auto it = nodes_.find(m.node_id);
              if (it == nodes_.end()) continue;
              if (it->second.candidate) --candidates_;
              it->second.candidate = false;
              ++members_away_;
            }
            ++counters_.rounds_completed;
          },
          [&](const FailureReported& e) {
            recent_failures_.push_back(e.report);
            while (recent_failures_.size() > kRecentFailures) recent_failures_.pop_front();
            ++counters_.failures_reported;
            if (failure_counts_against_node(e.report.diagnosis) &&
                ++node_failures_[e.report.node_id] >= params_.max_node_failures &&
                params_.max_node_failures > 0)
              faulty_.insert(e.report.node_id);
          },
          [&](const NodeExcluded& e) {
            faulty_.insert(e.node_id);
            excluded_reason_[e.node_id] = e.reason;
          },
      },
      event);
}

Status RdzvState::replay(const RdzvEvent& event, double now) {
  Status s = std::visit(
      Overloaded{
          [&](const NodeJoined& e) {
            Status v = validate_node_info(e.node);
            return v.ok() ? v : Status::Corrupt("joined node: " + v.message());
          },
          [&](const NodeRemoved& e) {
            return nodes_.count(e.node_id)
                       ? Status::Ok()
                       : Status::Corrupt("removal of unknown node '" + e.node_id + "'");
          },
          [&](const RoundOpened& e) {
            if (open_)
              return Status::Corrupt("round " + std::to_string(e.number) + " opened while round " +
                                     std::to_string(open_round()) + " was still open");
            if (e.number != round_.number + 1)
              return Status::Corrupt("round " + std::to_string(e.number) + " opened after round " +
                                     std::to_string(round_.number));
            return Status::Ok();
          },
          [&](const RoundCompleted& e) {
            if (!open_ || e.round.number != round_.number + 1)
              return Status::Corrupt("round " + std::to_string(e.round.number) +
                                     " completed, but the open round is " +
                                     std::to_string(open_round()));
            if (e.round.members.empty())
              return Status::Corrupt("round " + std::to_string(e.round.number) + " has no members");
            for (const auto& m : e.round.members)
              if (!nodes_.count(m.node_id))
                return Status::Corrupt("round " + std::to_string(e.round.number) +
                                       " has unknown member '" + m.node_id + "'");
            return Status::Ok();
          },
          [&](const FailureReported&) { return Status::Ok(); },
          [&](const NodeExcluded&) { return Status::Ok(); },
      },
      event);
  if (!s.ok()) return s;
  apply(event, now);
  return Status::Ok();
}

void RdzvState::open_next(const std::string& reason, bool restart, double now) {
  emit(RoundOpened{round_.number + 1, restart, reason}, now);
}

void RdzvState::remove(const std::string& node_id, RemoveReason reason, double now) {
  const bool member = !open_ && is_member(node_id);
  emit(NodeRemoved{node_id, reason}, now);
  if (member)
    open_next("member " + node_id +
                  (reason == RemoveReason::kLeft      ? " left"
                   : reason == RemoveReason::kDropped ? " stopped heartbeating"
                                                      : " was excluded"),
              false, now);
}

Result<JoinResult> RdzvState::join(const NodeInfo& node, int64_t last_round, double now) {
  CAIRN_RETURN_IF_ERROR(validate_node_info(node));
  if (auto e = excluded_reason_.find(node.node_id); e != excluded_reason_.end())
    return Status::FailedPrecondition("node " + node.node_id +
                                      " is excluded from the job: " + e->second);
  if (faulty_.count(node.node_id))
    return Status::FailedPrecondition(
        "node " + node.node_id + " is marked faulty after " +
        std::to_string(node_failures_[node.node_id]) +
        " failures of its workers (crashes, hangs, errors); the master excludes it from the job");
  auto it = nodes_.find(node.node_id);
  if (it == nodes_.end() && nodes_.size() >= max_known_nodes())
    return Status::FailedPrecondition("node " + node.node_id +
                                      " cannot join: " + std::to_string(nodes_.size()) +
                                      " nodes are known already (the limit for max_nodes " +
                                      std::to_string(params_.max_nodes) + ")");
  if (it != nodes_.end()) {
    seen(it->second, now);
    // A member fetching the round it was given (it polled while the round completed).
    if (!open_ && is_member(node.node_id) && round_.number > last_round && it->second.info == node)
      return JoinResult{shared_round_, 0, 0, ""};
  }
  if (it == nodes_.end() || !it->second.candidate || it->second.info != node)
    emit(NodeJoined{node}, now);
  if (!open_) {
    if (is_member(node.node_id)) {
      open_next("member " + node.node_id + " joined again", true, now);
    } else {
      maybe_grow(now);
    }
  }
  try_complete(now);
  if (!open_ && is_member(node.node_id)) return JoinResult{shared_round_, 0, 0, ""};
  JoinResult r;
  r.open_round = open_round();
  r.candidates = candidates_;
  if (open_)
    r.reason = "round " + std::to_string(r.open_round) + " is gathering (" + open_reason_ +
               "): " + std::to_string(r.candidates) + " node(s) joined, min " +
               std::to_string(params_.min_nodes) + ", max " + std::to_string(params_.max_nodes);
  else
    r.reason = "round " + std::to_string(round_.number) + " is full with " +
               std::to_string(round_.members.size()) + " node(s); waiting as a spare";
  return r;
}

HeartbeatResult RdzvState::heartbeat(const std::string& node_id, int64_t round, int64_t step,
                                     double now) {
  HeartbeatResult r;
  r.latest_round = round_.number;
  auto it = nodes_.find(node_id);
  if (it == nodes_.end()) {
    r.rejoin = true;
    r.reason = "node " + node_id + " is not known to the master (dropped or never joined)";
    return r;
  }
  Node& n = it->second;
  seen(n, now);
  n.last_step = step;
  if (open_ && !n.candidate) {
    r.rejoin = true;
    r.reason = "round " + std::to_string(open_round()) + " is gathering (" + open_reason_ + ")";
  } else if (!open_ && is_member(node_id) && round != round_.number) {
    r.rejoin = true;
    r.reason = "round " + std::to_string(round_.number) + " is the current round, not " +
               std::to_string(round);
  }
  return r;
}

bool RdzvState::leave(const std::string& node_id, double now) {
  if (!nodes_.count(node_id)) return false;
  remove(node_id, RemoveReason::kLeft, now);
  try_complete(now);
  return true;
}

void RdzvState::seen(Node& n, double now) {
  n.last_seen = now;
  n.stalled_at_seen = stalled_s_;
}

bool RdzvState::touch(const std::string& node_id, double now) {
  auto it = nodes_.find(node_id);
  if (it == nodes_.end()) return false;
  seen(it->second, now);
  return true;
}

void RdzvState::add_stall(double seconds) {
  if (seconds > 0) stalled_s_ += seconds;
}

void RdzvState::tick(double now) {
  // Silence is counted without the time the master itself stalled since the node was last seen.
  std::vector<std::string> silent;
  for (const auto& [id, n] : nodes_)
    if (now - n.last_seen - (stalled_s_ - n.stalled_at_seen) > params_.heartbeat_timeout_s)
      silent.push_back(id);
  for (const auto& id : silent) remove(id, RemoveReason::kDropped, now);
  try_complete(now);
}

void RdzvState::report_failure(const FailureReport& report) {
  FailureReport r = report;
  if (r.node_id.size() > kMaxNodeIdLength) r.node_id.resize(kMaxNodeIdLength);
  if (r.diagnosis.size() > kMaxDiagnosisLength) r.diagnosis.resize(kMaxDiagnosisLength);
  const std::string node = r.node_id;
  const bool was_faulty = faulty_.count(node) > 0;
  emit(FailureReported{std::move(r)}, 0);
  // Newly faulty: out of the job (its next Join is refused).
  if (!was_faulty && faulty_.count(node) && nodes_.count(node)) {
    const double now = nodes_.at(node).last_seen;
    remove(node, RemoveReason::kExcluded, now);
    try_complete(now);
  }
}

void RdzvState::maybe_grow(double now) {
  if (open_ || hold_growth_) return;
  const int waiting = candidates_;
  const int members = int(round_.members.size());
  if (usable(members + waiting) > members)
    open_next(std::to_string(waiting) + " waiting node(s) let the world grow from " +
                  std::to_string(members) + " node(s)",
              false, now);
}

void RdzvState::hold_growth(bool hold, double now) {
  hold_growth_ = hold;
  maybe_grow(now);
}

void RdzvState::exclude(const std::string& node_id, const std::string& reason, double now) {
  if (excluded_reason_.count(node_id)) return;
  std::string r =
      reason.size() > kMaxDiagnosisLength ? reason.substr(0, kMaxDiagnosisLength) : reason;
  emit(NodeExcluded{node_id, std::move(r)}, now);
  if (nodes_.count(node_id)) {
    remove(node_id, RemoveReason::kExcluded, now);
    try_complete(now);
  }
}

const NodeInfo* RdzvState::node(const std::string& node_id) const {
  auto it = nodes_.find(node_id);
  return it == nodes_.end() ? nullptr : &it->second.info;
}

std::vector<const RdzvState::Node*> RdzvState::ordered_candidates() const {
  std::vector<const Node*> out;
  for (const auto& m : round_.members) {
    auto it = nodes_.find(m.node_id);
    if (it != nodes_.end() && it->second.candidate) out.push_back(&it->second);
  }
  for (const auto& [id, n] : nodes_)  // std::map: sorted by node id
    if (n.candidate && !is_member(id)) out.push_back(&n);
  return out;
}

void RdzvState::try_complete(double now) {
  if (!open_) return;
  // Decided from counts (O(1)); the candidates are listed only for the round that completes.
  const int n = usable(candidates_);
  if (n < params_.min_nodes) {
    min_since_.reset();
    return;
  }
  if (n < usable(params_.max_nodes)) {
    if (!min_since_) min_since_ = now;
    if (now - *min_since_ < params_.wait_s) return;
    // Members of the previous round that are alive are on their way back (stopping their
    // workers at a step boundary, persisting): wait for them, up to one heartbeat timeout since
    // the round opened, so that they keep their ranks and the world does not shrink for nothing.
    if (open_since_ && now - *open_since_ < params_.heartbeat_timeout_s && members_away_ > 0)
      return;
  }
  std::vector<const Node*> candidates = ordered_candidates();
  Round r;
  r.number = round_.number + 1;
  for (int i = 0; i < n; ++i) {
    const NodeInfo& info = candidates[size_t(i)]->info;
    r.members.push_back({info.node_id, info.host, info.nproc, i, r.world_size});
    r.world_size += info.nproc;
  }
  r.master_addr = candidates[0]->info.host;
  r.master_port = candidates[0]->info.store_port;
  emit(RoundCompleted{std::move(r)}, now);
}

RdzvStatus RdzvState::status(double now, const std::string& after, size_t limit) const {
  RdzvStatus s;
  s.params = params_;
  if (after.empty()) {
    s.round = round_;
  } else {
    s.round.number = round_.number;
    s.round.world_size = round_.world_size;
    s.round.master_addr = round_.master_addr;
    s.round.master_port = round_.master_port;
    s.round.num_members = round_.size();
  }
  s.open = open_;
  s.open_round = open_round();
  s.open_reason = open_reason_;
  for (auto it = after.empty() ? nodes_.begin() : nodes_.upper_bound(after); it != nodes_.end();
       ++it) {
    if (s.nodes.size() == limit) {
      s.next_after = s.nodes.back().node.node_id;
      break;
    }
    const Node& n = it->second;
    s.nodes.push_back(
        {n.info, now - n.last_seen, n.last_step, !open_ && is_member(it->first), n.candidate});
  }
  s.counters = counters_;
  s.recent_failures.assign(recent_failures_.begin(), recent_failures_.end());
  return s;
}

}  // namespace cairn::elastic
