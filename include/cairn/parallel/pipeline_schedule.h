// Pipeline schedules as data: for every stage (pipeline rank) the ordered list of compute
// actions it runs in one optimizer step, and a simulator that executes all stages' lists
// together under unit costs. The pipeline engine walks these lists; the simulator is what the
// tests and the planner reason with (deadlock, order, in-flight activations, bubble).
//
// Stages and chunks: with v virtual stages per rank (interleaved), rank s holds model chunks
// c = 0 .. v-1, and chunk c of rank s is virtual stage c * pp + s of pp * v in the model's order.
// Dependencies (all communication between virtual stages goes to the neighbouring rank):
//   forward  (m, vs)  needs forward (m, vs - 1)                     (its input activation)
//   backward (m, vs)  needs forward (m, vs) and backward (m, vs + 1) (its output gradient)
//   weight   (m, vs)  needs backward (m, vs)                        (zero-bubble only)
// where backward is the input-gradient pass when a schedule splits it (kBackwardInput), the
// whole backward otherwise.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cairn/core/status.h"
#include "cairn/model/config.h"
#include "cairn/parallel/plan.h"

namespace cairn::parallel {

enum class PipeOp {
  kForward,
  kBackward,       // input and weight gradients together
  kBackwardInput,  // zero-bubble: the input gradient (what the previous stage waits for)
  kBackwardWeight  // zero-bubble: the weight gradient, free to fill a bubble
};
const char* pipe_op_name(PipeOp op);  // "F" | "B" | "BI" | "W"

struct PipeAction {
  PipeOp op;
  int micro;      // micro-batch, 0 .. micro_batches - 1
  int chunk = 0;  // model chunk on this rank, 0 .. virtual_stages - 1
  bool operator==(const PipeAction& o) const {
    return op == o.op && micro == o.micro && chunk == o.chunk;
  }
};

struct ScheduleShape {
  PipelineSchedule kind = PipelineSchedule::kOneFOneB;
  int stages = 1;          // pp
  int micro_batches = 1;   // per optimizer step, per pipeline (global batch / (micro x dp))
  int virtual_stages = 1;  // chunks per rank: > 1 only for kInterleaved
};

// Why the shape cannot be scheduled ("" when it can): stages and micro-batches at least 1,
// virtual stages > 1 only (and then required) for interleaved, whose micro-batches must be a
// multiple of the stages.
std::string schedule_unfit(const ScheduleShape& shape);

// Every stage's actions, in order. REQUIRES: schedule_unfit(shape) is "".
//   gpipe        all forwards, then all backwards: m micro-batches' activations in flight.
//   1f1b         stage s runs pp - s - 1 forwards, then alternates one forward and one
//                backward, then the remaining backwards: at most pp - s in flight.
//   interleaved  1f1b over v chunks per rank (Megatron's order: groups of pp micro-batches
//                per chunk), a bubble v times smaller for more in flight.
//   zb-h1        1f1b with the backward split in two: input gradients where 1f1b has its
//                backwards (so gradients travel back at the cost of that pass alone), weight
//                gradients held back by s passes on stage s and run at the end (the same
//                activations in flight as 1f1b; the bubble of the formula when m >= pp).
std::vector<std::vector<PipeAction>> pipeline_schedule(const ScheduleShape& shape);

// Unit costs of the simulation; a whole backward costs backward_input + backward_weight.
struct ScheduleCosts {
  int64_t forward = 1, backward_input = 1, backward_weight = 1;
};

struct ScheduleRun {
  int64_t makespan = 0;             // time until the last stage's last action ends
  std::vector<int64_t> busy;        // per stage: time spent computing
  std::vector<int> peak_in_flight;  // per stage: most micro-batch chunks forwarded whose
                                    // (input) backward had not run yet
  // Idle time over all stages / (stages x makespan).
  double bubble() const;
};

// Runs `programs` (one list per stage) together: each action starts when its stage is free
// and its dependencies have ended (communication free). Errors name the problem: an action
// twice or missing (every micro-batch's forward and backward on every chunk exactly once,
// weight passes exactly with split backwards), a backward before its forward on the same stage,
// or a deadlock (no stage's next action can ever start), naming the stuck actions.
Result<ScheduleRun> simulate_schedule(const ScheduleShape& shape,
                                      const std::vector<std::vector<PipeAction>>& programs,
                                      const ScheduleCosts& costs = {});

// The bubble fraction a schedule's formula predicts for forward = backward_input =
// backward_weight: gpipe and 1f1b (p - 1) / (m + p - 1), interleaved (p - 1) / (v m + p - 1),
// zb-h1 (p - 1) / (3 m + p - 1) (a third of 1f1b's idle time).
double schedule_bubble_formula(const ScheduleShape& shape);

// --- stage cuts ------------------------------------------------------------------------------

// What the parts of a model cost, forward + backward per token (flops_per_token's convention:
// 6 FLOPs per weight of a matrix product, 12 T C for a block's attention scores): the
// embedding (a lookup: counted as 6 C, next to nothing), one block, and the final norm + head
// + loss (6 V C, the whole vocabulary's logits; see stage_costs in the .cpp for why not 8).
struct StageCosts {
  double embedding = 0, block = 0, head = 0;
};
StageCosts stage_costs(const model::ModelConfig& model, int64_t seq_len);

// The cut of n_blocks blocks into `stages` stages in model order (the plan's cuts: the first
// block of stages 1 .. stages-1) whose costliest stage, counting the embedding on the first and
// the head on the last, is the cheapest possible. Every stage holds at least one block except
// the first and the last, which may hold none (the embedding or the head alone, when a large
// vocabulary's head costs as much as several blocks). Of the cuts as good, the most even (the
// least sum of squared stage costs), and of those the one with blocks as late as possible (the
// first stages keep the most activations in flight under 1F1B).
// REQUIRES: 1 <= stages <= n_blocks + 2.
std::vector<int64_t> balanced_cuts(int64_t n_blocks, int stages, const StageCosts& costs);

// Blocks per stage, the form parallel.pp_layers takes, from cuts: {3, 7, 11} of 13 blocks ->
// {3, 4, 4, 2}; and back (the list's sum must be n_blocks, checked by Plan::validate).
std::vector<int64_t> blocks_per_stage(const std::vector<int64_t>& cuts, int64_t n_blocks);
std::vector<int64_t> cuts_from_blocks(const std::vector<int64_t>& blocks_per_stage);

}  // namespace cairn::parallel
