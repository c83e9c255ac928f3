// A run directory's machine-readable logs: events.jsonl (one object per event with "event"
// and "time" in unix seconds) and metrics.jsonl (one object per step). Written by rank 0.
#pragma once

#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cairn/core/json_lines.h"
#include "cairn/core/status.h"

namespace cairn::train {

class RunLog {
 public:
  // Creates `run_dir` if needed. Thread-safe after opening. A log that is not the `writer`
  // (ranks other than 0) accepts calls and writes nothing.
  static Result<std::unique_ptr<RunLog>> Open(const std::string& run_dir, bool writer = true);

  // Appends {"event": kind, "time": now, ...fields}. Failures are logged, not returned: losing
  // a log line must never stop training.
  void event(const std::string& kind, nlohmann::json fields = nlohmann::json::object());
  // Appends one metrics row; "time" is added when missing.
  void metrics(nlohmann::json row);
  // Appends {"step": step, "sample_ids": ids} to samples.jsonl.
  void samples(int64_t step, const std::vector<int64_t>& ids);

  const std::string& dir() const { return dir_; }

 private:
  RunLog(std::string dir, bool writer)
      : dir_(dir),
        writer_(writer),
        events_(dir + "/events.jsonl"),
        metrics_(dir + "/metrics.jsonl"),
        samples_(dir + "/samples.jsonl") {}
  std::string dir_;
  bool writer_;
  core::EventLog events_;
  core::JsonLinesWriter metrics_, samples_;
};

// Achieved fp32 GEMM rate of this process (FLOP/s) with torch's current thread count: square
// matmuls of size n for about `seconds`. The denominator of MFU.
double measure_gemm_flops(int64_t n = 1024, double seconds = 0.5);

}  // namespace cairn::train
