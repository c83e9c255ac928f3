#include "cairn/comm/mesh.h"

#include <gtest/gtest.h>

#include <set>

namespace cairn::comm {
namespace {

TEST(Mesh, RejectsWrongWorld) {
  EXPECT_FALSE(Mesh::Create({1, 2, 1, 2}, 3).ok());
  EXPECT_FALSE(Mesh::Create({0, 2, 1, 1}, 0).ok());
  EXPECT_TRUE(Mesh::Create({1, 3, 1, 1}, 3).ok());
}

TEST(Mesh, TensorIsFastestAxis) {
  auto m = *Mesh::Create({2, 2, 1, 2}, 8);
  EXPECT_EQ(m.group(0, Axis::kTensor), (std::vector<int>{0, 1}));
  EXPECT_EQ(m.group(0, Axis::kData), (std::vector<int>{0, 2}));
  EXPECT_EQ(m.group(0, Axis::kPipeline), (std::vector<int>{0, 4}));
  EXPECT_EQ(m.group(7, Axis::kData), (std::vector<int>{5, 7}));
}

// For every shape up to 4 per axis: coords/rank_of are inverse, groups along each axis
// partition the world, and each group varies only along its axis.
TEST(Mesh, ExhaustiveGroupProperties) {
  for (int pp = 1; pp <= 3; ++pp)
    for (int dp = 1; dp <= 4; ++dp)
      for (int sp = 1; sp <= 2; ++sp)
        for (int tp = 1; tp <= 4; ++tp) {
          MeshShape s{pp, dp, sp, tp};
          auto m = *Mesh::Create(s, s.size());
          for (int r = 0; r < m.size(); ++r) ASSERT_EQ(m.rank_of(m.coords(r)), r);
          for (int a = 0; a < kNumAxes; ++a) {
            auto groups = m.all_groups(Axis(a));
            std::set<int> seen;
            ASSERT_EQ(int(groups.size()), m.size() / s.extent(Axis(a)));
            for (auto& g : groups) {
              ASSERT_EQ(int(g.size()), s.extent(Axis(a)));
              for (int r : g) {
                EXPECT_TRUE(seen.insert(r).second) << "rank in two groups";
                EXPECT_EQ(m.group(r, Axis(a)), g);
                for (int b = 0; b < kNumAxes; ++b)
                  if (b != a) EXPECT_EQ(m.coords(r)[size_t(b)], m.coords(g[0])[size_t(b)]);
              }
            }
            EXPECT_EQ(int(seen.size()), m.size());
          }
        }
}

}  // namespace
}  // namespace cairn::comm
