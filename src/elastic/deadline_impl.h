// Deadlines of the master's client side: seconds left until a steady-clock time point.
#pragma once

#include <chrono>

namespace cairn::elastic {

using Clock = std::chrono::steady_clock;

// Negative once `t` has passed.
inline double seconds_until(Clock::time_point t) {
  return std::chrono::duration<double>(t - Clock::now()).count();
}

}  // namespace cairn::elastic
