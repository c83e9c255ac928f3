// Model hyper-parameters: the ModelConfig struct, the `model.*` config keys that fill it,
// and the cross-key checks that keep a configuration buildable.
#pragma once

#include <cstdint>
#include <string>

#include "cairn/core/config.h"
#include "cairn/core/status.h"

namespace cairn::model {

// Architecture and sizes of a decoder-only transformer. Plain value; copy freely.
// Zero-valued "auto" fields are resolved by the accessors below, never rewritten in place.
struct ModelConfig {
  std::string arch = "gpt2";  // "gpt2" | "llama"
  int64_t n_layer = 4;
  int64_t n_head = 4;
  int64_t n_kv_head = 0;  // 0 = n_head; llama only may use fewer (grouped-query attention)
  int64_t n_embd = 256;
  int64_t vocab_size = 50304;
  int64_t block_size = 256;  // longest sequence the model accepts
  int64_t ffn_hidden = 0;    // 0 = auto: gpt2 4*C, llama the multiple of 64 >= 8C/3
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;  // llama only
  double init_std = 0.02;

  bool is_llama() const { return arch == "llama"; }
  int64_t kv_heads() const { return n_kv_head == 0 ? n_head : n_kv_head; }
  int64_t head_dim() const { return n_embd / n_head; }
  int64_t ffn_dim() const;
};

// The values one block saves for backward per token (fp32), in units of n_embd C: `whole` stay
// whole under tensor parallelism without sequence parallelism, `split` are divided by tp. GPT-2
// (ffn width F): 6 whole (the norms' inputs and outputs, the residuals) and 3 + 2 F / C split
// (q, k and v; the MLP's two F-wide values). LLaMA saves one more value per RMSNorm (its
// normalized input, for the weight's gradient), q and the rotated k and v of the key/value
// width K, and four F-wide values (w1's and w3's outputs, silu's, their product): 8 whole and
// 1 + (2 K + 4 F) / C split. The memory checks (train::estimate_memory, the planner's cost
// model) count a block with it. Of the split values, `wide` are F-wide tensors of their own
// and the widest of the others is `widest` C wide (GPT-2's q, k and v are views of one 3C-wide
// tensor; LLaMA's are tensors of their own): which tensors are under the block cache's
// huge-page size, and so kept rather than handed back (core/block_cache.h), follows from them.
struct BlockSaved {
  double whole = 0, split = 0;
  int wide = 0;
  double widest = 0;
};
BlockSaved block_saved_values(const ModelConfig& c);

// The `model.*` keys, with defaults equal to ModelConfig's, ranges and docs.
core::ConfigSpec model_spec();

// Reads the `model.*` keys of a config resolved against (a superset of) model_spec() and
// checks relations between keys. Errors are kInvalidArgument naming keys and values.
Result<ModelConfig> model_config_from(const core::Config& config);

// The cross-key checks alone, for configs built in code.
Status validate(const ModelConfig& config);

}  // namespace cairn::model
