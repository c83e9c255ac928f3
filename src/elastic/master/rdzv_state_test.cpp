// Tests of the pure rendezvous state machine: completion rules (min/max/unit/wait), heartbeat
// timeouts, stable ranks, scaling down and up, restarts, and replay of its events.
#include "cairn/elastic/rdzv_state.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace cairn::elastic {
namespace {

NodeInfo node(const std::string& id, int nproc = 1, uint64_t incarnation = 1) {
  return {id, "host-" + id, nproc, 20000 + int(id.size()) * 7 + id.back(), incarnation};
}

RdzvParams params(int min, int max, int unit = 1, double wait = 5, double hb = 10) {
  return {min, max, unit, wait, hb};
}

JoinResult join(RdzvState& s, const std::string& id, int64_t last, double now, int nproc = 1) {
  auto r = s.join(node(id, nproc), last, now);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : JoinResult{};
}

std::vector<std::string> ids(const Round& r) {
  std::vector<std::string> out;
  for (const auto& m : r.members) out.push_back(m.node_id);
  return out;
}

using Ids = std::vector<std::string>;

TEST(RdzvParams, Validation) {
  EXPECT_TRUE(validate_rdzv_params(params(1, 1)).ok());
  EXPECT_TRUE(validate_rdzv_params(params(2, 5, 2)).ok());
  EXPECT_NE(validate_rdzv_params(params(0, 1)).message().find("min_nodes"), std::string::npos);
  EXPECT_NE(validate_rdzv_params(params(3, 2)).message().find("max_nodes"), std::string::npos);
  EXPECT_NE(validate_rdzv_params(params(1, 2, 0)).message().find("node_unit"), std::string::npos);
  // 3..3 holds no multiple of 2.
  EXPECT_NE(validate_rdzv_params(params(3, 3, 2)).message().find("no multiple"), std::string::npos);
  EXPECT_FALSE(validate_rdzv_params(params(1, 1, 1, -1)).ok());
  EXPECT_FALSE(validate_rdzv_params(params(1, 1, 1, 1, 0)).ok());
}

TEST(RdzvNodeInfo, Validation) {
  EXPECT_TRUE(validate_node_info(node("a")).ok());
  NodeInfo n = node("a");
  n.node_id = "";
  EXPECT_NE(validate_node_info(n).message().find("node id is empty"), std::string::npos);
  n = node("a");
  n.node_id = std::string(kMaxNodeIdLength + 1, 'x');
  EXPECT_FALSE(validate_node_info(n).ok());
  n = node("a");
  n.host = "bad\nhost";
  EXPECT_NE(validate_node_info(n).message().find("control characters"), std::string::npos);
  n = node("a");
  n.nproc = 0;
  EXPECT_NE(validate_node_info(n).message().find("nproc"), std::string::npos);
  n = node("a");
  n.store_port = 70000;
  EXPECT_NE(validate_node_info(n).message().find("store_port"), std::string::npos);
  RdzvState s(params(1, 2));
  EXPECT_EQ(s.join(n, 0, 0).status().code(), StatusCode::kInvalidArgument);
}

TEST(RdzvState, CompletesAtMaxAtOnce) {
  RdzvState s(params(1, 2, 1, 100));
  EXPECT_FALSE(join(s, "a", 0, 0).round);
  EXPECT_EQ(s.open_round(), 1);
  auto b = join(s, "b", 0, 0.5);
  ASSERT_TRUE(b.round);
  EXPECT_EQ(b.round->number, 1);
  EXPECT_EQ(ids(*b.round), (Ids{"a", "b"}));
  auto a = join(s, "a", 0, 0.6);  // a polls and fetches the same round
  ASSERT_TRUE(a.round);
  EXPECT_EQ(ids(*a.round), (Ids{"a", "b"}));
  EXPECT_FALSE(s.open());
  EXPECT_EQ(s.counters().rounds_completed, 1);
}

TEST(RdzvState, CompletesWithMinAfterWaitSinceMinReached) {
  RdzvState s(params(2, 4, 1, 5));
  join(s, "a", 0, 0);
  s.tick(10);  // alone: below min, the wait has not started
  EXPECT_TRUE(s.open());
  join(s, "b", 0, 3);  // min reached at t=3
  s.tick(7.9);
  EXPECT_TRUE(s.open());
  s.tick(8.0);
  EXPECT_FALSE(s.open());
  EXPECT_EQ(ids(s.round()), (Ids{"a", "b"}));
}

TEST(RdzvState, WaitRestartsWhenCandidatesFallBelowMin) {
  RdzvState s(params(2, 4, 1, 5, 100));
  join(s, "a", 0, 0);
  join(s, "b", 0, 0);
  EXPECT_TRUE(s.leave("b", 4));
  join(s, "b", 0, 6);  // min reached again at t=6
  s.tick(9);
  EXPECT_TRUE(s.open());
  s.tick(11);
  EXPECT_FALSE(s.open());
}

TEST(RdzvState, ZeroWaitCompletesAtMin) {
  RdzvState s(params(2, 4, 1, 0));
  join(s, "a", 0, 0);
  auto b = join(s, "b", 0, 0);
  ASSERT_TRUE(b.round);
  EXPECT_EQ(b.round->members.size(), 2u);
}

TEST(RdzvState, NodeUnitRoundsDownAndSurplusWaits) {
  RdzvState s(params(2, 5, 2, 1));
  join(s, "a", 0, 0);
  join(s, "b", 0, 0);
  join(s, "c", 0, 0);
  s.tick(1);
  ASSERT_FALSE(s.open());
  EXPECT_EQ(ids(s.round()), (Ids{"a", "b"}));
  auto c = join(s, "c", 0, 1.5);
  EXPECT_FALSE(c.round);
  EXPECT_NE(c.reason.find("spare"), std::string::npos);
  EXPECT_FALSE(s.heartbeat("c", 0, -1, 1.5).rejoin);
  // A fourth node makes a second unit: the world grows to 4 (the largest multiple of 2 <= 5).
  join(s, "d", 0, 2);
  EXPECT_EQ(s.open_round(), 2);
  EXPECT_TRUE(s.heartbeat("a", 1, 10, 2).rejoin);
  EXPECT_TRUE(s.heartbeat("b", 1, 10, 2).rejoin);
  join(s, "a", 1, 2.1);
  auto b = join(s, "b", 1, 2.2);  // 4 candidates = usable max: at once
  ASSERT_TRUE(b.round);
  EXPECT_EQ(b.round->number, 2);
  EXPECT_EQ(ids(*b.round), (Ids{"a", "b", "c", "d"}));
}

TEST(RdzvState, RanksSortByNodeIdAndSurvivorsKeepTheirOrder) {
  RdzvState s(params(1, 3, 1, 1));
  join(s, "n2", 0, 0);
  join(s, "n10", 0, 0);
  s.tick(1);
  EXPECT_EQ(ids(s.round()), (Ids{"n10", "n2"}));  // sorted by id, as strings
  // n1 sorts first but joins later: the survivors keep ranks 0 and 1.
  join(s, "n1", 0, 2);
  join(s, "n2", 1, 2);
  auto r = join(s, "n10", 1, 2);
  ASSERT_TRUE(r.round);
  EXPECT_EQ(ids(*r.round), (Ids{"n10", "n2", "n1"}));
  // n10 stops heartbeating: n2 and n1 keep their relative order.
  for (double t = 3; t <= 12; t += 1) {
    s.heartbeat("n2", 2, 0, t);
    s.heartbeat("n1", 2, 0, t);
  }
  s.tick(12.5);
  EXPECT_EQ(s.open_round(), 3);
  join(s, "n1", 2, 13);
  join(s, "n2", 2, 13);
  s.tick(14);
  EXPECT_EQ(ids(s.round()), (Ids{"n2", "n1"}));
  for (const auto& m : s.round().members) EXPECT_EQ(&m - s.round().members.data(), m.node_rank);
}

TEST(RdzvState, RankBasesWorldSizeAndStoreAddress) {
  RdzvState s(params(3, 3));
  join(s, "b", 0, 0, 4);
  join(s, "a", 0, 0, 2);
  auto r = join(s, "c", 0, 0, 1);
  ASSERT_TRUE(r.round);
  ASSERT_EQ(r.round->members.size(), 3u);
  EXPECT_EQ(r.round->members[0].rank_base, 0);  // a, 2 workers
  EXPECT_EQ(r.round->members[1].rank_base, 2);  // b, 4 workers
  EXPECT_EQ(r.round->members[2].rank_base, 6);  // c
  EXPECT_EQ(r.round->members[1].nproc, 4);
  EXPECT_EQ(r.round->world_size, 7);
  EXPECT_EQ(r.round->master_addr, "host-a");
  EXPECT_EQ(r.round->master_port, node("a").store_port);
}

TEST(RdzvState, SilentNodeIsDroppedAndTheWorldShrinks) {
  RdzvState s(params(1, 3, 1, 2, 10));
  join(s, "a", 0, 0);
  join(s, "b", 0, 0);
  join(s, "c", 0, 0);
  ASSERT_EQ(s.round().number, 1);
  s.heartbeat("a", 1, 5, 8);
  s.heartbeat("b", 1, 5, 8);
  s.tick(10);  // exactly the timeout: not yet
  EXPECT_FALSE(s.open());
  s.tick(10.5);
  EXPECT_TRUE(s.open());
  EXPECT_EQ(s.counters().nodes_dropped, 1);
  HeartbeatResult hb = s.heartbeat("a", 1, 6, 10.5);
  EXPECT_TRUE(hb.rejoin);
  EXPECT_NE(hb.reason.find("stopped heartbeating"), std::string::npos);
  EXPECT_TRUE(s.heartbeat("c", 1, 6, 10.5).rejoin);  // unknown now
  join(s, "b", 1, 11);
  join(s, "a", 1, 11);
  s.tick(13);
  EXPECT_EQ(s.round().number, 2);
  EXPECT_EQ(ids(s.round()), (Ids{"a", "b"}));
}

TEST(RdzvState, BelowMinNoRoundUntilANodeComes) {
  RdzvState s(params(2, 2, 1, 1, 5));
  join(s, "a", 0, 0);
  join(s, "b", 0, 0);
  s.heartbeat("a", 1, 0, 4);
  s.tick(6);  // b dropped
  join(s, "a", 1, 6);
  s.tick(100);  // a keeps joining, nobody else comes
  join(s, "a", 1, 100);
  EXPECT_TRUE(s.open());
  auto r = join(s, "c", 0, 101);
  ASSERT_TRUE(r.round);
  EXPECT_EQ(ids(*r.round), (Ids{"a", "c"}));
  EXPECT_EQ(r.round->number, 2);
}

TEST(RdzvState, DroppedNodeRejoinsAndTheWorldGrowsBack) {
  RdzvState s(params(2, 3, 1, 1, 5));
  for (auto id : {"a", "b", "c"}) join(s, id, 0, 0);
  s.heartbeat("a", 1, 0, 4);
  s.heartbeat("b", 1, 0, 4);
  s.tick(6);
  join(s, "a", 1, 6);
  join(s, "b", 1, 6);
  s.tick(7);
  ASSERT_EQ(ids(s.round()), (Ids{"a", "b"}));
  // c comes back (its network healed): it is unknown, so it must join; that grows the world.
  EXPECT_TRUE(s.heartbeat("c", 1, 0, 8).rejoin);
  EXPECT_FALSE(join(s, "c", 1, 8).round);
  EXPECT_EQ(s.open_round(), 3);
  EXPECT_TRUE(s.heartbeat("a", 2, 0, 8).rejoin);
  join(s, "a", 2, 8);
  auto b = join(s, "b", 2, 8);
  ASSERT_TRUE(b.round);
  EXPECT_EQ(ids(*b.round), (Ids{"a", "b", "c"}));
  EXPECT_EQ(s.counters().nodes_joined, 4);  // a, b, c, and c again
}

TEST(RdzvState, SpareDoesNotDisturbAFullWorld) {
  RdzvState s(params(1, 2));
  join(s, "a", 0, 0);
  join(s, "b", 0, 0);
  s.take_events();
  EXPECT_FALSE(join(s, "c", 0, 1).round);
  EXPECT_FALSE(s.open());
  EXPECT_FALSE(s.heartbeat("a", 1, 0, 1).rejoin);
  auto events = s.take_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<NodeJoined>(events[0]));
  // The spare takes a leaving member's place.
  EXPECT_TRUE(s.leave("a", 2));
  join(s, "b", 1, 2);
  auto r = join(s, "c", 0, 2);
  ASSERT_TRUE(r.round);
  EXPECT_EQ(ids(*r.round), (Ids{"b", "c"}));
  EXPECT_EQ(s.counters().nodes_left, 1);
}

