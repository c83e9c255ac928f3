#include <gtest/gtest.h>

#include "elastic/master/rate_limit_impl.h"

namespace cairn::elastic {
namespace {

TEST(RateLimiter, ABurstThenTheRate) {
  RateLimiter r({10, 5, 16});
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(r.allow("a", 0)) << i;
  double retry = 0;
  EXPECT_FALSE(r.allow("a", 0, &retry));
  EXPECT_NEAR(retry, 0.1, 1e-9);
  EXPECT_FALSE(r.allow("a", 0.05));
  EXPECT_TRUE(r.allow("a", 0.1));
  EXPECT_FALSE(r.allow("a", 0.1));
  // 10 per second over a second, never more than the burst after a pause.
  int allowed = 0;
  for (int ms = 200; ms < 1200; ++ms) allowed += r.allow("a", ms / 1000.0);
  EXPECT_EQ(allowed, 10);
  allowed = 0;
  for (int i = 0; i < 100; ++i) allowed += r.allow("a", 100.0);
  EXPECT_EQ(allowed, 5);
}

TEST(RateLimiter, ClientsHaveTheirOwnBuckets) {
  RateLimiter r({1, 2, 16});
  EXPECT_TRUE(r.allow("a", 0));
  EXPECT_TRUE(r.allow("a", 0));
  EXPECT_FALSE(r.allow("a", 0));
  EXPECT_TRUE(r.allow("b", 0));  // a's flood costs b nothing
  EXPECT_TRUE(r.allow("b", 0));
}

TEST(RateLimiter, InventedAddressesDoNotGrowIt) {
  RateLimiter r({1, 2, 64});
  // A flooder spending each address's burst: the table stays bounded...
  for (int i = 0; i < 10000; ++i) {
    r.allow("10.0.0." + std::to_string(i), 0);
    r.allow("10.0.0." + std::to_string(i), 0);
  }
  EXPECT_LE(r.tracked_keys(), 64u);
  // ...and an address it keeps drained stays limited while it is tracked.
  EXPECT_TRUE(r.allow("x", 1000));
  EXPECT_TRUE(r.allow("x", 1000));
  EXPECT_FALSE(r.allow("x", 1000));
  for (int i = 0; i < 30; ++i) r.allow("y" + std::to_string(i), 1000);  // quiet ones, full
  EXPECT_FALSE(r.allow("x", 1000));
}

TEST(RateLimiter, PeerHost) {
  EXPECT_EQ(peer_host("ipv4:10.0.0.1:5000"), "10.0.0.1");
  EXPECT_EQ(peer_host("ipv6:[::1]:5000"), "::1");
  EXPECT_EQ(peer_host("ipv6:[fe80::1%eth0]:1"), "fe80::1%eth0");
  EXPECT_EQ(peer_host("unix:/tmp/s"), "unix:/tmp/s");
  EXPECT_EQ(peer_host(""), "");
}

}  // namespace
}  // namespace cairn::elastic
