// Tests of the shard service's queues: every sample exactly once per epoch, in the seeded order;
// leases, dead workers and retry limits; snapshot/restore as a rollback; streaming datasets.
#include "cairn/elastic/shard_state.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "cairn/data/local_sampler.h"

namespace cairn::elastic {
namespace {

ShardParams params(int64_t n, int64_t size, int64_t epochs = 1) {
  ShardParams p;
  p.num_samples = n;
  p.shard_size = size;
  p.seed = 7;
  p.num_epochs = epochs;
  p.lease_s = 10;
  p.max_attempts = 3;
  return p;
}

// Acquires and completes shards round-robin over `workers` until none is left; returns how many
// times each (epoch, sample) was completed.
std::map<std::pair<int64_t, int64_t>, int> drain(ShardState& s, int workers, double now = 0) {
  std::map<std::pair<int64_t, int64_t>, int> seen;
  for (int i = 0;; ++i) {
    const std::string w = "w" + std::to_string(i % workers);
    AcquireResult r = s.acquire(w, now);
    if (!r.shard) {
      EXPECT_TRUE(r.exhausted) << r.reason;
      break;
    }
    for (int64_t id = r.shard->start; id < r.shard->end; ++id) ++seen[{r.shard->epoch, id}];
    EXPECT_TRUE(s.complete(w, *r.shard).ok());
  }
  return seen;
}

TEST(ShardParams, Validation) {
  EXPECT_TRUE(validate_shard_params(params(10, 3)).ok());
  EXPECT_NE(validate_shard_params(params(10, 0)).message().find("shard_size"), std::string::npos);
  EXPECT_NE(validate_shard_params(params(0, 1)).message().find("num_samples"), std::string::npos);
  EXPECT_NE(validate_shard_params(params(5, 1, 0)).message().find("num_epochs"), std::string::npos);
  EXPECT_NE(validate_shard_params(params(int64_t(1) << 30, 1)).message().find("larger shard_size"),
            std::string::npos);
  EXPECT_FALSE(validate_shard_params(params(10, INT64_MAX)).ok());
  EXPECT_FALSE(validate_shard_params(params(INT64_MAX, 1 << 30)).ok());
  EXPECT_FALSE(validate_shard_params(params(10, 1, INT64_MAX)).ok());
  ShardParams p = params(5, 1, 2);
  p.streaming = true;
  EXPECT_NE(validate_shard_params(p).message().find("one pass"), std::string::npos);
  p.num_epochs = 1;
  p.num_samples = 0;
  ShardState stream(p);
  EXPECT_EQ(stream.extend(INT64_MAX).code(), StatusCode::kInvalidArgument);  // no endless cut
  EXPECT_EQ(stream.stats().todo, 0);
}

TEST(ShardState, EverySampleOncePerEpochInTheSeededShardOrder) {
  ShardState s(params(103, 10, 2));  // 11 shards, the last one of 3 samples
  AcquireResult first = s.acquire("w0", 0);
  ASSERT_TRUE(first.shard);
  EXPECT_EQ(first.shard->index, data::epoch_permutation(11, 7, 0)[0]);
  ASSERT_TRUE(s.complete("w0", *first.shard).ok());
  auto seen = drain(s, 3);
  for (int64_t id = first.shard->start; id < first.shard->end; ++id) ++seen[{0, id}];
  EXPECT_EQ(seen.size(), 206u);
  for (const auto& [key, n] : seen) EXPECT_EQ(n, 1) << key.first << "/" << key.second;
  ShardStats st = s.stats();
  EXPECT_TRUE(st.finished);
  EXPECT_EQ(st.done, 22);
  EXPECT_EQ(st.done_samples, 206);
  EXPECT_EQ(st.epoch, 1);
}

TEST(ShardState, ADeadWorkersShardsGoBackAndTheRetryLimitDropsAShard) {
  ShardState s(params(40, 10));
  auto a = s.acquire("a", 0), b = s.acquire("b", 0);
  ASSERT_TRUE(a.shard && b.shard);
  s.release_worker("a");
  EXPECT_EQ(s.stats().todo, 3);
  // The released shard comes first again, to someone else.
  auto c = s.acquire("c", 1);
  ASSERT_TRUE(c.shard);
  EXPECT_EQ(*c.shard, *a.shard);
  EXPECT_EQ(s.complete("a", *a.shard).code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(s.complete("c", *c.shard).ok());
  EXPECT_TRUE(s.complete("c", *c.shard).ok());  // already done: fine
  // b's shard keeps failing: after max_attempts hand-outs it is dropped.
  for (int i = 0; i < 2; ++i) {
    s.release_worker(i == 0 ? "b" : "d");
    auto d = s.acquire("d", 2);
    ASSERT_TRUE(d.shard);
    EXPECT_EQ(*d.shard, *b.shard);
  }
  s.release_worker("d");
  EXPECT_EQ(s.stats().failed, 1);
  auto rest = drain(s, 2, 3);
  EXPECT_EQ(rest.size(), 20u);  // the two shards nobody took yet
}

TEST(ShardState, ExpiredLeasesComeBackAndRenewalKeepsThem) {
  ShardState s(params(20, 10));
  auto a = s.acquire("a", 0), b = s.acquire("b", 0);
  ASSERT_TRUE(a.shard && b.shard);
  EXPECT_FALSE(s.acquire("c", 5).shard);  // both held
  s.renew("a", 8);
  s.tick(12);  // b's lease (until 10) ran out, a's (until 18) did not
  EXPECT_EQ(s.stats().expired, 1);
  auto c = s.acquire("c", 12);
  ASSERT_TRUE(c.shard);
  EXPECT_EQ(*c.shard, *b.shard);
  AcquireResult none = s.acquire("d", 13);
  EXPECT_FALSE(none.shard);
  EXPECT_FALSE(none.exhausted);
  EXPECT_NE(none.reason.find("held by workers"), std::string::npos) << none.reason;
  EXPECT_TRUE(s.complete("a", *a.shard).ok());
  EXPECT_TRUE(s.complete("c", *c.shard).ok());
  EXPECT_TRUE(s.acquire("d", 14).exhausted);
}

TEST(ShardState, RestoreIsARollbackToTheSnapshot) {
  ShardState s(params(100, 10, 2));
  std::set<int64_t> before;  // samples completed by the snapshot's "step"
  for (int i = 0; i < 4; ++i) {
    auto r = s.acquire("w", 0);
    for (int64_t id = r.shard->start; id < r.shard->end; ++id) before.insert(id);
    ASSERT_TRUE(s.complete("w", *r.shard).ok());
  }
  auto held = s.acquire("w", 0);  // in flight at the snapshot: not trained by it
  ASSERT_TRUE(held.shard);
  const nlohmann::json snap = s.snapshot();
  // The run goes on to the end of both epochs, then fails.
  ASSERT_TRUE(s.complete("w", *held.shard).ok());
  drain(s, 2);
  ShardState back(params(100, 10, 2));
  ASSERT_TRUE(back.restore(snap).ok());
  EXPECT_EQ(back.stats().done, 4);
  auto seen = drain(back, 3);
  for (int64_t id = 0; id < 100; ++id)
    EXPECT_EQ(seen.count({0, id}) ? 1 : 0, before.count(id) ? 0 : 1) << id;
  EXPECT_EQ(seen.count({0, held.shard->start}), 1u);
  for (int64_t id = 0; id < 100; ++id) EXPECT_EQ(seen[std::make_pair(int64_t(1), id)], 1);
  // The same state restored in place works too.
  ASSERT_TRUE(s.restore(snap).ok());
  EXPECT_EQ(s.stats().todo, 6);
}

TEST(ShardState, StepQuotaLetsFastRanksTakeMoreButLeavesEveryRankOne) {
  ShardState s(params(1000, 4));
  bool full = false;
  // Quota 6 over world 3: rank 0 is fast and asks first, again and again.
  int rank0 = 0;
  while (s.acquire_for_step("r0", 1, 0, 3, 6, 0, &full).shard) ++rank0;
  EXPECT_TRUE(full);
  EXPECT_EQ(rank0, 4);  // 6 minus one kept for each of ranks 1 and 2
  auto r1 = s.acquire_for_step("r1", 1, 1, 3, 6, 0, &full);
  ASSERT_TRUE(r1.shard);
  EXPECT_FALSE(s.acquire_for_step("r1", 1, 1, 3, 6, 0, &full).shard);  // rank 2's is kept
  EXPECT_NE(s.acquire_for_step("r1", 1, 1, 3, 6, 0, &full).reason.find("5 of 6 taken"),
            std::string::npos);
  EXPECT_TRUE(s.acquire_for_step("r2", 1, 2, 3, 6, 0, &full).shard);
  EXPECT_FALSE(s.acquire_for_step("r2", 1, 2, 3, 6, 0, &full).shard);
  EXPECT_TRUE(full);
  // The next step has its own quota.
  EXPECT_TRUE(s.acquire_for_step("r1", 2, 1, 3, 6, 0, &full).shard);
  EXPECT_EQ(s.stats().doing, 7);
}

TEST(ShardState, SnapshotAtAStepLeavesOutLaterSteps) {
  ShardState s(params(100, 10));
  auto a = s.acquire("w", 0), b = s.acquire("w", 0);
  ASSERT_TRUE(s.complete("w", *a.shard, 5).ok());
  ASSERT_TRUE(s.complete("w", *b.shard, 6).ok());
  ShardState back(params(100, 10));
  ASSERT_TRUE(back.restore(s.snapshot(5)).ok());
  EXPECT_EQ(back.stats().done, 1);
  EXPECT_EQ(back.stats().todo, 9);
  ASSERT_TRUE(back.restore(s.snapshot()).ok());
  EXPECT_EQ(back.stats().done, 2);
}

TEST(ShardState, SnapshotsOfAnotherDatasetAreRefused) {
  ShardState s(params(100, 10));
  nlohmann::json snap = s.snapshot();
  ShardState other(params(100, 5));
  EXPECT_EQ(other.restore(snap).code(), StatusCode::kCorrupt);
  ShardState bigger(params(200, 10));
  EXPECT_NE(bigger.restore(snap).message().find("100 samples"), std::string::npos);
  snap["done"]["0"] = {99};
  EXPECT_NE(s.restore(snap).message().find("does not exist"), std::string::npos);
  EXPECT_EQ(s.restore(nlohmann::json::array()).code(), StatusCode::kCorrupt);
  EXPECT_EQ(s.restore({{"version", 1}}).code(), StatusCode::kCorrupt);
  EXPECT_EQ(s.stats().todo, 10);  // nothing half-restored
}

TEST(ShardState, StreamingCutsShardsAsTheFileGrowsAndEndsWhenItCloses) {
  ShardParams p = params(0, 10);
  p.streaming = true;
  ShardState s(p);
  AcquireResult r = s.acquire("w", 0);
  EXPECT_FALSE(r.shard);
  EXPECT_FALSE(r.exhausted);
  EXPECT_NE(r.reason.find("no complete shard yet"), std::string::npos);
  ASSERT_TRUE(s.extend(25).ok());
  auto a = s.acquire("w", 0), b = s.acquire("w", 0);
  ASSERT_TRUE(a.shard && b.shard);
  EXPECT_EQ(a.shard->start, 0);  // file order
  EXPECT_EQ(b.shard->start, 10);
  EXPECT_FALSE(s.acquire("w", 0).shard);  // 5 samples are not a shard yet
  EXPECT_TRUE(s.extend(20).ok());         // a stale, smaller figure from another worker
  EXPECT_FALSE(s.acquire("w", 0).shard);
  const nlohmann::json snap = s.snapshot();
  EXPECT_EQ(s.finish(24).code(), StatusCode::kInvalidArgument);  // 25 were reported
  ASSERT_TRUE(s.finish(27).ok());
  ASSERT_TRUE(s.finish(27).ok());  // a second worker saw the end too
  auto c = s.acquire("w", 0);
  ASSERT_TRUE(c.shard);
  EXPECT_EQ(c.shard->start, 20);
  EXPECT_EQ(c.shard->end, 27);
  ASSERT_TRUE(s.complete("w", *a.shard).ok());
  ASSERT_TRUE(s.complete("w", *b.shard).ok());
  ASSERT_TRUE(s.complete("w", *c.shard).ok());
  EXPECT_TRUE(s.acquire("w", 0).exhausted);
  EXPECT_TRUE(s.stats().finished);
  EXPECT_EQ(s.extend(30).code(), StatusCode::kFailedPrecondition);
  // Rolled back to the snapshot (nothing done, 25 samples known): both shards come again.
  ShardState back(p);
  ASSERT_TRUE(back.restore(snap).ok());
  EXPECT_EQ(back.stats().todo, 2);
}

}  // namespace
}  // namespace cairn::elastic