TEST(RdzvState, MemberJoiningAgainStartsANewRoundWithTheSameMembers) {
  RdzvState s(params(2, 2));
  join(s, "a", 0, 0);
  join(s, "b", 0, 0);
  EXPECT_FALSE(s.heartbeat("b", 1, 3, 1).rejoin);
  EXPECT_FALSE(join(s, "a", 1, 2).round);  // a's workers failed
  EXPECT_EQ(s.counters().restarts_requested, 1);
  HeartbeatResult hb = s.heartbeat("b", 1, 4, 2);
  EXPECT_TRUE(hb.rejoin);
  EXPECT_NE(hb.reason.find("joined again"), std::string::npos);
  auto b = join(s, "b", 1, 2.5);
  ASSERT_TRUE(b.round);
  EXPECT_EQ(b.round->number, 2);
  auto a = join(s, "a", 1, 2.6);
  ASSERT_TRUE(a.round);
  EXPECT_EQ(ids(*a.round), (Ids{"a", "b"}));
  EXPECT_FALSE(s.heartbeat("a", 2, 0, 3).rejoin);
  EXPECT_TRUE(s.heartbeat("a", 1, 0, 3).rejoin);  // still running round 1: stale
}

TEST(RdzvState, RestartedAgentNeverGetsTheStaleRound) {
  RdzvState s(params(2, 2));
  join(s, "a", 0, 0);
  join(s, "b", 0, 0);
  // a's agent restarted: it has seen no round, but its incarnation differs.
  auto r = s.join(node("a", 1, 2), 0, 1);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->round);
  EXPECT_EQ(s.open_round(), 2);
}

