// parallelize(): the plan decides the engine and the model's activation checkpointing; layouts
// this version cannot carry out are refused by name. (The engines' numerics against one
// process are the trainer's tests and data_parallel_test / zero3_test.)
#include "cairn/parallel/engine.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <thread>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "cairn/comm/group.h"
#include "cairn/comm/mesh_groups.h"
#include "cairn/model/language_model.h"

namespace cairn::parallel {
namespace {

model::ModelConfig Tiny() {
  model::ModelConfig c;
  c.n_layer = 3;
  c.n_head = 2;
  c.n_embd = 16;
  c.vocab_size = 64;
  c.block_size = 8;
  return c;
}

std::pair<torch::Tensor, torch::Tensor> Batch() {
  auto gen = at::detail::createCPUGenerator(7);
  auto x = torch::randint(0, 64, {2, 8}, gen);
  auto y = torch::randint(0, 64, {2, 8}, gen);
  return {x, y};
}

TEST(Parallelize, OneProcessPlansGiveTheModelsLossAndItsCheckpointing) {
  auto [x, y] = Batch();
  const double expected = model::build_model(Tiny(), 3)->loss(x, y).item<double>();
  for (int stage : {0, 1, 2, 3}) {
    auto m = model::build_model(Tiny(), 3);
    Plan plan = Plan::data_parallel(1, 3, stage);
    plan.layers[1].checkpoint = true;
    auto engine = parallelize(m, plan, comm::MeshGroups::Single(), AdamHyper{});
    ASSERT_TRUE(engine.ok()) << engine.status().ToString();
    EXPECT_EQ(m->checkpointed_layers(), (std::vector<bool>{false, true, false}));
    EXPECT_NEAR((*engine)->loss(x, y, true).item<double>(), expected, 1e-6) << "stage " << stage;
    EXPECT_EQ((*engine)->gather_params().size(), m->named_parameters().size());
  }
}

TEST(Parallelize, RefusesAPlanOfAnotherMeshOrModel) {
  auto m = model::build_model(Tiny(), 3);
  Plan two = Plan::data_parallel(2, 3);
  auto r = parallelize(m, two, comm::MeshGroups::Single(), AdamHyper{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("the process groups are of mesh pp=1 dp=1 cp=1 tp=1"),
            std::string::npos)
      << r.status().ToString();
  Plan short_plan = Plan::data_parallel(1, 2);
  r = parallelize(m, short_plan, comm::MeshGroups::Single(), AdamHyper{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("the model has 3 blocks"), std::string::npos);
}

// Valid plans this version does not carry out: blocks of different context-parallel kinds.
// Refused, naming what, on every rank. (tp: tensor_parallel_engine_test.)
TEST(Parallelize, ModelParallelLayoutsNotBuiltAreRefusedByName) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::string> errors(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      auto world = comm::Group::Create(store, r, 2, comm::GroupOptions{});
      for (auto [what, shape] : {std::pair{"per-block cp kinds", comm::MeshShape{1, 1, 2, 1}}}) {
        Plan plan = Plan::data_parallel(1, 3);
        plan.mesh = shape;
        for (LayerPlan& l : plan.layers) {
          l.tp = shape.tp;
          if (shape.cp > 1) l.cp_kind = ContextParallelKind::kRing;
        }
        if (shape.cp > 1) plan.layers[1].cp_kind = ContextParallelKind::kUlysses;
        ASSERT_TRUE(plan.validate(Tiny(), 2).ok()) << plan.validate(Tiny(), 2).ToString();
        auto mesh = comm::Mesh::Create(shape, 2);
        auto groups = comm::MeshGroups::Create(world.get(), *mesh);
        auto e = parallelize(model::build_model(Tiny(), 3), plan, *groups, AdamHyper{});
        if (e.ok() || e.status().code() != StatusCode::kUnsupported ||
            e.status().message().find(what) == std::string::npos)
          errors[size_t(r)] +=
              std::string(what) + ": " + (e.ok() ? "accepted" : e.status().ToString()) + "\n";
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors[0], "");
  EXPECT_EQ(errors[1], "");
}

}  // namespace
}  // namespace cairn::parallel
