// Elastic mode of `cairn run`: embedded master, node identity, the master rendezvous.
#include "run_elastic.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

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
      const void* src = local.ss_family == AF_INET
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

}  // namespace

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
    mo.listen_address = "0.0.0.0:" + std::to_string(o.master_port);
    mo.job_token = token;
    mo.journal_path = run_dir + "/master.journal";
    mo.rdzv.min_nodes = o.min_nodes;
    mo.rdzv.max_nodes = o.max_nodes;
    mo.rdzv.wait_s = o.rdzv_wait_s;
    mo.rdzv.heartbeat_timeout_s = o.heartbeat_timeout_s;
    CAIRN_ASSIGN_OR_RETURN(e.master, elastic::MasterServer::Start(mo));
    spdlog::info("elastic master listening on {} (journal {})", e.master->address(), mo.journal_path);
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
  ro.node_id = node_id;
  ro.host = e.node_host;
  ro.nproc_per_node = o.nproc_per_node;
  ro.run_id = run_id;
  ro.poll_interval_s = 0.2;
  // At least 3 beats within the timeout even if the master's is shorter than ours (default 30 s).
  ro.heartbeat_interval_s = std::clamp(o.heartbeat_timeout_s / 6, 0.2, 1.0);
  CAIRN_ASSIGN_OR_RETURN(e.rendezvous, elastic::MasterRendezvous::Open(ro));
  spdlog::info("node {} ({}) joins the elastic master at {}", node_id, e.node_host, ro.client.address);
  return e;
}

}  // namespace cairn::cli
