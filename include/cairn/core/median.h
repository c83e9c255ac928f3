// The median of a few numbers: the middle one, or the mean of the middle two for an even count.
#pragma once

#include <algorithm>
#include <vector>

namespace cairn::core {

// REQUIRES: !v.empty().
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace cairn::core
