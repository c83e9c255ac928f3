// Tests of the node check's decisions: grouping, the second round, exclusion of the node at
// fault (and only it), stragglers, timeouts and stale reports. A small simulated network runs
// the checks: a group's check fails when one of its nodes is broken.
#include "cairn/elastic/node_check.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace cairn::elastic {
namespace {

std::vector<CheckMember> members(const std::vector<std::string>& ids) {
  std::vector<CheckMember> out;
  int port = 30000;
  for (const auto& id : ids) out.push_back({id, "host-" + id, port++});
  return out;
}

struct Network {
  std::set<std::string> broken;
  std::map<std::string, double> matmul_s;  // default 1 s
  std::vector<std::vector<std::string>> groups_run[2];

  NodeCheckResult run(const CheckAssignment& a) const {
    NodeCheckResult r;
    for (const auto& m : a.group)
      if (broken.count(m.node_id)) {
        r.error = "all-reduce timed out";
        return r;
      }
    r.ok = true;
    auto it = matmul_s.find(a.group[size_t(a.group_rank)].node_id);
    r.matmul_s = it == matmul_s.end() ? 1.0 : it->second;
    r.allreduce_s = 0.05;
    return r;
  }
};

std::vector<std::string> ids_of(const CheckAssignment& a) {
  std::vector<std::string> out;
  for (const auto& m : a.group) out.push_back(m.node_id);
  return out;
}

// Polls every node until each has a final answer; returns it per node.
std::map<std::string, CheckReply> run_all(NodeCheck& c, const std::vector<std::string>& ids,
                                          Network& net) {
  std::map<std::string, CheckReply> final;
  std::map<std::string, std::optional<std::pair<int, NodeCheckResult>>> pending;
  for (int iter = 0; iter < 20 && final.size() < ids.size(); ++iter)
    for (const auto& id : ids) {
      if (final.count(id)) continue;
      CheckReply r = c.poll(id, pending[id], iter);
      pending[id].reset();
      if (r.action == CheckAction::kRun) {
        auto& runs = net.groups_run[r.assignment.check_round - 1];
        if (r.assignment.group_rank == 0) runs.push_back(ids_of(r.assignment));
        pending[id] = std::make_pair(r.assignment.check_round, net.run(r.assignment));
      } else if (r.action != CheckAction::kWait) {
        final[id] = r;
      }
    }
  EXPECT_EQ(final.size(), ids.size()) << "the check did not end";
  return final;
}

using Groups = std::vector<std::vector<std::string>>;

TEST(NodeCheck, HealthyNodesCheckInPairsOnceAndProceed) {
  std::vector<std::string> ids{"a", "b", "c", "d"};
  NodeCheck c(members(ids), "k1", {}, 0);
  Network net;
  auto out = run_all(c, ids, net);
  for (const auto& id : ids) EXPECT_EQ(out[id].action, CheckAction::kProceed) << id;
  EXPECT_EQ(net.groups_run[0], (Groups{{"a", "b"}, {"c", "d"}}));
  EXPECT_TRUE(net.groups_run[1].empty());
  ASSERT_TRUE(c.done());
  EXPECT_TRUE(c.verdict().excluded.empty());
  EXPECT_TRUE(c.verdict().stragglers.empty());
  EXPECT_NEAR(c.verdict().elapsed_s.at("c"), 1.05, 1e-9);
  EXPECT_NE(c.verdict().summary.find("4 of 4 node(s) passed"), std::string::npos)
      << c.verdict().summary;
}

TEST(NodeCheck, TheGroupLeaderServesTheStoreAndRanksFollowTheGroup) {
  NodeCheck c(members({"a", "b"}), "k1", {}, 0);
  CheckReply ra = c.poll("a", std::nullopt, 0), rb = c.poll("b", std::nullopt, 0);
  ASSERT_EQ(ra.action, CheckAction::kRun);
  ASSERT_EQ(rb.action, CheckAction::kRun);
  EXPECT_EQ(ra.assignment.check_id, "k1");
  EXPECT_EQ(ra.assignment.group_rank, 0);
  EXPECT_EQ(rb.assignment.group_rank, 1);
  EXPECT_EQ(rb.assignment.group[0].host, "host-a");
  EXPECT_EQ(rb.assignment.group[0].store_port, 30000);
  // Asking again before reporting repeats the assignment (an agent that restarted).
  EXPECT_EQ(c.poll("a", std::nullopt, 1).action, CheckAction::kRun);
}

TEST(NodeCheck, BrokenNodeInAPairIsFoundInTheSecondRoundAndExcludedAlone) {
  std::vector<std::string> ids{"a", "b", "c", "d"};
  NodeCheck c(members(ids), "k1", {}, 0);
  Network net;
  net.broken = {"d"};
  auto out = run_all(c, ids, net);
  EXPECT_EQ(net.groups_run[0], (Groups{{"a", "b"}, {"c", "d"}}));
  // c and d failed; each is checked again with a node that passed, never with each other.
  ASSERT_EQ(net.groups_run[1].size(), 2u);
  std::sort(net.groups_run[1].begin(), net.groups_run[1].end());
  EXPECT_EQ(net.groups_run[1][0][0], "c");
  EXPECT_EQ(net.groups_run[1][1][0], "d");
  EXPECT_NE(net.groups_run[1][0][1], "d");
  EXPECT_EQ(out["d"].action, CheckAction::kExcluded);
  EXPECT_NE(out["d"].reason.find("round 1 (with c): all-reduce timed out"), std::string::npos)
      << out["d"].reason;
  EXPECT_NE(out["d"].reason.find("round 2"), std::string::npos) << out["d"].reason;
  for (const auto& id : {"a", "b", "c"}) EXPECT_EQ(out[id].action, CheckAction::kRejoin) << id;
  EXPECT_EQ(c.verdict().excluded.size(), 1u);
}

TEST(NodeCheck, OddNodeOutIsCheckedWithAPartnerInTheSecondRound) {
  std::vector<std::string> ids{"a", "b", "c"};
  {
    NodeCheck c(members(ids), "k1", {}, 0);
    Network net;
    auto out = run_all(c, ids, net);
    EXPECT_EQ(net.groups_run[0], (Groups{{"a", "b"}, {"c"}}));
    EXPECT_EQ(net.groups_run[1], (Groups{{"c", "a"}}));
    for (const auto& id : ids) EXPECT_EQ(out[id].action, CheckAction::kProceed) << id;
  }
  {
    NodeCheck c(members(ids), "k2", {}, 0);
    Network net;
    net.broken = {"c"};
    auto out = run_all(c, ids, net);
    EXPECT_EQ(out["c"].action, CheckAction::kExcluded);
    EXPECT_EQ(out["a"].action, CheckAction::kRejoin);  // failed round 2 with c, passed round 1
    EXPECT_EQ(out["b"].action, CheckAction::kRejoin);
  }
  {
    // b broken: a and b fail round 1; round 2 pairs a with c (c only checked alone) and
    // leaves b alone, so a and c pass and b, which passed nowhere, is excluded.
    NodeCheck c(members(ids), "k3", {}, 0);
    Network net;
    net.broken = {"b"};
    auto out = run_all(c, ids, net);
    EXPECT_EQ(net.groups_run[1], (Groups{{"a", "c"}, {"b"}}));
    EXPECT_EQ(out["b"].action, CheckAction::kExcluded);
    EXPECT_EQ(out["a"].action, CheckAction::kRejoin);
    EXPECT_EQ(out["c"].action, CheckAction::kRejoin);
  }
}

TEST(NodeCheck, TwoNodesThatCannotTalkAreInconclusiveAndNobodyIsExcluded) {
  std::vector<std::string> ids{"a", "b"};
  NodeCheck c(members(ids), "k1", {}, 0);
  Network net;
  net.broken = {"b"};
  auto out = run_all(c, ids, net);
  EXPECT_EQ(net.groups_run[1], (Groups{{"a", "b"}}));
  EXPECT_EQ(out["a"].action, CheckAction::kProceed);
  EXPECT_EQ(out["b"].action, CheckAction::kProceed);
  EXPECT_TRUE(c.verdict().inconclusive);
  EXPECT_NE(c.verdict().summary.find("inconclusive, nobody excluded: a (failed the node check"),
            std::string::npos)
      << c.verdict().summary;
}

TEST(NodeCheck, OneNodeJobPassesAloneAndIsNeverExcluded) {
  {
    NodeCheck c(members({"solo"}), "k1", {}, 0);
    Network net;
    auto out = run_all(c, {"solo"}, net);
    EXPECT_EQ(out["solo"].action, CheckAction::kProceed);
  }
  {
    NodeCheck c(members({"solo"}), "k2", {}, 0);
    Network net;
    net.broken = {"solo"};
    auto out = run_all(c, {"solo"}, net);
    EXPECT_EQ(out["solo"].action, CheckAction::kProceed);  // alone it cannot be blamed
    EXPECT_TRUE(c.verdict().inconclusive);
  }
}

TEST(NodeCheck, StragglerIsReportedAndExcludedOnlyWhenAsked) {
  std::vector<std::string> ids{"a", "b"};
  for (bool exclude : {false, true}) {
    NodeCheckParams p;
    p.exclude_stragglers = exclude;
    NodeCheck c(members(ids), "k", p, 0);
    Network net;
    net.matmul_s = {{"a", 1.0}, {"b", 3.0}};
    auto out = run_all(c, ids, net);
    ASSERT_TRUE(c.done());
    EXPECT_EQ(c.verdict().stragglers, (std::vector<std::string>{"b"}));
    EXPECT_NE(c.verdict().summary.find("straggler(s): b"), std::string::npos)
        << c.verdict().summary;
    if (exclude) {
      EXPECT_EQ(out["b"].action, CheckAction::kExcluded);
      EXPECT_NE(out["b"].reason.find("straggler: its check took 3.050 s"), std::string::npos)
          << out["b"].reason;
      EXPECT_EQ(out["a"].action, CheckAction::kRejoin);
    } else {
      EXPECT_EQ(out["a"].action, CheckAction::kProceed);
      EXPECT_EQ(out["b"].action, CheckAction::kProceed);
    }
  }
}

TEST(NodeCheck, SlightlySlowNodeIsNoStraggler) {
  std::vector<std::string> ids{"a", "b", "c", "d"};
  NodeCheck c(members(ids), "k", {}, 0);
  Network net;
  net.matmul_s = {{"a", 1.0}, {"b", 1.1}, {"c", 0.9}, {"d", 1.9}};
  run_all(c, ids, net);
  EXPECT_TRUE(c.verdict().stragglers.empty());
}

TEST(NodeCheck, SilentNodeFailsAtTheTimeoutAndStaleReportsAreIgnored) {
  NodeCheckParams p;
  p.timeout_s = 5;
  NodeCheck c(members({"a", "b"}), "k", p, 0);
  NodeCheckResult ok;
  ok.ok = true;
  ok.matmul_s = 1;
  ASSERT_EQ(c.poll("a", std::nullopt, 0).action, CheckAction::kRun);
  // A result for a round that is not running changes nothing.
  EXPECT_EQ(c.poll("a", std::make_pair(2, ok), 1).action, CheckAction::kRun);
  EXPECT_EQ(c.poll("a", std::make_pair(1, ok), 1).action, CheckAction::kWait);
  c.tick(10);  // within timeout + slack
  EXPECT_EQ(c.check_round(), 1);
  c.tick(16);
  EXPECT_EQ(c.check_round(), 2);  // b never reported: failed round 1
  CheckReply rb = c.poll("b", std::nullopt, 16);
  EXPECT_EQ(rb.action, CheckAction::kRun);
  c.tick(40);
  ASSERT_TRUE(c.done());
  ASSERT_EQ(c.verdict().excluded.count("b"), 1u);
  EXPECT_NE(c.verdict().excluded.at("b").find("no result within 15.000 s"), std::string::npos)
      << c.verdict().excluded.at("b");
  EXPECT_EQ(c.poll("a", std::nullopt, 41).action, CheckAction::kRejoin);
  EXPECT_EQ(c.poll("stranger", std::nullopt, 41).action, CheckAction::kExcluded);
}

}  // namespace
}  // namespace cairn::elastic
