// Every key a job config may hold, with its default, range and help. Torch-free: the `cairn`
// front binary answers `cairn train --describe` from it without loading libtorch.
#pragma once

#include "cairn/core/config.h"

namespace cairn::train {

// train.*, data.*, parallel.* and ckpt.* keys.
core::ConfigSpec train_spec();
// Every key a job config may hold: model_spec() + train_spec().
core::ConfigSpec job_spec();

}  // namespace cairn::train
