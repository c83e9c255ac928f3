#include "cairn/ckpt/hf.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "cairn/ckpt/safetensors.h"
#include "cairn/core/fs.h"
#include "cairn/model/language_model.h"

namespace fs = std::filesystem;

namespace cairn::ckpt {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

model::ModelConfig Gpt2Config() {
  model::ModelConfig c;
  c.arch = "gpt2";
  c.n_layer = 2;
  c.n_head = 4;
  c.n_embd = 32;
  c.vocab_size = 96;
  c.block_size = 16;
  c.norm_eps = 1e-5;
  c.init_std = 0.03;
  return c;
}

model::ModelConfig LlamaConfig() {
  model::ModelConfig c;
  c.arch = "llama";
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = 2;
  c.n_embd = 32;
  c.vocab_size = 96;
  c.block_size = 16;
  c.norm_eps = 1e-6;
  c.rope_theta = 500000.0;
  return c;
}

// A model's parameters, perturbed so biases and norm weights are not 0 or 1.
TensorMap Params(const model::ModelConfig& c, uint64_t seed) {
  auto m = model::build_model(c, seed);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed + 1);
  TensorMap out;
  for (auto& p : m->named_parameters())
    out[p.key()] = p.value().detach() + torch::randn(p.value().sizes(), gen) * 0.1;
  return out;
}

TensorMap ToMap(const std::vector<std::pair<std::string, torch::Tensor>>& v) {
  return TensorMap(v.begin(), v.end());
}

void ExpectSameTensors(const TensorMap& a, const TensorMap& b) {
  ASSERT_EQ(a.size(), b.size());
  for (auto& [name, t] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    EXPECT_EQ(t.scalar_type(), b.at(name).scalar_type()) << name;
    EXPECT_TRUE(torch::equal(t, b.at(name))) << name;
  }
}

// cairn -> HuggingFace tensors + config.json -> cairn.
TensorMap RoundTrip(const model::ModelConfig& c, const TensorMap& params) {
  auto hf = to_hf_tensors(c, params, {});
  EXPECT_TRUE(hf.ok()) << hf.status().ToString();
  auto hc = model_config_from_hf(hf_config_json(c, {}), "config.json");
  EXPECT_TRUE(hc.ok()) << hc.status().ToString();
  auto back = from_hf_tensors(*hc, ToMap(*hf), "model.safetensors");
  EXPECT_TRUE(back.ok()) << back.status().ToString();
  return back.ok() ? *back : TensorMap{};
}

TEST(HfNames, Gpt2UsesTransformerPrefixConv1dLayoutAndNoSeparateHead) {
  const auto c = Gpt2Config();
  const auto params = Params(c, 3);
  auto hf = to_hf_tensors(c, params, {});
  ASSERT_TRUE(hf.ok()) << hf.status().ToString();
  const TensorMap m = ToMap(*hf);
  EXPECT_EQ(m.size(), params.size());
  EXPECT_FALSE(m.count("lm_head.weight"));
  EXPECT_TRUE(torch::equal(m.at("transformer.wte.weight"), params.at("wte.weight")));
  EXPECT_TRUE(torch::equal(m.at("transformer.h.1.ln_2.bias"), params.at("h.1.ln_2.bias")));
  for (const char* w : {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}) {
    const std::string name = std::string("h.0.") + w + ".weight";
    EXPECT_TRUE(torch::equal(m.at("transformer." + name), params.at(name).t())) << name;
  }
  // Conv1D (x @ W + b) with the exported weight computes what cairn's Linear computes.
  auto x = torch::randn({5, c.n_embd});
  auto conv1d = torch::addmm(m.at("transformer.h.0.attn.c_attn.bias"), x,
                             m.at("transformer.h.0.attn.c_attn.weight"));
  auto linear =
      torch::linear(x, params.at("h.0.attn.c_attn.weight"), params.at("h.0.attn.c_attn.bias"));
  EXPECT_TRUE(torch::allclose(conv1d, linear, 1e-6, 1e-6));
}

