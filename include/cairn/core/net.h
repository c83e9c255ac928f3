// Facts about network addresses as text: which host an address names, whether it is loopback.
#pragma once

#include <string>
#include <string_view>

namespace cairn::core {

// True for an address only this machine can reach: "localhost", 127.0.0.0/8, "::1" (with or
// without brackets). A name other than localhost is not resolved and counts as not loopback.
bool is_loopback_host(std::string_view host);

// The host of "host:port", "[v6]:port" or a bare host; brackets removed.
std::string host_of(std::string_view address);

}  // namespace cairn::core
