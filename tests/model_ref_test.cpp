// Numerics of cairn's models against an independent plain-PyTorch implementation
// (tests/model_ref.py run by /usr/bin/python3): the same weights, exchanged as safetensors,
// must give the same logits and loss to 1e-5.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>

#include "cairn/ckpt/safetensors.h"
#include "cairn/model/language_model.h"

namespace cairn {
namespace {

std::string Num(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}

std::map<std::string, std::string> Metadata(const model::ModelConfig& c) {
  return {{"arch", c.arch},
          {"n_layer", std::to_string(c.n_layer)},
          {"n_head", std::to_string(c.n_head)},
          {"n_kv_head", std::to_string(c.n_kv_head)},
          {"n_embd", std::to_string(c.n_embd)},
          {"vocab_size", std::to_string(c.vocab_size)},
          {"block_size", std::to_string(c.block_size)},
          {"ffn_hidden", std::to_string(c.ffn_hidden)},
          {"norm_eps", Num(c.norm_eps)},
          {"rope_theta", Num(c.rope_theta)}};
}

// Builds the model, perturbs every parameter (so biases and norm weights are exercised),
// runs the Python reference on the same weights and token ids, and compares.
void CompareWithReference(const model::ModelConfig& c, uint64_t seed) {
  auto m = model::build_model(c, seed);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed + 1000);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : m->parameters()) p.add_(torch::randn(p.sizes(), gen) * 0.1);
  }
  const int64_t B = 2, T = c.block_size - 3;
  auto idx = torch::randint(0, c.vocab_size, {B, T}, gen, torch::kLong);
  auto targets = torch::randint(0, c.vocab_size, {B, T}, gen, torch::kLong);
  targets.index_put_({0, 3}, -1);
  targets.index_put_({1, 0}, -1);

  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& item : m->named_parameters()) tensors.emplace_back(item.key(), item.value());
  tensors.emplace_back("idx", idx);
  tensors.emplace_back("targets", targets);
  const auto dir = std::filesystem::temp_directory_path() /
                   ("cairn_model_ref_" + std::to_string(::getpid()) + "_" + c.arch);
  std::filesystem::create_directories(dir);
  const std::string in = (dir / "in.safetensors").string();
  const std::string out = (dir / "out.safetensors").string();
  ASSERT_TRUE(ckpt::write_safetensors(in, tensors, Metadata(c)).ok());

  const std::string cmd =
      "/usr/bin/python3 " CAIRN_SOURCE_DIR "/tests/model_ref.py " + in + " " + out;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  auto ref = ckpt::read_safetensors(out);
  ASSERT_TRUE(ref.ok()) << ref.status().ToString();
  std::filesystem::remove_all(dir);

  torch::NoGradGuard no_grad;
  auto logits = m->forward(idx);  // (B, T, V)
  const auto& want = ref->at("logits");
  ASSERT_EQ(want.sizes(), logits.sizes());
  const double diff = (logits - want).abs().max().item<double>();
  EXPECT_LT(diff, 1e-5) << c.arch << " logits max abs diff";
  EXPECT_GT(want.abs().max().item<double>(), 0.1) << "logits too small to test anything";
  const double loss = m->loss(idx, targets).item<double>();
  EXPECT_NEAR(loss, ref->at("loss").item<double>(), 1e-5) << c.arch << " loss";
  std::cout << c.arch << ": logits max |diff| " << diff << ", loss " << loss << " vs "
            << ref->at("loss").item<double>() << "\n";
}

TEST(ModelReference, Gpt2MatchesPyTorch) {
  model::ModelConfig c;
  c.arch = "gpt2";
  c.n_layer = 2;
  c.n_head = 4;
  c.n_embd = 64;
  c.vocab_size = 211;
  c.block_size = 70;  // T = 67: more than one attention block of query rows
  CompareWithReference(c, 17);
}

TEST(ModelReference, LlamaWithGroupedQueryAttentionMatchesPyTorch) {
  model::ModelConfig c;
  c.arch = "llama";
  c.n_layer = 2;
  c.n_head = 8;
  c.n_kv_head = 2;
  c.n_embd = 64;
  c.vocab_size = 211;
  c.block_size = 80;  // T = 77: more than one attention block of query rows
  c.rope_theta = 500000.0;
  c.norm_eps = 1e-6;
  CompareWithReference(c, 23);
}

}  // namespace
}  // namespace cairn
