// ZeRO-3 against a one-process torch::optim::AdamW run of the same model; ranks run as threads
// over a shared c10d::HashStore. Dimension keys: B batch, T sequence, C channels, V vocabulary.
#include "cairn/parallel/zero3.h"

#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <thread>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "cairn/comm/group.h"
#include "parallel/zero3_impl.h"

namespace cairn::parallel {
namespace {

constexpr int64_t kV = 11, kC = 8, kT = 5, kLayers = 2, kRows = 12;
constexpr double kLr = 1e-2, kClip = 0.5;
const AdamHyper kAdam{0.9, 0.95, 1e-8, 0.1};
using TensorMap = std::map<std::string, torch::Tensor>;

bool Decay(const std::string&, const torch::Tensor& t) { return t.dim() >= 2; }

// A pre-norm residual MLP block, (B, T, C) -> (B, T, C). Parameters come from a local
// generator: ranks run as threads and must not share the global one.
struct Block : torch::nn::Module {
  torch::Tensor ln_w, ln_b, fc_w, fc_b, proj_w, proj_b;
  explicit Block(at::Generator& gen) {
    ln_w = register_parameter("ln_w", 1 + 0.1 * torch::randn({kC}, gen));
    ln_b = register_parameter("ln_b", 0.1 * torch::randn({kC}, gen));
    fc_w = register_parameter("fc_w", 0.3 * torch::randn({2 * kC, kC}, gen));
    fc_b = register_parameter("fc_b", 0.1 * torch::randn({2 * kC}, gen));
    proj_w = register_parameter("proj_w", 0.3 * torch::randn({kC, 2 * kC}, gen));
    proj_b = register_parameter("proj_b", 0.1 * torch::randn({kC}, gen));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = torch::layer_norm(x, {kC}, ln_w, ln_b);
    return x + torch::linear(torch::gelu(torch::linear(h, fc_w, fc_b)), proj_w, proj_b);
  }
};

// Embedding + blocks + final norm + head tied to the token embedding.
struct TinyLM : torch::nn::Module {
  torch::Tensor wte, wpe, lnf_w, lnf_b;
  std::vector<std::shared_ptr<Block>> blocks;
  explicit TinyLM(uint64_t seed) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    wte = register_parameter("wte", 0.5 * torch::randn({kV, kC}, gen));
    wpe = register_parameter("wpe", 0.5 * torch::randn({kT, kC}, gen));
    for (int64_t i = 0; i < kLayers; ++i)
      blocks.push_back(register_module("h" + std::to_string(i), std::make_shared<Block>(gen)));
    lnf_w = register_parameter("lnf_w", 1 + 0.1 * torch::randn({kC}, gen));
    lnf_b = register_parameter("lnf_b", 0.1 * torch::randn({kC}, gen));
  }
  torch::Tensor embed(const torch::Tensor& idx) {  // (B, T) -> (B, T, C)
    return torch::embedding(wte, idx) + wpe.narrow(0, 0, idx.size(1));
  }
  torch::Tensor head_loss(const torch::Tensor& x, const torch::Tensor& targets) {
    auto logits = torch::linear(torch::layer_norm(x, {kC}, lnf_w, lnf_b), wte);  // (B, T, V)
    return torch::nn::functional::cross_entropy(logits.reshape({-1, kV}), targets.reshape({-1}));
  }
  torch::Tensor loss(const torch::Tensor& idx, const torch::Tensor& targets) {
    auto x = embed(idx);
    for (auto& b : blocks) x = b->forward(x);
    return head_loss(x, targets);
  }
};

// Stage 0 = embeddings, stage 1 + i = block i, last = final norm + tied head.
StagedModel Staged(const std::shared_ptr<TinyLM>& m) {
  StagedModel s;
  s.stage_params.push_back({{"wte", m->wte}, {"wpe", m->wpe}});
  for (int64_t i = 0; i < kLayers; ++i) {
    StagedModel::Params ps;
    for (auto& p : m->blocks[size_t(i)]->named_parameters())
      ps.emplace_back("h" + std::to_string(i) + "." + p.key(), p.value());
    s.stage_params.push_back(ps);
  }
  s.stage_params.push_back({{"lnf_w", m->lnf_w}, {"lnf_b", m->lnf_b}, {"wte", m->wte}});
  s.first = [m](const torch::Tensor& idx) { return m->embed(idx); };
  s.middle = [m](int64_t stage, const torch::Tensor& x) {
    return m->blocks[size_t(stage - 1)]->forward(x);
  };
  s.last = [m](const torch::Tensor& x, const torch::Tensor& y) { return m->head_loss(x, y); };
  return s;
}

// Inputs and targets (kRows, T) of step s.
std::pair<torch::Tensor, torch::Tensor> Batch(int64_t s) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(100 + s);
  auto x = torch::randint(kV, {kRows, kT}, gen);
  return {x, torch::randint(kV, {kRows, kT}, gen)};
}

