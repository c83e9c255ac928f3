// The pipeline engine (parallelize() builds it for a plan with pp > 1): each pp rank trains
// its model chunks, walking the plan's schedule (pipeline_schedule.h) over the step's
// micro-batches and passing activations and their gradients to the neighbouring ranks.
// Within a stage the chunks may run tensor-parallel (tp, sequence parallelism) and
// context-parallel (cp): the pp group of a rank links the ranks of the same tp and cp
// coordinate, so each sends its own share of the activations.
#pragma once

#include <memory>

#include "cairn/comm/mesh_groups.h"
#include "cairn/core/status.h"
#include "cairn/parallel/context_parallel.h"
#include "cairn/parallel/engine.h"

namespace cairn::parallel {

// What a stage runs over besides pp, set up by parallelize().
struct StageGroups {
  comm::Group* dp = nullptr;  // gradients are averaged over it: the dp group, or dp x cp
  comm::Group* tp = nullptr;  // null at tp 1; the model is sharded over it by the engine
  bool sequence_parallel = false;
  comm::Group* cp = nullptr;  // null at cp 1; the hooks below are installed in the model
  std::shared_ptr<model::ContextParallelHooks> cp_hooks;
  comm::MeshGroups::ContextSplit cp_split;  // owns a 2D split's groups
  std::shared_ptr<ContextCommStats> cp_stats;
};

// `model` is whole or this rank's model_part(), initialized alike on every rank; the engine
// keeps this rank's chunks' parameters (its tp slices of them) and frees any others. DDP or
// ZeRO-1/2 over stage.dp.
Result<std::unique_ptr<Engine>> make_pipeline_engine(std::shared_ptr<model::LanguageModel> model,
                                                     const Plan& plan,
                                                     const comm::MeshGroups& groups,
                                                     DataParallelOptions options,
                                                     StageGroups stage);

}  // namespace cairn::parallel
