// Small parameter-holding layers shared by the architectures.
#include "model/layers_impl.h"

namespace cairn::model {
namespace {

thread_local bool placeholders = false;

// A parameter of `shape` filled with `value`, or a placeholder inside a PlaceholderScope.
torch::Tensor make_param(at::IntArrayRef shape, double value) {
  if (placeholders) return torch::empty({0});
  return torch::full(shape, value);
}

}  // namespace

PlaceholderScope::PlaceholderScope(bool on) : was_(placeholders) { placeholders = was_ || on; }
PlaceholderScope::~PlaceholderScope() { placeholders = was_; }

Linear::Linear(int64_t in, int64_t out, bool with_bias) {
  weight = register_parameter("weight", make_param({out, in}, 0));
  if (with_bias) bias = register_parameter("bias", make_param({out}, 0));
}

Embedding::Embedding(int64_t num, int64_t dim) {
  weight = register_parameter("weight", make_param({num, dim}, 0));
}

LayerNorm::LayerNorm(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", make_param({dim}, 1));
  bias = register_parameter("bias", make_param({dim}, 0));
}

RMSNorm::RMSNorm(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", make_param({dim}, 1));
}

torch::Tensor RMSNorm::forward(const torch::Tensor& x) {
  auto xf = x.to(torch::kFloat);                                             // (..., C)
  auto inv_rms = torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps_);  // (..., 1)
  return (xf * inv_rms).to(x.scalar_type()) * weight;
}

}  // namespace cairn::model
