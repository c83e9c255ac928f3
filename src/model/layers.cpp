// Small parameter-holding layers shared by the architectures.
#include "model/layers_impl.h"

namespace cairn::model {

Linear::Linear(int64_t in, int64_t out, bool with_bias) {
  weight = register_parameter("weight", torch::zeros({out, in}));
  if (with_bias) bias = register_parameter("bias", torch::zeros({out}));
}

Embedding::Embedding(int64_t num, int64_t dim) {
  weight = register_parameter("weight", torch::zeros({num, dim}));
}

LayerNorm::LayerNorm(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
  bias = register_parameter("bias", torch::zeros({dim}));
}

RMSNorm::RMSNorm(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNorm::forward(const torch::Tensor& x) {
  auto xf = x.to(torch::kFloat);                                             // (..., C)
  auto inv_rms = torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps_);  // (..., 1)
  return (xf * inv_rms).to(x.scalar_type()) * weight;
}

}  // namespace cairn::model
