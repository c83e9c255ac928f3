// One child process owned by the agent: started in its own process group with its output on
// pipes, signalled as a group, reaped exactly once. Destroying a running ProcessHandle kills its
// whole process group and reaps it, so no worker outlives the object that started it.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cairn/core/status.h"
#include "cairn/elastic/exit_status.h"

namespace cairn::elastic {

// An owned file descriptor, closed on destruction. Move-only.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

struct SpawnOptions {
  // argv[0] is a path (see find_executable); the child executes it directly.
  std::vector<std::string> argv;
  std::vector<std::string> env;  // the child's whole environment, "NAME=value"
  // Capture stdout and stderr on pipes (stdout_fd()/stderr_fd()); otherwise the child inherits
  // the agent's. stdin is always /dev/null.
  bool capture_output = true;
  double exec_timeout_s = 10.0;  // longest wait for the child to reach exec
  // A descriptor of the agent the child gets as its descriptor 3 (e.g. a standby's activation
  // socket); -1: none. The agent's copy stays its own.
  int child_fd3 = -1;
};

// Not thread-safe; one thread owns it.
class ProcessHandle {
 public:
  // Starts the child: its own process group (pgid = pid), default signal dispositions and an
  // empty signal mask, SIGKILL when the agent dies (PR_SET_PDEATHSIG), no inherited descriptors
  // beyond 0-2 (and 3 with child_fd3). Fails (kNotFound / kIoError, naming the command) if exec
  // fails.
  static Result<std::unique_ptr<ProcessHandle>> Spawn(const SpawnOptions& options);

  ProcessHandle(const ProcessHandle&) = delete;
  ProcessHandle& operator=(const ProcessHandle&) = delete;
  // Kills the process group with SIGKILL if the child was not reaped, then reaps it (waiting at
  // most a few seconds).
  ~ProcessHandle();

  pid_t pid() const { return pid_; }
  // Read ends of the output pipes (non-blocking), -1 when not captured or after close_output.
  int stdout_fd() const { return out_.get(); }
  int stderr_fd() const { return err_.get(); }
  void close_stdout() { out_.reset(); }
  void close_stderr() { err_.reset(); }
  // Readable once the child has exited; -1 when the kernel has no pidfd (then poll with a
  // bounded timeout and call try_reap).
  int exit_fd() const { return pidfd_.get(); }

  // Sends `signal` to the child's process group. No-op once reaped.
  void signal_group(int signal);
  // If the child has exited: kills what is left of its process group (SIGKILL), reaps the child
  // and returns how it ended. Never blocks. Returns the same status on later calls.
  std::optional<ExitStatus> try_reap();
  // try_reap, waiting up to `timeout_s` for the child to exit.
  std::optional<ExitStatus> wait(double timeout_s);
  bool reaped() const { return status_.has_value(); }

 private:
  ProcessHandle() = default;

  pid_t pid_ = -1;
  UniqueFd out_, err_, pidfd_;
  std::optional<ExitStatus> status_;
};

}  // namespace cairn::elastic
