// Context parallelism, ranks as threads.
// Attention alone: Ulysses (cp 2, 4), ring (cp 2, 4) and 2D (2 x 2) on each rank's share of a
// sequence give the rows, log-sum-exp and dq / dk / dv of the unsplit causal attention to 1e-5,
// with grouped-query heads, and issue the stated number of all-to-alls and sends.
// Whole models through parallelize(): GPT-2 and LLaMA at cp 2 (each kind), cp 4 ring, 2D 2 x 2,
// dp2 x cp2 and tp2 x cp2 (with sequence parallelism and ZeRO) train 20 steps whose losses match
// the one-process run to 1e-5, with step 1's gradients; what does not fit is refused by name.
#include "cairn/parallel/context_parallel.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <string>

#include "cairn/comm/group.h"
#include "cairn/comm/mesh_groups.h"
#include "cairn/model/attention.h"
#include "cairn/model/language_model.h"
#include "cairn/model/param_specs.h"
#include "cairn/parallel/engine.h"
#include "cairn/parallel/tensor_parallel.h"
#include "comm/run_ranks_testing_impl.h"
#include "parallel/layout_testing_impl.h"

namespace cairn::parallel {
namespace {

void ExpectClose(const torch::Tensor& a, const torch::Tensor& b, double rtol,
                 const std::string& what) {
  testing::ExpectClose(a, b, rtol, what, 1e-7);
}

TEST(ContextParallel, PositionsZigzagAndSplitContiguously) {
  // Ring of 2 over 8 tokens: chunks of 2; rank 0 holds chunks 0 and 3, rank 1 chunks 1 and 2.
  ContextSplit ring{1, 2, 0, 0};
  EXPECT_TRUE(context_positions(8, ring).equal(torch::tensor({0, 1, 6, 7}, torch::kLong)));
  ring.ring_rank = 1;
  EXPECT_TRUE(context_positions(8, ring).equal(torch::tensor({2, 3, 4, 5}, torch::kLong)));
  // Ulysses of 2: contiguous halves.
  ContextSplit u{2, 1, 1, 0};
  EXPECT_TRUE(context_positions(8, u).equal(torch::arange(4, 8)));
  // 2D: the ring's zigzag share split over the Ulysses ranks.
  ContextSplit two_d{2, 2, 1, 0};
  EXPECT_TRUE(context_positions(8, two_d).equal(torch::tensor({6, 7}, torch::kLong)));
  // Every layout covers the sequence once.
  for (ContextSplit s :
       {ContextSplit{1, 4, 0, 0}, ContextSplit{4, 1, 0, 0}, ContextSplit{2, 2, 0, 0}}) {
    std::vector<torch::Tensor> all;
    for (int u = 0; u < s.ulysses; ++u)
      for (int r = 0; r < s.ring; ++r) {
        s.ulysses_rank = u, s.ring_rank = r;
        all.push_back(context_positions(32, s));
      }
    EXPECT_TRUE(std::get<0>(torch::cat(all).sort()).equal(torch::arange(32)));
  }
  EXPECT_NE(context_unfit(12, ContextSplit{1, 4, 0, 0}).find("not a multiple of 8"),
            std::string::npos);
  EXPECT_EQ(context_unfit(12, ContextSplit{4, 1, 0, 0}), "");
  EXPECT_THROW(context_positions(12, ContextSplit{1, 4, 0, 0}), c10::Error);
}

// The unsplit attention's output, log-sum-exp and gradients for an upstream gradient gy.
struct Full {
  torch::Tensor q, k, v, gy, y, lse, dq, dk, dv;
};

constexpr int64_t kB = 2, kH = 8, kK = 4, kT = 32, kD = 8;

Full FullAttention() {
  torch::manual_seed(5);
  Full f;
  f.q = torch::randn({kB, kH, kT, kD}).requires_grad_();
  f.k = torch::randn({kB, kK, kT, kD}).requires_grad_();
  f.v = torch::randn({kB, kK, kT, kD}).requires_grad_();
  f.gy = torch::randn({kB, kH, kT, kD});
  f.y = model::causal_attention(f.q, f.k, f.v);
  f.y.backward(f.gy);
  f.dq = f.q.grad().clone(), f.dk = f.k.grad().clone(), f.dv = f.v.grad().clone();
  auto kk = f.k.detach().repeat_interleave(kH / kK, 1);
  auto s = torch::matmul(f.q.detach(), kk.transpose(-2, -1)) / std::sqrt(double(kD));
  s.masked_fill_(torch::ones({kT, kT}, torch::kBool).triu(1), -INFINITY);
  f.lse = torch::logsumexp(s, -1);  // (B, H, T)
  f.y = f.y.detach();
  return f;
}

// One layout of the attention on `world` ranks: each rank runs the hooks on its positions'
// rows and checks them, and counts what it sent.
void CheckAttention(int ulysses, int ring, const Full& f) {
  SCOPED_TRACE("ulysses " + std::to_string(ulysses) + " x ring " + std::to_string(ring));
  const int world = ulysses * ring;
  comm::RunRanks(world, [&](int, comm::Group& w) {
    auto mesh = comm::Mesh::Create(comm::MeshShape{1, 1, world, 1}, world);
    auto groups = comm::MeshGroups::Create(&w, *mesh);
    ASSERT_TRUE(groups.ok());
    comm::MeshGroups::ContextSplit split = groups->split_context(ulysses);
    comm::Group* u = ulysses == world ? groups->get(comm::Axis::kContext) : split.inner.get();
    comm::Group* r = ring == world ? groups->get(comm::Axis::kContext) : split.outer.get();
    auto hooks = make_context_parallel_hooks(u, r);
    auto pos = hooks->positions(kT / world, torch::kLong);  // (T')
    auto q = f.q.detach().index_select(2, pos).requires_grad_();
    auto k = f.k.detach().index_select(2, pos).requires_grad_();
    auto v = f.v.detach().index_select(2, pos).requires_grad_();
    const int64_t a2a_before = u ? u->collectives() : 0, sends_before = r ? r->sends() : 0;
    auto y = hooks->attention(q, k, v);
    const int64_t a2a_forward = (u ? u->collectives() : 0) - a2a_before;
    const int64_t sends_forward = (r ? r->sends() : 0) - sends_before;
    ExpectClose(y, f.y.index_select(2, pos), 1e-5, "output");
    y.backward(f.gy.index_select(2, pos));
    EXPECT_EQ((u ? u->collectives() : 0) - a2a_before, ulysses > 1 ? 4 : 0) << "all-to-alls";
    EXPECT_EQ(a2a_forward, ulysses > 1 ? 2 : 0) << "all-to-alls in forward";
    EXPECT_EQ(sends_forward, ring - 1) << "sends in forward";
    EXPECT_EQ((r ? r->sends() : 0) - sends_before, ring > 1 ? (ring - 1) + ring + ring - 1 : 0)
        << "sends in forward and backward";
    ExpectClose(q.grad(), f.dq.index_select(2, pos), 1e-5, "dq");
    ExpectClose(k.grad(), f.dk.index_select(2, pos), 1e-5, "dk");
    ExpectClose(v.grad(), f.dv.index_select(2, pos), 1e-5, "dv");
    if (ulysses == 1) {  // the ring's log-sum-exp, row by row
      auto [out, lse] = ring_attention_forward(q.detach(), k.detach(), v.detach(), r);
      ExpectClose(out, f.y.index_select(2, pos), 1e-5, "ring output");
      ExpectClose(lse, f.lse.index_select(2, pos), 1e-5, "log-sum-exp");
      // Tiles of 3 query rows: chunks of 4 (ring 4) and 8 (ring 2) cut with a remainder.
      auto q3 = q.detach().requires_grad_(), k3 = k.detach().requires_grad_(),
           v3 = v.detach().requires_grad_();
      auto y3 = ring_attention(q3, k3, v3, r, true, nullptr, /*tile_rows=*/3);
      ExpectClose(y3, f.y.index_select(2, pos), 1e-5, "output in tiles of 3");
      y3.backward(f.gy.index_select(2, pos));
      ExpectClose(q3.grad(), f.dq.index_select(2, pos), 1e-5, "dq in tiles of 3");
      ExpectClose(k3.grad(), f.dk.index_select(2, pos), 1e-5, "dk in tiles of 3");
      ExpectClose(v3.grad(), f.dv.index_select(2, pos), 1e-5, "dv in tiles of 3");
    }
    // Without overlap: the same numbers bit for bit, and every exchange counted.
    auto stats = std::make_shared<ContextCommStats>();
    auto waiting = make_context_parallel_hooks(u, r, /*overlap=*/false, stats);
    auto q2 = q.detach().requires_grad_(), k2 = k.detach().requires_grad_(),
         v2 = v.detach().requires_grad_();
    auto y2 = waiting->attention(q2, k2, v2);
    y2.backward(f.gy.index_select(2, pos));
    EXPECT_TRUE(y2.equal(y) && q2.grad().equal(q.grad()) && k2.grad().equal(k.grad()) &&
                v2.grad().equal(v.grad()))
        << "overlap changed the result";
    EXPECT_EQ(stats->messages, (ulysses > 1 ? 4 : 0) + (ring > 1 ? 3 * ring - 2 : 0));
    EXPECT_GT(stats->bytes, 0);
    EXPECT_GT(stats->wait_s, 0);
  });
}

TEST(ContextParallel, AttentionMatchesTheUnsplitOneForEveryKind) {
  const Full f = FullAttention();
  CheckAttention(2, 1, f);  // Ulysses
  CheckAttention(4, 1, f);
  CheckAttention(1, 2, f);  // ring
  CheckAttention(1, 4, f);
  CheckAttention(2, 2, f);  // 2D
}

TEST(ContextParallel, UlyssesRefusesHeadsItCannotSplit) {
  comm::RunRanks(4, [&](int, comm::Group& w) {
    auto q = torch::randn({1, 2, 4, 8}), k = torch::randn({1, 2, 4, 8});
    try {
      ulysses_seq_to_heads(q, k, k, &w);
      ADD_FAILURE() << "2 heads split over 4 ranks";
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find("divisible by the Ulysses degree 4"), std::string::npos)
          << e.what();
    }
  });
}

// --- whole models -----------------------------------------------------------------------------

constexpr int kSteps = 20;
constexpr int64_t kBatch = 4, kSeq = 16;

using testing::Trace;
model::ModelConfig Gpt2() { return testing::TinyGpt2(kSeq, 2, 4, 16); }
model::ModelConfig Llama() { return testing::TinyLlama(kSeq); }

struct Layout {
  ContextParallelKind kind;
  int cp = 2, ulysses = 0, dp = 1, tp = 1, zero = 0;
  bool sp = false;
  std::string name() const {
    return std::string(cp_kind_name(kind)) + " cp" + std::to_string(cp) +
           (ulysses ? " (ulysses " + std::to_string(ulysses) + ")" : "") + " dp" +
           std::to_string(dp) + " tp" + std::to_string(tp) + (sp ? " + sp" : "") + " ZeRO-" +
           std::to_string(zero);
  }
  Plan plan(const model::ModelConfig& c) const {
    Plan p = Plan::data_parallel(dp, int(c.n_layer), zero);
    p.mesh = comm::MeshShape{1, dp, cp, tp};
    p.cp_ulysses = ulysses;
    for (LayerPlan& b : p.layers) {
      b.tp = tp;
      b.sequence_parallel = sp;
      b.cp_kind = cp > 1 ? kind : ContextParallelKind::kNone;
    }
    return p;
  }
};

// Runs `l` (the one-process run when it has one rank) and returns rank 0's trace: each step's
// loss (the mean over dp) and step 1's gradients (whole: gathered over tp).
Trace Run(const model::ModelConfig& c, const Layout& l) {
  const int world = l.dp * l.cp * l.tp;
  Trace out;
  comm::RunRanks(world, [&](int rank, comm::Group& w) {
    auto mesh = comm::Mesh::Create(comm::MeshShape{1, l.dp, l.cp, l.tp}, world);
    auto groups = comm::MeshGroups::Create(&w, *mesh);
    ASSERT_TRUE(groups.ok());
    comm::Group* dp = groups->get(comm::Axis::kData);
    comm::Group* tp = groups->get(comm::Axis::kTensor);
    auto m = model::build_model(c, 11);
    auto e = parallelize(m, l.plan(c), *groups, {});
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    Trace t;
    for (int s = 0; s < kSteps; ++s) {
      auto [x, y] = testing::StepBatch(c, s, kBatch, kSeq, dp ? dp->rank() : 0, l.dp);
      testing::TrainStep(**e, *m, x, y, x.size(0), dp, tp, s == 0 && l.zero < 2, &t);
    }
    if (rank == 0) out = t;
  });
  return out;
}

void CheckLayouts(const model::ModelConfig& c, const std::vector<Layout>& layouts) {
  const Trace want = Run(c, Layout{ContextParallelKind::kNone, 1});
  ASSERT_EQ(want.losses.size(), size_t(kSteps));
  for (const Layout& l : layouts) {
    SCOPED_TRACE(c.arch + ", " + l.name());
    testing::ExpectSameRun(Run(c, l), want);
  }
}

using K = ContextParallelKind;

TEST(ContextParallelEngine, Gpt2LayoutsMatchTheOneProcessRun) {
  CheckLayouts(Gpt2(), {Layout{K::kUlysses, 2}, Layout{K::kRing, 2}, Layout{K::kRing, 4},
                        Layout{K::kTwoD, 4, 2}, Layout{K::kRing, 2, 0, 2, 1, 1},
                        Layout{K::kUlysses, 2, 0, 1, 2, 0, true}});
}

TEST(ContextParallelEngine, LlamaLayoutsMatchTheOneProcessRun) {
  CheckLayouts(Llama(), {Layout{K::kUlysses, 2}, Layout{K::kRing, 2}, Layout{K::kRing, 4},
                         Layout{K::kTwoD, 4, 2}, Layout{K::kRing, 2, 0, 2, 1, 3},
                         Layout{K::kRing, 2, 0, 1, 2, 2, true}});
}

TEST(ContextParallelEngine, UlyssesDegreesThatDoNotSplitTheHeadsAreRefused) {
  model::ModelConfig c = Llama();  // 4 query heads, 2 key/value heads
  Layout l{K::kUlysses, 4};
  const Status s = l.plan(c).validate(c, 4);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("degrees that fit: 1, 2"), std::string::npos) << s.ToString();
  const Layout ring{K::kRing, 4};
  EXPECT_TRUE(ring.plan(c).validate(c, 4).ok());
  const Layout bad_2d{K::kTwoD, 4, 3};
  EXPECT_NE(bad_2d.plan(c).validate(c, 4).message().find("cp_ulysses"), std::string::npos);
}

}  // namespace
}  // namespace cairn::parallel
