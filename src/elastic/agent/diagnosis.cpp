// Failure diagnosis: exit status + log tail → kind, restartable, reason.
#include "cairn/elastic/diagnosis.h"

#include <signal.h>

#include <algorithm>

namespace cairn::elastic {
namespace {

struct Marker {
  const char* text;
  FailureKind kind;
  const char* reason;
};

// Matched against the tail, newest line first; the first hit decides. User errors come first:
// cairn reports bad input as "invalid argument"/"not found"/"unsupported" and exits 2;
// Python's launcher-level mistakes are named by their exception.
constexpr Marker kMarkers[] = {
    {"cairn: error: invalid argument", FailureKind::kUserError, "bad input"},
    {"cairn: error: not found", FailureKind::kUserError, "a file or directory is missing"},
    {"cairn: error: unsupported", FailureKind::kUserError, "unsupported input"},
    {"ModuleNotFoundError", FailureKind::kUserError, "a Python module is missing"},
    {"FileNotFoundError", FailureKind::kUserError, "a file is missing"},
    {"SyntaxError", FailureKind::kUserError, "the script does not parse"},
    {"std::bad_alloc", FailureKind::kOutOfMemory, "an allocation failed"},
    {"MemoryError", FailureKind::kOutOfMemory, "an allocation failed"},
    {"out of memory", FailureKind::kOutOfMemory, "an allocation failed"},
    {"cairn: error: peer lost", FailureKind::kPeerLost, "another rank went away"},
    // The shard service's answer to a worker after the master restarted (its datasets come
    // back from the trainers' checkpoint when they restart).
    {"is not known to the master", FailureKind::kMasterLost, "the master restarted"},
    {"Connection closed by peer", FailureKind::kPeerLost, "another rank went away"},
    {"Connection reset by peer", FailureKind::kPeerLost, "another rank went away"},
    {"collective timed out", FailureKind::kPeerLost, "a collective timed out"},
    {"Timed out waiting", FailureKind::kPeerLost, "a collective timed out"},
    {"all-reduce failed", FailureKind::kPeerLost, "a collective failed"},
    {"all-gather failed", FailureKind::kPeerLost, "a collective failed"},
    {"broadcast failed", FailureKind::kPeerLost, "a collective failed"},
};

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\r')) s.pop_back();
  if (s.size() > 200) s = s.substr(0, 197) + "...";
  return s;
}

}  // namespace

const char* failure_kind_name(FailureKind k) {
  switch (k) {
    case FailureKind::kUserError:
      return "user_error";
    case FailureKind::kOutOfMemory:
      return "out_of_memory";
    case FailureKind::kCrash:
      return "crash";
    case FailureKind::kPeerLost:
      return "peer_lost";
    case FailureKind::kMasterLost:
      return "master_lost";
    case FailureKind::kKilled:
      return "killed";
    case FailureKind::kHang:
      return "hang";
    case FailureKind::kError:
      return "error";
  }
  return "error";
}

Diagnosis diagnose(const ExitStatus& status, const std::vector<std::string>& tail) {
  for (auto it = tail.rbegin(); it != tail.rend(); ++it)
    for (const Marker& m : kMarkers)
      if (it->find(m.text) != std::string::npos) {
        Diagnosis d{m.kind, m.kind != FailureKind::kUserError,
                    std::string(m.reason) + ": " + trim(*it)};
        if (m.kind == FailureKind::kUserError) d.reason += " (restarting would fail the same way)";
        return d;
      }
  if (status.signaled) {
    switch (status.code) {
      case SIGSEGV:
      case SIGBUS:
      case SIGABRT:
      case SIGILL:
      case SIGFPE:
        return {FailureKind::kCrash, true,
                "crashed with " + signal_name(status.code) +
                    (status.code == SIGBUS ? " (a full /dev/shm is a common cause)" : "")};
      case SIGKILL:
        return {FailureKind::kKilled, true,
                "killed by SIGKILL (from outside: an operator, a scheduler or the kernel's OOM "
                "killer; `dmesg` tells which)"};
      default:
        return {FailureKind::kKilled, true, "killed by " + signal_name(status.code)};
    }
  }
  // cairn's commands exit 2 for bad input, as do argparse and CLI11 for bad flags.
  if (status.code == 2)
    return {FailureKind::kUserError, false,
            "exit code 2 (bad input or usage; restarting would fail the same way)"};
  std::string last;
  for (auto it = tail.rbegin(); it != tail.rend() && last.empty(); ++it) last = trim(*it);
  return {FailureKind::kError, true,
          "exit code " + std::to_string(status.code) + (last.empty() ? "" : ": " + last)};
}

}  // namespace cairn::elastic
