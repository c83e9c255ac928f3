// Exit descriptions and the agent's exit-code policy.
#include "cairn/elastic/exit_status.h"

#include <string.h>

namespace cairn::elastic {

std::string signal_name(int signal) {
  const char* abbrev = signal > 0 ? ::sigabbrev_np(signal) : nullptr;
  if (abbrev == nullptr) return "signal " + std::to_string(signal);
  return std::string("SIG") + abbrev;
}

std::string ExitStatus::ToString() const {
  if (signaled) return "signal " + signal_name(code) + " (" + std::to_string(code) + ")";
  return "exit code " + std::to_string(code);
}

bool may_restart(int restarts_done, int max_restarts) { return restarts_done < max_restarts; }

int agent_exit_code(const std::optional<ExitStatus>& first_failure, int interrupt_signal) {
  if (interrupt_signal > 0) return 128 + interrupt_signal;
  if (!first_failure) return 0;
  int code = first_failure->shell_code();
  return code == 0 ? 1 : code;
}

}  // namespace cairn::elastic
