// Logging setup. Code logs with spdlog's functions (spdlog::info, ...); this sets the sinks.
#pragma once

#include <string>

namespace cairn::core {

struct LogOptions {
  std::string level = "info";  // trace | debug | info | warn | error
  std::string file;            // also log to this file when non-empty
  std::string prefix;          // e.g. "[rank 1] "; empty for none
};

// Installs the default logger (stderr + optional file). Safe to call again.
void init_logging(const LogOptions& options);

}  // namespace cairn::core
