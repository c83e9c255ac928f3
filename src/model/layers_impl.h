// Small parameter-holding layers shared by the architectures. They create zero-filled
// parameters and never touch a random generator; build_model() initializes them.
// Dimension keys: C channels, V vocabulary; "..." any leading dimensions.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace cairn::model {

// While one is alive (on this thread), the layers built create placeholders instead of their
// parameters: empty tensors under the same names, taking no memory (a model part another
// rank holds, ModelPart in language_model.h). `on` false makes it a no-op.
class PlaceholderScope {
 public:
  explicit PlaceholderScope(bool on);
  ~PlaceholderScope();
  PlaceholderScope(const PlaceholderScope&) = delete;
  PlaceholderScope& operator=(const PlaceholderScope&) = delete;

 private:
  bool was_;
};

// y = x W^T + b. weight (out, in), bias (out) or none.
class Linear : public torch::nn::Module {
 public:
  Linear(int64_t in, int64_t out, bool bias);
  torch::Tensor forward(const torch::Tensor& x) { return torch::linear(x, weight, bias); }
  torch::Tensor weight, bias;
};

// Token lookup table, weight (V, C); idx (...) int64 -> (..., C).
class Embedding : public torch::nn::Module {
 public:
  Embedding(int64_t num, int64_t dim);
  torch::Tensor forward(const torch::Tensor& idx) { return torch::embedding(weight, idx); }
  torch::Tensor weight;
};

// LayerNorm over the last dimension with weight and bias (C).
class LayerNorm : public torch::nn::Module {
 public:
  LayerNorm(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x) {
    return torch::layer_norm(x, {weight.size(0)}, weight, bias, eps_);
  }
  torch::Tensor weight, bias;

 private:
  double eps_;
};

// x / sqrt(mean(x^2) + eps) * weight over the last dimension, weight (C).
class RMSNorm : public torch::nn::Module {
 public:
  RMSNorm(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;

 private:
  double eps_;
};

}  // namespace cairn::model
