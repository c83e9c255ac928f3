// The hardware profile: the all-reduce fit recovers a known link, and a short real profile of 2
// ranks gives positive figures for every measurement and a cluster file the planner loads.
#include <gtest/gtest.h>

#include "cairn/planner/profile.h"

namespace cairn::planner {
namespace {

TEST(ProfileHw, TheAllReduceFitRecoversTheLink) {
  const Link want{2.5e9, 40e-6};
  for (int n : {2, 4}) {
    std::vector<std::pair<double, double>> points;
    for (double bytes : {4096.0, 65536.0, 1048576.0, 16777216.0})
      points.emplace_back(bytes, allreduce_s(bytes, n, want));
    const Link got = fit_allreduce(points, n);
    EXPECT_NEAR(got.bandwidth, want.bandwidth, 1e-6 * want.bandwidth) << n;
    EXPECT_NEAR(got.latency, want.latency, 1e-9) << n;
  }
}

TEST(ProfileHw, AShortProfileGivesACluster) {
  auto p = profile_hardware(2, 0.02);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->ranks, 2);
  EXPECT_GT(p->gemm_fp32_flops, 1e8);
  EXPECT_GT(p->gemm_bf16_flops, 0);
  EXPECT_GT(p->memcpy_bytes_per_s, 1e8);
  EXPECT_GT(p->memory_bytes, 0);
  ASSERT_EQ(p->collectives.size(), 4u * 7u);  // 4 operations x 4 KiB, 16 KiB, ..., 16 MiB
  for (const auto& pt : p->collectives) EXPECT_GT(pt.seconds, 0) << pt.op << " " << pt.bytes;
  EXPECT_GT(p->link.bandwidth, 0);
  auto c = cluster_from_json(profile_to_cluster(*p, "here", 0.4).dump(), "profile");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->devices(), 2);
  EXPECT_DOUBLE_EQ(c->efficiency, 0.4);
  EXPECT_NEAR(c->peak_flops, p->gemm_fp32_flops, 1e-6 * p->gemm_fp32_flops);
  EXPECT_FALSE(profile_hardware(1, 0.1).ok());
}

}  // namespace
}  // namespace cairn::planner
