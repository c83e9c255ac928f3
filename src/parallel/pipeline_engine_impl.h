// The pipeline engine (parallelize() builds it for a plan with pp > 1): each pp rank trains
// its model chunks, walking the plan's schedule (pipeline_schedule.h) over the step's
// micro-batches and passing activations and their gradients to the neighbouring ranks.
#pragma once

#include <memory>

#include "cairn/core/status.h"
#include "cairn/parallel/engine.h"

namespace cairn::parallel {

// `model` is whole and initialized alike on every rank; the engine keeps this rank's chunks'
// parameters and frees the others. DDP or ZeRO-1/2 over groups.get(kData).
Result<std::unique_ptr<Engine>> make_pipeline_engine(std::shared_ptr<model::LanguageModel> model,
                                                     const Plan& plan,
                                                     const comm::MeshGroups& groups,
                                                     DataParallelOptions options);

}  // namespace cairn::parallel
