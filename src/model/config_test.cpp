#include "cairn/model/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace cairn::model {
namespace {

using ::testing::HasSubstr;

Result<ModelConfig> FromOverrides(const std::vector<std::string>& overrides) {
  auto cfg = core::load_config_text("", model_spec(), overrides, "test");
  if (!cfg.ok()) return cfg.status();
  return model_config_from(*cfg);
}

TEST(ModelConfig, DefaultsMatchStruct) {
  auto c = FromOverrides({});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const ModelConfig d;
  EXPECT_EQ(c->arch, d.arch);
  EXPECT_EQ(c->n_layer, d.n_layer);
  EXPECT_EQ(c->n_head, d.n_head);
  EXPECT_EQ(c->n_kv_head, d.n_kv_head);
  EXPECT_EQ(c->n_embd, d.n_embd);
  EXPECT_EQ(c->vocab_size, d.vocab_size);
  EXPECT_EQ(c->block_size, d.block_size);
  EXPECT_EQ(c->ffn_hidden, d.ffn_hidden);
  EXPECT_DOUBLE_EQ(c->norm_eps, d.norm_eps);
  EXPECT_DOUBLE_EQ(c->rope_theta, d.rope_theta);
  EXPECT_DOUBLE_EQ(c->init_std, d.init_std);
}

TEST(ModelConfig, ReadsEveryKey) {
  auto c = FromOverrides({"model.arch=llama", "model.n_layer=3", "model.n_head=8",
                          "model.n_kv_head=2", "model.n_embd=128", "model.vocab_size=1000",
                          "model.block_size=64", "model.ffn_hidden=300", "model.norm_eps=1e-6",
                          "model.rope_theta=500000", "model.init_std=0.01"});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->is_llama());
  EXPECT_EQ(c->n_layer, 3);
  EXPECT_EQ(c->kv_heads(), 2);
  EXPECT_EQ(c->head_dim(), 16);
  EXPECT_EQ(c->ffn_dim(), 300);
  EXPECT_EQ(c->vocab_size, 1000);
  EXPECT_EQ(c->block_size, 64);
  EXPECT_DOUBLE_EQ(c->norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000);
  EXPECT_DOUBLE_EQ(c->init_std, 0.01);
}

TEST(ModelConfig, AutoFfnWidth) {
  ModelConfig c;
  c.n_embd = 256;
  EXPECT_EQ(c.ffn_dim(), 1024);
  c.arch = "llama";
  EXPECT_EQ(c.ffn_dim(), 704);  // 8*256/3 = 682.7 -> next multiple of 64
  c.n_embd = 96;
  EXPECT_EQ(c.ffn_dim(), 256);  // exactly 8*96/3
  EXPECT_EQ(c.kv_heads(), c.n_head);
}

TEST(ModelConfig, RejectsEmbdNotDivisibleByHeads) {
  auto c = FromOverrides({"model.n_embd=100", "model.n_head=3"});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("model.n_embd=100"));
  EXPECT_THAT(c.status().message(), HasSubstr("model.n_head=3"));
}

TEST(ModelConfig, RejectsHeadsNotMultipleOfKvHeads) {
  auto c = FromOverrides(
      {"model.arch=llama", "model.n_head=8", "model.n_kv_head=3", "model.n_embd=128"});
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("model.n_head=8"));
  EXPECT_THAT(c.status().message(), HasSubstr("model.n_kv_head=3"));
  auto more = FromOverrides({"model.arch=llama", "model.n_head=4", "model.n_kv_head=8"});
  ASSERT_FALSE(more.ok());
  EXPECT_THAT(more.status().message(), HasSubstr("model.n_kv_head=8"));
}

TEST(ModelConfig, RejectsOddHeadSizeForRope) {
  auto c = FromOverrides({"model.arch=llama", "model.n_head=4", "model.n_embd=36"});
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("=9"));
  EXPECT_THAT(c.status().message(), HasSubstr("even"));
  // GPT-2 has no rotary embeddings: odd head sizes are fine.
  EXPECT_TRUE(FromOverrides({"model.n_head=4", "model.n_embd=36"}).ok());
}

TEST(ModelConfig, RejectsGroupedQueryAttentionForGpt2) {
  auto c = FromOverrides({"model.n_head=4", "model.n_kv_head=2"});
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("model.arch=gpt2"));
  EXPECT_THAT(c.status().message(), HasSubstr("model.n_kv_head=2"));
  EXPECT_TRUE(FromOverrides({"model.n_head=4", "model.n_kv_head=4"}).ok());
}

TEST(ModelConfig, RangeAndChoiceErrorsNameTheKey) {
  auto arch = FromOverrides({"model.arch=bert"});
  ASSERT_FALSE(arch.ok());
  EXPECT_THAT(arch.status().message(), HasSubstr("model.arch"));
  EXPECT_THAT(arch.status().message(), HasSubstr("bert"));
  auto layers = FromOverrides({"model.n_layer=0"});
  ASSERT_FALSE(layers.ok());
  EXPECT_THAT(layers.status().message(), HasSubstr("model.n_layer"));
}

TEST(ModelConfig, ValidateCatchesCodeBuiltConfigs) {
  ModelConfig c;
  EXPECT_TRUE(validate(c).ok());
  c.arch = "rnn";
  EXPECT_THAT(validate(c).message(), HasSubstr("rnn"));
  c = ModelConfig();
  c.n_layer = 0;
  EXPECT_FALSE(validate(c).ok());
}

TEST(ModelConfig, MissingKeysAreReported) {
  core::ConfigSpec other;
  other.add_int("train.steps", 1, 1, 10, "steps");
  auto cfg = core::load_config_text("", other, {}, "t");
  ASSERT_TRUE(cfg.ok());
  auto c = model_config_from(*cfg);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("model"));
}

// A block's saved values per token in units of C, and the tensors they are in: GPT-2 with
// F = 4C saves 6 whole and 3 + 8 split, of which 2 F-wide tensors and q, k and v as views
// of one 3C-wide tensor; a LLaMA of C = 64, K = 32 (2 of 4 heads), F = 192 saves 8 whole and
// 1 + (64 + 768) / 64 = 14 split, of which 4 F-wide tensors and none wider than C besides.
TEST(ModelConfig, BlockSavedValuesAndTheirTensors) {
  ModelConfig g;
  g.n_embd = 64;
  g.n_head = 4;
  const BlockSaved gs = block_saved_values(g);
  EXPECT_DOUBLE_EQ(gs.whole, 6);
  EXPECT_DOUBLE_EQ(gs.split, 11);
  EXPECT_EQ(gs.wide, 2);
  EXPECT_DOUBLE_EQ(gs.widest, 3);
  ModelConfig l = g;
  l.arch = "llama";
  l.n_kv_head = 2;
  ASSERT_EQ(l.ffn_dim(), 192);
  const BlockSaved ls = block_saved_values(l);
  EXPECT_DOUBLE_EQ(ls.whole, 8);
  EXPECT_DOUBLE_EQ(ls.split, 14);
  EXPECT_EQ(ls.wide, 4);
  EXPECT_DOUBLE_EQ(ls.widest, 1);
}

}  // namespace
}  // namespace cairn::model
