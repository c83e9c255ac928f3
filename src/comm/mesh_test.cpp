#include "cairn/comm/mesh.h"

#include <gtest/gtest.h>

#include <algorithm>
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
      for (int cp = 1; cp <= 2; ++cp)
        for (int tp = 1; tp <= 4; ++tp) {
          MeshShape s{pp, dp, cp, tp};
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

// Another order: data parallel innermost, so a dp group is consecutive ranks and tp strides.
TEST(Mesh, OrderPutsItsLastAxisInnermost) {
  auto order = parse_order({"pp", "tp", "cp", "dp"});
  ASSERT_TRUE(order.ok()) << order.status().ToString();
  auto m = *Mesh::Create({1, 2, 1, 2}, 4, *order);
  EXPECT_EQ(m.group(0, Axis::kData), (std::vector<int>{0, 1}));
  EXPECT_EQ(m.group(0, Axis::kTensor), (std::vector<int>{0, 2}));
  EXPECT_EQ(m.coord(3, Axis::kTensor), 1);
  EXPECT_EQ(m.coord(3, Axis::kData), 1);
  for (int r = 0; r < 4; ++r) EXPECT_EQ(m.rank_of(m.coords(r)), r);
  // Every permutation keeps coords and rank_of inverse.
  std::array<Axis, kNumAxes> p = kDefaultOrder;
  std::sort(p.begin(), p.end());
  do {
    auto pm = *Mesh::Create({2, 3, 2, 2}, 24, p);
    std::set<std::array<int, kNumAxes>> coords;
    for (int r = 0; r < 24; ++r) {
      ASSERT_EQ(pm.rank_of(pm.coords(r)), r);
      coords.insert(pm.coords(r));
    }
    EXPECT_EQ(coords.size(), 24u);
    EXPECT_EQ(pm.coord(1, p[3]), 1) << "rank 1 is one step along the innermost axis";
  } while (std::next_permutation(p.begin(), p.end()));
}

TEST(Mesh, ParseOrderNamesWhatIsWrong) {
  EXPECT_EQ(parse_order({"pp", "dp", "cp", "tp"})->at(3), Axis::kTensor);
  auto twice = parse_order({"pp", "dp", "dp", "tp"});
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.status().message().find("'dp' twice"), std::string::npos);
  auto unknown = parse_order({"pp", "dp", "sp", "tp"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("'sp' is not a mesh axis"), std::string::npos);
  EXPECT_FALSE(parse_order({"pp", "dp"}).ok());
  EXPECT_FALSE(
      Mesh::Create({1, 1, 1, 1}, 1, {Axis::kData, Axis::kData, Axis::kContext, Axis::kTensor})
          .ok());
}

}  // namespace
}  // namespace cairn::comm
