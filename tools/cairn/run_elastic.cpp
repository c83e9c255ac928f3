// Elastic mode of `cairn run`: embedded master, node identity, the master rendezvous.
#include "run_elastic.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cairn/core/fs.h"
#include "cairn/core/net.h"
#include "cairn/elastic/process.h"
#include "cairn/elastic/worker_env.h"

namespace cairn::cli {
namespace {

// The local address the kernel would use to reach host:port (a UDP "connect" sends nothing).
Result<std::string> local_address_toward(const std::string& host, int port) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  if (int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res); rc != 0)
    return Status::InvalidArgument("cannot resolve the master's host '" + host +
                                   "': " + ::gai_strerror(rc));
  std::string out;
  for (addrinfo* a = res; a && out.empty(); a = a->ai_next) {
    int fd = ::socket(a->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    sockaddr_storage local{};
    socklen_t len = sizeof(local);
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
      char buf[INET6_ADDRSTRLEN] = {};
      const void* src =
          local.ss_family == AF_INET
              ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&local)->sin_addr)
              : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr);
      if (::inet_ntop(local.ss_family, src, buf, sizeof(buf))) out = buf;
    }
    ::close(fd);
  }
  ::freeaddrinfo(res);
  if (out.empty()) return Status::FailedPrecondition("no route to the master at " + host);
  return out;
}

// Runs `cairn node-check` for one assignment: torchrun's variables for the check group (its
// rank 0 serves the store at its host and store port), the result in a file of the run's logs.
Result<elastic::NodeCheckResult> run_node_check(const elastic::CheckAssignment& a,
                                                const std::string& bind_host,
                                                const std::string& run_dir, double timeout_s) {
  const std::string result_path =
      run_dir + "/logs/node-check-" + a.check_id + "-" + std::to_string(a.check_round) + ".json";
  ::unlink(result_path.c_str());
  elastic::Env env = elastic::env_from_environ(environ);
  env["RANK"] = std::to_string(a.group_rank);
  env["WORLD_SIZE"] = std::to_string(a.group.size());
  env["MASTER_ADDR"] = a.group[0].host;
  env["MASTER_PORT"] = std::to_string(a.group[0].store_port);
  env["CAIRN_BIND_HOST"] = bind_host;
  elastic::SpawnOptions so;
  so.argv = {self_exe(),  "node-check", "--result",
             result_path, "--timeout",  std::to_string(std::max(1.0, timeout_s * 0.8))};
  so.env = elastic::to_envp(env);
  so.capture_output = false;  // its log lines go to the agent's output
  CAIRN_ASSIGN_OR_RETURN(auto child, elastic::ProcessHandle::Spawn(so));
  std::optional<elastic::ExitStatus> exit = child->wait(timeout_s);
  if (!exit) {
    child->signal_group(SIGKILL);
    child->wait(5);
    return Status::Timeout("the node check did not finish within " + std::to_string(timeout_s) +
                           " s");
  }
  auto text = core::read_file(result_path);
  if (!text.ok())
    return Status::Internal("the node check ended (" + exit->ToString() + ") without a result");
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
  if (!j.is_object() || !j.contains("ok"))
    return Status::Corrupt("the node check's result " + result_path + " is not a result");
  elastic::NodeCheckResult r;
  r.ok = j.value("ok", false);
  r.matmul_s = j.value("matmul_s", 0.0);
  r.allreduce_s = j.value("allreduce_s", 0.0);
  r.error = j.value("error", std::string());
  if (!r.ok && r.error.empty()) r.error = "failed (" + exit->ToString() + ")";
  return r;
}

std::string absolute(const std::string& path) {
  if (path.empty()) return path;
  std::error_code ec;
  auto p = std::filesystem::absolute(path, ec);
  return ec ? path : p.string();
}

}  // namespace

std::string self_exe() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("cairn") : p.string();
}

