// Trainer::Impl: the trainer's state, shared by the loop (trainer.cpp) and its checkpoints
// (trainer_ckpt.cpp). Private to the train module.
#pragma once

#include <torch/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cairn/ckpt/checkpoint.h"
#include "cairn/ckpt/persist.h"
#include "cairn/comm/mesh_groups.h"
#include "cairn/core/config.h"
#include "cairn/data/local_sampler.h"
#include "cairn/data/token_file.h"
#include "cairn/data/token_stream.h"
#include "cairn/elastic/flash_slots.h"
#include "cairn/elastic/progress.h"
#include "cairn/model/config.h"
#include "cairn/parallel/engine.h"
#include "cairn/train/auto_plan.h"
#include "cairn/train/options.h"
#include "cairn/train/run_log.h"
#include "cairn/train/trainer.h"
#include "train/dynamic_data_impl.h"
#include "train/flash_impl.h"
#include "train/persist_pacer_impl.h"

namespace cairn::train {

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

inline constexpr char kModelPrefix[] = "model.";
inline constexpr char kOptimPrefix[] = "optim.";
inline constexpr char kRngName[] = "rng.cpu";

class MicroBatchSource;
struct StepRecord;
class StepMetrics;

struct Trainer::Impl {
  core::Config config;
  TrainOptions opt;
  model::ModelConfig mcfg;
  RunOptions run;
  std::unique_ptr<data::TokenFile> train_file, val_file;
  std::unique_ptr<data::LocalSampler> sampler, val_sampler;  // sampler: null with data.stream
  std::unique_ptr<data::TokenStream> stream;                 // data.stream: train.stream
  std::shared_ptr<model::LanguageModel> model;
  double grad_norm = 0;  // the last step's global gradient norm, before clipping
  // The last step's seconds in this rank's forward and backward passes (a rank that waits less
  // than the others for their collectives is the one the others wait for).
  double compute_s = 0;
  parallel::Plan plan;
  std::optional<AutoPlan> auto_plan;         // parallel.plan=auto: the planner's choice
  std::unique_ptr<comm::MeshGroups> groups;  // the plan's process groups
  std::unique_ptr<parallel::Engine> engine;
  std::unique_ptr<FlashSlots> flash;
  std::vector<std::unique_ptr<FlashSlots>> peer_slots;  // other local ranks' slots, while restoring
  std::unique_ptr<elastic::ProgressWriter> progress;    // read by the agent's hang detector
  // This rank's persister when no agent persists for it (plain `cairn train`).
  std::unique_ptr<ckpt::SlotPersister> persister;
  int64_t skipped_saves = 0;       // memory saves skipped because no slot was free
  int64_t slow_storage_waits = 0;  // persisted saves that waited for a slot
  // An interval persist was deferred (the previous one still being written, or within
  // ckpt.persist_duty of it): the first save after it may start is persisted instead.
  bool persist_owed = false;
  int64_t owed_step = -1;  // the newest step whose interval persist was deferred
  int64_t deferred_persists = 0;
  std::optional<PersistPacer> pacer;  // ckpt.persist_duty
  bool direct_persist = false;        // /dev/shm too small: storage checkpoints written directly
  int64_t num_params = 0;
  // Building the model and its engine, and initializing it when nothing was restored.
  double build_s = 0;
  comm::Group* group = nullptr;  // every rank of the job; null in one process
  int world = 1, rank = 0;
  torch::Device device = torch::kCPU;  // train.device: the model, its state and the batches
  // The data-parallel coordinates (the mesh's dp axis): ranks that differ only along the
  // model-parallel axes train the same micro-batches. World and rank without model parallelism.
  int data_world = 1, data_rank = 0;
  std::unique_ptr<RunLog> log;
  void record_auto_plan();  // events.jsonl "plan": the previous auto plan of the run and this one
  // events.jsonl "plan_check" (check_plan), once a start: this start's step times so far and
  // the fullest rank's peak before the start's first checkpoint (`saves`: this step's is
  // next), whose copy in shared memory is host memory the planner does not budget.
  void check_auto_plan(double step_s, double peak_mb, bool last, bool saves);
  std::vector<double> plan_step_s;
  double plan_peak_mb = 0;
  bool plan_peak_done = false, plan_checked = false;
  int64_t step = 0;
  int64_t max_steps = 0;
  double peak_flops = 0;