TEST(RdzvState, PollingEmitsNoEvents) {
  RdzvState s(params(2, 2));
  join(s, "a", 0, 0);
  EXPECT_EQ(s.take_events().size(), 1u);
  for (int i = 0; i < 5; ++i) join(s, "a", 0, i);
  s.heartbeat("a", 0, 0, 6);
  EXPECT_TRUE(s.take_events().empty());
}

TEST(RdzvState, LeaveAndHeartbeatOfUnknownNodes) {
  RdzvState s(params(1, 1));
  EXPECT_FALSE(s.leave("ghost", 0));
  HeartbeatResult hb = s.heartbeat("ghost", 0, 0, 0);
  EXPECT_TRUE(hb.rejoin);
  EXPECT_NE(hb.reason.find("not known"), std::string::npos);
}

TEST(RdzvState, RefusesNodesBeyondTheLimit) {
  RdzvState s(params(1, 1, 1, 5, 1000));
  for (size_t i = 0; i < s.max_known_nodes(); ++i)
    ASSERT_TRUE(s.join(node("n" + std::to_string(i)), 0, 0).ok());
  auto r = s.join(node("one-too-many"), 0, 0);
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(s.join(node("n0"), 1, 0).ok());  // known nodes still may
}

TEST(RdzvState, FailureReportsAreCountedTruncatedAndCapped) {
  RdzvState s(params(1, 1));
  for (size_t i = 0; i < kRecentFailures + 3; ++i)
    s.report_failure(
        {"a", int(i), ExitStatus::Exited(1), std::string(kMaxDiagnosisLength + 9, 'x')});
  s.report_failure({"a", 7, ExitStatus::Signaled(9), "OOM killed"});
  RdzvStatus st = s.status(0);
  EXPECT_EQ(st.counters.failures_reported, int64_t(kRecentFailures + 4));
  ASSERT_EQ(st.recent_failures.size(), kRecentFailures);
  EXPECT_EQ(st.recent_failures.front().diagnosis.size(), kMaxDiagnosisLength);
  EXPECT_EQ(st.recent_failures.back().exit, ExitStatus::Signaled(9));
}

