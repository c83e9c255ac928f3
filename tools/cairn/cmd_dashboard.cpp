// `cairn dashboard RUN_DIR`: serve a run directory's live dashboard, its JSON API and Prometheus
// metrics until SIGINT or SIGTERM.
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "cairn/core/net.h"
#include "cairn/dashboard/server.h"
#include "commands.h"
#include "stop_signals.h"

namespace cairn::cli {
namespace {

struct DashboardCommandFlags {
  std::string run_dir;
  std::string bind = "127.0.0.1";
  int port = 8265;
  std::string tls_cert;
  std::string tls_key;
  bool insecure = false;
};

void run_dashboard(const DashboardCommandFlags& f) {
  std::error_code ec;
  if (!std::filesystem::is_directory(f.run_dir, ec))
    throw StatusError(Status::InvalidArgument(
        "run directory " + f.run_dir +
        (std::filesystem::exists(f.run_dir, ec) ? " is not a directory" : " does not exist")));
  dashboard::ServerOptions o;
  o.bind = f.bind;
  o.port = f.port;
  o.tls_cert_path = f.tls_cert;
  o.tls_key_path = f.tls_key;
  o.insecure = f.insecure;
  if (const char* t = std::getenv("CAIRN_JOB_TOKEN"); t && !core::is_loopback_host(f.bind))
    o.token = t;
  serve_until_stop_signal("dashboard", [&] {
    auto server =
        dashboard::Server::Start(std::make_shared<dashboard::RunView>(f.run_dir), std::move(o));
    if (!server.ok()) throw StatusError(server.status());
    std::printf("cairn dashboard: %s (run directory %s)\n", (*server)->url().c_str(),
                f.run_dir.c_str());
    std::fflush(stdout);
    return std::move(server).value();
  });
}

}  // namespace

void register_dashboard_command(CLI::App& app) {
  auto f = std::make_shared<DashboardCommandFlags>();
  auto* cmd = app.add_subcommand(
      "dashboard", "Serve a run's live dashboard, its JSON API and Prometheus /metrics");
  cmd->add_option("run_dir", f->run_dir, "the run directory (cairn train/run --run-dir)")
      ->required();
  cmd->add_option("--bind", f->bind,
                  "address to listen on; other than loopback, every request needs "
                  "$CAIRN_JOB_TOKEN")
      ->capture_default_str();
  cmd->add_option("--port", f->port, "port to listen on; 0 picks a free one (printed)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  auto* cert = cmd->add_option("--tls-cert", f->tls_cert,
                               "serve HTTPS with this PEM certificate chain (with --tls-key)");
  cmd->add_option("--tls-key", f->tls_key, "the private key of --tls-cert")->needs(cert);
  cert->needs(cmd->get_option("--tls-key"));
  cmd->add_flag("--insecure", f->insecure,
                "serve plain HTTP on a --bind other than loopback (the token crosses the network "
                "unencrypted)")
      ->excludes(cert);
  cmd->footer(
      "Reads RUN_DIR's metrics.jsonl, events.jsonl and logs as they grow (a finished run too)\n"
      "and serves, until SIGINT or SIGTERM:\n"
      "  /                 the page: status, loss / throughput / MFU / lr / gradient norm /\n"
      "                    step time / memory charts (by step or time), events, log tails\n"
      "  /api/status       the job at a glance (JSON)\n"
      "  /api/metrics?since=N&limit=M, /api/events?since=N&limit=M   rows from index N\n"
      "  /api/logs, /api/log?name=NAME&lines=N   the run's logs and one's last lines\n"
      "  /healthz          \"ok\" for liveness probes (no token, nothing of the job)\n"
      "  /plan.svg         the plan's picture, when the run has one (parallel.plan=auto)\n"
      "  /metrics          Prometheus text format (cairn_train_loss, cairn_tokens_total, ...)\n"
      "Nothing in it changes the job (`cairn run --dashboard-port P --dashboard-control` serves\n"
      "the same page inside the job, with a stop button).\n"
      "Exit code: 0 after a signal, 2 for bad flags, a missing run directory or a non-loopback\n"
      "--bind without CAIRN_JOB_TOKEN (or without --tls-cert and without --insecure), 1 when it\n"
      "cannot listen (port in use).\n"
      "\nExample:\n"
      "  cairn train configs/gpt-kjv.yaml --run-dir runs/kjv &\n"
      "  cairn dashboard runs/kjv --port 8265    # then open http://127.0.0.1:8265/\n"
      "  curl -s localhost:8265/metrics | grep cairn_train_loss\n"
      "  # for other machines: HTTPS and the job's token (certificates: README, 'TLS')\n"
      "  CAIRN_JOB_TOKEN=... cairn dashboard runs/kjv --bind 0.0.0.0 --tls-cert tls/node.pem \\\n"
      "    --tls-key tls/node.key\n");
  cmd->callback([f] { run_dashboard(*f); });
}

}  // namespace cairn::cli
