// The planner: what a layout of a model over a cluster costs (step time and memory per device,
// pure functions of the model, the batch, the cluster's figures and the layout), and the search
// for the fastest layout that fits the memory budget.
//
//   Cluster (configs/clusters/*.json: measured here, or described from public specifications)
//   Workload (model config, sequence length, global batch)
//        │
//        ▼
//   search: every mesh pp x dp x cp x tp of the world the model fits, micro-batch size,
//   schedule (and chunks per rank), ZeRO stage, sequence parallelism, cp kind
//        │  estimate(): compute + recompute + exposed communication + pipeline bubble,
//        │  memory: parameters, gradients and AdamW state by ZeRO stage, activations in flight
//        │  by schedule (the schedule simulator's count), checkpointing, transient buffers;
//        │  blocks checkpointed: the fewest that fit (blocks cost alike, so that is fastest)
//        ▼
//   the best candidates, fastest first, each a parallel::Plan + micro-batch size + its Cost
//
// Collective times are ring algorithms over the link the group spans: a group whose ranks fit
// one node (the mesh's innermost axes are a node's consecutive ranks) uses the node's link,
// else the network's. Units: bytes, seconds, FLOP/s.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cairn/core/status.h"
#include "cairn/model/config.h"
#include "cairn/parallel/plan.h"

