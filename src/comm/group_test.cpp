#include "cairn/comm/group.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <thread>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "cairn/comm/mesh_groups.h"
#include "comm/run_ranks_testing_impl.h"

namespace cairn::comm {
namespace {

TEST(Group, Collectives) {
  for (int world : {2, 3}) {
    RunRanks(world, [world](int r, Group& g) {
      ASSERT_EQ(g.rank(), r);
      ASSERT_EQ(g.size(), world);
      auto t = torch::full({5}, float(r + 1));
      g.allreduce(t);
      EXPECT_TRUE(torch::equal(t, torch::full({5}, float(world * (world + 1) / 2))));

      auto b = torch::full({3}, float(r));
      g.broadcast(b, world - 1);
      EXPECT_TRUE(torch::equal(b, torch::full({3}, float(world - 1))));

      auto in = torch::full({2}, float(r));
      auto out = torch::empty({2 * world});
      g.allgather(out, in);
      for (int i = 0; i < world; ++i)
        EXPECT_TRUE(torch::equal(out.narrow(0, 2 * i, 2), torch::full({2}, float(i))));

      auto big = torch::arange(4 * world, torch::kFloat) * float(r + 1);
      auto mine = torch::empty({4});
      g.reduce_scatter(mine, big);
      float factor = float(world * (world + 1) / 2);
      EXPECT_TRUE(torch::equal(mine, torch::arange(4 * r, 4 * r + 4, torch::kFloat) * factor));
      g.barrier();
    });
  }
}

// bfloat16 tensors (bf16 autocast's activations under tensor parallelism) go through every
// collective, as fp32 copies: Gloo has no bfloat16.
TEST(Group, BFloat16Collectives) {
  RunRanks(2, [](int r, Group& g) {
    const auto bf = torch::kBFloat16;
    auto t = torch::full({5}, float(r + 1), bf);
    g.allreduce(t);
    EXPECT_EQ(t.scalar_type(), bf);
    EXPECT_TRUE(torch::equal(t, torch::full({5}, 3.0, bf)));
    auto m = torch::full({2}, float(r), bf);
    g.allreduce_max(m);
    EXPECT_TRUE(torch::equal(m, torch::full({2}, 1.0, bf)));
    auto b = torch::full({3}, float(r + 5), bf);
    g.broadcast(b, 0);
    EXPECT_TRUE(torch::equal(b, torch::full({3}, 5.0, bf)));
    auto out = torch::empty({4}, bf);
    g.allgather(out, torch::full({2}, float(r), bf));
    EXPECT_TRUE(torch::equal(out, torch::tensor({0.0, 0.0, 1.0, 1.0}).to(bf)));
    auto big = torch::arange(4, torch::kFloat).to(bf);
    auto mine = torch::empty({2}, bf);
    g.reduce_scatter(mine, big);
    EXPECT_TRUE(torch::equal(mine, (torch::arange(2 * r, 2 * r + 2, torch::kFloat) * 2).to(bf)));
  });
}

TEST(Group, Subgroups) {
  RunRanks(4, [](int r, Group& g) {
    // Groups {0, 2} and {1, 3}, created by every rank in the same order.
    auto a = g.subgroup({0, 2}, "dp");
    auto b = g.subgroup({1, 3}, "dp");
    Group* mine = a ? a.get() : b.get();
    ASSERT_NE(mine, nullptr);
    EXPECT_EQ(bool(a), r % 2 == 0);
    EXPECT_EQ(mine->rank(), r / 2);
    auto t = torch::full({1}, float(r));
    mine->allreduce(t);
    EXPECT_EQ(t.item<float>(), float(r % 2 == 0 ? 0 + 2 : 1 + 3));
  });
}

// A 2 x 2 mesh (dp outer, tp inner): each rank's tp group is its pair of consecutive ranks,
// its dp group the ranks two apart; an all-reduce in one sums only that group; an axis of
// extent 1 has no group and one spanning the world is the world group itself.
TEST(MeshGroups, EachRankGetsItsGroupAlongEveryAxis) {
  RunRanks(4, [](int r, Group& world) {
    auto mesh = Mesh::Create({1, 2, 1, 2}, 4);
    ASSERT_TRUE(mesh.ok());
    auto groups = MeshGroups::Create(&world, *mesh);
    ASSERT_TRUE(groups.ok()) << groups.status().ToString();
    EXPECT_EQ(groups->get(Axis::kPipeline), nullptr);
    EXPECT_EQ(groups->get(Axis::kContext), nullptr);
    Group* tp = groups->get(Axis::kTensor);
    Group* dp = groups->get(Axis::kData);
    ASSERT_NE(tp, nullptr);
    ASSERT_NE(dp, nullptr);
    EXPECT_EQ(tp->size(), 2);
    EXPECT_EQ(tp->rank(), r % 2);
    EXPECT_EQ(dp->rank(), r / 2);
    auto t = torch::full({1}, float(1 << r));
    tp->allreduce(t);
    EXPECT_EQ(t.item<float>(), float(r < 2 ? 1 + 2 : 4 + 8));
    auto d = torch::full({1}, float(1 << r));
    dp->allreduce(d);
    EXPECT_EQ(d.item<float>(), float(r % 2 == 0 ? 1 + 4 : 2 + 8));
    // Data parallel over the whole world: no second group.
    auto flat = MeshGroups::Create(&world, *Mesh::Create({1, 4, 1, 1}, 4));
    ASSERT_TRUE(flat.ok());
    EXPECT_EQ(flat->get(Axis::kData), &world);
    EXPECT_EQ(flat->get(Axis::kTensor), nullptr);
    // A mesh of another size is refused.
    auto wrong = MeshGroups::Create(&world, *Mesh::Create({1, 2, 1, 1}, 2));
    ASSERT_FALSE(wrong.ok());
    EXPECT_NE(wrong.status().message().find("the job has 4"), std::string::npos);
  });
  EXPECT_EQ(MeshGroups::Single().mesh().size(), 1);
  EXPECT_EQ(MeshGroups::Single().get(Axis::kData), nullptr);
}

TEST(Group, CollectiveTimesOutWhenAPeerIsMissing) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::string error;
  std::thread t0([&] {
    GroupOptions o;
    o.timeout = std::chrono::milliseconds(3000);
    auto g = Group::Create(store, 0, 2, o);
    auto t = torch::ones({4});
    try {
      g->allreduce(t);
      g->allreduce(t);  // rank 1 only joins the first one
    } catch (const CollectiveError& e) {
      error = e.what();
    }
  });
  std::thread t1([&] {
    GroupOptions o;
    o.timeout = std::chrono::milliseconds(3000);
    auto g = Group::Create(store, 1, 2, o);
    auto t = torch::ones({4});
    g->allreduce(t);
    std::this_thread::sleep_for(std::chrono::milliseconds(4500));
  });
  t0.join();
  t1.join();
  EXPECT_NE(error.find("all-reduce"), std::string::npos) << error;
}

}  // namespace
}  // namespace cairn::comm
