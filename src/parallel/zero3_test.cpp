// ZeRO-3 against a one-process torch::optim::AdamW run of the same model; ranks run as threads
// over a shared c10d::HashStore. Dimension keys: B batch, T sequence, C channels, V vocabulary.
#include "cairn/parallel/zero3.h"

#include <ATen/autocast_mode.h>
#include <c10/core/CPUAllocator.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <thread>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <unordered_map>

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

// Counts the CPU bytes each rank holds. Put in front of libtorch's CPU allocator, it charges
// every block allocated on a thread that charge_to(rank) named to that rank, until the block is
// freed on whichever thread (Gloo's threads release buffers too). Blocks keep their data
// pointer as context, as raw_allocate() requires. Never destroyed: blocks it handed out may
// outlive a test.
class HeldBytes final : public c10::Allocator {
 public:
  static HeldBytes& Get() {
    static HeldBytes* a = new HeldBytes();
    return *a;
  }
  void install() {
    base_ = c10::GetCPUAllocator();
    c10::SetCPUAllocator(this, kPriority);
  }
  void uninstall() { c10::SetCPUAllocator(base_, kPriority); }
  // From now on this thread's allocations are charged to `rank` (-1: to nobody).
  static void charge_to(int rank) { rank_ = rank; }
  int64_t held(int rank) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = held_.find(rank);
    return it == held_.end() ? 0 : it->second;
  }
  // held(rank) once it has not changed for 100 ms (at most 5 s): a Gloo worker thread drops
  // its reference to a collective's buffers just after the caller saw the collective finish.
  int64_t settled(int rank) const {
    int64_t last = held(rank);
    for (int same = 0, i = 0; same < 20 && i < 1000; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      const int64_t now = held(rank);
      same = now == last ? same + 1 : 0;
      last = now;
    }
    return last;
  }

  c10::DataPtr allocate(size_t n) const override {
    c10::DataPtr inner = base_->allocate(n);
    if (rank_ < 0 || inner.get() == nullptr) return inner;
    void* data = inner.get();
    const c10::Device device = inner.device();
    {
      std::lock_guard<std::mutex> lock(mu_);
      held_[rank_] += int64_t(n);
      blocks_.emplace(data, Block{std::move(inner), rank_, int64_t(n)});
    }
    return {data, data, &HeldBytes::Free, device};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &HeldBytes::Free; }

 private:
  struct Block {
    c10::DataPtr inner;  // the base allocator's block, freed with this
    int rank;
    int64_t bytes;
  };
  static constexpr uint8_t kPriority = 255;  // above the default CPU allocator's
  static void Free(void* data) {
    HeldBytes& a = Get();
    std::unique_lock<std::mutex> lock(a.mu_);
    auto it = a.blocks_.find(data);
    if (it == a.blocks_.end()) {  // not charged: the base allocator's own block
      lock.unlock();
      a.base_->raw_deleter()(data);
      return;
    }
    Block block = std::move(it->second);
    a.blocks_.erase(it);
    a.held_[block.rank] -= block.bytes;
    lock.unlock();
  }  // block.inner frees the memory here
  static thread_local int rank_;
  c10::Allocator* base_ = nullptr;
  mutable std::mutex mu_;
  mutable std::map<int, int64_t> held_;              // GUARDED_BY(mu_)
  mutable std::unordered_map<void*, Block> blocks_;  // GUARDED_BY(mu_)
};
thread_local int HeldBytes::rank_ = -1;

