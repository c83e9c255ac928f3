// HuggingFace config.json <-> model::ModelConfig for GPT2LMHeadModel and LlamaForCausalLM.
#include <cmath>
#include <string>

#include "cairn/ckpt/hf.h"

namespace cairn::ckpt {
namespace {

// Typed reads of config.json keys with errors naming the file and the key.
class Keys {
 public:
  Keys(const nlohmann::json& j, std::string origin) : j_(j), origin_(std::move(origin)) {}

  bool has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }

  Status integer(const char* key, int64_t* out) const {
    if (!has(key)) return missing(key);
    const auto& v = j_.at(key);
    if (!v.is_number_integer()) return mistyped(key, "an integer");
    *out = v.get<int64_t>();
    return Status::Ok();
  }
  Status integer_or(const char* key, int64_t def, int64_t* out) const {
    *out = def;
    return has(key) ? integer(key, out) : Status::Ok();
  }
  // An integer within the range model_spec() allows `model_key` (the sizes cairn builds).
  Status size(const char* key, const char* model_key, int64_t* out) const {
    CAIRN_RETURN_IF_ERROR(integer(key, out));
    return in_range(key, model_key, *out);
  }
  Status size_or(const char* key, const char* model_key, int64_t def, int64_t* out) const {
    *out = def;
    return has(key) ? size(key, model_key, out) : Status::Ok();
  }
  Status number_or(const char* key, double def, double* out) const {
    *out = def;
    if (!has(key)) return Status::Ok();
    if (!j_.at(key).is_number()) return mistyped(key, "a number");
    *out = j_.at(key).get<double>();
    return Status::Ok();
  }
  Status boolean_or(const char* key, bool def, bool* out) const {
    *out = def;
    if (!has(key)) return Status::Ok();
    if (!j_.at(key).is_boolean()) return mistyped(key, "true or false");
    *out = j_.at(key).get<bool>();
    return Status::Ok();
  }
  Status string_or(const char* key, const std::string& def, std::string* out) const {
    *out = def;
    if (!has(key)) return Status::Ok();
    if (!j_.at(key).is_string()) return mistyped(key, "a string");
    *out = j_.at(key).get<std::string>();
    return Status::Ok();
  }
  Status in_range(const char* key, const char* model_key, int64_t v) const {
    static const core::ConfigSpec spec = model::model_spec();
    const core::Field* f = spec.find(model_key);
    if (v >= f->min && v <= f->max) return Status::Ok();
    return Status::InvalidArgument(origin_ + ": '" + key + "' is " + std::to_string(v) +
                                   ", outside the " + std::to_string(int64_t(f->min)) + " to " +
                                   std::to_string(int64_t(f->max)) + " cairn allows (" + model_key +
                                   ")");
  }
  // kUnsupported unless `key` is absent or equal to `want`.
  Status require(const char* key, const nlohmann::json& want, const std::string& why) const {
    if (!has(key) || j_.at(key) == want) return Status::Ok();
    return Status::Unsupported(origin_ + ": " + key + " = " + j_.at(key).dump() +
                               " is not supported: " + why);
  }

 private:
  Status missing(const char* key) const {
    return Status::InvalidArgument(origin_ + ": missing key '" + key + "'");
  }
  Status mistyped(const char* key, const char* what) const {
    return Status::InvalidArgument(origin_ + ": '" + key + "' must be " + what + ", not " +
                                   j_.at(key).dump());
  }

