// The parameter tables of GPT-2 and LLaMA.
#include "cairn/model/param_specs.h"

namespace cairn::model {
namespace {

struct Builder {
  std::vector<ParamSpec> out;
  ParamSpec& add(std::string name, std::vector<int64_t> shape, ParamRole role, int64_t layer,
                 TpSplit tp, std::string hf_name) {
    ParamSpec s;
    s.name = std::move(name);
    s.shape = std::move(shape);
    s.role = role;
    s.layer = layer;
    s.tp = tp;
    s.decays = s.shape.size() >= 2 && role != ParamRole::kPositionEmbedding;
    s.residual_out = role == ParamRole::kAttentionOut || role == ParamRole::kMlpOut;
    s.hf_name = std::move(hf_name);
    out.push_back(std::move(s));
    return out.back();
  }
};

std::vector<ParamSpec> gpt2_specs(const ModelConfig& c) {
  const int64_t C = c.n_embd, F = c.ffn_dim(), V = c.vocab_size, P = c.block_size;
  using R = ParamRole;
  using S = TpSplit;
  Builder b;
  // HuggingFace's GPT2LMHeadModel: the same names under "transformer.", and its Conv1D
  // layers store (in, out).
  auto add = [&](const std::string& name, std::vector<int64_t> shape, R role, int64_t layer,
                 S tp) -> ParamSpec& {
    return b.add(name, std::move(shape), role, layer, tp, "transformer." + name);
  };
  add("wte.weight", {V, C}, R::kTokenEmbedding, -1, S::kVocab);
  add("wpe.weight", {P, C}, R::kPositionEmbedding, -1, S::kReplicated);
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string p = "h." + std::to_string(i) + ".";
    add(p + "ln_1.weight", {C}, R::kNormWeight, i, S::kReplicated);
    add(p + "ln_1.bias", {C}, R::kNormBias, i, S::kReplicated);
    ParamSpec& qkv = add(p + "attn.c_attn.weight", {3 * C, C}, R::kQkv, i, S::kColumn);
    qkv.tp_blocks = 3;
    qkv.hf_transpose = true;
    add(p + "attn.c_attn.bias", {3 * C}, R::kQkvBias, i, S::kColumn).tp_blocks = 3;
    add(p + "attn.c_proj.weight", {C, C}, R::kAttentionOut, i, S::kRow).hf_transpose = true;
    add(p + "attn.c_proj.bias", {C}, R::kAttentionOutBias, i, S::kReplicated);
    add(p + "ln_2.weight", {C}, R::kNormWeight, i, S::kReplicated);
    add(p + "ln_2.bias", {C}, R::kNormBias, i, S::kReplicated);
    add(p + "mlp.c_fc.weight", {F, C}, R::kMlpIn, i, S::kColumn).hf_transpose = true;
    add(p + "mlp.c_fc.bias", {F}, R::kMlpInBias, i, S::kColumn);
    add(p + "mlp.c_proj.weight", {C, F}, R::kMlpOut, i, S::kRow).hf_transpose = true;
    add(p + "mlp.c_proj.bias", {C}, R::kMlpOutBias, i, S::kReplicated);
  }
  add("ln_f.weight", {C}, R::kNormWeight, -1, S::kReplicated);
  add("ln_f.bias", {C}, R::kNormBias, -1, S::kReplicated);
  return std::move(b.out);
}

std::vector<ParamSpec> llama_specs(const ModelConfig& c) {
  const int64_t C = c.n_embd, F = c.ffn_dim(), V = c.vocab_size;
  const int64_t H = c.n_head, K = c.kv_heads(), D = c.head_dim();
  using R = ParamRole;
  using S = TpSplit;
  Builder b;
  b.add("tok_embeddings.weight", {V, C}, R::kTokenEmbedding, -1, S::kVocab,
        "model.embed_tokens.weight");
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    const std::string h = "model.layers." + std::to_string(i) + ".";
    b.add(p + "attention_norm.weight", {C}, R::kNormWeight, i, S::kReplicated,
          h + "input_layernorm.weight");
    b.add(p + "attention.wq.weight", {H * D, C}, R::kQuery, i, S::kColumn,
          h + "self_attn.q_proj.weight");
    b.add(p + "attention.wk.weight", {K * D, C}, R::kKey, i, S::kColumn,
          h + "self_attn.k_proj.weight");
    b.add(p + "attention.wv.weight", {K * D, C}, R::kValue, i, S::kColumn,
          h + "self_attn.v_proj.weight");
    b.add(p + "attention.wo.weight", {C, H * D}, R::kAttentionOut, i, S::kRow,
          h + "self_attn.o_proj.weight");
    b.add(p + "ffn_norm.weight", {C}, R::kNormWeight, i, S::kReplicated,
          h + "post_attention_layernorm.weight");
    b.add(p + "feed_forward.w1.weight", {F, C}, R::kMlpIn, i, S::kColumn,
          h + "mlp.gate_proj.weight");
    b.add(p + "feed_forward.w2.weight", {C, F}, R::kMlpOut, i, S::kRow, h + "mlp.down_proj.weight");
    b.add(p + "feed_forward.w3.weight", {F, C}, R::kMlpIn, i, S::kColumn, h + "mlp.up_proj.weight");
  }
  b.add("norm.weight", {C}, R::kNormWeight, -1, S::kReplicated, "model.norm.weight");
  b.add("output.weight", {V, C}, R::kHead, -1, S::kVocab, "lm_head.weight");
  return std::move(b.out);
}

}  // namespace

const char* param_role_name(ParamRole r) {
  switch (r) {
    case ParamRole::kTokenEmbedding:
      return "token_embedding";
    case ParamRole::kPositionEmbedding:
      return "position_embedding";
    case ParamRole::kNormWeight:
      return "norm_weight";
    case ParamRole::kNormBias:
      return "norm_bias";
    case ParamRole::kQkv:
      return "qkv";
    case ParamRole::kQkvBias:
      return "qkv_bias";
    case ParamRole::kQuery:
      return "query";
    case ParamRole::kKey:
      return "key";
    case ParamRole::kValue:
      return "value";
    case ParamRole::kAttentionOut:
      return "attention_out";
    case ParamRole::kAttentionOutBias:
      return "attention_out_bias";
    case ParamRole::kMlpIn:
      return "mlp_in";
    case ParamRole::kMlpInBias:
      return "mlp_in_bias";
    case ParamRole::kMlpOut:
      return "mlp_out";
    case ParamRole::kMlpOutBias:
      return "mlp_out_bias";
    case ParamRole::kHead:
      return "head";
  }
  return "?";
}

const char* tp_split_name(TpSplit s) {
  switch (s) {
    case TpSplit::kReplicated:
      return "replicated";
    case TpSplit::kColumn:
      return "column";
    case TpSplit::kRow:
      return "row";
    case TpSplit::kVocab:
      return "vocab";
  }
  return "?";
}

std::vector<ParamSpec> param_specs(const ModelConfig& config) {
  return config.is_llama() ? llama_specs(config) : gpt2_specs(config);
}

const ParamSpec* find_spec(const std::vector<ParamSpec>& specs, const std::string& name) {
  for (const ParamSpec& s : specs)
    if (s.name == name) return &s;
  return nullptr;
}

}  // namespace cairn::model
