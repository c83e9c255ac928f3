// The dashboard's HTTP server (cpp-httplib): one page that follows a job live, its JSON API and
// Prometheus' /metrics, over a RunView.
//
//   GET /                        the page (its script and uPlot, embedded in the binary)
//   GET /api/status              the job at a glance (RunView::status)
//   GET /api/metrics?since=N&limit=M   metrics.jsonl rows from index N (default 0, at most
//                                M, default 10000): {"rows", "next", "total"}
//   GET /api/events?since=N&limit=M    events.jsonl the same way
//   GET /api/logs                {"logs": [names]}
//   GET /api/log?name=NAME&lines=N     the last N lines (default 200, at most 10000)
//   GET /metrics                 Prometheus' text format
//
// Bound to loopback by default. Bound to any other address it needs a token (the job's
// CAIRN_JOB_TOKEN), which every request must carry: `Authorization: Bearer TOKEN` or
// `?token=TOKEN` (the page passes on the one in its own address). Nothing changes the job.
// Errors are JSON {"error": "..."}: 400 for a bad parameter, 401 without the token, 404 for
// an unknown path or log.
#pragma once

#include <memory>
#include <string>

#include "cairn/core/status.h"
#include "cairn/dashboard/run_view.h"

namespace cairn::dashboard {

struct ServerOptions {
  std::string bind = "127.0.0.1";
  int port = 0;       // 0: a free port the kernel picks
  std::string token;  // required when `bind` is not a loopback address
};

// True for 127.0.0.0/8, ::1 and "localhost".
bool is_loopback(const std::string& address);

class Server {
 public:
  // Binds and serves on a thread of its own until stop() or destruction. InvalidArgument for a
  // non-loopback address without a token; IoError when the address cannot be bound.
  static Result<std::unique_ptr<Server>> Start(std::shared_ptr<RunView> view, ServerOptions o);
  ~Server();
  int port() const;
  // http://ADDRESS:PORT/ (with ?token= when one is needed).
  std::string url() const;
  void stop();

  struct Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cairn::dashboard