class Autocast {  // bf16 CPU autocast, as the trainer sets it around a forward pass
 public:
  explicit Autocast(bool on) : on_(on) {
    if (!on_) return;
    at::autocast::set_cpu_enabled(true);
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
  }
  ~Autocast() {
    if (!on_) return;
    at::autocast::set_cpu_enabled(false);
    at::autocast::clear_cache();
  }

 private:
  bool on_;
};

struct Trace {
  std::vector<double> losses, norms;  // per step: this rank's mean loss, global gradient norm
  TensorMap params, state;            // "model.<name>", "optim.<name>.exp_avg[_sq]"
};

// One process, torch::optim::AdamW (decay on matrices only), two micro-batches per step.
Trace Reference(int steps, bool bf16 = false) {
  auto net = std::make_shared<TinyLM>(1);
  std::vector<torch::Tensor> decay, no_decay;
  for (auto& p : net->named_parameters())
    (Decay(p.key(), p.value()) ? decay : no_decay).push_back(p.value());
  auto options = [](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(kLr)
                                                            .betas({kAdam.beta1, kAdam.beta2})
                                                            .eps(kAdam.eps)
                                                            .weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, options(kAdam.weight_decay));
  groups.emplace_back(no_decay, options(0.0));
  torch::optim::AdamW opt(groups, torch::optim::AdamWOptions(kLr));
  Trace t;
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    auto [x, y] = Batch(s);
    double sum = 0;
    for (int a = 0; a < 2; ++a) {
      torch::Tensor loss;
      {
        Autocast autocast(bf16);
        loss =
            net->loss(x.narrow(0, a * kRows / 2, kRows / 2), y.narrow(0, a * kRows / 2, kRows / 2));
      }
      (loss / 2).backward();
      sum += loss.item<double>();
    }
    t.losses.push_back(sum / 2);
    t.norms.push_back(torch::nn::utils::clip_grad_norm_(net->parameters(), kClip));
    opt.step();
  }
  for (auto& p : net->named_parameters()) t.params["model." + p.key()] = p.value().detach().clone();
  return t;
}

struct Start {  // resume point: "model." and "optim." tensors after `step` steps
  TensorMap tensors;
  int64_t step = 0;
};

// Runs `world` ranks for `steps` steps; rank r takes rows (r * accum + a) * rows... of the
// global batch in `accum` micro-batches. Ranks other than 0 build different initial values
// (the constructor broadcasts rank 0's).
std::vector<Trace> Train(int world, int accum, int steps, const Start* start = nullptr,
                         bool bf16 = false) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<Trace> out(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        comm::GroupOptions go;
        go.timeout = std::chrono::seconds(30);
        auto group = world > 1 ? comm::Group::Create(store, r, world, go) : nullptr;
        auto net = std::make_shared<TinyLM>(r == 0 ? 1 : 7);
        Zero3 z(Staged(net), Decay, group.get(), kAdam);
        const int64_t first = start ? start->step : 0;
        if (start) {
          ASSERT_TRUE(z.load_params(start->tensors, "model.").ok());
          ASSERT_TRUE(z.load_state(start->tensors, "optim.", start->step).ok());
        }
        Trace& t = out[size_t(r)];
        const int64_t rows = kRows / world / accum;
        for (int64_t s = first; s < first + steps; ++s) {
          z.zero_grad();
          auto [x, y] = Batch(s);
          double sum = 0;
          for (int a = 0; a < accum; ++a) {
            const int64_t off = (r * accum + a) * rows;
            torch::Tensor loss;
            {
              Autocast autocast(bf16);
              loss = z.loss(x.narrow(0, off, rows), y.narrow(0, off, rows));
            }
            (loss / accum).backward();
            sum += loss.item<double>();
          }
          z.finish_backward();
          t.norms.push_back(z.clip_grad_norm(kClip));
          z.step(kLr);
          t.losses.push_back(sum / accum);
        }
        EXPECT_EQ(z.step_count(), first + steps);
        for (auto& [k, v] : z.gather_state()) t.state["optim." + k] = v;
        z.gather_full_params();
        for (auto& p : net->named_parameters())
          t.params["model." + p.key()] = p.value().detach().clone();
        z.release_full_params();
      } catch (const std::exception& e) {
        ADD_FAILURE() << "rank " << r << ": " << e.what();
      }
    });
  for (auto& t : threads) t.join();
  return out;
}

