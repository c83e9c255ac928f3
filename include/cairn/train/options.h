// Training options (train.*, data.*, ckpt.* keys) and the spec of a whole job's config.
#pragma once

#include <torch/types.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "cairn/core/config.h"
#include "cairn/core/status.h"
#include "cairn/model/config.h"
#include "cairn/parallel/plan.h"
#include "cairn/train/spec.h"

namespace cairn::train {

struct TrainOptions {
  int64_t micro_batch_size = 8;   // sequences per forward/backward on one rank
  int64_t global_batch_size = 8;  // sequences per optimizer step over the whole job
  int64_t seq_len = 128;
  int64_t max_steps = 1000;
  double lr = 1e-3, min_lr = 1e-4;
  int64_t warmup_steps = 100;
  int64_t lr_decay_steps = 0;  // cosine reaches min_lr here; 0 = max_steps
  double weight_decay = 0.1, beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double grad_clip = 1.0;  // 0 = off
  uint64_t seed = 1337;
  int64_t eval_interval = 100;  // 0 = only at the end
  int64_t eval_batches = 20;
  std::string ckpt_dir;            // empty = <run_dir>/ckpt
  int64_t persist_interval = 0;    // steps between persisted checkpoints; 0 = only at the end
  int64_t memory_interval = 0;     // steps between in-memory checkpoints; 0 = off
  int64_t keep_last = 3;           // checkpoints kept on storage; 0 = all
  int64_t keep_every = 0;          // also keep steps divisible by this; 0 = none
  double persist_timeout_s = 600;  // longest wait for a free slot or a final persist
  double persist_duty = 0.2;       // largest share of time storage writes may take
  bool activation_checkpointing = false;
  int64_t zero_stage = 0;             // parallel.zero_stage
  int64_t bucket_mb = 8;              // parallel.bucket_mb
  int64_t tp = 1;                     // parallel.tp
  int64_t dp = 0;                     // parallel.dp; 0 = the world / (tp x cp)
  std::string order = "pp,dp,cp,tp";  // parallel.order: the mesh's axes, outermost first
  bool sequence_parallel = false;     // parallel.sequence_parallel
  int64_t cp = 1;                     // parallel.cp: context-parallel ranks
  std::string cp_kind = "ring";       // parallel.cp_kind: ulysses | ring | 2d (with cp > 1)
  int64_t cp_ulysses = 0;             // parallel.cp_ulysses (2d); 0 = from cp_ring or inferred
  int64_t cp_ring = 0;                // parallel.cp_ring (2d); 0 = from cp_ulysses or inferred
  bool cp_overlap = true;             // parallel.cp_overlap
  int64_t pp = 1;                     // parallel.pp: pipeline stages
  std::string pp_schedule = "1f1b";   // parallel.pp_schedule: 1f1b | gpipe | interleaved | zb-h1
  std::vector<int64_t> pp_layers;     // parallel.pp_layers: blocks per (virtual) stage; empty =
                                      // balanced by cost
  int64_t pp_virtual = 0;             // parallel.pp_virtual: chunks per rank; 0 = 2 for
                                      // interleaved, else 1
  bool pp_elastic = false;            // parallel.pp_elastic: a world that does not fit pp x cp
                                      // x tp trains at the nearest pp that fits
  std::string plan_path;              // parallel.plan: a JSON plan file, or "auto" (the planner,
                                      // at start); empty = from the keys above
  std::string precision = "fp32";     // fp32 | bf16
  std::string device = "cpu";         // train.device: cpu | cuda | cuda:N (see resolve_device)
  int64_t threads = 0;                // intra-op threads; 0 = torch default
  int64_t log_interval = 10;          // steps between progress lines when not on a terminal
  std::string data_path;              // directory with train.bin / val.bin (cairn data prepare)
  bool log_sample_ids = false;        // samples.jsonl: the sample ids of every step
  std::string sharding = "deterministic";  // or "dynamic": shards from the master's service
  bool stream = false;  // dynamic: train from data.path/train.stream while it grows
  std::string tokenizer = "gpt2";
};

// The device train.device names: "cpu", or "cuda" / "cuda:N", which fail with
// kInvalidArgument when this libtorch has no CUDA (or sees no GPU, or not that many). On a GPU
// the model, its buckets, optimizer state and batches live there, collectives of its tensors
// go over NCCL when libtorch has it, and checkpoints are copied to the host by the save's
// thread. That path is not tested: no GPU was available.
Result<torch::Device> resolve_device(const std::string& spec);

// Reads and cross-checks the options (e.g. global batch divisible by micro batch).
Result<TrainOptions> train_options_from(const core::Config& config);

// parallel.order's text ("pp,dp,cp,tp": four distinct axes, outermost first) as a mesh order.
Result<std::array<comm::Axis, comm::kNumAxes>> parse_mesh_order(const std::string& text);

// The job's parallel plan over `world` ranks: the file parallel.plan when set (then the other
// parallel.* keys and train.activation_checkpointing must be left at their defaults: the plan
// says it), else the layout those keys give (dp x tp, ZeRO over dp, the mesh's order).
// Validated against the model; errors name the key or the plan's field.
Result<parallel::Plan> plan_from(const TrainOptions& options, const model::ModelConfig& model,
                                 int world);

// The checks plan_from makes of every plan against the job: the plan is valid for the model
// and world, the step's micro-batches fit its pipeline schedule, train.seq_len fits its cp.
Status plan_fits_job(const TrainOptions& options, const model::ModelConfig& model, int world,
                     const parallel::Plan& plan);

// When `source` (a plan file, the planner) gives the layout, the keys that would also give it
// (parallel.* but parallel.bucket_mb, train.activation_checkpointing) are at their defaults.
Status layout_keys_unset(const TrainOptions& options, const std::string& source);

}  // namespace cairn::train
