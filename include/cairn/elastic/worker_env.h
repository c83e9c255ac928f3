// What a worker is started with: torchrun's environment variables for its place in the world,
// and the command resolved to an executable path. Pure functions apart from find_executable.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "cairn/core/status.h"
#include "cairn/elastic/rendezvous.h"

namespace cairn::elastic {

using Env = std::map<std::string, std::string>;

// Per-node facts that shape every worker's environment.
struct WorkerEnvOptions {
  int max_restarts = 0;  // TORCHELASTIC_MAX_RESTARTS
  std::string run_dir;   // CAIRN_RUN_DIR
  int num_cores = 1;     // cores this node may use; OMP_NUM_THREADS = cores / nproc, at least 1
};

// `base` plus RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK, GROUP_WORLD_SIZE,
// ROLE_NAME, ROLE_RANK, ROLE_WORLD_SIZE, MASTER_ADDR, MASTER_PORT, TORCHELASTIC_RESTART_COUNT
// (= world.round), TORCHELASTIC_MAX_RESTARTS, TORCHELASTIC_RUN_ID,
// TORCHELASTIC_USE_AGENT_STORE=False, CAIRN_RUN_DIR, and OMP_NUM_THREADS unless `base` has it.
// These override values of the same name in `base`.
// REQUIRES: 0 <= local_rank < world.nproc_per_node.
Env worker_env(const World& world, int local_rank, const WorkerEnvOptions& options,
               const Env& base);

// The variables of a NULL-terminated `environ`-style array ("NAME=value").
Env env_from_environ(char** environ_array);
// "NAME=value" strings in name order.
std::vector<std::string> to_envp(const Env& env);

// `command` with a first word "cairn" replaced by `self_exe` (the running cairn binary), so
// `cairn run -- cairn train ...` works without cairn on PATH. REQUIRES: !command.empty().
std::vector<std::string> resolve_self_command(std::vector<std::string> command,
                                              const std::string& self_exe);

// Absolute or relative path of an executable: `name` itself when it contains '/', otherwise the
// first executable regular file `<dir>/<name>` over the ':'-separated `path_list` (an empty
// entry means the current directory). kNotFound naming the command when there is none.
Result<std::string> find_executable(const std::string& name, const std::string& path_list);

}  // namespace cairn::elastic