TEST(RdzvState, StatusShowsNodes) {
  RdzvState s(params(1, 2, 1, 100));
  join(s, "a", 0, 0);
  join(s, "b", 0, 0);
  join(s, "c", 0, 1);
  s.heartbeat("a", 1, 42, 2);
  RdzvStatus st = s.status(3);
  ASSERT_EQ(st.nodes.size(), 3u);
  EXPECT_EQ(st.nodes[0].node.node_id, "a");
  EXPECT_EQ(st.nodes[0].last_step, 42);
  EXPECT_DOUBLE_EQ(st.nodes[0].silent_s, 1);
  EXPECT_TRUE(st.nodes[0].in_round);
  EXPECT_FALSE(st.nodes[2].in_round);
  EXPECT_TRUE(st.nodes[2].candidate);
  EXPECT_EQ(st.round.number, 1);
}

TEST(RdzvState, ReplayGivesBackTheSameState) {
  RdzvState s(params(2, 3, 1, 1, 5));
  std::vector<RdzvEvent> log;
  auto keep = [&] {
    for (auto& e : s.take_events()) log.push_back(std::move(e));
  };
  for (auto id : {"c", "a", "b"}) join(s, id, 0, 0);
  keep();
  s.heartbeat("a", 1, 0, 4);
  s.heartbeat("b", 1, 0, 4);
  s.tick(6);  // c dropped
  join(s, "b", 1, 6);
  join(s, "a", 1, 6);
  s.tick(7.5);
  join(s, "d", 0, 8);  // opens round 3
  s.report_failure({"a", 1, ExitStatus::Exited(3), "boom"});
  keep();

  RdzvState r(params(2, 3, 1, 1, 5));
  for (const auto& e : log) ASSERT_TRUE(r.replay(e, 100).ok());
  EXPECT_TRUE(r.take_events().empty());
  EXPECT_EQ(r.round().number, s.round().number);
  EXPECT_EQ(ids(r.round()), ids(s.round()));
  EXPECT_EQ(r.round().master_port, s.round().master_port);
  EXPECT_EQ(r.open_round(), s.open_round());
  const RdzvStatus a = s.status(8), b = r.status(100);
  ASSERT_EQ(a.nodes.size(), b.nodes.size());
  for (size_t i = 0; i < a.nodes.size(); ++i) {
    EXPECT_EQ(a.nodes[i].node, b.nodes[i].node);
    EXPECT_EQ(a.nodes[i].candidate, b.nodes[i].candidate);
  }
  EXPECT_EQ(b.counters.nodes_dropped, 1);
  EXPECT_EQ(b.counters.rounds_completed, 2);
  EXPECT_EQ(b.counters.nodes_joined, 4);
  EXPECT_EQ(b.counters.failures_reported, 1);
  EXPECT_EQ(b.open_reason, a.open_reason);
  // The replayed state goes on like the original: a and b join round 3 with d.
  join(r, "a", 2, 101);
  join(r, "b", 2, 101);
  EXPECT_EQ(ids(r.round()), (Ids{"a", "b", "d"}));
}

