// The shard service without gRPC: dataset creation rules, request validation, the step quota
// split over ranks, completion, snapshot/restore and the errors a malformed request gets.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "elastic/master/shard_service_impl.h"

namespace cairn::elastic {
namespace {

ShardParams params(int64_t samples = 40, int64_t shard = 4, int64_t epochs = 1) {
  ShardParams p;
  p.num_samples = samples;
  p.shard_size = shard;
  p.num_epochs = epochs;
  p.seed = 7;
  return p;
}

ShardRequest ask(const std::string& worker, int64_t want, int64_t step = 0, int rank = 0,
                 int world = 1, int quota = 0) {
  ShardRequest r;
  r.worker = worker;
  r.want = want;
  r.step = step;
  r.rank = rank;
  r.world = world;
  r.step_quota = quota;
  return r;
}

TEST(ShardService, CreateIsIdempotentForTheSameParametersAndRefusesOthers) {
  ShardService s;
  auto first = s.create("train", params());
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_TRUE(*first);
  auto again = s.create("train", params(40, 4, 3));  // more epochs: a resumed job
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);
  auto other = s.create("train", params(40, 8));
  ASSERT_EQ(other.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(other.status().message().find("shards of 4"), std::string::npos);
  EXPECT_NE(other.status().message().find("asked: 40 samples, shards of 8"), std::string::npos);
  EXPECT_EQ(s.create("", params()).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.create(std::string(ShardService::kMaxDatasetName + 1, 'd'), params()).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(s.create("bad", params(40, 0)).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.datasets(), 1u);
}

TEST(ShardService, ServesAtMostItsLimitOfDatasets) {
  ShardService s;
  for (size_t i = 0; i < ShardService::kMaxDatasets; ++i)
    ASSERT_TRUE(s.create("d" + std::to_string(i), params()).ok());
  auto over = s.create("one-more", params());
  EXPECT_EQ(over.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(over.status().message().find("at most 64"), std::string::npos);
}

TEST(ShardService, UnknownDatasetsAreNotFoundEverywhere) {
  ShardService s;
  EXPECT_EQ(s.get("nope", ask("w", 1), 0).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(s.release("nope", "w").code(), StatusCode::kNotFound);
  EXPECT_EQ(s.snapshot("nope", 0).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(s.restore("nope", nlohmann::json::object()).code(), StatusCode::kNotFound);
  EXPECT_EQ(s.extend("nope", 10, false).code(), StatusCode::kNotFound);
  EXPECT_NE(s.get("nope", ask("w", 1), 0).status().message().find("restarted master"),
            std::string::npos);
}

TEST(ShardService, MalformedRequestsAreRefusedNamingTheField) {
  ShardService s;
  ASSERT_TRUE(s.create("train", params()).ok());
  auto msg = [&](const ShardRequest& r) { return s.get("train", r, 0).status().message(); };
  EXPECT_NE(msg(ask("", 1)).find("worker name"), std::string::npos);
  EXPECT_NE(msg(ask(std::string(ShardService::kMaxWorkerName + 1, 'w'), 1)).find("worker name"),
            std::string::npos);
  EXPECT_NE(msg(ask("w", -1)).find("want"), std::string::npos);
  EXPECT_NE(msg(ask("w", ShardService::kMaxWant + 1)).find("want"), std::string::npos);
  EXPECT_NE(msg(ask("w", 1, 1, 2, 2, 4)).find("rank < world"), std::string::npos);
  EXPECT_NE(msg(ask("w", 1, 1, 0, 2, 0)).find("step_quota"), std::string::npos);
  EXPECT_NE(msg(ask("w", 1, -1)).find("step >= 1"), std::string::npos);
  // Completing a shard the worker never held is the caller's error, not a crash.
  ShardRequest bogus = ask("w", 0);
  bogus.done.push_back({0, 3, 12, 16});
  EXPECT_FALSE(s.get("train", bogus, 0).ok());
}

TEST(ShardService, AStepQuotaIsSplitOverRanksAndEveryShardGoesOutOnce) {
  ShardService s;
  ASSERT_TRUE(s.create("train", params(40, 4)).ok());  // 10 shards
  std::set<int64_t> starts;
  // Step 1, quota 3 over 2 ranks: rank 0 takes two, rank 1 the last; then the step is full.
  auto r0 = s.get("train", ask("w0", 2, 1, 0, 2, 3), 0);
  ASSERT_TRUE(r0.ok()) << r0.status().ToString();
  ASSERT_EQ(r0->shards.size(), 2u);
  auto r1 = s.get("train", ask("w1", 2, 1, 1, 2, 3), 0);
  ASSERT_TRUE(r1.ok());
  ASSERT_EQ(r1->shards.size(), 1u);
  EXPECT_TRUE(r1->step_full);
  for (const auto* r : {&*r0, &*r1})
    for (const Shard& sh : r->shards) {
      EXPECT_EQ(sh.size(), 4);
      EXPECT_TRUE(starts.insert(sh.start).second) << "shard at " << sh.start << " twice";
    }
  EXPECT_EQ(r1->stats.doing, 3);
  // Both complete step 1's shards with their next request; the stats say so.
  ShardRequest done0 = ask("w0", 0);
  done0.done = r0->shards;
  done0.done_step = 1;
  ASSERT_TRUE(s.get("train", done0, 1).ok());
  ShardRequest done1 = ask("w1", 0);
  done1.done = r1->shards;
  done1.done_step = 1;
  auto after = s.get("train", done1, 1);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->stats.done, 3);
  EXPECT_EQ(after->stats.doing, 0);
  EXPECT_EQ(after->stats.done_samples, 12);
}

TEST(ShardService, ASnapshotRestoresTheConsumptionOfItsStep) {
  ShardService s;
  ASSERT_TRUE(s.create("train", params(40, 4)).ok());
  auto got = s.get("train", ask("w", 2, 1, 0, 1, 2), 0);
  ASSERT_TRUE(got.ok());
  ShardRequest done = ask("w", 0);
  done.done = got->shards;
  done.done_step = 1;
  ASSERT_TRUE(s.get("train", done, 0).ok());
  auto snap = s.snapshot("train", 1);
  ASSERT_TRUE(snap.ok());
  // Step 2 consumes more; restoring step 1's snapshot gives those shards back.
  auto step2 = s.get("train", ask("w", 2, 2, 0, 1, 2), 0);
  ASSERT_TRUE(step2.ok());
  ASSERT_EQ(step2->shards.size(), 2u);
  ASSERT_TRUE(s.restore("train", *snap).ok());
  auto again = s.get("train", ask("w2", 2, 2, 0, 1, 2), 0);
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->shards.size(), 2u);
  EXPECT_EQ(again->shards[0].start, step2->shards[0].start);
  EXPECT_EQ(again->shards[1].start, step2->shards[1].start);
  EXPECT_EQ(again->stats.done, 2);
  // A snapshot that does not fit the dataset is corrupt, and nothing changes.
  EXPECT_EQ(s.restore("train", nlohmann::json{{"bogus", 1}}).code(), StatusCode::kCorrupt);
}

TEST(ShardService, ReleasedAndExpiredLeasesGoBack) {
  ShardService s;
  ShardParams p = params(8, 4);
  p.lease_s = 5;
  ASSERT_TRUE(s.create("train", p).ok());
  auto a = s.get("train", ask("a", 2), 0);
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(a->shards.size(), 2u);
  auto none = s.get("train", ask("b", 1), 0);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->shards.empty());
  EXPECT_FALSE(none->reason.empty());
  ASSERT_TRUE(s.release("train", "a").ok());
  auto b = s.get("train", ask("b", 1), 1);
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(b->shards.size(), 1u);
  // b goes silent: at its lease's end the shard is handed out again.
  s.tick(10);
  auto c = s.get("train", ask("c", 2), 10);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->shards.size(), 2u);
}

TEST(ShardService, AStreamGrowsAndEnds) {
  ShardService s;
  ShardParams p = params(8, 4);
  p.streaming = true;
  ASSERT_TRUE(s.create("stream", p).ok());
  auto first = s.get("stream", ask("w", 4), 0);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->shards.size(), 2u);
  ASSERT_TRUE(s.extend("stream", 14, false).ok());
  auto more = s.get("stream", ask("w", 4), 0);
  ASSERT_TRUE(more.ok());
  EXPECT_EQ(more->shards.size(), 1u);  // 12..16 is not there yet
  ASSERT_TRUE(s.extend("stream", 14, true).ok());
  auto tail = s.get("stream", ask("w", 4), 0);
  ASSERT_TRUE(tail.ok());
  ASSERT_EQ(tail->shards.size(), 1u);
  EXPECT_EQ(tail->shards[0].size(), 2);              // the last partial shard is cut at the end
  EXPECT_FALSE(s.extend("stream", 10, false).ok());  // a closed stream does not grow
}

}  // namespace
}  // namespace cairn::elastic
