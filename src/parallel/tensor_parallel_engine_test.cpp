// Tensor parallelism end to end through parallelize(), ranks as threads: for GPT-2 (a vocabulary
// tp does not divide) and LLaMA (grouped-query attention), layouts tp2, tp2 with sequence
// parallelism, tp3, and dp2 x tp2 with ZeRO-0, 1, 2 and 3 train 4 steps whose losses match the
// one-process run with the same global batch to 1e-5 relative; the gradients of step 1,
// reassembled from the slices, match to 1e-5; a checkpoint gathered from the slices equals the
// one-process one and loads back, and the ranks' checkpoint shares (slices, nothing gathered)
// cover it once; LLaMA with key/value heads replicated over tp (fewer of them than tp) too;
// layouts that do not fit are refused by name.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "cairn/comm/group.h"
#include "cairn/comm/mesh_groups.h"
#include "cairn/model/language_model.h"
#include "cairn/model/param_specs.h"
#include "cairn/parallel/engine.h"
#include "cairn/parallel/tensor_parallel.h"
#include "comm/run_ranks_testing_impl.h"
#include "parallel/layout_testing_impl.h"

namespace cairn::parallel {
namespace {

constexpr int kSteps = 4;
constexpr int64_t kBatch = 4, kSeq = 8;

using testing::ExpectClose;
using testing::Trace;
model::ModelConfig Gpt2(int64_t n_head = 2, int64_t n_embd = 16) {
  return testing::TinyGpt2(kSeq, 2, n_head, n_embd);
}
model::ModelConfig Llama() { return testing::TinyLlama(kSeq); }

// The one-process run.
Trace Reference(const model::ModelConfig& c) {
  auto m = model::build_model(c, 11);
  auto e = parallelize(m, Plan::data_parallel(1, int(c.n_layer)), comm::MeshGroups::Single(), {});
  EXPECT_TRUE(e.ok());
  Trace t;
  for (int s = 0; s < kSteps; ++s) {
    auto [x, y] = testing::StepBatch(c, s, kBatch, kSeq);
    testing::TrainStep(**e, *m, x, y, kBatch, nullptr, nullptr, s == 0, &t);
  }
  for (auto& [name, p] : (*e)->gather_params()) t.params[name] = p.clone();
  return t;
}

struct Layout {
  int tp = 2, dp = 1, zero = 0;
  bool sp = false;
  std::string name() const {
    return "dp" + std::to_string(dp) + " x tp" + std::to_string(tp) + (sp ? " + sp" : "") +
           ", ZeRO-" + std::to_string(zero);
  }
};

Plan PlanFor(const model::ModelConfig& c, const Layout& l) {
  Plan plan = Plan::data_parallel(l.dp, int(c.n_layer), l.zero);
  plan.mesh = comm::MeshShape{1, l.dp, 1, l.tp};
  for (LayerPlan& b : plan.layers) {
    b.tp = l.tp;
    b.sequence_parallel = l.sp;
  }
  return plan;
}

using testing::Shares;

void CheckLayout(const model::ModelConfig& c, const Layout& l, const Trace& want) {
  SCOPED_TRACE(c.arch + ", " + l.name());
  Shares shares;
  comm::RunRanks(l.tp * l.dp, [&](int rank, comm::Group& world) {
    auto mesh = comm::Mesh::Create(comm::MeshShape{1, l.dp, 1, l.tp}, l.tp * l.dp);
    ASSERT_TRUE(mesh.ok());
    auto groups = comm::MeshGroups::Create(&world, *mesh);
    ASSERT_TRUE(groups.ok());
    comm::Group* tp = groups->get(comm::Axis::kTensor);
    comm::Group* dp = groups->get(comm::Axis::kData);
    const int dp_rank = dp ? dp->rank() : 0;
    auto m = model::build_model(c, 11);  // whole and equal on every rank, then sliced
    auto e = parallelize(m, PlanFor(c, l), *groups, {});
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    const auto specs = model::param_specs(c);
    // Memory per parameter of the whole model: about 1/tp of the parameters are here.
    const MemoryReport mem = (*e)->memory_report();
    int64_t whole = 0;
    for (const auto& sp : specs) whole += c10::multiply_integers(sp.shape);
    EXPECT_EQ(mem.params, whole);
    EXPECT_LT(mem.param_bytes, 4.0 * (1.0 / l.tp + 0.25)) << "parameters are not split";
    Trace got;
    for (int s = 0; s < kSteps; ++s) {
      auto [x, y] = testing::StepBatch(c, s, kBatch, kSeq, dp_rank, l.dp);
      // (Under ZeRO-2/3 a rank keeps only its shards of the gradients: there the clip norm,
      // summed from the shards, is the gradients' check.)
      testing::TrainStep(**e, *m, x, y, x.size(0), dp, tp, s == 0 && l.zero < 2, &got);
      EXPECT_NEAR(got.norms.back(), want.norms[size_t(s)], 1e-5 * want.norms[size_t(s)])
          << "step " << s;
    }
    testing::ExpectSameRun(got, want);
    // The checkpoint form: whole tensors, as one process has them.
    auto params = (*e)->gather_params();
    ASSERT_EQ(params.size(), want.params.size());
    // After 4 AdamW steps (lr 3e-3): an element whose gradient is zero in exact arithmetic
    // (GPT-2's key bias) moves by the sign of rounding noise, so parameters match to 1e-4
    // relative + 1e-5 absolute; the gradients and losses above are the 1e-5 check.
    for (auto& [name, t] : params)
      ExpectClose(t, want.params.at(name), 1e-4, "param " + name, 1e-5);
    auto state = (*e)->gather_optimizer_state();
    EXPECT_EQ(state.size(), 2 * params.size());
    shares.add((*e)->checkpoint_share("model/", "optim/"), rank);
    if (rank == 0) {
      std::lock_guard<std::mutex> lock(shares.mu);
      for (auto& [name, t] : params) shares.gathered["model/" + name] = t;
      for (auto& [name, t] : state) shares.gathered["optim/" + name] = t;
    }
    // ...which loads back into the slices: the next loss is the one before reloading.
    std::map<std::string, torch::Tensor> tensors;
    for (auto& [name, t] : params) tensors["model/" + name] = t.clone();
    for (auto& [name, t] : state) tensors["optim/" + name] = t.clone();
    auto [x, y] = testing::StepBatch(c, kSteps, kBatch, kSeq, dp_rank, l.dp);
    const double before = (*e)->eval_loss(x, y).item<double>();
    {
      torch::NoGradGuard no_grad;
      for (auto& p : m->parameters()) p.zero_();
    }
    ASSERT_TRUE((*e)->load(tensors, "model/", "optim/", kSteps).ok());
    EXPECT_EQ((*e)->eval_loss(x, y).item<double>(), before);
  });
  // The ranks' checkpoint shares are the whole state, each element written by one rank.
  shares.ExpectWholeOnce();
}

TEST(TensorParallelEngine, Gpt2LayoutsMatchTheOneProcessRun) {
  const model::ModelConfig c = Gpt2();
  const Trace want = Reference(c);
  for (Layout l : {Layout{2, 1, 0, false}, Layout{2, 1, 0, true}, Layout{2, 2, 0, false},
                   Layout{2, 2, 1, true}, Layout{2, 2, 2, false}, Layout{2, 2, 2, true},
                   Layout{2, 2, 3, false}, Layout{2, 2, 3, true}})
    CheckLayout(c, l, want);
}

TEST(TensorParallelEngine, Gpt2AtTp3WhereTheHeadsDivide) {
  const model::ModelConfig c = Gpt2(3, 24);
  CheckLayout(c, Layout{3, 1, 0, false}, Reference(c));
}

TEST(TensorParallelEngine, LlamaWithGroupedQueryAttentionMatchesTheOneProcessRun) {
  const model::ModelConfig c = Llama();
  const Trace want = Reference(c);
  for (Layout l : {Layout{2, 1, 0, false}, Layout{2, 1, 0, true}, Layout{2, 2, 1, false},
                   Layout{2, 2, 2, true}, Layout{2, 2, 3, true}})
    CheckLayout(c, l, want);
}

// Fewer key/value heads than tp ranks: each rank holds its query heads' key/value head, the
// replicas' gradients of it are summed over them, and the clip norm counts it once.
TEST(TensorParallelEngine, LlamaWithKeyValueHeadsReplicatedOverTp) {
  model::ModelConfig one_kv = Llama();  // 4 query heads, 1 key/value head
  one_kv.n_kv_head = 1;
  const Trace want = Reference(one_kv);
  for (Layout l : {Layout{2, 1, 0, false}, Layout{2, 1, 0, true}, Layout{2, 2, 2, true},
                   Layout{4, 1, 0, false}})
    CheckLayout(one_kv, l, want);
  const model::ModelConfig two_kv = Llama();  // 2 key/value heads over tp 4: 2 replicas each
  CheckLayout(two_kv, Layout{4, 1, 0, true}, Reference(two_kv));
}

TEST(TensorParallelEngine, LayoutsThatDoNotFitAreRefusedByName) {
  comm::RunRanks(2, [&](int, comm::Group& world) {
    auto mesh = comm::Mesh::Create(comm::MeshShape{1, 1, 1, 2}, 2);
    auto groups = comm::MeshGroups::Create(&world, *mesh);
    ASSERT_TRUE(groups.ok());
    // 3 key/value heads over tp 2: neither split nor replicated evenly.
    model::ModelConfig three_kv = Llama();
    three_kv.n_head = 6;
    three_kv.n_embd = 24;
    three_kv.n_kv_head = 3;
    auto e = parallelize(model::build_model(three_kv, 1), PlanFor(three_kv, Layout{2, 1, 0}),
                         *groups, {});
    ASSERT_FALSE(e.ok());
    EXPECT_NE(e.status().message().find("key/value heads"), std::string::npos)
        << e.status().ToString();
    EXPECT_NE(e.status().message().find("(tp that fit this model: 1)"), std::string::npos)
        << e.status().ToString();
  });
}

}  // namespace
}  // namespace cairn::parallel