double MeanLoss(const std::vector<Trace>& ranks, size_t step) {
  double sum = 0;
  for (auto& t : ranks) sum += t.losses.at(step);
  return sum / double(ranks.size());
}

void ExpectClose(const TensorMap& got, const TensorMap& want, double rtol, double atol,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (auto& [k, v] : want) {
    ASSERT_TRUE(got.count(k)) << what << ": " << k;
    EXPECT_TRUE(torch::allclose(got.at(k), v, rtol, atol))
        << what << ": " << k << " differs by " << (got.at(k) - v).abs().max().item<double>();
  }
}

TEST(Zero3Layout, TiedParameterLivesInItsFirstStage) {
  // Parameter 0 is used by stages 0 and 2.
  auto l = plan_zero3_layout({{0, 1}, {2}, {3, 0}}, {5, 3, 4, 2}, 2);
  ASSERT_EQ(l.flats.size(), 4u);
  EXPECT_EQ(l.param_flat, (std::vector<int>{1, 0, 2, 3}));
  EXPECT_EQ(l.flats[0].numel, 4);  // parameter 1 (3) padded to 4
  EXPECT_EQ(l.flats[1].numel, 6);  // parameter 0 alone
  EXPECT_EQ(l.stage_flats, (std::vector<std::vector<int>>{{0, 1}, {2}, {1, 3}}));
}

TEST(Zero3Layout, EveryParameterOnceAndBuffersPadded) {
  const std::vector<std::vector<std::vector<int>>> uses = {
      {{0}, {1}}, {{0, 1, 2}, {3}, {4, 2}, {0, 5}}, {{1, 0}, {}, {2, 3, 1}}};
  for (const auto& stages : uses)
    for (int shards = 1; shards <= 4; ++shards) {
      int n = 0;
      for (auto& s : stages)
        for (int p : s) n = std::max(n, p + 1);
      std::vector<int64_t> numels;
      for (int p = 0; p < n; ++p) numels.push_back(1 + (p * 7) % 5);
      auto l = plan_zero3_layout(stages, numels, shards);
      std::vector<int> seen(size_t(n), 0);
      for (size_t f = 0; f < l.flats.size(); ++f) {
        int64_t end = 0;
        EXPECT_EQ(l.flats[f].numel % shards, 0);
        for (auto& slot : l.flats[f].slots) {
          ++seen[size_t(slot.param)];
          EXPECT_EQ(slot.offset, end);
          EXPECT_EQ(slot.numel, numels[size_t(slot.param)]);
          EXPECT_EQ(l.param_flat[size_t(slot.param)], int(f));
          end = slot.offset + slot.numel;
        }
        EXPECT_LT(l.flats[f].numel - end, shards);
      }
      for (int p = 0; p < n; ++p) EXPECT_EQ(seen[size_t(p)], 1) << p;
      for (size_t s = 0; s < stages.size(); ++s)
        for (int p : stages[s]) {
          auto& fl = l.stage_flats[s];
          EXPECT_TRUE(std::count(fl.begin(), fl.end(), l.param_flat[size_t(p)]) == 1);
        }
    }
}

