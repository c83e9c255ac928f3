// Parameter names, shapes and layouts of cairn's models and their HuggingFace counterparts,
// and the tensor conversion between the two. Pure functions over tensors; no files.
// Dimension keys: C channels, F MLP width, V vocabulary, H query heads, K key/value heads,
// D head size, P positions (block_size).
#include <torch/torch.h>

#include <algorithm>
#include <regex>
#include <set>
#include <sstream>

#include "cairn/ckpt/hf.h"

namespace cairn::ckpt {
namespace {

std::string shape_text(c10::IntArrayRef shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The rows of these parameters are vocabulary entries.
bool is_vocab_param(const std::string& cairn_name) {
  return cairn_name == "wte.weight" || cairn_name == "tok_embeddings.weight" ||
         cairn_name == "output.weight";
}

const char* embedding_name(const model::ModelConfig& c) {
  return c.is_llama() ? "tok_embeddings.weight" : "wte.weight";
}

// GPT-2 weights HuggingFace stores as Conv1D (in, out).
bool gpt2_is_conv1d(const std::string& name) {
  if (!ends_with(name, ".weight")) return false;
  for (const char* m : {".attn.c_attn.", ".attn.c_proj.", ".mlp.c_fc.", ".mlp.c_proj."})
    if (name.find(m) != std::string::npos) return true;
  return false;
}

// cairn suffix after "layers.<i>." -> HuggingFace suffix after "model.layers.<i>.".
constexpr std::pair<const char*, const char*> kLlamaBlock[] = {
    {"attention_norm.weight", "input_layernorm.weight"},
    {"attention.wq.weight", "self_attn.q_proj.weight"},
    {"attention.wk.weight", "self_attn.k_proj.weight"},
    {"attention.wv.weight", "self_attn.v_proj.weight"},
    {"attention.wo.weight", "self_attn.o_proj.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"feed_forward.w1.weight", "mlp.gate_proj.weight"},
    {"feed_forward.w2.weight", "mlp.down_proj.weight"},
    {"feed_forward.w3.weight", "mlp.up_proj.weight"},
};

std::string llama_hf_name(const std::string& name) {
  if (name == "tok_embeddings.weight") return "model.embed_tokens.weight";
  if (name == "norm.weight") return "model.norm.weight";
  if (name == "output.weight") return "lm_head.weight";
  // "layers.<i>.<rest>"
  const size_t dot = name.find('.', 7);
  const std::string block = name.substr(0, dot + 1), rest = name.substr(dot + 1);
  for (auto& [from, to] : kLlamaBlock)
    if (rest == from) return "model." + block + to;
  TORCH_INTERNAL_ASSERT(false, "no HuggingFace name for llama parameter ", name);
}

// Buffers HuggingFace checkpoints may hold that are not parameters of either model.
bool is_ignored_buffer(const std::string& hf_name) {
  static const std::regex kBuffers(R"(^(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)$)"
                                   "|"
                                   R"(^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$)");
  return std::regex_match(hf_name, kBuffers);
}

// "a, b, c (and 4 more)"
std::string name_list(const std::vector<std::string>& names) {
  std::string s;
  const size_t shown = std::min<size_t>(names.size(), 4);
  for (size_t i = 0; i < shown; ++i) s += (i ? ", '" : "'") + names[i] + "'";
  if (names.size() > shown) s += " (and " + std::to_string(names.size() - shown) + " more)";
  return s;
}

}  // namespace

std::vector<ParamSpec> model_param_specs(const model::ModelConfig& c) {
  const int64_t C = c.n_embd, F = c.ffn_dim(), V = c.vocab_size, P = c.block_size;
  std::vector<ParamSpec> out;
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    out.push_back({std::move(name), std::move(shape)});
  };
  if (!c.is_llama()) {
    add("wte.weight", {V, C});
    add("wpe.weight", {P, C});
    for (int64_t i = 0; i < c.n_layer; ++i) {
      const std::string p = "h." + std::to_string(i) + ".";
      add(p + "ln_1.weight", {C});
      add(p + "ln_1.bias", {C});
      add(p + "attn.c_attn.weight", {3 * C, C});
      add(p + "attn.c_attn.bias", {3 * C});
      add(p + "attn.c_proj.weight", {C, C});
      add(p + "attn.c_proj.bias", {C});
      add(p + "ln_2.weight", {C});
      add(p + "ln_2.bias", {C});
      add(p + "mlp.c_fc.weight", {F, C});
      add(p + "mlp.c_fc.bias", {F});
      add(p + "mlp.c_proj.weight", {C, F});
      add(p + "mlp.c_proj.bias", {C});
    }
    add("ln_f.weight", {C});
    add("ln_f.bias", {C});
    return out;
  }
  const int64_t H = c.n_head, K = c.kv_heads(), D = c.head_dim();
  add("tok_embeddings.weight", {V, C});
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    add(p + "attention_norm.weight", {C});
    add(p + "attention.wq.weight", {H * D, C});
    add(p + "attention.wk.weight", {K * D, C});
    add(p + "attention.wv.weight", {K * D, C});
    add(p + "attention.wo.weight", {C, H * D});
    add(p + "ffn_norm.weight", {C});
    add(p + "feed_forward.w1.weight", {F, C});
    add(p + "feed_forward.w2.weight", {C, F});
    add(p + "feed_forward.w3.weight", {F, C});
  }
  add("norm.weight", {C});
  add("output.weight", {V, C});
  return out;
}

std::vector<HfName> hf_name_map(const model::ModelConfig& c) {
  std::vector<HfName> out;
  for (auto& spec : model_param_specs(c)) {
    if (c.is_llama())
      out.push_back({spec.name, llama_hf_name(spec.name), false});
    else
      out.push_back({spec.name, "transformer." + spec.name, gpt2_is_conv1d(spec.name)});
  }
  return out;
}

Result<std::vector<std::pair<std::string, torch::Tensor>>> to_hf_tensors(
    const model::ModelConfig& c, const TensorMap& params, const HfExportOptions& o) {
  CAIRN_RETURN_IF_ERROR(model::validate(c));
  if (o.vocab_size < 0 || o.vocab_size > c.vocab_size)
    return Status::InvalidArgument("export vocab_size " + std::to_string(o.vocab_size) +
                                   " is outside [1, " + std::to_string(c.vocab_size) +
                                   "] (the model's vocabulary, padding included)");
  const int64_t rows = o.vocab_size > 0 ? o.vocab_size : c.vocab_size;
  const auto specs = model_param_specs(c);
  const auto names = hf_name_map(c);
  std::set<std::string> expected;
  for (auto& s : specs) expected.insert(s.name);
  std::vector<std::string> unexpected;
  for (auto& [name, t] : params)
    if (!expected.count(name)) unexpected.push_back(name);
  if (!unexpected.empty())
    return Status::InvalidArgument("parameters not in a " + c.arch +
                                   " model of this config: " + name_list(unexpected));
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (size_t i = 0; i < specs.size(); ++i) {
    auto it = params.find(specs[i].name);
    if (it == params.end())
      return Status::InvalidArgument("parameter '" + specs[i].name + "' is missing");
    torch::Tensor t = it->second.detach().to(torch::kCPU);
    if (!t.sizes().equals(specs[i].shape))
      return Status::InvalidArgument("parameter '" + specs[i].name + "' has shape " +
                                     shape_text(t.sizes()) + " but the config implies " +
                                     shape_text(specs[i].shape));
    if (!t.is_floating_point())
      return Status::InvalidArgument("parameter '" + specs[i].name + "' is not floating-point");
    if (is_vocab_param(specs[i].name)) t = t.slice(0, 0, rows);  // (V', C)
    if (names[i].transpose) t = t.t();                           // (in, out)
    out.emplace_back(names[i].hf, t.to(torch::kFloat).contiguous());
  }
  return out;
}

Result<TensorMap> from_hf_tensors(const HfConfig& hc, const TensorMap& hf,
                                  const std::string& origin) {
  const model::ModelConfig& c = hc.model;
  CAIRN_RETURN_IF_ERROR(model::validate(c));
  const auto specs = model_param_specs(c);
  const auto names = hf_name_map(c);
  std::map<std::string, size_t> by_hf;  // HuggingFace name -> index into specs / names
  for (size_t i = 0; i < names.size(); ++i) by_hf[names[i].hf] = i;
  const bool tied = hc.tied_head || !c.is_llama();

  TensorMap out;
  std::map<std::string, std::string> source;  // cairn name -> HuggingFace name it came from
  torch::Tensor head;                         // lm_head.weight of a tied model, if stored
  std::vector<std::string> unknown;
  for (auto& [raw, t] : hf) {
    std::string name = raw;
    if (!c.is_llama() && !starts_with(name, "transformer.") && name != "lm_head.weight")
      name = "transformer." + name;
    if (is_ignored_buffer(name)) continue;
    if (tied && name == "lm_head.weight") {
      head = t;
      continue;
    }
    auto it = by_hf.find(name);
    if (it == by_hf.end()) {
      unknown.push_back(raw);
      continue;
    }
    const ParamSpec& spec = specs[it->second];
    const bool transpose = names[it->second].transpose;
    if (auto prev = source.find(spec.name); prev != source.end())
      return Status::InvalidArgument(origin + ": tensors '" + prev->second + "' and '" + raw +
                                     "' are the same parameter");
    std::vector<int64_t> want = spec.shape;
    if (transpose) std::reverse(want.begin(), want.end());
    if (!t.sizes().equals(want))
      return Status::InvalidArgument(origin + ": tensor '" + raw + "' has shape " +
                                     shape_text(t.sizes()) + " but config.json implies " +
                                     shape_text(want));
    if (!t.is_floating_point())
      return Status::InvalidArgument(origin + ": tensor '" + raw + "' has dtype " +
                                     std::string(c10::toString(t.scalar_type())) +
                                     "; weights must be floating-point");
    torch::Tensor v = transpose ? t.t() : t;
    out[spec.name] = v.to(torch::kFloat).contiguous();
    source[spec.name] = raw;
  }
  if (!unknown.empty())
    return Status::InvalidArgument(origin + ": unknown tensors for model_type " + c.arch + ": " +
                                   name_list(unknown));

  const std::string embed = embedding_name(c);
  if (c.is_llama() && hc.tied_head && !out.count("output.weight") && out.count(embed))
    out["output.weight"] = out.at(embed).clone();
  std::vector<std::string> missing;
  for (auto& n : names)
    if (!out.count(n.cairn)) missing.push_back(n.hf);
  if (!missing.empty())
    return Status::InvalidArgument(origin +
                                   ": missing tensors for this config.json: " + name_list(missing));
  if (head.defined()) {
    const torch::Tensor& e = out.at(embed);
    if (!head.sizes().equals(e.sizes()) || !torch::equal(head.to(torch::kFloat), e))
      return Status::InvalidArgument(
          origin + ": 'lm_head.weight' differs from the token embedding, but the output head " +
          "is tied to it (" +
          (c.is_llama() ? "tie_word_embeddings is true" : "cairn's GPT-2 ties them") + ")");
  }
  return out;
}

}  // namespace cairn::ckpt
