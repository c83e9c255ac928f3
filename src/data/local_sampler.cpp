// LocalSampler: per-epoch Fisher-Yates permutations and sample extraction.
#include "cairn/data/local_sampler.h"

#include <stdexcept>
#include <string>
#include <utility>

namespace cairn::data {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

std::string describe_bad_args(const TokenFile* file, int64_t seq_len) {
  if (file == nullptr) return "no token file";
  if (seq_len < 1) return "seq_len " + std::to_string(seq_len) + " must be at least 1";
  if (file->size() < seq_len + 1) {
    return file->path() + " has " + std::to_string(file->size()) +
           " tokens, fewer than one sample of seq_len + 1 = " + std::to_string(seq_len + 1);
  }
  return "";
}

}  // namespace

uint64_t bounded_draw(std::mt19937_64& rng, uint64_t bound) {
  // Values below `threshold` would make some residues more likely; draw again.
  const uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound
  for (;;) {
    const uint64_t r = rng();
    if (r >= threshold) return r % bound;
  }
}

std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  std::mt19937_64 rng(splitmix64(seed ^ splitmix64(static_cast<uint64_t>(epoch))));
  for (int64_t i = n - 1; i >= 1; --i) {
    const int64_t j = static_cast<int64_t>(bounded_draw(rng, static_cast<uint64_t>(i) + 1));
    std::swap(p[i], p[j]);
  }
  return p;
}

LocalSampler::LocalSampler(const TokenFile* file, int64_t seq_len, uint64_t seed)
    : file_(file), seq_len_(seq_len), seed_(seed), num_samples_(0) {
  std::string bad = describe_bad_args(file, seq_len);
  if (!bad.empty()) throw std::invalid_argument("LocalSampler: " + bad);
  num_samples_ = (file->size() - 1) / seq_len;
}

Result<std::unique_ptr<LocalSampler>> LocalSampler::Open(const TokenFile* file, int64_t seq_len,
                                                         uint64_t seed) {
  std::string bad = describe_bad_args(file, seq_len);
  if (!bad.empty()) return Status::InvalidArgument(bad);
  return std::make_unique<LocalSampler>(file, seq_len, seed);
}

std::shared_ptr<const std::vector<int64_t>> LocalSampler::permutation(int64_t epoch) const {
  core::MutexLock lock(mu_);
  if (cache_[0].epoch == epoch) return cache_[0].order;
  if (cache_[1].epoch == epoch) {
    std::swap(cache_[0], cache_[1]);
    return cache_[0].order;
  }
  cache_[1] = std::move(cache_[0]);
  cache_[0].epoch = epoch;
  cache_[0].order =
      std::make_shared<const std::vector<int64_t>>(epoch_permutation(num_samples_, seed_, epoch));
  return cache_[0].order;
}

int64_t LocalSampler::sample_id(int64_t global_index) const {
  if (global_index < 0) {
    throw std::out_of_range("LocalSampler::sample_id(" + std::to_string(global_index) + ")");
  }
  auto order = permutation(global_index / num_samples_);
  return (*order)[global_index % num_samples_];
}

void LocalSampler::fill(int64_t sample_id, int64_t* inputs, int64_t* targets) const {
  if (sample_id < 0 || sample_id >= num_samples_) {
    throw std::out_of_range("LocalSampler::fill: sample " + std::to_string(sample_id) +
                            " outside [0, " + std::to_string(num_samples_) + ")");
  }
  const int64_t start = sample_id * seq_len_;
  file_->copy_to(start, seq_len_, inputs);
  file_->copy_to(start + 1, seq_len_, targets);
}

}  // namespace cairn::data