TEST(Zero3, MatchesOneProcessAdamWWithAccumulationAndTiedHead) {
  auto ref = Reference(5);
  for (int world : {1, 2, 3}) {
    auto got = Train(world, 2, 5);
    for (size_t s = 0; s < 5; ++s) {
      EXPECT_NEAR(MeanLoss(got, s), ref.losses[s], 1e-5 * ref.losses[s]) << "world " << world;
      EXPECT_NEAR(got[0].norms.at(s), ref.norms[s], 1e-5 * ref.norms[s]) << "world " << world;
    }
    for (int r = 0; r < world; ++r) {
      ExpectClose(got[size_t(r)].params, ref.params, 1e-5, 1e-6, "world " + std::to_string(world));
      for (auto& [k, v] : got[0].params)
        EXPECT_TRUE(torch::equal(got[size_t(r)].params.at(k), v)) << k;
      for (auto& [k, v] : got[0].state)
        EXPECT_TRUE(torch::equal(got[size_t(r)].state.at(k), v)) << k;
    }
  }
}

TEST(Zero3, AutocastIsUsedAgainForTheRecomputation) {
  auto ref = Reference(3, /*bf16=*/true);
  auto got = Train(2, 1, 3, nullptr, /*bf16=*/true);
  for (size_t s = 0; s < 3; ++s) {
    EXPECT_NEAR(MeanLoss(got, s), ref.losses[s], 1e-4 * ref.losses[s]);
    EXPECT_NEAR(got[0].norms.at(s), ref.norms[s], 1e-4 * ref.norms[s]);
  }
}

TEST(Zero3, ParametersAreReleasedBetweenUses) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      auto group = comm::Group::Create(store, r, 2, {});
      auto net = std::make_shared<TinyLM>(1);
      StagedModel staged = Staged(net);
      const int64_t n = int64_t(staged.stage_params.size());
      // While stage s runs, exactly its parameters are full; every other one is empty.
      auto check = [by_stage = staged.stage_params](int64_t s) {
        for (auto& stage : by_stage)
          for (auto& [name, t] : stage) {
            bool mine = false;
            for (auto& q : by_stage[size_t(s)]) mine = mine || q.second.is_same(t);
            EXPECT_EQ(t.numel() > 0, mine) << "stage " << s << " " << name;
          }
      };
      std::vector<int> calls(size_t(n), 0);
      auto first = staged.first;
      auto middle = staged.middle;
      auto last = staged.last;
      staged.first = [&, first](const torch::Tensor& idx) {
        check(0);
        ++calls[0];
        return first(idx);
      };
      staged.middle = [&, middle](int64_t s, const torch::Tensor& x) {
        check(s);
        ++calls[size_t(s)];
        return middle(s, x);
      };
      staged.last = [&, last](const torch::Tensor& x, const torch::Tensor& y) {
        check(n - 1);
        ++calls[size_t(n - 1)];
        return last(x, y);
      };
      Zero3 z(std::move(staged), Decay, group.get(), kAdam);
      auto all_empty = [&] {
        for (auto& p : net->parameters()) EXPECT_EQ(p.numel(), 0);
      };
      all_empty();
      auto [x, y] = Batch(0);
      auto loss = z.loss(x.narrow(0, r * 6, 6), y.narrow(0, r * 6, 6));
      EXPECT_EQ(loss.grad_fn()->name(), "Zero3StageBackward");
      all_empty();
      loss.backward();
      all_empty();
      for (int c : calls) EXPECT_EQ(c, 2);  // forward + recomputation
      z.finish_backward();
      z.step(kLr);
      {
        torch::NoGradGuard no_grad;
        EXPECT_FALSE(z.loss(x, y).requires_grad());
      }
      all_empty();
      z.gather_full_params();
      for (auto& p : net->named_parameters()) EXPECT_GT(p.value().numel(), 0) << p.key();
      EXPECT_THROW(z.loss(x, y), c10::Error);
      z.release_full_params();
      all_empty();
    });
  for (auto& t : threads) t.join();
}

