// Parameter specs: the one table of what each parameter of a model is. Everything that needs
// to know a parameter (initialization, weight decay, the ZeRO-3 / pipeline stages, the
// HuggingFace names and layouts, and tensor parallelism's splits) reads it here instead of
// matching names. Pure: computed from a ModelConfig alone, no torch.
// Dimension keys: C channels, F MLP width, V vocabulary, H query heads, K key/value heads,
// D head size, P positions (block_size).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cairn/model/config.h"

namespace cairn::model {

enum class ParamRole {
  kTokenEmbedding,     // (V, C); GPT-2's output head too (tied)
  kPositionEmbedding,  // (P, C), GPT-2
  kNormWeight,         // (C)
  kNormBias,           // (C), GPT-2
  kQkv,                // (3C, C), GPT-2's c_attn: query, key and value stacked
  kQkvBias,            // (3C)
  kQuery,              // (H*D, C), LLaMA
  kKey,                // (K*D, C), LLaMA
  kValue,              // (K*D, C), LLaMA
  kAttentionOut,       // (C, H*D): writes into the residual stream
  kAttentionOutBias,   // (C), GPT-2
  kMlpIn,              // (F, C): GPT-2's c_fc, LLaMA's w1 (gate) and w3 (up)
  kMlpInBias,          // (F), GPT-2
  kMlpOut,             // (C, F): writes into the residual stream
  kMlpOutBias,         // (C), GPT-2
  kHead,               // (V, C), LLaMA's untied output head
};
const char* param_role_name(ParamRole r);

// How a parameter is split over a tensor-parallel group of t ranks (Megatron's layout): the
// attention heads and the MLP width are split, what follows a row-parallel product is summed.
enum class TpSplit {
  kReplicated,  // whole on every rank: norms, the position table, row-parallel biases
  kColumn,      // dim 0 (output features) in t parts; a column-parallel weight or its bias
  kRow,         // dim 1 (input features) in t parts; a row-parallel weight
  kVocab,       // dim 0 (vocabulary rows) in t parts; the embedding and the head
};
// LLaMA's key and value projections are kColumn; when t exceeds the key/value heads they are
// replicated instead, which is decided where t is known (the tensor-parallel engine).
const char* tp_split_name(TpSplit s);

struct ParamSpec {
  std::string name;            // as in LanguageModel::named_parameters()
  std::vector<int64_t> shape;  // torch Linear layout (out, in) for weights
  ParamRole role;
  int64_t layer = -1;  // the transformer block, or -1 outside the blocks
  TpSplit tp = TpSplit::kReplicated;
  // kColumn over dim 0 made of this many equal blocks (GPT-2's q, k, v): each block is split
  // and rank r holds its part of every block.
  int tp_blocks = 1;
  bool decays = false;        // AdamW weight decay applies (matrices but the position table)
  bool residual_out = false;  // initialized with std / sqrt(2 n_layer): writes the residual
  std::string hf_name;        // the tensor's name in the HuggingFace layout
  bool hf_transpose = false;  // stored (in, out) there (GPT-2's Conv1D)
  bool vocab_rows() const { return role == ParamRole::kTokenEmbedding || role == ParamRole::kHead; }
};

// The parameters build_model(config) creates, in its order. REQUIRES: validate(config) is ok.
std::vector<ParamSpec> param_specs(const ModelConfig& config);

// The spec named `name` in `specs`, or null.
const ParamSpec* find_spec(const std::vector<ParamSpec>& specs, const std::string& name);

}  // namespace cairn::model
