// The node check's decisions: grouping for the two check rounds, pass/fail, exclusion and
// stragglers. See cairn/elastic/node_check.h.
#include "cairn/elastic/node_check.h"

#include <algorithm>
#include <cstdio>

#include "cairn/core/median.h"

namespace cairn::elastic {
namespace {

// Slack on top of the agents' own timeout before the master gives up on a node's report.
constexpr double kReportSlackS = 10.0;

std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3f s", s);
  return buf;
}

}  // namespace

const char* check_action_name(CheckAction action) {
  switch (action) {
    case CheckAction::kRun:
      return "run";
    case CheckAction::kWait:
      return "wait";
    case CheckAction::kProceed:
      return "proceed";
    case CheckAction::kExcluded:
      return "excluded";
    case CheckAction::kRejoin:
      return "rejoin";
  }
  return "?";
}

NodeCheck::NodeCheck(std::vector<CheckMember> members, std::string check_id, NodeCheckParams params,
                     double now)
    : members_(std::move(members)),
      check_id_(std::move(check_id)),
      params_(params),
      round_start_(now) {
  for (const auto& m : members_) nodes_[m.node_id].member = m;
  plan_round1();
}

void NodeCheck::plan_round1() {
  auto& groups = groups_[0];
  const size_t n = members_.size();
  for (size_t i = 0; i + 1 < n; i += 2)
    groups.push_back({members_[i].node_id, members_[i + 1].node_id});
  if (n % 2) groups.push_back({members_.back().node_id});
  for (size_t g = 0; g < groups.size(); ++g)
    for (const auto& id : groups[g]) nodes_[id].group[0] = int(g);
}

void NodeCheck::plan_round2() {
  auto& groups = groups_[1];
  std::vector<std::string> need, helpers;
  for (const auto& m : members_)
    (nodes_[m.node_id].passed[0] ? helpers : need).push_back(m.node_id);
  // Fastest helpers first: they tell the most about their partner.
  std::stable_sort(helpers.begin(), helpers.end(), [&](const std::string& a, const std::string& b) {
    return nodes_[a].result[0]->elapsed() < nodes_[b].result[0]->elapsed();
  });
  auto partners_before = [&](const std::string& a, const std::string& b) {
    return nodes_[a].group[0] == nodes_[b].group[0];
  };
  std::vector<bool> helper_used(helpers.size(), false), need_used(need.size(), false);
  for (size_t i = 0; i < need.size(); ++i) {
    if (need_used[i]) continue;
    need_used[i] = true;
    std::vector<std::string> group{need[i]};
    for (size_t h = 0; h < helpers.size() && group.size() == 1; ++h)
      if (!helper_used[h] && !partners_before(need[i], helpers[h])) {
        helper_used[h] = true;
        group.push_back(helpers[h]);
      }
    for (size_t j = i + 1; j < need.size() && group.size() == 1; ++j)
      if (!need_used[j] && !partners_before(need[i], need[j])) {
        need_used[j] = true;
        group.push_back(need[j]);
      }
    // No fresh partner: the same one again, so the node is at least checked with someone.
    for (size_t j = i + 1; j < need.size() && group.size() == 1; ++j)
      if (!need_used[j]) {
        need_used[j] = true;
        group.push_back(need[j]);
      }
    groups.push_back(std::move(group));
  }
  for (size_t g = 0; g < groups.size(); ++g)
    for (const auto& id : groups[g]) nodes_[id].group[1] = int(g);
}

CheckAssignment NodeCheck::assignment_for(const std::string& node_id) const {
  const Node& n = nodes_.at(node_id);
  const auto& group = groups_[round_ - 1][size_t(n.group[round_ - 1])];
  CheckAssignment a;
  a.check_id = check_id_;
  a.check_round = round_;
  a.timeout_s = params_.timeout_s;
  for (size_t i = 0; i < group.size(); ++i) {
    a.group.push_back(nodes_.at(group[i]).member);
    if (group[i] == node_id) a.group_rank = int(i);
  }
  return a;
}

CheckReply NodeCheck::poll(const std::string& node_id,
                           std::optional<std::pair<int, NodeCheckResult>> report, double now) {
  CheckReply reply;
  auto it = nodes_.find(node_id);
  if (it == nodes_.end()) {
    reply.action = CheckAction::kExcluded;
    reply.reason = "node " + node_id + " is not a member of the round being checked";
    return reply;
  }
  Node& n = it->second;
  if (!done() && report && report->first == round_ && n.group[round_ - 1] >= 0 &&
      !n.result[round_ - 1]) {
    const size_t group_size = groups_[round_ - 1][size_t(n.group[round_ - 1])].size();
    n.result[round_ - 1] = report->second;
    n.passed[round_ - 1] = report->second.ok && (group_size >= 2 || members_.size() == 1);
  }
  maybe_advance(now);
  if (done()) {
    const auto& v = *verdict_;
    if (auto e = v.excluded.find(node_id); e != v.excluded.end()) {
      reply.action = CheckAction::kExcluded;
      reply.reason = e->second;
    } else if (!v.excluded.empty()) {
      reply.action = CheckAction::kRejoin;
      reply.reason = v.summary;
    } else {
      reply.action = CheckAction::kProceed;
      reply.reason = v.summary;
    }
    return reply;
  }
  if (n.group[round_ - 1] >= 0 && !n.result[round_ - 1]) {
    reply.action = CheckAction::kRun;
    reply.assignment = assignment_for(node_id);
    return reply;
  }
  int pending = 0;
  for (const auto& [id, other] : nodes_)
    if (other.group[round_ - 1] >= 0 && !other.result[round_ - 1]) ++pending;
  reply.action = CheckAction::kWait;
  reply.reason = "waiting for " + std::to_string(pending) + " node(s) to finish check round " +
                 std::to_string(round_);
  return reply;
}

