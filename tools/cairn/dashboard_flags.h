// The dashboard inside `cairn run` and `cairn master` (--dashboard-port): the flags and the
// server they start over the process's run directory.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>

#include "cairn/core/status.h"
#include "cairn/dashboard/server.h"

namespace cairn::cli {

struct DashboardFlags {
  int port = -1;  // -1: no dashboard
  std::string bind = "127.0.0.1";
  bool control = false;   // POST /api/stop stops the job (cairn run only)
  std::string tls_cert;   // --dashboard-tls-cert: serve HTTPS
  std::string tls_key;    // --dashboard-tls-key
  bool insecure = false;  // --dashboard-insecure: plain HTTP off loopback
};

// Adds --dashboard-port, --dashboard-bind, --dashboard-tls-cert/--dashboard-tls-key and
// --dashboard-insecure, and --dashboard-control when `with_control` is given.
void add_dashboard_flags(CLI::App& cmd, DashboardFlags* flags, bool with_control);

// Starts the dashboard over `run_dir` when --dashboard-port was given (null otherwise) and
// prints its address. `token` guards it off loopback (the job's token); `stop_job` serves
// POST /api/stop when --dashboard-control was given.
Result<std::unique_ptr<dashboard::Server>> start_dashboard(
    const DashboardFlags& flags, const std::string& run_dir, const std::string& token,
    const std::string& who, std::function<Status(const std::string&)> stop_job = nullptr);

}  // namespace cairn::cli
