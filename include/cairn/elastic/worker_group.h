// The workers of one node for one round: started together, their output forwarded line by line
// to per-rank log files and the terminal, their exits observed, stopped together. Destroying the
// group kills and reaps every worker still running.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cairn/core/status.h"
#include "cairn/elastic/exit_status.h"

namespace cairn::elastic {

class StandbyPool;

struct WorkerSpec {
  int rank = 0;                   // global rank: names the log file and prefixes echoed lines
  int local_rank = 0;             // index on this node
  std::vector<std::string> argv;  // argv[0] is an executable path (see find_executable)
  std::vector<std::string> env;   // the whole environment, "NAME=value"
};

struct WorkerGroupOptions {
  // Output of rank R is appended to <log_dir>/worker-<R>.log (stdout and stderr, one line per
  // write, without prefix). Empty: no log files. REQUIRES: the directory exists.
  std::string log_dir;
  // Each output line is echoed as "[rank R] line\n" in one write, stdout lines to
  // echo_stdout_fd and stderr lines to echo_stderr_fd; -1 echoes nothing.
  int echo_stdout_fd = 1;
  int echo_stderr_fd = 2;
  size_t tail_lines = 20;  // lines of output kept per worker for failure reports
  std::string log_header;  // if non-empty, appended to every log file as a line before starting
};

struct WorkerExit {
  int rank = 0;
  int local_rank = 0;
  pid_t pid = 0;
  ExitStatus status;
};

// Not thread-safe: one thread (the agent's) drives it.
class WorkerGroup {
 public:
  // Starts every worker: by activating its local rank's standby in `standbys` when there is a
  // usable one, otherwise as a new process. On failure, workers already started are killed and
  // reaped, and the status names the rank and the command.
  static Result<std::unique_ptr<WorkerGroup>> Start(std::vector<WorkerSpec> specs,
                                                    const WorkerGroupOptions& options,
                                                    StandbyPool* standbys = nullptr);
  // Workers started by activating a standby.
  int num_from_standby() const { return from_standby_; }
  WorkerGroup(const WorkerGroup&) = delete;
  WorkerGroup& operator=(const WorkerGroup&) = delete;
  ~WorkerGroup();

  // Waits up to `timeout_s` (returning early on output, exits or a signal to this process),
  // forwards the output that arrived, reaps workers that exited and returns them, lowest rank
  // first. A worker's output written before it exited is forwarded before its exit is returned.
  std::vector<WorkerExit> poll(double timeout_s);

  // Sends `signal` to every running worker's process group.
  void signal_all(int signal);

  // Sends `signal` to every running worker, forwards output while waiting up to `grace_s` for
  // them to exit (less if `hurry` returns true), then SIGKILLs and reaps the rest. Returns the
  // exits observed, lowest rank first within each batch.
  std::vector<WorkerExit> stop(int signal, double grace_s,
                               const std::function<bool()>& hurry = nullptr);

  // Forwards remaining output until every pipe is closed, waiting at most `timeout_s`; then
  // flushes partial lines and closes what is left.
  void drain(double timeout_s);

  int size() const { return int(workers_.size()); }
  int num_running() const;
  // The pid of local worker `local_rank` while it runs, else 0.
  pid_t pid(int local_rank) const;
  // Sends `signal` to one running worker's process group.
  void signal_one(int local_rank, int signal);
  // The last lines (up to tail_lines) of local worker `local_rank`'s output.
  std::vector<std::string> tail(int local_rank) const;
  // Log file of local worker `local_rank`; empty without log_dir.
  std::string log_path(int local_rank) const;

 private:
  struct Worker;
  explicit WorkerGroup(const WorkerGroupOptions& options);
  // Reads what is available on one stream (0 = stdout, 1 = stderr) of worker `w`.
  void read_stream(Worker& w, int stream);
  void emit_line(Worker& w, int stream, std::string_view line);
  void close_stream(Worker& w, int stream);
  // Reaps exited workers into `out`, forwarding their remaining buffered output first.
  void collect_exits(std::vector<WorkerExit>* out);

  WorkerGroupOptions options_;
  std::vector<std::unique_ptr<Worker>> workers_;
  int from_standby_ = 0;
};

}  // namespace cairn::elastic
