#include <algorithm>
#include <vector>

#include "elastic/master/rate_limit_impl.h"

namespace cairn::elastic {

void RateLimiter::refill(Bucket& b, double now) const {
  if (now > b.updated) {
    b.tokens = std::min(p_.burst, b.tokens + (now - b.updated) * p_.rate_per_s);
    b.updated = now;
  }
}

void RateLimiter::evict(double now) {
  // Full buckets carry no memory of a client: forgetting them changes no decision.
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    refill(it->second, now);
    it = it->second.tokens >= p_.burst ? buckets_.erase(it) : std::next(it);
  }
  if (buckets_.size() < p_.max_keys) return;
  // Still full (that many clients busy at once): drop the fullest half.
  std::vector<std::pair<double, std::string>> by_tokens;
  by_tokens.reserve(buckets_.size());
  for (const auto& [key, b] : buckets_) by_tokens.emplace_back(b.tokens, key);
  std::sort(by_tokens.begin(), by_tokens.end(), std::greater<>());
  for (size_t i = 0; i < by_tokens.size() / 2; ++i) buckets_.erase(by_tokens[i].second);
}

bool RateLimiter::allow(const std::string& key, double now, double* retry_after_s) {
  auto it = buckets_.find(key);
  if (it == buckets_.end()) {
    if (buckets_.size() >= p_.max_keys) evict(now);
    it = buckets_.emplace(key, Bucket{p_.burst, now}).first;
  }
  Bucket& b = it->second;
  refill(b, now);
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return true;
  }
  if (retry_after_s) *retry_after_s = (1 - b.tokens) / p_.rate_per_s;
  return false;
}

std::string peer_host(const std::string& peer) {
  const size_t scheme = peer.find(':');
  if (scheme == std::string::npos) return peer;
  const std::string kind = peer.substr(0, scheme);
  if (kind != "ipv4" && kind != "ipv6") return peer;
  std::string rest = peer.substr(scheme + 1);
  if (!rest.empty() && rest.front() == '[') {
    const size_t close = rest.find(']');
    return close == std::string::npos ? rest : rest.substr(1, close - 1);
  }
  const size_t colon = rest.rfind(':');
  return colon == std::string::npos ? rest : rest.substr(0, colon);
}

}  // namespace cairn::elastic
