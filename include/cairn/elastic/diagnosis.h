// What a worker's failure means, from how it ended and its last lines of output: whether
// restarting can help (a crash, a lost peer, a kill) or not (a user error: a bad config, a
// missing file, a bad flag). Pure functions.
#pragma once

#include <string>
#include <vector>

#include "cairn/elastic/exit_status.h"

namespace cairn::elastic {

enum class FailureKind {
  kUserError,    // bad input: the same command fails the same way again
  kOutOfMemory,  // an allocation failed (or the OOM killer's SIGKILL, when the log says so)
  kCrash,        // SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE
  kPeerLost,     // a collective failed because another rank went away or timed out
  kMasterLost,   // the elastic master restarted (it forgot the job's dataset) or went away
  kKilled,       // SIGKILL or SIGTERM from outside (an operator, the OOM killer, a scheduler)
  kHang,         // no progress for the hang timeout (set by the agent's hang detector)
  kError,        // any other non-zero exit
};

// "user_error", "out_of_memory", ... (the events.jsonl spelling).
const char* failure_kind_name(FailureKind k);

struct Diagnosis {
  FailureKind kind = FailureKind::kError;
  bool restartable = true;
  std::string reason;  // one line, for the summary and events.jsonl
};

// REQUIRES: !status.success(). `tail` is the worker's last lines of output, oldest first.
Diagnosis diagnose(const ExitStatus& status, const std::vector<std::string>& tail);

}  // namespace cairn::elastic
