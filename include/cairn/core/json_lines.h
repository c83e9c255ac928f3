// JSON-lines files of a run directory: events.jsonl (the agent, every worker and the
// persisters append to it), metrics.jsonl and samples.jsonl. One writer type and one reader,
// used by the agent and the trainer alike.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cairn/core/mutex.h"

namespace cairn::core {

// Appends one JSON object per line; each line with one write, so that processes sharing the
// file never interleave within a line. Thread-safe. A failed write is logged (once) and not
// returned: losing a log line must never stop training or supervision.
class JsonLinesWriter {
 public:
  explicit JsonLinesWriter(std::string path) : path_(std::move(path)) {}
  void append(const nlohmann::json& j);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  Mutex mu_;
  bool warned_ CAIRN_GUARDED_BY(mu_) = false;
};

// events.jsonl: {"event": kind, "time": unix seconds, ...fields}; a "time" among the fields
// is kept.
class EventLog {
 public:
  explicit EventLog(std::string path) : out_(std::move(path)) {}
  void write(const std::string& kind, const nlohmann::json& fields = nlohmann::json::object());
  const std::string& path() const { return out_.path(); }

 private:
  JsonLinesWriter out_;
};

// Every JSON object of a JSON-lines file, in order. A missing file has none; a line that is
// not an object (a writer killed mid-line) is skipped.
std::vector<nlohmann::json> read_json_lines(const std::string& path);

}  // namespace cairn::core
