// What the layout tests share (tensor, context and pipeline parallelism against the one-process
// run, ranks as threads): small GPT-2 and LLaMA configs, a step's batch, tolerance checks and
// one training step through an Engine.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "cairn/comm/group.h"
#include "cairn/model/config.h"
#include "cairn/model/language_model.h"
#include "cairn/model/param_specs.h"
#include "cairn/parallel/engine.h"
#include "cairn/parallel/tensor_parallel.h"

namespace cairn::parallel::testing {

// A GPT-2 of n_layer blocks whose vocabulary (63, odd) no tp divides.
inline model::ModelConfig TinyGpt2(int64_t seq, int64_t n_layer = 2, int64_t n_head = 2,
                                   int64_t n_embd = 16) {
  model::ModelConfig c;
  c.n_layer = n_layer;
  c.n_head = n_head;
  c.n_embd = n_embd;
  c.vocab_size = 63;
  c.block_size = seq;
  return c;
}

// A LLaMA with grouped-query attention: 4 query heads, 2 key/value heads.
inline model::ModelConfig TinyLlama(int64_t seq, int64_t n_layer = 2) {
  model::ModelConfig c = TinyGpt2(seq, n_layer, 4, 16);
  c.arch = "llama";
  c.n_kv_head = 2;
  c.vocab_size = 61;
  return c;
}

// Step `step`'s global batch of `batch` sequences of `seq` tokens; rank `part` of `parts` takes
// its consecutive share.
inline std::pair<torch::Tensor, torch::Tensor> StepBatch(const model::ModelConfig& c, int step,
                                                         int64_t batch, int64_t seq, int part = 0,
                                                         int parts = 1) {
  auto gen = at::detail::createCPUGenerator(100 + step);
  auto x = torch::randint(0, c.vocab_size, {batch, seq}, gen);
  auto y = torch::randint(0, c.vocab_size, {batch, seq}, gen);
  const int64_t n = batch / parts;
  return {x.narrow(0, part * n, n), y.narrow(0, part * n, n)};
}

inline void ExpectClose(const torch::Tensor& a, const torch::Tensor& b, double rtol,
                        const std::string& what, double atol = 1e-8) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  const double scale = b.abs().max().item<double>(), err = (a - b).abs().max().item<double>();
  EXPECT_LE(err, rtol * scale + atol) << what << ": max error " << err << " at scale " << scale;
}

// What a layout's run gives, to compare with the one-process run's.
struct Trace {
  std::vector<double> losses, norms;            // per step: the mean over dp, the clip norm
  std::map<std::string, torch::Tensor> grads;   // step 1's, whole
  std::map<std::string, torch::Tensor> params;  // after the last step, whole (when kept)
};

// One step of `e` on micro-batches of (x, y) (each `micro` rows; the step's gradient is their
// mean): zero_grad, forward_backward, finish_backward, clip at 0.5, AdamW at 3e-3. Appends
// the loss (averaged over `dp` when given) and the norm to `t`; with `keep_grads`, puts the
// gradients `m` holds before clipping in t->grads, gathered over `tp` when given.
inline void TrainStep(Engine& e, model::LanguageModel& m, const torch::Tensor& x,
                      const torch::Tensor& y, int64_t micro, comm::Group* dp, comm::Group* tp,
                      bool keep_grads, Trace* t) {
  std::vector<Engine::MicroBatchInput> mbs;
  const int64_t n = x.size(0) / micro;
  for (int64_t i = 0; i < n; ++i)
    mbs.push_back({x.narrow(0, i * micro, micro), y.narrow(0, i * micro, micro), 1.0 / double(n)});
  e.zero_grad();
  const std::vector<double> losses = e.forward_backward(mbs);
  e.finish_backward();
  if (keep_grads) {
    const auto specs = model::param_specs(m.config());
    for (auto& p : m.named_parameters())
      t->grads[p.key()] =
          tp ? tp_gather(p.value().grad(), *model::find_spec(specs, p.key()), m.config(), tp)
             : p.value().grad().clone();
  }
  t->norms.push_back(e.clip_grad_norm(0.5));
  e.step(3e-3);
  double loss = 0;
  for (double l : losses) loss += l / double(losses.size());
  if (dp) {
    auto mean = torch::tensor({loss}, torch::kDouble);
    dp->allreduce(mean);
    loss = mean.item<double>() / dp->size();
  }
  t->losses.push_back(loss);
}

// Each step's loss of `got` within `rtol` of `want`'s, and its step-1 gradients (those it has).
inline void ExpectSameRun(const Trace& got, const Trace& want, double rtol = 1e-5) {
  ASSERT_EQ(got.losses.size(), want.losses.size());
  for (size_t s = 0; s < want.losses.size(); ++s)
    EXPECT_NEAR(got.losses[s], want.losses[s], rtol * want.losses[s]) << "step " << s + 1;
  for (auto& [name, g] : got.grads) ExpectClose(g, want.grads.at(name), rtol, "gradient " + name);
}

// The checkpoint as the ranks write it (Engine::checkpoint_share): every rank's pieces put in
// place, and rank 0's copy of the tensors all ranks hold; `count` says how often each element
// was written.
struct Shares {
  std::mutex mu;
  std::map<std::string, torch::Tensor> whole, count;
  std::map<std::string, torch::Tensor> gathered;  // rank 0's gather_params + optimizer state

  void add(const Engine::CheckpointShare& share, int rank) {
    std::lock_guard<std::mutex> lock(mu);
    auto put = [this](const std::string& name, const torch::Tensor& t,
                      const std::vector<int64_t>& shape,
                      const std::vector<std::pair<int64_t, int64_t>>& slice) {
      if (!whole.count(name)) {
        whole[name] = torch::zeros(shape, t.options());
        count[name] = torch::zeros(shape, torch::kInt);
      }
      auto dst = whole[name], n = count[name];
      for (size_t d = 0; d < slice.size(); ++d) {
        dst = dst.slice(int64_t(d), slice[d].first, slice[d].second);
        n = n.slice(int64_t(d), slice[d].first, slice[d].second);
      }
      dst.copy_(t);
      n.add_(1);
    };
    for (const StatePiece& p : share.owned) put(p.name, p.tensor, p.shape, p.slice);
    if (rank != 0) return;
    for (const auto& [name, t] : share.replicated) {
      std::vector<std::pair<int64_t, int64_t>> all;
      for (int64_t d : t.sizes()) all.emplace_back(0, d);
      put(name, t, t.sizes().vec(), all);
    }
  }
  void ExpectWholeOnce() {
    ASSERT_EQ(whole.size(), gathered.size());
    for (auto& [name, t] : gathered) {
      ASSERT_TRUE(whole.count(name)) << name << " is in no rank's share";
      EXPECT_TRUE(whole[name].equal(t)) << name;
      EXPECT_TRUE(count[name].eq(1).all().item<bool>()) << name << ": not written exactly once";
    }
  }
};

}  // namespace cairn::parallel::testing
