// Default logger: stderr (colour when a terminal) plus an optional file.
#include "cairn/core/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace cairn::core {

void init_logging(const LogOptions& options) {
  std::vector<spdlog::sink_ptr> sinks;
  sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  if (!options.file.empty())
    sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(options.file));
  auto logger = std::make_shared<spdlog::logger>("cairn", sinks.begin(), sinks.end());
  logger->set_pattern(options.prefix + "%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  logger->set_level(spdlog::level::from_str(options.level));
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
}

}  // namespace cairn::core