TEST(RdzvState, ReplayRejectsEventsThatDoNotFit) {
  RdzvState s(params(1, 2));
  EXPECT_EQ(s.replay(NodeRemoved{"x", RemoveReason::kLeft}, 0).code(), StatusCode::kCorrupt);
  EXPECT_EQ(s.replay(RoundOpened{1, false, "x"}, 0).code(), StatusCode::kCorrupt);  // 1 is open
  Round r;
  r.number = 2;
  r.members.push_back({"a", "h", 1, 0, 0});
  EXPECT_EQ(s.replay(RoundCompleted{r}, 0).code(), StatusCode::kCorrupt);
  r.number = 1;
  EXPECT_NE(s.replay(RoundCompleted{r}, 0).message().find("unknown member"), std::string::npos);
  NodeInfo bad = node("a");
  bad.nproc = -1;
  EXPECT_EQ(s.replay(NodeJoined{bad}, 0).code(), StatusCode::kCorrupt);
}

}  // namespace
}  // namespace cairn::elastic

namespace cairn::elastic {
namespace {

// A node whose workers keep crashing is excluded; lost peers and outside kills do not count.
TEST(RdzvState, RepeatedFailuresMarkANodeFaulty) {
  RdzvParams p = params(1, 2, 1, 5, 10);
  p.max_node_failures = 2;
  RdzvState s(p);
  join(s, "a", 0, 0);
  auto r = join(s, "b", 0, 0);
  ASSERT_TRUE(r.round);
  s.report_failure({"b", 1, ExitStatus::Exited(1), "peer_lost: another rank went away"});
  s.report_failure({"b", 1, ExitStatus::Signaled(9), "killed: by SIGKILL"});
  s.report_failure({"b", 1, ExitStatus::Signaled(11), "crash: crashed with SIGSEGV"});
  EXPECT_TRUE(s.join(node("b"), 0, 1).ok());  // one failure that counts: still welcome
  s.report_failure({"b", 1, ExitStatus::Signaled(11), "crash: crashed with SIGSEGV"});
  auto refused = s.join(node("b"), 0, 2);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("marked faulty after 2 failures"), std::string::npos)
      << refused.status().message();
  // The others go on without it.
  join(s, "a", 0, 3);
  auto a = join(s, "a", 0, 9);  // after --rdzv-wait
  ASSERT_TRUE(a.round);
  EXPECT_EQ(ids(*a.round), Ids({"a"}));
  EXPECT_FALSE(failure_counts_against_node("user_error: bad input"));
  EXPECT_FALSE(failure_counts_against_node("master_lost: the master restarted: ..."));
  EXPECT_TRUE(failure_counts_against_node("hang: no progress"));
}

TEST(RdzvState, ExcludedNodeLeavesTheRoundAndIsRefusedAfterReplayToo) {
  RdzvState s(params(2, 3, 1, 5, 100));
  join(s, "a", 0, 0);
  join(s, "b", 0, 0);
  auto r = join(s, "c", 0, 0);
  ASSERT_TRUE(r.round);
  s.exclude("c", "failed the node check: round 1 (with b): all-reduce timed out", 1);
  EXPECT_TRUE(s.open());
  EXPECT_EQ(s.node("c"), nullptr);
  ASSERT_NE(s.node("a"), nullptr);
  EXPECT_EQ(s.node("a")->host, "host-a");
  auto refused = s.join(node("c"), 0, 2);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("excluded from the job: failed the node check"),
            std::string::npos)
      << refused.status().message();
  join(s, "a", r.round->number, 2);
  join(s, "b", r.round->number, 2);
  s.tick(8);
  auto b = join(s, "b", r.round->number, 8);
  ASSERT_TRUE(b.round);
  EXPECT_EQ(ids(*b.round), Ids({"a", "b"}));
  // The exclusion survives the journal.
  RdzvState back(params(2, 3, 1, 5, 100));
  for (const auto& e : s.take_events()) ASSERT_TRUE(back.replay(e, 5).ok());
  EXPECT_FALSE(back.join(node("c"), 0, 6).ok());
}

}  // namespace
}  // namespace cairn::elastic

