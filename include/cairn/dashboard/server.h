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
//   GET /plan.svg                the run's plan picture (parallel.plan=auto), 404 without one
//   GET /metrics                 Prometheus' text format
//   GET /healthz                 "ok": the process answers (no token needed, nothing of the job)
//   POST /api/stop               only with ServerOptions::stop_job (--dashboard-control): asks
//                                the job to stop cleanly, with a checkpoint; 202 once asked
//
// Bound to loopback by default. Bound to any other address it needs a token (the job's
// CAIRN_JOB_TOKEN), which every request must carry: `Authorization: Bearer TOKEN` or
// `?token=TOKEN` (the page passes on the one in its own address). Nothing else changes the
// job. /api/stop also needs the header `X-Cairn-Request: stop`, which a page of another site
// cannot send without the server's consent (a CORS preflight it never gets), so that a web page
// cannot stop a job on this machine's loopback. Errors are JSON {"error": "..."}: 400 for a bad
// parameter or a missing header, 401 without the token, 403 for /api/stop without control,
// 404 for an unknown path or log, 405 for a GET of /api/stop.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "cairn/core/status.h"
#include "cairn/dashboard/run_view.h"

namespace cairn::dashboard {

struct ServerOptions {
  std::string bind = "127.0.0.1";
  int port = 0;       // 0: a free port the kernel picks
  std::string token;  // required when `bind` is not a loopback address
  // Both or neither: serve HTTPS with this PEM certificate chain and private key.
  std::string tls_cert_path;
  std::string tls_key_path;
  // Off loopback without TLS the token would cross the network in plaintext: refused unless
  // this is set (a warning is logged then).
  bool insecure = false;
  // Set: POST /api/stop calls it with the requester's address (it must return at once; the
  // job stops on its own time). Unset: the dashboard only reads.
  std::function<Status(const std::string& requester)> stop_job;
};

class Server {
 public:
  // Binds and serves on a thread of its own until stop() or destruction. InvalidArgument for a
  // non-loopback address without a token, or without TLS and without `insecure`, and for TLS
  // files that cannot be used; IoError when the address cannot be bound.
  static Result<std::unique_ptr<Server>> Start(std::shared_ptr<RunView> view, ServerOptions o);
  ~Server();
  int port() const;
  // http(s)://ADDRESS:PORT/, with "?token=$CAIRN_JOB_TOKEN" (literally: the token itself is
  // never printed or logged) when one is needed.
  std::string url() const;
  void stop();

  struct Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cairn::dashboard
