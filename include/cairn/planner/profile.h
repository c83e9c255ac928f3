// `cairn plan profile-hw`: this machine's figures for the planner, measured. Ranks are threads
// of one process, each with a Gloo group over one in-memory store (loopback TCP, as local
// worker processes use), all measuring at once so that they share the cores as workers do.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cairn/core/status.h"
#include "cairn/planner/planner.h"

namespace cairn::planner {

struct HardwareProfile {
  int ranks = 0;
  double gemm_fp32_flops = 0;  // per rank, every rank multiplying at once (fp32, n x n)
  double gemm_bf16_flops = 0;
  int64_t gemm_n = 0;
  double memcpy_bytes_per_s = 0;  // one rank copying alone
  double memory_bytes = 0;        // available now / ranks
  struct Point {
    std::string op;  // allreduce | allgather | all_to_all | sendrecv
    double bytes = 0;
    double seconds = 0;  // median
  };
  std::vector<Point> collectives;
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

}  // namespace cairn::planner