namespace cairn::planner {

struct Link {
  double bandwidth = 0;  // bytes/s one way, per device
  double latency = 0;    // s per message
};

struct Cluster {
  std::string name;
  std::string source;  // where the figures come from (measured by ..., a vendor's datasheet)
  int nodes = 1;
  int devices_per_node = 1;
  double memory_bytes = 0;   // per device, usable for training
  double peak_flops = 0;     // per device, in the training precision
  double efficiency = 0.5;   // of peak_flops a step's matrix products reach
  Link intra, inter;         // within a node, across nodes
  double dp_overlap = 0.5;   // fraction of the gradient all-reduce hidden behind backward
  double runtime_bytes = 0;  // per device before any tensor: the framework's code and context
  // CPU cores a node's devices share (a profile of ranks on this machine), 0 when each device
  // computes on its own. With fewer cores than devices, a rank that waits (a pipeline's fill
  // and drain) gives its core to the others: the cost model counts the node's work as well as
  // each rank's critical path.
  int cores_per_node = 0;
  int devices() const { return nodes * devices_per_node; }
};

// {"name": ..., "source": ..., "nodes": 128, "devices_per_node": 8, "memory_gb": 80,
//  "peak_tflops": 312, "efficiency": 0.45, "intra": {"gb_per_s": 300, "latency_us": 3},
//  "inter": {"gb_per_s": 25, "latency_us": 10}, "dp_overlap": 0.6}
// Every key but "source", "dp_overlap", "runtime_gb" (memory a worker holds before its first
// tensor, counted in every plan's buffers), "cores_per_node" and "measured" (profile-hw's
// tables, kept for the reader) is required; unknown keys and values out of range are refused
// naming the key.
Result<Cluster> cluster_from_json(const std::string& text, const std::string& what);
Result<Cluster> load_cluster(const std::string& path);

// Seconds of a model part for a micro-batch of `tokens` tokens of sequences of T positions:
// fixed + per_token x tokens + per_token_pos x tokens x T (attention's share grows with T).
struct PartTime {
  double fixed = 0, per_token = 0, per_token_pos = 0;
  double at(double tokens, double T) const {
    return fixed + tokens * (per_token + per_token_pos * T);
  }
};

// A model's parts timed on this machine (`cairn plan profile-model`), each rank of the
// profile's running at once.
struct MeasuredParts {
  PartTime embedding, block, head;                          // forward + backward
  PartTime embedding_forward, block_forward, head_forward;  // forward (what a recompute runs)
  // The head's forward without autograd: the logits and the loss, no gradients (the fused loss
  // computes them in forward only with grad mode on). What ZeRO-3's forward runs, which keeps
  // no graph and runs every stage again with it in backward.
  PartTime head_no_grad;
};
struct MeasuredModel : MeasuredParts {  // the parts on one rank each (tp 1)
  // The parts run tensor-parallel, by tp degree: a rank's time with its slices and its
  // collectives (the tp traffic is in these times, not costed again).
  std::map<int, MeasuredParts> tensor_parallel;
  // The parts run context-parallel without tp, by kind and degree ("ring2", "ulysses2"): a
  // rank's time on its share of each sequence (tokens B T / cp), its exchanges included.
  std::map<std::string, MeasuredParts> context_parallel;
  // Seconds per parameter of one optimizer step over a rank's parameters: the gradients' norm
  // and clipping, the AdamW update and the zeroing of the gradients (memory-bound: time in
  // proportion to the parameters a rank updates).
  double optimizer_per_param = 0;
  // Code the parts' kernels paged in while they ran (the growth of the profiling process's
  // file-backed resident memory): a training worker holds it besides the runtime a hardware
  // profile measures before any kernel has run.
  double code_bytes = 0;
  // The growth of malloc's heap while the parts ran (core::heap_size_bytes): their small
  // allocations (below the block cache's threshold) and the holes between them. The profile's
  // ranks are threads of one process sharing the heap, so at most what one worker's grows by.
  double heap_bytes = 0;
};

struct Workload {
  model::ModelConfig model;
  int64_t seq_len = 0;
  int64_t global_batch = 0;  // sequences per optimizer step
  // When set, compute comes from these times (split over tp and cp) instead of FLOPs at the
  // cluster's peak x efficiency.
  std::optional<MeasuredModel> measured;
};

// One candidate: the plan (mesh, ZeRO, per-block layout, pipeline) and the micro-batch size.
struct Candidate {
  parallel::Plan plan;
  int64_t micro_batch = 1;  // sequences per micro-batch per dp rank
};

struct Cost {
  // Per optimizer step, on the slowest stage.
  double compute_s = 0;    // forward + backward of the stage's share
  double recompute_s = 0;  // the checkpointed blocks' second forward
  double tp_s = 0;         // tensor-parallel collectives (not overlapped)
  double cp_s = 0;         // context-parallel traffic left exposed
  double dp_s = 0;         // gradient reduction (and ZeRO gathers) left exposed
  double pp_s = 0;         // activations and gradients sent between stages
  double bubble_s = 0;     // the stage idle in the pipeline's fill and drain
  double core_wait_s = 0;  // waiting for a core the node's other ranks use (cores_per_node)
  double optimizer_s = 0;  // the update of the rank's parameters (measured model only)
  double step_s() const {
    return compute_s + recompute_s + tp_s + cp_s + dp_s + pp_s + bubble_s + core_wait_s +
           optimizer_s;
  }
  // The terms of step_s with their names, compute first, in the order --explain prints them.
  std::array<std::pair<const char*, double>, 9> terms() const {
    return {{{"compute", compute_s},
             {"recompute", recompute_s},
             {"tp communication", tp_s},
             {"cp communication", cp_s},
             {"dp communication", dp_s},
             {"pipeline sends", pp_s},
             {"pipeline bubble", bubble_s},
             {"waiting for a core", core_wait_s},
             {"optimizer", optimizer_s}}};
  }
  // Per device, on the stage that holds the most.
  double param_bytes = 0, grad_bytes = 0, optimizer_bytes = 0, activation_bytes = 0,
         buffer_bytes = 0;  // buffers: transients and the cluster's runtime_bytes
  double memory_bytes() const {
    return param_bytes + grad_bytes + optimizer_bytes + activation_bytes + buffer_bytes;
  }
  double tokens_per_s = 0;
  // The largest term of step_s besides compute ("compute" when none is above a tenth of it).
  std::string bottleneck() const;
};

// --- the cost model's pieces (pure) -----------------------------------------------------------
// Ring all-reduce of `bytes` over n ranks: 2 (n-1)/n bytes each way and 2 (n-1) messages.
double allreduce_s(double bytes, int n, const Link& link);
// Ring all-gather / reduce-scatter of a `bytes` whole: (n-1)/n bytes and n-1 messages.
double allgather_s(double bytes, int n, const Link& link);
// All-to-all of `bytes` per rank: (n-1)/n of them leave, n-1 messages.
double alltoall_s(double bytes, int n, const Link& link);
// The link a group of `span` consecutive ranks (its extent times the extents inside it) uses.
const Link& link_for(const Cluster& c, int64_t span);
// Bytes per parameter held per device for fp32 weights, gradients and AdamW's moments under
// ZeRO `stage` sharded over d ranks: 16, 8 + 8/d, 4 + 12/d, 16/d.
double state_bytes_per_param(int zero_stage, int d);

// The cost of `c` for `w` on `cluster`. REQUIRES: c.plan.validate(w.model, world) is Ok and the
// global batch splits into c.micro_batch x dp x micro-batches fitting the schedule.
Cost estimate(const Workload& w, const Cluster& cluster, const Candidate& c);
// The same, and each pipeline stage's own cost in `stages` (one per pp rank, in order).
Cost estimate_stages(const Workload& w, const Cluster& cluster, const Candidate& c,
                     std::vector<Cost>* stages);

// --- search ------------------------------------------------------------------------------------
struct SearchOptions {
  int world = 0;             // devices to plan for (0: the cluster's)
  double memory_bytes = 0;   // budget per device (0: the cluster's)
  int top = 5;               // candidates to return
  int max_micro_batch = 64;  // largest micro-batch size tried
  int64_t micro_batch = 0;   // > 0: only this micro-batch size (the job's data order fixes it)
  // > 0: of the layouts predicted within this fraction of the fastest, put first the one with
  // the fewest model-parallel ranks (pp x cp x tp), then the lowest ZeRO stage.
  double prefer_simpler = 0;
};

struct Planned {
  Candidate candidate;
  Cost cost;
};

struct SearchResult {
  std::vector<Planned> best;       // fastest first, at most options.top
  int64_t evaluated = 0;           // candidates costed
  int64_t over_memory = 0;         // of which did not fit even with every block checkpointed
  bool preferred_simpler = false;  // prefer_simpler put a slower (predicted) layout first
};

// The fastest candidates that fit; NotFound naming the smallest memory need when none fits.
Result<SearchResult> search(const Workload& w, const Cluster& cluster,
                            const SearchOptions& options);

// Why `a` is faster than `b`: the term of step_s that differs most in a's favour, e.g.
// "pipeline bubble 0.68 s against 1.90 s".
std::string why_faster(const Cost& a, const Cost& b);

// One line per cost term of `c`, for `cairn plan --explain`.
std::string explain(const Candidate& c, const Cost& cost);

// A picture of `c` (SVG, self-contained): per pipeline stage a bar of its step time by term
// (compute, recompute, tp, cp, dp, sends, bubble) and a bar of its memory per device by kind
// (parameters, gradients, optimizer state, activations, buffers) against the budget line.
std::string plan_svg(const Candidate& c, const std::vector<Cost>& stages, double budget_bytes,
                     const std::string& title);

}  // namespace cairn::planner
