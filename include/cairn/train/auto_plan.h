// parallel.plan=auto: the planner (cairn/planner/planner.h) picks a job's layout when it starts,
// for the world it starts with, from this machine's profile.
//
//   rank 0: profile cache (CACHE_DIR/hw-HOST-Nranks.json, written by the first auto start or
//           `cairn plan profile-hw`) ── missing ──▶ profile_hardware(N local ranks), cached;
//           the model's parts timed likewise (CACHE_DIR/model-ARCH-d..-HOST-Nranks.json,
//           profile_model), so that compute comes from measured times
//        │  the cluster: ceil(world / N) nodes of N devices, the profile's links and peak
//        ▼
//   search(model, train.seq_len, train.global_batch_size, world, train.micro_batch_size fixed)
//        │  the fastest plan that fits the profile's memory per rank, checked against the job
//        ▼
//   broadcast to every rank (one decision, whatever each rank's clock or cache)
//
// An elastic restart at another world plans again (milliseconds with the profile cached); the
// trainer records the previous and the new plan in events.jsonl ("plan"), and then how the
// plan's predictions held in the steps that followed ("plan_check": check_plan).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cairn/core/status.h"
#include "cairn/model/config.h"
#include "cairn/parallel/plan.h"
#include "cairn/train/options.h"

namespace cairn::comm {
class Group;
}

namespace cairn::train {

struct AutoPlanOptions {
  std::string cache_dir;          // where hardware profiles are kept (default_cache_dir())
  int local_ranks = 1;            // ranks of the job on this machine (the profile's devices)
  double profile_seconds = 0.25;  // about how long each profiled measurement repeats
  std::string picture_path;       // non-empty: rank 0 writes the plan's picture (SVG) here
};

struct AutoPlan {
  parallel::Plan plan;
  double step_s = 0;               // predicted seconds per step
  double memory_bytes = 0;         // predicted peak per rank
  std::string bottleneck;          // the cost term that decided
  int64_t evaluated = 0;           // layouts costed
  double search_s = 0;             // the search alone
  double profile_s = 0;            // > 0: the machine or the model was profiled now (not cached)
  std::string profile_path;        // the machine's profile (a cluster file)
  std::string model_profile_path;  // the model's (cairn plan profile-model's format)
  nlohmann::json to_json() const;  // for events.jsonl
};

// A plan's predictions against the start that trains it: the median step time after the
// start's first kPlanCheckWarmup steps (building, pages touched the first time and the
// allocator's growth are not a step's) and the fullest rank's peak resident memory (the
// kernel's high-water mark, what the planner budgets). Errors as the planner's bench gives
// them: predicted / measured - 1, so a negative memory error is an under-prediction.
struct PlanCheck {
  int64_t first_step = 0, last_step = 0;  // the steps timed (1-based, as metrics.jsonl's)
  double step_s = 0, predicted_step_s = 0;
  double memory_bytes = 0, predicted_memory_bytes = 0;
  double step_error() const { return predicted_step_s / step_s - 1; }
  double memory_error() const { return predicted_memory_bytes / memory_bytes - 1; }
  nlohmann::json to_json() const;  // for events.jsonl
};
inline constexpr int kPlanCheckWarmup = 3;
inline constexpr int kPlanCheckSteps = 20;  // timed steps a check waits for
inline constexpr int kPlanCheckLeast = 3;   // ... or, at a start's last step, at least these

// `plan` checked against this start's step times so far (`step_s`, the first of them step
// `first_step`) and the fullest rank's peak so far: nullopt until kPlanCheckSteps steps are
// timed after the warmup (or kPlanCheckLeast at the start's `last` step), and for a plan
// without predictions (one rank).
std::optional<PlanCheck> check_plan(const AutoPlan& plan, const std::vector<double>& step_s,
                                    int64_t first_step, double peak_bytes, bool last);

// $CAIRN_CACHE_DIR, else $XDG_CACHE_HOME/cairn, else $HOME/.cache/cairn, else /tmp/cairn-cache.
std::string default_cache_dir();

// The profile's file for `local_ranks` ranks on this host, in `cache_dir`.
std::string profile_cache_path(const std::string& cache_dir, int local_ranks);

// The plan for the job of `options` over `group` (null: one process, trained as one rank).
// Collective over the group: every rank returns the same plan, or the same error (e.g.
// NotFound when no layout fits the memory, naming the least any needs).
Result<AutoPlan> auto_plan(const TrainOptions& options, const model::ModelConfig& model,
                           comm::Group* group, const AutoPlanOptions& auto_options);

}  // namespace cairn::train
