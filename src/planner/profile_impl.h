// What the hardware and model profiles time with: seconds since a point, and the median of
// repetitions (the upper one of an even count: a time that was measured).
#pragma once

#include <algorithm>
#include <chrono>
#include <vector>

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