TEST(HfNames, LlamaNamesAreHuggingFaceNames) {
  const auto c = LlamaConfig();
  const auto params = Params(c, 4);
  auto hf = to_hf_tensors(c, params, {});
  ASSERT_TRUE(hf.ok()) << hf.status().ToString();
  const TensorMap m = ToMap(*hf);
  const std::pair<const char*, const char*> pairs[] = {
      {"model.embed_tokens.weight", "tok_embeddings.weight"},
      {"model.layers.1.self_attn.k_proj.weight", "layers.1.attention.wk.weight"},
      {"model.layers.0.mlp.gate_proj.weight", "layers.0.feed_forward.w1.weight"},
      {"model.layers.0.mlp.up_proj.weight", "layers.0.feed_forward.w3.weight"},
      {"model.layers.0.mlp.down_proj.weight", "layers.0.feed_forward.w2.weight"},
      {"model.layers.1.input_layernorm.weight", "layers.1.attention_norm.weight"},
      {"model.layers.1.post_attention_layernorm.weight", "layers.1.ffn_norm.weight"},
      {"model.norm.weight", "norm.weight"},
      {"lm_head.weight", "output.weight"}};
  for (auto& [h, n] : pairs) EXPECT_TRUE(torch::equal(m.at(h), params.at(n))) << h;
  EXPECT_EQ(m.at("model.layers.0.self_attn.k_proj.weight").sizes(),
            (std::vector<int64_t>{2 * 8, 32}));
}

TEST(HfNames, RoundTripIsExact) {
  for (const auto& c : {Gpt2Config(), LlamaConfig()}) {
    const auto params = Params(c, 5);
    ExpectSameTensors(RoundTrip(c, params), params);
  }
}

