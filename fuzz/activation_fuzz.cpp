// The activation message a warm standby worker reads from the agent (elastic/standby.h) through
// parse_activation. What it accepts is a list of NAME=value entries (name not empty) that
// activation_message() turns back into the same bytes.
#include <cstdint>
#include <string>
#include <string_view>

#include "cairn/elastic/standby.h"
#include "fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view message(reinterpret_cast<const char*>(data), size);
  auto env = cairn::elastic::parse_activation(message);
  if (!env.ok()) {
    FUZZ_CHECK(env.status().code() == cairn::StatusCode::kInvalidArgument, env.status().ToString());
    return 0;
  }
  for (const std::string& e : *env) {
    const size_t eq = e.find('=');
    FUZZ_CHECK(eq != std::string::npos && eq > 0, "entry '" + e + "' is not NAME=value");
    FUZZ_CHECK(e.find('\0') == std::string::npos, "entry with a NUL");
    (void)cairn::elastic::is_round_variable(std::string_view(e).substr(0, eq));
  }
  FUZZ_CHECK(cairn::elastic::activation_message(*env) == message,
             "activation_message(parse_activation(m)) != m");
  return 0;
}
