// Goodput: the share of a job's wall time spent on training steps that count, and where the
// rest went. Computed from the run directory's events.jsonl and metrics.jsonl when the job
// ends. Pure apart from read_goodput_inputs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cairn/core/status.h"

namespace cairn::elastic {

struct StepRow {  // one metrics.jsonl row
  int64_t step = 0;
  double time = 0;       // unix seconds when the step ended
  double step_time = 0;  // seconds
};

struct TimedEvent {  // one events.jsonl row, the fields goodput needs
  std::string event;
  double time = 0;
  double duration_ms = 0;  // checkpoint_loaded
};

struct Goodput {
  double wall_s = 0;
  double productive_s = 0;  // steps of the final trajectory, each counted once
  double restart_s = 0;     // the end of the last step before a failure → the first step
                            // of the restarted workers began (a hang's silence included)
  double load_s = 0;        // checkpoint loads (part of restart_s when after a failure)
  double lost_s = 0;        // steps trained, then rolled back and trained again
  double other_s = 0;       // startup, evaluation, checkpoint pauses, the final persist
  int failures = 0;
  int64_t steps = 0;  // distinct steps trained
  double goodput() const { return wall_s > 0 ? productive_s / wall_s : 0; }
  // "goodput 96.1% (productive 570.0 s of 593.1 s); downtime: ..."
  std::string ToString() const;
};

// REQUIRES: rows in file order (a restart appends the steps it trains again).
Goodput compute_goodput(const std::vector<StepRow>& rows, const std::vector<TimedEvent>& events,
                        double start_time, double end_time);

// Reads <run_dir>/metrics.jsonl and events.jsonl (lines that do not parse are skipped).
Status read_goodput_inputs(const std::string& run_dir, std::vector<StepRow>* rows,
                           std::vector<TimedEvent>* events);

}  // namespace cairn::elastic
