// The cost model's inside, shared by estimate() and the search: the model's shape computed once
// per workload (parameters per tp degree, cuts per stage count, schedule simulations), and a
// layout as the search enumerates it (no per-block Plan until a candidate is kept).
#pragma once

#include <map>
#include <tuple>
#include <vector>

#include "cairn/model/param_specs.h"
#include "cairn/parallel/pipeline_schedule.h"
#include "cairn/planner/planner.h"

namespace cairn::planner {

class ModelShape {
 public:
  explicit ModelShape(const Workload& w);

  // Parameters one tp rank holds: of one block, of the first stage's extras (embeddings), of
  // the last stage's (final norm, head; GPT-2's tied table again).
  struct Held {
    double block = 0, first = 0, last = 0;
    double tied = 0;  // of `last`, the copy of the first stage's table (GPT-2's tied head)
  };
  const Held& params(int tp);
  // balanced_cuts of the blocks into `chunks` virtual stages.
  const std::vector<int64_t>& cuts(int chunks);
  // A schedule's simulation: per stage, the most micro-batch chunks in flight, and the idle
  // time per unit of busy time (the bubble) of a balanced pipeline.
  struct Pipe {
    std::vector<int> in_flight;
    double idle_per_busy = 0;
  };
  const Pipe& pipe(parallel::PipelineSchedule kind, int pp, int m, int v);
  struct Simulated {
    double idle = 0;
    std::vector<int> in_flight;
  };

  const Workload& workload() const { return w_; }
  const parallel::StageCosts& costs() const { return costs_; }

 private:
  double held(const model::ParamSpec& s, int tp) const;

  Workload w_;
  std::vector<model::ParamSpec> specs_;
  parallel::StageCosts costs_;
  std::map<int, Held> held_;
  std::map<int, std::vector<int64_t>> cuts_;
  std::map<std::tuple<int, int, int, int>, Pipe> pipes_;
  std::map<std::tuple<int, int, int, int>, Simulated> simulated_;  // at m <= 2 pp
};

// A schedule of m micro-batches simulated: its idle time (in units of a forward) and most in
// flight per stage.
ModelShape::Simulated simulate_pipe(parallel::PipelineSchedule kind, int pp, int m, int v);

struct Layout {
  int pp = 1, dp = 1, cp = 1, tp = 1, v = 1, zero = 0;
  bool sp = false;
  parallel::ContextParallelKind cp_kind = parallel::ContextParallelKind::kNone;
  parallel::PipelineSchedule schedule = parallel::PipelineSchedule::kOneFOneB;
  int64_t micro_batch = 1, micro_batches = 1;
  const std::vector<int>* checkpointed = nullptr;  // per pp rank: blocks checkpointed
};

// The cost of `l`. With `checkpointed`, chooses per pp rank the fewest checkpointed blocks
// that fit `budget` bytes (all of them when none fits: the caller compares the memory with the
// budget) and writes them there; without, takes l.checkpointed (none when null).
// With `stages`, each pp rank's own cost is appended there (tokens_per_s left 0).
Cost estimate_layout(ModelShape& shape, const Cluster& cluster, const Layout& l,
                     std::vector<int>* checkpointed, double budget,
                     std::vector<Cost>* stages = nullptr);

}  // namespace cairn::planner
