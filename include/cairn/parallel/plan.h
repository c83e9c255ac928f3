// Plan: how one model is laid out over the ranks of a job. A plain value with JSON both ways,
// written by the config (parallel.* keys), by a user's plan file or by the planner, checked by
// validate() and carried out by parallelize() (engine.h).
//
// The mesh's axes are pp (pipeline stages), dp (data parallel, with ZeRO), cp (context
// parallel: the sequence split across ranks) and tp (tensor parallel, with Megatron's sequence
// parallelism on the same ranks). `order` lists them outermost first: the innermost axis's
// ranks are consecutive (one node's ranks when its extent fits a node).
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cairn/comm/mesh.h"
#include "cairn/core/status.h"
#include "cairn/model/config.h"

namespace cairn::parallel {

// How attention is split along the sequence when cp > 1.
enum class ContextParallelKind { kNone, kUlysses, kRing, kTwoD };
const char* cp_kind_name(ContextParallelKind k);  // "none" | "ulysses" | "ring" | "2d"
Result<ContextParallelKind> parse_cp_kind(const std::string& s);

// One transformer block's layout.
struct LayerPlan {
  int tp = 1;                      // tensor-parallel degree of the block (divides mesh tp)
  bool sequence_parallel = false;  // norms and residuals on sequence shards of the tp group
  ContextParallelKind cp_kind = ContextParallelKind::kNone;
  bool checkpoint = false;  // activation checkpointing: recompute the block in backward
  bool operator==(const LayerPlan& o) const {
    return tp == o.tp && sequence_parallel == o.sequence_parallel && cp_kind == o.cp_kind &&
           checkpoint == o.checkpoint;
  }
};

enum class PipelineSchedule { kOneFOneB, kGPipe, kInterleaved, kZeroBubbleH1 };
// "1f1b" | "gpipe" | "interleaved" | "zb-h1" (pipeline_schedule.h)
const char* schedule_name(PipelineSchedule s);
Result<PipelineSchedule> parse_schedule(const std::string& s);

struct PipelinePlan {
  // The first block of stages 1 .. pp-1 (increasing, in (0, n_layer)); empty when pp = 1.
  // Stage 0 also holds the embedding, the last stage the final norm, head and loss.
  std::vector<int64_t> cuts;
  PipelineSchedule schedule = PipelineSchedule::kOneFOneB;
  int virtual_stages = 1;  // model chunks per rank (interleaved schedule only)
  bool operator==(const PipelinePlan& o) const {
    return cuts == o.cuts && schedule == o.schedule && virtual_stages == o.virtual_stages;
  }
};

// The tensor-parallel sizes up to `most` that `model` can be split over: the query heads and the
// MLP width divisible, the key/value heads divisible (split) or dividing it (replicated).
std::vector<int> tp_that_fit(const model::ModelConfig& model, int most = 64);

// Why Ulysses attention of degree `ulysses` cannot split `model`'s heads at tensor-parallel
// degree tp ("" when it can), naming the degrees that fit.
std::string ulysses_unfit(const model::ModelConfig& model, int tp, int ulysses);

struct Plan {
  comm::MeshShape mesh;  // extents; their product is the world size
  std::array<comm::Axis, comm::kNumAxes> order = comm::kDefaultOrder;
  int zero_stage = 0;              // over the dp axis: 0 DDP, 1 optimizer state, 2 + gradients,
                                   // 3 + parameters
  int64_t bucket_bytes = 8 << 20;  // gradient all-reduce bucket (zero_stage 0-2)
  std::vector<LayerPlan> layers;   // one per transformer block
  PipelinePlan pipeline;
  // 2D context parallelism: the Ulysses degree inside the cp axis (1 < cp_ulysses < cp, dividing
  // it; the ring runs across cp / cp_ulysses). 0 for the other kinds.
  int cp_ulysses = 0;
  // Ring attention sends the next key/value block while computing this one (false: waits for
  // each transfer at once, the same numbers: to measure what the overlap hides).
  bool cp_overlap = true;

  // The Ulysses degree of a block: cp for ulysses, cp_ulysses for 2d, else 1.
  int ulysses_degree(const LayerPlan& l) const;
  // The ring degree of a block: cp for ring, cp / cp_ulysses for 2d, else 1.
  int ring_degree(const LayerPlan& l) const;

  // Data parallelism over `world` ranks for a model of `n_layer` blocks: what a config without
  // any tp / cp / pp key means.
  static Plan data_parallel(int world, int64_t n_layer, int zero_stage = 0);

  // {"mesh": {"pp": 1, "dp": 2, "cp": 1, "tp": 1, "order": ["pp", "dp", "cp", "tp"]},
  //  "zero_stage": 1, "bucket_mb": 8,
  //  "layers": [{"tp": 1, "sequence_parallel": false, "cp_kind": "none", "checkpoint": false},
  //             ...],
  //  "pipeline": {"cuts": [], "schedule": "1f1b", "virtual_stages": 1}, "cp_ulysses": 0,
  //  "cp_overlap": true}
  // from_json accepts missing keys (their defaults; "layers" missing: each of the model's
  // n_layer blocks gets tp = mesh tp and the top-level "sequence_parallel", "cp_kind" and
  // "checkpoint" if present) and rejects unknown ones, naming the path ("plan.layers[3].tp").
  // It checks types only: validate() checks the layout.
  nlohmann::json to_json() const;
  static Result<Plan> from_json(const nlohmann::json& j, int64_t n_layer);

  // Checks the plan against the model and the world: the mesh's product is world_size, one
  // layer plan per block, each block's tp divides the mesh's tp and the model's head counts
  // and MLP width, sequence parallelism only with tp > 1, a cp kind exactly when cp > 1 (and
  // heads divisible for Ulysses), pipeline cuts increasing inside the model and one fewer than
  // pp, ZeRO-3 not combined with pp, the Ulysses degree dividing each tp rank's query and
  // key/value heads, cp_ulysses exactly for 2d. Errors are kInvalidArgument naming the field and
  // why.
  Status validate(const model::ModelConfig& model, int world_size) const;

  // ZeRO-3 or tp > 1: parallelize() splits the parameters (from whole ones), so the model is
  // initialized before it (a resume cannot skip the initialization).
  bool shards_parameters() const { return zero_stage == 3 || mesh.tp > 1; }
  // Whether data-parallel ranks may train different numbers of micro-batches in a step
  // (dynamic sharding): only when nothing but the step's end communicates (DDP, ZeRO-1).
  bool allows_uneven_micro_batches() const {
    return zero_stage <= 1 && mesh.tp == 1 && mesh.cp == 1 && mesh.pp == 1;
  }

  // "pp=1 dp=2 cp=1 tp=1, ZeRO-1, 4 blocks (2 checkpointed)": for logs.
  std::string summary() const;

  bool operator==(const Plan& o) const {
    return mesh.pp == o.mesh.pp && mesh.dp == o.mesh.dp && mesh.cp == o.mesh.cp &&
           mesh.tp == o.mesh.tp && order == o.order && zero_stage == o.zero_stage &&
           bucket_bytes == o.bucket_bytes && layers == o.layers && pipeline == o.pipeline &&
           cp_ulysses == o.cp_ulysses && cp_overlap == o.cp_overlap;
  }
};

}  // namespace cairn::parallel