void NodeCheck::tick(double now) {
  if (done() || now - round_start_ <= params_.timeout_s + kReportSlackS) return;
  for (auto& [id, n] : nodes_)
    if (n.group[round_ - 1] >= 0 && !n.result[round_ - 1]) {
      NodeCheckResult r;
      r.error = "no result within " + seconds(params_.timeout_s + kReportSlackS);
      n.result[round_ - 1] = r;
    }
  maybe_advance(now);
}

void NodeCheck::maybe_advance(double now) {
  if (done()) return;
  for (const auto& [id, n] : nodes_)
    if (n.group[round_ - 1] >= 0 && !n.result[round_ - 1]) return;
  if (round_ == 1) {
    bool all_passed = true;
    for (const auto& [id, n] : nodes_) all_passed = all_passed && n.passed[0];
    if (!all_passed) {
      plan_round2();
      round_ = 2;
      round_start_ = now;
      return;
    }
  }
  decide();
}

void NodeCheck::decide() {
  NodeCheckVerdict v;
  auto describe = [&](const std::string& id, int r) -> std::string {
    const Node& n = nodes_.at(id);
    if (n.group[r] < 0) return "";
    std::string with;
    for (const auto& other : groups_[r][size_t(n.group[r])])
      if (other != id) with += (with.empty() ? "" : ", ") + other;
    std::string s =
        "round " + std::to_string(r + 1) + (with.empty() ? " (alone)" : " (with " + with + ")");
    const auto& res = n.result[r];
    if (!res->ok) return s + ": " + res->error;
    return s + (n.passed[r] ? ": passed" : ": its network is not checked alone");
  };
  std::vector<std::string> failed;
  for (const auto& m : members_) {
    const Node& n = nodes_.at(m.node_id);
    if (n.passed[0] || n.passed[1]) {
      v.elapsed_s[m.node_id] = (n.passed[0] ? n.result[0] : n.result[1])->elapsed();
      continue;
    }
    std::string why = "failed the node check: " + describe(m.node_id, 0);
    if (n.group[1] >= 0) why += "; " + describe(m.node_id, 1);
    v.excluded[m.node_id] = why;
    failed.push_back(m.node_id + " (" + why + ")");
  }
  // No node passed: the fault cannot be put on any of them (two nodes that cannot talk, or a
  // cause common to all: a blocked port, a broken check). Excluding everyone for good would end
  // the job on a guess; report it and exclude nobody.
  if (v.elapsed_s.empty()) {
    v.inconclusive = true;
    v.excluded.clear();
    v.failures = failed;
  }
  for (const auto& [id, t] : v.elapsed_s) {
    std::vector<double> others;
    for (const auto& [other, u] : v.elapsed_s)
      if (other != id) others.push_back(u);
    if (others.empty()) continue;
    const double med = core::median(others);
    if (t > params_.straggler_ratio * med) {
      v.stragglers.push_back(id);
      if (params_.exclude_stragglers) {
        char buf[64];
        std::snprintf(buf, sizeof(buf), "%.1fx", med > 0 ? t / med : 0.0);
        v.excluded[id] = "straggler: its check took " + seconds(t) + ", " + buf +
                         " the median of the other nodes (" + seconds(med) +
                         "), and stragglers are excluded";
      }
    }
  }
  std::string s = "node check " + check_id_ + ": " + std::to_string(v.elapsed_s.size()) + " of " +
                  std::to_string(members_.size()) + " node(s) passed";
  if (v.inconclusive) {
    s += "; inconclusive, nobody excluded:";
    for (const auto& f : v.failures) s += " " + f;
  }
  for (const auto& [id, t] : v.elapsed_s) s += " " + id + "=" + seconds(t);
  if (!v.stragglers.empty()) {
    s += "; straggler(s):";
    for (const auto& id : v.stragglers) s += " " + id;
  }
  if (!v.excluded.empty()) {
    s += "; excluded:";
    for (const auto& [id, why] : v.excluded) s += " " + id;
  }
  v.summary = s;
  verdict_ = std::move(v);
}

}  // namespace cairn::elastic
