// The fused AdamW update over one contiguous range: one pass over parameters, gradients and
// both moments instead of the eight tensor operations of the textbook form.
#pragma once

#include <cstdint>

#include "cairn/parallel/data_parallel.h"

namespace cairn::parallel {

struct AdamCoeffs {
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float inv_bias2_sqrt;  // 1 / sqrt(1 - beta2^t)
  float step_size;       // lr / (1 - beta1^t)
  float eps;
  float decay_factor;  // 1 - lr * weight_decay, applied when `decay`
  float grad_scale;    // gradient clipping factor (1 = none)
};

// The coefficients of update number `step` (1-based) with learning rate `lr`.
AdamCoeffs adam_coeffs(const AdamHyper& h, int64_t step, double lr, float grad_scale);

// p -= step_size * m / (sqrt(v) / sqrt(1 - beta2^t) + eps) after decaying p and updating the
// moments with g * grad_scale. Runs on torch's intra-op threads. REQUIRES: no aliasing.
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamCoeffs& c,
                  bool decay);
// The same update with tensor operations, for tensors off the CPU (a GPU): p, g, m, v of one
// size and device, fp32. Equal to adamw_update up to the fused multiply-adds the compiler may
// form (tested on the CPU).
void adamw_update_tensors(torch::Tensor& p, const torch::Tensor& g, torch::Tensor& m,
                          torch::Tensor& v, const AdamCoeffs& c, bool decay);

}  // namespace cairn::parallel
