// What a training job will hold in memory per rank, estimated from its config before anything
// is allocated, so that a job too large for the machine stops at start with a plain message
// instead of dying inside libtorch's allocator.
#pragma once

#include <cstdint>
#include <string>

#include "cairn/core/status.h"
#include "cairn/model/config.h"

namespace cairn::train {

struct MemoryEstimate {
  int64_t params = 0;           // parameter count of the model
  double state_bytes = 0;       // parameters, gradients and AdamW moments held by one rank
  double activation_bytes = 0;  // saved for backward in one micro-batch, plus the largest
                                // transient buffers of a step
  double total() const { return state_bytes + activation_bytes; }
};

struct MemoryEstimateInput {
  model::ModelConfig model;
  int64_t micro_batch_size = 1;
  int64_t seq_len = 1;
  int world = 1;  // ranks holding the same parameters (dp x cp: ZeRO shards over them)
  int zero_stage = 0;
  bool activation_checkpointing = false;
  int tp = 1;                      // tensor-parallel ranks a model replica is split over
  bool sequence_parallel = false;  // with tp: the norms' and residuals' activations split too
  int cp = 1;                      // context-parallel ranks: each holds 1/cp of every sequence
  int cp_ring = 1;                 // of which a ring (cp / cp_ring Ulysses ranks inside it)
};

// Exact parameter count of the model `config` builds.
int64_t count_params(const model::ModelConfig& config);

// Pure: the estimate for one rank (fp32 parameters and AdamW; bf16 autocast is not counted as
// a saving). Activations follow the usual per-layer count for a transformer block (about 68
// bytes per token and channel, plus the attention probabilities causal_attention keeps per
// head, none for ring attention) and err high. Under
// tp a rank holds 1/tp of the split parameters and all of the whole ones (norms, biases of the
// row-parallel projections, GPT-2's position table), and 1/tp of a block's activations but
// those of its norms and residuals (also 1/tp with sequence parallelism).
MemoryEstimate estimate_memory(const MemoryEstimateInput& in);

// InvalidArgument naming the estimate, its parts and the memory available when
// `local_ranks` ranks of this estimate do not fit in `available` bytes.
Status check_memory(const MemoryEstimate& e, int local_ranks, int64_t available);

}  // namespace cairn::train
