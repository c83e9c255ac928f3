// Warm standby workers. A restarted cairn worker spends most of its start before main: dynamic
// linking of libtorch and its static initializers (0.4 s or more here). The agent therefore
// starts one process of the worker command per local rank ahead of need; the process parks at
// the top of main (await_activation_if_standby) until the agent hands it a round's environment,
// then runs as if it had just been started with it. A standby never does anything rank- or
// round-specific before its activation, so a standby started in one round serves any later
// round whose environment differs only in the round variables (is_round_variable).
//
// Protocol: the standby's descriptor 3 is one end of a Unix stream socket and CAIRN_STANDBY_FD=3
// is in its environment. Activation is "cairn-activate 1\n" followed by NUL-terminated
// "NAME=value" entries (the whole new environment), then the agent shuts down its sending side;
// the standby answers "k" once it has taken the environment (no answer within 5 s, and the
// agent starts the rank as a new process). A socket closed with nothing written retires the
// standby: it exits 0. A standby whose binary has since been replaced is retired, not used.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cairn/core/status.h"
#include "cairn/elastic/process.h"
#include "cairn/elastic/worker_env.h"
#include "cairn/elastic/worker_group.h"

namespace cairn::elastic {

inline constexpr char kStandbyFdVariable[] = "CAIRN_STANDBY_FD";
// Bytes of heap the standby faults in while it waits (see StandbyPool::fill).
inline constexpr char kStandbyPrefaultVariable[] = "CAIRN_STANDBY_PREFAULT";
// The standby's process name while it waits in main (before main it is still "cairn"; the
// agent's workers_started event names the workers' pids).
inline constexpr char kStandbyProcessName[] = "cairn-standby";

// The variables that change from round to round (rank, world, master, restart count, run id);
// every other variable must be equal in a standby's environment and the round's for it to be
// used.
bool is_round_variable(std::string_view name);

// Worker side, first thing in main. Without CAIRN_STANDBY_FD: returns at once. With it: faults
// in CAIRN_STANDBY_PREFAULT bytes of heap and frees them again, kept for reuse by
// core::keep_freed_memory (a worker's first allocations then find their pages resident:
// 0.5 ms per MB here), waits for the activation, replaces the whole environment with the one
// received and returns; exits 0 if the agent retires the standby, 2 (with a message) on a
// malformed activation.
void await_activation_if_standby();

// The activation message for `env` ("NAME=value" entries). Exposed for tests.
std::string activation_message(const std::vector<std::string>& env);
// Parses an activation message into its entries. kInvalidArgument naming the fault.
Result<std::vector<std::string>> parse_activation(std::string_view message);

// Agent side: one parked process per local rank, owned by one thread (the agent's).
class StandbyPool {
 public:
  StandbyPool();
  StandbyPool(const StandbyPool&) = delete;
  StandbyPool& operator=(const StandbyPool&) = delete;
  ~StandbyPool();  // retires and reaps every standby

  // Starts a standby for each spec's local rank that has none: the spec's command and its
  // environment without the round variables, asked to fault in prefault_bytes[local rank] of
  // heap (0 or missing: none). A standby that cannot be started is logged and skipped (the
  // next round then starts that rank afresh).
  void fill(const std::vector<WorkerSpec>& specs, const std::vector<int64_t>& prefault_bytes = {});
  // The standby of spec.local_rank activated with spec's environment, or nullptr when there
  // is none that still runs with the same command and non-round environment (it is retired).
  std::unique_ptr<ProcessHandle> take(const WorkerSpec& spec);
  int size() const { return int(standbys_.size()); }
  // The pid of local rank `local_rank`'s standby, or 0.
  pid_t pid(int local_rank) const;
  void clear();

 private:
  struct Standby;
  std::vector<std::unique_ptr<Standby>> standbys_;
};

}  // namespace cairn::elastic
