// The parameter table against the models it describes, and the facts other modules read in it.
#include "cairn/model/param_specs.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <set>

#include "cairn/model/language_model.h"

namespace cairn::model {
namespace {

ModelConfig Gpt2() {
  ModelConfig c;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_embd = 32;
  c.vocab_size = 96;
  c.block_size = 16;
  return c;
}

ModelConfig Llama(int64_t kv_heads, int64_t ffn) {
  ModelConfig c = Gpt2();
  c.arch = "llama";
  c.n_kv_head = kv_heads;
  c.ffn_hidden = ffn;
  return c;
}

TEST(ParamSpecs, MatchTheBuiltModelsNamesShapesAndOrder) {
  for (const ModelConfig& c : {Gpt2(), Llama(2, 0), Llama(0, 40)}) {
    auto params = build_model(c, 0)->named_parameters();
    auto specs = param_specs(c);
    ASSERT_EQ(specs.size(), params.size()) << c.arch;
    for (size_t i = 0; i < specs.size(); ++i) {
      EXPECT_EQ(specs[i].name, params[i].key());
      EXPECT_EQ(c10::IntArrayRef(specs[i].shape), params[i].value().sizes()) << specs[i].name;
      EXPECT_EQ(find_spec(specs, specs[i].name), &specs[i]);
    }
    EXPECT_EQ(find_spec(specs, "no.such.weight"), nullptr);
  }
}

TEST(ParamSpecs, WeightDecayAppliesToMatricesButThePositionTable) {
  auto specs = param_specs(Gpt2());
  std::map<std::string, bool> decays;
  for (auto& s : specs) decays[s.name] = s.decays;
  EXPECT_TRUE(decays.at("h.0.attn.c_attn.weight"));
  EXPECT_TRUE(decays.at("wte.weight"));
  EXPECT_FALSE(decays.at("wpe.weight"));
  EXPECT_FALSE(decays.at("h.0.ln_1.weight"));
  EXPECT_FALSE(decays.at("h.0.attn.c_attn.bias"));
  for (auto& s : param_specs(Llama(2, 0))) EXPECT_EQ(s.decays, s.shape.size() == 2) << s.name;
}

// Megatron's layout: what feeds the heads or the MLP width is split by output features, what
// reads them back by input features; the vocabulary tables by rows; the rest replicated.
TEST(ParamSpecs, TensorParallelSplitsFollowMegatron) {
  std::map<std::string, const ParamSpec*> by;
  auto gpt2 = param_specs(Gpt2());
  for (auto& s : gpt2) by[s.name] = &s;
  EXPECT_EQ(by["h.1.attn.c_attn.weight"]->tp, TpSplit::kColumn);
  EXPECT_EQ(by["h.1.attn.c_attn.weight"]->tp_blocks, 3);
  EXPECT_EQ(by["h.1.attn.c_attn.bias"]->tp_blocks, 3);
  EXPECT_EQ(by["h.1.attn.c_proj.weight"]->tp, TpSplit::kRow);
  EXPECT_EQ(by["h.1.attn.c_proj.bias"]->tp, TpSplit::kReplicated);
  EXPECT_EQ(by["h.1.mlp.c_fc.bias"]->tp, TpSplit::kColumn);
  EXPECT_EQ(by["h.1.mlp.c_proj.weight"]->tp, TpSplit::kRow);
  EXPECT_EQ(by["wte.weight"]->tp, TpSplit::kVocab);
  EXPECT_EQ(by["wpe.weight"]->tp, TpSplit::kReplicated);
  EXPECT_EQ(by["ln_f.bias"]->tp, TpSplit::kReplicated);
  for (auto& s : param_specs(Llama(2, 0))) {
    switch (s.role) {
      case ParamRole::kQuery:
      case ParamRole::kKey:
      case ParamRole::kValue:
      case ParamRole::kMlpIn:
        EXPECT_EQ(s.tp, TpSplit::kColumn) << s.name;
        break;
      case ParamRole::kAttentionOut:
      case ParamRole::kMlpOut:
        EXPECT_EQ(s.tp, TpSplit::kRow) << s.name;
        EXPECT_TRUE(s.residual_out) << s.name;
        break;
      case ParamRole::kTokenEmbedding:
      case ParamRole::kHead:
        EXPECT_EQ(s.tp, TpSplit::kVocab) << s.name;
        EXPECT_TRUE(s.vocab_rows());
        break;
      default:
        EXPECT_EQ(s.tp, TpSplit::kReplicated) << s.name;
    }
  }
}

TEST(ParamSpecs, BlocksAndHuggingFaceNames) {
  auto specs = param_specs(Llama(2, 0));
  std::set<int64_t> layers;
  for (auto& s : specs) {
    layers.insert(s.layer);
    EXPECT_EQ(s.layer >= 0, s.name.rfind("layers.", 0) == 0) << s.name;
    EXPECT_FALSE(s.hf_transpose) << s.name;
  }
  EXPECT_EQ(layers, (std::set<int64_t>{-1, 0, 1}));
  EXPECT_EQ(find_spec(specs, "layers.1.feed_forward.w3.weight")->hf_name,
            "model.layers.1.mlp.up_proj.weight");
  EXPECT_EQ(find_spec(specs, "output.weight")->hf_name, "lm_head.weight");
  auto gpt2 = param_specs(Gpt2());
  EXPECT_EQ(find_spec(gpt2, "h.0.mlp.c_fc.weight")->hf_name, "transformer.h.0.mlp.c_fc.weight");
  EXPECT_TRUE(find_spec(gpt2, "h.0.mlp.c_fc.weight")->hf_transpose);
  EXPECT_FALSE(find_spec(gpt2, "h.0.mlp.c_fc.bias")->hf_transpose);
  EXPECT_FALSE(find_spec(gpt2, "wte.weight")->hf_transpose);
  EXPECT_STREQ(param_role_name(find_spec(gpt2, "wpe.weight")->role), "position_embedding");
  EXPECT_STREQ(tp_split_name(find_spec(gpt2, "wte.weight")->tp), "vocab");
}

}  // namespace
}  // namespace cairn::model
