// The single-process trainer: data, model, AdamW, schedule, clipping, accumulation,
// validation, checkpoints, metrics and progress. Later layers (DDP, ZeRO, ...) wrap the same
// loop; the loop itself knows nothing of parallelism.
#pragma once

#include <torch/types.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cairn/core/config.h"
#include "cairn/core/status.h"

namespace cairn::model {
class LanguageModel;
}
namespace cairn::comm {
class Group;
}

namespace cairn::train {

struct RunOptions {
  std::string run_dir;                      // required: logs, config.yaml, ckpt/
  bool resume = false;                      // continue from the newest checkpoint: in shared
                                            // memory or on storage (ckpt.dir); NotFound when
                                            // there is none (and Corrupt when every
                                            // checkpoint on storage is broken)
  bool start_if_nothing = false;            // with resume: start at step 0 when there is no
                                            // checkpoint at all (broken ones still fail)
  int64_t stop_after = 0;                   // > 0: return after this step (schedule unchanged)
  const std::atomic<bool>* stop = nullptr;  // set => save a checkpoint and return
  bool progress = true;                     // print the progress line
  bool reuse_peak = false;                  // take the peak an earlier start of this run
                                            // measured at the same world size (restarts)
  comm::Group* group = nullptr;             // data-parallel group (outlives the trainer);
                                            // null = one process
  bool agent_persists = false;              // the agent (cairn run) persists this rank's
                                            // slots; false = a thread of this process does
  bool report_progress = false;             // publish each finished step for the agent's
                                            // hang detector (elastic::ProgressWriter)
  int local_ranks = 1;                      // ranks of this job on this machine (they share
                                            // its memory: checked at start)
  bool keep_slots = false;                  // leave the in-memory slots behind when the
                                            // trainer ends before max_steps (for a restart;
                                            // the agent removes them at the end of the job)
  std::string plan_cache_dir;               // parallel.plan=auto: hardware profiles (empty:
                                            // default_cache_dir())

  // Knobs for tests and benchmarks only: a real run leaves them at their defaults (the
  // command line sets none but --debug-slowdown, whose purpose is a test's straggler).
  struct Testing {
    bool measure_peak = true;      // measure the GEMM peak for MFU (unit tests skip its 0.5 s)
    bool read_peer_slots = true;   // restoring from memory, map the slots of ranks on this
                                   // machine; false: broadcast them as across machines
    int debug_slowdown_rank = -1;  // this rank's micro-batches take
    double debug_slowdown = 1;     // this many times as long (it sleeps the rest)
    double slow_storage_s = 0;     // > 0: the trainer's own persister takes this much longer
                                   // a part, at normal priority (a busy machine cannot starve it)
  } testing;
};

struct RunSummary {
  int64_t first_step = 0;  // step the run started from (> 0 when resumed)
  int64_t last_step = 0;   // steps done when it returned
  bool interrupted = false;
  double final_loss = 0;       // meaningful when last_step > first_step
  double final_val_loss = -1;  // < 0 when never evaluated
  int64_t saved_step = -1;     // newest checkpoint on storage when it returned, -1 for none
  double tokens_per_s = 0;     // mean over the run
  std::string ckpt_dir;        // where the checkpoints are (ckpt.dir, absolute)
  std::vector<double> losses;  // training loss per step of this run
};

class Trainer {
 public:
  // Validates the config, opens the data, builds the model and optimizer, restores the
  // newest checkpoint when run.resume. Errors name what is wrong.
  static Result<std::unique_ptr<Trainer>> Create(const core::Config& config, RunOptions run);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Trains to max_steps (or until *stop), checkpointing and evaluating on schedule.
  Result<RunSummary> run();
  // Mean validation loss over train.eval_batches micro-batches of val.bin.
  double evaluate();

  // The model. With ZeRO-3 its parameters are empty between uses: read them through
  // gather_parameters().
  model::LanguageModel& model();
  // Whole parameters by name, copied (collective over the data-parallel group).
  std::map<std::string, torch::Tensor> gather_parameters();
  int64_t step() const;

  struct Impl;

 private:
  explicit Trainer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cairn::train
