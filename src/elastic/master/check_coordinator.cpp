// The master's side of the node check. See check_coordinator_impl.h.
#include <spdlog/spdlog.h>

#include <vector>

#include "cairn/core/fs.h"
#include "elastic/master/check_coordinator_impl.h"

namespace cairn::elastic {

CheckReply CheckCoordinator::poll(RdzvState& state, const CheckQuery& q, double now) {
  CheckReply r;
  if (!enabled_) {
    r.action = CheckAction::kProceed;
    r.reason = "no node check (the master runs without --network-check)";
    return r;
  }
  drop_stale(state, now);
  // The verdict of this round's check stands after it changed the rendezvous (exclusions).
  if (check_ && check_for_round_ == q.round && check_->done())
    return check_->poll(q.node_id, std::nullopt, now);
  const Round& round = state.round();
  if (state.open() || q.round != round.number || !round.find(q.node_id)) {
    r.action = CheckAction::kRejoin;
    r.reason = "round " + std::to_string(q.round) + " is not the job's current round";
    return r;
  }
  if (check_for_round_ != round.number) start(state, now);
  if (!check_) {
    r.action = CheckAction::kProceed;
    r.reason = "every node of round " + std::to_string(round.number) + " passed a check before";
    return r;
  }
  std::optional<std::pair<int, NodeCheckResult>> report;
  if (q.result && q.check_id == check_->check_id())
    report = std::make_pair(q.check_round, *q.result);
  r = check_->poll(q.node_id, report, now);
  apply_verdict(state, now);
  return r;
}

void CheckCoordinator::tick(RdzvState& state, double now) {
  drop_stale(state, now);
  if (!check_) return;
  check_->tick(now);
  apply_verdict(state, now);
}

// A check whose round is over (a member was dropped or left meanwhile) tells nothing: forget it,
// so that it neither times out nor excludes anyone.
void CheckCoordinator::drop_stale(RdzvState& state, double now) {
  if (!check_ || check_->done()) return;
  if (!state.open() && state.round().number == check_for_round_) return;
  spdlog::info("master: node check {} abandoned: round {} is over", check_->check_id(),
               check_for_round_);
  check_.reset();
  state.hold_growth(false, now);
}

void CheckCoordinator::start(RdzvState& state, double now) {
  const Round& round = state.round();
  check_for_round_ = round.number;
  check_.reset();
  verdict_applied_ = false;
  std::vector<CheckMember> members;
  bool all_checked = true;
  for (const auto& m : round.members) {
    const NodeInfo* info = state.node(m.node_id);
    if (!info) continue;
    auto it = checked_.find(m.node_id);
    all_checked = all_checked && it != checked_.end() && it->second == info->incarnation;
    members.push_back({m.node_id, m.host, info->store_port});
  }
  if (all_checked) {
    state.hold_growth(false, now);
    return;
  }
  // Nodes that come meanwhile wait for the check to end instead of ending the round under it.
  state.hold_growth(true, now);
  const std::string id = std::to_string(round.number) + "." + std::to_string(++check_serial_) +
                         "." + std::to_string(uint32_t(uint64_t(core::unix_time() * 1000)));
  check_.emplace(std::move(members), id, params_, now);
  spdlog::info("master: node check {} of round {} begins ({} nodes)", id, round.number,
               round.members.size());
}

// Once the check has a verdict: remembers who passed, excludes who did not.
void CheckCoordinator::apply_verdict(RdzvState& state, double now) {
  if (!check_ || !check_->done() || verdict_applied_) return;
  verdict_applied_ = true;
  const NodeCheckVerdict& v = check_->verdict();
  spdlog::info("master: {}", v.summary);
  for (const auto& id : v.stragglers)
    spdlog::warn("master: node {} is a straggler (check time {:.3f} s){}", id, v.elapsed_s.at(id),
                 v.excluded.count(id) ? "; excluded" : "");
  for (const auto& [id, t] : v.elapsed_s)
    if (const NodeInfo* info = state.node(id); info && !v.excluded.count(id))
      checked_[id] = info->incarnation;
  for (const auto& [id, why] : v.excluded) state.exclude(id, why, now);
  state.hold_growth(false, now);
}

}  // namespace cairn::elastic
