// `cairn plan profile-hw`: this machine's figures for the planner, measured. Ranks are threads
// of one process, each with a Gloo group over one in-memory store (loopback TCP, as local
// worker processes use), all measuring at once so that they share the cores as workers do.
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "cairn/core/status.h"
#include "cairn/planner/planner.h"

namespace cairn::planner {

struct HardwareProfile {
  int ranks = 0;
  int cores = 0;               // the cores this process may run on (its CPU affinity)
  double gemm_fp32_flops = 0;  // per rank, every rank multiplying at once (fp32, n x n)
  double gemm_bf16_flops = 0;
  int64_t gemm_n = 0;
  double memcpy_bytes_per_s = 0;  // one rank copying alone
  double memory_bytes = 0;        // available now / ranks
  double runtime_bytes = 0;       // this process's resident memory before profiling (the
                                  // binary, libtorch): what a worker holds before any tensor
  std::string huge_pages;         // the kernel's transparent huge page mode (core::
                                  // transparent_hugepage_mode): a step's time depends on it
  struct Point {
    std::string op;  // allreduce | allgather | all_to_all | sendrecv
    double bytes = 0;
    double seconds = 0;  // median
  };
  std::vector<Point> collectives;
  double dp_overlap = 0;  // the fraction of an 8 MiB all-reduce hidden behind GEMMs on every
                          // rank at once (what data parallelism hides behind backward)
  Link link;  // fitted to the all-reduces: time = 2 (n-1)/n bytes / bandwidth + 2 (n-1) latency
};

// Fits latency and bandwidth to (bytes, seconds) of ring all-reduces over n ranks by least
// squares on t = a + b x, x = 2 (n-1)/n bytes: bandwidth 1 / b, latency a / (2 (n-1)).
// REQUIRES: at least two distinct sizes.
Link fit_allreduce(const std::vector<std::pair<double, double>>& points, int n);

// Measures with `ranks` ranks (>= 2), each measurement repeated for about `seconds`.
Result<HardwareProfile> profile_hardware(int ranks, double seconds);

// The profile as a cluster file (cluster_from_json loads it; "measured" keeps the tables): one
// node of `ranks` devices, the fitted link within it (and across, which this machine cannot
// measure), the GEMM peak, `efficiency` (the fraction of it a training step reaches).
nlohmann::json profile_to_cluster(const HardwareProfile& p, const std::string& name,
                                  double efficiency);

// `cairn plan profile-model`: a model's parts (the embedding, one block, the head and loss)
// timed forward and backward on `ranks` threads at once (each its own copy of the part, one
// thread each, as workers share the cores) at a few micro-batch sizes and sequence lengths,
// the median repetition of the slowest rank at each, and fitted: time = fixed + a x tokens
// (+ b x tokens x T for a block, which attends). Activation memory per block is the heap's
// growth over the forward (kept for backward). The parts are timed again tensor-parallel for
// every tp degree of profiled_tp_degrees and context-parallel for every split of
// profiled_cp_splits (the ranks in groups, each group over its own in-process Gloo group), and
// the optimizer step once per rank.
struct ModelProfile {
  int ranks = 0;
  int rounds = 1;  // times every split was measured in turn (a point: the median of its rounds)
  int merged = 1;  // profiles it was merged from (merge_model_profiles), else 1
  struct Point {
    std::string part;  // embedding | block | head
    int64_t batch = 0, seq = 0;
    double forward_s = 0, backward_s = 0;  // the median repetition, the slowest rank's
    double activation_bytes = 0;           // block: kept by the forward
    double no_grad_s = 0;                  // head: its forward without autograd (else 0)
    int tp = 1;                            // run tensor-parallel over this many ranks
    int cp = 1;           // run context-parallel over this many ranks (seq: the whole sequence)
    std::string cp_kind;  // "ring" | "ulysses" when cp > 1
  };
  std::vector<Point> points;
  MeasuredModel fit;  // fit.optimizer_per_param: the median update of the slowest rank
  // Fits fixed + a x tokens + b x tokens x T to (tokens, T, seconds) by least squares with
  // every term >= 0; b = 0 when every point has the same T. REQUIRES: points of at least 2
  // distinct token counts.
  static PartTime fit_part(const std::vector<std::array<double, 3>>& points);
};

// The tp degrees a profile of `ranks` ranks times: every t > 1 dividing `ranks` that the
// model's heads and MLP split into.
std::vector<int> profiled_tp_degrees(const model::ModelConfig& model, int ranks);
// The context-parallel splits it times, ("ring" | "ulysses", cp): every cp > 1 dividing `ranks`
// of each kind that splits every length of `seqs` (and, for Ulysses, the heads).
std::vector<std::pair<std::string, int>> profiled_cp_splits(const model::ModelConfig& model,
                                                            int ranks,
                                                            const std::vector<int64_t>& seqs);

// Measures `model` (one block stands for all) at micro-batch sizes `batches` and sequence
// lengths `seqs` (each <= model.block_size), every split in turn `rounds` times (each point
// about seconds / rounds a round).
inline constexpr int kProfileRounds = 3;
Result<ModelProfile> profile_model(const model::ModelConfig& model, int ranks,
                                   const std::vector<int64_t>& batches,
                                   const std::vector<int64_t>& seqs, double seconds,
                                   int rounds = kProfileRounds);

// {"model": {...}, "ranks": n, "fit": {"embedding": {"fixed_s", "per_token_s",
// "per_token_pos_s"}, "block": ..., "head": ..., and the forwards alone: "embedding_forward",
// "block_forward", "head_forward", the head's without autograd: "head_no_grad", "optimizer":
// {"per_param_s"}, "tensor_parallel": {"2": {the seven parts}, ...}, "context_parallel": {"ring2":
// {the seven parts}, "ulysses2": ...}}, "points":
// [...]}
nlohmann::json model_profile_to_json(const ModelProfile& p, const model::ModelConfig& model);
// The fit of a model profile file, checked against the job's model (another model's profile is
// refused naming the field that differs).
Result<MeasuredModel> load_model_profile(const std::string& path, const model::ModelConfig& model);

// Profiles of one model and world taken at different times (each a file load_model_profile
// takes, with its points), merged: each point the median of the profiles' (as the rounds of
// one profile), every split fitted again, the optimizer step the median, the code and heap
// the largest. A machine slow while one profile ran moves one of them, and the median drops
// it. Refused, naming the file and what differs: fewer than two, another model, another
// world, another set of points (other --batch or --seq).
Result<ModelProfile> merge_model_profiles(const std::vector<std::string>& paths,
                                          const model::ModelConfig& model);

}  // namespace cairn::planner