TEST(HfConfig, RoundTripGivesTheSameModelConfig) {
  auto gpt_ffn = Gpt2Config();
  gpt_ffn.ffn_hidden = 48;
  auto llama_mha = LlamaConfig();
  llama_mha.n_kv_head = 0;
  llama_mha.ffn_hidden = 40;
  for (const auto& c : {Gpt2Config(), gpt_ffn, LlamaConfig(), llama_mha}) {
    auto j = hf_config_json(c, {});
    auto back = model_config_from_hf(j, "config.json");
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    const auto& b = back->model;
    EXPECT_EQ(b.arch, c.arch);
    EXPECT_EQ(b.n_layer, c.n_layer);
    EXPECT_EQ(b.n_head, c.n_head);
    EXPECT_EQ(b.n_kv_head, c.n_kv_head);
    EXPECT_EQ(b.n_embd, c.n_embd);
    EXPECT_EQ(b.vocab_size, c.vocab_size);
    EXPECT_EQ(b.block_size, c.block_size);
    EXPECT_EQ(b.ffn_hidden, c.ffn_hidden);
    EXPECT_EQ(b.norm_eps, c.norm_eps);
    EXPECT_EQ(b.init_std, c.init_std);
    if (c.is_llama()) EXPECT_EQ(b.rope_theta, c.rope_theta);
    EXPECT_EQ(back->tied_head, !c.is_llama());
  }
  auto j = hf_config_json(Gpt2Config(), {});
  EXPECT_EQ(j["architectures"][0], "GPT2LMHeadModel");
  EXPECT_EQ(j["n_positions"], 16);
  EXPECT_EQ(j["activation_function"], "gelu_new");
  EXPECT_TRUE(j["n_inner"].is_null());
  j = hf_config_json(LlamaConfig(), {});
  EXPECT_EQ(j["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(j["num_key_value_heads"], 2);
  EXPECT_EQ(j["intermediate_size"], LlamaConfig().ffn_dim());
  EXPECT_EQ(j["tie_word_embeddings"], false);
}

TEST(HfNames, VocabularyCanBeCutToTheRealTokens) {
  for (const auto& c : {Gpt2Config(), LlamaConfig()}) {
    const auto params = Params(c, 6);
    HfExportOptions o;
    o.vocab_size = 90;
    auto hf = to_hf_tensors(c, params, o);
    ASSERT_TRUE(hf.ok()) << hf.status().ToString();
    auto j = hf_config_json(c, o);
    EXPECT_EQ(j["vocab_size"], 90);
    auto hc = model_config_from_hf(j, "config.json");
    ASSERT_TRUE(hc.ok());
    auto back = from_hf_tensors(*hc, ToMap(*hf), "m");
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    const char* embed = c.is_llama() ? "tok_embeddings.weight" : "wte.weight";
    EXPECT_TRUE(torch::equal(back->at(embed), params.at(embed).slice(0, 0, 90)));
    if (c.is_llama())
      EXPECT_TRUE(
          torch::equal(back->at("output.weight"), params.at("output.weight").slice(0, 0, 90)));
    o.vocab_size = 97;
    EXPECT_THAT(to_hf_tensors(c, params, o).status().message(), HasSubstr("outside [1, 96]"));
  }
}

TEST(HfNames, AcceptsOriginalGpt2NamesBuffersAndAnEqualHead) {
  const auto c = Gpt2Config();
  const auto params = Params(c, 7);
  TensorMap hf = ToMap(*to_hf_tensors(c, params, {}));
  TensorMap bare;
  for (auto& [name, t] : hf) bare[name.substr(std::string("transformer.").size())] = t;
  bare["h.0.attn.bias"] = torch::ones({1, 1, 16, 16});
  bare["h.1.attn.masked_bias"] = torch::tensor(-1e4);
  bare["lm_head.weight"] = hf.at("transformer.wte.weight").clone();
  auto hc = *model_config_from_hf(hf_config_json(c, {}), "config.json");
  auto back = from_hf_tensors(hc, bare, "m");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ExpectSameTensors(*back, params);
  bare["lm_head.weight"] += 1;
  EXPECT_THAT(from_hf_tensors(hc, bare, "m").status().message(),
              AllOf(HasSubstr("'lm_head.weight' differs from the token embedding")));
}

TEST(HfNames, TiedLlamaHeadBecomesACopyOfTheEmbedding) {
  const auto c = LlamaConfig();
  TensorMap hf = ToMap(*to_hf_tensors(c, Params(c, 8), {}));
  hf.erase("lm_head.weight");
  auto j = hf_config_json(c, {});
  EXPECT_THAT(from_hf_tensors(*model_config_from_hf(j, "c"), hf, "m").status().message(),
              HasSubstr("missing tensors for this config.json: 'lm_head.weight'"));
  j["tie_word_embeddings"] = true;
  auto back = from_hf_tensors(*model_config_from_hf(j, "c"), hf, "m");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(torch::equal(back->at("output.weight"), back->at("tok_embeddings.weight")));
}

TEST(HfNames, BadTensorsAreRejectedByName) {
  const auto c = LlamaConfig();
  const TensorMap good = ToMap(*to_hf_tensors(c, Params(c, 9), {}));
  const auto hc = *model_config_from_hf(hf_config_json(c, {}), "c");
  auto error = [&](TensorMap m) {
    auto r = from_hf_tensors(hc, m, "x/model.safetensors");
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    return r.status().message();
  };
  TensorMap m = good;
  m["model.layers.0.self_attn.q_norm.weight"] = torch::ones({8});
  EXPECT_THAT(error(m), AllOf(HasSubstr("x/model.safetensors: unknown tensors"),
                              HasSubstr("'model.layers.0.self_attn.q_norm.weight'")));
  m = good;
  m.erase("model.layers.1.mlp.up_proj.weight");
  EXPECT_THAT(error(m), HasSubstr("missing tensors for this config.json: "
                                  "'model.layers.1.mlp.up_proj.weight'"));
  m = good;
  m["model.layers.0.self_attn.v_proj.weight"] = torch::zeros({32, 32});
  EXPECT_THAT(error(m), HasSubstr("tensor 'model.layers.0.self_attn.v_proj.weight' has shape "
                                  "[32, 32] but config.json implies [16, 32]"));
  m = good;
  m["model.norm.weight"] = torch::ones({32}, torch::kLong);
  EXPECT_THAT(error(m), HasSubstr("'model.norm.weight' has dtype Long"));
  // Half-precision weights are widened to float32.
  m = good;
  m["model.norm.weight"] = good.at("model.norm.weight").to(torch::kBFloat16);
  auto ok = from_hf_tensors(hc, m, "m");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->at("norm.weight").scalar_type(), torch::kFloat);

  const auto g = Gpt2Config();
  TensorMap gm = ToMap(*to_hf_tensors(g, Params(g, 10), {}));
  gm["wpe.weight"] = gm.at("transformer.wpe.weight");
  auto r = from_hf_tensors(*model_config_from_hf(hf_config_json(g, {}), "c"), gm, "m");
  EXPECT_THAT(r.status().message(), HasSubstr("are the same parameter"));
}

TEST(HfNames, ExportRejectsParametersOfAnotherModel) {
  const auto c = Gpt2Config();
  auto params = Params(c, 11);
  params["h.2.ln_1.weight"] = torch::ones({32});
  EXPECT_THAT(to_hf_tensors(c, params, {}).status().message(),
              HasSubstr("parameters not in a gpt2 model of this config: 'h.2.ln_1.weight'"));
  params = Params(c, 11);
  params["wpe.weight"] = torch::zeros({8, 32});
  EXPECT_THAT(
      to_hf_tensors(c, params, {}).status().message(),
      HasSubstr("parameter 'wpe.weight' has shape [8, 32] but the config implies [16, 32]"));
}

TEST(HfConfig, BadConfigsAreRejectedByKey) {
  auto status = [](nlohmann::json j) { return model_config_from_hf(j, "d/config.json").status(); };
  auto j = hf_config_json(Gpt2Config(), {});
  j["model_type"] = "bert";
  EXPECT_EQ(status(j).code(), StatusCode::kUnsupported);
  EXPECT_THAT(status(j).message(), HasSubstr("d/config.json: model_type 'bert'; cairn imports"));
  j.erase("model_type");
  EXPECT_THAT(status(j).message(), HasSubstr("model_type is missing"));
  j = hf_config_json(Gpt2Config(), {});
  j.erase("n_embd");
  EXPECT_THAT(status(j).message(), HasSubstr("d/config.json: missing key 'n_embd'"));
  j = hf_config_json(Gpt2Config(), {});
  j["n_layer"] = "2";
  EXPECT_THAT(status(j).message(), HasSubstr("'n_layer' must be an integer, not \"2\""));
  j = hf_config_json(Gpt2Config(), {});
  j["activation_function"] = "relu";
  EXPECT_THAT(status(j).message(), HasSubstr("activation_function 'relu' is not supported"));
  j = hf_config_json(Gpt2Config(), {});
  j["n_head"] = 5;
  EXPECT_EQ(status(j).code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(status(j).message(), HasSubstr("not divisible by model.n_head=5"));
  j = hf_config_json(LlamaConfig(), {});
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  EXPECT_THAT(status(j).message(), HasSubstr("rope_scaling = {"));
  j = hf_config_json(LlamaConfig(), {});
  j["attention_bias"] = true;
  EXPECT_EQ(status(j).code(), StatusCode::kUnsupported);
  j = hf_config_json(LlamaConfig(), {});
  j["head_dim"] = 16;
  EXPECT_THAT(status(j).message(), HasSubstr("head_dim 16"));
  EXPECT_THAT(model_config_from_hf(nlohmann::json::array(), "c").status().message(),
              HasSubstr("not a JSON object"));
}

// Found by fuzz/hf_config_fuzz: sizes were used before any bound (4 * n_embd, 8 * hidden_size,
// head_dim * heads overflowed int64); now every size is held to model_spec()'s range first.
TEST(HfConfig, SizesOutsideCairnsRangesAreRejectedBeforeAnyArithmetic) {
  auto status = [](nlohmann::json j) { return model_config_from_hf(j, "d/config.json").status(); };
  const int64_t huge = int64_t{1} << 62;
  auto j = hf_config_json(Gpt2Config(), {});
  j["n_embd"] = huge;
  EXPECT_EQ(status(j).code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(status(j).message(),
              HasSubstr("d/config.json: 'n_embd' is 4611686018427387904, outside the 1 to 65536 "
                        "cairn allows (model.n_embd)"));
  j = hf_config_json(Gpt2Config(), {});
  j["n_inner"] = -1;
  EXPECT_THAT(status(j).message(), HasSubstr("'n_inner' is -1"));
  j = hf_config_json(LlamaConfig(), {});
  j["hidden_size"] = huge;
  EXPECT_THAT(status(j).message(), HasSubstr("'hidden_size' is 4611686018427387904"));
  j = hf_config_json(LlamaConfig(), {});
  j["head_dim"] = huge;
  EXPECT_EQ(status(j).code(), StatusCode::kUnsupported);
  EXPECT_THAT(status(j).message(), HasSubstr("head_dim 4611686018427387904"));
  j = hf_config_json(LlamaConfig(), {});
  j["vocab_size"] = nlohmann::json(~uint64_t{0});
  EXPECT_EQ(status(j).code(), StatusCode::kInvalidArgument);
}

class HfFolderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() /
            ("cairn_hf_" + std::to_string(getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
};

TEST_F(HfFolderTest, ExportThenReadGivesTheSameModel) {
  const auto c = LlamaConfig();
  const auto params = Params(c, 12);
  ASSERT_TRUE(export_hf(dir_ + "/hf", c, params, {}).ok());
  auto meta = read_safetensors_file(dir_ + "/hf/model.safetensors");
  ASSERT_TRUE(meta.ok());
  EXPECT_EQ(meta->metadata.at("format"), "pt");
  auto back = read_hf(dir_ + "/hf");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ExpectSameTensors(back->params, params);
  EXPECT_EQ(back->config.model.n_kv_head, 2);
  EXPECT_EQ(back->config_json["model_type"], "llama");

  auto saved = save_model_checkpoint(dir_ + "/ckpt", back->params, {{"reason", "import"}});
  ASSERT_TRUE(saved.ok()) << saved.status().ToString();
  auto loaded = load_latest(dir_ + "/ckpt", nullptr);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->step, 0);
  EXPECT_TRUE(torch::equal(loaded->tensors.at("model.norm.weight"), params.at("norm.weight")));
  auto again = save_model_checkpoint(dir_ + "/ckpt", back->params, {});
  EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(again.status().message(), HasSubstr("already holds checkpoints"));
}

TEST_F(HfFolderTest, LinksOutOfTheFolderAreRefusedButAHubCacheSnapshotReads) {
  const auto c = LlamaConfig();
  const auto params = Params(c, 5);
  ASSERT_TRUE(export_hf(dir_ + "/real", c, params, {}).ok());
  // A folder whose weights link somewhere else entirely: refused, naming the target.
  fs::create_directories(dir_ + "/linked");
  fs::copy_file(dir_ + "/real/config.json", dir_ + "/linked/config.json");
  fs::create_symlink(dir_ + "/real/model.safetensors", dir_ + "/linked/model.safetensors");
  auto r = read_hf(dir_ + "/linked");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("outside the folder being imported"));
  // The hub cache's layout: snapshots/<rev>/ files link to ../../blobs/ in the same repository.
  const std::string repo = dir_ + "/models--org--tiny";
  fs::create_directories(repo + "/blobs");
  fs::create_directories(repo + "/snapshots/abc123");
  fs::copy_file(dir_ + "/real/model.safetensors", repo + "/blobs/1111");
  fs::copy_file(dir_ + "/real/config.json", repo + "/blobs/2222");
  fs::create_symlink("../../blobs/1111", repo + "/snapshots/abc123/model.safetensors");
  fs::create_symlink("../../blobs/2222", repo + "/snapshots/abc123/config.json");
  auto cached = read_hf(repo + "/snapshots/abc123");
  ASSERT_TRUE(cached.ok()) << cached.status().ToString();
  ExpectSameTensors(cached->params, params);
  // ...but not a link from a snapshot out of its repository.
  fs::remove(repo + "/snapshots/abc123/model.safetensors");
  fs::create_symlink(dir_ + "/real/model.safetensors",
                     repo + "/snapshots/abc123/model.safetensors");
  EXPECT_THAT(read_hf(repo + "/snapshots/abc123").status().message(),
              HasSubstr("outside the folder being imported"));
}

TEST_F(HfFolderTest, DamagedOrForeignFoldersGetClearErrors) {
  const auto c = Gpt2Config();
  const std::string hf = dir_ + "/hf";
  EXPECT_EQ(read_hf(hf).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(export_hf(hf, c, Params(c, 13), {}).ok());

  const std::string weights = hf + "/model.safetensors";
  const auto size = fs::file_size(weights);
  fs::copy_file(weights, dir_ + "/good.safetensors");
  fs::resize_file(weights, size - 100);
  auto r = read_hf(hf);
  EXPECT_EQ(r.status().code(), StatusCode::kCorrupt);
  EXPECT_THAT(r.status().message(), HasSubstr(weights));
  fs::copy_file(dir_ + "/good.safetensors", weights, fs::copy_options::overwrite_existing);

  ASSERT_TRUE(core::write_file_atomic(hf + "/config.json", "{\"model_type\": ").ok());
  EXPECT_THAT(read_hf(hf).status().message(), HasSubstr("config.json: not valid JSON"));
  auto j = hf_config_json(c, {});
  j["n_positions"] = 32;
  ASSERT_TRUE(core::write_file_atomic(hf + "/config.json", j.dump()).ok());
  EXPECT_THAT(read_hf(hf).status().message(),
              HasSubstr("tensor 'transformer.wpe.weight' has shape [16, 32] but config.json "
                        "implies [32, 32]"));

  fs::remove(weights);
  std::ofstream(hf + "/pytorch_model.bin") << "pickle";
  EXPECT_THAT(read_hf(hf).status().message(), HasSubstr("holds pytorch_model.bin"));
  std::ofstream(hf + "/model.safetensors.index.json") << "{}";
  EXPECT_THAT(read_hf(hf).status().message(), HasSubstr("sharded model"));
}

}  // namespace
}  // namespace cairn::ckpt
