// LocalSampler: the deterministic sample order over one token file, computed in-process.
//
// Sample s is tokens [s*T, s*T + T + 1) of the file (T = seq_len): inputs are its first T
// tokens, targets the T tokens after each input. num_samples = (size - 1) / T.
// Epoch e visits the samples in the order epoch_permutation(num_samples, seed, e), so the
// order depends only on (file size, seq_len, seed) and is the same on every machine.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "cairn/core/mutex.h"
#include "cairn/core/status.h"
#include "cairn/data/sample_source.h"
#include "cairn/data/token_file.h"

namespace cairn::data {

// A uniformly distributed value in [0, bound) from `rng`, by rejection (no modulo bias), with
// the same result on every platform. REQUIRES: bound > 0.
uint64_t bounded_draw(std::mt19937_64& rng, uint64_t bound);

// The permutation of [0, n) for `epoch`: Fisher-Yates (i from n-1 down to 1 swaps i with
// bounded_draw(rng, i + 1)) driven by std::mt19937_64 seeded with
// splitmix64(seed ^ splitmix64(epoch)). Pure; REQUIRES: n >= 0, epoch >= 0.
std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);

class LocalSampler : public SampleSource {
 public:
  // REQUIRES: file outlives the sampler, seq_len >= 1 and file->size() >= seq_len + 1;
  // throws std::invalid_argument otherwise (use Open to get a Status instead).
  LocalSampler(const TokenFile* file, int64_t seq_len, uint64_t seed);
  // Like the constructor, with kInvalidArgument naming the file and sizes on bad arguments.
  static Result<std::unique_ptr<LocalSampler>> Open(const TokenFile* file, int64_t seq_len,
                                                    uint64_t seed);

  int64_t num_samples() const override { return num_samples_; }
  // Thread-safe; the permutations of the two most recently used epochs are cached.
  int64_t sample_id(int64_t global_index) const override;
  int64_t seq_len() const { return seq_len_; }

  // Writes sample `sample_id`'s inputs (T ids) and targets (T ids). Thread-safe.
  // REQUIRES: 0 <= sample_id < num_samples(); throws std::out_of_range otherwise.
  void fill(int64_t sample_id, int64_t* inputs, int64_t* targets) const;

 private:
  std::shared_ptr<const std::vector<int64_t>> permutation(int64_t epoch) const;

  const TokenFile* file_;
  int64_t seq_len_;
  uint64_t seed_;
  int64_t num_samples_;
  struct Cached {
    int64_t epoch = -1;
    std::shared_ptr<const std::vector<int64_t>> order;
  };
  mutable core::Mutex mu_;
  mutable Cached cache_[2] CAIRN_GUARDED_BY(mu_);  // cache_[0] is the most recently used
};

}  // namespace cairn::data