Result<ElasticRun> start_elastic(const elastic::LaunchOptions& o, const std::string& run_dir,
                                 const std::string& run_id) {
  ElasticRun e;
  std::string token = o.job_token;
  if (token.empty())
    if (const char* t = std::getenv("CAIRN_JOB_TOKEN"); t) token = t;
  if (token.empty())
    return Status::InvalidArgument(
        "--rdzv-backend cairn needs the job's token: --job-token TOKEN or CAIRN_JOB_TOKEN (every "
        "node and the master use the same one)");
  if (o.embed_master) {
    elastic::MasterServerOptions mo;
    // A loopback endpoint: the job stays on this machine, and so does the master.
    const bool loopback = core::is_loopback_host(o.master_host);
    const std::string any = o.master_host.find(':') != std::string::npos ? "[::]" : "0.0.0.0";
    mo.listen_address = (loopback ? (o.master_host == "::1" ? "[::1]" : "127.0.0.1") : any) + ":" +
                        std::to_string(o.master_port);
    mo.tls_cert_path = absolute(o.tls_cert_path);
    mo.tls_key_path = absolute(o.tls_key_path);
    if (o.tls_verify_clients) mo.tls_client_ca_path = absolute(o.tls_ca_path);
    mo.insecure = o.insecure;
    mo.job_token = token;
    mo.journal_path = run_dir + "/master.journal";
    mo.events_path = run_dir + "/events.jsonl";  // the run's dashboard shows membership
    mo.rdzv.min_nodes = o.min_nodes;
    mo.rdzv.max_nodes = o.max_nodes;
    mo.rdzv.wait_s = o.rdzv_wait_s;
    mo.rdzv.heartbeat_timeout_s = o.heartbeat_timeout_s;
    mo.network_check = o.network_check;
    mo.node_check.exclude_stragglers = o.exclude_straggler;
    mo.node_check.timeout_s = o.network_check_timeout_s;
    CAIRN_ASSIGN_OR_RETURN(e.master, elastic::MasterServer::Start(mo));
    spdlog::info("elastic master listening on {} (journal {})", e.master->address(),
                 mo.journal_path);
  }
  e.node_host = o.node_host;
  if (e.node_host.empty()) {
    CAIRN_ASSIGN_OR_RETURN(e.node_host, local_address_toward(o.master_host, o.master_port));
  }
  std::string node_id = o.node_id;
  if (node_id.empty()) {
    char host[256] = {};
    ::gethostname(host, sizeof(host) - 1);
    node_id = host;
  }
  elastic::MasterRendezvousOptions ro;
  ro.client.address = o.master_host + ":" + std::to_string(o.master_port);
  ro.client.job_token = token;
  // Absolute: the workers, which get the same files, may change directory.
  ro.client.tls_ca_path = absolute(o.tls_ca_path);
  ro.client.tls_cert_path = absolute(o.tls_cert_path);
  ro.client.tls_key_path = absolute(o.tls_key_path);
  ro.client.insecure = o.insecure;
  ro.node_id = node_id;
  ro.host = e.node_host;
  ro.nproc_per_node = o.nproc_per_node;
  ro.run_id = run_id;
  ro.poll_interval_s = 0.2;
  // At least 3 beats within the timeout even if the master's is shorter than ours (default 30 s).
  ro.heartbeat_interval_s = std::clamp(o.heartbeat_timeout_s / 6, 0.2, 1.0);
  // Whatever the master decides: a master started with --network-check asks every node.
  ro.node_checker = [run_dir, host = e.node_host](const elastic::CheckAssignment& a) {
    return run_node_check(a, host, run_dir, a.timeout_s);
  };
  CAIRN_ASSIGN_OR_RETURN(e.rendezvous, elastic::MasterRendezvous::Open(ro));
  e.client = ro.client;
  spdlog::info("node {} ({}) joins the elastic master at {}", node_id, e.node_host,
               ro.client.address);
  return e;
}

}  // namespace cairn::cli
