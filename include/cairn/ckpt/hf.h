// Exchanging model weights with the HuggingFace `transformers` layout: a folder holding
// `config.json` and `model.safetensors`, read by GPT2LMHeadModel / LlamaForCausalLM.
//
// Names and layouts (cairn name -> HuggingFace name; i = block index):
//   gpt2:  wte.weight -> transformer.wte.weight, wpe.weight -> transformer.wpe.weight,
//          h.<i>.<rest> -> transformer.h.<i>.<rest>, ln_f.* -> transformer.ln_f.*.
//          The weights of attn.c_attn, attn.c_proj, mlp.c_fc and mlp.c_proj are transposed:
//          cairn keeps torch Linear layout (out, in), HuggingFace's Conv1D keeps (in, out).
//          The tied output head is stored once, as transformer.wte.weight (what
//          save_pretrained writes); lm_head.weight is not written.
//   llama: tok_embeddings.weight -> model.embed_tokens.weight,
//          layers.<i>.attention.{wq,wk,wv,wo} -> model.layers.<i>.self_attn.{q,k,v,o}_proj,
//          layers.<i>.feed_forward.{w1,w3,w2} -> model.layers.<i>.mlp.{gate,up,down}_proj,
//          layers.<i>.attention_norm -> model.layers.<i>.input_layernorm,
//          layers.<i>.ffn_norm -> model.layers.<i>.post_attention_layernorm,
//          norm.weight -> model.norm.weight, output.weight -> lm_head.weight.
//          No transposes and no q/k permutation: cairn's rotary embedding already uses
//          HuggingFace's rotate-half convention on the stored layout.
//
// Vocabulary: cairn pads the vocabulary (e.g. 50304 rows for GPT-2's 50257 tokens). The
// padded rows are exported as they are and config.json's vocab_size says so, unless
// HfExportOptions::vocab_size asks for fewer rows.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "cairn/ckpt/checkpoint.h"
#include "cairn/core/status.h"
#include "cairn/model/config.h"

namespace cairn::ckpt {

using TensorMap = std::map<std::string, torch::Tensor>;

// How one cairn parameter is stored in the HuggingFace layout.
struct HfName {
  std::string cairn;  // "h.0.attn.c_attn.weight"
  std::string hf;     // "transformer.h.0.attn.c_attn.weight"
  bool transpose = false;
};

// The name map of every parameter of `config`'s model, in model::param_specs() order (the
// names and layouts are the specs' hf_name and hf_transpose).
std::vector<HfName> hf_name_map(const model::ModelConfig& config);

struct HfExportOptions {
  // Rows of the embedding (and of llama's output head) to write; 0 = all of them, padding
  // included. At most the model's vocab_size (to_hf_tensors() checks).
  int64_t vocab_size = 0;
};

// cairn parameters (names without the "model." prefix) -> HuggingFace tensors, in
// hf_name_map() order, float32 contiguous. kInvalidArgument naming the parameter when one is
// missing, unexpected or misshapen for `config`, or when options.vocab_size is out of range.
Result<std::vector<std::pair<std::string, torch::Tensor>>> to_hf_tensors(
    const model::ModelConfig& config, const TensorMap& params, const HfExportOptions& options);

// The config.json of the exported model (model_type, architectures and the sizes).
nlohmann::json hf_config_json(const model::ModelConfig& config, const HfExportOptions& options);

// What a HuggingFace config.json says about a model cairn can build.
struct HfConfig {
  model::ModelConfig model;
  bool tied_head = false;  // tie_word_embeddings: the output head is the token embedding
};

// Parses a HuggingFace config.json. kUnsupported for a model_type other than gpt2 / llama or
// for features cairn's models lack (rope_scaling, biases in llama, other activations, ...);
// kInvalidArgument naming the key for a missing, mistyped or invalid value. `origin` names
// the file in messages.
Result<HfConfig> model_config_from_hf(const nlohmann::json& config_json, const std::string& origin);

// HuggingFace tensors -> cairn parameters (float32) for `config`. GPT-2 names may lack the
// "transformer." prefix (as in the original GPT-2 files); the non-parameter buffers
// h.<i>.attn.bias, h.<i>.attn.masked_bias and self_attn.rotary_emb.inv_freq are ignored.
// With a tied head lm_head.weight may be absent, or present and equal to the embedding; a
// tied llama head becomes a copy of the embedding (cairn's llama head is untied). Errors name
// the tensor: kInvalidArgument for an unknown, missing, duplicated, misshapen or
// non-floating tensor. `origin` names the file in messages.
Result<TensorMap> from_hf_tensors(const HfConfig& config, const TensorMap& hf,
                                  const std::string& origin);

// Writes `out_dir`/model.safetensors and then `out_dir`/config.json (each atomically),
// creating out_dir if needed. Errors as to_hf_tensors(), or kIoError.
Status export_hf(const std::string& out_dir, const model::ModelConfig& config,
                 const TensorMap& params, const HfExportOptions& options);

struct HfModel {
  HfConfig config;
  TensorMap params;            // cairn names, float32
  nlohmann::json config_json;  // as read
};

// Reads a folder written by export_hf() or by transformers' save_pretrained() with
// safetensors: config.json + model.safetensors. kNotFound when the folder or either file is
// missing; kUnsupported when the folder holds pytorch_model.bin or a sharded index instead;
// kInvalidArgument when config.json is not JSON; kCorrupt for a damaged model.safetensors;
// other errors as model_config_from_hf() and from_hf_tensors().
Result<HfModel> read_hf(const std::string& dir);

// Writes `params` (cairn names; stored as "model.<name>") as step 0 of a new checkpoint root
// with the given manifest state. kFailedPrecondition if `root` already holds step
// directories, so an existing run is never overwritten.
Result<SaveInfo> save_model_checkpoint(const std::string& root, const TensorMap& params,
                                       const nlohmann::json& state);

}  // namespace cairn::ckpt
