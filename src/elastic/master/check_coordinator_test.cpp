// The master's side of the node check without gRPC: which rounds get a check, the verdict
// applied to the rendezvous (exclusions), a node checked once per incarnation, and a check
// whose round ends under it forgotten instead of excluding anyone.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "elastic/master/check_coordinator_impl.h"

namespace cairn::elastic {
namespace {

NodeInfo node(const std::string& id, uint64_t incarnation = 1) {
  return {id, "host-" + id, 1, 30000 + id.back(), incarnation};
}

// A rendezvous of `ids` that completed its first round at t=0.
RdzvState completed(const std::vector<std::string>& ids) {
  RdzvParams p;
  p.min_nodes = 1;
  p.max_nodes = int(ids.size());
  p.wait_s = 10;
  p.heartbeat_timeout_s = 50;
  RdzvState s(p);
  for (const auto& id : ids) EXPECT_TRUE(s.join(node(id), 0, 0).ok());
  EXPECT_FALSE(s.open());
  return s;
}

CheckQuery query(const std::string& id, int64_t round) {
  CheckQuery q;
  q.node_id = id;
  q.round = round;
  return q;
}

// Polls every node until each has a final answer; `broken` nodes fail every group they are in.
std::map<std::string, CheckReply> run_all(CheckCoordinator& c, RdzvState& s,
                                          const std::vector<std::string>& ids, int64_t round,
                                          const std::set<std::string>& broken = {}) {
  std::map<std::string, CheckReply> final;
  std::map<std::string, CheckQuery> next;
  for (const auto& id : ids) next[id] = query(id, round);
  for (int iter = 0; iter < 20 && final.size() < ids.size(); ++iter)
    for (const auto& id : ids) {
      if (final.count(id)) continue;
      CheckReply r = c.poll(s, next[id], 1 + iter);
      next[id] = query(id, round);
      if (r.action == CheckAction::kRun) {
        NodeCheckResult res;
        res.ok = true;
        for (const auto& m : r.assignment.group) res.ok = res.ok && !broken.count(m.node_id);
        if (res.ok)
          res.matmul_s = 1;
        else
          res.error = "all-reduce timed out";
        next[id].check_id = r.assignment.check_id;
        next[id].check_round = r.assignment.check_round;
        next[id].result = res;
      } else if (r.action != CheckAction::kWait) {
        final[id] = r;
      }
    }
  EXPECT_EQ(final.size(), ids.size()) << "the check did not end";
  return final;
}

TEST(CheckCoordinator, WithoutTheCheckEveryNodeProceeds) {
  RdzvState s = completed({"a", "b"});
  CheckCoordinator c(false, {});
  CheckReply r = c.poll(s, query("a", 1), 1);
  EXPECT_EQ(r.action, CheckAction::kProceed);
  EXPECT_NE(r.reason.find("without --network-check"), std::string::npos);
  EXPECT_EQ(c.check(), nullptr);
}

TEST(CheckCoordinator, ANodeOfAnotherRoundRejoins) {
  RdzvState s = completed({"a", "b"});
  CheckCoordinator c(true, {});
  EXPECT_EQ(c.poll(s, query("a", 7), 1).action, CheckAction::kRejoin);
  EXPECT_EQ(c.poll(s, query("zz", 1), 1).action, CheckAction::kRejoin);
  EXPECT_EQ(c.check(), nullptr);
}

TEST(CheckCoordinator, HealthyNodesAreCheckedOncePerIncarnation) {
  RdzvState s = completed({"a", "b"});
  CheckCoordinator c(true, {});
  auto out = run_all(c, s, {"a", "b"}, 1);
  EXPECT_EQ(out["a"].action, CheckAction::kProceed);
  EXPECT_EQ(out["b"].action, CheckAction::kProceed);
  ASSERT_NE(c.check(), nullptr);
  EXPECT_TRUE(c.check()->done());
  EXPECT_FALSE(s.open());
  // b restarts its workers (same incarnation): the next round needs no check.
  ASSERT_TRUE(s.join(node("b"), 1, 2).ok());
  ASSERT_TRUE(s.join(node("a"), 1, 2).ok());
  ASSERT_FALSE(s.open());
  const int64_t round = s.round().number;
  ASSERT_GT(round, 1);
  CheckReply again = c.poll(s, query("a", round), 3);
  EXPECT_EQ(again.action, CheckAction::kProceed);
  EXPECT_NE(again.reason.find("passed a check before"), std::string::npos) << again.reason;
  // A new incarnation of a (its agent restarted) is checked again.
  ASSERT_TRUE(s.join(node("a", 2), round, 4).ok());
  ASSERT_TRUE(s.join(node("b"), round, 4).ok());
  ASSERT_FALSE(s.open());
  EXPECT_EQ(c.poll(s, query("a", s.round().number), 5).action, CheckAction::kRun);
}

TEST(CheckCoordinator, TheVerdictExcludesTheBrokenNodeFromTheRendezvous) {
  RdzvState s = completed({"a", "b", "c", "d"});
  CheckCoordinator c(true, {});
  auto out = run_all(c, s, {"a", "b", "c", "d"}, 1, {"d"});
  EXPECT_EQ(out["d"].action, CheckAction::kExcluded);
  for (const auto& id : {"a", "b", "c"}) EXPECT_EQ(out[id].action, CheckAction::kRejoin) << id;
  // The rendezvous opened a new round without d, and refuses d from now on.
  EXPECT_TRUE(s.open());
  auto d = s.join(node("d"), 1, 30);
  EXPECT_FALSE(d.ok() && d->round);
  for (const auto& id : {"a", "b", "c"}) ASSERT_TRUE(s.join(node(id), 1, 30).ok());
  s.tick(45);  // past the wait, within the heartbeat timeout
  ASSERT_FALSE(s.open());
  EXPECT_EQ(s.round().members.size(), 3u);
  EXPECT_FALSE(s.round().find("d"));
}

TEST(CheckCoordinator, ACheckWhoseRoundEndedIsForgottenAndExcludesNobody) {
  RdzvState s = completed({"a", "b"});
  CheckCoordinator c(true, {});
  // a gets its assignment; then b leaves before anyone reports.
  ASSERT_EQ(c.poll(s, query("a", 1), 1).action, CheckAction::kRun);
  ASSERT_NE(c.check(), nullptr);
  s.leave("b", 2);
  ASSERT_TRUE(s.open());
  c.tick(s, 1000);  // long past the check's timeout
  EXPECT_EQ(c.check(), nullptr);
  // Nobody was excluded: a joins the next round.
  auto a = s.join(node("a"), 1, 1001);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
}

TEST(CheckCoordinator, ASilentNodeFailsAtTheTimeoutOnTheTicker) {
  RdzvState s = completed({"a", "b", "c"});
  NodeCheckParams p;
  p.timeout_s = 5;
  CheckCoordinator c(true, p);
  // a and b run and report; c never answers.
  for (const auto& id : {"a", "b"}) ASSERT_EQ(c.poll(s, query(id, 1), 1).action, CheckAction::kRun);
  ASSERT_EQ(c.poll(s, query("c", 1), 1).action, CheckAction::kRun);
  for (int t = 2; t < 40 && !(c.check() && c.check()->done()); ++t) {
    for (const auto& id : {"a", "b"}) {
      CheckQuery q = query(id, 1);
      CheckReply r = c.poll(s, q, t);
      if (r.action == CheckAction::kRun) {
        q.check_id = r.assignment.check_id;
        q.check_round = r.assignment.check_round;
        NodeCheckResult res;
        res.ok = true;
        res.matmul_s = 1;
        for (const auto& m : r.assignment.group)
          if (m.node_id == "c") {
            res.ok = false;
            res.error = "timed out";
          }
        q.result = res;
        c.poll(s, q, t);
      }
    }
    c.tick(s, t);
  }
  ASSERT_NE(c.check(), nullptr);
  ASSERT_TRUE(c.check()->done());
  EXPECT_TRUE(c.check()->verdict().excluded.count("c")) << c.check()->verdict().summary;
  EXPECT_FALSE(c.check()->verdict().excluded.count("a"));
}

}  // namespace
}  // namespace cairn::elastic
