// Decoder-only transformer language models (GPT-2 and LLaMA families) behind one interface,
// written once for a single process; parallelism is applied from outside.
// Dimension keys: B batch, T sequence, C channels, V vocabulary.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "cairn/model/checkpoint.h"
#include "cairn/model/config.h"
#include "cairn/model/parallel_hooks.h"

namespace cairn::model {

// A token-in, logits-out model. Parameter names follow the usual checkpoints of each family:
//   gpt2:  wte.weight, wpe.weight, h.<i>.ln_1.{weight,bias}, h.<i>.attn.c_attn.{weight,bias}
//          (3C, C), h.<i>.attn.c_proj.*, h.<i>.ln_2.*, h.<i>.mlp.c_fc.*, h.<i>.mlp.c_proj.*,
//          ln_f.{weight,bias}; the output head is wte.weight (tied).
//   llama: tok_embeddings.weight, layers.<i>.attention_norm.weight,
//          layers.<i>.attention.{wq,wk,wv,wo}.weight, layers.<i>.ffn_norm.weight,
//          layers.<i>.feed_forward.{w1,w2,w3}.weight (gate, down, up), norm.weight,
//          output.weight.
// Weights are in torch Linear layout (out, in). Not thread-safe; one model per thread.
//
// The forward pass is exposed in stages so that wrappers (pipeline stages, per-layer
// sharding) can run parts of it: hidden(idx) == final_norm(layer(L-1, ... layer(0,
// embed(idx)))), and logits = hidden @ head_weight^T.
class LanguageModel : public torch::nn::Module {
 public:
  explicit LanguageModel(ModelConfig config);
  ~LanguageModel() override = default;

  // idx (B, T) int64 token ids, 1 <= T <= block_size -> logits (B, T, V).
  torch::Tensor forward(const torch::Tensor& idx);
  // idx (B, T) -> hidden states after the final norm, (B, T, C). Layers marked for
  // activation checkpointing are run through checkpoint() when a graph is recorded.
  torch::Tensor hidden(const torch::Tensor& idx);
  // Mean next-token cross-entropy of hidden(idx) against targets (B, T) int64, computed with
  // fused_linear_cross_entropy (targets of -1 are ignored). Returns a float32 scalar.
  torch::Tensor loss(const torch::Tensor& idx, const torch::Tensor& targets);
  // The loss from hidden states after the final norm, h (B, T, C): the head and the fused
  // cross-entropy, the one place the loss is composed (loss() and the last stage of a staged
  // run use it).
  torch::Tensor head_loss(const torch::Tensor& h, const torch::Tensor& targets);

  // idx (B, T) int64 -> token (and, for gpt2, position) embeddings (B, T, C).
  // Throws c10::Error unless idx is (B, T) int64 with 1 <= T <= block_size.
  virtual torch::Tensor embed(const torch::Tensor& idx) = 0;
  // Transformer block i in [0, n_layer): x (B, T, C) -> (B, T, C), positions 0..T-1.
  // Never checkpointed itself.
  virtual torch::Tensor layer(int64_t i, const torch::Tensor& x) = 0;
  // The module holding block i's parameters (named h.<i> or layers.<i> in this model).
  virtual std::shared_ptr<torch::nn::Module> layer_module(int64_t i) = 0;
  // Blocks [begin, end) in order on x (B, T, C), those marked for activation checkpointing
  // through checkpoint() when a graph is recorded (a pipeline stage's share of hidden()).
  torch::Tensor blocks(int64_t begin, int64_t end, const torch::Tensor& x);
  // Final norm: (B, T, C) -> (B, T, C).
  virtual torch::Tensor final_norm(const torch::Tensor& x) = 0;
  // The output projection, (V, C): logits = hidden @ head_weight^T.
  virtual torch::Tensor head_weight() = 0;

  // Activation checkpointing: a checkpointed block keeps only its input during forward and
  // is recomputed in backward; gradients are unchanged. No effect while no graph is recorded.
  // All blocks on or off:
  void set_activation_checkpointing(bool on);
  // Block by block. REQUIRES: per_layer.size() == n_layer.
  void set_activation_checkpointing(const std::vector<bool>& per_layer);
  const std::vector<bool>& checkpointed_layers() const { return checkpointed_; }