  const nlohmann::json& j_;
  std::string origin_;
};

Status gpt2_from(const Keys& k, const std::string& origin, HfConfig* out) {
  model::ModelConfig& c = out->model;
  c.arch = "gpt2";
  CAIRN_RETURN_IF_ERROR(k.size("n_embd", "model.n_embd", &c.n_embd));
  CAIRN_RETURN_IF_ERROR(k.size("n_layer", "model.n_layer", &c.n_layer));
  CAIRN_RETURN_IF_ERROR(k.size("n_head", "model.n_head", &c.n_head));
  CAIRN_RETURN_IF_ERROR(k.size("vocab_size", "model.vocab_size", &c.vocab_size));
  if (k.has("n_positions"))
    CAIRN_RETURN_IF_ERROR(k.size("n_positions", "model.block_size", &c.block_size));
  else
    CAIRN_RETURN_IF_ERROR(k.size("n_ctx", "model.block_size", &c.block_size));
  int64_t inner = 0;
  CAIRN_RETURN_IF_ERROR(k.size_or("n_inner", "model.ffn_hidden", 0, &inner));
  c.ffn_hidden = inner == 4 * c.n_embd ? 0 : inner;
  CAIRN_RETURN_IF_ERROR(k.number_or("layer_norm_epsilon", 1e-5, &c.norm_eps));
  CAIRN_RETURN_IF_ERROR(k.number_or("initializer_range", 0.02, &c.init_std));
  std::string act;
  CAIRN_RETURN_IF_ERROR(k.string_or("activation_function", "gelu_new", &act));
  if (act != "gelu_new" && act != "gelu_pytorch_tanh")
    return Status::Unsupported(origin + ": activation_function '" + act +
                               "' is not supported: cairn's GPT-2 uses the tanh approximation "
                               "(gelu_new or gelu_pytorch_tanh)");
  CAIRN_RETURN_IF_ERROR(
      k.require("scale_attn_weights", true, "cairn scales attention scores by 1/sqrt(head size)"));
  CAIRN_RETURN_IF_ERROR(k.require("scale_attn_by_inverse_layer_idx", false,
                                  "cairn does not scale attention by layer"));
  CAIRN_RETURN_IF_ERROR(k.require("tie_word_embeddings", true,
                                  "cairn's GPT-2 ties the output head to the token embedding"));
  out->tied_head = true;
  return Status::Ok();
}

Status llama_from(const Keys& k, const std::string& origin, HfConfig* out) {
  model::ModelConfig& c = out->model;
  c.arch = "llama";
  CAIRN_RETURN_IF_ERROR(k.size("hidden_size", "model.n_embd", &c.n_embd));
  CAIRN_RETURN_IF_ERROR(k.size("num_hidden_layers", "model.n_layer", &c.n_layer));
  CAIRN_RETURN_IF_ERROR(k.size("num_attention_heads", "model.n_head", &c.n_head));
  CAIRN_RETURN_IF_ERROR(k.size("vocab_size", "model.vocab_size", &c.vocab_size));
  CAIRN_RETURN_IF_ERROR(k.size("max_position_embeddings", "model.block_size", &c.block_size));
  CAIRN_RETURN_IF_ERROR(k.size("intermediate_size", "model.ffn_hidden", &c.ffn_hidden));
  int64_t kv = 0;
  CAIRN_RETURN_IF_ERROR(k.size_or("num_key_value_heads", "model.n_kv_head", c.n_head, &kv));
  c.n_kv_head = kv == c.n_head ? 0 : kv;
  CAIRN_RETURN_IF_ERROR(k.number_or("rms_norm_eps", 1e-6, &c.norm_eps));
  CAIRN_RETURN_IF_ERROR(k.number_or("rope_theta", 10000.0, &c.rope_theta));
  CAIRN_RETURN_IF_ERROR(k.number_or("initializer_range", 0.02, &c.init_std));
  if (k.has("head_dim")) {
    int64_t head_dim = 0;
    CAIRN_RETURN_IF_ERROR(k.integer("head_dim", &head_dim));
    // n_head and n_embd are in range: the product cannot overflow.
    if (head_dim < 1 || head_dim > c.n_embd || head_dim * c.n_head != c.n_embd)
      return Status::Unsupported(origin + ": head_dim " + std::to_string(head_dim) +
                                 " is not hidden_size / num_attention_heads; cairn's LLaMA "
                                 "needs num_attention_heads * head_dim == hidden_size");
  }
  CAIRN_RETURN_IF_ERROR(k.require("hidden_act", "silu", "cairn's LLaMA MLP is SwiGLU (silu)"));
  CAIRN_RETURN_IF_ERROR(k.require("rope_scaling", nullptr, "cairn's RoPE has no scaling"));
  CAIRN_RETURN_IF_ERROR(k.require("attention_bias", false, "cairn's LLaMA has no biases"));
  CAIRN_RETURN_IF_ERROR(k.require("mlp_bias", false, "cairn's LLaMA has no biases"));
  CAIRN_RETURN_IF_ERROR(k.boolean_or("tie_word_embeddings", false, &out->tied_head));
  // The auto width of model.ffn_hidden, so that a round trip gives back the same config.
  model::ModelConfig auto_width = c;
  auto_width.ffn_hidden = 0;
  if (c.ffn_hidden == auto_width.ffn_dim()) c.ffn_hidden = 0;
  return Status::Ok();
}

}  // namespace