namespace cairn::elastic {
namespace {

TEST(RdzvState, HeldGrowthLetsANewNodeWaitUntilReleased) {
  RdzvState s(params(1, 3, 1, 0, 100));
  auto a = join(s, "a", 0, 0);
  ASSERT_TRUE(a.round);
  s.hold_growth(true, 1);
  auto b = join(s, "b", 0, 1);
  EXPECT_FALSE(b.round);
  EXPECT_FALSE(s.open());  // a's round goes on
  EXPECT_NE(b.reason.find("waiting as a spare"), std::string::npos) << b.reason;
  s.hold_growth(false, 2);
  EXPECT_TRUE(s.open());
  auto a2 = join(s, "a", a.round->number, 2);
  ASSERT_TRUE(a2.round);
  EXPECT_EQ(ids(*a2.round), Ids({"a", "b"}));
}

}  // namespace
}  // namespace cairn::elastic

namespace cairn::elastic {
namespace {

// A growing world waits for the live members of the previous round (they stop their workers
// and persist first) instead of starting without them; a silent one is waited for only up to a
// heartbeat timeout.
TEST(RdzvState, GrowthWaitsForTheLiveMembersOfThePreviousRound) {
  RdzvState s(params(1, 3, 1, 1, 10));
  join(s, "b", 0, 0);
  auto first = join(s, "b", 0, 2);
  ASSERT_TRUE(first.round);
  EXPECT_EQ(ids(*first.round), Ids({"b"}));
  join(s, "a", 0, 3);  // opens round 2 to grow
  EXPECT_TRUE(s.open());
  s.tick(6);  // past --rdzv-wait: b is still on its way back
  EXPECT_FALSE(join(s, "a", 0, 6).round);
  s.heartbeat("b", first.round->number, 5, 7);
  auto b = join(s, "b", first.round->number, 8);
  ASSERT_TRUE(b.round);
  EXPECT_EQ(ids(*b.round), Ids({"b", "a"}));  // b keeps rank 0
  // A member that never comes back is waited for one heartbeat timeout at most.
  join(s, "c", 0, 9);  // round 3 opens at 9
  for (double t = 9; t < 19; t += 1) {
    s.heartbeat("a", b.round->number, 6, t);
    s.heartbeat("b", b.round->number, 6, t);
    s.heartbeat("c", 0, -1, t);
  }
  join(s, "a", b.round->number, 19);  // b keeps heartbeating but never joins
  s.heartbeat("b", b.round->number, 6, 19.5);
  s.tick(19.6);
  auto c = join(s, "c", 0, 19.7);
  ASSERT_TRUE(c.round) << c.reason << " open=" << s.open() << " round=" << s.round().number;
  EXPECT_EQ(ids(*c.round), Ids({"a", "c"}));
}

// --- per-request work independent of the job's size --------------------------------------------

// Seconds per call of `op` (the least of 5 runs of `reps` calls, so that a busy machine's
// interruptions do not count).
template <class Op>
double seconds_per_call(int reps, Op op) {
  double best = 1e9;
  for (int run = 0; run < 5; ++run) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) op(i);
    best = std::min(
        best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps);
  }
  return best;
}

