// Worker environment and command resolution.
#include "cairn/elastic/worker_env.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace cairn::elastic {

Env worker_env(const World& world, int local_rank, const WorkerEnvOptions& options,
               const Env& base) {
  Env env = base;
  const std::string rank = std::to_string(world.global_rank(local_rank));
  const std::string world_size = std::to_string(world.world_size());
  env["RANK"] = rank;
  env["LOCAL_RANK"] = std::to_string(local_rank);
  env["WORLD_SIZE"] = world_size;
  env["LOCAL_WORLD_SIZE"] = std::to_string(world.nproc_per_node);
  env["GROUP_RANK"] = std::to_string(world.node_rank);
  env["GROUP_WORLD_SIZE"] = std::to_string(world.num_nodes);
  env["ROLE_NAME"] = "default";
  env["ROLE_RANK"] = rank;
  env["ROLE_WORLD_SIZE"] = world_size;
  env["MASTER_ADDR"] = world.master_addr;
  env["MASTER_PORT"] = std::to_string(world.master_port);
  env["TORCHELASTIC_RESTART_COUNT"] = std::to_string(world.round);
  env["TORCHELASTIC_MAX_RESTARTS"] = std::to_string(options.max_restarts);
  env["TORCHELASTIC_RUN_ID"] = world.run_id;
  // Rank 0 serves the store itself (env:// initialization), not the agent.
  env["TORCHELASTIC_USE_AGENT_STORE"] = "False";
  env["CAIRN_RUN_DIR"] = options.run_dir;
  if (env.count("OMP_NUM_THREADS") == 0) {
    int threads = std::max(1, options.num_cores / std::max(1, world.nproc_per_node));
    env["OMP_NUM_THREADS"] = std::to_string(threads);
  }
  return env;
}

Env env_from_environ(char** environ_array) {
  Env env;
  for (char** p = environ_array; p != nullptr && *p != nullptr; ++p) {
    const char* eq = std::strchr(*p, '=');
    if (eq == nullptr) continue;
    env.emplace(std::string(*p, size_t(eq - *p)), std::string(eq + 1));
  }
  return env;
}

std::vector<std::string> to_envp(const Env& env) {
  std::vector<std::string> out;
  out.reserve(env.size());
  for (const auto& [name, value] : env) out.push_back(name + "=" + value);
  return out;
}

std::vector<std::string> resolve_self_command(std::vector<std::string> command,
                                              const std::string& self_exe) {
  if (!command.empty() && command[0] == "cairn") command[0] = self_exe;
  return command;
}

Result<std::string> find_executable(const std::string& name, const std::string& path_list) {
  if (name.empty()) return Status::InvalidArgument("the worker command is empty");
  auto is_executable = [](const std::string& p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0;
  };
  if (name.find('/') != std::string::npos) {
    if (is_executable(name)) return name;
    return Status::NotFound("worker command '" + name + "' is not an executable file");
  }
  size_t start = 0;
  while (start <= path_list.size()) {
    size_t end = path_list.find(':', start);
    if (end == std::string::npos) end = path_list.size();
    std::string dir = path_list.substr(start, end - start);
    std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + name;
    if (is_executable(candidate)) return candidate;
    start = end + 1;
  }
  return Status::NotFound("worker command '" + name + "' not found in PATH");
}

}  // namespace cairn::elastic