// What each rank really holds after a step of ZeRO stage 0 (DDP), 1 and 2 (DataParallel) and 3
// (Zero3) at world 2: the bytes of every CPU block its thread allocated since it built the
// model and has not freed (parameters, gradients, AdamW moments, and anything else that would
// stay), not what memory_report() says. The README's table per parameter: 4 (parameters) +
// 4 or 4/d (gradients) + 8 or 8/d (moments) = 16, 12, 10, 8 bytes at d = 2, plus the padding of
// every flat buffer to a multiple of d (computed here from plan_buckets / plan_zero3_layout).
TEST(ZeroMemory, BytesEachRankHoldsAfterAStepFollowTheStageFormulas) {
  constexpr int kWorld = 2;
  constexpr int64_t kBucketBytes = 256;  // several DataParallel buckets
  // Parameter counts and the padded sizes of the flat buffers.
  int64_t params = 0, dp_padded = 0, z3_padded = 0;
  {
    auto net = std::make_shared<TinyLM>(1);
    std::vector<int64_t> numels;
    for (auto& p : net->named_parameters()) numels.push_back(p.value().numel());
    for (int64_t n : numels) params += n;
    for (auto& b : plan_buckets(numels, kBucketBytes / 4, kWorld)) dp_padded += b.numel;
    // ZeRO-3 numbers distinct parameters in first-use order over the stages.
    std::vector<torch::Tensor> distinct;
    std::vector<int64_t> z3_numels;
    std::vector<std::vector<int>> uses;
    for (auto& stage : Staged(net).stage_params) {
      uses.emplace_back();
      for (auto& [name, t] : stage) {
        size_t i = 0;
        while (i < distinct.size() && !distinct[i].is_same(t)) ++i;
        if (i == distinct.size()) {
          distinct.push_back(t);
          z3_numels.push_back(t.numel());
        }
        uses.back().push_back(int(i));
      }
    }
    ASSERT_EQ(distinct.size(), numels.size());
    for (auto& f : plan_zero3_layout(uses, z3_numels, kWorld).flats) z3_padded += f.numel;
  }
  const int64_t d = kWorld;
  // Bytes per rank: parameters + gradients + both moments.
  const std::map<int, int64_t> expected = {
      {0, 4 * dp_padded + 4 * dp_padded + 8 * dp_padded},
      {1, 4 * dp_padded + 4 * dp_padded + 8 * dp_padded / d},
      {2, 4 * dp_padded + 4 * dp_padded / d + 8 * dp_padded / d},
      {3, (4 + 4 + 8) * z3_padded / d}};
  const std::map<int, double> per_param = {{0, 16.0}, {1, 12.0}, {2, 10.0}, {3, 8.0}};

  HeldBytes& bytes = HeldBytes::Get();
  bytes.install();
  std::map<int, std::vector<int64_t>> held;  // stage -> per rank
  for (int stage : {0, 1, 2, 3}) {
    auto store = c10::make_intrusive<c10d::HashStore>();
    std::vector<int64_t> after_step(kWorld, -1), before(kWorld, 0);
    std::vector<std::thread> threads;
    for (int r = 0; r < kWorld; ++r)
      threads.emplace_back([&, r] {
        try {
          at::set_num_threads(1);
          comm::GroupOptions go;
          go.timeout = std::chrono::seconds(30);
          auto group = comm::Group::Create(store, r, kWorld, go);
          before[size_t(r)] = bytes.held(r);
          HeldBytes::charge_to(r);
          auto net = std::make_shared<TinyLM>(r == 0 ? 1 : 7);
          const int64_t rows = kRows / kWorld;
          if (stage < 3) {
            DataParallel::NamedParams named;
            for (auto& p : net->named_parameters()) named.emplace_back(p.key(), p.value());
            DataParallelOptions o;
            o.zero_stage = stage;
            o.bucket_bytes = kBucketBytes;
            o.adam = kAdam;
            DataParallel dp(std::move(named), Decay, group.get(), o);
            dp.broadcast_parameters();
            dp.zero_grad();
            dp.set_sync(true);
            {
              auto [x, y] = Batch(0);
              net->loss(x.narrow(0, r * rows, rows), y.narrow(0, r * rows, rows)).backward();
            }
            dp.finish_backward();
            dp.step(kLr);
            after_step[size_t(r)] = bytes.settled(r) - before[size_t(r)];
          } else {
            Zero3 z(Staged(net), Decay, group.get(), kAdam);
            z.zero_grad();
            {
              auto [x, y] = Batch(0);
              z.loss(x.narrow(0, r * rows, rows), y.narrow(0, r * rows, rows)).backward();
            }
            z.finish_backward();
            z.step(kLr);
            after_step[size_t(r)] = bytes.settled(r) - before[size_t(r)];
          }
          HeldBytes::charge_to(-1);
        } catch (const std::exception& e) {
          HeldBytes::charge_to(-1);
          ADD_FAILURE() << "stage " << stage << " rank " << r << ": " << e.what();
        }
      });
    for (auto& t : threads) t.join();
    held[stage] = after_step;
    // Everything a rank allocated is freed with the engine and the model.
    for (int r = 0; r < kWorld; ++r)
      EXPECT_EQ(bytes.settled(r) - before[size_t(r)], 0) << "stage " << stage << " rank " << r;
  }
  bytes.uninstall();

  for (int stage : {0, 1, 2, 3})
    for (int r = 0; r < kWorld; ++r) {
      const int64_t got = held[stage][size_t(r)];
      const double got_per_param = double(got) / double(params);
      const int64_t padded = stage < 3 ? dp_padded : z3_padded;
      std::cout << "ZeRO-" << stage << " rank " << r << ": " << got << " bytes held for " << params
                << " parameters = " << got_per_param << " bytes/parameter (formula "
                << per_param.at(stage) << ")\n";
      EXPECT_EQ(got, expected.at(stage)) << "stage " << stage << " rank " << r;
      EXPECT_GE(got_per_param, per_param.at(stage)) << "stage " << stage << " rank " << r;
      EXPECT_LE(got_per_param, per_param.at(stage) * double(padded) / double(params))
          << "stage " << stage << " rank " << r << " (padding to " << padded << ")";
    }
}

}  // namespace
}  // namespace cairn::parallel
