// Micro-benchmarks of the model module's fused CPU kernels against the plain torch
// compositions they replace, printed as milliseconds and ratios:
//   1. loss forward+backward of a 4-layer d=256 GPT-2 at B=8, T=256, V=50304:
//      fused_linear_cross_entropy vs full logits + torch cross_entropy;
//   2. the output head + loss alone on the same (B*T, C) hidden states;
//   3. causal attention forward+backward: block-causal kernel vs naive (full scores + mask).
// Usage: model_bench [iterations=5]. Not a test: timings depend on the machine and its load.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <utility>
#include <vector>

#include "cairn/model/attention.h"
#include "cairn/model/fused_cross_entropy.h"
#include "cairn/model/language_model.h"

namespace {

namespace F = torch::nn::functional;
using cairn::model::LanguageModel;

double elapsed_ms(const std::function<void()>& fn) {
  auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Median wall times in milliseconds of `iters` runs of `base` and `ours`, after one warm-up
// run each. Runs alternate so that load from other processes affects both alike.
std::pair<double, double> median_ms(int iters, const std::function<void()>& base,
                                    const std::function<void()>& ours) {
  base();
  ours();
  std::vector<double> a, b;
  for (int i = 0; i < iters; ++i) {
    a.push_back(elapsed_ms(base));
    b.push_back(elapsed_ms(ours));
  }
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  return {a[a.size() / 2], b[b.size() / 2]};
}

void report(const char* what, const char* base_name, double base, const char* ours_name,
            double ours) {
  std::printf("%-34s %-26s %9.1f ms   %-22s %9.1f ms   speedup %.2fx\n", what, base_name, base,
              ours_name, ours, base / ours);
}

void zero_grads(LanguageModel& m) {
  for (auto& p : m.parameters())
    if (p.grad().defined()) p.mutable_grad().zero_();
}

void bench_model_loss(int iters) {
  cairn::model::ModelConfig c;
  c.arch = "gpt2";
  c.n_layer = 4;
  c.n_head = 4;
  c.n_embd = 256;
  c.vocab_size = 50304;
  c.block_size = 256;
  const int64_t B = 8, T = 256;
  auto m = cairn::model::build_model(c, 1);
  auto idx = torch::randint(0, c.vocab_size, {B, T}, torch::kLong);
  auto targets = torch::randint(0, c.vocab_size, {B, T}, torch::kLong);
  auto unfused_step = [&] {
    zero_grads(*m);
    auto logits = m->forward(idx);  // (B, T, V)
    F::cross_entropy(logits.view({-1, c.vocab_size}), targets.view({-1})).backward();
  };
  auto fused_step = [&] {
    zero_grads(*m);
    m->loss(idx, targets).backward();
  };
  auto [unfused, fused] = median_ms(iters, unfused_step, fused_step);
  report("gpt2 L4 d256 B8 T256 V50304 step", "logits+cross_entropy", unfused, "fused CE", fused);
  const double tokens = double(B * T);
  std::printf("%-34s %.0f tokens/s fused, %.0f unfused; %.1f GFLOP/s of model FLOPs (fused)\n", "",
              tokens / fused * 1e3, tokens / unfused * 1e3,
              m->flops_per_token(T) * tokens / fused * 1e-6);
  // Where the fused step's time goes: the blocks forward, the head + loss (its gradients
  // included: the fused loss computes them in forward), the backward through the blocks.
  std::vector<double> fwd, head, bwd;
  for (int i = 0; i < iters; ++i) {
    zero_grads(*m);
    torch::Tensor h, loss;
    fwd.push_back(elapsed_ms([&] { h = m->hidden(idx); }));
    head.push_back(elapsed_ms([&] { loss = m->head_loss(h, targets); }));
    bwd.push_back(elapsed_ms([&] { loss.backward(); }));
  }
  for (auto* v : {&fwd, &head, &bwd}) std::sort(v->begin(), v->end());
  std::printf("%-34s medians: blocks forward %.1f ms, head + loss %.1f ms, backward %.1f ms\n", "",
              fwd[fwd.size() / 2], head[head.size() / 2], bwd[bwd.size() / 2]);
  auto ckpt_step = [&] {
    m->set_activation_checkpointing(true);
    fused_step();
    m->set_activation_checkpointing(false);
  };
  auto [plain, ckpt] = median_ms(iters, fused_step, ckpt_step);
  report("  same, activation checkpointing", "fused CE", plain, "fused CE + recompute", ckpt);
}

void bench_head_loss(int iters) {
  const int64_t N = 2048, C = 256, V = 50304;
  auto h = (torch::randn({N, C}) * 0.5).requires_grad_(true);
  auto w = (torch::randn({V, C}) * 0.02).requires_grad_(true);
  auto targets = torch::randint(0, V, {N}, torch::kLong);
  auto clear = [&] {
    h.mutable_grad() = torch::Tensor();
    w.mutable_grad() = torch::Tensor();
  };
  for (int64_t chunk : {256, 512, 1024, 2048}) {
    auto [unfused, fused] = median_ms(
        iters,
        [&] {
          clear();
          F::cross_entropy(h.matmul(w.t()), targets).backward();
        },
        [&] {
          clear();
          cairn::model::fused_linear_cross_entropy(h, w, targets, chunk).backward();
        });
    char name[64];
    std::snprintf(name, sizeof(name), "fused, chunk_rows=%ld", static_cast<long>(chunk));
    report("head+loss N2048 C256 V50304", "matmul+cross_entropy", unfused, name, fused);
  }
  // The three (N, C) x (C, V)-sized matrix products any implementation must do.
  torch::NoGradGuard no_grad;
  auto g = torch::randn({N, V});
  auto [gemm, unused] = median_ms(
      iters,
      [&] {
        auto logits = torch::mm(h, w.t());
        auto gh = torch::mm(g, w);
        auto gw = torch::mm(g.t(), h);
      },
      [] {});
  std::printf("%-34s the 3 matrix products alone take %.1f ms\n", "", gemm);
}

void bench_attention(int iters, int64_t B, int64_t H, int64_t K, int64_t T, int64_t D) {
  auto q = torch::randn({B, H, T, D}).requires_grad_(true);
  auto k = torch::randn({B, K, T, D}).requires_grad_(true);
  auto v = torch::randn({B, K, T, D}).requires_grad_(true);
  auto go = torch::randn({B, H, T, D});
  auto clear = [&] {
    for (auto* t : {&q, &k, &v}) t->mutable_grad() = torch::Tensor();
  };
  auto [naive, ours] = median_ms(
      iters,
      [&] {
        clear();
        cairn::model::naive_causal_attention(q, k, v).backward(go);
      },
      [&] {
        clear();
        cairn::model::causal_attention(q, k, v).backward(go);
      });
  char what[96];
  std::snprintf(what, sizeof(what), "attention B%ld H%ld K%ld T%ld D%ld", static_cast<long>(B),
                static_cast<long>(H), static_cast<long>(K), static_cast<long>(T),
                static_cast<long>(D));
  report(what, "naive", naive, "block-causal", ours);
}

}  // namespace

int main(int argc, char** argv) {
  const int iters = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
  torch::manual_seed(0);
  std::printf("model_bench: %d intra-op threads, median of %d runs (forward + backward)\n",
              torch::get_num_threads(), iters);
  bench_model_loss(iters);
  bench_head_loss(iters);
  bench_attention(iters, 8, 4, 4, 256, 64);   // the GPT above
  bench_attention(iters, 2, 8, 2, 1024, 64);  // longer sequence, grouped-query
  return 0;
}