struct CallCosts {
  double member_poll = 0;     // a member fetching the round it was given
  double heartbeat = 0;       // a member's heartbeat
  double spare_join = 0;      // a node beyond max polling as a spare
  double candidate_join = 0;  // a candidate polling while the round gathers
};

// The costs of the calls a job of `members` nodes makes, in a round that completed and in one
// that is gathering.
CallCosts costs_at(int members) {
  auto id = [](int i) {
    char b[24];
    std::snprintf(b, sizeof b, "node-%06d", i);
    return std::string(b);
  };
  CallCosts c;
  {
    RdzvState s(params(members, members, 1, 0, 1e9));
    for (int i = 0; i < members; ++i) join(s, id(i), 0, 1);
    EXPECT_EQ(s.round().members.size(), size_t(members));
    join(s, "spare", 0, 1);
    s.take_events();
    c.member_poll =
        seconds_per_call(2000, [&](int i) { (void)s.join(node(id(i % members)), 0, 2); });
    c.heartbeat = seconds_per_call(
        2000, [&](int i) { (void)s.heartbeat(id(i % members), s.round().number, i, 2); });
    c.spare_join = seconds_per_call(2000, [&](int) { (void)s.join(node("spare"), 0, 2); });
    EXPECT_TRUE(s.take_events().empty());  // polls change nothing
  }
  {
    RdzvState s(params(members + 1, members + 1, 1, 0, 1e9));  // never full
    for (int i = 0; i < members; ++i) join(s, id(i), 0, 1);
    EXPECT_TRUE(s.open());
    c.candidate_join =
        seconds_per_call(2000, [&](int i) { (void)s.join(node(id(i % members)), 0, 2); });
  }
  return c;
}

