// Warmup + cosine learning-rate schedule.
#include "cairn/train/schedule.h"

#include <algorithm>
#include <cmath>

namespace cairn::train {

double lr_at(int64_t step, double lr, double min_lr, int64_t warmup_steps, int64_t decay_steps) {
  if (step < warmup_steps) return lr * double(step + 1) / double(warmup_steps);
  if (step >= decay_steps) return min_lr;
  double progress =
      double(step - warmup_steps) / double(std::max<int64_t>(1, decay_steps - warmup_steps));
  double coeff = 0.5 * (1.0 + std::cos(M_PI * progress));
  return min_lr + coeff * (lr - min_lr);
}

}  // namespace cairn::train
