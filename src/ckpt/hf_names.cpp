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
#include "cairn/model/param_specs.h"

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

std::vector<HfName> hf_name_map(const model::ModelConfig& c) {
  std::vector<HfName> out;
  for (const model::ParamSpec& spec : model::param_specs(c))
    out.push_back({spec.name, spec.hf_name, spec.hf_transpose});
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
  const auto specs = model::param_specs(c);
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
    if (specs[i].vocab_rows()) t = t.slice(0, 0, rows);  // (V', C)
    if (names[i].transpose) t = t.t();                   // (in, out)
    out.emplace_back(names[i].hf, t.to(torch::kFloat).contiguous());
  }
  return out;
}

Result<TensorMap> from_hf_tensors(const HfConfig& hc, const TensorMap& hf,
                                  const std::string& origin) {
  const model::ModelConfig& c = hc.model;
  CAIRN_RETURN_IF_ERROR(model::validate(c));
  const auto specs = model::param_specs(c);
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
    const model::ParamSpec& spec = specs[it->second];
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

  std::string embed;
  for (const model::ParamSpec& spec : specs)
    if (spec.role == model::ParamRole::kTokenEmbedding) embed = spec.name;
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