nlohmann::json hf_config_json(const model::ModelConfig& c, const HfExportOptions& o) {
  const int64_t vocab = o.vocab_size > 0 ? o.vocab_size : c.vocab_size;
  if (!c.is_llama()) {
    nlohmann::json inner = nullptr;
    if (c.ffn_dim() != 4 * c.n_embd) inner = c.ffn_dim();
    return {{"architectures", {"GPT2LMHeadModel"}},
            {"model_type", "gpt2"},
            {"vocab_size", vocab},
            {"n_positions", c.block_size},
            {"n_ctx", c.block_size},
            {"n_embd", c.n_embd},
            {"n_layer", c.n_layer},
            {"n_head", c.n_head},
            {"n_inner", inner},
            {"activation_function", "gelu_new"},
            {"layer_norm_epsilon", c.norm_eps},
            {"initializer_range", c.init_std},
            {"scale_attn_weights", true},
            {"tie_word_embeddings", true},
            {"resid_pdrop", 0.0},
            {"embd_pdrop", 0.0},
            {"attn_pdrop", 0.0},
            {"torch_dtype", "float32"}};
  }
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"vocab_size", vocab},
          {"hidden_size", c.n_embd},
          {"intermediate_size", c.ffn_dim()},
          {"num_hidden_layers", c.n_layer},
          {"num_attention_heads", c.n_head},
          {"num_key_value_heads", c.kv_heads()},
          {"head_dim", c.head_dim()},
          {"max_position_embeddings", c.block_size},
          {"rms_norm_eps", c.norm_eps},
          {"rope_theta", c.rope_theta},
          {"rope_scaling", nullptr},
          {"hidden_act", "silu"},
          {"attention_bias", false},
          {"mlp_bias", false},
          {"attention_dropout", 0.0},
          {"tie_word_embeddings", false},
          {"initializer_range", c.init_std},
          {"torch_dtype", "float32"}};
}

Result<HfConfig> model_config_from_hf(const nlohmann::json& j, const std::string& origin) {
  if (!j.is_object()) return Status::InvalidArgument(origin + ": not a JSON object");
  Keys k(j, origin);
  std::string type;
  CAIRN_RETURN_IF_ERROR(k.string_or("model_type", "", &type));
  HfConfig out;
  if (type == "gpt2") {
    CAIRN_RETURN_IF_ERROR(gpt2_from(k, origin, &out));
  } else if (type == "llama") {
    CAIRN_RETURN_IF_ERROR(llama_from(k, origin, &out));
  } else {
    return Status::Unsupported(origin + ": model_type " +
                               (type.empty() ? std::string("is missing") : "'" + type + "'") +
                               "; cairn imports gpt2 (GPT2LMHeadModel) and llama "
                               "(LlamaForCausalLM)");
  }
  Status s = model::validate(out.model);
  if (!s.ok()) return Status::InvalidArgument(origin + ": " + s.message());
  return out;
}

}  // namespace cairn::ckpt
