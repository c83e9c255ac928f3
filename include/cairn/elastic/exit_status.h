// How a worker ended and what the agent does about it: the restart decision and the agent's own
// exit code. Pure functions.
#pragma once

#include <optional>
#include <string>

namespace cairn::elastic {

// A process's end: an exit code or the signal that killed it.
struct ExitStatus {
  bool signaled = false;  // killed by `code`, a signal number; otherwise exited with `code`
  int code = 0;

  static ExitStatus Exited(int code) { return {false, code}; }
  static ExitStatus Signaled(int signal) { return {true, signal}; }

  bool success() const { return !signaled && code == 0; }
  // What a shell would report: the exit code, or 128 + signal.
  int shell_code() const { return signaled ? 128 + code : code; }
  // "exit code 3" or "signal SIGKILL (9)".
  std::string ToString() const;
  bool operator==(const ExitStatus& o) const { return signaled == o.signaled && code == o.code; }
};

// "SIGTERM" for 15; "signal 77" for numbers without a name.
std::string signal_name(int signal);

// Whether a failed round may be restarted: `restarts_done` restarts have happened so far.
bool may_restart(int restarts_done, int max_restarts);

// The agent's exit code: 128 + `interrupt_signal` when the agent itself was interrupted (non-zero
// signal); otherwise the first failed worker's shell code (never 0: a failure that reports 0 maps
// to 1); otherwise 0.
int agent_exit_code(const std::optional<ExitStatus>& first_failure, int interrupt_signal);

}  // namespace cairn::elastic
