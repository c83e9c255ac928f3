#include "cairn/model/language_model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>
#include <string>

namespace cairn::model {
namespace {

ModelConfig Gpt2Small() {
  ModelConfig c;
  c.arch = "gpt2";
  c.n_layer = 2;
  c.n_head = 4;
  c.n_embd = 32;
  c.vocab_size = 101;
  c.block_size = 24;
  return c;
}

ModelConfig LlamaSmall() {
  ModelConfig c = Gpt2Small();
  c.arch = "llama";
  c.n_kv_head = 2;
  return c;
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

class LanguageModelTest : public ::testing::TestWithParam<std::string> {
 protected:
  ModelConfig Config() const { return GetParam() == "gpt2" ? Gpt2Small() : LlamaSmall(); }
};

TEST_P(LanguageModelTest, Shapes) {
  auto c = Config();
  auto m = build_model(c, 1);
  auto idx = torch::randint(0, c.vocab_size, {3, 10}, torch::kLong);
  EXPECT_EQ(m->forward(idx).sizes(), (std::vector<int64_t>{3, 10, c.vocab_size}));
  EXPECT_EQ(m->hidden(idx).sizes(), (std::vector<int64_t>{3, 10, c.n_embd}));
  EXPECT_EQ(m->head_weight().sizes(), (std::vector<int64_t>{c.vocab_size, c.n_embd}));
  // One token (generation) and the full block.
  EXPECT_EQ(m->forward(idx.narrow(1, 0, 1)).size(1), 1);
  auto full = torch::randint(0, c.vocab_size, {1, c.block_size}, torch::kLong);
  EXPECT_EQ(m->forward(full).size(1), c.block_size);
}

TEST_P(LanguageModelTest, RejectsBadIndices) {
  auto c = Config();
  auto m = build_model(c, 1);
  EXPECT_THROW(m->forward(torch::zeros({1, c.block_size + 1}, torch::kLong)), c10::Error);
  EXPECT_THROW(m->forward(torch::zeros({1, 4}, torch::kInt)), c10::Error);
  EXPECT_THROW(m->forward(torch::zeros({4}, torch::kLong)), c10::Error);
  EXPECT_THROW(m->loss(torch::zeros({2, 4}, torch::kLong), torch::zeros({2, 5}, torch::kLong)),
               c10::Error);
}

TEST_P(LanguageModelTest, Causal) {
  auto c = Config();
  auto m = build_model(c, 2);
  torch::NoGradGuard no_grad;
  auto idx = torch::randint(0, c.vocab_size, {2, 16}, torch::kLong);
  auto changed = idx.clone();
  changed.narrow(1, 11, 5).fill_(7);
  auto a = m->forward(idx), b = m->forward(changed);
  EXPECT_LT(max_diff(a.narrow(1, 0, 11), b.narrow(1, 0, 11)), 1e-6);
  EXPECT_GT(max_diff(a.narrow(1, 11, 5), b.narrow(1, 11, 5)), 1e-4);
  // A prefix run gives the same logits as the first positions of a longer run.
  EXPECT_LT(max_diff(m->forward(idx.narrow(1, 0, 5)), a.narrow(1, 0, 5)), 1e-5);
}

TEST_P(LanguageModelTest, LossIsCrossEntropyOfLogits) {
  auto c = Config();
  auto m = build_model(c, 3);
  auto idx = torch::randint(0, c.vocab_size, {2, 12}, torch::kLong);
  auto targets = torch::randint(0, c.vocab_size, {2, 12}, torch::kLong);
  auto ref = torch::nn::functional::cross_entropy(m->forward(idx).view({-1, c.vocab_size}),
                                                  targets.view({-1}));
  EXPECT_NEAR(m->loss(idx, targets).item<double>(), ref.item<double>(), 1e-5);
  // Near ln(V) at init.
  EXPECT_NEAR(ref.item<double>(), std::log(double(c.vocab_size)), 0.2);
}

TEST_P(LanguageModelTest, CheckpointedGradientsEqualPlain) {
  auto c = Config();
  c.n_layer = 3;
  auto idx = torch::randint(0, c.vocab_size, {2, 20}, torch::kLong);
  auto targets = torch::randint(0, c.vocab_size, {2, 20}, torch::kLong);
  auto plain = build_model(c, 5);
  auto lp = plain->loss(idx, targets);
  lp.backward();
  for (const auto& flags : {std::vector<bool>{true, true, true}, {false, true, false}}) {
    auto ckpt = build_model(c, 5);
    ckpt->set_activation_checkpointing(flags);
    EXPECT_EQ(ckpt->checkpointed_layers(), flags);
    auto lc = ckpt->loss(idx, targets);
    lc.backward();
    EXPECT_EQ(lp.item<double>(), lc.item<double>());
    auto pp = plain->named_parameters(), cp = ckpt->named_parameters();
    ASSERT_EQ(pp.size(), cp.size());
    for (const auto& item : pp) {
      ASSERT_TRUE(cp[item.key()].grad().defined()) << item.key();
      EXPECT_LT(max_diff(item.value().grad(), cp[item.key()].grad()), 1e-6) << item.key();
    }
  }
  auto m = build_model(c, 5);
  m->set_activation_checkpointing(true);
  EXPECT_EQ(m->checkpointed_layers(), std::vector<bool>(c.n_layer, true));
  m->set_activation_checkpointing(false);
  EXPECT_EQ(m->checkpointed_layers(), std::vector<bool>(c.n_layer, false));
  EXPECT_THROW(m->set_activation_checkpointing(std::vector<bool>{true}), c10::Error);
}

// Split backward: with a weight-gradient store the blocks' projections get no gradient in
// backward (the norms, embeddings and head do), and running the store gives the plain
// gradients; the input gradient is the plain one at once. Checkpointed blocks too.
TEST_P(LanguageModelTest, DeferredWeightGradientsEqualPlain) {
  auto c = Config();
  c.n_layer = 2;
  auto idx = torch::randint(0, c.vocab_size, {2, 12}, torch::kLong);
  auto targets = torch::randint(0, c.vocab_size, {2, 12}, torch::kLong);
  auto plain = build_model(c, 5);
  auto xp = plain->embed(idx).detach().requires_grad_();
  plain->head_loss(plain->final_norm(plain->blocks(0, 2, xp)), targets).backward();
  for (bool checkpointed : {false, true}) {
    SCOPED_TRACE(checkpointed ? "checkpointed" : "plain blocks");
    auto m = build_model(c, 5);
    m->set_activation_checkpointing(checkpointed);
    WeightGradStore store;
    m->set_weight_grad_store(&store);
    store.set_key(7);
    auto x = m->embed(idx).detach().requires_grad_();
    m->head_loss(m->final_norm(m->blocks(0, 2, x)), targets).backward();
    EXPECT_LT(max_diff(x.grad(), xp.grad()), 1e-6) << "input gradient";
    EXPECT_EQ(store.pending(), size_t(c.is_llama() ? 14 : 8));  // projections of 2 blocks
    const std::string proj =
        c.is_llama() ? "layers.0.attention.wq.weight" : "h.0.attn.c_attn.weight";
    EXPECT_FALSE(m->named_parameters()[proj].grad().defined()) << "computed in backward";
    store.run(3);  // nothing kept under another key: nothing to do
    EXPECT_EQ(store.pending(), size_t(c.is_llama() ? 14 : 8));
    store.run(7);
    EXPECT_EQ(store.pending(), 0u);
    auto pp = plain->named_parameters(), mp = m->named_parameters();
    for (const auto& item : pp) {
      if (!item.value().grad().defined()) continue;  // the embeddings: not in this graph
      ASSERT_TRUE(mp[item.key()].grad().defined()) << item.key();
      EXPECT_LT(max_diff(item.value().grad(), mp[item.key()].grad()), 1e-6) << item.key();
    }
  }
}

TEST_P(LanguageModelTest, StagesComposeToHidden) {
  auto c = Config();
  auto m = build_model(c, 8);
  torch::NoGradGuard no_grad;
  auto idx = torch::randint(0, c.vocab_size, {2, 9}, torch::kLong);
  auto x = m->embed(idx);  // (B, T, C)
  for (int64_t i = 0; i < c.n_layer; ++i) x = m->layer(i, x);
  EXPECT_TRUE(torch::equal(m->final_norm(x), m->hidden(idx)));
  const std::string prefix = c.is_llama() ? "layers.1." : "h.1.";
  auto all = m->named_parameters();
  for (const auto& item : m->layer_module(1)->named_parameters())
    EXPECT_TRUE(all[prefix + item.key()].is_same(item.value())) << item.key();
  EXPECT_THROW(m->layer(c.n_layer, x), std::out_of_range);
}

TEST_P(LanguageModelTest, DeterministicInitFromSeedOnly) {
  auto c = Config();
  torch::manual_seed(11);
  auto before = torch::rand({4});
  torch::manual_seed(11);
  auto a = build_model(c, 42);
  auto after = torch::rand({4});
  EXPECT_TRUE(torch::equal(before, after)) << "build_model touched the global generator";
  torch::manual_seed(99);
  auto b = build_model(c, 42);
  auto d = build_model(c, 43);
  auto pa = a->named_parameters(), pb = b->named_parameters(), pd = d->named_parameters();
  bool any_diff = false;
  for (const auto& item : pa) {
    EXPECT_TRUE(torch::equal(item.value(), pb[item.key()])) << item.key();
    any_diff |= !torch::equal(item.value(), pd[item.key()]);
  }
  EXPECT_TRUE(any_diff);
}

TEST_P(LanguageModelTest, InitStatistics) {
  auto c = Config();
  c.n_embd = 128;
  c.n_head = 4;
  c.vocab_size = 2000;
  c.n_layer = 8;
  auto m = build_model(c, 6);
  const double resid = c.init_std / std::sqrt(2.0 * c.n_layer);
  for (const auto& item : m->named_parameters()) {
    const auto& name = item.key();
    const auto& p = item.value();
    if (p.dim() == 1) {
      const double want = name.size() > 5 && name.substr(name.size() - 5) == ".bias" ? 0 : 1;
      EXPECT_TRUE(torch::all(p == want).item<bool>()) << name;
      continue;
    }
    const bool is_resid = name.find("c_proj") != std::string::npos ||
                          name.find(".wo.") != std::string::npos ||
                          name.find(".w2.") != std::string::npos;
    const double want = is_resid ? resid : c.init_std;
    EXPECT_NEAR(p.std().item<double>(), want, 0.06 * want) << name;
    EXPECT_NEAR(p.mean().item<double>(), 0.0, 0.1 * want) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Arch, LanguageModelTest, ::testing::Values("gpt2", "llama"));

std::set<std::string> Names(const LanguageModel& m) {
  std::set<std::string> s;
  for (const auto& item : m.named_parameters()) s.insert(item.key());
  return s;
}

TEST(LanguageModel, Gpt2ParameterNamesShapesAndCount) {
  auto c = Gpt2Small();
  auto m = build_model(c, 1);
  std::set<std::string> want{"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"};
  for (int i = 0; i < c.n_layer; ++i) {
    const std::string p = "h." + std::to_string(i) + ".";
    for (const char* s : {"ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"}) {
      want.insert(p + s + ".weight");
      want.insert(p + s + ".bias");
    }
  }
  EXPECT_EQ(Names(*m), want);
  auto params = m->named_parameters();
  const int64_t C = c.n_embd, V = c.vocab_size, L = c.n_layer, F = 4 * C;
  EXPECT_EQ(params["h.0.attn.c_attn.weight"].sizes(), (std::vector<int64_t>{3 * C, C}));
  EXPECT_EQ(params["h.1.mlp.c_fc.weight"].sizes(), (std::vector<int64_t>{F, C}));
  EXPECT_EQ(params["wpe.weight"].sizes(), (std::vector<int64_t>{c.block_size, C}));
  EXPECT_TRUE(m->head_weight().is_same(params["wte.weight"]));
  const int64_t per_layer =
      2 * C + (3 * C * C + 3 * C) + (C * C + C) + 2 * C + (C * F + F) + (F * C + C);
  EXPECT_EQ(m->num_params(), V * C + c.block_size * C + L * per_layer + 2 * C);
}

TEST(LanguageModel, LlamaParameterNamesShapesAndCount) {
  auto c = LlamaSmall();
  auto m = build_model(c, 1);
  std::set<std::string> want{"tok_embeddings.weight", "norm.weight", "output.weight"};
  for (int i = 0; i < c.n_layer; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    for (const char* s :
         {"attention_norm", "attention.wq", "attention.wk", "attention.wv", "attention.wo",
          "ffn_norm", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3"})
      want.insert(p + s + ".weight");
  }
  EXPECT_EQ(Names(*m), want);
  auto params = m->named_parameters();
  const int64_t C = c.n_embd, V = c.vocab_size, L = c.n_layer, F = c.ffn_dim();
  const int64_t KV = c.n_kv_head * c.head_dim();
  EXPECT_EQ(F, 128);  // 8*32/3 = 85.3 -> 128
  EXPECT_EQ(params["layers.0.attention.wk.weight"].sizes(), (std::vector<int64_t>{KV, C}));
  EXPECT_EQ(params["layers.1.feed_forward.w1.weight"].sizes(), (std::vector<int64_t>{F, C}));
  EXPECT_EQ(params["layers.1.feed_forward.w2.weight"].sizes(), (std::vector<int64_t>{C, F}));
  EXPECT_TRUE(m->head_weight().is_same(params["output.weight"]));
  const int64_t per_layer = C + (2 * C * C + 2 * C * KV) + C + 3 * C * F;
  EXPECT_EQ(m->num_params(), 2 * V * C + L * per_layer + C);
}

TEST(LanguageModel, FlopsPerTokenFollowsPalmConvention) {
  ModelConfig c;  // GPT-2 124M shape with a padded vocabulary
  c.n_layer = 12;
  c.n_head = 12;
  c.n_embd = 768;
  c.block_size = 1024;
  auto m = build_model(c, 0);
  const double n_matmul = 12.0 * (12.0 * 768 * 768) + 50304.0 * 768;
  EXPECT_DOUBLE_EQ(m->flops_per_token(1024), 6 * n_matmul + 12.0 * 12 * 1024 * 768);
  EXPECT_EQ(m->num_params(), 124475904);
}

TEST(LanguageModel, BuildRejectsInvalidConfig) {
  ModelConfig c = Gpt2Small();
  c.n_head = 5;
  EXPECT_THROW(build_model(c, 0), c10::Error);
  ModelPart part;
  part.blocks = {true};  // one flag for two blocks
  EXPECT_THROW(build_model(Gpt2Small(), 0, part), c10::Error);
}

// A part (a pipeline stage's) holds the whole model's values for its parameters and
// placeholders for the rest, built initialized or initialized after a deferred build.
TEST_P(LanguageModelTest, APartHoldsTheWholeModelsValuesOfItsParameters) {
  const ModelConfig c = Config();
  auto whole = build_model(c, 7);
  std::map<std::string, torch::Tensor> want;
  for (auto& p : whole->named_parameters()) want[p.key()] = p.value();
  const bool gpt2 = c.arch == "gpt2";
  for (int first = 0; first < 2; ++first) {
    ModelPart part;
    part.blocks = {first == 1, first == 0};  // stage 0: block 1 only; stage 1: block 0 only
    part.embedding = first == 1;
    part.head = first == 0;
    for (bool deferred : {false, true}) {
      SCOPED_TRACE(std::string(deferred ? "deferred" : "built") + " part " + std::to_string(first));
      auto m = deferred ? build_model_uninitialized(c, part) : build_model(c, 7, part);
      if (deferred) init_parameters(*m, c, 7);
      int64_t held = 0;
      for (auto& p : m->named_parameters()) {
        const std::string& n = p.key();
        const bool block0 = n.rfind(gpt2 ? "h.0." : "layers.0.", 0) == 0;
        const bool block1 = n.rfind(gpt2 ? "h.1." : "layers.1.", 0) == 0;
        const bool embedding = n == "wpe.weight" || n == "tok_embeddings.weight";
        const bool head =
            n == "ln_f.weight" || n == "ln_f.bias" || n == "norm.weight" || n == "output.weight";
        const bool held_here = (block0 && part.blocks[0]) || (block1 && part.blocks[1]) ||
                               (embedding && part.embedding) || (head && part.head) ||
                               (n == "wte.weight" && (part.embedding || part.head));
        if (held_here) {
          EXPECT_TRUE(p.value().equal(want.at(n))) << n;
          held += p.value().numel();
        } else {
          EXPECT_EQ(p.value().numel(), 0) << n << " is not a placeholder";
        }
      }
      EXPECT_EQ(m->num_params(), held);
      EXPECT_LT(held, whole->num_params());
    }
  }
}

}  // namespace
}  // namespace cairn::model
