// SampleSource: which training sample each global position of the data stream is. The data
// module implements it locally (LocalSampler); the elastic shard client implements it over
// RPC, so the trainer never knows where the order comes from.
#pragma once

#include <cstdint>

namespace cairn::data {

class SampleSource {
 public:
  virtual ~SampleSource() = default;
  // Samples per epoch. Fixed for the life of the source.
  virtual int64_t num_samples() const = 0;
  // The sample at `global_index`, counted over all epochs from 0 (epoch = global_index /
  // num_samples()). Returns an id in [0, num_samples()); each epoch visits every id once.
  // REQUIRES: global_index >= 0. Thread-safe.
  virtual int64_t sample_id(int64_t global_index) const = 0;
};

}  // namespace cairn::data
