// `cairn run --rdzv-backend cairn`: the pieces an agent needs to follow the elastic master.
#pragma once

#include <memory>
#include <string>

#include "cairn/core/status.h"
#include "cairn/elastic/launch_options.h"
#include "cairn/elastic/master_rendezvous.h"
#include "cairn/elastic/master_server.h"

namespace cairn::cli {

struct ElasticRun {
  std::unique_ptr<elastic::MasterServer> master;  // with --embed-master
  std::unique_ptr<elastic::MasterRendezvous> rendezvous;
  std::string node_host;  // what the workers bind to (CAIRN_BIND_HOST)
  // The connection to the master (address, token, TLS), handed on to the workers
  // (elastic::master_client_env).
  elastic::MasterClientOptions client;
};

// This binary's path (for commands that start cairn again: workers, the node check).
std::string self_exe();

// Starts the embedded master when asked, then opens the rendezvous with the master at the
// endpoint. The job token comes from --job-token or CAIRN_JOB_TOKEN.
Result<ElasticRun> start_elastic(const elastic::LaunchOptions& o, const std::string& run_dir,
                                 const std::string& run_id);

}  // namespace cairn::cli
