// The `model.*` config keys and the checks that relate them.
#include "cairn/model/config.h"

#include <string>

namespace cairn::model {
namespace {

std::string kv(const std::string& key, int64_t value) { return key + "=" + std::to_string(value); }

}  // namespace

int64_t ModelConfig::ffn_dim() const {
  if (ffn_hidden > 0) return ffn_hidden;
  if (is_llama()) return (8 * n_embd + 191) / 192 * 64;  // ceil(8C/3 / 64) * 64
  return 4 * n_embd;
}

BlockSaved block_saved_values(const ModelConfig& c) {
  const double C = double(c.n_embd), F = double(c.ffn_dim());
  if (c.is_llama()) return {8, 1 + (4 * F + 2 * double(c.kv_heads() * c.head_dim())) / C, 4, 1};
  return {6, 3 + 2 * F / C, 2, 3};
}

core::ConfigSpec model_spec() {
  const ModelConfig d;
  core::ConfigSpec s;
  s.add_string("model.arch", d.arch, {"gpt2", "llama"},
               "architecture: gpt2 (LayerNorm, GELU, learned positions, tied head) or llama "
               "(RMSNorm, RoPE, SwiGLU, grouped-query attention, untied head)")
      .add_int("model.n_layer", d.n_layer, 1, 1024, "number of transformer blocks")
      .add_int("model.n_head", d.n_head, 1, 1024, "attention (query) heads")
      .add_int("model.n_kv_head", d.n_kv_head, 0, 1024,
               "key/value heads for grouped-query attention (llama); 0 = n_head")
      .add_int("model.n_embd", d.n_embd, 1, 65536, "model width C")
      .add_int("model.vocab_size", d.vocab_size, 1, 4194304, "vocabulary size V")
      .add_int("model.block_size", d.block_size, 1, 1048576, "longest sequence T accepted")
      .add_int("model.ffn_hidden", d.ffn_hidden, 0, 1048576,
               "MLP hidden width; 0 = 4*C for gpt2, the multiple of 64 >= 8C/3 for llama")
      .add_float("model.norm_eps", d.norm_eps, 1e-12, 0.1, "epsilon of LayerNorm/RMSNorm")
      .add_float("model.rope_theta", d.rope_theta, 1.0, 1e9, "RoPE base frequency (llama)")
      .add_float("model.init_std", d.init_std, 1e-6, 1.0,
                 "std of the normal init of weights; residual projections use "
                 "init_std/sqrt(2*n_layer)");
  return s;
}

Status validate(const ModelConfig& c) {
  if (c.arch != "gpt2" && c.arch != "llama")
    return Status::InvalidArgument("model.arch: '" + c.arch + "' is not one of: gpt2, llama");
  if (c.n_layer < 1 || c.n_head < 1 || c.n_embd < 1 || c.vocab_size < 1 || c.block_size < 1)
    return Status::InvalidArgument(
        "model.n_layer, model.n_head, model.n_embd, model.vocab_size and model.block_size must "
        "be >= 1 (got " +
        kv("n_layer", c.n_layer) + ", " + kv("n_head", c.n_head) + ", " + kv("n_embd", c.n_embd) +
        ", " + kv("vocab_size", c.vocab_size) + ", " + kv("block_size", c.block_size) + ")");
  if (c.n_kv_head < 0 || c.ffn_hidden < 0)
    return Status::InvalidArgument("model.n_kv_head and model.ffn_hidden must be >= 0 (got " +
                                   kv("n_kv_head", c.n_kv_head) + ", " +
                                   kv("ffn_hidden", c.ffn_hidden) + ")");
  if (c.n_embd % c.n_head != 0)
    return Status::InvalidArgument("model.n_embd=" + std::to_string(c.n_embd) +
                                   " is not divisible by model.n_head=" + std::to_string(c.n_head) +
                                   "; head size must be an integer");
  if (c.arch == "gpt2" && c.n_kv_head != 0 && c.n_kv_head != c.n_head)
    return Status::InvalidArgument(
        "model.n_kv_head=" + std::to_string(c.n_kv_head) +
        " is not allowed for model.arch=gpt2: grouped-query attention is llama only; use 0 or "
        "model.n_head=" +
        std::to_string(c.n_head));
  if (c.kv_heads() > c.n_head || c.n_head % c.kv_heads() != 0)
    return Status::InvalidArgument(
        "model.n_head=" + std::to_string(c.n_head) + " is not a multiple of model.n_kv_head=" +
        std::to_string(c.n_kv_head) + "; each key/value head must serve a whole group of heads");
  if (c.arch == "llama" && c.head_dim() % 2 != 0)
    return Status::InvalidArgument(
        "head size model.n_embd/model.n_head=" + std::to_string(c.n_embd) + "/" +
        std::to_string(c.n_head) + "=" + std::to_string(c.head_dim()) +
        " must be even for rotary position embeddings (llama)");
  if (!(c.norm_eps > 0) || !(c.init_std > 0) || !(c.rope_theta > 0))
    return Status::InvalidArgument(
        "model.norm_eps, model.init_std and model.rope_theta must be > 0");
  return Status::Ok();
}

Result<ModelConfig> model_config_from(const core::Config& config) {
  ModelConfig c;
  try {
    c.arch = config.get_string("model.arch");
    c.n_layer = config.get_int("model.n_layer");
    c.n_head = config.get_int("model.n_head");
    c.n_kv_head = config.get_int("model.n_kv_head");
    c.n_embd = config.get_int("model.n_embd");
    c.vocab_size = config.get_int("model.vocab_size");
    c.block_size = config.get_int("model.block_size");
    c.ffn_hidden = config.get_int("model.ffn_hidden");
    c.norm_eps = config.get_float("model.norm_eps");
    c.rope_theta = config.get_float("model.rope_theta");
    c.init_std = config.get_float("model.init_std");
  } catch (const std::exception& e) {
    return Status::InvalidArgument(std::string("config lacks the model.* keys of model_spec(): ") +
                                   e.what());
  }
  CAIRN_RETURN_IF_ERROR(validate(c));
  return c;
}

}  // namespace cairn::model
