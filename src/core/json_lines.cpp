// JSON-lines writers and reader.
#include "cairn/core/json_lines.h"

#include <spdlog/spdlog.h>

#include <fstream>

#include "cairn/core/fs.h"

namespace cairn::core {

void JsonLinesWriter::append(const nlohmann::json& j) {
  MutexLock lock(mu_);
  Status s = append_line(path_, j.dump());
  if (!s.ok() && !warned_) {
    spdlog::warn("cannot write {}: {}", path_, s.ToString());
    warned_ = true;
  }
}

void EventLog::write(const std::string& kind, const nlohmann::json& fields) {
  nlohmann::json j = {{"event", kind}, {"time", unix_time()}};
  if (fields.is_object())
    for (auto& [k, v] : fields.items())
      if (k != "event") j[k] = v;
  out_.append(j);
}

std::vector<nlohmann::json> read_json_lines(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_discarded() && j.is_object()) out.push_back(std::move(j));
  }
  return out;
}

}  // namespace cairn::core
