// What the hardware and model profiles time with: seconds since a point, and the median of
// repetitions (the upper one of an even count: a time that was measured).
#pragma once

#include <algorithm>
#include <chrono>
#include <vector>

#include "cairn/planner/profile.h"

namespace cairn::planner {

// A model profile's points from its rounds (each round the same points in the same order):
// each time and activation size the median of its rounds'. REQUIRES: at least one round.
std::vector<ModelProfile::Point> median_of_rounds(
    const std::vector<std::vector<ModelProfile::Point>>& by_round);

}  // namespace cairn::planner

namespace cairn::planner::profiling {

using Clock = std::chrono::steady_clock;

inline double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// REQUIRES: !v.empty().
inline double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + long(v.size() / 2), v.end());
  return v[v.size() / 2];
}

}  // namespace cairn::planner::profiling
