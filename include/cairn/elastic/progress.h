// A worker's progress (its last completed step and when) in a small shared-memory segment
// that its agent reads: the hang detector's input. The worker creates and writes it; the agent
// reads it and removes it when the job ends, like the flash-checkpoint slots.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cairn/core/status.h"

namespace cairn::elastic {

struct Progress {
  int64_t step = 0;
  double unix_time = 0;  // when it was reported
  int32_t pid = 0;       // the reporting process
};

// "/cairn-<hash of the run directory>-p<rank>"
std::string progress_name(const std::string& run_dir, int global_rank);
int unlink_progress(const std::string& run_dir, const std::vector<int>& ranks);

class ProgressWriter {
 public:
  static Result<std::unique_ptr<ProgressWriter>> Open(const std::string& run_dir, int global_rank);
  ~ProgressWriter();
  ProgressWriter(const ProgressWriter&) = delete;
  ProgressWriter& operator=(const ProgressWriter&) = delete;
  // Lock-free; a few atomic stores.
  void report(int64_t step);

 private:
  explicit ProgressWriter(void* base) : base_(base) {}
  void* base_;
};

// Reads a rank's progress; nullopt while the worker has not reported (no segment yet).
std::optional<Progress> read_progress(const std::string& run_dir, int global_rank);

}  // namespace cairn::elastic