  std::string ckpt_dir;                  // absolute
  std::unique_ptr<DynamicData> dynamic;  // data.sharding: dynamic
  nlohmann::json shards_state;           // the shard service as of the checkpoint being taken
  nlohmann::json restored_shards;        // ... as of the checkpoint restored (null: none)
  bool restored = false;                 // a checkpoint was loaded
  bool restored_from_memory = false;     // ... from the shared-memory slots

  // Slots nobody else will remove go with the trainer, whichever way it ends short of a
  // crash (under `cairn run` the agent removes them when the job ends).
  ~Impl() {
    if (flash && flash->pending()) (void)flash->finish();
    release_slots("exit");
  }
  // Stops this process's persister and, unless the agent keeps them, removes this rank's
  // slots: first persisting the newest step they hold that storage lacks (a slot whose
  // content could not be persisted is kept, for `cairn ckpt gc` or a later --resume).
  void release_slots(const char* reason);
  // Micro-batches of a global batch, and how many each rank runs per step: micro-batch j goes
  // to rank j % world; when the world does not divide them, the ranks left short run a
  // zero-weight micro-batch instead, so that every rank takes part in every collective.
  int64_t num_micro() const { return opt.global_batch_size / opt.micro_batch_size; }
  int64_t accum_steps() const { return (num_micro() + data_world - 1) / data_world; }
  bool even_split() const { return num_micro() % data_world == 0; }

  // A memory save whose copy overlaps the next step's forward and backward.
  struct PendingSave {
    int64_t step = 0;
    double blocked_s = 0;  // time the loop was held so far
    double waited_s = 0;   // of which waiting for a slot to come free
    bool persist = false;
    const char* reason = "";
  };
  std::optional<PendingSave> pending_save;

