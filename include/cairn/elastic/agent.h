// The node agent behind `cairn run`: asks the rendezvous for the world, starts the local
// workers with torchrun's environment, supervises them, restarts the group after a failure up
// to a limit, forwards the agent's SIGINT/SIGTERM, and journals what happened to events.jsonl.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cairn/core/status.h"
#include "cairn/elastic/diagnosis.h"
#include "cairn/elastic/goodput.h"
#include "cairn/elastic/rendezvous.h"
#include "cairn/elastic/worker_env.h"
#include "cairn/elastic/worker_group.h"

namespace cairn::elastic {

// Written by the agent process's signal handlers (lock-free atomics only), read by run_agent.
struct Interrupt {
  std::atomic<int> signal{0};  // the last signal received, 0 = none
  std::atomic<int> count{0};   // signals received; a second one skips the grace period
};

// Receives the events of services the agent hosts (any thread).
using EventSink = std::function<void(const std::string& event, const nlohmann::json& fields)>;

// What the agent hosts for one round of workers, e.g. the flash-checkpoint persister.
class RoundServices {
 public:
  virtual ~RoundServices() = default;
  // Called after the round's workers stopped because one failed or the agent was
  // interrupted: persists what they left in shared memory. Returns the fields of a
  // `checkpoint_persisted` event, or null when there was nothing to persist.
  virtual Result<nlohmann::json> persist_unsaved(const std::string& reason) = 0;
  // The same, handed to the background (the workers are about to restart): returns at once
  // with {"step": S} or null.
  virtual Result<nlohmann::json> queue_unsaved() = 0;
};

struct AgentOptions {
  std::vector<std::string> command;     // argv of every worker; argv[0] an executable path
  int max_restarts = 0;                 // restarts of the whole local group after a failure
  double monitor_interval_s = 0.1;      // longest sleep between checks of workers and signals
  double grace_period_s = 10.0;         // SIGTERM (or the forwarded signal) → SIGKILL delay
  double rendezvous_timeout_s = 900.0;  // longest wait for the world of one round
  // A worker that reported step progress (cairn train does, every step) and then reports none
  // for this long is hung: its threads' stacks go to logs/hang-rank-<R>.txt and the agent's
  // log, then the group is restarted like after a failure. 0 = off.
  double hang_timeout_s = 0;
  // Keep a warm standby process of the command per local rank (see standby.h) from the first
  // step of each round on, and start restarted workers by activating them. Only for a command
  // that calls await_activation_if_standby (cairn itself).
  bool standby = false;
  // Run directory. REQUIRES: exists. The agent appends to <run_dir>/events.jsonl and writes
  // <run_dir>/logs/worker-<rank>.log.
  std::string run_dir;
  Env base_env;            // environment every worker inherits before torchrun's variables
  int num_cores = 1;       // for OMP_NUM_THREADS
  int echo_stdout_fd = 1;  // terminal echo of worker output (see WorkerGroupOptions)
  int echo_stderr_fd = 2;
  size_t tail_lines = 20;                // lines of a failed worker's output quoted in the summary
  const Interrupt* interrupt = nullptr;  // nullptr: the agent is never interrupted
  // Starts the services of one round, given this node's global ranks; they live until the
  // round's workers have stopped (and persist_unsaved has run after a failure). May be empty.
  std::function<Result<std::unique_ptr<RoundServices>>(const std::vector<int>& ranks, EventSink)>
      start_round;
};

struct AgentResult {
  // 0 when every worker exited 0; the failed worker's exit code (128 + signal if killed) when
  // no restart was left; 128 + signal when the agent itself was interrupted.
  int exit_code = 0;
  int restarts = 0;                       // restarts performed
  int interrupt_signal = 0;               // non-zero when the agent was interrupted
  std::optional<WorkerExit> failure;      // the failure that ended the job, if one did
  std::optional<Diagnosis> diagnosis;     // what that failure means
  std::optional<Goodput> goodput;         // node 0, when the workers wrote metrics.jsonl
  std::vector<std::string> failure_tail;  // that worker's last lines of output
  std::string failure_log;                // that worker's log file
  std::string summary;  // human-readable account of how the job ended (may span lines)
};

// Runs this node's part of the job to the end. Every wait is bounded by the options' intervals
// and grace periods. Returns non-ok only when the agent itself cannot go on: the rendezvous
// failed, a worker could not be started, or the run directory is unusable; workers are
// stopped and reaped before it returns either way.
Result<AgentResult> run_agent(Rendezvous& rendezvous, const AgentOptions& options);

}  // namespace cairn::elastic
