// Comparing a secret a caller presented (a job token) with the one expected.
#pragma once

#include <string_view>

namespace cairn::core {

// True when `given` equals `secret` (never for an empty secret). Compares without an early
// exit, so the time taken does not reveal how much of a guess matched.
inline bool same_secret(std::string_view given, std::string_view secret) {
  if (secret.empty()) return false;
  unsigned char diff = given.size() == secret.size() ? 0 : 1;
  for (size_t i = 0; i < given.size(); ++i)
    diff |= static_cast<unsigned char>(given[i] ^ secret[i % secret.size()]);
  return diff == 0;
}

}  // namespace cairn::core
