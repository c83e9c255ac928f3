// Tensor parallelism's building blocks with ranks as threads: a column-parallel + row-parallel
// MLP, the same under sequence parallelism, the vocabulary-parallel embedding and fused
// cross-entropy (vocabularies that tp does not divide, a rank holding only padding), each
// against the one-process computation on the full tensors: outputs and the gradients of inputs
// and weights to 1e-6 relative (fp32), and the number of collectives each issued.
#include "cairn/parallel/tensor_parallel.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <thread>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "cairn/comm/group.h"
#include "cairn/model/fused_cross_entropy.h"
#include "comm/run_ranks_testing_impl.h"

namespace cairn::parallel {
namespace {

using comm::RunRanks;

// Same values on every rank.
torch::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::randn(shape, gen, torch::kFloat);
}

// |a - b| <= 1e-6 * max|b| + 1e-7 elementwise, with a message naming the worst element.
void ExpectClose(const torch::Tensor& a, const torch::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  const double scale = b.abs().max().item<double>();
  const double err = (a - b).abs().max().item<double>();
  EXPECT_LE(err, 1e-6 * scale + 1e-7) << what << ": max error " << err << " at scale " << scale;
}

// The MLP y = gelu(x W1^T + b1) W2^T + b2 and a fixed cotangent R: loss = sum(y * R).
struct Mlp {
  int64_t C = 8, F = 12;
  torch::Tensor w1 = randn({F, C}, 1), b1 = randn({F}, 2), w2 = randn({C, F}, 3),
                b2 = randn({C}, 4);
};

TEST(TensorParallel, ColumnThenRowParallelMatchesTheFullMlpWithOneCollectiveEachWay) {
  const Mlp full;
  const auto x0 = randn({2, 6, full.C}, 5), R = randn({2, 6, full.C}, 6);
  // One process.
  auto x = x0.clone().requires_grad_(true);
  auto w1 = full.w1.clone().requires_grad_(true), b1 = full.b1.clone().requires_grad_(true);
  auto w2 = full.w2.clone().requires_grad_(true), b2 = full.b2.clone().requires_grad_(true);
  auto y = torch::linear(torch::gelu(torch::linear(x, w1, b1), "tanh"), w2, b2);
  (y * R).sum().backward();
  for (int tp : {2, 3}) {
    const int64_t Fl = full.F / tp;
    RunRanks(tp, [&](int r, comm::Group& g) {
      auto xr = x0.clone().requires_grad_(true);
      auto w1r = full.w1.narrow(0, r * Fl, Fl).clone().requires_grad_(true);  // column: rows
      auto b1r = full.b1.narrow(0, r * Fl, Fl).clone().requires_grad_(true);
      auto w2r = full.w2.narrow(1, r * Fl, Fl).clone().requires_grad_(true);  // row: columns
      auto b2r = full.b2.clone().requires_grad_(true);
      const int64_t before = g.collectives();
      auto a = torch::gelu(torch::linear(copy_to_tp(xr, &g), w1r, b1r), "tanh");
      auto yr = reduce_from_tp(torch::linear(a, w2r), &g) + b2r;
      EXPECT_EQ(g.collectives() - before, 1) << "forward: one all-reduce";
      (yr * R).sum().backward();
      EXPECT_EQ(g.collectives() - before, 2) << "backward: one all-reduce";
      ExpectClose(yr.detach(), y.detach(), "y");
      ExpectClose(xr.grad(), x.grad(), "x.grad");
      ExpectClose(w1r.grad(), w1.grad().narrow(0, r * Fl, Fl), "w1.grad");
      ExpectClose(b1r.grad(), b1.grad().narrow(0, r * Fl, Fl), "b1.grad");
      ExpectClose(w2r.grad(), w2.grad().narrow(1, r * Fl, Fl), "w2.grad");
      ExpectClose(b2r.grad(), b2.grad(), "b2.grad");
    });
  }
}

TEST(TensorParallel, SequenceParallelMlpMatchesOnSequenceShards) {
  const Mlp full;
  const int64_t B = 2, T = 6;
  const auto x0 = randn({B, T, full.C}, 7), R = randn({B, T, full.C}, 8);
  auto x = x0.clone().requires_grad_(true);
  auto w1 = full.w1.clone().requires_grad_(true), w2 = full.w2.clone().requires_grad_(true);
  auto ln_w = torch::ones({full.C}).requires_grad_(true);
  // A norm on the residual stream (sequence-sharded under sequence parallelism), then the MLP.
  auto n = torch::layer_norm(x, {full.C}, ln_w, {});
  auto y = x + torch::linear(torch::gelu(torch::linear(n, w1, full.b1), "tanh"), w2, full.b2);
  (y * R).sum().backward();
  for (int tp : {2, 3}) {
    const int64_t Fl = full.F / tp, Tl = T / tp;
    RunRanks(tp, [&](int r, comm::Group& g) {
      auto xr = x0.narrow(1, r * Tl, Tl).clone().requires_grad_(true);  // (B, T / tp, C)
      auto w1r = full.w1.narrow(0, r * Fl, Fl).clone().requires_grad_(true);
      auto w2r = full.w2.narrow(1, r * Fl, Fl).clone().requires_grad_(true);
      auto ln_wr = torch::ones({full.C}).requires_grad_(true);
      const int64_t before = g.collectives();
      auto nr = gather_sequence(torch::layer_norm(xr, {full.C}, ln_wr, {}), &g, 1);  // (B, T, C)
      auto a = torch::gelu(torch::linear(nr, w1r, full.b1.narrow(0, r * Fl, Fl)), "tanh");
      auto yr = xr + reduce_scatter_sequence(torch::linear(a, w2r), &g, 1) + full.b2;
      EXPECT_EQ(g.collectives() - before, 2) << "forward: all-gather + reduce-scatter";
      (yr * R.narrow(1, r * Tl, Tl)).sum().backward();
      EXPECT_EQ(g.collectives() - before, 4) << "backward: all-gather + reduce-scatter";
      ExpectClose(yr.detach(), y.detach().narrow(1, r * Tl, Tl), "y shard");
      ExpectClose(xr.grad(), x.grad().narrow(1, r * Tl, Tl), "x.grad shard");
      ExpectClose(w1r.grad(), w1.grad().narrow(0, r * Fl, Fl), "w1.grad");
      ExpectClose(w2r.grad(), w2.grad().narrow(1, r * Fl, Fl), "w2.grad");
      // The norm's weight sees only this rank's tokens: its gradient is a partial sum, which
      // the caller all-reduces over tp (as data parallelism does over dp).
      auto ln_grad = ln_wr.grad().clone();
      g.allreduce(ln_grad);
      ExpectClose(ln_grad, ln_w.grad(), "ln.weight.grad summed over tp");
    });
  }
}

TEST(TensorParallel, SplitSequenceKeepsAChunkAndGathersTheGradient) {
  const auto x0 = randn({2, 4, 3}, 9);
  RunRanks(2, [&](int r, comm::Group& g) {
    auto x = x0.clone().requires_grad_(true);
    auto part = split_sequence(x, &g, 1);
    ExpectClose(part.detach(), x0.narrow(1, 2 * r, 2), "chunk");
    (part * (r + 1)).sum().backward();
    // Rank 0's chunk had weight 1, rank 1's weight 2: the gathered gradient holds both.
    auto want = torch::cat({torch::ones({2, 2, 3}), torch::full({2, 2, 3}, 2.0)}, 1);
    ExpectClose(x.grad(), want, "gathered gradient");
    EXPECT_THROW(split_sequence(randn({2, 3, 1}, 1), &g, 1), c10::Error);
  });
}

TEST(TensorParallel, VocabParallelEmbeddingMatchesWithAPaddedVocabulary) {
  const int64_t V = 11, C = 4;
  const auto table = randn({V, C}, 10);
  const auto idx = torch::tensor({0, 10, 5, 6, 3, 10, 1, 9}, torch::kLong).view({2, 4});
  const auto R = randn({2, 4, C}, 11);
  auto w = table.clone().requires_grad_(true);
  auto e = torch::embedding(w, idx);
  (e * R).sum().backward();
  for (int tp : {2, 3, 4}) {
    for (bool sp : {false, true}) {
      if (sp && 4 % tp != 0) continue;
      RunRanks(tp, [&](int r, comm::Group& g) {
        const VocabShard s = vocab_shard(V, r, tp);
        EXPECT_EQ(s.local * tp >= V && s.local * tp < V + tp, true);
        // Padding rows (global index >= V) hold garbage: they must never matter.
        auto wr = torch::full({s.local, C}, 1e3f);
        const int64_t real = std::clamp<int64_t>(V - s.start, 0, s.local);
        if (real > 0) wr.narrow(0, 0, real).copy_(table.narrow(0, s.start, real));
        wr.requires_grad_(true);
        const int64_t before = g.collectives();
        auto er = vocab_parallel_embedding(idx, wr, s, &g, sp);
        EXPECT_EQ(g.collectives() - before, 1);
        auto want = sp ? e.detach().narrow(1, r * (4 / tp), 4 / tp) : e.detach();
        ExpectClose(er.detach(), want, "embedding, tp " + std::to_string(tp));
        auto Rr = sp ? R.narrow(1, r * (4 / tp), 4 / tp) : R;
        (er * Rr).sum().backward();
        if (real > 0)
          ExpectClose(wr.grad().narrow(0, 0, real), w.grad().narrow(0, s.start, real),
                      "table gradient");
        if (real < s.local)
          EXPECT_EQ(wr.grad().narrow(0, real, s.local - real).abs().sum().item<double>(), 0);
      });
    }
  }
}

TEST(TensorParallel, VocabParallelCrossEntropyMatchesWithoutGatheringTheLogits) {
  const int64_t N = 10, C = 6;
  for (int64_t V : {11, 5}) {  // 5 over 4 ranks: the last rank holds only padding
    const auto W = randn({V, C}, 12), h0 = randn({N, C}, 13);
    auto targets = torch::randint(V, {N}, at::make_generator<at::CPUGeneratorImpl>(14));
    targets[3] = -1;  // ignored rows
    targets[7] = -1;
    auto h = h0.clone().requires_grad_(true), w = W.clone().requires_grad_(true);
    auto want = model::fused_linear_cross_entropy(h, w, targets, 4);
    want.backward();
    for (int tp : {2, 3, 4}) {
      RunRanks(tp, [&](int r, comm::Group& g) {
        const VocabShard s = vocab_shard(V, r, tp);
        auto wr = torch::full({s.local, C}, 7.0f);  // padding rows: garbage
        const int64_t real = std::clamp<int64_t>(V - s.start, 0, s.local);
        if (real > 0) wr.narrow(0, 0, real).copy_(W.narrow(0, s.start, real));
        wr.requires_grad_(true);
        auto hr = h0.clone().requires_grad_(true);
        const int64_t before = g.collectives();
        auto loss = vocab_parallel_cross_entropy(copy_to_tp(hr, &g), wr, targets, s, &g, 3);
        const int64_t chunks = (N + 2) / 3;  // chunk_rows 3
        EXPECT_EQ(g.collectives() - before, 2 * chunks) << "forward: a max and a sum per chunk";
        loss.backward();
        EXPECT_EQ(g.collectives() - before, 2 * chunks + 1) << "backward: h's partials summed";
        const std::string at = "V " + std::to_string(V) + ", tp " + std::to_string(tp);
        EXPECT_NEAR(loss.item<double>(), want.item<double>(), 1e-6 * want.item<double>()) << at;
        ExpectClose(hr.grad(), h.grad(), "h.grad, " + at);
        if (real > 0)
          ExpectClose(wr.grad().narrow(0, 0, real), w.grad().narrow(0, s.start, real),
                      "w.grad, " + at);
        if (real < s.local)
          EXPECT_EQ(wr.grad().narrow(0, real, s.local - real).abs().sum().item<double>(), 0) << at;
      });
    }
  }
}

TEST(TensorParallel, WithoutAGroupEveryFunctionIsTheOneProcessComputation) {
  const auto x = randn({2, 4, 3}, 15);
  EXPECT_TRUE(copy_to_tp(x, nullptr).equal(x));
  EXPECT_TRUE(reduce_from_tp(x, nullptr).equal(x));
  EXPECT_TRUE(gather_sequence(x, nullptr, 1).equal(x));
  EXPECT_TRUE(reduce_scatter_sequence(x, nullptr, 1).equal(x));
  const auto W = randn({7, 3}, 16), h = randn({5, 3}, 17);
  const auto t = torch::tensor({0, 6, 2, -1, 3}, torch::kLong);
  auto one = vocab_parallel_cross_entropy(h, W, t, vocab_shard(7, 0, 1), nullptr);
  auto ref = model::fused_linear_cross_entropy(h, W, t);
  EXPECT_NEAR(one.item<double>(), ref.item<double>(), 1e-6 * ref.item<double>());
  auto bad = torch::tensor({0, 7, 2, -1, 3}, torch::kLong);
  EXPECT_THROW(vocab_parallel_cross_entropy(h, W, bad, vocab_shard(7, 0, 1), nullptr), c10::Error);
}

// Every split kind: the ranks' tp_slice tensors, placed where tp_pieces says, rebuild the whole
// tensor with every element written exactly once, and the padding rows of a vocabulary table
// (7 rows over tp 3: Vp 9) are in no piece.
TEST(TensorParallel, PiecesOfEveryRanksSliceCoverTheWholeTensorOnce) {
  model::ModelConfig c;
  const int tp = 3;
  std::vector<model::ParamSpec> specs = {
      {"qkv", {18, 4}, model::ParamRole::kQkv, 0, model::TpSplit::kColumn, 3},
      {"fc", {6, 4}, model::ParamRole::kMlpIn, 0, model::TpSplit::kColumn, 1},
      {"proj", {4, 6}, model::ParamRole::kAttentionOut, 0, model::TpSplit::kRow},
      {"wte", {7, 4}, model::ParamRole::kTokenEmbedding, -1, model::TpSplit::kVocab},
      {"ln", {4}, model::ParamRole::kNormWeight, 0, model::TpSplit::kReplicated}};
  for (const model::ParamSpec& spec : specs) {
    const auto whole = randn(spec.shape, 30) + 10;  // no zeros: an unwritten element shows
    auto rebuilt = torch::zeros(spec.shape);
    auto count = torch::zeros(spec.shape);
    size_t pieces = 0;
    for (int r = 0; r < tp; ++r) {
      const auto local = tp_slice(whole, spec, c, r, tp);
      EXPECT_EQ(local.sizes().vec(), tp_local_shape(spec, c, tp)) << spec.name;
      for (const TpPiece& p : tp_pieces(local, spec, c, r, tp)) {
        ++pieces;
        ASSERT_EQ(p.slice.size(), spec.shape.size()) << spec.name;
        auto dst = rebuilt, n = count;
        for (size_t d = 0; d < p.slice.size(); ++d) {
          dst = dst.slice(int64_t(d), p.slice[d].first, p.slice[d].second);
          n = n.slice(int64_t(d), p.slice[d].first, p.slice[d].second);
        }
        dst.copy_(p.tensor);
        n.add_(1);
      }
    }
    EXPECT_TRUE(rebuilt.equal(whole)) << spec.name;
    EXPECT_TRUE(count.eq(1).all().item<bool>()) << spec.name << ": an element written twice";
    const size_t expected = spec.name == "qkv" ? 9 : spec.name == "ln" ? 1 : 3;
    EXPECT_EQ(pieces, expected) << spec.name;
  }
}

}  // namespace
}  // namespace cairn::parallel