TEST(Zero3, MemoryIsSixteenBytesOverWorld) {
  for (int world : {2, 3}) {
    auto store = c10::make_intrusive<c10d::HashStore>();
    std::vector<MemoryReport> reports(static_cast<size_t>(world));
    std::vector<std::thread> threads;
    for (int r = 0; r < world; ++r)
      threads.emplace_back([&, r] {
        auto group = comm::Group::Create(store, r, world, {});
        Zero3 z(Staged(std::make_shared<TinyLM>(1)), Decay, group.get(), kAdam);
        reports[size_t(r)] = z.memory_report();
      });
    for (auto& t : threads) t.join();
    const MemoryReport& m = reports[0];
    EXPECT_EQ(m.params, kV * kC + kT * kC + kLayers * (5 * kC + 4 * kC * kC) + 2 * kC);
    if (world == 2) {  // every buffer has an even size: no padding
      EXPECT_DOUBLE_EQ(m.param_bytes, 2.0);
      EXPECT_DOUBLE_EQ(m.grad_bytes, 2.0);
      EXPECT_DOUBLE_EQ(m.optimizer_bytes, 4.0);
      EXPECT_DOUBLE_EQ(m.total(), 8.0);
    } else {  // padding to multiples of 3: at most 2 elements per buffer (5 buffers)
      EXPECT_GE(m.total(), 16.0 / 3);
      EXPECT_LE(m.total(), 16.0 / 3 * (1 + 10.0 / double(m.params)));
    }
  }
}

TEST(Zero3, StateSavedAtOneWorldContinuesAtAnother) {
  auto straight = Train(2, 1, 5);
  auto head = Train(2, 1, 2);
  Start start;
  start.step = 2;
  for (auto& [k, v] : head[0].params) start.tensors[k] = v;
  for (auto& [k, v] : head[0].state) start.tensors[k] = v;
  for (auto [world, accum] : {std::pair{2, 1}, {1, 2}, {3, 2}}) {
    auto tail = Train(world, accum, 3, &start);
    const std::string what = "world " + std::to_string(world);
    for (size_t s = 0; s < 3; ++s)
      EXPECT_NEAR(MeanLoss(tail, s), MeanLoss(straight, s + 2), 1e-6 * MeanLoss(straight, s + 2))
          << what;
    ExpectClose(tail[0].params, straight[0].params, 1e-6, 1e-7, what);
    ExpectClose(tail[0].state, straight[0].state, 1e-5, 1e-8, what);
    if (world == 2)  // same world: deterministic resume
      for (auto& [k, v] : straight[0].params)
        EXPECT_TRUE(torch::equal(tail[0].params.at(k), v)) << k;
  }
}

TEST(Zero3, LoadRejectsBadInputAndChangesNothing) {
  auto net = std::make_shared<TinyLM>(1);
  Zero3 z(Staged(net), Decay, nullptr, kAdam);
  auto [x, y] = Batch(0);
  z.zero_grad();
  z.loss(x, y).backward();
  z.finish_backward();
  z.step(kLr);
  TensorMap saved;
  for (auto& [k, v] : z.gather_state()) saved["optim." + k] = v;
  z.gather_full_params();
  for (auto& p : net->named_parameters()) saved["model." + p.key()] = p.value().detach().clone();
  z.release_full_params();

  TensorMap missing = saved, wrong_shape = saved;
  missing.erase("optim.h1.fc_w.exp_avg_sq");
  missing.erase("model.lnf_b");
  // The last tensor each load checks is wrong; the others would load.
  for (auto& [k, v] : saved) wrong_shape[k] = torch::zeros_like(v);
  wrong_shape["optim.lnf_b.exp_avg_sq"] = torch::zeros({kC + 1});
  wrong_shape["model.lnf_b"] = torch::zeros({kC}, torch::kDouble);
  for (const TensorMap* bad : {&missing, &wrong_shape}) {
    EXPECT_FALSE(z.load_state(*bad, "optim.", 7).ok());
    EXPECT_FALSE(z.load_params(*bad, "model.").ok());
  }
  EXPECT_FALSE(z.load_state(saved, "optim.", -1).ok());
  EXPECT_EQ(z.step_count(), 1);
  TensorMap now;
  for (auto& [k, v] : z.gather_state()) now["optim." + k] = v;
  z.gather_full_params();
  for (auto& p : net->named_parameters()) now["model." + p.key()] = p.value().detach().clone();
  z.release_full_params();
  ExpectClose(now, saved, 0, 0, "after rejected loads");
}

}  // namespace
}  // namespace cairn::parallel
