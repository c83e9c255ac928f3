// `cairn master`: run the elastic job master (rendezvous, membership, heartbeats, journal) as its
// own process until SIGINT or SIGTERM.
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>

#include "cairn/core/fs.h"
#include "cairn/core/proc.h"
#include "cairn/elastic/launch_options.h"
#include "cairn/elastic/master_server.h"
#include "commands.h"
#include "dashboard_flags.h"
#include "stop_signals.h"

namespace cairn::cli {
namespace {

struct MasterFlags {
  std::string host = "0.0.0.0";
  int port = elastic::kDefaultRdzvPort;
  std::string job_token;
  std::string journal;
  std::string nnodes = "1";
  int node_unit = 1;
  double rdzv_wait_s = 10;
  double heartbeat_timeout_s = 30;
  int max_node_failures = 3;
  bool network_check = false;
  bool exclude_straggler = false;
  double network_check_timeout_s = 60;
  double max_calls_per_s = 1000;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  bool insecure = false;
  std::string run_dir;
  DashboardFlags dashboard;
};

void run_master(const MasterFlags& f) {
  elastic::MasterServerOptions o;
  o.listen_address = (f.host.find(':') != std::string::npos ? "[" + f.host + "]" : f.host) + ":" +
                     std::to_string(f.port);
  o.job_token = f.job_token;
  if (o.job_token.empty()) {
    const char* env = std::getenv("CAIRN_JOB_TOKEN");
    if (env) o.job_token = env;
  }
  if (o.job_token.empty())
    throw StatusError(Status::InvalidArgument(
        "cairn master needs a job token: set CAIRN_JOB_TOKEN (or pass --job-token); every "
        "agent of the job must use the same one"));
  auto nnodes = elastic::parse_nnodes(f.nnodes);
  if (!nnodes.ok()) throw StatusError(nnodes.status());
  o.rdzv.min_nodes = nnodes->first;
  o.rdzv.max_nodes = nnodes->second;
  o.rdzv.node_unit = f.node_unit;
  o.rdzv.wait_s = f.rdzv_wait_s;
  o.rdzv.heartbeat_timeout_s = f.heartbeat_timeout_s;
  o.rdzv.max_node_failures = f.max_node_failures;
  o.network_check = f.network_check;
  o.node_check.exclude_stragglers = f.exclude_straggler;
  o.node_check.timeout_s = f.network_check_timeout_s;
  o.journal_path = f.journal;
  o.max_calls_per_s = f.max_calls_per_s;
  o.tls_cert_path = f.tls_cert;
  o.tls_key_path = f.tls_key;
  o.tls_client_ca_path = f.tls_client_ca;
  o.insecure = f.insecure;
  if (!f.run_dir.empty()) {
    if (Status s = core::make_dirs(f.run_dir); !s.ok()) throw StatusError(s);
    o.events_path = f.run_dir + "/events.jsonl";
  }
  if (o.journal_path.empty())
    spdlog::warn("no --journal: a restarted master will not know the job's nodes and rounds");

  // Every node holds a connection or two; thousands of nodes need more than the usual 1024 files.
  const int64_t files = core::raise_open_files_limit();
  if (files >= 0 && files < 4 * int64_t(o.rdzv.max_nodes) + 64)
    spdlog::warn("at most {} open files (ulimit -n): fewer than {} nodes' connections need", files,
                 o.rdzv.max_nodes);
  serve_until_stop_signal("master", [&] {
    auto server = elastic::MasterServer::Start(o);
    if (!server.ok()) throw StatusError(server.status());
    std::printf("cairn master: listening on %s (nodes %d:%d, unit %d, %s)\n",
                (*server)->address().c_str(), o.rdzv.min_nodes, o.rdzv.max_nodes, o.rdzv.node_unit,
                o.tls_cert_path.empty()        ? "plaintext"
                : o.tls_client_ca_path.empty() ? "TLS"
                                               : "TLS, client certificates required");
    std::fflush(stdout);
    auto dashboard = start_dashboard(f.dashboard, f.run_dir, o.job_token, "cairn master");
    if (!dashboard.ok()) throw StatusError(dashboard.status());
    return std::make_pair(std::move(server).value(), std::move(dashboard).value());
  });
}

}  // namespace

void register_master_command(CLI::App& app) {
  auto f = std::make_shared<MasterFlags>();
  auto* cmd = app.add_subcommand(
      "master", "Run the elastic job master: rendezvous, membership, heartbeats, journal");
  cmd->add_option("--host", f->host, "address to listen on")->capture_default_str();
  cmd->add_option("--port", f->port, "port to listen on; 0 picks a free one (printed)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--job-token", f->job_token,
                  "shared secret every call must carry (default: $CAIRN_JOB_TOKEN; prefer the "
                  "environment, command lines are visible to other users)");
  cmd->add_option("--journal", f->journal,
                  "append-only journal; a master restarted with the same file resumes the job");
  cmd->add_option("--nnodes", f->nnodes, "nodes per round, N or MIN:MAX")->capture_default_str();
  cmd->add_option("--node-unit", f->node_unit, "rounds have a multiple of this many nodes")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--rdzv-wait", f->rdzv_wait_s,
                  "seconds to wait for more nodes after MIN have joined")
      ->check(non_negative())
      ->capture_default_str();
  cmd->add_option("--max-node-failures", f->max_node_failures,
                  "a node whose workers failed this many times (crashes, hangs, errors; not lost "
                  "peers or outside kills) is excluded; 0 = never")
      ->check(non_negative());
  cmd->add_option("--heartbeat-timeout", f->heartbeat_timeout_s,
                  "seconds of silence after which a node is dropped")
      ->check(positive())
      ->capture_default_str();
  auto* check = cmd->add_flag(
      "--network-check", f->network_check,
      "before a round with unchecked nodes starts, the nodes time a matmul and an all-reduce in "
      "pairs (cairn node-check); a node that fails both check rounds is excluded, one slower "
      "than twice the median of the others is reported as a straggler");
  cmd->add_flag("--exclude-straggler", f->exclude_straggler, "exclude the check's stragglers too")
      ->needs(check);
  cmd->add_option("--network-check-timeout", f->network_check_timeout_s,
                  "seconds one node's check may take")
      ->check(CLI::Range(1.0, 86400.0))
      ->capture_default_str()
      ->needs(check);
  cmd->add_option("--max-calls-per-s", f->max_calls_per_s,
                  "calls per second one client address may make before it is told to retry "
                  "later (raise it when many nodes reach the master through one NAT address)")
      ->check(CLI::Range(1.0, 1e9))
      ->capture_default_str();
  auto* cert = cmd->add_option("--tls-cert", f->tls_cert,
                               "PEM certificate chain: serve TLS (with --tls-key)");
  cmd->add_option("--tls-key", f->tls_key, "PEM private key of --tls-cert")->needs(cert);
  cert->needs(cmd->get_option("--tls-key"));
  cmd->add_option("--tls-client-ca", f->tls_client_ca,
                  "PEM CA certificates: every client must present a certificate they sign "
                  "(mutual TLS)")
      ->needs(cert);
  cmd->add_flag("--insecure", f->insecure,
                "serve plaintext on an address other machines reach (job tokens cross the "
                "network unencrypted; a warning is logged). Without TLS and without this, only "
                "a loopback --host is accepted")
      ->excludes(cert);
  auto* run_dir = cmd->add_option(
      "--run-dir", f->run_dir,
      "directory for the master's events.jsonl (nodes joining, dropped, excluded; rounds), "
      "which its dashboard shows");
  add_dashboard_flags(*cmd, &f->dashboard, /*with_control=*/false);
  cmd->get_option("--dashboard-port")->needs(run_dir);
  cmd->footer(
      "Serves cairn.v1.Master over gRPC until SIGINT or SIGTERM. A round completes at once when\n"
      "MAX nodes have joined, or with at least MIN after --rdzv-wait seconds; ranks are sorted by\n"
      "node id, and nodes of the previous round keep their order. Exit code: 0 after a signal,\n"
      "2 for bad flags or a missing job token, 1 when the master cannot start (port in use,\n"
      "corrupt journal).\n"
      "\nExample:\n"
      "  export CAIRN_JOB_TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n')\n"
      "  cairn master --port 29400 --nnodes 2:4 --journal runs/master.journal \\\n"
      "    --tls-cert master.pem --tls-key master.key --tls-client-ca ca.pem\n"
      "  cairn master --host 127.0.0.1 --port 29400 --nnodes 2:4 --network-check\n"
      "  # membership over time on a dashboard (http://127.0.0.1:8266/):\n"
      "  cairn master --port 29400 --nnodes 1:4 --insecure --run-dir runs/master \\\n"
      "    --dashboard-port 8266\n"
      "Without TLS the master only listens on loopback unless --insecure is given (the README's\n"
      "'TLS' section makes the certificates with openssl).");
  cmd->callback([f] { run_master(*f); });
}

}  // namespace cairn::cli