// Each call's cost may grow like log N (a map lookup), not like N: at 10,000 members within 20x
// of 10 members (a linear scan would make it about 1,000x; log N about 4x).
TEST(RdzvState, ACallCostsAboutTheSameAtTenAndTenThousandMembers) {
  const CallCosts small = costs_at(10);
  const CallCosts large = costs_at(10000);
  const std::pair<const char*, std::pair<double, double>> rows[] = {
      {"member poll", {small.member_poll, large.member_poll}},
      {"heartbeat", {small.heartbeat, large.heartbeat}},
      {"spare join", {small.spare_join, large.spare_join}},
      {"candidate join", {small.candidate_join, large.candidate_join}},
  };
  for (const auto& [what, t] : rows) {
    std::printf("%-15s 10 members: %6.2f us  10,000 members: %6.2f us  ratio %.1f\n", what,
                t.first * 1e6, t.second * 1e6, t.second / t.first);
    EXPECT_LT(t.second / t.first, 20.0) << what;
  }
}

// Waiting on a busy master does not count against a node: a refused call (touch) restarts its
// silence, and the time the master stalled is not counted as silence.
TEST(RdzvState, TimeTheMasterCouldNotListenIsNotANodesSilence) {
  RdzvState s(params(2, 2, 1, 0, /*hb=*/5));
  join(s, "a", 0, 0);
  join(s, "b", 0, 0);
  ASSERT_EQ(s.round().members.size(), 2u);
  s.tick(4);
  EXPECT_TRUE(s.touch("a", 4));  // its heartbeat was refused: the master was busy
  EXPECT_FALSE(s.touch("nobody", 4));
  s.add_stall(3);  // and then the master stalled for 3 s
  s.tick(8);       // b: 8 s since seen, 3 of them the master's: 5, not over the timeout
  EXPECT_NE(s.node("b"), nullptr);
  EXPECT_NE(s.node("a"), nullptr);
  s.tick(8.5);  // b: 5.5 s of its own silence
  EXPECT_EQ(s.node("b"), nullptr);
  EXPECT_NE(s.node("a"), nullptr);  // 4.5 s since the refused call, 3 of them stalled
  s.tick(12.5);                     // a: 8.5 - 3 = 5.5
  EXPECT_EQ(s.node("a"), nullptr);
}

}  // namespace
}  // namespace cairn::elastic