  std::vector<int64_t> consumed;  // data.log_sample_ids: sample ids this rank trained this step
  // Collective: every rank's `consumed` of this step in the global order (then cleared).
  std::vector<int64_t> gather_consumed();
  // Sum of `v` over ranks (v itself in one process).
  double sum_over_ranks(double v);
  // Element-wise sums over every rank, in one all-reduce.
  std::vector<double> sum_over_ranks(std::vector<double> v);
  // Collective for interval persists and memory saves (one all-reduce, on every rank alike):
  // defers an interval persist or pays a deferred one (changing *persist and *reason), and
  // returns false when the save is to be skipped. `now`: steady seconds; the pacer observed.
  bool pace_save(bool* persist, const char** reason, double now);
  // Whether this rank's storage holds a new persist back at `now`: its slots still being
  // prepared (`preparing`), or the pacer asks to wait; never for a persist in flight past
  // ckpt.persist_timeout (that one is not waited around). Local; callers sum it over ranks.
  bool storage_holds(double now, bool preparing) const;
  // After a step that saves nothing: the pacer sees how the persist in flight is doing, and with
  // no memory saves between persist intervals an owed persist is paid from the slot of its step.
  Status between_saves();
  // Starts preparing this rank's in-memory slots for the state's size (FlashSlots::prepare).
  void prepare_slots();
  // Sum of `v` over the data-parallel ranks of this rank's coordinates along the other axes
  // (their ranks hold the same value). REQUIRES: build_engine() made the groups.
  double sum_over_data(double v);
  comm::Group* data_group() const { return groups ? groups->get(comm::Axis::kData) : nullptr; }
  // Inputs and targets (B, T) for micro-batch `micro` of global step `s`.
  // REQUIRES: micro * data_world + data_rank < num_micro(). `record`: add its ids to
  // `consumed`.
  std::pair<torch::Tensor, torch::Tensor> batch(int64_t s, int64_t micro, bool record = true);
  // Dynamic sharding: the micro-batch of one shard (consecutive sample ids).
  std::pair<torch::Tensor, torch::Tensor> shard_batch(const elastic::Shard& shard);
  // Collective: micro-batches per rank and every rank's sample ids of this step.
  Result<std::pair<std::vector<int64_t>, std::vector<int64_t>>> gather_trained(
      const std::vector<elastic::Shard>& shards);
  // Collective: this rank's share of the state (the engine's, and the RNG state, whole).
  parallel::Engine::CheckpointShare state_share();
  nlohmann::json state_json(const char* reason);
  ckpt::PersistTarget persist_target() const;
  // Collective. Spreads the state over the ranks so that each copies and persists about
  // 1/world of it: each rank keeps the pieces only it holds, and the whole tensors every rank
  // holds go, largest first, to the least loaded rank (deterministic, counting the pieces).
  // Returns this rank's tensors (a piece under the key "<name>@<slice>") and the table every
  // rank needs to put the state back together: one entry per tensor or piece, {"key", "name",
  // "dtype", "shape" (global), "rank", and for a piece "slice"}.
  std::pair<std::vector<ckpt::NamedTensor>, nlohmann::json> partition(
      parallel::Engine::CheckpointShare share);
  // Collective: a checkpoint of the current step. Every rank copies its part of the state
  // into a shared-memory slot; with `persist` the slot is then handed to the persister (the
  // agent's, or this process's), which writes it to storage in the background. The copy runs
  // on a background thread while training goes on (`overlap`) until finish_checkpoint(),
  // which the loop calls before the next optimizer step changes the state.
  Status checkpoint(bool persist, const char* reason, bool overlap);
  // Waits for the copy of a pending memory save and records it; the event's duration_ms is
  // the time training was held by it.
  Status finish_checkpoint();
  // Collective: waits until the checkpoint of the current step is committed on storage.
  Status wait_persisted();
  // Collective, for assemble: maps the slots of the ranks on this machine that hold `step`
  // into `local`; true for each owner every rank can read so (no broadcast needed).
  std::vector<bool> map_peer_slots(int64_t step, std::map<int, ckpt::ShmSnapshot>* local);
  // Collective: puts the whole state back together from every rank's part of the partition
  // `table` (each rank broadcasts its tensors as one flat byte buffer; pieces are copied into
  // their slices). Corrupt when a tensor is missing or its pieces do not cover it.
  Result<std::map<std::string, torch::Tensor>> assemble(std::map<std::string, torch::Tensor> mine,
                                                        const nlohmann::json& table, int64_t step);
  // Restores model, optimizer, RNG and position; checks everything before changing anything.
  Status restore(const ckpt::LoadedCheckpoint& c);
  // Collective. Restores from the ranks' shared-memory slots: the newest step that every rank
  // holds complete (a rank killed during a save still holds the previous one), unless storage
  // holds a newer checkpoint; returns whether it did.
  Result<bool> restore_from_memory();
  // Mean validation loss; samples are split over ranks and the sums combined (collective).
  double evaluate();

  // Create's parts (trainer.cpp), in order. Token files or the stream, samplers, the RNG's
  // seed, dynamic sharding's client.
  Status open_data();
  // The memory check, the model, the plan's process groups and the engine.
  Status build_engine();
  // events.jsonl, config.yaml, the checkpoint directory, the flash slots, the progress report
  // and (without an agent) the persister.
  Status open_run_files();
  // --resume: from shared memory or storage; else (or with nothing to resume and
  // --resume-or-start) the model's initialization; the shard service's position.
  Status resume_or_init();
  // Collective: the job's GEMM peak for MFU (an earlier start's, on a restart at the same
  // world size).
  void measure_peak();
  bool defer_init = false;  // the model was built uninitialized for a resume to fill

  // The loop's parts (trainer.cpp). The `start` event and log lines; the step metrics.
  StepMetrics log_start();
  // Collective: whether any rank was asked to stop (Ctrl-C, SIGTERM) before this step.
  bool agree_to_stop();
  // One optimizer step: every micro-batch `source` gives this rank, the gradients' sync,
  // clipping and the update; the job's mean loss, or nullopt when the data is used up.
  Result<std::optional<double>> train_step(MicroBatchSource& source, double lr, StepRecord* record);
  // After step `step`: metrics, evaluation, progress, interval checkpoints.
  Status after_step(double loss, double lr, double step_time, const StepRecord& record,
                    int64_t stop_at, StepMetrics& metrics, RunSummary* sum);
  // The end of this invocation: the final checkpoint, the slots, the `end` event.
  Status finish_run(RunSummary* sum, int64_t stop_at, bool data_over, double wall);
};

}  // namespace cairn::train
