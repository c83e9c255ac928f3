// Engine: what a training step needs from parallelism and the optimizer, and parallelize(),
// which builds one from a model, a Plan and the mesh's process groups. The trainer sees only
// this interface: how parameters, gradients and optimizer state are laid out (replicated,
// ZeRO-sharded, and with the model-parallel issues split by tensor, context or pipeline) is
// the engine's business.
//
// Every method marked collective must be called by all ranks of the job in the same order.
#pragma once

#include <torch/types.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cairn/core/status.h"
#include "cairn/parallel/data_parallel.h"
#include "cairn/parallel/plan.h"

namespace cairn::model {
class LanguageModel;
struct ModelPart;
}  // namespace cairn::model
namespace cairn::comm {
class MeshGroups;
}

namespace cairn::parallel {

// One piece of a checkpoint's tensor `name`: `tensor` is its [begin, end) `slice` in every
// dimension of the global `shape`.
struct StatePiece {
  std::string name;
  torch::Tensor tensor;
  std::vector<int64_t> shape;
  std::vector<std::pair<int64_t, int64_t>> slice;
};

class Engine {
 public:
  using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;
  // A rank's share of a checkpoint: whole tensors that every rank holds alike (the caller
  // spreads their writing over the ranks), and pieces only this rank writes. Over all ranks
  // every element of every tensor is in exactly one of them. Tensors may be views of the live
  // state: copy them before the next step().
  struct CheckpointShare {
    NamedTensors replicated;
    std::vector<StatePiece> owned;
  };
  virtual ~Engine() = default;

  virtual void zero_grad() = 0;
  // Loss of one micro-batch with a graph for backward; `last` marks the step's last one.
  virtual torch::Tensor loss(const torch::Tensor& x, const torch::Tensor& y, bool last) = 0;
  // Loss without a graph (validation). Collective for ZeRO-3.
  virtual torch::Tensor eval_loss(const torch::Tensor& x, const torch::Tensor& y) = 0;
  // Overrides the `last` given to loss() before that micro-batch's backward (whether it syncs
  // gradients); false when the engine cannot (ZeRO-3 decides in its forward).
  virtual bool set_last(bool last) { return false; }
  // One micro-batch of a step: tokens, targets, and the factor its loss is multiplied by in the
  // step's gradient (e.g. 1 / the step's micro-batches).
  struct MicroBatchInput {
    torch::Tensor x, y;
    double weight = 1;
  };
  // Forward and backward of a step's micro-batches (before finish_backward); returns each one's
  // loss, the same on every rank of a model replica. The default runs them one after the
  // other: loss(), then backward of loss x weight, the last one syncing gradients. A pipeline
  // interleaves them as its schedule says.
  virtual std::vector<double> forward_backward(const std::vector<MicroBatchInput>& micro_batches);
  // Whether the engine trains only whole steps (forward_backward): loss() is then refused, so
  // that the caller cannot run micro-batches one at a time.
  virtual bool needs_whole_steps() const { return false; }
  virtual void finish_backward() = 0;  // collective
  // Multiplies the step's gradients by `factor` (after finish_backward, before clipping): a step
  // that trained fewer micro-batches than its weights assumed (dynamic sharding at the end of
  // the data). Engines that cannot train such steps refuse with kUnsupported.
  virtual Status scale_gradients(double factor) {
    return Status::Unsupported("this layout does not scale a step's gradients");
  }
  virtual double clip_grad_norm(double max_norm) = 0;  // collective
  virtual void step(double lr) = 0;                    // collective
  virtual int64_t step_count() const = 0;
  // Whole parameters and optimizer state by name, for a checkpoint (collective).
  virtual NamedTensors gather_params() = 0;
  virtual NamedTensors gather_optimizer_state() = 0;
  // This rank's share of parameters ("<model_prefix><param>") and optimizer state
  // ("<optim_prefix><param>.exp_avg", ...) for a checkpoint (collective). The default is every
  // tensor whole on every rank (gather_params, gather_optimizer_state); a layout that splits
  // tensors over ranks writes its slices instead, so that no rank holds the whole model.
  virtual CheckpointShare checkpoint_share(const std::string& model_prefix,
                                           const std::string& optim_prefix);
  // Whether checkpoint_share gives pieces (CheckpointShare::owned) on any rank: the same on
  // every rank, so that callers skip gathering a table of pieces when there are none.
  virtual bool shares_pieces() const { return false; }
  // Restores from whole tensors "<model_prefix><param>" and "<optim_prefix><param>.exp_avg"...;
  // checks everything first and changes nothing on error.
  virtual Status load(const std::map<std::string, torch::Tensor>& tensors,
                      const std::string& model_prefix, const std::string& optim_prefix,
                      int64_t step_count) = 0;
  virtual MemoryReport memory_report() const = 0;
  // Counters of this rank's work since the last call, for the step's metrics row (e.g.
  // "cp_comm_s": seconds blocked on context-parallel communication); resets them.
  virtual std::vector<std::pair<std::string, double>> take_step_stats() { return {}; }
};

// Lays `model` out as `plan` says over `groups` (built from the plan's mesh; collective over
// the job) and returns the engine that trains it with AdamW (`adam`). Applies the plan's
// per-block activation checkpointing to the model. Checks plan.validate() against the model
// and that the groups' mesh is the plan's. Layouts this version cannot carry out yet (per-block
// tp or cp kinds) are kUnsupported, naming what. The model is whole, or under pp > 1 built
// with this rank's model_part().
Result<std::unique_ptr<Engine>> parallelize(std::shared_ptr<model::LanguageModel> model,
                                            const Plan& plan, const comm::MeshGroups& groups,
                                            AdamHyper adam);

// The part of the model the ranks at pipeline coordinate `pp_rank` train under `plan` (the
// whole model at pp 1): their chunks' blocks, the embedding on the first stage, the final norm
// and head on the last (and GPT-2's tied table there too). Built with it
// (model::build_model(config, seed, part)), a rank never holds another stage's parameters.
model::ModelPart model_part(const Plan& plan, int64_t n_layer, int pp_rank);

}  // namespace cairn::parallel
