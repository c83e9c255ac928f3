// The dashboard inside `cairn run` and `cairn master` (see dashboard_flags.h).
#include "dashboard_flags.h"

#include <spdlog/spdlog.h>

#include <cstdio>

#include "cairn/core/net.h"

namespace cairn::cli {

void add_dashboard_flags(CLI::App& cmd, DashboardFlags* f, bool with_control) {
  auto* port = cmd.add_option("--dashboard-port", f->port,
                              "serve the live dashboard, its JSON API and Prometheus /metrics "
                              "on this port (0 picks a free one; the address is printed)")
                   ->check(CLI::Range(0, 65535));
  cmd.add_option("--dashboard-bind", f->bind,
                 "the dashboard's address; other than loopback, every request needs the job's "
                 "token")
      ->capture_default_str()
      ->needs(port);
  auto* cert = cmd.add_option("--dashboard-tls-cert", f->tls_cert,
                              "serve the dashboard over HTTPS with this PEM certificate chain "
                              "(with --dashboard-tls-key)")
                   ->needs(port);
  cmd.add_option("--dashboard-tls-key", f->tls_key, "the private key of --dashboard-tls-cert")
      ->needs(cert);
  cert->needs(cmd.get_option("--dashboard-tls-key"));
  cmd.add_flag("--dashboard-insecure", f->insecure,
               "serve plain HTTP on a --dashboard-bind other than loopback (the token crosses "
               "the network unencrypted)")
      ->needs(port)
      ->excludes(cert);
  if (with_control)
    cmd.add_flag("--dashboard-control", f->control,
                 "let the dashboard stop the job (POST /api/stop, a button on the page): the "
                 "workers get SIGTERM, save a checkpoint at the next step boundary and exit")
        ->needs(port);
}

Result<std::unique_ptr<dashboard::Server>> start_dashboard(
    const DashboardFlags& f, const std::string& run_dir, const std::string& token,
    const std::string& who, std::function<Status(const std::string&)> stop_job) {
  if (f.port < 0) return std::unique_ptr<dashboard::Server>();
  dashboard::ServerOptions o;
  o.bind = f.bind;
  o.port = f.port;
  if (!core::is_loopback_host(f.bind)) o.token = token;
  o.tls_cert_path = f.tls_cert;
  o.tls_key_path = f.tls_key;
  o.insecure = f.insecure;
  if (f.control) o.stop_job = std::move(stop_job);
  auto server = dashboard::Server::Start(std::make_shared<dashboard::RunView>(run_dir), o);
  if (!server.ok()) return server.status().WithContext("--dashboard-port");
  spdlog::info("dashboard: {}{}", (*server)->url(), f.control ? " (it can stop the job)" : "");
  std::printf("%s: dashboard at %s\n", who.c_str(), (*server)->url().c_str());
  std::fflush(stdout);
  return server;
}

}  // namespace cairn::cli
