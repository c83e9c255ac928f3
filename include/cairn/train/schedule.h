// Learning-rate schedule: linear warmup to lr, then cosine decay to min_lr. Pure function.
#pragma once

#include <cstdint>

namespace cairn::train {

// lr for optimizer step `step` (0-based). warmup: lr * (step + 1) / warmup_steps; then cosine
// from lr to min_lr over [warmup_steps, decay_steps]; min_lr afterwards.
double lr_at(int64_t step, double lr, double min_lr, int64_t warmup_steps, int64_t decay_steps);

}  // namespace cairn::train
