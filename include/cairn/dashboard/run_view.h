// What a run directory holds, read while it grows: the dashboard's model of a job. The trainer
// (metrics.jsonl), the agent, the workers and the persisters (events.jsonl) and every process's
// log append to files in the run directory; a RunView follows them and answers the dashboard's
// questions (rows since an index, the job's status, a log's tail, the Prometheus text).
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cairn/core/mutex.h"
#include "cairn/core/status.h"

namespace cairn::dashboard {

// Follows one JSON-lines file: refresh() reads what was appended since the previous call. A
// last line without its newline (a writer in the middle of it) waits for the next refresh; a
// complete line that is not a JSON object is counted in skipped() (the first of its bytes in
// last_error()), never thrown. A file that shrank was replaced: it is read again from the start.
class JsonLinesTail {
 public:
  explicit JsonLinesTail(std::string path) : path_(std::move(path)) {}
  // How many objects the file gained.
  size_t refresh();
  const std::vector<nlohmann::json>& rows() const { return rows_; }
  int64_t skipped() const { return skipped_; }
  const std::string& last_error() const { return last_error_; }

 private:
  std::string path_;
  uint64_t offset_ = 0;
  std::string partial_;  // a last line still without its newline
  std::vector<nlohmann::json> rows_;
  int64_t skipped_ = 0;
  std::string last_error_;
};

// A run directory (cairn train --run-dir, cairn run --run-dir) seen by the dashboard.
// Thread-safe: the server's threads share one.
class RunView {
 public:
  explicit RunView(std::string run_dir);

  const std::string& run_dir() const { return dir_; }
  // metrics.jsonl rows [since, since + limit) as {"rows": [...], "next": index, "total": n}.
  nlohmann::json metrics(size_t since, size_t limit);
  // events.jsonl the same way.
  nlohmann::json events(size_t since, size_t limit);
  // The job at a glance: step and max_steps, the last loss, validation loss, tokens/s, MFU,
  // learning rate, gradient norm and memory peak, the ETA from the recent step times, the
  // world size, restarts and failures, goodput when the agent reported it, whether it ended,
  // and the lines the dashboard could not read.
  nlohmann::json status();
  // The log files of the run directory (*.log in it and in logs/), by name relative to it.
  std::vector<std::string> logs() const;
  // The last `lines` lines of log `name` (one of logs(); anything else is NotFound).
  Result<std::string> log_tail(const std::string& name, size_t lines) const;
  // The picture of the run's plan (plan.svg: per-stage predicted time and memory breakdown,
  // written when parallel.plan=auto chose the layout). NotFound without one.
  Result<std::string> plan_picture() const;
  // The Prometheus text exposition (format 0.0.4) of the job's metrics.
  std::string prometheus();

 private:
  void refresh() CAIRN_REQUIRES(mu_);
  nlohmann::json status_locked() CAIRN_REQUIRES(mu_);

  std::string dir_;
  core::Mutex mu_;
  JsonLinesTail metrics_ CAIRN_GUARDED_BY(mu_);
  JsonLinesTail events_ CAIRN_GUARDED_BY(mu_);
};

}  // namespace cairn::dashboard
