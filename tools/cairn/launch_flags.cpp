// `cairn run` flags registered with CLI11; elastic::resolve_launch_options validates them.
#include "launch_flags.h"

#include <string>

namespace cairn::cli {

using elastic::kDefaultMasterPort;
using elastic::kDefaultRdzvPort;
using elastic::LaunchFlags;

namespace {
// The flags of --rdzv-backend cairn and of the embedded master.
void add_elastic_flags(CLI::App& cmd, LaunchFlags* f) {
  cmd.add_option("--node-id,--node_id", f->node_id,
                 "--rdzv-backend cairn: this node's stable name (default: the host name)")
      ->option_text("ID");
  cmd.add_option("--node-host,--node_host", f->node_host,
                 "--rdzv-backend cairn: the address other nodes reach this node at (default: the "
                 "local address that routes to the master)")
      ->option_text("ADDR");
  cmd.add_option("--job-token,--job_token", f->job_token,
                 "--rdzv-backend cairn: the job's token (default: $CAIRN_JOB_TOKEN)")
      ->option_text("TOKEN");
  cmd.add_option("--tls-ca", f->tls_ca,
                 "--rdzv-backend cairn: TLS to the master, whose certificate these PEM CA "
                 "certificates must sign (the workers' calls too)")
      ->option_text("FILE");
  cmd.add_option("--tls-cert", f->tls_cert,
                 "--rdzv-backend cairn: this node's PEM certificate, shown to a master that asks "
                 "for one (mutual TLS); with --embed-master also the master's certificate")
      ->option_text("FILE");
  cmd.add_option("--tls-key", f->tls_key, "the private key of --tls-cert")->option_text("FILE");
  cmd.add_flag("--tls-verify-clients", f->tls_verify_clients,
               "embedded master: every node must present a certificate --tls-ca signs");
  cmd.add_flag("--insecure", f->insecure,
               "--rdzv-backend cairn: talk to (or, with --embed-master, serve) a master off "
               "loopback in plaintext; the job token crosses the network unencrypted (a warning "
               "is logged). Without TLS and without this, only a loopback endpoint is accepted");
  cmd.add_flag("--embed-master,--embed_master", f->embed_master,
               "--rdzv-backend cairn: run the elastic master inside this agent, listening on "
               "the --rdzv-endpoint port");
  cmd.add_option("--rdzv-wait,--rdzv_wait", f->rdzv_wait,
                 "embedded master: seconds to wait at >= MIN nodes for more (default 10)")
      ->option_text("SECONDS");
  cmd.add_option("--heartbeat-timeout,--heartbeat_timeout", f->heartbeat_timeout,
                 "embedded master: a node silent this long is dropped (default 30)")
      ->option_text("SECONDS");
  cmd.add_flag("--network-check,--network_check", f->network_check,
               "embedded master: before a round with unchecked nodes starts, the nodes time a "
               "matmul and an all-reduce in pairs; a node that fails both check rounds is "
               "excluded, one slower than twice the others' median is reported as a straggler");
  cmd.add_flag("--exclude-straggler,--exclude_straggler", f->exclude_straggler,
               "with --network-check: exclude the stragglers too");
  cmd.add_option("--network-check-timeout,--network_check_timeout", f->network_check_timeout,
                 "with --network-check: seconds one node's check may take (default 60)")
      ->option_text("SECONDS");
}
}  // namespace

void add_launch_flags(CLI::App& cmd, LaunchFlags* f) {
  cmd.allow_extras();
  cmd.add_option("--nnodes", f->nnodes,
                 "nodes in the job: N, or MIN:MAX (static rendezvous fixes the world at MAX)")
      ->option_text("N|MIN:MAX");
  cmd.add_option("--nproc-per-node,--nproc_per_node", f->nproc_per_node,
                 "workers started on this node (default 1)")
      ->option_text("N");
  cmd.add_option("--node-rank,--node_rank", f->node_rank,
                 "this node's index, 0 <= R < nnodes (default 0)")
      ->option_text("R");
  cmd.add_option("--rdzv-endpoint,--rdzv_endpoint", f->rdzv_endpoint,
                 "HOST[:PORT] of node 0, where rank 0 serves the store (default port " +
                     std::to_string(kDefaultRdzvPort) + "); required for several nodes")
      ->option_text("HOST:PORT");
  cmd.add_option("--rdzv-backend,--rdzv_backend", f->rdzv_backend,
                 "rendezvous kind: 'static' (default: a fixed set of nodes, each given its "
                 "--node-rank), 'cairn' (nodes join the elastic master at --rdzv-endpoint; "
                 "scale down and up) or 'slurm' (inside srun, the default when $SLURM_JOB_ID "
                 "is set and no endpoint is given: the allocation's nodes, node 0's agent "
                 "running the elastic master, the job id as run id)")
      ->option_text("static|cairn|slurm");
  cmd.add_option("--rdzv-id,--rdzv_id", f->rdzv_id,
                 "job id for TORCHELASTIC_RUN_ID (default: the run directory's name)")
      ->option_text("ID");
  cmd.add_option("--master-addr,--master_addr", f->master_addr,
                 "same as --rdzv-endpoint HOST (torchrun's older form)")
      ->option_text("HOST");
  cmd.add_option("--master-port,--master_port", f->master_port,
                 "port for --master-addr (default " + std::to_string(kDefaultMasterPort) + ")")
      ->option_text("PORT");
  cmd.add_option("--max-restarts,--max_restarts", f->max_restarts,
                 "restarts of the local workers after a failure (default 0)")
      ->option_text("K");
  cmd.add_option("--monitor-interval,--monitor_interval", f->monitor_interval,
                 "seconds between checks of the workers (default 0.1)")
      ->option_text("SECONDS");
  cmd.add_option("--grace-period,--grace_period", f->grace_period,
                 "seconds from SIGTERM to SIGKILL when stopping workers (default 10)")
      ->option_text("SECONDS");
  add_elastic_flags(cmd, f);
  cmd.add_option("--rdzv-timeout,--rdzv_timeout", f->rdzv_timeout,
                 "longest wait for a round's world (all nodes, or the master, to answer) before "
                 "the agent gives up with the reason it kept waiting (default 900)")
      ->option_text("SECONDS");
  cmd.add_option("--hang-timeout,--hang_timeout", f->hang_timeout,
                 "a worker that reported step progress and then none for this long is hung: "
                 "its stacks are logged and the group restarted (default 600; 0 = off)")
      ->option_text("SECONDS");
  cmd.add_option("--run-dir,--run_dir", f->run_dir,
                 "run directory: events.jsonl, logs/worker-<rank>.log (default runs/<time>)")
      ->option_text("DIR");
  cmd.add_flag("--standalone", f->standalone,
               "one machine: MASTER_ADDR=127.0.0.1 and a free MASTER_PORT (default for 1 node)");
  cmd.add_flag("--no-standby,--no_standby", f->no_standby,
               "do not keep a warm standby process per worker (by default, when the command is "
               "cairn itself and another round can come, one is started once every local "
               "worker has finished a step, and a restart activates it instead of starting a "
               "new process)");
  cmd.add_option("command", f->command,
                 "worker command after --; a first word 'cairn' means this binary");
}

void collect_unknown_flags(const CLI::App& cmd, LaunchFlags* flags) {
  for (const std::string& arg : cmd.remaining())
    if (arg != "--") flags->unknown.push_back(arg);
}

}  // namespace cairn::cli
