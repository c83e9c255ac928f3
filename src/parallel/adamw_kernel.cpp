// Fused AdamW loop (compiled with -fno-math-errno so that sqrt vectorizes).
#include <ATen/Parallel.h>

#include <cmath>

#include "parallel/adamw_kernel_impl.h"

namespace cairn::parallel {

AdamCoeffs adam_coeffs(const AdamHyper& h, int64_t step, double lr, float grad_scale) {
  AdamCoeffs c;
  c.beta1 = float(h.beta1);
  c.one_minus_beta1 = float(1.0 - h.beta1);
  c.beta2 = float(h.beta2);
  c.one_minus_beta2 = float(1.0 - h.beta2);
  c.inv_bias2_sqrt = float(1.0 / std::sqrt(1.0 - std::pow(h.beta2, double(step))));
  c.step_size = float(lr / (1.0 - std::pow(h.beta1, double(step))));
  c.eps = float(h.eps);
  c.decay_factor = float(1.0 - lr * h.weight_decay);
  c.grad_scale = grad_scale;
  return c;
}

void adamw_update(float* __restrict p, const float* __restrict g, float* __restrict m,
                  float* __restrict v, int64_t n, const AdamCoeffs& c, bool decay) {
  const AdamCoeffs k = c;
  const float decay_factor = decay ? k.decay_factor : 1.0f;
  at::parallel_for(0, n, 1 << 15, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const float gi = g[i] * k.grad_scale;
      const float mi = k.beta1 * m[i] + k.one_minus_beta1 * gi;
      const float vi = k.beta2 * v[i] + k.one_minus_beta2 * gi * gi;
      m[i] = mi;
      v[i] = vi;
      const float denom = std::sqrt(vi) * k.inv_bias2_sqrt + k.eps;
      p[i] = p[i] * decay_factor - k.step_size * mi / denom;
    }
  });
}

void adamw_update_tensors(torch::Tensor& p, const torch::Tensor& g, torch::Tensor& m,
                          torch::Tensor& v, const AdamCoeffs& c, bool decay) {
  const torch::Tensor gs = g * c.grad_scale;
  m.mul_(c.beta1).add_(gs, c.one_minus_beta1);
  v.mul_(c.beta2).addcmul_(gs, gs, c.one_minus_beta2);
  const torch::Tensor denom = v.sqrt().mul_(c.inv_bias2_sqrt).add_(c.eps);
  if (decay) p.mul_(c.decay_factor);
  p.addcdiv_(m, denom, -c.step_size);
}

}  // namespace cairn::parallel