  // Number of distinct parameter values (the tied GPT-2 head is counted once).
  int64_t num_params() const;
  // Training FLOPs per token for sequences of length seq_len, the PaLM / nanoGPT convention:
  //   6 * N_matmul + 12 * n_layer * seq_len * n_embd
  // where N_matmul counts the weights of every matrix product (attention and MLP projections
  // and the V x C output head, tied or not; no embeddings lookups, biases or norms), 6 = 2
  // forward + 4 backward FLOPs per weight, and the second term is the QK^T and AV products
  // (forward + backward, the full T x T score matrix: causal masking is not subtracted).
  double flops_per_token(int64_t seq_len) const;
  const ModelConfig& config() const { return config_; }

  // Tensor parallelism (parallel_hooks.h): the hooks the model calls where a
  // tensor-parallel region begins and ends; null (the default) is the one-process model. The
  // caller keeps `hooks` alive and has put this rank's slices into the parameters.
  void set_tensor_parallel(std::shared_ptr<TensorParallelHooks> hooks);
  TensorParallelHooks* tensor_parallel() const { return seam_->hooks; }
  // Context parallelism (parallel_hooks.h): every call then takes this rank's share of each
  // sequence (idx (B, T') of the hooks' positions) and attention reaches the rest over the cp
  // group. The caller keeps `hooks` alive.
  void set_context_parallel(std::shared_ptr<ContextParallelHooks> hooks);
  // Split backward (parallel_hooks.h): the blocks' projections keep their weight gradients in
  // `store` for a later pass; null (the default) computes them in backward. The caller keeps
  // `store` alive.
  void set_weight_grad_store(WeightGradStore* store) { seam_->weight_grads = store; }

 protected:
  // Checks idx is (B, T) int64 with 1 <= T <= block_size.
  void check_idx(const torch::Tensor& idx) const;

  ModelConfig config_;
  // Given to the blocks at construction; its hooks are set by set_tensor_parallel.
  std::shared_ptr<ParallelSeam> seam_ = std::make_shared<ParallelSeam>();

 private:
  std::shared_ptr<TensorParallelHooks> hooks_;
  std::shared_ptr<ContextParallelHooks> cp_hooks_;
  std::vector<bool> checkpointed_;  // per block
};

// The parts of a model one rank holds (a pipeline stage's); the others are placeholders:
// parameters under the same names, empty (numel() == 0), taking no memory. Whole by default.
struct ModelPart {
  std::vector<bool> blocks;  // per block; empty: every block
  bool embedding = true;     // the token (gpt2: and position) embeddings
  bool head = true;          // the final norm and the output head (gpt2: the tied token table)
  bool holds_block(int64_t i) const { return blocks.empty() || blocks.at(size_t(i)); }
};

// Builds the architecture config.arch names and initializes it deterministically from seed,
// by each parameter's spec (param_specs.h): weights normal(0, init_std), residual output
// projections (gpt2 attn.c_proj and mlp.c_proj, llama attention.wo and feed_forward.w2)
// normal(0, init_std / sqrt(2 * n_layer)), biases 0, norm weights 1. Uses a private generator:
// neither reads nor advances the global RNG. Parameters are float32 on the CPU. Throws c10::Error
// if validate(config) fails. A part's parameters get the values the whole model's have.
std::shared_ptr<LanguageModel> build_model(const ModelConfig& config, uint64_t seed,
                                           const ModelPart& part = {});
// The model without cairn's initialization (libtorch's module defaults), for a caller that
// loads every parameter next; init_parameters(model, config, seed) later gives exactly what
// build_model(config, seed) would have (placeholders stay empty: the generator draws their
// values into a scratch tensor, so the held parameters' values do not depend on the part).
std::shared_ptr<LanguageModel> build_model_uninitialized(const ModelConfig& config,
                                                         const ModelPart& part = {});
void init_parameters(LanguageModel& model, const ModelConfig& config, uint64_t seed);

}  // namespace cairn::model
