// `cairn run` flags: torchrun-compatible launcher flags collected as text (LaunchFlags, filled by
// the CLI: tools/cairn/launch_flags.h), then validated into LaunchOptions by a pure function that
// names the offending flag on error.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "cairn/core/status.h"

namespace cairn::elastic {

// Flag values exactly as given on the command line; nullopt means "not given".
struct LaunchFlags {
  std::optional<std::string> nnodes;             // --nnodes N | MIN:MAX
  std::optional<std::string> nproc_per_node;     // --nproc-per-node N
  std::optional<std::string> node_rank;          // --node-rank R
  std::optional<std::string> rdzv_endpoint;      // --rdzv-endpoint HOST[:PORT]
  std::optional<std::string> rdzv_backend;       // --rdzv-backend static | cairn
  std::optional<std::string> node_id;            // --node-id ID (cairn backend)
  std::optional<std::string> node_host;          // --node-host ADDR (cairn backend)
  std::optional<std::string> job_token;          // --job-token TOKEN (cairn backend)
  std::optional<std::string> rdzv_wait;          // --rdzv-wait SECONDS (embedded master)
  std::optional<std::string> heartbeat_timeout;  // --heartbeat-timeout SECONDS (embedded master)
  bool embed_master = false;                     // --embed-master
  std::optional<std::string> tls_ca;             // --tls-ca FILE (cairn backend)
  std::optional<std::string> tls_cert;           // --tls-cert FILE
  std::optional<std::string> tls_key;            // --tls-key FILE
  bool tls_verify_clients = false;               // --tls-verify-clients (embedded master)
  bool insecure = false;                         // --insecure (cairn backend)
  bool network_check = false;                    // --network-check (embedded master)
  bool exclude_straggler = false;                // --exclude-straggler (embedded master)
  std::optional<std::string> network_check_timeout;  // --network-check-timeout SECONDS
  std::optional<std::string> rdzv_id;                // --rdzv-id ID
  std::optional<std::string> master_addr;       // --master-addr HOST (torchrun's older static form)
  std::optional<std::string> master_port;       // --master-port PORT
  std::optional<std::string> max_restarts;      // --max-restarts K
  std::optional<std::string> monitor_interval;  // --monitor-interval SECONDS
  std::optional<std::string> grace_period;      // --grace-period SECONDS
  std::optional<std::string> hang_timeout;      // --hang-timeout SECONDS
  std::optional<std::string> rdzv_timeout;      // --rdzv-timeout SECONDS
  std::optional<std::string> run_dir;           // --run-dir DIR
  bool standalone = false;                      // --standalone
  bool no_standby = false;                      // --no-standby
  std::vector<std::string> command;             // everything after `--`
  std::vector<std::string> unknown;             // arguments the parser did not recognize
};

inline constexpr int kDefaultRdzvPort = 29400;    // torchrun's default for --rdzv-endpoint
inline constexpr int kDefaultMasterPort = 29500;  // torchrun's default for --master-port
inline constexpr int kMaxNprocPerNode = 1024;
inline constexpr int kMaxNodes = 65536;

// A validated launch request.
struct LaunchOptions {
  int min_nodes = 1;  // --nnodes MIN:MAX; N means N:N
  int max_nodes = 1;
  int nproc_per_node = 1;  // workers on this node
  int node_rank = 0;       // this node's index in [0, max_nodes)
  // True when the job stays on this machine (the default for one node without an endpoint):
  // MASTER_ADDR is 127.0.0.1 and MASTER_PORT a free port chosen for every round.
  bool standalone = true;
  // --rdzv-backend cairn: nodes join the elastic master at master_host:master_port (started by
  // this agent with embed_master, else by `cairn master`); node ranks come from the master.
  bool elastic = false;
  bool embed_master = false;
  std::string node_id;    // elastic: stable name of this node (default: host name)
  std::string node_host;  // elastic: address other nodes reach this node at ("" = auto)
  std::string job_token;  // elastic: the job's token ("" = CAIRN_JOB_TOKEN)
  // elastic: TLS to the master. tls_ca_path verifies the master's certificate; tls_cert_path and
  // tls_key_path are this node's certificate (shown to a master that asks for one) and, with
  // embed_master, the embedded master's own. tls_verify_clients: the embedded master requires
  // client certificates signed by tls_ca_path (mutual TLS). insecure: plaintext off loopback.
  std::string tls_ca_path;
  std::string tls_cert_path;
  std::string tls_key_path;
  bool tls_verify_clients = false;
  bool insecure = false;
  double rdzv_wait_s = 10;              // embedded master: wait at >= min nodes for more
  double heartbeat_timeout_s = 30;      // embedded master: a node silent this long is dropped
  bool network_check = false;           // embedded master: check the nodes before a round starts
  bool exclude_straggler = false;       // embedded master: exclude nodes the check finds slow
  double network_check_timeout_s = 60;  // one node's check (matmul + all-reduce)
  std::string master_host;           // from --rdzv-endpoint or --master-addr; empty when standalone
  int master_port = 0;               // 0 when standalone
  std::string run_id;                // TORCHELASTIC_RUN_ID; empty: the run directory's name
  int max_restarts = 0;              // restarts of the local worker group after a failure
  double monitor_interval_s = 0.1;   // longest sleep between checks of the workers
  double grace_period_s = 10.0;      // SIGTERM → SIGKILL delay when stopping workers
  double hang_timeout_s = 600.0;     // no step progress for this long = hung; 0 = off
  double rdzv_timeout_s = 900.0;     // longest wait for the world of one round
  std::string run_dir;               // empty: the CLI picks runs/<time>
  bool standby = true;               // warm standby workers when the command is cairn itself
  std::vector<std::string> command;  // the worker command, non-empty
};

// Validates `flags`. Errors are kInvalidArgument with a message naming the flag, the value and
// what is allowed. Pure.
Result<LaunchOptions> resolve_launch_options(const LaunchFlags& flags);

// "N" or "MIN:MAX" with 1 <= MIN <= MAX <= kMaxNodes.
Result<std::pair<int, int>> parse_nnodes(const std::string& text);

// "HOST", "HOST:PORT", "[V6ADDR]" or "[V6ADDR]:PORT"; `default_port` when none is given.
// The returned host has no brackets.
Result<std::pair<std::string, int>> parse_endpoint(const std::string& text, int default_port);

}  // namespace cairn::elastic
