// Per-client budgets of the master: a token bucket per key (a client's address), pure (time is
// passed in), with a bounded number of keys so that a client inventing addresses cannot grow it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>

namespace cairn::elastic {

struct RateLimitParams {
  double rate_per_s = 1000;  // tokens added per second; > 0
  double burst = 2000;       // bucket size (calls allowed at once after a quiet period); >= 1
  size_t max_keys = 4096;    // keys tracked; past it, full buckets are forgotten first
};

class RateLimiter {
 public:
  explicit RateLimiter(RateLimitParams params) : p_(params) {}

  // Takes one token from `key`'s bucket at time `now` (seconds, monotonic). True when there was
  // one. When false, *retry_after_s (if given) is how long until the next token.
  bool allow(const std::string& key, double now, double* retry_after_s = nullptr);

  size_t tracked_keys() const { return buckets_.size(); }

 private:
  struct Bucket {
    double tokens = 0;
    double updated = 0;
  };
  void refill(Bucket& b, double now) const;
  void evict(double now);

  RateLimitParams p_;
  std::unordered_map<std::string, Bucket> buckets_;
};

// The address part of a gRPC peer string ("ipv4:10.0.0.1:5000" -> "10.0.0.1",
// "ipv6:[::1]:5000" -> "::1", "unix:/path" -> "unix:/path").
std::string peer_host(const std::string& peer);

}  // namespace cairn::elastic
